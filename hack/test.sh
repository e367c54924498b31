#!/usr/bin/env bash
# Install what the tests need on a Debian machine and run them all: format
# and lint checks, unit tests, and the integration tests (real registry,
# real wharf daemons; they must run as root).
#
#   hack/test.sh [cargo test arguments...]
set -euo pipefail

hack_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo_dir=$(dirname "$hack_dir")
# shellcheck source=hack/lib.sh
source "$hack_dir/lib.sh"

echo "installing test packages" >&2
# docker-registry: the real registry the tests pull from; apache2-utils: its
# htpasswd; busybox-static, zstd, python3: test image building; attr:
# getfattr; protobuf-compiler: the k8s-cri test client's build.
apt_install ca-certificates runc containernetworking-plugins docker-registry \
	apache2-utils busybox-static zstd python3 attr curl protobuf-compiler iproute2 iptables util-linux

# Registries the tests start live here and are stopped at the end.
export WHARF_TEST_STATE=${WHARF_TEST_STATE:-$(mktemp -d /tmp/wharf-test.XXXXXX)}
stop_registries() {
	local pid_file
	for pid_file in "$WHARF_TEST_STATE"/*/registry.pid; do
		[[ -f $pid_file ]] && kill "$(cat "$pid_file")" 2>/dev/null || true
	done
}
trap stop_registries EXIT

cd "$repo_dir"
cargo fmt --check
cargo clippy --locked --all-targets -- -D warnings
cargo test --locked "$@"

#!/usr/bin/env bash
# Prepare this machine for an offline critest run against wharf, in one go:
# install what is needed, start a local registry, push stand-ins for the
# images critest pulls (see hack/testimages.py, set "critest"), and point the
# public registries critest names at that registry through wharf's certs.d.
#
#   hack/critest-env.sh
#
# Environment:
#   WHARF_CERTS_D               where hosts.toml files go (/etc/wharf/certs.d)
#   WHARF_CRITEST_REGISTRY_DIR  the registry's state (/var/lib/wharf-critest-registry)
#   WHARF_CRITEST_PORT          preferred port (5000; any free one if taken)
#   WHARF_CACHE                 build cache for busybox (/var/cache/wharf-hack)
#
# Idempotent: a second run reuses the registry and the cached busybox, and
# pushes the same digests. Prints the registry address on stdout; the digests
# of every pushed reference are in $WHARF_CRITEST_REGISTRY_DIR/digests.json.
set -euo pipefail

hack_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=hack/lib.sh
source "$hack_dir/lib.sh"

certs_d=${WHARF_CERTS_D:-/etc/wharf/certs.d}
state_dir=${WHARF_CRITEST_REGISTRY_DIR:-/var/lib/wharf-critest-registry}
preferred_port=${WHARF_CRITEST_PORT:-5000}

# Public host -> where critest's images live. The repository paths on the
# local registry are the public ones (e2e-test-images/..., library/...).
public_hosts=(registry.k8s.io gcr.io public.ecr.aws docker.io)

apt_install python3 curl gcc libc6-dev docker-registry

busybox=$("$hack_dir/build-busybox.sh")

port_args=()
if python3 -c 'import socket, sys; socket.socket().bind(("127.0.0.1", int(sys.argv[1])))' \
	"$preferred_port" 2>/dev/null; then
	port_args=(--port "$preferred_port")
fi
address=$("$hack_dir/start-registry.sh" "${port_args[@]}" "$state_dir")

"$hack_dir/testimages.py" --registry "$address" --busybox "$busybox" push critest \
	>"$state_dir/digests.json.tmp"
mv "$state_dir/digests.json.tmp" "$state_dir/digests.json"

# The local registry is each host's only server: offline, a fallback to the
# real host could only fail, and later than a clear 404 from here.
for host in "${public_hosts[@]}"; do
	mkdir -p "$certs_d/$host"
	cat >"$certs_d/$host/hosts.toml.tmp" <<EOF
# Written by hack/critest-env.sh: $host's images come from the local test
# registry only.
server = "http://$address"
capabilities = ["pull", "resolve"]
EOF
	mv "$certs_d/$host/hosts.toml.tmp" "$certs_d/$host/hosts.toml"
done

echo "$address"

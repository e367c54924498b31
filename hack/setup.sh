#!/usr/bin/env bash
# Install what Wharf needs on a Debian machine, build it, and start it on
# its built-in defaults (socket /run/wharf/wharf.sock).
#
#   hack/setup.sh            install, build, (re)start wharf
#   hack/setup.sh --no-start install and build only
#
# Under systemd it installs deploy/wharf.service and starts that; elsewhere
# it starts wharf in the background, logging to /var/log/wharf.log.
set -euo pipefail

hack_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo_dir=$(dirname "$hack_dir")
# shellcheck source=hack/lib.sh
source "$hack_dir/lib.sh"

start=1
[[ ${1:-} == --no-start ]] && start=0

echo "installing packages" >&2
# runc: the OCI runtime; CNI plugins for pod networking; the rest for pulls
# (CA certificates) and the tools README's examples use.
apt_install ca-certificates runc containernetworking-plugins iproute2 iptables curl

echo "building wharf and wharf-monitor (release)" >&2
(
	cd "$repo_dir"
	cargo build --release --locked --bin wharf
	# One monitor runs per container: linked statically it maps no shared
	# libraries, which keeps its resident memory under 2 MiB.
	cargo rustc --release --locked --bin wharf-monitor -- -C target-feature=+crt-static
)
install -m 0755 "$repo_dir/target/release/wharf" /usr/local/bin/wharf
install -m 0755 "$repo_dir/target/release/wharf-monitor" /usr/local/bin/wharf-monitor
mkdir -p /etc/wharf/certs.d

# Files an operator may have edited are never overwritten: each is
# installed only when missing.
install_if_missing() { # SOURCE DEST
	if [[ -e $2 ]]; then
		echo "keeping the existing $2" >&2
	else
		install -m 0644 "$1" "$2"
		echo "installed $2" >&2
	fi
}
install_if_missing "$repo_dir/deploy/config.toml" /etc/wharf/config.toml
# crictl then talks to Wharf with no flags and no warning.
install_if_missing "$repo_dir/deploy/crictl.yaml" /etc/crictl.yaml

# A default pod network when the host has none yet.
mkdir -p /etc/cni/net.d
if ! ls /etc/cni/net.d/*.conflist /etc/cni/net.d/*.conf /etc/cni/net.d/*.json >/dev/null 2>&1; then
	install -m 0644 "$repo_dir/deploy/10-wharf.conflist" /etc/cni/net.d/10-wharf.conflist
	echo "installed the default CNI network /etc/cni/net.d/10-wharf.conflist" >&2
fi

((start)) || exit 0

if [[ -d /run/systemd/system ]]; then
	install -m 0644 "$repo_dir/deploy/wharf.service" /etc/systemd/system/wharf.service
	systemctl daemon-reload
	systemctl enable --now wharf.service
	systemctl restart wharf.service
else
	pid_file=/run/wharf.pid
	if [[ -f $pid_file ]] && kill -0 "$(cat "$pid_file")" 2>/dev/null; then
		kill "$(cat "$pid_file")"
		while kill -0 "$(cat "$pid_file")" 2>/dev/null; do sleep 0.1; done
	fi
	nohup /usr/local/bin/wharf >>/var/log/wharf.log 2>&1 &
	echo $! >"$pid_file"
fi

# Ready when a call succeeds: the socket file alone may be the previous
# daemon's, left until the new one has recovered its containers and binds.
ready=false
for _ in $(seq 600); do
	if /usr/local/bin/wharf info --socket /run/wharf/wharf.sock >/dev/null 2>&1; then
		ready=true
		break
	fi
	sleep 0.1
done
if ! $ready; then
	echo "wharf did not start; see /var/log/wharf.log" >&2
	exit 1
fi
echo "wharf is serving on unix:///run/wharf/wharf.sock" >&2

#!/usr/bin/env bash
# Run a real kubelet in standalone mode (no API server) on a private Wharf,
# with one static pod, to try kubelet's own endpoints on Wharf:
#
#   hack/kubelet-standalone.sh start IMAGE [DIR]   # prints the endpoints
#   hack/kubelet-standalone.sh stop [DIR]
#
# IMAGE is the static pod's image (a busybox; e.g. a tests registry's
# 127.0.0.1:PORT/wharf-test/busybox:latest). DIR (default /tmp/wharf-kubelet)
# holds everything: Wharf's socket, root and state, the kubelet's root dir,
# config and logs, the CNI network (a bridge of its own, wkube0,
# 10.77.0.0/24, no masquerade). Both daemons run in the background; their
# pids are in DIR/*.pid and `stop` ends exactly those.
#
# Needs `kubelet` (v1.34) on PATH: build it from a kubernetes source tree
# with `go build -o /usr/local/bin/kubelet ./cmd/kubelet` (CGO_ENABLED=0).
# Wharf is target/debug/wharf unless WHARF_BIN names another binary.
#
# Environment: KUBELET_FEATURE_GATES (e.g. PodAndContainerStatsFromCRI=true
# for pod network and process counts in /stats/summary and cAdvisor metrics
# from Wharf; EventedPLEG=true for GetContainerEvents),
# KUBELET_PORT (read-only port, 10255), KUBELET_SECURE_PORT (10250).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
command=${1:-}
case $command in
start) image=${2:?usage: $0 start IMAGE [DIR]}; dir=${3:-/tmp/wharf-kubelet} ;;
stop) dir=${2:-/tmp/wharf-kubelet} ;;
*) echo "usage: $0 start IMAGE [DIR] | stop [DIR]" >&2; exit 2 ;;
esac

stop_pid() {
	local file=$dir/$1.pid
	[[ -f $file ]] || return 0
	local pid
	pid=$(cat "$file")
	if kill "$pid" 2>/dev/null; then
		for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
	fi
	rm -f "$file"
}

if [[ $command == stop ]]; then
	stop_pid kubelet
	# kubelet bind-mounts its root dir onto itself (mount propagation).
	if mountpoint -q "$dir/kubelet"; then umount -R "$dir/kubelet"; fi
	# Static pods stop with their manifests gone, once kubelet is gone the
	# containers are Wharf's: remove them through the CRI before stopping it.
	if [[ -S $dir/run/wharf.sock ]] && command -v crictl >/dev/null; then
		crictl_=(crictl --runtime-endpoint "unix://$dir/run/wharf.sock" --timeout 30s)
		"${crictl_[@]}" rmp -fa >/dev/null 2>&1 || true
	fi
	stop_pid wharf
	# The CNI bridge and its address leases are this script's own.
	ip link del wkube0 2>/dev/null || true
	rm -rf /var/lib/cni/networks/wharf-kube
	exit 0
fi

kubelet_bin=$(command -v kubelet) || {
	echo "kubelet is not on PATH: build it (go build ./cmd/kubelet in a kubernetes v1.34 tree)" >&2
	exit 1
}
wharf_bin=${WHARF_BIN:-$repo/target/debug/wharf}
[[ -x $wharf_bin ]] || { echo "no wharf at $wharf_bin: cargo build first" >&2; exit 1; }

# Root reads the config and CNI files in here: the directory is root's
# alone, and one that someone else made first is refused.
if [[ -e $dir && ( ! -O $dir || -L $dir ) ]]; then
	echo "$dir exists and is not root's own directory: choose another DIR" >&2
	exit 1
fi
install -d -m 0700 "$dir"
mkdir -p "$dir"/{run,root,kubelet,manifests,net.d,logs}
cat >"$dir/net.d/10-wharf-kube.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "wharf-kube",
  "plugins": [
    {
      "type": "bridge", "bridge": "wkube0", "isGateway": true, "ipMasq": false,
      "ipam": { "type": "host-local", "ranges": [[{ "subnet": "10.77.0.0/24" }]],
                "routes": [{ "dst": "0.0.0.0/0" }] }
    },
    { "type": "portmap", "capabilities": { "portMappings": true } }
  ]
}
EOF
cat >"$dir/wharf.toml" <<EOF
socket = "$dir/run/wharf.sock"
root = "$dir/root"
state_dir = "$dir/run"
[cni]
conf_dir = "$dir/net.d"
EOF
cat >"$dir/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
containerRuntimeEndpoint: unix://$dir/run/wharf.sock
cgroupDriver: cgroupfs
staticPodPath: $dir/manifests
authentication:
  anonymous: { enabled: true }
  webhook: { enabled: false }
authorization: { mode: AlwaysAllow }
readOnlyPort: ${KUBELET_PORT:-10255}
port: ${KUBELET_SECURE_PORT:-10250}
address: 127.0.0.1
failSwapOn: false
failCgroupV1: false
# No KUBE-* chains in the host's iptables: nothing here needs them.
makeIPTablesUtilChains: false
cgroupsPerQOS: true
enforceNodeAllocatable: []
podLogsDir: $dir/logs
syncFrequency: 10s
fileCheckFrequency: 5s
evictionHard: { memory.available: "1Mi", nodefs.available: "1%", imagefs.available: "1%" }
imageGCHighThresholdPercent: 100
EOF
if [[ -n ${KUBELET_FEATURE_GATES:-} ]]; then
	echo "featureGates:" >>"$dir/kubelet.yaml"
	tr ',' '\n' <<<"$KUBELET_FEATURE_GATES" | sed 's/^/  /; s/=/: /' >>"$dir/kubelet.yaml"
fi
cat >"$dir/manifests/busybox.yaml" <<EOF
apiVersion: v1
kind: Pod
metadata: { name: busybox, namespace: default }
spec:
  containers:
  - name: main
    image: $image
    imagePullPolicy: IfNotPresent
    command: [sh, -c, 'i=0; while :; do echo "line \$i"; i=\$((i+1)); sleep 2; done']
    resources: { limits: { memory: 64Mi, cpu: 500m } }
EOF

nohup "$wharf_bin" --config "$dir/wharf.toml" >"$dir/wharf.log" 2>&1 &
echo $! >"$dir/wharf.pid"
# Ready when a call succeeds: the socket file may be a previous run's.
ready=false
for _ in $(seq 600); do
	"$wharf_bin" info --socket "$dir/run/wharf.sock" >/dev/null 2>&1 && { ready=true; break; }
	sleep 0.1
done
$ready || { echo "wharf did not start: see $dir/wharf.log" >&2; exit 1; }

nohup "$kubelet_bin" --config "$dir/kubelet.yaml" --root-dir "$dir/kubelet" \
	--hostname-override wharf-node -v 2 >"$dir/kubelet.log" 2>&1 &
echo $! >"$dir/kubelet.pid"
echo "kubelet: http://127.0.0.1:${KUBELET_PORT:-10255} (read-only), https://127.0.0.1:${KUBELET_SECURE_PORT:-10250}"
echo "wharf:   unix://$dir/run/wharf.sock; logs in $dir/wharf.log and $dir/kubelet.log"

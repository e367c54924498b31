#!/usr/bin/env bash
# Pull benchmark: how long Wharf takes to pull a big multi-layer image through
# the CRI ImageService, beside containerd pulling the same image from the same
# local registry.
#
#   hack/bench-pull.sh [--runs N] [--no-containerd]
#
#   --runs N          rounds per daemon (default 3)
#   --no-containerd   measure Wharf alone
#
# Environment:
#   WHARF_BIN     wharf binary to measure; without it the script builds
#                 target/release/wharf (cargo build --release --bin wharf)
#   BENCH_TMPDIR  where the registry and the daemons' roots go (default /tmp);
#                 pick a directory on the disk you want to measure
#
# The image is wharf-bench/big:latest from hack/testimages.py (busybox base
# plus 5 layers of incompressible data, about 221 MiB gzip in 6 layers),
# pushed to a private hack/start-registry.sh registry on 127.0.0.1.
#
# Each round starts the daemon on an empty root, records its idle RSS, times
# one PullImage (cold: nothing on disk), times the same PullImage again
# (warm: everything present), records its peak RSS (VmHWM), and stops it.
# Wharf and containerd rounds alternate so that drifting machine noise hits
# both alike. Both daemons unpack every layer into their own store
# (containerd's CRI plugin into its overlayfs snapshotter), with 3 concurrent
# layer downloads and the same certs.d hosts.toml for the registry. As shipped,
# containerd also keeps the compressed blobs in its content store; Wharf does
# not.
#
# containerd is Debian's package, a private instance with its own config,
# root, state and socket; when it cannot be installed the table says so.
# The CRI client is hack/bench/cri_client.py (Debian's python3-grpcio).
# Everything the script starts is stopped, unmounted and removed on exit.
set -euo pipefail

hack_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo_dir=$(dirname "$hack_dir")
# shellcheck source=hack/lib.sh
source "$hack_dir/lib.sh"

usage() {
	sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "${BASH_SOURCE[0]}" >&2
	exit 2
}

runs=3 with_containerd=1
while (($#)); do
	case $1 in
	--runs) runs=${2:?--runs needs a number}; shift 2 ;;
	--no-containerd) with_containerd=0; shift ;;
	*) usage ;;
	esac
done
[[ $runs =~ ^[1-9][0-9]*$ ]] || usage

log() { echo "bench-pull: $*" >&2; }

# Debian's grpcio is built for Debian's python, not for any other python3
# that may come first in PATH.
python=/usr/bin/python3
apt_install python3 python3-grpcio docker-registry busybox-static curl
if ((with_containerd)) && ! command -v containerd >/dev/null; then
	apt_install containerd || log "could not install containerd"
fi
if ((with_containerd)) && ! command -v containerd >/dev/null; then
	echo "containerd: not installed"
	with_containerd=0
fi

if [[ -z ${WHARF_BIN:-} ]]; then
	log "building wharf"
	(cd "$repo_dir" && cargo build --release --bin wharf) >&2
	WHARF_BIN=${CARGO_TARGET_DIR:-$repo_dir/target}/release/wharf
fi
[[ -x $WHARF_BIN ]] || { log "no wharf binary at $WHARF_BIN"; exit 1; }

work=$(mktemp -d "${BENCH_TMPDIR:-/tmp}/wharf-bench.XXXXXX")
results=$work/results.tsv
certs_dir=$work/certs.d
daemon_pid="" daemon_dir="" endpoint=""

# unmount_under DIR: unmount everything mounted at or below DIR, deepest
# first (containerd's unpack mounts, should one be left behind).
unmount_under() {
	local target
	awk -v dir="$1" '$5 == dir || index($5, dir "/") == 1 { print $5 }' /proc/self/mountinfo |
		sort -r | while read -r target; do
		umount "$target" 2>/dev/null || umount -l "$target" || true
	done
}

# stop_daemon: SIGTERM the running daemon (SIGKILL after 10 s), then remove
# its directory.
stop_daemon() {
	[[ -n $daemon_pid ]] || return 0
	kill -TERM "$daemon_pid" 2>/dev/null || true
	for _ in $(seq 100); do
		kill -0 "$daemon_pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -KILL "$daemon_pid" 2>/dev/null || true
	wait "$daemon_pid" 2>/dev/null || true
	daemon_pid=""
	unmount_under "$daemon_dir"
	rm -rf "$daemon_dir"
}

stop_registry() {
	local pid_file=$work/registry/registry.pid pid
	[[ -s $pid_file ]] || return 0
	pid=$(cat "$pid_file")
	kill "$pid" 2>/dev/null || true
	# Not our child (start-registry.sh detaches it): poll until it is gone.
	for _ in $(seq 50); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	rm -f "$pid_file"
}

cleanup() {
	stop_daemon
	stop_registry
	unmount_under "$work"
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

start_wharf() {
	local dir=$1
	cat >"$dir/wharf.toml" <<-EOF
		socket = "$dir/wharf.sock"
		root = "$dir/root"
		state_dir = "$dir/state"

		[registry]
		config_path = "$certs_dir"
		max_concurrent_downloads = 3

		[cni]
		conf_dir = "$dir/cni"
	EOF
	"$WHARF_BIN" --config "$dir/wharf.toml" >"$dir/daemon.log" 2>&1 </dev/null &
	daemon_pid=$!
	endpoint=unix://$dir/wharf.sock
}

start_containerd() {
	local dir=$1
	# Storage plugins this machine cannot use would only log errors; the
	# CRI plugin stays enabled since it is what we measure.
	cat >"$dir/containerd.toml" <<-EOF
		version = 2
		root = "$dir/root"
		state = "$dir/state"
		disabled_plugins = [
		  "io.containerd.snapshotter.v1.aufs",
		  "io.containerd.snapshotter.v1.btrfs",
		  "io.containerd.snapshotter.v1.devmapper",
		  "io.containerd.snapshotter.v1.zfs",
		]

		[grpc]
		  address = "$dir/containerd.sock"

		[plugins."io.containerd.internal.v1.opt"]
		  path = "$dir/opt"

		[plugins."io.containerd.grpc.v1.cri"]
		  disable_tcp_service = true
		  stream_server_address = "127.0.0.1"
		  stream_server_port = "0"
		  max_concurrent_downloads = 3
		  [plugins."io.containerd.grpc.v1.cri".containerd]
		    snapshotter = "overlayfs"
		  [plugins."io.containerd.grpc.v1.cri".cni]
		    bin_dir = "/usr/lib/cni"
		    conf_dir = "$dir/cni"
		  [plugins."io.containerd.grpc.v1.cri".registry]
		    config_path = "$certs_dir"
	EOF
	# Unpacking mounts each snapshot under $dir/root/tmpmounts for a
	# moment; stop_daemon unmounts whatever a kill leaves there.
	containerd --config "$dir/containerd.toml" >"$dir/daemon.log" 2>&1 </dev/null &
	daemon_pid=$!
	endpoint=unix://$dir/containerd.sock
}

cri() { "$python" "$hack_dir/bench/cri_client.py" --endpoint "$endpoint" "$@"; }

# proc_kb PID FIELD: a "kB" field of /proc/PID/status, such as VmRSS.
proc_kb() { awk -v field="$2:" '$1 == field { print $2 }' "/proc/$1/status"; }

record() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$results"; }

# timed_pull DAEMON KIND: pull the bench image, record its seconds as KIND.
timed_pull() {
	local seconds image_ref
	read -r seconds image_ref < <(cri pull "$image") || {
		log "$1: pull failed; last daemon log lines:"
		tail -n 20 "$daemon_dir/daemon.log" >&2
		exit 1
	}
	log "$1 $2 pull: ${seconds}s ($image_ref)"
	record "$1" "$2" "$seconds"
}

# bench_round DAEMON RUN: one fresh daemon, a cold and a warm pull.
bench_round() {
	local daemon=$1
	daemon_dir=$work/$daemon-$2
	mkdir -p "$daemon_dir"
	# Flush the previous round's writes now rather than during this pull.
	sync
	"start_$daemon" "$daemon_dir"
	if ! cri wait --timeout 30; then
		log "$daemon did not start; last log lines:"
		tail -n 20 "$daemon_dir/daemon.log" >&2
		exit 1
	fi
	sleep 1 # let start-up work settle before reading the idle RSS
	record "$daemon" idle_rss "$(proc_kb "$daemon_pid" VmRSS)"
	timed_pull "$daemon" cold
	timed_pull "$daemon" warm
	record "$daemon" peak_rss "$(proc_kb "$daemon_pid" VmHWM)"
	stop_daemon
}

log "starting the registry and pushing the bench image"
registry=$("$hack_dir/start-registry.sh" "$work/registry")
"$python" "$hack_dir/testimages.py" --registry "$registry" push bench >/dev/null
image=$registry/wharf-bench/big:latest
mkdir -p "$certs_dir/$registry"
echo "server = \"http://$registry\"" >"$certs_dir/$registry/hosts.toml"

accept="application/vnd.oci.image.manifest.v1+json,application/vnd.docker.distribution.manifest.v2+json"
read -r image_bytes image_layers < <(
	curl -fsS -H "Accept: $accept" "http://$registry/v2/wharf-bench/big/manifests/latest" |
		"$python" -c 'import json, sys
layers = json.load(sys.stdin)["layers"]
print(sum(layer["size"] for layer in layers), len(layers))'
)

: >"$results"
for run in $(seq "$runs"); do
	log "round $run of $runs"
	bench_round wharf "$run"
	if ((with_containerd)); then
		bench_round containerd "$run"
	fi
done

"$python" "$hack_dir/bench/report.py" --image "$image" --size "$image_bytes" \
	--layers "$image_layers" "$results"

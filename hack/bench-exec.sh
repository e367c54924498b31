#!/usr/bin/env bash
# Exec latency benchmark: the wall time of `crictl exec -s ID true` (ExecSync)
# and of a streaming `crictl exec ID true` over SPDY and over WebSocket
# (`-r websocket`), against Wharf and beside it a private containerd, with
# p50/p95/mean per daemon and mode; then a count of what the execs left:
# `runc` processes, `true` processes in the pods' cgroups, and the daemon's
# direct children against their number before the rounds.
#
#   hack/bench-exec.sh [--rounds N] [--no-containerd]
#
#   --rounds N        timed rounds (default 50), after 3 warm-up rounds; a
#                     round is one exec of each mode on each daemon, the
#                     daemons taking turns going first
#   --no-containerd   measure Wharf alone
#
# Environment:
#   WHARF_BIN     wharf binary to measure (wharf-monitor must sit beside it);
#                 without it the script runs cargo build --release --bins
#   CRICTL        crictl to use (default /usr/local/bin/crictl, v1.34)
#   BENCH_TMPDIR  where the registry, the daemons' roots and the pods' logs
#                 go (default /tmp); the daemons' state dirs go to /run
#
# The daemons run as hack/bench-lifecycle.sh runs them (hack/bench/common.sh):
# in a network namespace made here with a private registry, each with its own
# CNI bridge; crictl runs in that namespace too (the streaming servers listen
# on its loopback). Each daemon gets one pod with one busybox `sleep 3600`
# container (wharf-test/busybox from hack/testimages.py). Everything the
# script starts is stopped, unmounted and removed on exit. It exits non-zero
# if one of Wharf's execs failed or a daemon's execs left something behind
# (containerd's failures are reported, not fatal: containerd 1.6 answers
# WebSocket upgrades 403).
set -euo pipefail

hack_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo_dir=$(dirname "$hack_dir")
# shellcheck source=hack/lib.sh
source "$hack_dir/lib.sh"
# shellcheck source=hack/bench/common.sh
source "$hack_dir/bench/common.sh"

usage() {
	sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "${BASH_SOURCE[0]}" >&2
	exit 2
}

rounds=50 daemons=(wharf containerd)
while (($#)); do
	case $1 in
	--rounds) rounds=${2:?--rounds needs a number}; shift 2 ;;
	--no-containerd) daemons=(wharf); shift ;;
	*) usage ;;
	esac
done
[[ $rounds =~ ^[1-9][0-9]*$ ]] || usage

log() { echo "bench-exec: $*" >&2; }

python=/usr/bin/python3
crictl=${CRICTL:-/usr/local/bin/crictl}
[[ -x $crictl ]] || { log "no crictl at $crictl"; exit 1; }
apt_install python3 docker-registry busybox-static curl gcc libc6-dev iproute2 util-linux procps
if [[ ${daemons[*]} == *containerd* ]] && ! command -v containerd >/dev/null; then
	apt_install containerd || log "could not install containerd"
	if ! command -v containerd >/dev/null; then
		echo "containerd: not installed"
		daemons=(wharf)
	fi
fi

if [[ -z ${WHARF_BIN:-} ]]; then
	log "building wharf"
	(cd "$repo_dir" && cargo build --release --bins) >&2
	WHARF_BIN=${CARGO_TARGET_DIR:-$repo_dir/target}/release/wharf
fi
[[ -x $WHARF_BIN && -x $(dirname "$WHARF_BIN")/wharf-monitor ]] ||
	{ log "no wharf and wharf-monitor at $WHARF_BIN"; exit 1; }

work=$(mktemp -d "${BENCH_TMPDIR:-/tmp}/wharf-exec.XXXXXX")
# Short, on tmpfs: see bench-lifecycle.sh.
run_dir=$(mktemp -d /run/wb.XXXXXX)
certs_dir=$work/certs.d
netns=wharf-bench-$$
cgroup_base=wharf-bench-$$
mkdir -p "$certs_dir"
# crictl warns on stderr without a config file; the endpoints are flags.
echo "timeout: 60" >"$work/crictl.yaml"
export CRI_CONFIG_FILE=$work/crictl.yaml
declare -A daemon_pid=() endpoint=() dir=() state=() cgroup=() container=()
for name in wharf containerd; do
	dir[$name]=$work/$name
	state[$name]=$run_dir/${name:0:1}
	cgroup[$name]=/$cgroup_base-$name
done
in_netns=(nsenter --net="/run/netns/$netns")
netns_before=$work/netns-before
ls /run/netns >"$netns_before" 2>/dev/null || true

# shellcheck source=hack/bench/cri-daemons.sh
source "$hack_dir/bench/cri-daemons.sh"
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

ip netns add "$netns"
ip -n "$netns" link set lo up


# run_pod NAME: one pod with one busybox `sleep 3600`; sets container[NAME].
run_pod() {
	local d=${dir[$1]} pod
	mkdir -p "$d/logs"
	cat >"$d/pod.json" <<-EOF
		{"metadata": {"name": "exec-bench", "namespace": "bench", "uid": "exec-bench-$1"},
		 "log_directory": "$d/logs", "linux": {"cgroup_parent": "${cgroup[$1]}"}}
	EOF
	cat >"$d/container.json" <<-EOF
		{"metadata": {"name": "sleep"}, "image": {"image": "$image"},
		 "command": ["sleep", "3600"], "log_path": "sleep.log"}
	EOF
	[[ $1 != containerd ]] || cri "$1" pull "$pause_image" >/dev/null
	cri "$1" pull "$image" >/dev/null
	pod=$(cri "$1" runp "$d/pod.json")
	container[$1]=$(cri "$1" create "$pod" "$d/container.json" "$d/pod.json")
	cri "$1" start "${container[$1]}" >/dev/null
}

children() { pgrep -c -P "$1" || true; }

# pod_processes NAME COMM: pids named COMM in the daemon's pods' cgroups.
pod_processes() {
	local cgroup_dir pid
	for cgroup_dir in $(cgroup_dirs "${cgroup[$1]}"); do
		find "$cgroup_dir" -name cgroup.procs -exec cat {} + 2>/dev/null
	done | sort -u | while read -r pid; do
		[[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$2" ]] && echo "$pid"
	done
	return 0
}

# leftovers NAME CHILDREN_BEFORE: "RUNC TRUE CHILDREN" once nothing is left
# (the daemon may still be reaping the last exec), or after 10 s.
leftovers() {
	local runc true_count kids
	for _ in $(seq 100); do
		runc=$(netns_processes runc | wc -l)
		true_count=$(pod_processes "$1" true | wc -l)
		kids=$(children "${daemon_pid[$1]}")
		((runc + true_count == 0 && kids == $2)) && break
		sleep 0.1
	done
	echo "$runc $true_count $kids"
}

log "starting the registry in netns $netns and pushing the images"
registry=$("${in_netns[@]}" "$hack_dir/start-registry.sh" "$work/registry")
"${in_netns[@]}" "$python" "$hack_dir/testimages.py" --registry "$registry" push wharf >/dev/null
image=$registry/wharf-test/busybox:latest
pause_image=""
if [[ ${daemons[*]} == *containerd* ]]; then
	pause_image=$("${in_netns[@]}" "$python" "$hack_dir/bench/push_pause.py" --registry "$registry" \
		wharf-bench/pause:3.6)
fi
mkdir -p "$certs_dir/$registry"
echo "server = \"http://$registry\"" >"$certs_dir/$registry/hosts.toml"

declare -A children_before=()
targets=()
for name in "${daemons[@]}"; do
	log "starting $name and its pod"
	start "$name"
	run_pod "$name"
	children_before[$name]=$(children "${daemon_pid[$name]}")
	targets+=(--target "$name" "${endpoint[$name]}" "${container[$name]}")
done

log "running $rounds rounds"
status=0
"${in_netns[@]}" "$python" "$hack_dir/bench/exec_rounds.py" --crictl "$crictl" \
	--rounds "$rounds" "${targets[@]}" || status=1

echo
row='%-10s | %-14s | %-17s | %s\n'
# shellcheck disable=SC2059 # the format is the row above
printf "$row" "leftovers" "runc processes" "\`true\` in the pod" "daemon children (before)"
# shellcheck disable=SC2059
printf "$row" "----------" "--------------" "-----------------" "------------------------"
for name in "${daemons[@]}"; do
	read -r runc true_count kids < <(leftovers "$name" "${children_before[$name]}")
	# shellcheck disable=SC2059
	printf "$row" "$name" "$runc" "$true_count" "$kids (${children_before[$name]})"
	((runc + true_count == 0 && kids == children_before[$name])) || status=1
done
exit "$status"

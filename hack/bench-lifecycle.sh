#!/usr/bin/env bash
# Pod and container lifecycle benchmark: the latency (p50/p95) of every CRI
# call from RunPodSandbox to RemovePodSandbox for N pods, one at a time and P
# at a time, against Wharf and beside it a private containerd; the floor of
# raw `runc run -d` / `runc delete -f` of the same busybox, of the bundle
# Wharf wrote for a pod's container, and of bare
# `ip netns add` / `ip netns del`; and the memory of each daemon and of its
# helper processes (wharf-monitor, containerd-shim-runc-v2) with all N pods
# running.
#
#   hack/bench-lifecycle.sh [--pods N] [--parallel P] [--rounds R]
#                           [--big B] [--no-containerd] [--keep DIR]
#                           [--profile]
#
#   --pods N          pods per run (default 20)
#   --big B           pods of the "busy" and "restart" runs (default 100;
#                     0 skips them)
#   --parallel P      pods in flight in the parallel runs (default 10)
#   --rounds R        rounds of runs; their samples are merged (default 3)
#   --no-containerd   measure Wharf alone
#   --profile         run Wharf with RUST_LOG=wharf=debug and print, after
#                     the report, where the milliseconds of its one-at-a-time
#                     runs go (hack/bench/step_profile.py): each call's steps,
#                     and the runtime's own time inside StartContainer
#   --keep DIR        copy the raw results (JSON per run) and the daemons'
#                     logs to DIR
#
# Environment:
#   WHARF_BIN      wharf binary to measure (wharf-monitor must sit beside
#                  it); without it the script builds both as hack/setup.sh
#                  does (the monitor linked statically, as installed)
#   LIFECYCLE_BIN  the benchmark binary (benches/lifecycle.rs); without it
#                  the script runs cargo bench --bench lifecycle --no-run
#   BENCH_TMPDIR   where the registry, the daemons' roots and the pods' logs
#                  go (default /tmp); the daemons' state dirs go to /run
#
# Every pod is one busybox container running `sleep 3600` (image
# wharf-test/busybox:latest from hack/testimages.py, pushed to a private
# hack/start-registry.sh registry) with a log file, a cgroup parent and
# Wharf's default CNI network (`wharf config cni`: bridge, host-local,
# portmap; containerd gets its own bridge and subnet). StopContainer has
# timeout 0 (SIGKILL at once).
#
# Both daemons run side by side. After a 3-pod warm-up each, every round
# runs, alternating the daemons so that drifting machine load hits both
# alike: "seq" (N pods, each through its seven calls, one pod at a time),
# "par" (the same, P pods at a time), each preceded by the floor
# (hack/bench/floor.py), then "peak" (all N pods started P at a time, memory
# sampled from /proc, all torn down). Then, once per daemon: "busy" (B pods
# started P at a time while another client loops ListContainers,
# ListPodSandbox and ContainerStatus) and "restart" (B pods started and
# left running, the daemon's and one helper's RSS read, the daemon stopped
# with SIGTERM and started again: the time until it answers Version and
# until ListContainers shows the B containers running; then torn down).
# containerd's pods need a sandbox
# ("pause") image: one built from hack/bench/pause.c is pushed to the same
# registry.
#
# The daemons, their CNI bridges and the registry run in a network namespace
# made here and entered with nsenter (not `ip netns exec`, which would hide
# /sys/fs/cgroup from the daemons), so nothing touches the machine's
# network. Everything the script starts is stopped, unmounted and removed on
# exit; what a daemon leaves behind after its pods are removed is reported.
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

pods=20 parallel=10 rounds=3 big=100 daemons=(wharf containerd) keep="" profile=""
while (($#)); do
	case $1 in
	--pods) pods=${2:?--pods needs a number}; shift 2 ;;
	--parallel) parallel=${2:?--parallel needs a number}; shift 2 ;;
	--rounds) rounds=${2:?--rounds needs a number}; shift 2 ;;
	--big) big=${2:?--big needs a number}; shift 2 ;;
	--no-containerd) daemons=(wharf); shift ;;
	--keep) keep=${2:?--keep needs a directory}; shift 2 ;;
	--profile) profile=1; shift ;;
	*) usage ;;
	esac
done
[[ $pods =~ ^[1-9][0-9]*$ && $parallel =~ ^[1-9][0-9]*$ && $rounds =~ ^[1-9][0-9]*$ ]] || usage
[[ $big =~ ^[0-9]+$ ]] || usage

log() { echo "bench-lifecycle: $*" >&2; }

python=/usr/bin/python3
# protobuf-compiler: the benchmark client (k8s-cri) is built from its .proto files.
apt_install python3 docker-registry busybox-static curl gcc libc6-dev iproute2 util-linux protobuf-compiler
if [[ ${daemons[*]} == *containerd* ]] && ! command -v containerd >/dev/null; then
	apt_install containerd || log "could not install containerd"
	if ! command -v containerd >/dev/null; then
		echo "containerd: not installed"
		daemons=(wharf)
	fi
fi

if [[ -z ${WHARF_BIN:-} ]]; then
	log "building wharf"
	# As hack/setup.sh installs them: the monitor linked statically.
	(cd "$repo_dir" && cargo build --release --bin wharf &&
		cargo rustc --release --bin wharf-monitor -- -C target-feature=+crt-static) >&2
	WHARF_BIN=${CARGO_TARGET_DIR:-$repo_dir/target}/release/wharf
fi
[[ -x $WHARF_BIN && -x $(dirname "$WHARF_BIN")/wharf-monitor ]] ||
	{ log "no wharf and wharf-monitor at $WHARF_BIN"; exit 1; }
if [[ -z ${LIFECYCLE_BIN:-} ]]; then
	log "building the benchmark"
	LIFECYCLE_BIN=$(cd "$repo_dir" &&
		cargo bench --bench lifecycle --no-run --message-format=json-render-diagnostics |
		"$python" -c 'import json, sys
for line in sys.stdin:
    message = json.loads(line)
    if message.get("reason") == "compiler-artifact" and message["target"]["name"] == "lifecycle":
        print(message["executable"])')
fi
[[ -x $LIFECYCLE_BIN ]] || { log "no benchmark binary at '$LIFECYCLE_BIN'"; exit 1; }

work=$(mktemp -d "${BENCH_TMPDIR:-/tmp}/wharf-lifecycle.XXXXXX")
# The daemons' state dirs, on tmpfs like their defaults (/run/wharf,
# /run/containerd). Short: Wharf's monitor sockets go to
# <state>/containers/<64 hex id>/monitor.sock, at most 107 bytes.
run_dir=$(mktemp -d /run/wb.XXXXXX)
results=$work/results
certs_dir=$work/certs.d
netns=wharf-bench-$$
cgroup_base=wharf-bench-$$
mkdir -p "$results" "$certs_dir"
# Per daemon: its pid, CRI endpoint, directory, state dir, pods' cgroup.
declare -A daemon_pid=() endpoint=() dir=() state=() cgroup=()
for name in wharf containerd; do
	dir[$name]=$work/$name
	state[$name]=$run_dir/${name:0:1}
	cgroup[$name]=/$cgroup_base-$name
done
declare -A helper_exe=([wharf]=wharf-monitor [containerd]=containerd-shim-runc-v2)

# Not a function: `"${in_netns[@]}" daemon &` must make $! the daemon itself
# (nsenter execs it), not a subshell.
in_netns=(nsenter --net="/run/netns/$netns")
# The per-run tables go to stderr with the progress; stdout gets the report.
bench() { "$LIFECYCLE_BIN" "$@" >&2; }

# Network namespaces containerd pins in /run/netns for its pods: the cni-*
# files that were not there before.
netns_before=$work/netns-before
ls /run/netns >"$netns_before" 2>/dev/null || true
# stop_daemon NAME: remove the benchmark's pods through the daemon, SIGTERM
# it (SIGKILL after 10 s).
stop_daemon() {
	local pid=${daemon_pid[$1]:-}
	[[ -n $pid ]] || return 0
	timeout 120 "$LIFECYCLE_BIN" cleanup --endpoint "${endpoint[$1]}" 2>/dev/null || true
	kill -TERM "$pid" 2>/dev/null || true
	for _ in $(seq 100); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
	daemon_pid[$1]=""
}

# file_count NAME: files and directories in the daemon's root and state,
# once their number holds for a second (containerd removes snapshots in the
# background), or after 15 s.
file_count() {
	local count last=-1
	for _ in $(seq 15); do
		count=$(find "${dir[$1]}/root" "${state[$1]}" -mindepth 1 2>/dev/null | wc -l)
		((count != last)) || break
		last=$count
		sleep 1
	done
	echo "$count"
}

# check_leaks NAME FILES_BEFORE FILES_AFTER: once the daemon has stopped,
# record what its pods left: helper processes, mounts under its
# directories, container cgroups, pinned network namespaces, and the files
# added to its root and state between the warm-up and the last teardown.
check_leaks() {
	local helpers mounts cgroups pinned files=$(($3 - $2))
	helpers=$(netns_processes "$1" | wc -l)
	mounts=$(awk -v a="${dir[$1]}/" -v b="${state[$1]}/" \
		'index($5, a) == 1 || index($5, b) == 1' /proc/self/mountinfo | wc -l)
	cgroups=$(for d in $(cgroup_dirs "${cgroup[$1]}"); do find "$d" -mindepth 1 -type d; done | wc -l)
	pinned=0
	[[ $1 != containerd ]] || pinned=$(new_pod_netns | wc -l)
	printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$helpers" "$mounts" "$cgroups" "$pinned" "$files" \
		>>"$results/leaks.tsv"
	((helpers + mounts + cgroups + pinned + files == 0)) ||
		log "$1 left $helpers processes, $mounts mounts, $cgroups cgroups, $pinned netns, $files files"
}

cleanup() {
	local name pid
	for name in "${daemons[@]}"; do stop_daemon "$name"; done
	for pid in $(netns_processes); do kill -KILL "$pid" 2>/dev/null || true; done
	if [[ -s $work/registry/registry.pid ]]; then
		kill "$(cat "$work/registry/registry.pid")" 2>/dev/null || true
	fi
	for name in wharf containerd floor; do remove_cgroups "/$cgroup_base-$name"; done
	unmount_under "$work"
	unmount_under "$run_dir"
	for name in $(new_pod_netns); do
		umount "/run/netns/$name" 2>/dev/null || true
		rm -f "/run/netns/$name"
	done
	ip netns del "$netns" 2>/dev/null || true
	rm -rf "$work" "$run_dir"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

ip netns add "$netns"
ip -n "$netns" link set lo up

# start NAME: start the daemon, wait until it answers CRI calls (cleanup
# lists pods), record its RSS once settled.
start() {
	mkdir -p "${dir[$1]}"
	"start_$1"
	for _ in $(seq 300); do
		if "$LIFECYCLE_BIN" cleanup --endpoint "${endpoint[$1]}" 2>/dev/null; then
			sleep 1 # let start-up work settle before reading the idle RSS
			printf '%s\t%s\n' "$1" "$(awk '$1 == "VmRSS:" { print $2 }' "/proc/${daemon_pid[$1]}/status")" \
				>>"$results/idle.tsv"
			return 0
		fi
		kill -0 "${daemon_pid[$1]}" 2>/dev/null || break
		sleep 0.1
	done
	log "$1 does not answer; last log lines:"
	tail -n 20 "${dir[$1]}/daemon.log" >&2
	return 1
}

# cri_run NAME KIND ROUND [ARGS]: one `lifecycle cri` run, its results in
# results/NAME-KIND-ROUND.json. A run with failed calls still writes them
# (failures included) for the report: show the daemon's side, carry on.
cri_run() {
	local name=$1 kind=$2 round=$3
	shift 3
	local extra=()
	[[ $name != containerd ]] || extra=(--prepull "$pause_image")
	log "$name $kind (round $round)"
	bench cri --endpoint "${endpoint[$name]}" --image "$image" --label "$name" \
		--cgroup-parent "${cgroup[$name]}" --log-root "${dir[$name]}/logs" "${extra[@]}" \
		--json "$results/$name-$kind-$round.json" "$@" && return 0
	log "$name $kind run had failures; last daemon log lines:"
	tail -n 15 "${dir[$name]}/daemon.log" >&2
}

# floor_run KIND ROUND PARALLEL: hack/bench/floor.py, with one Wharf pod
# left running meanwhile, so that runc also runs the very bundle Wharf
# wrote for that pod's container ("runc run -d (pod bundle)").
floor_run() {
	log "floor $1 (round $2)"
	local pod_spec=()
	cri_run wharf floor-pod "$2" --pods 1 --parallel 1 --mode up
	rm -f "$results/wharf-floor-pod-$2.json"
	local spec
	spec=$(find "${state[wharf]}/containers" -name config.json -print -quit 2>/dev/null || true)
	[[ -z $spec ]] || pod_spec=(--pod-spec "$spec")
	"${in_netns[@]}" "$python" "$hack_dir/bench/floor.py" --pods "$pods" --parallel "$3" \
		--cgroup-parent "/$cgroup_base-floor" --work-dir "$work/floor-$1-$2" \
		--cni-conf "$work/floor/cni/10-bench.conflist" "${pod_spec[@]}" \
		--json "$results/floor-$1-$2.json" >&2 || log "floor $1 had failures"
	timeout 120 "$LIFECYCLE_BIN" cleanup --endpoint "${endpoint[wharf]}" >&2 || true
	rm -rf "$work/floor-$1-$2"
}

# rss_kb PID: its VmRSS in kB (0 when gone).
rss_kb() { awk '$1 == "VmRSS:" { print $2; found = 1 } END { if (!found) print 0 }' "/proc/$1/status" 2>/dev/null || echo 0; }

# restart_run NAME: B pods left running; the daemon's and one helper's
# RSS; SIGTERM, start again, time until it answers and lists them all
# (results/NAME-restart.tsv); the pods are removed when the daemon stops.
restart_run() {
	local name=$1 pid helper since
	cri_run "$name" up 1 --pods "$big" --parallel "$parallel" --mode up
	sleep 1 # let the new processes finish faulting in
	helper=$(netns_processes "${helper_exe[$name]}" | awk "NR == 1")
	printf '%s\t%s\t%s\t%s\n' "$name" "$big" "$(rss_kb "${daemon_pid[$name]}")" \
		"$(rss_kb "${helper:-0}")" >"$results/$name-memory-big.tsv"
	pid=${daemon_pid[$name]}
	kill -TERM "$pid"
	for _ in $(seq 300); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
	log "$name restart with $big containers running"
	since=$(date +%s%N)
	"start_$name"
	bench wait-ready --endpoint "${endpoint[$name]}" --containers "$big" --since-ns "$since" \
		--json "$results/$name-restart.json" || log "$name did not come back with $big containers"
	timeout 300 "$LIFECYCLE_BIN" cleanup --endpoint "${endpoint[$name]}" >&2 || true
}

# Wharf's step timings are logged at debug level (containerd ignores it).
[[ -z $profile ]] || export RUST_LOG=wharf=debug

log "starting the registry in netns $netns and pushing the images"
registry=$("${in_netns[@]}" "$hack_dir/start-registry.sh" "$work/registry")
"${in_netns[@]}" "$python" "$hack_dir/testimages.py" --registry "$registry" push wharf >/dev/null
image=$registry/wharf-test/busybox:latest
pause_image=$("${in_netns[@]}" "$python" "$hack_dir/bench/push_pause.py" --registry "$registry" \
	wharf-bench/pause:3.6)
mkdir -p "$certs_dir/$registry"
echo "server = \"http://$registry\"" >"$certs_dir/$registry/hosts.toml"

# The floor's CNI network: its own bridge and subnet, like a third daemon's.
dir[floor]=$work/floor
write_cni_conf floor cni2 10.90.0.0/16

declare -A files_before=() files_after=()
for name in "${daemons[@]}"; do
	start "$name"
	cri_run "$name" warmup 0 --pods 3
	files_before[$name]=$(file_count "$name")
done
for round in $(seq "$rounds"); do
	floor_run seq "$round" 1
	for name in "${daemons[@]}"; do
		log_size=$(stat -c %s "${dir[$name]}/daemon.log")
		cri_run "$name" seq "$round" --pods "$pods" --parallel 1
		# The one-at-a-time run's part of Wharf's debug log, for --profile.
		[[ -z $profile || $name != wharf ]] ||
			tail -c +$((log_size + 1)) "${dir[$name]}/daemon.log" >"$results/wharf-seq-$round.log"
	done
	floor_run par "$round" "$parallel"
	for name in "${daemons[@]}"; do cri_run "$name" par "$round" --pods "$pods" --parallel "$parallel"; done
	for name in "${daemons[@]}"; do
		cri_run "$name" peak "$round" --pods "$pods" --parallel "$parallel" --mode peak \
			--daemon-pid "${daemon_pid[$name]}" --shim "${helper_exe[$name]}"
	done
done
for name in "${daemons[@]}"; do
	((big > 0)) || break
	cri_run "$name" busy 1 --pods "$big" --parallel "$parallel" --mode busy
	restart_run "$name"
done
for name in "${daemons[@]}"; do files_after[$name]=$(file_count "$name"); done
for name in "${daemons[@]}"; do
	stop_daemon "$name"
	check_leaks "$name" "${files_before[$name]}" "${files_after[$name]}"
done

rm -f "$results"/*-warmup-0.json
if [[ -n $keep ]]; then
	mkdir -p "$keep"
	cp "$results"/* "$keep"/
	for name in "${daemons[@]}"; do cp "${dir[$name]}/daemon.log" "$keep/$name.log"; done
fi
"$python" "$hack_dir/bench/lifecycle_report.py" "$results"
if [[ -n $profile ]]; then
	echo
	echo "Where Wharf's milliseconds go, one pod at a time (p50 of each step):"
	"$python" "$hack_dir/bench/step_profile.py" "$results"/wharf-seq-*.log
fi

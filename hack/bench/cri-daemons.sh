# shellcheck shell=bash
# The globals are the caller's (listed below):
# shellcheck disable=SC2034,SC2154
# Daemon plumbing shared by hack/bench-exec.sh and hack/bench-stats.sh:
# crictl against a daemon in the benchmark's network namespace, starting
# and stopping the daemons, and the EXIT cleanup. Sourced after the caller
# has set crictl, in_netns, endpoint, daemon_pid, dir, cgroup, daemons,
# work, run_dir and netns, and defined start_wharf/start_containerd.

# cri NAME ARGS...: crictl against the daemon, in the benchmark's namespace.
cri() {
	local name=$1
	shift
	"${in_netns[@]}" "$crictl" --runtime-endpoint "${endpoint[$name]}" \
		--image-endpoint "${endpoint[$name]}" --timeout 60s "$@"
}

# stop_daemon NAME: remove every pod through the daemon (it is private to the
# benchmark), SIGTERM it (SIGKILL after 10 s).
# shellcheck disable=SC2317 # called from cleanup, the EXIT trap
stop_daemon() {
	local pid=${daemon_pid[$1]:-}
	[[ -n $pid ]] || return 0
	timeout 120 "${in_netns[@]}" "$crictl" --runtime-endpoint "${endpoint[$1]}" \
		--timeout 60s rmp -fa >/dev/null 2>&1 || true
	kill -TERM "$pid" 2>/dev/null || true
	for _ in $(seq 100); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
	daemon_pid[$1]=""
}

# shellcheck disable=SC2317 # the EXIT trap
cleanup() {
	local name pid
	for name in "${daemons[@]}"; do stop_daemon "$name"; done
	# shellcheck disable=SC2119 # every process but the registry
	for pid in $(netns_processes); do kill -KILL "$pid" 2>/dev/null || true; done
	if [[ -s $work/registry/registry.pid ]]; then
		kill "$(cat "$work/registry/registry.pid")" 2>/dev/null || true
	fi
	for name in wharf containerd; do remove_cgroups "${cgroup[$name]}"; done
	unmount_under "$work"
	unmount_under "$run_dir"
	for name in $(new_pod_netns); do
		umount "/run/netns/$name" 2>/dev/null || true
		rm -f "/run/netns/$name"
	done
	ip netns del "$netns" 2>/dev/null || true
	rm -rf "$work" "$run_dir"
}
# start NAME: start the daemon, wait (30 s at most) until it answers CRI.
start() {
	mkdir -p "${dir[$1]}"
	"start_$1"
	for _ in $(seq 300); do
		cri "$1" version >/dev/null 2>&1 && return 0
		kill -0 "${daemon_pid[$1]}" 2>/dev/null || break
		sleep 0.1
	done
	log "$1 does not answer; last log lines:"
	tail -n 20 "${dir[$1]}/daemon.log" >&2
	return 1
}

# shellcheck shell=bash
# The globals are the caller's (listed below):
# shellcheck disable=SC2034,SC2154
# The daemons side by side for the hack/bench-*.sh benchmarks: their network
# namespace, processes, cgroups and mounts, and how each daemon starts. Source
# it, don't run it. The functions read the caller's globals:
#   work, netns, netns_before   the run's directory, its network namespace,
#                               the /run/netns entries before the run
#   in_netns                    the nsenter command entering that namespace
#   dir, state (by daemon)      each daemon's directory and state dir
#   daemon_pid, endpoint        set by start_wharf / start_containerd
#   certs_dir, pause_image      registry hosts config, containerd's sandbox image
#   WHARF_BIN, python

# unmount_under DIR: unmount everything mounted at or below DIR, deepest first.
unmount_under() {
	local target
	awk -v dir="$1" '$5 == dir || index($5, dir "/") == 1 { print $5 }' /proc/self/mountinfo |
		sort -r | while read -r target; do
		umount "$target" 2>/dev/null || umount -l "$target" || true
	done
}

# cgroup_dirs PATH: the directories of cgroup PATH in every hierarchy.
cgroup_dirs() {
	local hierarchy
	for hierarchy in /sys/fs/cgroup/*/ /sys/fs/cgroup/; do
		[[ -d $hierarchy${1#/} ]] && echo "$hierarchy${1#/}"
	done
	return 0
}

# remove_cgroups PATH: kill what still runs in cgroup PATH, remove it.
remove_cgroups() {
	local dir pid
	for dir in $(cgroup_dirs "$1"); do
		find "$dir" -name cgroup.procs -exec cat {} + 2>/dev/null | while read -r pid; do
			kill -KILL "$pid" 2>/dev/null || true
		done
	done
	for dir in $(cgroup_dirs "$1"); do
		for _ in $(seq 50); do
			find "$dir" -depth -type d -exec rmdir {} + 2>/dev/null || true
			[[ -d $dir ]] || break
			sleep 0.1
		done
	done
}

# netns_processes [EXE_PREFIX]: pids in our network namespace whose
# executable name starts with EXE_PREFIX (default: all but the registry).
netns_processes() {
	local registry_pid pid exe
	registry_pid=$(cat "$work/registry/registry.pid" 2>/dev/null || true)
	for pid in $(ip netns pids "$netns" 2>/dev/null); do
		[[ $pid != "$registry_pid" ]] || continue
		exe=$(basename "$(readlink "/proc/$pid/exe" 2>/dev/null)")
		[[ $exe == "${1:-}"* ]] && echo "$pid"
	done
	return 0
}

new_pod_netns() {
	local path
	for path in /run/netns/cni-*; do
		[[ -e $path ]] && ! grep -qxF "${path##*/}" "$netns_before" && echo "${path##*/}"
	done
	return 0
}

# write_cni_conf NAME BRIDGE SUBNET: Wharf's default network on BRIDGE and
# SUBNET, its IP allocations kept in the daemon's directory.
write_cni_conf() {
	mkdir -p "${dir[$1]}/cni"
	"$WHARF_BIN" config cni | "$python" -c 'import json, sys
net = json.load(sys.stdin)
bridge = net["plugins"][0]
bridge["bridge"] = sys.argv[1]
bridge["ipam"]["ranges"] = [[{"subnet": sys.argv[2]}]]
bridge["ipam"]["dataDir"] = sys.argv[3]
json.dump(net, sys.stdout, indent=2)' "$2" "$3" "${dir[$1]}/ipam" >"${dir[$1]}/cni/10-bench.conflist"
}

start_wharf() {
	local d=${dir[wharf]}
	write_cni_conf wharf cni0 10.88.0.0/16
	cat >"$d/wharf.toml" <<-EOF
		socket = "$d/wharf.sock"
		root = "$d/root"
		state_dir = "${state[wharf]}"

		[registry]
		config_path = "$certs_dir"

		[cni]
		conf_dir = "$d/cni"
	EOF
	"${in_netns[@]}" "$WHARF_BIN" --config "$d/wharf.toml" >>"$d/daemon.log" 2>&1 </dev/null &
	daemon_pid[wharf]=$!
	endpoint[wharf]=unix://$d/wharf.sock
}

start_containerd() {
	local d=${dir[containerd]}
	write_cni_conf containerd cni1 10.89.0.0/16
	cat >"$d/containerd.toml" <<-EOF
		version = 2
		root = "$d/root"
		state = "${state[containerd]}"
		disabled_plugins = [
		  "io.containerd.snapshotter.v1.aufs",
		  "io.containerd.snapshotter.v1.btrfs",
		  "io.containerd.snapshotter.v1.devmapper",
		  "io.containerd.snapshotter.v1.zfs",
		]

		[grpc]
		  address = "$d/containerd.sock"

		[plugins."io.containerd.internal.v1.opt"]
		  path = "$d/opt"

		[plugins."io.containerd.grpc.v1.cri"]
		  disable_tcp_service = true
		  stream_server_address = "127.0.0.1"
		  stream_server_port = "0"
		  sandbox_image = "$pause_image"
		  # Without CAP_SYS_RESOURCE no process may lower its oom_score_adj:
		  # clamp the pause container's -998 to containerd's own score.
		  restrict_oom_score_adj = true
		  [plugins."io.containerd.grpc.v1.cri".containerd]
		    snapshotter = "overlayfs"
		    default_runtime_name = "runc"
		    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
		      runtime_type = "io.containerd.runc.v2"
		      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
		        SystemdCgroup = false
		  [plugins."io.containerd.grpc.v1.cri".cni]
		    bin_dir = "/usr/lib/cni"
		    conf_dir = "$d/cni"
		  [plugins."io.containerd.grpc.v1.cri".registry]
		    config_path = "$certs_dir"
	EOF
	"${in_netns[@]}" containerd --config "$d/containerd.toml" >>"$d/daemon.log" 2>&1 </dev/null &
	daemon_pid[containerd]=$!
	endpoint[containerd]=unix://$d/containerd.sock
}

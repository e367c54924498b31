#!/usr/bin/env bash
# Stats latency benchmark: the wall time of `crictl stats -o json`
# (ListContainerStats) and `crictl statsp -o json` (ListPodSandboxStats)
# against Wharf and beside it a private containerd, each running the same
# pods and busybox `sleep 3600` containers, with p50/p95/mean per daemon and
# call; then each daemon's resident memory before and after the rounds.
#
#   hack/bench-stats.sh [--containers N] [--pods P] [--rounds R] [--no-containerd]
#
#   --containers N    running containers per daemon (default 50), spread
#                     evenly over the pods
#   --pods P          pods per daemon (default 10), each with a cgroup of
#                     its own as kubelet gives them
#   --rounds R        timed rounds (default 30), after 3 warm-up rounds; a
#                     round is one stats and one statsp on each daemon, the
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
# The daemons run as hack/bench-exec.sh runs them (hack/bench/common.sh): in
# a network namespace made here with a private registry, each with its own
# CNI bridge; crictl runs in that namespace too. The image is
# wharf-test/busybox from hack/testimages.py. RSS is the daemon process's
# own (VmRSS), without Wharf's monitors or containerd's shims. Everything the
# script starts is stopped, unmounted and removed on exit. It exits non-zero
# if one of Wharf's calls failed or answered the wrong number of entries
# (containerd's failures are reported, not fatal).
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

containers=50 pods=10 rounds=30 daemons=(wharf containerd)
while (($#)); do
	case $1 in
	--containers) containers=${2:?--containers needs a number}; shift 2 ;;
	--pods) pods=${2:?--pods needs a number}; shift 2 ;;
	--rounds) rounds=${2:?--rounds needs a number}; shift 2 ;;
	--no-containerd) daemons=(wharf); shift ;;
	*) usage ;;
	esac
done
for number in "$containers" "$pods" "$rounds"; do
	[[ $number =~ ^[1-9][0-9]*$ ]] || usage
done
((pods <= containers)) || { echo "bench-stats: more pods than containers" >&2; exit 2; }

log() { echo "bench-stats: $*" >&2; }

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

work=$(mktemp -d "${BENCH_TMPDIR:-/tmp}/wharf-stats.XXXXXX")
# Short, on tmpfs: see bench-lifecycle.sh.
run_dir=$(mktemp -d /run/wb.XXXXXX)
certs_dir=$work/certs.d
netns=wharf-bench-$$
cgroup_base=wharf-bench-$$
mkdir -p "$certs_dir"
# crictl warns on stderr without a config file; the endpoints are flags.
echo "timeout: 60" >"$work/crictl.yaml"
export CRI_CONFIG_FILE=$work/crictl.yaml
declare -A daemon_pid=() endpoint=() dir=() state=() cgroup=()
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


# run_pods NAME: $pods pods, each with a cgroup of its own under the
# daemon's, and $containers busybox `sleep 3600` in all, spread evenly.
run_pods() {
	local d=${dir[$1]} pod_index container_index count pod id
	mkdir -p "$d/logs"
	[[ $1 != containerd ]] || cri "$1" pull "$pause_image" >/dev/null
	cri "$1" pull "$image" >/dev/null
	for ((pod_index = 0; pod_index < pods; pod_index++)); do
		mkdir -p "$d/logs/$pod_index"
		cat >"$d/pod-$pod_index.json" <<-EOF
			{"metadata": {"name": "stats-bench-$pod_index", "namespace": "bench",
			              "uid": "stats-bench-$1-$pod_index"},
			 "log_directory": "$d/logs/$pod_index",
			 "linux": {"cgroup_parent": "${cgroup[$1]}/pod$pod_index"}}
		EOF
		pod=$(cri "$1" runp "$d/pod-$pod_index.json")
		count=$((containers / pods + (pod_index < containers % pods ? 1 : 0)))
		for ((container_index = 0; container_index < count; container_index++)); do
			cat >"$d/container-$pod_index-$container_index.json" <<-EOF
				{"metadata": {"name": "sleep$container_index"}, "image": {"image": "$image"},
				 "command": ["sleep", "3600"], "log_path": "sleep$container_index.log"}
			EOF
			id=$(cri "$1" create "$pod" "$d/container-$pod_index-$container_index.json" \
				"$d/pod-$pod_index.json")
			cri "$1" start "$id" >/dev/null
		done
	done
}

# rss_kib NAME: the daemon process's resident memory in KiB.
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/${daemon_pid[$1]}/status"; }

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

declare -A rss_before=()
targets=()
for name in "${daemons[@]}"; do
	log "starting $name, $pods pods and $containers containers"
	start "$name"
	run_pods "$name"
	targets+=(--target "$name" "${endpoint[$name]}")
done
# Measured once every daemon's containers run, so that both have had the
# same time to settle.
for name in "${daemons[@]}"; do rss_before[$name]=$(rss_kib "$name"); done

log "running $rounds rounds"
status=0
"${in_netns[@]}" "$python" "$hack_dir/bench/stats_rounds.py" --crictl "$crictl" \
	--rounds "$rounds" --containers "$containers" --pods "$pods" "${targets[@]}" || status=1

echo
row='%-10s | %-16s | %s\n'
# shellcheck disable=SC2059 # the format is the row above
printf "$row" "daemon" "RSS before, MiB" "RSS after, MiB"
# shellcheck disable=SC2059
printf "$row" "----------" "----------------" "--------------"
for name in "${daemons[@]}"; do
	# shellcheck disable=SC2059
	printf "$row" "$name" "$(awk -v k="${rss_before[$name]}" 'BEGIN { printf "%.1f", k / 1024 }')" \
		"$(awk -v k="$(rss_kib "$name")" 'BEGIN { printf "%.1f", k / 1024 }')"
done
exit "$status"

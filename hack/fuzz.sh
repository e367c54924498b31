#!/usr/bin/env bash
# Run each cargo-fuzz target in fuzz/ for a bounded time and report, per
# target, how many inputs it ran and whether it found a crash. Not part of
# the CI test command.
#
#   hack/fuzz.sh [SECONDS_PER_TARGET [TARGET...]]
#
# SECONDS_PER_TARGET defaults to 60; TARGET defaults to all of them. Exits
# non-zero if any target crashed (panic, failed assertion, timeout, out of
# memory); the crashing input is in fuzz/artifacts/<target>/ and libFuzzer's
# log in fuzz/target/fuzz-logs/<target>.log. Reproduce one with
#   RUSTC_BOOTSTRAP=1 cargo fuzz run -s none <target> <artifact>
# (from the repository root).
#
# Seeds are the committed fuzz/corpus/<target>/ (written by fuzz/seeds.py);
# what libFuzzer finds goes to fuzz/target/corpus/<target>/, which is kept
# between runs so later runs start from it, and never committed. Inputs that
# once crashed a target are kept in fuzz/regressions/<target>/ and run first.
# fuzz/dicts/<target>.dict, where present, is libFuzzer's dictionary.
#
# Environment:
#   FUZZ_SANITIZER  none (default, fastest) or address
#   FUZZ_RSS_MB     libFuzzer's -rss_limit_mb (default 2048)
#   FUZZ_TIMEOUT    seconds one input may take before it counts as a hang
#                   (default 30)
#   FUZZ_NICE       niceness of the build and the runs (default 10)
set -euo pipefail

hack_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo_dir=$(dirname "$hack_dir")
fuzz_dir=$repo_dir/fuzz
# shellcheck source=hack/lib.sh
source "$hack_dir/lib.sh"

all_targets=(image_reference manifest unpack_layer hosts_toml cri_convert)
seconds=${1:-60}
if (($# > 1)); then
	targets=("${@:2}")
else
	targets=("${all_targets[@]}")
fi
if ! [[ $seconds =~ ^[1-9][0-9]*$ ]]; then
	echo "usage: $0 [SECONDS_PER_TARGET [TARGET...]]" >&2
	exit 2
fi
sanitizer=${FUZZ_SANITIZER:-none}
rss_mb=${FUZZ_RSS_MB:-2048}
timeout=${FUZZ_TIMEOUT:-30}
niceness=${FUZZ_NICE:-10}

# libFuzzer is C++, built by libfuzzer-sys.
ensure_command g++ g++
if ! command -v cargo-fuzz >/dev/null 2>&1; then
	echo "installing cargo-fuzz" >&2
	nice -n "$niceness" cargo install --locked cargo-fuzz
fi
# cargo fuzz passes -Z flags to rustc; this lets the stable toolchain take them.
export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR=$fuzz_dir/target

cd "$repo_dir"
echo "building the fuzz targets (sanitizer: $sanitizer)" >&2
nice -n "$niceness" cargo fuzz build --sanitizer "$sanitizer" >&2

# Work directories the targets leave under /dev/shm (or $WHARF_FUZZ_TMP)
# when a run ends by a crash, named after the process that made them.
remove_stale_work_dirs() {
	local dir pid
	for dir in "${WHARF_FUZZ_TMP:-/dev/shm}"/wharf-fuzz-*-*; do
		[[ -d $dir ]] || continue
		pid=${dir##*-}
		kill -0 "$pid" 2>/dev/null || rm -rf "$dir"
	done
}

log_dir=$fuzz_dir/target/fuzz-logs
mkdir -p "$log_dir"
failed=0
summary=()
for target in "${targets[@]}"; do
	if [[ ! -f $fuzz_dir/fuzz_targets/$target.rs ]]; then
		echo "unknown fuzz target $target (have: ${all_targets[*]})" >&2
		exit 2
	fi
	corpus=$fuzz_dir/target/corpus/$target
	seeds=$fuzz_dir/corpus/$target
	mkdir -p "$corpus" "$seeds" "$fuzz_dir/artifacts/$target"
	log=$log_dir/$target.log
	regressions=("$fuzz_dir/regressions/$target"/*)
	if [[ -f ${regressions[0]} ]]; then
		echo "re-running ${#regressions[@]} past crash input(s) of $target" >&2
		if ! nice -n "$niceness" cargo fuzz run --sanitizer "$sanitizer" "$target" \
			"${regressions[@]}" -- -rss_limit_mb="$rss_mb" -timeout="$timeout" >"$log" 2>&1; then
			failed=1
			reason=$(grep -m1 -E "panicked at|==[0-9]+== ?ERROR|deadly signal" "$log" || true)
			summary+=("$(printf '%-16s REGRESSION: an input in fuzz/regressions/%s crashes again: %s' \
				"$target" "$target" "${reason:-see $log}")")
			remove_stale_work_dirs
			continue
		fi
	fi
	echo "fuzzing $target for ${seconds}s (log: $log)" >&2
	options=(-max_total_time="$seconds" -rss_limit_mb="$rss_mb" -timeout="$timeout"
		-print_final_stats=1 -close_fd_mask=1)
	if [[ -f $fuzz_dir/dicts/$target.dict ]]; then
		options+=(-dict="$fuzz_dir/dicts/$target.dict")
	fi
	status=0
	# New inputs go to the first corpus directory; the seeds are only read.
	nice -n "$niceness" cargo fuzz run --sanitizer "$sanitizer" "$target" "$corpus" "$seeds" -- \
		"${options[@]}" >"$log" 2>&1 || status=$?
	remove_stale_work_dirs

	execs=$(sed -n 's/^stat::number_of_executed_units: *\([0-9]*\).*/\1/p' "$log" | tail -n 1)
	if [[ -z $execs ]]; then
		execs=$(sed -n 's/^Done \([0-9]*\) runs.*/\1/p' "$log" | tail -n 1)
	fi
	corpus_size=$(find "$corpus" -type f | wc -l)
	artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n 1)
	if ((status == 0)); then
		result="ok"
	else
		failed=1
		reason=$(grep -m1 -E "panicked at|==[0-9]+== ?ERROR|deadly signal|ALARM|out-of-memory|Timeout" "$log" || true)
		result="CRASH (exit $status): ${reason:-see log}; input: ${artifact:-none written}"
	fi
	summary+=("$(printf '%-16s %12s execs  %6s in corpus  %s' "$target" "${execs:-?}" "$corpus_size" "$result")")
done

echo
printf '%s\n' "${summary[@]}"
if ((failed)); then
	echo "fuzzing found a crash: see the logs in $log_dir" >&2
	exit 1
fi

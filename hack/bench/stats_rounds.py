#!/usr/bin/env python3
"""Time crictl stats and statsp against each daemon, print a table.

usage: hack/bench/stats_rounds.py --crictl PATH --rounds N [--warmup W]
           --containers N --pods P --target NAME ENDPOINT [--target ...]

Each round runs, for every target, `crictl stats -o json`
(ListContainerStats) and `crictl statsp -o json` (ListPodSandboxStats) once
each; the targets take turns going first so that drifting machine load hits
them alike. A sample is the wall time of the whole crictl command (its
start-up, the CRI call and the JSON printing), so the table compares
daemons, not absolute call costs. A command that fails, or whose answer does
not hold one entry per running container (per pod for statsp), is a
failure, counted and not timed, with its last error below the table; the
exit status is 1 if any of Wharf's failed (another daemon's failures are
only reported).
"""

import argparse
import json
import subprocess
import sys
import time

from latency import print_failures, print_latency_rows

CALLS = {
    "ListContainerStats": "stats",
    "ListPodSandboxStats": "statsp",
}


def crictl_stats(args, endpoint, call):
    """Run one crictl stats/statsp; its seconds, or why it failed."""
    command = [args.crictl, "--runtime-endpoint", endpoint, "--image-endpoint", endpoint,
               "--timeout", "30s", CALLS[call], "-o", "json"]
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        output = (result.stderr or result.stdout).strip().splitlines() or [""]
        return f"exit {result.returncode}: {output[-1][:300]}"
    try:
        entries = len(json.loads(result.stdout).get("stats") or [])
    except json.JSONDecodeError as error:
        return f"not JSON: {error}"
    expected = args.containers if call == "ListContainerStats" else args.pods
    if entries != expected:
        return f"{entries} entries, expected {expected}"
    return seconds


def run_rounds(args, rounds, samples, failures):
    for round_index in range(rounds):
        targets = args.target if round_index % 2 == 0 else list(reversed(args.target))
        for name, endpoint in targets:
            for call in CALLS:
                seconds = crictl_stats(args, endpoint, call)
                if isinstance(seconds, str):
                    count, _ = failures.get((name, call), (0, ""))
                    failures[name, call] = (count + 1, seconds)
                elif samples is not None:
                    samples.setdefault((name, call), []).append(seconds)


def print_table(args, samples, failures):
    print(f"crictl stats/statsp -o json with {args.containers} running containers in"
          f" {args.pods} pods, {args.rounds} rounds (after {args.warmup} warm-up rounds)")
    print()
    print_latency_rows("call", 19, [name for name, _ in args.target], CALLS, samples, failures)
    print()
    print("ListContainerStats: crictl stats -o json; ListPodSandboxStats: crictl statsp -o json.")
    print("Wall time of crictl.")
    print_failures(failures)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--crictl", required=True)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--containers", type=int, required=True)
    parser.add_argument("--pods", type=int, required=True)
    parser.add_argument("--target", nargs=2, action="append", required=True,
                        metavar=("NAME", "ENDPOINT"))
    args = parser.parse_args()
    warmup_failures = {}
    run_rounds(args, args.warmup, None, warmup_failures)
    samples, failures = {}, {}
    run_rounds(args, args.rounds, samples, failures)
    print_table(args, samples, failures)
    # Only Wharf's failures fail the run; the other daemons' are reported.
    wharf_failures = {key for key in {**warmup_failures, **failures} if key[0] == "wharf"}
    return 1 if wharf_failures else 0


if __name__ == "__main__":
    sys.exit(main())

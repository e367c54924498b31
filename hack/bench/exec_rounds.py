#!/usr/bin/env python3
"""Time crictl exec of `true` against one container per daemon, print a table.

usage: hack/bench/exec_rounds.py --crictl PATH --rounds N [--warmup W]
           --target NAME ENDPOINT CONTAINER_ID [--target ...]

Each round runs, for every target, the three modes below once each; the
targets take turns going first so that drifting machine load hits them
alike. A sample is the wall time of the whole crictl command (its start-up,
the CRI call, and for the streaming modes the HTTP upgrade and the session),
so the modes compare daemons, not absolute call costs. A command that fails
or prints anything is a failure, counted and not timed, with its last error
below the table; the exit status is 1 if any of Wharf's failed (another
daemon's failures are only reported: containerd 1.6 refuses WebSocket).
"""

import argparse
import subprocess
import sys
import time

from latency import print_failures, print_latency_rows

MODES = {
    "execsync": ["exec", "-s"],
    "spdy": ["exec"],
    "websocket": ["exec", "-r", "websocket"],
}


def crictl_exec(crictl, name, endpoint, container, mode):
    """Run one `crictl exec` of `true`; its seconds, or why it failed."""
    command = [crictl, "--runtime-endpoint", endpoint, "--image-endpoint", endpoint,
               "--timeout", "30s", *MODES[mode], container, "true"]
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    seconds = time.perf_counter() - start
    if result.returncode != 0 or result.stdout.strip() or result.stderr.strip():
        output = (result.stderr or result.stdout).strip().splitlines() or [""]
        return f"exit {result.returncode}: {output[-1][:300]}"
    return seconds


def run_rounds(args, rounds, samples, failures):
    for round_index in range(rounds):
        targets = args.target if round_index % 2 == 0 else list(reversed(args.target))
        for name, endpoint, container in targets:
            for mode in MODES:
                seconds = crictl_exec(args.crictl, name, endpoint, container, mode)
                if isinstance(seconds, str):
                    count, _ = failures.get((name, mode), (0, ""))
                    failures[name, mode] = (count + 1, seconds)
                elif samples is not None:
                    samples.setdefault((name, mode), []).append(seconds)


def print_table(args, samples, failures):
    print(f"crictl exec of `true`, {args.rounds} rounds (after {args.warmup} warm-up rounds)")
    print()
    print_latency_rows("mode", 9, [name for name, _, _ in args.target], MODES, samples, failures)
    print()
    print("execsync: crictl exec -s (ExecSync); spdy: crictl exec (Exec, then SPDY/3.1);")
    print("websocket: crictl exec -r websocket (Exec, then WebSocket). Wall time of crictl.")
    print_failures(failures)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--crictl", required=True)
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--target", nargs=3, action="append", required=True,
                        metavar=("NAME", "ENDPOINT", "CONTAINER_ID"))
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

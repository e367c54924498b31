#!/usr/bin/env python3
"""Where each lifecycle call's milliseconds go, from a Wharf debug log.

usage: hack/bench/step_profile.py DAEMON_LOG...

Reads the `step ... done elapsed_us=N` lines that crate::timing writes at
debug level (RUST_LOG=wharf=debug; hack/bench-lifecycle.sh --keep DIR keeps
the log as DIR/wharf.log) and the `rpc ... ok elapsed_us=N` lines of the
calls, and prints per call its p50 and the p50 of each step (nested steps
indented), with the sample counts. Steps run in sequence unless nested, so
a call's p50 minus its steps' is the time spent between steps (gRPC,
conversion, locks).

"runtime run --detach" is the runtime's own time, measured by the monitor
that ran it; for a call that has it, "outside the runtime" is the call
minus it, call by call. That pairing takes the log's order, so give it a
log of calls made one at a time.
"""

import collections
import re
import sys

from lifecycle_report import percentile

ANSI = re.compile(r"\x1b\[[0-9;]*m")
STEP = re.compile(r'rpc\{rpc="(?P<rpc>[^"]+)"\}(?P<path>(?::step\{name="[^"]+"\})*): '
                  r'wharf::timing: .* done elapsed_us=(?P<us>\d+)')
NAME = re.compile(r'step\{name="([^"]+)"\}')
RUNTIME_STEP = "runtime run --detach"


def main() -> int:
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    steps = collections.defaultdict(list)
    calls = collections.defaultdict(list)
    runtime_ms = {}  # rpc -> the last call's runtime time, not yet paired
    outside = collections.defaultdict(list)
    for path in sys.argv[1:]:
        with open(path, errors="replace") as log:
            for line in log:
                line = ANSI.sub("", line)
                if (match := STEP.search(line)):
                    names = tuple(NAME.findall(match["path"]))
                    steps[(match["rpc"], names)].append(int(match["us"]) / 1e3)
                    if names[-1] == RUNTIME_STEP:
                        runtime_ms[match["rpc"]] = int(match["us"]) / 1e3
                elif "wharf::cri: ok " in line:
                    rpc = re.search(r'rpc="?([A-Za-z]+)"?', line)
                    us = re.search(r"elapsed_us=(\d+)", line)
                    if rpc and us:
                        calls[rpc[1]].append(int(us[1]) / 1e3)
                        if rpc[1] in runtime_ms:
                            outside[rpc[1]].append(int(us[1]) / 1e3 - runtime_ms.pop(rpc[1]))
    for rpc in sorted({rpc for rpc, _ in steps}):
        samples = calls.get(rpc, [])
        total = f"{percentile(samples, 0.5):8.2f} ms p50 (n={len(samples)})" if samples else ""
        print(f"{rpc}: {total}")
        for (_, names), values in sorted((k, v) for k, v in steps.items() if k[0] == rpc):
            indent = "  " * len(names)
            print(f"{indent}{names[-1]:<{48 - len(indent)}} {percentile(values, 0.5):8.2f} ms "
                  f"p50, p95 {percentile(values, 0.95):8.2f} (n={len(values)})")
        if outside.get(rpc):
            values = outside[rpc]
            print(f"  {'outside the runtime (call - runtime)':<46} {percentile(values, 0.5):8.2f} ms "
                  f"p50, p95 {percentile(values, 0.95):8.2f} (n={len(values)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

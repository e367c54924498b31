#!/usr/bin/env python3
"""Print the pull benchmark's table from its raw samples.

usage: hack/bench/report.py --image REF --size BYTES --layers N RESULTS_TSV

RESULTS_TSV has one sample a line: DAEMON METRIC VALUE, tab-separated, where
METRIC is cold or warm (seconds of one PullImage), idle_rss or peak_rss (kB,
from /proc/PID/status). A daemon with no samples (not installed, or left
out) shows "not measured".
"""

import argparse
import collections
import statistics

DAEMONS = ["wharf", "containerd"]


def load(path):
    samples = collections.defaultdict(list)
    with open(path) as lines:
        for line in lines:
            if line.strip():
                daemon, metric, value = line.split("\t")
                samples[daemon, metric].append(float(value))
    return samples


def seconds(values):
    if not values:
        return "not measured"
    return f"{statistics.mean(values):8.3f} s / {min(values):7.3f} s"


def mebibytes(kilobytes):
    return f"{kilobytes / 1024:8.1f} MiB"


def ratio(samples, metric):
    wharf, containerd = samples.get(("wharf", metric)), samples.get(("containerd", metric))
    if not wharf or not containerd:
        return "-"
    return f"{statistics.mean(containerd) / statistics.mean(wharf):.2f}x"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image", required=True)
    parser.add_argument("--size", type=int, required=True, help="compressed layer bytes")
    parser.add_argument("--layers", type=int, required=True)
    parser.add_argument("results")
    args = parser.parse_args()
    samples = load(args.results)

    runs = len(samples.get(("wharf", "cold"), []))
    print(f"image: {args.image}")
    print(f"       {args.size / 2**20:.1f} MiB compressed, {args.layers} layers; {runs} runs each")
    print()
    row = "{:<6} | {:<25} | {:<25} | {}"
    print(row.format("pull", "wharf mean / min", "containerd mean / min", "containerd/wharf"))
    print(row.format("-" * 6, "-" * 25, "-" * 25, "-" * 16))
    for metric in ["cold", "warm"]:
        print(row.format(metric, seconds(samples.get(("wharf", metric))),
                         seconds(samples.get(("containerd", metric))), ratio(samples, metric)))
    print()
    row = "{:<40} | {:<12} | {}"
    print(row.format("daemon memory", "wharf", "containerd"))
    print(row.format("-" * 40, "-" * 12, "-" * 12))
    for metric, label, pick in [("idle_rss", "idle RSS after start (VmRSS, mean)", statistics.mean),
                                ("peak_rss", "peak RSS during pulls (VmHWM, max)", max)]:
        cells = [mebibytes(pick(samples[d, metric])) if samples.get((d, metric)) else "not measured"
                 for d in DAEMONS]
        print(row.format(label, *cells))
    print()
    print("cold: fresh root, nothing on disk; warm: the same pull again right after.")
    print("containerd/wharf above 1 means Wharf is faster.")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Print the lifecycle benchmark's tables from its results directory.

usage: hack/bench/lifecycle_report.py RESULTS_DIR

RESULTS_DIR (written by hack/bench-lifecycle.sh) holds, for every round R:
  DAEMON-seq-R.json, DAEMON-par-R.json, DAEMON-peak-R.json   `lifecycle cri` runs
  floor-seq-R.json, floor-par-R.json                         hack/bench/floor.py runs
once per daemon:
  DAEMON-busy-1.json      the read calls while B pods were being created
  DAEMON-restart.json     `lifecycle wait-ready` after a restart with B running
  DAEMON-memory-big.tsv   DAEMON, B, daemon VmRSS kB, one helper's VmRSS kB
and
  idle.tsv    DAEMON, VmRSS kB right after start-up
  leaks.tsv   DAEMON, processes, mounts, cgroups, netns left after teardown,
              files added to its root and state since the warm-up
The samples of all rounds are merged before taking percentiles; memory
figures are the last round's. A daemon without results shows "-".
"""

import json
import math
import pathlib
import sys

DAEMONS = ["wharf", "containerd"]
CALLS = [
    "RunPodSandbox", "CreateContainer", "StartContainer", "CreateContainer + StartContainer",
    "StopContainer", "RemoveContainer", "StopPodSandbox", "RemovePodSandbox",
    "pod start (run+create+start)", "pod teardown (stop..remove pod)",
]
FLOOR = ["runc run -d", "runc run -d (pod bundle)", "runc run -d (pod bundle, paced)", "runc create", "runc start", "runc create + start", "runc delete -f",
         "runc kill KILL + reap", "runc delete (exited)", "ip netns add", "ip netns del",
         "CNI ADD (bridge, portmap)", "CNI DEL (portmap, bridge)"]
QUERIES = ["ListContainers", "ListPodSandbox", "ContainerStatus"]
HELPERS = {"wharf": "wharf-monitor", "containerd": "containerd-shim-runc-v2"}


def percentile(samples, q):
    """Nearest rank: the smallest sample with at least q of them at or below it."""
    ordered = sorted(samples)
    return ordered[min(max(math.ceil(q * len(ordered)), 1), len(ordered)) - 1]


def print_steps(title, run):
    """A run's table: n, p50, p95 and max per step, then its failures."""
    print(title)
    print(f"  {'step':<34} {'n':>5} {'p50 ms':>9} {'p95 ms':>9} {'max ms':>9}")
    for step, stats in run["steps"].items():
        samples = stats["samples_ms"]
        print(f"  {step:<34} {len(samples):>5} {percentile(samples, 0.5):>9.2f} "
              f"{percentile(samples, 0.95):>9.2f} {max(samples):>9.2f}")
    if run["failures"]:
        print(f"  {len(run['failures'])} FAILED; the first: {run['failures'][0]}")


def load_rounds(directory: pathlib.Path, name: str):
    """NAME-*.json merged: samples and failures of every round, the last
    round's other fields, and "walls", every round's wall time."""
    runs = [json.loads(path.read_text())
            for path in sorted(directory.glob(f"{name}-*.json"),
                               key=lambda p: int(p.stem.rsplit("-", 1)[1]))]
    if not runs:
        return None
    merged = dict(runs[-1], steps={}, failures=[], walls=[run["wall_secs"] for run in runs])
    for run in runs:
        for step, stats in run["steps"].items():
            merged["steps"].setdefault(step, []).extend(stats["samples_ms"])
        merged["failures"].extend(run["failures"])
    return merged


def load_tsv(path: pathlib.Path) -> dict:
    if not path.exists():
        return {}
    rows = (line.split("\t") for line in path.read_text().splitlines() if line.strip())
    return {row[0]: [int(value) for value in row[1:]] for row in rows}


def latency(run, step) -> str:
    samples = run and run["steps"].get(step)
    return f"{percentile(samples, 0.5):7.1f} / {percentile(samples, 0.95):7.1f}" if samples else "-"


def ratio(runs, step) -> str:
    samples = [run and run["steps"].get(step) for run in runs]
    if not all(samples):
        return "-"
    return f"{percentile(samples[1], 0.5) / percentile(samples[0], 0.5):.2f}x"


def throughput(run) -> str:
    if not run:
        return "-"
    walls = run["walls"]
    mean = sum(walls) / len(walls)
    return f"{mean:.2f} s, {run['pods'] / mean:.1f} pod/s"


def latency_table(title, runs, floor):
    print(title)
    row = "  {:<38} | {:>17} | {:>18} | {:>16}"
    print(row.format("call (ms)", "wharf p50 / p95", "containerd p50/p95", "containerd/wharf"))
    print(row.format("-" * 38, "-" * 17, "-" * 18, "-" * 16))
    for step in CALLS:
        print(row.format(step, *(latency(run, step) for run in runs), ratio(runs, step)))
    print(row.format("one run (wall, throughput)", *(throughput(run) for run in runs), ""))
    if floor:
        for step in FLOOR:
            print(row.format(f"floor: {step}", latency(floor, step), "", ""))
    for run in [*runs, floor]:
        if run and run["failures"]:
            print(f"  {run['label']}: {len(run['failures'])} FAILED, first: {run['failures'][0]}")
    samples = [len(run["steps"].get("RunPodSandbox", [])) for run in runs if run]
    if samples:
        print(f"  ({max(samples)} samples per call and daemon)")
    print()


def mib(kb) -> str:
    return f"{kb / 1024:.1f} MiB"


def memory_rows(run, idle_kb) -> dict:
    """label -> value rows of one daemon's last peak run."""
    memory = run.get("memory", {}) if run else {}
    idle, peak, after = memory.get("idle"), memory.get("peak"), memory.get("after")
    if not peak:
        return {}
    pods, helpers = run["pods"], peak["shims"] or 1
    growth = peak["daemon_rss_kb"] - idle["daemon_rss_kb"] if idle else 0
    rows = {
        "daemon RSS right after start": mib(idle_kb) if idle_kb else "-",
        "daemon RSS idle, after the earlier runs": mib(idle["daemon_rss_kb"]) if idle else "-",
        f"daemon RSS with {pods} pods running": mib(peak["daemon_rss_kb"]),
        f"daemon PSS with {pods} pods running": mib(peak["daemon_pss_kb"]),
        "daemon peak RSS (VmHWM)": mib(peak["daemon_hwm_kb"]),
        "helper processes": str(peak["shims"]),
        "helpers RSS sum / mean": f"{mib(peak['shim_rss_kb'])} / {mib(peak['shim_rss_kb'] / helpers)}",
        "helpers PSS sum / mean": f"{mib(peak['shim_pss_kb'])} / {mib(peak['shim_pss_kb'] / helpers)}",
        "processes in pod cgroups, their RSS": f"{peak['pod_processes']}, {mib(peak['pod_rss_kb'])}",
        "runtime cost per pod: (daemon growth + helpers PSS) / N":
            mib((growth + peak["shim_pss_kb"]) / pods),
    }
    if after:
        rows["daemon RSS after teardown"] = mib(after["daemon_rss_kb"])
        rows["helpers still running after teardown"] = str(after["shims"])
    return rows


def memory_table(directory):
    idle = load_tsv(directory / "idle.tsv")
    per_daemon = [memory_rows(load_rounds(directory, f"{d}-peak"), idle.get(d, [0])[0])
                  for d in DAEMONS]
    labels = next((list(rows) for rows in per_daemon if rows), [])
    if not labels:
        return
    print("Memory, last peak run (helpers: " +
          ", ".join(f"{HELPERS[d]} for {d}" for d in DAEMONS) + ")")
    row = "  {:<56} | {:>22} | {:>22}"
    print(row.format("", *DAEMONS))
    print(row.format("-" * 56, "-" * 22, "-" * 22))
    for label in labels:
        print(row.format(label, *(rows.get(label, "-") for rows in per_daemon)))
    print()


def leak_table(directory):
    leaks = load_tsv(directory / "leaks.tsv")
    if not leaks:
        return
    print("Left behind after the last teardown and the daemon's stop:")
    for daemon, counts in leaks.items():
        processes, mounts, cgroups, netns, files = counts
        verdict = "nothing" if not any(counts) else "LEAK"
        print(f"  {daemon:<11} {processes} processes, {mounts} mounts, {cgroups} cgroups, "
              f"{netns} netns, {files:+d} files in root and state: {verdict}")
    for daemon in DAEMONS:
        for kind in ["seq", "par", "peak"]:
            run = load_rounds(directory, f"{daemon}-{kind}")
            left = run and run.get("leftover")
            if left and (left["pods"] or left["containers"]):
                print(f"  {daemon} {kind}: the daemon still listed {left} after the last round")
    print()


def pctl(samples, q) -> str:
    return f"{percentile(samples, q):.2f}" if samples else "-"


def big_table(directory):
    """The busy run's read-call latencies, the restart, the memory with B pods."""
    busy = [load_rounds(directory, f"{d}-busy") for d in DAEMONS]
    restart = [json.loads(p.read_text()) if (p := directory / f"{d}-restart.json").exists() else None
               for d in DAEMONS]
    memory = [load_tsv(directory / f"{d}-memory-big.tsv").get(d) for d in DAEMONS]
    if not any(busy) and not any(restart):
        return
    big = next((run["pods"] for run in busy if run), next((m[0] for m in memory if m), "?"))
    print(f"With {big} pods: read calls while they are being created (ms), the daemon's")
    print("  start-up with them running (recovery included), memory")
    row = "  {:<44} | {:>24} | {:>24}"
    print(row.format("", *DAEMONS))
    print(row.format("-" * 44, "-" * 24, "-" * 24))
    for call in QUERIES:
        cells = []
        for run in busy:
            samples = run and run["steps"].get(call)
            cells.append(f"{pctl(samples, 0.5)} / {pctl(samples, 0.95)} / {pctl(samples, 0.99)}"
                         if samples else "-")
        print(row.format(f"{call} p50 / p95 / p99", *cells))
    print(row.format("start-up: Version answers after",
                     *(f"{r['version_ms']:.0f} ms" if r else "-" for r in restart)))
    print(row.format(f"start-up: {big} running containers listed after",
                     *(f"{r['listed_ms']:.0f} ms" if r else "-" for r in restart)))
    print(row.format(f"daemon RSS with {big} pods",
                     *(mib(m[1]) if m else "-" for m in memory)))
    print(row.format("one helper's RSS (monitor / shim)",
                     *(mib(m[2]) if m else "-" for m in memory)))
    print()


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    directory = pathlib.Path(sys.argv[1])
    sample = next((run for d in DAEMONS if (run := load_rounds(directory, f"{d}-par"))), None)
    pods, parallel = (sample["pods"], sample["parallel"]) if sample else ("?", "?")
    for kind, title in [
        ("seq", f"Sequential: {pods} pods, one at a time, each through its 7 calls"),
        ("par", f"Parallel: {pods} pods, {parallel} at a time, each through its 7 calls"),
        ("peak", f"Peak: {pods} pods started {parallel} at a time, all running, then all torn down"),
    ]:
        runs = [load_rounds(directory, f"{d}-{kind}") for d in DAEMONS]
        floor = load_rounds(directory, f"floor-{kind}") if kind != "peak" else None
        latency_table(title, runs, floor)
    big_table(directory)
    memory_table(directory)
    leak_table(directory)
    print("""containerd/wharf: ratio of the p50s; above 1 means Wharf is faster. Compare
  whole pods rather than single calls: containerd defers `runc create` from
  CreateContainer to StartContainer, and its RunPodSandbox starts a pause
  container where Wharf only pins namespaces.
floor: raw runc of the same busybox (own namespaces, a cgroup parent), bare
  ip netns and the CNI plugins (bridge, portmap) run directly on a netns,
  with no daemon; no runtime can go below it. "(pod bundle)": the bundle
  Wharf wrote for a container of a running pod, run by runc directly;
  "paced": 150 ms after the previous runc ended, not straight after it.
RSS counts shared pages in every process that maps them; PSS divides them
  among those processes, so helper PSS sums are what N helpers really cost.""")
    return 0


if __name__ == "__main__":
    sys.exit(main())

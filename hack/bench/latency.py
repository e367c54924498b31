"""What hack/bench/exec_rounds.py and stats_rounds.py share: percentiles
and the latency table, per daemon and per kind of call."""

import statistics


def percentile(values, fraction):
    """Nearest-rank percentile of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * fraction // 1))
    return ordered[int(rank) - 1]


def print_latency_rows(kind_title, kind_width, names, kinds, samples, failures):
    """One row per daemon and kind: p50, p95, mean in ms, samples, failures;
    then the last error of each failing daemon and kind."""
    row = "{:<10} | {:<%d} | {:>8} | {:>8} | {:>8} | {:>7} | {}" % kind_width
    print(row.format("daemon", kind_title, "p50 ms", "p95 ms", "mean ms", "samples", "failed"))
    print(row.format("-" * 10, "-" * kind_width, "-" * 8, "-" * 8, "-" * 8, "-" * 7, "-" * 6))
    for name in names:
        for kind in kinds:
            values = samples.get((name, kind), [])
            cells = ([f"{percentile(values, 0.5) * 1000:.1f}", f"{percentile(values, 0.95) * 1000:.1f}",
                      f"{statistics.mean(values) * 1000:.1f}"] if values else ["-", "-", "-"])
            print(row.format(name, kind, *cells, len(values), failures.get((name, kind), (0,))[0]))


def print_failures(failures):
    for (name, kind), (_, error) in sorted(failures.items()):
        print(f"{name} {kind} failed, last error: {error}")

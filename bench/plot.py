"""Plot a results file of bench.run.

    python3 -m bench.plot bench/results/full.jsonl docs/benchmarks.png [--max-steal PCT]

Medians of the runs ``bench.run --summarize`` counts (the same ``--max-steal``).
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from .run import PEERS, STEAL_LIMIT_PCT, set_steal_limit, valid

#: (workload, key, title, scale, unit). W3's panel also shows W3local as its own bar.
PANELS = [
    ("w2", "updates_per_s", "W2: deliveries/s (1000 subscribers, closed loop)", 1e-3, "thousand deliveries/s"),
    ("w2", "server_cpu_us_per_delivery", "W2: server CPU per delivery, closed loop", 1, "us"),
    ("w2lat", "p99_ms", "W2: p99 latency at 40 msg/s (1000 subscribers)", 1, "ms"),
    ("w3", "updates_per_s", "W3: deliveries/s (100 topics x 10 subscribers)", 1e-3, "thousand deliveries/s"),
    ("w1", "kb_per_stream", "W1: RSS per idle stream (10,000 streams)", 1, "KB"),
    ("w6", "p99_ms", "W6: p99 with 20 stalled clients (4 KB messages)", 1, "ms"),
]
IN_PROCESS_BAR = {"w3": ("w3local", "pubsubsse\nin-process")}
COLORS = {
    "pubsubsse": "#0ea5e9",
    "pubsubsse\nin-process": "#0369a1",
    "baseline": "#94a3b8",
    "starlette": "#a78bfa",
    "flasksse": "#f472b6",
    "nchan": "#34d399",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source")
    parser.add_argument("target")
    parser.add_argument("--max-steal", type=float, default=STEAL_LIMIT_PCT, metavar="PCT")
    args = parser.parse_args()
    set_steal_limit(args.max_steal)
    values: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    with open(args.source) as f:
        for line in f:
            r = json.loads(line)
            if valid(r):
                for _workload, key, *_ in PANELS:
                    if key in r:
                        values[(r["workload"], key, r["peer"])].append(r[key])
    fig, axes = plt.subplots(1, len(PANELS), figsize=(24, 4.6))
    for ax, (workload, key, title, scale, unit) in zip(axes, PANELS):
        bars = [(p, values[(workload, key, p)]) for p in PEERS if values.get((workload, key, p))]
        if workload in IN_PROCESS_BAR:
            variant, label = IN_PROCESS_BAR[workload]
            if values.get((variant, key, "pubsubsse")):
                bars.insert(1, (label, values[(variant, key, "pubsubsse")]))
        names = [name for name, _ in bars]
        medians = [statistics.median(v) * scale for _, v in bars]
        drawn = ax.bar(names, medians, color=[COLORS[n] for n in names])
        ax.bar_label(drawn, fmt="%.4g", fontsize=8)
        ax.set_title(title, fontsize=9.5)
        ax.set_ylabel(unit)
        ax.tick_params(axis="x", labelsize=7.5)
    steal = f"runs with at most {args.max_steal:g}% steal" if args.max_steal < 100 else "every run, steal and all"
    fig.suptitle(f"pubsubsse and its peers on 2 cores (server on core 0, load on core 1): medians of {steal}")
    fig.tight_layout()
    fig.savefig(args.target, dpi=100)


if __name__ == "__main__":
    main()

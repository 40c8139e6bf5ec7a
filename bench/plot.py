"""Plot a results file of bench.run: python3 -m bench.plot bench/results/full.jsonl docs/benchmarks.png"""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from .run import PEERS, valid

PANELS = [
    ("w2", "updates_per_s", "W2: deliveries/s (1000 subscribers, closed loop)", 1e-3, "thousand deliveries/s"),
    ("w2lat", "p99_ms", "W2: p99 latency at 40 msg/s (1000 subscribers)", 1, "ms"),
    ("w1", "kb_per_stream", "W1: RSS per idle stream (10,000 streams)", 1, "KB"),
    ("w6", "p99_ms", "W6: p99 with 20 stalled clients (4 KB messages)", 1, "ms"),
]


def main() -> None:
    source, target = sys.argv[1], sys.argv[2]
    values: dict[tuple[str, str], list[float]] = defaultdict(list)
    with open(source) as f:
        for line in f:
            r = json.loads(line)
            for workload, key, *_ in PANELS:
                if r.get("workload") == workload and key in r and valid(r):
                    values[(workload, r["peer"])].append(r[key])
    fig, axes = plt.subplots(1, len(PANELS), figsize=(18, 4.2))
    colors = {
        "pubsubsse": "#0ea5e9",
        "baseline": "#94a3b8",
        "starlette": "#a78bfa",
        "flasksse": "#f472b6",
        "nchan": "#34d399",
    }
    for ax, (workload, _key, title, scale, unit) in zip(axes, PANELS):
        peers = [p for p in PEERS if values.get((workload, p))]
        medians = [statistics.median(values[(workload, p)]) * scale for p in peers]
        bars = ax.bar(peers, medians, color=[colors[p] for p in peers])
        ax.bar_label(bars, fmt="%.4g", fontsize=8)
        ax.set_title(title, fontsize=9.5)
        ax.set_ylabel(unit)
        ax.tick_params(axis="x", labelsize=8)
    fig.suptitle("pubsubsse and its peers on 2 cores (server on core 0, load on core 1): medians of runs without steal")
    fig.tight_layout()
    fig.savefig(target, dpi=110)


if __name__ == "__main__":
    main()

"""The benchmarks (``python3 -m bench.<name>``); raw results go to docs/bench-results."""


def steal() -> int:
    """Return the machine's steal time so far, in clock ticks (``/proc/stat``): benchmarks record it."""
    with open("/proc/stat") as stat:
        return int(stat.readline().split()[8])

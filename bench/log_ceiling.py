"""What the log costs Redis: how many publishes one log (one key, one Redis Cluster slot) can take.

    python3 -m bench.log_ceiling [--publishes 20000] [--repeat 3] [--out FILE.jsonl]

A private redis-server; the Redis transport appends publishes of a 100-byte message (the append
script the processes use, epoch and deadline checked) one per append, then 100 per append (what
the writer sends on a busy site); then one reader reads them back 1,000 per ``XREAD`` (what a
process catching up on publishes to topics it holds no stream of asks for, ``READ_COUNT``), 100
per ``XREAD`` (what a smaller count would cost) and one per ``XREAD`` (a process woken for each
publish). Reported: the redis-server process's CPU time (``/proc``, user + system) per publish
for each, which is what bounds one log: with P processes reading it, a publish costs Redis about
``append + P x read``. Steal (``/proc/stat``) over each measurement is recorded; one JSON line
per measurement.
"""

from __future__ import annotations

import json
import os
import time
import uuid

from pubsubsse.backends._entries import encode_entry
from pubsubsse.backends.redis import RedisTransport
from pubsubsse.core._messages import encode_update

from .run import emit, measurement_arguments, steal_ticks

_TICK = os.sysconf("SC_CLK_TCK")


def _server_cpu(pid: int) -> float:
    """The CPU seconds (user + system) of the process ``pid`` so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def measure(url: str, pid: int, publishes: int) -> list[dict[str, object]]:
    transport = RedisTransport(url, key=f"bench:ceiling:{uuid.uuid4().hex}")
    transport.connect()
    transport.create_epoch("e")
    body = encode_update("T-room", {"text": "x" * 100}, json.dumps, 65536)
    numbers = iter(range(1, 10**9))
    results: list[dict[str, object]] = []

    def timed(name: str, run: object) -> None:
        before, steal = _server_cpu(pid), steal_ticks()
        count = run()  # type: ignore[operator]
        spent, after = _server_cpu(pid) - before, steal_ticks()
        total = after[1] - steal[1]
        results.append(
            {
                "measured": name,
                "publishes": count,
                "redis_us_per_publish": round(spent / count * 1e6, 2),
                "steal_pct": round(100 * (after[0] - steal[0]) / total, 3) if total else 0.0,
            }
        )

    def append(size: int) -> int:
        for _ in range(publishes // size):
            entries = [encode_entry("P-bench", next(numbers), "pub", ("T-room", body), 2) for _ in range(size)]
            transport.append(entries, "e", transport.now_ms() + 5000, 0)
        return publishes // size * size

    def read(count: int) -> int:
        position, got = (0, 0), 0
        while got < publishes:
            records = transport.read(position, 0, count)
            if not records:
                break
            got += len(records)
            position = records[-1].position
        return got

    try:
        timed("append, 1 per append", lambda: append(1))
        timed("append, 100 per append", lambda: append(100))
        timed("read, 1000 per XREAD", lambda: read(1000))
        timed("read, 100 per XREAD", lambda: read(100))
        timed("read, 1 per XREAD", lambda: read(1))
    finally:
        transport._reader.delete(transport.key, transport.key + ":epoch")
        transport.disconnect()
    return results


def main() -> None:
    args = measurement_arguments(__doc__ or "", "publishes", 20000)
    from tests.redis_server import RedisServer

    redis = RedisServer()
    try:
        for run in range(1, args.repeat + 1):
            assert redis.proc is not None
            for result in measure(redis.url, redis.proc.pid, args.publishes):
                emit(
                    {"bench": "log_ceiling", "run": run, **result, "time": time.strftime("%Y-%m-%dT%H:%M:%S")}, args.out
                )
    finally:
        redis.close()


if __name__ == "__main__":
    main()

"""What waiting for a cluster master's replica costs an append: one Redis against a Redis Cluster.

    python3 -m bench.append_latency [--appends 2000] [--repeat 3] [--out FILE.jsonl]

A private redis-server and a private Redis Cluster (three masters with a replica each, as the
tests start them), both on loopback; the Redis transport appends one publish of a 100-byte
message at a time, as a quiet site's writer does, and each append's time is taken: on the
cluster an append returns once the master's replica has it (``WAIT``), on one Redis at once.
Reported per target: p50, p99 and the mean of an append, in ms, and steal (``/proc/stat``) over
the measurement; one JSON line per target and run, both targets in the same run.
"""

from __future__ import annotations

import json
import statistics
import time
import uuid

from pubsubsse.backends._entries import encode_entry
from pubsubsse.backends.redis import RedisTransport
from pubsubsse.core._messages import encode_update

from .run import emit, measurement_arguments, steal_pct, steal_ticks


def measure(url: str, cluster: bool, appends: int) -> dict[str, object]:
    """Append ``appends`` publishes one at a time; return the times' figures."""
    transport = RedisTransport(url, key=f"bench:latency:{uuid.uuid4().hex}", cluster=cluster)
    transport.connect()
    transport.create_epoch("e")
    body = encode_update("T-room", {"text": "x" * 100}, json.dumps, 65536)
    times = []
    steal = steal_ticks()
    try:
        for number in range(1, appends + 1):
            entry = encode_entry("P-bench", number, "pub", ("T-room", body), 2)
            started = time.perf_counter()
            transport.append([entry], "e", transport.now_ms() + 5000, 0)
            times.append(time.perf_counter() - started)
    finally:
        transport._reader.delete(transport.key, transport.key + ":epoch")
        transport.disconnect()
    times.sort()
    return {
        "appends": appends,
        "p50_ms": round(times[len(times) // 2] * 1e3, 3),
        "p99_ms": round(times[int(len(times) * 0.99)] * 1e3, 3),
        "mean_ms": round(statistics.fmean(times) * 1e3, 3),
        "steal_pct": steal_pct(steal, steal_ticks()),
    }


def main() -> None:
    args = measurement_arguments(__doc__ or "", "appends", 2000)
    from tests.redis_cluster import RedisCluster
    from tests.redis_server import RedisServer

    redis, cluster = RedisServer(), RedisCluster()
    try:
        for run in range(1, args.repeat + 1):
            for target, url, on_cluster in (("one Redis", redis.url, False), ("Redis Cluster", cluster.url, True)):
                result = measure(url, on_cluster, args.appends)
                line = {"bench": "append_latency", "run": run, "target": target, **result}
                emit({**line, "time": time.strftime("%Y-%m-%dT%H:%M:%S")}, args.out)
    finally:
        redis.close()
        cluster.close()


if __name__ == "__main__":
    main()

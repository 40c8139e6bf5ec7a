"""Where a shared service's log costs Redis CPU: one stream against three merged, on a Redis Cluster.

    python3 -m bench.partitions [--publishes 3000] [--repeat 3] [--out FILE.jsonl]

A private Redis Cluster (three masters with a replica each, as the tests start them). Three
replicas of one service in this process (``RedisBackend(url, cluster=True, partitions=N)``),
each appending to its own stream when N is 3 (the streams' slots chosen on three different
masters), publish ``--publishes`` messages of 100 bytes each, from four threads per replica,
to a topic one client subscribes to; every replica applies every publish. Reported per N: each
master's CPU time (``/proc``, user + system) per publish, the busiest master's and the sum, the
publishes a second, and steal (``/proc/stat``) over the measurement. With one stream, one master
takes every append and every read; with three, each takes its stream's, and every read round
asks every master (clock, entries and epoch in one pipeline).
"""

from __future__ import annotations

import os
import threading
import time
import uuid

from pubsubsse import SSEPubSubService
from pubsubsse.backends._merged import MergedTransport
from pubsubsse.backends.redis import RedisBackend

from .run import emit, measurement_arguments, steal_pct, steal_ticks

_TICK = os.sysconf("SC_CLK_TCK")


def _cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def _key(cluster, partitions: int) -> str:
    """A key whose streams' slots are served by ``partitions`` different masters."""
    while True:
        key = f"bench:partitions:{uuid.uuid4().hex[:8]}"
        masters = {cluster.master_of("{" + key + (f":{n}" if n else "") + "}") for n in range(partitions)}
        if len(masters) == partitions:
            return key


def measure(cluster, partitions: int, publishes: int) -> dict[str, object]:
    """Publish ``publishes`` messages through three replicas; return the masters' CPU per publish."""
    key = _key(cluster, partitions)
    services = []
    for n in range(3):
        backend = RedisBackend(cluster.url, key=key, cluster=True, partitions=partitions)
        if isinstance(backend.transport, MergedTransport):
            backend.transport.home = n % partitions
        services.append(SSEPubSubService(backend=backend, client_timeout=None))
    try:
        client = services[0].new_client()
        client.sub(services[0].public_topic("room"))
        for service in services:
            service.sync()
        masters = [port for port in cluster.ports if "role:master" in cluster.command(port, "info", "replication")]
        before = {port: _cpu(cluster.procs[port].pid) for port in masters}
        steal = steal_ticks()
        started = time.perf_counter()
        each = publishes // 12

        def publish(service: SSEPubSubService) -> None:
            topic = service.public_topic("room")
            for _ in range(each):
                topic.pub("x" * 100)

        threads = [threading.Thread(target=publish, args=(s,)) for s in services for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for service in services:
            service.sync()
        elapsed = time.perf_counter() - started
        used = {port: _cpu(cluster.procs[port].pid) - before[port] for port in masters}
        done = each * 12
        return {
            "partitions": partitions,
            "publishes": done,
            "publishes_per_s": round(done / elapsed),
            "us_per_publish_by_master": sorted((round(cpu / done * 1e6, 1) for cpu in used.values()), reverse=True),
            "us_per_publish_busiest": round(max(used.values()) / done * 1e6, 1),
            "us_per_publish_sum": round(sum(used.values()) / done * 1e6, 1),
            "steal_pct": steal_pct(steal, steal_ticks()),
        }
    finally:
        for service in services:
            service.shutdown()


def main() -> None:
    args = measurement_arguments(__doc__ or "", "publishes", 3000)
    from tests.redis_cluster import RedisCluster

    cluster = RedisCluster()
    try:
        for run in range(1, args.repeat + 1):
            for partitions in (1, 3):
                result = measure(cluster, partitions, args.publishes)
                line = {"bench": "partitions", "run": run, **result}
                emit({**line, "time": time.strftime("%Y-%m-%dT%H:%M:%S")}, args.out)
    finally:
        cluster.close()


if __name__ == "__main__":
    main()

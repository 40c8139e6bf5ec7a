"""The log on a real Redis Cluster (three masters with a replica each) under a steady publisher, masters killed.

Two gunicorn servers with two gevent workers each share one service through
``RedisBackend(url, cluster=True)``; 200 subscribers hold streams (reconnecting with
Last-Event-ID to the other server whenever a stream ends) and a publisher sends 20 numbered
messages a second. The faults: SIGKILL of the master serving the log's slot (its replica takes
over), the same node back as a replica and the new master killed (the log fails back), and a
master serving other slots killed (the cluster may refuse commands while it fails over). After
each, the fault suite's checker: every message answered "applied" arrives once, in order, or an
init message announces the gap; none answered "not applied" arrives; no client is stuck
RECEIVING; every worker's state is identical.
"""

from __future__ import annotations

import time
import uuid

import pytest

from ..redis_cluster import RedisCluster
from ..servers import Server
from .test_faults import fault_run

SUBSCRIBERS = 200


@pytest.mark.timeout(600)
def test_masters_killed_mid_run_fail_over_and_nothing_is_lost_silently():
    cluster = RedisCluster()
    key = f"t:{uuid.uuid4()}"
    slot_key = "{" + key + "}"  # where RedisBackend(cluster=True) keeps the log
    env = {
        "PUBSUBSSE_REDIS_CLUSTER_URL": cluster.url,
        "PUBSUBSSE_REDIS_KEY": key,
        "PUBSUBSSE_HEARTBEAT": "1",
        "PUBSUBSSE_CLIENT_TIMEOUT": "none",
        "PUBSUBSSE_REDIS_TIMEOUT": "1",
        "PUBSUBSSE_REDIS_ALIVE": "3",
        "PUBSUBSSE_REDIS_SNAPSHOT_EVERY": "50",
    }
    servers = [Server("gevent", env=env, workers=2), Server("gevent", env=env, workers=2)]
    try:
        with fault_run(servers, SUBSCRIBERS, "cluster-faults.json") as run:
            # 1. SIGKILL of the master that serves the log's slot: its replica is promoted.
            first = cluster.master_of(slot_key)
            injected = time.monotonic()
            cluster.kill(first)
            run.after("the log's master killed", injected)
            second = cluster.master_of(slot_key)
            assert second != first

            # 2. The killed node comes back (as the new master's replica); the new master is killed.
            cluster.start_node(first)
            cluster.wait_ok()
            injected = time.monotonic()
            cluster.kill(second)
            run.after("the promoted master killed (fail back)", injected)
            assert cluster.master_of(slot_key) == first

            # 3. A master of other slots killed: the cluster may refuse commands until it fails over.
            cluster.start_node(second)
            cluster.wait_ok()
            other = next(p for p in cluster.ports if cluster.master_of(slot_key) != p and _is_master(cluster, p))
            injected = time.monotonic()
            cluster.kill(other)
            run.after("a master of other slots killed", injected)
    finally:
        cluster.close()


def _is_master(cluster: RedisCluster, port: int) -> bool:
    return "role:master" in cluster.command(port, "info", "replication")


def test_a_master_without_a_replica_is_reported_once_per_outage(redis_cluster, monkeypatch, caplog):
    import signal

    from pubsubsse.backends import redis as redis_transport
    from pubsubsse.backends._entries import encode_entry

    # Appends try waiting for a replica again after this long without one (5 s in production): each does here.
    monkeypatch.setattr(redis_transport, "_REPLICA_RETRY", 0.0)
    transport = redis_transport.RedisTransport(redis_cluster.url, key=f"t:{uuid.uuid4()}", cluster=True)
    transport.connect()
    transport.create_epoch("e")
    numbers = iter(range(1, 10**6))

    def append() -> None:
        entry = encode_entry("P-test", next(numbers), "pub", ("T-a", b"{}"), 2)
        transport.append([entry], "e", transport.now_ms() + 5000, 0)

    def said() -> list[str]:
        return [record.getMessage() for record in caplog.records if "replica" in record.getMessage()]

    replica = redis_cluster.replica_of(redis_cluster.master_of(transport.key))
    process = redis_cluster.procs[replica]
    caplog.set_level("INFO", logger=redis_transport.__name__)
    append()
    process.send_signal(signal.SIGSTOP)
    try:
        for _ in range(10):  # each tries WAIT again (200 ms without an answer)
            append()
    finally:
        process.send_signal(signal.SIGCONT)
    assert said() == ["the pubsubsse log's master has no replica answering; appends do not wait for one"]
    deadline = time.monotonic() + 30
    while len(said()) < 2:
        assert time.monotonic() < deadline, "the replica's return was not noticed"
        append()
    transport.disconnect()
    redis_cluster.wait_ok()
    assert said()[1:] == ["the pubsubsse log's master has a replica again; appends wait for it"]

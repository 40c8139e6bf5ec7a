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

import contextlib
import signal
import time
import uuid

import pytest

from ..http_helpers import wait_for
from ..redis_cluster import RedisCluster
from ..servers import Server
from .test_faults import fault_run

SUBSCRIBERS = 200


@pytest.mark.timeout(600)
@pytest.mark.parametrize("partitions", [1, 3])
def test_masters_killed_mid_run_fail_over_and_nothing_is_lost_silently(partitions):
    cluster = RedisCluster()
    key = f"t:{uuid.uuid4()}"
    slot_key = "{" + key + "}"  # where RedisBackend(cluster=True) keeps the log (its first stream)
    # With three partitions, the other streams are "{key:1}" and "{key:2}": printed, since which
    # masters serve them decides what the third step kills.
    print("masters:", [cluster.master_of("{" + key + (f":{n}" if n else "") + "}") for n in range(partitions)])
    env = {
        "PUBSUBSSE_REDIS_CLUSTER_URL": cluster.url,
        "PUBSUBSSE_REDIS_PARTITIONS": str(partitions),
        "PUBSUBSSE_REDIS_KEY": key,
        "PUBSUBSSE_HEARTBEAT": "1",
        "PUBSUBSSE_CLIENT_TIMEOUT": "none",
        "PUBSUBSSE_REDIS_TIMEOUT": "1",
        "PUBSUBSSE_REDIS_ALIVE": "3",
        "PUBSUBSSE_REDIS_SNAPSHOT_EVERY": "50",
    }
    servers = [Server("gevent", env=env, workers=2), Server("gevent", env=env, workers=2)]
    try:
        with fault_run(servers, SUBSCRIBERS, f"cluster-faults-{partitions}.json") as run:
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
    except BaseException:
        print(cluster.logs())  # what the nodes decided, in the failure's report
        raise
    finally:
        cluster.close()


def _is_master(cluster: RedisCluster, port: int) -> bool:
    return "role:master" in cluster.command(port, "info", "replication")


def _appending(url: str):
    """A transport on a fresh log of the cluster at ``url``, and a function appending one publish to it.

    The function returns how long the append took (seconds).
    """
    from pubsubsse.backends._entries import encode_entry
    from pubsubsse.backends.redis import RedisTransport

    transport = RedisTransport(url, key=f"t:{uuid.uuid4()}", cluster=True)
    transport.connect()
    transport.create_epoch("e")
    numbers = iter(range(1, 10**6))

    def append() -> float:
        entry = encode_entry("P-test", next(numbers), "pub", ("T-a", b"{}"), 2)
        started = time.monotonic()
        transport.append([entry], "e", transport.now_ms() + 5000, 0)
        return time.monotonic() - started

    return transport, append


def test_a_master_without_a_replica_is_reported_once_per_outage(redis_cluster, monkeypatch, caplog):
    from pubsubsse.backends import redis as redis_transport

    # Appends try waiting for a replica again after this long without one (5 s in production): each does here.
    monkeypatch.setattr(redis_transport, "_REPLICA_RETRY", 0.0)
    transport, append = _appending(redis_cluster.url)

    def said() -> list[str]:
        return [record.getMessage() for record in caplog.records if "replica" in record.getMessage()]

    replica = redis_cluster.replica_of(redis_cluster.master_of(transport.key))
    process = redis_cluster.procs[replica]
    caplog.set_level("INFO", logger=redis_transport.__name__)
    append()
    process.send_signal(signal.SIGSTOP)
    try:
        # Each tries WAIT again (200 ms without an answer); reported once the replica's last
        # acknowledgement is over a second old (a replica merely slow is waited for).
        deadline = time.monotonic() + 30
        while not said():
            assert time.monotonic() < deadline, "the stopped replica was not reported"
            append()
        for _ in range(5):
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


def test_a_replica_that_misses_one_wait_but_is_online_is_still_waited_for(redis_cluster, caplog):
    """A replica slow for a moment (just resynced, a busy machine) is not taken for a missing one.

    Otherwise appends stop waiting for it for 5 s, and a failover in that window loses them.
    """
    from pubsubsse.backends import redis as redis_transport

    transport, append = _appending(redis_cluster.url)
    master = redis_cluster.master_of(transport.key)
    process = redis_cluster.procs[redis_cluster.replica_of(master)]
    caplog.set_level("INFO", logger=redis_transport.__name__)
    try:
        append()
        for _ in range(2):
            process.send_signal(signal.SIGSTOP)
            try:
                waited = append()  # the replica cannot answer: WAIT gives up after 200 ms
            finally:
                process.send_signal(signal.SIGCONT)
            assert waited >= 0.2
    finally:
        transport.disconnect()
    assert not [record for record in caplog.records if "replica" in record.getMessage()]


def test_every_script_runs_on_the_slot_master_when_the_url_names_another_node(redis_cluster):
    """Snapshots, trims, a replaced log and forgetting a process work whichever node the URL names.

    Scripts are bound to a client; a transport that looked the slot's master up must run them
    there, not on the node of the URL (which answers MOVED).
    """
    from pubsubsse.backends import redis as redis_transport
    from pubsubsse.backends._entries import encode_entry

    key = f"t:{uuid.uuid4()}"
    master = redis_cluster.master_of("{" + key + "}")
    elsewhere = next(port for port in redis_cluster.ports if port != master)
    url = f"redis://127.0.0.1:{elsewhere}/0"
    transport = redis_transport.RedisTransport(url, key=key, cluster=True)
    transport.serve("P-test")
    transport.connect()
    try:
        transport.create_epoch("e")
        entries = [encode_entry("P-test", n, "pub", ("T-a", b"{}"), 2) for n in (1, 2, 3)]
        appended = transport.append(entries, "e", transport.now_ms() + 5000, 0)
        positions = appended.positions
        transport.report("P-test", positions[-1], time.time(), 2)
        transport.hold({"T-a"})

        assert transport.lock_snapshot("me", 10)
        transport.store_snapshot(b"snapshot", "me")
        transport.unlock_snapshot("me")
        assert transport.load_snapshot() == b"snapshot"
        assert transport.lock_snapshot("other", 10)  # the lock was released

        transport.trim(positions[-1], 0.0)
        assert [record.position for record in transport.read(positions[0], 0, 10)] == [positions[-1]]
        assert transport.trimmed_after(positions[0])

        transport.forget(["P-test"])
        assert transport.reports() == {}
        assert redis_cluster.command(master, "smembers", f"{transport.key}:wants:T-a").strip() == ""

        assert transport.replace_log("e", "f", b"base")
        assert transport.get_epoch() == "f"
        assert transport.load_snapshot() == b"base"
        assert transport.head() is None
    finally:
        transport.disconnect()


@pytest.mark.timeout(180)
def test_a_failover_that_loses_the_logs_newest_entries_is_seeded_again_when_the_url_names_another_node():
    """The replica promoted lacks the newest entries (its link was cut): a new epoch, then changes go on.

    The URL names a node that serves neither: replacing the log (a script) must run on the new master.
    """
    from pubsubsse import SSEPubSubService
    from pubsubsse.backends import RedisBackend

    cluster = RedisCluster()
    key = f"t:{uuid.uuid4()}"
    master = cluster.master_of("{" + key + "}")
    replica = cluster.replica_of(master)
    bystander = next(port for port in cluster.ports if port not in (master, replica))
    url = f"redis://127.0.0.1:{bystander}/0"
    service = SSEPubSubService(backend=RedisBackend(url, key=key, cluster=True, timeout=1.0), client_timeout=None)
    try:
        topic = service.public_topic("orders")
        service.new_client().sub(topic)
        service.sync()
        with _replica_cut_off(cluster, master):
            for n in range(3):  # the master has these; its replica does not
                topic.pub(n)
            service.sync()
            cluster.kill(master)
        _until_a_new_epoch_takes(service.new_client, lambda: service.stats()["log_reseeds"])
        assert cluster.master_of("{" + key + "}") == replica
    except BaseException:
        print(cluster.logs())
        raise
    finally:
        service.shutdown()
        cluster.close()


def test_a_process_starts_from_the_next_node_the_url_names_when_the_first_is_down(redis_cluster):
    import socket

    from pubsubsse import SSEPubSubService
    from pubsubsse.backends import RedisBackend

    with socket.socket() as probe:  # a port nothing listens on: a node that is down
        probe.bind(("127.0.0.1", 0))
        down = probe.getsockname()[1]
    url = f"redis://127.0.0.1:{down},127.0.0.1:{redis_cluster.ports[1]}/0"
    service = SSEPubSubService(backend=RedisBackend(url, key=f"t:{uuid.uuid4()}", cluster=True), client_timeout=None)
    try:
        client = service.new_client()
        topic = service.public_topic("orders")
        client.sub(topic)
        topic.pub("first")
        service.sync()
        assert service.stats()["messages_published"] == 1
    finally:
        service.shutdown()


def test_a_publisher_on_a_partitioned_log_reaches_every_process(redis_cluster):
    # A Celery task's Publisher writes to one of the streams; the web processes, each appending to
    # its own, read them all merged: every one gets its publishes, in order, at the same ids.
    from pubsubsse import Publisher, SSEPubSubService
    from pubsubsse.backends.redis import RedisBackend

    key = f"t:{uuid.uuid4()}"
    backends = [RedisBackend(redis_cluster.url, key=key, cluster=True, partitions=3) for _ in range(2)]
    for home, backend in enumerate(backends):
        backend.transport.home = home  # type: ignore[attr-defined]
    a, b = (SSEPubSubService(backend=backend, client_timeout=None) for backend in backends)
    publisher = Publisher(backend=RedisBackend(redis_cluster.url, key=key, cluster=True, partitions=3))
    publisher._log.transport.home = 2  # type: ignore[attr-defined]
    try:
        client = a.new_client()
        client.sub(a.public_topic("orders"))
        b.sync()
        for n in range(5):
            publisher.publish("orders", n)
        a.sync()
        b.sync()
        here = a._core.since(a._core.clients[client.id], 0)
        there = b._core.since(b._core.clients[client.id], 0)
        assert here == there
        assert [body for _, body in here if b'"updates":[{' in body] and len(here) >= 5
        assert [b'"data":%d' % n in body for n, (_, body) in zip(range(5), here[-5:])] == [True] * 5
    finally:
        publisher.close()
        a.shutdown()
        b.shutdown()


def test_a_partition_whose_master_fails_over_without_its_newest_entries_is_found_and_reseeded():
    """Three partitions; the second stream's replica lacks its newest entries when its master dies.

    The process's last applied entry came from the first stream, later, and is still there: only
    the last entry applied from each stream shows the loss. A new epoch, then changes go on.
    """
    from pubsubsse import SSEPubSubService
    from pubsubsse.backends import RedisBackend

    cluster = RedisCluster()
    while True:  # the two streams on different masters
        key = f"t:{uuid.uuid4()}"
        first, second = cluster.master_of("{" + key + "}"), cluster.master_of("{" + key + ":1}")
        if first != second:
            break
    backends = [RedisBackend(cluster.url, key=key, cluster=True, partitions=3, timeout=1.0) for _ in range(2)]
    backends[0].transport.home, backends[1].transport.home = 1, 0  # type: ignore[attr-defined]
    a, b = (SSEPubSubService(backend=backend, client_timeout=None) for backend in backends)
    try:
        topic = a.public_topic("orders")
        a.new_client().sub(topic)
        a.sync()
        with _replica_cut_off(cluster, second):
            for n in range(3):  # the second stream's master has these; its replica does not
                topic.pub(n)
            b.sync()  # an entry of the first stream, after them
            wait_for(lambda: a.backend._position == b.backend._position, what="the first process to apply it")
            assert a.backend.transport.stream_of(a.backend._position) == 0  # type: ignore[attr-defined]
            cluster.kill(second)
        _until_a_new_epoch_takes(
            lambda: (a.new_client(), b.sync()), lambda: a.stats()["log_reseeds"] + b.stats()["log_reseeds"]
        )
        a.sync()
        assert a._core.position == b._core.position
    except BaseException:
        print(cluster.logs())
        raise
    finally:
        a.shutdown()
        b.shutdown()
        cluster.close()


@contextlib.contextmanager
def _replica_cut_off(cluster: RedisCluster, master: int):
    """The master's replica stopped and its replication link cut: what the master takes meanwhile, it lacks."""
    replica = cluster.replica_of(master)
    cluster.procs[replica].send_signal(signal.SIGSTOP)
    try:
        cluster.command(master, "client", "kill", "type", "replica")
        yield replica
    finally:
        cluster.procs[replica].send_signal(signal.SIGCONT)


def _until_a_new_epoch_takes(change, reseeds) -> None:
    """Make ``change`` until it goes through after exactly one reseed (``reseeds()``); at most 60 s."""
    deadline = time.monotonic() + 60
    while True:
        try:
            change()
            if reseeds() == 1:
                return
        except Exception:  # refused or unknown while the cluster fails over and the log is replaced
            pass
        assert time.monotonic() < deadline, "no new epoch took changes within 60 s"
        time.sleep(0.2)

"""The replicated log on a real redis-server, each defect of the review reproduced.

Two or three services in this process share one log, as gunicorn workers would. Redis is frozen
with SIGSTOP (connections accepted, nothing answered), stalled with DEBUG SLEEP, and fed raw
entries to play a newer version, a damaged entry or a damaged report.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import uuid
from contextlib import contextmanager

import pytest
import redis as redis_py

from pubsubsse import BackendUnavailable, SSEPubSubService, Status
from pubsubsse.backends import RedisBackend
from pubsubsse.testing import read_stream

from ..http_helpers import wait_for
from ..sse import drain, parse


@pytest.fixture
def key(redis_server):
    name = f"test:{uuid.uuid4()}"
    yield name
    r = redis_py.Redis.from_url(redis_server.url)
    for k in r.keys(name + "*"):
        r.delete(k)


@pytest.fixture
def make(redis_server, key):
    """Build services on the shared log; every one is shut down at the end."""
    made = []

    def build(**options):
        backend_options = {
            k: options.pop(k) for k in ("timeout", "alive", "snapshot_every", "outcome_timeout") if k in options
        }
        service = SSEPubSubService(backend=RedisBackend(redis_server.url, key=key, **backend_options), **options)
        made.append(service)
        return service

    yield build
    for service in made:
        service.shutdown()


def raw(redis_server) -> redis_py.Redis:
    return redis_py.Redis.from_url(redis_server.url)


def state(service):
    service.sync()
    return list(service.export_state())


@contextmanager
def frozen(redis_server):
    """Redis accepts connections and answers nothing while the block runs."""
    os.kill(redis_server.proc.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(redis_server.proc.pid, signal.SIGCONT)


# Entries this version cannot apply -----------------------------------------------------------


POISON = [
    {"v": "9", "e": "[]"},  # a format from the future
    {"v": "2", "e": json.dumps(["P-newer", 1, "teleport_client", ["C-1"]])},  # an operation it does not know
    {"v": "2", "e": json.dumps(["P-broken", 1, "sub", [5]])},  # arguments of the wrong shape
    {"v": "2", "e": "{not json"},
    {"c": json.dumps(["P-old", 1, "remove_client"])},  # a 0.1.0 entry, damaged
    {"x": "nothing a version of pubsubsse wrote"},
    {"v": "2", "e": "[" * 100_000 + "]" * 100_000},  # RecursionError, which stopped every reader
    {"v": "2", "e": json.dumps(["P-deep", 1, "pub", ["T-x"]]), "b": "[" * 100_000 + "]" * 100_000},
]


def test_entries_that_cannot_be_applied_are_skipped_alike_everywhere(make, redis_server, key):
    a, b = make(client_timeout=None), make(client_timeout=None)
    topic = a.new_public_topic()
    for fields in POISON:
        raw(redis_server).xadd(key, fields)
    client = b.new_client()  # the readers went past the poison: changes still apply everywhere
    client.sub(b.get_public_topic_by_id(topic.id))
    assert state(a) == state(b)
    assert a.stats()["log_entries_skipped"] == b.stats()["log_entries_skipped"] == len(POISON)
    late = make(client_timeout=None)  # and a process that starts now boots past them
    assert state(late) == state(a)
    assert late.stats()["log_entries_skipped"] == len(POISON)


def test_a_published_body_is_delivered_only_if_it_is_a_message_this_library_encodes(make, redis_server, key):
    """A body written into the log by hand goes to browsers as it is: not JSON, or a line break that
    ends the SSE event and starts another, must be skipped (by every process alike), not sent."""
    a, b = make(client_timeout=None), make(client_timeout=None)
    topic = a.public_topic("orders")
    client = a.new_client()
    client.sub(topic)
    stream = client.stream()
    drain(stream)
    good = b'{"sys":null,"updates":[{"topic":"T-orders","data":1}]}'
    for body in [
        b"not json",
        good[:-1] + b'\n\ndata: {"forged": true}}',
        good.replace(b"T-orders", b"T-other"),
        b'{"sys":[],"updates":[{"topic":"T-orders","data":1}]}',
    ]:
        raw(redis_server).xadd(key, {"v": "2", "e": json.dumps(["Q-hand", 1, "pub", ["T-orders"]]), "b": body})
    raw(redis_server).xadd(key, {"v": "2", "e": json.dumps(["Q-hand", 2, "pub", ["T-orders"]]), "b": good})
    a.sync()
    b.sync()
    assert [m["updates"] for m in drain(stream).messages] == [[{"topic": "T-orders", "data": 1}]]
    assert a.stats()["log_entries_skipped"] == b.stats()["log_entries_skipped"] == 4
    stream.close()


def test_damaged_reports_of_other_processes_change_nothing(make, redis_server, key):
    r = raw(redis_server)
    r.hset(key + ":applied", "P-damaged", "not a position")
    r.hset(key + ":applied", "P-damaged-time", "1-0 yesterday")
    r.hset(key + ":versions", "P-damaged-version", "x")
    a = make(client_timeout=None)
    time.sleep(1.2)  # a report and a read of everyone's reports go by
    assert a.new_client() is not None
    assert make(client_timeout=None).get_client_by_id(a.new_client().id) is not None


def test_reports_of_processes_dead_for_long_are_pruned(make, redis_server, key):
    r = raw(redis_server)
    r.hset(key + ":applied", "P-long-gone", f"1-0 {time.time() - 3600}")
    r.hset(key + ":versions", "P-long-gone", "2")
    make(client_timeout=None, alive=1.0)
    wait_for(lambda: not r.hexists(key + ":applied", "P-long-gone"), what="the old report to be pruned")
    assert not r.hexists(key + ":versions", "P-long-gone")


# Nothing stuck -------------------------------------------------------------------------------


def test_a_stream_closed_while_redis_is_frozen_is_detached_once_it_answers(make, redis_server):
    a = make(client_timeout=None, timeout=0.5)
    client = a.new_client()
    stream = client.stream()
    stream.read(timeout=0)
    with frozen(redis_server):
        started = time.monotonic()
        stream.close()  # the disconnect watcher's call: it must not wait for Redis
        assert time.monotonic() - started < 0.5
        time.sleep(1.0)  # the detach fails meanwhile
    wait_for(lambda: a.get_client_by_id(client.id).status is Status.WAITING, what="the detach to be retried")
    other = make(client_timeout=None)
    assert other.get_client_by_id(client.id).status is Status.WAITING


def test_a_stream_closed_while_redis_is_down_is_detached_once_it_is_back():
    """The detach failed (connection refused) and was dropped: the client stayed RECEIVING for good."""
    from ..redis_server import RedisServer

    redis = RedisServer(persistent=True)
    key = f"test:{uuid.uuid4()}"
    a = SSEPubSubService(backend=RedisBackend(redis.url, key=key, timeout=0.5), client_timeout=None)
    try:
        client = a.new_client()
        stream = client.stream()
        stream.read(timeout=0)
        redis.stop()
        stream.close()
        time.sleep(1.0)  # the detach fails meanwhile, more than once
        redis.start()
        wait_for(lambda: a.get_client_by_id(client.id).status is Status.WAITING, what="the detach to be retried")
        assert a.stats()["log_changes_retried"] >= 1
    finally:
        a.shutdown()
        redis.close()


def test_heartbeats_go_on_while_redis_is_frozen(make, redis_server):
    """The timer proposes an expiry and detaches; when they waited for Redis, heartbeats stopped."""
    a = make(client_timeout=0.3, heartbeat=0.2, timeout=3.0)
    waiting = a.new_client()  # will be proposed for expiry while Redis is frozen
    reader = a.new_client()
    stream = reader.stream()
    stream.read(timeout=0)
    assert a.get_client_by_id(waiting.id) is not None
    raw_bytes = b""
    with frozen(redis_server):
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            raw_bytes += stream.read(timeout=0.1) or b""
    assert parse(raw_bytes).comments >= 6, "heartbeats every 0.2 s for 2 s, Redis frozen"
    stream.close()


@contextmanager
def behind(service, seconds: float = 0.3):
    """The service's reader stalls until a lookup has waited ``seconds`` for it: it must catch up."""
    gate = threading.Event()
    waiting = threading.Event()
    original = service.backend.transport.read

    def gated(*args, **kwargs):
        waiting.set()
        gate.wait(5)
        return original(*args, **kwargs)

    service.backend.transport.read = gated
    assert waiting.wait(5)  # the read under way when the gate went in has returned: now it waits
    try:
        yield lambda: threading.Timer(seconds, gate.set).start()
    finally:
        gate.set()
        service.backend.transport.read = original


@pytest.mark.parametrize(
    "lookup",
    [
        "client.get_group_by_id",
        "client.get_topic_by_id",
        "group.get_topic_by_id",
        "group.get_client_by_id",
        "client.get_public_topic_by_id",
    ],
)
def test_lookups_on_handles_catch_up_with_the_log(make, lookup):
    a, b = make(client_timeout=None), make(client_timeout=None)
    client = b.new_client()
    group = a.new_group()
    group_in_b = b.get_group_by_id(group.id)
    with behind(b) as release:
        group.add_client(a.get_client_by_id(client.id))
        topic = group.new_topic()
        public = a.new_public_topic()
        release()
        found = {
            "client.get_group_by_id": lambda: client.get_group_by_id(group.id),
            "client.get_topic_by_id": lambda: client.get_topic_by_id(topic.id),
            "group.get_topic_by_id": lambda: group_in_b.get_topic_by_id(topic.id),
            "group.get_client_by_id": lambda: group_in_b.get_client_by_id(client.id),
            "client.get_public_topic_by_id": lambda: client.get_public_topic_by_id(public.id),
        }[lookup]()
    assert found is not None


def test_sync_returns_only_once_the_entries_before_it_are_applied(make):
    a, b = make(client_timeout=None), make(client_timeout=None)
    original = b.apply

    def slow_apply(operation, args):
        if operation == "new_public_topic":
            time.sleep(0.3)
        return original(operation, args)

    b.apply = slow_apply
    topic = a.new_public_topic()
    b.sync()
    assert topic.id in b.get_public_topics()


# Answers are never ambiguous -----------------------------------------------------------------


def debug_sleep(redis_server, seconds: float) -> threading.Thread:
    """DEBUG SLEEP from another connection: Redis is stuck for ``seconds`` from now."""
    started = threading.Event()
    failed = []

    def stall() -> None:
        connection = raw(redis_server)
        connection.ping()
        started.set()
        try:
            connection.execute_command("DEBUG", "SLEEP", seconds)
        except redis_py.RedisError as error:
            failed.append(error)

    thread = threading.Thread(target=stall)
    thread.start()
    assert started.wait(5)
    time.sleep(0.1)
    assert not failed, failed
    return thread


def test_a_change_that_fails_during_a_stall_is_never_applied_later(make, redis_server):
    a = make(client_timeout=None, timeout=0.5, outcome_timeout=10)
    b = make(client_timeout=None)
    topic = a.new_public_topic()
    client = b.new_client()
    client.sub(b.get_public_topic_by_id(topic.id))
    before = b._core.position
    stall = debug_sleep(redis_server, 1.5)
    with pytest.raises(BackendUnavailable) as raised:
        topic.pub("during the stall")
    assert not raised.value.outcome_unknown
    stall.join()
    topic.pub("after the stall")
    b.sync()
    received = read_stream(client, seconds=0.5, last_event_id=str(before))
    assert received.updates() == ["after the stall"]


def test_an_attach_that_fails_during_a_stall_leaves_the_client_waiting(make, redis_server):
    a = make(client_timeout=None, timeout=0.5, outcome_timeout=10)
    client = a.new_client()
    stall = debug_sleep(redis_server, 1.5)
    with pytest.raises(BackendUnavailable):
        client.stream()
    stall.join()
    a.sync()
    assert a.get_client_by_id(client.id).status is Status.WAITING


def test_a_change_whose_answer_was_lost_is_reported_as_applied(make, redis_server):
    """The append reached Redis but its answer did not come back in time: the writer finds out."""
    a = make(client_timeout=None, timeout=0.5, outcome_timeout=10)
    topic = a.new_public_topic()
    backend = a.backend
    original = backend.transport.append
    calls = []

    def append_then_lose_the_answer(entries, epoch, deadline_ms, not_before_ms):
        outcome = original(entries, epoch, deadline_ms, not_before_ms)
        calls.append(outcome)
        if len(calls) == 1:
            from pubsubsse.backends.log import LogUnavailable

            raise LogUnavailable("the answer was lost on its way back")
        return outcome

    backend.transport.append = append_then_lose_the_answer
    try:
        topic.pub("sent once")  # returns: applied, though its answer was lost
    finally:
        backend.transport.append = original
    client = a.new_client()
    client.sub(topic)
    assert a.stats()["messages_published"] == 1


# Snapshots -----------------------------------------------------------------------------------


def test_snapshots_are_built_in_slices_and_release_the_lock_between_them(make):
    a = make(client_timeout=None)
    for _ in range(2500):
        a.new_client()
    slices = a.export_state(1000)
    next(slices)  # the topics and groups
    next(slices)  # the first 1,000 clients
    assert a._lock.acquire(blocking=False), "the lock is free between slices"
    a._lock.release()
    assert sum(len(part) for part in slices) == 1500


def test_published_bodies_are_stored_as_they_are(make, redis_server, key):
    a = make(client_timeout=None)
    topic = a.new_public_topic()
    topic.pub({"text": 'quotes " and \\ backslashes'})
    (_, fields), *_ = raw(redis_server).xrevrange(key, count=1)
    body = fields[b"b"]
    assert json.loads(body)["updates"][0]["data"] == {"text": 'quotes " and \\ backslashes'}
    assert b"updates" not in fields[b"e"]  # not JSON inside JSON


def test_the_snapshot_lock_is_released_only_by_its_owner(make):
    backend = make(client_timeout=None).backend
    assert backend.transport.lock_snapshot("first", 30)
    assert not backend.transport.lock_snapshot("second", 30)
    backend.transport.unlock_snapshot("second")  # its lock expired and was taken: it must not release the new owner's
    assert not backend.transport.lock_snapshot("third", 30)
    backend.transport.unlock_snapshot("first")
    assert backend.transport.lock_snapshot("third", 30)
    backend.transport.unlock_snapshot("third")


def test_a_process_loading_an_older_snapshot_misses_nothing_the_others_trim(make):
    """A worker boots and reads a snapshot; meanwhile another stores a newer one and trims the log.

    The trimmer did not count the booting worker, which then caught up from its older snapshot
    with entries missing: a silent gap (found by the fault suite's rolling restart).
    """
    a = make(client_timeout=None, snapshot_every=20)
    topic = a.new_public_topic()
    client = a.new_client()
    client.sub(topic)
    for n in range(30):
        topic.pub(n)
    wait_for(lambda: a.stats()["log_snapshots"] >= 1, what="a first snapshot")
    read_snapshot = threading.Event()
    go_on = threading.Event()
    booted = []

    def boot() -> None:
        backend = RedisBackend(a.backend.url, key=a.backend.key)
        original = backend.transport.load_snapshot

        def slow_load():
            blob = original()
            read_snapshot.set()
            go_on.wait(10)  # the booting worker has its snapshot; the log moves on meanwhile
            return blob

        backend.transport.load_snapshot = slow_load
        booted.append(SSEPubSubService(backend=backend, client_timeout=None))

    booting = threading.Thread(target=boot)
    booting.start()
    assert read_snapshot.wait(10)
    before = a.stats()["log_snapshots"]
    n = 30
    while a.stats()["log_snapshots"] < before + 2 and n < 2000:  # newer snapshots, and trims behind them
        topic.pub(n)
        n += 1
    time.sleep(1.2)  # a report and a trim go by
    go_on.set()
    booting.join(10)
    late = booted[0]
    try:
        assert state(late) == state(a)
    finally:
        late.shutdown()


def test_a_process_paused_past_alive_reloads_what_was_trimmed_meanwhile(make):
    """Trims go on while b is thought dead; b, back, must see that its next entries are gone.

    Redis's ``max-deleted-entry-id`` does not move on ``XTRIM``: b read on from the first entry
    left and silently skipped the trimmed ones (20 subscribers of a cluster missed 120 messages).
    """
    a = make(client_timeout=None, snapshot_every=20, alive=1.0)
    b = make(client_timeout=None, alive=1.0)
    topic = a.new_public_topic()
    client = a.new_client()
    client.sub(topic)
    b.sync()
    trimmed = a.stats()["log_snapshots"]
    with behind(b, seconds=3.0) as release:  # b's reader stops for 3 s: b is "dead" for the others
        release()
        n = 0
        deadline = time.monotonic() + 2.5
        while time.monotonic() < deadline:  # snapshots and trims go by without b, after alive
            topic.pub(n)
            n += 1
            time.sleep(0.005)
    assert a.stats()["log_snapshots"] > trimmed + 5
    assert state(b) == state(a)
    assert b.stats()["log_reloads"] == 1


def test_a_process_that_saw_no_error_notices_that_the_log_was_replaced(make, redis_server, key):
    """The log replaced while b's connections never failed (redis-py reconnects by itself): b read
    the new log's entries onto its old state, and its next change was refused as stale."""
    from pubsubsse.backends import _snapshot as snapshots

    a = make(client_timeout=None)
    b = make(client_timeout=None)
    topic = a.new_public_topic()
    a.new_client().sub(topic)
    b.sync()
    old = b.backend._epoch
    blob = b"".join(
        snapshots.encode({"epoch": "replaced", "position": [0, 0], "jump": 1 << 20}, [{"public": [], "groups": []}])
    )
    assert a.backend.transport.replace_log(old, "replaced", blob)
    wait_for(lambda: b.backend._epoch == "replaced", timeout=10, what="b to reload the replaced log")
    assert b.get_public_topics() == {} and b.new_public_topic()  # b's changes are taken again


def test_trims_record_the_last_entry_removed_and_trim_nothing_before_the_start(make, redis_server, key):
    """``XTRIM`` leaves ``max-deleted-entry-id`` alone, so a trim behind a process went unseen;
    and a trim up to the start of a replaced log (a process still at it) failed the maintenance."""
    backend = make(client_timeout=None).backend
    ids = [raw(redis_server).xadd(key, {"x": "1"}) for _ in range(3)]
    position = tuple(int(part) for part in ids[0].decode().split("-"))
    assert not backend.transport.trimmed_after(position)
    backend.transport.trim(tuple(int(part) for part in ids[2].decode().split("-")), time.time())
    assert backend.transport.trimmed_after(position)
    backend.transport.trim((0, 0), time.time())  # raised ResponseError: invalid end ID for the interval


@pytest.mark.timeout(120)
def test_poison_entries_are_skipped_alike_on_postgresql_too():
    """The deep entry stopped every reader on PostgreSQL as on Redis: the decoding is the log's, not the transport's."""
    from pubsubsse.backends.postgres import PostgresBackend

    from ..conftest import POSTGRES_DSN, drop_postgres_tables

    name = f"t_{uuid.uuid4().hex[:16]}"
    a = SSEPubSubService(backend=PostgresBackend(POSTGRES_DSN, name=name), client_timeout=None)
    b = SSEPubSubService(backend=PostgresBackend(POSTGRES_DSN, name=name), client_timeout=None)
    try:
        topic = a.public_topic("orders")
        poison = [
            {"v": b"2", "e": b"[" * 100_000 + b"]" * 100_000},
            {"v": b"2", "e": json.dumps(["Q-hand", 1, "pub", ["T-orders"]]).encode(), "b": b"not json"},
        ]
        a.backend.transport.append(poison, "*", 1 << 62, 0)
        client = b.new_client()  # the readers went past them
        client.sub(b.public_topic("orders"))
        a.sync()
        assert state(a) == state(b) and topic.get_clients().keys() == {client.id}
        for service in (a, b):
            stats = service.stats()
            assert (stats["log_entries_skipped"], stats["log_thread_restarts"]) == (2, 0), stats
    finally:
        a.shutdown()
        b.shutdown()
        drop_postgres_tables(name)


def test_a_reader_stopped_by_an_unexpected_error_is_started_again(make):
    """Nothing the loops expect, a bug say: the reader must not stop for good while publishes are still taken."""
    a = make(client_timeout=None)
    backend = a.backend
    maintain = backend._maintain
    failed = threading.Event()

    def fails_once() -> None:
        if not failed.is_set():
            failed.set()
            raise RuntimeError("a bug")
        maintain()

    backend._maintain = fails_once
    wait_for(lambda: a.stats()["log_thread_restarts"] == 1, what="the reader to be restarted")
    client = a.new_client()  # applied: the reader runs again
    assert a.get_client_by_id(client.id) is client


@pytest.mark.parametrize("where", ["redis", "postgres", "memory"])
def test_a_trim_never_goes_past_a_live_report_read_with_it(where, redis_server):
    """The trimmer read the reports, then trimmed: a process that came back and reported in between
    (its report stale a moment before) was trimmed past, and read on after the hole. The reports are
    now read by the trim itself; a report older than ``reported_after`` does not count."""
    from pubsubsse.backends.memory import MemoryTransport
    from pubsubsse.backends.postgres import PostgresTransport
    from pubsubsse.backends.redis import RedisTransport

    from ..conftest import POSTGRES_DSN

    name = f"t_{uuid.uuid4().hex[:16]}"
    transport = {
        "redis": lambda: RedisTransport(redis_server.url, key=name),
        "postgres": lambda: PostgresTransport(POSTGRES_DSN, name=name),
        "memory": MemoryTransport,
    }[where]()
    try:
        transport.connect()
        transport.create_epoch("e")
        positions = [transport.append([{"e": b"x"}], "e", 1 << 62, 0).positions[0] for _ in range(6)]
        now = time.time()
        transport.report("live", positions[2], now, 2)
        transport.report("dead", positions[0], now - 10, 2)
        transport.trim(positions[5], now - 5)
        assert [r.position for r in transport.read(positions[0], 0, 10)] == positions[2:]
        assert transport.trimmed_after(positions[0]) and not transport.trimmed_after(positions[1])
        transport.trim(positions[5], now + 1)  # no report is later: only ``before`` counts
        assert [r.position for r in transport.read(positions[0], 0, 10)] == positions[5:]
    finally:
        if where == "redis":
            r = raw(redis_server)
            for k in r.keys(name + "*"):
                r.delete(k)
        if where == "postgres":
            transport.drop()
        transport.disconnect()

"""The shared-log engine on its own: two replicas over a log in memory, faults switched on by the test.

What Redis and PostgreSQL tests show with real servers (tests/integration/test_log_faults.py), shown
here in milliseconds and without timing luck: the same order everywhere, a deadline that refuses,
a lost answer settled by reading, a lost log re-seeded, an entry nobody can apply skipped alike.
"""

from __future__ import annotations

import json
import threading
import time

import pytest

from pubsubsse import SSEPubSubService
from pubsubsse.backends.log import LogBackend, LogUnavailable
from pubsubsse.backends.memory import MemoryTransport
from pubsubsse.errors import BackendUnavailable

from ..http_helpers import wait_for


@pytest.fixture
def log():
    return MemoryTransport()


@pytest.fixture
def replicas(log):
    made: list[SSEPubSubService] = []

    def make(**options):
        service = SSEPubSubService(backend=LogBackend(log, **options), client_timeout=None)
        made.append(service)
        return service

    yield make
    for service in made:
        service.shutdown()


def delivered(service: SSEPubSubService, client_id: str) -> list[tuple[int, object]]:
    """The messages a resume from the start would give the client on this replica: (position, data)."""
    events = service._core.since(service._core.clients[client_id], 0)
    assert events is not None
    return [(position, json.loads(body)["updates"][0]["data"]) for position, body in events if b'"updates":[{' in body]


def test_two_replicas_apply_every_change_in_the_same_order(replicas):
    a, b = replicas(), replicas()
    client = a.new_client()
    topic = a.public_topic("orders")
    client.sub(topic)
    b.sync()
    publish_from_both(a, b, client.id)


def publish_from_both(a: SSEPubSubService, b: SSEPubSubService, client_id: str) -> None:
    """Publish 0..59 to "orders" from both replicas at once; assert both give the client all, alike."""
    topic, other = a.public_topic("orders"), b.public_topic("orders")

    def publish(handle, start):
        for n in range(start, 60, 2):
            handle.pub(n)

    threads = [threading.Thread(target=publish, args=(topic, 0)), threading.Thread(target=publish, args=(other, 1))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    a.sync()
    b.sync()
    in_a, in_b = delivered(a, client_id), delivered(b, client_id)
    assert sorted(data for _, data in in_a) == list(range(60))
    assert in_a == in_b  # the same messages at the same positions, in the same order


def test_a_change_the_log_takes_after_its_deadline_is_refused_and_not_applied(replicas, log):
    a = replicas(timeout=1.0)
    a.new_client()  # the engine has learnt the log's clock
    now = [log.clock()]

    def jumping() -> int:  # every look at the log's clock finds it 10 s later: each deadline passes
        now[0] += 10_000
        return now[0]

    log.clock = jumping
    with pytest.raises(BackendUnavailable) as refused:
        a.new_client()
    assert not refused.value.outcome_unknown
    assert len(a.get_clients()) == 1
    assert len([r for r in log.read((0, 0), 0, 100) if b'"new_client"' in r.fields[b"e"]]) == 1


def test_an_append_whose_answer_is_lost_is_settled_by_reading_the_log(replicas, log):
    a = replicas()
    log.lose_answers = 1  # appended, then answered with "no answer"
    client = a.new_client()
    assert a.get_client_by_id(client.id) is client
    entries = [r for r in log.read((0, 0), 0, 100) if b'"new_client"' in r.fields[b"e"]]
    assert len(entries) == 1  # settled by finding it, not by appending it again


def test_a_log_lost_whole_is_seeded_again_from_a_replica_and_every_replica_follows(replicas, log):
    a, b = replicas(), replicas()
    client = a.new_client()
    b.sync()
    log.lose()  # a Redis restarted without its data: no entries, no epoch, no snapshot
    wait_for(lambda: log.get_epoch() is not None, what="a new epoch")
    later = wait_for(lambda: _try(a.new_client), what="a change accepted by the new epoch")
    b.sync()
    assert set(b.get_clients()) == {client.id, later.id}
    assert a.stats()["log_reseeds"] + b.stats()["log_reseeds"] == 1


def _try(change):
    try:
        return change()
    except BackendUnavailable:
        return None


def test_an_entry_no_replica_can_apply_is_skipped_alike_everywhere(replicas, log):
    a, b = replicas(), replicas()
    a.public_topic("orders")
    poison = [
        {"v": b"2", "e": b"[" * 100_000 + b"]" * 100_000},  # RecursionError in the decoder
        {"v": b"2", "e": json.dumps(["Q-hand", 1, "pub", ["T-orders"]]).encode(), "b": b"not json"},
    ]
    log.append(poison, "*", 1 << 62, 0)
    client = b.new_client()
    client.sub(b.public_topic("orders"))
    a.sync()
    assert a.get_public_topic_by_id("T-orders").get_clients().keys() == {client.id}
    for service in (a, b):
        stats = service.stats()
        assert (stats["log_entries_skipped"], stats["log_thread_restarts"]) == (2, 0), stats


class _OwnView:
    """One replica's way to the shared memory log, with faults of its own (the others see none)."""

    def __init__(self, log: MemoryTransport) -> None:
        self._log = log
        self.reports_fail = False
        self.cut_off = False
        self.reads = threading.Event()
        self.reads.set()
        self.reading = threading.Event()

    def __getattr__(self, name):
        return getattr(self._log, name)

    def report(self, *args):
        if self.reports_fail:
            raise LogUnavailable("this replica's reports fail (a test's fault)")
        return self._log.report(*args)

    def read(self, *args):
        self.reading.set()
        assert self.reads.wait(10)
        if self.cut_off:
            raise LogUnavailable("this replica is cut off from the log (a test's fault)")
        return self._log.read(*args)


def test_a_replica_the_others_think_dead_while_it_reads_on_reloads_what_they_trimmed(replicas, log):
    """b reads without a gap but its reports stop (they fail; or it came back and a trim came before
    its first report): after ``alive`` a trims past b's position, and b's next read starts after
    the hole. It must notice and load the snapshot: it read on and lost the messages in the hole."""
    a = replicas(snapshot_every=5, alive=1.0)
    view = _OwnView(log)
    b = SSEPubSubService(backend=LogBackend(view, alive=1.0), client_timeout=None)  # type: ignore[arg-type]
    try:
        topic = a.public_topic("orders")
        client = a.new_client()
        client.sub(topic)
        b.sync()
        token = b.backend._process_token
        view.reports_fail = True
        wait_for(lambda: time.time() - log.reports()[token][1] > 1.5, what="b's last report older than alive")
        view.reads.clear()
        view.reading.clear()
        assert view.reading.wait(5)  # b's reader waits at the gate, at its position
        snapshots = a.stats()["log_snapshots"]
        for n in range(12):
            topic.pub(n)
        a.sync()
        # a's maintenance thread snapshots and trims on its own tick, after the entries applied.
        wait_for(lambda: a.stats()["log_snapshots"] > snapshots, what="a snapshot by a")
        wait_for(lambda: log.trimmed_after(b.backend._position), what="a trim past b")  # the premise
        view.reads.set()
        topic.pub("after the hole")
        b.sync()
        a.sync()  # a publish settles once the log holds it: a too applies it in its own time
        assert delivered(b, client.id) == delivered(a, client.id)
        assert b.stats()["log_reloads"] >= 1  # more if a trimmed past b (still silent) once more meanwhile
    finally:
        b.shutdown()


def test_a_replica_cut_off_from_the_log_for_alive_ends_its_streams_so_they_resume_elsewhere(replicas, log):
    """Its streams would get heartbeats and nothing else for as long as the cut lasts: ended, their
    browsers reconnect, to a process that follows the log."""
    a = replicas(alive=1.0)
    view = _OwnView(log)
    b = SSEPubSubService(backend=LogBackend(view, alive=1.0), client_timeout=None)  # type: ignore[arg-type]
    try:
        topic = a.public_topic("orders")
        held_by_a, held_by_b = a.new_client(), a.new_client()
        b.sync()
        streams = {"a": a.get_client_by_id(held_by_a.id).stream(), "b": b.get_client_by_id(held_by_b.id).stream()}
        for stream in streams.values():
            stream.read(timeout=0)
        view.cut_off = True  # b cannot read the log (it still answers its clients)
        topic.pub("while b is cut off")
        deadline = time.monotonic() + 10
        while not streams["b"].ended and time.monotonic() < deadline:
            streams["b"].read(timeout=0.2)
        assert streams["b"].ended  # within alive (1 s) and a read: not at the 10 s bound
        assert not streams["a"].ended
        view.cut_off = False
        wait_for(lambda: b.get_client_by_id(held_by_b.id).status.value == "waiting", what="b's detach applied")
    finally:
        b.shutdown()


def test_a_log_that_lost_its_newest_entries_and_took_new_ones_is_seeded_again_from_a_replica_that_had_them(
    replicas, log
):
    # A Redis Cluster failover: the promoted replica lacked the newest entries, and another
    # process appended to it before this one looked. The log's head is past this process's
    # position, so only the missing entry shows the loss; reading on would leave this replica
    # with messages no other process has, and the same event ids naming different messages.
    a = replicas()
    client = a.new_client()
    topic = a.public_topic("orders")
    client.sub(topic)
    for n in range(3):
        topic.pub(n)
    a.sync()  # applied here (a publish returns once the log holds it)
    log.unreachable = True
    wait_for(lambda: a._backend._check_needed.is_set(), what="the reader to notice the outage")
    time.sleep(0.002)  # the next entry gets a later millisecond, past this replica's position
    log.fail_over(2, [{"v": b"2", "e": json.dumps(["Q-elsewhere", 1, "noop", []]).encode()}])
    log.unreachable = False
    # A change sent before the loss was found may land in the log being replaced: it raises
    # (outcome unknown) at once instead of waiting for an answer that never comes.
    wait_for(lambda: _try(lambda: a.sync() or True), what="a change accepted by the new epoch", timeout=10)
    b = replicas()  # a process starting now: it loads what the log holds
    # The same event ids everywhere: the lost messages count in both (a resync follows them).
    assert b._core.position == a._core.position > 5
    assert a.stats()["log_reseeds"] == 1


def test_a_replica_behind_the_log_reads_big_entries_a_few_at_a_time(replicas, log):
    # A read's reply is held whole while it is applied: a replica 300 entries of 64 KB behind (a
    # batch of publishes, a load) must not take them all in one read, but about READ_BYTES a read.
    from pubsubsse import Publisher
    from pubsubsse.backends._entries import READ_BYTES, READ_FIRST

    returned: list[int] = []  # bytes, per read
    read = log.read

    def counting_read(after, block, count):
        records = read(after, block, count)
        returned.append(sum(len(value) for record in records for value in record.fields.values()))
        return records

    log.read = counting_read
    a = replicas()
    client = a.new_client()
    client.sub(a.public_topic("orders", history=300))
    published = [f"{n:05d}" + "x" * 65536 for n in range(300)]
    publisher = Publisher(backend=LogBackend(log))
    for start in range(0, len(published), 100):
        publisher.publish_many([("orders", body) for body in published[start : start + 100]])
    publisher.close()
    a.sync()
    b = replicas()  # loads the log from its start
    b.sync()
    entry = 65536 + 1024
    assert max(returned) <= READ_FIRST * entry  # a first read, which knows no sizes yet
    assert sorted(returned)[-3] <= READ_BYTES + entry  # one for each replica; every other about READ_BYTES
    for replica in (a, b):
        assert [data for _, data in delivered(replica, client.id)] == published


@pytest.mark.parametrize(
    "data",
    [
        b'{"updates":[{"topic":"T-a","data":1}]}',
        b'["P-1",1,"pub",["T-a"]]',
        '{"a":"é €"}'.encode(),
        b'{"a":"\xed\xa0\x80"}',  # a lone surrogate, as json.loads's surrogatepass takes it
        b'{"a":"\xff"}',  # not UTF-8
        '{"a":1}'.encode("utf-16-le"),
        '{"a":1}'.encode("utf-16"),  # with a BOM
        '{"a":1}'.encode("utf-32-le"),
        b'\xef\xbb\xbf{"a":1}',  # UTF-8 with a BOM
        b'{"a":1',
        b'{"',
        b"[1]",
        b"",
    ],
)
def test_entries_are_decoded_exactly_as_json_loads_decodes_them(data):
    # Every version must accept and refuse the same entries: the fast path may not differ.
    from pubsubsse.backends._entries import loads

    def outcome(function):
        try:
            return ("value", function(data))
        except (ValueError, RecursionError) as error:
            return ("error", type(error))

    assert outcome(loads) == outcome(json.loads)


class _CutReads:
    """The shared memory log as one process sees it: its reads can be cut off (a connection reset)."""

    def __init__(self, log: MemoryTransport) -> None:
        self._log = log
        self.cut = False
        self.refused = 0  # reads refused while cut: one means the reader is not inside a read any more

    def __getattr__(self, name: str):
        return getattr(self._log, name)

    def read(self, after, block, count):
        if self.cut:
            self.refused += 1
            raise LogUnavailable("this process's reads are cut off (a test's fault)")
        return self._log.read(after, block, count)


def test_a_marker_a_failover_lost_is_sent_again_instead_of_waited_for(log):
    # An append got no answer; the marker that settles it was appended, then lost with the log's
    # newest entries before any process read it (a Redis Cluster failover while the master's
    # replica lagged). Waiting for it would stall the writer, every change of this process
    # failing, for outcome_timeout (60 s): once the reader is past its position, send another.
    views = [_CutReads(log), _CutReads(log)]
    a, b = (SSEPubSubService(backend=LogBackend(view, timeout=0.5), client_timeout=None) for view in views)
    try:
        a.new_client()
        a.sync()
        b.sync()
        for view in views:
            view.cut = True
        wait_for(lambda: all(view.refused for view in views), what="both readers cut off")
        size = len(log._entries)
        log.lose_answers = 1
        outcome: list[BaseException] = []
        change = threading.Thread(target=lambda: outcome.append(_raised(a.new_client)))
        change.start()
        wait_for(lambda: len(log._entries) == size + 2, what="the change and its marker in the log")
        log.fail_over(2)  # both lost; nobody had read them
        for view in views:
            view.cut = False
        time.sleep(0.002)  # the next entry gets a later millisecond, past the lost marker's
        b.new_client()
        change.join(10)
        assert not change.is_alive(), "the writer waits for its lost marker"
        assert isinstance(outcome[0], BackendUnavailable) and not outcome[0].outcome_unknown
        a.sync()
    finally:
        a.shutdown()
        b.shutdown()


def _raised(change) -> BaseException | None:
    try:
        change()
    except BaseException as error:  # what the change raised is the subject of the test
        return error
    return None


class _ReaderCut:
    """The shared memory log as one process sees it: all but its writer's calls can be cut off."""

    _WRITER = frozenset({"append", "now_ms", "interrupt", "disconnect"})

    def __init__(self, log: MemoryTransport) -> None:
        self._log = log
        self.cut = False
        self.refused = 0

    def __getattr__(self, name: str):
        call = getattr(self._log, name)
        if name in self._WRITER or not callable(call):
            return call

        def cut_or_call(*args, **kwargs):
            if self.cut:
                self.refused += 1
                raise LogUnavailable("this process's reader is cut off (a test's fault)")
            return call(*args, **kwargs)

        return cut_or_call


def test_a_stream_whose_attach_the_replaced_logs_base_holds_but_this_process_never_applied_raises(log):
    # The attach was appended, another process applied it and then replaced the lost log with its
    # state, before this process read it. The stream it returns was never made here: returning
    # None crashed the server's response; it raises instead, and the attach is undone.
    view = _ReaderCut(log)
    a = SSEPubSubService(backend=LogBackend(view, timeout=1.0), client_timeout=None)
    b = SSEPubSubService(backend=LogBackend(log, timeout=1.0), client_timeout=None)
    try:
        client = a.new_client()
        b.sync()
        view.cut = True
        wait_for(lambda: view.refused, what="the reader cut off")
        outcome: list[object] = []
        attach = threading.Thread(target=lambda: outcome.append(_raised(client.stream)))
        attach.start()
        wait_for(lambda: b.get_client_by_id(client.id).status.value == "receiving", what="the attach applied elsewhere")
        log.lose()  # a Redis restarted without its data: the other process seeds it with its state
        wait_for(lambda: log.get_epoch() is not None and log.load_snapshot() is not None, what="a new epoch")
        view.cut = False
        attach.join(15)
        assert not attach.is_alive()
        assert isinstance(outcome[0], BackendUnavailable) and outcome[0].outcome_unknown, (outcome, a.stats())
        wait_for(lambda: b.get_client_by_id(client.id).status.value == "waiting", what="the attach undone", timeout=15)
    finally:
        a.shutdown()
        b.shutdown()

"""A log of several streams read back in one order (``MergedTransport``), over streams in memory.

Each replica appends to its own stream, on a clock of that stream's own; every replica reads all of
them merged by (id, stream). The faults are a stream's: a failover that loses its newest entries,
a clock that steps back, a replace that stopped halfway. The unit tests of the ``service`` and
``pair`` fixtures run on a merged log too ("merged").
"""

from __future__ import annotations

import json
import time

import pytest

from pubsubsse import SSEPubSubService
from pubsubsse.backends._merged import MergedTransport
from pubsubsse.backends.log import LogBackend
from pubsubsse.backends.memory import MemoryTransport
from pubsubsse.errors import BackendUnavailable

from ..http_helpers import wait_for
from .test_log_engine import delivered, publish_from_both


class Clock:
    """A stream's clock: the wall clock plus an offset the test may change (milliseconds)."""

    def __init__(self, offset: int = 0) -> None:
        self.offset = offset

    def __call__(self) -> int:
        return int(time.time() * 1000) + self.offset


@pytest.fixture
def clocks():
    return [Clock(), Clock(), Clock()]


@pytest.fixture
def streams(clocks):
    return [MemoryTransport(clock) for clock in clocks]


@pytest.fixture
def replicas(streams):
    made: list[SSEPubSubService] = []

    def make(home: int, **options):
        backend = LogBackend(MergedTransport(streams, home=home), **options)
        service = SSEPubSubService(backend=backend, client_timeout=None)
        made.append(service)
        return service

    yield make
    for service in made:
        service.shutdown()


def origins(stream: MemoryTransport) -> set[str]:
    return {json.loads(record.fields[b"e"])[0] for record in stream.read((0, 0), 0, 10_000)}


def same_from_now_on(a: SSEPubSubService, b: SSEPubSubService, client_id: str) -> list[tuple[int, object]]:
    """Publish once more; assert that both replicas give the client the same messages since before it."""
    start = a._core.position
    a.public_topic("orders").pub("after")
    a.sync()
    b.sync()
    here = a._core.since(a._core.clients[client_id], start)
    there = b._core.since(b._core.clients[client_id], start)
    assert here == there and here
    return here


def _try(change):
    try:
        return change()
    except BackendUnavailable:
        return None


def test_replicas_on_clocks_apart_apply_every_change_in_one_order_each_appending_to_its_own_stream(
    replicas, streams, clocks
):
    clocks[1].offset = 30  # the second stream's clock is 30 ms ahead: its entries wait for the others'
    a, b = replicas(0), replicas(1)
    client = a.new_client()
    topic = a.public_topic("orders")
    client.sub(topic)
    b.sync()
    publish_from_both(a, b, client.id)
    assert origins(streams[0]) == {a.process_token} and origins(streams[1]) == {b.process_token}
    assert streams[2].head() is None


def test_a_change_that_returned_in_one_replica_comes_before_what_another_then_appends(replicas, clocks):
    # The subscription is appended to a stream whose clock is 50 ms ahead, the publish right after it
    # to one on time: by its own clock the publish would come first, and the subscriber would miss
    # it. A change returns only once every stream's clock has been read past it, so it cannot.
    clocks[0].offset = 50
    a, b = replicas(0), replicas(1)
    for n in range(5):
        client = a.new_client()
        client.sub(a.public_topic(f"t{n}"))
        b.public_topic(f"t{n}").pub(n)
        b.sync()
        a.sync()
        assert [data for _, data in delivered(a, client.id)] == [n]
        assert delivered(a, client.id) == delivered(b, client.id)


def test_a_publish_that_returned_is_applied_by_a_sync_made_after_it_anywhere(replicas, clocks):
    # The publish goes to a stream whose clock is 50 ms ahead, the other replica's sync marker to
    # one on time, so the marker comes first in the merged order. Had the publish returned once
    # appended (as it does on a log of one stream), the sync would return without it.
    clocks[1].offset = 50
    a, b = replicas(0), replicas(1)
    client = a.new_client()
    client.sub(a.public_topic("orders"))
    b.sync()
    for n in range(3):
        b.public_topic("orders").pub(n)
        a.sync()
        assert [data for _, data in delivered(a, client.id)] == list(range(n + 1))


def test_a_stream_that_lost_its_newest_entries_is_found_though_a_later_entry_came_from_another(replicas, streams):
    # A failover of the first stream's master lost its two newest entries, and another process
    # appended to it. The last entry applied here came from the second stream and is still there:
    # only the last entry applied from each stream shows the loss.
    a, b = replicas(0), replicas(1)
    client = a.new_client()
    topic = a.public_topic("orders")
    client.sub(topic)
    for n in range(3):
        topic.pub(n)
    b.public_topic("orders").pub("from b")
    b.sync()
    wait_for(lambda: a._backend._position == b._backend._position, what="the replica to apply the second stream's")
    assert a._backend.transport.stream_of(a._backend._position) == 1
    streams[0].unreachable = True
    wait_for(lambda: a._backend._check_needed.is_set(), what="the reader to notice the outage")
    time.sleep(0.002)  # the next entry gets a later millisecond
    streams[0].fail_over(2, [{"v": b"2", "e": json.dumps(["Q-elsewhere", 1, "noop", []]).encode()}])
    streams[0].unreachable = False
    wait_for(lambda: _try(lambda: a.sync() or True), what="a change accepted by the new epoch", timeout=10)
    wait_for(lambda: _try(lambda: b.sync() or True), what="the other replica on the new epoch", timeout=10)
    assert a.stats()["log_reseeds"] + b.stats()["log_reseeds"] == 1
    c = replicas(2)  # a process starting now loads what the log holds
    assert c._core.position == a._core.position == b._core.position
    same_from_now_on(a, b, client.id)
    same_from_now_on(a, c, client.id)


def test_a_clock_that_steps_back_makes_a_new_epoch_instead_of_two_orders(replicas, streams, clocks):
    # The second stream's clock steps back after its entries were read past: its next entry would
    # come before entries every replica has applied. It is found and the log seeded again (every
    # stream resyncs, announced), so the replicas never apply the entries in different orders.
    a, b = replicas(0), replicas(1)
    client = a.new_client()
    topic = a.public_topic("orders")
    client.sub(topic)
    b.public_topic("orders").pub("b, before")
    b.sync()  # the second stream's last entry
    topic.pub("a, after")
    a.sync()  # entries of the first stream after it, applied by both
    wait_for(lambda: b._backend._position == a._backend._position, what="the replica to apply the first stream's")
    clocks[1].offset = -300
    _try(lambda: b.public_topic("orders").pub("b, stepped back"))
    wait_for(lambda: a.stats()["log_reseeds"] + b.stats()["log_reseeds"] == 1, what="a new epoch", timeout=10)
    wait_for(lambda: _try(lambda: a.sync() or True), what="a change accepted by the new epoch", timeout=10)
    wait_for(lambda: _try(lambda: b.sync() or True), what="the other replica on the new epoch", timeout=10)
    assert a._core.position == b._core.position
    same_from_now_on(a, b, client.id)


def test_the_last_entry_of_a_quiet_stream_trimmed_behind_everyone_is_not_taken_for_a_loss(replicas, streams):
    # The first stream's entries are old: the trims of the busy second stream's snapshots remove
    # them, behind every process. A check after an outage must not reload the state for that (every
    # stream held here would resync), as it would for entries trimmed past this process.
    a, b = replicas(0, snapshot_every=10), replicas(1, snapshot_every=10)
    client = a.new_client()
    b.sync()
    for n in range(30):
        b.public_topic("busy").pub(n)
    wait_for(lambda: not b.sync() and not streams[0].read((0, 0), 0, 100), what="the quiet stream trimmed")
    reloads: list[object] = []
    reload = a._backend._reload
    a._backend._reload = lambda epoch: reloads.append(epoch) or reload(epoch)
    streams[1].unreachable = True
    wait_for(lambda: a._backend._check_needed.is_set(), what="the reader to notice the outage")
    streams[1].unreachable = False
    wait_for(lambda: not a._backend._check_needed.is_set() and _try(lambda: a.sync() or True), what="the check")
    assert reloads == []
    assert a.get_client_by_id(client.id) is not None


def test_a_stream_left_at_an_old_epoch_by_a_replace_that_stopped_halfway_is_brought_up(replicas, streams):
    a, b = replicas(0), replicas(2)
    client = a.new_client()
    b.sync()
    # The third stream still has the epoch before a replace (whose process died after replacing
    # the first): the reader must not take its entries, and its writer's appends are refused.
    streams[2].replace_log(streams[2].get_epoch(), "an older epoch", b"")
    later = wait_for(lambda: _try(b.new_client), what="a change from the third stream", timeout=10)
    a.sync()
    assert set(a.get_clients()) == set(b.get_clients()) == {client.id, later.id}
    assert streams[2].get_epoch() == streams[0].get_epoch()


def test_snapshots_trim_every_stream_and_a_new_replica_loads_the_same_state(replicas, streams):
    a, b = replicas(0, snapshot_every=20), replicas(1, snapshot_every=20)
    client = a.new_client()
    client.sub(a.public_topic("orders"))
    b.sync()
    for n in range(60):
        (a if n % 2 else b).public_topic("orders").pub(n)
    a.sync()
    b.sync()
    # Trims happen at snapshots, each below the positions the processes last reported: changes go
    # on (syncs) until one after fresh reports trimmed both streams.
    wait_for(lambda: not a.sync() and all(len(s.read((0, 0), 0, 1000)) < 30 for s in streams[:2]), what="trims")
    assert a.stats()["log_snapshots"] + b.stats()["log_snapshots"] >= 2
    c = replicas(2)
    assert c._core.position == a._core.position
    assert delivered(c, client.id) == delivered(a, client.id)
    assert sorted(data for _, data in delivered(c, client.id)) == list(range(60)), (a.stats(), b.stats(), c.stats())


def test_a_merged_position_names_an_entry_and_its_stream() -> None:
    merged = MergedTransport([MemoryTransport() for _ in range(3)], home=2)
    assert merged.merged((1700000000000, 4), 2) == (1700000000000, 14)
    assert merged.split((1700000000000, 14)) == ((1700000000000, 4), 2)
    assert merged.stream_of((1700000000000, 14)) == 2
    # The same id in a later stream comes later; a later id comes later whatever its stream.
    assert merged.merged((5, 0), 0) < merged.merged((5, 0), 1) < merged.merged((5, 1), 0) < merged.merged((6, 0), 0)
    with pytest.raises(ValueError, match="home must name one of the 1 streams"):
        MergedTransport([MemoryTransport()], home=1)
    with pytest.raises(ValueError, match="at least one stream"):
        MergedTransport([])

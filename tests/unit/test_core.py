"""The state machine on its own: records and operations, no service, no lock, no stream layer.

An attach returns the plan of a stream; the tests open a fake one as the service opens a real one.
"""

from __future__ import annotations

from typing import Any

import pytest

from pubsubsse.core import _state
from pubsubsse.core._engine import Core
from pubsubsse.core._operations import _FUNCTIONS, OPERATIONS, apply
from pubsubsse.core._records import AttachPlan, ClientRecord, Status, TopicInGroup, TopicRecord
from pubsubsse.errors import LimitReached, TopicNotFound


class FakeStream:
    """A AttachedStream that records what it is offered."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.offered: list[tuple[int, bytes]] = []
        self.ended: bool | None = None

    def offer(self, event_id: int, body: bytes) -> None:
        self.offered.append((event_id, body))

    def end(self, superseded: bool) -> None:
        self.ended = superseded


def make_core(**limits: Any) -> Core:
    return Core(
        "the service",
        make_view=lambda record: ("view", record.id),
        present=lambda item: item.view if hasattr(item, "view") else item,
        process_token="P-here",
        now=lambda: 100.0,
        replay_size=limits.get("replay_size", 10),
        client_timeout=None,
        max_clients=limits.get("max_clients", 100),
        max_private_topics=5,
        max_groups=5,
    )


def run(core: Core, operation: str, *args: Any) -> Any:
    result, effects = apply(core, operation, args)
    return result, [(owner, name) for owner, name, _ in effects.events]


def attach(core: Core, client_id: str, token: str) -> tuple[FakeStream | None, list[Any]]:
    """Attach, and open the planned stream as the service does (a fake one), lock notionally held."""
    plan, events = run(core, "attach", client_id, token, None)
    if plan is None:
        return None, events
    assert isinstance(plan, AttachPlan) and plan.client is core.clients[client_id] and plan.token == token
    stream = FakeStream(token)
    stream.offered += plan.first
    core.set_stream(plan.client, stream)
    return stream, events


def test_every_operation_has_a_function_and_a_shape() -> None:
    assert _FUNCTIONS.keys() == OPERATIONS.keys()


def test_records_get_their_view_and_events_name_records() -> None:
    core = make_core()
    client, events = run(core, "new_client", "C-1", None)
    assert isinstance(client, ClientRecord) and client.view == ("view", "C-1")
    assert events == [("the service", "on_new_client")]
    topic, events = run(core, "new_public_topic", "T-1")
    assert isinstance(topic, TopicRecord) and ("the service", "on_new_public_topic") in events
    assert (client, "on_new_public_topic") in events and (topic, "on_new_client") in events


def test_a_publish_reaches_subscribers_records_and_their_streams() -> None:
    core = make_core()
    run(core, "new_client", "C-1", None)
    run(core, "new_client", "C-2", None)
    run(core, "new_public_topic", "T-1")
    run(core, "sub", "C-1", "T-1")
    stream, events = attach(core, "C-1", "P-here:1")
    assert stream is not None and (core.clients["C-1"], "on_status_change") in events
    assert stream.offered and stream.offered[0][0] == core.position  # the init message: the current position
    assert core.clients["C-1"].status is Status.RECEIVING
    attached_at = core.position
    run(core, "pub", "T-1", b'{"x":1}')
    assert core.position == attached_at + 1 and stream.offered[-1] == (core.position, b'{"x":1}')
    assert core.topics["T-1"].positions == [core.position] and core.topics["T-1"].bodies == [b'{"x":1}']
    assert core.since(core.clients["C-1"], attached_at) == [(core.position, b'{"x":1}')]
    assert core.since(core.clients["C-2"], attached_at) == []  # not subscribed


def test_a_publish_costs_nothing_per_subscriber_whose_stream_is_elsewhere() -> None:
    """The cluster's cost model: a subscriber held by another process is not touched by a publish here."""
    core = make_core()
    run(core, "new_public_topic", "T-1")
    for n in range(100):
        run(core, "new_client", f"C-{n}", None)
        run(core, "sub", f"C-{n}", "T-1")
        attach(core, f"C-{n}", "P-other:1")
    here, _ = attach(core, "C-7", "P-here:1")  # one stream held here (it takes over C-7's)
    journals = {c.id: list(c.journal) for c in core.clients.values()}
    run(core, "pub", "T-1", b"1")
    assert list(core.topics["T-1"].local) == ["C-7"] and here is not None and here.offered[-1] == (core.position, b"1")
    assert {c.id: list(c.journal) for c in core.clients.values()} == journals  # no client record changed


def test_a_resume_follows_the_subscriptions_over_time_and_says_when_history_is_gone() -> None:
    core = make_core(replay_size=3)
    run(core, "new_client", "C-1", None)
    run(core, "new_public_topic", "T-a")
    run(core, "new_public_topic", "T-b")
    start = core.position
    run(core, "pub", "T-a", b"a0")  # not subscribed yet
    run(core, "sub", "C-1", "T-a")
    run(core, "pub", "T-a", b"a1")
    run(core, "pub", "T-b", b"b1")  # never subscribed
    run(core, "unsub", "C-1", "T-a")
    run(core, "pub", "T-a", b"a2")  # no longer subscribed
    events = core.since(core.clients["C-1"], start)
    assert events is not None
    bodies = [body for _, body in events]
    assert bodies[1] == b"a1" and len(bodies) == 3  # subscribed, a1, unsubscribed
    assert [position for position, _ in events] == sorted({position for position, _ in events})
    run(core, "sub", "C-1", "T-a")
    for n in range(10):  # more than T-a keeps
        run(core, "pub", "T-a", b"x%d" % n)
    assert core.since(core.clients["C-1"], start) is None  # a resync, said
    assert core.since(core.clients["C-1"], core.position - 2) == [
        (core.position - 1, b"x8"),
        (core.position, b"x9"),
    ]


def test_a_stream_held_elsewhere_opens_nothing_here_and_a_detach_ends_ours() -> None:
    core = make_core()
    run(core, "new_client", "C-1", None)
    assert attach(core, "C-1", "P-other:1")[0] is None and core.clients["C-1"].stream is None
    stream, _ = attach(core, "C-1", "P-here:2")
    assert stream is not None
    run(core, "detach", "C-1", "P-here:2")
    assert stream.ended is True and core.clients["C-1"].status is Status.WAITING


def test_refusals_are_results_and_change_nothing() -> None:
    core = make_core(max_clients=1)
    run(core, "new_client", "C-1", None)
    refused, events = run(core, "new_client", "C-2", None)
    assert isinstance(refused, LimitReached) and events == [] and list(core.clients) == ["C-1"]
    assert isinstance(run(core, "sub", "C-1", "T-none")[0], TopicNotFound)
    with pytest.raises(ValueError, match="shape"):
        apply(core, "sub", ("C-1",))


def test_group_topic_events_carry_the_pair_and_the_state_round_trips() -> None:
    core = make_core()
    run(core, "new_client", "C-1", None)
    run(core, "new_group", "G-1")
    run(core, "add_group_client", "G-1", "C-1")
    _, effects = apply(core, "new_group_topic", ("G-1", "T-g"))
    pairs = [
        item for _, name, item in effects.events if name == "on_new_group_topic" and isinstance(item, TopicInGroup)
    ]
    assert pairs and pairs[0].group is core.groups["G-1"]
    groups = _state.export_groups(core)
    clients = _state.export_clients(core, list(core.clients.values()))
    other = make_core()
    _state.import_state(other, groups, clients)
    assert _state.export_groups(other) == groups
    assert _state.export_clients(other, list(other.clients.values())) == clients


def test_streams_are_indexed_by_the_process_that_holds_them() -> None:
    """The timer asks once per process whether it is alive, and walks only this process's streams."""
    core = make_core()
    for n in range(3):
        run(core, "new_client", f"C-{n}", None)
    attach(core, "C-0", "P-here:1")
    attach(core, "C-1", "P-other:1")
    attach(core, "C-2", "P-other:2")
    assert {p: sorted(held) for p, held in core.holders.items()} == {"P-here": ["C-0"], "P-other": ["C-1", "C-2"]}
    run(core, "detach", "C-1", "P-other:1")
    attach(core, "C-2", "P-here:2")  # a takeover by this process
    run(core, "remove_client", "C-0")
    assert {p: sorted(held) for p, held in core.holders.items()} == {"P-here": ["C-2"]}

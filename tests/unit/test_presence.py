"""Live presence in the state machine: exact counts, coalesced reports, the same everywhere."""

from __future__ import annotations

import json
import random

from pubsubsse.core import _state
from pubsubsse.core._engine import Core
from pubsubsse.testing import Message, Received
from tests.unit.test_core import FakeStream, attach, make_core, run


def presence_items(stream: FakeStream, topic_id: str) -> list[dict[str, object]]:
    items = []
    for _, body in stream.offered:
        for item in json.loads(body)["sys"] or ():
            if item["type"] == "presence" and item["topic"] == topic_id:
                items.append(item)
    return items


def seen_users(stream: FakeStream, topic_id: str) -> set[str]:
    """What a browser that applies the presence messages of its stream believes is there."""
    received = Received([Message(str(position), json.loads(body)) for position, body in stream.offered])
    return set(received.present_users(topic_id) or ())


def room(core: Core) -> None:
    run(core, "new_public_topic", "T-room")
    run(core, "set_presence", "T-room", True)


def join(core: Core, client_id: str, user: str | None, token: str = "P-other:1") -> FakeStream | None:
    run(core, "new_client", client_id, user)
    run(core, "sub", client_id, "T-room")
    stream, _ = attach(core, client_id, token)
    return stream


def test_counts_are_exact_at_once_and_reports_are_coalesced() -> None:
    core = make_core(max_clients=1000)
    room(core)
    observer = join(core, "C-obs", None, "P-here:1")
    assert observer is not None
    for n in range(300):  # 300 connections of 100 users, all in one period
        join(core, f"C-{n}", f"user-{n % 100}", f"P-other:{n}")
    topic = core.topics["T-room"]
    assert len(topic.subscribers) == 301
    assert topic.presence is not None and topic.presence.connections == 301 and len(topic.presence.users) == 100
    assert presence_items(observer, "T-room") == [
        {"type": "presence", "topic": "T-room", "connections": 0, "users": []}
    ]
    position = core.position
    run(core, "presence_flush", "T-room")
    assert core.position == position + 1  # one report, one position, for 300 changes
    report = presence_items(observer, "T-room")[-1]
    assert report["connections"] == 301 and report["left"] == [] and len(report["joined"]) == 100  # type: ignore[arg-type]
    run(core, "presence_flush", "T-room")  # the other processes' proposals find nothing to say
    assert core.position == position + 1 and "T-room" not in core.presence_dirty


def test_a_reconnect_within_the_period_says_nothing_and_a_left_user_is_reported() -> None:
    core = make_core()
    room(core)
    observer = join(core, "C-obs", None, "P-here:1")
    assert observer is not None
    join(core, "C-a", "alice")
    join(core, "C-b", "bob")
    run(core, "presence_flush", "T-room")
    before = len(observer.offered)
    run(core, "detach", "C-a", "P-other:1")  # a deploy: the stream drops and comes back elsewhere
    attach(core, "C-a", "P-third:1")
    run(core, "presence_flush", "T-room")
    assert len(observer.offered) == before
    run(core, "remove_client", "C-b")
    run(core, "presence_flush", "T-room")
    assert presence_items(observer, "T-room")[-1] == {
        "type": "presence",
        "topic": "T-room",
        "connections": 2,
        "joined": [],
        "left": ["bob"],
    }


def test_what_a_page_believes_equals_the_truth_after_each_report() -> None:
    """Random joins, leaves, drops and reconnects; pages join mid-period; every report settles them."""
    rng = random.Random(7)
    core = make_core(replay_size=1000, max_clients=1000)
    room(core)
    pages: dict[str, FakeStream] = {}
    clients: list[str] = []
    for step in range(600):
        action = rng.random()
        if action < 0.3 or not clients:
            client_id = f"C-{step}"
            stream = join(core, client_id, f"u{rng.randrange(8)}", f"P-here:{step}")
            assert stream is not None
            pages[client_id] = stream
            clients.append(client_id)
        elif action < 0.5:
            client_id = clients.pop(rng.randrange(len(clients)))
            run(core, "unsub", client_id, "T-room")
            pages.pop(client_id)
        elif action < 0.7:
            client_id = rng.choice(clients)
            client = core.clients[client_id]
            if client.stream_token is not None:
                run(core, "detach", client_id, client.stream_token)
            else:
                stream, _ = attach(core, client_id, f"P-here:r{step}")
                assert stream is not None
                pages[client_id] = stream
        else:
            run(core, "presence_flush", "T-room")
            truth = {core.clients[c].user for c in clients if core.clients[c].stream_token is not None}
            for client_id, stream in pages.items():
                if core.clients[client_id].stream is stream:
                    assert seen_users(stream, "T-room") == truth, (step, client_id)


def test_a_replica_loaded_mid_period_reports_the_same_bytes_at_the_same_position() -> None:
    a = make_core()
    room(a)
    join(a, "C-1", "alice")
    run(a, "presence_flush", "T-room")
    join(a, "C-2", "bob")
    run(a, "detach", "C-1", "P-other:1")
    b = make_core()
    groups = _state.export_groups(a)
    items = _state.export_topics(a, list(a.topics.values())) + _state.export_clients(a, list(a.clients.values()))
    _state.import_state(b, groups, items)
    assert b.clients["C-2"].user == "bob" and list(b.presence_dirty) == ["T-room"]
    for core in (a, b):
        run(core, "presence_flush", "T-room")
    topic_a, topic_b = a.topics["T-room"], b.topics["T-room"]
    assert topic_a.positions[-1] == topic_b.positions[-1] and topic_a.bodies[-1] == topic_b.bodies[-1]
    assert json.loads(topic_b.bodies[-1])["sys"][0] == {
        "type": "presence",
        "topic": "T-room",
        "connections": 1,
        "joined": ["bob"],
        "left": ["alice"],
    }


def test_a_resume_replays_the_reports_and_an_init_says_who_is_there() -> None:
    core = make_core()
    room(core)
    join(core, "C-a", "alice")
    run(core, "presence_flush", "T-room")
    page = join(core, "C-p", "pat", "P-here:1")
    assert page is not None
    mark = core.position
    run(core, "detach", "C-p", "P-here:1")
    join(core, "C-b", "bob")
    run(core, "presence_flush", "T-room")
    plan, _ = run(core, "attach", "C-p", "P-here:2", str(mark))
    assert [json.loads(body)["sys"][0].get("joined") for _, body in plan.first] == [["bob"]]
    fresh, _ = run(core, "attach", "C-p", "P-here:3", None)
    items = json.loads(fresh.first[0][1])["sys"]
    assert items[-1] == {"type": "presence", "topic": "T-room", "connections": 2, "users": ["alice", "bob"]}


def test_turning_presence_on_reports_everyone_there_and_a_removed_topic_reports_nothing() -> None:
    core = make_core()
    run(core, "new_public_topic", "T-room")
    observer = join(core, "C-obs", "olga", "P-here:1")
    join(core, "C-a", "alice")
    assert core.topics["T-room"].presence is None and core.presence_dirty == {}
    run(core, "set_presence", "T-room", True)
    run(core, "presence_flush", "T-room")
    assert observer is not None and seen_users(observer, "T-room") == {"alice", "olga"}
    join(core, "C-b", "bob")
    position = core.position
    run(core, "remove_public_topic", "T-room")
    assert core.presence_dirty == {}
    run(core, "presence_flush", "T-room")
    assert core.position == position + 1  # the removal's own messages, no report


def test_a_process_waits_about_a_second_and_any_report_restarts_its_wait() -> None:
    from pubsubsse.core import _presence

    core = make_core()
    room(core)
    join(core, "C-a", "alice")
    dirty = core.presence_dirty.values
    due, seen = _presence.due_reports(dirty(), {}, 100.0)
    assert due == []  # first seen changed: wait
    due, seen = _presence.due_reports(dirty(), seen, 100.5)
    assert due == []
    due, seen = _presence.due_reports(dirty(), seen, 100.9)
    assert due == ["T-room"]
    run(core, "presence_flush", "T-room")  # proposed here or by any other process: applied everywhere
    join(core, "C-b", "bob", "P-other:2")  # changed again at once
    due, seen = _presence.due_reports(dirty(), seen, 101.0)
    assert due == []  # a report was applied since this process first saw it: the wait starts again
    due, seen = _presence.due_reports(dirty(), seen, 101.95)
    assert due == ["T-room"]

"""Topic history in the state machine: subscriptions from the start, trims by position, closing, snapshots."""

from __future__ import annotations

import json

from pubsubsse.core import _history, _state
from pubsubsse.core._messages import encode_update
from pubsubsse.errors import TopicClosed
from tests.unit.test_core import FakeStream, attach, make_core, run


def publish(core, topic_id: str, *values) -> None:
    for value in values:
        result, _ = run(core, "pub", topic_id, encode_update(topic_id, value))
        assert result is None, result


def values_of(stream: FakeStream) -> list:
    return [u["data"] for _, body in stream.offered for u in json.loads(body)["updates"] or ()]


def sys_of(stream: FakeStream, kind: str) -> list:
    return [item for _, body in stream.offered for item in json.loads(body)["sys"] or () if item["type"] == kind]


def test_from_the_start_the_kept_values_come_once_at_the_subscriptions_position() -> None:
    core = make_core(replay_size=10)
    run(core, "new_public_topic", "T-job")
    run(core, "set_history", "T-job", 5, 0)
    publish(core, "T-job", *range(8))
    run(core, "new_client", "C-page", None)
    stream, _ = attach(core, "C-page", "P-here:1")
    assert stream is not None
    run(core, "sub_start", "C-page", "T-job")
    position = core.position
    assert stream.offered[-1][0] == position  # one message, at the subscription's position
    assert values_of(stream) == [3, 4, 5, 6, 7]  # the last 5: what the topic keeps
    assert sys_of(stream, "history") == [{"type": "history", "topic": "T-job", "messages": 5, "complete": False}]
    replay = core.since(core.clients["C-page"], position - 1)  # a resume from before it: the same message
    assert replay == stream.offered[-1:]
    publish(core, "T-job", 8)
    assert values_of(stream) == [3, 4, 5, 6, 7, 8]
    assert core.since(core.clients["C-page"], position) == stream.offered[-1:]
    # The journal holds a reference: a later replay is built from what the topic keeps then
    # (3 was pushed out by 8), each value still once.
    replay = core.since(core.clients["C-page"], position - 1)
    assert replay is not None and replay[1] == stream.offered[-1]
    assert [u["data"] for u in json.loads(replay[0][1])["updates"]] == [4, 5, 6, 7]
    assert len(core.clients["C-page"].journal[-2]) < 200  # a reference, not a copy of the history


def test_a_topic_that_kept_everything_says_so_and_an_empty_one_sends_no_values() -> None:
    core = make_core()
    run(core, "new_public_topic", "T-job")
    run(core, "new_client", "C-a", None)
    stream, _ = attach(core, "C-a", "P-here:1")
    assert stream is not None
    run(core, "sub_start", "C-a", "T-job")
    assert json.loads(stream.offered[-1][1])["updates"] is None
    publish(core, "T-job", "a", "b")
    run(core, "sub_start", "C-a", "T-job")  # again: the whole history again, as the page asked
    assert sys_of(stream, "history")[-1] == {"type": "history", "topic": "T-job", "messages": 2, "complete": True}
    assert values_of(stream) == ["a", "b", "a", "b"]


def test_closing_tells_subscribers_refuses_publishes_and_stays_in_the_history() -> None:
    core = make_core()
    run(core, "new_public_topic", "T-job")
    run(core, "new_client", "C-a", None)
    run(core, "sub", "C-a", "T-job")
    stream, _ = attach(core, "C-a", "P-here:1")
    assert stream is not None
    publish(core, "T-job", "token")
    run(core, "close_topic", "T-job")
    assert sys_of(stream, "closed") == [{"type": "closed", "topic": "T-job"}]
    result, _ = run(core, "pub", "T-job", encode_update("T-job", "late"))
    assert isinstance(result, TopicClosed)
    position = core.position
    run(core, "close_topic", "T-job")  # twice: nothing
    assert core.position == position
    run(core, "new_client", "C-late", None)
    late, _ = attach(core, "C-late", "P-here:2")
    assert late is not None
    run(core, "sub_start", "C-late", "T-job")
    assert values_of(late) == ["token"] and sys_of(late, "closed") == [{"type": "closed", "topic": "T-job"}]


def test_trims_are_by_position_and_the_clock_only_proposes_them() -> None:
    core = make_core(replay_size=100)
    clock = [1000.0]
    core.now = lambda: clock[0]
    run(core, "new_public_topic", "T-job")
    run(core, "set_history", "T-job", -1, 10.0)
    topic = core.topics["T-job"]
    publish(core, "T-job", "old-1", "old-2")
    clock[0] += 5
    publish(core, "T-job", "middle")
    clock[0] += 5
    publish(core, "T-job", "new")
    assert _history.due_trims([topic], clock[0]) == []  # nothing is 10 s old yet
    due = _history.due_trims([topic], 1012.0)  # the first two are (with the marks' second of slack)
    assert due == [("T-job", topic.positions[1])]
    assert topic.kept_bytes == sum(map(len, topic.bodies))
    run(core, "trim_history", *due[0])
    assert len(topic.positions) == 2 and topic.kept_bytes == sum(map(len, topic.bodies))
    assert _history.due_trims([topic], 1012.0) == []  # applied: not proposed again
    run(core, "trim_history", *due[0])  # a second proposal of the same trim changes nothing
    assert len(topic.positions) == 2
    run(core, "close_topic", "T-job")
    assert _history.due_removals(core.closed, clock[0] + 9) == []
    assert _history.due_removals(core.closed, clock[0] + 10) == ["T-job"]
    run(core, "remove_closed_topic", "T-job")
    assert "T-job" not in core.topics and not core.closed and not core.ttl_topics


def test_a_smaller_history_cuts_at_once_and_bad_settings_change_nothing() -> None:
    core = make_core(replay_size=100)
    run(core, "new_public_topic", "T-job")
    publish(core, "T-job", *range(20))
    run(core, "set_history", "T-job", 3, 0)
    topic = core.topics["T-job"]
    assert len(topic.positions) == 3 and topic.size(100) == 3
    for size, ttl in ((-2, 0), (_history.MAX_HISTORY + 1, 0), (5, -1.0)):
        result, _ = run(core, "set_history", "T-job", size, ttl)
        assert result is not None  # refused
    assert topic.history_size == 3 and topic.ttl is None


def test_a_snapshot_keeps_the_settings_and_the_closing() -> None:
    a, b = make_core(), make_core()
    run(a, "new_public_topic", "T-job")
    run(a, "set_history", "T-job", 50, 3600.0)
    publish(a, "T-job", 1, 2)
    run(a, "close_topic", "T-job")
    run(a, "new_public_topic", "T-other")
    groups = _state.export_groups(a)
    items = _state.export_topics(a, list(a.topics.values())) + _state.export_clients(a, list(a.clients.values()))
    assert json.loads(json.dumps([data for data, _ in items]))  # the fields go into a snapshot as JSON
    _state.import_state(b, groups, items)
    topic = b.topics["T-job"]
    assert (topic.history_size, topic.ttl, bool(topic.closed)) == (50, 3600.0, True)
    assert topic.kept_bytes == a.topics["T-job"].kept_bytes
    assert "T-job" in b.ttl_topics and "T-job" in b.closed
    other = b.topics["T-other"]
    assert (other.history_size, other.ttl, other.closed) == (None, None, False)

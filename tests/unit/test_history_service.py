"""Topic history through the public API (tests/integration runs it again on Redis and PostgreSQL)."""

from __future__ import annotations

import pytest

from pubsubsse.errors import TopicClosed
from pubsubsse.testing import read_stream

from ..http_helpers import wait_for


def test_a_page_opened_mid_job_sees_the_output_so_far_then_the_rest_once_then_closed(service) -> None:
    job = service.public_topic("job-42", history=1000, ttl=3600)
    assert (job.history, job.ttl, job.closed) == (1000, 3600.0, False)
    for n in range(30):
        job.pub({"token": n})
    page = service.new_client()
    page.sub(job, since="start")
    for n in range(30, 40):
        job.pub({"token": n})
    job.close()
    assert job.closed
    with pytest.raises(TopicClosed):
        job.pub({"token": "late"})
    got = read_stream(page, until=lambda r: bool(r.sys("closed")))
    assert [v["token"] for v in got.updates("T-job-42")] == list(range(40))
    assert got.sys("history") == [{"type": "history", "topic": "T-job-42", "messages": 30, "complete": True}]
    # A refresh: a new page (or the same client again) from the start: all of it, then "closed".
    again = service.new_client()
    again.sub(job, since="start")
    got = read_stream(again, until=lambda r: bool(r.sys("closed")))
    assert [v["token"] for v in got.updates("T-job-42")] == list(range(40))


def test_history_is_bounded_counted_and_checked(service) -> None:
    before = service.stats()
    topic = service.public_topic("log", history=10)
    for _ in range(50):
        topic.pub("x" * 100)
    service.sync()  # a shared service's publish returns once the log holds it, before it is applied here
    stats = service.stats()
    assert 10 <= stats["history_messages"] - before["history_messages"] <= 12  # trimmed in steps of 1/8
    assert stats["history_bytes"] - before["history_bytes"] >= 10 * 100
    assert service.public_topic("log").history == 10  # a lookup leaves the settings as they are
    assert service.public_topic("log", history=20).history == 20
    for bad in ({"history": -1}, {"history": 10**9}, {"history": True}, {"ttl": -5}, {"ttl": "1h"}):
        with pytest.raises(ValueError, match=r"(history|ttl) must be"):
            service.public_topic("other", **bad)
    assert "T-other" not in [t.id for t in service.get_public_topics().values()]  # nothing made
    client = service.new_client()
    with pytest.raises(ValueError, match="since must be"):
        client.sub(topic, since="yesterday")
    group_topic = service.group("team").topic("build", history=5, ttl=60)
    assert (group_topic.history, group_topic.ttl) == (5, 60.0)


def test_a_ttl_drops_old_messages_and_removes_a_closed_topic(service) -> None:
    topic = service.public_topic("brief", ttl=0.5)
    topic.pub("soon gone")
    wait_for(lambda: service.stats()["history_messages"] == 0, timeout=15)  # within ttl + about 2 s
    topic.close()
    wait_for(lambda: service.get_public_topic_by_id("T-brief") is None, timeout=15)


def test_both_replicas_send_the_same_history_message(pair) -> None:
    a, b = pair
    job = a.public_topic("job", history=3)
    for n in range(5):
        job.pub(n)
    b.sync()
    page = b.new_client()
    page.sub(b.public_topic("job"), since="start")
    a.sync()
    here = read_stream(a.get_client_by_id(page.id), messages=1, seconds=5)
    there = read_stream(page, messages=1, seconds=5)
    assert here.messages == there.messages
    assert here.updates("T-job") == [2, 3, 4]

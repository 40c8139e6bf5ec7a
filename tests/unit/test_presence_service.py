"""Presence through the public API, on two replicas of one service (tests/integration runs it on Redis and PostgreSQL).

The counts are exact in both replicas once each has applied the changes
(``sync()``), and a subscriber in one replica is told who comes and goes in
the other, in few coalesced messages.
"""

from __future__ import annotations

import pytest

from pubsubsse import SSEPubSubService
from pubsubsse.testing import read_stream


def view(service: SSEPubSubService, name: str) -> tuple[int, list[str], list[str], int]:
    service.sync()
    topic = service.public_topic(name)
    counts = topic.subscriber_count(), sorted(c.id for c in topic.subscribers()), topic.present_users()
    return (*counts, topic.connected_count())


def test_counts_and_users_are_equal_in_both_replicas(pair) -> None:
    a, b = pair
    room_a = a.public_topic("room", presence=True)
    b.sync()
    room_b = b.public_topic("room")
    assert room_b.has_presence
    tabs = [a.new_client(user="alice"), a.new_client(user="alice"), a.new_client(user="bob")]
    others = [b.new_client(user="carol"), b.new_client()]
    for client in tabs:
        client.sub(room_a)
    for client in others:
        client.sub(room_b)
    streams = [client.stream() for client in (*tabs, others[1])]  # carol subscribed, not connected
    assert view(a, "room") == view(b, "room")
    assert view(a, "room")[0] == 5
    assert view(a, "room")[2] == ["alice", "bob"] and view(a, "room")[3] == 4
    streams[0].close()  # one of alice's two tabs: she stays
    streams[2].close()  # bob's only tab: he goes
    assert view(a, "room") == view(b, "room")
    assert view(b, "room")[2] == ["alice"]
    for stream in streams:
        stream.close()
    assert view(a, "room")[2] == view(b, "room")[2] == []


def test_a_subscriber_here_hears_who_joins_and_leaves_there_in_few_messages(pair) -> None:
    a, b = pair
    room_a = a.public_topic("room", presence=True)
    b.sync()
    observer = b.new_client(user="observer")
    observer.sub(b.public_topic("room"))
    joined = [a.new_client(user=f"user-{n % 10}") for n in range(50)]  # 50 tabs of 10 people
    for client in joined:
        client.sub(room_a)
    streams = [client.stream() for client in joined]
    everyone = ["observer", *(f"user-{n}" for n in range(10))]
    got = read_stream(observer, until=lambda r: r.present_users("T-room") == everyone, seconds=10)
    reports = got.sys("presence")
    assert 2 <= len(reports) <= 4, reports  # the full list on subscription, then one or two reports
    assert reports[-1]["connections"] == 51
    for stream in streams[5:]:  # user-5 … user-9 lose their only tabs, user-0 … user-4 keep one
        stream.close()
    streams = streams[:5]
    gone = read_stream(observer, until=lambda r: r.present_users("T-room") == everyone[:6])
    assert {u for item in gone.sys("presence") for u in item.get("left", ())} == {f"user-{n}" for n in range(5, 10)}
    for stream in streams:
        stream.close()


def test_group_topics_and_users_are_checked(pair) -> None:
    a, b = pair
    group = a.group("team")
    topic = group.new_topic(presence=True)
    assert topic.has_presence and not group.topic("other").has_presence
    assert group.topic("other", presence=True).has_presence
    client = a.new_client(user="dana")
    assert client.user == "dana"
    with pytest.raises((TypeError, ValueError)):
        a.new_client(user="x" * 257)
    with pytest.raises((TypeError, ValueError)):
        a.new_client(user=7)  # type: ignore[arg-type]
    with pytest.raises((TypeError, ValueError)):
        a.new_client(user="")
    b.sync()
    assert b.get_client_by_id(client.id).user == "dana"

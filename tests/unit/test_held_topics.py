"""Which topics have a subscriber whose stream is held here: what a shared log wakes this process for.

The service keeps the set as streams attach and detach and as subscriptions change
(``Core.held``), and counts only the changes to the set: a storm of attaches to a topic already
held tells the log nothing. Checked against its definition (a walk of this process's streams).
"""

from __future__ import annotations

import random

from pubsubsse import SSEPubSubService


def walked(service: SSEPubSubService) -> set[str]:
    core = service._core
    held = core.holders.get(core.process_token, {}).values()
    return {topic_id for client in held if client.stream is not None for topic_id in client.subs}


def held(service: SSEPubSubService) -> set[str]:
    changed = service.held_topics(-1)
    assert changed is not None
    return changed[1]


def test_streams_subscriptions_and_removals_change_the_topics_held_here(service) -> None:
    a, b = service.public_topic("a"), service.public_topic("b")
    one, two = service.new_client(), service.new_client()
    one.sub(a)
    two.sub(a)
    two.sub(b)
    assert held(service) == set()
    first = one.stream()
    assert held(service) == {a.id}
    second = two.stream()
    assert held(service) == {a.id, b.id}
    two.unsub(b)
    assert held(service) == {a.id}
    first.close()
    service.sync()
    assert held(service) == {a.id}  # the other stream still holds it
    service.remove_public_topic(a)
    assert held(service) == set()
    second.close()


def test_attaching_streams_to_a_topic_already_held_leaves_nothing_to_tell_the_log(service) -> None:
    topic = service.public_topic("t")
    clients = [service.new_client() for _ in range(20)]
    for client in clients:
        client.sub(topic)
    streams = [clients[0].stream()]
    changed = service.held_topics(-1)
    assert changed is not None
    version, topics = changed
    assert topics == {topic.id}
    streams += [client.stream() for client in clients[1:]]
    # Each attach used to count as a change: the reader then walked every stream held here again.
    assert service.held_topics(version) is None
    for stream in streams:
        stream.close()


def test_the_set_kept_is_the_set_defined_through_random_changes() -> None:
    service = SSEPubSubService(client_timeout=None)
    rng = random.Random(3)
    topics = [service.public_topic(f"t{n}") for n in range(6)]
    clients = [service.new_client() for _ in range(12)]
    streams: dict[int, object] = {}
    try:
        for _ in range(600):
            n, topic = rng.randrange(len(clients)), rng.choice(topics)
            client, action = clients[n], rng.randrange(4)
            if action == 0 and not topic.is_subscribed(client):
                client.sub(topic)
            elif action == 1 and topic.is_subscribed(client):
                client.unsub(topic)
            elif action == 2 and n not in streams:
                streams[n] = client.stream()
            elif action == 3 and n in streams:
                streams.pop(n).close()  # type: ignore[attr-defined]
            assert held(service) == walked(service)
    finally:
        service.shutdown()

"""Checked by mypy and pyright in CI, never run: the public API's types say what the code does.

Each ``ignore`` below marks a line the type checkers must reject; both are set to report an
ignore that is not needed, so a check that stops rejecting it fails.
"""

from __future__ import annotations

from typing import Any, Union

from typing_extensions import assert_type

from pubsubsse import Client, EventManager, Group, GroupTopic, SSEPubSubService, Status, Topic
from pubsubsse.web._protocol import Endpoints, FileReply, Reply, Request, StreamReply

service = SSEPubSubService()
client = service.new_client()
topic = service.public_topic("news")
group = service.group("room")

assert_type(service.on_new_client, EventManager[Client])
assert_type(service.on_new_public_topic, EventManager[Topic])
assert_type(service.on_remove_group, EventManager[Group])
assert_type(client.on_status_change, EventManager[Status])
assert_type(client.on_new_group_topic, EventManager[GroupTopic])
assert_type(client.on_sub_to_topic, EventManager[Topic])
assert_type(topic.on_new_sub_of_client, EventManager[Client])
assert_type(topic.on_pub, EventManager[Any])
assert_type(group.on_new_group_topic, EventManager[Topic])
assert_type(group.topic("chat"), Topic)
assert_type(service.get_clients(), dict[str, Client])


def on_client(new: Client) -> None:
    print(new.id)


def on_topic(new: Topic) -> None:
    print(new.id)


service.on_new_client.listen(on_client)
topic.on_new_client.listen(on_client)
client.on_new_topic.listen(on_topic)

# A listener of the wrong type is rejected.
service.on_new_client.listen(on_topic)  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
client.on_new_topic.listen(on_client)  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
client.on_status_change.listen(on_topic)  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]

answer = Endpoints(service).handle(Request("GET", "/add/user"))
assert_type(answer, Union[Reply, StreamReply, FileReply])

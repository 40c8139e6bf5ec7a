"""Property-based: random sequences of API calls, with invariants checked after every step.

Each client has a stream attached from its creation on. A "browser" per client rebuilds the
client's view from nothing but the messages its stream carried (as static/pubsubsse.js does);
after every step that view must equal what the service holds for the client.
"""

from __future__ import annotations

import contextlib

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, invariant, rule

from pubsubsse import PubSubError, SSEPubSubService

from ..sse import drain


class Browser:
    def __init__(self, stream):
        self.stream = stream
        self.topics: list[tuple[str, str]] = []
        self.subscribed: set[str] = set()
        self.updates: list[tuple[str, object]] = []
        self.ended = False

    def catch_up(self):
        for message in drain(self.stream).messages:
            kinds = [item["type"] for item in message["sys"] or []]
            if "topics" in kinds and "subscribed" in kinds:
                self.subscribed = set()  # an init message states the whole subscription set
            for item in message["sys"] or []:
                ids = [entry["id"] for entry in item["list"]]
                if item["type"] == "topics":
                    self.topics = [(entry["id"], entry["type"]) for entry in item["list"]]
                elif item["type"] == "subscribed":
                    self.subscribed |= set(ids)
                elif item["type"] == "unsubscribed":
                    self.subscribed -= set(ids)
            self.updates += [(u["topic"], u["data"]) for u in message["updates"] or []]
        self.ended = self.stream.ended


class PubSubMachine(RuleBasedStateMachine):
    clients = Bundle("clients")
    topics = Bundle("topics")
    groups = Bundle("groups")

    def __init__(self):
        super().__init__()
        self.service = SSEPubSubService(client_timeout=None)
        self.browsers: dict[str, Browser] = {}
        self.removed: dict[str, Browser] = {}

    def teardown(self):
        self.service.close()

    @rule(target=clients)
    def new_client(self):
        client = self.service.new_client()
        self.browsers[client.id] = Browser(client.stream())
        return client

    @rule(client=consumes(clients))
    def remove_client(self, client):
        self.service.remove_client(client)
        if client.id in self.browsers:
            self.removed[client.id] = self.browsers.pop(client.id)

    @rule(target=topics)
    def new_public_topic(self):
        return self.service.new_public_topic()

    @rule(topic=topics)
    def remove_public_topic(self, topic):
        self.service.remove_public_topic(topic)

    @rule(target=topics, client=clients)
    def new_private_topic(self, client):
        try:
            return client.new_private_topic()
        except PubSubError:
            return self.service.new_public_topic()

    @rule(client=clients, topic=topics)
    def remove_private_topic(self, client, topic):
        client.remove_private_topic(topic)

    @rule(target=groups)
    def new_group(self):
        return self.service.new_group()

    @rule(group=groups)
    def remove_group(self, group):
        self.service.remove_group(group)

    @rule(target=topics, group=groups)
    def group_new_topic(self, group):
        try:
            return group.new_topic()
        except PubSubError:
            return self.service.new_public_topic()

    @rule(group=groups, topic=topics)
    def group_remove_topic(self, group, topic):
        group.remove_topic(topic)

    @rule(group=groups, client=clients, join=st.booleans())
    def membership(self, group, client, join):
        with contextlib.suppress(PubSubError):
            group.add_client(client) if join else group.remove_client(client)

    @rule(client=clients, topic=topics, subscribe=st.booleans())
    def subscription(self, client, topic, subscribe):
        with contextlib.suppress(PubSubError):
            client.sub(topic) if subscribe else client.unsub(topic)

    @rule(topic=topics, data=st.one_of(st.integers(), st.text(max_size=5), st.none()))
    def pub(self, topic, data):
        with contextlib.suppress(PubSubError):
            topic.pub(data)

    @invariant()
    def every_stream_reconstructs_the_service_state(self):
        clients = self.service.get_clients()
        assert set(clients) == set(self.browsers)
        for client_id, browser in self.browsers.items():
            client = clients[client_id]
            browser.catch_up()
            visible = client.get_all_topics()
            subscribed = client.get_subscribed_topics()
            assert set(subscribed) <= set(visible)
            assert browser.topics == [(t.id, t.type.value) for t in visible.values()]
            assert browser.subscribed == set(subscribed)
        for browser in self.removed.values():
            browser.catch_up()
            assert browser.ended and browser.topics == [] and browser.subscribed == set()


TestPubSubMachine = PubSubMachine.TestCase
TestPubSubMachine.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)

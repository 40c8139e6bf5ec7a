"""The authorization recipe (example/auth_app.py) under gunicorn with gevent.

Three users: alice and carol on team red, bob on team blue. No user may act on another user's
client through any endpoint, subscribe to or receive another user's private topics or another
team's topics, or open another user's stream, with the client id or with a ticket.
"""

from __future__ import annotations

import time

import httpx
import pytest
from itsdangerous import TimestampSigner, URLSafeTimedSerializer

from pubsubsse import StreamTickets

from ..http_helpers import ENDPOINTS, SSEReader
from ..servers import Server

SECRET = "test-secret-for-tickets"
#: Turned off in the recipe: refused with 403 before anyone is asked.
DISABLED = {"/add/topic/public/", "/remove/user"}


@pytest.fixture(scope="module")
def auth_server():
    env = {"SECRET_KEY": SECRET, "PUBSUBSSE_HEARTBEAT": "1"}
    srv = Server("gevent", app="example.auth_app:app", ready="/sse/pubsubsse.js", env=env)
    yield srv
    srv.stop()


class User:
    def __init__(self, server: Server, name: str) -> None:
        self.server = server
        self.http = httpx.Client(base_url=server.base, timeout=10)
        assert self.http.post("/login", data={"username": name, "password": f"{name}-pw"}).status_code == 200
        me = self.http.get("/me").json()
        self.client_id = me["client_id"]
        self.stream_url = me["stream_url"]
        self.team_topics = me["team_topics"]

    def call(self, path: str, **params: str) -> httpx.Response:
        return self.http.post("/sse" + path, data=params)

    def private_topic(self) -> str:
        return self.call("/add/topic/private/", client_id=self.client_id).json()["topic_id"]

    def team_topic(self) -> str:
        return self.http.post("/team/topic").json()["topic_id"]

    def stream(self) -> SSEReader:
        cookies = "; ".join(f"{k}={v}" for k, v in self.http.cookies.items())
        return SSEReader("httpx-sse", self.server.url(self.stream_url), headers={"Cookie": cookies})


@pytest.fixture(scope="module")
def alice(auth_server):
    return User(auth_server, "alice")


@pytest.fixture(scope="module")
def bob(auth_server):
    return User(auth_server, "bob")


@pytest.fixture(scope="module")
def carol(auth_server):
    return User(auth_server, "carol")


def refused(response: httpx.Response, status: int) -> bool:
    return response.status_code == status and response.json()["ok"] == "false"


def topic_ids(message: dict) -> set[str]:
    return {t["id"] for item in message["sys"] if item["type"] == "topics" for t in item["list"]}


def test_anonymous_requests_are_refused_with_401_everywhere(auth_server, alice):
    anonymous = httpx.Client(base_url=auth_server.base, timeout=10)
    for path in ENDPOINTS:
        answer = anonymous.get("/sse" + path, params={"client_id": alice.client_id, "topic": alice.team_topics[0]})
        assert refused(answer, 403 if path in DISABLED else 401), (path, answer.text)
    assert refused(anonymous.get("/sse/event", params={"ticket": alice.stream_url.split("=", 1)[1]}), 401)
    assert anonymous.get("/me").status_code == 401


def test_users_cannot_create_clients_or_public_topics(alice):
    assert refused(alice.call("/add/user"), 403)
    assert refused(alice.call("/add/topic/public/"), 403)


def test_another_users_client_is_refused_on_every_endpoint(alice, bob):
    bobs_private = bob.private_topic()
    for path in ENDPOINTS:
        answer = alice.call(path, client_id=bob.client_id, topic=bobs_private)
        assert refused(answer, 403), (path, answer.text)
    bobs_ticket = bob.stream_url.split("=", 1)[1]
    assert refused(alice.http.get("/sse/event", params={"ticket": bobs_ticket}), 403)
    # Bob's client is untouched: his private topic still exists and he can use it.
    assert bob.call("/sub", client_id=bob.client_id, topic=bobs_private).status_code == 200


def test_others_private_and_team_topics_cannot_be_subscribed(alice, bob, carol):
    bobs_private = bob.private_topic()
    blue_topic = bob.team_topic()
    red_topic = alice.team_topic()
    assert refused(alice.call("/sub", client_id=alice.client_id, topic=bobs_private), 400)
    assert refused(alice.call("/sub", client_id=alice.client_id, topic=blue_topic), 400)
    assert refused(alice.call("/unsub", client_id=alice.client_id, topic=bobs_private), 400)
    assert refused(alice.call("/remove/topic/private/", client_id=alice.client_id, topic=bobs_private), 400)
    # The same calls work for whoever may see the topic: the refusals above are about visibility.
    assert carol.call("/sub", client_id=carol.client_id, topic=red_topic).status_code == 200
    assert bob.call("/sub", client_id=bob.client_id, topic=blue_topic).status_code == 200


def test_streams_carry_only_what_the_user_may_see(alice, bob):
    alices = alice.stream()
    bobs = bob.stream()
    try:
        alice_topics = topic_ids(alices.next().json())
        bobs_private = bob.private_topic()
        blue_topic = bob.team_topic()
        assert bob.call("/sub", client_id=bob.client_id, topic=blue_topic).status_code == 200
        assert bob.http.post("/team/say", data={"topic": blue_topic, "text": "blue only"}).status_code == 200
        # Bob sees his topics appear and his team's message arrive.
        seen = []
        while not any(m["updates"] for m in seen):
            seen.append(bobs.next().json())
        assert {bobs_private, blue_topic} <= set().union(*(topic_ids(m) for m in seen if m["sys"]))
        assert seen[-1]["updates"][0]["data"] == {"from": "bob", "text": "blue only"}
        # Alice got nothing of it, and her topics never included bob's.
        assert alices.nothing_within(1.0)
        assert not {bobs_private, blue_topic} & alice_topics
        assert set(alice.team_topics) <= alice_topics
    finally:
        alices.close()
        bobs.close()


def test_forged_damaged_and_expired_tickets_are_refused(alice):
    ticket = alice.stream_url.split("=", 1)[1]
    assert refused(alice.http.get("/sse/event", params={"ticket": ticket[:-2] + "xx"}), 400)
    forged = StreamTickets("another secret").issue(alice.client_id)
    assert alice.http.get("/sse/event", params={"ticket": forged}).json()["error"] == "invalid ticket"

    # A ticket signed two minutes ago (tickets live 60 s in the recipe).
    class TwoMinutesAgo(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(time.time()) - 120

    old = URLSafeTimedSerializer(SECRET, salt="pubsubsse.stream-ticket", signer=TwoMinutesAgo).dumps(alice.client_id)
    answer = alice.http.get("/sse/event", params={"ticket": old})
    assert refused(answer, 400)
    assert answer.json()["error"] == "ticket expired"


def test_nobody_learns_whether_a_client_id_exists(auth_server, alice, bob):
    """An existing id and a random one get the same answer, for anonymous and logged-in callers."""
    import uuid

    anonymous = httpx.Client(base_url=auth_server.base, timeout=10)
    random_id = f"C-{uuid.uuid4()}"
    for caller in (anonymous, bob.http):
        for path in ENDPOINTS:
            answers = [
                caller.post("/sse" + path, data={"client_id": client_id, "topic": alice.team_topics[0]})
                for client_id in (alice.client_id, random_id)
            ]
            existing, unknown = ((a.status_code, a.json()) for a in answers)
            assert existing == unknown, (path, existing, unknown)
            assert answers[0].status_code in (401, 403), (path, answers[0].text)


def test_the_session_cookie_is_samesite_and_httponly(auth_server):
    http = httpx.Client(base_url=auth_server.base, timeout=10)
    answer = http.post("/login", data={"username": "carol", "password": "carol-pw"})
    cookie = answer.headers["set-cookie"].lower()
    assert "samesite=lax" in cookie and "httponly" in cookie, cookie


@pytest.mark.parametrize(
    "headers",
    [{"Sec-Fetch-Site": "cross-site"}, {"Sec-Fetch-Site": "same-site"}, {"Origin": "https://evil.example"}],
    ids=["sec-fetch-site cross-site", "sec-fetch-site same-site", "foreign origin"],
)
def test_cross_site_requests_are_refused_and_change_nothing(alice, headers):
    """A page on another site cannot make the user's browser act: state changes need a same-origin request."""
    private = alice.private_topic()
    forged = [
        ("POST", "/sse/unsub", {"client_id": alice.client_id, "topic": private}),
        ("GET", "/sse/sub", {"client_id": alice.client_id, "topic": private}),  # GETs change state here
        ("GET", "/sse/add/topic/private/", {"client_id": alice.client_id}),
        ("POST", "/team/topic", {}),
        ("POST", "/team/say", {"topic": alice.team_topics[0], "text": "forged"}),
        ("POST", "/logout", {}),
    ]

    def state() -> dict[str, object]:
        """What the user has; the stream URL carries a ticket minted per request, so it is left out."""
        me = alice.http.get("/me").json()
        del me["stream_url"]
        return me

    before = state()
    for method, path, params in forged:
        answer = alice.http.request(
            method,
            path,
            data=params if method == "POST" else None,
            params=params if method == "GET" else None,
            headers=headers,
        )
        assert answer.status_code == 403, (path, answer.status_code, answer.text)
    assert state() == before  # still logged in, nothing new
    # The same calls from the app's own pages (same origin) are allowed.
    same = {"Sec-Fetch-Site": "same-origin", "Origin": str(alice.http.base_url).rstrip("/")}
    assert (
        alice.http.get("/sse/sub", params={"client_id": alice.client_id, "topic": private}, headers=same).status_code
        == 200
    )

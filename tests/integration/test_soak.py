"""Soak: hundreds of clients churning, subscribing and receiving under steady publishing.

About 300 streams stay open on a gunicorn gevent server while publishing goes on; every round a
few are cut: their clients are removed, left waiting to resume later with ``Last-Event-ID``, or
abandoned to expire. Every stream's ids must increase (an init message may stand
for what it covers). Afterwards every client is gone, every stream ended, and threads, greenlets
and memory are back to their baseline. ``PUBSUBSSE_SOAK_SECONDS`` sets the length (default 100).
"""

from __future__ import annotations

import json
import os
import random
import select
import threading
import time

import psutil
import pytest

from ..http_helpers import api, new_client, new_public_topic, publish, wait_for
from ..servers import Server
from ..sse import is_init
from .test_direct_writes import RawStream

SECONDS = float(os.environ.get("PUBSUBSSE_SOAK_SECONDS", "100"))
STREAMS = 300
TOPICS = 5


class Subscriber:
    """One client's stream, checked as it is read: ids only go up."""

    def __init__(self, server: Server, client: str, last_id: int | None = None) -> None:
        self.client = client
        header = f"&last_event_id={last_id}" if last_id is not None else ""
        self.stream = RawStream(server.port, f"/event?client_id={client}{header}")
        self.last_id = last_id
        self.updates = 0

    def read(self) -> None:
        self.stream._recv()
        self.stream._unframe()
        for event_id, data in self.stream._parse():
            message = json.loads(data)
            if is_init(message):  # init: the state as of its id
                assert self.last_id is None or event_id >= self.last_id, (self.last_id, event_id)
            else:
                assert self.last_id is not None and event_id > self.last_id, (self.last_id, event_id)
                self.updates += bool(message["updates"])
            self.last_id = event_id


def worker_rss(server: Server) -> int:
    return sum(child.memory_info().rss for child in psutil.Process(server.proc.pid).children())


@pytest.fixture(scope="module")
def soak_server():
    srv = Server("gevent", env={"PUBSUBSSE_HEARTBEAT": "2", "PUBSUBSSE_CLIENT_TIMEOUT": "3"})
    yield srv
    srv.stop()


@pytest.mark.timeout(SECONDS + 120)
def test_soak_returns_to_baseline(soak_server):
    server = soak_server
    rng = random.Random(7)
    topics = [new_public_topic(server) for _ in range(TOPICS)]
    baseline = api(server, "/test/stats").json()
    rss_start = worker_rss(server)

    def subscribed_client() -> str:
        client = new_client(server)
        for topic in rng.sample(topics, rng.randint(1, 2)):
            assert api(server, "/sub", client_id=client, topic=topic).status_code == 200
        return client

    stop = threading.Event()
    published = [0]

    def publisher() -> None:
        while not stop.wait(0.05):
            publish(server, rng.choice(topics), {"n": published[0], "pad": "p" * 200})
            published[0] += 1

    live = {s.stream.sock.fileno(): s for s in (Subscriber(server, subscribed_client()) for _ in range(STREAMS))}
    waiting: list[tuple[str, int | None]] = []
    counts = {"removed": 0, "resumed": 0, "abandoned": 0, "new": 0}
    updates_of_closed = 0
    thread = threading.Thread(target=publisher, daemon=True)
    thread.start()
    started = time.monotonic()
    rss_warm = None
    try:
        while time.monotonic() - started < SECONDS:
            if rss_warm is None and time.monotonic() - started > min(20, SECONDS / 4):
                rss_warm = worker_rss(server)
            ready, _, _ = select.select(list(live), [], [], 0.05)
            for fd in ready:
                live[fd].read()
            for _ in range(2):  # churn: about 40 streams a second
                fd = rng.choice(list(live))
                gone = live.pop(fd)
                gone.stream.close()
                updates_of_closed += gone.updates
                fate = rng.random()
                if fate < 0.35:
                    assert api(server, "/remove/user", client_id=gone.client).status_code == 200
                    counts["removed"] += 1
                elif fate < 0.75:
                    waiting.append((gone.client, gone.last_id))
                else:
                    counts["abandoned"] += 1
                if waiting and rng.random() < 0.5:
                    client, last_id = waiting.pop(rng.randrange(len(waiting)))
                    if api(server, "/sub", client_id=client, topic=rng.choice(topics)).status_code == 200:
                        fresh = Subscriber(server, client, last_id)
                        counts["resumed"] += 1
                    else:  # it expired while waiting
                        fresh = Subscriber(server, subscribed_client())
                        counts["new"] += 1
                else:
                    fresh = Subscriber(server, subscribed_client())
                    counts["new"] += 1
                live[fresh.stream.sock.fileno()] = fresh
    finally:
        stop.set()
        thread.join(10)
        received = updates_of_closed + sum(s.updates for s in live.values())
        for s in live.values():
            s.stream.close()

    # Every client is gone once the leftovers expire (client_timeout 3 s); nothing else remains.
    wait_for(lambda: api(server, "/test/stats").json()["clients"] == 0, timeout=30, what="every client gone")
    wait_for(lambda: api(server, "/test/stats").json()["streams"] == 0, timeout=10, what="every stream collected")
    after = api(server, "/test/stats").json()
    rss_end = worker_rss(server)
    mb = 2**20
    print(
        f"\nsoak {SECONDS:.0f} s: {published[0]} published, {received} updates received, churn {counts}\n"
        f"baseline {baseline}\nafter    {after}\n"
        f"worker RSS: start {rss_start / mb:.1f} MB, after warm-up {(rss_warm or 0) / mb:.1f} MB, "
        f"end {rss_end / mb:.1f} MB"
    )
    assert published[0] > SECONDS * 10 and received > published[0] * 10
    assert counts["removed"] > 50 and counts["resumed"] > 50 and counts["abandoned"] > 20
    assert after["threads"] == baseline["threads"]  # the timer started with the first change, before the baseline
    assert after["greenlets"] <= baseline["greenlets"] + 1
    assert after["receiving"] == 0
    assert rss_warm is not None and rss_end - rss_warm < 16 * mb, "memory kept growing after the warm-up"

"""The fault suite: a cluster on Redis under a steady publisher, one fault after another.

Two gunicorn servers with two gevent workers each share one service through a private
redis-server. 500 subscribers hold streams (raw sockets, read by one selector loop; like a
browser's EventSource they reconnect with Last-Event-ID whenever a stream ends, to the other
server), and a publisher sends 20 numbered messages a second. The faults, in turn: SIGKILL of a
worker, DEBUG SLEEP of Redis longer than the backend's timeout, Redis restarted with its data and
without it, CLIENT PAUSE, poison entries in the log, one worker paused longer than ``alive`` while
the others snapshot and trim the log, and a rolling restart of every worker.

After each fault the checker asserts, for every subscriber: each message whose publish was
answered "applied" arrives exactly once, in publish order, with increasing event ids; the only
gaps allowed are announced by an init message inside them (a resync); a message whose publish
was answered "not applied" never arrives. And for the cluster: no client is stuck RECEIVING, and
every worker's state is identical. The figures per fault (silent losses, announced resyncs, time
to recover) are printed and written to ``artifacts/faults.json``.
"""

from __future__ import annotations

import json
import selectors
import shutil
import signal
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import psutil
import pytest
import redis as redis_py

from ..http_helpers import api, http, new_client, new_public_topic, wait_for
from ..redis_server import RedisServer
from ..servers import ROOT, Server, print_outputs
from ..sse import is_init, is_reset

SUBSCRIBERS = 500
RATE = 20.0


class Subscriber:
    """One EventSource: the events it received, over however many connections."""

    __slots__ = (
        "client",
        "sock",
        "buffer",
        "body",
        "chunked",
        "head_done",
        "fields",
        "events",
        "last_id",
        "connections",
        "reconnect_at",
        "server_index",
    )

    def __init__(self, client: str) -> None:
        self.client = client
        self.sock: socket.socket | None = None
        self.buffer = b""
        self.body = b""
        self.chunked = False
        self.head_done = False
        self.fields: dict[str, str] = {}
        #: (connection number, event id, message) in arrival order.
        self.events: list[tuple[int, int, dict]] = []
        self.last_id: int | None = None
        self.connections = 0
        self.reconnect_at = 0.0
        self.server_index = 0


class Subscribers(threading.Thread):
    """All the subscribers' streams, read by one selector loop."""

    def __init__(self, servers: list[Server], clients: list[str]) -> None:
        super().__init__(daemon=True)
        self.servers = servers
        self.subs = [Subscriber(c) for c in clients]
        for i, sub in enumerate(self.subs):
            sub.server_index = i % len(servers)
        self.selector = selectors.DefaultSelector()
        self.stop = threading.Event()
        self.lock = threading.Lock()

    def run(self) -> None:
        while not self.stop.is_set():
            now = time.monotonic()
            for sub in self.subs:
                if sub.sock is None and now >= sub.reconnect_at:
                    self._connect(sub)
            for key, _ in self.selector.select(0.05):
                self._read(key.data)

    def _connect(self, sub: Subscriber) -> None:
        server = self.servers[sub.server_index % len(self.servers)]
        try:
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=2)
        except OSError:
            sub.reconnect_at = time.monotonic() + 0.5
            return
        headers = f"Last-Event-ID: {sub.last_id}\r\n" if sub.last_id is not None else ""
        sock.sendall(f"GET /event?client_id={sub.client} HTTP/1.1\r\nHost: x\r\n{headers}\r\n".encode())
        sock.setblocking(False)
        sub.sock, sub.buffer, sub.body, sub.head_done, sub.fields = sock, b"", b"", False, {}
        sub.connections += 1
        self.selector.register(sock, selectors.EVENT_READ, sub)

    def _drop(self, sub: Subscriber) -> None:
        """The stream ended: reconnect after EventSource's retry, to the other server."""
        if sub.sock is not None:
            self.selector.unregister(sub.sock)
            sub.sock.close()
        sub.sock = None
        sub.server_index += 1
        sub.reconnect_at = time.monotonic() + 0.5

    def _read(self, sub: Subscriber) -> None:
        try:
            data = sub.sock.recv(1 << 16)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._drop(sub)
            return
        sub.buffer += data
        if not sub.head_done:
            if b"\r\n\r\n" not in sub.buffer:
                return
            head, _, sub.buffer = sub.buffer.partition(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200"):  # 503 while Redis is away, 400 ...: retry
                self._drop(sub)
                return
            sub.head_done = True
            sub.chunked = b"transfer-encoding: chunked" in head.lower()
        ended = False
        if sub.chunked:
            while True:
                end = sub.buffer.find(b"\r\n")
                if end < 0:
                    break
                size = int(sub.buffer[:end], 16)
                if len(sub.buffer) < end + 2 + size + 2:
                    break
                if size == 0:
                    ended = True
                sub.body += sub.buffer[end + 2 : end + 2 + size]
                sub.buffer = sub.buffer[end + 4 + size :]
        else:
            sub.body, sub.buffer = sub.body + sub.buffer, b""
        *lines, sub.body = sub.body.split(b"\n")
        with self.lock:
            for line in lines:
                if not line:
                    if "data" in sub.fields:
                        event_id = int(sub.fields["id"])
                        sub.events.append((sub.connections, event_id, json.loads(sub.fields["data"])))
                        sub.last_id = event_id
                    sub.fields = {}
                elif not line.startswith(b":"):
                    name, _, value = line.decode().partition(": ")
                    sub.fields[name] = value
        if ended:
            self._drop(sub)

    def received(self) -> list[list[tuple[int, int, dict]]]:
        with self.lock:
            return [list(sub.events) for sub in self.subs]

    def close(self) -> None:
        self.stop.set()
        self.join(5)
        for sub in self.subs:
            if sub.sock is not None:
                sub.sock.close()


class Publisher(threading.Thread):
    """Publishes 1, 2, 3, … at a steady rate; records each answer: applied, not applied or unknown."""

    def __init__(self, servers: list[Server], topic: str, timeout: float = 30) -> None:
        super().__init__(daemon=True)
        self.servers = servers
        self.topic = topic
        self.timeout = timeout
        self.outcomes: dict[int, str] = {}
        self.running = threading.Event()
        #: Set while not publishing: every answer so far is in ``outcomes``.
        self.idle = threading.Event()
        self.stop = threading.Event()
        self.number = 0

    def run(self) -> None:
        client = httpx.Client(timeout=self.timeout)
        next_at = time.monotonic()
        while not self.stop.is_set():
            if not self.running.is_set():
                self.idle.set()
                self.running.wait(0.1)
                next_at = time.monotonic()
                continue
            self.idle.clear()
            self.number += 1
            n = self.number
            server = self.servers[n % len(self.servers)]
            try:
                answer = client.post(server.url("/test/pub"), json={"topic": self.topic, "data": [n]})
                if answer.status_code == 200:
                    self.outcomes[n] = "applied"
                elif answer.status_code == 503 and not answer.json().get("unknown"):
                    self.outcomes[n] = "not applied"
                else:
                    self.outcomes[n] = "unknown"
            except httpx.HTTPError:
                self.outcomes[n] = "unknown"  # the worker died with the request, say
            next_at += 1 / RATE
            time.sleep(max(0.0, next_at - time.monotonic()))
        client.close()

    def applied(self) -> list[int]:
        return sorted(n for n, outcome in self.outcomes.items() if outcome == "applied")


def check(events: list[tuple[int, int, dict]], outcomes: dict[int, str], until: int) -> tuple[int, int, list[str]]:
    """Check one subscriber's events; return (silent losses, announced resyncs, problems)."""
    problems: list[str] = []
    resyncs = 0
    previous_id: int | None = None
    previous_connection = 0
    received: list[tuple[int, bool]] = []  # (message number, an init came right before it)
    init_pending = False
    for connection, event_id, message in events:
        new_connection = connection != previous_connection
        previous_connection = connection
        if is_init(message):
            if previous_id is not None:
                resyncs += 1
                if not is_reset(message):
                    problems.append(f"an init message after id {previous_id} without a reset element")
            init_pending = True
            previous_id = event_id
            continue
        if previous_id is None or event_id <= previous_id:
            problems.append(
                f"id {previous_id} then {event_id} without an init message (new connection: {new_connection})"
            )
        previous_id = event_id
        for update in message["updates"] or []:
            received.append((update["data"], init_pending))
            init_pending = False
    numbers = [n for n, _ in received]
    if numbers != sorted(set(numbers)):
        problems.append("messages out of order or twice")
    for n in numbers:
        if outcomes.get(n) == "not applied":
            problems.append(f"message {n} arrived, though its publish was answered 'not applied'")
    got = set(numbers)
    silent = 0
    for n in [n for n, outcome in outcomes.items() if outcome == "applied" and n <= until]:
        if n in got:
            continue
        # n's place is just before the first message after it; an init message there announces the gap.
        i = next((i for i, (m, _) in enumerate(received) if m > n), None)
        announced = received[i][1] if i is not None else init_pending
        if not announced:
            silent += 1
    if silent:
        problems.append(f"{silent} applied messages missing with no init message in their gap")
    return silent, resyncs, problems


def start_streams(servers: list[Server], count: int) -> tuple[list[str], Subscribers, Publisher]:
    """``count`` subscribers of a new topic, streaming from every server in turn, and its publisher, running."""
    topic = new_public_topic(servers[0])
    clients = [new_client(servers[i % len(servers)]) for i in range(count)]
    for i, client in enumerate(clients):
        assert api(servers[i % len(servers)], "/sub", client_id=client, topic=topic).status_code == 200
    subscribers = Subscribers(servers, clients)
    subscribers.start()
    wait_for(lambda: all(sub.events for sub in subscribers.subs), timeout=60, what="every stream's init")
    publisher = Publisher(servers, topic)
    publisher.start()
    publisher.running.set()
    time.sleep(2)
    return clients, subscribers, publisher


@contextmanager
def fault_run(servers: list[Server], count: int, artifact: str) -> Iterator[FaultRun]:
    """Streams and a publisher on ``servers``, checked by the run's ``after``; the report goes to artifacts/.

    At the end, whatever happened, the figures are written, and the publisher, the streams and the
    servers are stopped (the servers' output printed if the run failed).
    """
    subscribers = publisher = None
    report: list[dict] = []
    try:
        clients, subscribers, publisher = start_streams(servers, count)
        yield FaultRun(servers, subscribers, publisher, report, clients)
    except Exception:
        print_outputs(servers)
        raise
    finally:
        artifacts = ROOT / "artifacts"
        artifacts.mkdir(exist_ok=True)
        (artifacts / artifact).write_text(json.dumps(report, indent=1))
        stop_all(publisher, subscribers, servers)


def stop_all(publisher: Publisher | None, subscribers: Subscribers | None, servers: list[Server]) -> None:
    """Stop the publisher, the streams and the servers (whichever were started)."""
    if publisher is not None:
        publisher.stop.set()
    if subscribers is not None:
        subscribers.close()
    for server in servers:
        server.stop()


class FaultRun:
    """The checks after each fault of a run: recovery, every subscriber's messages, no stuck client, equal states."""

    def __init__(
        self, servers: list[Server], subscribers: Subscribers, publisher: Publisher, report: list, clients: list[str]
    ) -> None:
        self.servers = servers
        self.clients = clients
        self.subscribers = subscribers
        self.publisher = publisher
        self.report = report
        self.workers = sum(server.workers for server in servers)
        self.window = {"first": 1, "resyncs": [0] * len(subscribers.subs)}

    def recovered(self, since: int) -> bool:
        """A message published after number ``since`` was applied and every subscriber has it."""
        fresh = [n for n in self.publisher.applied() if n > since]
        if not fresh:
            return False
        for events in self.subscribers.received():
            newest = max((u["data"] for _, _, m in events for u in m["updates"] or []), default=0)
            if newest < fresh[0]:
                return False
        return True

    def stuck_receiving(self) -> list[str]:
        view = http.get(self.servers[0].url("/test/state")).json()
        live = {sub.client for sub in self.subscribers.subs if sub.sock is not None}
        return [c for c, s in view["clients"].items() if s["status"] == "receiving" and c not in live]

    def digests(self) -> dict[int, str]:
        """Every worker's state, hashed after it caught up, until all agree (bounded: 30 s).

        The workers are read one after another, so a change that lands in between (a detach
        retried once Redis is back, a subscriber reconnecting) makes the first ones read look
        behind; a real divergence never goes away and is reported as it stands at the deadline.
        """
        seen: dict[int, str] = {}
        deadline = time.monotonic() + 30
        with httpx.Client(timeout=30, headers={"Connection": "close"}) as one_shot:
            while time.monotonic() < deadline:
                for server in self.servers:
                    answer = one_shot.get(server.url("/test/digest")).json()
                    seen[answer["pid"]] = answer["digest"]
                if len(seen) >= self.workers and len(set(seen.values())) == 1 and None not in seen.values():
                    break
        return seen

    def after(self, name: str, injected_at: float) -> None:
        """Once the fault is over: wait for recovery, then check everything and report this fault's figures."""
        publisher, subscribers, window = self.publisher, self.subscribers, self.window
        since = publisher.number
        wait_for(lambda: self.recovered(since), timeout=90, what=f"recovery ({name})")
        recovery = time.monotonic() - injected_at
        publisher.running.clear()
        publisher.idle.wait(60)
        # The last publishes reach every stream (bounded: a real loss shows in the check below).
        settle = time.monotonic() + 30
        while not self.recovered(max(publisher.applied(), default=0) - 1) and time.monotonic() < settle:
            time.sleep(0.1)
        outcomes = dict(publisher.outcomes)
        silent = 0
        resynced = 0
        problems: list[str] = []
        for i, events in enumerate(subscribers.received()):
            s, r, p = check(events, outcomes, publisher.number)
            silent += s
            resynced += r > window["resyncs"][i]
            window["resyncs"][i] = r
            problems += p[:2]
        wait_for(lambda: not self.stuck_receiving(), timeout=20, what=f"no client stuck RECEIVING ({name})")
        states = self.digests()
        mine = {n: o for n, o in outcomes.items() if n >= window["first"]}
        window["first"] = publisher.number + 1
        figures = {
            "fault": name,
            "publishes": len(mine),
            "not_applied": sum(o == "not applied" for o in mine.values()),
            "unknown": sum(o == "unknown" for o in mine.values()),
            "silent_losses": silent,
            "subscribers_resynced": resynced,
            "recovery_s": round(recovery, 2),
            "workers_compared": len(states),
            "states_equal": len(set(states.values())) == 1,
        }
        self.report.append(figures)
        print(figures)
        assert not problems, (name, problems[:10])
        assert silent == 0
        assert figures["states_equal"] and len(states) == self.workers, states
        publisher.running.set()
        time.sleep(1)


@pytest.mark.timeout(900)
def test_faults_one_after_another_lose_nothing_silently(tmp_path):
    redis = RedisServer(persistent=True)
    key = f"t:{uuid.uuid4()}"
    env = {
        "PUBSUBSSE_REDIS_URL": redis.url,
        "PUBSUBSSE_REDIS_KEY": key,
        "PUBSUBSSE_HEARTBEAT": "1",
        "PUBSUBSSE_CLIENT_TIMEOUT": "none",
        "PUBSUBSSE_REDIS_TIMEOUT": "1",
        "PUBSUBSSE_REDIS_ALIVE": "3",
        "PUBSUBSSE_REDIS_SNAPSHOT_EVERY": "50",  # a snapshot and a trim every 2 s or so: during the pause too
    }
    servers = [Server("gevent", env=env, workers=2), Server("gevent", env=env, workers=2)]
    try:
        with fault_run(servers, SUBSCRIBERS, "faults.json") as run:
            clients, subscribers, publisher = run.clients, run.subscribers, run.publisher
            topic = publisher.topic
            after = run.after

            raw = redis_py.Redis.from_url(redis.url)

            # 1. SIGKILL of a worker: its streams break; gunicorn starts another one.
            victim = next(p for p in psutil.Process(servers[0].proc.pid).children())
            injected = time.monotonic()
            victim.kill()
            after("SIGKILL of a worker", injected)

            # 2. DEBUG SLEEP of Redis, longer than the backend's timeout (1 s).
            injected = time.monotonic()
            threading.Thread(
                target=lambda: redis_py.Redis.from_url(redis.url).execute_command("DEBUG", "SLEEP", 3)
            ).start()
            time.sleep(3)
            after("DEBUG SLEEP 3 s", injected)

            # 3. Redis restarted with its data (append-only file).
            injected = time.monotonic()
            redis.stop()
            time.sleep(1)
            redis.start()
            after("Redis restarted, data kept", injected)

            # 4. Redis restarted without its data.
            injected = time.monotonic()
            redis.stop()
            for item in Path(redis.dir).iterdir():
                shutil.rmtree(item) if item.is_dir() else item.unlink()
            redis.start()
            after("Redis restarted, data lost", injected)

            # 5. CLIENT PAUSE: Redis answers nobody for 3 s.
            injected = time.monotonic()
            redis_py.Redis.from_url(redis.url).execute_command("CLIENT", "PAUSE", 3000, "ALL")
            time.sleep(3)
            after("CLIENT PAUSE 3 s", injected)

            # 6. Poison entries: a newer format, an unknown operation, damaged fields, JSON nested
            # 100,000 deep (RecursionError: it stopped every reader), a publish whose body is not JSON.
            injected = time.monotonic()
            raw = redis_py.Redis.from_url(redis.url)
            raw.xadd(key, {"v": "9", "e": "[]"})
            raw.xadd(key, {"v": "2", "e": json.dumps(["P-newer", 1, "teleport_client", ["C-1"]])})
            raw.xadd(key, {"garbage": "\xff"})
            raw.xadd(key, {"v": "2", "e": "[" * 100_000 + "]" * 100_000})
            raw.xadd(key, {"v": "2", "e": json.dumps(["Q-hand", 1, "pub", [topic]]), "b": "not json"})
            after("poison entries", injected)
            for server in servers:
                stats = api(server, "/stats").json()
                assert stats["log_entries_skipped"] >= 5 and stats["log_thread_restarts"] == 0, stats

            # 7. One worker paused longer than alive (a long GC pause, a VM migration): the others detach
            # its streams, whose browsers resume elsewhere; waking, it must leave the others' streams alone
            # (it judged every process dead from the reports it read before the pause, and ended them all).
            injected = time.monotonic()
            paused = http.get(servers[0].url("/test/ready")).json()
            tokens = http.get(servers[1].url("/test/tokens")).json()
            held = {cid for cid, token in tokens.items() if (token or "").startswith(paused["process"] + ":")}
            connections = [sub.connections for sub in subscribers.subs]
            psutil.Process(paused["pid"]).suspend()
            try:
                time.sleep(5)  # alive is 3 s here
            finally:
                psutil.Process(paused["pid"]).resume()
            after("one worker paused past alive", injected)
            moved = {clients[i] for i, sub in enumerate(subscribers.subs) if sub.connections != connections[i]}
            assert not moved - held, f"{len(moved - held)} streams held by other processes were ended"

            # 8. A rolling restart of every worker (gunicorn's HUP: new workers, the old ones stop).
            injected = time.monotonic()
            for server in servers:
                before = {p.pid for p in psutil.Process(server.proc.pid).children()}
                server.signal(signal.SIGHUP)
                wait_for(
                    lambda server=server, before=before: (
                        not before & {p.pid for p in psutil.Process(server.proc.pid).children()}
                    ),
                    timeout=60,
                    what="new workers",
                )
            after("rolling restart of every worker", injected)
    finally:
        redis.close()


def test_the_checker_finds_silent_gaps_duplicates_and_refused_messages():
    """The fault suite's checker can fail: each kind of defect, made up, is found."""

    def update(n: int) -> dict:
        return {"sys": None, "updates": [{"topic": "T", "data": n}]}

    init = {"sys": [{"type": "topics", "list": []}, {"type": "subscribed", "list": []}], "updates": None}
    applied = {n: "applied" for n in range(1, 6)}
    fine = [(1, 0, init), (1, 1, update(1)), (1, 2, update(2)), (2, 3, update(3)), (2, 4, update(4)), (2, 5, update(5))]
    assert check(fine, applied, 5) == (0, 0, [])
    gap = [e for e in fine if e[2].get("updates") != [{"topic": "T", "data": 3}]]
    silent, _, problems = check(gap, applied, 5)
    assert silent == 1 and any("no init message in their gap" in p for p in problems)
    backwards = [*fine[:3], (1, 2, update(3))]  # an id again: a stream that went back
    assert any("without an init" in p for p in check(backwards, applied, 3)[2])
    reset = {**init, "sys": [*init["sys"], {"type": "reset"}]}
    announced = [*fine[:3], (2, 9, reset), (2, 10, update(4)), (2, 11, update(5))]
    assert check(announced, applied, 5) == (0, 1, [])
    unsaid = [*fine[:3], (2, 9, init), (2, 10, update(4)), (2, 11, update(5))]  # a resync that does not say so
    assert any("without a reset element" in p for p in check(unsaid, applied, 5)[2])
    twice = [*fine, (2, 6, update(5))]
    assert any("twice" in p for p in check(twice, applied, 5)[2])
    refused = {**applied, 4: "not applied"}
    assert any("not applied" in p for p in check(fine, refused, 5)[2])


@pytest.mark.timeout(300)
def test_a_worker_paused_while_the_others_trim_the_log_loses_nothing_silently():
    """One worker paused past ``alive`` while the others snapshot and trim the log behind it.

    Waking, it must find its position trimmed and reload from the snapshot. It did not (Redis's
    ``max-deleted-entry-id`` does not move on ``XTRIM``): it read on from the first entry left,
    and its 20 streams, never ended, went on with consecutive ids and 120 messages missing.
    Every subscriber must get each applied message once, or an init message in the gap; and
    both workers must end with the same state.
    """
    redis = RedisServer()
    env = {
        "PUBSUBSSE_REDIS_URL": redis.url,
        "PUBSUBSSE_REDIS_KEY": f"t:{uuid.uuid4()}",
        "PUBSUBSSE_HEARTBEAT": "1",
        "PUBSUBSSE_CLIENT_TIMEOUT": "none",
        "PUBSUBSSE_REDIS_ALIVE": "3",
        "PUBSUBSSE_REDIS_SNAPSHOT_EVERY": "20",
    }
    servers = [Server("gevent", env=env, workers=1), Server("gevent", env=env, workers=1)]
    subscribers = publisher = None
    try:
        topic = new_public_topic(servers[0])
        clients = [new_client(servers[i % 2]) for i in range(40)]
        for i, client in enumerate(clients):
            assert api(servers[i % 2], "/sub", client_id=client, topic=topic).status_code == 200
        subscribers = Subscribers(servers, clients)
        subscribers.start()
        wait_for(lambda: all(sub.events for sub in subscribers.subs), timeout=60, what="every stream's init")
        publisher = Publisher(servers[:1], topic)
        publisher.start()
        publisher.running.set()
        wait_for(lambda: len(publisher.applied()) >= 20, timeout=30, what="publishes before the pause")
        ready = http.get(servers[1].url("/test/ready")).json()
        paused = ready["pid"]
        log = redis_py.Redis.from_url(redis.url)
        key = env["PUBSUBSSE_REDIS_KEY"]

        def entry(text: bytes | str) -> tuple[int, ...]:
            text = text.decode() if isinstance(text, bytes) else text
            return tuple(int(part) for part in text.split("-"))

        def trimmed_behind_the_paused_worker() -> bool:
            applied = log.hget(key + ":applied", ready["process"])
            deleted = log.xinfo_stream(key).get("max-deleted-entry-id")
            return applied is not None and deleted is not None and entry(deleted) > entry(applied.split()[0])

        # Not in the middle of its own snapshot: the lock it would hold keeps the others from
        # trimming for 30 s (the lock's expiry), by which time its report is forgotten.
        for _ in range(100):
            psutil.Process(paused).suspend()
            owner = log.get(key + ":snapshot-lock")
            if owner is None or not owner.decode().startswith(ready["process"]):
                break
            psutil.Process(paused).resume()
            time.sleep(0.05)
        try:
            # alive is 3 s: the others judge it dead, snapshot and trim behind it. Waited for, not
            # slept: under load the trim may take longer than a fixed pause (it once did in CI).
            wait_for(trimmed_behind_the_paused_worker, timeout=60, what="the log trimmed behind the paused worker")
        finally:
            psutil.Process(paused).resume()
        wait_for(lambda: len(publisher.applied()) >= 200, timeout=60, what="publishes after the pause")
        publisher.running.clear()
        assert publisher.idle.wait(30)
        last = max(publisher.applied())

        def everyone_has_the_last() -> bool:
            for events in subscribers.received():
                if max((u["data"] for _, _, m in events for u in m["updates"] or []), default=0) < last:
                    return False
            return True

        wait_for(everyone_has_the_last, timeout=60, what="the last message on every stream")
        outcomes = dict(publisher.outcomes)
        problems = []
        for sub, events in zip(subscribers.subs, subscribers.received()):
            _, _, found = check(events, outcomes, publisher.number)
            problems += [f"{sub.client[:10]}: {p}" for p in found]
        stats = [api(server, "/stats").json() for server in servers]
        # The log was trimmed behind the paused worker (once more if a trim lands between its
        # reload and its first report after it).
        assert stats[1]["log_reloads"] >= 1, stats
        assert not problems, problems[:20]
        digests = {}
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            digests = {s.port: http.get(s.url("/test/digest")).json()["digest"] for s in servers}
            if len(set(digests.values())) == 1:
                break
        assert len(set(digests.values())) == 1, digests
    except Exception:
        print_outputs(servers)
        raise
    finally:
        stop_all(publisher, subscribers, servers)
        redis.close()

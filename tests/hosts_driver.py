"""The clients' host of tests/integration/test_hosts.py: subscribers and a publisher, run in its namespace.

``python -m tests.hosts_driver <address>... --port P --per-host N``. It reads commands on stdin,
one per line, and answers each with one line of JSON on stdout:

``start``
    Make a public topic and N clients per server host, subscribe them, open their streams (each
    to its own host), start publishing 1, 2, 3, … round-robin through the hosts; answer once
    every stream has its first message.
``check <name>``
    Wait until a message published now reached every subscriber, stop publishing, let the last
    ones arrive, check every subscriber's messages (every applied message once, in order, or an
    init message with a ``reset`` element in its gap), answer the figures, publish again.
``connections``
    Answer how many connections the subscribers have opened so far.
``stop``
    Stop and answer the totals.

A subscriber whose connection is silent for 5 s (heartbeats come every second) drops it and
reconnects to the next host with ``Last-Event-ID``, as a client that watches heartbeats does.
"""

from __future__ import annotations

import json
import selectors
import socket
import sys
import time

import httpx

from tests.integration.test_faults import Publisher, Subscriber, Subscribers, check

SILENT = 5.0


class Host:
    """A server on another host, as the fault suite's classes use one."""

    def __init__(self, address: str, port: int) -> None:
        self.address = address
        self.port = port

    def url(self, path: str) -> str:
        return f"http://{self.address}:{self.port}{path}"


class Watched(Subscribers):
    """The fault suite's subscribers, connecting to other hosts and dropping silent connections."""

    def __init__(self, hosts: list[Host], clients: list[str]) -> None:
        super().__init__(hosts, clients)  # type: ignore[arg-type]
        self.heard: dict[str, float] = {}

    def run(self) -> None:
        while not self.stop.is_set():
            now = time.monotonic()
            for sub in self.subs:
                if sub.sock is None and now >= sub.reconnect_at:
                    self._connect(sub)
                elif sub.sock is not None and now - self.heard.get(sub.client, now) > SILENT:
                    self._drop(sub)
            for key, _ in self.selector.select(0.05):
                self.heard[key.data.client] = time.monotonic()
                self._read(key.data)

    def _connect(self, sub: Subscriber) -> None:
        host = self.servers[sub.server_index % len(self.servers)]
        try:
            sock = socket.create_connection((host.address, host.port), timeout=2)  # type: ignore[attr-defined]
        except OSError:
            sub.server_index += 1
            sub.reconnect_at = time.monotonic() + 0.5
            return
        headers = f"Last-Event-ID: {sub.last_id}\r\n" if sub.last_id is not None else ""
        sock.sendall(f"GET /event?client_id={sub.client} HTTP/1.1\r\nHost: x\r\n{headers}\r\n".encode())
        sock.setblocking(False)
        sub.sock, sub.buffer, sub.body, sub.head_done, sub.fields = sock, b"", b"", False, {}
        sub.connections += 1
        self.heard[sub.client] = time.monotonic()
        self.selector.register(sock, selectors.EVENT_READ, sub)


def answer(value: object) -> None:
    print(json.dumps(value), flush=True)


def main() -> None:
    args = sys.argv[1:]
    port = int(args[args.index("--port") + 1])
    per_host = int(args[args.index("--per-host") + 1])
    hosts = [Host(a, port) for a in args[: args.index("--port")]]
    http = httpx.Client(timeout=30)
    subscribers: Watched | None = None
    publisher: Publisher | None = None
    window = {"first": 1}
    for line in sys.stdin:
        command, _, name = line.strip().partition(" ")
        if command == "start":
            deadline = time.monotonic() + 60
            for host in hosts:  # every server up (each host's gunicorn loads the app in its own time)
                while time.monotonic() < deadline:
                    try:
                        if http.get(host.url("/test/ready"), timeout=2).status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    time.sleep(0.2)
            topic = http.get(hosts[0].url("/add/topic/public/")).json()["topic_id"]
            clients = []
            for i in range(per_host * len(hosts)):
                client = http.get(hosts[i % len(hosts)].url("/add/user")).json()["client_id"]
                assert http.get(hosts[0].url("/sub"), params={"client_id": client, "topic": topic}).status_code == 200
                clients.append(client)
            subscribers = Watched(hosts, clients)
            subscribers.start()
            deadline = time.monotonic() + 60
            while not all(s.events for s in subscribers.subs) and time.monotonic() < deadline:
                time.sleep(0.1)
            # A host that does not answer (cut off) holds one publish for 2 s at most: its outcome is
            # "unknown" then, and the next one goes to the next host.
            publisher = Publisher(hosts, topic, timeout=2)  # type: ignore[arg-type]
            publisher.start()
            publisher.running.set()
            answer({"ready": all(s.events for s in subscribers.subs), "clients": len(clients)})
        elif command == "check":
            assert subscribers is not None and publisher is not None
            answer(settle(name, subscribers, publisher, window))
        elif command == "connections":
            assert subscribers is not None
            answer({"connections": sum(s.connections for s in subscribers.subs)})
        elif command == "stop":
            if publisher is not None:
                publisher.stop.set()
            if subscribers is not None:
                subscribers.close()
            answer({"stopped": True})
            return


def settle(name: str, subscribers: Watched, publisher: Publisher, window: dict[str, int]) -> dict[str, object]:
    """The figures of one fault, once every subscriber has caught up (bounded: 90 s)."""
    started = time.monotonic()
    since = publisher.number

    def recovered(after: int) -> bool:
        fresh = [n for n in publisher.applied() if n > after]
        if not fresh:
            return False
        for events in subscribers.received():
            newest = max((u["data"] for _, _, m in events for u in m["updates"] or []), default=0)
            if newest < fresh[0]:
                return False
        return True

    deadline = time.monotonic() + 90
    while not recovered(since) and time.monotonic() < deadline:
        time.sleep(0.1)
    recovery = time.monotonic() - started
    publisher.running.clear()
    publisher.idle.wait(60)
    deadline = time.monotonic() + 30
    while not recovered(max(publisher.applied(), default=0) - 1) and time.monotonic() < deadline:
        time.sleep(0.1)
    outcomes = dict(publisher.outcomes)
    silent = resyncs = 0
    problems: list[str] = []
    for events in subscribers.received():
        s, r, p = check(events, outcomes, publisher.number)
        silent += s
        resyncs += r
        problems += p[:2]
    mine = {n: o for n, o in outcomes.items() if n >= window["first"]}
    window["first"] = publisher.number + 1
    publisher.running.set()
    return {
        "fault": name,
        "publishes": len(mine),
        "applied": sum(o == "applied" for o in mine.values()),
        "not_applied": sum(o == "not applied" for o in mine.values()),
        "unknown": sum(o == "unknown" for o in mine.values()),
        "silent_losses": silent,
        "resyncs_so_far": resyncs,
        "connections": sum(s.connections for s in subscribers.subs),
        "recovery_s": round(recovery, 2),
        "problems": problems[:10],
    }


if __name__ == "__main__":
    main()

"""A reconnect storm in a room with live presence: messages sent and CPU, against the same storm without presence.

    python3 -m bench.presence_storm [--clients 2000] [--users 1000] [--waves 3] [--backend local|memory]

``--clients`` subscribers of one topic (tabs of ``--users`` people) all hold a stream. Then every
stream ends at once (a deploy) and the clients reconnect, resuming where they stopped, in
``--waves`` waves a second apart (browsers retry with a spread). The run ends when every
stream has caught up with the last report. The same storm runs twice, alternating, on a topic
with live presence and on one without.

For each it prints the presence messages every stream received over the storm (their sum, and
the most one stream got), what reporting every join and leave to every subscriber would have
sent (2 x clients x clients), and the process time of the storm (attaching, detaching, the
reports, reading every stream), in milliseconds and in microseconds per reconnect. One JSON
line per storm goes to stdout, with the machine's steal time over it.
"""

from __future__ import annotations

import argparse
import json
import time

from bench import steal
from pubsubsse import SSEPubSubService

#: The last event id each stream sent, by client index: where its reconnection resumes.
LAST_IDS: dict[int, str] = {}


def presence_items(stream, counts: list[int], index: int) -> None:
    """Read what ``stream`` has; count the presence elements in it and keep its last event id."""
    while chunk := stream.read(timeout=0):
        counts[index] += chunk.count(b'"type":"presence"')
        at = chunk.rfind(b"id: ")
        if at >= 0 and (at == 0 or chunk[at - 1 : at] == b"\n"):
            LAST_IDS[index] = chunk[at + 4 : chunk.index(b"\n", at)].decode()


def make_service(backend: str) -> SSEPubSubService:
    if backend == "memory":
        from pubsubsse.backends.log import LogBackend
        from pubsubsse.backends.memory import MemoryTransport

        return SSEPubSubService(backend=LogBackend(MemoryTransport()), client_timeout=None, max_clients=100_000)
    return SSEPubSubService(client_timeout=None, max_clients=100_000)


def storm(args: argparse.Namespace, presence: bool) -> dict[str, object]:
    service = make_service(args.backend)
    try:
        LAST_IDS.clear()
        topic = service.public_topic("room", presence=presence)
        clients = [service.new_client(user=f"user-{n % args.users}") for n in range(args.clients)]
        for client in clients:
            client.sub(topic)
        streams = [client.stream() for client in clients]
        settle(service, topic, streams, [0] * len(streams), presence)
        counts = [0] * len(streams)
        stolen, started_cpu, started = steal(), time.process_time(), time.monotonic()
        for stream in streams:  # the deploy: every connection ends
            stream.close()
        wave = -(-len(clients) // args.waves)
        for start in range(0, len(clients), wave):
            time.sleep(1.0) if start else None  # the browsers' retry spread
            for n in range(start, min(start + wave, len(clients))):
                streams[n] = clients[n].stream(last_event_id=LAST_IDS.get(n, "0"))
            for n in range(0, min(start + wave, len(clients))):
                presence_items(streams[n], counts, n)
        settle(service, topic, streams, counts, presence)
        cpu = time.process_time() - started_cpu
        return {
            "bench": "presence_storm",
            "backend": args.backend,
            "presence": presence,
            "clients": args.clients,
            "users": args.users,
            "waves": args.waves,
            "presence_messages": sum(counts),
            "most_per_stream": max(counts),
            "one_per_change_would_send": 2 * args.clients * args.clients if presence else 0,
            "cpu_ms": round(cpu * 1000, 1),
            "cpu_us_per_reconnect": round(cpu * 1e6 / args.clients, 1),
            "wall_s": round(time.monotonic() - started, 2),
            "steal_ticks": steal() - stolen,
        }
    finally:
        service.shutdown()


def settle(service, topic, streams, counts: list[int], presence: bool) -> None:
    """Wait until the last report is out (nothing left to report), within 30 s; then read every stream."""
    deadline = time.monotonic() + 30
    while presence:
        with service._lock:  # the bench's one look inside: whether a report is still due
            if topic.id not in service._core.presence_dirty:
                break
        if time.monotonic() > deadline:
            raise SystemExit("the reports did not settle within 30 s")
        time.sleep(0.05)
    for n, stream in enumerate(streams):  # after the look: a report made before it is read here
        presence_items(stream, counts, n)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=2000)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--waves", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2, help="storms of each kind, alternating")
    parser.add_argument("--backend", choices=["local", "memory"], default="local")
    args = parser.parse_args()
    for _ in range(args.rounds):
        for presence in (True, False):
            print(json.dumps(storm(args, presence)), flush=True)


if __name__ == "__main__":
    main()

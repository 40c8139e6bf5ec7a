"""Where an idle stream's memory goes, step by step, in one gevent process (issue: W1 memory).

    python3 -m bench.memory [N]

Builds N of each piece an idle stream of ``gunicorn -k gevent`` is made of, one step after the
other, and prints the growth of the process's RSS per item after each step (and, for the steps
that are plain Python objects, what tracemalloc attributes to them). The pieces:

1. a client of the service (``service.new_client()``);
2. its stream, attached and waiting after the init message (``client.stream()``, the first chunk
   read), as the direct-write transport leaves it;
3. a connected socket pair per stream (the server's side and a client's), with a libev read
   watcher on the server's side, as disconnect detection has;
4. one greenlet per stream blocked on a read, as gunicorn's gevent worker has one per open
   request (its stack, copied to the heap while it waits);
5. the WSGI request of each stream: gunicorn's environ dict and parsed request (approximated
   by a dict of the size gunicorn builds).

It measures this process, not a server under load: bench/run.py's W1 measures the real thing.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import gc  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import tracemalloc  # noqa: E402

import gevent  # noqa: E402
import gevent.event  # noqa: E402
import psutil  # noqa: E402
from gevent import socket  # noqa: E402

from pubsubsse import SSEPubSubService  # noqa: E402


def rss() -> int:
    gc.collect()
    return psutil.Process(os.getpid()).memory_info().rss


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10000
    service = SSEPubSubService(client_timeout=None)
    topic = service.public_topic("news")
    steps: list[dict[str, object]] = []
    tracemalloc.start()

    def step(name: str, before_rss: int, before_py: int) -> None:
        after_py = tracemalloc.get_traced_memory()[0]
        after_rss = rss()
        steps.append(
            {
                "step": name,
                "rss_bytes_per_item": round((after_rss - before_rss) / n),
                "python_bytes_per_item": round((after_py - before_py) / n),
            }
        )

    base, py = rss(), tracemalloc.get_traced_memory()[0]
    clients = [service.new_client() for _ in range(n)]
    for client in clients:
        client.sub(topic)
    step("client (subscribed to one topic)", base, py)

    base, py = rss(), tracemalloc.get_traced_memory()[0]
    streams = []
    for client in clients:
        stream = client.stream()
        next(stream)
        streams.append(stream)
    step("stream attached, init sent", base, py)

    base, py = rss(), tracemalloc.get_traced_memory()[0]
    pairs = [socket.socketpair() for _ in range(n)]
    loop = gevent.get_hub().loop
    watchers = []
    for server_side, _ in pairs:
        watcher = loop.io(server_side.fileno(), 1)
        watcher.start(lambda: None)
        watchers.append(watcher)
    step("socket pair + libev read watcher", base, py)

    base, py = rss(), tracemalloc.get_traced_memory()[0]
    release = gevent.event.Event()

    def request_greenlet() -> None:
        environ = {f"HTTP_HEADER_{i}": "x" * 20 for i in range(25)}  # about what gunicorn builds
        release.wait()
        del environ

    greenlets = [gevent.spawn(request_greenlet) for _ in range(n)]
    gevent.sleep(0.1)  # every greenlet runs up to its wait
    step("greenlet blocked in a request, with its environ", base, py)

    tracemalloc.stop()
    total = sum(int(s["rss_bytes_per_item"]) for s in steps)  # type: ignore[call-overload]
    print(json.dumps({"n": n, "steps": steps, "rss_bytes_per_stream_total": total}, indent=2))
    release.set()
    gevent.joinall(greenlets)
    for watcher in watchers:
        watcher.stop()
    for a, b in pairs:
        a.close()
        b.close()
    for stream in streams:
        stream.close()
    service.shutdown()


if __name__ == "__main__":
    main()

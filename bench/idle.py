"""Many idle streams in one gevent worker, and a publish that reaches every one of them.

    python3 -m bench.idle [N]          # default 50,000

Starts the benchmark app (``bench/apps/pubsubsse_app.py``) under ``gunicorn -k gevent -w 1``
with the file descriptor limit raised, registers N clients on one topic, opens N SSE
connections to it (from several loopback source addresses: one address has about 28,000
ephemeral ports), waits until the server counts N receiving clients, reads the worker's RSS,
then publishes one message and counts the connections that received it. Prints one JSON line.

The settings it needs are those a deployment needs: ``ulimit -n`` above the streams (this
process raises its own limit and the server's, which takes root beyond the hard limit), and
nothing else: ``--worker-connections`` counts requests in progress, and an idle stream under the
gevent worker holds none (see :mod:`pubsubsse.servers._gunicorn_gevent`).
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import selectors
import socket
import subprocess
import sys
import time
import urllib.request

import psutil

from .run import ROOT, free_port

PER_ADDRESS = 25000


def raise_fd_limit(n: int) -> None:
    """Let this process and the server (which inherits the limit) hold ``n`` streams each."""
    want = n + 500
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), max(hard, want)))
    except (ValueError, OSError):
        raise SystemExit(
            f"{n} streams need {want} file descriptors per process; the hard limit here is {hard} and "
            "cannot be raised (it takes CAP_SYS_RESOURCE): run fewer, or where the limit is higher"
        ) from None


def call(port: int, path: str, method: str = "GET", body: bytes | None = None) -> bytes:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method=method)
    with urllib.request.urlopen(request, timeout=120) as answer:
        return bytes(answer.read())


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 50000
    raise_fd_limit(n)
    port = free_port()
    server = subprocess.Popen(
        [
            *(sys.executable, "-m", "gunicorn", "-k", "gevent", "-w", "1", "--backlog", "8192"),
            *("-b", f"127.0.0.1:{port}", "--log-level", "warning", "bench.apps.pubsubsse_app:app"),
        ],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
    )
    conns: list[socket.socket] = []
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                call(port, "/bench/stats")
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        worker = psutil.Process(server.pid).children()[0]
        paths = call(port, f"/bench/setup?n={n}&topics=1", "POST").decode().split("\n")
        rss_clients = worker.memory_info().rss
        selector = selectors.DefaultSelector()
        started = time.monotonic()
        for i, path in enumerate(paths):
            sock = socket.socket()
            sock.bind((f"127.0.0.{1 + i // PER_ADDRESS}", 0))
            sock.connect(("127.0.0.1", port))
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n".encode())
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ, bytearray())
            conns.append(sock)
        deadline = time.monotonic() + 300
        while json.loads(call(port, "/bench/stats"))["receiving"] < n:
            for key, _ in selector.select(0.05):
                with contextlib.suppress(BlockingIOError):
                    key.data.extend(key.fileobj.recv(65536))  # type: ignore[union-attr]
            if time.monotonic() > deadline:
                raise SystemExit("not every stream opened in time")
        opened = time.monotonic() - started
        time.sleep(2)
        rss_streams = worker.memory_info().rss
        for key in selector.get_map().values():
            key.data.clear()
        call(port, "/pub?topic=0", "POST", json.dumps({"hello": "everyone"}).encode())
        received = 0
        deadline = time.monotonic() + 60
        waiting = {key.fileobj for key in selector.get_map().values()}
        while waiting and time.monotonic() < deadline:
            for key, _ in selector.select(0.5):
                try:
                    key.data.extend(key.fileobj.recv(65536))  # type: ignore[union-attr]
                except BlockingIOError:
                    continue
                if key.fileobj in waiting and b'"hello":"everyone"' in key.data:
                    waiting.discard(key.fileobj)
                    received += 1
        print(
            json.dumps(
                {
                    "streams": n,
                    "receiving": json.loads(call(port, "/bench/stats"))["receiving"],
                    "seconds_to_open": round(opened, 1),
                    "kb_per_idle_stream": round((rss_streams - rss_clients) / n / 1024, 2),
                    "worker_rss_mb": round(rss_streams / 2**20, 1),
                    "received_the_publish": received,
                }
            )
        )
    finally:
        for sock in conns:
            sock.close()
        server.terminate()
        server.wait(30)


if __name__ == "__main__":
    main()

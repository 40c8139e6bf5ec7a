"""What one read of the log costs a process at the least, before pubsubsse does anything with it.

    python3 -m bench.read_floor [--messages 500] [--redis redis://127.0.0.1:6379/0] [--out FILE.jsonl]

On a quiet site each publish is one read of the log: the reader thread sleeps, is woken by the
entry, and reads it. ``bench.scaleout`` measures what that costs a process holding no stream
(``us_per_publish``). This benchmark measures the floor under it on the same machine, with no
pubsubsse code: a thread's CPU time (``time.thread_time``) per message while another process sends
one message every 4 ms, for

- ``socketpair``: a thread woken by one byte on a Unix socket pair (the wake-up alone);
- ``tcp_push``: a thread subscribed to a Redis channel on a raw socket, each ``PUBLISH`` pushed to
  it and parsed by hiredis (no request per message: the least a TCP reader can pay);
- ``tcp_xread``: a thread reading a Redis Stream with ``XREAD BLOCK`` on a raw socket, one
  request and one reply per message, parsed by hiredis (the shape of pubsubsse's reader).

Steal (``/proc/stat``) over each measurement is recorded; one JSON line per measurement.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from urllib.parse import urlsplit

from .run import emit, steal_ticks

_GAP = 0.004  # seconds between messages: every message finds the reader asleep


def _timed(reader: Callable[[threading.Event], None], sender: Callable[[], None]) -> tuple[float, float]:
    """Run ``reader`` in a thread while ``sender`` runs; return (reader's CPU seconds, steal %)."""
    spent: list[float] = []
    ready = threading.Event()

    def run() -> None:
        start = time.thread_time()
        reader(ready)
        spent.append(time.thread_time() - start)

    before = steal_ticks()
    thread = threading.Thread(target=run)
    thread.start()
    ready.wait(10)
    sender()
    thread.join(60)
    after = steal_ticks()
    total = after[1] - before[1]
    return spent[0], (100 * (after[0] - before[0]) / total if total else 0.0)


def socketpair(messages: int) -> tuple[float, float]:
    a, b = socket.socketpair()

    def reader(ready: threading.Event) -> None:
        ready.set()
        for _ in range(messages):
            a.recv(16)

    def sender() -> None:
        pid = os.fork()
        if pid == 0:
            for _ in range(messages):
                b.send(b"x")
                time.sleep(_GAP)
            os._exit(0)
        os.waitpid(pid, 0)

    return _timed(reader, sender)


def _redis_sender(url: str, code: str) -> Callable[[], None]:
    script = f"import redis, time\nr = redis.Redis.from_url({url!r})\n{code}"
    return lambda: subprocess.run([sys.executable, "-c", script], check=True)


def _raw(url: str) -> socket.socket:
    parts = urlsplit(url)
    return socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379), timeout=5)


def tcp_push(url: str, messages: int) -> tuple[float, float]:
    import hiredis

    channel = f"bench:floor:{uuid.uuid4().hex}"

    def reader(ready: threading.Event) -> None:
        sock, parser = _raw(url), hiredis.Reader()
        sock.sendall(hiredis.pack_command(("SUBSCRIBE", channel)))
        while parser.gets() is False:
            parser.feed(sock.recv(1 << 16))
        ready.set()
        got = 0
        while got < messages:
            parser.feed(sock.recv(1 << 16))
            while parser.gets() is not False:
                got += 1
        sock.close()

    code = f"for i in range({messages}):\n    r.publish({channel!r}, b'x' * 200); time.sleep({_GAP})"
    return _timed(reader, _redis_sender(url, code))


def tcp_xread(url: str, messages: int) -> tuple[float, float]:
    import hiredis

    key = f"bench:floor:{uuid.uuid4().hex}"

    def reader(ready: threading.Event) -> None:
        sock, parser = _raw(url), hiredis.Reader()
        last, got = b"0-0", 0
        ready.set()
        while got < messages:
            sock.sendall(hiredis.pack_command(("XREAD", "COUNT", "1000", "BLOCK", "250", "STREAMS", key, last)))
            reply = False
            while reply is False:
                parser.feed(sock.recv(1 << 16))
                reply = parser.gets()
            if reply:
                entries = reply[0][1]
                got += len(entries)
                last = entries[-1][0]
        sock.close()

    code = f"for i in range({messages}):\n    r.xadd({key!r}, {{'e': b'x' * 200}}); time.sleep({_GAP})"
    code += f"\nr.delete({key!r})"
    return _timed(reader, _redis_sender(url, code))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=500)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--out", help="append the JSON lines to this file too")
    args = parser.parse_args()
    runs = {
        "socketpair": lambda: socketpair(args.messages),
        "tcp_push": lambda: tcp_push(args.redis, args.messages),
        "tcp_xread": lambda: tcp_xread(args.redis, args.messages),
    }
    for name, run in runs.items():
        cpu, steal = run()
        emit(
            {
                "bench": "read_floor",
                "reader": name,
                "messages": args.messages,
                "us_per_message": round(cpu / args.messages * 1e6, 1),
                "steal_pct": round(steal, 3),
                "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
            },
            args.out,
        )


if __name__ == "__main__":
    main()

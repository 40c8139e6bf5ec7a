"""Publishes timestamped messages to a server under test, closed-loop or at a fixed rate.

Closed loop: the publisher subscribes to topic 0 itself and keeps at most WINDOW of its own
topic-0 messages in flight, so the server is saturated without unbounded queues; each connection
sends PIPELINE requests at a time (HTTP/1.1 pipelining) before reading their responses, so that
this Python client is not what limits a fast server. Open loop: messages go out at RATE per
second regardless, one request at a time. Every message carries "ts" (publish time, ns
since the epoch) and "seq"; the load generator turns "ts" into latency.
"""

from __future__ import annotations

import argparse
import json
import re
import socket
import threading
import time

SEQ = re.compile(rb'"seq":\s*(\d+)')


class Tracker(threading.Thread):
    """Reads the publisher's own subscription and remembers the highest seq seen."""

    def __init__(self, port: int, path: str) -> None:
        super().__init__(daemon=True)
        self.seen = -1
        self.cond = threading.Condition()
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n".encode())

    def run(self) -> None:
        tail = b""
        while True:
            data = self.sock.recv(1 << 16)
            if not data:
                return
            tail = (tail + data)[-4096:]
            found = SEQ.findall(tail)
            if found:
                with self.cond:
                    self.seen = max(self.seen, int(found[-1]))
                    self.cond.notify_all()


def read_reply(replies) -> bool:
    """Read one HTTP/1.1 response (Content-Length or chunked body); return whether the server keeps the connection."""
    status = int(replies.readline().split()[1])
    length, chunked, keep = 0, False, True
    while (line := replies.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
        elif name == b"connection" and b"close" in value.lower():
            keep = False
    if chunked:
        while (size := int(replies.readline().split(b";")[0], 16)) > 0:
            replies.read(size + 2)
        replies.readline()
    else:
        replies.read(length)
    if status >= 300:
        raise SystemExit(f"publish failed: {status}")
    return keep


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--topics", type=int, default=1)
    parser.add_argument("--duration", type=float, required=True)
    parser.add_argument("--rate", type=float, help="open loop: messages per second")
    parser.add_argument("--track", help="closed loop: a subscriber path on topic 0")
    parser.add_argument("--window", type=int, default=8)
    parser.add_argument("--pad", type=int, default=100)
    parser.add_argument("--connections", type=int, default=4, help="concurrent publishing connections")
    parser.add_argument("--pipeline", type=int, default=16, help="closed loop: requests sent before reading replies")
    args = parser.parse_args()

    tracker = None
    if args.track:
        tracker = Tracker(args.port, args.track)
        tracker.start()
    pad = "x" * args.pad
    start = time.monotonic()
    end = start + args.duration
    lock = threading.Lock()
    state = {"seq": 0}
    connections = 1 if args.rate else args.connections

    def publish_loop() -> None:
        conn = socket.create_connection(("127.0.0.1", args.port), timeout=30)
        replies = conn.makefile("rb")
        # Never more in one batch than the window allows in flight: the batch waits for its last.
        batch = 1 if args.rate else min(args.pipeline, args.window * args.topics)
        while time.monotonic() < end:
            with lock:
                first = state["seq"]
                state["seq"] += batch
            last = first + batch - 1
            if tracker is not None:
                with tracker.cond:
                    tracker.cond.wait_for(lambda s=last: s - tracker.seen <= args.window * args.topics, timeout=1.0)
            elif args.rate:
                delay = start + first / args.rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            requests = []
            for seq in range(first, last + 1):
                body = json.dumps({"ts": time.time_ns(), "seq": seq, "pad": pad}).encode()
                requests.append(
                    b"POST /pub?topic=%d HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (seq % args.topics, len(body), body)
                )
            conn.sendall(b"".join(requests))
            if not all([read_reply(replies) for _ in requests]):  # every reply read before closing
                raise SystemExit("the server closed a publishing connection (raise its keep-alive request limit)")

    threads = [threading.Thread(target=publish_loop, daemon=True) for _ in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seq = state["seq"]
    print(json.dumps({"published": seq, "seconds": round(time.monotonic() - start, 3)}))


if __name__ == "__main__":
    main()

"""What the library's own fan-out costs, without a server or a network: publish, then direct writes.

    python3 -m bench.fanout [--streams 1000] [--topics 1] [--rounds 200]

Attaches ``--streams`` streams (spread over ``--topics`` topics), parks them with a direct writer
whose socket is ``/dev/null``, publishes one message per topic per round and runs the flush, as
the gevent worker's loop does. Prints microseconds of process time per delivery (the system call
to ``/dev/null`` included). For a count that does not depend on the machine's load, run it
under callgrind twice and subtract (setup cancels out)::

    valgrind --tool=callgrind --callgrind-out-file=/dev/null python3 -m bench.fanout --rounds 0
    valgrind --tool=callgrind --callgrind-out-file=/dev/null python3 -m bench.fanout --rounds 20

(instructions per delivery = difference / (20 * streams)).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any, Callable

from pubsubsse import SSEPubSubService


class NullWriter:
    """The DirectWriter protocol over ``/dev/null``, framed as HTTP/1.1 chunks like gunicorn's."""

    def __init__(self) -> None:
        self.fd = os.open(os.devnull, os.O_WRONLY)
        self.callbacks: list[Callable[[], None]] = []

    def frame(self, chunk: bytes) -> bytes:
        return b"%X\r\n%s\r\n" % (len(chunk), chunk)

    def send_nowait(self, data: bytes) -> int:
        return os.write(self.fd, data)

    def call_soon(self, callback: Callable[[], None]) -> None:
        self.callbacks.append(callback)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--topics", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    service = SSEPubSubService(heartbeat=1e6, client_timeout=None)
    topics = [service.new_public_topic() for _ in range(args.topics)]
    writer = NullWriter()
    streams: list[Any] = []
    for i in range(args.streams):
        client = service.new_client()
        client.sub(topics[i % args.topics])
        stream = client.stream()
        stream.read(timeout=0)
        stream.write_directly(writer)
        stream.reader_waiting = True  # as a waiting reader leaves it
        streams.append(stream)
    data = {"ts": 1, "seq": 0, "pad": "x" * 100}
    started = time.process_time()
    for _ in range(args.rounds):
        for topic in topics:
            topic.pub(data)
        while writer.callbacks:
            writer.callbacks.pop()()
    spent = time.process_time() - started
    deliveries = args.rounds * args.streams
    print(
        json.dumps(
            {
                "streams": args.streams,
                "topics": args.topics,
                "deliveries": deliveries,
                "us_per_delivery": round(spent / deliveries * 1e6, 3) if deliveries else None,
            }
        )
    )


if __name__ == "__main__":
    main()

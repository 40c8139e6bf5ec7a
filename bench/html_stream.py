"""What an HTML stream (``format=html`` or ``turbo``) costs per delivery, against a JSON stream.

    python3 -m bench.html_stream [--streams 1000] [--rounds 100] [--bytes 400]

Attaches ``--streams`` streams of one topic, half read as JSON streams and half as HTML streams
(each a client's stream re-framed, as ``/event?format=html`` serves it), publishes one fragment
of about ``--bytes`` bytes of HTML per round and reads every stream, alternating which kind is
read first. Prints microseconds of process time per delivery for each kind and their difference:
the re-framing (a JSON decode and a re-encode per subscriber) that an HTML stream adds. The
rendering is not in it: it happens once per publish, in the publisher. One JSON line per run
goes to stdout, with the machine's steal time over the run.
"""

from __future__ import annotations

import argparse
import json
import time

from bench import steal
from pubsubsse import SSEPubSubService
from pubsubsse.html import fragment
from pubsubsse.streams._html import html_stream


def drain(stream) -> int:
    read = 0
    while chunk := stream.read(timeout=0):
        read += len(chunk)
    return read


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--bytes", type=int, default=400)
    args = parser.parse_args()
    service = SSEPubSubService(client_timeout=None, queue_size=args.rounds + 10)
    topic = service.public_topic("todos")
    kinds: dict[str, list] = {"json": [], "html": []}
    for n in range(args.streams):
        client = service.new_client()
        client.sub(topic)
        stream = client.stream()
        if n % 2:
            stream = html_stream(stream)
            kinds["html"].append(stream)
        else:
            kinds["json"].append(stream)
    for streams in kinds.values():
        for stream in streams:
            drain(stream)
    html = '<li id="todo_7" data-done="no"><span>' + "x" * max(0, args.bytes - 60) + "</span></li>"
    cpu = {"json": 0.0, "html": 0.0}
    stolen = steal()
    for round_ in range(args.rounds):
        topic.pub(fragment(html, "todos"))
        order = ["json", "html"] if round_ % 2 else ["html", "json"]
        for kind in order:
            started = time.process_time()
            for stream in kinds[kind]:
                drain(stream)
            cpu[kind] += time.process_time() - started
    deliveries = args.rounds * (args.streams // 2)
    result = {
        "bench": "html_stream",
        "streams": args.streams,
        "rounds": args.rounds,
        "html_bytes": len(html),
        "json_us_per_delivery": round(cpu["json"] / deliveries * 1e6, 2),
        "html_us_per_delivery": round(cpu["html"] / deliveries * 1e6, 2),
        "steal_ticks": steal() - stolen,
    }
    result["added_us"] = round(result["html_us_per_delivery"] - result["json_us_per_delivery"], 2)
    print(json.dumps(result))
    service.shutdown()


if __name__ == "__main__":
    main()

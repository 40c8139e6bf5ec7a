"""What a subscription from the start costs: memory per page, CPU per subscription, against a plain one.

    python3 -m bench.history [--tokens 1000] [--pages 1000]

A job's topic keeps ``--tokens`` published tokens (about 60 bytes each, as an LLM's output
would be). Then ``--pages`` pages open while the job runs: each a client that subscribes from
the start (``since="start"``), with a stream attached that is read, and one more token is
published after each page (so that no two pages get the same history). The same runs with
plain subscriptions. Prints the process time per subscription (the message built and sent),
the memory the pages hold after their streams were read (tracemalloc), and the topic's
``history_bytes``. One JSON line per kind goes to stdout, with the machine's steal time.
"""

from __future__ import annotations

import argparse
import json
import time
import tracemalloc

from bench import steal
from pubsubsse import SSEPubSubService


def run(tokens: int, pages: int, since: str | None) -> dict[str, object]:
    service = SSEPubSubService(client_timeout=None, max_clients=pages + 10)
    job = service.public_topic("job", history=tokens + pages + 10)
    for n in range(tokens):
        job.pub({"n": n, "token": f"token-{n:05d} of an answer "})
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    stolen, cpu, read = steal(), 0.0, 0
    clients = []
    for n in range(pages):
        client = service.new_client()
        stream = client.stream()
        started = time.process_time()
        client.sub(job, since=since)
        cpu += time.process_time() - started
        while chunk := stream.read(timeout=0):
            read += len(chunk)
        stream.close()
        clients.append(client)
        job.pub({"n": tokens + n, "token": "more "})
    held = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    stats = service.stats()
    service.shutdown()
    return {
        "bench": "history",
        "since": since or "now",
        "tokens": tokens,
        "pages": pages,
        "cpu_us_per_subscription": round(cpu * 1e6 / pages, 1),
        "bytes_sent_per_page": read // pages,
        "memory_per_page_bytes": held // pages,
        "history_bytes": stats["history_bytes"],
        "steal_ticks": steal() - stolen,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=1000)
    parser.add_argument("--pages", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    for _ in range(args.rounds):
        for since in ("start", None):
            print(json.dumps(run(args.tokens, args.pages, since)), flush=True)


if __name__ == "__main__":
    main()

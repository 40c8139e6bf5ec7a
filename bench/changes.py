"""What a storm of changes to the control state costs the processes that follow the log.

    python3 -m bench.changes [--followers 6] [--threads 8] [--changes 4000] [--repeat 3]
                             [--out FILE.jsonl]

One redis-server; this process makes changes from ``--threads`` threads at once (a new client,
then its subscription to a topic: two changes each, as a reconnect storm makes them), while
``--followers`` other processes follow the same log and hold no stream (``bench.scaleout``'s
observers). Reported per run: ``changes_per_second`` (made here, each waiting for its own
apply), ``follower_us_per_change`` (each follower's CPU time, every thread's, from
``schedstat``, over the storm, divided by the changes) and steal. One JSON line per run.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import time
import uuid

from pubsubsse import SSEPubSubService
from pubsubsse.backends import RedisBackend

from .run import commit, emit, steal_pct, steal_ticks
from .scaleout import SLOW_OK, Observer


def measure(url: str, followers: int, threads: int, changes: int) -> dict:
    key = f"bench:{uuid.uuid4()}"
    maker = SSEPubSubService(backend=RedisBackend(url, key=key, **SLOW_OK), client_timeout=None)
    observers = [Observer(url, key) for _ in range(followers)]
    try:
        topic = maker.public_topic("storm")
        before = [observer.ask("before") for observer in observers]
        steal_before = steal_ticks()
        started = time.monotonic()

        def change(_: int) -> None:
            maker.new_client().sub(topic)

        with concurrent.futures.ThreadPoolExecutor(threads) as pool:
            list(pool.map(change, range(changes // 2)))
        elapsed = time.monotonic() - started
        after = [observer.ask("after") for observer in observers]  # each caught up first
        steal_after = steal_ticks()
    finally:
        for observer in observers:
            observer.stop()
        maker.shutdown()
    made = changes // 2 * 2
    return {
        "bench": "changes",
        "followers": followers,
        "threads": threads,
        "changes": made,
        "changes_per_second": round(made / elapsed),
        "follower_us_per_change": [round((a["cpu"] - b["cpu_resumed"]) / made * 1e6, 1) for a, b in zip(after, before)],
        "steal_pct": steal_pct(steal_before, steal_after),
        "commit": commit(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--followers", type=int, default=6)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--changes", type=int, default=4000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", help="append the JSON lines to this file too")
    args = parser.parse_args()
    from tests.redis_server import RedisServer

    redis = RedisServer()
    try:
        for _ in range(args.repeat):
            emit(measure(redis.url, args.followers, args.threads, args.changes), args.out)
    finally:
        redis.close()
    os._exit(0)


if __name__ == "__main__":
    main()

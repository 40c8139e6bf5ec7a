"""What a publish costs: the light Publisher on Redis, and named against random-id topics in-process.

    python3 -m bench.publishers [--publishes 2000] [--subscribers 1000] [--repeat 3]

1. ``Publisher.publish`` against a private redis-server that one service replica follows (so the
   log is live): latency per call (p50, p99) and Redis commands per publish (from INFO, so the
   commands a script runs count too), next to ``topic.pub`` through a service replica of its own
   (which returns once the log holds the publish), and ``Publisher.publish_many`` with batches
   of 100 (latency per call, and microseconds and Redis commands per message).
2. In-process, ``topic.pub`` to 1,000 subscribers of a named topic (``public_topic("orders")``)
   and of a random-id topic (``new_public_topic()``): microseconds per publish. No subscriber has
   a stream here, so this is also what every process of a shared service pays per publish for
   the subscribers it does not hold (``--subscribers`` sets how many).

Prints one JSON line per measurement.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import uuid

import redis as redis_py

from pubsubsse import Publisher, SSEPubSubService
from pubsubsse.backends import RedisBackend
from tests.redis_server import RedisServer


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 3),
        "p99_ms": round(ordered[int(len(ordered) * 0.99) - 1] * 1000, 3),
    }


def commands(client: redis_py.Redis) -> dict[str, int]:
    stats = client.info("commandstats")
    out = {name.removeprefix("cmdstat_"): int(value["calls"]) for name, value in stats.items()}
    out["total"] = int(client.info("stats")["total_commands_processed"])
    return out


def redis_publish(publishes: int) -> list[dict]:
    redis = RedisServer()
    key = f"bench:{uuid.uuid4()}"
    web = SSEPubSubService(backend=RedisBackend(redis.url, key=key), client_timeout=None)
    raw = redis_py.Redis.from_url(redis.url)
    try:
        web.new_client().sub(web.public_topic("orders"))
        results = []
        publisher = Publisher(redis.url, redis_key=key)
        publisher.publish("orders", 0)  # connected, script loaded
        sender = SSEPubSubService(backend=RedisBackend(redis.url, key=key), client_timeout=None)
        topic = sender.public_topic("orders")
        topic.pub(0)
        batch = 100
        for name, publish, per_call in [
            ("Publisher.publish", lambda n: publisher.publish("orders", n), 1),
            ("replica topic.pub", topic.pub, 1),
            (
                f"Publisher.publish_many, {batch} per call",
                lambda n: publisher.publish_many([("orders", n + i) for i in range(batch)]),
                batch,
            ),
        ]:
            web.sync()
            before = commands(raw)
            samples = []
            started_all = time.perf_counter()
            for n in range(0, publishes, per_call):
                started = time.perf_counter()
                publish(n)
                samples.append(time.perf_counter() - started)
            us_per_message = (time.perf_counter() - started_all) / publishes * 1e6
            web.sync()  # the replica's reads of these publishes count too
            after = commands(raw)
            per = {
                k: round((after.get(k, 0) - before.get(k, 0)) / publishes, 2)
                for k in ("evalsha", "xadd", "xread", "total")
            }
            results.append(
                {
                    "what": name,
                    "publishes": publishes,
                    **percentiles(samples),
                    "us_per_message": round(us_per_message, 1),
                    "redis_commands_per_publish": per,
                }
            )
        publisher.close()
        sender.shutdown()
        return results
    finally:
        web.shutdown()
        redis.close()


def in_process(subscribers: int, publishes: int, rounds: int = 5) -> list[dict]:
    """Both kinds of topic, measured in alternation over several rounds: the medians."""
    topics = {}
    for kind in ("named", "random id"):
        service = SSEPubSubService(client_timeout=None, replay_size=10)
        service._serving = True  # no "nobody can receive it" warning: this is a measurement
        topic = service.public_topic("orders") if kind == "named" else service.new_public_topic()
        for _ in range(subscribers):
            service.new_client().sub(topic)
        topics[kind] = topic
    data = {"order": 7, "status": "shipped"}
    timings: dict[str, list[float]] = {kind: [] for kind in topics}
    for _ in range(rounds):
        for kind, topic in topics.items():
            started = time.perf_counter()
            for _ in range(publishes):
                topic.pub(data)
            timings[kind].append((time.perf_counter() - started) / publishes)
    return [
        {
            "what": f"in-process pub, {kind} topic",
            "subscribers": subscribers,
            "us_per_publish_median": round(statistics.median(times) * 1e6, 1),
            "us_per_publish_rounds": [round(t * 1e6, 1) for t in times],
        }
        for kind, times in timings.items()
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--publishes", type=int, default=2000)
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    for repeat in range(args.repeat):
        for result in redis_publish(args.publishes) + in_process(args.subscribers, args.publishes // 4):
            print(json.dumps({**result, "repeat": repeat}), flush=True)


if __name__ == "__main__":
    main()

"""What a publish costs: the light Publisher on Redis, and named against random-id topics in-process.

    python3 -m bench.publishers [--publishes 2000] [--subscribers 1000] [--repeat 3]

1. ``Publisher.publish`` against a private redis-server that one service replica follows (so the
   log is live): latency per call (p50, p99) and Redis commands per publish (from INFO, so the
   commands a script runs count too), next to ``topic.pub`` through a service replica of its own
   (which waits until its own process has applied the publish).
2. In-process, ``topic.pub`` to 1,000 subscribers of a named topic (``public_topic("orders")``)
   and of a random-id topic (``new_public_topic()``): microseconds per publish.

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
    web = SSEPubSubService(redis_url=redis.url, redis_key=key, client_timeout=None)
    raw = redis_py.Redis.from_url(redis.url)
    try:
        web.new_client().sub(web.public_topic("orders"))
        results = []
        publisher = Publisher(redis.url, redis_key=key)
        publisher.publish("orders", 0)  # connected, script loaded
        sender = SSEPubSubService(redis_url=redis.url, redis_key=key, client_timeout=None)
        topic = sender.public_topic("orders")
        topic.pub(0)
        for name, publish in [
            ("Publisher.publish", lambda n: publisher.publish("orders", n)),
            ("replica topic.pub", topic.pub),
        ]:
            web.sync()
            before = commands(raw)
            samples = []
            for n in range(publishes):
                started = time.perf_counter()
                publish(n)
                samples.append(time.perf_counter() - started)
            after = commands(raw)
            per = {
                k: round((after.get(k, 0) - before.get(k, 0)) / publishes, 2)
                for k in ("evalsha", "xadd", "xread", "total")
            }
            results.append(
                {"what": name, "publishes": publishes, **percentiles(samples), "redis_commands_per_publish": per}
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

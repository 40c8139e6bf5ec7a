"""What a process of a shared service pays for streams it does not hold.

    python3 -m bench.scaleout [--processes 1 2 4 8] [--subscribers 1000 20000 100000]
                              [--publishes 1000] [--out FILE.jsonl]

One redis-server; one *holder* process (this one) makes S clients, subscribes them all to one
topic and attaches a stream for each of them here (``client.stream()``, no HTTP); P - 1
*observer* processes follow the same log and hold no stream. Then the holder publishes to the
topic one publish at a time, then four times as many in batches of 100 (``Publisher.publish_many``,
``us_per_publish_batched``: a busy site, where each read of the log brings many entries), and
each observer reports:

- ``us_per_publish``: its CPU time (every thread's, from ``schedstat``) while it applied the publishes,
  divided by their number: what a publish to S subscribers held elsewhere costs it;
- ``idle_us_per_second``: its CPU time per second over a window as long with no publish (its
  timer, reports, reads of an idle log), and ``us_per_publish_net``: ``us_per_publish`` less
  that (at 100,000 subscribers the holder publishes slowly, so the window is long);
- ``bytes_per_client``: its RSS growth since its service was up (before any client), divided by
  S, once the clients exist and again after the publishes: what a client held elsewhere costs
  it in memory (RSS: at 1,000 clients the allocator's steps are a large share).

With P = 1 there is no observer: the holder's own numbers are reported (what S streams held here
cost). Steal (``/proc/stat``) over each measurement is recorded; one JSON line per measurement.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import gc
import json
import os
import subprocess
import sys
import time
import uuid

import psutil

from pubsubsse import Publisher, SSEPubSubService
from pubsubsse.backends import RedisBackend

from .run import commit, emit, steal_pct, steal_ticks

#: A replica that takes 100 ms per publish (100,000 subscribers, before positions) is slow, not gone.
#: No snapshot while it measures: a snapshot's cost (one process exports the whole state every
#: ``snapshot_every`` entries) is bench.snapshot's subject, and would land in one observer's window.
SLOW_OK: dict = {"timeout": 30.0, "outcome_timeout": 600.0, "alive": 600.0, "snapshot_every": 10**9}


def cpu_seconds(pid: int | None = None) -> float:
    """Return the CPU time of every thread of a process, from ``schedstat`` (nanoseconds, not ticks)."""
    base = f"/proc/{pid or os.getpid()}/task"
    total = 0
    for task in os.listdir(base):
        try:
            with open(f"{base}/{task}/schedstat") as stat:
                total += int(stat.read().split()[0])
        except (OSError, ValueError, IndexError):
            continue  # a thread that ended meanwhile
    return total / 1e9


def observe(url: str, key: str) -> None:
    """An observer: follow the log, hold nothing, answer the holder's requests on stdin."""
    process = psutil.Process()
    service = SSEPubSubService(backend=RedisBackend(url, key=key, **SLOW_OK), client_timeout=None)
    service.backend.sync()
    for line in sys.stdin:
        command = line.strip()
        service.backend.sync()
        ended = cpu_seconds()  # the window before ends here; what follows is the bench's own work
        gc.collect()
        answer = {
            "command": command,
            "cpu": ended,
            "rss": process.memory_info().rss,
            "clients": len(service._core.clients),
            "cpu_resumed": cpu_seconds(),  # the next window starts here
        }
        print(json.dumps(answer), flush=True)
        if command == "stop":
            break
    service.shutdown()


class Observer:
    def __init__(self, url: str, key: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.scaleout", "--observe", url, key],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def ask(self, command: str) -> dict:
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("an observer ended")
        return dict(json.loads(line))

    def stop(self) -> None:
        with contextlib.suppress(RuntimeError, BrokenPipeError):
            self.ask("stop")
        self.proc.wait(30)


def measure(url: str, processes: int, subscribers: int, publishes: int) -> dict:
    key = f"bench:{uuid.uuid4()}"
    me = psutil.Process()
    holder = SSEPubSubService(backend=RedisBackend(url, key=key, **SLOW_OK), client_timeout=None, queue_size=10)
    observers = [Observer(url, key) for _ in range(processes - 1)]
    try:
        booted = [observer.ask("booted") for observer in observers]  # the baseline: a service, no client
        holder.backend.sync()
        gc.collect()
        boot_rss = me.memory_info().rss
        topic = holder.public_topic("bench")
        streams: list[object] = []  # held: each client's stream stays attached here

        def make(_: int) -> None:
            client = holder.new_client()
            client.sub(topic)
            streams.append(client.stream())

        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            list(pool.map(make, range(subscribers)))
        holder.backend.sync()
        before = [observer.ask("clients made") for observer in observers]
        gc.collect()
        holder_before = (cpu_seconds(), me.memory_info().rss - boot_rss)  # the window starts after the collection
        steal_before = steal_ticks()
        started = time.monotonic()
        for n in range(publishes):
            topic.pub(n)
        holder.backend.sync()
        holder_published = cpu_seconds()
        after = [observer.ask("published") for observer in observers]
        # As long again with no publish: what the observers spend anyway (timers, reports, reads
        # of an idle log), subtracted in us_per_publish_net.
        window = time.monotonic() - started
        time.sleep(window)
        idle = [observer.ask("idle") for observer in observers]
        # Four times as many in batches of 100 (Publisher.publish_many): a busy site's case, where
        # each read of the log brings many entries (and the longer window spreads the per-second work).
        batch_started = cpu_seconds()
        publisher = Publisher(url, redis_key=key)
        batched_count = 4 * publishes
        for start in range(0, batched_count, 100):
            publisher.publish_many([(topic.id, n) for n in range(start, min(batched_count, start + 100))])
        publisher.close()
        holder.backend.sync()
        batched = [observer.ask("published in batches") for observer in observers]
        batch_ended = cpu_seconds()
        steal_after = steal_ticks()
        gc.collect()
        holder_after = (holder_published, me.memory_info().rss - boot_rss)
        if observers:
            cpu = [(a["cpu"] - b["cpu_resumed"]) / publishes * 1e6 for a, b in zip(after, before)]
            spent_idle = [i["cpu"] - a["cpu_resumed"] for i, a in zip(idle, after)]
            net = [x - i / publishes * 1e6 for x, i in zip(cpu, spent_idle)]
            cpu_batched = [(c["cpu"] - i["cpu_resumed"]) / batched_count * 1e6 for c, i in zip(batched, idle)]
            mem_before = [(b["rss"] - o["rss"]) / subscribers for b, o in zip(before, booted)]
            mem_after = [(a["rss"] - o["rss"]) / subscribers for a, o in zip(after, booted)]
            who = "observer (holds no stream)"
        else:
            cpu = [(holder_after[0] - holder_before[0]) / publishes * 1e6]
            cpu_batched = [(batch_ended - batch_started) / batched_count * 1e6]
            net, spent_idle = cpu, [0.0]
            mem_before = [holder_before[1] / subscribers]
            mem_after = [holder_after[1] / subscribers]
            who = "holder (holds every stream)"
        return {
            "bench": "scaleout",
            "processes": processes,
            "subscribers": subscribers,
            "publishes": publishes,
            "measured": who,
            "us_per_publish": [round(x, 1) for x in cpu],
            "us_per_publish_net": [round(x, 1) for x in net],
            "idle_us_per_second": [round(i / window * 1e6, 1) for i in spent_idle],
            "us_per_publish_batched": [round(x, 1) for x in cpu_batched],
            "bytes_per_client_before_publishes": [round(x) for x in mem_before],
            "bytes_per_client_after_publishes": [round(x) for x in mem_after],
            "holder_us_per_publish": round((holder_after[0] - holder_before[0]) / publishes * 1e6, 1),
            "steal_pct": steal_pct(steal_before, steal_after),
            "commit": commit(),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
    finally:
        for observer in observers:
            observer.stop()
        holder.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--subscribers", type=int, nargs="+", default=[1000, 20000, 100000])
    parser.add_argument("--publishes", type=int, default=0, help="per measurement (default: 40 million / S, 50 to 500)")
    parser.add_argument("--out", help="append the JSON lines to this file too")
    parser.add_argument("--observe", nargs=2, metavar=("URL", "KEY"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.observe:
        observe(*args.observe)
        return
    from tests.redis_server import RedisServer

    redis = RedisServer()
    try:
        for subscribers in args.subscribers:
            for processes in args.processes:
                # 400 at S = 100,000: with 100, the background of an observer weighed as much as the publishes.
                publishes = args.publishes or max(50, min(500, 40_000_000 // subscribers))
                emit(measure(redis.url, processes, subscribers, publishes), args.out)
    finally:
        redis.close()
    os._exit(0)  # streams of the last round may still hold threads


if __name__ == "__main__":
    main()

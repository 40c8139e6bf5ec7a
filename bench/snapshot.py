"""How long a snapshot holds the service lock: 10,000 clients with 100 events each, on Redis.

    python3 -m bench.snapshot [--clients 10000] [--events 100] [--repeat 3]

A snapshot is built by the log's reader a slice of 1,000 clients at a time, releasing the lock
between slices. This measures, while a snapshot is built and stored: the longest slice (lock
held), the longest time a probe thread waited for the lock (what a publisher would wait), the
total time and the snapshot's size; and, for comparison, the same state taken in one slice (as
pubsubsse 0.1.0 did, which also decoded every body), and the longest pause of Python's garbage
collector during the build: a full collection stops every thread wherever it lands, so it shows
up in whichever slice it hits. Prints one JSON line per run.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import threading
import time
import uuid

from pubsubsse import SSEPubSubService
from pubsubsse.backends import RedisBackend
from pubsubsse.backends import _snapshot as snapshots
from tests.redis_server import RedisServer


def probe(service: SSEPubSubService, stop: threading.Event, waits: list[float]) -> None:
    """Take the lock every millisecond, as a publisher would; record the longest wait."""
    longest = 0.0
    while not stop.is_set():
        started = time.perf_counter()
        with service._lock:
            pass
        longest = max(longest, time.perf_counter() - started)
        time.sleep(0.001)
    waits.append(longest)


class GcPauses:
    """The longest pause of the cyclic garbage collector while active (it stops every thread)."""

    def __init__(self) -> None:
        self.longest = 0.0
        self._started = 0.0

    def __call__(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.longest = max(self.longest, time.perf_counter() - self._started)


def run(clients: int, events: int) -> dict:
    redis = RedisServer()
    backend = RedisBackend(redis.url, key=f"bench:{uuid.uuid4()}", snapshot_every=10**9)
    service = SSEPubSubService(backend=backend, client_timeout=None, replay_size=max(events, 1))
    try:
        topic = service.new_public_topic()
        for _ in range(clients):
            service.new_client().sub(topic)
        for n in range(events - 1):  # the subscription message is each client's first event
            topic.pub({"n": n, "text": "x" * 80})
        service.sync()

        stop = threading.Event()
        waits: list[float] = []
        prober = threading.Thread(target=probe, args=(service, stop, waits))
        prober.start()
        backend.longest_snapshot_slice = 0.0
        pauses = GcPauses()
        gc.callbacks.append(pauses)
        slices = []
        original_export = service.export_state

        def timed_export(slice_size: int = 1000):
            parts = original_export(slice_size)
            while True:
                t0 = time.perf_counter()
                part = next(parts, None)
                slices.append(time.perf_counter() - t0)
                if part is None:
                    return
                yield part

        service.export_state = timed_export
        started = time.perf_counter()
        blob = b"".join(snapshots.encode({"position": [0, 0], "origins": {}}, backend._timed_slices()))
        gc.callbacks.remove(pauses)
        service.export_state = original_export
        backend.transport.store_snapshot(blob, "bench")  # no lock held: a no-op store, its cost is Redis's
        built = time.perf_counter() - started
        stop.set()
        prober.join()

        started = time.perf_counter()
        whole = list(service.export_state(slice_size=10**9))  # everything in one slice, lock held throughout
        one_slice = time.perf_counter() - started
        return {
            "clients": clients,
            "events_per_client": events,
            "longest_slice_ms": round(backend.longest_snapshot_slice * 1000, 2),
            "median_slice_ms": round(statistics.median(slices) * 1000, 2),
            "longest_gc_pause_ms": round(pauses.longest * 1000, 2),
            "longest_lock_wait_ms": round(waits[0] * 1000, 2),
            "snapshot_s": round(built, 3),
            "snapshot_mb": round(len(blob) / 2**20, 1),
            "whole_state_in_one_slice_ms": round(one_slice * 1000, 1),
            "slices": len(whole),
        }
    finally:
        service.shutdown()
        redis.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=10000)
    parser.add_argument("--events", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    for _ in range(args.repeat):
        print(json.dumps(run(args.clients, args.events)), flush=True)


if __name__ == "__main__":
    main()

"""pubsubsse under test: the blueprint plus a setup and a publish route for the harness."""

import gc
import json
import os
import resource
import sys
import time

from flask import Flask, Response, request

if os.environ.get("BENCH_GC_LOG"):  # log the garbage collector's pauses over 2 ms to stderr
    _gc_started = [0.0]

    def _log_gc(phase, info):
        if phase == "start":
            _gc_started[0] = time.perf_counter()
            return
        ms = (time.perf_counter() - _gc_started[0]) * 1000
        if ms > 2:
            print(f"{time.time():.1f} gc gen{info['generation']} {ms:.1f} ms", file=sys.stderr, flush=True)

    gc.callbacks.append(_log_gc)

from pubsubsse import SSEPubSubService, create_blueprint
from pubsubsse.backends import RedisBackend

service = SSEPubSubService(
    heartbeat=15,
    client_timeout=None,
    queue_size=int(os.environ.get("BENCH_QUEUE", "1000")),
    max_clients=int(os.environ.get("BENCH_MAX_CLIENTS", "100000")),
    backend=RedisBackend(os.environ["BENCH_REDIS_URL"]) if os.environ.get("BENCH_REDIS_URL") else None,
)
topics = []
app = Flask(__name__)
app.register_blueprint(create_blueprint(service, direct_writes=os.environ.get("BENCH_DIRECT_WRITES", "1") == "1"))


@app.post("/bench/setup")
def setup():
    n, t = int(request.args["n"]), int(request.args["topics"])
    # named=1: the topics "t0", "t1", ...: the same in every worker, for setups made in several calls.
    named = [service.public_topic(f"t{i}") for i in range(t)] if request.args.get("named") else None
    while named is None and len(topics) < t:
        topics.append(service.new_public_topic())
    paths = []
    for i in range(n):
        client = service.new_client()
        client.sub(named[i % t] if named is not None else topics[i % t])
        paths.append(f"/event?client_id={client.id}")
    return Response("\n".join(paths), mimetype="text/plain")


@app.post("/pub")
def pub():
    if not topics:  # another worker made the topics: look them up in the shared service
        service.sync()
        topics.extend(service.get_public_topics().values())
    if request.args.get("named"):
        service.public_topic(f"t{request.args['topic']}").pub(json.loads(request.get_data()))
        return Response(status=204)
    topics[int(request.args["topic"])].pub(json.loads(request.get_data()))
    return Response(status=204)


@app.post("/bench/publish-loop")
def publish_loop():
    """Publish in-process, as an app does, round-robin over the topics until ``duration`` is over.

    Closed loop without a tracker: after each round (one message per topic) the greenlet yields,
    so the round's direct writes go out before the next round is published.
    """
    import gevent

    duration, pad = float(request.args["duration"]), "x" * int(request.args.get("pad", "100"))

    def run():
        end = time.monotonic() + duration
        seq = 0
        while time.monotonic() < end:
            for topic in topics:
                topic.pub({"ts": time.time_ns(), "seq": seq, "pad": pad})
                seq += 1
            gevent.sleep(0)

    gevent.spawn(run)
    return Response(status=204)


@app.get("/bench/stats")
def stats():
    clients = service.get_clients()
    return {
        "clients": len(clients),
        "receiving": sum(c.status.value == "receiving" for c in clients.values()),
        "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    }


@app.post("/bench/reset")
def reset():
    for client in list(service.get_clients().values()):
        service.remove_client(client)
    return Response(status=204)

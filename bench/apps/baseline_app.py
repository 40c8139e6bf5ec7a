"""The naive baseline: a minimal Flask + gevent + one queue per stream, one write per message."""

import queue
from collections import defaultdict

from flask import Flask, Response, request

app = Flask(__name__)
subscribers = defaultdict(set)


@app.get("/sub")
def sub():
    topic = request.args["topic"]
    q = queue.Queue()
    subscribers[topic].add(q)

    def stream():
        try:
            while True:
                yield q.get()
        finally:
            subscribers[topic].discard(q)

    return Response(stream(), mimetype="text/event-stream")


@app.post("/pub")
def pub():
    message = b"data: " + request.get_data() + b"\n\n"
    for q in list(subscribers[request.args["topic"]]):
        q.put(message)
    return Response(status=204)

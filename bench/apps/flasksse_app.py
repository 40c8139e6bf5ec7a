"""flask-sse: the incumbent Flask library; Redis pub/sub, one Redis connection per stream."""

import json
import os

from flask import Flask, Response, request
from flask_sse import sse

app = Flask(__name__)
app.config["REDIS_URL"] = os.environ["REDIS_URL"]
app.register_blueprint(sse, url_prefix="/sub")


@app.post("/pub")
def pub():
    sse.publish(json.loads(request.get_data()), channel=request.args["topic"])
    return Response(status=204)

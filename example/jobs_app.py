"""A job's output, live and after a refresh: a Celery task streams an answer token by token.

Redis (``REDIS_URL``, default ``redis://127.0.0.1:6379/0``) is the Celery broker and shares the
service between the web app and the worker::

    .venv/bin/python -m gunicorn -k gevent -b 127.0.0.1:8080 'example.jobs_app:create_app()'
    .venv/bin/celery -A example.celery_tasks worker

``POST /jobs`` makes the job's topic, which keeps its messages (``history=``) for an hour
(``ttl=``), starts the task and sends the browser to the job's page. The task publishes each
token with a :class:`~pubsubsse.Publisher` and closes the topic when it is done. The page
subscribes *from the start* (``ps.subscribe(topic, {since: "start"})``): opened, refreshed or
opened in another tab at any moment, it shows every token once, in order, then "done".
"""

from __future__ import annotations

import os
import uuid

from flask import Flask, redirect, render_template, url_for

from pubsubsse import PubSubSSE

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")  # as in example/celery_tasks.py

pubsub = PubSubSSE(client_timeout=120)

#: What a job's topic keeps: every token of an answer, for an hour after the job ends.
JOB_HISTORY = 10_000
JOB_TTL = 3600


def create_app() -> Flask:
    app = Flask(__name__)
    app.config.update(
        PUBSUBSSE_REDIS_URL=REDIS_URL,
        PUBSUBSSE_REDIS_KEY=os.environ.get("PUBSUBSSE_REDIS_KEY", "pubsubsse:log"),
        PUBSUBSSE_RETRY=float(os.environ.get("PUBSUBSSE_RETRY", "1")),
    )
    pubsub.init_app(app)

    @app.get("/")
    def index():
        return render_template("jobs.html", job=None)

    @app.post("/jobs")
    def start_job():
        from example.celery_tasks import write_answer  # the web app needs Celery only to start jobs

        job_id = uuid.uuid4().hex[:12]
        pubsub.service.public_topic(f"job-{job_id}", history=JOB_HISTORY, ttl=JOB_TTL)  # before the task runs
        write_answer.delay(job_id)
        return redirect(url_for("job_page", job_id=job_id), code=303)

    @app.get("/jobs/<job_id>")
    def job_page(job_id: str):
        return render_template("jobs.html", job=job_id)

    @app.get("/test/ready")
    def ready():
        return "ok"

    return app

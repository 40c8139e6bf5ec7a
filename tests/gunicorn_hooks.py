"""gunicorn settings for the test servers (``-c python:tests.gunicorn_hooks``)."""

from __future__ import annotations

import os
from pathlib import Path


def post_worker_init(worker) -> None:
    """Leave a mark per worker that has loaded the app, so a test starts only when all of them have."""
    directory = os.environ.get("PUBSUBSSE_TEST_WORKERS_DIR")
    if directory:
        Path(directory, str(worker.pid)).touch()

"""The README's table of tested servers, produced here: each server is run and measured.

For each server: a stream works (a real SSE client receives a publish), a
closed connection is noticed (a raw socket closed while its stream is idle:
how long until the client is no longer receiving), and SIGTERM ends open
streams (how long until the stream ends at the client). The measured row must
equal the README's row for that server; the raw figures are printed.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from httpx_sse import connect_sse

from ..servers import ROOT, free_port

HEARTBEAT = 3.0
APP = "tests.wsgi:application"


@dataclass
class Spec:
    name: str
    command: list[str]
    settings: str
    env: dict[str, str] = field(default_factory=dict)


def specs(port: int) -> list[Spec]:
    bind = f"127.0.0.1:{port}"
    python = sys.executable
    uwsgi = [
        *(python, "-c", "import sys, pyuwsgi; pyuwsgi.run(sys.argv[1:])"),
        *("--http-socket", bind, "--master", "--processes", "1", "--lazy-apps", "--die-on-term"),
        *("--http-auto-chunked", "--disable-logging", "--module", APP),
    ]
    return [
        Spec(
            "gunicorn, gevent worker",
            [python, "-m", "gunicorn", "-k", "gevent", "-b", bind, APP],
            "`-k gevent` (`pip install pubsubsse[gevent]`)",
        ),
        Spec(
            "gunicorn, gthread worker",
            [python, "-m", "gunicorn", "-k", "gthread", "--threads", "64", "-b", bind, APP],
            "`--threads` above the open streams per worker (each holds a thread)",
        ),
        Spec(
            "Werkzeug (`flask run`)",
            [python, "-m", "flask", "--app", APP, "run", "--host", "127.0.0.1", "--port", str(port)],
            "none (for development)",
        ),
        Spec(
            "waitress",
            [
                *(python, "-m", "waitress", f"--listen={bind}", "--threads=64"),
                *("--channel-timeout=60", "--channel-request-lookahead=1", APP),
            ],
            "`--threads` above the open streams (each holds a thread), `--channel-timeout` above the "
            "heartbeat, `--channel-request-lookahead=1` (or closed tabs wait for heartbeats)",
        ),
        Spec(
            "uWSGI (pyuwsgi), threads",
            [*uwsgi, "--threads", "64"],
            "`--http-auto-chunked`, `--die-on-term`, `--threads` above the open streams, `--lazy-apps`",
        ),
        Spec(
            "uWSGI (pyuwsgi), gevent",
            [*uwsgi, "--gevent", "1000", "--gevent-monkey-patch"],
            "`--http-auto-chunked`, `--die-on-term`, `--gevent N --gevent-monkey-patch`, `--lazy-apps`",
        ),
        Spec(
            "Django app, gunicorn gevent worker",
            [python, "-m", "gunicorn", "-k", "gevent", "-b", bind, APP],
            "`-k gevent`; no `GZipMiddleware` on the stream (or `direct_writes: False`)",
            {"DJANGO_SETTINGS_MODULE": "tests.django_settings"},
        ),
        Spec(
            "Django `runserver`",
            [python, "-m", "django", "runserver", "--noreload", bind],
            "none (for development)",
            {"DJANGO_SETTINGS_MODULE": "tests.django_settings"},
        ),
    ]


NAMES = [spec.name for spec in specs(0)]


class Running:
    """One server process, started with the test app and stopped by pid."""

    def __init__(self, spec: Spec, port: int) -> None:
        self.spec = spec
        self.base = f"http://127.0.0.1:{port}"
        self.log = Path(os.environ.get("TMPDIR", "/tmp")) / f"pubsubsse-table-{port}.log"
        env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "PUBSUBSSE_HEARTBEAT": str(HEARTBEAT),
            "PUBSUBSSE_CLIENT_TIMEOUT": "none",
            "PUBSUBSSE_ADAPTER": "django" if "DJANGO_SETTINGS_MODULE" in spec.env else "flask",
            **spec.env,
        }
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(spec.command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{spec.name} exited: {self.output()}")
            try:
                if httpx.get(self.base + "/test/ready", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{spec.name} did not start: {self.output()}")
            time.sleep(0.1)

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def get(self, path: str, **params: str) -> httpx.Response:
        return httpx.get(self.base + path, params=params, timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.log.unlink(missing_ok=True)


def open_raw_stream(port: int, client: str) -> socket.socket:
    """An /event request on a plain socket, read up to the first message (the init message)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(f"GET /event?client_id={client} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    seen = b""
    while b"\ndata: " not in seen:
        data = sock.recv(65536)
        assert data, seen
        seen += data
    return sock


def status(server: Running, client: str) -> str:
    return str(server.get("/test/state").json()["clients"][client]["status"])


def measure(server: Running, port: int) -> dict[str, float | bool | None]:
    figures: dict[str, float | bool | None] = {}
    topic = server.get("/add/topic/public/").json()["topic_id"]
    client = server.get("/add/user").json()["client_id"]
    assert server.get("/sub", client_id=client, topic=topic).status_code == 200

    # 1. A stream works: a real SSE client gets the init message, then a publish.
    with httpx.Client(timeout=10) as http, connect_sse(http, "GET", f"{server.base}/event?client_id={client}") as sse:
        events = sse.iter_sse()
        next(events)  # the init message
        assert httpx.post(server.base + "/test/pub", json={"topic": topic, "data": ["hello"]}).is_success
        message = json.loads(next(events).data)
        figures["streams"] = message["updates"][0]["data"] == "hello"

    # 2. A closed tab: the connection closed while the stream is idle.
    other = server.get("/add/user").json()["client_id"]
    sock = open_raw_stream(port, other)
    deadline = time.monotonic() + 5
    while status(server, other) != "receiving" and time.monotonic() < deadline:
        time.sleep(0.02)
    closed_at = time.monotonic()
    sock.close()
    noticed = None
    while time.monotonic() < closed_at + 3 * HEARTBEAT + 5:
        if status(server, other) != "receiving":
            noticed = time.monotonic() - closed_at
            break
        time.sleep(0.02)
    figures["closed_noticed_s"] = noticed

    # 3. SIGTERM: an open stream ends (the client reconnects elsewhere).
    last = server.get("/add/user").json()["client_id"]
    sock = open_raw_stream(port, last)
    sock.settimeout(30)
    sent_at = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    ended = None
    seen = b"\r\n"  # open_raw_stream read up to the end of a chunk
    try:
        # The body ends with the connection, or (chunked, the connection kept alive) with the last chunk.
        while time.monotonic() - sent_at < 30:
            data = sock.recv(65536)
            seen = (seen + data)[-16:]
            if not data or seen.endswith(b"\r\n0\r\n\r\n"):
                ended = time.monotonic() - sent_at
                break
    except ConnectionResetError:
        ended = time.monotonic() - sent_at
    except socket.timeout:
        pass
    finally:
        sock.close()
    figures["sigterm_ended_s"] = ended
    try:
        server.proc.wait(30)
        figures["exited_s"] = time.monotonic() - sent_at
    except subprocess.TimeoutExpired:
        figures["exited_s"] = None
    return figures


def describe(spec: Spec, figures: dict[str, float | bool | None]) -> str:
    """The table row for ``figures`` (the times in coarse classes, so that the row is stable)."""
    streams = "yes" if figures["streams"] else "**no**"
    noticed = figures["closed_noticed_s"]
    if noticed is None:
        closed = "**not noticed**"
    elif noticed < 1.5:
        closed = "within a second"
    elif noticed <= 2 * HEARTBEAT + 3:  # the first write after the close usually succeeds
        closed = "at a heartbeat (up to 2 × `heartbeat`)"
    else:
        closed = "**late**"
    ended = figures["sigterm_ended_s"]
    if ended is None:
        sigterm = "**streams stay open**"
    elif ended < 2:
        sigterm = "streams end at once"
    else:
        sigterm = f"**streams end after {ended:.0f} s**"
    return f"| {spec.name} | {streams} | {closed} | {sigterm} | {spec.settings} |"


def readme_row(name: str) -> str | None:
    readme = (ROOT / "README.md").read_text()
    rows = [line for line in readme.splitlines() if line.startswith(f"| {name} |")]
    return rows[0] if rows else None


@pytest.mark.timeout(180)
@pytest.mark.parametrize("name", NAMES)
def test_server_row_of_the_readme_is_measured(name: str) -> None:
    port = free_port()
    spec = next(s for s in specs(port) if s.name == name)
    server = Running(spec, port)
    try:
        figures = measure(server, port)
    except Exception:
        print(server.output())
        raise
    finally:
        server.stop()
    print(json.dumps({"server": name, **figures}))
    row = describe(spec, figures)
    assert readme_row(name) == row, f"the README's row should read:\n{row}\n(figures: {figures})"


def test_readme_table_lists_the_tested_servers_only() -> None:
    readme = (ROOT / "README.md").read_text()
    table = re.search(r"<!-- servers -->\n(.*?)<!-- /servers -->", readme, re.S)
    assert table, "the README has no servers table"
    listed = [line.split("|")[1].strip() for line in table.group(1).splitlines() if line.startswith("| ")][1:]
    assert listed == NAMES


def test_a_server_that_runs_one_request_at_a_time_is_named_in_the_log() -> None:
    """gunicorn's sync worker: each stream would block the worker, which the log says once."""
    port = free_port()
    spec = Spec("gunicorn, sync worker", [sys.executable, "-m", "gunicorn", "-b", f"127.0.0.1:{port}", APP], "")
    server = Running(spec, port)
    try:
        client = server.get("/add/user").json()["client_id"]
        open_raw_stream(port, client).close()
        deadline = time.monotonic() + 10
        while "one request at a time" not in server.output():
            assert time.monotonic() < deadline, server.output()
            time.sleep(0.05)
        assert server.output().count("one request at a time") == 1
    finally:
        server.stop()

"""Real HTTP servers on 127.0.0.1 with a free port, started and stopped by the tests."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
APP = "tests.server_app:create_app()"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def certificate() -> tuple[str, str]:
    """Return a self-signed certificate and its key for 127.0.0.1 (files made once per process)."""
    global _certificate
    if _certificate is None:
        directory = tempfile.mkdtemp(prefix="pubsubsse-tls-")
        cert, key = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
        subprocess.run(
            [
                *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
                *("-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", key, "-out", cert),
            ],
            check=True,
            capture_output=True,
        )
        _certificate = (cert, key)
    return _certificate


_certificate: tuple[str, str] | None = None


def command(kind: str, port: int, app: str = APP, workers: int = 1, tls: bool = False) -> list[str]:
    bind = f"127.0.0.1:{port}"
    if tls:
        if kind not in ("gevent", "gthread"):
            raise ValueError(f"TLS is tested under gunicorn only, not {kind}")
        cert, key = certificate()
        return [*command(kind, port, app, workers), "--certfile", cert, "--keyfile", key]
    if kind == "gevent":
        return [
            sys.executable,
            "-m",
            "gunicorn",
            "-k",
            "gevent",
            "-w",
            str(workers),
            "-b",
            bind,
            "--graceful-timeout",
            "30",
            "--timeout",
            "60",
            "--log-level",
            "warning",
            "-c",
            "python:tests.gunicorn_hooks",
            app,
        ]
    if kind == "gthread":
        return [
            sys.executable,
            "-m",
            "gunicorn",
            "-k",
            "gthread",
            "--threads",
            "128",
            "-w",
            str(workers),
            "-b",
            bind,
            "--graceful-timeout",
            "30",
            "--log-level",
            "warning",
            "-c",
            "python:tests.gunicorn_hooks",
            app,
        ]
    if kind == "threaded":
        return [sys.executable, "-m", "tests.server_app", "--port", str(port)]
    raise ValueError(kind)


class Server:
    def __init__(
        self,
        kind: str,
        env: dict[str, str] | None = None,
        app: str = APP,
        workers: int = 1,
        ready: str = "/test/ready",
        tls: bool = False,
        cwd: Path = ROOT,
        port: int | None = None,
    ) -> None:
        self.kind = kind
        self.tls = tls
        self.ready = ready
        self.workers = workers if kind != "threaded" else 0
        self.workers_dir = tempfile.mkdtemp(prefix="pubsubsse-workers-")
        self.port = port or free_port()
        self.base = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self.log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - lives as long as the server
            prefix=f"pubsubsse-{kind}-", suffix=".log", delete=False
        )
        full_env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "PUBSUBSSE_TEST_WORKERS_DIR": self.workers_dir,
            **(env or {}),
        }
        self.proc = subprocess.Popen(
            command(kind, self.port, app, workers, tls),
            cwd=cwd,
            env=full_env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        try:
            self._wait_ready()
        except BaseException:  # a server that never got ready is stopped here: nobody else holds it
            self.stop()
            raise

    def _wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} server exited: {self.output()}")
            # One answer says that one worker is up; the others may still be loading the app.
            if len(os.listdir(self.workers_dir)) >= self.workers:
                try:
                    if httpx.get(self.base + self.ready, timeout=1, verify=not self.tls).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
            time.sleep(0.05)
        raise RuntimeError(f"{self.kind} server did not start: {self.output()}")

    def url(self, path: str) -> str:
        return self.base + path

    def output(self) -> str:
        return Path(self.log.name).read_text(errors="replace")[-5000:]

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()
        os.unlink(self.log.name)
        shutil.rmtree(self.workers_dir, ignore_errors=True)


class Cluster:
    """Two gunicorn servers with two gevent workers each, sharing one service through Redis or PostgreSQL.

    A private redis-server, a key of their own on ``redis_cluster`` (a Redis Cluster), or tables of
    their own in the machine's PostgreSQL. ``url()``
    alternates between the servers, so consecutive requests of a test land on different
    processes; ``port`` is the first server's.
    """

    kind = "cluster"

    def __init__(
        self, env: dict[str, str] | None = None, backend: str = "redis", redis_cluster=None, partitions: int = 1
    ) -> None:
        import itertools
        import uuid

        from .redis_server import RedisServer

        self.redis = RedisServer()  # the test app counts status events across processes in it
        self.postgres_name = f"t_{uuid.uuid4().hex[:16]}" if backend == "postgres" else None
        shared = {**(env or {}), "PUBSUBSSE_REDIS_URL": self.redis.url, "PUBSUBSSE_REDIS_KEY": f"t:{uuid.uuid4()}"}
        if redis_cluster is not None:  # the log on a Redis Cluster (tests/redis_cluster.py)
            shared["PUBSUBSSE_REDIS_CLUSTER_URL"] = redis_cluster.url
            shared["PUBSUBSSE_REDIS_PARTITIONS"] = str(partitions)
        if self.postgres_name:
            from .conftest import POSTGRES_DSN

            shared.update(PUBSUBSSE_POSTGRES_DSN=POSTGRES_DSN, PUBSUBSSE_POSTGRES_NAME=self.postgres_name)
        self.servers = [Server("gevent", env=shared, workers=2), Server("gevent", env=shared, workers=2)]
        self.port = self.servers[0].port
        self.base = self.servers[0].base
        self._turn = itertools.cycle(self.servers)

    def url(self, path: str) -> str:
        return next(self._turn).url(path)

    def output(self) -> str:
        return "\n".join(server.output() for server in self.servers)

    def stop(self) -> None:
        for server in self.servers:
            server.stop()
        self.redis.close()
        if self.postgres_name:
            from .conftest import drop_postgres_tables

            drop_postgres_tables(self.postgres_name)


def start_gunicorn_gevent(python: str, app: str, cwd, env=None, extra_args=()) -> tuple[subprocess.Popen, str]:
    """Start ``python -m gunicorn -k gevent`` serving ``app`` on a free port; wait until /sse/pubsubsse.js answers."""
    port = free_port()
    proc = subprocess.Popen(
        [python, "-m", "gunicorn", "-k", "gevent", "-b", f"127.0.0.1:{port}", *extra_args, app],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        try:
            if httpx.get(base + "/sse/pubsubsse.js", timeout=1).status_code == 200:
                return proc, base
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.1)


def print_outputs(servers) -> None:
    """Print each server's log, for a test that is failing."""
    for server in servers:
        print(f"server on port {server.port}:", server.output())


def stop_all(servers, *also) -> None:
    """Stop every server, then close the other things (a private redis-server, ...)."""
    for server in servers:
        server.stop()
    for thing in also:
        thing.close()

"""One machine, 100,000 idle SSE streams: gunicorn gevent workers sharing one service through Redis.

    python3 -m bench.streams100k [--streams 100000] [--workers 7] [--loadgens 7] [--publishes 5]

A private ``redis-server`` holds the log; ``--workers`` gevent workers (``--reuse-port``, so that
the kernel spreads the connections; a process may hold 20,000 descriptors here) serve
``bench/apps/pubsubsse_app.py``. ``--streams`` clients are made and subscribed to one topic, then
``--loadgens`` load generators (``bench/loadgen.c``, each from its own 127.0.0.x address, since
one address has 28,232 ports to a server port) hold one stream each. Once every client is
receiving, and after 10 s of idling (its CPU is subtracted), ``--publishes`` messages go to the
topic, ``--gap`` seconds apart.

It reports the memory per stream summed over every process (workers, gunicorn's arbiter and
Redis; RSS after the streams are open, less before the clients were made), how many streams
attached (an attach the log did not take in time under this load is answered 503; the load
generators retry it after 1, 2, 4, then 8 s, as pubsubsse.js does: ``refused_503`` counts those
answers and ``refusal_reasons`` the reasons the workers logged), the time from each
publish to each stream's receipt (p50, p99, the last one), and the CPU of the server side
(workers and Redis) per delivery. One JSON line goes to stdout, with the machine's steal time.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

from bench import steal

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
LOADGEN = HERE / "build" / "loadgen"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def family(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def rss(processes: list[psutil.Process]) -> int:
    return sum(p.memory_info().rss for p in processes if p.is_running())


def cpu(processes: list[psutil.Process]) -> float:
    total = 0.0
    for p in processes:
        times = p.cpu_times()
        total += times.user + times.system
    return total


def wait_for(what: str, predicate, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out: {what}")
        time.sleep(0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=7)
    parser.add_argument("--loadgens", type=int, default=7)
    parser.add_argument("--publishes", type=int, default=5)
    parser.add_argument("--gap", type=float, default=6.0, help="seconds between publishes")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # a stopped run stops what it started
    if not LOADGEN.exists() or LOADGEN.stat().st_mtime < (HERE / "loadgen.c").stat().st_mtime:
        LOADGEN.parent.mkdir(exist_ok=True)
        subprocess.run(["gcc", "-O2", "-o", str(LOADGEN), str(HERE / "loadgen.c")], check=True)
    tmp = Path(tempfile.mkdtemp(prefix="bench-100k-"))
    redis_port, port = free_port(), free_port()
    redis_server = shutil.which("redis-server") or "/usr/bin/redis-server"
    redis = subprocess.Popen(
        [redis_server, "--bind", "127.0.0.1", "--port", str(redis_port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "BENCH_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "BENCH_MAX_CLIENTS": str(args.streams + 1000),
    }
    gunicorn = [sys.executable, "-m", "gunicorn", "-k", "gevent", "-w", str(args.workers), "--reuse-port"]
    settings = ["--worker-connections", "30000", "--backlog", "65535", "--timeout", "600", "--log-level", "warning"]
    server = subprocess.Popen(
        [*gunicorn, *settings, "-b", f"127.0.0.1:{port}", "bench.apps.pubsubsse_app:app"],
        env=env,
        cwd=ROOT,
        stdout=(tmp / "server.log").open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    loadgens: list[subprocess.Popen[str]] = []
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for("the server", lambda: _answers(base), 60)
        wait_for("every worker", lambda: len(family(server.pid)) == args.workers + 1, 60)
        processes = [*family(server.pid), psutil.Process(redis.pid)]
        before = rss(processes)
        made_at = time.monotonic()
        paths: list[str] = []
        while len(paths) < args.streams:
            n = min(5000, args.streams - len(paths))
            answer = httpx.post(f"{base}/bench/setup", params={"n": n, "topics": 1, "named": 1}, timeout=600)
            answer.raise_for_status()
            paths += answer.text.splitlines()
        made_s = time.monotonic() - made_at
        with_clients = rss(processes)
        share = -(-len(paths) // args.loadgens)
        opened_at = time.monotonic()
        for i in range(args.loadgens):
            chunk = tmp / f"paths-{i}"
            chunk.write_text("\n".join(paths[i * share : (i + 1) * share]) + "\n")
            source = f"127.0.0.{10 + i}"
            loadgen = subprocess.Popen(
                [str(LOADGEN), "-p", str(port), "-f", str(chunk), "-d", "3600", "-w", "0", "-r", "-b", source],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            loadgens.append(loadgen)
            assert loadgen.stderr is not None
            line = loadgen.stderr.readline()
            if line.strip() != "READY":
                raise SystemExit(f"loadgen {i}: {line}{loadgen.stderr.read()}")

        # Every stream attached, or none more for 30 s (the retries of refused attaches come within 8 s).
        attached, last_growth = 0, time.monotonic()
        while attached < args.streams and time.monotonic() - last_growth < 30:
            time.sleep(2)
            now = httpx.get(f"{base}/bench/stats", timeout=60).json()["receiving"]
            if now > attached:
                attached, last_growth = now, time.monotonic()
        opened_s = last_growth - opened_at
        time.sleep(3)  # the last attaches applied everywhere
        with_streams = rss(processes)
        # What 100,000 idle streams cost without publishes (heartbeats, the timers), to subtract.
        idle_from, idle_cpu = time.monotonic(), cpu(processes)
        time.sleep(10)
        idle_rate = (cpu(processes) - idle_cpu) / (time.monotonic() - idle_from)
        stolen, cpu_before, started = steal(), cpu(processes), time.monotonic()
        for n in range(args.publishes):
            body = json.dumps({"ts": time.time_ns(), "seq": n})
            httpx.post(f"{base}/pub", params={"topic": 0, "named": 1}, content=body, timeout=60).raise_for_status()
            time.sleep(args.gap)
        time.sleep(10)  # the last publish reaches every stream
        window = time.monotonic() - started
        cpu_spent = cpu(processes) - cpu_before - idle_rate * window
        results = []
        for loadgen in loadgens:
            loadgen.send_signal(signal.SIGTERM)
            out, _ = loadgen.communicate(timeout=120)
            results.append(json.loads(out))
        deliveries = sum(r["updates"] for r in results)
        print(
            json.dumps(
                {
                    "bench": "streams100k",
                    "streams": args.streams,
                    "workers": args.workers,
                    "loadgens": args.loadgens,
                    "publishes": args.publishes,
                    "deliveries": deliveries,
                    "expected_deliveries": args.publishes * attached,
                    "streams_attached": attached,
                    "refused_503": sum(r["refused"] for r in results),
                    "refusal_reasons": refusal_reasons((tmp / "server.log").read_text()),
                    "streams_with_events": sum(r["with_events"] for r in results),
                    "clients_made_s": round(made_s, 1),
                    "streams_opened_s": round(opened_s, 1),
                    "kb_per_stream": round((with_streams - before) / args.streams / 1024, 2),
                    "kb_per_client_before_streams": round((with_clients - before) / args.streams / 1024, 2),
                    "rss_total_mb": round(with_streams / 2**20, 1),
                    "p50_ms_worst_loadgen": max(r["p50_ms"] for r in results),
                    "p99_ms_worst_loadgen": max(r["p99_ms"] for r in results),
                    "last_stream_ms": max(r["max_ms"] for r in results),
                    "server_cpu_us_per_delivery": round(cpu_spent / max(1, deliveries) * 1e6, 2),
                    "idle_server_cpu_util": round(idle_rate, 3),
                    "steal_ticks": steal() - stolen,
                }
            ),
            flush=True,
        )
    finally:
        for loadgen in loadgens:
            if loadgen.poll() is None:
                loadgen.kill()
                loadgen.wait(10)
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(10)
        redis.terminate()
        redis.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)


def refusal_reasons(server_log: str) -> dict[str, int]:
    """Count the workers' "backend unavailable: <reason>" warnings by reason (numbers masked)."""
    reasons: dict[str, int] = {}
    for line in server_log.splitlines():
        _, found, reason = line.partition("backend unavailable: ")
        if found:
            reason = re.sub(r"[0-9.]+", "N", reason.strip())
            reasons[reason] = reasons.get(reason, 0) + 1
    return reasons


def _answers(base: str) -> bool:
    try:
        return httpx.get(f"{base}/bench/stats", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


if __name__ == "__main__":
    main()

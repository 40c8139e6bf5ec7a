"""Benchmark harness: pubsubsse against its peers, on this machine, in one run.

    python3 -m bench.run                       # everything, 3 repetitions
    python3 -m bench.run --peers pubsubsse,baseline --workloads w2 --repeat 1

Peers that this machine lacks (sse-starlette and uvicorn, flask-sse, nginx with nchan) are
installed first from PyPI and Debian's packages, unless ``--no-install``.

Each server under test runs pinned to core 0; the load generator (C, epoll) and the publisher
run on core 1. Every run prints one JSON line; the end prints a summary table of medians and of
ratios against pubsubsse. A run where the load generator used more than 90% of its core is
marked "generator_bound" and left out of the summary. So is a run during which the hypervisor
took more than 1% of the machine's CPU time away ("steal" in /proc/stat, marked "stolen"): on a
shared virtual machine that noise alone can multiply latencies several times.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import psutil

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
LOADGEN = HERE / "build" / "loadgen"
SERVER_CORE, CLIENT_CORE = "0", "1"
PEERS = ["pubsubsse", "baseline", "starlette", "flasksse", "nchan"]
#: Not in the default run: pubsubsse with two gunicorn workers sharing one service through Redis.
SCALEOUT = "pubsubsse-redis"
#: Not in the default run: pubsubsse with direct writes off (every event queued, its reader woken),
#: the control for what direct writes are worth.
QUEUED = "pubsubsse-queued"
#: The variants of pubsubsse, which share its app.
OURS = ("pubsubsse", SCALEOUT, QUEUED)
WORKLOADS = ["w1", "w1shared", "w2", "w2lat", "w3", "w3local", "w5", "w6base", "w6"]
#: Workloads where the app publishes in-process (a function call, as users do): pubsubsse only.
IN_PROCESS = ("w3local",)
#: W1 on /event/shared, the connection the browser client opens by default: pubsubsse only.
IDLE = ("w1", "w1shared")
OURS_ONLY = (*IN_PROCESS, "w1shared")


#: What each peer needs beyond ``scripts/install-deps``: (Python modules -> PyPI packages, Debian packages).
NEEDS: dict[str, tuple[dict[str, str], list[str]]] = {
    "starlette": ({"sse_starlette": "sse-starlette", "uvicorn": "uvicorn", "uvloop": "uvloop"}, []),
    "flasksse": ({"flask_sse": "flask-sse"}, []),
    "nchan": ({}, ["nginx-light", "libnginx-mod-nchan"]),
}


def install_missing(peers: list[str]) -> None:
    """Install what the chosen peers need and this machine lacks, from PyPI and Debian's packages."""
    import importlib.util

    pip: list[str] = []
    apt: list[str] = []
    for peer in peers:
        modules, packages = NEEDS.get(peer, ({}, []))
        pip += [package for module, package in modules.items() if importlib.util.find_spec(module) is None]
        if packages and not any(Path(p).exists() for p in NCHAN_MODULES):
            apt += packages
    if not shutil.which("gcc"):
        apt.append("gcc")
    if pip:
        print("installing from PyPI:", " ".join(pip), file=sys.stderr)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", *pip], check=True)
    if apt:
        print("installing Debian packages:", " ".join(apt), file=sys.stderr)
        sudo = [] if os.geteuid() == 0 else ["sudo"]
        subprocess.run([*sudo, "apt-get", "update", "-qq"], check=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run([*sudo, "apt-get", "install", "-y", "-qq", *apt], check=True, env=env)


#: Runs during which the hypervisor stole more than this share of CPU time are left out.
STEAL_LIMIT_PCT = 1.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def gunicorn(app: str, port: int, workers: int = 1) -> list[str]:
    return [
        sys.executable,
        "-m",
        "gunicorn",
        "-k",
        "gevent",
        "-w",
        str(workers),
        "--worker-connections",
        "30000",
        "--backlog",
        "8192",
        "-b",
        f"127.0.0.1:{port}",
        "--log-level",
        "warning",
        app,
    ]


class Server:
    """One server under test, pinned to the server core."""

    def __init__(self, peer: str, redis_url: str | None) -> None:
        self.peer = peer
        self.port = free_port()
        self.tmp = Path(tempfile.mkdtemp(prefix=f"bench-{peer}-"))
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.redis_proc = None
        if peer in ("pubsubsse", QUEUED):
            env["BENCH_DIRECT_WRITES"] = "0" if peer == QUEUED else "1"
            cmd = gunicorn("bench.apps.pubsubsse_app:app", self.port)
        elif peer == SCALEOUT:
            self.redis_port = free_port()
            self.redis_proc = subprocess.Popen(
                [
                    "taskset",
                    "-c",
                    SERVER_CORE,
                    shutil.which("redis-server") or "/usr/bin/redis-server",
                    "--bind",
                    "127.0.0.1",
                    "--port",
                    str(self.redis_port),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(0.5)
            env["BENCH_REDIS_URL"] = f"redis://127.0.0.1:{self.redis_port}/0"
            cmd = gunicorn("bench.apps.pubsubsse_app:app", self.port, workers=2)
        elif peer == "baseline":
            cmd = gunicorn("bench.apps.baseline_app:app", self.port)
        elif peer == "flasksse":
            cmd = gunicorn("bench.apps.flasksse_app:app", self.port)
            env["REDIS_URL"] = redis_url or "redis://127.0.0.1:6379/0"
        elif peer == "starlette":
            cmd = [
                sys.executable,
                "-m",
                "uvicorn",
                "bench.apps.starlette_app:app",
                "--port",
                str(self.port),
                "--log-level",
                "warning",
                "--backlog",
                "8192",
                "--no-access-log",
            ]
        elif peer == "nchan":
            conf = (HERE / "apps" / "nchan.conf").read_text()
            conf = conf.replace("@PORT@", str(self.port)).replace("@MODULE@", nchan_module())
            (self.tmp / "tmp").mkdir()
            (self.tmp / "nginx.conf").write_text(conf)
            cmd = [shutil.which("nginx") or "/usr/sbin/nginx", "-p", str(self.tmp), "-c", str(self.tmp / "nginx.conf")]
        else:
            raise ValueError(peer)
        self.log = open(self.tmp / "server.log", "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            ["taskset", "-c", SERVER_CORE, *cmd],
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._wait()

    def _wait(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.peer} exited: {(self.tmp / 'server.log').read_text()[-2000:]}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1):
                time.sleep(0.5)  # the listener is up; let the worker finish booting
                return
            time.sleep(0.05)
        raise RuntimeError(f"{self.peer} did not start")

    def processes(self) -> list[psutil.Process]:
        try:
            root = psutil.Process(self.proc.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def rss(self) -> int:
        total = 0
        for p in self.processes():
            with contextlib.suppress(psutil.NoSuchProcess):
                total += p.memory_info().rss
        return total

    def cpu(self) -> tuple[float, float]:
        """User and system CPU seconds of every process of this server (Redis included), so far."""
        user = system = 0.0
        processes = self.processes()
        if self.redis_proc is not None:
            with contextlib.suppress(psutil.NoSuchProcess):
                processes.append(psutil.Process(self.redis_proc.pid))
        for p in processes:
            with contextlib.suppress(psutil.NoSuchProcess):
                t = p.cpu_times()
                user += t.user
                system += t.system
        return user, system

    def redis_commands(self) -> int:
        """Total commands the private Redis of the scale-out peer has processed."""
        import redis

        stats = redis.Redis(port=self.redis_port).info("stats")
        return int(stats["total_commands_processed"])

    def subscriber_paths(self, n: int, topics: int) -> list[str]:
        if self.peer in OURS:
            r = httpx.post(f"http://127.0.0.1:{self.port}/bench/setup", params={"n": n, "topics": topics}, timeout=300)
            r.raise_for_status()
            return r.text.splitlines()
        key = "channel" if self.peer == "flasksse" else "topic"
        return [f"/sub?{key}={i % topics}" for i in range(n)]

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        self.log.close()
        if self.redis_proc is not None:
            self.redis_proc.terminate()
            self.redis_proc.wait(10)
        shutil.rmtree(self.tmp, ignore_errors=True)


NCHAN_MODULES = ["/usr/lib/nginx/modules/ngx_nchan_module.so", "/usr/share/nginx/modules/ngx_nchan_module.so"]


def nchan_module() -> str:
    for candidate in NCHAN_MODULES:
        if Path(candidate).exists():
            return candidate
    raise RuntimeError("libnginx-mod-nchan is not installed")


def loadgen(port: int, paths: list[str], duration: float, warmup: float, stalled: int = 0, churn: bool = False):
    paths_file = Path(tempfile.mkstemp(prefix="bench-paths-")[1])
    paths_file.write_text("\n".join(paths) + "\n")
    cmd = [
        "taskset",
        "-c",
        CLIENT_CORE,
        str(LOADGEN),
        "-p",
        str(port),
        "-f",
        str(paths_file),
        "-d",
        str(duration),
        "-w",
        str(warmup),
        "-s",
        str(stalled),
    ]
    if churn:
        cmd.append("-c")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stderr.readline()
    if line.strip() != "READY":
        raise RuntimeError(f"loadgen: {line}{proc.stderr.read()}")
    return proc, paths_file


def finish(proc, paths_file) -> dict:
    out, err = proc.communicate(timeout=600)
    paths_file.unlink()
    if proc.returncode:
        raise RuntimeError(f"loadgen failed: {err}")
    return json.loads(out)


def publisher(port: int, duration: float, topics: int, rate: float | None, track: str | None, pad: int = 100):
    cmd = [
        "taskset",
        "-c",
        CLIENT_CORE,
        sys.executable,
        str(HERE / "publisher.py"),
        "--port",
        str(port),
        "--duration",
        str(duration),
        "--topics",
        str(topics),
        "--pad",
        str(pad),
    ]
    if rate:
        cmd += ["--rate", str(rate)]
    if track:
        cmd += ["--track", track]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run_workload(server: Server, workload: str, n: int, duration: float) -> dict:
    warmup = 2.0
    settle = 2.0
    result: dict = {"peer": server.peer, "workload": workload, "n": n}
    if workload in IDLE:
        rss_before = server.rss()
        paths = server.subscriber_paths(n, 1)
        if workload == "w1shared":  # one client per shared connection, as a browser with one tab
            paths = [p.replace("/event?client_id=", "/event/shared?clients=") for p in paths]
        rss_clients = server.rss()
        proc, pf = loadgen(server.port, paths, duration=settle + 5, warmup=0)
        time.sleep(settle + 3)
        rss_streams = server.rss()
        gen = finish(proc, pf)
        result.update(
            rss_before=rss_before,
            rss_after=rss_streams,
            connections=gen["with_events"],
            kb_per_stream=round((rss_streams - rss_before) / n / 1024, 2),
            kb_per_stream_excluding_client_objects=round((rss_streams - rss_clients) / n / 1024, 2),
        )
        return result
    if workload in IN_PROCESS and server.peer not in OURS:
        raise ValueError(f"{server.peer} has no in-process publishing (it is not a Python library)")
    topics = n // 10 if workload in ("w3", "w3local") else 1
    paths = server.subscriber_paths(n + 1, topics)
    track, paths = paths[0], paths[1:]
    stalled = 20 if workload == "w6" else 0
    churn = workload == "w5"
    if churn:  # a first round brings the server to its working size; the second shows any leak
        finish(*loadgen(server.port, paths, duration=duration / 2, warmup=0, churn=True))
        time.sleep(1)
    rss_before = server.rss()
    proc, pf = loadgen(
        server.port, paths, duration=settle + warmup + duration, warmup=settle + warmup, stalled=stalled, churn=churn
    )
    time.sleep(settle)
    rate = 40 if workload in ("w2lat", "w6base", "w6") else None
    pad = 4000 if workload in ("w6base", "w6") else 100
    pub = None
    if workload in IN_PROCESS:
        httpx.post(
            f"http://127.0.0.1:{server.port}/bench/publish-loop", params={"duration": warmup + duration + 1}
        ).raise_for_status()
    elif workload != "w5":
        pub = publisher(server.port, warmup + duration + 1, topics, rate, None if rate else track, pad)
    time.sleep(warmup)
    cpu0, t0, steal0 = server.cpu(), time.monotonic(), steal_ticks()
    commands0 = server.redis_commands() if server.peer == SCALEOUT else 0
    peak_rss = 0
    while proc.poll() is None:
        peak_rss = max(peak_rss, server.rss())
        time.sleep(0.5)
    cpu1, t1, steal1 = server.cpu(), time.monotonic(), steal_ticks()
    gen = finish(proc, pf)
    if server.peer == SCALEOUT and gen["updates"]:
        # Publishes in the window, from topic-0 deliveries per subscriber of topic 0.
        published = gen["updates"] / max(1, len(paths) // topics)
        result["redis_commands_per_publish"] = round((server.redis_commands() - commands0) / published, 2)
    if pub is not None:
        pub.wait(60)
    result.update(gen)
    user, system = cpu1[0] - cpu0[0], cpu1[1] - cpu0[1]
    result["server_cpu_s"] = round(user + system, 3)
    result["server_cpu_util"] = round((user + system) / (t1 - t0), 3)
    if gen["updates"]:
        result["server_cpu_us_per_delivery"] = round((user + system) / gen["updates"] * 1e6, 3)
        result["server_user_us_per_delivery"] = round(user / gen["updates"] * 1e6, 3)
        result["server_system_us_per_delivery"] = round(system / gen["updates"] * 1e6, 3)
    result["generator_util"] = round(gen["loadgen_cpu_s"] / (settle + warmup + duration), 3)
    result["generator_bound"] = result["generator_util"] > 0.9
    result["steal_pct"] = round(100 * (steal1[0] - steal0[0]) / max(1, steal1[1] - steal0[1]), 2)
    result["stolen"] = result["steal_pct"] > STEAL_LIMIT_PCT
    result["peak_rss_mb"] = round(peak_rss / 2**20, 1)
    if churn:
        time.sleep(1)
    result["rss_growth_mb"] = round((server.rss() - rss_before) / 2**20, 1)
    if workload == "w5" and server.peer == "pubsubsse":
        deadline = time.monotonic() + 10
        stats = {}
        while time.monotonic() < deadline:
            stats = httpx.get(f"http://127.0.0.1:{server.port}/bench/stats").json()
            if stats["receiving"] == 0:
                break
            time.sleep(0.2)
        result["registry_after"] = stats
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peers", default=",".join(PEERS))
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--n", type=int, default=1000, help="subscribers for w2/w3/w5/w6")
    parser.add_argument("--idle-n", type=int, default=10000, help="idle streams for w1")
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", default=str(HERE / "results" / "latest.jsonl"))
    parser.add_argument("--summarize", metavar="JSONL", help="only print the summary of an earlier run")
    parser.add_argument(
        "--no-install", action="store_true", help="do not install missing peers from PyPI and Debian's packages"
    )
    parser.add_argument(
        "--max-steal",
        type=float,
        default=STEAL_LIMIT_PCT,
        metavar="PCT",
        help="leave out runs with more hypervisor steal than this (percent of CPU time; default %(default)s)",
    )
    args = parser.parse_args()
    set_steal_limit(args.max_steal)
    if args.summarize:
        print(summary([json.loads(line) for line in Path(args.summarize).read_text().splitlines()]))
        return

    if not args.no_install:
        install_missing(args.peers.split(","))
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if not LOADGEN.exists() or LOADGEN.stat().st_mtime < (HERE / "loadgen.c").stat().st_mtime:
        LOADGEN.parent.mkdir(exist_ok=True)
        subprocess.run(["gcc", "-O2", "-o", str(LOADGEN), str(HERE / "loadgen.c")], check=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    results = []
    with out.open("w") as sink:
        for repeat in range(args.repeat):
            for peer in args.peers.split(","):
                for workload in args.workloads.split(","):
                    if workload in OURS_ONLY and peer not in OURS:
                        continue  # nothing to publish in-process with, no shared connections
                    server = Server(peer, os.environ.get("BENCH_REDIS_URL"))
                    try:
                        n = args.idle_n if workload in IDLE else args.n
                        result = run_workload(server, workload, n, args.duration)
                    except Exception as error:  # one failing peer must not hide the others
                        result = {"peer": peer, "workload": workload, "error": str(error)[:500]}
                    finally:
                        server.stop()
                    result["repeat"] = repeat
                    print(json.dumps(result), flush=True)
                    sink.write(json.dumps(result) + "\n")
                    results.append(result)
    print(summary(results))


#: Summary rows: (workload, result key, label, whether higher is better).
METRICS = [
    ("w1", "kb_per_stream", "KB RSS per idle stream", False),
    ("w1shared", "kb_per_stream", "KB RSS per idle shared connection (one client each)", False),
    ("w2", "updates_per_s", "deliveries/s, closed loop", True),
    ("w2", "server_cpu_us_per_delivery", "server CPU us per delivery, closed loop", False),
    ("w2lat", "p10_ms", "p10 latency ms at 40 msg/s", False),
    ("w2lat", "p50_ms", "p50 latency ms at 40 msg/s", False),
    ("w2lat", "p90_ms", "p90 latency ms at 40 msg/s", False),
    ("w2lat", "p99_ms", "p99 latency ms at 40 msg/s", False),
    ("w2lat", "p999_ms", "p99.9 latency ms at 40 msg/s", False),
    ("w2lat", "server_cpu_us_per_delivery", "server CPU us per delivery at 40 msg/s", False),
    ("w2lat", "server_user_us_per_delivery", "of which user (us)", False),
    ("w2lat", "server_system_us_per_delivery", "of which system (us)", False),
    ("w3", "updates_per_s", "deliveries/s, N/10 topics", True),
    ("w3", "server_cpu_us_per_delivery", "server CPU us per delivery, N/10 topics", False),
    ("w3local", "updates_per_s", "deliveries/s, N/10 topics, the app publishing in-process", True),
    ("w3local", "server_cpu_us_per_delivery", "server CPU us per delivery, the app publishing in-process", False),
    ("w5", "rss_growth_mb", "RSS growth MB, 2nd churn round", False),
    ("w6base", "server_cpu_us_per_delivery", "server CPU us per delivery, 4 KB messages", False),
    ("w6", "server_cpu_us_per_delivery", "server CPU us per delivery, 20 stalled clients", False),
    ("w6base", "p99_ms", "p99 ms, 4 KB messages, no stalled client", False),
    ("w6", "p99_ms", "p99 ms, 4 KB messages, 20 stalled clients", False),
]


def set_steal_limit(pct: float) -> None:
    """Change the steal share above which runs are left out (``--max-steal``)."""
    global STEAL_LIMIT_PCT
    STEAL_LIMIT_PCT = pct


def measurement_arguments(doc: str, count: str, default: int) -> argparse.Namespace:
    """Parse the command line of a measurement on private Redis servers: ``--<count>``, ``--repeat``, ``--out``.

    The working directory goes on ``sys.path``: such measurements start their servers with the
    tests' helpers (``tests/redis_server.py``, ``tests/redis_cluster.py``).
    """
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(f"--{count}", type=int, default=default)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", help="append the JSON lines to this file too")
    args = parser.parse_args()
    sys.path.insert(0, os.getcwd())
    return args


def emit(result: dict, out: str | None) -> None:
    """Print ``result`` as one JSON line, and append it to the file ``out`` too if given."""
    line = json.dumps(result)
    print(line, flush=True)
    if out:
        with open(out, "a") as file:
            file.write(line + "\n")


def steal_ticks() -> tuple[int, int]:
    """Return the machine's (stolen, total) CPU ticks so far, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (fields[7] if len(fields) > 7 else 0), sum(fields[:8])


def steal_pct(before: tuple[int, int], after: tuple[int, int]) -> float:
    """Return the share of the machine's CPU time stolen between two ``steal_ticks()`` readings, in %."""
    total = after[1] - before[1]
    return round(100 * (after[0] - before[0]) / total, 3) if total else 0.0


def commit() -> str:
    """Return the short hash of the checkout's HEAD (``"?"`` without git), for the JSON lines."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10)
        return out.stdout.strip()
    except OSError:
        return "?"


def valid(r: dict) -> bool:
    """Whether a run measured what its workload is about (see docs/benchmarks.md)."""
    if r.get("generator_bound") or r.get("steal_pct", 0) > STEAL_LIMIT_PCT or "error" in r:
        return False
    if r["workload"] == "w5":
        return r.get("churned", 0) > 0  # a server that answers nothing until a publish is not churned
    if r["workload"] not in IDLE:
        return r.get("updates", 0) > 0
    return True


def summary(results: list[dict]) -> str:
    """Medians per workload and peer (the default peers, then any variant that ran), with ratios."""
    ran = {r.get("peer") for r in results}
    peers = [p for p in PEERS if p in ran] + sorted(p for p in ran if p not in PEERS and p)
    lines = ["", "| workload | metric | " + " | ".join(peers) + " |", "|---|---|" + "---|" * len(peers)]
    for workload, key, label, higher_is_better in METRICS:
        medians = {}
        for peer in peers:
            values = [
                r[key]
                for r in results
                if r.get("peer") == peer and r.get("workload") == workload and valid(r) and key in r
            ]
            if values:
                medians[peer] = statistics.median(values)
        if not medians:
            continue
        ours = medians.get("pubsubsse")
        cells = []
        for peer in peers:
            if peer not in medians:
                cells.append("–")
                continue
            cell = f"{medians[peer]:.4g}"
            if ours and peer != "pubsubsse" and medians[peer]:
                ratio = ours / medians[peer] if higher_is_better else medians[peer] / ours
                cell += f" ({ratio:.2f}x)"
            cells.append(cell)
        lines.append(f"| {workload} | {label} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("Ratios are pubsubsse's advantage: >1 means pubsubsse is better on that metric.")
    left_out = [r for r in results if not valid(r)]
    if left_out:
        counts = Counter(f"{r['peer']} {r['workload']}" for r in left_out)
        lines.append(f"Left out ({len(left_out)} runs): " + ", ".join(f"{k} x{n}" for k, n in sorted(counts.items())))
    return "\n".join(lines)


if __name__ == "__main__":
    main()

"""Hosts, not just processes: three servers, Redis and the clients on five network namespaces.

Each server host runs gunicorn's gevent worker on the shared Redis log; the clients' host runs the
fault suite's subscribers and publisher (tests/hosts_driver.py). Then, one after another: a
server host cut off from Redis for 20 s and healed, a server host cut off from its clients for
10 s, and 5 % of the packets of a server host dropped for 20 s (nftables; this kernel has no
``tc netem``). After each, every subscriber has every applied message once, in order, or an
init message with a ``reset`` element in its gap; the streams of the host cut off from Redis
end, so their clients reconnect to another host.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid

import pytest

from .. import netns
from ..servers import ROOT

pytestmark = pytest.mark.skipif(netns.available() is not None, reason=str(netns.available()))

SERVERS = ["h1", "h2", "h3"]
PER_HOST = 20


@pytest.mark.timeout(600)
def test_hosts_cut_off_and_lossy_links_lose_nothing_silently():
    (ROOT / "artifacts").mkdir(exist_ok=True)
    hosts = netns.Hosts([*SERVERS, "redis", "clients"])
    processes: list[subprocess.Popen] = []
    driver = None
    report = []
    try:
        redis_address = hosts.addresses["redis"]
        redis = hosts.command("redis", "redis-server", "--bind", redis_address, "--port", "6379", "--save", "")
        redis += ["--appendonly", "no", "--protected-mode", "no"]  # its clients are on other hosts
        processes.append(subprocess.Popen(redis, stdout=subprocess.DEVNULL))
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "PUBSUBSSE_REDIS_URL": f"redis://{redis_address}:6379/0",
            "PUBSUBSSE_REDIS_KEY": f"t:{uuid.uuid4()}",
            "PUBSUBSSE_HEARTBEAT": "1",
            "PUBSUBSSE_CLIENT_TIMEOUT": "none",
            "PUBSUBSSE_REDIS_TIMEOUT": "1",
            "PUBSUBSSE_REDIS_ALIVE": "3",
        }
        for name in SERVERS:
            gunicorn = [sys.executable, "-m", "gunicorn", "-k", "gevent", "-w", "1", "--log-level", "warning"]
            bind = ["-b", f"{hosts.addresses[name]}:8000", "tests.server_app:create_app()"]
            log = open(ROOT / "artifacts" / f"hosts-{name}.log", "w")  # noqa: SIM115 - closed with the process
            processes.append(
                subprocess.Popen(hosts.command(name, *gunicorn, *bind), cwd=ROOT, env=env, stdout=log, stderr=log)
            )
        addresses = [hosts.addresses[name] for name in SERVERS]
        driver = subprocess.Popen(
            hosts.command(
                "clients",
                sys.executable,
                "-m",
                "tests.hosts_driver",
                *addresses,
                "--port",
                "8000",
                "--per-host",
                str(PER_HOST),
            ),
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

        def ask(command: str) -> dict:
            driver.stdin.write(command + "\n")
            driver.stdin.flush()
            line = driver.stdout.readline()
            assert line, f"the driver ended on {command!r}"
            return json.loads(line)

        started = ask("start")
        assert started == {"ready": True, "clients": PER_HOST * len(SERVERS)}, started
        baseline = ask("check baseline")
        report.append(baseline)
        assert baseline["silent_losses"] == 0 and not baseline["problems"], baseline

        faults = [
            ("h1 cut off from Redis for 20 s", lambda: hosts.cut("h1", "redis"), 20, "h1"),
            ("h2 cut off from its clients for 10 s", lambda: hosts.cut("h2", "clients"), 10, "h2"),
            ("5 % of h3's packets dropped for 20 s", lambda: hosts.lose("h3", 5), 20, "h3"),
        ]
        for name, inject, seconds, host in faults:
            before = report[-1]["connections"]
            inject()
            time.sleep(seconds)  # the fault's duration is what is tested
            during = ask("connections")["connections"] - before
            hosts.heal(host)
            figures = ask(f"check {name}")
            figures["reconnections_during"] = during
            figures["reconnections"] = figures["connections"] - before
            report.append(figures)
            print(figures)
            assert figures["silent_losses"] == 0 and not figures["problems"], figures
            assert figures["applied"] > 0, figures
        # The streams of the host cut off from Redis ended while it was cut off: its clients
        # reconnected elsewhere then, not once it was back.
        assert report[1]["reconnections_during"] >= PER_HOST, report[1]
        assert ask("stop") == {"stopped": True}
    finally:
        (ROOT / "artifacts").mkdir(exist_ok=True)
        (ROOT / "artifacts" / "hosts.json").write_text(json.dumps(report, indent=1))
        if driver is not None:
            driver.kill()
            driver.wait(10)
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
        hosts.remove()

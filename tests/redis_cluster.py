"""A private Redis Cluster on loopback: three masters with a replica each, started and stopped by the tests."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time


def _ping(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
        s.sendall(b"PING\r\n")
        return s.recv(64)


def _free_pair() -> int:
    """A port whose cluster bus port (port + 10000) is free too."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port + 10000 >= 65536:
            continue
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 10000))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair")


class RedisCluster:
    """Six ``redis-server --cluster-enabled yes`` nodes made one cluster with ``redis-cli --cluster create``.

    ``url`` names one node (a client finds the others). ``node_timeout`` (ms) is short, so a
    killed master's replica takes over within a few seconds.
    """

    def __init__(self, masters: int = 3, node_timeout: int = 1000) -> None:
        self.dir = tempfile.mkdtemp(prefix="pubsubsse-cluster-")
        self.node_timeout = node_timeout
        self.ports: list[int] = []
        self.procs: dict[int, subprocess.Popen] = {}
        for _ in range(2 * masters):
            port = _free_pair()
            self.ports.append(port)
            self.start_node(port)
        binary = shutil.which("redis-cli") or "/usr/bin/redis-cli"
        nodes = [f"127.0.0.1:{port}" for port in self.ports]
        subprocess.run(
            [binary, "--cluster", "create", *nodes, "--cluster-replicas", "1", "--cluster-yes"],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=60,
        )
        self.wait_ok()
        self.url = f"redis://127.0.0.1:{self.ports[0]}/0"

    def start_node(self, port: int) -> None:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        options = {
            "bind": "127.0.0.1",
            "port": str(port),
            "cluster-enabled": "yes",
            "cluster-config-file": f"nodes-{port}.conf",
            "cluster-node-timeout": str(self.node_timeout),
            "save": "",
            "appendonly": "no",
            "dir": self.dir,
            # Kept so that a failing test can show what the nodes decided (logs()).
            "logfile": f"node-{port}.log",
        }
        self.procs[port] = subprocess.Popen(
            [binary, *(part for name, value in options.items() for part in (f"--{name}", value))],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                if _ping(port).startswith(b"+PONG"):
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server on {port} did not start")
            time.sleep(0.02)

    def command(self, port: int, *args: str) -> str:
        binary = shutil.which("redis-cli") or "/usr/bin/redis-cli"
        return subprocess.run(
            [binary, "-p", str(port), *args], capture_output=True, text=True, timeout=10, check=False
        ).stdout

    def wait_ok(self, timeout: float = 30, replicas: bool = True) -> None:
        """Wait until every running node says the cluster is ok and knows the same masters (with a replica each)."""
        deadline = time.monotonic() + timeout
        while True:
            alive = [p for p, proc in self.procs.items() if proc.poll() is None]
            infos = [self.command(p, "cluster", "info") for p in alive]
            if (
                all("cluster_state:ok" in info for info in infos)
                and len({self._masters(p) for p in alive}) == 1
                and (not replicas or self._replicated(alive[0]))
            ):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the cluster is not ok: {infos}")
            time.sleep(0.1)

    def _replicated(self, port: int) -> bool:
        lines = self.command(port, "cluster", "nodes").splitlines()
        masters = {line.split()[0] for line in lines if "master" in line.split()[2] and "fail" not in line.split()[2]}
        served = {line.split()[3] for line in lines if "slave" in line.split()[2] and "connected" in line}
        synced = all(
            "master_link_status:up"
            in self.command(int(line.split()[1].split("@")[0].rpartition(":")[2]), "info", "replication")
            for line in lines
            if "slave" in line.split()[2] and "fail" not in line.split()[2]
        )
        return masters <= served and synced

    def _masters(self, port: int) -> frozenset[str]:
        lines = self.command(port, "cluster", "nodes").splitlines()
        return frozenset(
            line.split()[1].split("@")[0]
            for line in lines
            if "master" in line.split()[2] and "fail" not in line.split()[2]
        )

    def master_of(self, key: str) -> int:
        """The port of the master serving ``key``'s slot."""
        alive = next(p for p, proc in self.procs.items() if proc.poll() is None)
        slot = int(self.command(alive, "cluster", "keyslot", key).strip())
        for line in self.command(alive, "cluster", "nodes").splitlines():
            fields = line.split()
            if "master" not in fields[2] or "fail" in fields[2]:
                continue
            for part in fields[8:]:
                low, _, high = part.partition("-")
                if low.isdigit() and int(low) <= slot <= int(high or low):
                    return int(fields[1].split("@")[0].rpartition(":")[2])
        raise RuntimeError(f"no master serves slot {slot}")

    def replica_of(self, port: int) -> int:
        """The port of a replica of the master at ``port``."""
        lines = self.command(port, "cluster", "nodes").splitlines()
        master = next(line.split()[0] for line in lines if line.split()[1].split("@")[0].endswith(f":{port}"))
        for line in lines:
            fields = line.split()
            if "slave" in fields[2] and fields[3] == master:
                return int(fields[1].split("@")[0].rpartition(":")[2])
        raise RuntimeError(f"the master at {port} has no replica")

    def kill(self, port: int) -> None:
        """Kill a node (SIGKILL: no goodbye to the cluster)."""
        proc = self.procs[port]
        proc.kill()
        proc.wait(10)

    def logs(self, lines: int = 40) -> str:
        """The last ``lines`` lines of every node's log, for a failing test's report."""
        parts = []
        for port in self.ports:
            try:
                with open(f"{self.dir}/node-{port}.log", encoding="utf-8", errors="replace") as file:
                    tail = file.read().splitlines()[-lines:]
            except OSError as error:
                tail = [str(error)]
            parts.append(f"--- node {port} ---\n" + "\n".join(tail))
        return "\n".join(parts)

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(self.dir, ignore_errors=True)

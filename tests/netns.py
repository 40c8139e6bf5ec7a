"""Several "hosts" on this machine: network namespaces joined by veth pairs to a bridge.

Each host is a namespace with one interface, ``eth0``, addressed 127.77.0.N/24: loopback
addresses, so nothing the tests start can reach beyond the machine. Linux treats 127/8 as local
on every interface, so each namespace keeps only 127.0.0.1 local and routes the rest of 127.77.0/24
out of ``eth0`` (``route_localnet``). The bridge lives in a namespace of its own. Faults are
nftables rules inside a host (``tc netem`` is not offered by this kernel): a link to one address
dropped both ways, or a share of every packet dropped at random.

Needs root, ``ip`` (iproute2) and ``nft`` (nftables); everything is removed at the end.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid


def available() -> str | None:
    """Why hosts cannot be made here, or ``None`` if they can."""
    if os.geteuid() != 0:
        return "needs root (ip netns)"
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            return f"needs {tool} (Debian: iproute2, nftables)"
    return None


def _run(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, timeout=20)


class Hosts:
    """Hosts named as given, each at 127.77.0.N (N from 1, in order), on one bridge."""

    def __init__(self, names: list[str]) -> None:
        self.tag = uuid.uuid4().hex[:6]
        self.switch = f"psw-{self.tag}"
        self.names = {name: f"ps{name}-{self.tag}" for name in names}
        self.addresses = {name: f"127.77.0.{i}" for i, name in enumerate(names, 1)}
        self.made: list[str] = []
        try:
            self._make()
        except BaseException:
            self.remove()
            raise

    def _make(self) -> None:
        _run("ip", "netns", "add", self.switch)
        self.made.append(self.switch)
        _run("ip", "-n", self.switch, "link", "add", "br0", "type", "bridge")
        _run("ip", "-n", self.switch, "link", "set", "br0", "up")
        for i, (name, ns) in enumerate(self.names.items(), 1):
            _run("ip", "netns", "add", ns)
            self.made.append(ns)
            outside = f"pv{i}{self.tag}"
            _run("ip", "link", "add", outside, "type", "veth", "peer", "name", "eth0", "netns", ns)
            _run("ip", "link", "set", outside, "netns", self.switch)
            _run("ip", "-n", self.switch, "link", "set", outside, "master", "br0")
            _run("ip", "-n", self.switch, "link", "set", outside, "up")
            inside = ("ip", "netns", "exec", ns)
            _run(*inside, "ip", "link", "set", "lo", "up")
            _run(*inside, "sysctl", "-qw", "net.ipv4.conf.all.route_localnet=1")
            _run(*inside, "ip", "route", "del", "127.0.0.0/8", "dev", "lo", "table", "local")
            _run(*inside, "ip", "addr", "add", f"{self.addresses[name]}/24", "dev", "eth0")
            _run(*inside, "ip", "link", "set", "eth0", "up")
            _run(*inside, "sysctl", "-qw", "net.ipv4.conf.eth0.route_localnet=1")

    def command(self, name: str, *args: str) -> list[str]:
        """The command line that runs ``args`` on host ``name``."""
        return ["ip", "netns", "exec", self.names[name], *args]

    def cut(self, name: str, peer: str) -> None:
        """Drop every packet between host ``name`` and host ``peer``, both ways."""
        address = self.addresses[peer]
        self._rules(name, f"ip saddr {address} drop", f"ip daddr {address} drop")

    def lose(self, name: str, percent: int) -> None:
        """Drop ``percent`` % of the packets host ``name`` sends and receives, at random."""
        rule = f"numgen random mod 100 < {percent} drop"
        self._rules(name, rule, rule)

    def heal(self, name: str) -> None:
        """Remove the faults of host ``name``."""
        subprocess.run(self.command(name, "nft", "delete", "table", "inet", "fault"), capture_output=True, timeout=20)

    def _rules(self, name: str, incoming: str, outgoing: str) -> None:
        script = (
            "table inet fault {\n"
            f"  chain in {{ type filter hook input priority 0; {incoming}; }}\n"
            f"  chain out {{ type filter hook output priority 0; {outgoing}; }}\n"
            "}\n"
        )
        subprocess.run(self.command(name, "nft", "-f", "-"), input=script.encode(), check=True, timeout=20)

    def remove(self) -> None:
        """Remove every namespace (their interfaces go with them)."""
        for ns in reversed(self.made):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=20)
        self.made = []

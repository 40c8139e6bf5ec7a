"""Finding a Redis Cluster's nodes: URLs that name several, and the master of a slot.

redis-py's URLs name one host; a cluster's seed list names several, comma-separated
(``redis://user:pw@host-a:7000,host-b:7001/0``). They are split by hand: ``urlsplit`` refuses a
list of hosts with an IPv6 one after the first (on some Python 3.11 releases).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

__all__ = ["parts", "nodes_of", "without_credentials", "at_node", "slot_master", "replica_online"]


def parts(url: str) -> tuple[str, str, str, str]:
    """Split ``url`` into what comes before its hosts, its credentials (with ``@``), its hosts, and the rest."""
    scheme, separator, rest = url.partition("://")
    ends = [i for i in (rest.find(c) for c in "/?#") if i >= 0]
    netloc, tail = rest[: min(ends, default=len(rest))], rest[min(ends, default=len(rest)) :]
    userinfo, at, hosts = netloc.rpartition("@")
    return scheme + separator, userinfo + at, hosts, tail


def nodes_of(url: str) -> list[tuple[str, int]]:
    """Return the nodes a URL names: ``redis://user:pw@host-a:7000,host-b:7001/0`` names two."""
    nodes = []
    for part in parts(url)[2].split(","):
        if not part:
            raise ValueError(f"an empty node in the Redis URL {without_credentials(url)}")
        node = urlsplit(f"//{part}")
        try:
            port = node.port
        except ValueError as error:
            raise ValueError(f"a node's port in the Redis URL {without_credentials(url)}: {error}") from None
        nodes.append((node.hostname or "127.0.0.1", port or 6379))
    return nodes


def without_credentials(url: str) -> str:
    """Return ``url`` without its credentials, for messages."""
    before, _, hosts, tail = parts(url)
    return before + hosts + tail


def at_node(url: str, host: str, port: int) -> str:
    """Return ``url`` (its scheme, credentials and options) pointed at ``host:port``."""
    before, credentials, _, tail = parts(url)
    host = f"[{host}]" if ":" in host else host
    return f"{before}{credentials}{host}:{port}{tail}"


def slot_master(url: str, nodes: list[tuple[str, int]], slot: int) -> tuple[str, int] | None:
    """Return the master serving ``slot`` as the first of ``nodes`` that answers sees it (``CLUSTER SLOTS``).

    ``nodes`` is extended with every node the answers name. ``None``: no node answered with a
    view of the slot (none reachable, or not joined yet, or cut off).
    """
    import redis

    for host, port in list(nodes):
        probe = redis.Redis.from_url(
            at_node(url, host, port), socket_timeout=1.0, socket_connect_timeout=1.0, protocol=2
        )
        try:
            ranges: list[Any] = probe.execute_command("CLUSTER", "SLOTS") or []  # type: ignore[no-untyped-call]
        except (redis.RedisError, OSError):
            continue
        finally:
            probe.close()
        master = None
        for start, end, *served_by in ranges:
            # A node: [host, port, id, ...]; an empty host is the node that answered.
            addresses = [(bytes(node[0]).decode() or host, int(node[1])) for node in served_by]
            nodes += [address for address in addresses if address not in nodes]
            if start <= slot <= end:
                master = addresses[0]
        if master is not None:
            return master
    return None


def replica_online(client: Any) -> bool:
    """Whether the master ``client`` talks to has a replica online that acknowledged within the last second.

    Such a replica missed one ``WAIT`` by being slow (just resynced, a busy machine), not by being
    gone: appends go on waiting for it, so that a failover does not lose them. Never raises: it
    runs after an append that went through, and only decides whether the next ones wait.
    """
    import redis

    try:
        info = client.info("replication")
    except (redis.RedisError, OSError):
        return False
    return any(
        isinstance(replica, dict) and replica.get("state") == "online" and str(replica.get("lag")) in ("0", "1")
        for name, replica in info.items()
        if name.startswith("slave")
    )

r"""The bytes of a snapshot: a service's state at one position of a shared log.

Format 2 (the number says what a reader must understand)::

    PSSE-SNAPSHOT 2\\n
    <header: JSON object>\\n
    <topics and groups: JSON object>\\n
    then per slice of items (topics' histories, then clients):
    <JSON list of objects, each with "bodies": [body length, or [body number]]>\\n
    <the bodies of the slice that came first here, concatenated>

The bodies are the encoded messages exactly as the clients got them (compact
JSON), copied as bytes: nothing is decoded or escaped, so a snapshot costs
little more than the bytes it holds. A body held more than once (the same
system message in many clients' journals) is stored once: its length where it
first occurs, then ``[n]``, its number among the bodies stored so far. Loading
a snapshot shares that body again, so a process booting from it holds what the
running ones hold.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

from pubsubsse.backends._entries import compact_json
from pubsubsse.backends.base import StateItem

__all__ = ["Snapshot", "encode", "decode"]

MAGIC = b"PSSE-SNAPSHOT 2\n"


class Snapshot:
    """A decoded snapshot: its header, the topics and groups, and the clients."""

    __slots__ = ("header", "groups", "clients")

    def __init__(self, header: dict[str, Any], groups: dict[str, Any], clients: list[StateItem]) -> None:
        #: ``position`` ([int, int]), ``epoch``, ``origins`` (see LogBackend) and ``format``.
        self.header = header
        self.groups = groups
        #: The topics' histories and the clients, each with its bodies.
        self.clients = clients


def encode(header: dict[str, Any], slices: Iterable[dict[str, Any] | list[StateItem]]) -> Iterator[bytes]:
    """Yield the pieces of a format 2 snapshot; ``slices`` as :meth:`Replica.export_state` yields them.

    A generator, so that the caller can pause between slices (the state is
    read slice by slice, the lock held only while a slice is copied).
    """
    parts = iter(slices)
    yield MAGIC
    yield compact_json({**header, "format": 2}) + b"\n"
    yield compact_json(next(parts)) + b"\n"
    numbers: dict[int, int] = {}  # id() of a body stored already -> its number
    stored: list[bytes] = []  # holds them, so that no id() is reused while this runs
    for part in parts:
        assert isinstance(part, list)
        described = []
        bodies: list[bytes] = []
        for data, held in part:
            refs: list[int | list[int]] = []
            for body in held:
                number = numbers.get(id(body))
                if number is None:
                    numbers[id(body)] = len(stored)
                    stored.append(body)
                    bodies.append(body)
                    refs.append(len(body))
                else:
                    refs.append([number])
            described.append({**data, "bodies": refs})
        yield compact_json(described) + b"\n" + b"".join(bodies)


def decode(blob: bytes) -> Snapshot:
    """Return the snapshot in ``blob``; raise :class:`ValueError` if it is not one this version reads."""
    if not blob.startswith(MAGIC):
        raise ValueError("not a pubsubsse snapshot of format 2")
    view = memoryview(blob)
    at = len(MAGIC)

    def line() -> Any:
        nonlocal at
        end = blob.index(b"\n", at)
        value = json.loads(view[at:end].tobytes())
        at = end + 1
        return value

    header = line()
    groups = line()
    clients: list[StateItem] = []
    stored: list[bytes] = []
    while at < len(blob):
        for data in line():
            held = []
            for item in data.pop("bodies"):
                if isinstance(item, list):
                    held.append(stored[item[0]])
                    continue
                body = view[at : at + item].tobytes()
                at += item
                stored.append(body)
                held.append(body)
            clients.append((data, held))
    return Snapshot(header, groups, clients)

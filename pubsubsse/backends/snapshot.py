r"""The bytes of a snapshot: a service's state at one position of a shared log.

Format 2, written by this version::

    PSSE-SNAPSHOT 2\\n
    <header: JSON object>\\n
    <topics and groups: JSON object>\\n
    then per slice of clients:
    <JSON list of client objects, each with "replay": [body length, or [body number]]>\\n
    <the replay bodies of the slice that came first here, concatenated>

The replay bodies are the encoded messages exactly as the clients got them
(compact JSON), copied as bytes: nothing is decoded or escaped, so a snapshot
costs little more than the bytes it holds. A body that many clients hold (a
publish to 6,000 subscribers is one body in every replay buffer) is stored
once: its length where it first occurs, then ``[n]``, its number among the
bodies stored so far. Loading a snapshot gives those clients one shared body
too, so a process booting from it holds what the running ones hold. Format 1 (pubsubsse 0.1.0) is one
JSON object ``{"position": ..., "state": ...}`` with the bodies as strings;
it is still read, and written while a process of that version is live.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any, cast

from .base import ClientState

__all__ = ["Snapshot", "encode", "decode", "encode_legacy"]

MAGIC = b"PSSE-SNAPSHOT 2\n"


class Snapshot:
    """A decoded snapshot: its header, the topics and groups, and the clients."""

    __slots__ = ("header", "groups", "clients")

    def __init__(self, header: dict[str, Any], groups: dict[str, Any], clients: list[ClientState]) -> None:
        #: ``position`` ([int, int]), ``epoch``, ``origins`` (see LogBackend) and ``format``.
        self.header = header
        self.groups = groups
        self.clients = clients


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def encode(header: dict[str, Any], slices: Iterable[dict[str, Any] | list[ClientState]]) -> Iterator[bytes]:
    """Yield the pieces of a format 2 snapshot; ``slices`` as :meth:`Replica.export_state` yields them.

    A generator, so that the caller can pause between slices (the state is
    read slice by slice, the lock held only while a slice is copied).
    """
    parts = iter(slices)
    yield MAGIC
    yield _dumps({**header, "format": 2}) + b"\n"
    yield _dumps(next(parts)) + b"\n"
    numbers: dict[int, int] = {}  # id() of a body stored already -> its number
    stored: list[bytes] = []  # holds them, so that no id() is reused while this runs
    for part in parts:
        assert isinstance(part, list)
        described = []
        bodies: list[bytes] = []
        for data, replay in part:
            refs: list[int | list[int]] = []
            for body in replay:
                number = numbers.get(id(body))
                if number is None:
                    numbers[id(body)] = len(stored)
                    stored.append(body)
                    bodies.append(body)
                    refs.append(len(body))
                else:
                    refs.append([number])
            described.append({**data, "replay": refs})
        yield _dumps(described) + b"\n" + b"".join(bodies)


def decode(blob: bytes) -> Snapshot:
    """Return the snapshot in ``blob`` (format 2 or 1); raise :class:`ValueError` if it is neither."""
    if not blob.startswith(MAGIC):
        return _decode_legacy(blob)
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
    clients: list[ClientState] = []
    stored: list[bytes] = []
    while at < len(blob):
        for data in line():
            replay = []
            for item in data.pop("replay"):
                if isinstance(item, list):
                    replay.append(stored[item[0]])
                    continue
                body = view[at : at + item].tobytes()
                at += item
                stored.append(body)
                replay.append(body)
            clients.append((data, replay))
    return Snapshot(header, groups, clients)


def _decode_legacy(blob: bytes) -> Snapshot:
    saved = json.loads(blob)
    state = saved["state"]
    clients = [
        ({k: v for k, v in c.items() if k != "replay"}, [b.encode("utf-8") for b in c["replay"]])
        for c in state["clients"]
    ]
    milliseconds, _, sequence = saved["position"].partition("-")
    header = {"format": 1, "position": [int(milliseconds), int(sequence or 0)], "epoch": None, "origins": {}}
    return Snapshot(header, {"public": state["public"], "groups": state["groups"]}, clients)


def encode_legacy(position: str, slices: Iterable[dict[str, Any] | list[ClientState]]) -> bytes:
    """Return a format 1 snapshot, for a log that a pubsubsse 0.1.0 process still reads."""
    parts = iter(slices)
    state: dict[str, Any] = dict(cast("dict[str, Any]", next(parts)))  # the first slice: groups and topics
    state["clients"] = [
        {**data, "replay": [b.decode("utf-8") for b in replay]}
        for part in parts
        for data, replay in cast("list[ClientState]", part)
    ]
    return json.dumps({"position": position, "state": state}).encode("utf-8")

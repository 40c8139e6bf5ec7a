"""A strict SSE parser for the core tests (the HTTP tests use third-party clients)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Parsed:
    events: list[tuple[str, Any]] = field(default_factory=list)  # (id, decoded JSON)
    comments: int = 0
    retry: int | None = None

    @property
    def ids(self) -> list[int]:
        return [int(i) for i, _ in self.events]

    @property
    def messages(self) -> list[Any]:
        return [m for _, m in self.events]


def parse(raw: bytes) -> Parsed:
    """Parse SSE bytes; every event must be complete and carry exactly one id and one data line."""
    text = raw.decode("utf-8")
    assert not text.startswith("\ufeff"), "BOM"
    assert "\r" not in text, "CR in stream"
    out = Parsed()
    fields: dict[str, str] = {}
    assert text == "" or text.endswith("\n"), "incomplete line"
    for line in text.split("\n")[:-1]:
        if line == "":
            assert set(fields) == {"id", "data"}, f"event with fields {sorted(fields)}"
            out.events.append((fields["id"], json.loads(fields["data"])))
            fields = {}
        elif line.startswith(":"):
            assert line == ":", line
            out.comments += 1
        else:
            name, _, value = line.partition(": ")
            if name == "retry":
                out.retry = int(value)
                continue
            assert name in ("id", "data") and name not in fields, line
            fields[name] = value
    assert not fields, "event not terminated by a blank line"
    return out


def ready(stream) -> bytes:
    """Everything the stream (or shared stream) has ready now. Never blocks."""
    raw = b""
    while True:
        chunk = stream.read(timeout=0)
        if not chunk:
            break
        raw += chunk
    return raw


def drain(stream) -> Parsed:
    """Everything the stream has ready now, parsed. Never blocks."""
    return parse(ready(stream))


def parse_shared(raw: bytes) -> list[tuple[str, str | None, Any]]:
    """Parse a shared stream strictly: ``(event type, id or None, decoded JSON)`` per event.

    Client events carry ``event: c<i>``, ``id:`` and ``data:``; ``end`` notices carry no id.
    """
    text = raw.decode("utf-8")
    assert "\r" not in text and (text == "" or text.endswith("\n")), "bad framing"
    out: list[tuple[str, str | None, Any]] = []
    fields: dict[str, str] = {}
    for line in text.split("\n")[:-1]:
        if line == "":
            kind = fields.get("event", "")
            expected = {"event", "data"} if kind == "end" else {"event", "id", "data"}
            assert set(fields) == expected and (kind == "end" or kind[:1] == "c"), f"event with {fields}"
            out.append((kind, fields.get("id"), json.loads(fields["data"])))
            fields = {}
        elif line.startswith(":"):
            assert line == ":", line
        else:
            name, _, value = line.partition(": ")
            if name == "retry":
                continue
            assert name in ("event", "id", "data") and name not in fields, line
            fields[name] = value
    assert not fields, "event not terminated by a blank line"
    return out


def drain_shared(stream) -> list[tuple[str, str | None, Any]]:
    """Everything a shared stream has ready now, parsed. Never blocks."""
    return parse_shared(ready(stream))


def is_init(message: dict[str, Any]) -> bool:
    """An init message: the client's state (topics, then subscribed), with or without a ``reset`` element."""
    kinds = [item["type"] for item in message["sys"] or []]
    return message["updates"] is None and kinds in (["topics", "subscribed"], ["topics", "subscribed", "reset"])


def is_reset(message: dict[str, Any]) -> bool:
    """An init message that says messages may have been missed (a resume that could not be served)."""
    return is_init(message) and message["sys"][-1]["type"] == "reset"


@dataclass
class Dispatched:
    """What an EventSource does with a stream: the events it fires, and its last event id at the end."""

    events: list[tuple[str, str, str]] = field(default_factory=list)  # (type, data, lastEventId)
    last_event_id: str = ""


def dispatch(raw: bytes) -> Dispatched:
    """Interpret SSE bytes as the HTML standard's EventSource does (fields, bare ids, multi-line data)."""
    out = Dispatched()
    kind, data, last_id = "", [], ""
    text = raw.decode("utf-8")
    assert text == "" or text.endswith("\n"), "incomplete line"
    for line in text.replace("\r\n", "\n").split("\n")[:-1]:
        if line == "":  # dispatch: the id is taken even when no event fires
            out.last_event_id = last_id
            if data:
                out.events.append((kind or "message", "\n".join(data), last_id))
            kind, data = "", []
        elif line.startswith(":"):
            continue
        else:
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "event":
                kind = value
            elif name == "data":
                data.append(value)
            elif name == "id":
                last_id = value
            else:
                assert name == "retry", line
    return out

"""Fragments: HTML rendered once on the server, as the value published for htmx and Turbo pages (see the package)."""

from __future__ import annotations

import html as _html
import logging
import re
import threading
from collections.abc import Callable
from typing import Any

__all__ = [
    "TURBO_ACTIONS",
    "Refresher",
    "fragment",
    "htmx_oob",
    "is_fragment",
    "markup",
    "turbo",
    "turbo_stream",
]

log = logging.getLogger(__name__)

#: The Turbo Stream actions :func:`turbo_stream` makes. ``remove`` and ``refresh`` carry no HTML.
TURBO_ACTIONS = frozenset({"append", "prepend", "replace", "update", "remove", "before", "after", "refresh"})


def markup(html: Any) -> Any:
    """Return the text of rendered HTML: markupsafe's ``Markup`` (anything with ``__html__``) as its HTML."""
    return html.__html__() if hasattr(html, "__html__") else html


def _check_event_name(event: str) -> None:
    if not isinstance(event, str) or not event or any(c in event for c in "\r\n:"):
        raise ValueError(f"a fragment's event must be a non-empty name without ':' or line breaks, got {event!r}")


def fragment(html: Any, event: str = "message") -> dict[str, str]:
    """Return the value to publish for an HTML fragment: sent on HTML streams as an event named ``event``.

    ``html`` is the rendered text (a ``str``, or markupsafe's ``Markup``);
    ``event`` is the name a page listens for (``sse-swap="event"``), ``message``
    for Turbo. An empty ``html`` is a valid fragment: swapped with
    ``hx-swap="outerHTML"``, it removes the element. Raises :class:`ValueError`
    for an event name that is empty or holds ``:`` or a line break, and
    :class:`TypeError` if ``html`` is not text.
    """
    _check_event_name(event)
    text = markup(html)
    if not isinstance(text, str):
        raise TypeError(f"a fragment's html must be text, got {type(html).__name__}")
    return {"event": event, "html": text}


def is_fragment(value: Any) -> bool:
    """Whether ``value`` has the shape of a fragment: a dict of exactly ``event`` and ``html``, both text."""
    return (
        type(value) is dict
        and len(value) == 2
        and isinstance(value.get("event"), str)
        and isinstance(value.get("html"), str)
    )


def turbo_stream(action: str, target: str | None = None, html: Any = "", *, targets: str | None = None) -> str:
    """Return a ``<turbo-stream>`` element: ``action`` on the element whose id is ``target``.

    ``targets`` (a CSS selector) replaces ``target`` to act on several
    elements; ``refresh`` takes neither. ``html`` is the rendered content of the
    ``<template>`` (ignored by ``remove`` and ``refresh``). Raises
    :class:`ValueError` for an unknown action or a missing target.
    """
    if action not in TURBO_ACTIONS:
        raise ValueError(f"unknown Turbo Stream action {action!r}; one of {sorted(TURBO_ACTIONS)}")
    if action == "refresh":
        return '<turbo-stream action="refresh"></turbo-stream>'
    if (target is None) == (targets is None):
        raise ValueError("give exactly one of target (an element id) and targets (a CSS selector)")
    where = f'target="{_html.escape(target)}"' if target is not None else f'targets="{_html.escape(targets or "")}"'
    if action == "remove":
        return f'<turbo-stream action="remove" {where}></turbo-stream>'
    text = str(markup(html))
    return f'<turbo-stream action="{action}" {where}><template>{text}</template></turbo-stream>'


_ROOT_TAG = re.compile(r"^\s*(?:<!--.*?-->\s*)*<([A-Za-z][A-Za-z0-9:-]*)", re.S)


def htmx_oob(swap: str, target: str, html: Any = "") -> str:
    """Return an htmx out-of-band swap: ``html`` swapped into the element whose id is ``target``.

    Publish it in a fragment whose event a stable element of the page swaps
    with ``hx-swap="none"`` (``<div sse-swap="todos" hx-swap="none" hidden>``):
    htmx then performs the out-of-band swap, so no element that swaps itself
    can miss an event while htmx settles its replacement. ``swap`` is an htmx
    swap style: ``outerHTML`` (``html`` must be one element, which replaces the
    target; the instruction goes on it), ``delete`` (no ``html``), or another
    (``beforeend``, ``afterbegin``, ``innerHTML``...: ``html`` goes in a ``div``
    whose content is swapped). Raises :class:`ValueError` for an ``outerHTML``
    whose ``html`` does not start with an element.
    """
    selector = "#" + _html.escape(target)
    text = str(markup(html))
    if swap == "delete":
        return f'<div hx-swap-oob="delete:{selector}"></div>'
    if swap == "outerHTML":
        root = _ROOT_TAG.match(text)
        if root is None:
            raise ValueError("an outerHTML swap needs HTML that starts with an element")
        return f'{text[: root.end()]} hx-swap-oob="outerHTML:{selector}"{text[root.end() :]}'
    return f'<div hx-swap-oob="{_html.escape(swap)}:{selector}">{text}</div>'


def turbo(action: str, target: str | None = None, html: Any = "", *, targets: str | None = None) -> dict[str, str]:
    """Return the fragment to publish for one Turbo Stream action (see :func:`turbo_stream`)."""
    return fragment(turbo_stream(action, target, html, targets=targets))


class Refresher:
    """Debounced Turbo ``refresh`` actions: many changes in a burst send one refresh.

    ``publish`` is called with the refresh fragment (for example
    ``lambda value: pubsub.publish("todos", value)``). Calling it asks for
    a refresh: the first call after a quiet period publishes ``interval``
    seconds later, and the calls until then join it, so a page reloads at most
    once per ``interval`` and always after the last change of a burst. A
    publish that fails is logged and the next call tries again.
    """

    def __init__(self, publish: Callable[[dict[str, str]], object], interval: float = 0.5) -> None:
        if interval < 0:
            raise ValueError(f"interval must be >= 0, got {interval!r}")
        self._publish = publish
        self.interval = interval
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        #: How many refreshes were published (and asked for): a burst counts once in the first.
        self.published = 0
        self.requested = 0

    def __call__(self) -> None:
        """Ask for a refresh: published within ``interval`` seconds, once for every call until then."""
        with self._lock:
            self.requested += 1
            if self._timer is not None:
                return
            self._timer = threading.Timer(self.interval, self._fire)
            self._timer.daemon = True
            self._timer.start()

    def _fire(self) -> None:
        with self._lock:
            self._timer = None
        try:
            self._publish(turbo("refresh"))
        except Exception:
            log.exception("pubsubsse: a debounced refresh could not be published")
            return
        with self._lock:
            self.published += 1

    def flush(self) -> None:
        """Publish a refresh now if one is waiting (at shutdown, or in a test)."""
        with self._lock:
            timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
            self._fire()

"""Model broadcasts: a model's changes, rendered once each, published with the transaction (see the package)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from pubsubsse.html._fragments import Refresher, fragment, htmx_oob, markup, turbo

if TYPE_CHECKING:
    from pubsubsse.service import SSEPubSubService

__all__ = ["CHANGES", "STYLES", "Broadcast", "dom_id", "sqlalchemy_broadcasts"]

log = logging.getLogger(__name__)

#: The kinds of change a broadcast turns into fragments.
CHANGES = ("created", "updated", "deleted")
#: The styles of :class:`Broadcast`.
STYLES = ("turbo", "htmx", "refresh")


def dom_id(instance: Any, key: Any = None) -> str:
    """Return the id of a row's element, as Rails' ``dom_id``: ``"todo_7"`` for a ``Todo`` whose key is 7.

    ``key`` is the row's primary key (``instance.pk``, else ``instance.id``, if ``None``).
    """
    if key is None:
        key = getattr(instance, "pk", None)
        if key is None:
            key = getattr(instance, "id", None)
    return f"{type(instance).__name__.lower()}_{key}"


class Broadcast:
    """How the changes of one model become the fragments published to ``topic``.

    ``render`` renders the row's template; it gets ``{"object": row, <name>:
    row}`` where ``<name>`` is the model's name in lower case (``todo``).
    ``target`` is the id of the list element (default: the model's name in
    lower case plus ``s``); ``key`` returns a row's element id (default
    :func:`dom_id`). ``interval`` is the debounce of the ``"refresh"`` style.
    Raises :class:`ValueError` for an unknown style, or a style that renders
    without ``render``.
    """

    def __init__(
        self,
        model: type,
        topic: str,
        render: Callable[[Mapping[str, Any]], Any] | None = None,
        *,
        style: str = "turbo",
        target: str | None = None,
        key: Callable[[Any], str] = dom_id,
        interval: float = 0.5,
    ) -> None:
        if style not in STYLES:
            raise ValueError(f"style must be one of {STYLES}, got {style!r}")
        if render is None and style != "refresh":
            raise ValueError(f"the {style!r} style renders a template: give one")
        self.model = model
        self.topic = topic
        self.style = style
        self.target = target or model.__name__.lower() + "s"
        self._render = render
        self._key = key
        self._name = model.__name__.lower()
        self.interval = interval

    def render(self, instance: Any) -> str:
        """Render ``instance`` with the model's template (once per change: every page gets the same text)."""
        assert self._render is not None
        out = self._render({"object": instance, self._name: instance})
        return str(markup(out))

    def fragments(self, instance: Any, change: str) -> list[dict[str, str]]:
        """Return what to publish for a change of ``instance`` (``created``, ``updated`` or ``deleted``).

        Empty for the ``"refresh"`` style, whose refreshes are debounced instead.
        """
        if change not in CHANGES:
            raise ValueError(f"change must be one of {CHANGES}, got {change!r}")
        if self.style == "refresh":
            return []
        element = self._key(instance)
        if self.style == "turbo":
            if change == "deleted":
                return [turbo("remove", element)]
            if change == "created":
                return [turbo("append", self.target, self.render(instance))]
            return [turbo("replace", element, self.render(instance))]
        if change == "created":
            html = htmx_oob("beforeend", self.target, self.render(instance))
        elif change == "updated":
            html = htmx_oob("outerHTML", element, self.render(instance))
        else:
            html = htmx_oob("delete", element)
        return [fragment(html, self.target)]

    def refresher(self, publish: Callable[[dict[str, str]], object]) -> Refresher:
        """Return the debounced refresh of the ``"refresh"`` style, publishing with ``publish``."""
        return Refresher(publish, self.interval)


# -- SQLAlchemy ---------------------------------------------------------------------------------

_CHANGED = "pubsubsse.broadcast_changed"


def sqlalchemy_broadcasts(service: SSEPubSubService, broadcast: Broadcast, session: Any = None) -> Callable[[], None]:
    """Broadcast the changes of ``broadcast.model`` made through SQLAlchemy sessions; return a function that stops it.

    ``session`` is what to listen on: a ``Session`` class, a ``sessionmaker``
    or a ``scoped_session`` (default: every ``Session``). At each flush the
    changed rows are rendered (their values are current then) and published
    with the session's transaction (:func:`pubsubsse.transactions.publish_with_session`):
    in it with the PostgreSQL backend on the same database, else right after
    the commit; nothing if it rolls back. The ``"refresh"`` style asks for its
    debounced refresh after a commit that changed the model.
    """
    from sqlalchemy import event
    from sqlalchemy.orm import Session, scoped_session

    from pubsubsse.transactions import publish_with_session

    target = session if session is not None else Session
    if isinstance(target, scoped_session):
        target = target.session_factory
    refresh = broadcast.refresher(lambda value: service.publish(broadcast.topic, value))

    def after_flush(flushed: Any, context: Any) -> None:
        changes = [
            *((row, "created") for row in flushed.new if isinstance(row, broadcast.model)),
            *(
                (row, "updated")
                for row in flushed.dirty
                if isinstance(row, broadcast.model) and flushed.is_modified(row, include_collections=False)
            ),
            *((row, "deleted") for row in flushed.deleted if isinstance(row, broadcast.model)),
        ]
        if not changes:
            return
        if broadcast.style == "refresh":
            flushed.info[_CHANGED] = True
            return
        for row, change in changes:
            for value in broadcast.fragments(row, change):
                publish_with_session(service, broadcast.topic, value, flushed)

    def after_commit(committed: Any) -> None:
        if committed.info.pop(_CHANGED, False):
            refresh()

    def after_rollback(rolled_back: Any) -> None:
        rolled_back.info.pop(_CHANGED, None)

    hooks: list[tuple[str, Callable[..., None]]] = [
        ("after_flush", after_flush),
        ("after_commit", after_commit),
        ("after_rollback", after_rollback),
    ]
    for name, hook in hooks:
        event.listen(target, name, hook)

    def stop() -> None:
        for name, hook in hooks:
            event.remove(target, name, hook)
        refresh.flush()

    return stop

"""Event managers: the ``on_*`` attributes of services, clients, topics and groups.

Each :class:`EventManager` wraps one anonymous :class:`blinker.Signal`. The
wrapper adds what blinker leaves to its users: listener ids (``E-…``), strong
references (a lambda keeps firing until removed), a lock around the receiver
table, and isolation (an exception in one listener is logged and the others
still run).
"""

from __future__ import annotations

import logging
import threading
import uuid
from typing import Any, Callable, Generic, TypeVar

from blinker import Signal

__all__ = ["EventManager"]

log = logging.getLogger(__name__)

T = TypeVar("T")


class _Listener:
    """A blinker receiver that calls the user's function with the event item.

    blinker passes the item as its ``sender`` argument; the wrapper drops the
    keyword arguments blinker adds and contains the listener's exceptions.
    """

    __slots__ = ("fn", "listener_id", "event_name")

    def __init__(self, fn: Callable[[Any], Any], listener_id: str, event_name: str) -> None:
        self.fn = fn
        self.listener_id = listener_id
        self.event_name = event_name

    def __call__(self, item: Any) -> None:
        try:
            self.fn(item)
        except Exception:
            log.exception(
                "listener %s of %s raised; the other listeners still run",
                self.listener_id,
                self.event_name,
            )


class EventManager(Generic[T]):
    """Listeners for one kind of event, such as ``client.on_sub_to_topic``.

    Listeners run synchronously in the thread or greenlet that made the change,
    after the change is complete and while no lock of the library is held, so a
    listener may call any API method. Exceptions in listeners are logged with
    their traceback and never reach the code that made the change.
    """

    __slots__ = ("_name", "_signal", "_listeners", "_lock")

    def __init__(self, name: str = "event") -> None:
        self._name = name
        self._signal = Signal()
        self._listeners: dict[str, _Listener] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<EventManager {self._name} listeners={len(self._listeners)}>"

    def listen(self, fn: Callable[[T], Any]) -> str:
        """Call ``fn(item)`` on every emission; return the listener's ``E-…`` id.

        The function is held strongly: it keeps firing until :meth:`remove` is
        called with the returned id.
        """
        if not callable(fn):
            raise TypeError(f"listen() needs a callable, got {type(fn).__name__}")
        listener_id = f"E-{uuid.uuid4()}"
        listener = _Listener(fn, listener_id, self._name)
        with self._lock:
            self._listeners[listener_id] = listener
            self._signal.connect(listener, weak=False)
        return listener_id

    def remove(self, listener_id: str) -> None:
        """Stop calling the listener with this id. Unknown ids are ignored."""
        with self._lock:
            listener = self._listeners.pop(listener_id, None)
            if listener is not None:
                self._signal.disconnect(listener)

    def get_listeners(self) -> list[str]:
        """Return the ids of the current listeners, oldest first."""
        with self._lock:
            return list(self._listeners)

    def emit(self, item: T) -> None:
        """Call every listener with ``item``.

        The receiver list is copied under the lock and called outside it, so a
        listener may add or remove listeners (of this or any manager) while the
        event is being delivered.
        """
        if not self._listeners:
            return
        with self._lock:
            receivers = list(self._signal.receivers_for(item))
        for receiver in receivers:
            receiver(item)

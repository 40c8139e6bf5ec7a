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
from typing import Any, Callable, Generic, TypeVar, overload

from blinker import Signal

__all__ = ["EventManager", "EventAttribute", "emit"]

log = logging.getLogger(__name__)

T = TypeVar("T")

_lock = threading.Lock()


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
    their traceback and never reach the code that made the change. Listeners are
    called in no particular order.
    """

    # Every client, topic and group carries up to thirteen managers and most of them never get a
    # listener: the blinker signal and the listener table are created on the first listen(), and
    # one module-wide lock (held only to change or copy a table) serves them all.
    __slots__ = ("_name", "_signal", "_listeners")

    def __init__(self, name: str = "event") -> None:
        self._name = name
        self._signal: Signal | None = None
        self._listeners: dict[str, _Listener] | None = None

    def __repr__(self) -> str:
        return f"<EventManager {self._name} listeners={len(self._listeners or ())}>"

    def listen(self, fn: Callable[[T], Any]) -> str:
        """Call ``fn(item)`` on every emission; return the listener's ``E-…`` id.

        The function is held strongly: it keeps firing until :meth:`remove` is
        called with the returned id.
        """
        if not callable(fn):
            raise TypeError(f"listen() needs a callable, got {type(fn).__name__}")
        listener_id = f"E-{uuid.uuid4()}"
        listener = _Listener(fn, listener_id, self._name)
        with _lock:
            if self._signal is None:
                self._signal = Signal()
            listeners = dict(self._listeners or {})
            listeners[listener_id] = listener
            self._signal.connect(listener, weak=False)
            self._listeners = listeners
        return listener_id

    def remove(self, listener_id: str) -> None:
        """Stop calling the listener with this id. Unknown ids are ignored."""
        with _lock:
            if not self._listeners or listener_id not in self._listeners:
                return
            listeners = dict(self._listeners)
            listener = listeners.pop(listener_id)
            assert self._signal is not None
            self._signal.disconnect(listener)
            self._listeners = listeners or None

    def get_listeners(self) -> list[str]:
        """Return the ids of the current listeners, oldest first."""
        return list(self._listeners or ())

    def emit(self, item: T) -> None:
        """Call every listener with ``item``.

        The receivers are copied under the lock and called outside it, so a
        listener may add or remove listeners (of this or any manager) while the
        event is being delivered.
        """
        if not self._listeners:
            return
        with _lock:
            signal = self._signal
            receivers = list(signal.receivers_for(item)) if signal is not None else []
        for receiver in receivers:
            receiver(item)


class EventAttribute(Generic[T]):
    """Declares an ``on_*`` attribute whose :class:`EventManager` is created on first access.

    The owning class reserves a slot named like the attribute with a leading
    underscore. Reading the attribute creates the manager (once, under the
    module lock); the library's own emissions go through ``emit()``, which
    never creates one, so objects nobody listens to carry no managers at all.
    """

    def __init__(self, doc: str) -> None:
        self.__doc__ = doc
        self.name = ""
        self.slot = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = f"{owner.__name__.lower()}.{name}"
        self.slot = "_" + name

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> EventAttribute[T]: ...

    @overload
    def __get__(self, obj: object, owner: type | None = None) -> EventManager[T]: ...

    def __get__(self, obj: object | None, owner: type | None = None) -> EventManager[T] | EventAttribute[T]:
        if obj is None:
            return self  # the class attribute itself, for introspection
        manager: EventManager[T] | None = getattr(obj, self.slot, None)
        if manager is None:
            with _lock:
                manager = getattr(obj, self.slot, None)
                if manager is None:
                    manager = EventManager(self.name)
                    setattr(obj, self.slot, manager)
        return manager

    def __set__(self, obj: Any, value: Any) -> None:
        raise AttributeError(f"{self.name} is read-only")


def emit(owner: Any, attribute: str, item: Any) -> None:
    """Emit ``owner.<attribute>`` with ``item`` if anybody ever listened to it."""
    manager = getattr(owner, "_" + attribute, None)
    if manager is not None:
        manager.emit(item)

"""Scale-out: one service across processes and hosts, through a command log on Redis.

Every change is a command (``("sub", client_id, topic_id)``, ``("pub", topic_id, body)``)
appended to one Redis Stream. Every process reads the stream with one connection and applies
the commands in order to its in-memory core, so all replicas hold the same state and give every
client the same event ids; each process queues events only for the streams it holds. A change
returns once this process has applied it (read-your-writes); its events fire only here, in the
caller's thread. See ``docs/scale-out.md``.
"""

from __future__ import annotations

import itertools
import json
import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from .errors import BackendUnavailable, PubSubError

if TYPE_CHECKING:
    from .service import SSEPubSubService, _Effects

__all__ = ["RedisLog"]

log = logging.getLogger(__name__)

#: A process that has not reported its position for this long no longer holds back trimming.
_ALIVE = 30.0


class _Waiter:
    __slots__ = ("done", "result", "effects")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.result: Any = None
        self.effects: _Effects | None = None


class RedisLog:
    """The command log of one service on Redis, and the thread that applies it here."""

    def __init__(self, service: SSEPubSubService, url: str, key: str, timeout: float, snapshot_every: int) -> None:
        import redis

        self._redis_errors = (redis.RedisError, OSError)
        self._service = service
        self._key = key
        self._timeout = timeout
        self._origin = service._process_token
        self._writer = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        self._reader = redis.Redis.from_url(url, socket_timeout=None, socket_connect_timeout=timeout)
        self._numbers = itertools.count(1)
        self._waiters: dict[int, _Waiter] = {}
        self._waiters_lock = threading.Lock()
        self._last_id = "0-0"
        self._applied = threading.Condition()
        self._closed = threading.Event()
        self._snapshot_every = snapshot_every
        self._since_snapshot = 0
        self._reported = 0.0
        #: Processes whose last report is older than _ALIVE (refreshed about once a second).
        self.dead_processes: frozenset[str] = frozenset()
        #: Set once the snapshot is loaded and the log applied up to its head at the time.
        self._ready = threading.Event()
        self._load_error = ""
        try:
            self._load()
        except self._redis_errors as error:
            # Raising here would make gunicorn halt every worker (a worker that fails to boot
            # stops the arbiter), so an outage during a worker restart would take the whole
            # server down. Start unready instead: changes and lookups answer 503 meanwhile.
            self._load_error = str(error)
            log.warning("cannot reach Redis for the pubsubsse log (%s); retrying in the background", error)
        self._thread = threading.Thread(target=self._run, name="pubsubsse-redis-log", daemon=True)
        self._thread.start()

    def _load(self) -> None:
        """Load the snapshot and apply the log after it; on failure leave the local state empty."""
        try:
            snapshot = self._writer.get(self._key + ":snapshot")
            head = self._writer.xrevrange(self._key, count=1)
            if snapshot is not None:
                saved = json.loads(snapshot)
                with self._service._lock:
                    self._service._import_state(saved["state"])
                self._last_id = saved["position"]
            if head and _position(head[0][0].decode()) > _position(self._last_id):
                self._catch_up(head[0][0].decode())
        except self._redis_errors:
            with self._service._lock:
                self._service._clear_state()
            self._last_id = "0-0"
            raise
        self._ready.set()

    def check_ready(self) -> None:
        """Raise :class:`BackendUnavailable` until the state has been loaded from Redis."""
        if not self._ready.is_set():
            raise BackendUnavailable(f"not connected to Redis yet ({self._load_error})")

    def execute(self, operation: str, args: tuple[Any, ...]) -> Any:
        """Append a command, wait until this process has applied it, fire its events, return its result."""
        self.check_ready()
        number = next(self._numbers)
        waiter = _Waiter()
        with self._waiters_lock:
            self._waiters[number] = waiter
        try:
            self._writer.xadd(self._key, {"c": _encode(self._origin, number, operation, args)})
            if not waiter.done.wait(self._timeout):
                raise BackendUnavailable(f"the change was not confirmed by Redis within {self._timeout} s")
        except self._redis_errors as error:
            raise BackendUnavailable(f"Redis is unavailable: {error}") from error
        finally:
            with self._waiters_lock:
                self._waiters.pop(number, None)
        if isinstance(waiter.result, PubSubError):
            raise waiter.result
        assert waiter.effects is not None
        waiter.effects.fire()
        return waiter.result

    def _catch_up(self, until: str) -> None:
        """Apply the log up to ``until`` before the service is used (a process that starts late)."""
        while self._last_id != until:
            entries = self._reader.xread({self._key: self._last_id}, count=1000)
            if not entries:
                return
            self._apply_batch(entries[0][1])

    def sync(self) -> None:
        """Wait until this process has applied every command appended (by anyone) before the call."""
        self.check_ready()
        try:
            head = self._writer.xrevrange(self._key, count=1)
        except self._redis_errors as error:
            raise BackendUnavailable(f"Redis is unavailable: {error}") from error
        if not head:
            return
        target = _position(head[0][0].decode())
        with self._applied:
            if not self._applied.wait_for(lambda: _position(self._last_id) >= target, timeout=self._timeout):
                raise BackendUnavailable(f"this process did not catch up with the log within {self._timeout} s")

    def close(self) -> None:
        """Stop applying the log in this process (the service is then unusable)."""
        self._closed.set()
        self._thread.join(3)  # the reader blocks for at most 250 ms at a time
        self._reader.close()
        self._writer.close()

    def _run(self) -> None:
        delay = 0.1
        while not self._closed.is_set():
            try:
                if not self._ready.is_set():
                    self._load()
                    log.info("reached Redis: the pubsubsse log is loaded")
                entries = self._reader.xread({self._key: self._last_id}, block=250, count=1000)
            except self._redis_errors as error:
                if self._closed.is_set():
                    return
                self._load_error = str(error)
                log.warning("reading the pubsubsse log from Redis failed (%s); retrying in %.1f s", error, delay)
                self._closed.wait(delay)
                delay = min(delay * 2, 5.0)
                continue
            delay = 0.1
            if entries:
                self._apply_batch(entries[0][1])
            try:
                self._maintain()
            except self._redis_errors as error:
                log.warning("pubsubsse log maintenance failed (%s); will retry", error)

    def _maintain(self) -> None:
        """Report how far this process got, and now and then snapshot the state and trim the log.

        The log is trimmed behind the newest snapshot and behind every process that reported in
        the last ``_ALIVE`` seconds, so no live process ever misses an entry; a process that
        starts later loads the snapshot and reads on from its position.
        """
        now = time.time()
        if now - self._reported >= 1.0:
            self._writer.hset(self._key + ":applied", self._origin, f"{self._last_id} {now}")
            self._reported = now
            self.dead_processes = frozenset(
                origin.decode()
                for origin, value in self._writer.hgetall(self._key + ":applied").items()
                if now - float(value.decode().partition(" ")[2]) >= _ALIVE
            )
        if self._since_snapshot < self._snapshot_every:
            return
        self._since_snapshot = 0
        lock = self._key + ":snapshot-lock"
        if not self._writer.set(lock, self._origin, nx=True, px=30000):
            return
        try:
            with self._service._lock:
                position = self._last_id
                state = self._service._export_state()
            self._writer.set(self._key + ":snapshot", json.dumps({"position": position, "state": state}))
            oldest = _position(position)
            for value in self._writer.hgetall(self._key + ":applied").values():
                applied, _, seen = value.decode().partition(" ")
                if now - float(seen) < _ALIVE:
                    oldest = min(oldest, _position(applied))
            self._writer.xtrim(self._key, minid=f"{oldest[0]}-{oldest[1]}", approximate=False)
        finally:
            self._writer.delete(lock)

    def _apply_batch(self, entries: list[tuple[bytes, dict[bytes, bytes]]]) -> None:
        self._since_snapshot += len(entries)
        for entry_id, fields in entries:
            self._apply_entry(entry_id, fields)
        with self._applied:
            self._applied.notify_all()

    def _apply_entry(self, entry_id: bytes, fields: dict[bytes, bytes]) -> None:
        self._last_id = entry_id.decode()
        try:
            origin, number, operation, args = _decode(fields[b"c"])
        except (KeyError, ValueError, TypeError):
            log.error("skipping a malformed pubsubsse log entry %s", self._last_id)
            return
        result, effects = self._service._apply(operation, args)
        if origin != self._origin:
            return
        with self._waiters_lock:
            waiter = self._waiters.get(number)
        if waiter is not None:
            waiter.result = result
            waiter.effects = effects
            waiter.done.set()


def _position(entry_id: str) -> tuple[int, int]:
    milliseconds, _, sequence = entry_id.partition("-")
    return int(milliseconds), int(sequence or 0)


def _encode(origin: str, number: int, operation: str, args: tuple[Any, ...]) -> str:
    if operation == "pub":  # the encoded message body is UTF-8 JSON: carry it as text
        topic_id, body = args
        args = (topic_id, body.decode("utf-8"))
    return json.dumps([origin, number, operation, list(args)], separators=(",", ":"), ensure_ascii=False)


def _decode(raw: bytes) -> tuple[str, int, str, tuple[Any, ...]]:
    origin, number, operation, args = json.loads(raw)
    if operation == "pub":
        args = [args[0], args[1].encode("utf-8")]
    return origin, number, operation, tuple(args)

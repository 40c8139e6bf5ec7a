"""The Redis transport of the replicated log (see :mod:`pubsubsse.backends.log` for what it guarantees).

Keys, all starting with ``key`` (default ``pubsubsse:log``):

``key``
    A Redis Stream: the log. Entries are appended by one Lua script per batch,
    which checks the epoch and the batch's deadline against Redis's own clock
    (``TIME``) first, so a batch is appended whole or not at all.
``key:epoch``
    The log's epoch (see "A lost log"). A Redis restarted without its data has
    none: every append is refused until one process has stored its state as
    the base of a new epoch.
``key:snapshot``, ``key:snapshot-lock``
    The latest snapshot, and the lock that lets one process at a time store it
    (released only by its owner).
``key:applied``, ``key:versions``
    Per process: the last position applied and when (``"<id> <unix time>"``,
    as pubsubsse 0.1.0 wrote it), and the newest entry format it reads.

Connections per process: two, however many requests the worker serves at once:
one for the reader (``XREAD`` and maintenance) and one for the writer (the
append script, one call per batch of changes).
"""

from __future__ import annotations

from typing import Any

from .log import Appended, LogBackend, LogUnavailable, Position, Record, Refused

__all__ = ["RedisBackend"]

_APPEND = """
local epoch = redis.call('GET', KEYS[2])
if not epoch or (ARGV[1] ~= '*' and epoch ~= ARGV[1]) then return {'stale'} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if now > tonumber(ARGV[2]) then return {'expired'} end
if now <= tonumber(ARGV[3]) then return {'early'} end
local ids = {}
local i = 4
while i <= #ARGV do
  local n = tonumber(ARGV[i])
  local args = {'XADD', KEYS[1], '*'}
  for j = 1, 2 * n do args[#args + 1] = ARGV[i + j] end
  ids[#ids + 1] = redis.call(unpack(args))
  i = i + 1 + 2 * n
end
return ids
"""

_REPLACE = """
local current = redis.call('GET', KEYS[1])
if ARGV[1] == '' then
  if current then return 0 end
elseif current ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[2], ARGV[3])
redis.call('DEL', KEYS[3])
redis.call('SET', KEYS[1], ARGV[2])
return 1
"""

_IF_OWNER_SET = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('SET', KEYS[2], ARGV[2]) return 1 end
return 0
"""

_IF_OWNER_DELETE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def _position(entry_id: bytes | str) -> Position:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    milliseconds, _, sequence = text.partition("-")
    return int(milliseconds), int(sequence or 0)


def _entry_id(position: Position) -> str:
    return f"{position[0]}-{position[1]}"


class RedisBackend(LogBackend):
    """A service shared through a log on Redis: ``SSEPubSubService(backend=RedisBackend(url))``.

    ``url`` is a redis-py URL (``redis://host:6379/0``, ``rediss://`` for TLS,
    ``unix:///path``). Every process built with the same URL and ``key`` shares
    one service. The other options are :class:`~pubsubsse.backends.log.LogBackend`'s.
    Needs ``pip install pubsubsse[redis]``.
    """

    def __init__(
        self,
        url: str,
        *,
        key: str = "pubsubsse:log",
        timeout: float = 5.0,
        outcome_timeout: float = 60.0,
        snapshot_every: int = 10000,
        alive: float = 30.0,
    ) -> None:
        import redis

        super().__init__(timeout=timeout, outcome_timeout=outcome_timeout, snapshot_every=snapshot_every, alive=alive)
        self.url = url
        self.key = key
        self._errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError)
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        # Each client is used by one thread (reader or writer), so each holds one connection, made
        # on first use. RESP2: the reply shapes this module reads, whatever redis-py's default. No
        # retries inside redis-py: a re-sent append could be applied twice, and the log retries on
        # its own terms. The reader blocks in XREAD for at most 250 ms: a longer silence means
        # Redis is stuck.
        options: dict[str, Any] = {
            "socket_connect_timeout": self.timeout,
            "protocol": 2,
            "retry": Retry(NoBackoff(), 0),
        }
        self._reader = redis.Redis.from_url(url, socket_timeout=self.timeout + 1, **options)
        self._writer = redis.Redis.from_url(url, socket_timeout=self.timeout, **options)
        self._append_script = self._writer.register_script(_APPEND)
        self._replace_script = self._reader.register_script(_REPLACE)
        self._if_owner_set = self._reader.register_script(_IF_OWNER_SET)
        self._if_owner_delete = self._reader.register_script(_IF_OWNER_DELETE)

    def __repr__(self) -> str:
        return f"<RedisBackend {self.key} at {self.url.rpartition('@')[2]}>"

    def _call(self, function: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except self._errors as error:
            raise LogUnavailable(f"{type(error).__name__}: {error}") from error

    def connect(self) -> None:
        """Check that Redis answers (redis-py connects on first use and reconnects by itself)."""
        self._call(self._reader.ping)

    def disconnect(self) -> None:
        """Close every connection."""
        for client in (self._reader, self._writer):
            client.close()

    def append(
        self, entries: list[dict[str, bytes]], epoch: str, deadline_ms: int, not_before_ms: int
    ) -> Appended | Refused:
        """Append with the script: epoch and deadline checked on Redis's clock, the batch whole or not at all."""
        # A connection the server closed (a Redis that stopped) is found and remade before anything
        # is sent: if that fails, the append certainly did not happen.
        pool = self._writer.connection_pool
        try:
            pool.release(pool.get_connection())
        except self._errors as error:
            raise LogUnavailable(f"{type(error).__name__}: {error}", sent=False) from error
        argv: list[Any] = [epoch, deadline_ms, not_before_ms]
        for fields in entries:
            argv.append(len(fields))
            for name, value in fields.items():
                argv += [name, value]
        reply = self._call(self._append_script, keys=[self.key, self.key + ":epoch"], args=argv, client=self._writer)
        if reply and reply[0] in (b"stale", b"expired", b"early"):
            return Refused(reply[0].decode())
        return Appended([_position(entry_id) for entry_id in reply])

    def read(self, after: Position, block: float, count: int) -> list[Record]:
        """Read with ``XREAD`` on the reader's connection."""
        reply = self._call(
            self._reader.xread, {self.key: _entry_id(after)}, count=count, block=int(block * 1000) if block else None
        )
        if not reply:
            return []
        return [Record(_position(entry_id), fields) for entry_id, fields in reply[0][1]]

    def head(self) -> Position | None:
        """Return the stream's last generated id (``XINFO STREAM``)."""
        import redis

        try:
            info = self._reader.xinfo_stream(self.key)
        except redis.ResponseError:
            return None  # no such key: no log (yet, or any more)
        except self._errors as error:
            raise LogUnavailable(f"{type(error).__name__}: {error}") from error
        return _position(info["last-generated-id"])

    def trimmed_after(self, position: Position) -> bool:
        """Whether ``XINFO STREAM``'s ``max-deleted-entry-id`` (Redis 7) is past ``position``."""
        import redis

        try:
            info = self._reader.xinfo_stream(self.key)
        except redis.ResponseError:
            return False  # no stream: nothing was trimmed from it
        except self._errors as error:
            raise LogUnavailable(f"{type(error).__name__}: {error}") from error
        deleted = info.get("max-deleted-entry-id")
        if deleted is None:
            raise LogUnavailable("Redis 7 or later is needed (XINFO STREAM has no max-deleted-entry-id)")
        return _position(deleted) > position

    def now_ms(self) -> int:
        """Return Redis's clock (``TIME``)."""
        seconds, microseconds = self._call(self._writer.time)
        return int(seconds) * 1000 + int(microseconds) // 1000

    def get_epoch(self) -> str | None:
        """Return ``key:epoch``."""
        value = self._call(self._reader.get, self.key + ":epoch")
        return None if value is None else value.decode()

    def create_epoch(self, epoch: str) -> None:
        """Set ``key:epoch`` unless it exists."""
        self._call(self._reader.set, self.key + ":epoch", epoch, nx=True)

    def replace_log(self, old_epoch: str | None, new_epoch: str, snapshot: bytes) -> bool:
        """Store the snapshot, delete the stream and set the new epoch, in one script."""
        keys = [self.key + ":epoch", self.key + ":snapshot", self.key]
        return bool(self._call(self._replace_script, keys=keys, args=[old_epoch or "", new_epoch, snapshot]))

    def load_snapshot(self) -> bytes | None:
        """Return ``key:snapshot``."""
        value: bytes | None = self._call(self._reader.get, self.key + ":snapshot")
        return value

    def store_snapshot(self, blob: bytes, owner: str) -> None:
        """Set ``key:snapshot`` if ``owner`` holds ``key:snapshot-lock``."""
        keys = [self.key + ":snapshot-lock", self.key + ":snapshot"]
        self._call(self._if_owner_set, keys=keys, args=[owner, blob])

    def lock_snapshot(self, owner: str, seconds: float) -> bool:
        """``SET key:snapshot-lock owner NX PX``."""
        return bool(self._call(self._reader.set, self.key + ":snapshot-lock", owner, nx=True, px=int(seconds * 1000)))

    def unlock_snapshot(self, owner: str) -> None:
        """Delete ``key:snapshot-lock`` if ``owner`` holds it."""
        self._call(self._if_owner_delete, keys=[self.key + ":snapshot-lock"], args=[owner])

    def trim(self, before: Position) -> None:
        """``XTRIM key MINID before`` (exact)."""
        self._call(self._reader.xtrim, self.key, minid=_entry_id(before), approximate=False)

    def report(self, origin: str, position: Position, wall: float, version: int) -> None:
        """Record the position in ``key:applied`` (0.1.0's format) and the version in ``key:versions``."""
        pipe = self._reader.pipeline(transaction=False)
        pipe.hset(self.key + ":applied", origin, f"{_entry_id(position)} {wall}")
        pipe.hset(self.key + ":versions", origin, str(version))
        self._call(pipe.execute)

    def reports(self) -> dict[str, tuple[Position, float, int]]:
        """Read ``key:applied`` and ``key:versions``; a process without a version reads format 1."""
        pipe = self._reader.pipeline(transaction=False)
        pipe.hgetall(self.key + ":applied")
        pipe.hgetall(self.key + ":versions")
        applied, versions = self._call(pipe.execute)
        out = {}
        for origin, value in applied.items():
            try:
                entry_id, _, wall = value.decode().partition(" ")
                out[origin.decode()] = (_position(entry_id), float(wall), int(versions.get(origin, b"1")))
            except ValueError:
                continue  # a damaged report is no report
        return out

    def forget(self, origins: list[str]) -> None:
        """Remove the reports of ``origins``."""
        pipe = self._reader.pipeline(transaction=False)
        pipe.hdel(self.key + ":applied", *origins)
        pipe.hdel(self.key + ":versions", *origins)
        self._call(pipe.execute)

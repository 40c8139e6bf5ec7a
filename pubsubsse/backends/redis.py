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
    in ``key:applied``), and the newest entry format it reads.
``key:wants:<topic id>``, ``key:held:<process>``
    The processes that hold streams of a topic's subscribers, and the same per
    process (to remove a dead process from the first).

Wake-ups: the append script publishes (sharded pub/sub, ``SPUBLISH``) to
``key:wake`` for a batch that changes anything but a publish, and otherwise to
``key:wake:<process>`` for the processes in ``key:wants:<topic>`` of its topics
and for the writer. A reader at the end of the log waits for a wake-up (at most
``block`` seconds) before it reads again, so a process reads the publishes to
topics it has no stream of only along with something it was woken for, or a
quarter second later: many in one read, instead of one read each.

Connections per process: four, however many requests the worker serves at once:
the reader's ``XREAD``, its wake-ups, its maintenance, and the writer's (the
append script, one call per batch of changes).

Redis Cluster (``cluster=True``): the key is wrapped in a hash tag (``{pubsubsse:log}``)
so that the log and every key beside it live in one slot, and every command (the scripts
too) goes to the master serving that slot, found with ``CLUSTER SLOTS`` from a node the URL
names (the first that answers: it may name several, comma-separated) or any node seen since;
after an error (a failover, a ``MOVED``) the master is looked up again. An append returns
once the master's replica has it too (``WAIT``), so a failover does not lose it; while no
replica answers within ``_REPLICA_WAIT_MS`` and none acknowledged anything for a second,
appends do not wait for ``_REPLICA_RETRY`` seconds (a failover then may lose them: the log
finds that and is seeded again).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from pubsubsse.backends._entries import loads
from pubsubsse.backends._merged import MergedTransport, checked_layout
from pubsubsse.backends._redis_cluster import (
    at_node,
    nodes_of,
    parts,
    replica_online,
    slot_master,
    without_credentials,
)
from pubsubsse.backends._redis_scripts import APPEND, FORGET_HOLDS, IF_OWNER_DELETE, IF_OWNER_SET, REPLACE, TRIM
from pubsubsse.backends.log import (
    Appended,
    LogBackend,
    LogOptions,
    LogTransport,
    LogUnavailable,
    NotAppended,
    Position,
    Record,
    log_options,
)

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["RedisBackend", "RedisTransport", "DEFAULT_KEY"]

log = logging.getLogger(__name__)

#: The default ``key``: where the log is, and the prefix of the keys beside it.
DEFAULT_KEY = "pubsubsse:log"

#: How long an append waits for the replica of a cluster master (ms); when no replica answers
#: within it and none acknowledged anything in the last second, appends do not wait for one
#: for ``_REPLICA_RETRY`` seconds.
_REPLICA_WAIT_MS = 200
_REPLICA_RETRY = 5.0


def _position(entry_id: bytes | str) -> Position:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    milliseconds, _, sequence = text.partition("-")
    return int(milliseconds), int(sequence or 0)


def _entry_id(position: Position) -> str:
    return f"{position[0]}-{position[1]}"


def _wake_tags(entries: list[dict[str, bytes]]) -> list[Any]:
    """Return whom a batch wakes, as the append script reads it: a count, then topic ids or ``""``.

    A publish (an entry with a body) wakes the processes holding streams of its topic; any other
    change, every process (``""``).
    """
    topics = set()
    for fields in entries:
        if "b" not in fields:
            return [1, ""]
        topics.add(loads(fields["e"])[3][0])  # just encoded by the writer
    return [len(topics), *topics]


def _milliseconds(time_reply: tuple[Any, Any]) -> int:
    """Return Redis's ``TIME`` reply (seconds, microseconds) in milliseconds."""
    seconds, microseconds = time_reply
    return int(seconds) * 1000 + int(microseconds) // 1000


def _no_such_key(error: BaseException) -> bool:
    """Whether a ``ResponseError`` says the key does not exist (and not, say, ``MOVED``)."""
    return "no such key" in str(error).lower()


class RedisTransport(LogTransport):
    """The log in Redis: a Stream at ``key`` and the keys beside it (see the module's docstring).

    ``timeout`` is the network timeout, in seconds (the reader's is one second
    longer: it blocks in ``XREAD`` for up to 250 ms). ``cluster``: ``url`` names a
    node of a Redis Cluster, or several, comma-separated (``redis://a:7000,b:7001/0``:
    a process starting while the first is down starts from the next; see the module's
    docstring). ``ValueError`` for a URL naming several nodes without ``cluster``.
    """

    def __init__(
        self, url: str, *, key: str = DEFAULT_KEY, timeout: float = 5.0, cluster: bool = False, partitions: int = 1
    ) -> None:
        import redis

        self.url = url
        self.cluster = cluster
        #: How many streams the log has (``RedisBackend(partitions=N)``); this transport is one of them.
        self.partitions = partitions
        # One hash tag: the log, its epoch, snapshot and reports in one slot (scripts touch several).
        self.key = f"{{{key}}}" if cluster and "{" not in key else key
        self.timeout = timeout
        self._errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError)
        #: The cluster's nodes seen so far, the URL's first: where the slot's master is looked up.
        self._nodes: list[tuple[str, int]] = []
        if cluster:
            self._nodes = nodes_of(url)
            url = at_node(url, *self._nodes[0])  # a redis-py URL names one host; _locate finds the master
        elif "," in parts(url)[2]:
            raise ValueError(
                f"a Redis URL naming several nodes is for a cluster (cluster=True): {without_credentials(url)}"
            )
        self._master: tuple[str, int] | None = None
        self._locating = threading.Lock()
        self._replica_missing_since = -1e9
        self._replica_missing = False  # warned that no replica answers (once per outage)
        self._reader, self._writer = self._clients(url)
        self._read_connection: Any = None  # the reader's XREAD connection, made on first use
        # Every call names its client (_run): in a cluster the clients are replaced when the slot's
        # master moves (_locate), and a script runs on the client it was registered with otherwise.
        self._append_script = self._writer.register_script(APPEND)
        self._replace_script = self._reader.register_script(REPLACE)
        self._if_owner_set = self._reader.register_script(IF_OWNER_SET)
        self._if_owner_delete = self._reader.register_script(IF_OWNER_DELETE)
        self._trim_script = self._reader.register_script(TRIM)
        self._forget_holds = self._reader.register_script(FORGET_HOLDS)
        self._token = ""  # the process this transport reads for (serve()); a Publisher's reads nothing
        self._wake_connection: Any = None  # subscribed to this process's wake channels
        #: Whether the last XREAD found the end of the log: the next read waits for a wake-up first.
        self._caught_up = False
        #: The topics registered in Redis as having streams held here (``hold``).
        self._held: set[str] = set()
        #: XREAD calls made (for tests and benchmarks: how often this process read the log).
        self.reads = 0

    def __repr__(self) -> str:
        return f"<RedisTransport {self.key} at {self.url.rpartition('@')[2]}>"

    def _clients(self, url: str) -> tuple[Any, Any]:
        """Return a client for the reader and one for the writer, each of one connection made on first use."""
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        # RESP2: the reply shapes this module reads, whatever redis-py's default. No retries inside
        # redis-py: a re-sent append could be applied twice, and the log retries on its own terms.
        # The reader blocks in XREAD for at most 250 ms: a longer silence means Redis is stuck.
        connection: dict[str, Any] = {
            "socket_connect_timeout": self.timeout,
            "protocol": 2,
            "retry": Retry(NoBackoff(), 0),
        }
        reader = redis.Redis.from_url(url, socket_timeout=self.timeout + 1, **connection)
        writer = redis.Redis.from_url(url, socket_timeout=self.timeout, **connection)
        return reader, writer

    def _call(self, function: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except self._errors as error:
            raise self._unavailable(error) from error

    def _run(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        """Run a registered script on the reader's client as it is now (the slot's master in a cluster)."""
        return self._call(script, keys=keys, args=args, client=self._reader)

    def _unavailable(self, error: BaseException, sent: bool = True) -> LogUnavailable:
        """Return the error to raise for a failed call; in a cluster, look the slot's master up again first."""
        import redis.exceptions as errors

        if self.cluster:
            self._locate()
        # Redis answered that another node serves the slot, or none does yet: nothing was done.
        refused = (errors.AskError, errors.ClusterDownError, errors.TryAgainError)
        return LogUnavailable(f"{type(error).__name__}: {error}", sent=sent and not isinstance(error, refused))

    def _located(self) -> None:
        """In a cluster, find the slot's master before the first command (a Publisher never connects)."""
        if self.cluster and self._master is None:
            self._locate()

    def _locate(self) -> None:
        """Point both connections at the master serving the log's slot (``CLUSTER SLOTS``)."""
        from redis.crc import key_slot

        with self._locating:
            master = slot_master(self.url, self._nodes, key_slot(self.key.encode()))
            if master is not None and master != self._master:
                if self._master is not None:
                    log.warning("the pubsubsse log's slot is served by %s:%s now", *master)
                self._master = master
                self._reader, self._writer = self._clients(at_node(self.url, *master))
                self._read_connection = self._wake_connection = None

    def connect(self) -> None:
        """Check that Redis answers (redis-py connects on first use and reconnects by itself)."""
        self._located()
        self._call(self._reader.ping)

    def disconnect(self) -> None:
        """Close every connection."""
        for client in (self._reader, self._writer):
            client.close()
        for connection in (self._read_connection, self._wake_connection):
            if connection is not None:
                connection.disconnect()

    def append(
        self, entries: list[dict[str, bytes]], epoch: str, deadline_ms: int, not_before_ms: int
    ) -> Appended | NotAppended:
        """Append with the script: epoch and deadline checked on Redis's clock, the batch whole or not at all."""
        # A connection the server closed (a Redis that stopped) is found and remade before anything
        # is sent: if that fails, the append certainly did not happen.
        self._located()
        writer = self._writer
        pool = writer.connection_pool
        try:
            pool.release(pool.get_connection())
        except self._errors as error:
            raise self._unavailable(error, sent=False) from error
        argv: list[Any] = [epoch, deadline_ms, not_before_ms, self._token, *_wake_tags(entries)]
        for fields in entries:
            argv.append(len(fields))
            for name, value in fields.items():
                argv += [name, value]
        keys = [self.key, self.key + ":epoch"]
        waits = self.cluster and time.monotonic() - self._replica_missing_since > _REPLICA_RETRY
        if waits:
            # One connection for both: WAIT counts the replicas that have this connection's writes.
            pipe = writer.pipeline(transaction=False)
            self._append_script(keys=keys, args=argv, client=pipe)
            pipe.execute_command("WAIT", 1, _REPLICA_WAIT_MS)
            reply, replicas = self._call(pipe.execute)
            if not replicas and not replica_online(self._writer):
                if not self._replica_missing:
                    log.warning("the pubsubsse log's master has no replica answering; appends do not wait for one")
                self._replica_missing = True
                self._replica_missing_since = time.monotonic()
            elif self._replica_missing:
                self._replica_missing = False
                log.info("the pubsubsse log's master has a replica again; appends wait for it")
        else:
            reply = self._call(self._append_script, keys=keys, args=argv, client=writer)
        if reply and reply[0] in (b"stale", b"expired", b"early"):
            return NotAppended(reply[0].decode())
        return Appended([_position(entry_id) for entry_id in reply])

    def serve(self, process_token: str) -> None:
        """Read for the process ``process_token``: it is woken for changes and for its topics' publishes."""
        self._token = process_token

    def read(self, after: Position, block: float, count: int) -> list[Record]:
        """Read with ``XREAD``; once at the end of the log, first wait up to ``block`` for a wake-up.

        A process is woken (sharded pub/sub, a channel of its own) by every change and by the
        publishes to topics it holds streams of (``hold``), and reads the log then; publishes to
        other topics it reads ``block`` seconds later at the latest, many in one read.
        """
        if block and self._token:
            # Caught up: wait for a wake-up. Otherwise take the ones already here (the changes about
            # to be read sent them): left unread through a storm of changes, they would pile up in
            # Redis's output buffer for this connection.
            self._take_wake_ups(block if self._caught_up else 0.0)
        arguments: list[Any] = ["XREAD", "COUNT", count, "STREAMS", self.key, _entry_id(after)]
        if block and not (self._token and self._caught_up):
            # Reading for no process (no wake-ups), or busy with changes: wait in XREAD itself.
            arguments[3:3] = ["BLOCK", int(block * 1000)]
        connection = self._read_connection
        if connection is None:
            connection = self._read_connection = self._own_connection()
        self.reads += 1
        try:
            connection.send_packed_command(connection.pack_command(*arguments), check_health=False)
            reply = connection.read_response()
        except self._errors as error:
            connection.disconnect()  # a reply half read would be taken for the next one's
            self._caught_up = False
            raise self._unavailable(error) from error
        entries = reply[0][1] if reply else []
        records = [Record(_position(entry_id), dict(zip(fields[::2], fields[1::2]))) for entry_id, fields in entries]
        # At the end of the log, wait for a wake-up before the next read; but after a change (an
        # entry without a body), more may follow (a storm of attaches): each would be a wake-up
        # and a read, where a blocked XREAD is one read.
        self._caught_up = len(entries) < count and all(b"b" in record.fields for record in records)
        return records

    def read_at(self, after: Position, count: int) -> tuple[str | None, int, list[Record]]:
        """``TIME``, ``XRANGE key (after + COUNT count`` and ``GET key:epoch``: in that order, one pipeline."""
        pipe = self._reader.pipeline(transaction=False)
        pipe.time()
        pipe.xrange(self.key, "(" + _entry_id(after), "+", count=count)
        pipe.get(self.key + ":epoch")
        now, entries, epoch = self._call(pipe.execute)
        records = [Record(_position(entry_id), fields) for entry_id, fields in entries]
        return (None if epoch is None else epoch.decode()), _milliseconds(now), records

    def wake_fileno(self) -> int | None:
        """Return the socket of this process's wake-up subscription (made if need be)."""
        if not self._token:
            return None
        sock = self._wake()._sock
        return None if sock is None else int(sock.fileno())

    def take_wake_ups(self) -> None:
        """Take every wake-up waiting."""
        self._take_wake_ups(0.0)

    def _take_wake_ups(self, timeout: float) -> None:
        """Wait up to ``timeout`` for a wake-up, then take every one waiting: one read serves them all."""
        wake = self._wake()
        try:
            if wake.can_read(timeout=timeout):
                while True:
                    wake.read_response()
                    if not wake.can_read(timeout=0):
                        break
        except self._errors as error:
            self._wake_connection = None
            wake.disconnect()
            raise self._unavailable(error) from error

    def _own_connection(self) -> Any:
        """Return a connection to the log's master outside the reader's pool (raw replies, held by one thread)."""
        pool = self._reader.connection_pool
        return pool.connection_class(**pool.connection_kwargs)

    def _wake(self) -> Any:
        """Return the connection subscribed to this process's wake-up channels, made if need be."""
        wake = self._wake_connection
        if wake is None:
            wake = self._own_connection()
            try:
                wake.send_command("SSUBSCRIBE", self.key + ":wake", self.key + ":wake:" + self._token)
                wake.read_response()
                wake.read_response()
            except self._errors as error:
                wake.disconnect()
                raise self._unavailable(error) from error
            self._wake_connection = wake
            self._caught_up = False  # what was appended before the subscription woke nobody
        return wake

    def hold(self, topics: set[str], again: bool = False) -> None:
        """Register in Redis that this process holds streams of exactly ``topics`` (``again``: all anew)."""
        held = f"{self.key}:held:{self._token}"
        pipe = self._reader.pipeline(transaction=False)
        if again:  # what Redis holds for this process is not known: start from nothing there too
            self._forget_holds(keys=[self.key], args=[self._token], client=pipe)
            self._held = set()
        added, removed = topics - self._held, self._held - topics
        if not (again or added or removed):
            return
        for topic in added:
            pipe.sadd(f"{self.key}:wants:{topic}", self._token)
        for topic in removed:
            pipe.srem(f"{self.key}:wants:{topic}", self._token)
        if added:
            pipe.sadd(held, *added)
        if removed:
            pipe.srem(held, *removed)
        self._call(pipe.execute)
        self._held = set(topics)

    def head(self) -> Position | None:
        """Return the stream's last generated id (``XINFO STREAM``)."""
        import redis

        try:
            info = self._reader.xinfo_stream(self.key)
        except redis.ResponseError as error:
            if _no_such_key(error):
                return None  # no log (yet, or any more)
            raise self._unavailable(error) from error
        except self._errors as error:
            raise self._unavailable(error) from error
        return _position(info["last-generated-id"])

    def trimmed_after(self, position: Position) -> bool:
        """Whether ``XINFO STREAM``'s ``max-deleted-entry-id`` (Redis 7) is past ``position``."""
        import redis

        try:
            info = self._reader.xinfo_stream(self.key)
        except redis.ResponseError as error:
            if _no_such_key(error):
                return False  # no stream: nothing was trimmed from it
            raise self._unavailable(error) from error
        except self._errors as error:
            raise self._unavailable(error) from error
        deleted = info.get("max-deleted-entry-id")
        if deleted is None:
            raise LogUnavailable("Redis 7 or later is needed (XINFO STREAM has no max-deleted-entry-id)")
        return _position(deleted) > position

    def now_ms(self) -> int:
        """Return Redis's clock (``TIME``)."""
        return _milliseconds(self._call(self._writer.time))

    def get_epoch(self) -> str | None:
        """Return ``key:epoch``; raise ``LogUnavailable`` if it names another number of partitions."""
        self._located()  # a Publisher's first look (it never connects)
        value = self._call(self._reader.get, self.key + ":epoch")
        if value is None:
            return None
        return checked_layout(value.decode(), self.partitions, self.key)

    def name_epoch(self, base: str) -> str:
        """Return ``base``, marked with the number of partitions if there are several (``~pN``)."""
        return base if self.partitions == 1 else f"{base}~p{self.partitions}"

    def create_epoch(self, epoch: str) -> None:
        """Set ``key:epoch`` unless it exists."""
        self._call(self._reader.set, self.key + ":epoch", epoch, nx=True)

    def replace_log(self, old_epoch: str | None, new_epoch: str, snapshot: bytes) -> bool:
        """Store the snapshot, delete the stream and set the new epoch, in one script."""
        keys = [self.key + ":epoch", self.key + ":snapshot", self.key]
        return bool(self._run(self._replace_script, keys, [old_epoch or "", new_epoch, snapshot]))

    def load_snapshot(self) -> bytes | None:
        """Return ``key:snapshot``."""
        value: bytes | None = self._call(self._reader.get, self.key + ":snapshot")
        return value

    def store_snapshot(self, blob: bytes, owner: str) -> None:
        """Set ``key:snapshot`` if ``owner`` holds ``key:snapshot-lock``."""
        keys = [self.key + ":snapshot-lock", self.key + ":snapshot"]
        self._run(self._if_owner_set, keys, [owner, blob])

    def lock_snapshot(self, owner: str, seconds: float) -> bool:
        """``SET key:snapshot-lock owner NX PX``."""
        return bool(self._call(self._reader.set, self.key + ":snapshot-lock", owner, nx=True, px=int(seconds * 1000)))

    def unlock_snapshot(self, owner: str) -> None:
        """Delete ``key:snapshot-lock`` if ``owner`` holds it."""
        self._run(self._if_owner_delete, [self.key + ":snapshot-lock"], [owner])

    def trim(self, before: Position, reported_after: float) -> None:
        """``XTRIM key MINID`` (exact) at the oldest of ``before`` and the live reports, in one script.

        ``max-deleted-entry-id`` is moved to the last entry removed.
        """
        keys = [self.key, self.key + ":applied"]
        self._run(self._trim_script, keys, [_entry_id(before), repr(reported_after)])

    def report(self, process_token: str, position: Position, wall: float, version: int) -> None:
        """Record ``"<position> <time>"`` in ``key:applied`` and the format in ``key:versions``."""
        pipe = self._reader.pipeline(transaction=False)
        pipe.hset(self.key + ":applied", process_token, f"{_entry_id(position)} {wall}")
        pipe.hset(self.key + ":versions", process_token, str(version))
        self._call(pipe.execute)

    def reports(self) -> dict[str, tuple[Position, float, int]]:
        """Read ``key:applied`` and ``key:versions``; a report without a format is no report."""
        pipe = self._reader.pipeline(transaction=False)
        pipe.hgetall(self.key + ":applied")
        pipe.hgetall(self.key + ":versions")
        applied, versions = self._call(pipe.execute)
        out = {}
        for origin, value in applied.items():
            try:
                entry_id, _, wall = value.decode().partition(" ")
                out[origin.decode()] = (_position(entry_id), float(wall), int(versions[origin]))
            except (ValueError, KeyError):
                continue  # a damaged report is no report
        return out

    def forget(self, process_tokens: list[str]) -> None:
        """Remove the reports of ``process_tokens``."""
        pipe = self._reader.pipeline(transaction=False)
        pipe.hdel(self.key + ":applied", *process_tokens)
        pipe.hdel(self.key + ":versions", *process_tokens)
        self._call(pipe.execute)
        self._run(self._forget_holds, [self.key], process_tokens)


class RedisBackend(LogBackend):
    """A service shared through a log on Redis: ``SSEPubSubService(backend=RedisBackend(url))``.

    ``url`` is a redis-py URL (``redis://host:6379/0``, ``rediss://`` for TLS,
    ``unix:///path``). Every process built with the same URL and ``key`` shares
    one service. ``cluster=True``: ``url`` names any node of a Redis Cluster, or several,
    comma-separated (``redis://a:7000,b:7001/0``); the log lives in the slot of ``key``'s
    hash tag (see :mod:`pubsubsse.backends.redis`).
    ``partitions=N`` (default 1): the log is N streams (``key``, then ``key:1`` …
    ``key:N-1``, each with a hash tag of its own in a cluster, so that appends are spread over
    its masters), each process appends to one of them and reads them all merged into one order
    (``pubsubsse.backends._merged``); every process of a service must use the same N.
    ``options`` are the log's (:class:`~pubsubsse.backends.log.LogOptions`).
    With one partition, the same as ``LogBackend(RedisTransport(url, key=key, cluster=cluster), **options)``.
    Needs ``pip install pubsubsse[redis]``.
    """

    def __init__(
        self,
        url: str,
        *,
        key: str = DEFAULT_KEY,
        cluster: bool = False,
        partitions: int = 1,
        **options: Unpack[LogOptions],
    ) -> None:
        timeout = log_options(**options).timeout
        if isinstance(partitions, bool) or not isinstance(partitions, int) or not 1 <= partitions <= 64:
            raise ValueError(f"partitions must be an int from 1 to 64, got {partitions!r}")
        #: The streams of the log: one ``RedisTransport`` per partition, the first at ``key``.
        self.streams = [
            RedisTransport(
                url, key=key if n == 0 else f"{key}:{n}", timeout=timeout, cluster=cluster, partitions=partitions
            )
            for n in range(partitions)
        ]
        super().__init__(self.streams[0] if partitions == 1 else MergedTransport(self.streams), **options)

    def __repr__(self) -> str:
        return f"<RedisBackend {self.key} at {self.url.rpartition('@')[2]}>"

    @property
    def url(self) -> str:
        """The Redis URL."""
        return self.streams[0].url

    @property
    def key(self) -> str:
        """The log's key; the keys beside it start with it."""
        return self.streams[0].key

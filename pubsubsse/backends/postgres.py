"""The PostgreSQL transport of the replicated log (see :mod:`pubsubsse.backends.log`).

Three tables, named after ``name`` (default ``pubsubsse``):

``<name>_log``
    The log: ``position`` (a bigint, 1, 2, 3, …) and the entry's fields.
``<name>_state``
    The epoch, the last position ever appended (``head``), the snapshot and
    its lock.
``<name>_reports``
    Per process: the last position applied, when, and the newest entry format
    it reads.
``<name>_outbox``
    Changes written in an application's own transaction (``topic.pub(data,
    transaction=connection)``). A deferred trigger numbers each row when its
    transaction commits, holding a lock until the commit is done, so the
    numbers follow the commit order; every process's reader then moves the
    committed rows into the log in that order (``<name>_drain()``, woken by
    ``NOTIFY <name>_outbox``, and once a second). A rolled back transaction
    leaves nothing; a process that dies after the commit loses nothing. An
    application's transaction takes the log's lock only at its commit.

An append is one call of the function ``<name>_append``, which takes a
transaction-level advisory lock (so positions are given, and committed, in
order: a reader that has seen position 11 never finds a 10 later), checks the
epoch and the batch's deadline against the server's clock, inserts the batch
and notifies the readers (``LISTEN <name>_log``). Connections per process: two,
one for the reader and one for the writer. psycopg cooperates with gevent by
itself (3.1.14 and later).
"""

from __future__ import annotations

import re
import struct
import time
import zlib
from typing import TYPE_CHECKING, Any

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
from pubsubsse.errors import WrongDatabase

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["PostgresBackend", "PostgresTransport", "DEFAULT_NAME"]

#: The default ``name``: the prefix of the log's tables.
DEFAULT_NAME = "pubsubsse"

_NAME = re.compile(r"[a-z_][a-z0-9_]{0,40}")

_SETUP = """
CREATE TABLE IF NOT EXISTS {name}_log (position bigint PRIMARY KEY, fields bytea NOT NULL);
CREATE TABLE IF NOT EXISTS {name}_state (name text PRIMARY KEY, text_value text, blob bytea);
CREATE TABLE IF NOT EXISTS {name}_reports (
    origin text PRIMARY KEY, position bigint NOT NULL, wall double precision NOT NULL, version int NOT NULL
);
INSERT INTO {name}_state (name, text_value) VALUES ('head', '0') ON CONFLICT (name) DO NOTHING;
CREATE TABLE IF NOT EXISTS {name}_outbox (id bigserial PRIMARY KEY, seq bigint, fields bytea NOT NULL);
CREATE SEQUENCE IF NOT EXISTS {name}_commits;
CREATE OR REPLACE FUNCTION {name}_committing() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- Run at the commit, under a lock held until the commit is done: numbers in commit order.
    PERFORM pg_advisory_xact_lock({commit_lock});
    UPDATE {name}_outbox SET seq = nextval('{name}_commits') WHERE id = NEW.id;
    PERFORM pg_notify('{name}_outbox', '');
    RETURN NULL;
END $$;
DO $$ BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM pg_trigger WHERE tgname = '{name}_outbox_commit' AND tgrelid = '{name}_outbox'::regclass
    ) THEN
        CREATE CONSTRAINT TRIGGER {name}_outbox_commit AFTER INSERT ON {name}_outbox
            DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION {name}_committing();
    END IF;
END $$;
CREATE OR REPLACE FUNCTION {name}_drain() RETURNS int LANGUAGE plpgsql AS $$
DECLARE
    head bigint;
    moved int := 0;
    r record;
BEGIN
    -- Once a second in every process: an empty outbox takes no lock.
    IF NOT EXISTS (SELECT 1 FROM {name}_outbox WHERE seq IS NOT NULL) THEN RETURN 0; END IF;
    PERFORM pg_advisory_xact_lock({lock});
    IF NOT EXISTS (SELECT 1 FROM {name}_state WHERE name = 'epoch') THEN RETURN 0; END IF;
    SELECT text_value::bigint INTO head FROM {name}_state WHERE name = 'head';
    FOR r IN SELECT id, fields FROM {name}_outbox WHERE seq IS NOT NULL ORDER BY seq LIMIT 1000 LOOP
        head := head + 1;
        INSERT INTO {name}_log (position, fields) VALUES (head, r.fields);
        DELETE FROM {name}_outbox WHERE id = r.id;
        moved := moved + 1;
    END LOOP;
    IF moved > 0 THEN
        UPDATE {name}_state SET text_value = head::text WHERE name = 'head';
        PERFORM pg_notify('{name}_log', '');
    END IF;
    RETURN moved;
END $$;
CREATE OR REPLACE FUNCTION {name}_append(p_epoch text, p_deadline bigint, p_not_before bigint, p_entries bytea[])
RETURNS bigint[] LANGUAGE plpgsql AS $$
DECLARE
    now_ms bigint;
    current_epoch text;
    head bigint;
    positions bigint[] := '{{}}';
    entry bytea;
BEGIN
    PERFORM pg_advisory_xact_lock({lock});
    SELECT text_value INTO current_epoch FROM {name}_state WHERE name = 'epoch';
    IF current_epoch IS NULL OR (p_epoch <> '*' AND current_epoch <> p_epoch) THEN
        RETURN ARRAY[-1];
    END IF;
    now_ms := (extract(epoch FROM clock_timestamp()) * 1000)::bigint;
    IF now_ms > p_deadline THEN RETURN ARRAY[-2]; END IF;
    IF now_ms <= p_not_before THEN RETURN ARRAY[-3]; END IF;
    SELECT text_value::bigint INTO head FROM {name}_state WHERE name = 'head';
    FOREACH entry IN ARRAY p_entries LOOP
        head := head + 1;
        INSERT INTO {name}_log (position, fields) VALUES (head, entry);
        positions := positions || head;
    END LOOP;
    UPDATE {name}_state SET text_value = head::text WHERE name = 'head';
    PERFORM pg_notify('{name}_log', '');
    RETURN positions;
END $$;
"""

_REFUSALS = {-1: "stale", -2: "expired", -3: "early"}

_NOW = "(extract(epoch FROM clock_timestamp()) * 1000)::bigint"


def _pack(fields: dict[str, bytes]) -> bytes:
    parts = []
    for name, value in fields.items():
        raw = name.encode()
        parts.append(struct.pack(">HI", len(raw), len(value)) + raw + value)
    return b"".join(parts)


def _unpack(data: bytes) -> dict[bytes, bytes]:
    fields = {}
    at = 0
    while at < len(data):
        name_length, value_length = struct.unpack_from(">HI", data, at)
        at += 6
        name = data[at : at + name_length]
        at += name_length
        fields[name] = data[at : at + value_length]
        at += value_length
    return fields


class PostgresTransport(LogTransport):
    """The log in PostgreSQL: the tables ``<name>_log``, ``<name>_state`` and ``<name>_reports``.

    ``dsn`` is a libpq connection string or URL; ``timeout`` (seconds) is the
    connect and statement timeout. The tables are created on first use.
    """

    def __init__(self, dsn: str, *, name: str = DEFAULT_NAME, timeout: float = 5.0) -> None:
        import psycopg

        if not _NAME.fullmatch(name):
            raise ValueError(f"name must match {_NAME.pattern} (it names tables), got {name!r}")
        self.dsn = dsn
        self.name = name
        self.timeout = timeout
        self._psycopg = psycopg
        self._errors: tuple[type[BaseException], ...] = (
            psycopg.OperationalError,
            psycopg.InterfaceError,
            psycopg.errors.QueryCanceled,
            OSError,
        )
        self._lock_key = zlib.crc32(name.encode())
        self._commit_lock_key = zlib.crc32(name.encode() + b":commits")
        self._drain_at = 0.0  # monotonic: when the reader next moves committed outbox rows
        self._reader: Any = None
        self._writer: Any = None

    def __repr__(self) -> str:
        return f"<PostgresTransport {self.name}>"

    def _open(self) -> Any:
        return self._psycopg.connect(
            self.dsn,
            autocommit=True,
            connect_timeout=max(1, round(self.timeout)),
            options=f"-c statement_timeout={int(self.timeout * 1000)}",
        )

    def _reader_connection(self) -> Any:
        """Return the reader's connection (listening for appends), made again if it broke."""
        if self._reader is None or self._reader.closed or self._reader.broken:
            try:
                self._reader = self._open()
                with self._reader.transaction():
                    self._reader.execute("SELECT pg_advisory_xact_lock(%s)", (self._lock_key,))
                    self._reader.execute(self._setup_sql())
                self._reader.execute(f"LISTEN {self.name}_log")
                self._reader.execute(f"LISTEN {self.name}_outbox")
            except self._errors as error:
                raise LogUnavailable(f"{type(error).__name__}: {error}", sent=False) from error
        return self._reader

    def _setup_sql(self) -> str:
        return _SETUP.format(name=self.name, lock=self._lock_key, commit_lock=self._commit_lock_key)

    def _writer_connection(self) -> Any:
        if self._writer is None or self._writer.closed or self._writer.broken:
            try:
                self._writer = self._open()
            except self._errors as error:
                raise LogUnavailable(f"{type(error).__name__}: {error}", sent=False) from error
        return self._writer

    def _query(self, sql: str, args: tuple[Any, ...] = (), *, writer: bool = False) -> list[Any]:
        connection = self._writer_connection() if writer else self._reader_connection()
        try:
            cursor = connection.execute(sql, args)
            return cursor.fetchall() if cursor.description else []
        except self._errors as error:
            raise LogUnavailable(f"{type(error).__name__}: {error}") from error

    def connect(self) -> None:
        """Open the reader's connection (creating the tables on first use)."""
        self._reader_connection()

    def disconnect(self) -> None:
        """Close both connections."""
        for connection in (self._reader, self._writer):
            if connection is not None:
                connection.close()

    def append(
        self, entries: list[dict[str, bytes]], epoch: str, deadline_ms: int, not_before_ms: int
    ) -> Appended | NotAppended:
        """One call of ``<name>_append``: epoch and deadline checked, then the batch, in order."""
        ((positions,),) = self._query(
            f"SELECT {self.name}_append(%s, %s, %s, %s)",
            (epoch, deadline_ms, not_before_ms, [_pack(fields) for fields in entries]),
            writer=True,
        )
        if positions and positions[0] < 0:
            return NotAppended(_REFUSALS[positions[0]])
        return Appended([(position, 0) for position in positions])

    def read(self, after: Position, block: float, count: int) -> list[Record]:
        """Read after ``after``; with nothing there, wait up to ``block`` seconds for a notification.

        Committed outbox rows are moved into the log first (see the module's docstring).
        """
        sql = f"SELECT position, fields FROM {self.name}_log WHERE position > %s ORDER BY position LIMIT %s"
        self._drain()
        rows = self._query(sql, (after[0], count))
        if not rows and block:
            try:
                for notify in self._reader_connection().notifies(timeout=block, stop_after=1):
                    if notify.channel == f"{self.name}_outbox":
                        self._drain_at = 0.0
            except self._errors as error:
                raise LogUnavailable(f"{type(error).__name__}: {error}") from error
            self._drain()
            rows = self._query(sql, (after[0], count))
        return [Record((position, 0), _unpack(bytes(fields))) for position, fields in rows]

    def _drain(self) -> None:
        """Move committed outbox rows into the log, when woken and once a second (a wake-up may be lost)."""
        if time.monotonic() < self._drain_at:
            return
        ((moved,),) = self._query(f"SELECT {self.name}_drain()")
        self._drain_at = time.monotonic() + (0.0 if moved >= 1000 else 1.0)

    def stage(self, transaction: Any, entries: list[dict[str, bytes]], epoch: str | None) -> None:
        """Write ``entries`` into the outbox in the caller's transaction: in the log if and when it commits.

        ``transaction`` is a DB-API connection or cursor on the database that
        holds this log (a psycopg connection, Django's ``connection``);
        ``epoch`` is the log's epoch as the caller knows it (``None``: read it
        here). Raises :class:`~pubsubsse.errors.WrongDatabase` if that database
        does not hold this log; nothing is written then.
        """
        cursor = transaction.cursor() if hasattr(transaction, "cursor") else transaction
        cursor.execute("SELECT to_regclass(%s)", (f"{self.name}_outbox",))
        row = cursor.fetchone()
        found = None
        if row is not None and row[0] is not None:
            cursor.execute(f"SELECT text_value FROM {self.name}_state WHERE name = 'epoch'")
            row = cursor.fetchone()
            found = None if row is None else row[0]
        if found is None or found != (epoch if epoch is not None else self.get_epoch()):
            raise WrongDatabase(
                f"the transaction's database does not hold the pubsubsse log {self.name!r} of this service "
                "(a PostgresBackend on the same database, created and started, is needed)"
            )
        for fields in entries:
            cursor.execute(f"INSERT INTO {self.name}_outbox (fields) VALUES (%s)", (_pack(fields),))

    def head(self) -> Position | None:
        """Return the last position ever appended in this epoch."""
        rows = self._query(f"SELECT text_value FROM {self.name}_state WHERE name = 'head'")
        return (int(rows[0][0]), 0) if rows else None

    def trimmed_after(self, position: Position) -> bool:
        """Positions are consecutive: entries after ``position`` were trimmed if the first left is later."""
        ((first, head),) = self._query(
            f"SELECT (SELECT min(position) FROM {self.name}_log), "
            f"(SELECT text_value::bigint FROM {self.name}_state WHERE name = 'head')"
        )
        if first is None:
            return head is not None and head > position[0]
        return bool(first > position[0] + 1)

    def now_ms(self) -> int:
        """Return the server's clock."""
        ((now,),) = self._query(f"SELECT {_NOW}", writer=True)
        return int(now)

    def get_epoch(self) -> str | None:
        """Return the epoch."""
        rows = self._query(f"SELECT text_value FROM {self.name}_state WHERE name = 'epoch'")
        return rows[0][0] if rows else None

    def create_epoch(self, epoch: str) -> None:
        """Set the epoch unless there is one."""
        self._query(
            f"INSERT INTO {self.name}_state (name, text_value) VALUES ('epoch', %s) ON CONFLICT (name) DO NOTHING",
            (epoch,),
        )

    def replace_log(self, old_epoch: str | None, new_epoch: str, snapshot: bytes) -> bool:
        """Under the append lock: if the epoch is ``old_epoch``, store the snapshot, empty the log, set the new one."""
        connection = self._reader_connection()
        state = f"{self.name}_state"
        try:
            with connection.transaction():
                connection.execute("SELECT pg_advisory_xact_lock(%s)", (self._lock_key,))
                row = connection.execute(f"SELECT text_value FROM {state} WHERE name = 'epoch'").fetchone()
                if (row[0] if row else None) != old_epoch:
                    return False
                connection.execute(f"DELETE FROM {self.name}_log")
                upsert = (
                    f"INSERT INTO {state} (name, text_value, blob) VALUES (%s, %s, %s) ON CONFLICT (name) "
                    "DO UPDATE SET text_value = EXCLUDED.text_value, blob = EXCLUDED.blob"
                )
                connection.execute(upsert, ("snapshot", None, snapshot))
                connection.execute(upsert, ("head", "0", None))
                connection.execute(upsert, ("epoch", new_epoch, None))
        except self._errors as error:
            raise LogUnavailable(f"{type(error).__name__}: {error}") from error
        return True

    def load_snapshot(self) -> bytes | None:
        """Return the stored snapshot."""
        rows = self._query(f"SELECT blob FROM {self.name}_state WHERE name = 'snapshot'")
        return bytes(rows[0][0]) if rows and rows[0][0] is not None else None

    def store_snapshot(self, blob: bytes, owner: str) -> None:
        """Store the snapshot if ``owner`` holds the snapshot lock."""
        state = f"{self.name}_state"
        self._query(
            f"INSERT INTO {state} (name, blob) SELECT 'snapshot', %s WHERE EXISTS "
            f"(SELECT 1 FROM {state} WHERE name = 'snapshot-lock' AND split_part(text_value, '|', 1) = %s) "
            "ON CONFLICT (name) DO UPDATE SET blob = EXCLUDED.blob",
            (blob, owner),
        )

    def lock_snapshot(self, owner: str, seconds: float) -> bool:
        """Take the snapshot lock unless someone holds it and it has not expired."""
        state = f"{self.name}_state"
        rows = self._query(
            f"INSERT INTO {state} (name, text_value) VALUES ('snapshot-lock', %s || '|' || ({_NOW} + %s)::text) "
            f"ON CONFLICT (name) DO UPDATE SET text_value = EXCLUDED.text_value "
            f"WHERE split_part({state}.text_value, '|', 2)::bigint < {_NOW} RETURNING 1",
            (owner, int(seconds * 1000)),
        )
        return bool(rows)

    def unlock_snapshot(self, owner: str) -> None:
        """Release the snapshot lock if ``owner`` holds it."""
        self._query(
            f"DELETE FROM {self.name}_state WHERE name = 'snapshot-lock' AND split_part(text_value, '|', 1) = %s",
            (owner,),
        )

    def trim(self, before: Position, reported_after: float) -> None:
        """Delete the entries before ``before`` and every live process's position.

        The reports table is locked (``SHARE``) for the transaction: no report
        lands between reading the reports and deleting.
        """
        connection = self._reader_connection()
        try:
            with connection.transaction():
                connection.execute(f"LOCK TABLE {self.name}_reports IN SHARE MODE")
                connection.execute(
                    f"DELETE FROM {self.name}_log WHERE position < LEAST(%s, "
                    f"(SELECT min(position) FROM {self.name}_reports WHERE wall > %s))",
                    (before[0], reported_after),
                )
        except self._errors as error:
            raise LogUnavailable(f"{type(error).__name__}: {error}") from error

    def report(self, process_token: str, position: Position, wall: float, version: int) -> None:
        """Record this process's position, time and format."""
        self._query(
            f"INSERT INTO {self.name}_reports (origin, position, wall, version) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (origin) DO UPDATE SET position = EXCLUDED.position, wall = EXCLUDED.wall, "
            "version = EXCLUDED.version",
            (process_token, position[0], wall, version),
        )

    def reports(self) -> dict[str, tuple[Position, float, int]]:
        """Return every process's last report."""
        rows = self._query(f"SELECT origin, position, wall, version FROM {self.name}_reports")
        return {origin: ((position, 0), wall, version) for origin, position, wall, version in rows}

    def forget(self, process_tokens: list[str]) -> None:
        """Delete the reports of ``process_tokens``."""
        self._query(f"DELETE FROM {self.name}_reports WHERE origin = ANY(%s)", (process_tokens,))

    def drop(self) -> None:
        """Drop the tables and the function (for tests and tools; never called by the library)."""
        self._query(
            f"DROP TABLE IF EXISTS {self.name}_log, {self.name}_state, {self.name}_reports, {self.name}_outbox; "
            f"DROP SEQUENCE IF EXISTS {self.name}_commits; "
            f"DROP FUNCTION IF EXISTS {self.name}_append(text, bigint, bigint, bytea[]), {self.name}_drain(), "
            f"{self.name}_committing()"
        )


class PostgresBackend(LogBackend):
    """A service shared through a log in PostgreSQL: ``SSEPubSubService(backend=PostgresBackend(dsn))``.

    ``dsn`` is a libpq connection string or URL (``postgresql://user@host/db``).
    Every process built with the same database and ``name`` shares one
    service; the tables are created on first use. ``options`` are the log's
    (:class:`~pubsubsse.backends.log.LogOptions`). The same as
    ``LogBackend(PostgresTransport(dsn, name=name), **options)``. Needs ``pip
    install pubsubsse[postgres]`` (psycopg 3).
    """

    transport: PostgresTransport

    def __init__(self, dsn: str, *, name: str = DEFAULT_NAME, **options: Unpack[LogOptions]) -> None:
        timeout = log_options(**options).timeout
        super().__init__(PostgresTransport(dsn, name=name, timeout=timeout), **options)

    def __repr__(self) -> str:
        return f"<PostgresBackend {self.transport.name}>"

    @property
    def dsn(self) -> str:
        """The database's connection string."""
        return self.transport.dsn

    @property
    def name(self) -> str:
        """The prefix of the log's tables."""
        return self.transport.name

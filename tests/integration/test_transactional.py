"""Publishing with the application's PostgreSQL transaction: delivered if and only if it commits, in commit order."""

from __future__ import annotations

import json
import threading
import time
import uuid

import psycopg
import pytest

from pubsubsse import Publisher, SSEPubSubService
from pubsubsse.backends.postgres import PostgresBackend
from pubsubsse.errors import NotTransactional, WrongDatabase

from ..conftest import POSTGRES_DSN, drop_postgres_tables
from ..http_helpers import wait_for


@pytest.fixture
def name():
    name = f"t_{uuid.uuid4().hex[:16]}"
    yield name
    drop_postgres_tables(name)


@pytest.fixture
def make(name):
    made: list[SSEPubSubService] = []

    def build(**options):
        service = SSEPubSubService(backend=PostgresBackend(POSTGRES_DSN, name=name, **options), client_timeout=None)
        made.append(service)
        return service

    yield build
    for service in made:
        service.shutdown()


def received(service: SSEPubSubService, client_id: str) -> list[object]:
    """What a resume from the start gives the client here: the data published to it, in order."""
    service.sync()
    events = service._core.since(service._core.clients[client_id], 0)
    assert events is not None
    return [json.loads(body)["updates"][0]["data"] for _, body in events if b'"updates":[{' in body]


def connect() -> psycopg.Connection:
    return psycopg.connect(POSTGRES_DSN)


def test_a_publish_in_a_transaction_is_delivered_if_and_only_if_it_commits(make):
    service = make()
    topic = service.public_topic("orders")
    client = service.new_client()
    client.sub(topic)
    with connect() as db:
        with db.transaction():
            topic.pub("committed", transaction=db)
        db.execute("BEGIN")
        service.publish("orders", "rolled back", transaction=db)
        db.rollback()
        db.execute("BEGIN ISOLATION LEVEL SERIALIZABLE")
        topic.pub("serializable", transaction=db.cursor())
        db.commit()
    wait_for(lambda: received(service, client.id) == ["committed", "serializable"], timeout=10, what="the commits")
    topic.pub("after")
    assert received(service, client.id) == ["committed", "serializable", "after"]


def test_publishes_arrive_in_commit_order_and_an_open_transaction_blocks_nobody(make):
    service = make()
    topic = service.public_topic("orders")
    client = service.new_client()
    client.sub(topic)
    with connect() as first, connect() as second:
        first.execute("BEGIN")
        topic.pub("first written, committed last", transaction=first)
        topic.pub("plain, while the transaction is open")  # returns: the log's lock is not held
        with second.transaction():
            topic.pub("second written, committed first", transaction=second)
        wait_for(lambda: len(received(service, client.id)) == 2, timeout=10, what="the second commit")
        first.commit()
    wait_for(lambda: len(received(service, client.id)) == 3, timeout=10, what="the first commit")
    assert received(service, client.id) == [
        "plain, while the transaction is open",
        "second written, committed first",
        "first written, committed last",
    ]


def test_a_commit_whose_process_died_is_delivered_by_the_others(make, name):
    """The publishing process ends right after the commit: nothing of it is needed any more."""
    service = make()
    topic = service.public_topic("orders")
    client = service.new_client()
    client.sub(topic)
    done = threading.Event()

    def other_process() -> None:  # a Celery task, say: publishes with the commit, then is gone
        publisher = Publisher(backend=PostgresBackend(POSTGRES_DSN, name=name))
        with connect() as db, db.transaction():
            publisher.publish("orders", "from a process that is gone", transaction=db)
            publisher.publish_many([("orders", 1), ("orders", 2)], transaction=db)
        publisher.close()
        done.set()

    threading.Thread(target=other_process).start()
    assert done.wait(10)
    wait_for(lambda: len(received(service, client.id)) == 3, timeout=10, what="the moved publishes")
    assert received(service, client.id) == ["from a process that is gone", 1, 2]


def test_commits_while_no_process_runs_are_delivered_once_one_starts(make, name):
    service = make()
    client = service.new_client()
    client.sub(service.public_topic("orders"))
    service.shutdown()
    with connect() as db, db.transaction():
        Publisher(backend=PostgresBackend(POSTGRES_DSN, name=name)).publish("orders", "while down", transaction=db)
    assert not _outbox_empty(name)  # nobody moved it: it waits in the outbox, committed
    later = make()
    wait_for(lambda: received(later, client.id) == ["while down"], timeout=10, what="the publish moved and applied")
    assert _outbox_empty(name)


def _outbox_empty(name: str) -> bool:
    with connect() as db:
        return db.execute(f"SELECT count(*) FROM {name}_outbox").fetchone()[0] == 0


def test_a_transaction_on_another_database_is_refused_and_left_usable(make):
    service = make()
    topic = service.public_topic("orders")
    database = f"t_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(POSTGRES_DSN, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {database}")
    try:
        other_dsn = POSTGRES_DSN.rsplit("/", 1)[0] + "/" + database
        with psycopg.connect(other_dsn) as db, db.transaction():
            with pytest.raises(WrongDatabase):
                topic.pub("x", transaction=db.cursor())
            db.execute("SELECT 1")  # the transaction was not aborted
    finally:
        with psycopg.connect(POSTGRES_DSN, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE {database}")


def test_other_backends_refuse_a_transaction(redis_server):
    from pubsubsse.backends import RedisBackend

    for service in (
        SSEPubSubService(client_timeout=None),
        SSEPubSubService(backend=RedisBackend(redis_server.url, key=f"t:{uuid.uuid4()}"), client_timeout=None),
    ):
        try:
            with pytest.raises(NotTransactional, match="PostgresBackend"):
                service.public_topic("orders").pub("x", transaction=object())
        finally:
            service.shutdown()
    publisher = Publisher(redis_server.url, redis_key=f"t:{uuid.uuid4()}")
    with pytest.raises(NotTransactional):
        publisher.publish("orders", "x", transaction=object())
    publisher.close()


def test_the_drain_moves_what_commits_while_a_reader_waits(make):
    """Woken by NOTIFY, not only by the once-a-second pass: a commit reaches subscribers promptly."""
    service = make()
    topic = service.public_topic("orders")
    client = service.new_client()
    client.sub(topic)
    service.sync()
    time.sleep(0.3)  # the reader is waiting for a notification now
    with connect() as db, db.transaction():
        topic.pub("prompt", transaction=db)
    started = time.monotonic()
    wait_for(lambda: received(service, client.id) == ["prompt"], timeout=10, what="the commit")
    assert time.monotonic() - started < 0.9  # under the once-a-second pass: the notification woke it


def _engine():
    import sqlalchemy

    return sqlalchemy.create_engine(POSTGRES_DSN.replace("postgresql://", "postgresql+psycopg://", 1))


def test_a_sqlalchemy_session_joins_on_postgresql_and_publishes_after_commit_elsewhere(make):
    from sqlalchemy import text
    from sqlalchemy.orm import Session

    from pubsubsse.transactions import publish_with_session

    engine = _engine()
    for service in (make(), SSEPubSubService(client_timeout=None)):
        client = service.new_client()
        client.sub(service.public_topic("orders"))
        with Session(engine) as session:
            session.execute(text("SELECT 1"))
            publish_with_session(service, "orders", "committed", session)
            assert received(service, client.id) == []  # nothing before the commit
            session.commit()
            publish_with_session(service, "orders", "rolled back", session)
            session.rollback()
            session.commit()  # an empty transaction: the rolled back publish stays forgotten
        wait_for(lambda s=service, c=client: received(s, c.id) == ["committed"], timeout=10, what="the commit")
        assert received(service, client.id) == ["committed"]
        service.shutdown()
    engine.dispose()


def test_a_publish_outside_the_transaction_is_the_phantom_the_transaction_prevents(make):
    """The old path, for comparison: published inside a transaction that rolls back, it is delivered anyway."""
    service = make()
    topic = service.public_topic("orders")
    client = service.new_client()
    client.sub(topic)
    with connect() as db:
        db.execute("BEGIN")
        topic.pub("phantom")  # not given the transaction
        topic.pub("kept back", transaction=db)
        db.rollback()
    service.sync()
    assert received(service, client.id) == ["phantom"]


def test_a_process_killed_right_after_its_commit_loses_nothing(make, name):
    """SIGKILL the instant the commit returns: the publish is the database's by then."""
    import subprocess
    import sys
    import textwrap

    service = make()
    client = service.new_client()
    client.sub(service.public_topic("orders"))
    code = textwrap.dedent(
        f"""
        import os, signal, psycopg
        from pubsubsse import Publisher
        from pubsubsse.backends.postgres import PostgresBackend

        publisher = Publisher(backend=PostgresBackend({POSTGRES_DSN!r}, name={name!r}))
        with psycopg.connect({POSTGRES_DSN!r}) as db:
            with db.transaction():
                publisher.publish("orders", "committed, then killed", transaction=db)
            os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == -9, result.stderr
    wait_for(lambda: received(service, client.id) == ["committed, then killed"], timeout=10, what="the publish")


@pytest.mark.parametrize("backend", ["postgres", "local"])
def test_sqlalchemy_broadcasts_push_each_flushed_change_with_the_transaction(make, backend):
    """A row's template rendered once per change at the flush; the fragments written in the transaction
    (PostgreSQL) or published after it commits (another backend); nothing of a rollback."""
    from sqlalchemy import Column, Integer, String, text
    from sqlalchemy.orm import DeclarativeBase, sessionmaker

    from pubsubsse.html import Broadcast, fragment, htmx_oob, sqlalchemy_broadcasts

    table = f"todos_{uuid.uuid4().hex[:10]}"

    class Base(DeclarativeBase):
        pass

    class Todo(Base):
        __tablename__ = table
        id = Column(Integer, primary_key=True)
        title = Column(String(50), nullable=False)

    engine = _engine()
    Base.metadata.create_all(engine)
    service = make() if backend == "postgres" else SSEPubSubService(client_timeout=None)
    client = service.new_client()
    client.sub(service.public_topic("todos"))
    renders = []

    def render(context):
        renders.append(context["todo"].title)
        return f'<li id="todo_{context["object"].id}">{context["todo"].title}</li>'

    sessions = sessionmaker(engine)
    stop = sqlalchemy_broadcasts(service, Broadcast(Todo, "todos", render, style="htmx"), sessions)
    try:
        with sessions() as session:
            todo = Todo(title="milk")
            session.add(todo)
            session.flush()
            todo_id = todo.id
            session.commit()
            session.add(Todo(title="rolled back"))
            session.flush()
            session.rollback()
            todo = session.get(Todo, todo_id)
            todo.title = "oat milk"
            session.commit()
            session.execute(text("SELECT 1"))
            session.commit()  # nothing changed: nothing sent
            session.delete(todo)
            session.commit()
        row = '<li id="todo_%d">%s</li>'
        expected = [
            fragment(htmx_oob("beforeend", "todos", row % (todo_id, "milk")), "todos"),
            fragment(htmx_oob("outerHTML", f"todo_{todo_id}", row % (todo_id, "oat milk")), "todos"),
            fragment(htmx_oob("delete", f"todo_{todo_id}"), "todos"),
        ]
        wait_for(lambda: received(service, client.id) == expected, timeout=10, what="the three changes")
        assert renders == ["milk", "rolled back", "oat milk"]  # once per change; the rollback sends nothing
        stop()
        with sessions() as session:
            session.add(Todo(title="after stop"))
            session.commit()
        assert received(service, client.id) == expected
    finally:
        if backend == "local":
            service.shutdown()
        Base.metadata.drop_all(engine)
        engine.dispose()

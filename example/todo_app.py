"""A live todo list with htmx: every page shows every change, as HTML rendered once on the server.

Flask, Flask-SQLAlchemy and htmx's SSE extension; no JavaScript of the app's own::

    .venv/bin/python -m flask --app example.todo_app run --port 8080

(``TODO_DATABASE`` is the database, SQLite in ``/tmp`` by default; with ``TODO_REDIS_URL`` or
``TODO_POSTGRES_DSN`` the service is shared, for several workers or a restart that keeps the
pages' streams: ``gunicorn -k gevent -w 2 'example.todo_app:create_app()'``.)

What it shows (the guide "Live HTML with htmx and Turbo"):

- ``pubsub.broadcasts(Todo, "todos", "_todo.html", style="htmx")``: every change is an event
  named ``todos`` carrying an out-of-band swap (append a row to ``#todos``, replace
  ``#todo_<id>``, delete it), which a hidden ``sse-swap="todos"`` element performs. The
  template is rendered once per change, at the flush, and published with the transaction.
- The page subscribes before it queries (``pubsub.page_stream``), and opens its stream with
  ``format=html`` after that position: nothing that changes in between is missed.
- ``/sse/pubsubsse-html.js`` makes the extension resume where the page is when it reconnects.
- The forms post with ``hx-swap="none"``: the page changes only through its stream, so every
  page, the one that posted included, shows the same thing.
"""

from __future__ import annotations

import os

from flask import Flask, render_template, request
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import Boolean, Integer, String, select, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from pubsubsse import PubSubSSE

DATABASE = os.environ.get("TODO_DATABASE", "sqlite:////tmp/pubsubsse-todo.db")


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)
pubsub = PubSubSSE(client_timeout=120)


class Todo(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = os.environ.get("TODO_TABLE", "todos")
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    done: Mapped[bool] = mapped_column(Boolean, default=False)


def create_app() -> Flask:
    app = Flask(__name__)
    app.config.update(
        SQLALCHEMY_DATABASE_URI=DATABASE.replace("postgresql://", "postgresql+psycopg://", 1),
        PUBSUBSSE_RETRY=float(os.environ.get("PUBSUBSSE_RETRY", "1")),
    )
    if os.environ.get("TODO_REDIS_URL"):
        app.config.update(PUBSUBSSE_REDIS_URL=os.environ["TODO_REDIS_URL"])
        app.config.update(PUBSUBSSE_REDIS_KEY=os.environ.get("TODO_LOG", "pubsubsse-todo"))
    elif os.environ.get("TODO_POSTGRES_DSN"):
        app.config.update(PUBSUBSSE_POSTGRES_DSN=os.environ["TODO_POSTGRES_DSN"])
        app.config.update(PUBSUBSSE_POSTGRES_NAME=os.environ.get("TODO_LOG", "pubsubsse_todo"))
    db.init_app(app)
    pubsub.init_app(app)
    with app.app_context():
        with db.engine.begin() as connection:  # every worker runs this: one at a time
            if connection.dialect.name == "postgresql":
                connection.execute(text("SELECT pg_advisory_xact_lock(8276)"))
            Base.metadata.create_all(connection)
        pubsub.public_topic("todos")  # declared at startup, in every worker
        # Every change of a Todo, rendered with _todo.html, to the pages on "todos".
        pubsub.broadcasts(Todo, "todos", "_todo.html", style="htmx", session=db.session)

    @app.get("/")
    def page() -> str:
        live = pubsub.page_stream(["todos"])  # subscribe first, then query: nothing falls between
        todos = db.session.scalars(select(Todo).order_by(Todo.id)).all()
        return render_template("todo.html", todos=todos, stream_url=live.stream_url(format="html"))

    @app.get("/todos")
    def todo_list() -> str:
        """The list alone: what a page swaps in when its stream says it missed changes (reset)."""
        todos = db.session.scalars(select(Todo).order_by(Todo.id)).all()
        return "".join(render_template("_todo.html", todo=todo) for todo in todos)

    @app.post("/todos")
    def create() -> tuple[str, int]:
        title = request.form.get("title", "").strip()
        if not title or len(title) > 200:
            return "a title of 1 to 200 characters, please", 400
        db.session.add(Todo(title=title))
        db.session.commit()
        return "", 204

    @app.post("/todos/<int:todo_id>/toggle")
    def toggle(todo_id: int) -> tuple[str, int]:
        todo = db.get_or_404(Todo, todo_id)
        todo.done = not todo.done
        db.session.commit()
        return "", 204

    @app.post("/todos/<int:todo_id>/delete")
    def delete(todo_id: int) -> tuple[str, int]:
        db.session.delete(db.get_or_404(Todo, todo_id))
        db.session.commit()
        return "", 204

    return app

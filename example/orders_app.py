"""Orders: a page that shows the database, then every committed change exactly once.

Flask, Flask-SQLAlchemy and PostgreSQL, with the service on PostgreSQL too::

    ORDERS_DATABASE=postgresql://postgres@127.0.0.1:5432/test \\
        .venv/bin/python -m gunicorn -k gevent -w 2 -b 127.0.0.1:8080 'example.orders_app:create_app()'

What it shows (the guide "Consistency: database, page and stream"):

- An update publishes with the session (``pubsub.publish(..., session=db.session)``): the
  publish is written in the same transaction, so a rolled back update sends nothing and a
  committed one is delivered, in commit order, even if the worker dies right after the commit.
- The page subscribes *before* it queries (``pubsub.page_stream``), and its script starts the
  stream right after that position: nothing that changes in between is missed.
- Each message carries the order's version, so the page ignores what it already shows; on a
  ``reset`` (the stream could not resume) it fetches the orders again.

``POST /orders/<id>`` with ``status=...`` updates an order (``rollback=1`` rolls the update back
after publishing it, to show that nothing leaves a rolled back transaction).
"""

from __future__ import annotations

import os

from flask import Flask, jsonify, render_template, request
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import Integer, String, func, select, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from pubsubsse import PubSubSSE

DATABASE = os.environ.get("ORDERS_DATABASE", "postgresql://postgres@127.0.0.1:5432/test")
TABLE = os.environ.get("ORDERS_TABLE", "orders")
COUNT = int(os.environ.get("ORDERS_COUNT", "20"))


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)
pubsub = PubSubSSE(client_timeout=120)


class Order(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = TABLE
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    status: Mapped[str] = mapped_column(String(20))
    version: Mapped[int] = mapped_column(Integer, default=0)

    def as_dict(self) -> dict[str, object]:
        return {"id": self.id, "status": self.status, "version": self.version}


def create_app() -> Flask:
    app = Flask(__name__)
    app.config.update(
        SQLALCHEMY_DATABASE_URI=DATABASE.replace("postgresql://", "postgresql+psycopg://", 1),
        PUBSUBSSE_POSTGRES_DSN=DATABASE,
        PUBSUBSSE_POSTGRES_NAME=os.environ.get("ORDERS_LOG", "pubsubsse"),
        PUBSUBSSE_RETRY=float(os.environ.get("PUBSUBSSE_RETRY", "2")),
        PUBSUBSSE_REPLAY_SIZE=int(os.environ.get("PUBSUBSSE_REPLAY_SIZE", "1000")),
    )
    db.init_app(app)
    pubsub.init_app(app)
    with app.app_context():
        with db.engine.begin() as connection:  # every worker runs this: one at a time
            connection.execute(text("SELECT pg_advisory_xact_lock(8274)"))
            Base.metadata.create_all(connection)
            if connection.execute(select(func.count()).select_from(Order)).scalar_one() == 0:
                connection.execute(
                    Order.__table__.insert(), [{"id": n, "status": "new", "version": 0} for n in range(1, COUNT + 1)]
                )
        pubsub.public_topic("orders")  # declared at startup, in every worker

    @app.get("/")
    def page() -> str:
        live = pubsub.page_stream(["orders"])  # subscribe first, then query: nothing falls between
        orders = db.session.scalars(select(Order).order_by(Order.id)).all()
        return render_template("orders.html", orders=orders, live=live.as_dict())

    @app.get("/plain")
    def plain_page() -> str:  # the same with a plain EventSource instead of pubsubsse.js
        live = pubsub.page_stream(["orders"])
        orders = db.session.scalars(select(Order).order_by(Order.id)).all()
        return render_template("orders_plain.html", orders=orders, stream_url=live.stream_url())

    @app.get("/htmx")
    def htmx_page() -> str:  # the same with htmx's SSE extension (vendored in example/static/vendor)
        live = pubsub.page_stream(["orders"])
        orders = db.session.scalars(select(Order).order_by(Order.id)).all()
        return render_template("orders_htmx.html", orders=orders, stream_url=live.stream_url())

    @app.get("/orders.json")
    def orders_json():  # type: ignore[no-untyped-def]
        return jsonify([order.as_dict() for order in db.session.scalars(select(Order).order_by(Order.id))])

    @app.post("/orders/<int:order_id>")
    def update(order_id: int):  # type: ignore[no-untyped-def]
        order = db.session.get(Order, order_id, with_for_update=True)  # versions follow the commit order
        if order is None:
            return jsonify({"error": "no such order"}), 404
        status = request.form.get("status", "")
        if not 1 <= len(status) <= 20:
            return jsonify({"error": "status: 1 to 20 characters"}), 400
        order.status = status
        order.version += 1
        pubsub.publish("orders", order.as_dict(), session=db.session)
        if request.form.get("rollback") == "1":
            db.session.rollback()
            return jsonify({"rolled_back": True})
        db.session.commit()
        return jsonify(order.as_dict())

    return app

"""Flask integration: the :class:`PubSubSSE` extension, its ``PUBSUBSSE_*`` configuration and its CLI.

::

    from flask import Flask
    from pubsubsse.flask import PubSubSSE

    pubsub = PubSubSSE()


    def create_app():
        app = Flask(__name__)
        app.config["PUBSUBSSE_REDIS_URL"] = "redis://127.0.0.1:6379/0"  # leave it out for one process
        pubsub.init_app(app)
        return app


    @app.post("/orders")
    def create_order():
        pubsub.publish("orders", {"id": 42})  # the public topic named "orders", T-orders on the wire
        return "", 204

Every option of :class:`~pubsubsse.SSEPubSubService` and of
:func:`~pubsubsse.flask.blueprint.create_blueprint` is a configuration key: ``heartbeat`` is
``PUBSUBSSE_HEARTBEAT``, ``authorize`` is ``PUBSUBSSE_AUTHORIZE``; ``PUBSUBSSE_REDIS_URL``
(and ``PUBSUBSSE_REDIS_KEY``, default ``"pubsubsse:log"``; ``PUBSUBSSE_REDIS_CLUSTER = True``
when the URL names a node of a Redis Cluster; ``PUBSUBSSE_REDIS_PARTITIONS``, default 1) shares
the service through Redis, a
``RedisBackend`` built in each process that uses the service; ``PUBSUBSSE_POSTGRES_DSN`` (and
``PUBSUBSSE_POSTGRES_NAME``, default ``"pubsubsse"``) through PostgreSQL; ``PUBSUBSSE_URL_PREFIX`` (default
``"/sse"``) says where the endpoints are. Options given to :class:`PubSubSSE`
are defaults that the app's configuration overrides. A key that is not one of
them raises :class:`ValueError` at ``init_app``.

The service is built on first use, in the process that uses it: a gunicorn
worker builds its own, and ``flask pubsubsse publish`` never builds one (it
publishes with a :class:`~pubsubsse.Publisher`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, Callable, cast

try:
    import click
    from flask import Flask, current_app
    from flask.cli import AppGroup
except ImportError as missing:  # Flask is an extra: a Django or plain WSGI app does not need it
    raise ImportError(f"pubsubsse's Flask extension needs Flask: pip install 'pubsubsse[flask]' ({missing})") from None
from werkzeug.local import LocalProxy

from pubsubsse.backends.log import LogBackend
from pubsubsse.errors import PubSubError
from pubsubsse.flask.blueprint import create_blueprint
from pubsubsse.handles import Client, Group, Topic
from pubsubsse.html import Broadcast, dom_id, sqlalchemy_broadcasts
from pubsubsse.pages import PageStream, page_stream
from pubsubsse.publisher import Publisher
from pubsubsse.servers import _workers as workers
from pubsubsse.service import SSEPubSubService
from pubsubsse.web._settings import LazyService, endpoint_options, is_shared, known_options

__all__ = ["PubSubSSE", "current_service", "cli"]

PREFIX = "PUBSUBSSE_"


OPTIONS = known_options(frozenset({"url_prefix"}))


class _State(LazyService):
    """What the extension keeps per app, in ``app.extensions["pubsubsse"]``."""

    @property
    def service(self) -> SSEPubSubService:
        """The app's service, built on first use."""
        return self.get()

    def publisher(self) -> Publisher:
        """Return a light publisher for the app's shared backend; raise ``ClickException`` if it has none."""
        options = self.options
        backend = options.get("backend")
        if isinstance(backend, LogBackend):
            return Publisher(backend=backend)
        shorthand = self.log_backend()
        if shorthand is not None:
            return Publisher(backend=shorthand)
        raise click.ClickException(
            "this app's service lives in its web process (no PUBSUBSSE_REDIS_URL or log backend is configured): "
            "a command in another process cannot reach its clients"
        )


def _state(app: Flask) -> _State:
    try:
        state: _State = app.extensions["pubsubsse"]
    except KeyError:
        raise RuntimeError("PubSubSSE is not initialised on this app: call pubsub.init_app(app)") from None
    return state


class PubSubSSE:
    """The Flask extension: one service per app, its endpoints, its configuration and its CLI.

    ``PubSubSSE(app)`` or, with an app factory, ``pubsub = PubSubSSE()`` then
    ``pubsub.init_app(app)``. ``options`` are defaults for the ``PUBSUBSSE_*``
    keys (see the module's docstring): ``PubSubSSE(heartbeat=5)``.
    """

    def __init__(self, app: Flask | None = None, **options: Any) -> None:
        unknown = set(options) - OPTIONS
        if unknown:
            raise TypeError(f"unknown options {sorted(unknown)}; the options are {sorted(OPTIONS)}")
        self.options = options
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Read the app's ``PUBSUBSSE_*`` keys, register the endpoints and the CLI, keep the state in the app."""
        settings = dict(self.options)
        unknown = []
        for key, value in app.config.items():
            if key.startswith(PREFIX):
                option = key[len(PREFIX) :].lower()
                if option in OPTIONS:
                    settings[option] = value
                else:
                    unknown.append(key)
        if unknown:
            keys = ", ".join(PREFIX + o.upper() for o in sorted(OPTIONS))
            raise ValueError(f"unknown configuration keys {sorted(unknown)}; pubsubsse reads {keys}")
        url_prefix = settings.pop("url_prefix", "/sse")
        workers.warn_unless_shared(is_shared(settings))
        state = _State(settings)
        blueprint = create_blueprint(lambda: state.service, **endpoint_options(settings))
        app.register_blueprint(blueprint, url_prefix=url_prefix)
        app.extensions["pubsubsse"] = state
        app.cli.add_command(cli)

    @property
    def service(self) -> SSEPubSubService:
        """The service of the current app (built on first use)."""
        return _state(current_app).service

    def public_topic(self, name: str) -> Topic:
        """Return the current app's public topic named ``name`` (see :meth:`.SSEPubSubService.public_topic`)."""
        return self.service.public_topic(name)

    def group(self, name: str) -> Group:
        """Return the current app's group named ``name`` (see :meth:`~pubsubsse.SSEPubSubService.group`)."""
        return self.service.group(name)

    def publish(self, topic: str, data: Any, *, session: Any = None, transaction: Any = None) -> None:
        """Publish ``data`` to the public topic named ``topic``, or with that id: :meth:`.SSEPubSubService.publish`.

        ``session`` (a SQLAlchemy session, such as Flask-SQLAlchemy's
        ``db.session``) publishes with its transaction: in it with the
        PostgreSQL backend on the same database, else after it commits (see
        :mod:`pubsubsse.transactions`). ``transaction`` is as for
        :meth:`.Topic.pub`.
        """
        if session is not None:
            from pubsubsse.transactions import publish_with_session

            publish_with_session(self.service, topic, data, session)
        else:
            self.service.publish(topic, data, transaction=transaction)

    def broadcasts(
        self,
        model: type,
        topic: str,
        template: str | None = None,
        *,
        style: str = "turbo",
        target: str | None = None,
        key: Callable[[Any], str] = dom_id,
        interval: float = 0.5,
        session: Any = None,
    ) -> Callable[[], None]:
        """Push every change of the SQLAlchemy ``model`` to ``topic`` as HTML: Rails' ``broadcasts_to``.

        ``template`` (a Jinja template name) renders one row, with ``object``
        and the model's name in lower case in its context, once per change, at
        the flush that writes it (in the app context the flush runs in).
        ``style``, ``target``, ``key`` and ``interval`` are as for
        :class:`pubsubsse.html.Broadcast`; ``session`` is the sessions to
        watch (Flask-SQLAlchemy's ``db.session``; every ``Session`` if
        ``None``). Published with the transaction, as
        :meth:`publish` with ``session``. Call it after :meth:`init_app`; the
        function it returns stops it.
        """
        from flask import render_template

        def render(context: Any) -> str:
            return render_template(template or "", **context)

        broadcast = Broadcast(
            model, topic, render if template else None, style=style, target=target, key=key, interval=interval
        )
        return sqlalchemy_broadcasts(self.service, broadcast, session)

    def page_stream(self, topics: Iterable[Topic | str], client: Client | None = None) -> PageStream:
        """Subscribe a page's client before the view queries; see :func:`pubsubsse.pages.page_stream`."""
        return page_stream(self.service, topics, client)


#: The current app's service, for views and helpers that do not hold the extension object.
current_service: SSEPubSubService = cast(SSEPubSubService, LocalProxy(lambda: _state(current_app).service))


#: ``flask pubsubsse ...``: its commands run in the app's context.
cli = AppGroup("pubsubsse", help="Publish to the app's topics and look at its service.")


@cli.command("publish")
@click.argument("topic")
@click.argument("data")
def publish_command(topic: str, data: str) -> None:
    """Publish DATA (JSON) to the public topic named TOPIC (or with that id, T-…).

    Needs a shared backend (PUBSUBSSE_REDIS_URL, or a log backend in PUBSUBSSE_BACKEND):
    the message is appended to its log in one round trip.
    """
    try:
        value = json.loads(data)
    except ValueError as error:
        raise click.BadParameter(f"not JSON: {error}", param_hint="DATA") from None
    publisher = _state(current_app).publisher()
    try:
        publisher.publish(topic, value)
    except (PubSubError, ValueError, TypeError) as error:
        raise click.ClickException(str(error)) from None
    finally:
        publisher.close()
    click.echo(f"published to {topic if topic.startswith('T-') else 'T-' + topic}")


@cli.command("stats")
def stats_command() -> None:
    """Print the service's numbers (clients, topics, streams, messages) as JSON."""
    state = _state(current_app)
    state.publisher().close()  # the same check: only a shared service can be looked at from here
    service = state.service
    try:
        click.echo(json.dumps(service.stats(), indent=2, sort_keys=True))
    finally:
        service.shutdown()

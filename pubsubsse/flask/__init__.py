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
``PUBSUBSSE_HEARTBEAT``, ``redis_url`` is ``PUBSUBSSE_REDIS_URL``,
``authorize`` is ``PUBSUBSSE_AUTHORIZE``; ``PUBSUBSSE_URL_PREFIX`` (default
``"/sse"``) says where the endpoints are. Options given to :class:`PubSubSSE`
are defaults that the app's configuration overrides. A key that is not one of
them raises :class:`ValueError` at ``init_app``.

The service is built on first use, in the process that uses it: a gunicorn
worker builds its own, and ``flask pubsubsse publish`` never builds one (it
publishes with a :class:`~pubsubsse.Publisher`).
"""

from __future__ import annotations

import json
import threading
from typing import Any, cast

try:
    import click
    from flask import Flask, current_app
    from flask.cli import AppGroup
except ImportError as missing:  # Flask is an extra: a Django or plain WSGI app does not need it
    raise ImportError(f"pubsubsse's Flask extension needs Flask: pip install 'pubsubsse[flask]' ({missing})") from None
from werkzeug.local import LocalProxy

from ..backends.log import LogBackend
from ..errors import PubSubError
from ..model import Group, Topic
from ..protocol import ENDPOINT_OPTIONS
from ..publisher import Publisher
from ..servers import workers
from ..service import SERVICE_OPTIONS, SSEPubSubService
from .blueprint import create_blueprint

__all__ = ["PubSubSSE", "current_service", "cli"]

PREFIX = "PUBSUBSSE_"


BLUEPRINT_OPTIONS = ENDPOINT_OPTIONS
OPTIONS = SERVICE_OPTIONS | BLUEPRINT_OPTIONS | {"url_prefix"}


class _State:
    """What the extension keeps per app, in ``app.extensions["pubsubsse"]``."""

    def __init__(self, service_options: dict[str, Any]) -> None:
        self.service_options = service_options
        self._service: SSEPubSubService | None = None
        self._lock = threading.Lock()

    @property
    def service(self) -> SSEPubSubService:
        """The app's service, built on first use."""
        if self._service is None:
            with self._lock:
                if self._service is None:
                    service = SSEPubSubService(**self.service_options)
                    service._serving = True  # the app serves its endpoints: its publishes can reach browsers
                    self._service = service
        return self._service

    def publisher(self) -> Publisher:
        """Return a light publisher for the app's shared backend; raise ``ClickException`` if it has none."""
        options = self.service_options
        backend = options.get("backend")
        if isinstance(backend, LogBackend):
            return Publisher(backend=backend)
        if options.get("redis_url"):
            return Publisher(options["redis_url"], redis_key=options.get("redis_key", "pubsubsse:log"))
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
        workers.warn_unless_shared(bool(settings.get("backend") or settings.get("redis_url")))
        state = _State({k: v for k, v in settings.items() if k in SERVICE_OPTIONS})
        blueprint = create_blueprint(
            lambda: state.service, **{k: v for k, v in settings.items() if k in BLUEPRINT_OPTIONS}
        )
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

    def publish(self, topic: str, data: Any) -> None:
        """Publish ``data`` to the public topic named ``topic``, or with that id: :meth:`.SSEPubSubService.publish`."""
        self.service.publish(topic, data)


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

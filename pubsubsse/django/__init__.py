"""Django integration: the endpoints as an installable app, configured by ``settings.PUBSUBSSE``.

In ``settings.py``::

    INSTALLED_APPS = [..., "pubsubsse.django"]
    PUBSUBSSE = {
        "redis_url": "redis://127.0.0.1:6379/0",  # leave it out for one process
        "public_topic_creation": False,
        "authorize": "myproject.sse.authorize",  # a callable, or its dotted path
        "identify": "myproject.sse.identify",  # the user of a client /add/user makes
    }

In ``urls.py``::

    urlpatterns = [..., path("sse/", include("pubsubsse.django.urls"))]

and in a view or a task::

    from pubsubsse.django import publish

    publish("orders", {"id": 42})  # the public topic named "orders", T-orders on the wire

``PUBSUBSSE`` takes every option of :class:`~pubsubsse.SSEPubSubService` and of the endpoints (see
:func:`pubsubsse.wsgi.make_wsgi_app`), by their Python names, and ``redis_url`` / ``redis_key`` /
``redis_cluster`` (a ``RedisBackend`` built in each process that uses the service;
``"redis_cluster": True`` when the URL names a node of a Redis Cluster; ``"redis_partitions"``) or ``postgres_dsn`` /
``postgres_name`` (a ``PostgresBackend``, likewise); an unknown key raises ``ImproperlyConfigured``.
The service is built on first use, in the process that uses it (each gunicorn worker builds its
own). The ``authorize`` hook receives Django's ``HttpRequest`` and may raise ``PermissionDenied``
(403) or :class:`~pubsubsse.web.Refused`.
The endpoints are exempt from CSRF checks: they take no cookies of their own
(an app whose ``authorize`` hook trusts the session cookie should check the
request's origin there, as in the authorization guide).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterable
from typing import Any, Callable

from pubsubsse.handles import Client, Group, Topic
from pubsubsse.html import Broadcast, dom_id
from pubsubsse.pages import PageStream
from pubsubsse.service import SSEPubSubService
from pubsubsse.web._settings import LazyService, known_options

__all__ = ["broadcasts", "get_service", "publish", "page_stream", "public_topic", "group", "settings_options"]

_lock = threading.Lock()
_service: LazyService | None = None


def settings_options() -> dict[str, Any]:
    """Return ``settings.PUBSUBSSE``, checked, with the dotted paths of ``authorize`` and ``identify`` resolved."""
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured

    options = dict(getattr(settings, "PUBSUBSSE", {}))
    unknown = set(options) - known_options()
    if unknown:
        known = ", ".join(sorted(known_options()))
        raise ImproperlyConfigured(f"unknown keys {sorted(unknown)} in settings.PUBSUBSSE; the keys are {known}")
    for hook in ("authorize", "identify"):
        if isinstance(options.get(hook), str):
            options[hook] = _imported_on_first_call(options[hook])
    return options


def _imported_on_first_call(dotted_path: str) -> Callable[..., Any]:
    """Return the function at ``dotted_path``, imported when first called (its module may import ours)."""
    from django.utils.module_loading import import_string

    @functools.lru_cache(maxsize=1)
    def target() -> Callable[..., Any]:
        found: Callable[..., Any] = import_string(dotted_path)
        return found

    def call(*args: Any) -> Any:
        return target()(*args)

    call.__qualname__ = call.__name__ = dotted_path
    return call


def _serves_http() -> bool:
    """Whether this process serves the app's URLs: not one of ``manage.py``'s commands, but for runserver."""
    import os
    import sys

    path = sys.argv[0] if sys.argv else ""
    program = os.path.basename(path)
    if program == "__main__.py":  # python -m django
        program = os.path.basename(os.path.dirname(path))
    if program in ("manage.py", "django-admin", "django") and len(sys.argv) > 1:
        return sys.argv[1] in ("runserver", "runserver_plus", "testserver")
    return True


def get_service() -> SSEPubSubService:
    """Return this process's service, built from ``settings.PUBSUBSSE`` on first use."""
    global _service
    if _service is None:
        with _lock:
            if _service is None:
                _service = LazyService(settings_options(), serving=_serves_http())
    return _service.get()


def public_topic(name: str) -> Topic:
    """Return the public topic named ``name``, creating it if absent (see :meth:`.SSEPubSubService.public_topic`)."""
    return get_service().public_topic(name)


def group(name: str) -> Group:
    """Return the group named ``name``, creating it if absent (see :meth:`~pubsubsse.SSEPubSubService.group`)."""
    return get_service().group(name)


def publish(topic: str, data: Any, *, using: str | None = None) -> None:
    """Publish ``data`` to the public topic named ``topic`` or with that id (see :meth:`.SSEPubSubService.publish`).

    Inside ``transaction.atomic()`` (of the database alias ``using``, the
    default one if ``None``) it joins the transaction. With the service on
    ``PostgresBackend`` in that database, the publish is written in it:
    delivered if and only if the transaction commits, in commit order, also if
    the process dies right after the commit. With another backend it is sent
    from ``transaction.on_commit``: nothing of a rolled back transaction, and
    nothing before the commit is visible, but a publish is lost if the process
    dies between the commit and the publish (or the log refuses it then; logged).
    Outside a transaction it publishes at once.
    """
    from django.db import DEFAULT_DB_ALIAS, connections
    from django.db import transaction as db_transaction

    from pubsubsse.errors import NotTransactional
    from pubsubsse.transactions import check_publish

    service = get_service()
    alias = using or DEFAULT_DB_ALIAS
    connection = connections[alias]
    if not connection.in_atomic_block:
        service.publish(topic, data)
        return
    try:
        service.publish(topic, data, transaction=connection)
        return
    except NotTransactional:
        pass
    check_publish(service, topic, data)
    db_transaction.on_commit(functools.partial(service.publish, topic, data), using=alias, robust=True)


def page_stream(topics: Iterable[Topic | str], client: Client | None = None) -> PageStream:
    """Subscribe a page's client before the view queries; see :func:`pubsubsse.pages.page_stream`."""
    from pubsubsse.pages import page_stream as subscribe_page

    return subscribe_page(get_service(), topics, client)


def broadcasts(
    model: type,
    topic: str,
    template: str | None = None,
    *,
    style: str = "turbo",
    target: str | None = None,
    key: Callable[[Any], str] = dom_id,
    interval: float = 0.5,
) -> Callable[[], None]:
    """Push every saved or deleted row of ``model`` to ``topic`` as HTML: Rails' ``broadcasts_to``.

    ``template`` (a Django template name) renders one row, with ``object`` and
    the model's name in lower case (``todo``) in its context, once per change.
    ``style``, ``target``, ``key`` and ``interval`` are as for
    :class:`pubsubsse.html.Broadcast`: ``"turbo"`` appends, replaces and
    removes rows, ``"htmx"`` sends fragments for ``sse-swap``, ``"refresh"``
    sends one debounced Turbo refresh per burst. The fragments are published
    with the change's transaction (:func:`publish` with the signal's database):
    a rolled back save sends nothing. Call it once, in ``AppConfig.ready()``;
    the function it returns disconnects it. Raises :class:`ValueError` as
    :class:`~pubsubsse.html.Broadcast` does.
    """
    from django.db import transaction as db_transaction
    from django.db.models.signals import post_delete, post_save
    from django.template.loader import render_to_string

    def render(context: Any) -> str:
        return render_to_string(template or "", dict(context))

    broadcast = Broadcast(
        model, topic, render if template else None, style=style, target=target, key=key, interval=interval
    )
    refresh = broadcast.refresher(lambda value: publish(topic, value))

    def changed(instance: Any, change: str, using: str) -> None:
        if broadcast.style == "refresh":
            db_transaction.on_commit(refresh, using=using, robust=True)  # at once outside a transaction
            return
        for value in broadcast.fragments(instance, change):
            publish(topic, value, using=using)

    def saved(sender: Any, instance: Any, created: bool, using: str, **kwargs: Any) -> None:
        changed(instance, "created" if created else "updated", using)

    def deleted(sender: Any, instance: Any, using: str, **kwargs: Any) -> None:
        changed(instance, "deleted", using)

    uid = f"pubsubsse.broadcasts:{model.__module__}.{model.__qualname__}:{topic}"
    post_save.connect(saved, sender=model, weak=False, dispatch_uid=uid)
    post_delete.connect(deleted, sender=model, weak=False, dispatch_uid=uid)

    def stop() -> None:
        post_save.disconnect(sender=model, dispatch_uid=uid)
        post_delete.disconnect(sender=model, dispatch_uid=uid)
        refresh.flush()

    return stop

"""Django integration: the endpoints as an installable app, configured by ``settings.PUBSUBSSE``.

In ``settings.py``::

    INSTALLED_APPS = [..., "pubsubsse.django"]
    PUBSUBSSE = {
        "redis_url": "redis://127.0.0.1:6379/0",  # leave it out for one process
        "public_topic_creation": False,
        "authorize": "myproject.sse.authorize",  # a callable, or its dotted path
    }

In ``urls.py``::

    urlpatterns = [..., path("sse/", include("pubsubsse.django.urls"))]

and in a view or a task::

    from pubsubsse.django import publish

    publish("orders", {"id": 42})  # the public topic named "orders", T-orders on the wire

``PUBSUBSSE`` takes every option of :class:`~pubsubsse.SSEPubSubService`
and of the endpoints (:class:`~pubsubsse.protocol.Endpoints`), by their
Python names; an unknown key raises ``ImproperlyConfigured``. The service is
built on first use, in the process that uses it (each gunicorn worker builds
its own). The ``authorize`` hook receives Django's ``HttpRequest`` and may
raise ``PermissionDenied`` (403) or :class:`~pubsubsse.protocol.Refused`.
The endpoints are exempt from CSRF checks: they take no cookies of their own
(an app whose ``authorize`` hook trusts the session cookie should check the
request's origin there, as in the authorization guide).
"""

from __future__ import annotations

import functools
import threading
from typing import Any, Callable

from ..model import Group, Topic
from ..protocol import ENDPOINT_OPTIONS
from ..service import SERVICE_OPTIONS, SSEPubSubService

__all__ = ["get_service", "publish", "public_topic", "group", "settings_options"]

_lock = threading.Lock()
_service: SSEPubSubService | None = None


def settings_options() -> dict[str, Any]:
    """Return ``settings.PUBSUBSSE``, checked, with an ``authorize`` dotted path resolved."""
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured

    options = dict(getattr(settings, "PUBSUBSSE", {}))
    unknown = set(options) - SERVICE_OPTIONS - ENDPOINT_OPTIONS
    if unknown:
        known = ", ".join(sorted(SERVICE_OPTIONS | ENDPOINT_OPTIONS))
        raise ImproperlyConfigured(f"unknown keys {sorted(unknown)} in settings.PUBSUBSSE; the keys are {known}")
    if isinstance(options.get("authorize"), str):
        options["authorize"] = _imported_on_first_call(options["authorize"])
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
                options = settings_options()
                service = SSEPubSubService(**{k: v for k, v in options.items() if k in SERVICE_OPTIONS})
                service._serving = _serves_http()
                _service = service
    return _service


def public_topic(name: str) -> Topic:
    """Return the public topic named ``name``, creating it if absent (see :meth:`.SSEPubSubService.public_topic`)."""
    return get_service().public_topic(name)


def group(name: str) -> Group:
    """Return the group named ``name``, creating it if absent (see :meth:`~pubsubsse.SSEPubSubService.group`)."""
    return get_service().group(name)


def publish(topic: str, data: Any) -> None:
    """Publish ``data`` to the public topic named ``topic`` or with that id (see :meth:`.SSEPubSubService.publish`)."""
    get_service().publish(topic, data)

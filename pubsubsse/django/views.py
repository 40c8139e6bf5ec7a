"""The Django adapter: the protocol's endpoints as views."""

from __future__ import annotations

from typing import Any, Callable

from django.core.exceptions import PermissionDenied
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, HttpResponseBase, StreamingHttpResponse
from django.urls import URLPattern, re_path
from django.views.decorators.csrf import csrf_exempt

from pubsubsse.django import get_service, settings_options
from pubsubsse.web._protocol import Endpoints, FileReply, Refused, Reply, Request
from pubsubsse.web._wsgi import as_requested, prepare, start_stream

__all__ = ["patterns", "django_errors"]


def django_errors(error: Exception) -> Refused | None:
    """Map ``PermissionDenied`` and ``Http404`` raised by a hook to their answers."""
    if isinstance(error, PermissionDenied):
        return Refused(403, str(error) or "forbidden")
    if isinstance(error, Http404):
        return Refused(404, str(error) or "not found")
    return None


def _request(request: HttpRequest, path: str) -> Request:
    length = request.META.get("CONTENT_LENGTH")
    return Request(
        method=request.method or "GET",
        path=path,
        # WSGI hands the query string over as latin-1 text: these are its original bytes.
        query_string=request.META.get("QUERY_STRING", "").encode("latin-1"),
        headers=request.headers,
        remote_addr=request.META.get("REMOTE_ADDR"),
        content_type=(request.content_type or "").lower(),
        content_length=int(length) if length and length.isdigit() else None,
        read_body=request.read,
        native=request,
        url_path=request.path,
        multiprocess=bool(request.META.get("wsgi.multiprocess")),
    )


def _view(endpoints: Endpoints, path: str) -> Callable[..., HttpResponseBase]:
    @csrf_exempt
    def view(request: HttpRequest, **kwargs: Any) -> HttpResponseBase:
        answer = endpoints.handle(_request(request, as_requested(path, request.path)))
        if isinstance(answer, Reply):
            response: HttpResponseBase = HttpResponse(answer.body, status=answer.status)
        elif isinstance(answer, FileReply):
            response = FileResponse(answer.path.open("rb"), content_type=answer.content_type)
            response["Cache-Control"] = f"public, max-age={answer.max_age}"
        else:
            environ = getattr(request, "environ", request.META)
            response = StreamingHttpResponse(start_stream(endpoints, answer, environ), status=answer.status)
        for name, value in answer.headers:
            if name.lower() == "vary" and response.has_header("Vary"):
                value = f"{response['Vary']}, {value}"
            response[name] = value
        return response

    return view


def patterns(**overrides: Any) -> list[URLPattern]:
    """Return URL patterns for the endpoints; ``overrides`` change options of ``settings.PUBSUBSSE``.

    ``path("sse/", include("pubsubsse.django.urls"))`` uses the settings as
    they are; to serve the same service a second time with other options::

        path("admin-sse/", include(patterns(public_topic_creation=True)))
    """
    from pubsubsse.web._settings import endpoint_options

    options = endpoint_options({**settings_options(), **overrides})
    options.setdefault("translate_error", django_errors)
    endpoints = prepare(Endpoints(get_service, **options))
    return [
        re_path("^" + path.strip("/") + "/?$", _view(endpoints, path), name=action)
        for path, action in endpoints.paths().items()
    ]

"""URLs and a hook for tests/integration/test_django.py's in-process Django projects."""

from django.core.exceptions import PermissionDenied
from django.urls import include, path

urlpatterns = [path("sse/", include("pubsubsse.django.urls"))]


def authorize(request, action, client, topic):
    """Allow whoever says who they are, except mallory."""
    user = request.headers.get("X-User", "alice")
    if user == "mallory":
        raise PermissionDenied("mallory may not")
    return bool(user)

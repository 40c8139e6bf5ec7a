"""The endpoints' URLs: ``path("sse/", include("pubsubsse.django.urls"))``."""

from __future__ import annotations

from pubsubsse.django.views import patterns

app_name = "pubsubsse"

urlpatterns = patterns()

"""The test project's URLs: the endpoints at the root, and again with other options under /locked/."""

from django.conf import settings
from django.urls import include, path

from pubsubsse.django.views import patterns

urlpatterns = [
    path("", include("pubsubsse.django.urls")),
    path("locked/", include(patterns(**settings.TEST_LOCKED_OPTIONS))),
]

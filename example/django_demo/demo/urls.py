"""The demo's URLs: its page, a view that publishes, and pubsubsse's endpoints under /sse/."""

from django.urls import include, path

from . import views

urlpatterns = [
    path("", views.index),
    path("say", views.say),
    path("sse/", include("pubsubsse.django.urls")),
]

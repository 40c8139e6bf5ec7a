"""A Django project for the HTTP tests: the pubsubsse app, settings from the test app's options."""

from __future__ import annotations

from typing import Any


def setup(service_options: dict[str, Any], endpoint_options: dict[str, Any], locked: dict[str, Any]):
    """Configure Django with ``settings.PUBSUBSSE`` and return the service it builds."""
    import django
    from django.conf import settings

    settings.configure(
        DEBUG=False,
        SECRET_KEY="tests-only",
        ALLOWED_HOSTS=["127.0.0.1", "localhost"],
        ROOT_URLCONF="tests.django_urls",
        INSTALLED_APPS=["pubsubsse.django"],
        MIDDLEWARE=[
            "django.middleware.security.SecurityMiddleware",
            "django.middleware.common.CommonMiddleware",
            "django.middleware.csrf.CsrfViewMiddleware",
        ],
        PUBSUBSSE={**service_options, **endpoint_options},
        TEST_LOCKED_OPTIONS=locked,
    )
    django.setup()
    from pubsubsse.django import get_service

    return get_service()

"""The Django project of the HTTP tests: the pubsubsse app with the test app's options.

The endpoints are at the root and again, with other options, under ``/locked/``
(``tests/django_urls.py``); the test controls are the test app's, in front of
Django (``WSGI_APPLICATION``).
"""

from .server_app import LOCKED_OPTIONS, main_options, service_options

DEBUG = False
SECRET_KEY = "tests-only"
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
ROOT_URLCONF = "tests.django_urls"
WSGI_APPLICATION = "tests.wsgi.application"
INSTALLED_APPS = ["pubsubsse.django"]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
]
PUBSUBSSE = {**service_options(), **main_options()}
TEST_LOCKED_OPTIONS = LOCKED_OPTIONS

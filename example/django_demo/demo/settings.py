"""Settings of the Django demo: the pubsubsse app, in one process or shared through Redis."""

import os

DEBUG = os.environ.get("DJANGO_DEBUG") == "1"
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "demo-only-not-secret")
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
ROOT_URLCONF = "demo.urls"
WSGI_APPLICATION = "demo.wsgi.application"
INSTALLED_APPS = [
    "django.contrib.staticfiles",
    "pubsubsse.django",  # add it to the apps your project has
    "demo",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
]
TEMPLATES = [{"BACKEND": "django.template.backends.django.DjangoTemplates", "DIRS": [], "APP_DIRS": True}]
STATIC_URL = "static/"

PUBSUBSSE = {
    "heartbeat": 15,
    "client_timeout": 120,
}
if os.environ.get("PUBSUBSSE_REDIS_URL"):  # several workers: gunicorn -k gevent -w 4 demo.wsgi
    PUBSUBSSE["redis_url"] = os.environ["PUBSUBSSE_REDIS_URL"]

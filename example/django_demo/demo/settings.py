"""Settings of the Django demo: the pubsubsse app, in one process or shared through Redis or PostgreSQL."""

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
if os.environ.get("ORDERS_DATABASE"):  # the orders pages (demo/orders.py): the data and the log in PostgreSQL
    from urllib.parse import urlsplit

    _url = urlsplit(os.environ["ORDERS_DATABASE"])
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": _url.path.lstrip("/"),
            "USER": _url.username or "",
            "PASSWORD": _url.password or "",
            "HOST": _url.hostname or "",
            "PORT": str(_url.port or 5432),
        }
    }
    PUBSUBSSE["postgres_dsn"] = os.environ["ORDERS_DATABASE"]
    PUBSUBSSE["postgres_name"] = os.environ.get("ORDERS_LOG", "pubsubsse")

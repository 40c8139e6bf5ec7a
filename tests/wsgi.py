"""The test app as a module attribute, for servers that import one (uWSGI, waitress, Django's runserver)."""

from .server_app import create_app

application = create_app()

"""The Django app: ``"pubsubsse.django"`` in ``INSTALLED_APPS``."""

from __future__ import annotations

from django.apps import AppConfig


class PubSubSSEConfig(AppConfig):
    """Checks ``settings.PUBSUBSSE`` when Django starts, so a wrong key fails at once."""

    name = "pubsubsse.django"
    label = "pubsubsse"
    verbose_name = "pubsubsse"

    def ready(self) -> None:
        """Check the settings and set SIGTERM to end streams (the service itself is built on first use)."""
        from pubsubsse.django import settings_options
        from pubsubsse.servers import _shutdown as shutdown
        from pubsubsse.servers import _workers as workers
        from pubsubsse.web._settings import is_shared

        options = settings_options()
        # Here, in the main thread (signal handlers can be installed nowhere else).
        if options.get("end_streams_on_sigterm", True):
            shutdown.install_handler()
        workers.warn_unless_shared(is_shared(options))

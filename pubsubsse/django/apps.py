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
        from ..servers import shutdown
        from . import settings_options

        # Here, in the main thread (signal handlers can be installed nowhere else).
        if settings_options().get("end_streams_on_sigterm", True):
            shutdown.install_handler()

"""The demo's app: it declares its named topics when Django starts."""

import os

from django.apps import AppConfig


class DemoConfig(AppConfig):
    name = "demo"

    def ready(self) -> None:
        from pubsubsse.django import public_topic

        # A named topic exists from its first use: declared here, in every process at startup,
        # a page can subscribe to T-news before anything has been published to it.
        public_topic("news")
        if os.environ.get("ORDERS_DATABASE"):
            public_topic("orders")

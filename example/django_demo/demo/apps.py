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
            from pubsubsse.django import broadcasts

            from .todos import Todo

            public_topic("orders")
            public_topic("todos")
            # Every saved or deleted Todo, rendered with demo/_todo.html, to the pages on "todos".
            broadcasts(Todo, "todos", "demo/_todo.html")

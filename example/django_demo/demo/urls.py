"""The demo's URLs: its page, a view that publishes, pubsubsse's endpoints under /sse/, and the orders."""

import os

from django.urls import include, path

from . import views

urlpatterns = [
    path("", views.index),
    path("say", views.say),
    path("sse/", include("pubsubsse.django.urls")),
]
if os.environ.get("ORDERS_DATABASE"):  # the orders pages need PostgreSQL: demo/orders.py
    from . import orders

    urlpatterns += [
        path("orders/", orders.page),
        path("orders.json", orders.orders_json),
        path("orders/<int:order_id>", orders.update),
    ]

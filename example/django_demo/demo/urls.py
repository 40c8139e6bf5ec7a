"""The demo's URLs: its page, a view that publishes, pubsubsse's endpoints under /sse/, the orders and todos."""

import os

from django.urls import include, path

from . import views

urlpatterns = [
    path("", views.index),
    path("say", views.say),
    path("sse/", include("pubsubsse.django.urls")),
]
if os.environ.get("ORDERS_DATABASE"):  # the orders and todos pages need PostgreSQL: demo/orders.py, demo/todos.py
    from . import orders, todos

    urlpatterns += [
        path("orders/", orders.page),
        path("orders.json", orders.orders_json),
        path("orders/<int:order_id>", orders.update),
        path("todos/", todos.page),
        path("todos/new", todos.create),
        path("todos/<int:todo_id>/toggle", todos.toggle),
        path("todos/<int:todo_id>/delete", todos.delete),
        path("turbo.js", todos.turbo_script),
    ]

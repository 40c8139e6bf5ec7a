"""Orders on Django: a page that shows the database, then every committed change exactly once.

Active when ``ORDERS_DATABASE`` is set (a PostgreSQL URL; the service's log goes there too)::

    ORDERS_DATABASE=postgresql://postgres@127.0.0.1:5432/test \\
        ../../.venv/bin/python -m gunicorn -k gevent -w 2 -b 127.0.0.1:8000 demo.wsgi

The same as ``example/orders_app.py`` (Flask), in Django's terms: the update view publishes
inside ``transaction.atomic()`` (``pubsubsse.django.publish`` joins the transaction: on the
PostgreSQL backend it is written in it), and the page subscribes before it queries
(``pubsubsse.django.page_stream``). See the guide "Consistency: database, page and stream".
"""

from __future__ import annotations

import json
import os

from django.db import connection, models, transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.html import escape
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from pubsubsse.django import page_stream, publish

TABLE = os.environ.get("ORDERS_TABLE", "orders")
COUNT = int(os.environ.get("ORDERS_COUNT", "20"))


class Order(models.Model):
    status = models.CharField(max_length=20)
    version = models.IntegerField(default=0)

    class Meta:
        app_label = "demo"
        db_table = TABLE
        managed = False  # made below, by whichever worker comes first (no migration to run)

    def as_dict(self) -> dict[str, object]:
        return {"id": self.id, "status": self.status, "version": self.version}


_ready = False


def _ensure_table() -> None:
    global _ready
    if _ready:
        return
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(8274)")
        cursor.execute(
            f"CREATE TABLE IF NOT EXISTS {TABLE} (id integer PRIMARY KEY, status varchar(20) NOT NULL, "
            "version integer NOT NULL DEFAULT 0)"
        )
        cursor.execute(
            f"INSERT INTO {TABLE} (id, status, version) SELECT n, 'new', 0 FROM generate_series(1, %s) n "
            "ON CONFLICT DO NOTHING",
            [COUNT],
        )
    _ready = True


PAGE = """<!doctype html>
<meta charset="utf-8">
<title>Orders</title>
<h1>Orders <small id="status" data-testid="status">connecting</small></h1>
<ul id="orders">%(items)s</ul>
<script src="/sse/pubsubsse.js"></script>
<script id="live" type="application/json">%(live)s</script>
<script>
  function show(order) {  // only what is newer than what the page shows
    const li = document.querySelector(`li[data-id="${order.id}"]`);
    if (!li || Number(li.dataset.version) >= order.version) return;
    li.dataset.status = order.status;
    li.dataset.version = order.version;
    li.querySelector("span").textContent = order.status;
  }
  const live = JSON.parse(document.getElementById("live").textContent);
  const ps = new PubSubSSE({
    baseUrl: "/sse", clientId: live.client_id, lastEventId: live.last_event_id, topics: live.topics,
  });
  ps.on("update", (topic, order) => show(order));
  ps.on("reset", () => fetch("/orders.json").then((r) => r.json()).then((orders) => orders.forEach(show)));
  ps.on("status", (status) => { document.getElementById("status").textContent = status; });
  ps.start();
</script>
"""

ITEM = '<li data-id="%(id)s" data-status="%(status)s" data-version="%(version)s">#%(id)s: <span>%(status)s</span></li>'


def page(request: HttpRequest) -> HttpResponse:
    """The orders, rendered; the stream starts where the query read them."""
    _ensure_table()
    live = page_stream(["orders"])  # subscribe first, then query: nothing falls between
    orders = Order.objects.order_by("id")
    items = "".join(ITEM % {"id": o.id, "status": escape(o.status), "version": o.version} for o in orders)
    # "<" never reaches the page inside the script element: the ids and positions are plain.
    return HttpResponse(PAGE % {"items": items, "live": json.dumps(live.as_dict()).replace("<", "\\u003c")})


def orders_json(request: HttpRequest) -> JsonResponse:
    """Every order, for a page that got a reset."""
    _ensure_table()
    return JsonResponse([o.as_dict() for o in Order.objects.order_by("id")], safe=False)


@csrf_exempt  # a demo API for scripts and the tests; a real app keeps CSRF on
@require_POST
def update(request: HttpRequest, order_id: int) -> JsonResponse:
    """Set an order's status; ``rollback=1`` rolls the update back after publishing it."""
    _ensure_table()
    status = request.POST.get("status", "")
    if not 1 <= len(status) <= 20:
        return JsonResponse({"error": "status: 1 to 20 characters"}, status=400)
    with transaction.atomic():
        order = Order.objects.select_for_update().filter(id=order_id).first()  # versions follow the commit order
        if order is None:
            return JsonResponse({"error": "no such order"}, status=404)
        order.status = status
        order.version += 1
        order.save()
        publish("orders", order.as_dict())  # joins this transaction
        if request.POST.get("rollback") == "1":
            transaction.set_rollback(True)
            return JsonResponse({"rolled_back": True})
    return JsonResponse(order.as_dict())

"""A live todo list with Turbo on Django: every page shows every change, as Turbo Stream actions.

Active when ``ORDERS_DATABASE`` is set (a PostgreSQL URL; the service's log goes there too)::

    ORDERS_DATABASE=postgresql://postgres@127.0.0.1:5432/test \\
        ../../.venv/bin/python -m gunicorn -k gevent -w 2 -b 127.0.0.1:8000 demo.wsgi

then open http://127.0.0.1:8000/todos/ in two windows. What it shows (the guide "Live HTML with
htmx and Turbo"):

- ``broadcasts(Todo, "todos", "demo/_todo.html")`` (in ``DemoConfig.ready``): a saved row is
  appended to ``#todos`` or replaces ``#todo_<id>``, a deleted one is removed. The template is
  rendered once per change, in the view's transaction, and the action is written in it: a rolled
  back change sends nothing, a committed one reaches every page.
- The page subscribes before it queries (``page_stream``) and its stream source opens the
  stream with ``format=turbo`` after that position. A stream that cannot resume gets a
  ``refresh`` action: Turbo reloads the page. The source is ``<pubsubsse-stream-source>``
  (``/sse/pubsubsse-html.js``), Turbo's ``<turbo-stream-source>`` that opens the stream again,
  from where the page is, when a reconnect was answered with an error.
- The buttons are Turbo forms answered with ``204 No Content``: the page changes only through its
  stream.
"""

from __future__ import annotations

import os
from pathlib import Path

from django.db import connection, models, transaction
from django.http import FileResponse, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from pubsubsse.django import page_stream

TABLE = os.environ.get("TODOS_TABLE", "demo_todos")
TURBO = Path(__file__).resolve().parents[2] / "static" / "vendor" / "turbo-8.0.23.umd.js"


class Todo(models.Model):
    title = models.CharField(max_length=200)
    done = models.BooleanField(default=False)

    class Meta:
        app_label = "demo"
        db_table = TABLE
        managed = False  # made below, by whichever worker comes first (no migration to run)


_ready = False


def ensure_table() -> None:
    """Create the table if it is missing (a demo without migrations)."""
    global _ready
    if _ready:
        return
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(8275)")
        cursor.execute(
            f"CREATE TABLE IF NOT EXISTS {TABLE} (id serial PRIMARY KEY, title varchar(200) NOT NULL, "
            "done boolean NOT NULL DEFAULT false)"
        )
    _ready = True


def page(request: HttpRequest) -> HttpResponse:
    """The list, rendered; the stream starts where the query read it."""
    ensure_table()
    live = page_stream(["todos"])  # subscribe first, then query: nothing falls between
    todos = Todo.objects.order_by("id")
    return render(request, "demo/todos.html", {"todos": todos, "stream_url": live.stream_url(format="turbo")})


def turbo_script(request: HttpRequest) -> FileResponse:
    """Turbo, vendored (the demo has no static files server)."""
    return FileResponse(TURBO.open("rb"), content_type="text/javascript")


@csrf_exempt  # a demo API for scripts and the tests; a real app keeps CSRF on
@require_POST
def create(request: HttpRequest) -> HttpResponse:
    """Add a todo (``title``, 1 to 200 characters)."""
    ensure_table()
    title = request.POST.get("title", "").strip()
    if not 1 <= len(title) <= 200:
        return HttpResponse("a title of 1 to 200 characters, please", status=400)
    with transaction.atomic():  # the broadcast joins it
        Todo.objects.create(title=title)
    return HttpResponse(status=204)


@csrf_exempt
@require_POST
def toggle(request: HttpRequest, todo_id: int) -> HttpResponse:
    """Mark a todo done, or not done."""
    ensure_table()
    with transaction.atomic():
        todo = get_object_or_404(Todo.objects.select_for_update(), id=todo_id)
        todo.done = not todo.done
        todo.save()
    return HttpResponse(status=204)


@csrf_exempt
@require_POST
def delete(request: HttpRequest, todo_id: int) -> HttpResponse:
    """Delete a todo."""
    ensure_table()
    with transaction.atomic():
        get_object_or_404(Todo, id=todo_id).delete()
    return HttpResponse(status=204)

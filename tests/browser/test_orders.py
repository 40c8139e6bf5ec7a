"""From the database to the page, end to end, in Chromium, on PostgreSQL: example/orders_app.py
(Flask, Flask-SQLAlchemy) and the orders of the Django example (example/django_demo/demo/orders.py).

1,000 updates in transactions (one in ten rolled back after publishing), pages rendered while the
writes go on, one worker SIGKILLed mid-run: at the end every page shows what the database holds,
with no phantom (a rolled back update shown) and nothing missing.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
import uuid

import httpx
import psutil
import psycopg
import pytest

from ..conftest import POSTGRES_DSN, drop_postgres_tables
from ..servers import ROOT, Server
from .conftest import CHROMIUM, new_page

pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian chromium is not installed")

ORDERS = 20
UPDATES = 1000

DOM = """() => Object.fromEntries([...document.querySelectorAll("li[data-id]")].map(
    (li) => [li.dataset.id, [li.dataset.status, Number(li.dataset.version)]]))"""


def database(table: str) -> dict[str, list[object]]:
    with psycopg.connect(POSTGRES_DSN) as db:
        rows = db.execute(f"SELECT id, status, version FROM {table}").fetchall()
    return {str(i): [status, version] for i, status, version in rows}


#: Per app: how gunicorn serves it, and its pages: with pubsubsse.js, with a plain EventSource,
#: with htmx's SSE extension (the Django example has the first only).
APPS = {
    "flask": {
        "app": "example.orders_app:create_app()",
        "cwd": ROOT,
        "pages": {"pubsubsse.js": "/", "EventSource": "/plain", "htmx": "/htmx"},
    },
    "django": {"app": "demo.wsgi", "cwd": ROOT / "example" / "django_demo", "pages": {"pubsubsse.js": "/orders/"}},
}


@pytest.mark.timeout(300)
@pytest.mark.parametrize("kind", APPS)
def test_every_page_shows_the_database_after_transactions_rollbacks_and_a_killed_worker(browser, kind):
    table, log_name = f"orders_{uuid.uuid4().hex[:10]}", f"t_{uuid.uuid4().hex[:16]}"
    env = {
        "ORDERS_DATABASE": POSTGRES_DSN,
        "ORDERS_TABLE": table,
        "ORDERS_LOG": log_name,
        "ORDERS_COUNT": str(ORDERS),
        "PUBSUBSSE_RETRY": "0.3",
        "PYTHONPATH": str(ROOT),
    }
    spec = APPS[kind]
    kinds = list(spec["pages"].values())
    server = Server("gevent", app=spec["app"], cwd=spec["cwd"], workers=2, ready="/orders.json", env=env)
    # The pubsubsse.js pages share one context (and so one connection); each other page gets a
    # context of its own: a browser holds at most 6 connections to one server per context.
    context = browser.new_context()
    contexts = [context]

    def open_pages() -> list:
        opened = []
        for path in kinds:
            own = context if path == kinds[0] else browser.new_context()
            if own is not context:
                contexts.append(own)
            opened.append(_open(own, server, path))
        return opened

    pages = []
    written = {"committed": 0, "rolled_back": 0, "failed": 0}
    try:
        pages.append(_open(context, server, kinds[0]))
        rng = random.Random(7)
        plan = [(rng.randint(1, ORDERS), f"s{n}", n % 10 == 9) for n in range(UPDATES)]
        lock = threading.Lock()

        def writer(part: list[tuple[int, str, bool]]) -> None:
            with httpx.Client(timeout=30) as http:
                for order, status, rollback in part:
                    data = {"status": status, **({"rollback": "1"} if rollback else {})}
                    try:
                        answer = http.post(server.url(f"/orders/{order}"), data=data)
                        kind = "rolled_back" if rollback else "committed"
                        kind = kind if answer.status_code == 200 else "failed"
                    except httpx.TransportError:  # the killed worker's requests: their outcome is the database's
                        kind = "failed"
                    with lock:
                        written[kind] += 1

        threads = [threading.Thread(target=writer, args=(plan[i::4],)) for i in range(4)]
        for thread in threads:
            thread.start()
        _wait(lambda: sum(written.values()) >= UPDATES // 4, "a quarter of the writes")
        pages += open_pages()  # rendered while the writes go on
        _wait(lambda: sum(written.values()) >= UPDATES // 2, "half of the writes")
        victim = psutil.Process(server.proc.pid).children()[0]
        victim.send_signal(signal.SIGKILL)  # its streams break; their pages resume on the other worker
        pages += open_pages()
        for thread in threads:
            thread.join(240)
        assert written["committed"] > UPDATES * 0.8 and written["rolled_back"] > 50, written
        pages += open_pages()  # rendered after the last write

        truth = database(table)
        # Requests whose answer was lost (the killed worker's) may or may not have committed.
        versions = sum(version for _, version in truth.values())
        assert written["committed"] <= versions <= written["committed"] + written["failed"], (versions, written)
        deadline = time.monotonic() + 30
        shown = [page.evaluate(DOM) for page in pages]
        while any(view != truth for view in shown) and time.monotonic() < deadline:
            time.sleep(0.2)
            shown = [page.evaluate(DOM) for page in pages]
        for number, view in enumerate(shown):
            wrong = {k: (view.get(k), v) for k, v in truth.items() if view.get(k) != v}
            assert not wrong, f"page {number} differs from the database (shown, truth): {wrong}"
        print({"updates": UPDATES, **written, "pages": len(pages)})
    finally:
        for each in contexts:
            each.close()
        server.stop()
        with psycopg.connect(POSTGRES_DSN, autocommit=True) as db:
            db.execute(f"DROP TABLE IF EXISTS {table}")
        drop_postgres_tables(log_name)


def _open(context, server, path: str):
    page = new_page(context)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(server.url(path))
    page.wait_for_selector('[data-testid="status"]:text("open")')
    assert errors == []
    return page


def _wait(condition, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.mark.timeout(120)
def test_a_page_whose_stream_starts_after_the_histories_gets_a_reset_and_fetches_again(browser):
    """The page's script is late (the stream request held back) while more is published than a topic
    keeps: the stream cannot resume from the rendered position, says ``reset``, and the page refetches."""
    table, log_name = f"orders_{uuid.uuid4().hex[:10]}", f"t_{uuid.uuid4().hex[:16]}"
    env = {
        "ORDERS_DATABASE": POSTGRES_DSN,
        "ORDERS_TABLE": table,
        "ORDERS_LOG": log_name,
        "ORDERS_COUNT": "3",
        "PUBSUBSSE_REPLAY_SIZE": "2",
    }
    server = Server("gevent", app="example.orders_app:create_app()", ready="/orders.json", env=env)
    context = browser.new_context()
    try:
        page = new_page(context)
        held = threading.Event()
        release = threading.Event()
        resets: list[str] = []
        page.on("console", lambda message: resets.append(message.text) if message.text == "reset" else None)

        def hold(route) -> None:
            held.set()
            release.wait(30)
            route.continue_()

        page.route("**/sse/event**", hold)

        def late_writes() -> None:
            assert held.wait(30)
            with httpx.Client(timeout=30) as http:
                for n in range(10):  # more than the topic keeps (2)
                    assert http.post(server.url(f"/orders/{n % 3 + 1}"), data={"status": f"late{n}"}).status_code == 200
            release.set()

        writer = threading.Thread(target=late_writes)
        writer.start()
        page.add_init_script("window.addEventListener('load', () => ps.on('reset', () => console.log('reset')))")
        page.goto(server.url("/"))
        deadline = time.monotonic() + 60
        while writer.is_alive() and time.monotonic() < deadline:
            page.wait_for_timeout(100)  # Playwright runs the route's handler only inside its own calls
        page.wait_for_selector('[data-testid="status"]:text("open")')
        truth = database(table)
        deadline = time.monotonic() + 20
        while page.evaluate(DOM) != truth and time.monotonic() < deadline:
            time.sleep(0.1)
        assert page.evaluate(DOM) == truth
        assert resets == ["reset"]
    finally:
        context.close()
        server.stop()
        with psycopg.connect(POSTGRES_DSN, autocommit=True) as db:
            db.execute(f"DROP TABLE IF EXISTS {table}")
        drop_postgres_tables(log_name)

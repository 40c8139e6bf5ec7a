"""Live HTML, end to end, in Chromium: the htmx todo list (example/todo_app.py, Flask, the service
on Redis) and the Turbo one (example/django_demo/demo/todos.py, Django, the service on PostgreSQL).

Two pages of each follow a burst of creates, toggles and deletes while their connections drop
(a worker SIGKILLed, the network cut under one page), the whole server is restarted, and
restarted again behind a "proxy" that answers 503 meanwhile (EventSource gives up; the page's
helper opens the stream again): after each, each page's list is the database's, and no event was
delivered twice. (A tab frozen in the background: test_frozen_tab.py.)
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from urllib.parse import parse_qs, urlsplit

import httpx
import psutil
import psycopg
import pytest

from ..conftest import POSTGRES_DSN, drop_postgres_tables
from ..servers import ROOT, Server
from .conftest import CHROMIUM, new_page

pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian chromium is not installed")

#: The list a page shows: (element id, title, done) per row, in order.
DOM = """() => [...document.querySelectorAll("#todos > li")].map(
    (li) => [li.id, li.querySelector("span").textContent.trim(), li.dataset.done])"""

#: Before any script of the page: record the id of every SSE event the page's EventSource fires,
#: for the event types the page listens to, and count the streams opened.
RECORD = """
(() => {
  window.__applied = [];
  window.__opened = 0;
  window.__sources = [];
  const Native = window.EventSource;
  window.EventSource = class extends Native {
    constructor(url, options) {
      super(url, options);
      window.__sources.push(url);
      this.addEventListener("open", () => { window.__opened += 1; });
      const listen = this.addEventListener.bind(this);
      const seen = new Set(["open"]);
      this.addEventListener = (type, listener, more) => {
        if (!seen.has(type)) {
          seen.add(type);
          listen(type, (event) => {
            if (event instanceof MessageEvent) window.__applied.push(type + "@" + event.lastEventId);
          });
        }
        return listen(type, listener, more);
      };
    }
  };
})();
"""

APPS = {
    "htmx": {"app": "example.todo_app:create_app()", "cwd": ROOT, "page": "/", "new": "/todos", "ready": "/todos"},
    "turbo": {
        "app": "demo.wsgi",
        "cwd": ROOT / "example" / "django_demo",
        "page": "/todos/",
        "new": "/todos/new",
        "ready": "/todos/",
    },
}


class TodoApp:
    """One of the todo examples under gunicorn (2 gevent workers), on a table and a log of its own."""

    def __init__(self, style: str, redis_url: str) -> None:
        self.spec = APPS[style]
        self.table, self.log_name = f"todos_{uuid.uuid4().hex[:10]}", f"t_{uuid.uuid4().hex[:16]}"
        self.env = {"PUBSUBSSE_RETRY": "0.3", "PYTHONPATH": str(ROOT)}
        if style == "htmx":
            self.env.update(TODO_DATABASE=POSTGRES_DSN, TODO_TABLE=self.table, TODO_REDIS_URL=redis_url)
            self.env.update(TODO_LOG=self.log_name)
        else:
            self.env.update(ORDERS_DATABASE=POSTGRES_DSN, TODOS_TABLE=self.table, ORDERS_LOG=self.log_name)
        self.http = httpx.Client(timeout=30)
        self._titles = iter(f"task {n}" for n in range(10_000))
        self.deleted: list[int] = []
        self.server = self._start()

    def _start(self, port: int | None = None) -> Server:
        spec, env = self.spec, self.env
        return Server("gevent", app=spec["app"], cwd=spec["cwd"], workers=2, ready=spec["ready"], env=env, port=port)

    def restart(self) -> None:
        """Stop the whole server (its streams end) and start it again on the same port."""
        port = self.server.port
        self.server.stop()
        self.server = self._start(port)

    def url(self, path: str = "") -> str:
        return self.server.url(path or self.spec["page"])

    def database(self) -> list[list[str]]:
        """The list as the database holds it, in the shape of ``DOM``."""
        with psycopg.connect(POSTGRES_DSN) as db:
            rows = db.execute(f"SELECT id, title, done FROM {self.table} ORDER BY id").fetchall()
        return [[f"todo_{i}", title, ("yes" if done else "no")] for i, title, done in rows]

    def create(self, n: int) -> None:
        for _ in range(n):
            answer = self.http.post(self.server.url(self.spec["new"]), data={"title": next(self._titles)})
            assert answer.status_code == 204

    def change(self, n: int) -> None:
        """Toggle rows, and delete every fifth one changed."""
        rows = [int(row[0].split("_")[1]) for row in self.database()]
        for number in range(n):
            todo = rows[(number * 7) % len(rows)]
            action = "delete" if number % 5 == 4 else "toggle"
            if action == "delete":
                self.deleted.append(todo)
                rows.remove(todo)
            assert self.http.post(self.server.url(f"/todos/{todo}/{action}")).status_code == 204

    def settle(self, phase: str, views) -> None:
        """Wait until every page shows the database's list (``views()`` returns what each shows)."""
        truth = self.database()
        deadline = time.monotonic() + 30
        shown = views()
        while any(view != truth for view in shown) and time.monotonic() < deadline:
            time.sleep(0.2)
            shown = views()
        for number, view in enumerate(shown):
            assert view == truth, f"after {phase}, page {number} differs from the database"

    def close(self) -> None:
        self.http.close()
        self.server.stop()
        with psycopg.connect(POSTGRES_DSN, autocommit=True) as db:
            db.execute(f"DROP TABLE IF EXISTS {self.table}")
        drop_postgres_tables(self.log_name)


def applied_twice(applied: list[str]) -> list[str]:
    return sorted({event for event in applied if applied.count(event) > 1})


@pytest.mark.timeout(240)
@pytest.mark.parametrize("style", APPS)
def test_every_page_shows_the_list_after_drops_and_restarts(browser, redis_server, style):
    app = TodoApp(style, redis_server.url)
    contexts = [browser.new_context(), browser.new_context()]

    def settle(phase: str) -> None:
        app.settle(phase, lambda: [page.evaluate(DOM) for page, _ in pages])

    pages: list = []
    try:
        for context in contexts:
            page = new_page(context)
            page.add_init_script(RECORD)
            errors: list[str] = []
            page.on("pageerror", lambda error, errors=errors: errors.append(str(error)))
            page.goto(app.url())
            page.wait_for_function("window.__opened >= 1")
            pages.append((page, errors))
        app.create(20)
        app.change(10)
        settle("the first changes")

        # A drop: one worker killed; the streams it held reconnect to the other one.
        victim = psutil.Process(app.server.proc.pid).children()[0]
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)  # gone: no request of the test is accepted by it as it dies
        app.change(10)
        settle("a killed worker")
        # The network cut under the first page for 2 s while changes go on.
        cdp = contexts[0].new_cdp_session(pages[0][0])
        cdp.send("Network.enable")
        offline = {"offline": True, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1}
        cdp.send("Network.emulateNetworkConditions", offline)
        app.create(5)
        app.change(5)
        time.sleep(2)  # the cut lasts: the page's EventSource gives up and reconnects after it
        cdp.send("Network.emulateNetworkConditions", {**offline, "offline": False})
        settle("a cut network")

        # A restart of the whole server: every stream ends; the pages reconnect when it is back.
        app.restart()
        app.create(5)
        app.change(10)
        settle("a restart")

        # Another restart, behind a proxy that answers 503 meanwhile: EventSource gives up on an
        # error answer; the page's helper opens the stream again from where the page is.
        before = [page.evaluate("window.__sources.length") for page, _ in pages]
        for page, _ in pages:
            page.route("**/sse/event?**", lambda route: route.fulfill(status=503, body="restarting"))
        app.restart()
        app.create(5)
        app.change(10)
        pages[0][0].wait_for_timeout(2500)  # the routes answer while Playwright waits: a few 503s
        for page, _ in pages:
            page.unroute("**/sse/event?**")
        settle("a restart behind a proxy")
        for number, (page, _) in enumerate(pages):
            sources = page.evaluate("window.__sources")
            assert len(sources) > before[number]  # EventSource gave up: the helper opened a new one...
            positions = [int(parse_qs(urlsplit(url).query)["last_event_id"][0]) for url in sources]
            assert positions[-1] > positions[0]  # ...from where the page was, not from the rendered position
        for page, errors in pages:
            assert not applied_twice(page.evaluate("window.__applied")), "an event delivered twice"
            assert page.evaluate("window.__opened") >= 3  # the restarts at least
            assert errors == []
        report = {"style": style, "rows": len(app.database()), "deleted": len(app.deleted)}
        for number, (page, _) in enumerate(pages):
            report[f"page {number}"] = page.evaluate(
                "({sources: window.__sources.length, opened: window.__opened, events: window.__applied.length})"
            )
        print(report)
    finally:
        for context in contexts:
            context.close()
        app.close()


#: Counts the page's freezes (the ``freeze`` event of the Page Lifecycle API).
COUNT_FREEZES = "window.__frozen = 0; document.addEventListener('freeze', () => { window.__frozen += 1; });"


@pytest.mark.timeout(120)
@pytest.mark.parametrize("style", APPS)
def test_a_tab_frozen_in_the_background_catches_up_when_it_wakes(redis_server, style):
    """CDP's ``Page.setWebLifecycleState`` freezes the page as Chrome does a background tab: no script
    runs, timers and events wait. Changes go on meanwhile; woken, the page shows them all, once."""
    from .cdp import Browser

    app = TodoApp(style, redis_server.url)
    browser = Browser()
    try:
        browser.send("Page.enable")
        browser.send("Page.addScriptToEvaluateOnNewDocument", source=RECORD + COUNT_FREEZES)
        browser.send("Page.navigate", url=app.url())
        browser.wait_for("window.__opened >= 1")
        app.create(10)
        app.settle("the first changes", lambda: [browser.evaluate(f"({DOM})()")])
        browser.send("Page.setWebLifecycleState", state="frozen")
        app.create(10)
        app.change(20)
        time.sleep(3)  # frozen for a while: heartbeats and changes wait in the connection
        browser.send("Page.setWebLifecycleState", state="active")
        app.settle("a freeze", lambda: [browser.evaluate(f"({DOM})()")])
        assert browser.evaluate("window.__frozen") == 1  # it was frozen indeed
        assert not applied_twice(browser.evaluate("window.__applied")), "an event delivered twice"
    finally:
        browser.close()
        app.close()

"""The demo page and the browser client in headless Chromium (Debian's), driven by Playwright."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

import psutil
import pytest

from ..http_helpers import http
from ..servers import ROOT, Server
from .conftest import CHROMIUM, new_page

SCREENSHOT = ROOT / "artifacts" / "demo.png"

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is not installed")


@pytest.fixture(scope="module")
def demo():
    srv = Server(
        "gevent",
        app="tests.demo_app:app",
        env={"DEMO_TICK_SECONDS": "0.25", "PUBSUBSSE_RETRY": "0.3", "PUBSUBSSE_HEARTBEAT": "2"},
    )
    yield srv
    srv.stop()


@pytest.fixture
def page(browser, demo):
    context = browser.new_context(viewport={"width": 1360, "height": 820})
    page = new_page(context)
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(demo.url("/"))
    page.wait_for_selector('[data-testid="status"]:text("open")')
    yield page
    context.close()
    assert errors == []


@contextlib.contextmanager
def page_of(browser, srv):
    """A page in a browser context of its own, for a server of its own: both closed at the end."""
    context = browser.new_context()
    try:
        yield new_page(context)
    finally:
        context.close()
        srv.stop()


def topic_row(page, name):
    return page.locator(f'li[data-testid="topic"][data-name="{name}"]')


def chat_options(page) -> list[str]:
    return page.eval_on_selector_all('[data-testid="publish-topic"] option', "os => os.map(o => o.value)")


def ticker_n(page):
    return int(page.inner_text('[data-testid="ticker-n"]'))


def test_demo_page_flow(page, demo):
    assert page.inner_text('[data-testid="client-id"]').startswith("C-")
    assert topic_row(page, "Ticker").get_attribute("class") == "subscribed"
    assert topic_row(page, "Announcements").count() == 1
    page.wait_for_function("() => Number(document.querySelector('[data-testid=ticker-n]').textContent) >= 3")

    page.fill('[data-testid="topic-name"]', "Sports")
    page.click('[data-testid="create-public"]')
    sports = topic_row(page, "Sports")
    sports.wait_for()
    assert sports.locator(".type").text_content() == "public"

    sports.locator('[data-testid="toggle"]').click()
    page.wait_for_selector('li[data-name="Sports"].subscribed')
    page.select_option('[data-testid="publish-topic"]', sports.get_attribute("data-topic"))
    page.fill('[data-testid="publish-text"]', "goal <b>&amp; 😀")
    page.click('[data-testid="publish-send"]')
    item = page.locator('[data-testid="feed-item"]').first
    item.locator(".text").wait_for()
    assert item.locator(".text").inner_text().endswith(": goal <b>&amp; 😀")
    assert item.locator(".meta").inner_text().startswith("Sports")

    topic_row(page, "Sports").locator('[data-testid="toggle"]').click()
    page.wait_for_selector('li[data-name="Sports"]:not(.subscribed)')
    # The chat box offers only the topics the tab hears: a message sent elsewhere would not show.
    assert sports.get_attribute("data-topic") not in chat_options(page)
    feed_before = page.locator('[data-testid="feed-item"]').count()
    http.post(demo.url("/test/pub"), json={"topic": sports.get_attribute("data-topic"), "data": ["unheard"]})
    announcements = topic_row(page, "Announcements")
    announcements.locator('[data-testid="toggle"]').click()
    page.wait_for_selector('li[data-name="Announcements"].subscribed')
    http.post(demo.url("/test/pub"), json={"topic": announcements.get_attribute("data-topic"), "data": ["marker"]})
    page.wait_for_selector('[data-testid="feed-item"] .text:text-is("\\"marker\\"")')
    assert page.locator('[data-testid="feed-item"]').count() == feed_before + 1

    new_topic = http.post(demo.url("/add/topic/public/")).json()["topic_id"]  # the server adds a topic
    page.wait_for_selector(f'li[data-topic="{new_topic}"]')
    topic_row(page, "Sports").locator('[data-testid="remove"]').click()  # the server removes one
    page.wait_for_selector('li[data-name="Sports"]', state="detached")

    page.click('[data-testid="create-private"]')
    page.wait_for_selector('li[data-testid="topic"] .type-private')
    page.click('[data-testid="group-toggle"]')
    topic_row(page, "Lobby chat").wait_for()
    assert topic_row(page, "Lobby chat").locator(".type").text_content() == "group"
    page.click('[data-testid="group-toggle"]')
    page.wait_for_selector('li[data-name="Lobby chat"]', state="detached")

    SCREENSHOT.parent.mkdir(exist_ok=True)
    page.click('[data-testid="group-toggle"]')
    topic_row(page, "Lobby chat").wait_for()
    page.wait_for_function("() => Number(document.querySelector('[data-testid=ticker-n]').textContent) >= 12")
    page.screenshot(path=str(SCREENSHOT))
    assert SCREENSHOT.stat().st_size > 20000


def test_page_survives_a_server_side_drop_without_loss(page, demo):
    announcements = topic_row(page, "Announcements")
    announcements.locator('[data-testid="toggle"]').click()
    page.wait_for_selector('li[data-name="Announcements"].subscribed')
    topic = announcements.get_attribute("data-topic")
    client_id = page.evaluate("window.demo.clientId")
    http.post(demo.url("/test/drop"))
    http.post(demo.url("/test/pub"), json={"topic": topic, "data": [f"m{i}" for i in range(20)]})
    page.wait_for_selector('[data-testid="feed-item"] .text:text-is("\\"m19\\"")')
    texts = page.eval_on_selector_all('[data-testid="feed-item"] .text', "els => els.map(e => e.textContent)")
    received = [t.strip('"') for t in reversed(texts) if t.startswith('"m')]
    assert received == [f"m{i}" for i in range(20)]
    assert page.evaluate("window.demo.clientId") == client_id  # resumed, not re-registered
    page.wait_for_selector('[data-testid="status"]:text("open")')


def test_page_recovers_after_the_server_forgets_the_client(page, demo):
    announcements = topic_row(page, "Announcements")
    announcements.locator('[data-testid="toggle"]').click()
    page.wait_for_selector('li[data-name="Announcements"].subscribed')
    old_id = page.evaluate("window.demo.clientId")
    http.post(demo.url("/test/forget"), json={"client_id": old_id})
    page.wait_for_function(f"() => window.demo.clientId && window.demo.clientId !== '{old_id}'")
    new_id = page.evaluate("window.demo.clientId")
    page.wait_for_selector(f'[data-testid="client-id"]:text("{new_id[:10]}")')
    page.wait_for_selector('li[data-name="Announcements"].subscribed')  # re-subscribed by the client
    n = ticker_n(page)
    page.wait_for_function(f"() => Number(document.querySelector('[data-testid=ticker-n]').textContent) > {n}")
    page.wait_for_selector('[data-testid="status"]:text("open")')


def test_a_client_written_for_the_go_server_works_unchanged(browser, demo):
    page = browser.new_page()
    try:
        page.goto(demo.url("/test/go-client.html"))
        page.wait_for_function("() => window.log.filter(e => e.data && e.data.value).length >= 2", timeout=15000)
        log = page.evaluate("window.log")
        assert log[0]["sys"] == "topics" and log[0]["n"] >= 3  # Ticker, Chat, Announcements, and any created since
        assert log[1] == {"sys": "subscribed", "n": 2}  # the Ticker, as in the Go example, and the Chat
        # Then the chat's presence (a topic with live presence: an element the Go server never sent) and updates.
        assert log[2] == {"sys": "presence", "n": 0}
        assert all("topic" in e or e.get("sys") == "presence" for e in log[3:])
    finally:
        page.close()


@pytest.fixture(scope="module")
def auth_server():
    env = {"SECRET_KEY": "browser-test-secret", "PUBSUBSSE_HEARTBEAT": "1", "TICKET_MAX_AGE": "2"}
    srv = Server("gevent", app="example.auth_app:app", ready="/sse/pubsubsse.js", env=env)
    yield srv
    srv.stop()


#: The recipe's page: client and stream URL come from the app's /me. The first stream URL is spoiled
#: ("forged": a ticket that does not verify; "expired": held until its ticket is too old).
TICKET_PAGE = """async (mode) => {
  const me = () => fetch("/me").then((r) => r.json());
  window.calls = { register: 0, streamUrl: 0 };
  window.updates = [];
  window.statuses = [];
  const ps = new PubSubSSE({
    baseUrl: "/sse",
    storage: null,
    register: () => { calls.register++; return me().then((m) => m.client_id); },
    streamUrl: async () => {
      calls.streamUrl++;
      const m = await me();
      if (calls.streamUrl === 1 && mode === "forged") return "/sse/event?ticket=forged." + m.client_id;
      if (calls.streamUrl === 1) await new Promise((resolve) => setTimeout(resolve, 3500));
      return m.stream_url;
    },
  });
  ps.on("update", (topic, data) => updates.push(data.text));
  ps.on("status", (status) => statuses.push(status));
  window.ps = ps;
  return await ps.start();
}"""


@pytest.mark.parametrize("mode", ["forged", "expired"])
def test_a_refused_ticket_gets_a_fresh_stream_url_and_keeps_the_client(browser, auth_server, mode):
    context = browser.new_context()
    try:
        login = context.request.post(auth_server.url("/login"), form={"username": "alice", "password": "alice-pw"})
        assert login.ok
        team_topic = context.request.get(auth_server.url("/me")).json()["team_topics"][0]
        page = new_page(context)
        errors = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(auth_server.url("/sse/pubsubsse.js"))  # any page of the app's origin, for its cookie
        page.add_script_tag(url="/sse/pubsubsse.js")
        client_id = page.evaluate(TICKET_PAGE, mode)
        page.wait_for_function("() => window.ps.status === 'open'")
        page.evaluate("(topic) => window.ps.subscribe(topic)", team_topic)
        said = context.request.post(auth_server.url("/team/say"), form={"topic": team_topic, "text": "hello red"})
        assert said.ok
        page.wait_for_function("() => window.updates.includes('hello red')")
        assert page.evaluate("window.ps.clientId") == client_id
        calls = page.evaluate("window.calls")
        # One registration; the spoiled URL, the URL the refusal was examined with, and the one that opened.
        assert calls["register"] == 1 and calls["streamUrl"] >= 3, calls
        assert "reconnecting" in page.evaluate("window.statuses")
        assert errors == []
    finally:
        context.close()


def test_the_demo_survives_a_restart_of_the_server(browser):
    """The ticker is a named topic: a restarted server has it again, under the same id.

    The page's client is unknown to the new process (the service was in memory), so the browser
    client registers a new one and restores its subscriptions by topic id; the ticker goes on,
    also after a reload. The chat box never offers the ticker (its feed is the server's).
    """
    env = {"DEMO_TICK_SECONDS": "0.25", "PUBSUBSSE_RETRY": "0.3", "PUBSUBSSE_HEARTBEAT": "2"}
    srv = Server("gevent", app="tests.demo_app:app", env=env)
    context = browser.new_context()
    page = new_page(context)
    try:
        page.goto(srv.url("/"))
        page.wait_for_function("Number(document.querySelector('[data-testid=ticker-n]').textContent) > 2")
        ticker = topic_row(page, "Ticker").get_attribute("data-topic")
        assert ticker == "T-ticker"
        assert ticker not in page.eval_on_selector_all(
            '[data-testid="publish-topic"] option', "os => os.map(o => o.value)"
        )
        tick = "Number(document.querySelector('[data-testid=ticker-n]').textContent)"
        port = srv.port
        srv.stop()
        before = page.evaluate(tick)
        srv = Server("gevent", app="tests.demo_app:app", env=env, port=port)
        # The new server's ticker counts from 1 again, from its start; the old one's last ticks (a tick
        # or two in flight) may still be shown after `before` was read. So a count below `before`, or
        # one the old server could not have sent (above it by more than a second of ticks), proves that
        # the new server's ticks arrive: the count seen first is above `before` when the page takes
        # longer to register again than the old server ran (a loaded machine).
        page.wait_for_function(f"{tick} < {before} || {tick} > {before} + 4")
        now = page.evaluate(tick)
        page.wait_for_function(f"{tick} > {now}")  # and its ticks keep coming
        assert topic_row(page, "Ticker").get_attribute("class") == "subscribed"
        page.reload()
        page.wait_for_function(f"{tick} > 2")
        assert topic_row(page, "Ticker").get_attribute("data-topic") == "T-ticker"
    finally:
        context.close()
        srv.stop()


def refusing_server(mode: str) -> Server:
    return Server("gevent", app="tests.refusing_app:app", env={"PUBSUBSSE_REFUSE": mode})


def test_the_client_works_with_a_server_that_reads_only_the_query_string(browser):
    """As the Go server does: every parameter goes in the query string, so subscribing works."""
    srv = refusing_server("query-only")
    with page_of(browser, srv) as page:
        page.goto(srv.url("/"))
        page.wait_for_function("window.subscribed === true || window.failed !== undefined")
        assert page.evaluate("window.subscribed") is True, page.evaluate("[window.failed, window.errors]")
        page.wait_for_function("window.statuses.includes('open')")
        http.get(srv.url("/test/pub"), params={"hello": ""})
        page.wait_for_function("window.got.length === 1")
        assert http.get(srv.url("/test/calls")).json()["/add/user"] == 1
        # No shared streams there (404), so the tab opened its own, as against the Go server.
        assert page.evaluate("window.ps._share.solo") is True
        assert http.get(srv.url("/test/calls")).json()["/event/shared"] == 2  # the stream, then the probe


def test_a_server_that_keeps_refusing_gets_a_few_new_clients_then_the_client_stops(browser):
    """No registration storm: at most three new clients after the first, spaced out, then "failed"."""
    srv = refusing_server("streams")
    with page_of(browser, srv) as page:
        page.goto(srv.url("/"))
        page.wait_for_function("window.statuses.includes('failed')", timeout=30000)
        registrations = http.get(srv.url("/test/calls")).json()["/add/user"]
        assert registrations == 4, registrations  # the first, then maxRegistrations (3)
        page.wait_for_timeout(3000)  # and nothing more: a stopped client stays stopped
        assert http.get(srv.url("/test/calls")).json()["/add/user"] == registrations
        assert any("refused" in e for e in page.evaluate("window.errors")), page.evaluate("window.errors")


def renderer_of(page) -> int:
    """The pid of the renderer process of ``page``: the one that spends the CPU the page is made to spend."""

    def cpu() -> dict[int, float]:
        times = {}
        for process in psutil.Process().children(recursive=True):  # the Chromium this test started
            try:
                if "--type=renderer" in process.cmdline():
                    times[process.pid] = sum(process.cpu_times()[:2])
            except psutil.Error:
                pass
        return times

    before = cpu()
    page.evaluate("() => { const end = Date.now() + 600; while (Date.now() < end); }")
    after = cpu()
    spent = sorted((after[pid] - before.get(pid, 0.0), pid) for pid in after)
    # On a loaded machine the busy page gets less than its 0.6 s; it still stands out.
    assert spent[-1][0] > 0.15 and spent[-1][0] > 3 * spent[-2][0], spent[-3:]
    return spent[-1][1]


def test_ten_tabs_share_one_connection_and_survive_the_leader_closing(browser, demo):
    """HTTP/1.1 allows about six connections per origin: ten tabs must share one stream.

    Every tab keeps its own client and gets every message once; when the tab holding the
    stream closes, another takes over and every client resumes where it stopped.
    """
    context = browser.new_context()
    open_streams: dict[object, str] = {}
    context.on("request", lambda r: "/event" in r.url and open_streams.__setitem__(r, r.url))
    context.on("requestfinished", lambda r: open_streams.pop(r, None))
    context.on("requestfailed", lambda r: open_streams.pop(r, None))
    pages = []
    try:
        for _ in range(10):
            page = new_page(context)
            page.goto(demo.url("/"))
            pages.append(page)
        for page in pages:
            page.wait_for_selector('[data-testid="sharing"]:text("sharing a connection with 10 tabs")')
            page.wait_for_selector('[data-testid="status"]:text("open")')
        ids = {page.evaluate("window.demo.clientId") for page in pages}
        assert len(ids) == 10  # a client per tab
        assert [url.split("?")[0] for url in open_streams.values()] == [demo.url("/event/shared")]

        topic = topic_row(pages[0], "Announcements").get_attribute("data-topic")
        for page in pages:
            page.evaluate(
                "t => { window.got = []; window.demo.on('update', (id, d) => { if (id === t) window.got.push(d); });"
                " return window.demo.subscribe(t); }",
                topic,
            )
        http.post(demo.url("/test/pub"), json={"topic": topic, "data": [f"a{i}" for i in range(10)]})
        for page in pages:
            page.wait_for_function("window.got.length >= 10")
        assert all(page.evaluate("window.got") == [f"a{i}" for i in range(10)] for page in pages)

        expected = [f"a{i}" for i in range(10)]
        # The leader closes, then the next one crashes. Messages are published while no tab holds a
        # stream, then after another took over: every remaining tab gets each once, in order.
        for batch, end in (("b", "close"), ("c", "crash")):
            leaders = [page for page in pages if page.evaluate("!!window.demo._share.leader")]
            assert len(leaders) == 1
            started = time.monotonic()
            if end == "close":
                leaders[0].close()
            else:  # the tab's renderer process dies: no unload, its connection and locks just go
                os.kill(renderer_of(leaders[0]), signal.SIGKILL)
            pages.remove(leaders[0])
            http.post(demo.url("/test/pub"), json={"topic": topic, "data": [f"{batch}{i}" for i in range(10)]})
            for page in pages:
                page.wait_for_selector(f'[data-testid="sharing"]:text("sharing a connection with {len(pages)} tabs")')
            print(f"leader {end}: {len(pages)} tabs share a new stream after {time.monotonic() - started:.2f} s")
            http.post(demo.url("/test/pub"), json={"topic": topic, "data": [f"{batch}{i}" for i in range(10, 20)]})
            expected += [f"{batch}{i}" for i in range(20)]
            for page in pages:
                page.wait_for_function(f"window.got.length >= {len(expected)}")
            assert [page.evaluate("window.got") for page in pages] == [expected] * len(pages)
        assert {page.evaluate("window.demo.clientId") for page in pages} <= ids  # resumed, not re-registered
        assert sum(page.evaluate("!!window.demo._share.leader") for page in pages) == 1
        # (the gone tabs' requests ended with their pages, which report nothing more)
        live = [url.split("?")[0] for r, url in open_streams.items() if r.frame.page in pages]
        assert live == [demo.url("/event/shared")]
    finally:
        context.close()


def test_the_demo_is_worth_a_look_from_its_first_frame(browser, demo):
    """At the load event (when ``chromium --screenshot`` takes its picture) the topics and the ticker are drawn
    and the chat box offers a topic the tab hears; at 1,200 px no topic name is cut or broken; Send shows."""
    deadline = time.monotonic() + 10
    while '"n":' not in http.get(demo.url("/")).text:  # the ticker has ticked: a page has a value to draw
        assert time.monotonic() < deadline, "the demo's ticker does not tick"
        time.sleep(0.1)
    context = browser.new_context(viewport={"width": 1200, "height": 800})
    page = new_page(context)
    try:
        page.goto(demo.url("/"), wait_until="load")
        first = page.evaluate(
            """() => ({
                rows: [...document.querySelectorAll('li[data-testid=topic]')].map(li => li.dataset.name),
                ticker: document.querySelector('[data-testid=ticker-value]').textContent,
                chat: document.querySelector('[data-testid=publish-topic]').value,
                status: getComputedStyle(document.querySelector('[data-testid=status]')).visibility === "visible"
                    ? document.querySelector('[data-testid=status]').textContent : null,
            })"""
        )
        assert first["status"] in (None, "open"), first  # not "connecting" in a picture taken at load
        assert {"Ticker", "Chat", "Announcements"} <= set(first["rows"]), first
        assert first["ticker"] != "—" and first["chat"] == "T-chat", first
        page.wait_for_selector('[data-testid="status"]:text("open")')
        topic_row(page, "Chat").wait_for()
        assert topic_row(page, "Chat").get_attribute("class") == "subscribed"
        spoiled = page.eval_on_selector_all(
            "#topic-list .name",
            """names => names.filter(n => n.scrollWidth > n.clientWidth
                || n.offsetHeight > 1.5 * parseFloat(getComputedStyle(n).lineHeight)).map(n => n.textContent)""",
        )
        assert spoiled == []
        page.fill('[data-testid="publish-text"]', "first words")
        page.click('[data-testid="publish-send"]')
        page.wait_for_selector('[data-testid="feed-item"] .text:text-matches(": first words$")')
    finally:
        context.close()


def test_the_chat_shows_who_is_in_it_people_not_tabs(browser, demo):
    """Two browsers (two guests), one with two tabs: every page lists both guests; when the second browser
    closes, the first one's pages see that guest leave."""
    first, second = browser.new_context(), browser.new_context()
    try:
        pages = [new_page(first), new_page(first), new_page(second)]
        for page in pages:
            page.goto(demo.url("/"))
            page.wait_for_selector('[data-testid="status"]:text("open")')
        one, two = (page.inner_text('[data-testid="guest"]') for page in (pages[0], pages[2]))
        assert one != two and pages[1].inner_text('[data-testid="guest"]') == one  # a cookie per browser
        shows = "(names) => names.every(n => document.querySelector('[data-testid=in-chat]')"
        shows += ".textContent.split(', ').includes(n))"
        for page in pages:
            page.wait_for_function(shows, arg=[one, two], timeout=15000)
        second.close()
        pages[0].wait_for_function(
            "(gone) => !document.querySelector('[data-testid=in-chat]').textContent.split(', ').includes(gone)",
            arg=two,
            timeout=15000,
        )
        assert one in pages[1].inner_text('[data-testid="in-chat"]').split(", ")
    finally:
        first.close()
        second.close()

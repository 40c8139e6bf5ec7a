"""HTML over the wire: fragments, Turbo Stream actions, HTML streams, debounced refreshes."""

from __future__ import annotations

import threading

import pytest

from pubsubsse.html import Broadcast, Refresher, dom_id, fragment, htmx_oob, is_fragment, turbo, turbo_stream
from pubsubsse.pages import page_stream
from pubsubsse.streams._html import html_stream

from ..sse import dispatch, ready


def opened(client, last_event_id=None, turbo=False):
    """The client's stream as ``/event?format=html`` (or ``turbo``) serves it."""
    return html_stream(client.stream(last_event_id), turbo)


def test_a_fragment_is_a_value_of_one_shape():
    assert fragment("<li>a</li>", "todo-1") == {"event": "todo-1", "html": "<li>a</li>"}
    assert is_fragment(fragment("", "todo-1")) and not is_fragment({"event": "x", "html": "y", "more": 1})
    assert not is_fragment({"event": "x", "html": 3}) and not is_fragment("<li>")
    for bad in ("", "a:b", "a\nb", "a\rb"):
        with pytest.raises(ValueError, match="event"):
            fragment("<li>", bad)
    with pytest.raises(TypeError):
        fragment(b"<li>")


def test_turbo_stream_actions():
    assert turbo_stream("append", "todos", "<li>a</li>") == (
        '<turbo-stream action="append" target="todos"><template><li>a</li></template></turbo-stream>'
    )
    assert turbo_stream("remove", "todo_7") == '<turbo-stream action="remove" target="todo_7"></turbo-stream>'
    assert turbo_stream("refresh") == '<turbo-stream action="refresh"></turbo-stream>'
    assert 'targets=".todo &quot;x&quot;"' in turbo_stream("update", targets='.todo "x"', html="y")
    assert 'target="a&lt;b"' in turbo_stream("replace", "a<b", "")
    for action in ("append", "prepend", "replace", "update", "before", "after"):
        assert f'action="{action}"' in turbo_stream(action, "t", "<p>")
    with pytest.raises(ValueError, match="unknown Turbo Stream action"):
        turbo_stream("explode", "t")
    with pytest.raises(ValueError, match="exactly one"):
        turbo_stream("append")  # no target
    with pytest.raises(ValueError, match="exactly one"):
        turbo_stream("append", "t", targets=".t")  # both
    assert turbo("remove", "todo_7") == {"event": "message", "html": turbo_stream("remove", "todo_7")}


def test_an_html_stream_sends_each_fragment_as_its_event_and_the_id_last(service):
    topic = service.public_topic("todos")
    live = page_stream(service, [topic])
    topic.pub(fragment("<li>one</li>\n<li>two</li>", "todo-created"))
    topic.pub({"not": "a fragment"})  # a JSON-only value: not on an HTML stream, its id still noted
    topic.pub(fragment("", "todo-1"))
    service.sync()
    seen = dispatch(ready(opened(live.client, live.last_event_id)))
    assert [(kind, data) for kind, data, _ in seen.events] == [
        ("todo-created", "<li>one</li>\n<li>two</li>"),
        ("todo-1", ""),
    ]
    ids = [int(event_id) for _, _, event_id in seen.events]
    assert ids[0] > int(live.last_event_id) and ids[1] > ids[0] + 1  # the JSON-only message between
    assert seen.last_event_id == str(ids[1])


def test_a_stream_resumed_after_a_fragment_gets_only_what_came_after(service):
    topic = service.public_topic("todos")
    live = page_stream(service, [topic])
    topic.pub(fragment("<li>1</li>", "a"))
    service.sync()
    first = dispatch(ready(opened(live.client, live.last_event_id)))
    topic.pub(fragment("<li>2</li>", "a"))
    service.sync()
    again = dispatch(ready(opened(live.client, first.last_event_id)))
    assert [data for _, data, _ in first.events] == ["<li>1</li>"]
    assert [data for _, data, _ in again.events] == ["<li>2</li>"]


def test_a_stream_that_cannot_resume_sends_reset_or_a_turbo_refresh(service):
    topic = service.public_topic("todos")
    live = page_stream(service, [topic])
    refresh = turbo("refresh")["html"]
    for turbo_format, expected in ((False, ("reset", '{"type":"reset"}')), (True, ("message", refresh))):
        seen = dispatch(ready(opened(live.client, "no-such-position", turbo_format)))
        assert [(kind, data) for kind, data, _ in seen.events] == [expected]
        assert seen.last_event_id  # the stream's position: a reconnect resumes from it


def test_a_turbo_stream_sends_message_fragments_only(service):
    topic = service.public_topic("todos")
    live = page_stream(service, [topic])
    topic.pub(fragment("<p>for htmx</p>", "todo-1"))
    topic.pub(turbo("append", "todos", "<li>x</li>"))
    service.sync()
    seen = dispatch(ready(opened(live.client, live.last_event_id, turbo=True)))
    appended = turbo_stream("append", "todos", "<li>x</li>")
    assert [(kind, data) for kind, data, _ in seen.events] == [("message", appended)]


def test_a_burst_of_refreshes_sends_one():
    published = []
    done = threading.Event()

    def publish(value):
        published.append(value)
        done.set()

    refresher = Refresher(publish, interval=0.05)
    for _ in range(100):
        refresher()
    assert done.wait(5)
    assert published == [turbo("refresh")] and refresher.requested == 100
    done.clear()
    refresher()  # a change after the refresh: one more
    assert done.wait(5)
    assert refresher.published == 2
    refresher.flush()  # nothing waiting: nothing sent
    assert refresher.published == 2


def test_htmx_out_of_band_swaps():
    row = '<!-- a row --> <li id="todo_7" class="x">a</li>'
    assert htmx_oob("outerHTML", "todo_7", row) == (
        '<!-- a row --> <li hx-swap-oob="outerHTML:#todo_7" id="todo_7" class="x">a</li>'
    )
    assert htmx_oob("beforeend", "todos", "<li>a</li>") == '<div hx-swap-oob="beforeend:#todos"><li>a</li></div>'
    assert htmx_oob("delete", "todo_7") == '<div hx-swap-oob="delete:#todo_7"></div>'
    with pytest.raises(ValueError, match="starts with an element"):
        htmx_oob("outerHTML", "todo_7", "just text")


class Todo:
    def __init__(self, pk, title):
        self.pk, self.title = pk, title


def test_a_broadcast_renders_once_per_change_in_each_style():
    renders = []

    def render(context):
        renders.append(context)
        return f'<li id="todo_{context["todo"].pk}">{context["object"].title}</li>'

    row = Todo(7, "milk")
    assert dom_id(row) == "todo_7"
    turbo_style = Broadcast(Todo, "todos", render)
    assert turbo_style.fragments(row, "created") == [turbo("append", "todos", '<li id="todo_7">milk</li>')]
    assert turbo_style.fragments(row, "updated") == [turbo("replace", "todo_7", '<li id="todo_7">milk</li>')]
    assert turbo_style.fragments(row, "deleted") == [turbo("remove", "todo_7")]
    htmx_style = Broadcast(Todo, "todos", render, style="htmx", target="list")
    assert htmx_style.fragments(row, "created") == [
        fragment(htmx_oob("beforeend", "list", '<li id="todo_7">milk</li>'), "list")
    ]
    assert htmx_style.fragments(row, "updated") == [
        fragment(htmx_oob("outerHTML", "todo_7", '<li id="todo_7">milk</li>'), "list")
    ]
    assert htmx_style.fragments(row, "deleted") == [fragment(htmx_oob("delete", "todo_7"), "list")]
    assert len(renders) == 4  # a delete renders nothing
    assert Broadcast(Todo, "todos", style="refresh").fragments(row, "updated") == []
    with pytest.raises(ValueError, match="renders a template"):
        Broadcast(Todo, "todos", style="turbo")
    with pytest.raises(ValueError, match="style must be"):
        Broadcast(Todo, "todos", render, style="morse")


def test_rendered_markup_is_taken_as_its_html():
    from markupsafe import Markup

    row = Markup("<li id='todo_7'>{}</li>").format("<milk>")
    assert fragment(row, "todos")["html"] == "<li id='todo_7'>&lt;milk&gt;</li>"
    assert turbo_stream("replace", "todo_7", row).endswith(
        "<template><li id='todo_7'>&lt;milk&gt;</li></template></turbo-stream>"
    )
    assert htmx_oob("outerHTML", "todo_7", row).startswith("<li hx-swap-oob=")


def test_only_published_bodies_are_framed_once_for_every_stream_not_system_messages(service):
    from pubsubsse.streams import _html

    topic = service.public_topic("todos")
    streams = [opened(page_stream(service, [topic]).client) for _ in range(2)]
    _html._FRAMED.clear()
    for stream in streams:
        dispatch(ready(stream))  # the init messages: each one client's alone
    assert _html._FRAMED == {}
    topic.pub(fragment("<li>a</li>", "todos"))
    service.sync()
    for stream in streams:
        assert [data for _, data, _ in dispatch(ready(stream)).events] == ["<li>a</li>"]
    assert len(_html._FRAMED) == 1  # decoded and framed once, for both

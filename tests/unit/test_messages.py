"""Every row of PROTOCOL.md section 4, checked on the exact JSON each client's stream carries."""

from __future__ import annotations

import json

import pytest

from ..sse import drain, parse


def tl(*topics):
    return {"type": "topics", "list": [{"id": t.id, "type": t.type.value} for t in topics]}


def idl(kind, *topics):
    return {"type": kind, "list": [{"id": t.id} for t in topics]}


def sysmsg(*items):
    return {"sys": list(items), "updates": None}


class World:
    """Public P; clients A and B with attached streams; group G = {A} with topic GT; A's private PA."""

    def __init__(self, s):
        self.s = s
        self.P = s.new_public_topic()
        self.A = s.new_client()
        self.B = s.new_client()
        self.G = s.new_group()
        self.G.add_client(self.A)
        self.GT = self.G.new_topic()
        self.PA = self.A.new_private_topic()
        self.sa = self.A.stream()
        self.sb = self.B.stream()
        self.init_a = drain(self.sa)
        self.init_b = drain(self.sb)

    def got(self):
        # With a shared backend a publish returns once the log holds it; sync() waits until this
        # process has applied everything before it (a no-op in-process).
        self.s.sync()
        return drain(self.sa).messages, drain(self.sb).messages


@pytest.fixture
def w(service):
    return World(service)


def test_init_message_has_both_elements_and_stable_order(w):
    assert w.init_a.retry == 3000
    assert w.init_a.messages == [sysmsg(tl(w.P, w.GT, w.PA), idl("subscribed"))]
    assert w.init_b.messages == [sysmsg(tl(w.P), idl("subscribed"))]


def test_init_with_no_topics_has_empty_lists(service):
    c = service.new_client()
    assert drain(c.stream()).messages == [sysmsg(tl(), idl("subscribed"))]


def test_new_public_topic(w):
    t = w.s.new_public_topic()
    assert w.got() == ([sysmsg(tl(w.P, t, w.GT, w.PA))], [sysmsg(tl(w.P, t))])


def test_public_topic_removed(w):
    w.A.sub(w.P)
    w.got()
    w.s.remove_public_topic(w.P)
    assert w.got() == ([sysmsg(tl(w.GT, w.PA), idl("unsubscribed", w.P))], [sysmsg(tl())])


def test_new_private_topic_goes_to_its_owner_only(w):
    t = w.B.new_private_topic()
    assert w.got() == ([], [sysmsg(tl(w.P, t))])


def test_private_topic_removed(w):
    w.A.sub(w.PA)
    w.got()
    w.A.remove_private_topic(w.PA)
    assert w.got() == ([sysmsg(tl(w.P, w.GT), idl("unsubscribed", w.PA))], [])
    w.A.remove_private_topic(w.A.new_private_topic())
    a, _ = w.got()
    assert a[1] == sysmsg(tl(w.P, w.GT))  # not subscribed: no unsubscribed element


def test_new_group_topic_goes_to_members(w):
    t = w.G.new_topic()
    assert w.got() == ([sysmsg(tl(w.P, w.GT, t, w.PA))], [])


def test_group_topic_removed(w):
    w.A.sub(w.GT)
    w.got()
    w.G.remove_topic(w.GT)
    assert w.got() == ([sysmsg(tl(w.P, w.PA), idl("unsubscribed", w.GT))], [])


def test_client_added_to_group(w):
    w.G.add_client(w.B)
    assert w.got() == ([], [sysmsg(tl(w.P, w.GT))])


def test_client_removed_from_group_lists_all_its_group_subscriptions(w):
    GT2 = w.G.new_topic()
    w.A.sub(w.GT)
    w.A.sub(GT2)
    w.A.sub(w.P)
    w.got()
    w.G.remove_client(w.A)
    assert w.got() == ([sysmsg(tl(w.P, w.PA), idl("unsubscribed", w.GT, GT2))], [])


def test_group_removed_sends_one_message_per_member(w):
    GT2 = w.G.new_topic()
    w.G.add_client(w.B)
    w.A.sub(w.GT)
    w.B.sub(GT2)
    w.got()
    w.s.remove_group(w.G)
    assert w.got() == (
        [sysmsg(tl(w.P, w.PA), idl("unsubscribed", w.GT))],
        [sysmsg(tl(w.P), idl("unsubscribed", GT2))],
    )


def test_sub_and_unsub(w):
    w.B.sub(w.P)
    w.B.sub(w.P)
    assert w.got() == ([], [sysmsg(idl("subscribed", w.P))] * 2)
    w.B.unsub(w.P)
    assert w.got() == ([], [sysmsg(idl("unsubscribed", w.P))])


def test_pub_reaches_subscribers_only(w):
    w.B.sub(w.P)
    w.got()
    w.P.pub({"html": "<b>&amp;</b>", "text": "line1\nline2\r\u2028", "n": 1.5})
    expected = {
        "sys": None,
        "updates": [{"topic": w.P.id, "data": {"html": "<b>&amp;</b>", "text": "line1\nline2\r\u2028", "n": 1.5}}],
    }
    assert w.got() == ([], [expected])


def test_client_removed_gets_final_message_then_stream_ends(w):
    w.A.sub(w.P)
    w.A.sub(w.PA)
    w.got()
    w.s.remove_client(w.A)
    raw = b"".join(w.sa)  # the iterator ends by itself
    assert parse(raw).messages == [sysmsg(tl(), idl("unsubscribed", w.P, w.PA))]
    assert w.got() == ([], [])


def test_a_client_never_learns_foreign_private_or_group_topic_ids(w):
    w.A.sub(w.PA)
    w.A.sub(w.GT)
    w.PA.pub(1)
    w.GT.pub(2)
    w.G.new_topic()
    w.A.new_private_topic()
    _, b = w.got()
    text = repr(b)
    assert w.PA.id not in text and w.GT.id not in text
    assert b == []


def test_ids_increase_strictly_and_json_is_compact(w):
    w.B.sub(w.P)
    for i in range(20):
        w.P.pub(i)
    raw = b""
    while chunk := w.sb.read(timeout=0):
        raw += chunk
    parsed = parse(raw)
    ids = parsed.ids
    assert ids == sorted(ids) and len(set(ids)) == len(ids) and ids[0] > max(w.init_b.ids)
    for line in raw.decode().split("\n"):
        if line.startswith("data: "):
            payload = line[len("data: ") :]
            assert payload == json.dumps(json.loads(payload), separators=(",", ":"), ensure_ascii=False)

"""Every row of API.md's "which change fires which event" table, counted exactly."""

from __future__ import annotations

from collections import Counter

import pytest

from pubsubsse import GroupTopic, Status

from ..conftest import Recorder


class World:
    """Public topic P, clients A and B, group G holding A with topic GT, A's private topic PA.

    A is subscribed to P, GT and PA; B to P.
    """

    def __init__(self, service):
        self.s = service
        self.rec = Recorder(service)
        self.P = service.new_public_topic()
        self.A = service.new_client()
        self.B = service.new_client()
        self.G = service.new_group()
        self.G.add_client(self.A)
        self.GT = self.G.new_topic()
        self.PA = self.A.new_private_topic()
        for t in (self.P, self.GT, self.PA):
            self.A.sub(t)
        self.B.sub(self.P)
        self.rec.take()


@pytest.fixture
def w(service):
    return World(service)


def E(*rows):
    return Counter(rows)


def test_new_client(w):
    c = w.s.new_client()
    assert w.rec.take() == E((w.s, "on_new_client", c), (w.P, "on_new_client", c))


def test_remove_client(w):
    A, P, GT, PA, G = w.A, w.P, w.GT, w.PA, w.G
    w.s.remove_client(A)
    expected = E(
        *[(A, "on_unsub_from_topic", t) for t in (P, GT, PA)],
        *[(t, "on_unsub_of_client", A) for t in (P, GT, PA)],
        *[(A, "on_remove_topic", t) for t in (P, GT, PA)],
        (A, "on_remove_public_topic", P),
        (A, "on_remove_private_topic", PA),
        (A, "on_remove_group_topic", GroupTopic(GT, G)),
        *[(t, "on_remove_client", A) for t in (P, GT, PA)],
        (G, "on_remove_client", A),
        (A, "on_remove_group", G),
        (w.s, "on_remove_client", A),
    )
    assert w.rec.take() == expected
    assert G.get_clients() == {}
    assert A.get_groups() == {}
    w.s.remove_client(A)
    assert w.rec.take() == E()


def test_new_public_topic(w):
    t = w.s.new_public_topic()
    rows = [(w.s, "on_new_public_topic", t)]
    for c in (w.A, w.B):
        rows += [(c, "on_new_topic", t), (c, "on_new_public_topic", t), (t, "on_new_client", c)]
    assert w.rec.take() == E(*rows)


def test_remove_public_topic(w):
    P = w.P
    w.s.remove_public_topic(P)
    rows = [(w.s, "on_remove_public_topic", P)]
    for c in (w.A, w.B):
        rows += [
            (c, "on_unsub_from_topic", P),
            (P, "on_unsub_of_client", c),
            (c, "on_remove_topic", P),
            (c, "on_remove_public_topic", P),
            (P, "on_remove_client", c),
        ]
    assert w.rec.take() == E(*rows)
    w.s.remove_public_topic(P)
    assert w.rec.take() == E()


def test_new_private_topic(w):
    t = w.B.new_private_topic()
    assert w.rec.take() == E((w.B, "on_new_topic", t), (w.B, "on_new_private_topic", t), (t, "on_new_client", w.B))


def test_remove_private_topic(w):
    A, PA = w.A, w.PA
    w.B.remove_private_topic(PA)  # not B's: ignored
    assert w.rec.take() == E()
    A.remove_private_topic(PA)
    assert w.rec.take() == E(
        (A, "on_unsub_from_topic", PA),
        (PA, "on_unsub_of_client", A),
        (A, "on_remove_topic", PA),
        (A, "on_remove_private_topic", PA),
        (PA, "on_remove_client", A),
    )


def test_new_group(w):
    g = w.s.new_group()
    assert w.rec.take() == E((w.s, "on_new_group", g))


def test_remove_group(w):
    A, B, G, GT = w.A, w.B, w.G, w.GT
    G.add_client(B)
    GT2 = G.new_topic()
    w.rec.take()
    w.s.remove_group(G)
    rows = [
        (A, "on_unsub_from_topic", GT),
        (GT, "on_unsub_of_client", A),
        (G, "on_remove_group_topic", GT),
        (G, "on_remove_group_topic", GT2),
        (w.s, "on_remove_group", G),
    ]
    for c in (A, B):
        for t in (GT, GT2):
            rows += [
                (c, "on_remove_topic", t),
                (c, "on_remove_group_topic", GroupTopic(t, G)),
                (t, "on_remove_client", c),
            ]
        rows += [(c, "on_remove_group", G), (G, "on_remove_client", c)]
    assert w.rec.take() == E(*rows)


def test_group_new_topic(w):
    G = w.G
    G.add_client(w.B)
    w.rec.take()
    t = G.new_topic()
    rows = [(G, "on_new_group_topic", t)]
    for c in (w.A, w.B):
        rows += [(c, "on_new_topic", t), (c, "on_new_group_topic", GroupTopic(t, G)), (t, "on_new_client", c)]
    assert w.rec.take() == E(*rows)


def test_group_remove_topic(w):
    A, G, GT = w.A, w.G, w.GT
    G.add_client(w.B)
    w.rec.take()
    G.remove_topic(GT)
    rows = [(A, "on_unsub_from_topic", GT), (GT, "on_unsub_of_client", A), (G, "on_remove_group_topic", GT)]
    for c in (A, w.B):
        rows += [
            (c, "on_remove_topic", GT),
            (c, "on_remove_group_topic", GroupTopic(GT, G)),
            (GT, "on_remove_client", c),
        ]
    assert w.rec.take() == E(*rows)


def test_group_add_client(w):
    B, G, GT = w.B, w.G, w.GT
    G.add_client(B)
    assert w.rec.take() == E(
        (G, "on_new_client", B),
        (B, "on_new_group", G),
        (B, "on_new_topic", GT),
        (B, "on_new_group_topic", GroupTopic(GT, G)),
        (GT, "on_new_client", B),
    )
    G.add_client(B)
    assert w.rec.take() == E()


def test_group_remove_client(w):
    A, G, GT = w.A, w.G, w.GT
    G.remove_client(A)
    assert w.rec.take() == E(
        (A, "on_unsub_from_topic", GT),
        (GT, "on_unsub_of_client", A),
        (A, "on_remove_topic", GT),
        (A, "on_remove_group_topic", GroupTopic(GT, G)),
        (GT, "on_remove_client", A),
        (A, "on_remove_group", G),
        (G, "on_remove_client", A),
    )
    G.remove_client(A)
    assert w.rec.take() == E()


def test_sub(w):
    t = w.s.new_public_topic()
    w.rec.take()
    w.B.sub(t)
    assert w.rec.take() == E((w.B, "on_sub_to_topic", t), (t, "on_new_sub_of_client", w.B))
    w.B.sub(t)  # allowed, no second subscription
    assert w.rec.take() == E()


def test_unsub(w):
    w.B.unsub(w.P)
    assert w.rec.take() == E((w.B, "on_unsub_from_topic", w.P), (w.P, "on_unsub_of_client", w.B))


def test_pub(w):
    data = {"x": [1, "é"]}
    w.P.pub(data)
    assert w.rec.take() == E((w.P, "on_pub", ("json", '{"x": [1, "\\u00e9"]}')))
    got = []
    w.P.on_pub.listen(got.append)
    w.P.pub(data)
    assert got == [data] and got[0] is data  # the data as given


def test_stream_attach_detach(w):
    B = w.B
    stream = B.stream()
    assert B.status is Status.RECEIVING
    assert w.rec.take() == E((B, "on_status_change", Status.RECEIVING))
    taken_over = B.stream()  # takeover: the status does not change, so nothing fires
    assert w.rec.take() == E()
    assert list(stream)[1:] == []  # the old stream ends after its first chunk
    assert stream.ended
    taken_over.close()
    w.s.sync()  # with a shared backend the detach is applied after close() returns
    assert B.status is Status.WAITING
    assert w.rec.take() == E((B, "on_status_change", Status.WAITING))
    taken_over.close()
    w.s.sync()
    assert w.rec.take() == E()


def test_listeners_run_after_the_change_outside_the_lock(service):
    seen = []

    def on_new_client(c):
        # The change is complete and no lock is held: calling back into the API works.
        t = c.new_private_topic()
        seen.append((c.id in service.get_clients(), t.id in c.get_all_topics()))

    service.on_new_client.listen(on_new_client)
    service.new_client()
    assert seen == [(True, True)]

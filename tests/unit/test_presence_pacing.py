"""Presence reports are paced by the topic, not by the number of processes proposing them.

Deterministic: a simulated clock drives the timers of several processes (a tick a second each,
a quarter of a second apart, as the service's timer runs) over one replicated topic that changes
all the time; a proposed report is applied everywhere ``lag`` seconds later, as an operation of
the log is. The pacing itself (``core/_presence.due_reports`` and ``report``) is the real code.
"""

from __future__ import annotations

import heapq
import random

import pytest

from pubsubsse.core import _presence
from pubsubsse.core._records import ClientRecord, TopicRecord, TopicType

SECONDS = 60.0


def reports_over(processes: int, lag: float) -> tuple[int, int]:
    """Return how many reports the topic's subscribers got, and how many were proposed."""
    topic = TopicRecord("T-room", TopicType.PUBLIC)
    dirty: dict[str, TopicRecord] = {}
    _presence.enable(dirty, topic)
    users = [ClientRecord(f"C-{n}", 0.0, user=f"user-{n}") for n in range(4)]
    present = [False] * len(users)
    seen: list[dict[str, tuple[int, float]]] = [{} for _ in range(processes)]
    # (time, order, what, process): a tick of a process's timer, or a proposal applied.
    events = [(n * 1.0 / processes, n, "tick", n) for n in range(processes)]
    heapq.heapify(events)
    order = processes
    proposed = reported = 0
    churn, rng = 0.0, random.Random(7)
    while events:
        now, _, what, process = heapq.heappop(events)
        if now > SECONDS:
            break
        while churn < now:  # someone comes or goes every 50 ms
            n = rng.randrange(len(users))
            (_presence.disconnect if present[n] else _presence.connect)(dirty, topic, users[n])
            present[n] = not present[n]
            churn += 0.05
        if what == "applied":
            dirty.pop(topic.id, None)
            reported += _presence.report(topic) is not None
            continue
        due, seen[process] = _presence.due_reports(dirty.values(), seen[process], now)
        for _topic_id in due:
            proposed += 1
            heapq.heappush(events, (now + lag, order, "applied", process))
            order += 1
        heapq.heappush(events, (now + 1.0, order, "tick", process))
        order += 1
    return reported, proposed


@pytest.mark.parametrize("processes", [1, 4, 16])
def test_a_churning_topic_gets_about_a_report_a_second_however_many_processes_propose(processes):
    reported, proposed = reports_over(processes, lag=0.005)
    # One process: a report every other tick (seen changed, then due 0.9 s later). More: the
    # first proposal applied restarts every process's wait, so reports come sooner, not more
    # often. Without that, 16 processes would each propose every other second: 8 a second.
    assert SECONDS * 0.4 <= reported <= SECONDS * 1.2
    assert proposed - reported <= SECONDS * 0.1  # a proposal that finds nothing changed: rare


def test_timers_firing_while_a_report_is_on_its_way_propose_one_too():
    # A log 300 ms slow and 16 processes: about five timers fire while a proposal is on its way.
    reported, proposed = reports_over(16, lag=0.3)
    assert SECONDS * 1.2 < proposed <= SECONDS * 16 * 0.3
    assert reported <= proposed  # a proposal applied after another may find nothing to report

"""Presence reports are paced by the topic, not by the number of processes proposing them."""

from __future__ import annotations

import time

from pubsubsse import SSEPubSubService
from pubsubsse.backends.log import LogBackend
from pubsubsse.backends.memory import MemoryTransport
from pubsubsse.testing import read_stream


def test_however_many_processes_a_churning_topic_gets_about_a_report_a_second() -> None:
    log = MemoryTransport()
    replicas = []
    for _ in range(4):  # their timers a quarter of a second apart: each tick finds the topic changed
        replicas.append(SSEPubSubService(backend=LogBackend(log), client_timeout=None))
        time.sleep(0.25)
    try:
        room = replicas[0].public_topic("room", presence=True)
        observer = replicas[0].new_client()
        observer.sub(room)
        watching = observer.stream()
        churners = []
        for n, replica in enumerate(replicas[1:]):
            replica.sync()
            client = replica.new_client(user=f"user-{n}")
            client.sub(replica.public_topic("room"))
            churners.append(client)
        streams: list = [None] * len(churners)
        deadline, n = time.monotonic() + 4.0, 0
        while time.monotonic() < deadline:  # every replica's timer sees the topic changed at every tick
            n += 1
            for i, client in enumerate(churners):  # each user comes and goes, at its own pace
                if n % (i + 2) == 0:
                    streams[i] = client.stream() if streams[i] is None else streams[i].close()
            time.sleep(0.05)
        for stream in streams:
            if stream is not None:
                stream.close()
        got = read_stream(watching, seconds=2.5)
        reports = [item for item in got.sys("presence") if "joined" in item]
        assert 2 <= len(reports) <= 7, reports  # 4 replicas proposing at each tick: about 16
    finally:
        for replica in replicas:
            replica.shutdown()

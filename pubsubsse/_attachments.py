"""The service's side of the streams it holds: opening them, catching them up, detaching them, the timer.

:class:`Attachments` is what a :class:`~pubsubsse.Stream` and the timer call back
(the ``StreamOwner`` protocol of the stream layer, which does not import the
service).
"""

from __future__ import annotations

import threading
import time

from pubsubsse.backends.base import Backend
from pubsubsse.core import _history, _presence
from pubsubsse.core._engine import Core
from pubsubsse.core._records import AttachPlan
from pubsubsse.streams._sse import frames, retry_field
from pubsubsse.streams._stream import CLOSE_MARK, HEARTBEAT_MARK, Stream

__all__ = ["Attachments"]


class Attachments:
    """The streams of one service held by this process, seen from the service's side.

    ``core`` and ``backend`` are set by the service once it has built them; the
    lock is the service's (see the lock discipline in :mod:`pubsubsse.service`).
    """

    def __init__(
        self,
        lock: threading.Lock,
        *,
        process_token: str,
        retry: float,
        heartbeat: float,
        queue_size: int,
        client_timeout: float | None,
    ) -> None:
        self.lock = lock
        self.process_token = process_token
        self.retry = retry
        self.heartbeat = heartbeat
        self.queue_size = queue_size
        self.client_timeout = client_timeout
        self.core: Core
        self.backend: Backend
        #: Topics this process has seen with unreported presence changes (see ``core/_presence``).
        self._presence_seen: dict[str, tuple[int, float]] = {}

    def open_stream(self, plan: AttachPlan) -> Stream:
        """Open the stream an ``attach`` planned and make it the client's. Lock held."""
        first_chunk = b"".join([retry_field(self.retry), *frames(plan.first)])
        stream = Stream(self, plan.client, first_chunk, plan.cursor, plan.token, self.queue_size)
        self.core.set_stream(plan.client, stream)
        return stream

    def end_streams(self) -> None:
        """End every stream held here after what it has queued; their consumers reconnect."""
        with self.lock:
            for client in self.core.holders.get(self.process_token, {}).values():
                stream = client.stream
                if isinstance(stream, Stream):
                    stream.enqueue(CLOSE_MARK)

    def count_overflow(self) -> None:
        self.core.counters.queue_overflows += 1

    def catch_up(self, stream: Stream) -> list[bytes]:
        with self.lock:
            stream.resync_pending = False
            if stream.detached:
                return []
            events, stream.cursor = self.core.catch_up(stream.record, stream.cursor)
        return frames(events)

    def detach(self, stream: Stream) -> None:
        with self.lock:
            if stream.detached:
                return
            stream.detached = True
        # Never waits for the backend: a closing stream (the disconnect watcher, the timer) must not.
        self.backend.execute_eventually("detach", (stream.record.id, stream.token))

    def tick(self, now: float) -> None:
        """Queue heartbeats, detach streams of dead processes, propose expiries, presence reports and trims.

        It walks this process's streams only, without the lock, yielding every 1,000, and asks
        once per other process whether it is alive: a client whose stream is held elsewhere
        costs the pass nothing. Nothing here waits for the backend: changes are queued, never
        awaited.
        """
        expired: list[tuple[str, int]] = []
        own = self.process_token
        with self.lock:
            clients = list(self.core.holders.get(own, {}).values())
            processes = [process for process in self.core.holders if process != own]
            # Any process may propose a report; each waits about a second after a change, or after a report.
            presence, self._presence_seen = _presence.due_reports(
                self.core.presence_dirty.values(), self._presence_seen, now
            )
            trims = _history.due_trims(self.core.ttl_topics.values(), now)
            removals = _history.due_removals(self.core.closed, now)
            if self.client_timeout is not None:
                for client in self.core.waiting.values():
                    if now - client.waiting_since < self.client_timeout:
                        break
                    expired.append((client.id, client.detaches))
        backend = self.backend
        heartbeat = self.heartbeat
        for done, client in enumerate(clients, 1):
            # Read without the lock, it may be stale by a moment: a heartbeat queued on a stream
            # that just ended is never read.
            stream = client.stream
            if isinstance(stream, Stream) and now - stream.last_write >= heartbeat and stream.queue.empty():
                stream.enqueue(HEARTBEAT_MARK)
            if done % 1000 == 0:
                time.sleep(0)
        for process in processes:
            if not backend.is_live(process):
                # Its streams were held by a process that died without detaching them; a token
                # that changed meanwhile makes the detach a no-op.
                with self.lock:
                    held = [(c.id, c.stream_token) for c in self.core.holders.get(process, {}).values()]
                for client_id, token in held:
                    if token is not None:
                        backend.execute_eventually("detach", (client_id, token))
        for client_id, detaches in expired:
            backend.execute_eventually("expire_client", (client_id, detaches))
        for topic_id in presence:
            backend.execute_eventually("presence_flush", (topic_id,))
        for topic_id, upto in trims:
            backend.execute_eventually("trim_history", (topic_id, upto))
        for topic_id in removals:
            backend.execute_eventually("remove_closed_topic", (topic_id,))

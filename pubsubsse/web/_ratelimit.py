"""Token buckets per key (a remote address), for the endpoints' limit on new clients."""

from __future__ import annotations

import logging
import math
import threading
import time

from pubsubsse.web._http import Refused

__all__ = ["NewClientLimit", "RateLimiter"]

log = logging.getLogger(__name__)


class RateLimiter:
    """Allow ``rate`` actions per second per key on average, and bursts of up to ``burst``.

    Memory is bounded: at most ``max_keys`` buckets are kept. When that many
    keys are tracked, buckets that have refilled completely are forgotten
    (they hold nothing a new bucket would not); if every bucket is still in
    use, all are forgotten, which errs on the side of serving requests.
    """

    def __init__(self, rate: float, burst: float, max_keys: int = 100_000) -> None:
        if not rate > 0 or not burst >= 1:
            raise ValueError(f"rate must be > 0 and burst >= 1 (got rate={rate!r}, burst={burst!r})")
        self._rate = float(rate)
        self._burst = float(burst)
        self._max_keys = max_keys
        self._lock = threading.Lock()
        #: key -> (tokens, monotonic time they were counted)
        self._buckets: dict[str, tuple[float, float]] = {}

    def acquire(self, key: str) -> float:
        """Take one token for ``key``; return 0 if it was there, else the seconds until one will be."""
        now = time.monotonic()
        with self._lock:
            tokens, then = self._buckets.get(key, (self._burst, now))
            tokens = min(self._burst, tokens + (now - then) * self._rate)
            if tokens < 1:
                self._buckets[key] = (tokens, now)
                return (1 - tokens) / self._rate
            if key not in self._buckets and len(self._buckets) >= self._max_keys:
                self._forget_full(now)
            self._buckets[key] = (tokens - 1, now)
            return 0.0

    def _forget_full(self, now: float) -> None:
        full_after = self._burst / self._rate
        self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < full_after}
        if len(self._buckets) >= self._max_keys:
            self._buckets.clear()


class NewClientLimit:
    """How many clients ``/add/user`` makes per remote address: 429 with ``Retry-After`` beyond it."""

    def __init__(self, rate: float, burst: int) -> None:
        self._limiter = RateLimiter(rate, burst)
        self._limited: set[str] = set()

    def check(self, address: str) -> None:
        """Count a new client for ``address``; raise :class:`Refused` (429) if it has made too many."""
        wait = self._limiter.acquire(address)
        if not wait:
            self._limited.discard(address)
            return
        if address not in self._limited and len(self._limited) < 1000:
            self._limited.add(address)  # one log line per address and episode, not per request
            log.warning("pubsubsse: new clients from %s are rate limited (new_clients_per_second)", address)
        raise Refused(429, "too many new clients", {"Retry-After": str(math.ceil(wait))})

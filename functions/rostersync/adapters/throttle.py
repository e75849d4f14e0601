"""A client-side rate limit for Classroom calls, so that a busy instance waits its turn instead of
spending calls on 429 answers.

Classroom counts queries per minute per impersonated user (1,200) and per project (3,000). Each
function instance gets its share of that ceiling (the setting CLASSROOM_CALLS_PER_MINUTE, which
terraform computes from the number of admin subjects and the applier's max instances).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class RateLimiter:
    """A token bucket: on average `per_minute` calls a minute, in bursts of at most `burst`."""

    def __init__(
        self,
        per_minute: float,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self._rate = per_minute / 60.0
        self._capacity = burst if burst is not None else max(1.0, min(50.0, per_minute / 6))
        self._tokens = self._capacity
        self._clock = clock
        self._sleep = sleep
        self._stamp = clock()
        self._lock = threading.Lock()
        self.waited = 0.0

    def acquire(self, n: int = 1) -> float:
        """Takes `n` calls' worth of room, sleeping until the bucket can give it; returns the wait."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self._capacity, self._tokens + (now - self._stamp) * self._rate)
            self._stamp = now
            # Reserve now (the bucket may go negative) so concurrent callers queue fairly.
            self._tokens -= n
            wait = 0.0 if self._tokens >= 0 else -self._tokens / self._rate
            self.waited += wait
        if wait > 0:
            self._sleep(wait)
        return wait

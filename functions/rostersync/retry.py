"""The one place that decides how a failed call is retried.

Adapters turn client errors into exceptions that say whether they are worth retrying
(`retryable`) and, when the server said so, how long to wait (`retry_after`, seconds). Everything
else here is policy: exponential backoff with full jitter, never past the caller's deadline. Errors
that will not get better are raised at once, for the handler to record.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from rostersync.privacy import error_text

log = logging.getLogger(__name__)
T = TypeVar("T")
MIN_CALL_TIMEOUT = 1.0  # seconds


class Deadline:
    """When the current unit of work must be finished (a function invocation's time budget)."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._end = clock() + seconds

    def remaining(self) -> float:
        return self._end - self._clock()

    def expired(self) -> bool:
        return self.remaining() <= 0

    def call_timeout(self, longest: float) -> float:
        """One HTTP call's timeout: at most `longest`, and no longer than what is left of the budget
        (google-api-python-client's default is 60 s, longer than the applier's 50 s budget: a call
        could still be running after the invocation gave up and Pub/Sub redelivered). A floor of
        MIN_CALL_TIMEOUT lets a call made at the very end fail fast rather than not at all."""
        return max(MIN_CALL_TIMEOUT, min(longest, self.remaining()))


class TimeBudgetSpent(Exception):
    """The invocation's deadline passed before the next request: what was done so far stands."""

    retryable = False


@dataclass
class RetryPolicy:
    base_delay: float = 0.5
    max_delay: float = 20.0
    max_attempts: int = 8
    sleep: Callable[[float], None] = time.sleep
    rng: random.Random = field(default_factory=random.Random)

    def delay_for(self, attempt: int, retry_after: float | None) -> float:
        # Full jitter spreads the retries of many instances hit by the same quota window.
        delay = self.rng.uniform(0, min(self.max_delay, self.base_delay * (2**attempt)))
        if retry_after is not None:
            delay = max(delay, retry_after)
        return delay

    def call(self, fn: Callable[[], T], deadline: Deadline, what: str) -> T:
        attempt = 0
        while True:
            try:
                return fn()
            except Exception as exc:
                if not getattr(exc, "retryable", False):
                    raise
                attempt += 1
                delay = self.delay_for(attempt - 1, getattr(exc, "retry_after", None))
                if attempt >= self.max_attempts or delay >= deadline.remaining():
                    log.warning("giving up on %s after %d attempts: %s", what, attempt, error_text(exc))
                    raise
                log.info("retrying %s in %.2fs (attempt %d): %s", what, delay, attempt, error_text(exc))
                self.sleep(delay)


def retry_after_seconds(value: str | None, now: Callable[[], float] = time.time) -> float | None:
    """A Retry-After header in seconds from now, in either form HTTP allows (RFC 9110 10.2.3):
    delay-seconds ("120") or an HTTP-date ("Wed, 21 Oct 2026 07:28:00 GMT"). A date already past is
    0; None when the header is absent or unreadable (the backoff alone decides then)."""
    import email.utils

    text = (value or "").strip()
    if not text:
        return None
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None or when.tzinfo is None:  # HTTP-dates are GMT; one without a zone is not one
        return None
    return max(0.0, when.timestamp() - now())

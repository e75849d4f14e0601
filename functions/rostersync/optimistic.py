"""Optimistic concurrency: the one loop every writer of a shared document goes through.

Several writers change `sections/{id}` at once: appliers (a redelivery while a slow run still
goes, a second subscription), the reconcile pass and the applier it runs inline, the notification
handler (several instances, no ordering), and the administrator's commands. Each reads the
document with its update time, plans from the rules and writes with a precondition on that update
time (store.py: `FirestoreStore.save_link` and the other guarded writes). When another writer
committed in between, the store raises `StaleWrite`; `run` below reads the document again and
plans again from the rules. Repeating a plan is safe: every Classroom call it makes is idempotent
(an add of a member already there is ALREADY_MEMBER, a removal of one already gone NOT_MEMBER, a
second create of the alias ALREADY_EXISTS), and a writer that did call Classroom in an earlier try
squares the fresh link with what it did (applier.py, `_Effects`).

Why retries and not a lease (one writer per section at a time): a conflict-free change, by far the
common case, then costs what it did before, one read and one commit, where a lease costs two more
writes (take it, give it back) on every message, and a lease held by an instance that dies blocks
the section until it expires (longer than the applier's budget, so minutes). Conflicts are rare
(they need two writers on one section within the same second or so) and a re-plan costs one read.
The one place a lease would be the better answer is a read-compare-write on Classroom itself
(applier.py, `_Run._run` for RenameCourse): a precondition on Firestore cannot stop two writers
both patching the course name; renames are rare and the later event wins on its re-plan.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from typing import TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")

MAX_ATTEMPTS = 8  # conflicts need concurrent writers on one document: 8 in a row means something is wrong


class StaleWrite(Exception):
    """The document changed since it was read (its update time moved, or it appeared or vanished)."""


class ConflictCounter:
    """How many conflicts were seen and plans made again (for the stress test's figures and logs)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.conflicts = 0
        self.replans = 0
        self.gave_up = 0

    def note(self, what: str) -> None:
        with self._lock:
            setattr(self, what, getattr(self, what) + 1)

    def reset(self) -> None:
        with self._lock:
            self.conflicts = self.replans = self.gave_up = 0

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return {"conflicts": self.conflicts, "replans": self.replans, "gave_up": self.gave_up}


STATS = ConflictCounter()


def run(
    load: Callable[[], T],
    write: Callable[[T, int], R],
    what: str,
    attempts: int = MAX_ATTEMPTS,
    sleep: Callable[[float], None] = time.sleep,
) -> R:
    """Reads with `load`, then plans, acts and writes with `write(current, attempt)`, which raises
    StaleWrite when its precondition fails; then reads again and plans again, up to `attempts`
    times (StaleWrite is raised after the last: the caller asks for a redelivery, nothing is lost).
    The short random pause lets the other writer finish, so two writers do not keep colliding."""
    for attempt in range(attempts):
        current = load()
        try:
            return write(current, attempt)
        except StaleWrite as exc:
            STATS.note("conflicts")
            if attempt + 1 >= attempts:
                STATS.note("gave_up")
                log.warning("%s: still conflicting after %d attempts: %s", what, attempts, exc)
                raise
            STATS.note("replans")
            log.info("%s: changed by another writer (%s); reading it again and planning again", what, exc)
            sleep(random.uniform(0, 0.02 * (attempt + 1)))
    raise AssertionError("unreachable")  # pragma: no cover

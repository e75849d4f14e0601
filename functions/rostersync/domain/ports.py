"""The ports: what the handlers need from the outside world, as plain Python interfaces.

Adapters (rostersync/adapters/: `classroom`, `store`, `bus`, `clever`...) implement them over the real clients;
unit tests implement them in memory.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from rostersync.domain.audit import AuditEntry
from rostersync.domain.changes import RosterChange
from rostersync.domain.links import SectionCourseLink
from rostersync.domain.rules import Override, Problem
from rostersync.privacy import redact

TRANSFER_IN_PROGRESS = ("@CannotRemoveCourseOwnerTransferIncomplete", "@OwnershipTransferInProgress")


class ClassroomError(Exception):
    """Classroom said no. `reason` is the `@Reason` prefix of Google's message, if any."""

    def __init__(self, http_status: int, status: str, message: str, retry_after: float | None = None):
        self.http_status = http_status
        self.status = status
        self.message = message  # Google's own words, for the problem an administrator reads
        self.reason = message.split(" ", 1)[0] if message.startswith("@") else ""
        # What str() (and so every log line and redelivery error) shows: status and reason, and
        # the message only redacted, as Classroom's messages can name the user.
        super().__init__(f"{http_status} {status}: {self.reason or redact(message)[:200]}")
        self.retry_after = retry_after
        # Quota and server faults pass. A user's daily join limit does not pass within a retry.
        self.retryable = (http_status == 429 and self.reason != "@UserCourseJoinRateLimitReached") or http_status in (
            0,
            500,
            502,
            503,
            504,
        )

    @property
    def already_exists(self) -> bool:
        return self.http_status == 409 or self.status == "ALREADY_EXISTS"

    @property
    def not_found(self) -> bool:
        return self.http_status == 404


ADDED = "added"
ALREADY_MEMBER = "already_member"
REMOVED = "removed"
NOT_MEMBER = "not_member"


class ClassroomPort(Protocol):
    def create_course(self, alias: str, name: str, owner_email: str) -> dict:
        """Creates a PROVISIONED course with that alias; ClassroomError 409 if the alias exists."""

    def get_course(self, course_id: str) -> dict | None: ...

    def patch_course(self, course_id: str, fields: dict) -> dict: ...

    def delete_course(self, course_id: str) -> None: ...

    def add_members(self, course_id: str, members: Sequence[tuple[str, str]]) -> list[str | ClassroomError]:
        """Adds (role, email) pairs; one result each: ADDED, ALREADY_MEMBER or the error."""

    def remove_member(self, course_id: str, role: str, email: str) -> str:
        """REMOVED, or NOT_MEMBER when they were already gone."""


class LinkStore(Protocol):
    def load_link(self, section_id: str) -> SectionCourseLink | None: ...

    def save_link(
        self,
        before: SectionCourseLink | None,
        after: SectionCourseLink,
        problems: Sequence[Problem] = (),
        resolved: Sequence[str] = (),
        overrides: Sequence[Override] = (),
        audit: Sequence[AuditEntry] = (),
        withdrawn: Sequence[str] = (),
        touched: bool = False,
    ) -> None:
        """Writes what changed between `before` and `after`, the problems found, the problems
        that no longer hold, the teachers' overrides seen (and the keys of those withdrawn) and the
        audit trail, in one commit, on the condition that the link is still as `before` was read:
        optimistic.StaleWrite otherwise (nothing written; read again and plan again). `touched`:
        the caller changed the course's members in Classroom, so the link's update time moves even
        when nothing else is written."""

    def record_problems(self, problems: Sequence[Problem]) -> None: ...


@dataclass(frozen=True)
class Cursor:
    """Where the poller is in Clever's event stream. `last_event_id` "" means from the start."""

    last_event_id: str
    bootstrapped_at: str = ""
    # Memberships in the district at the bootstrap: the scale the mass-change brake measures against.
    memberships: int = 0
    # Guardian links wanted at the bootstrap (GUARDIANS=invite): the scale for guardian removals.
    guardians: int = 0
    # When a poll last read the feed to its end (ISO, UTC): nothing after the cursor existed then.
    caught_up_at: str = ""


@dataclass(frozen=True)
class BootstrapProgress:
    """A bootstrap under way: the event it is marked with, when it started, the last section id
    whose course_wanted is published (sections come in id order) and the memberships counted so
    far. Kept after every page, so a bootstrap that outlives one poll's time budget (a district of
    tens of thousands of sections) is continued by the next poll, not begun again."""

    marker: str
    started_at: str
    after: str = ""
    memberships: int = 0


class CursorExpiredError(Exception):
    """Clever no longer knows the event the cursor points at (it keeps events 30 days)."""


@dataclass(frozen=True)
class PollState:
    """What a poll reads first, in one document: the cursor and whether an administrator paused the sync."""

    cursor: Cursor | None
    paused: bool = False
    bootstrap: BootstrapProgress | None = None  # a bootstrap the time budget cut: continued first


class PollStateStore(Protocol):
    def load_cursor(self) -> Cursor | None: ...

    def load_poll_state(self) -> PollState: ...

    def save_cursor(self, cursor: Cursor) -> None: ...

    def save_bootstrap_progress(self, progress: BootstrapProgress | None) -> None:
        """Keeps how far a bootstrap got (None: it finished, or none is under way)."""

    def save_poll_status(self, status: dict) -> None: ...

    def record_problems(self, problems: Sequence[Problem]) -> None: ...

    def record_rebootstrap(self, reason: str, old_cursor: str) -> None:
        """Keeps, where `rostersync status` shows it, that the cursor was given up and why."""

    def sections_with_member(self, clever_user_id: str) -> list[str]:
        """The linked sections that know this user as a member (any status)."""

    def hold_changes(self, reasons: Sequence[str], changes: Sequence[RosterChange], batch_id: str | None = None) -> str:
        """Keeps changes the brake held back, for an administrator to approve; returns the batch id
        (the given one, when a poll's batch grows page by page)."""


class ChangePublisher(Protocol):
    def publish(self, changes: Iterable[RosterChange]) -> int:
        """Publishes in order per section and returns only once every message is confirmed."""


class CleverSource(Protocol):
    def newest_event_id(self) -> str | None: ...

    def event_exists(self, event_id: str) -> bool:
        """Whether Clever still keeps this event (GET /events/{id}; 404 when it is gone)."""

    def event_pages(self, after: str | None) -> Iterator[list[dict]]: ...

    def section_pages(self, after: str | None = None) -> Iterator[list[dict]]:
        """Every section, in pages, in id order; only those after `after` when given."""

    def contact_pages(self) -> Iterator[list[dict]]:
        """Contacts (role contact), read only with GUARDIANS=invite."""

    def section(self, section_id: str) -> dict | None: ...


class StorageError(RuntimeError):
    """Cloud Storage refused or failed a read (adapters/storage.py); `retryable` for a 429, a 5xx or no answer."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status
        self.retryable = status is None or status == 429 or status >= 500

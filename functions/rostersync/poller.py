"""One poll of Clever: cursor → event pages → roster changes → publish → advance the cursor.

The cursor only moves past a page once every change from it is confirmed published, so a crash or
a failed publish makes the next poll read that page again; the applier ignores the repeats. With no
cursor yet, the poll bootstraps: it notes Clever's newest event id first, publishes every section as
a "course wanted" change, and then polls from the noted id, so a change made during the bootstrap
is seen either in the section list or in the events (or both, harmlessly).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import asdict, dataclass, field, replace

from rostersync.brake import BrakeSettings, PollBrake
from rostersync.changes import Person, RosterChange, SectionSnapshot, normalize_email
from rostersync.ports import ChangePublisher, CleverSource, Cursor, CursorExpiredError, PollStateStore
from rostersync.retry import Deadline
from rostersync.rules import Problem
from rostersync.sources.clever_events import (
    InvalidCleverEvent,
    UserDirectory,
    changes_from_event,
    course_wanted,
    event_user_ids,
    section_user_ids,
)

log = logging.getLogger(__name__)

# Stands for "before every event": a bootstrap of a district with no events yet.
BEGINNING = "0" * 24


@dataclass
class PollResult:
    outcome: str = "ok"  # "ok" | "partial" (time budget spent; the next poll goes on) | "paused"
    bootstrapped: bool = False
    rebootstrapped: bool = False
    events_read: int = 0
    events_skipped: int = 0
    sections_read: int = 0
    changes: int = 0  # roster changes found
    published: int = 0  # Pub/Sub messages (one carries a section's changes from one page)
    bad_events: int = 0
    held: int = 0  # removals and archives the brake held back for an administrator
    held_batch: str = ""
    cursor: str = ""
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return asdict(self)


def _now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _email_change(event: object) -> bool:
    if not isinstance(event, dict) or event.get("type") != "users.updated":
        return False
    data = event.get("data")
    return (
        isinstance(data, dict)
        and isinstance(data.get("object"), dict)
        and isinstance(data.get("previous_attributes"), dict)
        and "email" in data["previous_attributes"]
    )


def _share_people(changes: list[RosterChange], people: dict[Person, Person]) -> list[RosterChange]:
    """The changes with their snapshots' members shared across the page: every event of a big
    section brings the whole section, so 1,000 events of a 3,000-member section held 3 million
    Person objects (about 1 GiB) until published; shared, they are 3,000 and 1,000 tuples."""
    shared: dict[int, SectionSnapshot] = {}

    def one(p: Person | None) -> Person | None:
        return None if p is None else people.setdefault(p, p)

    def snapshot(s: SectionSnapshot) -> SectionSnapshot:
        if id(s) not in shared:
            shared[id(s)] = replace(
                s,
                primary_teacher=one(s.primary_teacher),
                teachers=tuple(one(p) for p in s.teachers),
                students=tuple(one(p) for p in s.students),
            )
        return shared[id(s)]

    return [replace(c, section=snapshot(c.section), person=one(c.person)) for c in changes]


def _id_of(record: object) -> str:
    value = record.get("id") if isinstance(record, dict) else None
    return value if isinstance(value, str) and value else "?"


class Poller:
    def __init__(
        self,
        clever: CleverSource,
        users: UserDirectory,
        state: PollStateStore,
        publisher: ChangePublisher,
        deadline: Deadline,
        brake: BrakeSettings | None = None,
    ):
        self._brake = brake
        self._clever = clever
        self._users = users
        self._state = state
        self._publisher = publisher
        self._deadline = deadline

    def poll(self) -> PollResult:
        started = time.monotonic()
        result = PollResult()
        state = self._state.load_poll_state()
        if state.paused:
            # An administrator paused the sync: nothing is read from Clever, the cursor stays.
            log.warning("poll skipped: the sync is paused (rostersync resume)")
            result.outcome = "paused"
            self._state.save_poll_status(result.to_json())
            return result
        cursor = state.cursor
        try:
            self._poll(cursor, result)
        except Exception as exc:
            result.outcome = "failed"
            result.problems.append(f"{type(exc).__name__}: {exc}"[:500])
            raise
        finally:
            result.seconds = round(time.monotonic() - started, 3)
            self._state.save_poll_status(
                {k: v for k, v in result.to_json().items() if k != "problems"} | {"problems": result.problems[:20]}
            )
        return result

    def _poll(self, cursor: Cursor | None, result: PollResult) -> None:
        if cursor is None:
            cursor = self._bootstrap(result)
        try:
            self._follow_events(cursor, result)
        except CursorExpiredError as exc:
            # Clever keeps events 30 days: past that we cannot know what we missed, so we read
            # the whole district again rather than leave a silent gap.
            log.error("event cursor %s expired (%s): bootstrapping again", cursor.last_event_id, exc)
            result.rebootstrapped = True
            cursor = self._bootstrap(result)
            self._follow_events(cursor, result)

    def _bootstrap(self, result: PollResult) -> Cursor:
        marker = self._clever.newest_event_id() or BEGINNING
        when = _now_iso()
        log.info("bootstrap: reading every section (events after %s follow)", marker)
        memberships = 0
        preload = getattr(self._users, "preload_all", None)
        if preload:
            # Every section's members are wanted: one paged read of /users beats one request each.
            preload()
        for page in self._clever.section_pages():
            ids: set[str] = set()
            good = []
            for section in page:
                try:
                    if not isinstance(section, dict):
                        raise InvalidCleverEvent(f"a section list item is not an object: {str(section)[:80]}")
                    ids |= section_user_ids(section)
                    good.append(section)
                except InvalidCleverEvent as exc:
                    self._bad_input(result, f"section {_id_of(section)}", exc)
            emails = self._users.emails(ids)
            changes = []
            for section in good:
                try:
                    changes.append(course_wanted(section, marker, when, emails))
                except InvalidCleverEvent as exc:
                    self._bad_input(result, f"section {_id_of(section)}", exc)
            memberships += sum(len(c.section.teachers) + len(c.section.students) for c in changes)
            result.published += self._publisher.publish(changes)
            result.changes += len(changes)
            result.sections_read += len(page)
        cursor = Cursor(marker, when, memberships)
        self._state.save_cursor(cursor)
        result.bootstrapped = True
        result.cursor = marker
        return cursor

    def _follow_events(self, cursor: Cursor, result: PollResult) -> None:
        """Page by page: changes go out (one message per section and page) once the brake has seen
        them; the cursor moves past a page once everything from it is published or held."""
        after = None if cursor.last_event_id == BEGINNING else cursor.last_event_id
        result.cursor = cursor.last_event_id
        brake = PollBrake(self._brake, cursor.memberships) if self._brake else None
        try:
            for page in self._clever.event_pages(after):
                ids: set[str] = set()
                for event in page:
                    ids |= event_user_ids(event)
                emails = self._users.emails(ids)
                changes = []
                people: dict[Person, Person] = {}
                for event in page:
                    try:
                        found = changes_from_event(event, emails)
                    except InvalidCleverEvent as exc:
                        self._bad_input(result, f"event {_id_of(event)}", exc)
                        continue
                    if not found and _email_change(event):
                        found = self._email_changed(event)
                    found = _share_people(found, people)
                    if not found:
                        result.events_skipped += 1
                    changes += found
                held_before = len(brake.held) if brake else 0
                if brake:
                    changes = brake.filter(changes)
                result.published += self._publisher.publish(changes)
                result.changes += len(changes)
                result.events_read += len(page)
                if brake and len(brake.held) > held_before:
                    # Kept before the cursor moves past them: a crash now loses nothing.
                    self._hold(brake, result)
                last_id = page[-1].get("id") if isinstance(page[-1], dict) else None
                if isinstance(last_id, str) and last_id > cursor.last_event_id:
                    cursor = Cursor(last_id, cursor.bootstrapped_at, cursor.memberships)
                    self._state.save_cursor(cursor)
                    result.cursor = last_id
                if self._deadline.expired():
                    result.outcome = "partial"
                    log.warning("poll time budget spent at event %s; the next poll continues", result.cursor)
                    return
        finally:
            if brake and brake.held:
                log.error(
                    "MASS CHANGE HELD: %d removals and archives in %d sections await an administrator (batch %s): %s",
                    len(brake.held),
                    len({c.section_id for c in brake.held}),
                    result.held_batch,
                    "; ".join(brake.reasons)[:500],
                )

    def _email_changed(self, event: dict) -> list:
        """A user's email changed in Clever: every section they are in converges on the section as
        Clever has it now, with the new email, so their membership moves to the new account."""
        user = event["data"]["object"]
        user_id, new_email = user.get("id"), normalize_email(user.get("email"))
        if not isinstance(user_id, str) or not user_id:
            return []
        changes = []
        for section_id in self._state.sections_with_member(user_id):
            section = self._clever.section(section_id)
            if section is None:
                continue  # deleted: its own event follows
            emails = dict(self._users.emails(section_user_ids(section)))
            emails[user_id] = new_email
            changes.append(course_wanted(section, event["id"], str(event.get("created") or ""), emails))
        log.info("user %s changed email: %d sections follow", user_id, len(changes))
        return changes

    def _hold(self, brake: PollBrake, result: PollResult) -> None:
        """Appends this page's held changes to this poll's held batch (the same id as it grows;
        what earlier pages held is not written again)."""
        batch = brake.batch()
        assert batch is not None
        new = batch.changes[brake.stored :]
        result.held_batch = self._state.hold_changes(batch.reasons, new, result.held_batch or None)
        brake.stored = len(batch.changes)
        result.held = len(batch.changes)

    def _bad_input(self, result: PollResult, what: str, exc: Exception) -> None:
        result.bad_events += 1
        message = f"Clever sent a {what} we cannot read: {exc}"
        result.problems.append(message)
        log.error(message)
        self._state.record_problems(
            [
                Problem(
                    kind="bad_clever_record",
                    section_id=what.replace(" ", ":"),
                    message=message,
                    hint="Skipped; the rest of the district syncs. Check the record in Clever",
                )
            ]
        )

"""One poll of Clever: cursor → event pages → roster changes → publish → advance the cursor.

The cursor only moves past a page once every change from it is confirmed published, so a crash or
a failed publish makes the next poll read that page again; the applier ignores the repeats. With no
cursor yet, the poll bootstraps: it notes Clever's newest event id first, publishes every section as
a "course wanted" change, and then polls from the noted id, so a change made during the bootstrap
is seen either in the section list or in the events (or both, harmlessly).

An expired cursor is found before any event is trusted (docs/clever-feed.md). Clever keeps events
30 days, and asked for the events after an id it no longer keeps it answers 200 with the oldest
events it has, as if nothing had been missed. So before paging, the cursor is checked: when the
feed was last read to its end longer ago than the retention less a margin, or when
`GET /events/{cursor}` says the event is gone, the poll reads the whole district again (a logged
re-bootstrap, kept in sync_state/clever.last_rebootstrap) instead of leaving a silent gap.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace

from rostersync.domain.brake import BrakeSettings, GuardianBrake, PollBrake
from rostersync.domain.changes import Person, RosterChange, SectionSnapshot, normalize_email
from rostersync.domain.ports import (
    BootstrapProgress,
    ChangePublisher,
    CleverSource,
    Cursor,
    CursorExpiredError,
    PollState,
    PollStateStore,
)
from rostersync.domain.rules import Problem
from rostersync.domain.sources.clever_contacts import (
    contact_students,
    district_guardian_changes,
    event_student_ids,
    guardian_changes_from_event,
    is_contact_event,
)
from rostersync.domain.sources.clever_events import (
    InvalidCleverEvent,
    UserDirectory,
    changes_from_event,
    course_wanted,
    event_user_ids,
    section_user_ids,
)
from rostersync.privacy import redact
from rostersync.retry import Deadline, TimeBudgetSpent

log = logging.getLogger(__name__)

# Stands for "before every event": a bootstrap of a district with no events yet.
BEGINNING = "0" * 24
# Our own markers end so (an ObjectId's machine and counter parts all zero): no event to ask Clever about.
MARKER_TAIL = "0" * 16


def marker_after(event_id: str) -> str:
    """An id newer than `event_id` and older than any event made a second later. A re-bootstrap
    that finds nothing left in the feed takes it as its marker: its changes must not look older
    than what the links already hold (they would be skipped as stale), and BEGINNING would."""
    when = event_time(event_id)
    return BEGINNING if when is None else f"{int(when.timestamp()) + 1:08x}{MARKER_TAIL}"


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
    guardian_changes: int = 0  # students whose guardians changed (GUARDIANS=invite)
    held_guardians: int = 0
    held_guardian_batch: str = ""
    cursor: str = ""
    rebootstrap_reason: str = ""
    caught_up_at: str = ""  # this poll read the feed to its end (when it started): see Cursor.caught_up_at
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return asdict(self)


def _now_iso() -> str:
    return _iso(dt.datetime.now(dt.UTC))


def _iso(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _parse(text: str) -> dt.datetime | None:
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None
    except ValueError:
        return None
    return when if when is None or when.tzinfo else when.replace(tzinfo=dt.UTC)


def event_time(event_id: str) -> dt.datetime | None:
    """When a Clever event was made: its id is a MongoDB ObjectId, whose first 8 hex digits are the
    creation time in seconds since 1970 (equal to the event's `created`). None for BEGINNING."""
    if len(event_id) != 24 or event_id == BEGINNING:
        return None
    try:
        return dt.datetime.fromtimestamp(int(event_id[:8], 16), dt.UTC)
    except ValueError:
        return None


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
        guardian_types: tuple[str, ...] = (),
        cursor_max_age: dt.timedelta | None = None,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ):
        # None: the cursor is trusted until Clever answers 404 (tests of other behaviour).
        self._cursor_max_age = cursor_max_age
        self._clock = clock
        self._brake = brake
        # GUARDIANS=invite: the relationship types that make a contact a guardian (else empty: off).
        self._guardian_types = guardian_types
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
        try:
            self._poll(state, result)
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

    def _poll(self, state: PollState, result: PollResult) -> None:
        started = _iso(self._clock())
        cursor: Cursor | None = state.cursor
        if state.bootstrap is not None:
            # A bootstrap the time budget cut (a first one, or one after an expired cursor) goes
            # on where it stopped; events are followed once it is done.
            cursor = self._bootstrap(result, resume=state.bootstrap)
        elif cursor is None:
            cursor = self._bootstrap(result)
        else:
            reason = self._expired(cursor)
            if reason:
                cursor = self._rebootstrap(cursor, reason, result)
        if cursor is None:
            return  # the bootstrap goes on at the next poll
        try:
            caught_up = self._follow_events(cursor, result)
        except CursorExpiredError as exc:
            # Clever said so itself (404 to the page after the cursor): same remedy.
            rebootstrapped = self._rebootstrap(
                cursor, f"Clever no longer has event {cursor.last_event_id}: {exc}", result
            )
            if rebootstrapped is None:
                return
            caught_up = self._follow_events(rebootstrapped, result)
        if caught_up:
            result.caught_up_at = started

    def _expired(self, cursor: Cursor) -> str:
        """Why the cursor can no longer be trusted ("" when it can). Checked before any event is read."""
        if self._cursor_max_age is None:
            return ""
        # The newest sign that nothing after the cursor was missed: the cursor event's own time (an
        # ObjectId starts with it), or the last time a poll read the feed to its end, or the
        # bootstrap. Not the event's time alone: a district quiet for a month (summer) keeps an
        # old cursor while polls keep seeing the end of the feed, and must not bootstrap each poll.
        times = [event_time(cursor.last_event_id), _parse(cursor.caught_up_at), _parse(cursor.bootstrapped_at)]
        known = [t for t in times if t is not None]
        now = self._clock()
        if known and now - max(known) > self._cursor_max_age:
            return (
                f"the feed was last read to its end at {max(known).isoformat(timespec='seconds')}, more than "
                f"{self._cursor_max_age.days} days ago (Clever keeps events 30 days): changes may have been dropped"
            )
        if not cursor.last_event_id.endswith(MARKER_TAIL) and not self._clever.event_exists(cursor.last_event_id):
            return f"Clever no longer has event {cursor.last_event_id} (GET /events/{{id}} answered 404)"
        return ""

    def _rebootstrap(self, cursor: Cursor, reason: str, result: PollResult) -> Cursor | None:
        # Past the retention we cannot know what we missed, so we read the whole district again
        # rather than leave a silent gap; the administrator sees why in `rostersync status`.
        log.error("event cursor %s expired (%s): bootstrapping again", cursor.last_event_id, reason)
        result.rebootstrapped = True
        result.rebootstrap_reason = reason[:500]
        result.problems.append(f"re-bootstrap: {reason}"[:500])
        self._state.record_rebootstrap(reason[:500], cursor.last_event_id)
        return self._bootstrap(result, empty_feed_marker=marker_after(cursor.last_event_id))

    def _bootstrap(
        self, result: PollResult, empty_feed_marker: str = BEGINNING, resume: BootstrapProgress | None = None
    ) -> Cursor | None:
        """Every section as a course_wanted, then the cursor at the event noted first. None when
        the time budget ran out first: the progress kept after each page lets the next poll go on
        from the last section published (a section published twice is the same course_wanted,
        which the applier takes as already so)."""
        if resume is not None:
            progress = resume
            log.info("bootstrap: continuing after section %s (events after %s follow)", progress.after, progress.marker)
        else:
            progress = BootstrapProgress(self._clever.newest_event_id() or empty_feed_marker, _now_iso())
            self._state.save_bootstrap_progress(progress)
            log.info("bootstrap: reading every section (events after %s follow)", progress.marker)
        try:
            return self._read_every_section(result, progress)
        except TimeBudgetSpent:
            result.outcome = "partial"
            log.warning("poll time budget spent during the bootstrap; the next poll continues it")
            return None

    def _read_every_section(self, result: PollResult, progress: BootstrapProgress) -> Cursor:
        marker, when = progress.marker, progress.started_at
        preload = getattr(self._users, "preload_all", None)
        if preload:
            # Every section's members are wanted: one paged read of /users beats one request each.
            preload()
        for page in self._clever.section_pages(progress.after or None):
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
            memberships = sum(len(c.section.teachers) + len(c.section.students) for c in changes)
            result.published += self._publisher.publish(changes)
            result.changes += len(changes)
            result.sections_read += len(page)
            last = max((i for i in (_id_of(section) for section in page) if i != "?"), default="")
            if last > progress.after:
                # Once published, never before: a crash here publishes this page again, harmlessly.
                progress = replace(progress, after=last, memberships=progress.memberships + memberships)
                self._state.save_bootstrap_progress(progress)
            if self._deadline.expired():
                raise TimeBudgetSpent(f"bootstrap stopped after section {progress.after}")
        guardians = self._bootstrap_guardians(marker, when, result) if self._guardian_types else 0
        cursor = Cursor(marker, when, progress.memberships, guardians)
        self._state.save_cursor(cursor)
        self._state.save_bootstrap_progress(None)
        result.bootstrapped = True
        result.cursor = marker
        return cursor

    def _follow_events(self, cursor: Cursor, result: PollResult) -> bool:
        """Page by page: changes go out (one message per section and page) once the brake has seen
        them; the cursor moves past a page once everything from it is published or held. True when
        the feed was read to its end."""
        after = None if cursor.last_event_id == BEGINNING else cursor.last_event_id
        result.cursor = cursor.last_event_id
        brake = PollBrake(self._brake, cursor.memberships) if self._brake else None
        guardian_brake = GuardianBrake(self._brake, cursor.guardians) if self._brake and self._guardian_types else None
        try:
            for page in self._clever.event_pages(after):
                ids: set[str] = set()
                for event in page:
                    ids |= event_user_ids(event)
                    if self._guardian_types:
                        ids |= event_student_ids(event, self._guardian_types)
                emails = self._users.emails(ids)
                changes = []
                guardian_changes: list = []
                people: dict[Person, Person] = {}
                for event in page:
                    try:
                        found = changes_from_event(event, emails)
                    except InvalidCleverEvent as exc:
                        self._bad_input(result, f"event {_id_of(event)}", exc)
                        continue
                    guardians = (
                        guardian_changes_from_event(event, emails, self._guardian_types) if self._guardian_types else []
                    )
                    if not found and not guardians and _email_change(event) and not is_contact_event(event):
                        found = self._email_changed(event)
                    found = _share_people(found, people)
                    if not found and not guardians:
                        result.events_skipped += 1
                    changes += found
                    guardian_changes += guardians
                held_before = len(brake.held) if brake else 0
                if brake:
                    changes = brake.filter(changes)
                guardians_held_before = len(guardian_brake.held) if guardian_brake else 0
                if guardian_brake:
                    guardian_changes = guardian_brake.filter(guardian_changes)
                result.guardian_changes += len(guardian_changes)
                result.published += self._publisher.publish(changes + guardian_changes)
                result.changes += len(changes)
                result.events_read += len(page)
                if brake and len(brake.held) > held_before:
                    # Kept before the cursor moves past them: a crash now loses nothing.
                    self._hold(brake, result)
                if guardian_brake and len(guardian_brake.held) > guardians_held_before:
                    result.held_guardian_batch = self._state.hold_changes(
                        # This page's only: a held batch is appended page by page (store.hold_changes).
                        guardian_brake.reasons,
                        guardian_brake.held[guardians_held_before:],
                        result.held_guardian_batch or None,
                    )
                    result.held_guardians = len(guardian_brake.held)
                last_id = page[-1].get("id") if isinstance(page[-1], dict) else None
                if isinstance(last_id, str) and last_id > cursor.last_event_id:
                    cursor = replace(cursor, last_event_id=last_id)
                    self._state.save_cursor(cursor)
                    result.cursor = last_id
                if self._deadline.expired():
                    result.outcome = "partial"
                    log.warning("poll time budget spent at event %s; the next poll continues", result.cursor)
                    return False
        except TimeBudgetSpent:
            result.outcome = "partial"
            log.warning("poll time budget spent at event %s; the next poll continues", result.cursor)
            return False
        finally:
            if brake and brake.held:
                log.error(
                    "MASS CHANGE HELD: %d removals and archives in %d sections await an administrator (batch %s): %s",
                    len(brake.held),
                    len({c.section_id for c in brake.held}),
                    result.held_batch,
                    "; ".join(brake.reasons)[:500],
                )
        return True

    def _bootstrap_guardians(self, marker: str, when: str, result: PollResult) -> int:
        """Every student's qualifying contacts as one complete guardian change per student."""
        contacts = [c for page in self._clever.contact_pages() for c in page if isinstance(c, dict)]
        students = {sid for c in contacts for sid in contact_students(c, self._guardian_types)}
        emails = self._users.emails(students)
        changes = district_guardian_changes(contacts, emails, self._guardian_types, marker, when)
        result.published += self._publisher.publish(changes)
        result.guardian_changes += len(changes)
        log.info("bootstrap: %d contacts, guardians for %d students", len(contacts), len(changes))
        return sum(len(c.wanted) for c in changes)

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
        log.error(redact(message))
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

"""One poll of a OneRoster provider: read → diff against the saved class states → publish → save.

Crash safety, as for the Clever poller: the changes are computed first, published (the call returns
only once every message is confirmed), and only then are the new class states and the cursor saved.
A crash in between makes the next poll find the same differences again and publish them again with
newer event ids; the applier finds them already applied and makes no Classroom call.

A delta poll asks for records with `dateLastModified` after the cursor. The cursor is the time the
last successful read *started*, less `OVERLAP`, so a record changed while we read, or stamped by a
provider clock a little behind ours, is read again rather than missed (a re-read finds no change).
A full read (no cursor yet, or the last one older than `full_read_every`) reads everything, so a
class or enrollment that vanished without a `tobedeleted` record is removed all the same.

A read not known to be complete (`RosterRead.complete`: a provider that repeats pages, sends fewer
distinct records than its X-Total-Count...) removes nothing that is merely missing, and moves
neither the cursor nor the time of the last full read: the next poll reads the same span again.
The poll record (`sync_state/oneroster.last_poll`, `rostersync status`) says so and why. Users that
a read's enrollments name but that it does not carry, and whose email no saved class remembers (an
unchanged student placed in a new class), are fetched before the diff, so they are added at once.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Protocol

from rostersync.domain.ports import ChangePublisher
from rostersync.domain.rules import Problem
from rostersync.domain.sources.oneroster_diff import (
    PROVIDER,
    ClassState,
    EventIds,
    OneRosterCursor,
    RosterRead,
    diff,
    members_needing_emails,
    referenced_users,
)
from rostersync.privacy import redact, redact_value

log = logging.getLogger(__name__)
OVERLAP = dt.timedelta(minutes=5)
FULL_READ_RETRY = dt.timedelta(hours=1)
# Past this many parents in one delta, their saved links are read whole rather than 30 at a time.
MANY_GUARDIANS = 1_500
NOTE_HINTS = {
    "delta_filter_refused": "Every poll reads the whole district instead of the changes; ask the vendor "
    "to support filter=dateLastModified>'...' (OneRoster 1.1/1.2 section 3.4)",
    "delta_filter_ignored": "The provider ignores the dateLastModified filter: every poll downloads everything. "
    "Nothing is lost; ask the vendor, or poll less often",
    "filter_refused": "Read without the filter: nothing is lost, only more is downloaded",
    "route_missing": "Read /users instead: nothing is lost, only more is downloaded",
    "incomplete_read": "Removals wait for a complete read. Check ONEROSTER_PAGE_SIZE and the provider's "
    "paging (offset, X-Total-Count, stable order)",
}


class OneRosterSource(Protocol):
    def read(self, since: str | None = None) -> RosterRead: ...

    def users(self, ids: set[str]) -> dict[str, Mapping]: ...


class OneRosterStateStore(Protocol):
    def load_oneroster_cursor(self) -> OneRosterCursor | None: ...

    def save_oneroster_cursor(self, cursor: OneRosterCursor) -> None: ...

    def load_class_states(self) -> dict[str, ClassState]: ...

    def save_class_states(self, states: Mapping[str, ClassState]) -> None: ...

    def save_oneroster_poll_status(self, status: dict) -> None: ...

    def record_problems(self, problems: Sequence[Problem]) -> None: ...

    def resolve_provider_problems(self, kinds: set[str]) -> None: ...

    # GUARDIANS=invite: what the last read said of each student's guardians (oneroster_guardians.GuardianLinks).
    def load_guardian_links(self, student_ids: set[str] | None = None) -> dict | None: ...

    def students_linked_to(self, guardian_ids: set[str]) -> dict[str, set[str]]: ...

    def save_guardian_links(self, links: Mapping) -> None: ...


@dataclass
class OneRosterPollResult:
    outcome: str = "ok"
    full_read: bool = False
    classes_read: int = 0
    users_read: int = 0
    enrollments_read: int = 0
    changes: int = 0
    published: int = 0
    bad_records: int = 0
    guardian_changes: int = 0  # students whose guardians were stated (GUARDIANS=invite)
    guardian_users_fetched: int = 0  # users a delta lacked, asked for to state students' guardians
    since: str = ""
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)
    # Whether the read is known to hold everything; if not, no removal was inferred and why not.
    complete: bool = True
    incomplete_reasons: list[str] = field(default_factory=list)
    users_fetched: int = 0  # users named by enrollments, not carried by the read, read one by one
    delta_refused: bool = False
    delta_ignored: bool = False

    def to_json(self) -> dict:
        return asdict(self)


def _iso(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _parse(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


class OneRosterPoller:
    def __init__(
        self,
        source: OneRosterSource,
        state: OneRosterStateStore,
        publisher: ChangePublisher,
        full_read_every: dt.timedelta = dt.timedelta(hours=24),
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
        guardian_types: tuple[str, ...] = (),
        guardian_students: Callable[[], set[str]] = set,
    ):
        self._source = source
        self._state = state
        self._publisher = publisher
        self._full_read_every = full_read_every
        self._clock = clock
        # GUARDIANS=invite: which relationship types count, and the students we hold guardian records for.
        self._guardian_types = guardian_types
        self._guardian_students = guardian_students

    def poll(self, force_full: bool = False) -> OneRosterPollResult:
        started = time.monotonic()
        result = OneRosterPollResult()
        try:
            self._poll(force_full, result)
        except Exception as exc:
            result.outcome = "failed"
            result.problems.append(f"{type(exc).__name__}: {exc}"[:500])
            raise
        finally:
            result.seconds = round(time.monotonic() - started, 3)
            self._state.save_oneroster_poll_status(result.to_json() | {"problems": result.problems[:20]})
        return result

    def _poll(self, force_full: bool, result: OneRosterPollResult) -> None:
        now = self._clock()
        cursor = self._state.load_oneroster_cursor()
        full = force_full or self._full_read_due(cursor, now)
        since = None if full else cursor.since
        result.since = since or ""
        read = self._source.read(since)
        # A refused delta filter makes the source read in full: what counts is what it read.
        result.full_read, result.complete = read.full, read.complete
        result.incomplete_reasons = list(read.incomplete_reasons)[:10]
        result.delta_refused, result.delta_ignored = read.delta_refused, read.delta_ignored
        result.classes_read, result.users_read = len(read.classes), len(read.users)
        result.enrollments_read = len(read.enrollments)
        previous = self._state.load_class_states()
        known = members_needing_emails(previous.values())
        missing = referenced_users(read) - set(read.users) - {uid for uid, email in known.items() if email}
        if missing:
            fetched = self._source.users(missing)
            read.users.update(fetched)
            result.users_fetched = len(fetched)
        found = diff(previous, read, EventIds(now), known)
        self.record_read_notes(read, result)
        self.record_bad_records(found.bad_records, result)
        changes = list(found.changes)
        links = None
        if self._guardian_types:
            guardians, links = self._guardian_changes(read, EventIds(now), result, restate=full)
            result.guardian_changes = len(guardians)
            changes += guardians
        result.changes = len(changes)
        result.published = self._publisher.publish(changes)
        # Only now, with every change confirmed published, do the states and the cursor move.
        self._state.save_class_states(found.states)
        if links is not None:
            self._state.save_guardian_links(links)
        last_full = cursor.last_full_read if cursor else ""
        last_incomplete = cursor.last_incomplete_full_read if cursor else ""
        if read.complete:
            self._state.save_oneroster_cursor(
                OneRosterCursor(
                    since=_iso(now - OVERLAP),
                    last_full_read=_iso(now) if read.full else last_full,
                    last_incomplete_full_read="" if read.full else last_incomplete,
                )
            )
        elif read.full:
            # What it read is applied (nothing removed); deltas from now on bring changes and
            # tobedeleted records; the full read is tried again after FULL_READ_RETRY.
            self._state.save_oneroster_cursor(OneRosterCursor(_iso(now - OVERLAP), last_full, _iso(now)))
        # An incomplete delta leaves the cursor: the next poll asks for the same span again.
        log.info("oneroster poll %s", redact_value({k: v for k, v in result.to_json().items() if k != "problems"}))

    def _guardian_changes(self, read: RosterRead, ids: EventIds, result: OneRosterPollResult, restate: bool):
        """GUARDIANS=invite: complete guardian changes, and the links to save once they are published.

        A complete full read restates every student's guardians (the applier reads back what
        Classroom has); a delta the provider answered in full (`restate` False: its filter was
        refused) states only those that changed; a full read not known complete states none.

        A delta states them for the students it may have changed: students it carries, students
        a user it carries names as agents, and students a parent, guardian or relative it carries
        was linked to at the last read (the saved links). For those students, the records it
        lacks are fetched (`users`): the student's own (its `agents`), then each agent and each
        guardian linked before, so a link stated only on the parent's record is not lost. Only
        students whose links differ from the saved ones are published. Safe twice: a repeated
        delta finds the links saved and publishes nothing; links are saved only after publishing,
        so a crash in between publishes the same complete changes again, which the applier finds
        already applied."""
        from rostersync.domain.sources.oneroster_guardians import (
            agents_of,
            changed_guardians,
            possible_guardians,
            students_concerned,
            wanted_guardians,
        )

        types = self._guardian_types
        if read.full and not read.complete:
            # Missing users may be missing links: nothing is stated until a read is known complete
            # (the full read is tried again within the hour; deltas meanwhile state what they carry).
            return [], None
        if read.full:
            saved = self._state.load_guardian_links() or {}
            wanted = wanted_guardians(read.users, types)
            students = set(wanted) | set(saved) | self._guardian_students()
            event_id = ids.next()
            return changed_guardians(read.users, types, students, saved, event_id, ids.event_time, restate, wanted)
        carried = read.users
        before = self._linked_before(possible_guardians(carried))
        concerned = students_concerned(carried, before)
        if not concerned:
            return [], None
        saved = self._state.load_guardian_links(concerned) or {}
        users = dict(carried)
        fetched = self._fetch_users(concerned - set(users), users)
        concerned &= set(users)  # a student the provider no longer has waits for the full read
        linked = agents_of(users, concerned) | {
            g for s in concerned for g in (saved[s].guardian_ids if s in saved else ())
        }
        fetched += self._fetch_users(linked - set(users), users)
        result.guardian_users_fetched = fetched
        return changed_guardians(users, types, concerned, saved, ids.next(), ids.event_time)

    def _linked_before(self, guardian_ids: set[str]) -> dict[str, set[str]]:
        """guardian id -> the students the saved links name them for. Per 30 ids, one query; for a
        delta carrying more (a provider that ignores the delta filter sends everyone), one read of
        every saved link is cheaper than thousands of queries."""
        if not guardian_ids:
            return {}
        if len(guardian_ids) <= MANY_GUARDIANS:
            return self._state.students_linked_to(guardian_ids)
        out: dict[str, set[str]] = {}
        for student_id, links in (self._state.load_guardian_links() or {}).items():
            for gid in set(links.guardian_ids) & guardian_ids:
                out.setdefault(gid, set()).add(student_id)
        return out

    def _fetch_users(self, ids: set[str], into: dict) -> int:
        if not ids:
            return 0
        found = self._source.users(ids)
        into.update(found)
        return len(ids)

    def _full_read_due(self, cursor: OneRosterCursor | None, now: dt.datetime) -> bool:
        if cursor is None:
            return True
        retry = min(FULL_READ_RETRY, self._full_read_every)
        if cursor.last_incomplete_full_read and now - _parse(cursor.last_incomplete_full_read) < retry:
            return False
        return not cursor.last_full_read or now - _parse(cursor.last_full_read) >= self._full_read_every

    def record_read_notes(self, read: RosterRead, result: OneRosterPollResult) -> None:
        """What the administrator must know about how the provider answered, as problems (one
        record per kind: a repeat updates it)."""
        notes = list(read.notes)
        # What this read could have shown and did not is over: its open problems are closed.
        # (An incomplete full read's problem stays open until a full read completes.)
        checked = {"route_missing"}
        checked |= (
            {"filter_refused", "incomplete_read"} if read.full else {"delta_filter_refused", "delta_filter_ignored"}
        )
        if not read.complete:
            notes.append(
                (
                    "incomplete_read",
                    "the read is not known to be complete, so nothing missing from it was removed and "
                    "the cursor did not move: " + "; ".join(read.incomplete_reasons)[:400],
                )
            )
        gone = checked - {kind for kind, _ in notes} - ({"incomplete_read"} if not read.complete else set())
        if gone:
            self._state.resolve_provider_problems({f"oneroster_{kind}" for kind in gone})
        if not notes:
            return
        result.problems += [text for _, text in notes]
        self._state.record_problems(
            [
                Problem(
                    kind=f"oneroster_{kind}",
                    section_id=PROVIDER,
                    message=f"OneRoster: {text}",
                    hint=NOTE_HINTS.get(kind, "Check the OneRoster provider's settings with its vendor"),
                )
                for kind, text in notes
            ]
        )

    def record_bad_records(self, bad: Sequence[str], result: OneRosterPollResult) -> None:
        if not bad:
            return
        result.bad_records += len(bad)
        result.problems += [f"OneRoster sent a record we cannot read: {b}" for b in bad]
        for b in bad:
            log.error("OneRoster sent a record we cannot read: %s", redact(b))
        self._state.record_problems(
            [
                Problem(
                    kind="bad_oneroster_record",
                    section_id=f"oneroster:{b.split(' ')[1] if ' ' in b else b}",
                    message=f"OneRoster sent a record we cannot read: {b}",
                    hint="Skipped; the rest of the district syncs. Check the record in the SIS / OneRoster provider",
                )
                for b in bad
            ]
        )


@dataclass
class BundleImportResult:
    outcome: str = "ok"  # "ok" | "rejected" | "stale"
    bundle: str = ""
    full_read: bool = False
    changes: int = 0
    published: int = 0
    bad_records: int = 0
    guardian_changes: int = 0  # students whose guardians changed (GUARDIANS=invite, a bulk users.csv)
    reason: str = ""

    def to_json(self) -> dict:
        return asdict(self)


def import_bundle(
    name: str,
    uploaded_at: str,
    data: bytes,
    state: OneRosterStateStore,
    publisher: ChangePublisher,
    last_imported: str | None,
    clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    guardian_types: tuple[str, ...] = (),
    guardian_students: Callable[[], set[str]] = set,
) -> BundleImportResult:
    """A CSV bundle uploaded at `uploaded_at` (ISO): diffed against the saved class states and published.

    Safe twice: a repeated delivery finds the states already saved and publishes nothing. Safe out
    of order: a bundle uploaded before the last imported one (`last_imported`) is skipped as stale,
    so an old export never undoes a newer one. A malformed bundle is rejected whole and recorded as
    a problem; nothing of it is published.

    With GUARDIANS=invite (`guardian_types`) a bundle whose users.csv is bulk also states, in one
    complete guardian change per student, the guardians of every student whose links changed since
    the last such bundle (all of them the first time), as a REST full read does. What the last
    bundle said is kept per student as a digest (`GuardianLinks`), so only changed students are
    published and the importer's memory grows by one short entry per student with guardians."""
    from rostersync.domain.sources.oneroster_csv import InvalidBundle, read_bundle

    result = BundleImportResult(bundle=name)
    if last_imported and uploaded_at <= last_imported:
        result.outcome, result.reason = "stale", f"uploaded {uploaded_at}, not after the last import {last_imported}"
        log.warning("OneRoster bundle %s skipped: %s", name, result.reason)
        return result
    try:
        read = read_bundle(data, with_guardians=bool(guardian_types))
    except InvalidBundle as exc:
        result.outcome, result.reason = "rejected", str(exc)
        log.error("OneRoster bundle %s rejected: %s", name, redact(exc))
        state.record_problems(
            [
                Problem(
                    kind="bad_oneroster_bundle",
                    section_id=f"bundle:{name}",
                    message=f"OneRoster bundle {name} was rejected whole: {exc}",
                    hint="Nothing of it was applied. Fix the export and upload it again",
                )
            ]
        )
        return result
    previous = state.load_class_states()
    ids = EventIds(clock())
    found = diff(previous, read, ids, members_needing_emails(previous.values()))
    result.full_read = read.full
    if found.bad_records:
        result.bad_records = len(found.bad_records)
        state.record_problems(
            [
                Problem(
                    kind="bad_oneroster_record",
                    section_id=f"bundle:{name}",
                    message=f"OneRoster bundle {name} has a record we cannot read: {b}",
                    hint="Skipped; the rest of the bundle synced",
                )
                for b in found.bad_records
            ]
        )
    changes: list = list(found.changes)
    links = None
    if guardian_types and read.users_full:
        guardians, links = bundle_guardian_changes(read, state, guardian_types, guardian_students, ids)
        result.guardian_changes = len(guardians)
        changes += guardians
    result.changes = len(changes)
    result.published = publisher.publish(changes)
    state.save_class_states(found.states)  # only after every publish is confirmed
    if links is not None:
        state.save_guardian_links(links)  # also marks that a bundle has stated everyone's guardians
    return result


def bundle_guardian_changes(read, state, types, guardian_students, ids: EventIds):
    """A bulk users.csv: complete guardian changes for the students whose links differ from the
    saved ones (students linked now, and students linked before, who may now have nobody). The
    first time (nothing saved yet), every such student and every student we hold records for."""
    from rostersync.domain.sources.oneroster_guardians import changed_guardians, wanted_guardians

    saved = state.load_guardian_links()
    first = saved is None
    saved = saved or {}
    wanted = wanted_guardians(read.users, types)
    students = set(wanted) | set(saved)
    if first:
        students |= guardian_students()
    return changed_guardians(read.users, types, students, saved, ids.next(), ids.event_time, first, wanted)

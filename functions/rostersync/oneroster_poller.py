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
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Protocol

from rostersync.ports import ChangePublisher
from rostersync.privacy import redact, redact_value
from rostersync.rules import Problem
from rostersync.sources.oneroster_diff import ClassState, EventIds, RosterRead, diff, members_needing_emails

log = logging.getLogger(__name__)
OVERLAP = dt.timedelta(minutes=5)


@dataclass(frozen=True)
class OneRosterCursor:
    since: str  # ISO 8601 UTC: the next delta asks for dateLastModified after this
    last_full_read: str  # ISO 8601 UTC: when the last full read started


class OneRosterSource(Protocol):
    def read(self, since: str | None = None) -> RosterRead: ...


class OneRosterStateStore(Protocol):
    def load_oneroster_cursor(self) -> OneRosterCursor | None: ...

    def save_oneroster_cursor(self, cursor: OneRosterCursor) -> None: ...

    def load_class_states(self) -> dict[str, ClassState]: ...

    def save_class_states(self, states: Mapping[str, ClassState]) -> None: ...

    def save_oneroster_poll_status(self, status: dict) -> None: ...

    def record_problems(self, problems: Sequence[Problem]) -> None: ...


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
    since: str = ""
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)

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
    ):
        self._source = source
        self._state = state
        self._publisher = publisher
        self._full_read_every = full_read_every
        self._clock = clock

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
        full = (
            force_full
            or cursor is None
            or not cursor.last_full_read
            or now - _parse(cursor.last_full_read) >= self._full_read_every
        )
        since = None if full else cursor.since
        result.full_read, result.since = full, since or ""
        read = self._source.read(since)
        result.classes_read, result.users_read = len(read.classes), len(read.users)
        result.enrollments_read = len(read.enrollments)
        previous = self._state.load_class_states()
        found = diff(previous, read, EventIds(now), members_needing_emails(previous.values()))
        self.record_bad_records(found.bad_records, result)
        result.changes = len(found.changes)
        result.published = self._publisher.publish(found.changes)
        # Only now, with every change confirmed published, do the states and the cursor move.
        self._state.save_class_states(found.states)
        self._state.save_oneroster_cursor(
            OneRosterCursor(
                since=_iso(now - OVERLAP),
                last_full_read=_iso(now) if full else cursor.last_full_read,
            )
        )
        log.info("oneroster poll %s", redact_value({k: v for k, v in result.to_json().items() if k != "problems"}))

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
) -> BundleImportResult:
    """A CSV bundle uploaded at `uploaded_at` (ISO): diffed against the saved class states and published.

    Safe twice: a repeated delivery finds the states already saved and publishes nothing. Safe out
    of order: a bundle uploaded before the last imported one (`last_imported`) is skipped as stale,
    so an old export never undoes a newer one. A malformed bundle is rejected whole and recorded as
    a problem; nothing of it is published."""
    from rostersync.sources.oneroster_csv import InvalidBundle, read_bundle

    result = BundleImportResult(bundle=name)
    if last_imported and uploaded_at <= last_imported:
        result.outcome, result.reason = "stale", f"uploaded {uploaded_at}, not after the last import {last_imported}"
        log.warning("OneRoster bundle %s skipped: %s", name, result.reason)
        return result
    try:
        read = read_bundle(data)
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
    found = diff(previous, read, EventIds(clock()), members_needing_emails(previous.values()))
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
    result.changes = len(found.changes)
    result.published = publisher.publish(found.changes)
    state.save_class_states(found.states)  # only after every publish is confirmed
    return result

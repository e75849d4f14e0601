"""OneRoster records → roster changes, by comparing them with what we saw last time. Pure: no I/O.

OneRoster (REST 1.1/1.2 or a CSV bundle) has no event feed with previous attributes, only the
records as they are now. So we keep, per class, the last state we published (`ClassState`: title,
status and its enrollments with each user's role, `primary` flag and email) and derive the same
roster changes the Clever poller makes from the difference:

- a class we never saw → course wanted; a changed title → name changed; a changed primary teacher
  → primary teacher changed; an enrollment that appeared or went → teacher/student added/removed;
- a class or enrollment with `status` `tobedeleted` is a removal; so is, in a *full* read (REST
  full read or a bulk CSV bundle) known to be complete, a class or enrollment that is simply
  missing. A full read not known complete (`RosterRead.complete`) infers no removal. A *delta* read
  (`filter=dateLastModified>'...'`, a delta bundle) only says what changed, so a missing record
  there means "unchanged", never "removed": the scheduled full read catches what a delta missed.

Event ids: the applier orders changes by comparing `event_id` strings (rules.py); Clever's are
ObjectIds, 24 hex characters that begin with the creation time in seconds. OneRoster has no event
ids, so we make ObjectId-shaped ones the same way: 8 hex digits of the read's time in seconds, then
6 of microseconds, then a 10-digit sequence number within the read (`EventIds`). Ids therefore sort
by the time of the read and, within one read, in the order the changes were found, and they compare
sensibly with Clever ids of a district that moves from Clever to OneRoster. A repeated read (after a
crash, before the state was saved) makes the same changes with newer ids: the rules then find
everything already so and make no Classroom call, which is what makes a repeat harmless.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from rostersync.domain.changes import ChangeKind, Person, RosterChange, SectionSnapshot, normalize_email

SOURCE = "oneroster"
ACTIVE = "active"
TOBEDELETED = "tobedeleted"


class InvalidOneRosterRecord(ValueError):
    """A OneRoster record we cannot read; the text says which and why."""


class EventIds:
    """ObjectId-shaped, time-ordered ids for the changes of one read (see the module docstring)."""

    def __init__(self, now: dt.datetime):
        self._seconds = int(now.timestamp())
        self._micros = now.microsecond
        self._next = 0
        self.event_time = now.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")

    def next(self) -> str:
        self._next += 1
        return f"{self._seconds:08x}{self._micros:06x}{self._next:010x}"


@dataclass(frozen=True)
class Enrollment:
    user_id: str
    role: str  # "teacher" | "student"
    primary: bool = False
    email: str | None = None


@dataclass(frozen=True)
class ClassState:
    """A class as we last published it. `enrollments` is keyed by enrollment sourcedId."""

    class_id: str
    title: str
    status: str = ACTIVE
    enrollments: Mapping[str, Enrollment] = field(default_factory=dict)

    @property
    def deleted(self) -> bool:
        return self.status != ACTIVE

    def members(self, role: str) -> dict[str, str | None]:
        """user id → email, for one role (a user enrolled twice counts once)."""
        out: dict[str, str | None] = {}
        for key in sorted(self.enrollments):
            e = self.enrollments[key]
            if e.role == role:
                out.setdefault(e.user_id, e.email)
        return out

    def primary_teacher(self) -> str | None:
        """The teacher enrolled with primary=true (the lowest enrollment id if several); with none
        marked, the only teacher, else the first by enrollment id, so a class with teachers has an owner."""
        teachers = [(k, e) for k, e in sorted(self.enrollments.items()) if e.role == "teacher"]
        for _, e in teachers:
            if e.primary:
                return e.user_id
        return teachers[0][1].user_id if teachers else None

    def snapshot(self) -> SectionSnapshot:
        teachers = self.members("teacher")
        students = self.members("student")
        primary = self.primary_teacher()
        order = ([primary] if primary else []) + [t for t in teachers if t != primary]
        return SectionSnapshot(
            section_id=self.class_id,
            name=self.title,
            primary_teacher=Person(primary, teachers[primary]) if primary else None,
            teachers=tuple(Person(t, teachers[t]) for t in order),
            students=tuple(Person(s, e) for s, e in students.items()),
        )

    def to_json(self) -> dict:
        return {
            "class_id": self.class_id,
            "title": self.title,
            "status": self.status,
            "enrollments": {
                k: {"user_id": e.user_id, "role": e.role, "primary": e.primary, "email": e.email}
                for k, e in self.enrollments.items()
            },
        }

    @staticmethod
    def from_json(raw: Mapping[str, Any]) -> ClassState:
        return ClassState(
            class_id=str(raw["class_id"]),
            title=str(raw.get("title") or ""),
            status=str(raw.get("status") or ACTIVE),
            enrollments={
                str(k): Enrollment(str(v["user_id"]), str(v["role"]), bool(v.get("primary")), v.get("email"))
                for k, v in (raw.get("enrollments") or {}).items()
            },
        )


@dataclass
class RosterRead:
    """What one read of OneRoster returned, keyed by sourcedId. `full`: every record there is
    (a full REST read, a bulk bundle); otherwise only records modified since the last read.

    `complete`: the read is known to hold everything it asked for (see sources/oneroster.py). A
    full read that is not complete is diffed like a delta: nothing missing from it is removed."""

    classes: dict[str, Mapping[str, Any]] = field(default_factory=dict)
    users: dict[str, Mapping[str, Any]] = field(default_factory=dict)
    enrollments: dict[str, Mapping[str, Any]] = field(default_factory=dict)
    full: bool = True
    complete: bool = True
    incomplete_reasons: list[str] = field(default_factory=list)
    # What the administrator should know about how the provider was read: (kind, text), e.g.
    # ("delta_filter_refused", "..."). Each becomes a problem.
    notes: list[tuple[str, str]] = field(default_factory=list)
    pages: int = 0
    delta_refused: bool = False  # a delta asked for, refused, read in full instead
    delta_ignored: bool = False  # a delta asked for, answered with records older than its bound
    # Whether `users` holds every user (a full REST read, a bulk users.csv): guardians can then be
    # stated for every student at once.
    users_full: bool = False

    @property
    def removes_missing(self) -> bool:
        """Whether a record missing from this read is gone: only in a full read known complete."""
        return self.full and self.complete

    def size(self) -> int:
        return len(self.classes) + len(self.users) + len(self.enrollments)


def _ref(value: Any, where: str) -> str:
    """A OneRoster GUID reference: {"sourcedId": ...} in REST, a plain id in CSV."""
    if isinstance(value, Mapping):
        value = value.get("sourcedId")
    if not isinstance(value, str) or not value:
        raise InvalidOneRosterRecord(f"{where} has no sourcedId reference")
    return value


def _status(record: Mapping[str, Any]) -> str:
    status = str(record.get("status") or ACTIVE).strip().lower()
    # 1.0 called it "inactive"; anything that is not active is on its way out.
    return ACTIVE if status == ACTIVE else TOBEDELETED


def _primary(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.strip().lower() == "true")


def _role(value: Any) -> str | None:
    role = str(value or "").strip().lower()
    if role in ("teacher", "student"):
        return role
    return None  # aides, guardians, administrators, proctors: not Classroom members


@dataclass
class DiffResult:
    changes: list[RosterChange] = field(default_factory=list)
    # The states to save once the changes are published (class id → state).
    states: dict[str, ClassState] = field(default_factory=dict)
    bad_records: list[str] = field(default_factory=list)


def diff(
    previous: Mapping[str, ClassState],
    read: RosterRead,
    ids: EventIds,
    known_emails: Mapping[str, str | None] | None = None,
) -> DiffResult:
    """The changes from `previous` (every class we know) to what `read` says, and the new states.

    `known_emails`: user id → email for users the read does not carry (a delta read only carries
    changed users); unchanged members keep the email their state remembers."""
    result = DiffResult()
    emails: dict[str, str | None] = dict(known_emails or {})
    for user_id, user in read.users.items():
        emails[user_id] = normalize_email(user.get("email") if isinstance(user.get("email"), str) else None)

    # Enrollments grouped by class; a malformed one is reported and skipped, never the whole read.
    by_class: dict[str, dict[str, tuple[Enrollment, str]]] = {}
    for enr_id, record in read.enrollments.items():
        try:
            class_id = _ref(record.get("class") or record.get("classSourcedId"), f"enrollment {enr_id}")
            user_id = _ref(record.get("user") or record.get("userSourcedId"), f"enrollment {enr_id}")
        except InvalidOneRosterRecord as exc:
            result.bad_records.append(str(exc))
            continue
        role = _role(record.get("role"))
        if role is None:
            continue
        by_class.setdefault(class_id, {})[enr_id] = (
            Enrollment(user_id, role, _primary(record.get("primary"))),
            _status(record),
        )

    class_ids = set(read.classes) | set(by_class) | (set(previous) if read.removes_missing else set())
    for class_id in sorted(class_ids):
        before = previous.get(class_id)
        record = read.classes.get(class_id)
        if record is None and before is None:
            continue  # enrollments of a class we never saw and that this read does not carry
        if record is not None:
            title = record.get("title")
            if not isinstance(title, str):
                result.bad_records.append(f"class {class_id} has no title")
                continue
            status = _status(record)
        elif read.removes_missing:
            title, status = before.title, TOBEDELETED  # missing from a complete full read: gone
        else:
            title, status = before.title, before.status

        if read.removes_missing:
            enrollments: dict[str, Enrollment] = {}
        else:
            enrollments = dict(before.enrollments) if before else {}
        for enr_id, (enrollment, enr_status) in by_class.get(class_id, {}).items():
            if enr_status == ACTIVE:
                enrollments[enr_id] = enrollment
            else:
                enrollments.pop(enr_id, None)
        # Every member carries the email known now: from this read, else from the state.
        enrollments = {k: replace(e, email=emails.get(e.user_id, e.email)) for k, e in enrollments.items()}
        after = ClassState(class_id, title, status, enrollments)
        found = _changes(before, after, ids)
        if found or before != after:
            result.states[class_id] = after
        result.changes += found
    return result


def _changes(before: ClassState | None, after: ClassState, ids: EventIds) -> list[RosterChange]:
    snap = after.snapshot()

    def change(kind: ChangeKind, person: Person | None = None, name: str | None = None) -> RosterChange:
        return RosterChange(kind, after.class_id, ids.next(), ids.event_time, snap, person, name, source=SOURCE)

    if after.deleted:
        if before is None or before.deleted:
            return []
        return [change(ChangeKind.SECTION_DELETED)]
    if before is None or before.deleted:
        return [change(ChangeKind.COURSE_WANTED)]

    out: list[RosterChange] = []
    if after.title != before.title:
        out.append(change(ChangeKind.NAME_CHANGED, name=after.title))
    old_teachers, new_teachers = before.members("teacher"), after.members("teacher")
    old_students, new_students = before.members("student"), after.members("student")
    # A changed email moves the member to another Google account: the whole class converges on
    # the class as it is now, as the Clever poller does for users.updated.
    moved = any(
        old.get(uid) != email
        for old, new in ((old_teachers, new_teachers), (old_students, new_students))
        for uid, email in new.items()
        if uid in old
    )
    if moved:
        out.append(change(ChangeKind.COURSE_WANTED))
    # Additions before the owner change (the new owner must be a teacher first), removals last.
    for uid in sorted(set(new_teachers) - set(old_teachers)):
        out.append(change(ChangeKind.TEACHER_ADDED, Person(uid, new_teachers[uid])))
    primary = after.primary_teacher()
    if primary and primary != before.primary_teacher():
        out.append(change(ChangeKind.PRIMARY_TEACHER_CHANGED, Person(primary, new_teachers.get(primary))))
    for uid in sorted(set(new_students) - set(old_students)):
        out.append(change(ChangeKind.STUDENT_ADDED, Person(uid, new_students[uid])))
    for uid in sorted(set(old_students) - set(new_students)):
        out.append(change(ChangeKind.STUDENT_REMOVED, Person(uid, old_students[uid])))
    for uid in sorted(set(old_teachers) - set(new_teachers)):
        out.append(change(ChangeKind.TEACHER_REMOVED, Person(uid, old_teachers[uid])))
    return out


def referenced_users(read: RosterRead) -> set[str]:
    """The users that the read's active teacher and student enrollments name."""
    out: set[str] = set()
    for record in read.enrollments.values():
        if _status(record) != ACTIVE or _role(record.get("role")) is None:
            continue
        try:
            out.add(_ref(record.get("user") or record.get("userSourcedId"), "enrollment"))
        except InvalidOneRosterRecord:
            continue  # reported by diff
    return out


def members_needing_emails(previous: Iterable[ClassState]) -> dict[str, str | None]:
    """user id → email as the saved states remember them (for a delta read's unchanged users)."""
    out: dict[str, str | None] = {}
    for state in previous:
        for e in state.enrollments.values():
            out.setdefault(e.user_id, e.email)
    return out


# The provider's own problems and the poll cursor: written by the OneRoster poller (app/) and kept by
# its Firestore adapter (adapters/oneroster_store.py), so they live here, below both.
PROVIDER = "oneroster:provider"  # the section_id of problems about the provider itself


@dataclass(frozen=True)
class OneRosterCursor:
    since: str  # ISO 8601 UTC: the next delta asks for dateLastModified after this
    last_full_read: str  # ISO 8601 UTC: when the last complete full read started
    # ISO 8601 UTC: when a full read not known complete was last tried ("" once one completes).
    # Deltas run meanwhile (so `tobedeleted` records still arrive); the full read is tried again
    # after FULL_READ_RETRY.
    last_incomplete_full_read: str = ""

"""Roster change events: what the poller publishes and the applier consumes.

One message carries one or more changes to one section (a course wanted, a rename, a member added
or removed, ...). Every message also carries the section as Clever last described it (`section`), so
the applier can create a missing course from any change, and each change its `event_id`, the id of
the Clever event it came from. Messages are bounded by bytes (MAX_MESSAGE_BYTES, one constant for
the publisher and the applier; see pack_changes): a section's snapshot travels once per message.
Clever event ids are ObjectIds: 24 hex characters that sort by creation time, so comparing
them as strings orders changes in time. The applier uses that to ignore stale changes.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

SCHEMA_VERSION = 1
# A message may carry several changes to one section, in order (schema 2): fewer messages,
# and one Firestore read and write for all of them. Schema 2 repeats the snapshot in every change;
# it is still read (messages in flight across a deploy) but no longer written.
BATCH_SCHEMA_VERSION = 2
# Schema 3: the section's snapshot once, at the top (that of the newest change in the message);
# a change carries its own only when it is a course_wanted whose snapshot differs (see pack_changes).
SHARED_SNAPSHOT_SCHEMA_VERSION = 3
# Work per message, not size: one message is one applier invocation (its Classroom calls and one
# Firestore commit), so even small changes are not packed past this many.
MAX_CHANGES_PER_MESSAGE = 100
# The one size bound, used by the publisher (never sends more) and the applier (refuses more).
# Pub/Sub takes 10 MB a message; we stay well under it. A snapshot costs about 75 bytes a member,
# so a single course_wanted of a 50,000-member section still fits.
MAX_MESSAGE_BYTES = 4_000_000
# Where packing several changes stops: a message of this size is about a 12,000-member snapshot
# plus its changes. Only a single change larger than this goes alone, up to MAX_MESSAGE_BYTES.
PACK_TARGET_BYTES = MAX_MESSAGE_BYTES // 4


class ChangeKind(StrEnum):
    COURSE_WANTED = "course_wanted"
    NAME_CHANGED = "name_changed"
    PRIMARY_TEACHER_CHANGED = "primary_teacher_changed"
    TEACHER_ADDED = "teacher_added"
    TEACHER_REMOVED = "teacher_removed"
    STUDENT_ADDED = "student_added"
    STUDENT_REMOVED = "student_removed"
    SECTION_DELETED = "section_deleted"


MEMBER_KINDS = {
    ChangeKind.TEACHER_ADDED: ("teacher", True),
    ChangeKind.TEACHER_REMOVED: ("teacher", False),
    ChangeKind.STUDENT_ADDED: ("student", True),
    ChangeKind.STUDENT_REMOVED: ("student", False),
}


class InvalidChange(ValueError):
    """A message that is not a roster change we can apply; the text says what is wrong."""


@dataclass(frozen=True)
class Person:
    """A Clever user, with the Google email we match them by (None when Clever has none)."""

    clever_id: str
    email: str | None

    @staticmethod
    def from_json(raw: Any, where: str) -> Person:
        if not isinstance(raw, dict) or not isinstance(raw.get("clever_id"), str) or not raw["clever_id"]:
            raise InvalidChange(f"{where} must be an object with a clever_id")
        email = raw.get("email")
        if email is not None and not isinstance(email, str):
            raise InvalidChange(f"{where}.email must be a string or null")
        return Person(raw["clever_id"], normalize_email(email))


def normalize_email(email: str | None) -> str | None:
    """Google matches addresses case-insensitively; we store them lower-cased and trimmed."""
    if email is None:
        return None
    email = email.strip().lower()
    return email or None


@dataclass(frozen=True)
class SectionSnapshot:
    """The section as Clever described it in the event the change came from."""

    section_id: str
    name: str
    primary_teacher: Person | None
    teachers: tuple[Person, ...] = ()
    students: tuple[Person, ...] = ()
    period: str | None = None
    subject: str | None = None
    term_id: str | None = None
    school: str | None = None
    sis_id: str | None = None

    @staticmethod
    def from_json(raw: Any) -> SectionSnapshot:
        if not isinstance(raw, dict):
            raise InvalidChange("section must be an object")
        section_id, name = raw.get("section_id"), raw.get("name")
        if not isinstance(section_id, str) or not section_id:
            raise InvalidChange("section.section_id is missing")
        if not isinstance(name, str):
            raise InvalidChange("section.name must be a string")
        people = {}
        for key in ("teachers", "students"):
            value = raw.get(key, [])
            if not isinstance(value, list):
                raise InvalidChange(f"section.{key} must be a list")
            people[key] = tuple(Person.from_json(p, f"section.{key}[{i}]") for i, p in enumerate(value))
        primary = raw.get("primary_teacher")
        optional = {}
        for key in ("period", "subject", "term_id", "school", "sis_id"):
            value = raw.get(key)
            if value is not None and not isinstance(value, str):
                raise InvalidChange(f"section.{key} must be a string or null")
            optional[key] = value
        return SectionSnapshot(
            section_id=section_id,
            name=name,
            primary_teacher=None if primary is None else Person.from_json(primary, "section.primary_teacher"),
            teachers=people["teachers"],
            students=people["students"],
            **optional,
        )


@dataclass(frozen=True)
class RosterChange:
    kind: ChangeKind
    section_id: str
    event_id: str
    event_time: str
    section: SectionSnapshot
    # The member added or removed, or the new primary teacher.
    person: Person | None = None
    # The new name, for NAME_CHANGED.
    name: str | None = None
    source: str = "clever"
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def ordering_key(self) -> str:
        return self.section_id

    @property
    def member_role(self) -> str | None:
        entry = MEMBER_KINDS.get(self.kind)
        return entry[0] if entry else None

    def describe(self) -> str:
        who = f" {self.person.clever_id}" if self.person else ""
        return f"{self.kind.value}{who} in section {self.section_id} (event {self.event_id})"

    def to_json(self) -> bytes:
        body = asdict(self)
        body["kind"] = self.kind.value
        body["schema"] = SCHEMA_VERSION
        return json.dumps(body, separators=(",", ":"), sort_keys=True).encode()

    def attributes(self) -> dict[str, str]:
        """Pub/Sub attributes: readable in the console and in dead letters without decoding."""
        return {"section_id": self.section_id, "event_id": self.event_id, "kind": self.kind.value}

    @staticmethod
    def from_json(data: bytes | str) -> RosterChange:
        if isinstance(data, bytes) and len(data) > MAX_MESSAGE_BYTES:
            raise InvalidChange(f"message of {len(data)} bytes is larger than {MAX_MESSAGE_BYTES}")
        try:
            raw = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            raise InvalidChange(f"message is not JSON: {type(exc).__name__}") from exc
        return RosterChange.from_dict(raw)

    @staticmethod
    def from_dict(raw: Any, shared_section: SectionSnapshot | None = None) -> RosterChange:
        """One change as JSON gives it; `shared_section` stands for its `section` when it has none
        (a change in a schema 3 message)."""
        if not isinstance(raw, dict):
            raise InvalidChange("message must be a JSON object")
        if type(raw.get("schema")) is not int or raw["schema"] != SCHEMA_VERSION:
            raise InvalidChange(f"unknown schema version {raw.get('schema')!r}")
        try:
            kind = ChangeKind(raw.get("kind"))
        except ValueError as exc:
            raise InvalidChange(f"unknown change kind {raw.get('kind')!r}") from exc
        for key in ("section_id", "event_id", "event_time"):
            if not isinstance(raw.get(key), str) or (key != "event_time" and not raw[key]):
                raise InvalidChange(f"{key} is missing")
        if shared_section is not None and raw.get("section") is None:
            section = shared_section
        else:
            section = SectionSnapshot.from_json(raw.get("section"))
        if section.section_id != raw["section_id"]:
            raise InvalidChange("section.section_id does not match section_id")
        person = raw.get("person")
        person = None if person is None else Person.from_json(person, "person")
        if (kind in MEMBER_KINDS or kind == ChangeKind.PRIMARY_TEACHER_CHANGED) and person is None:
            raise InvalidChange(f"{kind.value} needs a person")
        name = raw.get("name")
        if kind == ChangeKind.NAME_CHANGED and not isinstance(name, str):
            raise InvalidChange("name_changed needs a name")
        extra = raw.get("extra") or {}
        if not isinstance(extra, dict):
            raise InvalidChange("extra must be an object")
        return RosterChange(
            kind=kind,
            section_id=raw["section_id"],
            event_id=raw["event_id"],
            event_time=raw["event_time"],
            section=section,
            person=person,
            name=name,
            source=str(raw.get("source") or "clever"),
            extra={str(k): str(v) for k, v in extra.items()},
        )


def _compact(body: Any) -> bytes:
    return json.dumps(body, separators=(",", ":"), sort_keys=True).encode()


def _person_body(person: Person | None) -> dict | None:
    return None if person is None else {"clever_id": person.clever_id, "email": person.email}


def _change_body(change: RosterChange, with_section: bool) -> dict:
    """change.to_json() as a dict, built by hand (asdict would copy the whole snapshot each time)."""
    body = {
        "schema": SCHEMA_VERSION,
        "kind": change.kind.value,
        "section_id": change.section_id,
        "event_id": change.event_id,
        "event_time": change.event_time,
        "person": _person_body(change.person),
        "name": change.name,
        "source": change.source,
        "extra": dict(change.extra),
    }
    if with_section:
        body["section"] = _snapshot_body(change.section)
    return body


def _snapshot_body(section: SectionSnapshot) -> dict:
    return {
        "section_id": section.section_id,
        "name": section.name,
        "primary_teacher": _person_body(section.primary_teacher),
        "teachers": [_person_body(p) for p in section.teachers],
        "students": [_person_body(p) for p in section.students],
        "period": section.period,
        "subject": section.subject,
        "term_id": section.term_id,
        "school": section.school,
        "sis_id": section.sis_id,
    }


def encode_message(changes: list[RosterChange]) -> bytes:
    """One message for one or more changes to the same section, in the order they apply.

    Several changes go as schema 3: the snapshot of the newest change once, at the top, and each
    change without its own. That is safe because a snapshot serves two purposes only: (1) a
    course_wanted's content, the whole section to converge on, so a course_wanted whose snapshot is
    not the shared one keeps its own; (2) creating a missing course, and for that the newest
    snapshot is as good as an older one: the changes after it in the message then apply in order,
    each one only moving the course toward the newest state, which is where it ends either way."""
    if len(changes) == 1:
        return changes[0].to_json()
    if len({c.section_id for c in changes}) != 1:
        raise ValueError("a message carries changes to one section only")
    if not isinstance(changes[0], RosterChange):
        # Guardian changes (guardians.py) carry no snapshot: a plain batch of them.
        items = [json.loads(c.to_json()) for c in changes]
        return _compact({"schema": BATCH_SCHEMA_VERSION, "section_id": changes[0].section_id, "changes": items})
    shared = changes[-1].section
    body = {
        "schema": SHARED_SNAPSHOT_SCHEMA_VERSION,
        "section_id": changes[0].section_id,
        "section": _snapshot_body(shared),
        "changes": [_change_body(c, c.kind == ChangeKind.COURSE_WANTED and c.section != shared) for c in changes],
    }
    return _compact(body)


def decode_message(data: bytes | str, max_bytes: int | None = MAX_MESSAGE_BYTES) -> list[RosterChange]:
    """The changes a message carries; InvalidChange if any of them is not one we can apply.
    max_bytes None only to split an old oversized message (split_message), never to apply one."""
    size = len(data) if isinstance(data, bytes) else len(data.encode("utf-8", errors="replace"))
    if max_bytes is not None and size > max_bytes:
        raise InvalidChange(f"message of {size} bytes is larger than {max_bytes}")
    try:
        raw = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise InvalidChange(f"message is not JSON: {type(exc).__name__}") from exc
    if isinstance(raw, dict) and raw.get("schema") in (BATCH_SCHEMA_VERSION, SHARED_SNAPSHOT_SCHEMA_VERSION):
        items = raw.get("changes")
        if not isinstance(items, list) or not items:
            raise InvalidChange("a batch message needs a non-empty list of changes")
        shared = None
        if raw["schema"] == SHARED_SNAPSHOT_SCHEMA_VERSION:
            shared = SectionSnapshot.from_json(raw.get("section"))
            if shared.section_id != raw.get("section_id"):
                raise InvalidChange("section.section_id does not match section_id")
        changes = [RosterChange.from_dict(item, shared) for item in items]
        if {c.section_id for c in changes} != {raw.get("section_id")}:
            raise InvalidChange("every change in a batch message must be for its section_id")
        return changes
    return [RosterChange.from_dict(raw)]


def message_attributes(changes: list[RosterChange]) -> dict[str, str]:
    """Pub/Sub attributes: readable in the console and in dead letters without decoding."""
    if len(changes) == 1:
        return changes[0].attributes()
    return {
        "section_id": changes[0].section_id,
        "event_id": changes[-1].event_id,
        "kind": "batch",
        "changes": str(len(changes)),
    }


class ChangeTooLarge(ValueError):
    """One change whose message alone is over MAX_MESSAGE_BYTES (a course_wanted of a section of
    some 50,000 members): it cannot be published; the caller keeps it as a dead letter."""

    def __init__(self, change: RosterChange, size: int):
        super().__init__(f"{change.describe()} is {size} bytes as a message, over {MAX_MESSAGE_BYTES}")
        self.change = change
        self.size = size


@dataclass(frozen=True)
class PackedMessage:
    data: bytes
    ordering_key: str
    attributes: dict[str, str]
    changes: list[RosterChange]


def pack_changes(
    changes: list[RosterChange],
    target_bytes: int = PACK_TARGET_BYTES,
    max_bytes: int = MAX_MESSAGE_BYTES,
    max_changes: int = MAX_CHANGES_PER_MESSAGE,
) -> tuple[list[PackedMessage], list[ChangeTooLarge]]:
    """Packs changes into messages, one section each, in their order within a section (each
    section is its own ordering key; the order across sections does not matter).

    Consecutive changes of a section share a message while its encoded size stays within
    `target_bytes` (sized pessimistically: the largest snapshot of the group plus every change, a
    course_wanted with its own snapshot) and they number at most `max_changes`. Every message is
    encoded and measured; one over `max_bytes` is halved until it fits, so none is ever larger. A
    single change over `max_bytes` is returned apart, never published."""
    by_section: dict[str, list[RosterChange]] = {}
    by_student: dict[str, list] = {}
    for change in changes:
        if not isinstance(change, RosterChange):
            # A guardian change (guardians.py): small, no snapshot; packed per student below.
            by_student.setdefault(change.section_id, []).append(change)
            continue
        by_section.setdefault(change.section_id, []).append(change)
    snapshot_sizes: dict[int, tuple[SectionSnapshot, int]] = {}

    def snapshot_size(section: SectionSnapshot) -> int:
        # Estimated, not encoded: a poll of 1,000 events on a 3,000-member section would encode
        # 1,000 snapshots (270 MB of JSON) only to measure them. The estimate is an upper bound
        # for ASCII text; escapes can make the real size larger, which the measuring of each
        # encoded message (emit) catches.
        known = snapshot_sizes.get(id(section))
        if known is None or known[0] is not section:
            people = (section.primary_teacher, *section.teachers, *section.students)
            texts = (section.section_id, section.name, section.period, section.subject, section.term_id, section.school)
            size = 300 + sum(len(v or "") for v in (*texts, section.sis_id))
            size += sum(40 + len(p.clever_id) + len(p.email or "null") for p in people if p is not None)
            known = (section, size)
            snapshot_sizes[id(section)] = known
        return known[1]

    groups: list[list[RosterChange]] = []
    for run in by_section.values():
        group: list[RosterChange] = []
        items = largest = 0
        for change in run:
            snap = snapshot_size(change.section)
            item = len(_compact(_change_body(change, False))) + 1
            if change.kind == ChangeKind.COURSE_WANTED:
                item += snap + 11  # ,"section":
            if group and (len(group) >= max_changes or 200 + items + item + max(largest, snap) > target_bytes):
                groups.append(group)
                group, items, largest = [], 0, 0
            group.append(change)
            items += item
            largest = max(largest, snap)
        if group:
            groups.append(group)

    messages: list[PackedMessage] = []
    too_large: list[ChangeTooLarge] = []

    def emit(group: list[RosterChange]) -> None:
        data = encode_message(group)
        if len(data) <= max_bytes:
            messages.append(PackedMessage(data, group[0].ordering_key, message_attributes(group), group))
        elif len(group) == 1:
            too_large.append(ChangeTooLarge(group[0], len(data)))
        else:
            half = len(group) // 2
            emit(group[:half])
            emit(group[half:])

    for run in by_student.values():
        groups += [run[n : n + max_changes] for n in range(0, len(run), max_changes)]
    for group in groups:
        emit(group)
    return messages, too_large


def split_message(data: bytes) -> list[PackedMessage]:
    """A message of ours too large to apply (one written before messages were bounded, kept as a
    dead letter) as bounded messages with the same changes in the same order. InvalidChange if
    it is not ours; ChangeTooLarge if one change alone is too large."""
    messages, too_large = pack_changes(decode_message(data, max_bytes=None))
    if too_large:
        raise too_large[0]
    return messages

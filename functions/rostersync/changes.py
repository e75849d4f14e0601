"""Roster change events: what the poller publishes and the applier consumes.

One message carries one change to one section (a course wanted, a rename, a member added or
removed, ...). Every message also carries the section as Clever last described it (`section`), so
the applier can create a missing course from any change, and `event_id`, the id of the Clever event
it came from. Clever event ids are ObjectIds: 24 hex characters that sort by creation time, so
comparing them as strings orders changes in time. The applier uses that to ignore stale changes.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

SCHEMA_VERSION = 1
# A message may carry several changes to one section, in order (schema 2): fewer messages,
# and one Firestore read and write for all of them.
BATCH_SCHEMA_VERSION = 2
MAX_CHANGES_PER_MESSAGE = 100
# Pub/Sub takes 10 MB; a section snapshot with 1,000 members is about 100 KB, so anything near
# this is not a roster change we produced.
MAX_MESSAGE_BYTES = 1_000_000


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


def encode_message(changes: list[RosterChange]) -> bytes:
    """One message for one or more changes to the same section, in the order they apply."""
    if len(changes) == 1:
        return changes[0].to_json()
    if len({c.section_id for c in changes}) != 1:
        raise ValueError("a message carries changes to one section only")
    body = {
        "schema": BATCH_SCHEMA_VERSION,
        "section_id": changes[0].section_id,
        "changes": [json.loads(c.to_json()) for c in changes],
    }
    return json.dumps(body, separators=(",", ":"), sort_keys=True).encode()


def decode_message(data: bytes | str) -> list[RosterChange]:
    """The changes a message carries; InvalidChange if any of them is not one we can apply."""
    if isinstance(data, bytes) and len(data) > MAX_MESSAGE_BYTES:
        raise InvalidChange(f"message of {len(data)} bytes is larger than {MAX_MESSAGE_BYTES}")
    try:
        raw = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise InvalidChange(f"message is not JSON: {type(exc).__name__}") from exc
    if isinstance(raw, dict) and raw.get("schema") == BATCH_SCHEMA_VERSION:
        items = raw.get("changes")
        if not isinstance(items, list) or not items:
            raise InvalidChange("a batch message needs a non-empty list of changes")
        changes = [RosterChange.from_json(json.dumps(item)) for item in items]
        if {c.section_id for c in changes} != {raw.get("section_id")}:
            raise InvalidChange("every change in a batch message must be for its section_id")
        return changes
    return [RosterChange.from_json(data)]


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

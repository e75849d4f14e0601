"""Clever events → roster changes. Pure: no I/O, so it is unit-tested on recorded payloads.

A `sections.updated` event carries the section after the change in `data.object` and, in
`data.previous_attributes`, only the keys that changed, with arrays sent whole. Comparing the two
gives the enrollment changes. Anything that is not a section event is not ours to apply: it yields
no change (the poller counts it as skipped).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from rostersync.domain.changes import ChangeKind, Person, RosterChange, SectionSnapshot


class InvalidCleverEvent(ValueError):
    """A Clever event or section we cannot read; the text says which and why."""


class UserDirectory(Protocol):
    def emails(self, clever_ids: Iterable[str]) -> Mapping[str, str | None]:
        """Google email for each Clever user id (None when Clever has no email or no such user)."""


def _ids(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise InvalidCleverEvent(f"{where} must be a list of user ids")
    seen: dict[str, None] = {}
    for v in value:
        seen.setdefault(v, None)  # keep Clever's order, drop repeats
    return list(seen)


def section_user_ids(section: Mapping[str, Any]) -> set[str]:
    ids = set(_ids(section.get("teachers"), "section.teachers")) | set(
        _ids(section.get("students"), "section.students")
    )
    if isinstance(section.get("teacher"), str) and section["teacher"]:
        ids.add(section["teacher"])
    return ids


def event_user_ids(event: Mapping[str, Any]) -> set[str]:
    """Every user an event's changes may name, so the poller can resolve them in one go."""
    data = event.get("data") if isinstance(event, Mapping) else None
    if not isinstance(data, Mapping) or not str(event.get("type", "")).startswith("sections."):
        return set()
    ids: set[str] = set()
    for part in (data.get("object"), data.get("previous_attributes")):
        if isinstance(part, Mapping):
            try:
                ids |= section_user_ids(part)
            except InvalidCleverEvent:
                pass  # reported when the event itself is normalized
    return ids


def snapshot_from_section(section: Mapping[str, Any], emails: Mapping[str, str | None]) -> SectionSnapshot:
    if not isinstance(section, Mapping):
        raise InvalidCleverEvent("section is not an object")
    section_id = section.get("id")
    if not isinstance(section_id, str) or not section_id:
        raise InvalidCleverEvent("section has no id")
    name = section.get("name")
    if not isinstance(name, str) or not name.strip():
        raise InvalidCleverEvent(f"section {section_id} has no name")
    teachers = _ids(section.get("teachers"), f"section {section_id} teachers")
    primary_id = section.get("teacher")
    if primary_id is not None and (not isinstance(primary_id, str) or not primary_id):
        raise InvalidCleverEvent(f"section {section_id} teacher must be a user id")
    if primary_id is None and teachers:
        primary_id = teachers[0]
    if primary_id and primary_id not in teachers:
        teachers.insert(0, primary_id)

    def person(cid: str) -> Person:
        return Person(cid, emails.get(cid))

    def text(key: str) -> str | None:
        value = section.get(key)
        return None if value is None else str(value)

    return SectionSnapshot(
        section_id=section_id,
        name=name.strip(),
        primary_teacher=person(primary_id) if primary_id else None,
        teachers=tuple(person(t) for t in teachers),
        students=tuple(person(s) for s in _ids(section.get("students"), f"section {section_id} students")),
        period=text("period"),
        subject=text("subject"),
        term_id=text("term_id"),
        school=text("school"),
        sis_id=text("sis_id"),
    )


def course_wanted(
    section: Mapping[str, Any], event_id: str, event_time: str, emails: Mapping[str, str | None]
) -> RosterChange:
    """The whole section as a change: used by the bootstrap and for `sections.created`."""
    snap = snapshot_from_section(section, emails)
    return RosterChange(ChangeKind.COURSE_WANTED, snap.section_id, event_id, event_time, snap)


def changes_from_event(event: Mapping[str, Any], emails: Mapping[str, str | None]) -> list[RosterChange]:
    """The roster changes one Clever event stands for, in the order they must be applied."""
    if not isinstance(event, Mapping):
        raise InvalidCleverEvent("event is not an object")
    event_id, event_type = event.get("id"), event.get("type")
    if not isinstance(event_id, str) or not event_id:
        raise InvalidCleverEvent("event has no id")
    if not isinstance(event_type, str) or "." not in event_type:
        raise InvalidCleverEvent(f"event {event_id} has no type")
    record_type, _, action = event_type.partition(".")
    if record_type != "sections":
        return []
    data = event.get("data")
    if not isinstance(data, Mapping) or not isinstance(data.get("object"), Mapping):
        raise InvalidCleverEvent(f"event {event_id} ({event_type}) has no data.object")
    created = event.get("created")
    event_time = created if isinstance(created, str) else ""
    obj = data["object"]
    snap = snapshot_from_section(obj, emails)

    def change(kind: ChangeKind, person: Person | None = None, name: str | None = None) -> RosterChange:
        return RosterChange(kind, snap.section_id, event_id, event_time, snap, person=person, name=name)

    if action == "created":
        return [change(ChangeKind.COURSE_WANTED)]
    if action == "deleted":
        return [change(ChangeKind.SECTION_DELETED)]
    if action != "updated":
        raise InvalidCleverEvent(f"event {event_id} has unknown type {event_type}")

    previous = data.get("previous_attributes")
    if previous is None:
        # An update that does not say what changed: converge on the whole section instead.
        return [change(ChangeKind.COURSE_WANTED)]
    if not isinstance(previous, Mapping):
        raise InvalidCleverEvent(f"event {event_id} previous_attributes is not an object")

    def member(cid: str) -> Person:
        return Person(cid, emails.get(cid))

    out: list[RosterChange] = []
    now_teachers = [p.clever_id for p in snap.teachers]
    if "teachers" in previous:
        before = _ids(previous["teachers"], f"event {event_id} previous teachers")
        out += [change(ChangeKind.TEACHER_ADDED, member(t)) for t in now_teachers if t not in before]
    if "teacher" in previous and snap.primary_teacher and previous["teacher"] != snap.primary_teacher.clever_id:
        # After the adds (the new owner must already teach the course) and before the removes
        # (Classroom will not remove the current owner).
        out.append(change(ChangeKind.PRIMARY_TEACHER_CHANGED, snap.primary_teacher))
    if "teachers" in previous:
        out += [change(ChangeKind.TEACHER_REMOVED, member(t)) for t in before if t not in now_teachers]
    if "students" in previous:
        before_students = _ids(previous["students"], f"event {event_id} previous students")
        now_students = [p.clever_id for p in snap.students]
        out += [change(ChangeKind.STUDENT_ADDED, member(s)) for s in now_students if s not in before_students]
        out += [change(ChangeKind.STUDENT_REMOVED, member(s)) for s in before_students if s not in now_students]
    if "name" in previous and previous["name"] != obj.get("name"):
        out.append(change(ChangeKind.NAME_CHANGED, name=snap.name))
    return out

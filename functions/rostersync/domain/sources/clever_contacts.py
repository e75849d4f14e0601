"""Clever contacts -> guardian changes. Pure: no I/O.

A Clever v3.0 contact is a user with the `contact` role; `roles.contact.student_relationships`
lists `{student, relationship, type}` (v3.0.yml definitions Contact and StudentRelationship). A
relationship makes a guardian when its `type` is one of GUARDIAN_RELATIONSHIP_TYPES. Contact
changes arrive as `users.created/updated/deleted`; an update's `previous_attributes` holds the old
`email` and, arrays being sent whole, the old `roles.contact.student_relationships`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from rostersync.domain.changes import Person
from rostersync.domain.guardians import GuardianChange, contact_person, qualifying

_MISSING = object()


def _contact_role(user: Any) -> Mapping[str, Any] | None:
    roles = user.get("roles") if isinstance(user, Mapping) else None
    role = roles.get("contact") if isinstance(roles, Mapping) else None
    return role if isinstance(role, Mapping) else None


def _students(relationships: Any, types: tuple[str, ...]) -> list[str]:
    if not isinstance(relationships, list):
        return []
    out: dict[str, None] = {}
    for rel in relationships:
        if qualifying(rel, types) and isinstance(rel.get("student"), str) and rel["student"]:
            out.setdefault(rel["student"], None)
    return list(out)


def contact_students(user: Any, types: tuple[str, ...]) -> list[str]:
    """The students this contact is a qualifying guardian of (empty for anyone not a contact)."""
    role = _contact_role(user)
    return _students(role.get("student_relationships"), types) if role else []


def is_contact_event(event: Any) -> bool:
    if not isinstance(event, Mapping) or not str(event.get("type", "")).startswith("users."):
        return False
    data = event.get("data")
    if not isinstance(data, Mapping):
        return False
    previous = data.get("previous_attributes")
    was_contact = (
        isinstance(previous, Mapping)
        and isinstance(previous.get("roles"), Mapping)
        and ("contact" in previous["roles"])
    )
    return _contact_role(data.get("object")) is not None or was_contact


def _previous_students(data: Mapping[str, Any], now: list[str], types: tuple[str, ...]) -> list[str]:
    previous = data.get("previous_attributes")
    roles = previous.get("roles") if isinstance(previous, Mapping) else None
    role = roles.get("contact", _MISSING) if isinstance(roles, Mapping) else _MISSING
    if role is _MISSING:
        return now
    if not isinstance(role, Mapping):
        return []  # not a contact before
    if "student_relationships" not in role:
        return now
    return _students(role.get("student_relationships"), types)


def event_student_ids(event: Any, types: tuple[str, ...]) -> set[str]:
    """Every student a contact event may concern, so the poller resolves their emails in one go."""
    if not is_contact_event(event):
        return set()
    data = event["data"]
    now = contact_students(data.get("object"), types)
    return set(now) | set(_previous_students(data, now, types))


def is_student_deletion(event: Any) -> bool:
    """`users.deleted` for a student: their guardians end with them."""
    if not isinstance(event, Mapping) or event.get("type") != "users.deleted":
        return False
    data = event.get("data")
    user = data.get("object") if isinstance(data, Mapping) else None
    roles = user.get("roles") if isinstance(user, Mapping) else None
    return isinstance(roles, Mapping) and "student" in roles and isinstance(user.get("id"), str) and bool(user["id"])


def student_deleted_change(event: Mapping[str, Any], student_emails: Mapping[str, str | None]) -> GuardianChange:
    """A deleted student's guardian change: complete and naming nobody, so every guardian the sync
    invited ends (pending invitations withdrawn, accepted guardians removed) exactly as when the
    relationships end, and guardians added by hand stay. Its kind is a removal: the brake counts it.
    Safe twice and late: records ended by it carry its event id, so a redelivery finds nothing to do
    and an older invitation for the student arriving after it is skipped as older."""
    user = event["data"]["object"]
    email = user.get("email")
    person = contact_person(user["id"], email) if isinstance(email, str) else Person(user["id"], None)
    if person.email is None:
        person = Person(user["id"], student_emails.get(user["id"]))
    created = event.get("created")
    return GuardianChange(person, str(event["id"]), created if isinstance(created, str) else "", complete=True)


def guardian_changes_from_event(
    event: Mapping[str, Any], student_emails: Mapping[str, str | None], types: tuple[str, ...]
) -> list[GuardianChange]:
    """The guardian changes one `users.*` event about a contact (one per student), or about a
    deleted student, stands for."""
    if is_student_deletion(event) and event.get("id"):
        out = [student_deleted_change(event, student_emails)]
        if is_contact_event(event):  # a student who was also a contact of other students
            out += _contact_changes(event, student_emails, types)
        return out
    return _contact_changes(event, student_emails, types)


def _contact_changes(
    event: Mapping[str, Any], student_emails: Mapping[str, str | None], types: tuple[str, ...]
) -> list[GuardianChange]:
    if not is_contact_event(event):
        return []
    event_id, action = str(event.get("id") or ""), str(event.get("type")).partition(".")[2]
    data = event["data"]
    user = data.get("object")
    if not event_id or not isinstance(user, Mapping) or not isinstance(user.get("id"), str):
        return []
    created = event.get("created")
    when = created if isinstance(created, str) else ""
    contact = contact_person(user["id"], user.get("email"))
    now = [] if action == "deleted" else contact_students(user, types)
    before = contact_students(user, types) if action == "deleted" else _previous_students(data, now, types)
    if action == "created":
        before = []
    previous = data.get("previous_attributes")
    old = contact
    if isinstance(previous, Mapping) and "email" in previous:
        old = contact_person(user["id"], previous.get("email"))

    def student(sid: str) -> Person:
        return Person(sid, student_emails.get(sid))

    out = []
    for sid in now:
        ended = (old,) if old.email and old.email != contact.email else ()
        if sid in before and not ended and action == "updated" and not _touches(previous):
            continue  # nothing about this student's guardian changed (a phone number, a name)
        out.append(GuardianChange(student(sid), event_id, when, wanted=(contact,), ended=ended))
    for sid in before:
        if sid not in now:
            ended = tuple({p.email: p for p in (old, contact) if p.email}.values()) or (contact,)
            out.append(GuardianChange(student(sid), event_id, when, ended=ended))
    return out


def _touches(previous: Any) -> bool:
    if not isinstance(previous, Mapping):
        return True  # an update that does not say what changed: converge on the contact as it is
    return "email" in previous or "roles" in previous


def district_guardian_changes(
    contacts: Iterable[Any],
    student_emails: Mapping[str, str | None],
    types: tuple[str, ...],
    event_id: str,
    event_time: str,
    also_students: Iterable[str] = (),
) -> list[GuardianChange]:
    """One complete change per student (bootstrap and reconcile): each student's whole list of
    qualifying contacts; `also_students` (students we recorded guardians for) get one even when no
    contact names them any more, so their guardians end."""
    wanted: dict[str, dict[str, Person]] = defaultdict(dict)
    for contact in contacts:
        if not isinstance(contact, Mapping) or not isinstance(contact.get("id"), str):
            continue
        person = contact_person(contact["id"], contact.get("email"))
        for sid in contact_students(contact, types):
            wanted[sid][person.clever_id] = person
    for sid in also_students:
        wanted.setdefault(sid, {})
    return [
        GuardianChange(
            Person(sid, student_emails.get(sid)),
            event_id,
            event_time,
            wanted=tuple(people.values()),
            complete=True,
        )
        for sid, people in sorted(wanted.items())
    ]

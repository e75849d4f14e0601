"""OneRoster parents and guardians -> guardian changes. Pure: no I/O.

OneRoster links a student to their parents and guardians through the student's `agents` (GUID
references to users); the parent's own `agents` name their children. A user is a parent or guardian
by its role (1.1 `role`, 1.2 `roles[].role`): `parent` and `guardian` count as Clever's
"Parent/Guardian" relationship type, `relative` as "Family", so GUARDIAN_RELATIONSHIP_TYPES means
the same for both sources.

Changes are built from a full read (every user there is): one complete change per student, so a
link that vanished ends too. A delta read lacks the other end of most links; guardians follow the
full reads (ONEROSTER_FULL_READ_HOURS).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from rostersync.domain.changes import Person, normalize_email
from rostersync.domain.guardians import GuardianChange

ROLE_AS_TYPE = {"parent": "Parent/Guardian", "guardian": "Parent/Guardian", "relative": "Family"}


def _roles(user: Mapping[str, Any]) -> set[str]:
    roles = set()
    if isinstance(user.get("role"), str):
        roles.add(user["role"].strip().lower())
    for entry in user.get("roles") or []:
        if isinstance(entry, Mapping) and isinstance(entry.get("role"), str):
            roles.add(entry["role"].strip().lower())
    return roles


def _active(user: Any) -> bool:
    return isinstance(user, Mapping) and str(user.get("status") or "active").strip().lower() != "tobedeleted"


def _agent_ids(user: Mapping[str, Any]) -> list[str]:
    out = []
    for ref in user.get("agents") or []:
        value = ref.get("sourcedId") if isinstance(ref, Mapping) else ref
        if isinstance(value, str) and value:
            out.append(value)
    return out


def _qualifies(user: Any, types: tuple[str, ...]) -> bool:
    wanted = {t.strip().lower() for t in types}
    return _active(user) and any(ROLE_AS_TYPE.get(r, "").lower() in wanted for r in _roles(user))


def guardian_changes_from_read(
    users: Mapping[str, Mapping[str, Any]],
    types: tuple[str, ...],
    event_id: str,
    event_time: str,
    also_students: Iterable[str] = (),
) -> list[GuardianChange]:
    """One complete guardian change per student a qualifying parent or guardian is linked to
    (from either end), and per student in `also_students` (we recorded guardians for them)."""
    wanted: dict[str, dict[str, Person]] = {}

    def link(student_id: str, guardian_id: str) -> None:
        student, guardian = users.get(student_id), users.get(guardian_id)
        if not _active(student) or "student" not in _roles(student) or not _qualifies(guardian, types):
            return
        email = guardian.get("email")
        person = Person(guardian_id, normalize_email(email) if isinstance(email, str) else None)
        wanted.setdefault(student_id, {})[guardian_id] = person

    for uid, user in users.items():
        roles = _roles(user)
        for other in _agent_ids(user):
            if "student" in roles:
                link(uid, other)
            else:
                link(other, uid)
    for sid in also_students:
        wanted.setdefault(sid, {})
    changes = []
    for sid, people in sorted(wanted.items()):
        student = users.get(sid) or {}
        email = student.get("email") if _active(student) else None
        changes.append(
            GuardianChange(
                Person(sid, normalize_email(email) if isinstance(email, str) else None),
                event_id,
                event_time,
                wanted=tuple(people.values()),
                complete=True,
                source="oneroster",
            )
        )
    return changes

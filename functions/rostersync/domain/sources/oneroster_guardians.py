"""OneRoster parents and guardians -> guardian changes. Pure: no I/O.

OneRoster links a student to their parents and guardians through the student's `agents` (GUID
references to users); the parent's own `agents` name their children. A user is a parent or guardian
by its role (1.1 `role`, 1.2 `roles[].role`): `parent` and `guardian` count as Clever's
"Parent/Guardian" relationship type, `relative` as "Family", so GUARDIAN_RELATIONSHIP_TYPES means
the same for both sources.

Every change is complete (the student's whole list), so a link that vanished ends too:
- a full REST read or a bulk users.csv knows every user: every student is stated (a full read), or
  those whose links differ from the saved ones (a bundle);
- a delta knows only what changed: the students it may concern (`students_concerned`) are stated
  once the users it lacks are read (the student's own record, its agents, and the guardians it had
  at the last read, so a link stated only on the parent's record is not lost).
What each read said is kept per student (`GuardianLinks`) so unchanged students are not published.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
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


def wanted_guardians(users: Mapping[str, Mapping[str, Any]], types: tuple[str, ...]) -> dict[str, dict[str, Person]]:
    """student id -> {guardian id: Person}: the qualifying parents and guardians linked to each active
    student from either end (the student's `agents` or the parent's)."""
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
    return wanted


def complete_change(
    student_id: str,
    people: Mapping[str, Person],
    users: Mapping[str, Mapping[str, Any]],
    event_id: str,
    event_time: str,
) -> GuardianChange:
    """The student's whole list (nobody when `people` is empty: the sync's invitations end)."""
    student = users.get(student_id) or {}
    email = student.get("email") if _active(student) else None
    return GuardianChange(
        Person(student_id, normalize_email(email) if isinstance(email, str) else None),
        event_id,
        event_time,
        wanted=tuple(people[g] for g in sorted(people)),
        complete=True,
        source="oneroster",
    )


def guardian_changes_from_read(
    users: Mapping[str, Mapping[str, Any]],
    types: tuple[str, ...],
    event_id: str,
    event_time: str,
    also_students: Iterable[str] = (),
) -> list[GuardianChange]:
    """One complete guardian change per student a qualifying parent or guardian is linked to
    (from either end), and per student in `also_students` (we recorded guardians for them)."""
    wanted = wanted_guardians(users, types)
    for sid in also_students:
        wanted.setdefault(sid, {})
    return [complete_change(sid, people, users, event_id, event_time) for sid, people in sorted(wanted.items())]


@dataclass(frozen=True)
class GuardianLinks:
    """What the last read said of one student's guardians, kept between reads (Firestore
    `oneroster_guardian_links/`): a digest of the complete change it made, and the guardians' ids
    (so a later delta that carries only a parent finds the students it was linked to). Kept only
    for students with guardians: no document means nobody."""

    digest: str
    guardian_ids: tuple[str, ...]


def links_of(change: GuardianChange) -> GuardianLinks | None:
    """The links a complete change states; None for nobody. The digest covers the student's email
    (their Google account) and each guardian's id and email: what the applier acts on."""
    if not change.wanted:
        return None
    text = json.dumps(
        [change.student.email, sorted((p.clever_id, p.email) for p in change.wanted)], separators=(",", ":")
    )
    return GuardianLinks(
        hashlib.sha256(text.encode()).hexdigest()[:32], tuple(sorted(p.clever_id for p in change.wanted))
    )


def changed_guardians(
    users: Mapping[str, Mapping[str, Any]],
    types: tuple[str, ...],
    students: Iterable[str],
    saved: Mapping[str, GuardianLinks],
    event_id: str,
    event_time: str,
    force: bool = False,
    wanted: Mapping[str, Mapping[str, Person]] | None = None,
) -> tuple[list[GuardianChange], dict[str, GuardianLinks | None]]:
    """Complete changes for those of `students` whose guardians differ from what was `saved` (all
    of them with `force`), and the links to save once they are published (None: delete).

    `users` must hold each student's record and every user linked to them from either end: a whole
    users file, or what a delta carried plus what was fetched for the students concerned."""
    wanted = wanted_guardians(users, types) if wanted is None else wanted
    changes: list[GuardianChange] = []
    to_save: dict[str, GuardianLinks | None] = {}
    for sid in sorted(set(students)):
        change = complete_change(sid, wanted.get(sid, {}), users, event_id, event_time)
        now, before = links_of(change), saved.get(sid)
        if now != before:
            to_save[sid] = now
        elif not force:
            continue
        changes.append(change)
    return changes, to_save


def students_concerned(
    carried: Mapping[str, Mapping[str, Any]], linked_before: Mapping[str, Iterable[str]]
) -> set[str]:
    """The students a delta's users may have changed the guardians of: carried students, the
    students a carried user names as agents, and the students a carried user was linked to
    before (`linked_before`: user id -> student ids, from the saved links)."""
    out: set[str] = set()
    for uid, user in carried.items():
        if "student" in _roles(user):
            out.add(uid)
        else:
            out.update(_agent_ids(user))
            out.update(linked_before.get(uid, ()))
    return out


def possible_guardians(users: Mapping[str, Mapping[str, Any]]) -> set[str]:
    """The users with a parent, guardian or relative role, whatever their status (a deleted
    parent's links end): the ones whose saved links a delta must look up."""
    return {uid for uid, user in users.items() if _roles(user) & set(ROLE_AS_TYPE)}


def agents_of(users: Mapping[str, Mapping[str, Any]], student_ids: Iterable[str]) -> set[str]:
    """The user ids the students' own records name as agents."""
    out: set[str] = set()
    for sid in student_ids:
        user = users.get(sid)
        if isinstance(user, Mapping):
            out.update(_agent_ids(user))
    return out

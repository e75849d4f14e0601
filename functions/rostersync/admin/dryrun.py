"""`rostersync plan`: the reconcile pass and the applier run against ports that write nothing.

DryRunClassroom passes reads through to Classroom and records each write it is asked for as a
planned change (answering as Classroom would on success); DryRunStore passes reads through to
Firestore and keeps the links the run would save in memory, so a later step of the same run sees
them. The rules, the applier and the reconciler are the real ones: the plan is what they would do.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from rostersync.domain.ports import ADDED, REMOVED

PLANNED_COURSE_PREFIX = "(new course "


@dataclass
class PlannedChange:
    section_id: str
    action: str  # create course | add student | remove teacher | rename | owner | archive | ...
    detail: str

    def to_json(self) -> dict:
        return self.__dict__.copy()


@dataclass
class PlanLog:
    section_id: str = ""
    changes: list[PlannedChange] = field(default_factory=list)
    overrides: list[dict] = field(default_factory=list)
    problems: list[dict] = field(default_factory=list)

    def add(self, action: str, detail: str) -> None:
        self.changes.append(PlannedChange(self.section_id, action, detail))


class DryRunClassroom:
    def __init__(self, inner, log: PlanLog):
        self._inner = inner
        self._log = log
        self._planned: dict[str, dict] = {}

    def start_unit_of_work(self) -> None:
        start = getattr(self._inner, "start_unit_of_work", None)
        if start:
            start()

    def create_course(self, alias: str, name: str, owner_email: str) -> dict:
        existing = self._inner.get_course(alias)
        if existing is not None:
            return existing  # the applier adopts it, as after a 409
        self._log.add("create course", f"{name!r} owned by {owner_email}")
        course = {"id": f"{PLANNED_COURSE_PREFIX}{alias})", "name": name, "courseState": "PROVISIONED"}
        self._planned[course["id"]] = course
        return course

    def get_course(self, course_id: str) -> dict | None:
        if course_id in self._planned:
            return self._planned[course_id]
        return self._inner.get_course(course_id)

    def list_member_emails(self, course_id: str, role: str) -> set[str]:
        if course_id in self._planned:
            return set()
        return self._inner.list_member_emails(course_id, role)

    def patch_course(self, course_id: str, fields: dict) -> dict:
        for key, value in fields.items():
            action = {"name": "rename", "ownerId": "change owner", "courseState": "set state"}.get(key, f"set {key}")
            if key == "courseState" and value == "ARCHIVED":
                action = "archive"
            self._log.add(action, f"course {course_id}: {key} -> {value}")
        return {"id": course_id, **fields}

    def delete_course(self, course_id: str) -> None:
        self._log.add("delete course", f"course {course_id}")

    def add_members(self, course_id: str, members: Sequence[tuple[str, str]]) -> list:
        for role, email in members:
            self._log.add(f"add {role}", email)
        return [ADDED for _ in members]

    def remove_member(self, course_id: str, role: str, email: str) -> str:
        self._log.add(f"remove {role}", email)
        return REMOVED

    # -- guardians: reads pass through, writes are planned -----------------------------------------

    def guardian_invitations(self, student: str, email: str | None = None, states=("PENDING",)) -> list[dict]:
        return self._inner.guardian_invitations(student, email, states)

    def guardians(self, student: str, email: str | None = None) -> list[dict]:
        return self._inner.guardians(student, email)

    def invite_guardian(self, student: str, email: str) -> dict:
        from rostersync.domain.ports import ClassroomError

        if self._inner.guardian_invitations(student, email) or self._inner.guardians(student, email):
            raise ClassroomError(409, "ALREADY_EXISTS", "Requested entity already exists")  # adopted, as for real
        self._log.add("invite guardian", f"{email} for student {student}")
        return {"invitationId": "(planned)", "state": "PENDING"}

    def withdraw_guardian_invitation(self, student: str, invitation_id: str) -> dict:
        self._log.add("withdraw guardian invitation", f"invitation {invitation_id} of student {student}")
        return {"invitationId": invitation_id, "state": "COMPLETE"}

    def remove_guardian(self, student: str, guardian_id: str) -> str:
        self._log.add("remove guardian", f"guardian {guardian_id} of student {student}")
        return REMOVED


class DryRunStore:
    def __init__(self, inner, log: PlanLog):
        self._inner = inner
        self._log = log
        self._links: dict = {}
        self._guardians: dict = {}

    def load_link(self, section_id: str):
        if section_id in self._links:
            return self._links[section_id]
        return self._inner.load_link(section_id)

    def save_link(
        self, before, after, problems=(), resolved=(), overrides=(), audit=(), withdrawn=(), touched=False
    ) -> None:
        self._links[after.section_id] = after
        self._log.overrides += [{"section_id": o.section_id, "kind": o.kind, "detail": o.detail} for o in overrides]
        self.record_problems(problems)

    def record_problems(self, problems) -> None:
        self._log.problems += [{"section_id": p.section_id, "kind": p.kind, "message": p.message} for p in problems]

    def load_cursor(self):
        return self._inner.load_cursor()

    def load_guardian_records(self, student_id: str):
        if student_id in self._guardians:
            return self._guardians[student_id]
        return self._inner.load_guardian_records(student_id)

    def record_guardian_intents(self, before, intents):
        return list(intents)  # nothing is written: the plan's invitations are only planned

    def save_guardian_records(self, before, after, problems=(), resolved=(), audit=()) -> None:
        if after:
            self._guardians[after[0].student_id] = list(after)
        self.record_problems(problems)

    def guardian_student_ids(self) -> set[str]:
        return self._inner.guardian_student_ids()

    def linked_section_ids(self, after: str, limit: int) -> list[str]:
        return self._inner.linked_section_ids(after, limit)

    def load_reconcile_position(self) -> str:
        return ""

    def save_reconcile_position(self, section_id: str) -> None:
        pass

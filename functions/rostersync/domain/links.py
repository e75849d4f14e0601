"""What rostersync knows of a section's course: the link Firestore stores, one per Clever section.

The link records what *we* did (the course we created, the name and owner we set, every member we
added or saw removed) and the Clever event each fact came from. The sync rules compare incoming
changes with it, so the applier needs no Classroom read before a write.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum

from rostersync.domain.changes import Person


class LinkState(StrEnum):
    ACTIVE = "active"  # the course exists and follows the section
    OWNER_PROBLEM = "owner_problem"  # no course: the primary teacher could not own one
    DELETED = "deleted"  # the section was deleted in Clever
    DECLINED = "declined"  # the teacher declined the course: nothing more is applied until re-offered
    ARCHIVED = "archived"  # someone archived the course in Classroom: it is left alone


class MemberStatus(StrEnum):
    ACTIVE = "active"  # we added them and they are in the course
    REMOVED = "removed"  # Clever dropped them (we removed them, or they were never added)
    PROBLEM = "problem"  # they could not be added; see the problem record
    # We added them and a teacher removed them by hand: the same enrollment is not added again.
    REMOVED_BY_TEACHER = "removed_by_teacher"
    # Clever dropped them while they own the course: they leave once ownership has moved.
    LEAVING = "leaving"


@dataclass(frozen=True)
class MemberRecord:
    clever_id: str
    email: str | None
    role: str  # "teacher" | "student"
    status: MemberStatus
    event_id: str  # the newest Clever event that decided this member's state
    reason: str = ""  # for PROBLEM: Classroom's @Reason or our own

    def to_doc(self) -> dict:
        """As kept in the link's `members` map under its Clever id, which is not repeated inside, so
        that a 5,000-member section stays under Firestore's 1 MiB a document (about 150 bytes a
        member; docs/scale.md). Every other field is always written: saves merge member entries
        field by field, so a field left out would keep its old value."""
        return {
            "email": self.email,
            "role": self.role,
            "status": self.status.value,
            "event_id": self.event_id,
            "reason": self.reason,
        }

    @staticmethod
    def from_doc(doc: dict, clever_id: str | None = None) -> MemberRecord:
        """`clever_id`: the map key (documents written before it stopped being repeated carry it)."""
        return MemberRecord(
            clever_id=clever_id or doc["clever_id"],
            email=doc.get("email"),
            role=doc.get("role", "student"),
            status=MemberStatus(doc.get("status", MemberStatus.ACTIVE)),
            event_id=doc.get("event_id", ""),
            reason=doc.get("reason", ""),
        )


def course_alias(section_id: str) -> str:
    """The domain-scoped alias that makes course creation idempotent: a second create is 409."""
    return f"d:clever-{section_id}"


@dataclass(frozen=True)
class SectionCourseLink:
    section_id: str
    state: LinkState
    alias: str
    course_id: str | None = None
    section_name: str = ""  # Clever's name, as last seen
    name_set: str | None = None  # the course name we last set
    name_event_id: str = ""
    owner: Person | None = None  # the owner we last set
    owner_event_id: str = ""
    failed_owner_email: str | None = None  # for OWNER_PROBLEM: whom Classroom refused
    deleted_event_id: str = ""
    members: dict[str, MemberRecord] = field(default_factory=dict)
    school: str | None = None
    # The name a teacher gave the course by hand; while set, Clever's renames are not applied.
    name_override: str | None = None
    # Members a teacher added by hand (emails), as the last reconcile pass saw them.
    teacher_added: list[str] = field(default_factory=list)
    # Cross-listed sections sharing this course (`rostersync link`): their members are kept when
    # this section drops them, the course is never renamed or moved to another owner, and it is
    # archived only when the last of them is deleted.
    shared_with: list[str] = field(default_factory=list)
    # The stored document's update time when it was read (None: not read from the store). Not a
    # field of the document: the store writes with a precondition on it (optimistic.py).
    version: object = field(default=None, compare=False, repr=False)
    # The stored document has no `member_ids` (what sections_with_member queries): a link saved
    # before member_ids existed. Set by the store when it reads; its next save (the reconcile pass
    # makes one) writes them. Not a field of the document.
    unindexed_members: bool = field(default=False, compare=False, repr=False)

    @staticmethod
    def new(section_id: str) -> SectionCourseLink:
        return SectionCourseLink(section_id=section_id, state=LinkState.OWNER_PROBLEM, alias=course_alias(section_id))

    def with_member(self, record: MemberRecord) -> SectionCourseLink:
        return replace(self, members={**self.members, record.clever_id: record})

    def active_members(self, role: str | None = None) -> list[MemberRecord]:
        return [
            m for m in self.members.values() if m.status == MemberStatus.ACTIVE and (role is None or m.role == role)
        ]

    def to_doc(self) -> dict:
        return {
            "section_id": self.section_id,
            "state": self.state.value,
            "alias": self.alias,
            "course_id": self.course_id,
            "section_name": self.section_name,
            "name_set": self.name_set,
            "name_event_id": self.name_event_id,
            "owner_clever_id": self.owner.clever_id if self.owner else None,
            "owner_email": self.owner.email if self.owner else None,
            "owner_event_id": self.owner_event_id,
            "failed_owner_email": self.failed_owner_email,
            "deleted_event_id": self.deleted_event_id,
            "school": self.school,
            "members": {cid: m.to_doc() for cid, m in self.members.items()},
            "name_override": self.name_override,
            "teacher_added": list(self.teacher_added),
            "shared_with": list(self.shared_with),
        }

    @staticmethod
    def from_doc(doc: dict, version: object = None) -> SectionCourseLink:
        owner = None
        if doc.get("owner_clever_id"):
            owner = Person(doc["owner_clever_id"], doc.get("owner_email"))
        return SectionCourseLink(
            section_id=doc["section_id"],
            state=LinkState(doc.get("state", LinkState.ACTIVE)),
            alias=doc.get("alias") or course_alias(doc["section_id"]),
            course_id=doc.get("course_id"),
            section_name=doc.get("section_name", ""),
            name_set=doc.get("name_set"),
            name_event_id=doc.get("name_event_id", ""),
            owner=owner,
            owner_event_id=doc.get("owner_event_id", ""),
            failed_owner_email=doc.get("failed_owner_email"),
            deleted_event_id=doc.get("deleted_event_id", ""),
            school=doc.get("school"),
            members={cid: MemberRecord.from_doc(m, cid) for cid, m in (doc.get("members") or {}).items()},
            name_override=doc.get("name_override"),
            teacher_added=list(doc.get("teacher_added") or []),
            shared_with=list(doc.get("shared_with") or []),
            version=version,
        )

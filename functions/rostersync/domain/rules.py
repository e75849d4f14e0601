"""The sync rules: given one roster change and what we know of the section, what to do in Classroom.

Pure: no I/O. The applier carries out the plan and records the outcome.

Why every change is safe to deliver twice or out of order:
- Course creation goes through the section's alias (`d:clever-<section id>`): Classroom answers a
  second create with ALREADY_EXISTS and the applier adopts the existing course.
- Each member, the course name and the owner remember the Clever event that last decided them.
  A change from an older event than that is stale and is skipped; a change that asks for what is
  already so (a member we already added, a name we already set) makes no call.
- A removal only removes a member we added; a member someone else added is never touched.

Teachers keep control: a name a teacher gave the course, a member a teacher removed, a course the
teacher declined or archived are overrides that the rules respect (see `Override`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from rostersync.domain.changes import ChangeKind, Person, RosterChange
from rostersync.domain.links import LinkState, MemberRecord, MemberStatus, SectionCourseLink

MAX_COURSE_NAME = 750  # Classroom's limit on a course name


# -- Classroom operations, as data --------------------------------------------------------------


@dataclass(frozen=True)
class CreateCourse:
    name: str
    owner: Person


@dataclass(frozen=True)
class AddMember:
    role: str
    person: Person


@dataclass(frozen=True)
class RemoveMember:
    role: str
    person: Person  # with the email we added them by


@dataclass(frozen=True)
class RenameCourse:
    name: str


@dataclass(frozen=True)
class ChangeOwner:
    person: Person


@dataclass(frozen=True)
class RetireCourse:
    """The section is gone: archive the course (never delete it: the teacher's work is in it)."""


Op = CreateCourse | AddMember | RemoveMember | RenameCourse | ChangeOwner | RetireCourse


@dataclass(frozen=True)
class Problem:
    """Something an administrator must know: why Classroom and Clever differ."""

    kind: str
    section_id: str
    message: str
    hint: str = ""
    clever_id: str | None = None
    email: str | None = None
    role: str | None = None
    reason: str = ""  # Classroom's @Reason, when Classroom said no
    event_id: str = ""

    @property
    def key(self) -> str:
        """One record per user and section (or per kind, for the section itself): a repeat
        updates it instead of adding another."""
        if self.clever_id:
            return member_problem_key(self.section_id, self.clever_id)
        return f"{self.section_id}__{self.kind}"


def member_problem_key(section_id: str, clever_id: str) -> str:
    return f"{section_id}__user__{clever_id}"


@dataclass(frozen=True)
class Override:
    """A change made by hand in Classroom that the sync respects (and does not write back)."""

    kind: str  # name | member_removed_by_teacher | member_added_by_teacher | declined | archived
    section_id: str
    detail: str
    email: str | None = None
    role: str | None = None
    clever_id: str | None = None
    course_id: str | None = None

    @property
    def key(self) -> str:
        return f"{self.section_id}__{self.kind}__{self.clever_id or self.email or 'course'}"


@dataclass
class Plan:
    link: SectionCourseLink  # with every change that needs no Classroom call already made
    ops: list[Op] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # why something was not done
    problems: list[Problem] = field(default_factory=list)
    resolved: list[str] = field(default_factory=list)  # problem keys that no longer hold
    overrides: list[Override] = field(default_factory=list)


def course_name(name: str) -> str:
    return name.strip()[:MAX_COURSE_NAME]


def missing_email_problem(change: RosterChange, person: Person, role: str) -> Problem:
    return Problem(
        kind="user_without_email",
        section_id=change.section_id,
        clever_id=person.clever_id,
        role=role,
        event_id=change.event_id,
        message=f"Clever has no email for {role} {person.clever_id}, so they cannot be matched to Google",
        hint="Add the user's Google email in the SIS (or Clever) and it syncs on the next change",
    )


@dataclass(frozen=True)
class SharedCourse:
    """For a cross-listed section (link.shared_with): what its sibling sections hold now."""

    kept: frozenset[str] = frozenset()  # emails active in a sibling section: not removed from the course
    others_active: bool = False  # a sibling section still follows the course: it is not archived


def plan(
    change: RosterChange,
    link: SectionCourseLink | None,
    retry_problems: bool = False,
    shared: SharedCourse | None = None,
) -> Plan:
    """What to do for `change`. With `retry_problems`, members that could not be added before are
    tried again (the reconcile pass does this, for accounts created since). `shared` describes the
    sibling sections of a cross-listed course."""
    if link is None:
        link = SectionCourseLink.new(change.section_id)
    link = replace(link, section_name=change.section.name, school=change.section.school or link.school)
    shared = shared or SharedCourse()

    if link.state == LinkState.DELETED:
        return Plan(link, notes=[f"section was deleted in Clever (event {link.deleted_event_id}); ignored"])
    if link.state in (LinkState.DECLINED, LinkState.ARCHIVED):
        if change.kind == ChangeKind.SECTION_DELETED:
            return Plan(replace(link, state=LinkState.DELETED, deleted_event_id=change.event_id))
        return Plan(link, notes=[f"the course was {link.state.value} in Classroom; nothing is applied to it"])

    if change.kind == ChangeKind.SECTION_DELETED:
        if link.shared_with and shared.others_active:
            return _plan_shared_deletion(change, link, shared)
        return _plan_deletion(change, link)

    if link.state == LinkState.OWNER_PROBLEM or link.course_id is None:
        return _plan_creation(change, link, retry_problems)

    if change.kind == ChangeKind.COURSE_WANTED:
        return _plan_converge(change, link, retry_problems, shared)
    if change.kind == ChangeKind.NAME_CHANGED:
        p = Plan(link)
        _plan_name(p, change, change.name or change.section.name)
        return p
    if change.kind == ChangeKind.PRIMARY_TEACHER_CHANGED:
        p = Plan(link)
        _plan_owner(p, change, change.person)
        return p
    role = change.member_role
    assert role is not None and change.person is not None
    p = Plan(link)
    if change.kind in (ChangeKind.TEACHER_ADDED, ChangeKind.STUDENT_ADDED):
        _plan_add(p, change, change.person, role)
    else:
        _plan_remove(p, change, change.person, role, shared)
    return p


def _plan_deletion(change: RosterChange, link: SectionCourseLink) -> Plan:
    ops: list[Op] = [RetireCourse()] if link.course_id else []
    link = replace(link, state=LinkState.DELETED, deleted_event_id=change.event_id)
    return Plan(link, ops=ops)


def _plan_shared_deletion(change: RosterChange, link: SectionCourseLink, shared: SharedCourse) -> Plan:
    """A cross-listed section is deleted while others still follow the course: its own students
    leave (unless another section keeps them); its teachers stay co-teachers; no archive."""
    p = Plan(replace(link, state=LinkState.DELETED, deleted_event_id=change.event_id))
    for record in link.active_members("student"):
        if (record.email or "").lower() not in shared.kept:
            p.ops.append(RemoveMember("student", Person(record.clever_id, record.email)))
    p.notes.append("cross-listed: the course stays for the other sections; only this section's students leave")
    return p


def _plan_creation(change: RosterChange, link: SectionCourseLink, retry_problems: bool = False) -> Plan:
    """No course yet: create it for the primary teacher, then add everyone else in the section."""
    section = change.section
    owner = section.primary_teacher
    p = Plan(link)
    if owner is None:
        p.problems.append(
            Problem(
                kind="section_without_teacher",
                section_id=section.section_id,
                event_id=change.event_id,
                message=f"Section {section.name!r} has no teacher in Clever, so no course can be created",
                hint="Give the section a primary teacher in the SIS",
            )
        )
        p.link = replace(link, state=LinkState.OWNER_PROBLEM, failed_owner_email=None)
        return p
    if owner.email is None:
        problem = missing_email_problem(change, owner, "teacher")
        p.problems.append(
            replace(problem, message=problem.message + f"; section {section.name!r} gets no course until then")
        )
        p.link = replace(link, state=LinkState.OWNER_PROBLEM, failed_owner_email=None)
        return p
    if (
        link.state == LinkState.OWNER_PROBLEM
        and link.failed_owner_email == owner.email
        and not retry_problems
        and change.event_id <= link.owner_event_id
    ):
        # Classroom refused this owner for this event (or a newer one) already: a redelivery asks
        # nothing again. A newer Clever change of the section, a different primary teacher, a
        # fixed email or the reconcile pass each try once more: the account may exist by now.
        p.notes.append(f"course not created: Classroom refused owner {owner.clever_id} at event {link.owner_event_id}")
        return p
    if link.owner and link.owner.clever_id != owner.clever_id:
        # The teacher Classroom refused is no longer the primary: their problem is moot.
        p.resolved.append(member_problem_key(section.section_id, link.owner.clever_id))
    p.ops.append(CreateCourse(course_name(section.name), owner))
    # The owner becomes a teacher of the course when it is created.
    p.link = replace(link, owner=owner, owner_event_id=change.event_id, name_event_id=change.event_id).with_member(
        MemberRecord(owner.clever_id, owner.email, "teacher", MemberStatus.ACTIVE, change.event_id)
    )
    for teacher in section.teachers:
        if teacher.clever_id != owner.clever_id:
            _plan_add(p, change, teacher, "teacher")
    for student in section.students:
        _plan_add(p, change, student, "student")
    return p


def _plan_converge(
    change: RosterChange, link: SectionCourseLink, retry_problems: bool, shared: SharedCourse | None = None
) -> Plan:
    """The whole section (a bootstrap, a reconcile, a created event): bring our part of the course
    in line with it. These are enrollments that continue, so a teacher's removal stands."""
    section = change.section
    p = Plan(link)
    _plan_name(p, change, section.name)
    if section.primary_teacher is not None:
        _plan_owner(p, change, section.primary_teacher)
    wanted: dict[str, str] = {}
    for teacher in section.teachers:
        wanted[teacher.clever_id] = "teacher"
        _plan_add(p, change, teacher, "teacher", retry_problems)
    for student in section.students:
        wanted.setdefault(student.clever_id, "student")
        _plan_add(p, change, student, "student", retry_problems)
    for record in list(p.link.members.values()):
        if record.clever_id not in wanted and record.status != MemberStatus.REMOVED:
            _plan_remove(p, change, Person(record.clever_id, record.email), record.role, shared)
    return p


def _plan_name(p: Plan, change: RosterChange, name: str) -> None:
    name = course_name(name)
    link = p.link
    if link.name_override is not None:
        if name != link.name_set:
            p.notes.append(f"the teacher named the course {link.name_override!r}; Clever's {name!r} not applied")
        return
    if change.event_id < link.name_event_id:
        p.notes.append(f"rename to {name!r} is older than event {link.name_event_id}; skipped")
        return
    if name == link.name_set:
        if change.event_id > link.name_event_id:
            p.link = replace(link, name_event_id=change.event_id)  # so an older rename cannot win
        return
    p.ops.append(RenameCourse(name))
    p.link = replace(link, name_event_id=change.event_id)


def _plan_owner(p: Plan, change: RosterChange, person: Person | None) -> None:
    link = p.link
    if person is None:
        return
    if link.shared_with:
        # A cross-listed course has one owner for several sections: a section's primary teacher
        # joins as a co-teacher and ownership stays as it is.
        _plan_add(p, change, person, "teacher")
        return
    if link.owner and link.owner.clever_id == person.clever_id:
        if change.event_id > link.owner_event_id:
            # Already the owner, but a newer event says so: an older owner change must not win.
            p.link = replace(link, owner_event_id=change.event_id)
        return
    if change.event_id < link.owner_event_id:
        p.notes.append(f"owner change to {person.clever_id} is older than event {link.owner_event_id}; skipped")
        return
    if person.email is None:
        p.problems.append(missing_email_problem(change, person, "teacher"))
        return
    # Classroom moves ownership only to a current teacher of the course.
    _plan_add(p, change, person, "teacher")
    p.ops.append(ChangeOwner(person))
    p.link = replace(p.link, owner_event_id=change.event_id)
    previous = link.owner and p.link.members.get(link.owner.clever_id)
    if previous and previous.status == MemberStatus.LEAVING:
        # Clever dropped the old owner earlier; with ownership moved they can leave now.
        p.ops.append(RemoveMember("teacher", Person(previous.clever_id, previous.email)))


def _plan_add(p: Plan, change: RosterChange, person: Person, role: str, retry_problems: bool = False) -> None:
    record = p.link.members.get(person.clever_id)
    if record and change.event_id < record.event_id:
        p.notes.append(f"add {role} {person.clever_id} is older than event {record.event_id}; skipped")
        return
    if person.email is None:
        p.problems.append(missing_email_problem(change, person, role))
        p.link = p.link.with_member(
            MemberRecord(person.clever_id, None, role, MemberStatus.PROBLEM, change.event_id, "no email in Clever")
        )
        return
    if record and record.status == MemberStatus.REMOVED_BY_TEACHER and record.email == person.email:
        if change.kind == ChangeKind.COURSE_WANTED:
            p.notes.append(f"{role} {person.clever_id} was removed by the teacher; the same enrollment is not re-added")
            return
        # An add event is a new enrollment (Clever ended the old one, or this is a new one): it applies.
    elif record and record.email == person.email and record.status == MemberStatus.ACTIVE:
        if change.event_id > record.event_id:
            # Already there, but a newer event now vouches for it: an older removal that arrives
            # late (a redelivery, or one the mass-change brake held) must not remove them.
            p.link = p.link.with_member(replace(record, event_id=change.event_id))
        return
    elif record and record.email == person.email and record.status == MemberStatus.LEAVING:
        # Still in the course (they own it): the newer enrollment simply keeps them.
        p.link = p.link.with_member(replace(record, status=MemberStatus.ACTIVE, event_id=change.event_id))
        return
    elif record and record.email == person.email and record.status == MemberStatus.PROBLEM and not retry_problems:
        # Already known to be impossible with this email: asking again wastes quota. The newer
        # event is remembered, so an older removal arriving late cannot close the problem.
        if change.event_id > record.event_id:
            p.link = p.link.with_member(replace(record, event_id=change.event_id))
        return
    if record and record.status == MemberStatus.ACTIVE and record.email != person.email:
        # The user's email changed in Clever: the old address leaves, the new one joins.
        p.ops.append(RemoveMember(record.role, Person(person.clever_id, record.email)))
    if any(isinstance(op, AddMember) and op.person.clever_id == person.clever_id for op in p.ops):
        return  # a co-teacher listed twice, or the new owner already being added
    p.ops.append(AddMember(role, person))


def _plan_remove(p: Plan, change: RosterChange, person: Person, role: str, shared: SharedCourse | None = None) -> None:
    link = p.link
    record = link.members.get(person.clever_id)
    if record and change.event_id < record.event_id:
        p.notes.append(f"remove {role} {person.clever_id} is older than event {record.event_id}; skipped")
        return
    if record and record.status == MemberStatus.ACTIVE and shared and (record.email or "").lower() in shared.kept:
        # Another cross-listed section still has them: they stay in the course.
        p.notes.append(f"{role} {person.clever_id} stays: a cross-listed section still has them")
        p.link = link.with_member(replace(record, status=MemberStatus.REMOVED, event_id=change.event_id))
        return
    if link.owner and link.owner.clever_id == person.clever_id:
        p.notes.append(f"{person.clever_id} owns the course; they leave once ownership moves")
        if record:
            p.link = link.with_member(replace(record, status=MemberStatus.LEAVING, event_id=change.event_id))
        return
    if record and record.status == MemberStatus.ACTIVE:
        p.ops.append(RemoveMember(record.role, Person(person.clever_id, record.email)))
        return
    if record and record.status == MemberStatus.PROBLEM:
        p.resolved.append(member_problem_key(change.section_id, person.clever_id))
    # Never added by us (or already gone): remember the removal so an older add cannot revive it.
    p.link = link.with_member(MemberRecord(person.clever_id, person.email, role, MemberStatus.REMOVED, change.event_id))

"""Applies one roster change: load the link, plan with the rules, call Classroom, save the outcome.

The outcome tells the entry point whether to acknowledge the message. Everything that will not get
better by trying again (bad input, an unknown user, a rule Classroom enforces) is recorded as a
problem and acknowledged; only transient faults that outlived our retries ask for a redelivery,
and what did succeed is saved first, so the redelivery repeats no call.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from rostersync import optimistic
from rostersync.domain import audit
from rostersync.domain.audit import AuditEntry
from rostersync.domain.changes import InvalidChange, Person, RosterChange, decode_message
from rostersync.domain.links import LinkState, MemberRecord, MemberStatus, SectionCourseLink
from rostersync.domain.ports import ADDED, ALREADY_MEMBER, REMOVED, ClassroomError, ClassroomPort, LinkStore
from rostersync.domain.retention import LINK_BYTES_BUDGET, link_bytes, prune_removed_members, prune_to_fit
from rostersync.domain.rules import (
    AddMember,
    ChangeOwner,
    CreateCourse,
    Override,
    Plan,
    Problem,
    RemoveMember,
    RenameCourse,
    RetireCourse,
    SharedCourse,
    member_problem_key,
    plan,
)
from rostersync.optimistic import StaleWrite
from rostersync.privacy import mask_email, redact

log = logging.getLogger(__name__)


@dataclass
class ApplyOutcome:
    status: str  # "applied" | "rejected" (bad input, acked) | "retry" (transient, redeliver)
    detail: str = ""
    calls: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ack(self) -> bool:
        return self.status != "retry"


def _member_problem(change: RosterChange, person: Person, role: str, err: ClassroomError) -> Problem:
    if err.reason == "@CannotDirectAddUser" or err.http_status == 403:
        kind, hint = (
            "user_not_in_google",
            "Create the Google account (or fix the email in the SIS); Classroom has no such user in the domain",
        )
    elif err.reason in ("@CourseMemberLimitReached", "@CourseTeacherLimitReached"):
        kind, hint = "course_limit", "The course is full in Classroom; split the section or remove members"
    else:
        kind, hint = "classroom_rejected", "See the reason; nothing will retry this until the section changes"
    return Problem(
        kind=kind,
        section_id=change.section_id,
        clever_id=person.clever_id,
        email=person.email,
        role=role,
        reason=err.reason or err.status,
        event_id=change.event_id,
        message=f"Could not add {role} {person.email} to the course: {err.message}",
        hint=hint,
    )


def _owner_problem(change: RosterChange, owner: Person, err: ClassroomError) -> Problem:
    if err.not_found:
        kind = "owner_not_in_google"
        hint = "The primary teacher has no Google account with this email; create it or fix the email in the SIS"
    elif err.reason == "@UserCannotOwnCourse":
        kind = "owner_cannot_own"
        hint = "The primary teacher's account cannot own classes (suspended, outside the domain, or not allowed)"
    else:
        kind, hint = "course_create_rejected", "See the reason"
    return Problem(
        kind=kind,
        section_id=change.section_id,
        clever_id=owner.clever_id,
        email=owner.email,
        role="teacher",
        reason=err.reason or err.status,
        event_id=change.event_id,
        message=(
            f"No course created for section {change.section.name!r}: "
            f"Classroom refused owner {owner.email}: {err.message}"
        ),
        hint=hint,
    )


class Applier:
    def __init__(
        self,
        links: LinkStore,
        classroom: ClassroomPort,
        section_deleted_action: str = "archive",
        guardians=None,
        removed_member_days: int | None = None,
    ):
        self._removed_member_days = removed_member_days
        self._links = links
        self._classroom = classroom
        self._section_deleted_action = section_deleted_action
        # guardian_applier.GuardianApplier (GUARDIANS=invite), else None
        self._guardians = guardians

    def handle_message(self, data: bytes, attributes: Mapping[str, str] | None = None) -> ApplyOutcome:
        from rostersync.domain.guardians import decode_guardian_message

        try:
            guardian_changes = decode_guardian_message(data)
            if guardian_changes is not None and self._guardians is None:
                raise InvalidChange("a guardian change arrived while GUARDIANS=off; not applied")
            changes = decode_message(data) if guardian_changes is None else []
        except InvalidChange as exc:
            attributes = attributes or {}
            problem = Problem(
                kind="bad_message",
                section_id=str(attributes.get("section_id") or "unknown"),
                event_id=str(attributes.get("event_id") or ""),
                message=f"A roster change message could not be read: {exc}",
                hint="The message was acknowledged and not applied; it is kept here for the record",
            )
            log.error("rejected roster change message: %s (attributes %s)", redact(exc), dict(attributes))
            self._links.record_problems([problem])
            return ApplyOutcome("rejected", str(exc), problems=[problem])
        if guardian_changes is not None:
            # A complete change (a bootstrap, a OneRoster full read) first reads back what became
            # of pending invitations: OneRoster has no reconcile pass to notice acceptances.
            return self._guardians.apply_all(guardian_changes, refresh=any(c.complete for c in guardian_changes))
        return self.apply_all(changes)

    def apply(self, change: RosterChange, retry_problems: bool = False) -> ApplyOutcome:
        return self.apply_all([change], retry_problems)

    def apply_all(self, changes: list[RosterChange], retry_problems: bool = False) -> ApplyOutcome:
        """Applies changes to one section in order, with one Firestore read and one commit when no
        other writer changes the section meanwhile. When one did, the commit's precondition fails
        and the changes are planned again from the fresh link (optimistic.run): the calls already
        made are repeated harmlessly (idempotent), and what they did that the fresh link does not
        want is undone (_Effects)."""
        start = getattr(self._classroom, "start_unit_of_work", None)
        if start:
            start()
        section_id = changes[0].section_id
        effects = _Effects()
        try:
            return optimistic.run(
                lambda: self._links.load_link(section_id),
                lambda before, attempt: self._apply_once(before, changes, retry_problems, effects, attempt),
                f"section {section_id}",
            )
        except StaleWrite as exc:
            # Nothing is lost: the message is delivered again and planned from what is stored then.
            # But the redelivery knows nothing of the calls this run made, so they are squared
            # with the link now: an add that a newer removal (committed meanwhile without a call)
            # wants undone would otherwise stay in the course for good.
            self._square_on_giving_up(section_id, changes[-1], effects)
            return ApplyOutcome("retry", f"the section kept changing under this run: {exc}")

    def _square_on_giving_up(self, section_id: str, change: RosterChange, effects: _Effects) -> None:
        if not effects.presence:
            return

        def square(before: SectionCourseLink | None, attempt: int) -> None:
            if before is None:
                return
            effects.failed = None
            link, withdrawn, trail = effects.square(before, before, change, self._classroom)
            self._links.save_link(
                before, link, audit=audit.capped(trail), withdrawn=sorted(set(withdrawn)), touched=True
            )

        try:
            optimistic.run(lambda: self._links.load_link(section_id), square, f"squaring section {section_id}")
        except StaleWrite:
            # Still contended: the reconcile pass finds whatever is left (as a teacher's add, shown
            # to the administrator), and the redelivery plans afresh.
            log.warning(
                "section %s: could not square this run's Classroom calls; left to the reconcile pass", section_id
            )

    def _apply_once(
        self,
        before: SectionCourseLink | None,
        changes: list[RosterChange],
        retry_problems: bool,
        effects: _Effects,
        attempt: int,
    ) -> ApplyOutcome:
        shared = shared_course(self._links, before)
        link = before
        calls_before = effects.calls
        problems: dict[str, Problem] = {}
        resolved: set[str] = set()
        overrides: list[Override] = []
        notes: list[str] = []
        trail: list[AuditEntry] = []
        calls = 0
        transient: ClassroomError | None = None
        refused_owner: str | None = None
        for change in changes:
            log.debug("applying %s", change.describe())  # ids only: the one log-safe form of a change
            p = plan(change, link, retry_problems, shared)
            if refused_owner and any(isinstance(op, CreateCourse) for op in p.ops):
                # One create call a message: Classroom refused this owner moments ago (the section's
                # next change or the reconcile pass tries again).
                p = Plan(link, notes=[f"course not created: Classroom refused owner {refused_owner} just now"])
            for note in p.notes:
                log.info("%s: %s", change.describe(), note)
            run = _Run(change, p, self._classroom, self._section_deleted_action, effects)
            run.execute()
            if run.link.state == LinkState.OWNER_PROBLEM and any(isinstance(op, CreateCourse) for op in p.ops):
                refused_owner = run.link.owner.clever_id if run.link.owner else "?"
            link, calls, notes = run.link, calls + run.calls, notes + p.notes
            trail += run.trail + _skips(change, p.notes, link.course_id)
            trail += [audit.from_problem(pr, link.course_id) for pr in run.problems if pr.event_id == change.event_id]
            for key in run.resolved:
                problems.pop(key, None)
                resolved.add(key)
            for problem in run.problems:
                problems[problem.key] = problem
                resolved.discard(problem.key)
            overrides += run.overrides
            if run.transient:
                # What succeeded is saved below; the redelivery repeats only what did not.
                transient = run.transient
                break
        assert link is not None
        withdrawn = superseded_overrides(before, link)
        if withdrawn:
            link = replace(link, teacher_added=[e for e in link.teacher_added if e not in _ours(link)])
        if attempt and not transient:
            effects.failed = None
            link, squared, repaired = effects.square(before, link, changes[-1], self._classroom)
            withdrawn += squared
            trail += repaired
            calls += len(repaired)
            transient = effects.failed
        if self._removed_member_days:
            # Members Clever removed long ago leave the link (retention.py): saved with this change.
            link = prune_removed_members(link, self._removed_member_days)
        link, size = prune_to_fit(link)
        size_problem, size_resolved = link_size_problem(before, link, size, changes[-1])
        if size_problem:
            problems[size_problem.key] = size_problem
        resolved |= size_resolved
        self._links.save_link(
            before,
            link,
            list(problems.values()),
            sorted(resolved),
            overrides,
            audit=audit.capped(trail),
            withdrawn=sorted(set(withdrawn)),
            # A membership call in this attempt moves the link's update time even when the link
            # itself is unchanged (a square that put Classroom back, a call repeated after a crash):
            # a reconcile pass or notification that read Classroom before our call and the link
            # before our commit then fails its precondition and looks again, instead of recording
            # our call in flight as a teacher's change.
            touched=effects.calls > calls_before,
        )
        for problem in problems.values():
            log.warning(
                "problem %s in section %s: %s", problem.kind, problem.section_id, problem.reason or problem.kind
            )
        for override in overrides:
            # By Clever id and masked email: the detail sentence names the person in full.
            log.info(
                "override %s in section %s: user %s (%s)",
                override.kind,
                override.section_id,
                override.clever_id or "-",
                mask_email(override.email),
            )
        if transient:
            return ApplyOutcome("retry", str(transient), calls, list(problems.values()))
        return ApplyOutcome("applied", "; ".join(notes), calls, list(problems.values()))


def link_size_problem(
    before: SectionCourseLink | None, after: SectionCourseLink, size: int, change: RosterChange
) -> tuple[Problem | None, set[str]]:
    """A problem while the link (`size` bytes) is over LINK_BYTES_BUDGET even after pruning (a
    section of some 5,000 members and more): its saves will fail at Firestore's 1 MiB before long.
    Resolved on the save that brings it back under, which drops members (pruned ones): the size
    before is measured only then, not on every message."""
    key = f"{after.section_id}__link_too_large"
    if size > LINK_BYTES_BUDGET:
        problem = Problem(
            kind="link_too_large",
            section_id=after.section_id,
            event_id=change.event_id,
            message=(
                f"The section's record holds {len(after.members):,} members ({size:,} bytes): near Firestore's "
                "1 MiB a document, past which its changes can no longer be saved"
            ),
            hint="Split the section in the SIS, or lower RETAIN_REMOVED_MEMBERS_DAYS (removed members are kept)",
        )
        return problem, set()
    if before is not None and len(before.members) > len(after.members) and link_bytes(before) > LINK_BYTES_BUDGET:
        return None, {key}
    return None, set()


def active_siblings(links, link: SectionCourseLink) -> list[SectionCourseLink]:
    """The other sections of a cross-listed course that still follow it (one read each)."""
    siblings = (links.load_link(section_id) for section_id in link.shared_with)
    return [s for s in siblings if s is not None and s.course_id == link.course_id and s.state == LinkState.ACTIVE]


def shared_course(links, link: SectionCourseLink | None) -> SharedCourse | None:
    """What the sibling sections of a cross-listed course hold now: read for cross-listed
    sections only (every other message stays at one read)."""
    if link is None or not link.shared_with or not link.course_id:
        return None
    siblings = active_siblings(links, link)
    kept = {(m.email or "").lower() for s in siblings for m in s.active_members() if m.email}
    return SharedCourse(frozenset(kept), bool(siblings))


def _skips(change: RosterChange, notes: list[str], course_id: str | None) -> list[AuditEntry]:
    who = change.person
    return [
        AuditEntry(
            change.section_id,
            audit.note_outcome(note),
            note,
            change.event_id,
            change.kind.value,
            who.clever_id if who else None,
            who.email if who else None,
            course_id,
        )
        for note in notes
    ]


class _Run:
    """Carries out one plan, keeping the link in step with each call's outcome."""

    def __init__(self, change: RosterChange, p: Plan, classroom: ClassroomPort, deleted_action: str, effects: _Effects):
        self.effects = effects
        self.change = change
        self.ops = p.ops
        self.link: SectionCourseLink = p.link
        self.problems: list[Problem] = list(p.problems)
        self.resolved: list[str] = list(p.resolved)
        self.overrides: list[Override] = list(p.overrides)
        self.classroom = classroom
        self.deleted_action = deleted_action
        self.transient: ClassroomError | None = None
        self.calls = 0
        self.trail: list[AuditEntry] = []

    def _audit(self, op, outcome: str, detail: str = "") -> None:
        name, what, clever_id, email = audit.describe_op(op)
        self.trail.append(
            AuditEntry(
                self.change.section_id,
                outcome,
                what + (f": {detail}" if detail else ""),
                self.change.event_id,
                f"{self.change.kind.value}/{name}",
                clever_id,
                email,
                self.link.course_id,
            )
        )

    def execute(self) -> None:
        i = 0
        while i < len(self.ops):
            op = self.ops[i]
            if isinstance(op, AddMember):
                # Consecutive adds go out together (one batch request when there are several).
                j = i
                while j < len(self.ops) and isinstance(self.ops[j], AddMember):
                    j += 1
                self._add_members(self.ops[i:j])
                i = j
                continue
            try:
                calls, audited = self.calls, len(self.trail)
                keep_going = self._run(op)
                if self.calls > calls and len(self.trail) == audited:
                    self._audit(op, audit.APPLIED)
            except ClassroomError as err:
                if err.retryable:
                    self.transient = err
                    self._audit(op, audit.DEFERRED, str(err))
                    return
                keep_going = self._refused(op, err)
            if not keep_going:
                return
            i += 1

    def _run(self, op) -> bool:
        course_id = self.link.course_id
        if isinstance(op, CreateCourse):
            return self._create(op)
        assert course_id is not None
        if isinstance(op, RenameCourse):
            # Renames are rare, so one read first is cheap: a name the teacher chose must stay.
            # This read-compare-patch on Classroom is where a lease (one writer per section) would
            # be the better answer: the Firestore precondition cannot stop two writers renaming at
            # once, and the second may take the first's name for a teacher's. Renames are rare,
            # the later event re-plans on its conflict, and the reconcile pass rechecks names, so
            # retries stay (optimistic.py says why not a lease in general).
            self.calls += 2
            course = self.classroom.get_course(course_id)
            if course is None:
                raise ClassroomError(404, "NOT_FOUND", f"course {course_id} not found")
            if course.get("name") == op.name:
                # Already so: our own rename, whose save a crash cut off. Not a teacher's change.
                self.calls -= 1
                self.link = replace(self.link, name_set=op.name)
            elif course.get("name") != self.link.name_set:
                self._teacher_renamed(course.get("name", ""), op.name)
                self.calls -= 1
            else:
                self.classroom.patch_course(course_id, {"name": op.name})
                self.link = replace(self.link, name_set=op.name)
        elif isinstance(op, ChangeOwner):
            record = self.link.members.get(op.person.clever_id)
            if not record or record.status != MemberStatus.ACTIVE or record.role != "teacher":
                # Classroom moves ownership only to a teacher of the course; the add failed (its
                # problem is recorded), so the course keeps its owner until it can.
                log.info("owner change to %s waits: not a teacher of the course", op.person.clever_id)
                return True
            self.calls += 1
            self.classroom.patch_course(course_id, {"ownerId": op.person.email})
            self.link = replace(self.link, owner=op.person)
        elif isinstance(op, RemoveMember):
            if self.link.owner and self.link.owner.clever_id == op.person.clever_id:
                return True  # ownership did not move (see ChangeOwner): they stay, marked leaving
            self.calls += 1
            removed = self.classroom.remove_member(course_id, op.role, op.person.email or "")
            self.effects.note(
                op.person.clever_id, op.role, op.person.email, False, self.change.event_id, removed == REMOVED
            )
            self.link = self.link.with_member(
                MemberRecord(op.person.clever_id, op.person.email, op.role, MemberStatus.REMOVED, self.change.event_id)
            )
        elif isinstance(op, RetireCourse):
            self._retire(course_id)
        return True

    def _create(self, op: CreateCourse) -> bool:
        self.calls += 1
        try:
            course = self.classroom.create_course(self.link.alias, op.name, op.owner.email or "")
        except ClassroomError as err:
            if not err.already_exists:
                raise
            # We created it before (a redelivery, or a crash before the link was saved).
            self.calls += 1
            course = self.classroom.get_course(self.link.alias)
            if course is None:
                raise ClassroomError(503, "UNAVAILABLE", "alias exists but the course cannot be read yet") from err
        self.link = replace(
            self.link,
            state=LinkState.ACTIVE,
            course_id=course["id"],
            name_set=op.name,
            failed_owner_email=None,
        )
        self.resolved += [member_problem_key(self.change.section_id, op.owner.clever_id)]
        self.resolved += [f"{self.change.section_id}__section_without_teacher"]
        log.info(
            "section %s: course %s created for owner %s",
            self.change.section_id,
            course["id"],
            mask_email(op.owner.email),
        )
        return True

    def _retire(self, course_id: str) -> None:
        if self.deleted_action == "keep":
            return
        # Archived, never deleted, and with everyone still in it: the teacher and the students
        # keep their work and can still read it.
        self.calls += 1
        self.classroom.patch_course(course_id, {"courseState": "ARCHIVED"})

    def _teacher_renamed(self, their_name: str, clever_name: str) -> None:
        self._audit(RenameCourse(clever_name), audit.SKIPPED_OVERRIDE, f"the teacher named it {their_name!r}")
        self.link = replace(self.link, name_override=their_name)
        self.overrides.append(
            Override(
                kind="name",
                section_id=self.change.section_id,
                course_id=self.link.course_id,
                detail=f"The teacher renamed the course to {their_name!r}; Clever's {clever_name!r} is not applied",
            )
        )

    def _course_not_modifiable(self) -> bool:
        """Classroom refused a change to the course itself: find out whether the teacher declined or
        archived it, and if so leave it alone from now on. Costs a read only when this happens."""
        course_id = self.link.course_id
        self.calls += 1
        course = self.classroom.get_course(course_id) if course_id else None
        state = (course or {}).get("courseState")
        if state not in ("DECLINED", "ARCHIVED"):
            return False
        self.link = replace(self.link, state=LinkState.DECLINED if state == "DECLINED" else LinkState.ARCHIVED)
        self.overrides.append(
            Override(
                kind="declined" if state == "DECLINED" else "archived",
                section_id=self.change.section_id,
                course_id=course_id,
                detail=(
                    "The teacher declined the course; nothing more is applied until an administrator re-offers it"
                    if state == "DECLINED"
                    else "The course was archived in Classroom; the sync leaves it alone"
                ),
            )
        )
        return True

    def _refused(self, op, err: ClassroomError) -> bool:
        """A call Classroom will not accept: record why; say whether the rest of the plan can go on."""
        change = self.change
        if err.reason == "@CourseNotModifiable" and self._course_not_modifiable():
            return False
        if isinstance(op, CreateCourse):
            self.problems.append(_owner_problem(change, op.owner, err))
            # No course, so none of the members can be added: nothing half-made is left behind.
            self.link = replace(
                self.link,
                state=LinkState.OWNER_PROBLEM,
                course_id=None,
                failed_owner_email=op.owner.email,
                members={k: v for k, v in self.link.members.items() if k != op.owner.clever_id},
            )
            return False
        missing = err.not_found and not isinstance(op, RemoveMember)
        self.problems.append(
            Problem(
                kind="course_missing" if missing else "classroom_rejected",
                section_id=change.section_id,
                event_id=change.event_id,
                reason=err.reason or err.status,
                message=(
                    f"Course {self.link.course_id} is gone from Classroom (deleted by hand?)"
                    if missing
                    else f"Classroom refused {type(op).__name__}: {err.message}"
                ),
                hint=(
                    "Delete the section's link in Firestore to have the sync create a new course"
                    if missing
                    else "See the reason; the sync goes on with the rest of the section"
                ),
            )
        )
        # Without the course nothing else can be done; a single refusal leaves the rest to go on.
        return not missing

    def _add_members(self, adds: list[AddMember]) -> None:
        course_id = self.link.course_id
        if course_id is None:
            return
        self.calls += len(adds)
        results = self.classroom.add_members(course_id, [(a.role, a.person.email or "") for a in adds])
        for add, result in zip(adds, results, strict=True):
            person, previous = add.person, self.link.members.get(add.person.clever_id)
            if result in (ADDED, ALREADY_MEMBER):
                self._audit(add, audit.APPLIED, "" if result == ADDED else "already in the course")
                self.effects.note(person.clever_id, add.role, person.email, True, self.change.event_id, result == ADDED)
                self.link = self.link.with_member(
                    MemberRecord(person.clever_id, person.email, add.role, MemberStatus.ACTIVE, self.change.event_id)
                )
                if previous and previous.status == MemberStatus.PROBLEM:
                    self.resolved.append(member_problem_key(self.change.section_id, person.clever_id))
            elif isinstance(result, ClassroomError) and result.retryable:
                self.transient = result
                self._audit(add, audit.DEFERRED, str(result))
            elif isinstance(result, ClassroomError) and (
                result.not_found or result.reason in ("@CourseNotModifiable", "@InactiveCourseOwner")
            ):
                if not self._refused(add, result):
                    return
            elif isinstance(result, ClassroomError):
                problem = _member_problem(self.change, person, add.role, result)
                self.problems.append(problem)
                self.link = self.link.with_member(
                    MemberRecord(
                        person.clever_id,
                        person.email,
                        add.role,
                        MemberStatus.PROBLEM,
                        self.change.event_id,
                        problem.reason,
                    )
                )


class _Effects:
    """What this run did to the course's members in Classroom, across its attempts: the calls of
    an attempt whose commit lost to another writer are not undone by the retry, so the next
    attempt squares the fresh link with them."""

    def __init__(self) -> None:
        # clever id -> (role, email, in the course after our call, the event we called for, whether
        # our call made the change: ADDED / REMOVED, not ALREADY_MEMBER / NOT_MEMBER)
        self.presence: dict[str, tuple[str, str | None, bool, str]] = {}
        self.added: set[str] = set()  # members our calls added (ADDED), in any attempt
        self.removed: set[str] = set()  # members our calls removed (REMOVED), in any attempt
        self.failed: ClassroomError | None = None
        self.calls = 0  # membership calls made, in all attempts (see _apply_once: `touched`)

    def note(
        self, clever_id: str, role: str, email: str | None, present: bool, event_id: str, caused: bool = True
    ) -> None:
        self.presence[clever_id] = (role, email, present, event_id)
        self.calls += 1
        if caused:
            (self.added if present else self.removed).add(clever_id)

    def square(
        self,
        before: SectionCourseLink | None,
        link: SectionCourseLink,
        change: RosterChange,
        classroom: ClassroomPort,
    ) -> tuple[SectionCourseLink, list[str], list[AuditEntry]]:
        """After a re-plan. First, what another writer judged from our call in flight (it read the
        course between our call and our commit) is undone: a removed_by_teacher for a member our
        call removed becomes the record it was (active) and its override goes; a member our call
        added leaves teacher_added and its member_added_by_teacher override goes. Only calls that
        made the change count (REMOVED / ADDED): a NOT_MEMBER means someone else removed them.
        Then Classroom is made to hold what the fresh link, planned again, wants of every member we
        touched: an earlier attempt added a student whom a newer removal (committed meanwhile
        without a call, since the student was not in the course then) wants out, or removed one
        whom a newer add wants in. Deleting an override that is not there is a no-op: no read."""
        withdrawn: list[str] = []
        trail: list[AuditEntry] = []
        if link.course_id is None or link.state != LinkState.ACTIVE or link.shared_with:
            # No course to square, or a cross-listed one, whose members other sections keep too:
            # the reconcile pass squares those.
            return link, withdrawn, trail
        owner = link.owner.clever_id if link.owner else None
        for cid, (role, email, present, event_id) in sorted(self.presence.items()):
            record = link.members.get(cid)
            if cid in self.removed:
                withdrawn.append(Override("member_removed_by_teacher", link.section_id, "", clever_id=cid).key)
                if record is not None and record.status == MemberStatus.REMOVED_BY_TEACHER:
                    record = replace(record, status=MemberStatus.ACTIVE)
                    link = link.with_member(record)
            if cid in self.added and email:
                link = replace(link, teacher_added=[e for e in link.teacher_added if e != email.lower()])
                withdrawn.append(Override("member_added_by_teacher", link.section_id, "", email=email.lower()).key)
            if cid == owner or not email:
                continue
            wanted = record is not None and record.status in (MemberStatus.ACTIVE, MemberStatus.LEAVING)
            try:
                if present and not wanted:
                    classroom.remove_member(link.course_id, role, email)
                    self.note(cid, role, email, False, event_id)
                    what = f"removed {role} {cid} again: a newer change committed meanwhile wants them out"
                elif not present and wanted and record is not None and record.email == email:
                    [result] = classroom.add_members(link.course_id, [(record.role, email)])
                    if isinstance(result, ClassroomError):
                        raise result
                    self.note(cid, record.role, email, True, event_id)
                    what = f"added {role} {cid} again: a newer change committed meanwhile wants them in"
                else:
                    continue
            except ClassroomError as err:
                # Not squared now: the run asks for a redelivery, which plans and squares afresh.
                self.failed = err
                log.warning("section %s: could not square member %s: %s", link.section_id, cid, err)
                continue
            log.info("section %s: %s", link.section_id, what)
            trail.append(
                AuditEntry(
                    link.section_id, audit.APPLIED, what, change.event_id, "replan/square", cid, email, link.course_id
                )
            )
        return link, withdrawn, trail


def _ours(link: SectionCourseLink) -> set[str]:
    return {(m.email or "").lower() for m in link.active_members() if m.email}


def superseded_overrides(before: SectionCourseLink | None, after: SectionCourseLink) -> list[str]:
    """The keys of member overrides that Clever's changes in this run made moot: a member a teacher
    removed whose enrollment Clever has now ended (removed_by_teacher -> removed), and a member a
    teacher added whom the sync now manages (in teacher_added, and now one of our active members).
    Nothing is left to respect, and this is also how an override that a concurrent writer recorded
    from our own call in flight (the reconcile pass reading the course between our call and our
    commit) goes away, whichever delivery commits it. Deleted in the same commit: no read."""
    if before is None:
        return []
    keys = [
        Override("member_removed_by_teacher", after.section_id, "", clever_id=cid).key
        for cid, record in after.members.items()
        if record.status == MemberStatus.REMOVED
        and (prev := before.members.get(cid)) is not None
        and prev.status == MemberStatus.REMOVED_BY_TEACHER
    ]
    ours = _ours(after)
    keys += [
        Override("member_added_by_teacher", after.section_id, "", email=email).key
        for email in after.teacher_added
        if email in ours
    ]
    return keys

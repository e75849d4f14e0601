"""The reconcile pass: see what teachers changed by hand in a linked course, then catch up on Clever.

For one linked course it reads the course and its roster from Classroom and compares them with what
we last set (the link). What differs was done by hand and becomes an override that the sync
respects from then on: a new name, a member we added and a teacher removed, members a teacher added
(never touched by us anyway), a declined or archived course. Then it applies the section as Clever
has it now, which also retries members that could not be added before (their Google account may
exist by now).

It runs on demand for one section and on a schedule for all of them, paced so that its reads take
only a share of the Classroom quota, and resuming where the last run stopped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

from rostersync import optimistic
from rostersync.app.applier import Applier, shared_course
from rostersync.domain import audit
from rostersync.domain.changes import RosterChange
from rostersync.domain.links import LinkState, MemberStatus, SectionCourseLink
from rostersync.domain.ports import ClassroomPort, LinkStore
from rostersync.domain.rules import Override, Problem
from rostersync.retry import Deadline

log = logging.getLogger(__name__)
READS_PER_COURSE = 3  # the course, its teachers, its students


class RosterReader(ClassroomPort, Protocol):
    def list_member_emails(self, course_id: str, role: str) -> set[str]: ...


class ReconcileStore(LinkStore, Protocol):
    def linked_section_ids(self, after: str, limit: int) -> list[str]: ...

    def load_reconcile_position(self) -> str: ...

    def save_reconcile_position(self, section_id: str) -> None: ...


class NotReofferable(Exception):
    """Only a declined course can be offered again."""


class NotAdoptable(Exception):
    """The section is linked already, or the course is missing or archived, or Clever lacks the section."""


@dataclass
class ReconcileResult:
    sections: int = 0
    overrides: int = 0
    changes_applied: int = 0
    skipped: int = 0
    finished: bool = True
    details: list[str] = field(default_factory=list)
    guardians: dict = field(default_factory=dict)  # the guardian pass's result (GUARDIANS=invite)

    def to_json(self) -> dict:
        return {**self.__dict__, "details": self.details[:50]}


class Reconciler:
    def __init__(
        self,
        store: ReconcileStore,
        classroom: RosterReader,
        applier: Applier,
        current_section: Callable[[str], RosterChange | None],
        reads_per_minute: int = 300,
        sleep: Callable[[float], None] = time.sleep,
        term_over: Callable[[str], bool] | None = None,
    ):
        # Whether a term ended long enough ago for its sections' courses to be archived.
        self._term_over = term_over
        self._store = store
        self._classroom = classroom
        self._applier = applier
        self._current_section = current_section
        # Pacing: a course costs READS_PER_COURSE reads; this keeps the pass under its share.
        self._seconds_per_course = 60.0 * READS_PER_COURSE / max(1, reads_per_minute)
        self._sleep = sleep

    def reconcile_section(self, section_id: str, result: ReconcileResult | None = None) -> ReconcileResult:
        result = result or ReconcileResult()
        start = getattr(self._classroom, "start_unit_of_work", None)
        if start:
            start()

        def compare_and_save(link: SectionCourseLink | None, attempt: int):
            # Read, compared with Classroom and saved on the condition that no other writer (an
            # applier, a notification) changed the link meanwhile; if one did, compared again
            # from the fresh link: a member the applier just removed is no teacher's removal.
            if link is None or not (link.course_id and link.state == LinkState.ACTIVE):
                return link, [], link
            overrides, problems, after = self._compare(link)
            # A link saved before member_ids existed gets them with its next save (store.save_link);
            # the nightly pass makes one even when nothing else differs: it is the backfill.
            if overrides or problems or after != link or link.unindexed_members:
                trail = [audit.from_override(o, "reconcile", link.course_id) for o in overrides]
                trail += [audit.from_problem(p, link.course_id) for p in problems]
                self._store.save_link(link, after, problems, (), overrides, audit=audit.capped(trail))
            return link, overrides, after

        link, overrides, after = optimistic.run(
            lambda: self._store.load_link(section_id), compare_and_save, f"reconcile of section {section_id}"
        )
        if link is None:
            result.skipped += 1
            result.details.append(f"{section_id}: not linked")
            return result
        result.sections += 1
        if link.course_id and link.state == LinkState.ACTIVE:
            result.overrides += len(overrides)
            result.details += [f"{section_id}: {o.kind}: {o.detail}" for o in overrides]
            if after.state != LinkState.ACTIVE:
                return result
        elif link.state in (LinkState.DELETED, LinkState.DECLINED, LinkState.ARCHIVED):
            result.details.append(f"{section_id}: {link.state.value}; left alone")
            return result
        change = self._current_section(section_id)
        if change is None:
            result.details.append(f"{section_id}: no longer in Clever; its deletion event will follow")
            return result
        term = change.section.term_id
        if term and self._term_over and self._term_over(term):

            def archive_for_term(link: SectionCourseLink | None, attempt: int) -> str | None:
                if not (link and link.course_id):
                    return None
                shared = shared_course(self._store, link)
                if shared and shared.others_active:
                    # Cross-listed sections whose terms go on keep the course: only this section
                    # stops following it, and the last section whose term ends archives it.
                    detail = f"The section's term {term} ended; the course stays for its cross-listed sections"
                    override = Override("term_ended", section_id, detail, course_id=link.course_id)
                    entry = audit.AuditEntry(
                        section_id,
                        audit.SKIPPED,
                        detail,
                        "reconcile",
                        "term_ended/keep_shared",
                        course_id=link.course_id,
                    )
                    self._store.save_link(
                        link, replace(link, state=LinkState.ARCHIVED), (), (), [override], audit=[entry]
                    )
                    return f"{section_id}: term {term} ended; the shared course stays"
                # Archived, never deleted, members left in it: everyone keeps their work. Archiving
                # twice (a re-plan) is the same patch.
                self._classroom.patch_course(link.course_id, {"courseState": "ARCHIVED"})
                override = Override(
                    "term_ended",
                    section_id,
                    f"The section's term {term} ended; the course was archived",
                    course_id=link.course_id,
                )
                entry = audit.AuditEntry(
                    section_id,
                    audit.APPLIED,
                    override.detail,
                    "reconcile",
                    "term_ended/archive_course",
                    course_id=link.course_id,
                )
                self._store.save_link(link, replace(link, state=LinkState.ARCHIVED), (), (), [override], audit=[entry])
                return f"{section_id}: term {term} ended; course archived"

            done = optimistic.run(
                lambda: self._store.load_link(section_id), archive_for_term, f"term end of section {section_id}"
            )
            if done:
                result.details.append(done)
                return result
        outcome = self._applier.apply(change, retry_problems=True)
        result.changes_applied += outcome.calls
        return result

    def sync_new_section(self, section_id: str, result: ReconcileResult | None = None) -> ReconcileResult:
        """A section Clever has and no link yet: applied as Clever has it (its course is created)."""
        result = result or ReconcileResult()
        change = self._current_section(section_id)
        if change is None:
            result.skipped += 1
            result.details.append(f"{section_id}: not in Clever")
            return result
        result.sections += 1
        result.changes_applied += self._applier.apply(change).calls
        return result

    def _compare(self, link: SectionCourseLink) -> tuple[list[Override], list[Problem], SectionCourseLink]:
        course_id = link.course_id
        assert course_id is not None
        course = self._classroom.get_course(course_id)
        if course is None:
            problem = Problem(
                kind="course_missing",
                section_id=link.section_id,
                message=f"Course {course_id} is gone from Classroom (deleted by hand?)",
                hint="Delete the section's link in Firestore to have the sync create a new course",
            )
            return [], [problem], link
        overrides: list[Override] = []

        def note(kind: str, detail: str, **who) -> None:
            overrides.append(Override(kind, link.section_id, detail, course_id=course_id, **who))

        state = course.get("courseState")
        if state in ("DECLINED", "ARCHIVED"):
            note(
                "declined" if state == "DECLINED" else "archived",
                "The teacher declined the course; nothing more is applied until an administrator re-offers it"
                if state == "DECLINED"
                else "The course was archived in Classroom; the sync leaves it alone",
            )
            return overrides, [], replace(link, state=LinkState(state.lower()))
        after = link
        name = course.get("name", "")
        if link.name_set is not None and name != link.name_set and name != link.name_override:
            note("name", f"The teacher renamed the course to {name!r}; Clever's names are no longer applied")
            after = replace(after, name_override=name)
        roster = {role: self._classroom.list_member_emails(course_id, role) for role in ("teacher", "student")}
        owner_email = link.owner.email if link.owner else None
        # A cross-listed course holds its sibling sections' members too: they are not a teacher's.
        ours: set[str] = set(shared.kept) if (shared := shared_course(self._store, link)) else set()
        for record in link.active_members():
            ours.add(record.email or "")
            if record.email and record.email not in roster[record.role] and record.email != owner_email:
                after = after.with_member(replace(record, status=MemberStatus.REMOVED_BY_TEACHER))
                note(
                    "member_removed_by_teacher",
                    f"The teacher removed {record.role} {record.email}; the sync will not add them again "
                    "unless Clever ends and restarts the enrollment",
                    email=record.email,
                    role=record.role,
                    clever_id=record.clever_id,
                )
        known_by_hand = set(link.teacher_added)
        for role, emails in roster.items():
            for email in sorted(emails - ours - known_by_hand - {owner_email}):
                note(
                    "member_added_by_teacher",
                    f"The teacher added {role} {email}; the sync never removes them",
                    email=email,
                    role=role,
                )
        added_by_hand = sorted((roster["teacher"] | roster["student"]) - ours - {owner_email})
        if added_by_hand != link.teacher_added:
            after = replace(after, teacher_added=added_by_hand)
        return overrides, [], after

    def adopt(self, section_id: str, course_id: str) -> ReconcileResult:
        """Links a course a teacher made to a section: the teacher keeps the class and its work, the
        sync manages its members from now on and never its name (the teacher's name is the name
        override). Whoever is in the course now and not in Clever's section stays: teacher-added.
        The caller checks that no other section links the course (a Firestore query)."""
        if self._store.load_link(section_id) is not None:
            raise NotAdoptable(f"section {section_id} is already linked to a course; adopt links new sections only")
        course = self._classroom.get_course(course_id)
        if course is None:
            raise NotAdoptable(f"course {course_id} does not exist in Classroom")
        state = course.get("courseState")
        if state in ("ARCHIVED", "DECLINED", "SUSPENDED"):
            raise NotAdoptable(f"course {course_id} is {state}; only an active or provisioned course can be adopted")
        change = self._current_section(section_id)
        if change is None:
            raise NotAdoptable(f"section {section_id} is not in Clever")
        course_id = str(course["id"])
        name = str(course.get("name") or "")
        existing = sorted(self._classroom.list_member_emails(course_id, "teacher")) + sorted(
            self._classroom.list_member_emails(course_id, "student")
        )
        link = replace(
            SectionCourseLink.new(section_id),
            state=LinkState.ACTIVE,
            course_id=course_id,
            section_name=change.section.name,
            name_set=name,
            name_override=name,
            teacher_added=existing,
        )
        detail = f"An administrator linked the teacher's course {course_id} ({name!r}); its name stays the teacher's"
        overrides = [
            Override(
                "name",
                section_id,
                f"The teacher named the course {name!r}; Clever's names are not applied",
                course_id=course_id,
            ),
            Override("adopted", section_id, detail, course_id=course_id),
        ]
        entry = audit.AuditEntry(section_id, audit.APPLIED, detail, "admin", "adopt/link_course", course_id=course_id)
        try:
            # Created only if no link exists (the precondition of a None `before`): another writer
            # that linked the section meanwhile wins, and the administrator is told.
            self._store.save_link(None, link, (), (), overrides, audit=[entry])
        except optimistic.StaleWrite:
            raise NotAdoptable(f"section {section_id} was linked meanwhile; adopt links new sections only") from None
        result = ReconcileResult(sections=1, details=[f"{section_id}: adopted course {course_id}"])
        result.changes_applied += self._applier.apply(change, retry_problems=True).calls
        return result

    def link_sections(self, section_ids: Sequence[str], course_ref: str, sections_with_course) -> ReconcileResult:
        """Cross-listed sections share one course: each section's link points at it and names the
        others (shared_with), then each section is applied as Clever has it, so the course holds
        their union. The course keeps its name and owner. A section may come from no course, from
        this one, or from one that was archived or declined; one following another live course is
        refused, as is leaving out a section that already follows this course."""
        ids = list(dict.fromkeys(section_ids))
        if len(ids) < 2:
            raise NotAdoptable("link needs at least two sections to share one course (adopt links one)")
        course = self._classroom.get_course(course_ref)
        if course is None:
            raise NotAdoptable(f"course {course_ref} does not exist in Classroom")
        state = course.get("courseState")
        if state in ("ARCHIVED", "DECLINED", "SUSPENDED"):
            raise NotAdoptable(f"course {course_ref} is {state}; only an active or provisioned course can be shared")
        course_id, name = str(course["id"]), str(course.get("name") or "")
        left_out = sorted(set(sections_with_course(course_id)) - set(ids))
        if left_out:
            raise NotAdoptable(f"course {course_id} already follows section {left_out[0]}: list it too")
        current: dict[str, RosterChange] = {}
        befores: dict[str, SectionCourseLink | None] = {}
        for section_id in ids:
            change = self._current_section(section_id)
            if change is None:
                raise NotAdoptable(f"section {section_id} is not in Clever")
            before = self._store.load_link(section_id)
            live = before is not None and before.state in (LinkState.ACTIVE, LinkState.OWNER_PROBLEM)
            if live and before.course_id not in (None, course_id):
                raise NotAdoptable(
                    f"section {section_id} follows course {before.course_id}: archive that course first, "
                    "or leave the section out"
                )
            current[section_id], befores[section_id] = change, before
        result = ReconcileResult(sections=len(ids))

        def share(before: SectionCourseLink | None, attempt: int) -> None:
            section_id = current_id[0]
            live = before is not None and before.state in (LinkState.ACTIVE, LinkState.OWNER_PROBLEM)
            if attempt and live and before.course_id not in (None, course_id):
                # Checked above already; a re-plan checks the fresh link again.
                raise NotAdoptable(f"section {section_id} now follows course {before.course_id}: leave it out")
            if before is None:
                base = SectionCourseLink.new(section_id)
            elif before.course_id == course_id:
                base = before
            else:
                # Moving from an archived or declined course: what we knew of that course's members
                # no longer holds for this one (and the saved link is merged field by field, so the
                # old records are marked, not dropped): everyone is added to the shared course anew.
                base = replace(
                    SectionCourseLink.new(section_id),
                    members={cid: replace(m, status=MemberStatus.REMOVED) for cid, m in before.members.items()},
                )
            after = replace(
                base,
                state=LinkState.ACTIVE,
                course_id=course_id,
                section_name=current[section_id].section.name,
                name_set=base.name_set if base.name_set is not None else name,
                name_override=name,
                shared_with=[other for other in ids if other != section_id],
            )
            detail = (
                f"An administrator cross-listed this section with {', '.join(after.shared_with)} in course "
                f"{course_id} ({name!r}): its members are the union, its name and owner stay"
                + (
                    f"; it no longer follows course {before.course_id}"
                    if before and before.course_id not in (None, course_id)
                    else ""
                )
            )
            override = Override("cross_listed", section_id, detail, course_id=course_id)
            entry = audit.AuditEntry(
                section_id, audit.APPLIED, detail, "admin", "link/share_course", course_id=course_id
            )
            self._store.save_link(before, after, (), (), [override], audit=[entry])

        current_id = [""]
        for section_id in ids:
            current_id[0] = section_id
            optimistic.run(lambda: self._store.load_link(current_id[0]), share, f"link of section {section_id}")
            result.details.append(f"{section_id}: shares course {course_id}")
        for section_id in ids:
            result.changes_applied += self._applier.apply(current[section_id], retry_problems=True).calls
        return result

    def reoffer(self, section_id: str) -> ReconcileResult:
        """An administrator offers a declined course to its teacher again: back to PROVISIONED (the
        only state Classroom allows after DECLINED), then caught up with Clever. Saved on the
        condition that the link is still the declined one read; a re-plan checks it again (the
        patch is the same patch twice)."""
        start = getattr(self._classroom, "start_unit_of_work", None)
        if start:
            start()

        def provision(link: SectionCourseLink | None, attempt: int) -> None:
            if link is None or link.state != LinkState.DECLINED or not link.course_id:
                state = "not linked" if link is None else link.state.value
                raise NotReofferable(f"section {section_id} is {state}, not declined: nothing to re-offer")
            self._classroom.patch_course(link.course_id, {"courseState": "PROVISIONED"})
            override = Override(
                "reoffered",
                section_id,
                "An administrator re-offered the declined course; it is PROVISIONED and syncs again",
                course_id=link.course_id,
            )
            entry = audit.AuditEntry(
                section_id,
                audit.APPLIED,
                override.detail,
                "admin",
                "reoffer/provision_course",
                course_id=link.course_id,
            )
            self._store.save_link(link, replace(link, state=LinkState.ACTIVE), (), (), [override], audit=[entry])

        optimistic.run(lambda: self._store.load_link(section_id), provision, f"re-offer of section {section_id}")
        result = ReconcileResult(details=[f"{section_id}: re-offered"])
        return self.reconcile_section(section_id, result)

    def reconcile_all(
        self, deadline: Deadline, batch: int = 100, on_section: Callable[[str], None] | None = None
    ) -> ReconcileResult:
        """Every linked section, paced, from where the last run stopped; wraps around at the end.
        on_section (the CLI's progress bar) hears of each section done."""
        result = ReconcileResult(finished=False)
        position = self._store.load_reconcile_position()
        while not deadline.expired():
            ids = self._store.linked_section_ids(position, batch)
            if not ids:
                result.finished = True
                position = ""
                break
            for section_id in ids:
                if deadline.remaining() < self._seconds_per_course + 5:
                    self._store.save_reconcile_position(position)
                    return result
                started = time.monotonic()
                try:
                    self.reconcile_section(section_id, result)
                except Exception as exc:  # one bad course must not stop the pass
                    log.exception("reconcile of section %s failed", section_id)
                    result.details.append(f"{section_id}: failed: {type(exc).__name__}")
                position = section_id
                if on_section:
                    on_section(section_id)
                spare = self._seconds_per_course - (time.monotonic() - started)
                if spare > 0:
                    self._sleep(spare)
        self._store.save_reconcile_position(position)
        return result


def reconcile_targets(body: object) -> Sequence[str] | None:
    """The sections a request names ({"section_id": ...} or {"section_ids": [...]}), None for all."""
    if not isinstance(body, dict):
        return None
    if isinstance(body.get("section_id"), str) and body["section_id"]:
        return [body["section_id"]]
    ids = body.get("section_ids")
    if isinstance(ids, list) and all(isinstance(i, str) and i for i in ids):
        return ids
    return None

"""Applies one student's guardian changes: load the records, plan (guardians.py), call Classroom,
save the records, problems and audit trail in one commit.

Like the roster applier: a refusal that will not get better is a problem (acknowledged); a
transient fault that outlived the retries saves what succeeded and asks for a redelivery, which
repeats no call (the saved records say what is done, and Classroom's ALREADY_EXISTS covers a crash
between a call and the save).

Before a create the applier records its intent (state `inviting`, origin sync, the deciding event,
with a precondition; one commit for a change's invitations). A redelivery after a crash between the
create and the save finds the intent, and the invitation Classroom answers ALREADY_EXISTS for (made
after the intent) is adopted as the sync's: withdrawn or removed when the relationship ends. Without
an intent of ours, ALREADY_EXISTS is someone else's invitation (origin existing, never touched). The
intent costs one document write per new invitation and none for a change that invites nobody.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Protocol

from rostersync.app.applier import ApplyOutcome
from rostersync.domain import audit
from rostersync.domain.audit import AuditEntry
from rostersync.domain.guardians import (
    GuardianChange,
    GuardianRecord,
    GuardianState,
    Invite,
    RemoveGuardian,
    StaleRecords,
    Withdraw,
    ended_invitation_state,
    guardian_key,
    guardian_problem_key,
    plan_guardians,
    sent_after_intent,
)
from rostersync.domain.ports import ClassroomError
from rostersync.domain.rules import Problem

log = logging.getLogger(__name__)

# Classroom's answers to guardianInvitations.create, as the discovery document lists them.
REFUSAL_HINTS = {
    "PERMISSION_DENIED": (
        "guardian_access_off",
        "Turn on guardian access for the domain (Admin console > Classroom > Guardian settings) and "
        "check the sync's admin may manage guardians; if it is on, the guardian has declined too many "
        "invitations for this student. The nightly reconcile tries again",
    ),
    "RESOURCE_EXHAUSTED": (
        "guardian_link_limit",
        "The student or the guardian has reached Classroom's guardian link limit (20 a student); "
        "remove a guardian in Classroom or in the SIS",
    ),
    "INVALID_ARGUMENT": (
        "guardian_email_invalid",
        "Classroom does not accept this address (malformed or too long); fix the contact's email in the SIS",
    ),
    "NOT_FOUND": (
        "guardian_student_not_in_classroom",
        "Classroom has no such student: create the student's Google account or fix the email in the SIS",
    ),
}


DECLINED_REASON = "declined, or withdrawn in Classroom, before it expired; not sent again"
DECLINED_HINT = (
    "Ask the family; the guardian can be invited in Classroom by hand, or the sync invites again once "
    "the relationship ends and starts again in the SIS"
)


class GuardianClassroom(Protocol):
    def invite_guardian(self, student: str, email: str) -> dict: ...

    def guardian_invitations(self, student: str, email: str | None = None, states=("PENDING",)) -> list[dict]: ...

    def withdraw_guardian_invitation(self, student: str, invitation_id: str) -> dict: ...

    def guardians(self, student: str, email: str | None = None) -> list[dict]: ...

    def remove_guardian(self, student: str, guardian_id: str) -> str: ...


class GuardianStore(Protocol):
    def load_guardian_records(self, student_id: str) -> list[GuardianRecord]: ...

    def record_guardian_intents(
        self, before: Sequence[GuardianRecord], intents: Sequence[GuardianRecord]
    ) -> list[GuardianRecord]: ...

    def save_guardian_records(
        self,
        before: Sequence[GuardianRecord],
        after: Sequence[GuardianRecord],
        problems: Sequence[Problem] = (),
        resolved: Sequence[str] = (),
        audit: Sequence[AuditEntry] = (),
    ) -> None: ...


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _iso(when: dt.datetime) -> str:
    return when.isoformat(timespec="seconds").replace("+00:00", "Z")


class GuardianApplier:
    def __init__(
        self,
        store: GuardianStore,
        classroom: GuardianClassroom,
        reinvite_days: int = 30,
        clock: Callable[[], dt.datetime] = _now,
    ):
        self._store = store
        self._classroom = classroom
        self._reinvite_days = reinvite_days
        self._clock = clock

    def apply_all(
        self,
        changes: list[GuardianChange],
        retry_problems: bool = False,
        refresh: bool = False,
        admit_end: Callable[[GuardianChange], bool] | None = None,
    ) -> ApplyOutcome:
        """One student's changes in order, with one Firestore read and one commit. With `refresh`
        (the reconcile pass), pending invitations are first read back from Classroom: accepted
        and expired ones are noticed. With `admit_end` (the reconcile pass's mass-change brake), a
        change whose plan withdraws or removes a guardian is asked about first; refused, it is
        left out whole (the brake holds it for an administrator)."""
        start = getattr(self._classroom, "start_unit_of_work", None)
        if start:
            start()
        student_id = changes[0].student.clever_id
        before = self._store.load_guardian_records(student_id)
        run = _Run(self._classroom, self._store, before, self._clock())
        if refresh and changes[0].student.email:
            run.refresh(changes[0])
        notes: list[str] = []
        for change in changes:
            p = plan_guardians(change, list(run.records.values()), run.now, self._reinvite_days, retry_problems)
            ends = any(isinstance(op, (Withdraw, RemoveGuardian)) for op in p.ops)
            if ends and admit_end is not None and not admit_end(change):
                note = f"guardian removals for student {student_id} held by the mass-change brake"
                notes.append(note)
                run.trail.append(AuditEntry(change.section_id, audit.SKIPPED, note, change.event_id, change.kind.value))
                continue
            run.records = p.records
            notes += p.notes
            run.problems += p.problems
            run.resolved += p.resolved
            run.trail += [
                AuditEntry(change.section_id, audit.note_outcome(n), n, change.event_id, change.kind.value)
                for n in p.notes
            ]
            run.trail += [audit.from_problem(pr, None) for pr in p.problems]
            try:
                run.execute(change, p.ops)
            except StaleRecords as exc:
                # The intent could not be recorded (another writer for this student): no call was
                # made for this change; the redelivery reads the records again.
                log.warning("guardians of student %s changed meanwhile; applying again", student_id)
                return ApplyOutcome("retry", str(exc), run.calls)
            if run.transient:
                break
        problems = {p.key: p for p in run.problems}
        resolved = sorted(set(run.resolved) - set(problems))
        try:
            self._store.save_guardian_records(
                list(run.stored.values()),
                list(run.records.values()),
                list(problems.values()),
                resolved,
                audit.capped(run.trail),
            )
        except StaleRecords as exc:
            # Another writer (the reconcile pass, a redelivery) saved first: the redelivery re-reads
            # its records; the calls already made are found done (ALREADY_EXISTS, not pending).
            log.warning("guardians of student %s changed meanwhile; applying again", student_id)
            return ApplyOutcome("retry", str(exc), run.calls)
        for problem in problems.values():
            log.warning(
                "guardian problem %s for student %s, contact %s: %s",
                problem.kind,
                student_id,
                problem.clever_id,
                problem.reason or problem.kind,
            )
        if run.transient:
            return ApplyOutcome("retry", str(run.transient), run.calls, list(problems.values()))
        return ApplyOutcome("applied", "; ".join(notes), run.calls, list(problems.values()))


class _Run:
    def __init__(
        self, classroom: GuardianClassroom, store: GuardianStore, before: list[GuardianRecord], now: dt.datetime
    ):
        self.classroom = classroom
        self.store = store
        self.records = {r.email: r for r in before}
        # The records as stored now (with their versions): the final save's preconditions.
        self.stored = {r.email: r for r in before}
        # Each invited address's record as it was before this run wrote its intent.
        self.before_intent: dict[str, GuardianRecord | None] = {}
        self.now = now
        self.calls = 0
        self.problems: list[Problem] = []
        self.resolved: list[str] = []
        self.trail: list[AuditEntry] = []
        self.transient: ClassroomError | None = None

    def _audit(self, change: GuardianChange, outcome: str, what: str, kind: str, record_or_contact) -> None:
        self.trail.append(
            AuditEntry(
                change.section_id,
                outcome,
                what,
                change.event_id,
                f"{change.kind.value}/{kind}",
                getattr(record_or_contact, "contact_id", None) or getattr(record_or_contact, "clever_id", None),
                record_or_contact.email,
            )
        )

    def refresh(self, change: GuardianChange) -> None:
        """Reads back what Classroom has for the student's recorded guardians: the pending
        invitations (1 call, only when a record is pending) and the student's guardians (1 call,
        when a record is pending or a guardian the sync invited is accepted). An accepted
        invitation becomes `accepted`, one gone without a guardian `expired`, and an accepted
        guardian the sync invited that is no longer there `removed_by_hand`."""
        waiting = [r for r in self.records.values() if r.state == GuardianState.PENDING]
        accepted = [r for r in self.records.values() if r.origin == "sync" and r.state == GuardianState.ACCEPTED]
        if not waiting and not accepted:
            return
        student = change.student.email or ""
        try:
            invitations: dict = {}
            if waiting:
                # COMPLETE ones too (one call): their creationTime tells expired from declined.
                self.calls += 1
                listed_invitations = self.classroom.guardian_invitations(student, states=("PENDING", "COMPLETE"))
                invitations = {str(i.get("invitationId") or ""): i for i in listed_invitations}
            self.calls += 1
            listed = self.classroom.guardians(student)
        except ClassroomError as err:
            if err.retryable:
                self.transient = err
            log.warning("guardians of student %s not read back: %s", change.student.clever_id, err.status)
            return
        guardians = {(g.get("invitedEmailAddress") or "").strip().lower(): g for g in listed}
        guardian_ids = {str(g.get("guardianId") or "") for g in listed}
        for record in waiting + accepted:
            guardian = guardians.get(record.email)
            if record.state == GuardianState.ACCEPTED:
                if guardian is None and record.guardian_id not in guardian_ids:
                    # Only a person does this (the sync removes only when the relationship ends).
                    self.records[record.email] = replace(record, state=GuardianState.REMOVED_BY_HAND)
                    self._audit(
                        change,
                        audit.OVERRIDE_SEEN,
                        f"guardian {record.contact_id} was removed in Classroom by hand; not invited again "
                        "while the relationship lasts",
                        "removed_by_hand",
                        record,
                    )
            elif guardian:
                self.records[record.email] = replace(
                    record, state=GuardianState.ACCEPTED, guardian_id=str(guardian.get("guardianId") or "")
                )
                self._audit(change, audit.APPLIED, f"guardian {record.contact_id} accepted", "accepted", record)
            elif (invitations.get(record.invitation_id) or {}).get("state") != "PENDING":
                invitation = invitations.get(record.invitation_id) or {}
                state = ended_invitation_state(str(invitation.get("creationTime") or record.invited_at), self.now)
                if state == GuardianState.EXPIRED:
                    self.records[record.email] = replace(record, state=state)
                    what = f"invitation to guardian {record.contact_id} expired"
                else:
                    self.records[record.email] = replace(record, state=state, reason=DECLINED_REASON)
                    what = f"invitation to guardian {record.contact_id} {DECLINED_REASON}. {DECLINED_HINT}"
                self._audit(change, audit.SKIPPED, what, state.value, record)

    def _record_intents(self, change: GuardianChange, invites: list[Invite]) -> None:
        """Writes `inviting` for each address about to be invited, in one commit with preconditions
        (StaleRecords if another writer changed them since they were read: nothing is called)."""
        student = change.student
        intents = []
        for op in invites:
            email = op.contact.email or ""
            previous = self.records.get(email)
            self.before_intent[email] = previous
            retried = previous is not None and previous.state == GuardianState.INVITING and previous.invited_at
            intents.append(
                GuardianRecord(
                    student.clever_id,
                    email,
                    op.contact.clever_id,
                    GuardianState.INVITING,
                    change.event_id,
                    origin="sync",
                    student_email=student.email,
                    invitation_id=previous.invitation_id if previous else "",
                    # The first intent's time: an invitation made before it is not ours.
                    invited_at=previous.invited_at if retried and previous else _iso(self.now),
                    source=change.source,
                )
            )
        stored = [self.stored[i.email] for i in intents if i.email in self.stored]
        for written in self.store.record_guardian_intents(stored, intents):
            self.stored[written.email] = written
            self.records[written.email] = written

    def execute(self, change: GuardianChange, ops) -> None:
        intents_recorded = False
        for op in ops:
            if self.transient:
                return
            if isinstance(op, Invite) and not intents_recorded:
                self._record_intents(change, [o for o in ops if isinstance(o, Invite)])
                intents_recorded = True
            try:
                if isinstance(op, Invite):
                    self._invite(change, op)
                elif isinstance(op, Withdraw):
                    self._withdraw(change, op.record)
                elif isinstance(op, RemoveGuardian):
                    self._remove(change, op.record)
            except ClassroomError as err:
                if err.retryable:
                    self.transient = err
                    self._audit(change, audit.DEFERRED, str(err), type(op).__name__.lower(), _who(op))
                    return
                self._refused(change, op, err)

    def _invite(self, change: GuardianChange, op: Invite) -> None:
        contact, student = op.contact, change.student
        email = contact.email or ""
        previous = self.before_intent.get(email)
        ours = previous is not None and previous.origin == "sync"
        base = GuardianRecord(
            student.clever_id,
            email,
            contact.clever_id,
            GuardianState.PENDING,
            change.event_id,
            origin="sync",
            student_email=student.email,
            source=change.source,
        )
        self.calls += 1
        try:
            invitation = self.classroom.invite_guardian(student.email or "", email)
        except ClassroomError as err:
            if not err.already_exists:
                raise
            self._adopt_existing(change, base, previous, ours)
            return
        self.records[email] = replace(
            base, invitation_id=str(invitation.get("invitationId") or ""), invited_at=_iso(self.now)
        )
        if previous and previous.state == GuardianState.PROBLEM:
            self.resolved.append(guardian_problem_key(student.clever_id, contact.clever_id))
        self._audit(change, audit.APPLIED, f"invite guardian {contact.clever_id} for the student", "invite", contact)

    def _adopt_existing(
        self, change: GuardianChange, base: GuardianRecord, previous: GuardianRecord | None, ours: bool
    ) -> None:
        """ALREADY_EXISTS: a pending invitation or a guardian for that address. Success; the
        existing one is recorded, as ours only if our record says we invited it: its invitation id,
        or an intent of ours left by an earlier attempt (a crash between the create and the save)
        with the invitation made after it. The intent this attempt just wrote does not count: the
        create it preceded was refused, so the invitation is someone else's."""
        student, email = change.student.email or "", base.email
        intended = previous is not None and previous.state == GuardianState.INVITING and previous.origin == "sync"
        since = previous.invited_at if previous else ""
        self.calls += 1
        pending = self.classroom.guardian_invitations(student, email)
        if pending:
            invitation_id = str(pending[0].get("invitationId") or "")
            mine = (ours and previous is not None and previous.invitation_id == invitation_id) or (
                intended and sent_after_intent(str(pending[0].get("creationTime") or ""), since)
            )
            self.records[email] = replace(
                base,
                invitation_id=invitation_id,
                invited_at=previous.invited_at if previous else "",
                origin="sync" if mine else "existing",
            )
        else:
            self.calls += 1
            found = self.classroom.guardians(student, email)
            if not found:
                raise ClassroomError(503, "UNAVAILABLE", "ALREADY_EXISTS but no invitation or guardian found yet")
            mine = ours and previous is not None and previous.state in (GuardianState.PENDING, GuardianState.ACCEPTED)
            if not mine and intended:
                # Accepted since the crash: ours if an invitation made after the intent completed.
                self.calls += 1
                done = self.classroom.guardian_invitations(student, email, states=("COMPLETE",))
                mine = any(sent_after_intent(str(i.get("creationTime") or ""), since) for i in done)
            self.records[email] = replace(
                base,
                state=GuardianState.ACCEPTED,
                guardian_id=str(found[0].get("guardianId") or ""),
                invitation_id=previous.invitation_id if previous else "",
                invited_at=previous.invited_at if previous else "",
                origin="sync" if mine else "existing",
            )
        if previous and previous.state == GuardianState.PROBLEM:
            self.resolved.append(guardian_problem_key(base.student_id, base.contact_id))
        whose = "as the sync's" if self.records[email].origin == "sync" else "as someone else's (never touched)"
        self._audit(
            change,
            audit.APPLIED,
            f"guardian {base.contact_id} already invited or a guardian: recorded {whose}",
            "invite",
            base,
        )

    def _end_intent(self, change: GuardianChange, record: GuardianRecord) -> None:
        """The relationship ended while an intent's outcome was unsaved (a crash after the intent):
        the invitation made after the intent, if any, is ours and is withdrawn (or its guardian
        removed); anything older is someone else's and stays."""
        student = change.student.email or record.student_email or ""
        self.calls += 1
        pending = self.classroom.guardian_invitations(student, record.email)
        mine = [i for i in pending if sent_after_intent(str(i.get("creationTime") or ""), record.invited_at)]
        if mine:
            invitation_id = str(mine[0].get("invitationId") or "")
            self._withdraw(change, replace(record, state=GuardianState.PENDING, invitation_id=invitation_id))
            return
        self.calls += 1
        found = self.classroom.guardians(student, record.email)
        if found:
            self.calls += 1
            done = self.classroom.guardian_invitations(student, record.email, states=("COMPLETE",))
            if any(sent_after_intent(str(i.get("creationTime") or ""), record.invited_at) for i in done):
                guardian_id = str(found[0].get("guardianId") or "")
                self._remove(change, replace(record, state=GuardianState.ACCEPTED, guardian_id=guardian_id))
                return
        self.records[record.email] = replace(record, state=GuardianState.WITHDRAWN, event_id=change.event_id)
        what = f"no invitation of the sync's to guardian {record.contact_id} found; nothing to withdraw"
        self._audit(change, audit.APPLIED, what, "withdraw", record)

    def _withdraw(self, change: GuardianChange, record: GuardianRecord) -> None:
        if record.state == GuardianState.INVITING:
            self._end_intent(change, record)
            return
        student = change.student.email or record.student_email or ""
        self.calls += 1
        try:
            self.classroom.withdraw_guardian_invitation(student, record.invitation_id)
        except ClassroomError as err:
            if err.not_found:
                pass  # gone already
            elif err.status == "FAILED_PRECONDITION" or err.http_status == 400:
                # No longer pending: accepted (then the guardian goes) or expired meanwhile.
                self.calls += 1
                found = self.classroom.guardians(student, record.email)
                if found:
                    self._remove(change, replace(record, guardian_id=str(found[0].get("guardianId") or "")))
                    return
            else:
                raise
        self.records[record.email] = replace(record, state=GuardianState.WITHDRAWN, event_id=change.event_id)
        what = f"withdraw the invitation to guardian {record.contact_id}"
        self._audit(change, audit.APPLIED, what, "withdraw", record)

    def _remove(self, change: GuardianChange, record: GuardianRecord) -> None:
        student = change.student.email or record.student_email or ""
        guardian_id = record.guardian_id
        if not guardian_id:
            self.calls += 1
            found = self.classroom.guardians(student, record.email)
            guardian_id = str(found[0].get("guardianId") or "") if found else ""
        if guardian_id:
            self.calls += 1
            self.classroom.remove_guardian(student, guardian_id)
        self.records[record.email] = replace(record, state=GuardianState.REMOVED, event_id=change.event_id)
        self._audit(change, audit.APPLIED, f"remove guardian {record.contact_id}", "remove", record)

    def _refused(self, change: GuardianChange, op, err: ClassroomError) -> None:
        who = _who(op)
        kind, hint = REFUSAL_HINTS.get(err.status, ("guardian_rejected", "See the reason"))
        action = {"Invite": "invite", "Withdraw": "withdraw the invitation to", "RemoveGuardian": "remove"}[
            type(op).__name__
        ]
        contact_id = getattr(who, "contact_id", None) or getattr(who, "clever_id", None)
        problem = Problem(
            kind=kind,
            section_id=guardian_key(change.student.clever_id),
            clever_id=contact_id,
            email=who.email,
            role="guardian",
            reason=err.reason or err.status,
            event_id=change.event_id,
            message=f"Classroom refused to {action} guardian {contact_id} of student "
            f"{change.student.clever_id}: {err.message}",
            hint=hint,
        )
        self.problems.append(problem)
        self.trail.append(audit.from_problem(problem, None))
        if isinstance(op, Invite):
            email = op.contact.email or ""
            previous = self.before_intent.get(email, self.records.get(email))
            self.records[email] = GuardianRecord(
                change.student.clever_id,
                email,
                op.contact.clever_id,
                GuardianState.PROBLEM,
                change.event_id,
                origin=previous.origin if previous else "sync",
                student_email=change.student.email,
                invitation_id=previous.invitation_id if previous else "",
                invited_at=previous.invited_at if previous else "",
                reason=err.reason or err.status,
                source=change.source,
            )


def _who(op):
    return op.contact if isinstance(op, Invite) else op.record

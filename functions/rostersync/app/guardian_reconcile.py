"""The guardian part of the nightly reconcile pass (GUARDIANS=invite).

Reads every contact from the source once (paged), and for each student a contact names, or we hold
guardian records for, applies one complete guardian change. Classroom is read back first: the
invitations and guardians (2 calls) for a student with one pending, the guardians (1 call) for a
student whose sync-invited guardians all accepted, nothing for the others. So accepted invitations
become `accepted`, expired ones are sent again (at most once per GUARDIAN_REINVITE_DAYS), declined
ones are recorded and left, and accepted guardians someone removed by hand are `removed_by_hand`
and left; invitations Classroom refused are tried again (guardian access turned on since, a limit
freed); guardians of ours that no contact names any more end.

The mass-change brake covers it as it covers the poller: each student's change is planned before
any Classroom call, and once the changes that would withdraw or remove a guardian pass
max(BRAKE_MIN_REMOVALS, BRAKE_TOTAL_PERCENT of the guardian links counted at the bootstrap), the
rest are held in one batch (`rostersync held / approve / discard`). The next night's pass, still
reading the same contacts, holds them again in a new batch until an administrator decides.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import asdict, dataclass

from rostersync.domain.brake import BrakeSettings, GuardianBrake
from rostersync.domain.sources.clever_contacts import contact_students, district_guardian_changes
from rostersync.retry import Deadline

log = logging.getLogger(__name__)

BEGINNING = "0" * 24  # poller.BEGINNING


@dataclass
class GuardianReconcileResult:
    outcome: str = "ok"  # "ok" | "partial" (time budget spent)
    students: int = 0
    calls: int = 0
    problems: int = 0
    retried: int = 0  # students whose changes asked for a redelivery (transient faults): next night
    held: int = 0  # students whose guardian removals the brake held for an administrator
    held_batch: str = ""

    def to_json(self) -> dict:
        return asdict(self)


class GuardianReconciler:
    def __init__(self, clever, users, store, applier, types: tuple[str, ...], brake: BrakeSettings | None = None):
        self._clever = clever
        self._users = users
        self._store = store
        self._applier = applier
        self._types = types
        self._brake = brake  # None: no brake (the dry run, which writes nothing anyway)

    def changes(self, only: Iterable[str] | None = None) -> list:
        contacts = [c for page in self._clever.contact_pages() for c in page if isinstance(c, dict)]
        known = self._store.guardian_student_ids()
        students = {sid for c in contacts for sid in contact_students(c, self._types)} | known
        if only is not None:
            students &= set(only)
            known &= set(only)
            contacts = [c for c in contacts if set(contact_students(c, self._types)) & students]
        emails = self._users.emails(students)
        cursor = self._store.load_cursor()
        # The contacts as of now stand for every event published so far.
        marker = (cursor.last_event_id if cursor else "") or BEGINNING
        changes = district_guardian_changes(contacts, emails, self._types, marker, "", also_students=known)
        return [c for c in changes if only is None or c.student.clever_id in students]

    def reconcile_all(self, deadline: Deadline | None = None, only: Iterable[str] | None = None):
        result = GuardianReconcileResult()
        changes = self.changes(only)
        brake = None
        if self._brake is not None:
            cursor = self._store.load_cursor()
            brake = GuardianBrake(self._brake, cursor.guardians if cursor else 0)
        try:
            for change in changes:
                if deadline is not None and deadline.expired():
                    result.outcome = "partial"
                    break
                try:
                    outcome = self._applier.apply_all(
                        [change], retry_problems=True, refresh=True, admit_end=brake.admit if brake else None
                    )
                except Exception:  # one student's failure (Firestore, Classroom) must not stop the pass
                    log.exception("guardian reconcile of student %s failed", change.student.clever_id)
                    result.retried += 1
                    continue
                result.students += 1
                result.calls += outcome.calls
                result.problems += len(outcome.problems)
                result.retried += 0 if outcome.ack else 1
        finally:
            # Held even when the pass stops early: nothing the brake kept back is dropped (and the
            # next pass, a complete restatement, finds whatever this one did not reach).
            if brake is not None and brake.held:
                result.held = len(brake.held)
                result.held_batch = self._store.hold_changes(brake.reasons, brake.held)
                log.error(
                    "MASS GUARDIAN REMOVAL HELD: %d students (batch %s): %s",
                    result.held,
                    result.held_batch,
                    "; ".join(brake.reasons)[:500],
                )
        log.info("guardian reconcile: %s", result.to_json())
        return result

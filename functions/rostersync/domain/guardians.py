"""Guardians from the SIS: the guardian change, the guardian record and the pure rules between them.

A guardian change says, for one student, which contacts should be the student's Classroom
guardians (`wanted`, each with the email to invite) and which no longer should (`ended`, each with
the email they had). A change from a bootstrap or the reconcile pass is `complete`: `wanted` is the
student's whole list, so any guardian the sync invited that is not in it ends too.

It travels like any roster change (poller -> Pub/Sub -> apply_roster_event), with its own schema
number and the ordering key `guardians-<student id>`, so one student's guardian changes apply in
order and never wait behind a section.

The record (`GuardianRecord`, one per student and invited address, Firestore `guardians/`) keeps
the state Classroom gave the pair and the Clever event that decided it.

Why every change is safe twice, late and out of order:
- Classroom answers a second invitation for the same pair with ALREADY_EXISTS: that is success,
  and the existing invitation (or guardian) is recorded instead. Before each create the sync
  records its intent (state `inviting`, with a precondition), so after a crash between the create
  and the save the redelivery knows the invitation it finds is its own.
- Each record remembers the event that last decided it; an older change for the same address is
  stale and skipped. An ended contact with no record yet still gets one (state `withdrawn`), so an
  older "invite" arriving after it cannot revive the pair.
- Only guardians the sync invited (`origin` "sync") are ever withdrawn or removed. An address that
  Classroom already knew (ALREADY_EXISTS with no record of ours: added by hand or another tool) is
  recorded with origin "existing" and never touched.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from typing import Any

from rostersync.domain.changes import InvalidChange, Person, normalize_email
from rostersync.domain.docids import doc_id
from rostersync.domain.rules import Problem

# Roster messages use 1, 2 and 3 (changes.py: one change, a batch, a batch with one shared snapshot).
GUARDIAN_SCHEMA = 4
BATCH_SCHEMA = 2  # changes.BATCH_SCHEMA_VERSION: several changes under one ordering key
KEY_PREFIX = "guardians-"
DEFAULT_RELATIONSHIP_TYPES = ("Parent/Guardian", "Primary")
INVITATION_LIFETIME_DAYS = 120  # Classroom's


class GuardianKind(StrEnum):
    # A student's guardians as the source has them now (nothing ends).
    GUARDIANS_WANTED = "guardians_wanted"
    # Some of the student's guardians end (a relationship ended, a contact deleted or re-addressed):
    # counted as removals by the mass-change brake.
    GUARDIAN_REMOVED = "guardian_removed"


class GuardianState(StrEnum):
    # The sync is about to send the invitation: written (with a precondition) before the create
    # call, so an ALREADY_EXISTS after a crash between the create and the save is known to be ours.
    INVITING = "inviting"
    PENDING = "pending"  # invited; the guardian has not answered
    ACCEPTED = "accepted"  # a Classroom guardian now
    EXPIRED = "expired"  # the invitation ran out (120 days); re-sent at most once a period
    # The invitation ended (COMPLETE) before its 120 days without a guardian appearing: declined, or
    # withdrawn in Classroom by someone else. Not sent again until the relationship starts again.
    DECLINED = "declined"
    WITHDRAWN = "withdrawn"  # the relationship ended before it was accepted (or before any invitation)
    REMOVED = "removed"  # the relationship ended after it was accepted: the guardian was removed
    PROBLEM = "problem"  # Classroom refused the invitation; see `reason` and problems/
    RELEASED = "released"  # not ours (origin existing) and no longer wanted: left as it is
    # Accepted, then removed in Classroom by a person (a teacher, an admin, the parent unlinking).
    # A human's change wins: never invited again unless the relationship ends and starts again.
    REMOVED_BY_HAND = "removed_by_hand"


LIVE = (GuardianState.PENDING, GuardianState.ACCEPTED)
# A person's answer in Classroom stands while the relationship lasts.
HUMAN_ENDED = (GuardianState.REMOVED_BY_HAND, GuardianState.DECLINED)


def guardian_key(student_id: str) -> str:
    """The ordering key (and the problems' and audit's section_id) for one student's guardians."""
    return f"{KEY_PREFIX}{student_id}"


def encode_email(email: str) -> str:
    """An address as a Firestore id part (docids.doc_id: no `/`, reversible, plain addresses readable)."""
    return doc_id(email)


def record_id(student_id: str, email: str) -> str:
    return f"{doc_id(student_id)}__{encode_email(email)}"


# -- the change --------------------------------------------------------------------------------


@dataclass(frozen=True)
class GuardianChange:
    student: Person
    event_id: str
    event_time: str
    wanted: tuple[Person, ...] = ()
    ended: tuple[Person, ...] = ()
    complete: bool = False
    source: str = "clever"

    @property
    def kind(self) -> GuardianKind:
        # A complete change with nobody wanted ends whatever the student had: a removal too.
        ends = self.ended or (self.complete and not self.wanted)
        return GuardianKind.GUARDIAN_REMOVED if ends else GuardianKind.GUARDIANS_WANTED

    @property
    def section_id(self) -> str:
        # Named like a roster change's so the publisher packs and orders it per student.
        return guardian_key(self.student.clever_id)

    @property
    def ordering_key(self) -> str:
        return self.section_id

    def describe(self) -> str:
        parts = []
        if self.wanted:
            parts.append("wanted " + ",".join(p.clever_id for p in self.wanted))
        if self.ended:
            parts.append("ended " + ",".join(p.clever_id for p in self.ended))
        what = "; ".join(parts) or ("no guardians" if self.complete else "nothing")
        return f"guardians of student {self.student.clever_id}: {what} (event {self.event_id})"

    def to_json(self) -> bytes:
        body = asdict(self)
        body["schema"] = GUARDIAN_SCHEMA
        body["kind"] = self.kind.value
        return json.dumps(body, separators=(",", ":"), sort_keys=True).encode()

    def attributes(self) -> dict[str, str]:
        return {"section_id": self.section_id, "event_id": self.event_id, "kind": self.kind.value}

    @staticmethod
    def from_raw(raw: Any) -> GuardianChange:
        if not isinstance(raw, dict) or raw.get("schema") != GUARDIAN_SCHEMA:
            raise InvalidChange("not a guardian change")
        student = Person.from_json(raw.get("student"), "student")
        for key in ("event_id", "event_time"):
            if not isinstance(raw.get(key), str):
                raise InvalidChange(f"{key} is missing")
        if not raw["event_id"]:
            raise InvalidChange("event_id is missing")
        people = {}
        for key in ("wanted", "ended"):
            value = raw.get(key, [])
            if not isinstance(value, list):
                raise InvalidChange(f"{key} must be a list")
            people[key] = tuple(Person.from_json(p, f"{key}[{i}]") for i, p in enumerate(value))
        return GuardianChange(
            student=student,
            event_id=raw["event_id"],
            event_time=raw["event_time"],
            wanted=people["wanted"],
            ended=people["ended"],
            complete=bool(raw.get("complete")),
            source=str(raw.get("source") or "clever"),
        )


def decode_guardian_message(data: bytes | str) -> list[GuardianChange] | None:
    """The guardian changes a message carries, None when it is not a guardian message (a roster
    change's), InvalidChange when it claims to be one and is not readable."""
    try:
        raw = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return None  # changes.decode_message reports it
    if not isinstance(raw, dict):
        return None
    if raw.get("schema") == GUARDIAN_SCHEMA:
        return [GuardianChange.from_raw(raw)]
    items = raw.get("changes")
    if raw.get("schema") == BATCH_SCHEMA and isinstance(items, list) and items:
        if not any(isinstance(i, dict) and i.get("schema") == GUARDIAN_SCHEMA for i in items):
            return None
        changes = [GuardianChange.from_raw(item) for item in items]
        if {c.section_id for c in changes} != {raw.get("section_id")}:
            raise InvalidChange("every change in a batch message must be for its section_id")
        return changes
    return None


def decode_held(raw: str) -> Any:
    """A held change (store.held_batch) as it was: a roster change or a guardian change."""
    from rostersync.domain.changes import RosterChange

    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    if isinstance(body, dict) and body.get("schema") == GUARDIAN_SCHEMA:
        return GuardianChange.from_raw(body)
    return RosterChange.from_json(raw)


# -- the record --------------------------------------------------------------------------------


@dataclass(frozen=True)
class GuardianRecord:
    student_id: str
    email: str  # the invited address (normalized)
    contact_id: str
    state: GuardianState
    event_id: str  # the source event that decided the state
    origin: str = "sync"  # "sync": we invited; "existing": Classroom had it before us (never touched)
    student_email: str | None = None
    invitation_id: str = ""
    guardian_id: str = ""
    invited_at: str = ""  # when we last sent an invitation (ISO, UTC)
    reason: str = ""
    source: str = "clever"
    # The stored document's update time as read (the store's write precondition); not data.
    version: Any = field(default=None, compare=False, repr=False)

    @property
    def doc_id(self) -> str:
        return record_id(self.student_id, self.email)

    def to_doc(self) -> dict:
        doc = asdict(self)
        doc.pop("version")
        doc["state"] = self.state.value
        return doc

    @staticmethod
    def from_doc(doc: dict) -> GuardianRecord:
        return GuardianRecord(
            student_id=str(doc["student_id"]),
            email=str(doc["email"]),
            contact_id=str(doc.get("contact_id") or ""),
            state=GuardianState(doc.get("state") or "pending"),
            event_id=str(doc.get("event_id") or ""),
            origin=str(doc.get("origin") or "sync"),
            student_email=doc.get("student_email"),
            invitation_id=str(doc.get("invitation_id") or ""),
            guardian_id=str(doc.get("guardian_id") or ""),
            invited_at=str(doc.get("invited_at") or ""),
            reason=str(doc.get("reason") or ""),
            source=str(doc.get("source") or "clever"),
        )


class StaleRecords(Exception):
    """Another writer changed a student's guardian records since we read them: apply again."""


# -- the rules -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Invite:
    contact: Person  # with the email to invite


@dataclass(frozen=True)
class Withdraw:
    record: GuardianRecord  # pending, ours (or an intent of ours whose outcome was not saved)


@dataclass(frozen=True)
class RemoveGuardian:
    record: GuardianRecord  # accepted, ours


GuardianOp = Invite | Withdraw | RemoveGuardian


@dataclass
class GuardianPlan:
    records: dict[str, GuardianRecord]  # by email, with every change that needs no call made
    ops: list[GuardianOp] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    resolved: list[str] = field(default_factory=list)


def guardian_problem_key(student_id: str, contact_id: str) -> str:
    return Problem(kind="", section_id=guardian_key(student_id), message="", clever_id=contact_id).key


def _parse_time(value: str) -> dt.datetime | None:
    try:
        when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def plan_guardians(
    change: GuardianChange,
    records: list[GuardianRecord],
    now: dt.datetime,
    reinvite_days: int,
    retry_problems: bool = False,
) -> GuardianPlan:
    """What to do in Classroom for one student's guardian change, given what we recorded."""
    p = GuardianPlan({r.email: r for r in records})
    student = change.student
    wanted: dict[str, Person] = {}
    for contact in change.wanted:
        if contact.email is None:
            p.problems.append(
                Problem(
                    kind="guardian_without_email",
                    section_id=change.section_id,
                    clever_id=contact.clever_id,
                    role="guardian",
                    event_id=change.event_id,
                    message=f"Contact {contact.clever_id} of student {student.clever_id} has no email, so no "
                    "guardian invitation can be sent",
                    hint="Add the contact's email in the SIS; it is invited on the next change",
                )
            )
        else:
            wanted.setdefault(contact.email, contact)
    if student.email is None and wanted:
        p.problems.append(
            Problem(
                kind="student_without_email",
                section_id=change.section_id,
                clever_id=student.clever_id,
                role="student",
                event_id=change.event_id,
                message=f"Student {student.clever_id} has no email in the source, so guardians cannot be invited",
                hint="Add the student's Google email in the SIS",
            )
        )

    ending: dict[str, Person] = {}
    for contact in change.ended:
        if contact.email and contact.email not in wanted:
            ending[contact.email] = contact
    wanted_ids = {c.clever_id for c in wanted.values()}
    for record in records:
        if record.email in wanted or record.email in ending:
            continue
        if change.complete or record.contact_id in wanted_ids:
            # Not on the student's whole list, or the contact's address changed: it ends.
            ending[record.email] = Person(record.contact_id, record.email)

    for email, contact in sorted(ending.items()):
        _plan_end(p, change, contact, p.records.get(email))
    if student.email is not None:
        for email, contact in sorted(wanted.items()):
            _plan_want(p, change, contact, p.records.get(email), now, reinvite_days, retry_problems)
    return p


def _plan_end(p: GuardianPlan, change: GuardianChange, contact: Person, record: GuardianRecord | None) -> None:
    assert contact.email is not None
    if record is None:
        # Nothing to undo; the record keeps an older "invite" from reviving the pair.
        p.records[contact.email] = GuardianRecord(
            change.student.clever_id,
            contact.email,
            contact.clever_id,
            GuardianState.WITHDRAWN,
            change.event_id,
            student_email=change.student.email,
            source=change.source,
        )
        return
    if change.event_id < record.event_id:
        p.notes.append(f"guardian {contact.clever_id} end is older than event {record.event_id}; skipped")
        return
    if record.origin != "sync":
        if record.state != GuardianState.RELEASED:
            p.notes.append(f"guardian {contact.clever_id} was not invited by the sync; left in Classroom")
        p.records[record.email] = replace(record, state=GuardianState.RELEASED, event_id=change.event_id)
        return
    if record.state in (GuardianState.PENDING, GuardianState.INVITING):
        # An intent left by a crash: the applier first looks for the invitation it may have sent.
        p.ops.append(Withdraw(record))
    elif record.state == GuardianState.ACCEPTED:
        p.ops.append(RemoveGuardian(record))
    else:
        if record.state == GuardianState.PROBLEM:
            p.resolved.append(guardian_problem_key(record.student_id, record.contact_id))
        # Removed by hand: nothing left in Classroom; the relationship's end is recorded, so a new
        # relationship for the pair later is invited again.
        gone = (GuardianState.REMOVED, GuardianState.REMOVED_BY_HAND)
        final = GuardianState.REMOVED if record.state in gone else GuardianState.WITHDRAWN
        p.records[record.email] = replace(record, state=final, event_id=change.event_id)


def _plan_want(
    p: GuardianPlan,
    change: GuardianChange,
    contact: Person,
    record: GuardianRecord | None,
    now: dt.datetime,
    reinvite_days: int,
    retry_problems: bool,
) -> None:
    assert contact.email is not None
    if record is not None and change.event_id < record.event_id:
        p.notes.append(f"invite of guardian {contact.clever_id} is older than event {record.event_id}; skipped")
        return
    newer = record is not None and change.event_id > record.event_id
    if record is None or record.state in (GuardianState.WITHDRAWN, GuardianState.REMOVED, GuardianState.INVITING):
        # INVITING: an earlier attempt recorded its intent and did not save the outcome; inviting
        # again is safe (ALREADY_EXISTS after our intent is our invitation).
        p.ops.append(Invite(contact))
        return
    if record.state in LIVE or record.state == GuardianState.RELEASED:
        if newer or record.contact_id != contact.clever_id:
            state = record.state
            if state == GuardianState.RELEASED:
                # Wanted again: Classroom's own state is read back by the next refresh.
                state = GuardianState.ACCEPTED if record.guardian_id else GuardianState.PENDING
            p.records[record.email] = replace(
                record, event_id=max(record.event_id, change.event_id), contact_id=contact.clever_id, state=state
            )
        return
    if record.state in HUMAN_ENDED:
        # Someone removed the guardian in Classroom, or the guardian declined, while the
        # relationship stayed: their choice stands (as a teacher's roster change does) until the
        # relationship ends in the source.
        if newer or record.contact_id != contact.clever_id:
            p.records[record.email] = replace(
                record, event_id=max(record.event_id, change.event_id), contact_id=contact.clever_id
            )
        why = "was removed in Classroom by hand" if record.state == GuardianState.REMOVED_BY_HAND else "declined"
        p.notes.append(f"guardian {contact.clever_id} {why}; not invited again")
        return
    if record.state == GuardianState.PROBLEM:
        if retry_problems or newer:
            p.ops.append(Invite(contact))
        return
    # Expired: sent again at most once per period, however often the student's changes come.
    sent = _parse_time(record.invited_at)
    if sent is None or now - sent >= dt.timedelta(days=reinvite_days):
        p.ops.append(Invite(contact))
    else:
        p.notes.append(
            f"invitation to guardian {contact.clever_id} expired; re-sent at most every {reinvite_days} days"
        )


def ended_invitation_state(created: str, now: dt.datetime) -> GuardianState:
    """An invitation of ours Classroom reports COMPLETE with no guardian: EXPIRED once its 120 days
    from `created` (Classroom's creationTime) have passed, else DECLINED (declined by the guardian
    or withdrawn by someone else; Classroom does not say which). An unreadable time: EXPIRED, the
    choice that keeps inviting as before."""
    when = _parse_time(created) if created else None
    if when is None or now >= when + dt.timedelta(days=INVITATION_LIFETIME_DAYS):
        return GuardianState.EXPIRED
    return GuardianState.DECLINED


def qualifying(relationship: Any, types: tuple[str, ...]) -> bool:
    """Whether a Clever student_relationship (or OneRoster agent link) makes a guardian."""
    if not isinstance(relationship, dict):
        return False
    wanted = {t.strip().lower() for t in types}
    return str(relationship.get("type") or "").strip().lower() in wanted


def contact_person(contact_id: str, email: Any) -> Person:
    return Person(contact_id, normalize_email(email) if isinstance(email, str) else None)


# Classroom's clock and ours may differ a little; the intent is written before the create call, so
# an invitation of ours is never older than the intent by more than this.
INTENT_CLOCK_SKEW = dt.timedelta(minutes=2)


def sent_after_intent(created: str, intent_at: str) -> bool:
    """Whether an invitation Classroom created at `created` (its creationTime) can be the one the sync
    sent after recording its intent at `intent_at`. One created before the intent was someone else's
    (a hand invitation the create ran into); an unreadable time is not taken as ours."""
    when, since = _parse_time(created) if created else None, _parse_time(intent_at) if intent_at else None
    return when is not None and since is not None and when >= since - INTENT_CLOCK_SKEW

"""The audit trail: one record per change the sync applied or skipped, and why (pure: no I/O).

The applier and the reconcile pass build these and hand them to the store with the link, so they
are written in the commit that saves the link (no extra round trip). `why` reads them back. A
redelivery that finds everything already so writes none: it changes nothing and skips nothing new.
"""

from __future__ import annotations

from dataclasses import dataclass

from rostersync.domain.rules import AddMember, ChangeOwner, CreateCourse, Override, Problem, RemoveMember, RenameCourse

APPLIED = "applied"
SKIPPED_OLDER = "skipped_as_older"
SKIPPED_OVERRIDE = "skipped_override"
SKIPPED = "skipped"
PROBLEM = "problem"
DEFERRED = "deferred"  # a transient fault: the message is redelivered
OVERRIDE_SEEN = "override_seen"  # the reconcile pass found a teacher's change by hand
OUTCOMES = (APPLIED, SKIPPED_OLDER, SKIPPED_OVERRIDE, SKIPPED, PROBLEM, DEFERRED, OVERRIDE_SEEN)

# Firestore takes 500 writes a commit; the link, problems and overrides need some of them.
MAX_ENTRIES_PER_COMMIT = 300


@dataclass(frozen=True)
class AuditEntry:
    section_id: str
    outcome: str
    what: str  # one sentence: the change, as a person would say it
    event_id: str = ""  # the Clever event (or "reconcile" / "admin")
    kind: str = ""  # the change kind (members.added ...) or the operation
    clever_id: str | None = None
    email: str | None = None
    course_id: str | None = None

    def to_doc(self) -> dict:
        return {
            "section_id": self.section_id,
            "outcome": self.outcome,
            "what": self.what,
            "event_id": self.event_id,
            "kind": self.kind,
            "clever_id": self.clever_id,
            "email": self.email,
            "course_id": self.course_id,
        }


def describe_op(op) -> tuple[str, str, str | None, str | None]:
    """(operation name, sentence, clever id, email) for a Classroom operation."""
    if isinstance(op, CreateCourse):
        return (
            "create_course",
            f"create course {op.name!r} owned by {op.owner.email}",
            op.owner.clever_id,
            op.owner.email,
        )
    if isinstance(op, AddMember):
        return "add_member", f"add {op.role} {op.person.email}", op.person.clever_id, op.person.email
    if isinstance(op, RemoveMember):
        return "remove_member", f"remove {op.role} {op.person.email}", op.person.clever_id, op.person.email
    if isinstance(op, RenameCourse):
        return "rename_course", f"rename the course to {op.name!r}", None, None
    if isinstance(op, ChangeOwner):
        return "change_owner", f"make {op.person.email} the owner", op.person.clever_id, op.person.email
    return "archive_course", "archive the course", None, None


def note_outcome(note: str) -> str:
    """The rules explain each skip in a note; the audit files it under one outcome."""
    if "older than event" in note:
        return SKIPPED_OLDER
    if any(w in note for w in ("teacher", "declined", "archived", "owns the course")):
        return SKIPPED_OVERRIDE
    return SKIPPED


def from_problem(p: Problem, course_id: str | None) -> AuditEntry:
    return AuditEntry(p.section_id, PROBLEM, p.message, p.event_id, p.kind, p.clever_id, p.email, course_id)


def from_override(o: Override, event_id: str, course_id: str | None) -> AuditEntry:
    return AuditEntry(
        o.section_id, OVERRIDE_SEEN, o.detail, event_id, o.kind, o.clever_id, o.email, o.course_id or course_id
    )


def capped(entries: list[AuditEntry]) -> list[AuditEntry]:
    """At most MAX_ENTRIES_PER_COMMIT, the last one saying how many more there were."""
    if len(entries) <= MAX_ENTRIES_PER_COMMIT:
        return entries
    kept = entries[: MAX_ENTRIES_PER_COMMIT - 1]
    rest = entries[len(kept) :]
    last = rest[-1]
    return kept + [
        AuditEntry(last.section_id, last.outcome, f"... and {len(rest)} more changes in this commit", last.event_id)
    ]

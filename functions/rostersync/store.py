"""Firestore adapter: section-course links, problems, the event cursor and the poll status.

The only module that imports google.cloud.firestore. Documents are meant to be read by people in
the Firestore console too: ids are Clever ids, fields say what they are.

Collections:
  sections/{clever section id}   the SectionCourseLink (links.py), members keyed by Clever user id
  problems/{key}                 why Classroom and Clever differ (rules.Problem), `open` true/false
  overrides/{key}                changes teachers made by hand that the sync respects (rules.Override)
  held_batches/{id}              removals and archives the mass-change brake held (changes/ inside)
  sync_state/clever              the event cursor, the last poll's outcome and recent_polls
  sync_state/classroom_notifications  the push-notification registration (id, expiry, last error)
  audit/{auto id}                what the sync applied or skipped and why (audit.AuditEntry);
                                 expire_at drives the Firestore TTL policy (AUDIT_RETENTION_DAYS)
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter
from google.cloud.firestore_v1.field_path import FieldPath

from rostersync.audit import AuditEntry
from rostersync.changes import RosterChange
from rostersync.links import LinkState, SectionCourseLink
from rostersync.ports import Cursor, PollState
from rostersync.rules import Override, Problem

SECTIONS = "sections"
PROBLEMS = "problems"
HELD = "held_batches"
HELD_CHUNK = 200  # changes per document: a held batch can be a whole district's removals
OVERRIDES = "overrides"
SYNC_STATE = "sync_state"
CURSOR_DOC = "clever"
RECONCILE_DOC = "reconcile"
AUDIT = "audit"
DEFAULT_AUDIT_RETENTION_DAYS = 90
RECENT_POLLS = 48  # polls kept in sync_state/clever.recent_polls for the status page


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def link_changes(before: SectionCourseLink | None, after: SectionCourseLink) -> dict:
    """The fields of `after` that differ from `before`, nested for a merge write: other members'
    entries are left alone, so concurrent changes to different members of a section both stick."""
    new = after.to_doc()
    if before is None:
        return new
    old = before.to_doc()
    out = {k: v for k, v in new.items() if k != "members" and old.get(k) != v}
    members = {cid: m for cid, m in new["members"].items() if old["members"].get(cid) != m}
    if members:
        out["members"] = members
    return out


class FirestoreStore:
    def __init__(self, client: firestore.Client, audit_retention_days: int = DEFAULT_AUDIT_RETENTION_DAYS):
        self._db = client
        self._audit_retention = dt.timedelta(days=audit_retention_days)

    @staticmethod
    def connect(
        project: str, database: str = "(default)", audit_retention_days: int = DEFAULT_AUDIT_RETENTION_DAYS
    ) -> FirestoreStore:
        return FirestoreStore(firestore.Client(project=project, database=database), audit_retention_days)

    # -- links -----------------------------------------------------------------------------------

    def load_link(self, section_id: str) -> SectionCourseLink | None:
        snap = self._db.collection(SECTIONS).document(section_id).get()
        return SectionCourseLink.from_doc(snap.to_dict()) if snap.exists else None

    def link_for_course(self, course_id: str) -> SectionCourseLink | None:
        """The link of the section whose course this is (Classroom's notifications name courses)."""
        query = self._db.collection(SECTIONS).where(filter=FieldFilter("course_id", "==", course_id)).limit(20)
        links = [SectionCourseLink.from_doc(snap.to_dict()) for snap in query.stream()]
        # Cross-listed sections share a course: one that still follows it speaks for it.
        return next((link for link in links if link.state == LinkState.ACTIVE), links[0] if links else None)

    def save_link(
        self,
        before: SectionCourseLink | None,
        after: SectionCourseLink,
        problems: Sequence[Problem] = (),
        resolved: Sequence[str] = (),
        overrides: Sequence[Override] = (),
        audit: Sequence[AuditEntry] = (),
    ) -> None:
        changes = link_changes(before, after)
        if not changes and not problems and not resolved and not overrides and not audit:
            return  # a repeated delivery: nothing to write
        batch = self._db.batch()
        self._add_audit(batch, audit)
        if changes:
            changes["updated_at"] = firestore.SERVER_TIMESTAMP
            batch.set(self._db.collection(SECTIONS).document(after.section_id), changes, merge=True)
        self._add_problems(batch, problems)
        for o in overrides:
            batch.set(
                self._db.collection(OVERRIDES).document(o.key),
                {
                    "kind": o.kind,
                    "section_id": o.section_id,
                    "course_id": o.course_id or after.course_id,
                    "email": o.email,
                    "role": o.role,
                    "clever_id": o.clever_id,
                    "detail": o.detail,
                    "seen_at": firestore.SERVER_TIMESTAMP,
                },
                merge=True,
            )
        for key in resolved:
            if key not in {p.key for p in problems}:
                batch.set(
                    self._db.collection(PROBLEMS).document(key),
                    {"open": False, "resolved_at": firestore.SERVER_TIMESTAMP},
                    merge=True,
                )
        batch.commit()

    def _add_audit(self, batch, entries: Sequence[AuditEntry]) -> None:
        # In the caller's batch: the trail costs no round trip of its own. `at` is one time for the
        # commit; `seq` keeps the order within it.
        now = _now()
        for seq, entry in enumerate(entries):
            batch.set(
                self._db.collection(AUDIT).document(),
                {
                    **entry.to_doc(),
                    "seq": seq,
                    "at": firestore.SERVER_TIMESTAMP,
                    "expire_at": now + self._audit_retention,
                },
            )

    def _add_problems(self, batch, problems: Sequence[Problem]) -> None:
        for p in problems:
            batch.set(
                self._db.collection(PROBLEMS).document(p.key),
                {
                    "kind": p.kind,
                    "section_id": p.section_id,
                    "clever_id": p.clever_id,
                    "email": p.email,
                    "role": p.role,
                    "reason": p.reason,
                    "message": p.message,
                    "hint": p.hint,
                    "event_id": p.event_id,
                    "open": True,
                    "last_seen": firestore.SERVER_TIMESTAMP,
                },
                merge=True,
            )

    def record_problems(self, problems: Sequence[Problem]) -> None:
        if problems:
            batch = self._db.batch()
            self._add_problems(batch, problems)
            batch.commit()

    # -- cursor and poll status ------------------------------------------------------------------

    def _state_doc(self):
        return self._db.collection(SYNC_STATE).document(CURSOR_DOC)

    def load_cursor(self) -> Cursor | None:
        return self.load_poll_state().cursor

    def load_poll_state(self) -> PollState:
        """The cursor and the pause flag (`rostersync pause`) live in one document: one read a poll."""
        snap = self._state_doc().get()
        doc = (snap.to_dict() if snap.exists else None) or {}
        cursor = None
        if doc.get("last_event_id") is not None:
            cursor = Cursor(doc["last_event_id"], doc.get("bootstrapped_at", ""), int(doc.get("memberships") or 0))
        return PollState(cursor, bool(doc.get("paused")))

    def save_cursor(self, cursor: Cursor | None) -> None:
        fields = (
            {"last_event_id": None, "bootstrapped_at": ""}
            if cursor is None
            else {
                "last_event_id": cursor.last_event_id,
                "bootstrapped_at": cursor.bootstrapped_at,
                "memberships": cursor.memberships,
            }
        )
        fields["cursor_saved_at"] = firestore.SERVER_TIMESTAMP
        self._state_doc().set(fields, merge=True)

    def save_registration(self, state: dict) -> None:
        """The push-notification registration, for the administrator: sync_state/classroom_notifications."""
        self._db.collection(SYNC_STATE).document("classroom_notifications").set(state, merge=True)

    def save_poll_status(self, status: dict) -> None:
        # recent_polls: the last RECENT_POLLS polls' outcomes and durations, which the status page
        # draws. Read and rewritten in a transaction, so that two overlapping polls both land.
        now = _now()
        entry = {k: status.get(k) for k in ("outcome", "seconds", "events_read", "changes", "held")} | {"at": now}
        ref = self._state_doc()

        @firestore.transactional
        def write(transaction) -> None:
            snap = ref.get(transaction=transaction)
            recent = list(((snap.to_dict() or {}) if snap.exists else {}).get("recent_polls") or [])
            transaction.set(
                ref, {"last_poll": {**status, "at": now}, "recent_polls": [*recent, entry][-RECENT_POLLS:]}, merge=True
            )

        write(self._db.transaction())

    def sections_with_member(self, clever_user_id: str) -> list[str]:
        # Firestore indexes map fields by default, so members.<id>.clever_id is queryable.
        query = self._db.collection(SECTIONS).where(
            filter=FieldFilter(FieldPath("members", clever_user_id, "clever_id").to_api_repr(), "==", clever_user_id)
        )
        return [snap.id for snap in query.select(["state"]).stream()]

    # -- the reconcile pass ----------------------------------------------------------------------

    def linked_section_ids(self, after: str, limit: int) -> list[str]:
        sections = self._db.collection(SECTIONS)
        query = sections.order_by(FieldPath.document_id())
        if after:
            query = query.where(filter=FieldFilter(FieldPath.document_id(), ">", sections.document(after)))
        return [snap.id for snap in query.select(["state"]).limit(limit).stream()]

    def load_reconcile_position(self) -> str:
        snap = self._db.collection(SYNC_STATE).document(RECONCILE_DOC).get()
        return (snap.to_dict() or {}).get("after_section_id", "") if snap.exists else ""

    def save_reconcile_position(self, section_id: str) -> None:
        self._db.collection(SYNC_STATE).document(RECONCILE_DOC).set(
            {"after_section_id": section_id, "saved_at": firestore.SERVER_TIMESTAMP}, merge=True
        )

    # -- the mass-change brake ---------------------------------------------------------------------

    def hold_changes(self, reasons: Sequence[str], changes: Sequence[RosterChange], batch_id: str | None = None) -> str:
        batch_id = batch_id or _now().strftime("%Y%m%dT%H%M%S") + "-" + (changes[0].event_id[-6:] if changes else "x")
        doc = self._db.collection(HELD).document(batch_id)
        write = self._db.batch()
        for n in range(0, len(changes), HELD_CHUNK):
            chunk = changes[n : n + HELD_CHUNK]
            write.set(
                doc.collection("changes").document(f"{n // HELD_CHUNK:05d}"),
                {"changes": [c.to_json().decode() for c in chunk]},
            )
            if (n // HELD_CHUNK) % 400 == 399:  # Firestore takes 500 writes a commit
                write.commit()
                write = self._db.batch()
        write.set(
            doc,
            {
                "status": "held",
                "reasons": list(reasons),
                "changes": len(changes),
                "removals": sum(1 for c in changes if c.kind.value.endswith("_removed")),
                "archives": sum(1 for c in changes if c.kind.value == "section_deleted"),
                "sections": sorted({c.section_id for c in changes})[:500],
                "sample": [c.describe() for c in changes[:20]],
                "held_at": firestore.SERVER_TIMESTAMP,
            },
        )
        write.commit()
        return batch_id

    def held_batch(self, batch_id: str) -> tuple[dict, list[RosterChange]] | None:
        doc = self._db.collection(HELD).document(batch_id)
        snap = doc.get()
        if not snap.exists:
            return None
        changes = [
            RosterChange.from_json(raw)
            for part in doc.collection("changes").order_by(FieldPath.document_id()).stream()
            for raw in part.to_dict().get("changes", [])
        ]
        return snap.to_dict(), changes

    def held_batches(self, status: str | None = "held") -> list[dict]:
        query = self._db.collection(HELD)
        if status:
            query = query.where(filter=FieldFilter("status", "==", status))
        return [{"id": snap.id, **snap.to_dict()} for snap in query.stream()]

    def set_held_status(self, batch_id: str, status: str) -> None:
        self._db.collection(HELD).document(batch_id).set(
            {"status": status, "decided_at": firestore.SERVER_TIMESTAMP}, merge=True
        )

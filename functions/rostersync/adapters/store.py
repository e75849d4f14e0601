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
  guardians/{student id}__{email} a student's guardian invitation and its state (guardians.GuardianRecord)
  audit/{auto id}                what the sync applied or skipped and why (audit.AuditEntry);
                                 expire_at drives the Firestore TTL policy (AUDIT_RETENTION_DAYS)
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import replace

from google.api_core import exceptions as gexc
from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter
from google.cloud.firestore_v1.field_path import FieldPath

from rostersync.domain.audit import AuditEntry
from rostersync.domain.changes import RosterChange
from rostersync.domain.docids import doc_id, raw_id
from rostersync.domain.held import changes_of_parts, commit_groups, held_parts
from rostersync.domain.links import LinkState, SectionCourseLink
from rostersync.domain.ports import BootstrapProgress, Cursor, PollState
from rostersync.domain.retention import Retention
from rostersync.domain.rules import Override, Problem
from rostersync.optimistic import StaleWrite, run

SECTIONS = "sections"
PROBLEMS = "problems"
HELD = "held_batches"
# A link's commit: the link, its overrides, resolutions and audit entries (audit.capped), and at
# most this many problems; more go ahead in commits of their own (Firestore: 500 writes a commit).
PROBLEMS_WITH_LINK = 50
PROBLEM_COMMIT_WRITES = 400
DECIDED = ("approved", "discarded")  # a held batch's final decisions: it expires from then on
HELD_PARTS = "parts"  # held_batches/{id}/parts/{nnnnn}: the held changes as messages (held.py)
HELD_SECTIONS_LISTED = 500  # section ids listed in a held batch's document (the rest are in its parts)
OVERRIDES = "overrides"
SYNC_STATE = "sync_state"
CURSOR_DOC = "clever"
RECONCILE_DOC = "reconcile"
AUDIT = "audit"
GUARDIANS = "guardians"
DEFAULT_AUDIT_RETENTION_DAYS = 90
RECENT_POLLS = 48  # polls kept in sync_state/clever.recent_polls for the status page


def _section_id(snap) -> str:
    """A link's section id: its field (written since ids are encoded), else its decoded id."""
    return (snap.to_dict() or {}).get("section_id") or raw_id(snap.id) or snap.id


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
    # A member pruned from the link (retention.prune_removed_members) leaves the document too.
    members |= {cid: firestore.DELETE_FIELD for cid in old["members"] if cid not in new["members"]}
    if members:
        out["members"] = members
    return out


def _field_paths(changes: dict) -> dict:
    """link_changes as update() field paths: each changed member is its own path (members.<id>),
    so an update replaces that member's map and leaves the others alone."""
    out = {k: v for k, v in changes.items() if k != "members"}
    for cid, member in (changes.get("members") or {}).items():
        out[FieldPath("members", cid).to_api_repr()] = member
    return out


# What a failed precondition looks like on commit: the update time moved (FailedPrecondition), the
# document a create expected to be new exists (AlreadyExists), the one an update expected is gone
# (NotFound). Another writer committed in between.
_STALE = (gexc.FailedPrecondition, gexc.AlreadyExists, gexc.NotFound, gexc.Conflict, gexc.Aborted)


def commit_guarded(batch, what: str):
    """Commits a batch that holds a precondition; a failed precondition is StaleWrite (optimistic.run
    reads again and plans again). The one place a guarded commit's outcome is judged."""
    try:
        return batch.commit()
    except _STALE as exc:
        raise StaleWrite(f"{what}: {type(exc).__name__}") from exc


class FirestoreStore:
    def __init__(
        self,
        client: firestore.Client,
        audit_retention_days: int = DEFAULT_AUDIT_RETENTION_DAYS,
        retention: Retention | None = None,
    ):
        self.retention = retention or Retention(audit_days=audit_retention_days)
        self._db = client
        self._audit_retention = dt.timedelta(days=self.retention.audit_days)
        # The poll state document as load_poll_state read it: (update time, recent_polls).
        self._state_seen: tuple | None = None

    @staticmethod
    def connect(
        project: str,
        database: str = "(default)",
        audit_retention_days: int = DEFAULT_AUDIT_RETENTION_DAYS,
        retention: Retention | None = None,
    ) -> FirestoreStore:
        return FirestoreStore(firestore.Client(project=project, database=database), audit_retention_days, retention)

    # -- links -----------------------------------------------------------------------------------

    def load_link(self, section_id: str) -> SectionCourseLink | None:
        """The link with its update time (link.version): save_link writes on that condition."""
        snap = self._db.collection(SECTIONS).document(doc_id(section_id)).get()
        if not snap.exists:
            return None
        doc = snap.to_dict()
        link = SectionCourseLink.from_doc(doc, snap.update_time)
        if link.members and "member_ids" not in doc:
            link = replace(link, unindexed_members=True)
        return link

    def link_for_course(self, course_id: str) -> SectionCourseLink | None:
        """The link of the section whose course this is (Classroom's notifications name courses)."""
        query = self._db.collection(SECTIONS).where(filter=FieldFilter("course_id", "==", course_id)).limit(20)
        links = [SectionCourseLink.from_doc(snap.to_dict(), snap.update_time) for snap in query.stream()]
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
        withdrawn: Sequence[str] = (),
        touched: bool = False,
    ) -> None:
        """One commit, on the condition that the link is as `before` read it (its update time, or
        absent when `before` is None): StaleWrite otherwise, and nothing of the commit is written.
        The section's problems, overrides and withdrawn overrides ride in the same commit, so they
        are guarded by the link's condition too (a link write of updated_at alone carries it when
        the link itself did not change). Only an audit trail alone is written unguarded: its
        records are new documents that no other writer touches. `touched`: the writer changed the
        course in Classroom, so the link is written (its update time) even if nothing else is."""
        changes = link_changes(before, after)
        index_members = bool(before is not None and before.unindexed_members and after.members)
        if not (changes or problems or resolved or overrides or audit or withdrawn or touched or index_members):
            return  # a repeated delivery: nothing to write
        problems, resolved = self._commit_problems_apart(problems, resolved)
        batch = self._db.batch()
        self._add_audit(batch, audit)
        ref = self._db.collection(SECTIONS).document(doc_id(after.section_id))
        guarded = bool(changes or problems or resolved or overrides or withdrawn or touched or index_members)
        if guarded:
            if ("members" in changes or index_members) and after.members:
                # What sections_with_member queries: `members` itself is not indexed (a 5,000-member
                # map would pass Firestore's 40,000 index entries a document; infra/firestore.tf).
                # The whole list, as `members` has it: the write is on the precondition of the
                # read, so no other writer's ids are lost, and ids pruned from `members`
                # (retention.py) leave it too, which keeps the document's size what link_bytes says.
                changes["member_ids"] = sorted(after.members)
            changes["updated_at"] = firestore.SERVER_TIMESTAMP
            if before is None:
                batch.create(ref, changes)  # the first writer of the section; AlreadyExists for the second
            elif before.version is None:
                # A link that was not read from here (built by hand): nothing to guard on.
                batch.set(ref, changes, merge=True)
            else:
                option = self._db.write_option(last_update_time=before.version)
                batch.update(ref, _field_paths(changes), option=option)
        self._add_problems(batch, problems)
        for o in overrides:
            batch.set(
                self._db.collection(OVERRIDES).document(doc_id(o.key)),
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
                self._close_problem(batch, key)
        for key in withdrawn:
            batch.delete(self._db.collection(OVERRIDES).document(doc_id(key)))
        commit_guarded(batch, f"section {after.section_id}")

    def _commit_problems_apart(
        self, problems: Sequence[Problem], resolved: Sequence[str]
    ) -> tuple[Sequence[Problem], Sequence[str]]:
        """Firestore takes 500 writes a commit. A big section can have more problems at once (a
        3,000-student section past Classroom's 1,000 members: 2,000 course_limit problems) or
        resolve more: all but the last PROBLEMS_WITH_LINK of each are written first, in commits of
        PROBLEM_COMMIT_WRITES. Both are idempotent merges, so a crash before the link's commit
        only makes the redelivery write them again. Returns what is left for the link's commit."""
        if len(problems) <= PROBLEMS_WITH_LINK and len(resolved) <= PROBLEMS_WITH_LINK:
            return problems, resolved
        open_keys = {p.key for p in problems}
        resolved = [k for k in resolved if k not in open_keys]  # a problem again: it stays open
        ahead = list(problems[:-PROBLEMS_WITH_LINK])
        resolved_ahead = resolved[:-PROBLEMS_WITH_LINK]
        for n in range(0, len(ahead), PROBLEM_COMMIT_WRITES):
            batch = self._db.batch()
            self._add_problems(batch, ahead[n : n + PROBLEM_COMMIT_WRITES])
            batch.commit()
        for n in range(0, len(resolved_ahead), PROBLEM_COMMIT_WRITES):
            batch = self._db.batch()
            for key in resolved_ahead[n : n + PROBLEM_COMMIT_WRITES]:
                self._close_problem(batch, key)
            batch.commit()
        return problems[-PROBLEMS_WITH_LINK:], resolved[-PROBLEMS_WITH_LINK:]

    def _close_problem(self, batch, key: str) -> None:
        batch.set(
            self._db.collection(PROBLEMS).document(doc_id(key)),
            {
                "open": False,
                "resolved_at": firestore.SERVER_TIMESTAMP,
                # Firestore's TTL policy deletes the closed problem then (retention.py).
                "expire_at": Retention.expire_at(self.retention.closed_problem_days),
            },
            merge=True,
        )

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
                self._db.collection(PROBLEMS).document(doc_id(p.key)),
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
                    "expire_at": firestore.DELETE_FIELD,  # open again: kept while it holds
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
        # What save_poll_status appends to, on the condition that nothing wrote the document since:
        # an idle poll then costs this one read and that one write.
        self._state_seen = (snap.update_time, list(doc.get("recent_polls") or [])) if snap.exists else None
        cursor = None
        if doc.get("last_event_id") is not None:
            cursor = Cursor(
                doc["last_event_id"],
                doc.get("bootstrapped_at", ""),
                int(doc.get("memberships") or 0),
                guardians=int(doc.get("guardians") or 0),
                caught_up_at=str(doc.get("caught_up_at") or ""),
            )
        progress = doc.get("bootstrap")
        bootstrap = None
        if isinstance(progress, dict) and isinstance(progress.get("marker"), str):
            bootstrap = BootstrapProgress(
                progress["marker"],
                str(progress.get("started_at") or ""),
                str(progress.get("after") or ""),
                int(progress.get("memberships") or 0),
            )
        return PollState(cursor, bool(doc.get("paused")), bootstrap)

    def save_bootstrap_progress(self, progress: BootstrapProgress | None) -> None:
        """In the poll-state document, as a map beside the cursor (read with it: no read more a
        poll). Two overlapping polls in one bootstrap publish the same sections; the one further on
        keeps its place: progress never goes back within a bootstrap (same marker)."""
        if progress is None:
            self._state_doc().set({"bootstrap": firestore.DELETE_FIELD}, merge=True)
            return
        fields = {
            "bootstrap": {
                "marker": progress.marker,
                "started_at": progress.started_at,
                "after": progress.after,
                "memberships": progress.memberships,
            }
        }

        def further_on(stored: dict) -> bool:
            known = stored.get("bootstrap")
            same_bootstrap = isinstance(known, dict) and known.get("marker") == progress.marker
            return same_bootstrap and str(known.get("after") or "") > progress.after

        self._write_state_unless(further_on, fields, "the bootstrap progress")

    def _write_state_unless(self, further_on: Callable[[dict], bool], fields: dict, what: str) -> None:
        """Writes `fields` into the poll-state document on the condition of the version read, unless
        what is stored is already further on (two overlapping polls: the further one keeps its
        place); read again and judged again when another writer got in between."""

        def write(snap, attempt: int) -> None:
            if snap.exists and further_on(snap.to_dict() or {}):
                return
            batch = self._db.batch()
            if snap.exists:
                batch.update(snap.reference, fields, option=self._db.write_option(last_update_time=snap.update_time))
            else:
                batch.create(snap.reference, fields)
            commit_guarded(batch, f"sync_state/clever: {what}")

        run(self._state_doc().get, write, what)

    def save_cursor(self, cursor: Cursor | None) -> None:
        fields = (
            {"last_event_id": None, "bootstrapped_at": "", "bootstrap": firestore.DELETE_FIELD}
            if cursor is None
            else {
                "last_event_id": cursor.last_event_id,
                "bootstrapped_at": cursor.bootstrapped_at,
                "memberships": cursor.memberships,
                "guardians": cursor.guardians,
            }
        )
        fields["cursor_saved_at"] = firestore.SERVER_TIMESTAMP
        if cursor is None:
            self._state_doc().set(fields, merge=True)  # a reset: whatever is there goes
            return

        def further_on(stored: dict) -> bool:
            # Two polls overlapped and the other got further: the cursor never goes backwards.
            return bool(stored.get("last_event_id")) and stored["last_event_id"] >= cursor.last_event_id

        # One read more per saved page of events (a poll saves a few): the price of never moving the
        # cursor backwards when two polls overlap. The pause flag and last_poll in the same document
        # are other fields, written by merge (the last administrator's word wins, as it should).
        self._write_state_unless(further_on, fields, "the event cursor")

    def save_registration(self, state: dict) -> None:
        """The push-notification registration, for the administrator: sync_state/classroom_notifications."""
        self._db.collection(SYNC_STATE).document("classroom_notifications").set(state, merge=True)

    def load_registration(self) -> dict:
        snap = self._db.collection(SYNC_STATE).document("classroom_notifications").get()
        return (snap.to_dict() or {}) if snap.exists else {}

    def save_poll_status(self, status: dict) -> None:
        # recent_polls: the last RECENT_POLLS polls' outcomes and durations, which the status page
        # draws. Read and rewritten in a transaction, so that two overlapping polls both land.
        now = _now()
        entry = {k: status.get(k) for k in ("outcome", "seconds", "events_read", "changes", "held")} | {"at": now}
        ref = self._state_doc()
        fields: dict = {"last_poll": {**status, "at": now}}
        if status.get("caught_up_at"):
            # Beside the cursor: when the feed was last read to its end (the cursor's age check).
            fields["caught_up_at"] = status["caught_up_at"]

        seen, self._state_seen = self._state_seen, None
        if seen is not None:
            update_time, recent = seen
            try:
                ref.update(
                    {**fields, "recent_polls": [*recent, entry][-RECENT_POLLS:]},
                    option=self._db.write_option(last_update_time=update_time),
                )
                return
            except (gexc.FailedPrecondition, gexc.NotFound):
                pass  # the poll moved the cursor (or another wrote): read it again, in a transaction

        @firestore.transactional
        def write(transaction) -> None:
            snap = ref.get(transaction=transaction)
            recent = list(((snap.to_dict() or {}) if snap.exists else {}).get("recent_polls") or [])
            transaction.set(ref, {**fields, "recent_polls": [*recent, entry][-RECENT_POLLS:]}, merge=True)

        write(self._db.transaction())

    def record_rebootstrap(self, reason: str, old_cursor: str) -> None:
        self._state_doc().set(
            {"last_rebootstrap": {"at": _now(), "reason": reason, "old_cursor": old_cursor}}, merge=True
        )

    def sections_with_member(self, clever_user_id: str) -> list[str]:
        # `member_ids` has Firestore's array-contains index; the members map is exempt from indexing.
        query = self._db.collection(SECTIONS).where(filter=FieldFilter("member_ids", "array_contains", clever_user_id))
        return [_section_id(snap) for snap in query.select(["section_id"]).stream()]

    # -- the reconcile pass ----------------------------------------------------------------------

    def linked_section_ids(self, after: str, limit: int) -> list[str]:
        sections = self._db.collection(SECTIONS)
        query = sections.order_by(FieldPath.document_id())
        if after:
            query = query.where(filter=FieldFilter(FieldPath.document_id(), ">", sections.document(doc_id(after))))
        return [_section_id(snap) for snap in query.select(["section_id"]).limit(limit).stream()]

    def load_reconcile_position(self) -> str:
        snap = self._db.collection(SYNC_STATE).document(RECONCILE_DOC).get()
        return (snap.to_dict() or {}).get("after_section_id", "") if snap.exists else ""

    def save_reconcile_position(self, section_id: str) -> None:
        self._db.collection(SYNC_STATE).document(RECONCILE_DOC).set(
            {"after_section_id": section_id, "saved_at": firestore.SERVER_TIMESTAMP}, merge=True
        )

    # -- the mass-change brake ---------------------------------------------------------------------

    def hold_changes(self, reasons: Sequence[str], changes: Sequence[RosterChange], batch_id: str | None = None) -> str:
        """Adds `changes` to held batch `batch_id` (a new one without it) and returns its id. Called
        once a poll page with that page's held changes only: parts are appended, never rewritten
        (held.py lays them out by bytes). Parts are created, never overwritten (a second writer of
        the same part fails instead of replacing it); the batch's document is updated only if it is
        still as read. A crash before that update leaves parts the next `held_batch` read still
        finds; the poll, whose cursor did not move, holds the same changes again."""
        suffix = doc_id(changes[0].event_id[-6:]) if changes else "x"
        batch_id = batch_id or _now().strftime("%Y%m%dT%H%M%S") + "-" + suffix
        doc = self._db.collection(HELD).document(batch_id)
        snap = doc.get()
        meta = (snap.to_dict() if snap.exists else None) or {}
        first = int(meta.get("parts") or 0)
        parts = held_parts(changes)
        for group in commit_groups([sum(len(m) for m in part) for part in parts]):
            write = self._db.batch()
            for n in group:
                write.create(doc.collection(HELD_PARTS).document(f"{first + n:05d}"), {"messages": parts[n]})
            write.commit()
        sections = list(meta.get("sections") or [])
        sections += sorted({c.section_id for c in changes} - set(sections))
        fields = {
            "status": meta.get("status") or "held",
            "reasons": list(dict.fromkeys([*(meta.get("reasons") or []), *reasons])),
            "changes": int(meta.get("changes") or 0) + len(changes),
            "removals": int(meta.get("removals") or 0) + sum(1 for c in changes if c.kind.value.endswith("_removed")),
            "archives": int(meta.get("archives") or 0) + sum(1 for c in changes if c.kind.value == "section_deleted"),
            "sections": sections[:HELD_SECTIONS_LISTED],
            "section_count": len(set(sections)) if len(sections) < HELD_SECTIONS_LISTED else None,
            "sample": (list(meta.get("sample") or []) + [c.describe() for c in changes[:20]])[:20],
            "parts": first + len(parts),
        }
        if snap.exists:
            doc.update(fields, option=self._db.write_option(last_update_time=snap.update_time))
        else:
            doc.create({**fields, "held_at": firestore.SERVER_TIMESTAMP})
        return batch_id

    def held_batch(self, batch_id: str) -> tuple[dict, list[RosterChange]] | None:
        doc = self._db.collection(HELD).document(batch_id)
        snap = doc.get()
        if not snap.exists:
            return None
        meta = snap.to_dict() or {}
        if "parts" not in meta:  # written before held batches were laid out by bytes
            changes = [
                RosterChange.from_json(raw)
                for part in doc.collection("changes").order_by(FieldPath.document_id()).stream()
                for raw in part.to_dict().get("changes", [])
            ]
            return meta, changes
        parts = [
            (part.to_dict() or {}).get("messages", [])
            for part in doc.collection(HELD_PARTS).order_by(FieldPath.document_id()).stream()
        ]
        return meta, changes_of_parts(parts)

    def held_batches(self, status: str | None = "held") -> list[dict]:
        query = self._db.collection(HELD)
        if status:
            query = query.where(filter=FieldFilter("status", "==", status))
        return [{"id": snap.id, **snap.to_dict()} for snap in query.stream()]

    def set_held_status(self, batch_id: str, status: str) -> None:
        """Approved or discarded: the batch and its parts expire (retention.py) once decided."""
        doc = self._db.collection(HELD).document(batch_id)
        doc.set({"status": status, "decided_at": firestore.SERVER_TIMESTAMP}, merge=True)
        if status in DECIDED:
            self._expire_held(batch_id)

    def _expire_held(self, batch_id: str) -> None:
        """Dates a decided batch and every part of it for Firestore's TTL policies (a TTL deletes a
        document, never its subcollections: each part carries its own expire_at)."""
        doc = self._db.collection(HELD).document(batch_id)
        expire_at = Retention.expire_at(self.retention.decided_held_batch_days)
        refs = [*doc.collection(HELD_PARTS).list_documents(), *doc.collection("changes").list_documents()]
        for n in range(0, len(refs), 400):  # Firestore takes 500 writes a commit
            write = self._db.batch()
            for ref in refs[n : n + 400]:
                write.set(ref, {"expire_at": expire_at}, merge=True)
            write.commit()
        doc.set({"expire_at": expire_at}, merge=True)

    # -- the held batch's decision (approve / discard) ----------------------------------------------

    def decide_held(self, batch_id: str, status: str, allowed_from: Sequence[str] = ("held",)) -> str | None:
        """Moves a held batch to `status` on the condition that nobody decided it meanwhile (the
        batch document's update time): of two administrators approving and discarding at once,
        one wins and the other is told. Returns None when done, else the status that stands."""

        def load():
            snap = self._db.collection(HELD).document(batch_id).get()
            return snap

        def write(snap, attempt: int) -> str | None:
            if not snap.exists:
                return "missing"
            current = (snap.to_dict() or {}).get("status")
            if current not in allowed_from:
                return str(current)
            batch = self._db.batch()
            batch.update(
                snap.reference,
                {"status": status, "decided_at": firestore.SERVER_TIMESTAMP},
                option=self._db.write_option(last_update_time=snap.update_time),
            )
            commit_guarded(batch, f"held batch {batch_id}")
            return None

        standing = run(load, write, f"held batch {batch_id}")
        if standing is None and status in DECIDED:
            self._expire_held(batch_id)
        return standing

    # -- guardians (guardians.py) -------------------------------------------------------------------

    def load_guardian_records(self, student_id: str):
        from rostersync.domain.guardians import GuardianRecord

        query = self._db.collection(GUARDIANS).where(filter=FieldFilter("student_id", "==", student_id))
        return [replace(GuardianRecord.from_doc(snap.to_dict()), version=snap.update_time) for snap in query.stream()]

    def record_guardian_intents(self, before, intents):
        """The sync's intent to invite (records in state `inviting`), written before the create
        call in one commit, each with a precondition: a record read is updated only if unchanged
        since, a new one created only if still absent (else StaleRecords: nothing was called, the
        message is applied again). Returns the intents with their new versions, the preconditions
        of the save that follows the calls."""
        from google.api_core import exceptions as gexc

        from rostersync.domain.guardians import StaleRecords

        old = {r.doc_id: r for r in before}
        batch = self._db.batch()
        for record in intents:
            ref = self._db.collection(GUARDIANS).document(record.doc_id)
            doc = {**record.to_doc(), "updated_at": firestore.SERVER_TIMESTAMP}
            prior = old.get(record.doc_id)
            if prior is not None and prior.version is not None:
                batch.update(ref, doc, option=self._db.write_option(last_update_time=prior.version))
            else:
                batch.create(ref, doc)
        try:
            results = batch.commit()
        except (gexc.FailedPrecondition, gexc.AlreadyExists, gexc.Conflict, gexc.NotFound) as exc:
            raise StaleRecords(f"guardian records changed meanwhile: {type(exc).__name__}") from exc
        return [replace(r, version=result.update_time) for r, result in zip(intents, results, strict=True)]

    def save_guardian_records(self, before, after, problems=(), resolved=(), audit=()) -> None:
        """The records that changed, the problems, the resolved problems and the audit trail, in one
        commit. A student has at most a few dozen records (Classroom links 20 guardians a student).
        Each write has a precondition: a record read is updated only if unchanged since (its update
        time), a new one only created if still absent. Otherwise (the reconcile pass and a message
        for the same student at once) nothing is written and StaleRecords asks for another go."""
        from google.api_core import exceptions as gexc

        from rostersync.domain.guardians import StaleRecords

        old = {r.doc_id: r for r in before}
        changed = [r for r in after if old.get(r.doc_id) != r]
        if not changed and not problems and not resolved and not audit:
            return
        batch = self._db.batch()
        self._add_audit(batch, audit)
        for record in changed:
            ref = self._db.collection(GUARDIANS).document(record.doc_id)
            doc = {**record.to_doc(), "updated_at": firestore.SERVER_TIMESTAMP}
            prior = old.get(record.doc_id)
            if prior is not None and prior.version is not None:
                batch.update(ref, doc, option=self._db.write_option(last_update_time=prior.version))
            else:
                batch.create(ref, doc)
        self._add_problems(batch, problems)
        for key in resolved:
            self._close_problem(batch, key)
        try:
            batch.commit()
        except (gexc.FailedPrecondition, gexc.AlreadyExists, gexc.Conflict, gexc.NotFound) as exc:
            raise StaleRecords(f"guardian records changed meanwhile: {type(exc).__name__}") from exc

    def guardian_student_ids(self) -> set[str]:
        """Every student we hold a guardian record for (the reconcile pass ends what no contact names)."""
        return {str(snap.get("student_id")) for snap in self._db.collection(GUARDIANS).select(["student_id"]).stream()}

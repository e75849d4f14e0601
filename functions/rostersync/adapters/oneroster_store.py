"""Firestore adapter for the OneRoster source: the last seen state of each class, and the cursor.

Collections (beside store.py's, whose problems this reuses):
  oneroster_classes/{doc_id(class sourcedId)}
                                        ClassState.to_json(): class_id, title, status, enrollments
  oneroster_guardian_links/{doc_id(student sourcedId)}
                                        GUARDIANS=invite: what the last read said of the student's
                                        guardians (student_id, digest, guardian_ids); none: nobody
  sync_state/oneroster                  `since` (the next delta's dateLastModified bound),
                                        `last_full_read`, and `last_poll` (the last poll's outcome)
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence

from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter

from rostersync.adapters.store import PROBLEMS, SYNC_STATE, FirestoreStore
from rostersync.domain.docids import doc_id
from rostersync.domain.retention import Retention
from rostersync.domain.rules import Problem
from rostersync.domain.sources.oneroster_diff import PROVIDER, ClassState, OneRosterCursor
from rostersync.domain.sources.oneroster_guardians import GuardianLinks

CLASSES = "oneroster_classes"
GUARDIAN_LINKS = "oneroster_guardian_links"
ARRAY_QUERY_VALUES = 30  # Firestore's limit for array-contains-any
STATE_DOC = "oneroster"
BATCH = 400  # Firestore takes 500 writes a commit


class OneRosterFirestoreStore:
    def __init__(
        self, client: firestore.Client, problems: FirestoreStore | None = None, retention: Retention | None = None
    ):
        self._db = client
        self._retention = retention or Retention()
        self._problems = problems or FirestoreStore(client, retention=self._retention)

    @staticmethod
    def connect(
        project: str, database: str = "(default)", retention: Retention | None = None
    ) -> OneRosterFirestoreStore:
        return OneRosterFirestoreStore(firestore.Client(project=project, database=database), retention=retention)

    def _state_doc(self):
        return self._db.collection(SYNC_STATE).document(STATE_DOC)

    def load_oneroster_cursor(self) -> OneRosterCursor | None:
        snap = self._state_doc().get()
        doc = snap.to_dict() if snap.exists else None
        if not doc or not doc.get("since"):
            return None
        return OneRosterCursor(
            str(doc["since"]), str(doc.get("last_full_read") or ""), str(doc.get("last_incomplete_full_read") or "")
        )

    def save_oneroster_cursor(self, cursor: OneRosterCursor) -> None:
        self._state_doc().set(
            {
                "since": cursor.since,
                "last_full_read": cursor.last_full_read,
                "last_incomplete_full_read": cursor.last_incomplete_full_read,
            },
            merge=True,
        )

    def save_oneroster_poll_status(self, status: dict) -> None:
        when = dt.datetime.now(dt.UTC)
        self._state_doc().set({"last_poll": status | {"at": when}}, merge=True)

    def load_last_bundle(self) -> str | None:
        snap = self._state_doc().get()
        doc = snap.to_dict() if snap.exists else None
        last = (doc or {}).get("last_bundle") or {}
        return last.get("order") or None

    def save_last_bundle(self, order: str, name: str, outcome: str) -> None:
        when = dt.datetime.now(dt.UTC)
        self._state_doc().set(
            {"last_bundle": {"order": order, "name": name, "outcome": outcome, "at": when}}, merge=True
        )

    def load_class_states(self) -> dict[str, ClassState]:
        states = (ClassState.from_json(snap.to_dict()) for snap in self._db.collection(CLASSES).stream())
        return {state.class_id: state for state in states}

    def save_class_states(self, states: Mapping[str, ClassState]) -> None:
        items = list(states.items())
        for start in range(0, len(items), BATCH):
            batch = self._db.batch()
            for class_id, state in items[start : start + BATCH]:
                # Whole documents: an enrollment that went must go from the stored state too.
                doc = state.to_json()
                if state.deleted:
                    # A deleted class's last state (its enrollments' emails) goes after the
                    # retention time (RETAIN_DELETED_CLASSES_DAYS; a TTL policy on expire_at).
                    doc["expire_at"] = Retention.expire_at(self._retention.deleted_class_days)
                batch.set(self._db.collection(CLASSES).document(doc_id(class_id)), doc)
            batch.commit()

    def load_guardian_links(self, student_ids: set[str] | None = None) -> dict[str, GuardianLinks] | None:
        """Every student's saved guardian links (None when no read has saved any yet), or only
        those of `student_ids` (one batched read)."""
        if student_ids is None:
            snap = self._state_doc().get()
            if not snap.exists or not (snap.to_dict() or {}).get("guardian_links_at"):
                return None
            snaps = self._db.collection(GUARDIAN_LINKS).select(["student_id", "digest", "guardian_ids"]).stream()
        else:
            refs = [self._db.collection(GUARDIAN_LINKS).document(doc_id(s)) for s in sorted(student_ids)]
            snaps = (s for s in self._db.get_all(refs) if s.exists) if refs else iter(())
        out = {}
        for snap in snaps:
            doc = snap.to_dict() or {}
            out[str(doc["student_id"])] = GuardianLinks(str(doc["digest"]), tuple(doc.get("guardian_ids") or ()))
        return out

    def students_linked_to(self, guardian_ids: set[str]) -> dict[str, set[str]]:
        """guardian id -> the students whose saved links name them (array-contains-any, 30 at a time)."""
        out: dict[str, set[str]] = {}
        ids = sorted(guardian_ids)
        for start in range(0, len(ids), ARRAY_QUERY_VALUES):
            chunk = ids[start : start + ARRAY_QUERY_VALUES]
            query = self._db.collection(GUARDIAN_LINKS).where(
                filter=FieldFilter("guardian_ids", "array_contains_any", chunk)
            )
            for snap in query.stream():
                doc = snap.to_dict() or {}
                for gid in set(doc.get("guardian_ids") or ()) & set(chunk):
                    out.setdefault(gid, set()).add(str(doc["student_id"]))
        return out

    def save_guardian_links(self, links: Mapping[str, GuardianLinks | None]) -> None:
        """Whole documents (None deletes: the student has nobody now), then the mark that links
        have been saved, so the next bundle is not taken for the first."""
        items = list(links.items())
        for start in range(0, len(items), BATCH):
            batch = self._db.batch()
            for student_id, link in items[start : start + BATCH]:
                ref = self._db.collection(GUARDIAN_LINKS).document(doc_id(student_id))
                if link is None:
                    batch.delete(ref)
                else:
                    batch.set(
                        ref, {"student_id": student_id, "digest": link.digest, "guardian_ids": list(link.guardian_ids)}
                    )
            batch.commit()
        self._state_doc().set({"guardian_links_at": dt.datetime.now(dt.UTC)}, merge=True)

    def resolve_provider_problems(self, kinds: set[str]) -> None:
        """Closes the open problems about the provider itself (oneroster_diff.PROVIDER) of these
        kinds: one query on section_id, and a write only for what is open."""
        query = self._db.collection(PROBLEMS).where(filter=FieldFilter("section_id", "==", PROVIDER))
        open_ones = [
            snap for snap in query.stream() if (snap.to_dict() or {}).get("open") and snap.get("kind") in kinds
        ]
        if open_ones:
            batch = self._db.batch()
            for snap in open_ones:
                batch.update(snap.reference, {"open": False, "resolved_at": firestore.SERVER_TIMESTAMP})
            batch.commit()

    def record_problems(self, problems: Sequence[Problem]) -> None:
        # A problem's key is made from its section_id ("bundle:<object name>", "oneroster:<sourcedId>");
        # the problems store makes any key a valid document id (docids.doc_id).
        self._problems.record_problems(problems)

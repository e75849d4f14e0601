"""Firestore adapter for the OneRoster source: the last seen state of each class, and the cursor.

Collections (beside store.py's, whose problems this reuses):
  oneroster_classes/{_doc_id(class sourcedId)}
                                        ClassState.to_json(): class_id, title, status, enrollments
  sync_state/oneroster                  `since` (the next delta's dateLastModified bound),
                                        `last_full_read`, and `last_poll` (the last poll's outcome)
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import re
from collections.abc import Mapping, Sequence
from urllib.parse import quote

from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter

from rostersync.oneroster_poller import OneRosterCursor
from rostersync.rules import Problem
from rostersync.sources.oneroster_diff import ClassState
from rostersync.store import PROBLEMS, SYNC_STATE, FirestoreStore

CLASSES = "oneroster_classes"
STATE_DOC = "oneroster"
BATCH = 400  # Firestore takes 500 writes a commit
_PLAIN_ID = re.compile(r"[A-Za-z0-9_.:@\-]{1,700}")


def _doc_id(value: str) -> str:
    """A Firestore document id for any external string (a OneRoster sourcedId, a bundle's object
    name such as `exports/roster.zip`). Firestore ids may not contain '/', be '.' or '..', match
    `__.*__` or exceed 1,500 bytes. Plain ids are kept as they are (documents written before this
    encoding keep their ids); any other is '~' + its percent-encoding ('~' never occurs in a plain
    id, and percent-encoding is one-to-one), or, when that is long, '~#' + its SHA-256 ('#' never
    survives percent-encoding). The document also stores the value itself, which is what is read."""
    if _PLAIN_ID.fullmatch(value) and value not in (".", "..") and not value.startswith("__"):
        return value
    encoded = "~" + quote(value, safe="")
    if len(encoded) <= 1000:
        return encoded
    return "~#" + hashlib.sha256(value.encode()).hexdigest()


class OneRosterFirestoreStore:
    def __init__(self, client: firestore.Client, problems: FirestoreStore | None = None):
        self._db = client
        self._problems = problems or FirestoreStore(client)

    @staticmethod
    def connect(project: str, database: str = "(default)") -> OneRosterFirestoreStore:
        return OneRosterFirestoreStore(firestore.Client(project=project, database=database))

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
                batch.set(self._db.collection(CLASSES).document(_doc_id(class_id)), state.to_json())
            batch.commit()

    def resolve_provider_problems(self, kinds: set[str]) -> None:
        """Closes the open problems about the provider itself (oneroster_poller.PROVIDER) of these
        kinds: one query on section_id, and a write only for what is open."""
        from rostersync.oneroster_poller import PROVIDER

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
        # A problem's document id is made from its section_id ("bundle:<object name>",
        # "oneroster:<sourcedId>"): one that cannot be a document id is encoded; its message keeps
        # the name as it is.
        self._problems.record_problems(
            [
                p if _doc_id(p.section_id) == p.section_id else dataclasses.replace(p, section_id=_doc_id(p.section_id))
                for p in problems
            ]
        )

"""Firestore side of `rostersync forget` (forget.py): every document of every collection, at any
depth, and the writes that remove a person, each with a precondition on the version read.

A full scan: it reads the whole database once per pass (an administrator's command, rarely run).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

from google.api_core.exceptions import FailedPrecondition, NotFound
from google.cloud import firestore

from rostersync.domain.forget import Action


class FirestoreForgetStore:
    def __init__(self, client: firestore.Client, audit_retention_days: int = 90):
        self._db = client
        self._audit_retention = dt.timedelta(days=audit_retention_days)
        self._read: dict[str, object] = {}  # path -> update_time of the version planned on

    @staticmethod
    def connect(project: str, database: str = "(default)", audit_retention_days: int = 90) -> FirestoreForgetStore:
        return FirestoreForgetStore(firestore.Client(project=project, database=database), audit_retention_days)

    def documents(self) -> Iterator[tuple[str, str, dict]]:
        """(collection id, document path, data) of every document, subcollections included."""
        self._read = {}

        def walk(collections):
            for collection in collections:
                for snap in collection.stream():
                    self._read[snap.reference.path] = snap.update_time
                    yield collection.id, snap.reference.path, snap.to_dict() or {}
                    yield from walk(snap.reference.collections())

        yield from walk(self._db.collections())

    def apply(self, actions: list[Action]) -> int:
        """Writes the actions; how many lost a race with another writer (run the plan again)."""
        conflicts = 0
        for action in actions:
            ref = self._db.document(action.path)
            option = self._db.write_option(last_update_time=self._read[action.path])
            try:
                if action.kind == "delete":
                    ref.delete(option=option)
                else:
                    # A whole-document replace, only over the version the plan was made from.
                    transaction = self._db.transaction()
                    _replace(transaction, ref, action.data or {}, self._read[action.path])
            except (FailedPrecondition, NotFound, _Changed):
                conflicts += 1
        return conflicts

    def add_audit(self, entry: dict) -> None:
        now = dt.datetime.now(dt.UTC)
        self._db.collection("audit").document().set(
            {**entry, "seq": 0, "at": firestore.SERVER_TIMESTAMP, "expire_at": now + self._audit_retention}
        )


class _Changed(Exception):
    """The document changed since it was read: planned again on the next pass."""


@firestore.transactional
def _replace(transaction, ref, data: dict, read_at) -> None:
    snap = ref.get(transaction=transaction)
    if not snap.exists or snap.update_time != read_at:
        raise _Changed()
    transaction.set(ref, data)

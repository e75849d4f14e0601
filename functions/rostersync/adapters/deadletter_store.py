"""Firestore adapter for dead letters (deadletters.py): the collection `dead_letters/{message id}`.

Kept apart from store.py so the dead-letter function needs nothing of the sync's own storage.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from google.api_core.exceptions import AlreadyExists
from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter

DEAD_LETTERS = "dead_letters"
DATA_PARTS = "data"  # dead_letters/{id}/data/{nnnnn}: the bytes of a message too large for one document


class FirestoreDeadLetterStore:
    def __init__(self, client: firestore.Client, replayed_retention_days: int = 30):
        self._db = client
        self._replayed_retention = dt.timedelta(days=replayed_retention_days)

    @staticmethod
    def connect(
        project: str, database: str = "(default)", replayed_retention_days: int = 30
    ) -> FirestoreDeadLetterStore:
        return FirestoreDeadLetterStore(firestore.Client(project=project, database=database), replayed_retention_days)

    def _doc(self, message_id: str):
        return self._db.collection(DEAD_LETTERS).document(message_id)

    def create_dead_letter(self, message_id: str, doc: dict, parts: Sequence[bytes] = ()) -> bool:
        # The parts go first: a dead letter that exists always has its bytes. A crash between them
        # leaves parts that the redelivery writes again (set, same content) before the letter.
        for n, part in enumerate(parts):
            self._doc(message_id).collection(DATA_PARTS).document(f"{n:05d}").set({"data": part})
        try:
            self._doc(message_id).create(doc)  # fails if it exists: a redelivery changes nothing
        except AlreadyExists:
            return False
        return True

    def dead_letter_data(self, message_id: str, parts: int) -> bytes | None:
        chunks = []
        for n in range(parts):
            snap = self._doc(message_id).collection(DATA_PARTS).document(f"{n:05d}").get()
            if not snap.exists:
                return None
            chunks.append(bytes((snap.to_dict() or {}).get("data") or b""))
        return b"".join(chunks)

    def get_dead_letter(self, message_id: str) -> dict | None:
        snap = self._doc(message_id).get()
        return snap.to_dict() if snap.exists else None

    def unreplayed_dead_letters(self, limit: int) -> list[tuple[str, dict]]:
        query = self._db.collection(DEAD_LETTERS).where(filter=FieldFilter("replayed", "==", False)).limit(limit)
        return [(snap.id, snap.to_dict()) for snap in query.stream()]

    def mark_replayed(self, message_id: str, replayed_at: dt.datetime, replay_message_id: str) -> None:
        expire_at = replayed_at + self._replayed_retention
        # A TTL deletes a document, never its subcollection: each data part is dated too.
        for part in self._doc(message_id).collection(DATA_PARTS).list_documents():
            part.set({"expire_at": expire_at}, merge=True)
        self._doc(message_id).set(
            {
                "replayed": True,
                "replayed_at": replayed_at,
                "replay_message_id": replay_message_id,
                # Replayed, the whole message (student emails too) goes after the retention time:
                # Firestore's TTL policy on dead_letters.expire_at (RETAIN_REPLAYED_DEAD_LETTERS_DAYS).
                "expire_at": expire_at,
            },
            merge=True,
        )

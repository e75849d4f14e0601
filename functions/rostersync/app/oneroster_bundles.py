"""OneRoster CSV bundles dropped into a Cloud Storage bucket: the handler (the storage
adapter that reads them is adapters/storage.py).

The bucket notifies a Pub/Sub topic on OBJECT_FINALIZE; its push subscription feeds
`import_oneroster_bundle` (main.py), which calls `BundleImporter.handle`. Bundles are ordered by
their object generation (Cloud Storage's microsecond timestamp of the upload), kept in Firestore as
`sync_state/oneroster.last_bundle`: a redelivered or older notification is skipped, so an old
export never undoes a newer one, and a repeat publishes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from rostersync.app.oneroster_poller import BundleImportResult, import_bundle
from rostersync.domain.ports import ChangePublisher, StorageError

log = logging.getLogger(__name__)
BUNDLE_SUFFIX = ".zip"


def generation_order(generation: str) -> str:
    """A generation as a string that sorts like the number (they are microsecond timestamps)."""
    return f"{int(generation):020d}"


class BundleImporter:
    def __init__(
        self,
        storage,
        state,
        publisher: ChangePublisher,
        guardian_types: tuple[str, ...] = (),
        guardian_students: Callable[[], set[str]] = set,
    ):
        self._storage = storage
        self._state = state
        self._publisher = publisher
        # GUARDIANS=invite: which relationship types count, and the students we hold guardian records for.
        self._guardian_types = guardian_types
        self._guardian_students = guardian_students

    def handle(self, bucket: str, name: str, generation: str) -> BundleImportResult:
        if not name.lower().endswith(BUNDLE_SUFFIX):
            return BundleImportResult(outcome="ignored", bundle=name, reason="not a .zip")
        try:
            order = generation_order(generation)
        except (TypeError, ValueError):
            return BundleImportResult(outcome="ignored", bundle=name, reason=f"bad generation {generation!r}")
        last = self._state.load_last_bundle()
        if last and order <= last:
            return BundleImportResult(outcome="stale", bundle=name, reason=f"generation {generation} already passed")
        try:
            data = self._storage.read(bucket, name, generation)
        except StorageError as exc:
            if exc.status != 404:
                raise  # passing: Pub/Sub redelivers
            # Deleted or overwritten before we read it: nothing to import, and a newer one follows.
            log.warning("OneRoster bundle %s generation %s is gone: skipped", name, generation)
            return BundleImportResult(outcome="missing", bundle=name, reason="object gone before import")
        result = import_bundle(
            name,
            order,
            data,
            self._state,
            self._publisher,
            last,
            guardian_types=self._guardian_types,
            guardian_students=self._guardian_students,
        )
        # A rejected bundle counts as handled too: a later good one must not be held behind it.
        self._state.save_last_bundle(order, name, result.outcome)
        return result

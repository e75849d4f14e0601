"""Firestore adapter for the administrator's views (the CLI and the status page): reads only.

Kept apart from store.py, which the sync itself writes through. Every call has a short deadline,
so an unreachable Firestore is an error in seconds (UnreachableError), not a hang. The one write,
the pause flag, lives in control.py.
"""

from __future__ import annotations

from collections import Counter

from google.api_core import exceptions as gexc
from google.api_core.retry import Retry
from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter

from rostersync.docids import doc_id, raw_id

SECTIONS = "sections"
PROBLEMS = "problems"
OVERRIDES = "overrides"
DEAD_LETTERS = "dead_letters"
HELD = "held_batches"
SYNC_STATE = "sync_state"
AUDIT = "audit"
AUDIT_LIMIT = 200  # the newest records `why` reads for a section

CALL_TIMEOUT = 10.0  # seconds for one read, retries included
SHORT_RETRY = Retry(
    predicate=lambda e: isinstance(e, gexc.ServiceUnavailable | gexc.DeadlineExceeded),
    initial=0.2,
    maximum=2.0,
    timeout=CALL_TIMEOUT,
)
SECTION_SUMMARY_FIELDS = [
    "section_id",
    "state",
    "course_id",
    "section_name",
    "name_set",
    "name_override",
    "owner_email",
]


class UnreachableError(Exception):
    """Firestore did not answer (wrong emulator host, no network, no permission)."""


def _guard(fn):
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (gexc.GoogleAPICallError, gexc.RetryError) as exc:
            text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise UnreachableError(f"Firestore did not answer: {text[:300]}") from None

    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper


class AdminStore:
    def __init__(self, client: firestore.Client):
        self._db = client

    @staticmethod
    def connect(project: str, database: str = "(default)") -> AdminStore:
        return AdminStore(firestore.Client(project=project, database=database))

    @property
    def client(self) -> firestore.Client:
        return self._db

    def _get(self, collection: str, doc_id: str) -> dict | None:
        snap = self._db.collection(collection).document(doc_id).get(retry=SHORT_RETRY, timeout=CALL_TIMEOUT)
        return snap.to_dict() if snap.exists else None

    def _stream(self, query) -> list[tuple[str, dict]]:
        return [(s.id, s.to_dict() or {}) for s in query.stream(retry=SHORT_RETRY, timeout=CALL_TIMEOUT)]

    @_guard
    def sync_state(self, name: str = "clever") -> dict:
        """sync_state/clever (cursor, last_poll, paused), sync_state/classroom_notifications, ..."""
        return self._get(SYNC_STATE, name) or {}

    @_guard
    def sections(self, state: str | None = None) -> list[dict]:
        """Every link without its members (the fields a listing shows), by section id."""
        query = self._db.collection(SECTIONS)
        if state:
            query = query.where(filter=FieldFilter("state", "==", state))
        rows = self._stream(query.select(SECTION_SUMMARY_FIELDS))
        rows = ({**doc, "section_id": doc.get("section_id") or raw_id(sid) or sid} for sid, doc in rows)
        return sorted(rows, key=_by_section)

    @_guard
    def section(self, section_id: str) -> dict | None:
        return self._get(SECTIONS, doc_id(section_id))

    @_guard
    def problems(self, section_id: str | None = None, open_only: bool = True) -> list[dict]:
        query = self._db.collection(PROBLEMS)
        if open_only:
            query = query.where(filter=FieldFilter("open", "==", True))
        if section_id:
            query = query.where(filter=FieldFilter("section_id", "==", section_id))
        rows = [{"id": pid, **doc} for pid, doc in self._stream(query)]
        return sorted(rows, key=lambda p: (str(p.get("section_id") or ""), p["id"]))

    @_guard
    def overrides(self, section_id: str | None = None) -> list[dict]:
        query = self._db.collection(OVERRIDES)
        if section_id:
            query = query.where(filter=FieldFilter("section_id", "==", section_id))
        rows = [{"id": oid, **doc} for oid, doc in self._stream(query)]
        return sorted(rows, key=lambda o: (str(o.get("section_id") or ""), o["id"]))

    @_guard
    def sections_with_course(self, course_id: str) -> list[str]:
        query = self._db.collection(SECTIONS).where(filter=FieldFilter("course_id", "==", course_id))
        return [doc.get("section_id") or raw_id(sid) or sid for sid, doc in self._stream(query.select(["section_id"]))]

    @_guard
    def audit(self, section_id: str, user: str | None = None) -> list[dict]:
        """The section's audit trail, oldest first (the newest AUDIT_LIMIT records); with a user
        (Clever id or email), only theirs. One equality filter: no composite index needed."""
        query = self._db.collection(AUDIT).where(filter=FieldFilter("section_id", "==", section_id))
        rows = [doc for _, doc in self._stream(query)]
        if user:
            u = user.lower()
            rows = [r for r in rows if u in (str(r.get("clever_id") or "").lower(), str(r.get("email") or "").lower())]
        rows.sort(key=lambda r: (str(r.get("at") or ""), r.get("seq") or 0))
        return rows[-AUDIT_LIMIT:]

    @_guard
    def unreplayed_dead_letters(self) -> int:
        query = self._db.collection(DEAD_LETTERS).where(filter=FieldFilter("replayed", "==", False))
        return len(self._stream(query.select(["replayed"])))

    @_guard
    def guardian_records(self, student_id: str) -> list[dict]:
        """A student's guardian records (guardians/), by address."""
        query = self._db.collection("guardians").where(filter=FieldFilter("student_id", "==", student_id))
        return sorted((doc for _, doc in self._stream(query)), key=lambda d: str(d.get("email") or ""))

    @_guard
    def guardian_state_counts(self) -> dict[str, int]:
        """Guardian records by state (pending, accepted, expired, withdrawn, removed, problem, released)."""
        rows = self._stream(self._db.collection("guardians").select(["state"]))
        return dict(Counter(str(doc.get("state") or "?") for _, doc in rows))

    @_guard
    def held_batch_count(self) -> int:
        query = self._db.collection(HELD).where(filter=FieldFilter("status", "==", "held"))
        return len(self._stream(query.select(["status"])))


def _by_section(doc: dict) -> tuple:
    sid = str(doc.get("section_id") or "")
    return (sid,)

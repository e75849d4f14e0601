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

from rostersync.domain.docids import doc_id, raw_id

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


# -- the status page's reads: counts by aggregation, one page of sections, a few fields each ---------
# A district of 5,000 sections must not cost 5,000 link documents (members and all) a page view:
# counts are Firestore count() aggregations, the listing reads one page of sections in Firestore's
# order (composite indexes in infra/firestore.tf) and the members of that page only.

SECTION_LIST_FIELDS = [*SECTION_SUMMARY_FIELDS, "school"]
PROBLEM_LIST_FIELDS = ["kind", "section_id", "clever_id", "email", "role", "reason", "hint", "message"]


class StatusPageReads:
    """Mixed into AdminStore: the reads behind the status page (status_page.py)."""

    _db: firestore.Client

    def _count(self, query) -> int:
        result = query.count(alias="n").get(retry=SHORT_RETRY, timeout=CALL_TIMEOUT)
        return int(result[0][0].value) if result and result[0] else 0

    @_guard
    def section_state_counts(self, states: list[str]) -> dict[str, int]:
        """{state: sections in it} by count() aggregations: no link document is read."""
        sections = self._db.collection(SECTIONS)
        return {s: self._count(sections.where(filter=FieldFilter("state", "==", s))) for s in states}

    @_guard
    def counts(self) -> dict[str, int]:
        """Open problems, overrides, unreplayed dead letters and held batches, by count() aggregations."""
        db = self._db
        return {
            "open_problems": self._count(db.collection(PROBLEMS).where(filter=FieldFilter("open", "==", True))),
            "overrides": self._count(db.collection(OVERRIDES)),
            "dead_letters_unreplayed": self._count(
                db.collection(DEAD_LETTERS).where(filter=FieldFilter("replayed", "==", False))
            ),
            "held_batches": self._count(db.collection(HELD).where(filter=FieldFilter("status", "==", "held"))),
            # Changes the appliers held while the sync was paused: `rostersync resume` publishes them.
            "dead_letters_held_while_paused": self._count(
                db.collection(DEAD_LETTERS)
                .where(filter=FieldFilter("replayed", "==", False))
                .where(filter=FieldFilter("held_while_paused", "==", True))
            ),
        }

    @_guard
    def open_problem_rows(self, kind: str | None = None, limit: int | None = None) -> list[dict]:
        """Open problems with the fields a grouped listing shows; with a limit, the first ones by id
        (a district with 10,000 open problems must not cost 10,000 reads a page view)."""
        query = self._db.collection(PROBLEMS).where(filter=FieldFilter("open", "==", True))
        if kind:
            query = query.where(filter=FieldFilter("kind", "==", kind))
        query = query.select(PROBLEM_LIST_FIELDS)
        if limit:
            query = query.limit(limit)
        rows = [{"id": pid, **doc} for pid, doc in self._stream(query)]
        return sorted(rows, key=lambda p: (str(p.get("section_id") or ""), p["id"]))

    @_guard
    def open_problem_kind_counts(self, kinds: list[str]) -> dict[str, int]:
        """{kind: open problems of it} by count() aggregations (equality filters only: no composite index)."""
        problems = self._db.collection(PROBLEMS).where(filter=FieldFilter("open", "==", True))
        return {k: self._count(problems.where(filter=FieldFilter("kind", "==", k))) for k in kinds}

    @_guard
    def open_problem_counts_for(self, section_ids: list[str]) -> dict[str, int]:
        """{section id: open problems} for one page of sections ('in' queries of 30 ids, one field read)."""
        counts: dict[str, int] = {}
        for start in range(0, len(section_ids), 30):
            query = (
                self._db.collection(PROBLEMS)
                .where(filter=FieldFilter("open", "==", True))
                .where(filter=FieldFilter("section_id", "in", section_ids[start : start + 30]))
                .select(["section_id"])
            )
            for _, doc in self._stream(query):
                sid = str(doc.get("section_id") or "")
                counts[sid] = counts.get(sid, 0) + 1
        return counts

    @_guard
    def section_page(
        self, state: str | None, school: str | None, after: list | None, limit: int
    ) -> tuple[list[dict], int]:
        """One page of sections by school, then name, then id (the listing's fields, no members),
        after the cursor [school, section_name, section_id] of the previous page's last row; and how
        many sections match the filters."""
        query = self._db.collection(SECTIONS)
        if state:
            query = query.where(filter=FieldFilter("state", "==", state))
        if school:
            query = query.where(filter=FieldFilter("school", "==", school))
        total = self._count(query)
        if not school:
            query = query.order_by("school")
        query = query.order_by("section_name").order_by("__name__")
        if after:
            position = [after[1], self._db.collection(SECTIONS).document(after[2])]
            query = query.start_after(position if school else [after[0], *position])
        rows = self._stream(query.select(SECTION_LIST_FIELDS).limit(limit))
        return [{**doc, "section_id": doc.get("section_id") or sid} for sid, doc in rows], total

    @_guard
    def all_section_rows(self) -> list[dict]:
        """Every section's listing fields, no members (a search reads them all: 5,000 small rows)."""
        rows = self._stream(self._db.collection(SECTIONS).select(SECTION_LIST_FIELDS))
        return [{**doc, "section_id": doc.get("section_id") or sid} for sid, doc in rows]

    @_guard
    def section_rows(self, section_ids: list[str]) -> list[dict]:
        """The listing's fields of these sections (the ones a problem kind names), no members."""
        refs = [self._db.collection(SECTIONS).document(s) for s in section_ids]
        snaps = self._db.get_all(refs, field_paths=SECTION_LIST_FIELDS, retry=SHORT_RETRY, timeout=CALL_TIMEOUT)
        return [{**(s.to_dict() or {}), "section_id": s.id} for s in snaps if s.exists]

    @_guard
    def section_members(self, section_ids: list[str]) -> dict[str, dict]:
        """{section id: members map} of one page of sections (one batched read)."""
        refs = [self._db.collection(SECTIONS).document(s) for s in section_ids]
        snaps = self._db.get_all(refs, field_paths=["members"], retry=SHORT_RETRY, timeout=CALL_TIMEOUT)
        return {s.id: (s.to_dict() or {}).get("members") or {} for s in snaps if s.exists}

    @_guard
    def schools(self, most: int = 500) -> list[str]:
        """Every school id a linked section names (the school filter's choices), one read a school:
        each query asks the school index for the first school after the last one found (reading
        every section's school took over 10 s for 5,000 sections in the emulator)."""
        found: list[str] = []
        while len(found) < most:
            query = self._db.collection(SECTIONS).where(filter=FieldFilter("school", ">", found[-1] if found else ""))
            rows = self._stream(query.order_by("school").select(["school"]).limit(1))
            if not rows or not rows[0][1].get("school"):
                break
            found.append(str(rows[0][1]["school"]))
        return found

    @_guard
    def audit_count(self, outcome: str, start, end) -> int:
        """Audit records with this outcome written in [start, end): a count() aggregation over the
        (outcome, at) index."""
        query = (
            self._db.collection(AUDIT)
            .where(filter=FieldFilter("outcome", "==", outcome))
            .where(filter=FieldFilter("at", ">=", start))
            .where(filter=FieldFilter("at", "<", end))
        )
        return self._count(query)


class AdminStore(StatusPageReads):
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

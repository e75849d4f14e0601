"""A Clever Data API v3.0 simulator: a threaded HTTP server on 127.0.0.1 holding one district.

What it follows (dev.clever.com docs, the Clever/swagger-api v3.0 files, and real v3.0 responses
recorded in beneggett/clever_sdk's cassettes):

- ``Authorization: Bearer <token>``; a missing or wrong token answers 401 ``{"error": "Unauthorized"}``.
- ``GET /v3.0/sections``, ``/sections/{id}``, ``/users`` (``role=student|teacher|staff|contact``),
  ``/users/{id}``, ``/schools``, ``/schools/{id}``, ``/events``, ``/events/{id}``; unknown ids 404.
- Lists are ``{"data": [{"data": obj, "uri": "/v3.0/<kind>/<id>"}], "links": [...]}`` sorted by
  ascending id, with relative ``self``/``next``/``prev`` links. ``limit`` defaults to 100, at most
  10000 (413 above). ``starting_after`` and ``ending_before`` take ids; ``ending_before=last`` gives
  the newest records (a v1 idiom the v3 API description does not list: ``refuse_ending_before_last``
  makes it answer 400 or nothing). A full page has a ``next`` link (the page after the end is then
  empty); a final partial page has none, as in the recorded real responses. ``hostile_next_links``
  makes the links lead elsewhere (another host, the other scheme, or the same page again under new
  URIs).
- Events are kept ``retention_days`` (30, as Clever's) of simulated time; ``advance_clock`` moves
  that time on (a month-long stop of the sync) and drops what is older. As recorded from the real
  API, ``starting_after=<an event id no longer kept>`` answers **200** with the oldest retained
  events (not 404); ``GET /events/{id}`` of such an event answers 404.
- Events are ``{id, type, created, data: {object, previous_attributes}}`` with ``previous_attributes``
  *inside* ``data`` (the real API; the swagger file puts it beside ``data``), holding only the keys
  that changed (nested for nested objects, arrays whole), only on ``*.updated``. ``*.deleted``
  carries the full object. ``record_type`` (repeatable) and ``school`` filter the events.
- 1200 requests a minute per token (configurable), ``X-RateLimit-Bucket/-Limit/-Remaining/-Reset``
  on every response, 429 over the limit.
- Contacts (v3.0.yml definitions Contact and StudentRelationship): users with the ``contact`` role,
  ``roles.contact`` = ``{student_relationships: [{student, relationship, type}], phone, phone_type,
  sis_id, legacy_id}``; ``add_contact``, ``set_relationships`` and ``delete_user`` emit
  ``users.created/updated/deleted`` (an update's ``previous_attributes.roles.contact`` holds the old
  relationship array whole, as arrays are sent).

Ids are 24 lowercase hex characters like MongoDB ObjectIds: 8 hex of a timestamp, a fixed 10-hex
"machine" part, and a 6-hex counter. One generator serves events, users, sections, schools and
courses, and every id advances a simulated clock by one second (starting at ``start_time``), so ids
sort by creation and ``created`` timestamps are deterministic.

    with CleverSimulator() as clever:
        teacher = clever.add_user("teacher", "ann.smith@d.example.org", "Ann", "Smith", emit=False)
        section = clever.add_section("Algebra I - Smith - Period 3", teacher, period="3")
        requests.get(f"{clever.base_url}/v3.0/sections", headers={"Authorization": f"Bearer {clever.token}"})
"""

from __future__ import annotations

import bisect
import collections
import json
import math
import re
import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from werkzeug.serving import WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

API = "/v3.0"
DEFAULT_LIMIT = 100
MAX_LIMIT = 10000
DEFAULT_START = datetime(2026, 11, 28, 17, 0, 0, tzinfo=UTC)
ROLES = ("student", "teacher", "staff", "contact")
_MACHINE = "5c1e7e4a0d"  # the middle part of every id, as an ObjectId's machine/process bytes
_ROUTE = re.compile(r"^/v3\.0/(sections|users|schools|terms|events)(?:/([^/]+))?/?$")
_SINGULAR = {"sections": "section", "users": "user", "schools": "school", "terms": "term", "events": "event"}
_MISSING = object()


class _Quiet(WSGIRequestHandler):
    def log_request(self, *args: Any, **kwargs: Any) -> None:  # no line per request in test output
        pass


class _User:
    __slots__ = (
        "created",
        "email",
        "first",
        "grade",
        "id",
        "last",
        "last_modified",
        "middle",
        "relationships",
        "role",
        "school",
        "sis_id",
        "title",
        "username",
    )

    def __init__(self, **fields: Any):
        for key in self.__slots__:
            setattr(self, key, fields.get(key))


def _iso(ms: int) -> str:
    dt = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def _diff(before: dict, after: dict, top: bool = True) -> dict:
    """Clever's previous_attributes: the old value of each key that changed, nested objects as
    nested diffs, arrays and other values whole; a key that did not exist before is sent as None."""
    out: dict[str, Any] = {}
    for key in list(before) + [k for k in after if k not in before]:
        if top and key == "last_modified":
            continue
        old, new = before.get(key, _MISSING), after.get(key, _MISSING)
        if old == new:
            continue
        if isinstance(old, dict) and isinstance(new, dict):
            nested = _diff(old, new, top=False)
            if nested:
                out[key] = nested
        else:
            out[key] = None if old is _MISSING else old
    return out


def _copy(obj: dict) -> dict:
    """A snapshot of a stored record deep enough that later changes do not show through."""
    return {k: (list(v) if isinstance(v, list) else _copy(v) if isinstance(v, dict) else v) for k, v in obj.items()}


class CleverSimulator:
    def __init__(self, token: str = "test-district-token", start_time: datetime | None = None):
        self.token = token
        self.base_url = ""
        start = start_time or DEFAULT_START
        if start.tzinfo is None:
            start = start.replace(tzinfo=UTC)
        self._start_ms = int(start.timestamp() * 1000)
        self._seq = 0
        self._lock = threading.RLock()
        self._server: Any = None
        self._thread: threading.Thread | None = None

        self._users: dict[str, _User] = {}
        self._user_ids: list[str] = []
        self._role_ids: dict[str, list[str]] = {r: [] for r in ROLES}
        self._sections: dict[str, dict] = {}
        self._section_ids: list[str] = []
        self._schools: dict[str, dict] = {}
        self._terms: dict[str, dict] = {}
        self._school_ids: list[str] = []
        self._courses: dict[str, str] = {}
        self._events: list[dict] = []
        self._event_ids: list[str] = []
        self._section_seq = 0
        self._clock_offset_ms = 0  # advance_clock: simulated time that passed without new ids
        self.retention_days: float | None = 30.0
        # ending_before=last: "newest" (the v1 behaviour), "400" (refused) or "empty" (nothing).
        self.ending_before_last = "newest"
        # next links: "normal", "other_host" (absolute, to hostile_base), "other_scheme" (absolute,
        # http<->https) or "repeat" (starting_after ignored: the first page again, under a new URI).
        self.next_links = "normal"
        self.hostile_base = "https://clever.attacker.example"
        self._repeat_counter = 0

        # Seconds an answer takes, by kind ("sections", "users", ...): a big district's pages are
        # not instant, and a poll's time budget can end in the middle of a bootstrap.
        self.answer_seconds: dict[str, float] = {}

        self.rate_limit = 1200
        self._window_seconds = 60.0
        self._windows: dict[str, list[float]] = {}  # token -> [window start, requests in window]
        self._forced_429: collections.deque[int | None] = collections.deque()
        self._forced_errors: collections.deque[int] = collections.deque()
        # Every request to an API route, by kind (also those answered 401, 429 or 5xx).
        self.requests: collections.Counter[str] = collections.Counter()
        # Every answer, by status code.
        self.responses: collections.Counter[int] = collections.Counter()

        self.district_id, _ = self._tick()
        self.term_id, _ = self._tick()
        # The default term of new sections: this school year (dates as Clever gives them).
        self._terms[self.term_id] = {
            "id": self.term_id,
            "district": self.district_id,
            "name": "School year",
            "start_date": "2026-08-15",
            "end_date": "2027-06-15",
        }

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> str:
        if self._server is None:
            self._server = make_server("127.0.0.1", 0, self._wsgi, threaded=True, request_handler=_Quiet)
            self._thread = threading.Thread(
                target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="clever-sim", daemon=True
            )
            self._thread.start()
            self.base_url = f"http://127.0.0.1:{self._server.server_port}"
        return self.base_url

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            if self._thread is not None:
                self._thread.join(timeout=10)
            self._server = None
            self._thread = None

    def __enter__(self) -> CleverSimulator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- ids and the simulated clock -------------------------------------------------------------

    def _tick(self) -> tuple[str, str]:
        """A new id and the simulated time it was made (the clock moves one second per id)."""
        with self._lock:
            self._seq += 1
            ms = self._start_ms + self._clock_offset_ms + self._seq * 1000
            return f"{ms // 1000:08x}{_MACHINE}{self._seq:06x}", _iso(ms)

    @staticmethod
    def _index_add(ids: list[str], record_id: str) -> None:
        if not ids or ids[-1] < record_id:
            ids.append(record_id)
        else:
            bisect.insort(ids, record_id)

    def _append_event(
        self, type_: str, obj: dict, previous: dict | None = None, tick: tuple[str, str] | None = None
    ) -> str:
        event_id, created = tick or self._tick()
        data: dict[str, Any] = {"object": obj}
        if previous is not None:
            data["previous_attributes"] = previous
        self._events.append({"id": event_id, "type": type_, "created": created, "data": data})
        self._event_ids.append(event_id)  # generator ids only, so always the newest
        return event_id

    def _event(self, event_id: str) -> dict | None:
        i = bisect.bisect_left(self._event_ids, event_id)
        if i < len(self._event_ids) and self._event_ids[i] == event_id:
            return self._events[i]
        return None

    # -- rendering -------------------------------------------------------------------------------

    def _render_user(self, u: _User) -> dict:
        out: dict[str, Any] = {"id": u.id, "district": self.district_id}
        if u.email is not None:
            out["email"] = u.email
        name = {"first": u.first}
        if u.middle:
            name["middle"] = u.middle
        name["last"] = u.last
        out["name"] = name
        out["created"] = u.created
        out["last_modified"] = u.last_modified
        role: dict[str, Any] = {}
        if u.role == "contact":
            # Contacts carry no schools or credentials; their students are in student_relationships.
            out["roles"] = {
                "contact": {
                    "student_relationships": [dict(r) for r in (u.relationships or [])],
                    "phone": "",
                    "phone_type": "Cell",
                    "sis_id": u.sis_id,
                    "legacy_id": u.sis_id,
                }
            }
            return out
        if u.school is not None:
            role["school"] = u.school
        role["schools"] = [u.school] if u.school is not None else []
        role["sis_id"] = u.sis_id
        role["credentials"] = {"district_username": u.username}
        if u.role == "student":
            role["student_number"] = u.sis_id
            role["grade"] = u.grade
            role["enrollments"] = []
        elif u.role == "teacher":
            role["teacher_number"] = u.sis_id
            role["title"] = u.title or ""
        else:
            role["title"] = u.title or ""
            role["department"] = ""
        out["roles"] = {u.role: role}
        return out

    def _schools_of(self, record_type: str, obj: Any) -> set[str]:
        if not isinstance(obj, dict):
            return set()
        found: set[str] = set()
        if record_type == "schools" and isinstance(obj.get("id"), str):
            found.add(obj["id"])
        for holder in [obj, *(v for v in (obj.get("roles") or {}).values() if isinstance(v, dict))]:
            if isinstance(holder.get("school"), str):
                found.add(holder["school"])
            if isinstance(holder.get("schools"), list):
                found.update(s for s in holder["schools"] if isinstance(s, str))
        return found

    # -- district changes ------------------------------------------------------------------------

    def add_term(self, name: str, start_date: str, end_date: str, emit: bool = True) -> str:
        """A term (terms.created); sections refer to it by term_id. Dates are YYYY-MM-DD."""
        with self._lock:
            term_id, _ = self._tick()
            self._terms[term_id] = {
                "id": term_id,
                "district": self.district_id,
                "name": name,
                "start_date": start_date,
                "end_date": end_date,
            }
        if emit:
            self.emit_event("terms.created", dict(self._terms[term_id]))
        return term_id

    def add_school(self, name: str, school_id: str | None = None, emit: bool = True) -> str:
        with self._lock:
            new_id, now = self._tick()
            school_id = school_id or new_id
            if school_id in self._schools:
                raise ValueError(f"school {school_id} exists")
            n = len(self._schools) + 1
            school = {
                "id": school_id,
                "district": self.district_id,
                "name": name,
                "school_number": f"{n:03d}",
                "sis_id": f"SCH{n:03d}",
                "low_grade": "9",
                "high_grade": "12",
                "created": now,
                "last_modified": now,
            }
            self._schools[school_id] = school
            self._index_add(self._school_ids, school_id)
            if emit:
                self._append_event("schools.created", _copy(school))
            return school_id

    def add_user(
        self,
        role: str,
        email: str | None,
        first: str,
        last: str,
        school: str | None = None,
        sis_id: str | None = None,
        user_id: str | None = None,
        emit: bool = True,
    ) -> str:
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, not {role!r}")
        with self._lock:
            new_id, now = self._tick()
            user_id = user_id or new_id
            if user_id in self._users:
                raise ValueError(f"user {user_id} exists")
            if school is None and self._school_ids:
                school = self._school_ids[0]
            user = _User(
                id=user_id,
                role=role,
                email=email,
                first=first,
                last=last,
                school=school,
                sis_id=sis_id or f"{role[0].upper()}{self._seq:06d}",
                grade="9" if role == "student" else None,
                username=(email.split("@")[0] if email else f"{first}{last}").lower(),
                created=now,
                last_modified=now,
            )
            self._users[user_id] = user
            self._index_add(self._user_ids, user_id)
            self._index_add(self._role_ids[role], user_id)
            if emit:
                self._append_event("users.created", self._render_user(user))
            return user_id

    _USER_FIELDS = frozenset({"email", "first", "middle", "last", "school", "sis_id", "grade", "title"})

    def add_contact(
        self,
        email: str | None,
        first: str,
        last: str,
        relationships: Iterable[tuple[str, str, str]] = (),
        emit: bool = True,
    ) -> str:
        """A contact (users.created) with (student id, relationship, type) triples, e.g.
        ("<student>", "Parent", "Parent/Guardian")."""
        user_id = self.add_user("contact", email, first, last, emit=False)
        with self._lock:
            user = self._users[user_id]
            user.school = None
            user.relationships = [{"student": s, "relationship": r, "type": t} for s, r, t in relationships]
            if emit:
                self._append_event("users.created", self._render_user(user))
        return user_id

    def set_relationships(self, contact_id: str, relationships: Iterable[tuple[str, str, str]]) -> str:
        """Replaces a contact's student_relationships (users.updated); returns the event id."""
        with self._lock:
            user = self._get_user(contact_id)
            before = self._render_user(user)
            user.relationships = [{"student": s, "relationship": r, "type": t} for s, r, t in relationships]
            previous = _diff(before, self._render_user(user))
            if not previous:
                return ""
            tick = self._tick()
            user.last_modified = tick[1]
            return self._append_event("users.updated", self._render_user(user), previous, tick)

    def delete_user(self, user_id: str) -> str:
        """Removes a user (users.deleted, carrying the full object as Clever's deleted events do)."""
        with self._lock:
            user = self._get_user(user_id)
            obj = self._render_user(user)
            del self._users[user_id]
            self._user_ids.remove(user_id)
            self._role_ids[user.role].remove(user_id)
            return self._append_event("users.deleted", obj)

    def update_user(self, user_id: str, **fields: Any) -> str:
        """Changes a user (email, first, middle, last, school, sis_id, grade, title) and emits
        users.updated; returns the event id ("" when nothing changed)."""
        unknown = set(fields) - self._USER_FIELDS
        if unknown:
            raise TypeError(f"update_user does not know {sorted(unknown)}; use {sorted(self._USER_FIELDS)}")
        with self._lock:
            user = self._get_user(user_id)
            before = self._render_user(user)
            for key, value in fields.items():
                setattr(user, key, value)
            after = self._render_user(user)
            previous = _diff(before, after)
            if not previous:
                return ""
            tick = self._tick()
            user.last_modified = tick[1]
            return self._append_event("users.updated", self._render_user(user), previous, tick)

    def _get_user(self, user_id: str) -> _User:
        try:
            return self._users[user_id]
        except KeyError:
            raise KeyError(f"no Clever user {user_id}") from None

    def _get_section(self, section_id: str) -> dict:
        try:
            return self._sections[section_id]
        except KeyError:
            raise KeyError(f"no Clever section {section_id}") from None

    def _course_id(self, section_name: str) -> str:
        course = section_name.split(" - ")[0].strip() or section_name
        if course not in self._courses:
            self._courses[course] = self._tick()[0]
        return self._courses[course]

    def add_section(
        self,
        name: str,
        teacher: str,
        students: Iterable[str] = (),
        teachers: Iterable[str] | None = None,
        period: str = "1",
        subject: str = "math",
        term_id: str | None = None,
        school: str | None = None,
        sis_id: str | None = None,
        section_id: str | None = None,
        emit: bool = True,
    ) -> str:
        """A section; `teacher` is the primary and always first in `teachers` (default [teacher])."""
        teacher_list = [teacher] + [t for t in dict.fromkeys(teachers or ()) if t != teacher]
        student_list = list(dict.fromkeys(students))
        with self._lock:
            for uid in teacher_list + student_list:
                self._get_user(uid)
            course = self._course_id(name)
            new_id, now = self._tick()
            section_id = section_id or new_id
            if section_id in self._sections:
                raise ValueError(f"section {section_id} exists")
            if school is None:
                school = self._users[teacher].school or (self._school_ids[0] if self._school_ids else None)
            self._section_seq += 1
            section = {
                "id": section_id,
                "district": self.district_id,
                "name": name,
                "period": str(period),
                "subject": subject,
                "course": course,
                "term_id": term_id or self.term_id,
                "school": school,
                "sis_id": sis_id or f"SEC{self._section_seq:05d}",
                "section_number": str(self._section_seq),
                "grade": "9",
                "teacher": teacher,
                "teachers": teacher_list,
                "students": student_list,
                "created": now,
                "last_modified": now,
            }
            self._sections[section_id] = section
            self._index_add(self._section_ids, section_id)
            if emit:
                self._append_event("sections.created", _copy(section))
            return section_id

    def _change_section(self, section_id: str, change: Callable[[dict], None]) -> str:
        with self._lock:
            before = self._get_section(section_id)
            section = _copy(before)
            change(section)  # on a copy: a bad change leaves the stored section as it was
            if section["teachers"] and section.get("teacher") != section["teachers"][0]:
                raise AssertionError("the primary teacher must be first in teachers")
            previous = _diff(before, section)
            if not previous:
                return ""  # nothing changed: Clever sends no event
            known = set(before["teachers"]) | set(before["students"])
            for uid in (set(section["teachers"]) | set(section["students"])) - known:
                self._get_user(uid)
            tick = self._tick()
            section["last_modified"] = tick[1]
            self._sections[section_id] = section
            return self._append_event("sections.updated", _copy(section), previous, tick)

    def update_section(self, section_id: str, **fields: Any) -> str:
        """Sets any section fields and emits sections.updated; returns the event id ("" when
        nothing changed). `teachers` without `teacher` makes its first the primary; a `teacher` not
        in `teachers` is put first."""
        if "id" in fields:
            raise ValueError("a section id cannot change")

        def change(section: dict) -> None:
            for key, value in fields.items():
                section[key] = list(value) if key in ("teachers", "students") else value
            if "teachers" in fields and "teacher" not in fields:
                section["teacher"] = section["teachers"][0] if section["teachers"] else None
            primary = section.get("teacher")
            if primary is not None:
                section["teachers"] = [primary] + [t for t in section["teachers"] if t != primary]

        return self._change_section(section_id, change)

    def add_student(self, section_id: str, user_id: str) -> str:
        self._get_user(user_id)

        def change(section: dict) -> None:
            if user_id not in section["students"]:
                section["students"] = section["students"] + [user_id]

        return self._change_section(section_id, change)

    def remove_student(self, section_id: str, user_id: str) -> str:
        def change(section: dict) -> None:
            section["students"] = [s for s in section["students"] if s != user_id]

        return self._change_section(section_id, change)

    def add_teacher(self, section_id: str, user_id: str) -> str:
        """Adds a co-teacher (after the primary and the other teachers)."""
        self._get_user(user_id)

        def change(section: dict) -> None:
            if user_id not in section["teachers"]:
                section["teachers"] = section["teachers"] + [user_id]

        return self._change_section(section_id, change)

    def remove_teacher(self, section_id: str, user_id: str) -> str:
        """Removes a teacher; removing the primary makes the next teacher the primary (or none)."""

        def change(section: dict) -> None:
            section["teachers"] = [t for t in section["teachers"] if t != user_id]
            if section["teacher"] == user_id:
                section["teacher"] = section["teachers"][0] if section["teachers"] else None

        return self._change_section(section_id, change)

    def set_primary_teacher(self, section_id: str, user_id: str, keep_old_as_coteacher: bool = True) -> str:
        self._get_user(user_id)

        def change(section: dict) -> None:
            old = section["teacher"]
            if old == user_id:
                return
            rest = [t for t in section["teachers"] if t != user_id and (keep_old_as_coteacher or t != old)]
            section["teacher"] = user_id
            section["teachers"] = [user_id, *rest]

        return self._change_section(section_id, change)

    def rename_section(self, section_id: str, name: str) -> str:
        return self.update_section(section_id, name=name)

    def delete_section(self, section_id: str) -> str:
        with self._lock:
            section = self._sections.pop(self._get_section(section_id)["id"])
            self._section_ids.remove(section_id)
            return self._append_event("sections.deleted", _copy(section))

    def emit_event(self, type: str, obj: dict, previous_attributes: dict | None = None) -> str:
        """Appends an event of any type ("schools.created", "terms.updated", "resources.created",
        ...) without touching the district; previous_attributes goes inside data, as Clever's does."""
        if not re.fullmatch(r"[a-z_]+\.(created|updated|deleted)", type):
            raise ValueError(f"event type {type!r} is not <record type>.created|updated|deleted")
        with self._lock:
            return self._append_event(type, _copy(obj), _copy(previous_attributes) if previous_attributes else None)

    def now(self) -> datetime:
        """The simulated time: that of the newest id."""
        with self._lock:
            ms = self._start_ms + self._clock_offset_ms + self._seq * 1000
        return datetime.fromtimestamp(ms / 1000, tz=UTC)

    def advance_clock(self, days: float = 0, seconds: float = 0) -> None:
        """Simulated time passes (nothing happens in the district meanwhile); events older than
        `retention_days` before the new time are dropped, as Clever drops them after 30 days."""
        with self._lock:
            self._clock_offset_ms += int((days * 86400 + seconds) * 1000)
            if self.retention_days is not None:
                cutoff = int(self.now().timestamp()) - int(self.retention_days * 86400)
                cut = bisect.bisect_left(self._event_ids, f"{max(cutoff, 0):08x}")
                del self._events[:cut]
                del self._event_ids[:cut]

    def refuse_ending_before_last(self, mode: str = "400") -> None:
        """ending_before=last answers 400 ("400"), an empty list ("empty"), or the newest ("newest")."""
        if mode not in ("400", "empty", "newest"):
            raise ValueError("mode is 400, empty or newest")
        with self._lock:
            self.ending_before_last = mode

    def hostile_next_links(self, mode: str = "other_host", base: str | None = None) -> None:
        """Lists answer with next links that lead astray: "other_host" (absolute, to `base`),
        "other_scheme" (absolute, http and https swapped), "repeat" (starting_after is ignored:
        every request gets the first page again, with a next link that is a new URI each time),
        or "normal"."""
        if mode not in ("normal", "other_host", "other_scheme", "repeat"):
            raise ValueError("mode is normal, other_host, other_scheme or repeat")
        with self._lock:
            self.next_links = mode
            if base:
                self.hostile_base = base.rstrip("/")

    def expire_events(self, keep_last: int = 0) -> None:
        """The 30-day retention: all but the newest `keep_last` events are gone."""
        with self._lock:
            cut = max(0, len(self._events) - keep_last)
            del self._events[:cut]
            del self._event_ids[:cut]

    # -- reads for tests -------------------------------------------------------------------------

    def section(self, section_id: str) -> dict:
        with self._lock:
            return _copy(self._get_section(section_id))

    def user(self, user_id: str) -> dict:
        with self._lock:
            return self._render_user(self._get_user(user_id))

    def school(self, school_id: str) -> dict:
        with self._lock:
            return _copy(self._schools[school_id])

    @property
    def events(self) -> list[dict]:
        """The retained events, oldest first (a copy of the list; do not change the events)."""
        with self._lock:
            return list(self._events)

    @property
    def section_ids(self) -> list[str]:
        with self._lock:
            return list(self._section_ids)

    # -- rate limit and faults -------------------------------------------------------------------

    def set_rate_limit(self, per_minute: int = 1200, window_seconds: float = 60.0) -> None:
        """`per_minute` requests per token per window (Clever: 1200 a minute). A shorter
        `window_seconds` lets a test see a natural 429 and its reset without waiting a minute."""
        with self._lock:
            self.rate_limit = per_minute
            self._window_seconds = window_seconds

    def force_429(self, count: int, retry_after: int | None = None) -> None:
        """The next `count` API requests answer 429, with `Retry-After: retry_after` when given.
        Without it, X-RateLimit-Reset is put 1 s ahead so a client waiting for the reset waits ~1 s."""
        with self._lock:
            self._forced_429.extend([retry_after] * count)

    def inject_errors(self, http_status: int, count: int) -> None:
        """The next `count` API requests (after any forced 429s) answer `http_status` (500/502/503)."""
        if http_status < 500:
            raise ValueError("inject_errors is for server errors (500, 502, 503)")
        with self._lock:
            self._forced_errors.extend([http_status] * count)

    def _window(self, token: str, now: float) -> list[float]:
        window = self._windows.get(token)
        if window is None or now >= window[0] + self._window_seconds:
            window = self._windows[token] = [now, 0]
        return window

    def _limit_headers(self, window: list[float], reset: int | None = None) -> dict[str, str]:
        return {
            "X-RateLimit-Bucket": "bearer",
            "X-RateLimit-Limit": str(self.rate_limit),
            "X-RateLimit-Remaining": str(max(0, self.rate_limit - int(window[1]))),
            "X-RateLimit-Reset": str(reset if reset is not None else math.ceil(window[0] + self._window_seconds)),
        }

    # -- HTTP ------------------------------------------------------------------------------------

    def _wsgi(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        request = Request(environ)
        status, body, headers = self._handle(request)
        match = _ROUTE.match(request.path)
        if match and self.answer_seconds:
            collection, record_id = match.groups()
            time.sleep(self.answer_seconds.get(_SINGULAR[collection] if record_id else collection, 0.0))
        with self._lock:
            self.responses[status] += 1
        response = Response(
            json.dumps(body) if not isinstance(body, str) else body,
            status=status,
            headers=headers,
            content_type="application/json; charset=utf-8",
        )
        return response(environ, start_response)

    def _handle(self, request: Request) -> tuple[int, Any, dict[str, str]]:
        match = _ROUTE.match(request.path)
        if not match:
            return 404, {"error": "Not Found"}, {}
        collection, record_id = match.groups()
        kind = _SINGULAR[collection] if record_id else collection
        auth = request.headers.get("Authorization", "")
        presented = auth[7:] if auth.startswith("Bearer ") else ""
        now = time.time()
        with self._lock:
            self.requests[kind] += 1
            window = self._window(presented, now)
            if presented != self.token:
                return 401, {"error": "Unauthorized"}, self._limit_headers(window)
            if self._forced_429:
                retry_after = self._forced_429.popleft()
                headers = self._limit_headers([window[0], self.rate_limit], reset=math.ceil(now) + 1)
                if retry_after is not None:
                    headers["Retry-After"] = str(retry_after)
                return 429, {"error": "Too Many Requests"}, headers
            if self._forced_errors:
                code = self._forced_errors.popleft()
                return code, {"error": f"Internal error (simulated {code})"}, self._limit_headers(window)
            if window[1] >= self.rate_limit:
                return 429, {"error": "Too Many Requests: rate limit exceeded"}, self._limit_headers(window)
            window[1] += 1
            headers = self._limit_headers(window)
            if request.method != "GET":
                return 405, {"error": "Method Not Allowed"}, headers
            if record_id:
                status, body = self._one(collection, record_id)
            else:
                status, body = self._list(collection, request)
            return status, body, headers

    def _one(self, collection: str, record_id: str) -> tuple[int, Any]:
        obj: Any = None
        if collection == "sections" and record_id in self._sections:
            obj = self._sections[record_id]
        elif collection == "users" and record_id in self._users:
            obj = self._render_user(self._users[record_id])
        elif collection == "schools" and record_id in self._schools:
            obj = self._schools[record_id]
        elif collection == "terms" and record_id in self._terms:
            obj = self._terms[record_id]
        elif collection == "events":
            obj = self._event(record_id)
        if obj is None:
            return 404, {"error": f"Resource not found: {collection[:-1]} {record_id}"}
        uri = f"{API}/{collection}/{record_id}"
        return 200, json.dumps({"data": obj, "links": [{"rel": "self", "uri": uri}]})

    def _list(self, collection: str, request: Request) -> tuple[int, Any]:
        args = request.args
        raw_limit = args.get("limit")
        try:
            limit = DEFAULT_LIMIT if raw_limit in (None, "") else int(raw_limit)
        except ValueError:
            return 400, {"error": f"limit must be a number, not {raw_limit!r}"}
        if limit > MAX_LIMIT:
            return 413, {"error": f"limit {limit} is too large: the maximum is {MAX_LIMIT}"}
        if limit < 1:
            return 400, {"error": "limit must be at least 1"}
        starting_after = args.get("starting_after") or None
        ending_before = args.get("ending_before") or None
        if ending_before == "last" and self.ending_before_last == "400":
            return 400, {"message": "Invalid ending_before: last is not an id"}
        if self.next_links == "repeat":
            starting_after = None  # a server that ignores the cursor: the same first page again

        keep: Callable[[str], bool] | None = None
        if collection == "sections":
            ids, get = self._section_ids, self._sections.__getitem__
        elif collection == "schools":
            ids, get = self._school_ids, self._schools.__getitem__
        elif collection == "terms":
            ids, get = sorted(self._terms), self._terms.__getitem__
        elif collection == "users":
            role = args.get("role")
            if role and role not in ROLES:
                return 400, {"error": f"unknown role {role!r}"}
            ids = self._role_ids[role] if role else self._user_ids
            get = lambda uid: self._render_user(self._users[uid])  # noqa: E731
        else:
            ids = self._event_ids
            get = self._event  # type: ignore[assignment]
            if starting_after and self._event(starting_after) is None:
                # As the real v3.0 API answered a cursor 43 days old (recorded in beneggett/clever_sdk,
                # events_with_starting_after.yml): 200 with the oldest retained events, the same first
                # page as with no cursor. A client that trusts it silently skips what was dropped.
                starting_after = None
            types = set(args.getlist("record_type"))
            school = args.get("school")
            if types or school:

                def keep(eid: str) -> bool:
                    event = self._event(eid) or {}
                    record_type = event["type"].split(".")[0]
                    if types and record_type not in types:
                        return False
                    if school:
                        data = event["data"]
                        schools = self._schools_of(record_type, data.get("object"))
                        schools |= self._schools_of(record_type, data.get("previous_attributes"))
                        return school in schools
                    return True

        if ending_before == "last" and self.ending_before_last == "empty":
            page: list[str] = []
        else:
            page = self._page(ids, limit, starting_after, ending_before, keep)
        items = [{"data": get(rid), "uri": f"{API}/{collection}/{rid}"} for rid in page]
        base = [(k, v) for k, v in args.items(multi=True) if k not in ("limit", "starting_after", "ending_before")]
        path = f"{API}/{collection}"
        links = [{"rel": "self", "uri": path + ("?" + request.query_string.decode() if request.query_string else "")}]
        if page and (len(page) == limit or self.next_links == "repeat"):
            # As recorded: a final partial page carries self (and prev) only; a full page cannot
            # know it is the last, so the page after it comes back empty.
            after = urlencode([("limit", limit), *base, ("starting_after", page[-1])])
            links.append({"rel": "next", "uri": self._next_uri(f"{path}?{after}", request)})
        if page and (starting_after or ending_before):
            before = urlencode([("limit", limit), *base, ("ending_before", page[0])])
            links.append({"rel": "prev", "uri": f"{path}?{before}"})
        return 200, json.dumps({"data": items, "links": links})

    def _next_uri(self, uri: str, request: Request) -> str:
        if self.next_links == "other_host":
            return self.hostile_base + uri
        if self.next_links == "other_scheme":
            scheme = "https" if request.scheme == "http" else "http"
            return f"{scheme}://{request.host}{uri}"
        if self.next_links == "repeat":
            self._repeat_counter += 1
            return f"{uri}&page_token={self._repeat_counter}"
        return uri

    @staticmethod
    def _page(
        ids: list[str],
        limit: int,
        starting_after: str | None,
        ending_before: str | None,
        keep: Callable[[str], bool] | None,
    ) -> list[str]:
        lo = bisect.bisect_right(ids, starting_after) if starting_after else 0
        if ending_before:
            hi = len(ids) if ending_before == "last" else bisect.bisect_left(ids, ending_before)
            out: list[str] = []
            for i in range(hi - 1, lo - 1, -1):
                if keep is None or keep(ids[i]):
                    out.append(ids[i])
                    if len(out) == limit:
                        break
            out.reverse()
            return out
        if keep is None:
            return ids[lo : lo + limit]
        out = []
        for i in range(lo, len(ids)):
            if keep(ids[i]):
                out.append(ids[i])
                if len(out) == limit:
                    break
        return out

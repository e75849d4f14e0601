"""A Google Classroom API v1 simulator: a threaded HTTP server on 127.0.0.1 holding one Workspace domain.

Point the real client at it with
``build("classroom", "v1", credentials=AnonymousCredentials(), client_options={"api_endpoint": sim.base_url},
static_discovery=True, cache_discovery=False)``. google-api-python-client 2.202 uses ``api_endpoint`` *in place
of* ``rootUrl + servicePath`` (``servicePath`` is empty for Classroom) and joins the method paths
(``v1/courses/...``) with exactly one ``/``, so the endpoint works with or without the trailing slash that
``base_url`` carries. It must not carry a path of its own (``http://host:port/prefix`` would send
``/prefix/v1/...``, which this server answers 404). ``service.new_batch_http_request()`` ignores
``api_endpoint`` and posts to ``https://classroom.googleapis.com/batch``; build
``googleapiclient.http.BatchHttpRequest(batch_uri=base_url + "batch")`` instead.

What it follows (the bundled discovery document, revision 20261028, and developers.google.com/workspace/classroom:
manage-courses, manage-aliases, manage-users, troubleshooting/common-errors, reference/limits):

- ``courses`` create/get/list/patch/update/delete, ``courses.aliases`` create/list/delete,
  ``courses.teachers`` and ``courses.students`` create/get/list/delete, ``userProfiles.get`` and
  ``POST /batch`` (multipart/mixed, at most 50 calls, each counted and charged against the quota).
- Every ``id``/``courseId`` takes the Classroom id or an alias (``d:...``/``p:...``); answers carry the id.
- Errors are ``{"error": {"code", "message", "status"}}``; Classroom's reason is the ``@Reason `` prefix of
  ``message``. Unknown query parameters and unknown body fields answer 400 INVALID_ARGUMENT as Google does.
- Empty strings and empty lists are left out of answers (proto3 JSON; Classroom does send
  ``guardiansEnabled: false``); an empty list answer is ``{}``. The ``fields`` parameter (partial response) is honoured.
- Lists: courses newest first, members in the order they joined; ``pageSize`` 0/absent means 30
  (documented for rosters; Classroom leaves courses to the server, 30 is used too), larger sizes are
  capped at ``MAX_PAGE_SIZE``. ``nextPageToken`` appears only when more items follow; a token is tied to
  the request that produced it (400 otherwise) and stays valid while items are added or removed.

Choices where the docs say nothing (change them here if the real service is seen to differ):

- A state change Classroom does not allow (ACTIVE -> PROVISIONED, anything -> DECLINED except from
  PROVISIONED, ...) answers 400 FAILED_PRECONDITION without an ``@`` reason. PROVISIONED may go to
  ACTIVE, DECLINED or ARCHIVED; ACTIVE <-> ARCHIVED; DECLINED -> PROVISIONED.
- ARCHIVED and DECLINED courses are not modifiable: a patch/update that changes anything but
  ``courseState`` answers ``@CourseNotModifiable`` unless the same request moves the course to a
  modifiable state, and members cannot be added. Members can still be removed (the delete docs list no
  FAILED_PRECONDITION for it). Courses can be deleted in any state.
- Adding a suspended user answers 400 FAILED_PRECONDITION (the docs: "the requested user's account is
  disabled") with no ``@`` reason; a suspended owner makes member adds fail with ``@InactiveCourseOwner``.
- ``courses.aliases`` answers ``{"alias": ...}`` only: ``CourseAlias`` has no ``courseId`` property.
- ``userProfiles.get`` of an unknown user answers 403 PERMISSION_DENIED (as documented, not 404).
- ``calls`` counts every call that reached a known method, including ones answered 429 by the quota or
  failed by ``inject_errors``; ``statuses`` counts those calls by the HTTP status they got (so
  ``statuses[429]`` is the quota rejections plus injected 429s); the quota window counts only the calls
  it let through. ``roster()`` raises KeyError for a course that does not exist.

    with ClassroomSimulator(domain="district.example.org", admin_email="admin@district.example.org") as sim:
        sim.add_user("admin@district.example.org", "District", "Admin")
        sim.add_user("ann.smith@district.example.org", "Ann", "Smith")
        service = build("classroom", "v1", credentials=AnonymousCredentials(),
                        client_options={"api_endpoint": sim.base_url}, static_discovery=True, cache_discovery=False)
        service.courses().create(body={"id": "d:sec-1", "name": "Algebra", "ownerId": "ann.smith@..."}).execute()
"""

from __future__ import annotations

import base64
import collections
import email.parser
import email.policy
import hashlib
import json
import re
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from werkzeug.http import HTTP_STATUS_CODES
from werkzeug.serving import WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

from tests.sims.classroom_guardians import GUARDIAN_QUERY_PARAMS, GUARDIAN_ROUTES, GuardiansMixin
from tests.sims.classroom_push import PushNotificationsMixin

DEFAULT_PAGE_SIZE = 30
MAX_PAGE_SIZE = 1000
MAX_BATCH = 50
MAX_NAME = 750
MAX_ALIAS = 256
FIRST_USER_ID = 1000000000001
FIRST_COURSE_ID = 700000000001

MODIFIABLE = ("PROVISIONED", "ACTIVE")
TRANSITIONS = {
    "PROVISIONED": {"ACTIVE", "DECLINED", "ARCHIVED"},
    "ACTIVE": {"ARCHIVED"},
    "ARCHIVED": {"ACTIVE"},
    "DECLINED": {"PROVISIONED"},
    "SUSPENDED": set(),
}
DEFAULT_LIST_STATES = ("ACTIVE", "ARCHIVED", "PROVISIONED", "DECLINED")
ALL_STATES = ("COURSE_STATE_UNSPECIFIED", "ACTIVE", "ARCHIVED", "PROVISIONED", "DECLINED", "SUSPENDED")
TEXT_FIELDS = ("name", "section", "descriptionHeading", "description", "room", "subject")
PATCHABLE = {"courseState", "description", "descriptionHeading", "name", "ownerId", "room", "section", "subject"}
# Writable and read-only properties of the Course schema; read-only ones are ignored in request bodies.
COURSE_PROPS = {
    "alternateLink",
    "calendarId",
    "courseGroupEmail",
    "courseMaterialSets",
    "courseState",
    "creationTime",
    "description",
    "descriptionHeading",
    "enrollmentCode",
    "gradebookSettings",
    "guardiansEnabled",
    "id",
    "levels",
    "name",
    "ownerId",
    "room",
    "section",
    "subject",
    "teacherFolder",
    "teacherGroupEmail",
    "updateTime",
}
MEMBER_PROPS = {"courseId", "userId", "profile", "studentWorkFolder"}
SYSTEM_PARAMS = {
    "$.xgafv",
    "access_token",
    "alt",
    "callback",
    "fields",
    "key",
    "oauth_token",
    "prettyPrint",
    "quotaUser",
    "uploadType",
    "upload_protocol",
}
STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ALREADY_EXISTS",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "NOT_IMPLEMENTED",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
DEFAULT_MESSAGES = {
    "INVALID_ARGUMENT": "Request contains an invalid argument.",
    "FAILED_PRECONDITION": "Precondition check failed.",
    "PERMISSION_DENIED": "The caller does not have permission",
    "NOT_FOUND": "Requested entity was not found.",
    "ALREADY_EXISTS": "Requested entity already exists",
    "RESOURCE_EXHAUSTED": "Resource has been exhausted (e.g. check quota).",
    "INTERNAL": "Internal error encountered.",
    "UNAVAILABLE": "The service is currently unavailable.",
    "DEADLINE_EXCEEDED": "The request timed out.",
    "UNAUTHENTICATED": "Request had invalid authentication credentials.",
}
_URL_IN_TEXT = re.compile(
    r"(https?://|www\.)\S+|\b[a-z0-9-]+\.(com|org|net|edu|gov|io|co|us|info|biz|ly)\b(/\S*)?", re.IGNORECASE
)
_NUMERIC = re.compile(r"^\d+$")

# (http method, path regex, method id); the path is matched after "/v1/".
_ROUTES: list[tuple[str, re.Pattern[str], str]] = [
    (m, re.compile(p), i)
    for m, p, i in [
        ("POST", r"^courses$", "classroom.courses.create"),
        ("GET", r"^courses$", "classroom.courses.list"),
        ("GET", r"^courses/(?P<id>[^/]+)$", "classroom.courses.get"),
        ("PATCH", r"^courses/(?P<id>[^/]+)$", "classroom.courses.patch"),
        ("PUT", r"^courses/(?P<id>[^/]+)$", "classroom.courses.update"),
        ("DELETE", r"^courses/(?P<id>[^/]+)$", "classroom.courses.delete"),
        ("POST", r"^courses/(?P<courseId>[^/]+)/aliases$", "classroom.courses.aliases.create"),
        ("GET", r"^courses/(?P<courseId>[^/]+)/aliases$", "classroom.courses.aliases.list"),
        ("DELETE", r"^courses/(?P<courseId>[^/]+)/aliases/(?P<alias>[^/]+)$", "classroom.courses.aliases.delete"),
        ("POST", r"^courses/(?P<courseId>[^/]+)/(?P<role>teachers|students)$", "classroom.courses.{role}.create"),
        ("GET", r"^courses/(?P<courseId>[^/]+)/(?P<role>teachers|students)$", "classroom.courses.{role}.list"),
        (
            "GET",
            r"^courses/(?P<courseId>[^/]+)/(?P<role>teachers|students)/(?P<userId>[^/]+)$",
            "classroom.courses.{role}.get",
        ),
        (
            "DELETE",
            r"^courses/(?P<courseId>[^/]+)/(?P<role>teachers|students)/(?P<userId>[^/]+)$",
            "classroom.courses.{role}.delete",
        ),
        ("GET", r"^userProfiles/(?P<userId>[^/]+)$", "classroom.userProfiles.get"),
        *GUARDIAN_ROUTES,
        ("POST", r"^registrations$", "classroom.registrations.create"),
        ("DELETE", r"^registrations/(?P<registrationId>[^/]+)$", "classroom.registrations.delete"),
    ]
]
_QUERY_PARAMS = {
    "classroom.courses.list": {"courseStates", "pageSize", "pageToken", "studentId", "teacherId"},
    "classroom.courses.patch": {"updateMask"},
    "classroom.courses.aliases.list": {"pageSize", "pageToken"},
    "classroom.courses.teachers.list": {"pageSize", "pageToken"},
    "classroom.courses.students.list": {"pageSize", "pageToken"},
    "classroom.courses.students.create": {"enrollmentCode"},
    **GUARDIAN_QUERY_PARAMS,
}


class ApiError(Exception):
    def __init__(self, code: int, status: str, message: str = ""):
        super().__init__(message)
        self.code = code
        self.status = status
        self.message = message or DEFAULT_MESSAGES.get(status, "")

    def body(self) -> dict:
        return {"error": {"code": self.code, "message": self.message, "status": self.status}}


def _bad(message: str) -> ApiError:
    return ApiError(400, "INVALID_ARGUMENT", message)


def _precondition(reason: str, text: str) -> ApiError:
    return ApiError(400, "FAILED_PRECONDITION", f"@{reason} {text}")


def _not_found() -> ApiError:
    return ApiError(404, "NOT_FOUND")


class _Quiet(WSGIRequestHandler):
    def log_request(self, *args: Any, **kwargs: Any) -> None:
        pass


class _User:
    __slots__ = ("email", "family", "given", "id", "suspended")

    def __init__(self, user_id: str, email: str, given: str, family: str, suspended: bool):
        self.id, self.email, self.given, self.family, self.suspended = user_id, email, given, family, suspended


class _Course:
    def __init__(self, course_id: str, seq: int, owner: str, now: str):
        self.id = course_id
        self.seq = seq
        self.owner = owner  # user id
        self.text: dict[str, str] = dict.fromkeys(TEXT_FIELDS, "")
        self.state = "PROVISIONED"
        self.created = now
        self.updated = now
        digest = hashlib.sha1(course_id.encode()).hexdigest()
        self.enrollment_code = base64.b32encode(bytes.fromhex(digest[:10])).decode().lower()[:7]
        self.group_tag = digest[:8]
        # user id -> join sequence; the owner is first among the teachers
        self.teachers: dict[str, int] = {}
        self.students: dict[str, int] = {}
        self.aliases: list[str] = []


def _now_iso() -> str:
    now = datetime.now(tz=UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


def _token(kind: str, fingerprint: str, after: int) -> str:
    raw = json.dumps([kind, fingerprint, after]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _read_token(token: str, kind: str, fingerprint: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        got_kind, got_fp, after = json.loads(raw)
        if got_kind == kind and got_fp == fingerprint and isinstance(after, int):
            return after
    except (ValueError, TypeError):
        pass
    raise _bad("Invalid page token.")


def _parse_fields(spec: str) -> dict:
    """Partial-response ``fields``: ``a,b(c,d),e/f`` as a nested dict of selected keys ({} = the whole value)."""
    tree: dict = {}
    stack = [tree]
    name = ""

    def add(n: str) -> dict:
        node = stack[-1]
        for part in n.strip().split("/"):
            node = node.setdefault(part, {})
        return node

    for ch in spec:
        if ch == ",":
            if name.strip():
                add(name)
            name = ""
        elif ch == "(":
            stack.append(add(name))
            name = ""
        elif ch == ")":
            if name.strip():
                add(name)
            name = ""
            if len(stack) == 1:
                raise _bad("Invalid field selection")
            stack.pop()
        else:
            name += ch
    if name.strip():
        add(name)
    if len(stack) != 1:
        raise _bad("Invalid field selection")
    return tree


def _select(value: Any, tree: dict) -> Any:
    if not tree:
        return value
    if isinstance(value, list):
        return [_select(v, tree) for v in value]
    if isinstance(value, dict):
        return {k: _select(value[k], sub) for k, sub in tree.items() if k in value}
    return value


def _page_token_slice(sim: Any, key: str, fingerprint: str, items: list, q: dict) -> dict:
    """One page of a list held in memory, with a token tied to the request that produced it."""
    size = sim._page_size(q)
    start = _read_token(q["pageToken"], key, fingerprint) if q.get("pageToken") else 0
    out: dict[str, Any] = {}
    if items[start : start + size]:
        out[key] = items[start : start + size]
    if start + size < len(items):
        out["nextPageToken"] = _token(key, fingerprint, start + size)
    return out


class ClassroomSimulator(PushNotificationsMixin, GuardiansMixin):
    def __init__(
        self,
        domain: str = "district.example.org",
        admin_email: str | None = None,
        member_limit: int = 1000,
        teacher_limit: int = 20,
    ):
        self.domain = domain.lower()
        self.admin_email = (admin_email or f"admin@{self.domain}").lower()
        self.member_limit = member_limit
        self.teacher_limit = teacher_limit
        self.base_url = ""
        self.calls: collections.Counter[str] = collections.Counter()
        self.batch_requests = 0
        self.statuses: collections.Counter[int] = collections.Counter()  # HTTP status of each call answered

        self._lock = threading.RLock()
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._users: dict[str, _User] = {}
        self._user_by_email: dict[str, str] = {}
        self._next_user = FIRST_USER_ID
        self._courses: dict[str, _Course] = {}
        self._alias_to_course: dict[str, str] = {}
        self._next_course = FIRST_COURSE_ID
        self._seq = 0
        self._quota: int | None = None
        self._window: collections.deque[float] = collections.deque()
        self._faults: list[list[Any]] = []  # [method id or None, status, remaining, reason]
        self._clock: Callable[[], float] = time.monotonic
        self._init_push()
        self._init_guardians()

    # -- server ----------------------------------------------------------------------------------

    def start(self) -> str:
        if self._server is None:
            self._server = make_server("127.0.0.1", 0, self._wsgi, threaded=True, request_handler=_Quiet)
            self._thread = threading.Thread(
                target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="classroom-sim", daemon=True
            )
            self._thread.start()
            self.base_url = f"http://127.0.0.1:{self._server.server_port}/"
        return self.base_url

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            if self._thread is not None:
                self._thread.join(timeout=10)
            self._server = None
            self._thread = None

    def __enter__(self) -> ClassroomSimulator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- directory -------------------------------------------------------------------------------

    def add_user(
        self,
        email: str,
        given_name: str = "",
        family_name: str = "",
        user_id: str | None = None,
        suspended: bool = False,
    ) -> str:
        with self._lock:
            key = email.lower()
            if key in self._user_by_email:
                raise ValueError(f"user {email} already exists")
            if user_id is None:
                while str(self._next_user) in self._users:
                    self._next_user += 1
                user_id = str(self._next_user)
                self._next_user += 1
            elif user_id in self._users or not _NUMERIC.match(user_id):
                raise ValueError(f"user id {user_id!r} is taken or not numeric")
            self._users[user_id] = _User(user_id, email, given_name, family_name, suspended)
            self._user_by_email[key] = user_id
            return user_id

    def set_suspended(self, email_or_id: str, suspended: bool = True) -> None:
        with self._lock:
            user = self._user(email_or_id)
            if user is None:
                raise KeyError(email_or_id)
            user.suspended = suspended

    def _user(self, ident: str | None) -> _User | None:
        if not ident:
            return None
        if ident == "me":
            ident = self.admin_email
        if _NUMERIC.match(ident):
            return self._users.get(ident)
        uid = self._user_by_email.get(ident.lower())
        return self._users.get(uid) if uid else None

    def _in_domain(self, user: _User) -> bool:
        return user.email.lower().rsplit("@", 1)[-1] == self.domain

    # -- quotas, faults, counters ----------------------------------------------------------------

    def set_quota(self, per_minute: int | None) -> None:
        with self._lock:
            self._quota = per_minute
            self._window.clear()

    def inject_errors(self, method_id: str | None, http_status: int, count: int, reason: str = "") -> None:
        """The next ``count`` calls to ``method_id`` (a discovery id such as ``classroom.courses.create``,
        ``"batch"`` for the whole ``POST /batch``, or None for any call) fail with ``http_status``."""
        with self._lock:
            self._faults.append([method_id, http_status, count, reason.lstrip("@")])

    def reset_counters(self) -> None:
        with self._lock:
            self.calls.clear()
            self.statuses.clear()
            self.batch_requests = 0

    def _take_fault(self, method_id: str) -> ApiError | None:
        for fault in self._faults:
            target, status, remaining, reason = fault
            if remaining > 0 and (target == method_id or (target is None and method_id != "batch")):
                fault[2] -= 1
                if fault[2] <= 0:
                    self._faults.remove(fault)
                name = STATUS_NAMES.get(status, "UNKNOWN")
                if status == 400 and reason:
                    name = "FAILED_PRECONDITION"
                message = DEFAULT_MESSAGES.get(name, HTTP_STATUS_CODES.get(status, "Error"))
                return ApiError(status, name, f"@{reason} {message}" if reason else message)
        return None

    def _charge(self) -> ApiError | None:
        if self._quota is None:
            return None
        now = self._clock()
        while self._window and now - self._window[0] >= 60.0:
            self._window.popleft()
        if len(self._window) >= self._quota:
            return ApiError(
                429,
                "RESOURCE_EXHAUSTED",
                "Quota exceeded for quota metric 'Queries' and limit 'Queries per minute' of service "
                "'classroom.googleapis.com'.",
            )
        self._window.append(now)
        return None

    # -- inspection (not counted) ----------------------------------------------------------------

    def _course(self, ident: str) -> _Course | None:
        if ident in self._courses:
            return self._courses[ident]
        cid = self._alias_to_course.get(ident)
        return self._courses.get(cid) if cid else None

    def course(self, course_id_or_alias: str) -> dict | None:
        with self._lock:
            c = self._course(course_id_or_alias)
            return self._course_json(c) if c else None

    def courses(self) -> list[dict]:
        with self._lock:
            return [self._course_json(c) for c in sorted(self._courses.values(), key=lambda c: c.seq)]

    def roster(self, course_id_or_alias: str) -> dict:
        with self._lock:
            c = self._course(course_id_or_alias)
            if c is None:
                raise KeyError(course_id_or_alias)
            return {
                "owner": self._users[c.owner].email,
                "teachers": {self._users[u].email for u in c.teachers},
                "students": {self._users[u].email for u in c.students},
                "state": c.state,
                "name": c.text["name"],
            }

    def aliases(self, course_id: str) -> list[str]:
        with self._lock:
            c = self._course(course_id)
            return list(c.aliases) if c else []

    # -- what a teacher does in the Classroom UI (not counted, no quota) ---------------------------

    def _ui_course(self, course_id: str) -> _Course:
        c = self._course(course_id)
        if c is None:
            raise KeyError(course_id)
        return c

    def _ui_user(self, email: str) -> _User:
        user = self._user(email)
        if user is None:
            raise KeyError(email)
        return user

    def teacher_accept(self, course_id: str) -> None:
        self._ui_state(course_id, "ACTIVE")

    def teacher_decline(self, course_id: str) -> None:
        self._ui_state(course_id, "DECLINED")

    def teacher_archive(self, course_id: str) -> None:
        self._ui_state(course_id, "ARCHIVED")

    def _ui_state(self, course_id: str, state: str) -> None:
        with self._lock:
            c = self._ui_course(course_id)
            if state != c.state and state not in TRANSITIONS[c.state]:
                raise ValueError(f"{c.state} -> {state} is not allowed")
            c.state = state
            c.updated = _now_iso()

    def teacher_rename(self, course_id: str, name: str) -> None:
        with self._lock:
            c = self._ui_course(course_id)
            c.text["name"] = name
            c.updated = _now_iso()

    def teacher_add_student(self, course_id: str, email: str) -> None:
        with self._lock:
            c, user = self._ui_course(course_id), self._ui_user(email)
            if user.id not in c.students and user.id not in c.teachers:
                c.students[user.id] = self._next_seq()
                self._notify(c.id, "students", user.id, "CREATED")

    def teacher_remove_student(self, course_id: str, email: str) -> None:
        with self._lock:
            c, user = self._ui_course(course_id), self._ui_user(email)
            if c.students.pop(user.id, None) is not None:
                self._notify(c.id, "students", user.id, "DELETED")

    def teacher_add_teacher(self, course_id: str, email: str) -> None:
        with self._lock:
            c, user = self._ui_course(course_id), self._ui_user(email)
            if c.students.pop(user.id, None) is not None:
                self._notify(c.id, "students", user.id, "DELETED")
            if user.id not in c.teachers:
                c.teachers[user.id] = self._next_seq()
                self._notify(c.id, "teachers", user.id, "CREATED")

    def teacher_remove_teacher(self, course_id: str, email: str) -> None:
        with self._lock:
            c, user = self._ui_course(course_id), self._ui_user(email)
            if user.id == c.owner:
                raise ValueError("the owner cannot be removed")
            if c.teachers.pop(user.id, None) is not None:
                self._notify(c.id, "teachers", user.id, "DELETED")

    def teacher_create_course(self, owner_email: str, name: str) -> str:
        with self._lock:
            owner = self._ui_user(owner_email)
            return self._new_course(owner, {"name": name}, "ACTIVE").id

    # -- state helpers ---------------------------------------------------------------------------

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _new_course(self, owner: _User, body: dict, state: str) -> _Course:
        course_id = str(self._next_course)
        self._next_course += 1
        c = _Course(course_id, self._next_seq(), owner.id, _now_iso())
        for key in TEXT_FIELDS:
            c.text[key] = str(body.get(key) or "")
        c.state = state
        c.teachers[owner.id] = self._next_seq()
        self._courses[course_id] = c
        self._notify(c.id, "teachers", owner.id, "CREATED")
        return c

    def _course_json(self, c: _Course) -> dict:
        slug = re.sub(r"[^A-Za-z0-9]+", "_", c.text["name"]).strip("_")[:40] or "Class"
        out: dict[str, Any] = {"id": c.id}
        for key in TEXT_FIELDS:
            if c.text[key]:
                out[key] = c.text[key]
        link_id = base64.b64encode(c.id.encode()).decode().rstrip("=")
        out.update(
            {
                "ownerId": c.owner,
                "creationTime": c.created,
                "updateTime": c.updated,
                "enrollmentCode": c.enrollment_code,
                "courseState": c.state,
                "alternateLink": f"https://classroom.google.com/c/{link_id}",
                "teacherGroupEmail": f"{slug}_teachers_{c.group_tag}@{self.domain}",
                "courseGroupEmail": f"{slug}_{c.group_tag}@{self.domain}",
                "guardiansEnabled": False,
                "calendarId": f"classroom{c.id}@group.calendar.google.com",
                "gradebookSettings": {"calculationType": "TOTAL_POINTS", "displaySetting": "HIDE_OVERALL_GRADE"},
            }
        )
        return out

    def _profile(self, user: _User) -> dict:
        name = {k: v for k, v in (("givenName", user.given), ("familyName", user.family)) if v}
        full = f"{user.given} {user.family}".strip()
        if full:
            name["fullName"] = full
        profile: dict[str, Any] = {"id": user.id, "name": name, "emailAddress": user.email}
        profile["photoUrl"] = "//lh3.googleusercontent.com/a/default-user"
        return profile

    def _member_json(self, c: _Course, user: _User) -> dict:
        return {"courseId": c.id, "userId": user.id, "profile": self._profile(user)}

    # -- the HTTP surface ------------------------------------------------------------------------

    def _wsgi(self, environ: dict, start_response: Callable) -> Any:
        request = Request(environ)
        if request.path == "/batch":
            status, headers, body = self._batch(request)
        elif request.path == "/o/oauth2/v2/auth" and request.method == "GET":
            status, headers, body = self._oauth_authorize(parse_qs(request.query_string.decode()))
        elif request.path == "/token" and request.method == "POST":
            status, headers, body = self._oauth_token(request.get_data(), request.headers.get("Authorization", ""))
        else:
            # the raw target, so that an escaped "/" or "%" in an alias is decoded exactly once
            target = environ.get("RAW_URI") or environ.get("REQUEST_URI") or request.full_path
            status, headers, body = self.handle(
                request.method, target, request.get_data(), request.headers.get("Authorization", "")
            )
        response = Response(body, status=status, headers=headers)
        return response(environ, start_response)

    def handle(
        self, method: str, path_and_query: str, body: bytes, authorization: str = ""
    ) -> tuple[int, dict[str, str], bytes]:
        """One API call (also each call of a batch): status, headers and body."""
        split = urlsplit(path_and_query)
        path = split.path
        method_id, params = "", {}
        if path.startswith("/v1/"):
            rest = path[len("/v1/") :]
            for verb, pattern, mid in _ROUTES:
                m = pattern.match(rest)
                if m and verb == method:
                    params = {k: unquote(v) for k, v in m.groupdict().items()}
                    method_id = mid.format(role=params.pop("role", ""))
                    break
        if not method_id:
            return self._json(404, ApiError(404, "NOT_FOUND", f"Method not found: {method} {path}").body())
        query = parse_qs(split.query, keep_blank_values=True)
        with self._lock:
            self.calls[method_id] += 1
            try:
                error = self._charge() or self._take_fault(method_id)
                if error is not None:
                    raise error
                fields = query.get("fields", [""])[-1]
                selection = _parse_fields(fields) if fields else None
                code, result = self._dispatch(method_id, params, query, body, authorization)
                if selection is not None:
                    result = _select(result, selection)
            except ApiError as exc:
                code, result = exc.code, exc.body()
            self.statuses[code] += 1
        return self._json(code, result)

    @staticmethod
    def _json(code: int, payload: dict) -> tuple[int, dict[str, str], bytes]:
        headers = {"Content-Type": "application/json; charset=UTF-8", "Vary": "Origin, X-Origin, Referer"}
        return code, headers, json.dumps(payload, indent=2).encode()

    def _dispatch(
        self, method_id: str, params: dict, query: dict, raw: bytes, authorization: str = ""
    ) -> tuple[int, dict]:
        allowed = _QUERY_PARAMS.get(method_id, set())
        for key in query:
            if key not in allowed and key not in SYSTEM_PARAMS:
                raise _bad(f'Invalid JSON payload received. Unknown name "{key}": Cannot bind query parameter.')
        q = {k: v[-1] for k, v in query.items()}
        body: dict = {}
        if raw.strip():
            try:
                body = json.loads(raw)
            except ValueError as exc:
                raise _bad("Invalid JSON payload received.") from exc
            if not isinstance(body, dict):
                raise _bad("Invalid JSON payload received. Expected an object.")
        kind = method_id.removeprefix("classroom.")
        if kind.startswith(("userProfiles.guardianInvitations.", "userProfiles.guardians.")):
            return 200, self._guardian_call(kind, params, q, query, body)
        if kind.startswith("registrations."):
            return 200, self._registration_call(method_id, params, body, authorization)
        if kind == "courses.create":
            return 200, self._create_course(body)
        if kind == "courses.list":
            return 200, self._list_courses(q, query.get("courseStates", []))
        if kind == "userProfiles.get":
            user = self._user(params["userId"])
            if user is None:
                raise ApiError(403, "PERMISSION_DENIED")
            profile = self._profile(user)
            if self._in_domain(user):
                profile["permissions"] = [{"permission": "CREATE_COURSE"}]
            return 200, profile
        c = self._course(params.get("id") or params.get("courseId") or "")
        if c is None:
            raise _not_found()
        if kind == "courses.get":
            return 200, self._course_json(c)
        if kind == "courses.delete":
            self._delete_course(c)
            return 200, {}
        if kind == "courses.patch":
            if not q.get("updateMask"):
                raise _bad("updateMask: Update mask is required.")
            mask = [re.sub(r"_([a-z])", lambda m: m.group(1).upper(), f.strip()) for f in q["updateMask"].split(",")]
            bad = [f for f in mask if f not in PATCHABLE]
            if bad or not all(mask):
                raise _bad(f"Invalid field(s) in update mask: {', '.join(bad) or '(empty)'}")
            return 200, self._update_course(c, body, set(mask))
        if kind == "courses.update":
            fields = set(TEXT_FIELDS) | ({"courseState"} if "courseState" in body else set())
            return 200, self._update_course(c, body, fields, put=True)
        if kind.startswith("courses.aliases."):
            return 200, self._aliases(kind, c, params, q, body)
        role = "teachers" if ".teachers." in kind else "students"
        action = kind.rsplit(".", 1)[1]
        if action == "list":
            return 200, self._list_members(c, role, q)
        if action == "create":
            unknown = set(body) - MEMBER_PROPS
            if unknown:
                raise _bad(f'Invalid JSON payload received. Unknown name "{sorted(unknown)[0]}": Cannot find field.')
            return 200, self._add_member(c, role, body.get("userId"))
        user = self._user(params["userId"])
        members = c.teachers if role == "teachers" else c.students
        if user is None or user.id not in members:
            raise _not_found()
        if action == "get":
            return 200, self._member_json(c, user)
        if role == "teachers" and user.id == c.owner:
            raise _precondition("CannotRemoveCourseOwner", "The course owner cannot be removed.")
        del members[user.id]
        self._notify(c.id, role, user.id, "DELETED")
        return 200, {}

    # -- courses ---------------------------------------------------------------------------------

    def _check_course_body(self, body: dict) -> None:
        unknown = set(body) - COURSE_PROPS
        if unknown:
            name = sorted(unknown)[0]
            raise _bad(f"Invalid JSON payload received. Unknown name \"{name}\" at 'course': Cannot find field.")
        for key in TEXT_FIELDS + ("courseState", "ownerId", "id"):
            if key in body and body[key] is not None and not isinstance(body[key], str):
                raise _bad(f"Invalid value at 'course.{key}', expected a string.")

    def _check_name(self, name: str) -> None:
        if not name.strip():
            raise _bad("name: Course name must be set.")
        if len(name) > MAX_NAME:
            raise _bad(f"name: Course name must be at most {MAX_NAME} characters.")
        if _URL_IN_TEXT.search(name):
            raise _precondition("CourseTitleCannotContainUrl", "The course title cannot contain a URL.")

    @staticmethod
    def _check_alias(alias: Any) -> str:
        if not isinstance(alias, str) or not re.match(r"^[dp]:.+", alias) or len(alias) > MAX_ALIAS:
            raise _bad("alias: must be a domain-scoped (d:) or project-scoped (p:) alias of at most 256 characters.")
        return alias

    def _create_course(self, body: dict) -> dict:
        self._check_course_body(body)
        self._check_name(body.get("name") or "")
        alias = body.get("id")
        if alias:
            self._check_alias(alias)
        state = body.get("courseState") or "PROVISIONED"
        if state not in ("PROVISIONED", "ACTIVE"):
            raise _bad(f"courseState: a course cannot be created in state {state}.")
        if not body.get("ownerId"):
            raise _bad("ownerId: Course owner must be set.")
        owner = self._user(body["ownerId"])
        if owner is None:
            raise _not_found()
        if owner.suspended or not self._in_domain(owner):
            raise _precondition("UserCannotOwnCourse", "The user cannot own this course.")
        if alias and alias in self._alias_to_course:
            raise ApiError(409, "ALREADY_EXISTS", "Requested entity already exists")
        c = self._new_course(owner, body, state)
        if alias:
            c.aliases.append(alias)
            self._alias_to_course[alias] = c.id
        return self._course_json(c)

    def _delete_course(self, c: _Course) -> None:
        for alias in c.aliases:
            self._alias_to_course.pop(alias, None)
        del self._courses[c.id]

    def _update_course(self, c: _Course, body: dict, fields: set[str], put: bool = False) -> dict:
        self._check_course_body(body)
        if put and body.get("id") and self._course(body["id"]) is not c:
            raise _bad("id: The course id cannot be changed.")
        new_state = c.state
        if "courseState" in fields:
            new_state = body.get("courseState") or ""
            if new_state not in ALL_STATES:
                raise _bad(f"courseState: invalid value {new_state!r}.")
            if new_state in ("COURSE_STATE_UNSPECIFIED", "SUSPENDED", ""):
                raise _bad(f"courseState: a course cannot be put in state {new_state or 'unspecified'}.")
            if new_state != c.state and new_state not in TRANSITIONS[c.state]:
                raise ApiError(
                    400, "FAILED_PRECONDITION", f"A course in state {c.state} cannot be changed to {new_state}."
                )
        other = fields - {"courseState"}
        if other and c.state not in MODIFIABLE and new_state not in MODIFIABLE:
            raise _precondition("CourseNotModifiable", "The course is not modifiable in its current state.")
        if "name" in fields:
            self._check_name(body.get("name") or "")
        new_owner = None
        if "ownerId" in fields:
            new_owner = self._user(body.get("ownerId"))
            if (
                new_owner is None
                or new_owner.id not in c.teachers
                or new_owner.suspended
                or not self._in_domain(new_owner)
            ):
                raise _precondition("IneligibleOwner", "The new owner must be a teacher of the course.")
        for key in TEXT_FIELDS:
            if key in fields:
                c.text[key] = str(body.get(key) or "")
        c.state = new_state
        if new_owner is not None:
            c.owner = new_owner.id  # the previous owner stays a teacher
        c.updated = _now_iso()
        return self._course_json(c)

    def _page_size(self, q: dict) -> int:
        try:
            size = int(q.get("pageSize") or 0)
        except ValueError as exc:
            raise _bad("pageSize: must be an integer.") from exc
        if size < 0:
            raise _bad("pageSize: must not be negative.")
        return min(size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)

    def _list_courses(self, q: dict, states: list[str]) -> dict:
        teacher_id, student_id = q.get("teacherId"), q.get("studentId")
        if teacher_id and student_id:
            raise _bad("Only one of teacherId and studentId may be set.")
        member_of = None
        if teacher_id or student_id:
            member_of = self._user(teacher_id or student_id)
            if member_of is None:
                raise _not_found()
        for s in states:
            if s not in ALL_STATES:
                raise _bad(f"courseStates: invalid value {s!r}.")
        wanted = set(states) or set(DEFAULT_LIST_STATES)
        size = self._page_size(q)
        fingerprint = json.dumps([teacher_id, student_id, sorted(wanted)])
        before = _read_token(q["pageToken"], "courses", fingerprint) if q.get("pageToken") else None
        chosen = []
        for c in sorted(self._courses.values(), key=lambda c: -c.seq):
            if before is not None and c.seq >= before:
                continue
            if c.state not in wanted:
                continue
            if member_of is not None and member_of.id not in (c.teachers if teacher_id else c.students):
                continue
            chosen.append(c)
            if len(chosen) > size:
                break
        out: dict[str, Any] = {}
        if chosen[:size]:
            out["courses"] = [self._course_json(c) for c in chosen[:size]]
        if len(chosen) > size:
            out["nextPageToken"] = _token("courses", fingerprint, chosen[size - 1].seq)
        return out

    # -- aliases ---------------------------------------------------------------------------------

    def _aliases(self, kind: str, c: _Course, params: dict, q: dict, body: dict) -> dict:
        if kind.endswith(".create"):
            unknown = set(body) - {"alias"}
            if unknown:
                raise _bad(f'Invalid JSON payload received. Unknown name "{sorted(unknown)[0]}": Cannot find field.')
            alias = self._check_alias(body.get("alias"))
            if alias in self._alias_to_course:
                raise ApiError(409, "ALREADY_EXISTS", "Requested entity already exists")
            c.aliases.append(alias)
            self._alias_to_course[alias] = c.id
            return {"alias": alias}
        if kind.endswith(".delete"):
            alias = params["alias"]
            if alias not in c.aliases:
                raise _not_found()
            c.aliases.remove(alias)
            self._alias_to_course.pop(alias, None)
            return {}
        size = self._page_size(q)
        start = _read_token(q["pageToken"], "aliases", c.id) if q.get("pageToken") else 0
        page = c.aliases[start : start + size]
        out: dict[str, Any] = {}
        if page:
            out["aliases"] = [{"alias": a} for a in page]
        if start + size < len(c.aliases):
            out["nextPageToken"] = _token("aliases", c.id, start + size)
        return out

    # -- members ---------------------------------------------------------------------------------

    def _list_members(self, c: _Course, role: str, q: dict) -> dict:
        members = c.teachers if role == "teachers" else c.students
        size = self._page_size(q)
        after = _read_token(q["pageToken"], role, c.id) if q.get("pageToken") else 0
        ordered = sorted(((seq, uid) for uid, seq in members.items() if seq > after), key=lambda p: p[0])
        page = ordered[:size]
        out: dict[str, Any] = {}
        if page:
            out[role] = [self._member_json(c, self._users[uid]) for _, uid in page]
        if len(ordered) > size:
            out["nextPageToken"] = _token(role, c.id, page[-1][0])
        return out

    def _add_member(self, c: _Course, role: str, ident: Any) -> dict:
        if c.state not in MODIFIABLE:
            raise _precondition("CourseNotModifiable", "The course is not modifiable in its current state.")
        if not ident or not isinstance(ident, str):
            raise _bad("userId: must be set.")
        user = self._user(ident)
        if user is None or not self._in_domain(user):
            raise ApiError(403, "PERMISSION_DENIED", "@CannotDirectAddUser The user is not permitted to be added.")
        if user.suspended:
            raise ApiError(400, "FAILED_PRECONDITION", "The user's account is disabled.")
        if user.id in c.teachers or user.id in c.students:
            raise ApiError(409, "ALREADY_EXISTS", "Requested entity already exists")
        if self._users[c.owner].suspended:
            raise _precondition("InactiveCourseOwner", "The course owner's account is disabled.")
        if role == "teachers" and len(c.teachers) >= self.teacher_limit:
            raise _precondition("CourseTeacherLimitReached", "The course has reached its teacher limit.")
        if len(c.teachers) + len(c.students) >= self.member_limit:
            raise _precondition("CourseMemberLimitReached", "The course has reached its member limit.")
        (c.teachers if role == "teachers" else c.students)[user.id] = self._next_seq()
        c.updated = _now_iso()
        self._notify(c.id, role, user.id, "CREATED")
        return self._member_json(c, user)

    # -- batch -----------------------------------------------------------------------------------

    def _batch(self, request: Request) -> tuple[int, dict[str, str], bytes]:
        if request.method != "POST":
            return self._json(404, ApiError(404, "NOT_FOUND", "Method not found.").body())
        with self._lock:
            self.batch_requests += 1
            fault = self._take_fault("batch")
        if fault is not None:
            return self._json(fault.code, fault.body())
        content_type = request.headers.get("Content-Type", "")
        if not content_type.lower().startswith("multipart/mixed"):
            return self._json(400, _bad("Batch requests must be multipart/mixed.").body())
        message = email.parser.BytesParser(policy=email.policy.compat32).parsebytes(
            b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + request.get_data()
        )
        parts = message.get_payload() if message.is_multipart() else None
        if not parts:
            return self._json(400, _bad("No requests in the batch.").body())
        if len(parts) > MAX_BATCH:
            return self._json(400, _bad(f"A batch request cannot contain more than {MAX_BATCH} requests.").body())
        boundary = f"batch_{uuid.uuid4().hex}"
        out: list[str] = []
        for part in parts:
            content_id = (part.get("Content-ID") or "").strip()
            raw = part.get_payload(decode=False)
            if isinstance(raw, list):
                return self._json(400, _bad("Nested multipart is not supported in a batch.").body())
            status, headers, body = self._embedded(raw)
            response_id = f"<response-{content_id[1:-1]}>" if content_id.startswith("<") else f"<response-{content_id}>"
            lines = [
                f"--{boundary}",
                "Content-Type: application/http",
                f"Content-ID: {response_id}",
                "",
                f"HTTP/1.1 {status} {HTTP_STATUS_CODES.get(status, 'Unknown')}",
            ]
            lines += [f"{k}: {v}" for k, v in headers.items()]
            lines += [f"Content-Length: {len(body)}", "", body.decode()]
            out.append("\r\n".join(lines))
        text = "\r\n".join(out) + f"\r\n--{boundary}--\r\n"
        return 200, {"Content-Type": f"multipart/mixed; boundary={boundary}"}, text.encode()

    def _embedded(self, raw: str) -> tuple[int, dict[str, str], bytes]:
        raw = raw.lstrip("\r\n")
        request_line, _, rest = raw.partition("\n")
        pieces = request_line.strip().split(" ")
        if len(pieces) < 2:
            return self._json(400, _bad("Malformed request in the batch.").body())
        method, target = pieces[0].upper(), pieces[1]
        inner = email.parser.Parser(policy=email.policy.compat32).parsestr(rest)
        body = inner.get_payload()
        if isinstance(body, list):
            body = ""
        length = inner.get("Content-Length")
        if length and length.isdigit():
            body = body.encode()[: int(length)].decode()
        if target.startswith(("http://", "https://")):
            split = urlsplit(target)
            target = split.path + (f"?{split.query}" if split.query else "")
        return self.handle(method, target, body.encode())

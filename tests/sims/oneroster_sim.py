"""A OneRoster REST simulator (1.1 `/ims/oneroster/v1p1`, 1.2 `/ims/oneroster/rostering/v1p2`) on 127.0.0.1.

What it follows (1EdTech OneRoster 1.1 and 1.2 REST bindings):

- OAuth 2 client credentials: ``POST /token`` with HTTP Basic ``client_id:client_secret``,
  ``grant_type=client_credentials`` and an optional ``scope`` answers ``{"access_token", "token_type":
  "bearer", "expires_in", "scope"}``; an unknown scope is ``invalid_scope`` (400), and so is a request
  without the scope a provider requires (``required_scope``: Aeries and Visma refuse a token
  without one). Every API call needs ``Authorization: Bearer <token>`` (401 without a valid one).
  ``expire_tokens()`` makes every issued token invalid, as an expiry would.
- ``GET`` only (the rostering service is read-only: any other method is 405 with ``Allow: GET``) of
  ``/classes``, ``/users``, ``/enrollments``, ``/orgs``, ``/academicSessions``, ``/courses``, the role
  and type routes ``/students``, ``/teachers``, ``/schools``, ``/terms``, ``/gradingPeriods``, each
  ``/<collection>/{sourcedId}``, and the nested routes Google Classroom's consumer reads:
  ``/classes/{id}/students|teachers``, ``/teachers|students|users/{id}/classes``,
  ``/schools/{id}/classes``, ``/terms/{id}/gradingPeriods``. A list is ``{"<collection>": [...]}``, a
  single record ``{"<singular>": {...}}``, an unknown id 404 with an ``imsx_codeMajor: failure``
  status payload.
- 1.1 users carry ``role`` and ``orgs``; 1.2 users ``roles`` (``roleType``, ``role``, ``org``) and
  ``primaryOrg``. Classes carry ``terms`` (references to academic sessions), ``course``, ``school``,
  ``classCode``, ``periods``.
- ``limit`` (default 100) and ``offset`` paging with ``X-Total-Count`` and a ``Link`` header
  (``rel="next"``, ``"last"``...), records in ascending sourcedId order.
- The spec's filter grammar: ``field op 'value'`` with ``=``, ``!=``, ``>``, ``>=``, ``<``, ``<=``,
  ``~`` (contains), on any field (dotted for references: ``class.sourcedId``), joined by ``AND`` or
  by ``OR`` (not both); anything else answers 400.
- Records carry ``sourcedId``, ``status`` (``active`` | ``tobedeleted``) and ``dateLastModified``
  (the real time of the change, ms precision); references are ``{"href", "sourcedId", "type"}``.
  ``delete_*(silent=True)`` removes a record without a trace, as providers that drop records do.
- 429 with ``Retry-After`` via ``force_429(n)``.
- Switches for what real providers do: ``max_limit`` (``limit`` silently capped), ``total_count=False``
  (no ``X-Total-Count``), ``link_header=False``, ``delta_filter="reject"|"ignore"`` (a
  ``dateLastModified`` filter answered 400, or ignored: everything comes back),
  ``status_filter="reject"``, ``unstable_order`` (a new order for every request), ``ignore_offset``
  (every page is the first), ``role_routes=False`` (no ``/students``, ``/teachers``...), ``link_base``
  (Link URLs on another host), ``required_scope`` / ``granted_scope``.
- ``signing=True``: OAuth 1.0a instead (the 1.1 security model some providers require): every call
  carries ``Authorization: OAuth ...`` with oauth_consumer_key, oauth_nonce, oauth_timestamp,
  oauth_version 1.0, oauth_signature_method HMAC-SHA256 and oauth_signature over the RFC 5849 base
  string (method, normalized URI, the query and oauth parameters sorted); the signature is checked
  here with its own implementation, timestamps more than 10 minutes old or 5 ahead are refused, and
  a nonce is accepted once. Anything else is 401.

    with OneRosterSimulator() as sim:
        t = sim.add_user("t1", "teacher", "ann@d.example.org")
        c = sim.add_class("c1", "Biology")
        sim.enroll("e1", "c1", "t1", "teacher", primary=True)
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import random
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import unquote, urlencode

from werkzeug.serving import WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

ROOTS = {"/ims/oneroster/v1p1": "1.1", "/ims/oneroster/rostering/v1p2": "1.2"}
COLLECTIONS = {
    "classes": "class",
    "users": "user",
    "enrollments": "enrollment",
    "orgs": "org",
    "academicSessions": "academicSession",
    "courses": "course",
}
# The role and type routes (1.1 and 1.2): route → (stored collection, JSON key, singular, predicate).
VIEWS: dict[str, tuple[str, str, str, Callable[[dict], bool]]] = {
    "students": ("users", "users", "user", lambda r: r.get("role") == "student"),
    "teachers": ("users", "users", "user", lambda r: r.get("role") == "teacher"),
    "schools": ("orgs", "orgs", "org", lambda r: r.get("type") == "school"),
    "terms": ("academicSessions", "academicSessions", "academicSession", lambda r: r.get("type") == "term"),
    "gradingPeriods": (
        "academicSessions",
        "academicSessions",
        "academicSession",
        lambda r: r.get("type") == "gradingPeriod",
    ),
}
DEFAULT_LIMIT = 100
# The spec's filter grammar (1.1 and 1.2 section 3.4): `field op 'value'`, ops = != > >= < <= ~
# (contains), at most one kind of logical operator (AND or OR) joining the predicates.
_PREDICATE = re.compile(r"^\s*([A-Za-z][A-Za-z0-9_.]*)\s*(>=|<=|!=|>|<|=|~)\s*'([^']*)'\s*$")
SCOPE_PREFIX = "https://purl.imsglobal.org/spec/or/"


class _Quiet(WSGIRequestHandler):
    def log_request(self, *args: Any, **kwargs: Any) -> None:
        pass


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class OneRosterSimulator:
    def __init__(
        self,
        client_id: str = "district-client",
        client_secret: str = "district-secret",
        signing: bool = False,
        *,
        required_scope: str | None = None,
        granted_scope: str | None = None,
        max_limit: int | None = None,
        total_count: bool = True,
        link_header: bool = True,
        delta_filter: str = "ok",
        status_filter: str = "ok",
        unstable_order: bool = False,
        ignore_offset: bool = False,
        role_routes: bool = True,
        link_base: str | None = None,
    ):
        self.signing = signing
        self._nonces: set[str] = set()
        self.client_id = client_id
        self.client_secret = client_secret
        # How this provider departs from the happy path (real ones do, each in its own way):
        self.required_scope = required_scope  # a token request without this scope is refused (400)
        self.granted_scope = granted_scope  # the scope the token response names (None: as asked)
        self.max_limit = max_limit  # a larger `limit` is silently capped to this
        self.total_count = total_count  # send X-Total-Count (only recommended by the 1.1 spec)
        self.link_header = link_header  # send Link (rel next/prev/first/last)
        self.delta_filter = delta_filter  # "ok" | "reject" (400) | "ignore" a dateLastModified filter
        self.status_filter = status_filter  # "ok" | "reject" (400) a status filter
        self.unstable_order = unstable_order  # a new order for every request: pages overlap and skip
        self.ignore_offset = ignore_offset  # every page is the first one
        self.role_routes = role_routes  # /students, /teachers... (False: 404, a provider without them)
        self.link_base = link_base  # Link URLs on another scheme/host (a misconfigured proxy)
        self.records: dict[str, dict[str, dict]] = {c: {} for c in COLLECTIONS}
        self.requests: list[tuple[str, str]] = []  # (method, path with query)
        self.token_requests: list[dict[str, str]] = []  # the form of each token request
        self._tokens: dict[str, float] = {}  # token -> time.monotonic() when it lapses
        self.token_lifetime = 3600  # expires_in of the tokens it issues, enforced
        self.user_agents: list[str] = []  # the User-Agent of each request
        self._lock = threading.Lock()
        self._force_429: list[int | None] = []
        self._server = None
        self._thread = None
        self.base_url = ""
        self._shuffles = 0

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> str:
        self._server = make_server("127.0.0.1", 0, self._wsgi, threaded=True, request_handler=_Quiet)
        self.base_url = f"http://127.0.0.1:{self._server.server_port}"
        # A short poll interval: stop() (shutdown) returns within 50 ms instead of 500.
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        return self.base_url

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> OneRosterSimulator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def token_url(self) -> str:
        return f"{self.base_url}/token"

    # -- the district ----------------------------------------------------------------------------

    def _put(self, collection: str, sourced_id: str, fields: dict) -> str:
        with self._lock:
            record = self.records[collection].get(sourced_id, {"sourcedId": sourced_id, "status": "active"})
            record = record | fields | {"dateLastModified": _now()}
            self.records[collection][sourced_id] = record
        return sourced_id

    def _ref(self, collection: str, sourced_id: str) -> dict:
        return {"href": f"/{collection}/{sourced_id}", "sourcedId": sourced_id, "type": COLLECTIONS[collection]}

    def add_org(self, sourced_id: str, name: str, type: str = "school") -> str:
        return self._put("orgs", sourced_id, {"name": name, "type": type, "identifier": sourced_id})

    def add_session(
        self, sourced_id: str, title: str, start: str, end: str, type: str = "term", parent: str | None = None
    ) -> str:
        fields = {"title": title, "type": type, "startDate": start, "endDate": end, "schoolYear": end[:4]}
        if parent:
            fields["parent"] = self._ref("academicSessions", parent)
        return self._put("academicSessions", sourced_id, fields)

    def add_course(self, sourced_id: str, title: str, org: str = "org1") -> str:
        return self._put("courses", sourced_id, {"title": title, "org": self._ref("orgs", org)})

    def add_user(
        self, sourced_id: str, role: str, email: str, given: str = "", family: str = "", org: str = "org1"
    ) -> str:
        fields = {
            "username": email,
            "enabledUser": True,
            "givenName": given or sourced_id,
            "familyName": family or "User",
            "role": role,
            "email": email,
            "orgs": [self._ref("orgs", org)],
            "identifier": sourced_id,
        }
        return self._put("users", sourced_id, fields)

    def update_user(self, sourced_id: str, **fields: Any) -> str:
        return self._put("users", sourced_id, fields)

    def add_class(
        self,
        sourced_id: str,
        title: str,
        course: str = "course1",
        school: str = "org1",
        terms: tuple[str, ...] = ("term1",),
    ) -> str:
        fields = {
            "title": title,
            "classCode": sourced_id,
            "classType": "scheduled",
            "course": self._ref("courses", course),
            "school": self._ref("orgs", school),
            "terms": [self._ref("academicSessions", t) for t in terms],
            "periods": ["1"],
        }
        return self._put("classes", sourced_id, fields)

    def rename_class(self, sourced_id: str, title: str) -> str:
        return self._put("classes", sourced_id, {"title": title})

    def enroll(self, sourced_id: str, class_id: str, user_id: str, role: str, primary: bool = False) -> str:
        fields = {
            "role": role,
            "primary": primary,
            "class": self._ref("classes", class_id),
            "user": self._ref("users", user_id),
            "school": self._ref("orgs", "org1"),
            "status": "active",
        }
        return self._put("enrollments", sourced_id, fields)

    def set_primary(self, sourced_id: str, primary: bool) -> str:
        return self._put("enrollments", sourced_id, {"primary": primary})

    def delete(self, collection: str, sourced_id: str, silent: bool = False) -> None:
        """`tobedeleted` (the spec's soft delete), or with `silent` gone without a trace."""
        if silent:
            with self._lock:
                self.records[collection].pop(sourced_id, None)
        else:
            self._put(collection, sourced_id, {"status": "tobedeleted"})

    def expire_tokens(self) -> None:
        with self._lock:
            self._tokens.clear()  # revoked early: expires_in no longer holds

    def force_429(self, count: int, retry_after: int | None = 1) -> None:
        with self._lock:
            self._force_429 += [retry_after] * count

    def active_roster(self) -> dict[str, dict[str, set[str]]]:
        """class id → {"teachers", "students"} as the district has it now (active records only):
        what every test compares the courses with at the end."""
        with self._lock:
            classes = {k for k, c in self.records["classes"].items() if c["status"] == "active"}
            users = self.records["users"]
            out: dict[str, dict[str, set[str]]] = {k: {"teachers": set(), "students": set()} for k in classes}
            for e in self.records["enrollments"].values():
                cid, uid = e["class"]["sourcedId"], e["user"]["sourcedId"]
                user = users.get(uid)
                if e["status"] != "active" or cid not in out or not user or user["status"] != "active":
                    continue
                if e["role"] in ("teacher", "student"):
                    out[cid][f"{e['role']}s"].add(user["email"].lower())
        return out

    # -- HTTP ------------------------------------------------------------------------------------

    def _wsgi(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        request = Request(environ)
        self.requests.append((request.method, request.full_path.rstrip("?")))
        self.user_agents.append(request.headers.get("User-Agent", ""))
        status, body, headers = self._handle(request)
        response = Response(json.dumps(body), status=status, mimetype="application/json", headers=headers)
        return response(environ, start_response)

    def _handle(self, request: Request) -> tuple[int, Any, dict[str, str]]:
        if request.path == "/token":
            return self._token(request)
        with self._lock:
            if self._force_429:
                retry_after = self._force_429.pop(0)
                return 429, _status_payload("failure", "server_busy"), {"Retry-After": str(retry_after or 1)}
        auth = request.headers.get("Authorization", "")
        if self.signing:
            if not self._signed(request, auth):
                return 401, _status_payload("failure", "unauthorisedrequest"), {"WWW-Authenticate": "OAuth"}
        elif not auth.startswith("Bearer ") or self._tokens.get(auth[7:], 0) <= time.monotonic():
            return 401, _status_payload("failure", "unauthorisedrequest"), {"WWW-Authenticate": "Bearer"}
        root = next((r for r in ROOTS if request.path.startswith(r + "/")), None)
        if root is None:
            return 404, _status_payload("failure", "unknownobject"), {}
        version = ROOTS[root]
        rest = [unquote(p) for p in request.path[len(root) + 1 :].strip("/").split("/")]
        if request.method != "GET":
            # The rostering service is read-only: PUT, POST and DELETE are not allowed (405).
            return 405, _status_payload("failure", "unsupported"), {"Allow": "GET"}
        return self._route(request, version, rest)

    def _route(self, request: Request, version: str, rest: list[str]) -> tuple[int, Any, dict[str, str]]:
        notfound = 404, _status_payload("failure", "unknownobject"), {}
        head = rest[0]
        if head in VIEWS and not self.role_routes:
            return notfound
        if head not in COLLECTIONS and head not in VIEWS:
            return notfound
        collection, key, singular, keep = (
            (head, head, COLLECTIONS[head], lambda r: True) if head in COLLECTIONS else VIEWS[head]
        )
        with self._lock:
            stored = dict(self.records[collection])
        if len(rest) == 1:
            return self._list(request, version, key, [r for r in stored.values() if keep(r)])
        record = stored.get(rest[1])
        if record is None or not keep(record):
            return notfound
        if len(rest) == 2:
            return 200, {singular: self._render(version, collection, record)}, {}
        if len(rest) != 3:
            return notfound
        return self._nested(request, version, head, record, rest[2])

    def _nested(
        self, request: Request, version: str, head: str, parent: dict, what: str
    ) -> tuple[int, Any, dict[str, str]]:
        """The nested routes Google's consumer uses: /classes/{id}/students|teachers,
        /teachers|students/{id}/classes, /schools/{id}/classes, /terms/{id}/gradingPeriods."""
        with self._lock:
            enrollments = [e for e in self.records["enrollments"].values() if e["status"] == "active"]
            users, classes = dict(self.records["users"]), dict(self.records["classes"])
            sessions = dict(self.records["academicSessions"])
        pid = parent["sourcedId"]
        if head == "classes" and what in ("students", "teachers"):
            role = what[:-1]
            ids = {e["user"]["sourcedId"] for e in enrollments if e["class"]["sourcedId"] == pid and e["role"] == role}
            return self._list(request, version, "users", [users[i] for i in ids if i in users])
        if head in ("teachers", "students", "users") and what == "classes":
            ids = {e["class"]["sourcedId"] for e in enrollments if e["user"]["sourcedId"] == pid}
            return self._list(request, version, "classes", [classes[i] for i in ids if i in classes])
        if head == "schools" and what == "classes":
            found = [c for c in classes.values() if c["school"]["sourcedId"] == pid]
            return self._list(request, version, "classes", found)
        if head == "terms" and what == "gradingPeriods":
            found = [
                s
                for s in sessions.values()
                if s.get("type") == "gradingPeriod" and (s.get("parent") or {}).get("sourcedId") == pid
            ]
            return self._list(request, version, "academicSessions", found)
        return 404, _status_payload("failure", "unknownobject"), {}

    @staticmethod
    def _render(version: str, collection: str, record: dict) -> dict:
        """A stored record as the version serves it: 1.2 users carry `roles` (with the org of each
        role) and `primaryOrg` instead of 1.1's `role` and `orgs`."""
        if collection != "users" or version == "1.1":
            return record
        out = {k: v for k, v in record.items() if k not in ("role", "orgs")}
        orgs = record.get("orgs") or []
        out["roles"] = [
            {"roleType": "primary" if i == 0 else "secondary", "role": record.get("role"), "org": org}
            for i, org in enumerate(orgs)
        ]
        out["primaryOrg"] = orgs[0] if orgs else None
        out["userIds"] = []
        out["grades"] = []
        return out

    def _signed(self, request: Request, auth: str) -> bool:
        """RFC 5849 3.4 verification, written apart from the client's signer."""
        import hashlib
        import hmac
        import re
        import time
        from urllib.parse import quote, unquote

        if not auth.startswith("OAuth "):
            return False
        oauth = {k: unquote(v) for k, v in re.findall(r'(\w+)="([^"]*)"', auth[6:])}
        needed = {"oauth_consumer_key", "oauth_nonce", "oauth_timestamp", "oauth_signature_method", "oauth_signature"}
        if not needed <= set(oauth) or oauth["oauth_signature_method"] != "HMAC-SHA256":
            return False
        if oauth["oauth_consumer_key"] != self.client_id or oauth.get("oauth_version", "1.0") != "1.0":
            return False
        if not oauth["oauth_timestamp"].isdigit() or not -600 <= int(oauth["oauth_timestamp"]) - time.time() <= 300:
            return False

        def enc(value: str) -> str:
            return quote(value, safe="~-._")

        pairs = [(k, v) for k, vs in request.args.lists() for v in vs]
        pairs += [(k, v) for k, v in oauth.items() if k != "oauth_signature"]
        normalized = "&".join(f"{k}={v}" for k, v in sorted((enc(k), enc(v)) for k, v in pairs))
        uri = f"{request.scheme}://{request.host.lower()}{request.path}"
        base = f"{request.method}&{enc(uri)}&{enc(normalized)}"
        key = f"{enc(self.client_secret)}&".encode()
        expected = base64.b64encode(hmac.new(key, base.encode(), hashlib.sha256).digest()).decode()
        if not hmac.compare_digest(expected, oauth["oauth_signature"]):
            return False
        with self._lock:
            if oauth["oauth_nonce"] in self._nonces:
                return False  # a replayed request
            self._nonces.add(oauth["oauth_nonce"])
        return True

    def _token(self, request: Request) -> tuple[int, Any, dict[str, str]]:
        if request.method != "POST" or request.form.get("grant_type") != "client_credentials":
            return 400, {"error": "unsupported_grant_type"}, {}
        self.token_requests.append(dict(request.form))
        auth = request.headers.get("Authorization", "")
        try:
            user, _, password = (
                base64.b64decode(auth[6:]).decode().partition(":") if auth.startswith("Basic ") else ("", "", "")
            )
        except ValueError:
            user = password = ""
        if not user:
            user, password = request.form.get("client_id", ""), request.form.get("client_secret", "")
        if (user, password) != (self.client_id, self.client_secret):
            return 401, {"error": "invalid_client"}, {}
        asked = request.form.get("scope", "").split()
        if self.required_scope and self.required_scope not in asked:
            # RFC 6749 5.2, as providers that require a scope answer a request without it.
            return 400, {"error": "invalid_scope", "error_description": "a scope is required"}, {}
        if any(not a.startswith(SCOPE_PREFIX) for a in asked):
            return 400, {"error": "invalid_scope", "error_description": "unknown scope"}, {}
        token = secrets.token_urlsafe(24)
        with self._lock:
            self._tokens[token] = time.monotonic() + self.token_lifetime
        body = {"access_token": token, "token_type": "bearer", "expires_in": self.token_lifetime}
        granted = self.granted_scope if self.granted_scope is not None else " ".join(asked)
        if granted:
            body["scope"] = granted
        return 200, body, {"Cache-Control": "no-store"}

    def _filter(self, flt: str) -> Callable[[dict], bool] | None:
        """The predicate of a `filter` parameter, or None when it does not parse (400)."""
        joiner = " AND " if " AND " in flt else " OR " if " OR " in flt else None
        if joiner and (" AND " in flt and " OR " in flt):
            return None  # the spec allows one kind of logical operator a filter
        parts = flt.split(joiner) if joiner else [flt]
        tests = []
        for part in parts:
            match = _PREDICATE.match(part)
            if not match:
                return None
            field, op, value = match.groups()

            def test(record: dict, field=field, op=op, value=value) -> bool:
                actual: Any = record
                for name in field.split("."):
                    actual = actual.get(name) if isinstance(actual, dict) else None
                if isinstance(actual, bool):
                    actual = str(actual).lower()
                if isinstance(actual, list):  # e.g. grades: any element
                    return any(test({"v": a}, "v", op, value) for a in actual)
                text = "" if actual is None else str(actual)
                if op == "~":
                    return value.lower() in text.lower()
                # ISO 8601 UTC timestamps of one format compare correctly as strings.
                return {
                    "=": text == value,
                    "!=": text != value,
                    ">": text > value,
                    ">=": text >= value,
                    "<": text < value,
                    "<=": text <= value,
                }[op]

            tests.append(test)
        if joiner == " OR ":
            return lambda r: any(t(r) for t in tests)
        return lambda r: all(t(r) for t in tests)

    def _list(self, request: Request, version: str, key: str, records: list[dict]) -> tuple[int, Any, dict[str, str]]:
        try:
            limit = int(request.args.get("limit", DEFAULT_LIMIT))
            offset = int(request.args.get("offset", 0))
        except ValueError:
            return 400, _status_payload("failure", "invalid_selection_field"), {}
        if limit < 1 or offset < 0:
            return 400, _status_payload("failure", "invalid_selection_field"), {}
        if self.max_limit:
            limit = min(limit, self.max_limit)
        if self.ignore_offset:
            offset = 0
        collection = "users" if key == "users" else key
        records = [self._render(version, collection, r) for r in sorted(records, key=lambda r: r["sourcedId"])]
        flt = request.args.get("filter")
        if flt and "dateLastModified" in flt and self.delta_filter != "ok":
            if self.delta_filter == "reject":
                return 400, _status_payload("failure", "invalid_filter_field"), {}
            flt = None  # ignored: everything comes back
        if flt and "status" in flt and self.status_filter == "reject":
            return 400, _status_payload("failure", "invalid_filter_field"), {}
        if flt:
            predicate = self._filter(flt.strip())
            if predicate is None:
                return 400, _status_payload("failure", "invalid_filter_field"), {}
            records = [r for r in records if predicate(r)]
        if self.unstable_order:
            with self._lock:
                self._shuffles += 1
                seed = self._shuffles
            random.Random(seed).shuffle(records)
        total = len(records)
        page = records[offset : offset + limit]
        base = request.base_url
        if self.link_base:
            base = self.link_base.rstrip("/") + request.path
        params = {k: v for k, v in request.args.items() if k not in ("limit", "offset")}

        def link(off: int, rel: str) -> str:
            return f'<{base}?{urlencode(params | {"limit": limit, "offset": off})}>; rel="{rel}"'

        headers = {}
        if self.total_count:
            headers["X-Total-Count"] = str(total)
        if self.link_header:
            links = [link(0, "first"), link(max(0, (total - 1) // limit * limit), "last")]
            if offset + limit < total:
                links.append(link(offset + limit, "next"))
            if offset > 0:
                links.append(link(max(0, offset - limit), "prev"))
            headers["Link"] = ", ".join(links)
        return 200, {key: page}, headers


def _status_payload(major: str, minor: str) -> dict:
    return {
        "imsx_codeMajor": major,
        "imsx_severity": "error",
        "imsx_description": minor,
        "imsx_CodeMinor": {
            "imsx_codeMinorField": [{"imsx_codeMinorFieldName": "TargetEndSystem", "imsx_codeMinorFieldValue": minor}]
        },
    }

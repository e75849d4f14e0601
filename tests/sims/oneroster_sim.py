"""A OneRoster REST simulator (1.1 `/ims/oneroster/v1p1`, 1.2 `/ims/oneroster/rostering/v1p2`) on 127.0.0.1.

What it follows (1EdTech OneRoster 1.1 and 1.2 REST bindings):

- OAuth 2 client credentials: ``POST /token`` with HTTP Basic ``client_id:client_secret`` and
  ``grant_type=client_credentials`` answers ``{"access_token", "token_type": "bearer", "expires_in"}``;
  every API call needs ``Authorization: Bearer <token>`` (401 without a valid one). ``expire_tokens()``
  makes every issued token invalid, as an expiry would.
- ``GET .../classes``, ``/users``, ``/enrollments``, ``/orgs``, ``/academicSessions``, ``/courses``
  and ``/<collection>/{sourcedId}``; a list is ``{"<collection>": [...]}``, a single record
  ``{"<singular>": {...}}``, an unknown id 404 with a ``imsx_codeMajor: failure`` status payload.
- ``limit`` (default 100) and ``offset`` paging with ``X-Total-Count`` and a ``Link`` header
  (``rel="next"``, ``"last"``...), records in ascending sourcedId order.
- ``filter=dateLastModified>'2026-...Z'`` (and ``>=``, ``<``, ``<=``, ``=``, ``!=`` on
  ``dateLastModified`` or ``status``); any other filter answers 400.
- Records carry ``sourcedId``, ``status`` (``active`` | ``tobedeleted``) and ``dateLastModified``
  (the real time of the change, ms precision); references are ``{"href", "sourcedId", "type"}``.
  ``delete_*(silent=True)`` removes a record without a trace, as providers that drop records do.
- 429 with ``Retry-After`` via ``force_429(n)``.
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
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlencode

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
DEFAULT_LIMIT = 100
_FILTER = re.compile(r"^(dateLastModified|status)(>=|<=|!=|>|<|=)'([^']*)'$")


class _Quiet(WSGIRequestHandler):
    def log_request(self, *args: Any, **kwargs: Any) -> None:
        pass


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class OneRosterSimulator:
    def __init__(
        self, client_id: str = "district-client", client_secret: str = "district-secret", signing: bool = False
    ):
        self.signing = signing
        self._nonces: set[str] = set()
        self.client_id = client_id
        self.client_secret = client_secret
        self.records: dict[str, dict[str, dict]] = {c: {} for c in COLLECTIONS}
        self.requests: list[tuple[str, str]] = []  # (method, path with query)
        self._tokens: dict[str, float] = {}  # token -> time.monotonic() when it lapses
        self.token_lifetime = 3600  # expires_in of the tokens it issues, enforced
        self.user_agents: list[str] = []  # the User-Agent of each request
        self._lock = threading.Lock()
        self._force_429: list[int | None] = []
        self._server = None
        self._thread = None
        self.base_url = ""

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> str:
        self._server = make_server("127.0.0.1", 0, self._wsgi, threaded=True, request_handler=_Quiet)
        self.base_url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
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

    def add_session(self, sourced_id: str, title: str, start: str, end: str) -> str:
        fields = {"title": title, "type": "term", "startDate": start, "endDate": end, "schoolYear": end[:4]}
        return self._put("academicSessions", sourced_id, fields)

    def add_course(self, sourced_id: str, title: str, org: str = "org1") -> str:
        return self._put("courses", sourced_id, {"title": title, "org": self._ref("orgs", org)})

    def add_user(self, sourced_id: str, role: str, email: str, given: str = "", family: str = "") -> str:
        fields = {
            "username": email,
            "enabledUser": True,
            "givenName": given or sourced_id,
            "familyName": family or "User",
            "role": role,
            "email": email,
            "orgs": [],
        }
        return self._put("users", sourced_id, fields)

    def update_user(self, sourced_id: str, **fields: Any) -> str:
        return self._put("users", sourced_id, fields)

    def add_class(self, sourced_id: str, title: str, course: str = "course1", school: str = "org1") -> str:
        fields = {
            "title": title,
            "classType": "scheduled",
            "course": self._ref("courses", course),
            "school": self._ref("orgs", school),
            "terms": [],
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
        for root in ROOTS:
            if request.path.startswith(root + "/"):
                rest = request.path[len(root) + 1 :].strip("/").split("/")
                break
        else:
            return 404, _status_payload("failure", "unknownobject"), {}
        if rest[0] not in COLLECTIONS or len(rest) > 2:
            return 404, _status_payload("failure", "unknownobject"), {}
        if len(rest) == 2:
            record = self.records[rest[0]].get(rest[1])
            if record is None:
                return 404, _status_payload("failure", "unknownobject"), {}
            return 200, {COLLECTIONS[rest[0]]: record}, {}
        return self._list(request, rest[0])

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
        token = secrets.token_urlsafe(24)
        with self._lock:
            self._tokens[token] = time.monotonic() + self.token_lifetime
        body = {"access_token": token, "token_type": "bearer", "expires_in": self.token_lifetime}
        return 200, body, {"Cache-Control": "no-store"}

    def _list(self, request: Request, collection: str) -> tuple[int, Any, dict[str, str]]:
        try:
            limit = int(request.args.get("limit", DEFAULT_LIMIT))
            offset = int(request.args.get("offset", 0))
        except ValueError:
            return 400, _status_payload("failure", "invalid_selection_field"), {}
        if limit < 1 or offset < 0:
            return 400, _status_payload("failure", "invalid_selection_field"), {}
        with self._lock:
            records = [self.records[collection][k] for k in sorted(self.records[collection])]
        flt = request.args.get("filter")
        if flt:
            match = _FILTER.match(flt.strip())
            if not match:
                return 400, _status_payload("failure", "invalid_filter_field"), {}
            field, op, value = match.groups()
            compare = {
                ">": lambda a: a > value,
                ">=": lambda a: a >= value,
                "<": lambda a: a < value,
                "<=": lambda a: a <= value,
                "=": lambda a: a == value,
                "!=": lambda a: a != value,
            }[op]
            # ISO 8601 UTC timestamps of one format compare correctly as strings.
            records = [r for r in records if compare(str(r.get(field, "")))]
        total = len(records)
        page = records[offset : offset + limit]
        base = request.base_url
        params = {k: v for k, v in request.args.items() if k not in ("limit", "offset")}

        def link(off: int, rel: str) -> str:
            return f'<{base}?{urlencode(params | {"limit": limit, "offset": off})}>; rel="{rel}"'

        links = [link(0, "first"), link(max(0, (total - 1) // limit * limit), "last")]
        if offset + limit < total:
            links.append(link(offset + limit, "next"))
        if offset > 0:
            links.append(link(max(0, offset - limit), "prev"))
        return 200, {collection: page}, {"X-Total-Count": str(total), "Link": ", ".join(links)}


def _status_payload(major: str, minor: str) -> dict:
    return {
        "imsx_codeMajor": major,
        "imsx_severity": "error",
        "imsx_description": minor,
        "imsx_CodeMinor": {
            "imsx_codeMinorField": [{"imsx_codeMinorFieldName": "TargetEndSystem", "imsx_codeMinorFieldValue": minor}]
        },
    }

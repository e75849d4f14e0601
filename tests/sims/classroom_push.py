"""The Classroom simulator's push notifications and the Google OAuth endpoints they need.

Following developers.google.com/workspace/classroom/guides/push-notifications and the bundled
discovery document (registrations.create / delete):

- ``POST /v1/registrations`` takes ``{"feed": {"feedType": ...}, "cloudPubsubTopic": {"topicName": ...}}``
  and answers the Registration with ``registrationId`` and ``expiryTime`` (a week ahead). The same
  feed and topic again extends it (same id, new expiry). Errors: 400 INVALID_ARGUMENT for a missing
  or invalid feed or topic name (``projects/P/topics/T``), 404 NOT_FOUND when the topic does not
  exist (the simulator asks its notifier), 403 PERMISSION_DENIED ``@MissingGrant`` when the call does
  not carry a user's OAuth grant with the ``classroom.push-notifications`` scope: domain-wide
  delegation is not accepted. The simulator tells them apart by the bearer token: only tokens it
  issued at ``/token`` for a user's consent count; the sync's own (delegated, or anonymous against the
  simulator) calls carry none. A DOMAIN_ROSTER_CHANGES feed needs a domain administrator's grant.
- Every join or leave of a course (by API or by a teacher in the UI) publishes, for each registration
  still in force, a message with data ``{"collection": "courses.students"|"courses.teachers",
  "eventType": "CREATED"|"DELETED", "resourceId": {"courseId", "userId"}}`` and the attribute
  ``registrationId``, from a background thread (Classroom delivers "within a few minutes"; here soon).
- OAuth 2.0 for installed apps: ``GET /o/oauth2/v2/auth`` (client_id, redirect_uri, response_type=code,
  scope, state, access_type, login_hint: the user who "signs in", default the admin) redirects to
  redirect_uri with ``code`` and ``state``; ``POST /token`` exchanges a code (grant_type
  authorization_code) for an access and a refresh token, and a refresh token for an access token;
  wrong client or code answers 400/401 with ``{"error": ...}`` as Google does.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import queue
import re
import secrets
import threading
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote_plus, urlencode

PUSH_SCOPE = "https://www.googleapis.com/auth/classroom.push-notifications"
ROSTER_SCOPES = (
    "https://www.googleapis.com/auth/classroom.rosters",
    "https://www.googleapis.com/auth/classroom.rosters.readonly",
)
REGISTRATION_LIFETIME = dt.timedelta(days=7)
_TOPIC = re.compile(r"^projects/[a-z][a-z0-9-]{4,28}[a-z0-9]/topics/[A-Za-z][\w.~+%-]{2,254}$")


class Notifier(Protocol):
    def topic_exists(self, topic_name: str) -> bool: ...

    def publish(self, topic_name: str, data: bytes, attributes: dict[str, str]) -> None: ...


class PushNotificationsMixin:
    """Mixed into ClassroomSimulator; uses its _lock, _user(), _in_domain(), admin_email and errors."""

    def _init_push(self) -> None:
        self.notifier: Notifier | None = None
        self.oauth_clients: dict[str, str] = {}  # client id -> secret
        self.pkce_methods: list[str] = []  # each authorization request's code_challenge_method ("" for none)
        self.notifications_published = 0
        self._codes: dict[str, dict] = {}
        self._refresh_tokens: dict[str, dict] = {}
        self._access_tokens: dict[str, dict] = {}
        self._registrations: dict[str, dict] = {}
        self._outbox: queue.Queue = queue.Queue()
        self._publisher_thread: threading.Thread | None = None

    # -- test controls ---------------------------------------------------------------------------

    def register_oauth_client(self, client_id: str, client_secret: str) -> None:
        self.oauth_clients[client_id] = client_secret

    def registrations(self) -> list[dict]:
        with self._lock:
            return [dict(r) for r in self._registrations.values()]

    def expire_registrations(self) -> None:
        """As if a week had passed without renewal."""
        with self._lock:
            for r in self._registrations.values():
                r["expiryTime"] = _iso(_now() - dt.timedelta(seconds=1))

    def revoke_grants(self) -> None:
        with self._lock:
            self._refresh_tokens.clear()
            self._access_tokens.clear()

    def drain_notifications(self, timeout: float = 10.0) -> None:
        """Waits until every notification queued so far has been handed to the notifier."""
        done = threading.Event()
        self._outbox.put(done)
        self._ensure_publisher()
        if not done.wait(timeout):
            raise TimeoutError("notifications not published in time")

    # -- OAuth -----------------------------------------------------------------------------------

    def _oauth_authorize(self, query: dict[str, list[str]]) -> tuple[int, dict[str, str], bytes]:
        q = {k: v[-1] for k, v in query.items()}
        client, redirect = q.get("client_id", ""), q.get("redirect_uri", "")
        if client not in self.oauth_clients:
            return 401, {"Content-Type": "text/plain"}, b"Error 401: invalid_client. The OAuth client was not found."
        if not redirect.startswith(("http://127.0.0.1", "http://localhost")) or q.get("response_type") != "code":
            return 400, {"Content-Type": "text/plain"}, b"Error 400: invalid_request (redirect_uri or response_type)"
        scopes = set(q.get("scope", "").split())
        email = (q.get("login_hint") or self.admin_email).lower()
        with self._lock:
            if self._user(email) is None:
                return 400, {"Content-Type": "text/plain"}, b"Error 400: the user cannot sign in"
            code = "4/" + secrets.token_urlsafe(24)
            self._codes[code] = {"client_id": client, "redirect_uri": redirect, "email": email, "scopes": scopes}
            # PKCE (RFC 7636), as Google does it: optional, but a code asked for with a challenge is
            # only exchanged with the verifier that hashes to it.
            challenge, method = q.get("code_challenge", ""), q.get("code_challenge_method", "plain")
            if challenge:
                if method not in ("S256", "plain"):
                    return 400, {"Content-Type": "text/plain"}, b"Error 400: invalid_request (code_challenge_method)"
                self._codes[code]["pkce"] = (challenge, method)
            self.pkce_methods.append(method if challenge else "")
        location = f"{redirect}?{urlencode({'code': code, 'state': q.get('state', ''), 'scope': ' '.join(scopes)})}"
        return 302, {"Location": location, "Content-Type": "text/html"}, b"Redirecting"

    def _oauth_token(self, body: bytes, authorization: str = "") -> tuple[int, dict[str, str], bytes]:
        form = {k: v[-1] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}
        headers = {"Content-Type": "application/json"}
        client, secret = form.get("client_id", ""), form.get("client_secret")
        if authorization.startswith("Basic "):  # Google takes the client's credentials either way
            try:
                basic = base64.b64decode(authorization[6:]).decode()
            except ValueError:
                basic = ""
            user, _, password = basic.partition(":")
            client, secret = unquote_plus(user), unquote_plus(password)
        if self.oauth_clients.get(client) is None or self.oauth_clients[client] != secret:
            return 401, headers, json.dumps({"error": "invalid_client", "error_description": "Unauthorized"}).encode()
        with self._lock:
            if form.get("grant_type") == "authorization_code":
                grant = self._codes.pop(form.get("code", ""), None)
                if grant is not None and not _pkce_verified(grant.get("pkce"), form.get("code_verifier")):
                    grant = None
                if grant is None or grant["client_id"] != client or grant["redirect_uri"] != form.get("redirect_uri"):
                    return (
                        400,
                        headers,
                        json.dumps({"error": "invalid_grant", "error_description": "Bad Request"}).encode(),
                    )
                refresh = "1//" + secrets.token_urlsafe(32)
                self._refresh_tokens[refresh] = grant
            elif form.get("grant_type") == "refresh_token":
                refresh = form.get("refresh_token", "")
                grant = self._refresh_tokens.get(refresh)
                if grant is None or grant["client_id"] != client:
                    return (
                        400,
                        headers,
                        json.dumps(
                            {"error": "invalid_grant", "error_description": "Token has been expired or revoked."}
                        ).encode(),
                    )
            else:
                return 400, headers, json.dumps({"error": "unsupported_grant_type"}).encode()
            access = "ya29." + secrets.token_urlsafe(32)
            self._access_tokens[access] = grant
        answer: dict[str, Any] = {
            "access_token": access,
            "expires_in": 3599,
            "scope": " ".join(sorted(grant["scopes"])),
            "token_type": "Bearer",
        }
        if form.get("grant_type") == "authorization_code":
            answer["refresh_token"] = refresh
        return 200, headers, json.dumps(answer).encode()

    # -- registrations ---------------------------------------------------------------------------

    def _registration_call(self, method_id: str, params: dict, body: dict, authorization: str) -> dict:
        from tests.sims.classroom_sim import ApiError, _bad, _not_found

        token = authorization[7:].strip() if authorization.lower().startswith("bearer ") else ""
        grant = self._access_tokens.get(token)
        if grant is None or PUSH_SCOPE not in grant["scopes"]:
            raise ApiError(
                403,
                "PERMISSION_DENIED",
                "@MissingGrant The caller has not granted this project access to push notifications "
                "(domain-wide delegation is not supported for registrations).",
            )
        if method_id == "classroom.registrations.delete":
            if self._registrations.pop(params.get("registrationId", ""), None) is None:
                raise _not_found()
            return {}
        feed = body.get("feed") if isinstance(body.get("feed"), dict) else None
        topic = (
            (body.get("cloudPubsubTopic") or {}).get("topicName")
            if isinstance(body.get("cloudPubsubTopic"), dict)
            else None
        )
        if not feed or feed.get("feedType") not in ("DOMAIN_ROSTER_CHANGES", "COURSE_ROSTER_CHANGES"):
            raise _bad("feed: a feed with feedType DOMAIN_ROSTER_CHANGES or COURSE_ROSTER_CHANGES is required.")
        if not isinstance(topic, str) or not _TOPIC.match(topic):
            raise _bad("cloudPubsubTopic.topicName: must be projects/{project}/topics/{topic}.")
        if feed["feedType"] == "DOMAIN_ROSTER_CHANGES":
            if grant["email"] != self.admin_email:
                raise ApiError(403, "PERMISSION_DENIED", "The caller does not have permission for the domain feed.")
        elif self._course(str((feed.get("courseRosterChangesInfo") or {}).get("courseId") or "")) is None:
            raise ApiError(404, "NOT_FOUND", "Requested entity was not found.")
        if self.notifier is None or not self.notifier.topic_exists(topic):
            raise ApiError(404, "NOT_FOUND", "The Cloud Pub/Sub topic was not found or cannot be published to.")
        key = json.dumps([feed, topic, grant["email"]], sort_keys=True)
        existing = next((r for r in self._registrations.values() if r["_key"] == key), None)
        registration = existing or {"_key": key, "registrationId": secrets.token_hex(8), "feed": feed}
        registration.update(
            {"cloudPubsubTopic": {"topicName": topic}, "expiryTime": _iso(_now() + REGISTRATION_LIFETIME)}
        )
        self._registrations[registration["registrationId"]] = registration
        return {k: v for k, v in registration.items() if not k.startswith("_")}

    # -- notifications ---------------------------------------------------------------------------

    def _notify(self, course_id: str, role: str, user_id: str, event_type: str) -> None:
        """Called under the lock for every join and leave; publishing happens on another thread."""
        now = _now()
        for r in self._registrations.values():
            if _parse(r["expiryTime"]) <= now:
                continue
            feed = r["feed"]
            if (
                feed["feedType"] == "COURSE_ROSTER_CHANGES"
                and (feed.get("courseRosterChangesInfo") or {}).get("courseId") != course_id
            ):
                continue
            data = {
                "collection": f"courses.{role}",
                "eventType": event_type,
                "resourceId": {"courseId": course_id, "userId": user_id},
            }
            self._outbox.put((r["cloudPubsubTopic"]["topicName"], json.dumps(data).encode(), r["registrationId"]))
        self._ensure_publisher()

    def _ensure_publisher(self) -> None:
        if self._publisher_thread is None or not self._publisher_thread.is_alive():
            self._publisher_thread = threading.Thread(target=self._publish_loop, name="classroom-push", daemon=True)
            self._publisher_thread.start()

    def _publish_loop(self) -> None:
        while True:
            item = self._outbox.get()
            if isinstance(item, threading.Event):
                item.set()
                continue
            topic, data, registration_id = item
            if self.notifier is not None:
                self.notifier.publish(topic, data, {"registrationId": registration_id})
                self.notifications_published += 1


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _iso(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse(value: str) -> dt.datetime:
    return dt.datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC)


def _pkce_verified(pkce: tuple[str, str] | None, verifier: str | None) -> bool:
    """RFC 7636 4.6: S256 is BASE64URL(SHA256(verifier)) without padding; plain is the verifier."""
    if pkce is None:
        return True
    challenge, method = pkce
    if not verifier:
        return False
    if method == "S256":
        digest = hashlib.sha256(verifier.encode("ascii", "replace")).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=") == challenge
    return verifier == challenge

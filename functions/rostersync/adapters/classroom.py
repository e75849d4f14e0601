"""Google Classroom adapter over google-api-python-client and its bundled discovery document.

The only module that imports googleapiclient. It turns Google's errors into `ClassroomError`
(with the `@Reason` of the message) and runs every call through `rostersync.retry`.
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Callable, Sequence
from typing import Any

import google.auth
import httplib2
from google.auth import iam
from google.auth.credentials import AnonymousCredentials
from google.auth.transport.requests import Request
from google.oauth2 import service_account
from googleapiclient.discovery import build
from googleapiclient.errors import HttpError
from googleapiclient.http import BatchHttpRequest

from rostersync.adapters.throttle import RateLimiter
from rostersync.config import Settings
from rostersync.domain.ports import ADDED, ALREADY_MEMBER, NOT_MEMBER, REMOVED, ClassroomError
from rostersync.privacy import error_text
from rostersync.retry import Deadline, RetryPolicy

log = logging.getLogger(__name__)

SCOPES = [
    "https://www.googleapis.com/auth/classroom.courses",
    "https://www.googleapis.com/auth/classroom.rosters",
    "https://www.googleapis.com/auth/classroom.profile.emails",
]
# Asked for (and authorized in domain-wide delegation) only with GUARDIANS=invite.
GUARDIAN_SCOPE = "https://www.googleapis.com/auth/classroom.guardianlinks.students"
MAX_BATCH = 50  # Classroom's limit; the Python client would allow 1000
TOKEN_URI = "https://oauth2.googleapis.com/token"


def scopes_for(settings: Settings) -> list[str]:
    return SCOPES + ([GUARDIAN_SCOPE] if settings.guardians_on else [])


def delegated_credentials(subject: str, scopes: list[str] | None = None, delegate: str = ""):
    """Acts as the Workspace admin `subject` without a key file: the runtime service account signs
    the delegation JWT as `delegate` (the account holding domain-wide delegation; by default
    itself) through the IAM signJwt API, which is all it may do on that account (infra/iam.tf)."""
    source, _ = google.auth.default(scopes=["https://www.googleapis.com/auth/cloud-platform"])
    request = Request()
    source.refresh(request)
    email = delegate or getattr(source, "service_account_email", None)
    if not email:
        raise RuntimeError("Application Default Credentials are not a service account; cannot delegate")
    signer = iam.Signer(request, source, email)
    return service_account.Credentials(signer, email, TOKEN_URI, scopes=scopes or SCOPES, subject=subject)


def admin_subjects(settings: Settings) -> list[str]:
    """ADMIN_SUBJECT may name several Workspace admins (comma-separated): Classroom's per-user
    quota applies to each, so calls spread over them go further (up to the project's quota)."""
    return [s.strip() for s in settings.admin_subject.split(",") if s.strip()] or [""]


def build_classroom_services(settings: Settings) -> list:
    """One client per admin subject (one anonymous client against the local simulator)."""
    if settings.classroom_is_local:
        return [build_classroom_service(settings, AnonymousCredentials())]
    scopes = scopes_for(settings)
    return [
        build_classroom_service(settings, delegated_credentials(s, scopes, settings.classroom_delegate_account))
        for s in admin_subjects(settings)
    ]


def build_classroom_service(settings: Settings, credentials=None):
    if credentials is None:
        credentials = (
            AnonymousCredentials()
            if settings.classroom_is_local
            else delegated_credentials(
                admin_subjects(settings)[0], scopes_for(settings), settings.classroom_delegate_account
            )
        )
    return build(
        "classroom",
        "v1",
        credentials=credentials,
        client_options={"api_endpoint": settings.classroom_api_endpoint},
        static_discovery=True,
        cache_discovery=False,
        num_retries=0,  # retries happen in rostersync.retry, with the deadline in view
    )


def _link_limit_is_final(err: ClassroomError) -> None:
    """guardianInvitations.create answers RESOURCE_EXHAUSTED (HTTP 429) both for the quota, which
    passes, and for the student's or guardian's link limit, which does not. Google's quota answers
    name the quota; anything else is taken for the link limit and not retried."""
    if err.status == "RESOURCE_EXHAUSTED" and "quota" not in err.message.lower():
        err.retryable = False


def classroom_error(exc: Exception) -> ClassroomError:
    if isinstance(exc, HttpError):
        status_code = int(exc.resp.status)
        # Never str(exc): an HttpError's text is the request URI, /students/jane.doe%40...
        status, message = "", f"HTTP {status_code}"
        try:
            body = json.loads(exc.content.decode() if isinstance(exc.content, bytes) else exc.content)
            err = body.get("error", {}) if isinstance(body, dict) else {}
            status = err.get("status", "") or ""
            message = err.get("message", "") or message
        except (ValueError, AttributeError):
            pass
        retry_after = exc.resp.get("retry-after")
        return ClassroomError(
            status_code, status, message, float(retry_after) if retry_after and retry_after.isdigit() else None
        )
    return ClassroomError(0, "UNAVAILABLE", error_text(exc))


TRANSPORT_ERRORS = (OSError, socket.timeout, httplib2.HttpLib2Error, ConnectionError)
CALL_TIMEOUT = 30.0  # seconds, at most, for one call (googleapiclient's own default is 60)


def bound_timeout(http: Any, seconds: float) -> None:
    """Sets the socket timeout of the httplib2.Http under a request (wrapped by google-auth's
    AuthorizedHttp, whose `.http` it is) to `seconds`: for the connections it will open and for
    those it keeps open, whose sockets got the timeout when they were made. googleapiclient has no
    per-call timeout, and the http is this thread's own (wiring.applier), so setting it is safe."""
    inner = getattr(http, "http", http)
    if not isinstance(inner, httplib2.Http):
        return  # a test double or an HttpMock: nothing to bound
    inner.timeout = seconds
    for conn in list(inner.connections.values()):
        conn.timeout = seconds
        sock = getattr(conn, "sock", None)
        if sock is not None:
            sock.settimeout(seconds)


class ClassroomAdapter:
    def __init__(
        self,
        service: Any,
        endpoint: str,
        retry: RetryPolicy | None = None,
        deadline_factory: Callable[[], Deadline] | None = None,
        limiter: RateLimiter | None = None,
    ):
        # One client per admin subject; each unit of work (a message) uses the next one in turn.
        self._services = list(service) if isinstance(service, list | tuple) else [service]
        self._turn = 0
        self._service = self._services[0]
        self._batch_uri = endpoint.rstrip("/") + "/batch"
        self._retry = retry or RetryPolicy()
        self._deadline_factory = deadline_factory or (lambda: Deadline(50))
        self._limiter = limiter
        self.deadline = self._deadline_factory()
        self.calls = 0

    def start_unit_of_work(self) -> None:
        """A new message: a fresh deadline for its retries, and the next admin subject."""
        self.deadline = self._deadline_factory()
        self._turn = (self._turn + 1) % len(self._services)
        self._service = self._services[self._turn]

    def _take_room(self, n: int) -> None:
        if self._limiter is not None:
            self._limiter.acquire(n)

    def _execute(self, request, what: str, classify: Callable[[ClassroomError], None] | None = None) -> Any:
        def once():
            self._take_room(1)
            self.calls += 1
            bound_timeout(request.http, self.deadline.call_timeout(CALL_TIMEOUT))
            try:
                return request.execute(num_retries=0)
            except HttpError as exc:
                err = classroom_error(exc)
                if classify:
                    classify(err)
                raise err from exc
            except TRANSPORT_ERRORS as exc:
                raise classroom_error(exc) from exc

        return self._retry.call(once, self.deadline, what)

    # -- courses ---------------------------------------------------------------------------------

    def create_course(self, alias: str, name: str, owner_email: str) -> dict:
        body = {"id": alias, "name": name, "ownerId": owner_email, "courseState": "PROVISIONED"}
        return self._execute(self._service.courses().create(body=body), "courses.create")

    def get_course(self, course_id: str) -> dict | None:
        try:
            return self._execute(self._service.courses().get(id=course_id), "courses.get")
        except ClassroomError as exc:
            if exc.not_found:
                return None
            raise

    def patch_course(self, course_id: str, fields: dict) -> dict:
        request = self._service.courses().patch(id=course_id, updateMask=",".join(sorted(fields)), body=fields)
        return self._execute(request, "courses.patch")

    def delete_course(self, course_id: str) -> None:
        self._execute(self._service.courses().delete(id=course_id), "courses.delete")

    # -- push notifications ----------------------------------------------------------------------

    def create_registration(self, feed: dict, topic_name: str) -> dict:
        """Needs a client built with an administrator's OAuth grant (push_registration.py)."""
        body = {"feed": feed, "cloudPubsubTopic": {"topicName": topic_name}}
        return self._execute(self._service.registrations().create(body=body), "registrations.create")

    # -- members ---------------------------------------------------------------------------------

    def _member_collection(self, role: str):
        return self._service.courses().teachers() if role == "teacher" else self._service.courses().students()

    def _add_request(self, course_id: str, role: str, email: str):
        return self._member_collection(role).create(courseId=course_id, body={"userId": email})

    def add_members(self, course_id: str, members: Sequence[tuple[str, str]]) -> list[str | ClassroomError]:
        if len(members) == 1:
            role, email = members[0]
            try:
                self._execute(self._add_request(course_id, role, email), f"{role}s.create")
                return [ADDED]
            except ClassroomError as exc:
                return [ALREADY_MEMBER if exc.already_exists else exc]
        return self._add_in_batches(course_id, list(members))

    def _add_in_batches(self, course_id: str, members: list[tuple[str, str]]) -> list[str | ClassroomError]:
        results: list[str | ClassroomError | None] = [None] * len(members)
        pending = list(range(len(members)))

        def run_pending():
            still: list[int] = []
            for start in range(0, len(pending), MAX_BATCH):
                chunk = pending[start : start + MAX_BATCH]
                self._run_batch(course_id, members, chunk, results)
            for i in pending:
                if isinstance(results[i], ClassroomError) and results[i].retryable:
                    still.append(i)
            pending[:] = still
            if pending:
                first = results[pending[0]]
                raise ClassroomError(
                    first.http_status, first.status, f"{len(pending)} batched adds to retry", first.retry_after
                )

        try:
            self._retry.call(run_pending, self.deadline, "batch members.create")
        except ClassroomError:
            pass  # the calls still failing keep their own error in `results`
        return [r if r is not None else ClassroomError(0, "UNKNOWN", "no batch response") for r in results]

    def _run_batch(self, course_id, members, chunk, results) -> None:
        def callback(request_id, response, exception):
            i = int(request_id)
            if exception is None:
                results[i] = ADDED
            else:
                err = classroom_error(exception)
                results[i] = ALREADY_MEMBER if err.already_exists else err

        batch = BatchHttpRequest(callback=callback, batch_uri=self._batch_uri)
        for i in chunk:
            role, email = members[i]
            batch.add(self._add_request(course_id, role, email), request_id=str(i))
        self._take_room(len(chunk))  # every call in a batch counts against the quota
        self.calls += len(chunk)
        bound_timeout(getattr(self._service, "_http", None), self.deadline.call_timeout(CALL_TIMEOUT))
        try:
            batch.execute()
        except HttpError as exc:
            err = classroom_error(exc)
            for i in chunk:
                results[i] = err
        except TRANSPORT_ERRORS as exc:
            err = classroom_error(exc)
            for i in chunk:
                results[i] = err

    def list_member_emails(self, course_id: str, role: str) -> set[str]:
        """Everyone in the course with that role, by email (needs the profile.emails scope)."""
        emails: set[str] = set()
        token = None
        key = "teachers" if role == "teacher" else "students"
        while True:
            request = self._member_collection(role).list(courseId=course_id, pageSize=100, pageToken=token)
            page = self._execute(request, f"{key}.list")
            for member in page.get(key, []):
                email = (member.get("profile") or {}).get("emailAddress")
                if email:
                    emails.add(email.strip().lower())
            token = page.get("nextPageToken")
            if not token:
                return emails

    def member_email(self, course_id: str, role: str, user_id: str) -> str | None:
        """The member's email when user_id is a `role` of the course now, else None."""
        request = self._member_collection(role).get(courseId=course_id, userId=user_id)
        try:
            member = self._execute(request, f"{role}s.get")
        except ClassroomError as exc:
            if exc.not_found:
                return None
            raise
        return (member.get("profile") or {}).get("emailAddress") or None

    def user_email(self, user_id: str) -> str | None:
        try:
            profile = self._execute(self._service.userProfiles().get(userId=user_id), "userProfiles.get")
        except ClassroomError as exc:
            if exc.not_found or exc.http_status == 403:  # Classroom answers 403 for unknown users
                return None
            raise
        return profile.get("emailAddress") or None

    def remove_member(self, course_id: str, role: str, email: str) -> str:
        request = self._member_collection(role).delete(courseId=course_id, userId=email)
        try:
            self._execute(request, f"{role}s.delete")
            return REMOVED
        except ClassroomError as exc:
            if exc.not_found:
                return NOT_MEMBER
            raise

    # -- guardians (userProfiles.guardianInvitations and userProfiles.guardians) ------------------

    def invite_guardian(self, student: str, email: str) -> dict:
        """A PENDING invitation; ClassroomError ALREADY_EXISTS when one is pending for that address
        or it is already the student's guardian."""
        request = (
            self._service.userProfiles()
            .guardianInvitations()
            .create(studentId=student, body={"studentId": student, "invitedEmailAddress": email})
        )
        return self._execute(request, "guardianInvitations.create", _link_limit_is_final)

    def guardian_invitations(self, student: str, email: str | None = None, states=("PENDING",)) -> list[dict]:
        invitations: list[dict] = []
        token = None
        while True:
            kwargs = {"studentId": student, "states": list(states), "pageToken": token}
            if email:
                kwargs["invitedEmailAddress"] = email
            request = self._service.userProfiles().guardianInvitations().list(**kwargs)
            page = self._execute(request, "guardianInvitations.list")
            invitations += page.get("guardianInvitations", [])
            token = page.get("nextPageToken")
            if not token:
                return invitations

    def withdraw_guardian_invitation(self, student: str, invitation_id: str) -> dict:
        request = (
            self._service.userProfiles()
            .guardianInvitations()
            .patch(studentId=student, invitationId=invitation_id, updateMask="state", body={"state": "COMPLETE"})
        )
        return self._execute(request, "guardianInvitations.patch")

    def guardians(self, student: str, email: str | None = None) -> list[dict]:
        found: list[dict] = []
        token = None
        while True:
            kwargs = {"studentId": student, "pageToken": token}
            if email:
                kwargs["invitedEmailAddress"] = email
            page = self._execute(self._service.userProfiles().guardians().list(**kwargs), "guardians.list")
            found += page.get("guardians", [])
            token = page.get("nextPageToken")
            if not token:
                return found

    def remove_guardian(self, student: str, guardian_id: str) -> str:
        request = self._service.userProfiles().guardians().delete(studentId=student, guardianId=guardian_id)
        try:
            self._execute(request, "guardians.delete")
            return REMOVED
        except ClassroomError as exc:
            if exc.not_found:
                return NOT_MEMBER
            raise

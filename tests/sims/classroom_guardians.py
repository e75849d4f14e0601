"""Guardians for the Classroom simulator: ``userProfiles.guardianInvitations`` create/list/get/patch and
``userProfiles.guardians`` list/get/delete, as the bundled discovery document (revision 20261028)
describes them.

- An invitation is ``{studentId, invitationId, invitedEmailAddress, state, creationTime}``; ``state`` is
  PENDING until the guardian accepts (the test calls ``guardian_accepts``) or declines
  (``guardian_declines``), it is withdrawn (patch of ``state`` to COMPLETE with ``updateMask=state``)
  or 120 days pass (``advance_guardian_clock``): then COMPLETE, whichever it was (the discovery
  document: "It may have been accepted, declined, withdrawn or it may have expired"); only an
  accepted one leaves a guardian. A guardian is ``{studentId, guardianId, guardianProfile,
  invitedEmailAddress}``.
- ``studentId`` takes a numeric id, an email or ``me``; a string that is neither answers
  INVALID_ARGUMENT, an unknown student NOT_FOUND.
- create: ALREADY_EXISTS when a PENDING invitation for that address exists or the address is already a
  guardian of the student; RESOURCE_EXHAUSTED past ``guardian_link_limit`` guardians and pending
  invitations for the student (Classroom's 20); INVALID_ARGUMENT for a malformed address, a missing
  field, a read-only field or a state other than PENDING.
- Guardian access off for the domain (``set_guardian_access(False)``): every guardian call answers
  PERMISSION_DENIED, as the documentation lists for "guardians are not enabled for the domain".
- ``guardianInvitations.list`` returns PENDING ones unless ``states`` says otherwise.
"""

from __future__ import annotations

import datetime as dt
import re

INVITATION_DAYS = 120
GUARDIAN_LINK_LIMIT = 20
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")
INVITATION_FIELDS = {"studentId", "invitationId", "invitedEmailAddress", "state", "creationTime"}
GUARDIAN_ROUTES = [
    (
        "POST",
        r"^userProfiles/(?P<studentId>[^/]+)/guardianInvitations$",
        "classroom.userProfiles.guardianInvitations.create",
    ),
    (
        "GET",
        r"^userProfiles/(?P<studentId>[^/]+)/guardianInvitations$",
        "classroom.userProfiles.guardianInvitations.list",
    ),
    (
        "GET",
        r"^userProfiles/(?P<studentId>[^/]+)/guardianInvitations/(?P<invitationId>[^/]+)$",
        "classroom.userProfiles.guardianInvitations.get",
    ),
    (
        "PATCH",
        r"^userProfiles/(?P<studentId>[^/]+)/guardianInvitations/(?P<invitationId>[^/]+)$",
        "classroom.userProfiles.guardianInvitations.patch",
    ),
    ("GET", r"^userProfiles/(?P<studentId>[^/]+)/guardians$", "classroom.userProfiles.guardians.list"),
    (
        "GET",
        r"^userProfiles/(?P<studentId>[^/]+)/guardians/(?P<guardianId>[^/]+)$",
        "classroom.userProfiles.guardians.get",
    ),
    (
        "DELETE",
        r"^userProfiles/(?P<studentId>[^/]+)/guardians/(?P<guardianId>[^/]+)$",
        "classroom.userProfiles.guardians.delete",
    ),
]
GUARDIAN_QUERY_PARAMS = {
    "classroom.userProfiles.guardianInvitations.list": {"invitedEmailAddress", "pageSize", "pageToken", "states"},
    "classroom.userProfiles.guardianInvitations.patch": {"updateMask"},
    "classroom.userProfiles.guardians.list": {"invitedEmailAddress", "pageSize", "pageToken"},
}


def _iso(when: dt.datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


class GuardiansMixin:
    """Mixed into ClassroomSimulator (which provides _lock, _user, ApiError through _api_error)."""

    def _init_guardians(self) -> None:
        self.guardian_access = True
        self.guardian_link_limit = GUARDIAN_LINK_LIMIT
        self._invitations: dict[str, dict] = {}  # invitation id -> invitation (studentId numeric)
        self._guardians: dict[str, dict[str, dict]] = {}  # student id -> guardian id -> guardian
        self._next_invitation = 1
        self._next_guardian_account = 900000000001

    # -- test hooks (not counted) ---------------------------------------------------------------

    def set_guardian_access(self, enabled: bool) -> None:
        with self._lock:
            self.guardian_access = enabled

    def advance_guardian_clock(self, days: float) -> None:
        """`days` pass for the invitations there are: their creationTime moves back. The simulator's
        clock stays the real one, which the functions under test run on, so both agree on how old
        an invitation is (creationTime + 120 days tells an expired one from a declined one)."""
        with self._lock:
            for inv in self._invitations.values():
                inv["_created"] -= dt.timedelta(days=days)
                inv["creationTime"] = _iso(inv["_created"])

    def _guardian_now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC)

    def _expire(self) -> None:
        cutoff = self._guardian_now() - dt.timedelta(days=INVITATION_DAYS)
        for inv in self._invitations.values():
            if inv["state"] == "PENDING" and inv["_created"] <= cutoff:
                inv["state"] = "COMPLETE"

    def _student_of(self, email_or_id: str):
        user = self._user(email_or_id)
        if user is None:
            raise KeyError(email_or_id)
        return user

    def guardian_accepts(self, student: str, guardian_email: str) -> str:
        """The guardian follows the emailed link: the invitation completes and a guardian appears.
        Returns the guardian id. KeyError when no pending invitation exists."""
        with self._lock:
            self._expire()
            sid = self._student_of(student).id
            for inv in self._invitations.values():
                if (
                    inv["studentId"] == sid
                    and inv["state"] == "PENDING"
                    and inv["invitedEmailAddress"] == guardian_email.lower()
                ):
                    inv["state"] = "COMPLETE"
                    return self._make_guardian(sid, inv["invitedEmailAddress"])
            raise KeyError(f"no pending invitation of {guardian_email} for {student}")

    def guardian_declines(self, student: str, guardian_email: str) -> None:
        """The guardian declines the emailed invitation: COMPLETE, and no guardian."""
        with self._lock:
            self._expire()
            sid = self._student_of(student).id
            for inv in self._invitations.values():
                if (
                    inv["studentId"] == sid
                    and inv["state"] == "PENDING"
                    and inv["invitedEmailAddress"] == (guardian_email.lower())
                ):
                    inv["state"] = "COMPLETE"
                    return
            raise KeyError(f"no pending invitation of {guardian_email} for {student}")

    def add_guardian_by_hand(self, student: str, guardian_email: str) -> str:
        """A guardian an administrator or teacher added outside the sync (the invitation accepted)."""
        with self._lock:
            return self._make_guardian(self._student_of(student).id, guardian_email.lower())

    def remove_guardian_by_hand(self, student: str, guardian_email: str) -> None:
        """A teacher or administrator removes the guardian in Classroom (or the parent unlinks)."""
        with self._lock:
            mine = self._guardians.get(self._student_of(student).id, {})
            for gid, guardian in list(mine.items()):
                if guardian["invitedEmailAddress"] == guardian_email.lower():
                    del mine[gid]

    def _make_guardian(self, student_id: str, email: str) -> str:
        account = self._user(email)
        if account is not None:
            gid = account.id
        else:
            gid = str(self._next_guardian_account)
            self._next_guardian_account += 1
        self._guardians.setdefault(student_id, {})[gid] = {
            "studentId": student_id,
            "guardianId": gid,
            "guardianProfile": {"id": gid, "name": {"fullName": email.split("@")[0]}, "emailAddress": email},
            "invitedEmailAddress": email,
        }
        return gid

    def guardians_of(self, student: str) -> set[str]:
        with self._lock:
            sid = self._student_of(student).id
            return {g["invitedEmailAddress"] for g in self._guardians.get(sid, {}).values()}

    def invitations_of(self, student: str, state: str | None = None) -> list[dict]:
        with self._lock:
            self._expire()
            sid = self._student_of(student).id
            return [
                self._invitation_json(i)
                for i in self._invitations.values()
                if i["studentId"] == sid and (state is None or i["state"] == state)
            ]

    # -- the API -----------------------------------------------------------------------------------

    @staticmethod
    def _invitation_json(inv: dict) -> dict:
        return {k: v for k, v in inv.items() if not k.startswith("_")}

    def _guardian_call(self, kind: str, params: dict, q: dict, query: dict, body: dict) -> dict:
        from tests.sims.classroom_sim import ApiError, _bad, _not_found, _page_token_slice

        if not self.guardian_access:
            raise ApiError(403, "PERMISSION_DENIED", "Guardian access is not enabled for this domain.")
        ident = params["studentId"]
        if ident != "me" and not ident.isdigit() and "@" not in ident:
            raise _bad("studentId: not a user id or an email address.")
        student = self._user(ident)
        if student is None:
            raise _not_found()
        self._expire()
        sid = student.id
        mine = self._guardians.setdefault(sid, {})
        if kind == "userProfiles.guardianInvitations.create":
            unknown = set(body) - {"studentId", "invitedEmailAddress", "state"}
            if unknown or set(body) & {"invitationId", "creationTime"}:
                raise _bad(f"Read-only or unknown field(s) set: {', '.join(sorted(unknown))}.")
            if body.get("state") not in (None, "PENDING"):
                raise _bad("state: must be PENDING (or unset) on create.")
            email = body.get("invitedEmailAddress")
            if not body.get("studentId") or not isinstance(email, str) or not email:
                raise _bad("studentId and invitedEmailAddress must be set.")
            email = email.strip().lower()
            if len(email) > 254 or not _EMAIL.match(email):
                raise _bad("invitedEmailAddress: not a valid email address.")
            if any(g["invitedEmailAddress"] == email for g in mine.values()) or any(
                i["studentId"] == sid and i["state"] == "PENDING" and i["invitedEmailAddress"] == email
                for i in self._invitations.values()
            ):
                raise ApiError(409, "ALREADY_EXISTS", "Requested entity already exists")
            pending = sum(1 for i in self._invitations.values() if i["studentId"] == sid and i["state"] == "PENDING")
            if len(mine) + pending >= self.guardian_link_limit:
                raise ApiError(429, "RESOURCE_EXHAUSTED", "The student has reached the guardian link limit.")
            now = self._guardian_now()
            inv_id = f"gi{self._next_invitation:09d}"
            self._next_invitation += 1
            self._invitations[inv_id] = {
                "studentId": sid,
                "invitationId": inv_id,
                "invitedEmailAddress": email,
                "state": "PENDING",
                "creationTime": _iso(now),
                "_created": now,
            }
            return self._invitation_json(self._invitations[inv_id])
        if kind in ("userProfiles.guardianInvitations.get", "userProfiles.guardianInvitations.patch"):
            inv = self._invitations.get(params["invitationId"])
            if inv is None or inv["studentId"] != sid:
                raise _not_found()
            if kind.endswith(".get"):
                return self._invitation_json(inv)
            if q.get("updateMask", "").strip() != "state" or set(body) - INVITATION_FIELDS:
                raise _bad("updateMask: only state may be modified.")
            if body.get("state") != "COMPLETE":
                raise _bad("state: may only be changed to COMPLETE.")
            if inv["state"] != "PENDING":
                raise ApiError(400, "FAILED_PRECONDITION", "The guardian invitation is not in the PENDING state.")
            inv["state"] = "COMPLETE"
            return self._invitation_json(inv)
        if kind == "userProfiles.guardianInvitations.list":
            states = query.get("states") or ["PENDING"]
            email = (q.get("invitedEmailAddress") or "").lower()
            items = [
                self._invitation_json(i)
                for i in self._invitations.values()
                if i["studentId"] == sid and i["state"] in states and (not email or i["invitedEmailAddress"] == email)
            ]
            return _page_token_slice(self, "guardianInvitations", sid + repr(states) + email, items, q)
        if kind == "userProfiles.guardians.list":
            email = (q.get("invitedEmailAddress") or "").lower()
            items = [dict(g) for g in mine.values() if not email or g["invitedEmailAddress"] == email]
            return _page_token_slice(self, "guardians", sid + email, items, q)
        guardian = mine.get(params["guardianId"])
        if guardian is None:
            raise _not_found()
        if kind == "userProfiles.guardians.get":
            return dict(guardian)
        del mine[params["guardianId"]]  # guardians.delete
        return {}

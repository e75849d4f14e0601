"""Classroom push notifications (DOMAIN_ROSTER_CHANGES): teachers' roster changes, seen within minutes.

Classroom publishes one notification each time a user joins or leaves a course, whoever did it:
our applier or a teacher. The data is JSON like
    {"collection": "courses.students", "eventType": "CREATED",
     "resourceId": {"courseId": "123", "userId": "456"}}
and the message attribute `registrationId` names the registration that asked for it.

Whether we caused it is read from our own write log: the SectionCourseLink of the course, which
records every member the sync added (status active, with the Clever event) or removed (removed /
leaving). What it does not explain is a teacher's change and is recorded as an override, in the
same shape the reconcile pass records it (reconcile.py), so the rules treat both alike.

Two races, and how they are handled:
- Our own write is published by Classroom before the applier has committed its link (the applier
  writes Classroom first, Firestore after). A notification the link does not explain, younger than
  the grace period (NOTIFICATION_GRACE_SECONDS, longer than an applier's time budget), is handed
  back for redelivery (Pub/Sub retries it with backoff) instead of being judged too early.
- Notifications arrive late, twice or out of order. Before recording anything the handler asks
  Classroom whether the user is in the course *now*: a CREATED for someone no longer there, or a
  DELETED for someone back again, records nothing, and recording the same override twice writes
  the same document. So the outcome depends on the current state, not on delivery order.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Protocol

from rostersync import optimistic
from rostersync.domain import audit
from rostersync.domain.links import LinkState, MemberStatus, SectionCourseLink
from rostersync.domain.rules import Override

COLLECTION_ROLES = {"courses.students": "student", "courses.teachers": "teacher"}
EVENT_TYPES = ("CREATED", "DELETED")
MAX_NOTIFICATION_BYTES = 10_000


class InvalidNotification(ValueError):
    """A message on the notifications topic that is not a Classroom roster notification."""


@dataclass(frozen=True)
class RosterNotification:
    role: str  # "student" | "teacher"
    event_type: str  # "CREATED" | "DELETED"
    course_id: str
    user_id: str
    published_at: dt.datetime | None = None
    registration_id: str = ""

    @property
    def joined(self) -> bool:
        return self.event_type == "CREATED"


def decode_notification(data: bytes, attributes: dict | None = None, publish_time: str = "") -> RosterNotification:
    if len(data) > MAX_NOTIFICATION_BYTES:
        raise InvalidNotification(f"notification of {len(data)} bytes is larger than any Classroom sends")
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        # RecursionError: JSON nested deeper than the parser's stack (no Classroom notification is).
        raise InvalidNotification(f"notification data is not JSON: {type(exc).__name__}") from None
    if not isinstance(doc, dict):
        raise InvalidNotification("notification data is not a JSON object")
    collection, event_type, resource = doc.get("collection"), doc.get("eventType"), doc.get("resourceId")
    if collection not in COLLECTION_ROLES:
        raise InvalidNotification(f"collection {collection!r} is not a roster collection")
    if event_type not in EVENT_TYPES:
        raise InvalidNotification(f"eventType {event_type!r} is not CREATED or DELETED")
    if not isinstance(resource, dict):
        raise InvalidNotification("resourceId is missing")
    course_id, user_id = resource.get("courseId"), resource.get("userId")
    for name, value in (("courseId", course_id), ("userId", user_id)):
        if not isinstance(value, str) or not value.strip() or len(value) > 200:
            raise InvalidNotification(f"resourceId.{name} is missing or malformed")
    return RosterNotification(
        role=COLLECTION_ROLES[collection],
        event_type=event_type,
        course_id=course_id.strip(),
        user_id=user_id.strip(),
        published_at=_parse_time(publish_time),
        registration_id=str((attributes or {}).get("registrationId") or ""),
    )


def _parse_time(value: str) -> dt.datetime | None:
    if not value:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


class LinkLookup(Protocol):
    def link_for_course(self, course_id: str) -> SectionCourseLink | None: ...

    def load_link(self, section_id: str) -> SectionCourseLink | None: ...

    def save_link(
        self, before, after, problems=(), resolved=(), overrides=(), audit=(), withdrawn=(), touched=False
    ) -> None: ...


class RosterReader(Protocol):
    def member_email(self, course_id: str, role: str, user_id: str) -> str | None:
        """The member's email when they are in the course with that role now, else None."""

    def user_email(self, user_id: str) -> str | None: ...


class Outcome(StrEnum):
    OURS = "ours"  # the sync made this change (its link explains it)
    RECORDED = "override_recorded"  # a teacher's change, now an override
    KNOWN = "already_known"  # a teacher's change recorded before
    STALE = "stale"  # Classroom no longer shows what the notification says
    NOT_MANAGED = "not_managed"  # a course the sync did not create (or no longer follows)
    NOT_OUR_REGISTRATION = "not_our_registration"  # another registration's notification: acknowledged
    RETRY_LATER = "retry_later"  # not explained yet: our own link may not be committed


@dataclass(frozen=True)
class NotificationResult:
    outcome: Outcome
    detail: str = ""
    section_id: str = ""

    @property
    def ack(self) -> bool:
        return self.outcome != Outcome.RETRY_LATER


class NotificationHandler:
    def __init__(
        self, links: LinkLookup, roster: RosterReader, grace_seconds: float, clock=None, registration_id: str = ""
    ):
        # Our registration (sync_state/classroom_notifications), when known: another one's
        # notifications are acknowledged at once, never waited on for the grace period.
        self._registration_id = registration_id
        self._links = links
        self._roster = roster
        self._grace = dt.timedelta(seconds=grace_seconds)
        self._clock = clock or (lambda: dt.datetime.now(dt.UTC))

    def _young(self, n: RosterNotification) -> bool:
        return n.published_at is None or self._clock() - n.published_at < self._grace

    def _unexplained(self, n: RosterNotification, what: str) -> NotificationResult | None:
        if self._young(n):
            return NotificationResult(Outcome.RETRY_LATER, f"{what}; within the grace period, our link may lag")
        return None

    def handle(self, n: RosterNotification) -> NotificationResult:
        """Judged from the link as read and Classroom as it is now, and saved on the condition that
        the link did not change meanwhile; if it did (an applier re-added the member, say), judged
        again from the fresh link and a fresh look at Classroom (optimistic.run)."""
        if self._registration_id and n.registration_id and n.registration_id != self._registration_id:
            return NotificationResult(
                Outcome.NOT_OUR_REGISTRATION, f"registration {n.registration_id} is not ours ({self._registration_id})"
            )
        try:
            return optimistic.run(
                lambda: self._links.link_for_course(n.course_id),
                lambda link, attempt: self._handle(link, n),
                f"notification for course {n.course_id}",
            )
        except optimistic.StaleWrite as exc:
            return NotificationResult(Outcome.RETRY_LATER, f"the link kept changing: {exc}")

    def _handle(self, link: SectionCourseLink | None, n: RosterNotification) -> NotificationResult:
        if link is None:
            return self._unexplained(n, f"no link for course {n.course_id}") or NotificationResult(
                Outcome.NOT_MANAGED, f"course {n.course_id} is not one the sync created"
            )
        if link.state != LinkState.ACTIVE:
            return NotificationResult(Outcome.NOT_MANAGED, f"the link is {link.state.value}", link.section_id)
        if n.joined:
            email = self._roster.member_email(n.course_id, n.role, n.user_id)
            if email is None:
                return NotificationResult(Outcome.STALE, f"user {n.user_id} is no longer a {n.role}", link.section_id)
            return self._joined(link, n, email.lower())
        if self._roster.member_email(n.course_id, n.role, n.user_id) is not None:
            return NotificationResult(Outcome.STALE, f"user {n.user_id} is a {n.role} again", link.section_id)
        email = self._roster.user_email(n.user_id)
        if email is None:
            return NotificationResult(Outcome.STALE, f"user {n.user_id} has no profile", link.section_id)
        return self._left(link, n, email.lower())

    def _siblings(self, link: SectionCourseLink) -> list[SectionCourseLink]:
        from rostersync.app.applier import active_siblings

        return active_siblings(self._links, link)

    def _joined(self, link: SectionCourseLink, n: RosterNotification, email: str) -> NotificationResult:
        section = link.section_id
        if link.owner and (link.owner.email or "").lower() == email:
            return NotificationResult(Outcome.OURS, f"{email} is the owner the sync set", section)
        for candidate in [link, *self._siblings(link)]:
            for record in candidate.active_members(n.role):
                if (record.email or "").lower() == email:
                    return NotificationResult(
                        Outcome.OURS, f"the sync added {email} (event {record.event_id})", candidate.section_id
                    )
        if email in link.teacher_added:
            return NotificationResult(Outcome.KNOWN, f"{email} was added by hand before", section)
        waiting = self._unexplained(n, f"{n.role} {email} joined and the link does not explain it")
        if waiting:
            return replace(waiting, section_id=section)
        override = Override(
            "member_added_by_teacher",
            section,
            f"The teacher added {n.role} {email}; the sync never removes them",
            email=email,
            role=n.role,
            course_id=n.course_id,
        )
        after = replace(link, teacher_added=sorted({*link.teacher_added, email}))
        self._links.save_link(link, after, (), (), [override], audit=[_audit(override)])
        return NotificationResult(Outcome.RECORDED, override.detail, section)

    def _left(self, link: SectionCourseLink, n: RosterNotification, email: str) -> NotificationResult:
        for sibling in self._siblings(link):
            # A cross-listed course: the removal belongs to the section that had them.
            if any((m.email or "").lower() == email and m.role == n.role for m in sibling.active_members()):
                link = sibling
                break
        section = link.section_id
        if email in link.teacher_added:
            # Someone added by hand left again: nothing of ours changed, the list just follows.
            after = replace(link, teacher_added=[e for e in link.teacher_added if e != email])
            self._links.save_link(link, after)
            return NotificationResult(Outcome.KNOWN, f"{email}, added by hand, left", section)
        record = next((m for m in link.members.values() if (m.email or "").lower() == email and m.role == n.role), None)
        if record is None or record.status in (MemberStatus.REMOVED, MemberStatus.PROBLEM):
            return NotificationResult(Outcome.OURS, f"the sync removed {email} or never had them", section)
        if record.status == MemberStatus.REMOVED_BY_TEACHER:
            return NotificationResult(Outcome.KNOWN, f"the teacher's removal of {email} is recorded", section)
        # active, or leaving (an old owner we are about to remove): not explained yet
        waiting = self._unexplained(n, f"{n.role} {email} left while the link has them {record.status.value}")
        if waiting:
            return replace(waiting, section_id=section)
        override = Override(
            "member_removed_by_teacher",
            section,
            f"The teacher removed {n.role} {email}; the sync will not add them again "
            "unless Clever ends and restarts the enrollment",
            email=email,
            role=n.role,
            clever_id=record.clever_id,
            course_id=n.course_id,
        )
        after = link.with_member(replace(record, status=MemberStatus.REMOVED_BY_TEACHER))
        self._links.save_link(link, after, (), (), [override], audit=[_audit(override)])
        return NotificationResult(Outcome.RECORDED, override.detail, section)


def _audit(override: Override) -> audit.AuditEntry:
    return audit.from_override(override, "classroom-notification", override.course_id)

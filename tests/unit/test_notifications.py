"""Classroom push notifications -> overrides (rostersync/app/notifications.py), with in-memory fakes."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from rostersync.app.notifications import InvalidNotification, NotificationHandler, Outcome, decode_notification
from rostersync.domain.changes import Person
from rostersync.domain.links import LinkState, MemberRecord, MemberStatus, SectionCourseLink

from tests.unit.fakes import FakeStore

NOW = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC)
GRACE = 300
COURSE = "700000000001"
OWNER = "teacher@d.org"


class FakeRoster:
    """Classroom now: course -> role -> {user id: email}; profiles: user id -> email."""

    def __init__(self):
        self.members: dict[str, dict[str, dict[str, str]]] = {COURSE: {"student": {}, "teacher": {}}}
        self.profiles: dict[str, str] = {}

    def put(self, role: str, user_id: str, email: str) -> None:
        self.members[COURSE][role][user_id] = email
        self.profiles[user_id] = email

    def drop(self, role: str, user_id: str) -> None:
        self.members[COURSE][role].pop(user_id, None)

    def member_email(self, course_id, role, user_id):
        return self.members.get(course_id, {}).get(role, {}).get(user_id)

    def user_email(self, user_id):
        return self.profiles.get(user_id)


def linked(store: FakeStore, **members: tuple[str, MemberStatus]) -> SectionCourseLink:
    link = SectionCourseLink(
        section_id="sec-1",
        state=LinkState.ACTIVE,
        alias="d:clever-sec-1",
        course_id=COURSE,
        name_set="Algebra",
        owner=Person("t-1", OWNER),
    )
    for clever_id, (email, status) in members.items():
        link = link.with_member(MemberRecord(clever_id, email, "student", status, "ev-1"))
    store.save_link(None, link)
    return link


def note(role: str, event: str, user_id: str, age_seconds: float = GRACE + 1):
    data = {
        "collection": f"courses.{role}s",
        "eventType": event,
        "resourceId": {"courseId": COURSE, "userId": user_id},
    }
    published = (NOW - dt.timedelta(seconds=age_seconds)).isoformat().replace("+00:00", "Z")
    return decode_notification(json.dumps(data).encode(), {"registrationId": "r1"}, published)


@pytest.fixture
def world():
    store, roster = FakeStore(), FakeRoster()
    handler = NotificationHandler(store, roster, GRACE, clock=lambda: NOW)
    return store, roster, handler


def test_our_own_add_is_not_an_override(world):
    store, roster, handler = world
    linked(store, s1=("ann@d.org", MemberStatus.ACTIVE))
    roster.put("student", "u1", "ann@d.org")
    assert handler.handle(note("student", "CREATED", "u1")).outcome == Outcome.OURS
    assert store.overrides == {}


def test_the_owner_joining_at_creation_is_ours(world):
    store, roster, handler = world
    linked(store)
    roster.put("teacher", "u0", OWNER)
    assert handler.handle(note("teacher", "CREATED", "u0")).outcome == Outcome.OURS


def test_a_teachers_add_becomes_an_override_once(world):
    store, roster, handler = world
    linked(store)
    roster.put("student", "u9", "extra@d.org")
    first = handler.handle(note("student", "CREATED", "u9"))
    assert first.outcome == Outcome.RECORDED
    assert [o.kind for o in store.overrides.values()] == ["member_added_by_teacher"]
    assert store.links["sec-1"]["teacher_added"] == ["extra@d.org"]
    (entry,) = store.audit  # in the same commit: why can tell it
    assert (entry.outcome, entry.event_id, entry.email) == ("override_seen", "classroom-notification", "extra@d.org")
    assert handler.handle(note("student", "CREATED", "u9")).outcome == Outcome.KNOWN  # delivered twice
    assert len(store.audit) == 1


def test_a_teachers_removal_of_our_member_is_recorded_and_the_member_marked(world):
    store, roster, handler = world
    linked(store, s1=("ann@d.org", MemberStatus.ACTIVE))
    roster.profiles["u1"] = "ann@d.org"  # she is gone from the course
    result = handler.handle(note("student", "DELETED", "u1"))
    assert result.outcome == Outcome.RECORDED
    assert store.links["sec-1"]["members"]["s1"]["status"] == MemberStatus.REMOVED_BY_TEACHER
    (override,) = store.overrides.values()
    assert (override.kind, override.clever_id, override.course_id) == ("member_removed_by_teacher", "s1", COURSE)
    assert handler.handle(note("student", "DELETED", "u1")).outcome == Outcome.KNOWN


def test_our_own_removal_is_not_an_override(world):
    store, roster, handler = world
    linked(store, s1=("ann@d.org", MemberStatus.REMOVED))
    roster.profiles["u1"] = "ann@d.org"
    assert handler.handle(note("student", "DELETED", "u1")).outcome == Outcome.OURS
    assert store.overrides == {}


def test_an_unexplained_change_inside_the_grace_period_waits_for_our_link(world):
    """The applier writes Classroom before Firestore: a young notification is redelivered, not judged."""
    store, roster, handler = world
    link = linked(store)
    roster.put("student", "u1", "ann@d.org")
    young = note("student", "CREATED", "u1", age_seconds=5)
    result = handler.handle(young)
    assert result.outcome == Outcome.RETRY_LATER and not result.ack
    store.save_link(link, link.with_member(MemberRecord("s1", "ann@d.org", "student", MemberStatus.ACTIVE, "ev-2")))
    assert handler.handle(young).outcome == Outcome.OURS
    assert store.overrides == {}


def test_a_course_without_link_waits_then_is_left_alone(world):
    store, roster, handler = world
    assert handler.handle(note("student", "CREATED", "u1", age_seconds=5)).outcome == Outcome.RETRY_LATER
    assert handler.handle(note("student", "CREATED", "u1")).outcome == Outcome.NOT_MANAGED
    assert store.overrides == {}


def test_a_declined_course_is_not_followed(world):
    store, roster, handler = world
    link = linked(store)
    store.save_link(link, SectionCourseLink(**{**link.__dict__, "state": LinkState.DECLINED}))
    roster.put("student", "u9", "extra@d.org")
    assert handler.handle(note("student", "CREATED", "u9")).outcome == Outcome.NOT_MANAGED


def test_out_of_order_add_and_remove_by_a_teacher_leave_nothing_behind(world):
    """DELETED delivered before CREATED: Classroom's current state decides, so nothing is recorded."""
    store, roster, handler = world
    linked(store)
    roster.profiles["u9"] = "extra@d.org"  # added and removed again: not in the course now
    assert handler.handle(note("student", "DELETED", "u9")).outcome == Outcome.OURS
    assert handler.handle(note("student", "CREATED", "u9")).outcome == Outcome.STALE
    assert store.overrides == {}
    assert store.links["sec-1"]["teacher_added"] == []


def test_a_hand_added_member_who_leaves_drops_off_the_list(world):
    store, roster, handler = world
    linked(store)
    roster.put("student", "u9", "extra@d.org")
    handler.handle(note("student", "CREATED", "u9"))
    roster.drop("student", "u9")
    assert handler.handle(note("student", "DELETED", "u9")).outcome == Outcome.KNOWN
    assert store.links["sec-1"]["teacher_added"] == []


@pytest.mark.parametrize(
    "data",
    [
        b"not json",
        b"[]",
        b'{"collection": "courses.courseWork", "eventType": "CREATED", "resourceId": {"courseId": "1", "userId": "2"}}',
        b'{"collection": "courses.students", "eventType": "MODIFIED", "resourceId": {"courseId": "1", "userId": "2"}}',
        b'{"collection": "courses.students", "eventType": "CREATED"}',
        b'{"collection": "courses.students", "eventType": "CREATED", "resourceId": {"courseId": "", "userId": "2"}}',
        b'{"collection": "courses.students", "eventType": "CREATED", "resourceId": {"courseId": 1, "userId": "2"}}',
        b"\xff\xfe",
        b"{" * 20_000,
    ],
)
def test_bad_notifications_are_refused_with_a_reason(data):
    with pytest.raises(InvalidNotification) as caught:
        decode_notification(data)
    assert str(caught.value)

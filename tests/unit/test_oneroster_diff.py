"""The OneRoster diff: records now vs. the last state we saw → the roster changes the rules apply."""

import datetime as dt

from rostersync.domain.changes import ChangeKind, decode_message, encode_message
from rostersync.domain.sources.oneroster_diff import ClassState, EventIds, RosterRead, diff

T0 = dt.datetime(2026, 9, 1, 12, 0, 0, tzinfo=dt.UTC)


def users(*ids):
    return {u: {"sourcedId": u, "email": f"{u.upper()}@School.org", "status": "active"} for u in ids}


def enr(class_id, user_id, role, primary=False, status="active"):
    return {
        "class": {"sourcedId": class_id},
        "user": {"sourcedId": user_id},
        "role": role,
        "primary": primary,
        "status": status,
    }


def full_read(title="Biology", students=("s1", "s2"), teacher="t1", extra=None):
    enrollments = {f"e-{teacher}": enr("c1", teacher, "teacher", primary=True)}
    enrollments |= {f"e-{s}": enr("c1", s, "student") for s in students}
    enrollments |= extra or {}
    return RosterRead(
        classes={"c1": {"sourcedId": "c1", "title": title, "status": "active"}},
        users=users(teacher, *students, "t2"),
        enrollments=enrollments,
    )


def kinds(result):
    return [(c.kind, c.person.clever_id if c.person else None) for c in result.changes]


def test_a_new_class_is_a_course_wanted_owned_by_the_primary_teacher():
    result = diff({}, full_read(), EventIds(T0))
    assert kinds(result) == [(ChangeKind.COURSE_WANTED, None)]
    snap = result.changes[0].section
    assert snap.primary_teacher.email == "t1@school.org"
    assert [p.clever_id for p in snap.students] == ["s1", "s2"]
    assert result.changes[0].source == "oneroster"
    # What we publish decodes as the applier reads it.
    assert decode_message(encode_message(result.changes)) == result.changes


def test_a_student_missing_from_a_full_read_is_removed_and_one_new_is_added():
    first = diff({}, full_read(), EventIds(T0)).states
    result = diff(first, full_read(students=("s2", "s3")), EventIds(T0 + dt.timedelta(minutes=5)))
    assert kinds(result) == [(ChangeKind.STUDENT_ADDED, "s3"), (ChangeKind.STUDENT_REMOVED, "s1")]
    assert result.changes[1].person.email == "s1@school.org"


def test_a_delta_read_missing_records_changes_nothing_but_tobedeleted_removes():
    first = diff({}, full_read(), EventIds(T0)).states
    empty_delta = RosterRead(full=False)
    assert diff(first, empty_delta, EventIds(T0)).changes == []
    delta = RosterRead(enrollments={"e-s1": enr("c1", "s1", "student", status="tobedeleted")}, full=False)
    result = diff(first, delta, EventIds(T0 + dt.timedelta(seconds=1)))
    assert kinds(result) == [(ChangeKind.STUDENT_REMOVED, "s1")]
    assert set(result.states["c1"].members("student")) == {"s2"}


def test_a_class_tobedeleted_or_missing_from_a_full_read_is_deleted_once():
    first = diff({}, full_read(), EventIds(T0)).states
    gone = diff(first, RosterRead(), EventIds(T0 + dt.timedelta(seconds=1)))
    assert kinds(gone) == [(ChangeKind.SECTION_DELETED, None)]
    assert diff(gone.states, RosterRead(), EventIds(T0 + dt.timedelta(seconds=2))).changes == []
    marked = RosterRead(classes={"c1": {"sourcedId": "c1", "title": "Biology", "status": "tobedeleted"}}, full=False)
    assert kinds(diff(first, marked, EventIds(T0))) == [(ChangeKind.SECTION_DELETED, None)]


def test_rename_and_primary_teacher_change():
    first = diff({}, full_read(), EventIds(T0)).states
    extra = {"e-t1": enr("c1", "t1", "teacher", primary=False), "e-t2": enr("c1", "t2", "teacher", primary=True)}
    result = diff(first, full_read(title="Biology II", extra=extra), EventIds(T0 + dt.timedelta(seconds=1)))
    assert kinds(result) == [
        (ChangeKind.NAME_CHANGED, None),
        (ChangeKind.TEACHER_ADDED, "t2"),
        (ChangeKind.PRIMARY_TEACHER_CHANGED, "t2"),
    ]
    assert result.changes[0].name == "Biology II"


def test_event_ids_sort_by_read_time_then_order_found():
    first = EventIds(T0)
    later = EventIds(T0 + dt.timedelta(microseconds=1))
    a, b = first.next(), first.next()
    assert len(a) == 24 and int(a, 16) >= 0
    assert a < b < later.next()
    # Clever ObjectIds begin with the same seconds, so a later read sorts after older Clever events.
    assert f"{int(T0.timestamp()) - 1:08x}" + "f" * 16 < a


def test_state_round_trips_and_a_repeat_read_changes_nothing():
    states = diff({}, full_read(), EventIds(T0)).states
    again = {k: ClassState.from_json(v.to_json()) for k, v in states.items()}
    assert again == states
    assert diff(again, full_read(), EventIds(T0)).changes == []


def test_a_bad_enrollment_is_reported_and_the_rest_syncs():
    read = full_read(extra={"bad": {"role": "student", "user": {"sourcedId": "s9"}}})
    result = diff({}, read, EventIds(T0))
    assert result.bad_records == ["enrollment bad has no sourcedId reference"]
    assert kinds(result) == [(ChangeKind.COURSE_WANTED, None)]

"""Clever event + previous attributes → roster changes, on real-shaped payloads."""

import pytest
from rostersync.domain.changes import ChangeKind, RosterChange
from rostersync.domain.sources.clever_events import InvalidCleverEvent, changes_from_event, event_user_ids

from tests.unit.clever_payloads import (
    EMAILS,
    STUDENTS,
    TEACHER_A,
    TEACHER_B,
    TEACHER_C,
    event,
    section,
)

EV = "6553a0f27d0c8a0001b00001"


def kinds(changes):
    return [(c.kind, c.person.clever_id if c.person else c.name) for c in changes]


def test_created_section_is_one_course_wanted_with_the_whole_roster():
    [change] = changes_from_event(event(EV, "sections.created", section()), EMAILS)
    assert change.kind == ChangeKind.COURSE_WANTED
    assert change.section.name == "Algebra I - Smith - Period 3"
    assert change.section.primary_teacher.email == "ann.smith@district.example.org"
    assert [s.clever_id for s in change.section.students] == STUDENTS[:5]
    assert change.event_id == EV and change.event_time == "2026-11-02T09:15:01.123Z"


def test_students_added_and_removed_from_whole_arrays():
    obj = section(students=[STUDENTS[0], STUDENTS[2], STUDENTS[7], STUDENTS[8]])
    ev = event(EV, "sections.updated", obj, {"students": STUDENTS[:3]})
    assert kinds(changes_from_event(ev, EMAILS)) == [
        (ChangeKind.STUDENT_ADDED, STUDENTS[7]),
        (ChangeKind.STUDENT_ADDED, STUDENTS[8]),
        (ChangeKind.STUDENT_REMOVED, STUDENTS[1]),
    ]


def test_removed_student_carries_their_email_although_no_longer_in_the_section():
    ev = event(EV, "sections.updated", section(students=[]), {"students": [STUDENTS[4]]})
    [change] = changes_from_event(ev, EMAILS)
    assert change.kind == ChangeKind.STUDENT_REMOVED
    assert change.person.email == "student4@district.example.org"


def test_primary_teacher_change_orders_add_then_owner_then_remove():
    obj = section(teacher=TEACHER_B, teachers=[TEACHER_B, TEACHER_C])
    ev = event(EV, "sections.updated", obj, {"teacher": TEACHER_A, "teachers": [TEACHER_A, TEACHER_C]})
    assert kinds(changes_from_event(ev, EMAILS)) == [
        (ChangeKind.TEACHER_ADDED, TEACHER_B),
        (ChangeKind.PRIMARY_TEACHER_CHANGED, TEACHER_B),
        (ChangeKind.TEACHER_REMOVED, TEACHER_A),
    ]


def test_co_teacher_added_and_rename_in_one_event():
    obj = section(teachers=[TEACHER_A, TEACHER_C], name="Algebra I - Smith - Period 4", period="4")
    ev = event(
        EV, "sections.updated", obj, {"teachers": [TEACHER_A], "name": "Algebra I - Smith - Period 3", "period": "3"}
    )
    assert kinds(changes_from_event(ev, EMAILS)) == [
        (ChangeKind.TEACHER_ADDED, TEACHER_C),
        (ChangeKind.NAME_CHANGED, "Algebra I - Smith - Period 4"),
    ]


def test_changes_to_fields_we_do_not_sync_yield_nothing():
    ev = event(EV, "sections.updated", section(grade="10", subject="science"), {"grade": "9", "subject": "math"})
    assert changes_from_event(ev, EMAILS) == []


def test_deleted_section_carries_the_full_object():
    [change] = changes_from_event(event(EV, "sections.deleted", section()), EMAILS)
    assert change.kind == ChangeKind.SECTION_DELETED
    assert len(change.section.students) == 5


def test_update_without_previous_attributes_converges_on_the_whole_section():
    [change] = changes_from_event(event(EV, "sections.updated", section()), EMAILS)
    assert change.kind == ChangeKind.COURSE_WANTED


@pytest.mark.parametrize(
    "type_",
    [
        "users.created",
        "users.updated",
        "users.deleted",
        "schools.updated",
        "terms.created",
        "courses.updated",
        "districts.updated",
        "resources.created",
    ],
)
def test_records_we_do_not_apply_yield_no_change(type_):
    ev = event(EV, type_, {"id": "5c40b4f37d0c8a0001a7e999", "name": {"first": "A", "last": "B"}})
    assert changes_from_event(ev, EMAILS) == []
    assert event_user_ids(ev) == set()


def test_user_without_email_is_kept_with_no_email():
    emails = {**EMAILS, STUDENTS[9]: None}
    ev = event(EV, "sections.updated", section(students=STUDENTS[:5] + [STUDENTS[9]]), {"students": STUDENTS[:5]})
    [change] = changes_from_event(ev, emails)
    assert change.person.clever_id == STUDENTS[9] and change.person.email is None


def test_event_user_ids_cover_removed_members():
    ev = event(EV, "sections.updated", section(students=[]), {"students": [STUDENTS[3]]})
    assert STUDENTS[3] in event_user_ids(ev) and TEACHER_A in event_user_ids(ev)


@pytest.mark.parametrize(
    "bad",
    [
        {"type": "sections.created", "data": {"object": section()}},  # no id
        {"id": EV, "data": {"object": section()}},  # no type
        {"id": EV, "type": "sections.updated"},  # no data
        {"id": EV, "type": "sections.updated", "data": {"object": section(name="")}},
        {"id": EV, "type": "sections.updated", "data": {"object": section(students="x")}},
        {"id": EV, "type": "sections.updated", "data": {"object": section(), "previous_attributes": []}},
        {"id": EV, "type": "sections.archived", "data": {"object": section()}},
    ],
)
def test_malformed_section_events_are_reported(bad):
    with pytest.raises(InvalidCleverEvent):
        changes_from_event(bad, EMAILS)


def test_changes_survive_the_json_round_trip():
    obj = section(teacher=TEACHER_B, teachers=[TEACHER_B])
    ev = event(EV, "sections.updated", obj, {"teacher": TEACHER_A, "teachers": [TEACHER_A]})
    for change in changes_from_event(ev, EMAILS):
        assert RosterChange.from_json(change.to_json()) == change

"""The sync rules and the applier, driven with in-memory fakes of Classroom and Firestore."""

from dataclasses import replace

import pytest
from rostersync.app.applier import Applier
from rostersync.domain.changes import ChangeKind
from rostersync.domain.links import course_alias
from rostersync.domain.ports import ClassroomError
from rostersync.domain.sources.clever_events import changes_from_event

from tests.unit.clever_payloads import (
    EMAILS,
    SECTION,
    STUDENTS,
    TEACHER_A,
    TEACHER_B,
    TEACHER_C,
    event,
    section,
)
from tests.unit.fakes import FakeClassroom, FakeStore

ALIAS = course_alias(SECTION)


def ev_id(n: int) -> str:
    return f"6553a0f27d0c8a0001b{n:05d}"


@pytest.fixture
def world():
    classroom = FakeClassroom(accounts=[e for e in EMAILS.values() if e != "student9@district.example.org"])
    store = FakeStore()
    return classroom, store, Applier(store, classroom)


def apply_event(applier, ev, emails=EMAILS):
    return [applier.apply(c) for c in changes_from_event(ev, emails)]


def created(applier, n=1, **overrides):
    return apply_event(applier, event(ev_id(n), "sections.created", section(**overrides)))


def test_new_section_becomes_provisioned_course_owned_by_primary_with_everyone(world):
    classroom, store, applier = world
    created(applier, teachers=[TEACHER_A, TEACHER_C])
    roster = classroom.roster(ALIAS)
    assert roster["state"] == "PROVISIONED"
    assert roster["name"] == "Algebra I - Smith - Period 3"
    assert roster["owner"] == EMAILS[TEACHER_A]
    assert roster["teachers"] == {EMAILS[TEACHER_A], EMAILS[TEACHER_C]}
    assert roster["students"] == {EMAILS[s] for s in STUDENTS[:5]}
    link = store.links[SECTION]
    assert link["course_id"] == classroom.aliases[ALIAS] and link["alias"] == ALIAS
    assert link["name_set"] == "Algebra I - Smith - Period 3"
    assert classroom.writes == 1 + 1 + 5


def test_repeated_delivery_makes_no_call_and_no_write(world):
    classroom, store, applier = world
    created(applier)
    writes, commits = classroom.writes, store.ops["commit"]
    created(applier)
    assert classroom.writes == writes and store.ops["commit"] == commits


def test_added_student_is_one_call_and_one_commit(world):
    classroom, store, applier = world
    created(applier)
    classroom.calls.clear()
    store.ops.clear()
    obj = section(students=STUDENTS[:6])
    [outcome] = apply_event(applier, event(ev_id(2), "sections.updated", obj, {"students": STUDENTS[:5]}))
    assert EMAILS[STUDENTS[5]] in classroom.roster(ALIAS)["students"]
    assert classroom.writes == 1 and outcome.calls == 1
    assert store.ops == {"read": 1, "commit": 1}


def test_removed_student_leaves_and_a_member_added_by_hand_stays(world):
    classroom, store, applier = world
    created(applier)
    classroom.members[classroom.aliases[ALIAS]]["cat.lee@district.example.org"] = "student"  # by hand
    obj = section(students=STUDENTS[1:5])
    apply_event(applier, event(ev_id(2), "sections.updated", obj, {"students": STUDENTS[:5]}))
    students = classroom.roster(ALIAS)["students"]
    assert EMAILS[STUDENTS[0]] not in students
    assert "cat.lee@district.example.org" in students
    # Clever dropping someone we never added makes no call.
    before = classroom.writes
    apply_event(applier, event(ev_id(3), "sections.updated", section(students=[]), {"students": [TEACHER_C]}))
    assert classroom.writes == before and "cat.lee@district.example.org" in classroom.roster(ALIAS)["students"]


def test_out_of_order_remove_before_add_ends_removed(world):
    classroom, store, applier = world
    created(applier)
    add = changes_from_event(
        event(ev_id(2), "sections.updated", section(students=STUDENTS[:6]), {"students": STUDENTS[:5]}), EMAILS
    )
    remove = changes_from_event(
        event(ev_id(3), "sections.updated", section(students=STUDENTS[:5]), {"students": STUDENTS[:6]}), EMAILS
    )
    for change in remove + add + remove + add:
        applier.apply(change)
    assert EMAILS[STUDENTS[5]] not in classroom.roster(ALIAS)["students"]
    assert classroom.calls["students.create"] == 5  # only the initial roster


def test_student_without_google_account_is_a_problem_and_the_rest_syncs(world):
    classroom, store, applier = world
    created(applier, students=STUDENTS[:3] + [STUDENTS[9]])
    assert classroom.roster(ALIAS)["students"] == {EMAILS[s] for s in STUDENTS[:3]}
    [problem] = store.open_problems().values()
    assert problem["kind"] == "user_not_in_google" and problem["clever_id"] == STUDENTS[9]
    assert problem["reason"] == "@CannotDirectAddUser"
    # A second bootstrap does not ask Classroom again for the same unknown user.
    writes = classroom.writes
    created(applier, students=STUDENTS[:3] + [STUDENTS[9]])
    assert classroom.writes == writes


def test_student_without_email_is_a_problem_without_a_call(world):
    classroom, store, applier = world
    emails = {**EMAILS, STUDENTS[2]: None}
    apply_event(applier, event(ev_id(1), "sections.created", section()), emails)
    assert classroom.calls["students.create"] == 4
    assert {p["kind"] for p in store.open_problems().values()} == {"user_without_email"}


def test_primary_teacher_without_account_leaves_no_course_and_is_tried_once_a_change(world):
    classroom, store, applier = world
    classroom.accounts.discard(EMAILS[TEACHER_A])
    created(applier)
    assert classroom.courses == {} and classroom.writes == 1
    [problem] = store.open_problems().values()
    assert problem["kind"] == "owner_not_in_google"
    apply_event(applier, event(ev_id(1), "sections.created", section()))
    assert classroom.writes == 1  # a redelivery of the refused event asks nothing again
    apply_event(
        applier, event(ev_id(2), "sections.updated", section(students=STUDENTS[:6]), {"students": STUDENTS[:5]})
    )
    assert classroom.writes == 2 and classroom.courses == {}  # the next change: one create call
    # A new primary teacher with an account gets the course, with the whole section.
    obj = section(teacher=TEACHER_B, teachers=[TEACHER_B], students=STUDENTS[:6])
    apply_event(applier, event(ev_id(3), "sections.updated", obj, {"teacher": TEACHER_A, "teachers": [TEACHER_A]}))
    roster = classroom.roster(ALIAS)
    assert roster["owner"] == EMAILS[TEACHER_B] and len(roster["students"]) == 6
    assert not store.open_problems()


def test_primary_teacher_change_moves_ownership_and_drops_the_old_teacher(world):
    classroom, store, applier = world
    created(applier)
    obj = section(teacher=TEACHER_B, teachers=[TEACHER_B])
    apply_event(applier, event(ev_id(2), "sections.updated", obj, {"teacher": TEACHER_A, "teachers": [TEACHER_A]}))
    roster = classroom.roster(ALIAS)
    assert roster["owner"] == EMAILS[TEACHER_B]
    assert roster["teachers"] == {EMAILS[TEACHER_B]}


def test_rename_applies_once_and_a_stale_rename_is_skipped(world):
    classroom, store, applier = world
    created(applier)
    ev = event(ev_id(3), "sections.updated", section(name="Geometry - Smith - Period 3"), {"name": "Algebra I"})
    apply_event(applier, ev)
    apply_event(applier, ev)
    stale = event(ev_id(2), "sections.updated", section(name="Old name"), {"name": "Algebra I"})
    apply_event(applier, stale)
    assert classroom.roster(ALIAS)["name"] == "Geometry - Smith - Period 3"
    assert classroom.calls["courses.patch"] == 1


def test_deleted_section_archives_the_course_with_its_members_and_later_events_are_ignored(world):
    classroom, _store, applier = world
    created(applier)
    apply_event(applier, event(ev_id(2), "sections.deleted", section()))
    roster = classroom.roster(ALIAS)
    assert roster["state"] == "ARCHIVED"
    assert len(roster["students"]) == 5  # not stripped first: they keep access to their work
    writes = classroom.writes
    apply_event(applier, event(ev_id(2), "sections.deleted", section()))
    apply_event(applier, event(ev_id(3), "sections.updated", section(students=[]), {"students": STUDENTS[:5]}))
    assert classroom.writes == writes


def test_crash_after_create_before_save_adopts_the_course_by_alias(world):
    classroom, store, applier = world
    created(applier)
    store.links.clear()  # as if the function died before writing the link
    created(applier)
    assert len(classroom.courses) == 1
    assert store.links[SECTION]["course_id"] == classroom.aliases[ALIAS]


def test_transient_failure_asks_for_redelivery_and_keeps_progress(world):
    classroom, store, applier = world
    classroom.fail_next = [None] * 0
    # The create succeeds; the third member add meets a 503 that outlived the retries.
    classroom.fail_next = []
    orig = classroom.add_members

    def flaky(course_id, members):
        out = orig(course_id, members)
        out[2] = ClassroomError(503, "UNAVAILABLE", "backend error")
        return out

    classroom.add_members = flaky
    outcomes = created(applier)
    assert outcomes[0].status == "retry" and not outcomes[0].ack
    classroom.add_members = orig
    before = classroom.writes
    [outcome] = created(applier)
    assert outcome.status == "applied"
    assert classroom.writes - before == 1  # only the member that failed
    assert len(classroom.roster(ALIAS)["students"]) == 5


@pytest.mark.parametrize(
    "data",
    [b"not json", b"{}", b'{"schema": 1, "kind": "student_added"}', b'{"schema": 1, "kind": "nope"}', b"\xff\xfe"],
)
def test_bad_message_is_rejected_and_recorded(world, data):
    classroom, store, applier = world
    outcome = applier.handle_message(data, {"section_id": SECTION})
    assert outcome.status == "rejected" and outcome.ack
    assert [p["kind"] for p in store.open_problems().values()] == ["bad_message"]
    assert classroom.writes == 0


def test_course_wanted_converges_missed_changes(world):
    classroom, store, applier = world
    created(applier)
    # A re-bootstrap after an expired cursor: the section lost a student and gained a co-teacher.
    [change] = changes_from_event(
        event(ev_id(9), "sections.created", section(teachers=[TEACHER_A, TEACHER_C], students=STUDENTS[1:5])), EMAILS
    )
    assert change.kind == ChangeKind.COURSE_WANTED
    applier.apply(change)
    roster = classroom.roster(ALIAS)
    assert roster["teachers"] == {EMAILS[TEACHER_A], EMAILS[TEACHER_C]}
    assert EMAILS[STUDENTS[0]] not in roster["students"]


def test_teacher_rename_persists_and_is_recorded_as_an_override(world):
    classroom, store, applier = world
    created(applier)
    classroom.courses[classroom.aliases[ALIAS]]["name"] = "Ms. Smith's Algebra"  # by the teacher
    ev = event(ev_id(3), "sections.updated", section(name="Algebra I - Jones - Period 3"), {"name": "Algebra I"})
    apply_event(applier, ev)
    assert classroom.roster(ALIAS)["name"] == "Ms. Smith's Algebra"
    assert store.links[SECTION]["name_override"] == "Ms. Smith's Algebra"
    [override] = store.overrides.values()
    assert override.kind == "name" and "Ms. Smith's Algebra" in override.detail
    # Later renames are not even tried.
    patches = classroom.calls["courses.patch"]
    apply_event(applier, event(ev_id(4), "sections.updated", section(name="Again"), {"name": "x"}))
    assert classroom.calls["courses.patch"] == patches and classroom.calls["courses.get"] == 1


def test_member_removed_by_teacher_is_not_re_added_by_the_same_enrollment_but_a_new_one_applies(world):
    classroom, store, applier = world
    created(applier)
    link = store.links[SECTION]
    link["members"][STUDENTS[0]]["status"] = "removed_by_teacher"  # as the reconcile pass records it
    classroom.members[classroom.aliases[ALIAS]].pop(EMAILS[STUDENTS[0]])
    created(applier, n=5)  # a re-bootstrap: the same enrollment
    assert EMAILS[STUDENTS[0]] not in classroom.roster(ALIAS)["students"]
    # Clever ends the enrollment and starts it again: the new enrollment applies.
    apply_event(
        applier, event(ev_id(6), "sections.updated", section(students=STUDENTS[1:5]), {"students": STUDENTS[:5]})
    )
    apply_event(
        applier, event(ev_id(7), "sections.updated", section(students=STUDENTS[:5]), {"students": STUDENTS[1:5]})
    )
    assert EMAILS[STUDENTS[0]] in classroom.roster(ALIAS)["students"]


def test_declined_course_is_detected_on_refusal_and_left_alone(world):
    classroom, store, applier = world
    created(applier)
    course_id = classroom.aliases[ALIAS]
    classroom.courses[course_id]["courseState"] = "DECLINED"
    real_add = classroom.add_members

    def refuse_when_declined(cid, members):
        if classroom.courses[cid]["courseState"] == "DECLINED":
            classroom.calls["students.create"] += len(members)
            return [ClassroomError(400, "FAILED_PRECONDITION", "@CourseNotModifiable The course is declined.")] * len(
                members
            )
        return real_add(cid, members)

    classroom.add_members = refuse_when_declined
    apply_event(
        applier, event(ev_id(2), "sections.updated", section(students=STUDENTS[:6]), {"students": STUDENTS[:5]})
    )
    assert store.links[SECTION]["state"] == "declined"
    assert [o.kind for o in store.overrides.values()] == ["declined"]
    assert not store.open_problems()
    writes = classroom.writes
    apply_event(
        applier, event(ev_id(3), "sections.updated", section(students=STUDENTS[:7]), {"students": STUDENTS[:6]})
    )
    assert classroom.writes == writes


def test_owner_change_to_a_teacher_without_account_waits_and_the_course_keeps_its_owner(world):
    classroom, store, applier = world
    created(applier)
    classroom.accounts.discard(EMAILS[TEACHER_B])
    obj = section(teacher=TEACHER_B, teachers=[TEACHER_B, TEACHER_A])
    apply_event(applier, event(ev_id(2), "sections.updated", obj, {"teacher": TEACHER_A, "teachers": [TEACHER_A]}))
    assert classroom.roster(ALIAS)["owner"] == EMAILS[TEACHER_A]
    assert classroom.calls["courses.patch"] == 0
    [problem] = store.open_problems().values()
    assert problem["kind"] == "user_not_in_google" and problem["clever_id"] == TEACHER_B


def test_a_message_with_several_changes_to_a_section_costs_one_read_and_one_commit(world):
    from rostersync.domain.changes import decode_message, encode_message

    classroom, store, applier = world
    created(applier)
    store.ops.clear()
    classroom.calls.clear()
    changes = changes_from_event(
        event(ev_id(2), "sections.updated", section(students=STUDENTS[1:7]), {"students": STUDENTS[:5]}), EMAILS
    ) + changes_from_event(event(ev_id(3), "sections.updated", section(name="Renamed"), {"name": "x"}), EMAILS)
    # The snapshot travels once: every change but a course_wanted reads the newest one.
    decoded = decode_message(encode_message(changes))
    assert [replace(c, section=changes[-1].section) for c in changes] == decoded
    outcome = applier.handle_message(encode_message(changes))
    assert outcome.status == "applied"
    roster = classroom.roster(ALIAS)
    assert roster["students"] == {EMAILS[s] for s in STUDENTS[1:7]} and roster["name"] == "Renamed"
    assert store.ops == {"read": 1, "commit": 1}


def test_a_batch_mixing_sections_or_empty_is_rejected(world):
    import json

    _classroom, store, applier = world
    one = changes_from_event(event(ev_id(2), "sections.created", section()), EMAILS)[0]
    other = changes_from_event(event(ev_id(3), "sections.created", section(id="5c40b5127d0c8a0001a7f0ff")), EMAILS)[0]
    mixed = {"schema": 2, "section_id": SECTION, "changes": [json.loads(one.to_json()), json.loads(other.to_json())]}
    for body in (mixed, {"schema": 2, "section_id": SECTION, "changes": []}):
        assert applier.handle_message(json.dumps(body).encode()).status == "rejected"
    assert {p["kind"] for p in store.open_problems().values()} == {"bad_message"}


def test_a_removal_that_arrives_after_a_newer_re_enrollment_does_not_remove(world):
    classroom, _store, applier = world
    created(applier)
    held_removal = changes_from_event(
        event(ev_id(2), "sections.updated", section(students=STUDENTS[1:5]), {"students": STUDENTS[:5]}), EMAILS
    )
    # Clever re-enrolls the student (event 3) before an administrator approves the held removal.
    re_enrolled = changes_from_event(
        event(ev_id(3), "sections.updated", section(students=STUDENTS[:5]), {"students": STUDENTS[1:5]}), EMAILS
    )
    for change in re_enrolled + held_removal:
        applier.apply(change)
    assert EMAILS[STUDENTS[0]] in classroom.roster(ALIAS)["students"]
    assert classroom.calls["students.delete"] == 0


def cross_listed(store, classroom, sibling_students):
    """SECTION's course shared with a sibling section that holds `sibling_students` (rostersync link)."""
    from dataclasses import replace

    from rostersync.domain.links import LinkState, MemberRecord, MemberStatus, SectionCourseLink

    link = SectionCourseLink.from_doc(store.links[SECTION])
    course_id = link.course_id
    sibling = replace(SectionCourseLink.new("sec-sibling"), state=LinkState.ACTIVE, course_id=course_id)
    for s in sibling_students:
        sibling = sibling.with_member(MemberRecord(s, EMAILS[s], "student", MemberStatus.ACTIVE, ev_id(1)))
    store.save_link(None, replace(sibling, shared_with=[SECTION]))
    store.save_link(link, replace(link, shared_with=["sec-sibling"], name_override=link.name_set))
    return course_id


def test_a_cross_listed_section_removes_nobody_its_sibling_keeps(world):
    classroom, store, applier = world
    created(applier)
    cross_listed(store, classroom, [STUDENTS[0]])
    reads = store.ops["read"]
    dropped = section(students=STUDENTS[2:5])  # students 0 and 1 leave this section
    apply_event(applier, event(ev_id(2), "sections.updated", dropped, {"students": STUDENTS[:5]}))
    assert classroom.roster(ALIAS)["students"] == {EMAILS[s] for s in [STUDENTS[0], *STUDENTS[2:5]]}
    assert store.links[SECTION]["members"][STUDENTS[0]]["status"] == "removed"  # no longer this section's
    assert store.ops["read"] - reads == 2 * 2  # per message: its link and the sibling's


def test_a_cross_listed_course_keeps_its_owner_and_outlives_one_deleted_section(world):
    classroom, store, applier = world
    created(applier)
    cross_listed(store, classroom, [STUDENTS[0]])
    new_primary = section(teacher=TEACHER_B, teachers=[TEACHER_A, TEACHER_B])
    apply_event(
        applier, event(ev_id(2), "sections.updated", new_primary, {"teacher": TEACHER_A, "teachers": [TEACHER_A]})
    )
    roster = classroom.roster(ALIAS)
    assert roster["owner"] == EMAILS[TEACHER_A] and EMAILS[TEACHER_B] in roster["teachers"]
    apply_event(applier, event(ev_id(3), "sections.deleted", new_primary))
    roster = classroom.roster(ALIAS)
    assert roster["state"] != "ARCHIVED"
    assert roster["students"] == {EMAILS[STUDENTS[0]]}  # the sibling's student stays, this section's leave
    assert store.links[SECTION]["state"] == "deleted"


def test_the_last_section_of_a_cross_listed_course_archives_it(world):
    classroom, store, applier = world
    created(applier)
    cross_listed(store, classroom, [])
    store.links["sec-sibling"]["state"] = "deleted"
    apply_event(applier, event(ev_id(2), "sections.deleted", section()))
    assert classroom.roster(ALIAS)["state"] == "ARCHIVED"

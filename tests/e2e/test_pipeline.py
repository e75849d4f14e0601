"""The core pipeline end to end: Clever simulator → poll_clever → Pub/Sub emulator (ordered push)
→ apply_roster_event → Classroom simulator, with state in the Firestore emulator."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import World

pytestmark = pytest.mark.e2e


def alias(section_id: str) -> str:
    return f"d:clever-{section_id}"


def writes(classroom) -> int:
    return sum(n for method, n in classroom.calls.items() if not method.endswith((".get", ".list")))


@pytest.fixture
def algebra(world: World):
    """A section with a primary teacher, a co-teacher and four students, bootstrapped."""
    teacher = world.person("teacher", "Ann", "Smith")
    co_teacher = world.person("teacher", "Cat", "Lee")
    students = [world.person("student", f"Kid{i}", "Student") for i in range(4)]
    section = world.clever.add_section(
        "Algebra I - Smith - Period 3", teacher, students=students, teachers=[teacher, co_teacher], period="3"
    )
    result = world.stack.poll_and_wait()
    assert result["bootstrapped"] and result["published"] == 1
    return section, teacher, co_teacher, students


def test_new_section_becomes_one_provisioned_course_owned_by_the_primary_teacher(world: World, algebra):
    section, teacher, co_teacher, students = algebra
    roster = world.classroom.roster(alias(section))
    assert roster["state"] == "PROVISIONED"
    assert roster["name"] == "Algebra I - Smith - Period 3"
    assert roster["owner"] == world.email(teacher)
    assert roster["teachers"] == world.emails(teacher, co_teacher)
    assert roster["students"] == world.emails(*students)
    assert len(world.classroom.courses()) == 1
    link = world.link(section)
    assert link["state"] == "active" and link["alias"] == alias(section)
    assert link["course_id"] == world.classroom.course(alias(section))["id"]
    assert link["name_set"] == "Algebra I - Smith - Period 3" and link["owner_email"] == world.email(teacher)
    assert {m["email"] for m in link["members"].values() if m["status"] == "active"} == world.emails(
        teacher, co_teacher, *students
    )


def test_enrollment_changes_in_clever_become_the_same_changes_in_classroom(world: World, algebra):
    section, teacher, co_teacher, students = algebra
    newcomer = world.person("student", "New", "Kid")
    second_co = world.person("teacher", "Dan", "Ray")
    world.clever.add_student(section, newcomer)
    world.clever.remove_student(section, students[0])
    world.clever.add_teacher(section, second_co)
    world.clever.remove_teacher(section, co_teacher)
    world.classroom.reset_counters()
    result = world.stack.poll_and_wait()
    assert result["changes"] == 4 and result["published"] == 1  # one message for the section's changes
    roster = world.classroom.roster(alias(section))
    assert roster["students"] == world.emails(newcomer, *students[1:])
    assert roster["teachers"] == world.emails(teacher, second_co)
    assert writes(world.classroom) == 4  # one Classroom call per applied change


def test_new_section_and_primary_teacher_change_after_the_bootstrap(world: World, algebra):
    section, teacher, co_teacher, students = algebra
    other_teacher = world.person("teacher", "Eve", "Park")
    biology = world.clever.add_section("Biology - Park - Period 1", other_teacher, students=students[:2])
    world.clever.set_primary_teacher(section, co_teacher)
    world.clever.rename_section(section, "Algebra I - Lee - Period 3")
    world.stack.poll_and_wait()
    bio = world.classroom.roster(alias(biology))
    assert bio["owner"] == world.email(other_teacher) and bio["students"] == world.emails(*students[:2])
    algebra_roster = world.classroom.roster(alias(section))
    assert algebra_roster["owner"] == world.email(co_teacher)
    assert world.email(teacher) in algebra_roster["teachers"]  # kept as a co-teacher, as in Clever
    assert algebra_roster["name"] == "Algebra I - Lee - Period 3"


def test_second_bootstrap_and_repeated_poll_make_no_duplicate_and_no_writes(world: World, algebra):
    section, *_ = algebra
    world.classroom.reset_counters()
    idle = world.stack.poll_and_wait()
    assert idle["published"] == 0 and not idle["bootstrapped"]
    assert sum(world.classroom.calls.values()) == 0
    # Forget the cursor: the next poll reads the whole district again.
    world.db().collection("sync_state").document("clever").delete()
    again = world.stack.poll_and_wait()
    assert again["bootstrapped"] and again["published"] == 1
    assert writes(world.classroom) == 0
    assert len(world.classroom.courses()) == 1
    # Even with the link lost (a crash before it was saved), the alias prevents a duplicate.
    world.db().collection("sections").document(section).delete()
    world.db().collection("sync_state").document("clever").delete()
    world.stack.poll_and_wait()
    assert len(world.classroom.courses()) == 1
    assert world.link(section)["course_id"] == world.classroom.course(alias(section))["id"]


def test_student_without_google_account_is_a_problem_and_the_rest_of_the_section_syncs(world: World):
    teacher = world.person("teacher", "Ann", "Smith")
    present = [world.person("student", f"Kid{i}", "Here") for i in range(3)]
    missing = world.person("student", "Ghost", "Kid", google=False)
    no_email = world.person("student", "Blank", "Kid", email=None)
    section = world.clever.add_section("Art - Smith - Period 2", teacher, students=[*present, missing, no_email])
    world.stack.poll_and_wait()
    assert world.classroom.roster(alias(section))["students"] == world.emails(*present)
    problems = {p["clever_id"]: p for p in world.open_problems()}
    assert problems[missing]["kind"] == "user_not_in_google"
    assert problems[missing]["reason"] == "@CannotDirectAddUser"
    assert problems[missing]["email"] == world.email(missing)
    assert problems[no_email]["kind"] == "user_without_email"
    assert world.link(section)["members"][missing]["status"] == "problem"


def test_primary_teacher_without_google_account_leaves_no_half_made_course(world: World):
    teacher = world.person("teacher", "Nobody", "Here", google=False)
    students = [world.person("student", f"Kid{i}", "Waiting") for i in range(3)]
    section = world.clever.add_section("History - Here - Period 5", teacher, students=students)
    fine_teacher = world.person("teacher", "Ann", "Smith")
    fine = world.clever.add_section("Math - Smith - Period 1", fine_teacher, students=students)
    world.stack.poll_and_wait()
    assert world.classroom.course(alias(section)) is None
    assert [c["name"] for c in world.classroom.courses()] == ["Math - Smith - Period 1"]
    assert world.classroom.roster(alias(fine))["students"] == world.emails(*students)
    [problem] = [p for p in world.open_problems() if p["section_id"] == section]
    assert problem["kind"] in ("owner_not_in_google", "owner_cannot_own")
    assert problem["clever_id"] == teacher
    assert world.link(section)["state"] == "owner_problem"
    assert world.classroom.calls["classroom.courses.students.create"] == 3  # none for the refused section


def test_sample_district_bootstrap_matches_clever_section_by_section(world: World):
    from tests.sims.district import make_district

    district = make_district(world.clever, seed=11, sections=12, students=180, domain="district.example.org")
    for email, first, last in district.google_accounts:
        world.classroom.add_user(email, first, last)
    google = {email for email, _, _ in district.google_accounts}
    world.stack.poll_and_wait(timeout=120)
    for section_id in district.sections:
        section = world.clever.section(section_id)
        primary_email = world.clever.user(section["teacher"]).get("email")
        course = world.classroom.course(alias(section_id))
        if primary_email not in google:
            assert course is None
            continue
        roster = world.classroom.roster(alias(section_id))
        wanted_students = {world.clever.user(s).get("email") for s in section["students"]} & google
        wanted_teachers = {world.clever.user(t).get("email") for t in section["teachers"]} & google
        assert roster["name"] == section["name"]
        assert roster["owner"] == primary_email
        assert roster["students"] == wanted_students
        assert roster["teachers"] == wanted_teachers
    unmatched = {p["clever_id"] for p in world.open_problems()}
    assert set(district.students_without_google) <= unmatched
    assert set(district.users_without_email) <= unmatched


def test_deleted_section_archives_its_course_and_keeps_its_students(world: World, algebra):
    section, _, _, students = algebra
    world.clever.delete_section(section)
    world.stack.poll_and_wait()
    roster = world.classroom.roster(alias(section))
    assert roster["state"] == "ARCHIVED"
    assert roster["students"] == world.emails(*students)
    assert world.link(section)["state"] == "deleted"


def test_a_malformed_message_is_recorded_and_does_not_block_its_section(world: World, algebra):
    from google.cloud import pubsub_v1

    from tests.sims.stack import _temporary_env

    section, *_ = algebra
    with _temporary_env(PUBSUB_EMULATOR_HOST=world.stack.pubsub.host):
        publisher = pubsub_v1.PublisherClient(
            publisher_options=pubsub_v1.types.PublisherOptions(enable_message_ordering=True)
        )
    topic = publisher.topic_path(world.stack.project, world.stack.topic)
    publisher.publish(topic, b"{not json", ordering_key=section, section_id=section).result(timeout=30)
    newcomer = world.person("student", "Late", "Kid")
    world.clever.add_student(section, newcomer)
    world.stack.published_total += 1
    world.stack.poll_and_wait()
    assert world.email(newcomer) in world.classroom.roster(alias(section))["students"]
    [bad] = [p for p in world.open_problems() if p["kind"] == "bad_message"]
    assert bad["section_id"] == section and "not JSON" in bad["message"]


def test_a_changed_email_in_clever_moves_the_membership_to_the_new_account(world: World, algebra):
    section, _, _, students = algebra
    old = world.email(students[0])
    new = "kid0.renamed@district.example.org"
    world.classroom.add_user(new, "Kid0", "Renamed")
    world.clever.update_user(students[0], email=new)
    world.stack.poll_and_wait()
    roster = world.classroom.roster(alias(section))
    assert new in roster["students"] and old not in roster["students"]
    assert world.link(section)["members"][students[0]]["email"] == new


def test_a_fixed_email_adds_a_student_who_had_no_google_account(world: World, algebra):
    section, *_ = algebra
    pending = world.person("student", "Typo", "Kid", email="tpyo.kid@district.example.org", google=False)
    world.clever.add_student(section, pending)
    world.stack.poll_and_wait()
    assert [p["kind"] for p in world.open_problems() if p["clever_id"] == pending] == ["user_not_in_google"]
    world.classroom.add_user("typo.kid@district.example.org", "Typo", "Kid")
    world.clever.update_user(pending, email="typo.kid@district.example.org")
    world.stack.poll_and_wait()
    assert "typo.kid@district.example.org" in world.classroom.roster(alias(section))["students"]
    assert not [p for p in world.open_problems() if p["clever_id"] == pending]

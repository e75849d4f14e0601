"""Teachers keep control: what a teacher does by hand in Classroom stays, end to end through the
emulators, the functions (poll_clever, apply_roster_event, reconcile_courses) and the simulators."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import requests

from tests.e2e.conftest import World
from tests.sims.stack import DEFAULT_SOURCE_DIR, FunctionServer

pytestmark = pytest.mark.e2e


def alias(section_id: str) -> str:
    return f"d:clever-{section_id}"


def admin_command(world: World, *args: str) -> subprocess.CompletedProcess:
    """`python -m rostersync ...` with the functions' configuration (emulators and simulators)."""
    return subprocess.run(
        [sys.executable, "-m", "rostersync", *args],
        cwd=DEFAULT_SOURCE_DIR,
        env={**os.environ, **world.stack.env},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def reconcile(world: World):
    server = FunctionServer("reconcile_courses", "http", env=world.stack.env).start()

    def run(section_id: str | None = None) -> dict:
        resp = requests.post(server.url, json={"section_id": section_id} if section_id else {}, timeout=120)
        assert resp.status_code == 200, resp.text
        return resp.json()

    yield run
    server.stop()


@pytest.fixture
def biology(world: World):
    teacher = world.person("teacher", "Ann", "Smith")
    students = [world.person("student", f"Kid{i}", "Bio") for i in range(4)]
    section = world.clever.add_section("Biology - Smith - Period 2", teacher, students=students)
    world.stack.poll_and_wait()
    return section, teacher, students


def overrides(world: World, section_id: str) -> dict[str, dict]:
    docs = world.db().collection("overrides").stream()
    return {
        d.to_dict()["kind"] + ":" + (d.to_dict().get("email") or ""): d.to_dict()
        for d in docs
        if d.to_dict()["section_id"] == section_id
    }


def test_courses_we_did_not_create_are_never_touched(world: World):
    teacher = world.person("teacher", "Ann", "Smith")
    students = [world.person("student", f"Kid{i}", "Own") for i in range(2)]
    own = world.classroom.teacher_create_course(world.email(teacher), "Chemistry - Smith - Period 4")
    world.clever.add_section("Chemistry - Smith - Period 4", teacher, students=students)
    world.stack.poll_and_wait()
    mine = world.classroom.roster(own)
    assert mine["students"] == set() and mine["name"] == "Chemistry - Smith - Period 4"
    assert len(world.classroom.courses()) == 2


def test_renames_persist_after_a_teacher_renamed_the_course(world: World, biology, reconcile):
    section, _, _ = biology
    course_id = world.classroom.course(alias(section))["id"]
    world.classroom.teacher_rename(course_id, "AP Bio with Ms. Smith")
    result = reconcile(section)
    assert result["overrides"] == 1
    assert world.link(section)["name_override"] == "AP Bio with Ms. Smith"
    world.clever.rename_section(section, "Biology - Smith - Period 3")
    world.stack.poll_and_wait()
    assert world.classroom.roster(course_id)["name"] == "AP Bio with Ms. Smith"
    assert "name:" in overrides(world, section)


def test_rename_is_not_applied_over_a_teacher_rename_even_before_any_reconcile(world: World, biology):
    section, _, _ = biology
    course_id = world.classroom.course(alias(section))["id"]
    world.classroom.teacher_rename(course_id, "Bio (my class)")
    world.clever.rename_section(section, "Biology - Smith - Period 5")
    world.stack.poll_and_wait()
    assert world.classroom.roster(course_id)["name"] == "Bio (my class)"
    assert world.link(section)["name_override"] == "Bio (my class)"


def test_manual_roster_changes_persist_and_are_not_written_back(world: World, biology, reconcile):
    section, _, students = biology
    course_id = world.classroom.course(alias(section))["id"]
    guest = world.person("student", "Guest", "Kid")
    world.classroom.teacher_remove_student(course_id, world.email(students[0]))
    world.classroom.teacher_add_student(course_id, world.email(guest))
    reconcile(section)
    seen = overrides(world, section)
    assert seen[f"member_removed_by_teacher:{world.email(students[0])}"]["role"] == "student"
    assert f"member_added_by_teacher:{world.email(guest)}" in seen
    assert world.link(section)["members"][students[0]]["status"] == "removed_by_teacher"
    # A full re-read of Clever (same enrollment) does not re-add the removed student...
    world.db().collection("sync_state").document("clever").delete()
    world.stack.poll_and_wait()
    reconcile(section)
    roster = world.classroom.roster(course_id)
    assert world.email(students[0]) not in roster["students"]
    assert world.email(guest) in roster["students"]
    # ...and nothing was written back to Clever.
    assert students[0] in world.clever.section(section)["students"]
    assert guest not in world.clever.section(section)["students"]
    # When Clever ends the enrollment and starts it again, the new enrollment applies.
    world.clever.remove_student(section, students[0])
    world.clever.add_student(section, students[0])
    world.stack.poll_and_wait()
    assert world.email(students[0]) in world.classroom.roster(course_id)["students"]


def test_declined_course_is_respected_until_reoffered(world: World, biology, reconcile):
    section, _, _ = biology
    course_id = world.classroom.course(alias(section))["id"]
    world.classroom.teacher_decline(course_id)
    reconcile(section)
    assert world.link(section)["state"] == "declined"
    late = world.person("student", "Late", "Kid")
    world.clever.add_student(section, late)
    world.stack.poll_and_wait()
    assert world.email(late) not in world.classroom.roster(course_id)["students"]
    assert len(world.classroom.courses()) == 1  # no new course either
    # An administrator re-offers it: PROVISIONED again, and caught up with Clever.
    done = admin_command(world, "reoffer", section)
    assert done.returncode == 0, done.stderr
    roster = world.classroom.roster(course_id)
    assert roster["state"] == "PROVISIONED" and world.email(late) in roster["students"]
    assert world.link(section)["state"] == "active"
    again = admin_command(world, "reoffer", section)
    assert again.returncode == 1 and "not declined" in again.stderr


def test_accepted_course_keeps_syncing(world: World, biology):
    section, _, _ = biology
    course_id = world.classroom.course(alias(section))["id"]
    world.classroom.teacher_accept(course_id)
    late = world.person("student", "Late", "Kid")
    world.clever.add_student(section, late)
    world.stack.poll_and_wait()
    roster = world.classroom.roster(course_id)
    assert roster["state"] == "ACTIVE" and world.email(late) in roster["students"]


def test_reconcile_adds_a_pending_student_once_their_account_exists(world: World, biology, reconcile):
    section, _, _ = biology
    pending = world.person("student", "Pending", "Kid", google=False)
    world.clever.add_student(section, pending)
    world.stack.poll_and_wait()
    [problem] = [p for p in world.open_problems() if p["clever_id"] == pending]
    assert problem["kind"] == "user_not_in_google"
    world.classroom.add_user(world.email(pending), "Pending", "Kid")
    reconcile()  # the scheduled pass over every linked course
    assert world.email(pending) in world.classroom.roster(alias(section))["students"]
    assert not [p for p in world.open_problems() if p["clever_id"] == pending]

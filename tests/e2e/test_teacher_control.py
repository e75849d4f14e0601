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


def all_rules_in_random_order(world: World, checkpoint, finish) -> None:
    """Clever changes and teachers' changes interleaved at random on one district; checkpoint(step)
    runs after every step (polls, reconcile passes...), finish() at the end. Then every course must
    be what the rules say: Clever's roster, minus what a teacher removed (unless Clever restarted
    that enrollment), plus what a teacher added, named by the teacher if they renamed it, owned by
    Clever's primary teacher."""
    import random

    rng = random.Random(20261128)
    teachers = [world.person("teacher", f"T{i}", "Teach") for i in range(6)]
    pool = [world.person("student", f"S{i}", "Pool") for i in range(40)]
    guests = [world.person("student", f"G{i}", "Guest") for i in range(6)]  # never in Clever's sections
    sections = [world.clever.add_section(f"Class {i}", teachers[i], students=pool[i * 5 : i * 5 + 5]) for i in range(4)]
    world.stack.poll_and_wait()
    course = {s: world.classroom.course(alias(s))["id"] for s in sections}
    teacher_name: dict[str, str] = {}
    removed_by_teacher: dict[str, set[str]] = {s: set() for s in sections}
    added_by_teacher: dict[str, set[str]] = {s: set() for s in sections}

    def clever_students(s):
        return set(world.clever.section(s)["students"])

    for step in range(48):
        s = rng.choice(sections)
        action = rng.choice(["add", "add", "remove", "remove", "t_remove", "t_add", "t_rename", "c_rename", "primary"])
        if action == "add":
            candidates = [p for p in pool if p not in clever_students(s)]
            world.clever.add_student(s, rng.choice(candidates))
        elif action == "remove" and clever_students(s):
            gone = rng.choice(sorted(clever_students(s)))
            world.clever.remove_student(s, gone)
            removed_by_teacher[s].discard(gone)  # the enrollment ended: a new one would apply
        elif action == "t_remove":
            ours = clever_students(s) & set(world.link(s)["members"]) - removed_by_teacher[s]
            present = {p for p in ours if world.email(p) in world.classroom.roster(course[s])["students"]}
            if present:
                victim = rng.choice(sorted(present))
                world.classroom.teacher_remove_student(course[s], world.email(victim))
                removed_by_teacher[s].add(victim)
        elif action == "t_add":
            guest = rng.choice(guests)
            if world.email(guest) not in world.classroom.roster(course[s])["students"]:
                world.classroom.teacher_add_student(course[s], world.email(guest))
                added_by_teacher[s].add(guest)
        elif action == "t_rename":
            teacher_name[s] = f"My class {step}"
            world.classroom.teacher_rename(course[s], teacher_name[s])
        elif action == "c_rename":
            world.clever.rename_section(s, f"Class {sections.index(s)} - v{step}")
        elif action == "primary":
            world.clever.set_primary_teacher(
                s, rng.choice([t for t in teachers if t != world.clever.section(s)["teacher"]])
            )
        checkpoint(step)
    finish()
    # The seed exercises every kind of teacher change at least once.
    assert any(removed_by_teacher.values()) and any(added_by_teacher.values()) and teacher_name

    for s in sections:
        section = world.clever.section(s)
        roster = world.classroom.roster(course[s])
        expected = (set(section["students"]) - removed_by_teacher[s]) | added_by_teacher[s]
        assert roster["students"] == world.emails(*expected), f"students of {section['name']}"
        assert roster["owner"] == world.email(section["teacher"])
        assert roster["teachers"] == world.emails(*section["teachers"])
        assert roster["name"] == teacher_name.get(s, section["name"])
    assert len(world.classroom.courses()) == len(sections)


def test_all_rules_together_on_one_district_in_random_order(world: World, reconcile):
    """Teachers' changes seen by the reconcile pass (rule 5a): polls every 6 steps, a pass every 16."""

    def checkpoint(step: int) -> None:
        if step % 6 == 5:
            world.stack.poll_and_wait()
        if step % 16 == 15:
            reconcile()

    def finish() -> None:
        world.stack.poll_and_wait()
        reconcile()
        world.stack.poll_and_wait()

    all_rules_in_random_order(world, checkpoint, finish)


def test_a_section_whose_term_ended_has_its_course_archived_with_everyone_in_it(world: World, reconcile):
    import datetime as dt

    today = dt.date.today()
    old_term = world.clever.add_term(
        "Fall", (today - dt.timedelta(days=150)).isoformat(), (today - dt.timedelta(days=30)).isoformat()
    )
    fresh_term = world.clever.add_term(
        "Spring", (today - dt.timedelta(days=20)).isoformat(), (today + dt.timedelta(days=100)).isoformat()
    )
    recent_term = world.clever.add_term(
        "Winter", (today - dt.timedelta(days=60)).isoformat(), (today - dt.timedelta(days=3)).isoformat()
    )
    teacher = world.person("teacher", "Ann", "Smith")
    kids = [world.person("student", f"Kid{i}", "Term") for i in range(3)]
    ended = world.clever.add_section("Fall Art", teacher, students=kids, term_id=old_term)
    current = world.clever.add_section("Spring Art", teacher, students=kids, term_id=fresh_term)
    grace = world.clever.add_section("Winter Art", teacher, students=kids, term_id=recent_term)
    world.stack.poll_and_wait()
    reconcile()
    archived = world.classroom.roster(alias(ended))
    assert archived["state"] == "ARCHIVED" and archived["students"] == world.emails(*kids)
    assert world.link(ended)["state"] == "archived"
    assert "term_ended:" in overrides(world, ended)
    assert world.classroom.roster(alias(current))["state"] == "PROVISIONED"
    assert world.classroom.roster(alias(grace))["state"] == "PROVISIONED"  # within the 14 days' grace

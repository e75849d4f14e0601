"""The administrator's commands end to end: `python -m rostersync ...` as a subprocess against the
emulators and simulators, over a small district synced by the real functions, with a problem (a
student without a Google account) and an override (a teacher's rename, found by `resync`)."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys

import pytest

from tests.e2e.conftest import World
from tests.sims.stack import DEFAULT_SOURCE_DIR

pytestmark = pytest.mark.e2e


def rostersync(world: World | None, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rostersync", *args],
        cwd=DEFAULT_SOURCE_DIR,
        env=env if env is not None else {**os.environ, **world.stack.env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def ok(world: World, *args: str) -> str:
    result = rostersync(world, *args)
    assert result.returncode == 0, f"{args}: {result.returncode}\n{result.stderr}"
    assert "Traceback" not in result.stderr
    return result.stdout


@pytest.fixture
def district(world: World):
    """Biology (3 students, one without Google) and Chemistry (2 students), synced."""
    ann = world.person("teacher", "Ann", "Smith")
    bob = world.person("teacher", "Bob", "Jones")
    kids = [world.person("student", f"Kid{i}", "Cli") for i in range(2)]
    ghost = world.person("student", "Ghost", "Kid", google=False)
    biology = world.clever.add_section("Biology - Smith", ann, students=[*kids, ghost])
    chemistry = world.clever.add_section("Chemistry - Jones", bob, students=kids)
    world.stack.poll_and_wait()
    return {"biology": biology, "chemistry": chemistry, "ann": ann, "kids": kids, "ghost": ghost}


def test_status_sections_section_problems_overrides_and_why(world: World, district):
    biology, ghost = district["biology"], district["ghost"]
    ghost_email = world.email(ghost)
    course = world.classroom.course(f"d:clever-{biology}")

    # A teacher renames the course; resync (the reconcile pass, in-process) records the override.
    world.classroom.teacher_rename(course["id"], "AP Bio with Ms. Smith")
    out = ok(world, "resync", biology)
    assert f"section {biology} reconciled: 1 overrides found" in out
    resync_json = json.loads(ok(world, "resync", biology, "--json"))
    assert resync_json["sections"] == 1 and resync_json["overrides"] == 0
    assert "2 sections reconciled: 0 overrides found" in ok(world, "resync", "--all")
    neither = rostersync(world, "resync")
    assert neither.returncode == 1 and neither.stderr.strip() == "error: give a section id or --all"

    status = ok(world, "status")
    assert "sections         2 (active 2)" in status
    assert "open problems    1" in status and "overrides        1" in status
    assert "held batches     0" in status and "dead letters     0 not replayed" in status
    assert "sync             running" in status and "last poll" in status and ": ok (" in status
    st = json.loads(ok(world, "status", "--json"))
    assert st["cursor"]["last_event_id"] and st["cursor"]["bootstrapped_at"]
    assert st["last_poll"]["outcome"] == "ok" and st["sections"]["by_state"]["active"] == 2
    assert (st["open_problems"], st["overrides"], st["held_batches"], st["paused"]) == (1, 1, 0, False)

    listing = ok(world, "sections")
    assert listing.splitlines()[0].split() == ["SECTION_ID", "STATE", "COURSE_ID", "OWNER_EMAIL", "NAME"]
    assert biology in listing and district["chemistry"] in listing and "AP Bio with Ms. Smith" in listing
    assert {s["section_id"] for s in json.loads(ok(world, "sections", "--json"))} == {biology, district["chemistry"]}
    assert ok(world, "sections", "--state", "declined").strip() == "no sections"

    detail = ok(world, "section", biology)
    assert course["alternateLink"] in detail  # the Classroom link, as Classroom (the simulator) builds it
    assert f"course_id        {course['id']}" in detail and f"d:clever-{biology}" in detail
    assert "name override    AP Bio with Ms. Smith" in detail
    assert "members          active 3, problem 1" in detail and ghost_email in detail
    assert "user_not_in_google" in detail and "name:" in detail
    d = json.loads(ok(world, "section", biology, "--json"))
    assert d["classroom_link"] == course["alternateLink"] and d["owner_email"] == world.email(district["ann"])
    assert {m["clever_id"] for m in d["members"]["active"]} == {district["ann"], *district["kids"]}
    assert [p["kind"] for p in d["problems"]] == ["user_not_in_google"]
    assert [o["kind"] for o in d["overrides"]] == ["name"]

    problems = ok(world, "problems")
    assert "user_not_in_google" in problems and ghost_email in problems and "CannotDirectAddUser" in problems
    rows = list(csv.DictReader(io.StringIO(ok(world, "problems", "--csv"))))
    assert len(rows) == 1 and rows[0]["section_id"] == biology and rows[0]["email"] == ghost_email
    assert rows[0]["hint"] and rows[0]["reason"] == "'@CannotDirectAddUser"  # quoted: @ starts a formula
    assert json.loads(ok(world, "problems", "--json"))[0]["clever_id"] == ghost

    overrides = ok(world, "overrides")
    assert "name" in overrides and biology in overrides and course["id"] in overrides
    assert json.loads(ok(world, "overrides", "--json"))[0]["kind"] == "name"

    why_course = ok(world, "why", biology)
    assert f"is in Classroom as course {course['id']}" in why_course and "AP Bio with Ms. Smith" in why_course
    assert "Open problem (user_not_in_google)" in why_course
    why_ghost = ok(world, "why", biology, ghost_email)
    assert "could not add them" in why_ghost and "Hint:" in why_ghost
    why_kid = ok(world, "why", biology, district["kids"][0])
    assert "is in the course as a student: rostersync added them" in why_kid
    assert "has no record of" in ok(world, "why", district["chemistry"], ghost)
    why_json = json.loads(ok(world, "why", biology, "--json"))
    assert why_json["why"] == why_course.strip()
    # The audit trail, written by the functions and the reconcile pass into Firestore: the course's
    # creation by a Clever event, the teacher's rename seen by the reconcile pass.
    trail = why_json["audit"]
    assert any(r["kind"].endswith("create_course") and r["outcome"] == "applied" and r["event_id"] for r in trail)
    assert any(r["kind"] == "name" and r["outcome"] == "override_seen" and r["event_id"] == "reconcile" for r in trail)
    assert all(r["section_id"] == biology and r["expire_at"] > r["at"] for r in trail)
    assert "The audit trail (" in why_course and "(problem)" in why_course
    kid_trail = json.loads(ok(world, "why", biology, district["kids"][0], "--json"))["audit"]
    assert kid_trail and all(r["clever_id"] == district["kids"][0] for r in kid_trail)
    assert [r["outcome"] for r in kid_trail if r["kind"].endswith("add_member")] == ["applied"]


def test_pause_stops_polling_and_reconciling_until_resume(world: World, district):
    late = world.person("student", "Late", "Kid")
    world.clever.add_student(district["chemistry"], late)
    assert "sync paused" in ok(world, "pause", "--reason", "testing")
    assert "PAUSED since" in ok(world, "status")
    assert world.stack.poll()["outcome"] == "paused"
    assert world.email(late) not in world.classroom.roster(f"d:clever-{district['chemistry']}")["students"]
    assert "sync resumed" in ok(world, "resume")
    assert world.stack.poll_and_wait()["outcome"] == "ok"
    assert world.email(late) in world.classroom.roster(f"d:clever-{district['chemistry']}")["students"]
    assert json.loads(ok(world, "status", "--json"))["paused"] is False


def publish_section_as_clever_has_it(world: World, section_id: str) -> None:
    """A change reaching the applier while the sync is paused: the section as Clever has it now,
    published as the poller would (the poller itself is paused)."""
    import requests
    from rostersync.domain.changes import encode_message
    from rostersync.domain.sources.clever_events import course_wanted, section_user_ids

    from tests.sims.stack import publish_raw

    answer = requests.get(
        f"{world.clever.base_url}/v3.0/sections/{section_id}",
        headers={"Authorization": f"Bearer {world.clever.token}"},
        timeout=30,
    )
    section = answer.json()["data"]
    emails = {uid: world.email(uid) for uid in section_user_ids(section)}
    change = course_wanted(section, "f" * 24, "", emails)
    attributes = {"section_id": section_id, "event_id": change.event_id, "kind": change.kind.value}
    publish_raw(world.stack.pubsub.host, world.stack.project, world.stack.topic, encode_message([change]), attributes)
    world.stack.published_total += 1


def test_pause_holds_applying_and_resume_publishes_what_was_held(world: World, district):
    chemistry = f"d:clever-{district['chemistry']}"
    late = world.person("student", "Late", "Kid")
    world.clever.add_student(district["chemistry"], late)
    ok(world, "pause")
    publish_section_as_clever_has_it(world, district["chemistry"])
    world.stack.relay.wait_for(world.stack.published_total, timeout=60)  # acknowledged: held, not lost
    assert world.email(late) not in world.classroom.roster(chemistry)["students"]
    (held,) = [d.to_dict() for d in world.db().collection("dead_letters").stream()]
    assert held["held_while_paused"] is True and held["section_id"] == district["chemistry"]
    assert held["replayed"] is False
    resumed = ok(world, "resume")
    assert "publishing 1 held changes" in resumed and "1 published again" in resumed
    world.stack.relay.wait_for(world.stack.published_total + 1, timeout=60)
    assert world.email(late) in world.classroom.roster(chemistry)["students"]
    (held,) = [d.to_dict() for d in world.db().collection("dead_letters").stream()]
    assert held["replayed"] is True


@pytest.mark.parametrize("command", ["section", "why", "resync"])
def test_a_bad_section_id_is_one_line_on_stderr(world: World, command):
    result = rostersync(world, command, "no-such-section")
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip() == ("error: no section 'no-such-section' in Firestore (see: rostersync sections)")


@pytest.mark.parametrize(
    "command", [["status"], ["sections"], ["problems", "--csv"], ["why", "x"], ["pause"], ["plan"]]
)
def test_missing_configuration_is_exit_2_not_a_traceback(command, tmp_path):
    # No project anywhere: not in the environment, and no Application Default Credentials to name one
    # (an empty gcloud configuration, no key file, and no look for a GCE metadata server).
    env = {k: v for k, v in os.environ.items() if k not in ("GOOGLE_CLOUD_PROJECT", "GOOGLE_APPLICATION_CREDENTIALS")}
    env |= {"CLOUDSDK_CONFIG": str(tmp_path), "NO_GCE_CHECK": "true"}
    result = rostersync(None, *command, env=env)
    assert result.returncode == 2
    assert result.stderr.startswith(
        "error: configuration: no project: pass --project, set GOOGLE_CLOUD_PROJECT, or run 'gcloud config set project"
    )
    assert len(result.stderr.strip().splitlines()) == 1


def test_an_unreachable_firestore_is_exit_3_in_seconds():
    env = {**os.environ, "GOOGLE_CLOUD_PROJECT": "rostersync-e2e", "FIRESTORE_EMULATOR_HOST": "127.0.0.1:9"}
    result = rostersync(None, "status", env=env)
    assert result.returncode == 3
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: cannot read Firestore (127.0.0.1:9)")


def _writes(world: World) -> dict:
    """The Classroom simulator's write calls so far, by method."""
    return {
        m: n
        for m, n in world.classroom.calls.items()
        if any(w in m for w in ("create", "patch", "delete", "update", "modify"))
    }


def _firestore(world: World) -> dict:
    db = world.db()
    return {c: {d.id: d.to_dict() for d in db.collection(c).stream()} for c in ("sections", "problems", "audit")}


def test_plan_prints_what_the_sync_would_change_and_writes_nothing(world: World, district):
    biology, chemistry = district["biology"], district["chemistry"]
    course = world.classroom.course(f"d:clever-{biology}")
    newcomer = world.person("student", "New", "Comer")
    # Clever changes that nobody has polled yet, and a teacher's rename the sync must respect.
    world.clever.add_student(chemistry, newcomer)
    world.clever.remove_student(chemistry, district["kids"][1])
    world.clever.rename_section(biology, "Biology II - Smith")
    world.classroom.teacher_rename(course["id"], "Ms. Smith's Bio")
    physics = world.clever.add_section("Physics - Jones", world.person("teacher", "Pat", "Lee"), students=[newcomer])
    writes, stored = _writes(world), _firestore(world)

    out = ok(world, "plan")
    assert "add student" in out and world.email(newcomer) in out
    assert "remove student" in out and world.email(district["kids"][1]) in out
    assert "create course" in out and "'Physics - Jones'" in out
    assert "Biology II" not in out  # the teacher's name stands
    assert "nothing was written" in out
    plan = json.loads(ok(world, "plan", "--json"))
    by_section = {(c["section_id"], c["action"], c["detail"]) for c in plan["changes"]}
    assert (chemistry, "add student", world.email(newcomer)) in by_section
    assert (chemistry, "remove student", world.email(district["kids"][1])) in by_section
    assert any(s == physics and a == "create course" for s, a, _ in by_section)
    assert (physics, "add student", world.email(newcomer)) in by_section
    assert not any(s == biology and a == "rename" for s, a, _ in by_section)
    one = json.loads(ok(world, "plan", "--section", chemistry, "--json"))
    assert {c["section_id"] for c in one["changes"]} == {chemistry} and len(one["changes"]) == 2

    assert _writes(world) == writes, "plan wrote to Classroom"
    assert _firestore(world) == stored, "plan wrote to Firestore"

    bad = rostersync(world, "plan", "--section", "no-such-section")
    assert bad.returncode == 1 and "no section 'no-such-section' in Firestore or in Clever" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_plan_without_the_clever_token_is_exit_2(world: World):
    env = {k: v for k, v in {**os.environ, **world.stack.env}.items() if k != "CLEVER_TOKEN"}
    result = rostersync(None, "plan", env=env)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().startswith("error: configuration: CLEVER_TOKEN is not set")


def test_adopt_links_a_teachers_own_course_keeping_its_name_and_hand_added_members(world: World, district):
    ann, kids = district["ann"], district["kids"]
    own = world.classroom.teacher_create_course(world.email(ann), "Ann's own Botany")
    helper = world.person("student", "Hand", "Added")
    world.classroom.teacher_add_student(own, world.email(helper))
    botany = world.clever.add_section("Botany - Smith", ann, students=kids)  # not polled yet
    writes = _writes(world)

    out = ok(world, "adopt", botany, own)
    assert f"section {botany} now manages the members of course {own}" in out
    roster = world.classroom.roster(own)
    assert world.emails(*kids) <= roster["students"] and world.email(helper) in roster["students"]
    assert world.classroom.course(own)["name"] == "Ann's own Botany"
    assert world.classroom.course(f"d:clever-{botany}") is None  # no second course was made
    assert _writes(world) != writes
    link = world.link(botany)
    assert link["course_id"] == own and link["name_override"] == "Ann's own Botany"
    assert world.email(helper) in link["teacher_added"]

    # From now on the sync manages its members and never its name.
    world.clever.rename_section(botany, "Botany II - Smith")
    world.clever.remove_student(botany, kids[0])
    world.stack.poll_and_wait()
    roster = world.classroom.roster(own)
    assert world.email(kids[0]) not in roster["students"] and world.email(helper) in roster["students"]
    assert world.classroom.course(own)["name"] == "Ann's own Botany"
    assert "adopted" in ok(world, "overrides", "--section", botany)

    def refused(*args: str) -> str:
        result = rostersync(world, "adopt", *args)
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
        return result.stderr.strip()

    assert refused(botany, own) == f"error: course {own} is already linked to section {botany}"
    other = world.classroom.teacher_create_course(world.email(ann), "Another")
    assert refused(botany, other) == (
        f"error: section {botany} is already linked to a course; adopt links new sections only"
    )
    newer = world.clever.add_section("Zoology - Smith", ann, students=kids)
    assert refused(newer, "999999999") == "error: course 999999999 does not exist in Classroom"
    world.classroom.teacher_archive(other)
    assert refused(newer, other) == (
        f"error: course {other} is ARCHIVED; only an active or provisioned course can be adopted"
    )
    assert refused("no-such-section", world.classroom.teacher_create_course(world.email(ann), "X")) == (
        "error: section no-such-section is not in Clever"
    )


def test_link_cross_listed_sections_share_one_course(world: World):
    """`link A B COURSE`: the course holds both sections' members; one section dropping a student
    the other keeps removes nobody; the course keeps its name and owner; a deleted section takes
    only its own students with it and the course stays for the other."""
    ann, bob = world.person("teacher", "Ann", "Cross"), world.person("teacher", "Bob", "Cross")
    kids = [world.person("student", f"Kid{i}", "Cross") for i in range(4)]
    p2 = world.clever.add_section("AP Biology - Period 2", ann, students=kids[:3])
    world.stack.poll_and_wait()
    course = f"d:clever-{p2}"
    p3 = world.clever.add_section("AP Biology - Period 3", bob, students=kids[2:])  # not polled yet

    assert "at least two" in rostersync(world, "link", p2, course).stderr
    refused = rostersync(world, "link", p2, "no-such-section", course)
    assert refused.returncode == 1 and "not in Clever" in refused.stderr
    linked = ok(world, "link", p2, p3, course)
    assert f"{p3}: shares course" in linked
    roster = world.classroom.roster(course)
    assert roster["students"] == world.emails(*kids)
    assert roster["teachers"] == world.emails(ann, bob) and roster["owner"] == world.email(ann)

    world.stack.poll_and_wait()  # p3's creation event: no second course
    assert len(world.classroom.courses()) == 1
    world.clever.remove_student(p2, kids[2])  # still in period 3
    world.clever.rename_section(p2, "AP Bio - P2 renamed")
    world.stack.poll_and_wait()
    roster = world.classroom.roster(course)
    assert world.email(kids[2]) in roster["students"] and roster["name"] == "AP Biology - Period 2"
    world.clever.remove_student(p3, kids[2])  # now in neither
    world.stack.poll_and_wait()
    assert world.email(kids[2]) not in world.classroom.roster(course)["students"]

    world.clever.delete_section(p3)
    world.stack.poll_and_wait()
    roster = world.classroom.roster(course)
    assert roster["state"] != "ARCHIVED" and roster["students"] == world.emails(kids[0], kids[1])
    assert world.email(bob) in roster["teachers"]  # a deleted section's teacher stays a co-teacher
    assert "shares" not in rostersync(world, "link", p3, "no-course-here").stdout


def test_a_cross_listed_section_whose_term_ended_leaves_the_course_to_the_others(world: World):
    import datetime as dt

    today = dt.date.today()
    fall = world.clever.add_term("Fall", str(today - dt.timedelta(days=150)), str(today - dt.timedelta(days=30)))
    year = world.clever.add_term("Year", str(today - dt.timedelta(days=150)), str(today + dt.timedelta(days=150)))
    ann = world.person("teacher", "Ann", "Term")
    kids = [world.person("student", f"Kid{i}", "Term") for i in range(3)]
    fall_section = world.clever.add_section("Chorus - Fall", ann, students=kids[:2], term_id=fall)
    year_section = world.clever.add_section("Chorus - Year", ann, students=kids[1:], term_id=year)
    world.stack.poll_and_wait()
    course = f"d:clever-{fall_section}"
    world.classroom.teacher_archive(world.classroom.course(f"d:clever-{year_section}")["id"])
    ok(world, "resync", year_section)  # its own course archived by hand: the section may move
    ok(world, "link", fall_section, year_section, course)
    assert "the shared course stays" in ok(world, "resync", fall_section)
    roster = world.classroom.roster(course)
    assert roster["state"] != "ARCHIVED" and roster["students"] == world.emails(*kids)
    assert world.link(fall_section)["state"] == "archived" and world.link(year_section)["state"] == "active"

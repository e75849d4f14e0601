"""Issue 12 part B end to end (emulators, functions-framework, simulators): a sync stopped for a
month, Clever refusing `ending_before=last`, next links leading astray, the brake's defaults on a
pilot district, and a section whose primary teacher gets a Google account later. Each ends with
every section compared with Clever."""

from __future__ import annotations

import contextlib
import datetime as dt

import pytest

from tests.e2e.conftest import ADMIN, DOMAIN, PROJECT, World
from tests.sims.classroom_sim import ClassroomSimulator
from tests.sims.clever_sim import CleverSimulator
from tests.sims.stack import LocalStack

pytestmark = pytest.mark.e2e


def alias(section_id: str) -> str:
    return f"d:clever-{section_id}"


def differences(world: World) -> list[str]:
    """Every way a Clever section and its course differ (members without a Google account aside)."""

    def google(user_id: str) -> str | None:
        email = world.clever.user(user_id).get("email")
        return email if email and world.classroom._user(email) is not None else None

    out = []
    for section_id in world.clever.section_ids:
        section = world.clever.section(section_id)
        if world.classroom.course(alias(section_id)) is None:
            out.append(f"{section_id}: no course")
            continue
        roster = world.classroom.roster(alias(section_id))
        wanted = {
            "owner": google(section["teacher"]),
            "name": section["name"],
            "teachers": {e for e in map(google, section["teachers"]) if e},
            "students": {e for e in map(google, section["students"]) if e},
        }
        out += [f"{section_id}: {k} {roster[k]!r} != {v!r}" for k, v in wanted.items() if roster[k] != v]
    return out


def iso(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@contextlib.contextmanager
def feed_world(emulators, start: dt.datetime | None = None, **env: str):
    """conftest's world, with the Clever district's simulated start time and settings of our own."""
    with (
        CleverSimulator(start_time=start) as clever,
        ClassroomSimulator(domain=DOMAIN, admin_email=ADMIN) as classroom,
    ):
        classroom.add_user(ADMIN, "District", "Admin")
        env = {
            "CLEVER_API_BASE": clever.base_url,
            "CLEVER_TOKEN": clever.token,
            "CLASSROOM_API_ENDPOINT": classroom.base_url,
            "ADMIN_SUBJECT": ADMIN,
            "POLL_TIME_BUDGET_SECONDS": "120",
            "CLASSROOM_CALLS_PER_MINUTE": "0",
            "PAUSE_CHECK_SECONDS": "0",
            **env,
        }
        with LocalStack(project=PROJECT, extra_env=env, emulators=emulators) as stack:
            stack.reset()
            yield World(clever, classroom, stack)


@pytest.fixture
def old_world(emulators):
    """A district that started 45 days ago (simulated time), so that a month-long stop can be
    played with the simulator's clock and its 30-day retention."""
    with feed_world(emulators, dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(days=45)) as world:
        yield world


@pytest.fixture
def small_page_world(emulators):
    """Pages of 2 records, so that a poll reads several pages."""
    with feed_world(emulators, CLEVER_PAGE_SIZE="2") as world:
        yield world


def small_district(world: World, sections: int = 3, students: int = 6) -> tuple[list[str], list[str]]:
    kids = [world.person("student", f"Kid{i}", "Feed") for i in range(students * 2)]
    ids = []
    for n in range(sections):
        teacher = world.person("teacher", f"Teach{n}", "Feed")
        ids.append(world.clever.add_section(f"Course {n} - Feed - Period {n}", teacher, students=kids[:students]))
    return ids, kids


def test_a_month_long_stop_is_found_and_every_change_arrives(old_world: World):
    world = old_world
    sections, kids = small_district(world)
    assert world.stack.poll_and_wait()["bootstrapped"]
    state = world.db().collection("sync_state").document("clever")
    # The poller stops: its last look at the feed was at the district's simulated time, 45 days ago.
    then = iso(world.clever.now())
    state.update({"caught_up_at": then, "bootstrapped_at": then})
    world.clever.add_student(sections[0], kids[8])  # changes in the first days of the stop...
    world.clever.remove_student(sections[1], kids[0])
    world.clever.advance_clock(days=44)  # ...dropped from the feed after 30 days
    world.clever.add_student(sections[2], kids[9])  # and a change from yesterday, still kept
    assert [e["data"]["object"]["id"] for e in world.clever.events] == [sections[2]]
    result = world.stack.poll_and_wait()
    assert result["rebootstrapped"] and "more than 28 days ago" in result["rebootstrap_reason"]
    assert differences(world) == []
    assert state.get().to_dict()["last_rebootstrap"]["reason"] == result["rebootstrap_reason"]

    # Kept polling since, but Clever lost the cursor's event anyway (the 404 path): the same remedy.
    world.clever.remove_student(sections[2], kids[1])
    world.clever.advance_clock(days=31)
    assert world.clever.events == []
    result = world.stack.poll_and_wait()
    assert result["rebootstrapped"] and "404" in result["rebootstrap_reason"]
    assert differences(world) == []
    assert not world.stack.poll_and_wait()["rebootstrapped"]  # and no loop of bootstraps


def test_the_bootstrap_works_when_clever_refuses_ending_before_last(world: World):
    world.clever.refuse_ending_before_last("400")  # "empty": tests/adapters/test_clever_feed_client.py
    sections, kids = small_district(world, sections=2)
    world.clever.add_student(sections[0], kids[7])  # events exist: the newest is found by paging
    result = world.stack.poll_and_wait()
    assert result["bootstrapped"] and result["cursor"] == world.clever.events[-1]["id"]
    world.clever.remove_student(sections[1], kids[2])
    assert world.stack.poll_and_wait()["changes"] == 1
    assert differences(world) == []


def test_hostile_next_links_are_never_followed(small_page_world: World):
    world = small_page_world
    sections, kids = small_district(world, sections=3)
    with CleverSimulator(token=world.clever.token) as elsewhere:
        world.clever.hostile_next_links("other_host", elsewhere.base_url)
        world.stack.poll_and_wait()
        world.clever.hostile_next_links("other_scheme")
        for section_id in sections:
            world.clever.add_student(section_id, kids[9])
        assert world.stack.poll_and_wait()["changes"] == 3  # read in 2 pages of our own making
        assert sum(elsewhere.requests.values()) == 0
    assert differences(world) == []
    # A server that answers every page with the first one again, under new URIs: the poll fails
    # at once and says why, instead of looping until its time budget is gone; nothing is lost.
    world.clever.add_student(sections[0], kids[10])
    world.clever.hostile_next_links("repeat")
    before = world.clever.requests["events"]
    with pytest.raises(RuntimeError, match="loops back"):
        world.stack.poll()
    assert world.clever.requests["events"] - before <= 2
    world.clever.hostile_next_links("normal")
    world.stack.poll_and_wait()
    assert differences(world) == []


def test_a_pilot_districts_normal_day_flows_and_an_emptied_school_is_held(world: World):
    north = world.clever.add_school("North High", emit=False)
    south = world.clever.add_school("South High", emit=False)
    sections, members = [], {}
    for n in range(5):  # 5 sections of 1 teacher and 8 students: 45 memberships
        school = north if n < 2 else south
        teacher = world.person("teacher", f"Pilot{n}", "Teacher")
        kids = [world.person("student", f"P{n}Kid{i}", "Pilot") for i in range(8)]
        sections.append(world.clever.add_section(f"Pilot {n} - Teacher - P{n}", teacher, students=kids, school=school))
        members[sections[-1]] = kids
    assert world.stack.poll_and_wait()["bootstrapped"]
    for n, leaving in enumerate([2, 2, 2, 1, 1]):  # a normal day: 8 students leave classes
        for kid in members[sections[n]][:leaving]:
            world.clever.remove_student(sections[n], kid)
    normal = world.stack.poll_and_wait()
    assert normal["held"] == 0 and normal["changes"] == 8
    assert differences(world) == []
    for section_id in sections[:2]:  # the SIS export of North High comes through empty
        world.clever.update_section(section_id, students=[])
    accident = world.stack.poll_and_wait()
    assert accident["held"] == 12 and accident["held_batch"]
    held = [d for d in differences(world) if "students" in d]
    assert len(held) == 2  # North's classes keep their students until an administrator decides


def test_a_course_follows_once_the_primary_teacher_has_an_account(world: World):
    teacher = world.person("teacher", "Late", "Account", google=False)
    kids = [world.person("student", f"Kid{i}", "Waiting") for i in range(4)]
    section = world.clever.add_section("Chemistry - Account - Period 2", teacher, students=kids[:3])
    world.stack.poll_and_wait()
    assert world.classroom.course(alias(section)) is None
    creates = world.classroom.calls["classroom.courses.create"]
    world.classroom.add_user(world.email(teacher), "Late", "Account")  # IT creates the account
    world.clever.add_student(section, kids[3])  # the section's next change in Clever
    world.stack.poll_and_wait()
    assert world.classroom.calls["classroom.courses.create"] == creates + 1
    assert differences(world) == []
    assert not [p for p in world.open_problems() if p["section_id"] == section]


@pytest.fixture
def short_budget_world(emulators):
    """A poll's time budget of 5 seconds (the least POLL_TIME_BUDGET_SECONDS takes) and pages of 2."""
    with feed_world(emulators, POLL_TIME_BUDGET_SECONDS="5", CLEVER_PAGE_SIZE="2") as world:
        yield world


def test_a_bootstrap_longer_than_one_poll_is_continued_not_begun_again(short_budget_world: World):
    """A district whose sections take longer to read than a poll may run (tens of thousands of
    sections, played here by 12 sections, 2 a page, each page taking a second): each poll goes on
    where the last stopped. Begun again each poll, this bootstrap would never end."""
    world = short_budget_world
    sections, kids = small_district(world, sections=12, students=3)
    world.clever.answer_seconds["sections"] = 1.0
    results = []
    for _ in range(8):
        results.append(world.stack.poll_and_wait(timeout=120))
        if results[-1]["bootstrapped"]:
            break
    assert results[-1]["bootstrapped"], results
    assert len(results) >= 2 and results[0]["outcome"] == "partial"  # it did not fit in one poll
    assert sum(r["sections_read"] for r in results) == 12  # every section read once, none again
    assert differences(world) == []
    world.clever.answer_seconds.clear()
    world.clever.add_student(sections[5], kids[5])  # and then the events are followed as usual
    assert world.stack.poll_and_wait()["changes"] == 1
    assert differences(world) == []

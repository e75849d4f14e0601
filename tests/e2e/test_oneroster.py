"""The OneRoster source end to end, for OneRoster 1.1 and 1.2 REST: OneRoster simulator →
poll_oneroster → Pub/Sub emulator (ordered push) → apply_roster_event → Classroom simulator, with
state in the Firestore emulator. The same teacher rules as for Clever apply."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import requests

from tests.e2e.conftest import ADMIN, DOMAIN, PROJECT
from tests.sims.classroom_sim import ClassroomSimulator
from tests.sims.oneroster_sim import OneRosterSimulator
from tests.sims.stack import FunctionServer, LocalStack

pytestmark = pytest.mark.e2e


def alias(class_id: str) -> str:
    return f"d:clever-{class_id}"


@dataclass
class OneRosterWorld:
    oneroster: OneRosterSimulator
    classroom: ClassroomSimulator
    stack: LocalStack
    poller: FunctionServer

    def person(self, sourced_id: str, role: str, google: bool = True) -> str:
        email = f"{sourced_id}@{DOMAIN}"
        self.oneroster.add_user(sourced_id, role, email.upper() if role == "teacher" else email)
        if google:
            self.classroom.add_user(email, sourced_id, role)
        return sourced_id

    def email(self, sourced_id: str) -> str:
        return f"{sourced_id}@{DOMAIN}"

    def emails(self, *ids: str) -> set[str]:
        return {self.email(i) for i in ids}

    def poll(self, full: bool = False) -> dict:
        resp = requests.post(self.poller.url, json={"full": True} if full else {}, timeout=120)
        assert resp.status_code == 200, f"{resp.text}\n{self.poller.log_tail()}"
        result = resp.json()
        self.stack.published_total += result["published"]
        self.stack.relay.wait_for(self.stack.published_total, timeout=60)
        return result


# How rostersync reads the provider: 1.1 with OAuth 2 tokens, 1.1 with signed requests, 1.2. The
# reading tests run on each; the rules scenarios behind them do not depend on it and run on 1.2.
EVERY_WAY_OF_READING = pytest.mark.parametrize("world", ["1.1", "1.1-signed", "1.2"], indirect=True)


@pytest.fixture
def world(request, emulators):
    way = getattr(request, "param", "1.2")
    version, signing = way.removesuffix("-signed"), way.endswith("-signed")
    with (
        OneRosterSimulator(signing=signing) as oneroster,
        ClassroomSimulator(domain=DOMAIN, admin_email=ADMIN) as classroom,
    ):
        classroom.add_user(ADMIN, "District", "Admin")
        oneroster.add_org("org1", "Lincoln High")
        oneroster.add_session("term1", "Fall 2026", "2026-08-20", "2026-12-18")
        oneroster.add_course("course1", "Biology")
        env = {
            "ROSTER_SOURCE": "oneroster",
            "ONEROSTER_API_BASE": oneroster.base_url,
            "ONEROSTER_VERSION": version,
            "ONEROSTER_AUTH": "oauth1" if signing else "oauth2",
            "ONEROSTER_CLIENT_ID": oneroster.client_id,
            "ONEROSTER_CLIENT_SECRET": oneroster.client_secret,
            "ONEROSTER_TOKEN_URL": oneroster.token_url,
            "ONEROSTER_PAGE_SIZE": "3",  # several pages even for a small class
            "CLASSROOM_API_ENDPOINT": classroom.base_url,
            "ADMIN_SUBJECT": ADMIN,
            "POLL_TIME_BUDGET_SECONDS": "120",
            "CLASSROOM_CALLS_PER_MINUTE": "0",
        }
        with LocalStack(project=PROJECT, extra_env=env, emulators=emulators) as stack:
            stack.reset()
            poller = FunctionServer("poll_oneroster", "http", env=stack.env).start()
            try:
                db = stack.firestore_client()
                for doc in db.collection("oneroster_classes").stream():
                    doc.reference.delete()
                db.collection("sync_state").document("oneroster").delete()
                yield OneRosterWorld(oneroster, classroom, stack, poller)
            finally:
                poller.stop()


@pytest.fixture
def biology(world: OneRosterWorld):
    teacher = world.person("ann", "teacher")
    students = [world.person(f"kid{i}", "student") for i in range(4)]
    world.oneroster.add_class("bio1", "Biology - Period 2")
    world.oneroster.enroll("e-ann", "bio1", teacher, "teacher", primary=True)
    for s in students:
        world.oneroster.enroll(f"e-{s}", "bio1", s, "student")
    result = world.poll()
    assert result["full_read"] and result["changes"] == 1
    return "bio1", teacher, students


@EVERY_WAY_OF_READING
def test_a_new_class_becomes_a_provisioned_course_owned_by_the_primary_teacher(world, biology):
    class_id, teacher, students = biology
    roster = world.classroom.roster(alias(class_id))
    assert roster["state"] == "PROVISIONED" and roster["name"] == "Biology - Period 2"
    assert roster["owner"] == world.email(teacher)
    assert roster["students"] == world.emails(*students)
    # A second poll finds nothing new and publishes nothing.
    assert world.poll()["changes"] == 0


@EVERY_WAY_OF_READING
def test_adds_and_removals_by_tobedeleted_and_by_a_missing_record(world, biology):
    class_id, teacher, students = biology
    newcomer = world.person("newkid", "student")
    world.oneroster.enroll("e-newkid", class_id, newcomer, "student")
    world.oneroster.delete("enrollments", f"e-{students[0]}")  # status tobedeleted
    world.oneroster.delete("enrollments", f"e-{students[1]}", silent=True)  # just gone
    delta = world.poll()
    assert not delta["full_read"]
    roster = world.classroom.roster(alias(class_id))
    assert roster["students"] == world.emails(newcomer, *students[1:])  # the silent one is still there
    full = world.poll(full=True)
    assert full["full_read"] and full["changes"] == 1
    assert world.classroom.roster(alias(class_id))["students"] == world.emails(newcomer, *students[2:])


def test_a_class_tobedeleted_archives_its_course(world, biology):
    class_id, _, students = biology
    world.oneroster.delete("classes", class_id)
    world.poll()
    roster = world.classroom.roster(alias(class_id))
    assert roster["state"] == "ARCHIVED" and roster["students"] == world.emails(*students)


def test_teacher_rename_and_teacher_added_student_stay(world, biology):
    class_id, teacher, students = biology
    course_id = world.classroom.course(alias(class_id))["id"]
    guest = world.person("guest", "student")
    world.classroom.teacher_rename(course_id, "Bio (my class)")
    world.classroom.teacher_add_student(course_id, world.email(guest))
    world.oneroster.rename_class(class_id, "Biology - Period 3")
    world.poll()
    world.poll(full=True)
    roster = world.classroom.roster(alias(class_id))
    assert roster["name"] == "Bio (my class)"
    assert roster["students"] == world.emails(guest, *students)


def test_primary_teacher_change_moves_ownership(world, biology):
    class_id, teacher, _ = biology
    other = world.person("eve", "teacher")
    world.oneroster.set_primary("e-ann", False)
    world.oneroster.enroll("e-eve", class_id, other, "teacher", primary=True)
    world.poll()
    roster = world.classroom.roster(alias(class_id))
    assert roster["owner"] == world.email(other)
    assert roster["teachers"] == world.emails(teacher, other)


def test_an_export_that_empties_a_class_is_held_until_approved(world, biology):
    """A full read in which a class lost every enrollment (a SIS export gone wrong) goes through
    the mass-change brake: nothing is removed until an administrator approves the held batch."""
    import os
    import re
    import subprocess
    import sys

    from tests.sims.stack import DEFAULT_SOURCE_DIR

    class_id, _, students = biology
    more = [world.person(f"extra{i}", "student") for i in range(2)]
    for s in more:
        world.oneroster.enroll(f"e-{s}", class_id, s, "student")
    world.poll()
    everyone = [*students, *more]
    assert world.classroom.roster(alias(class_id))["students"] == world.emails(*everyone)
    for s in everyone:
        world.oneroster.delete("enrollments", f"e-{s}", silent=True)
    result = world.poll(full=True)
    assert result["published"] == 0
    assert world.classroom.roster(alias(class_id))["students"] == world.emails(*everyone)  # nobody removed
    (batch,) = [d for d in world.stack.firestore_client().collection("held_batches").stream()]
    assert batch.to_dict()["status"] == "held"

    def rostersync(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "rostersync", *args],
            cwd=DEFAULT_SOURCE_DIR,
            env={**os.environ, **world.stack.env},
            capture_output=True,
            text=True,
            timeout=120,
        )

    assert batch.id in rostersync("held").stdout
    approved = rostersync("approve", batch.id)
    assert approved.returncode == 0, approved.stderr
    world.stack.published_total += int(re.search(r"in (\d+) messages", approved.stdout).group(1))
    world.stack.relay.wait_for(world.stack.published_total, timeout=60)
    assert world.classroom.roster(alias(class_id))["students"] == set()

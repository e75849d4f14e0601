"""Dead letters end to end: a change that always fails ends in Firestore's dead_letters with its
attributes, and the admin command replays it once Classroom is healthy again.

The Pub/Sub emulator does not dead-letter (tests/sims/stack.py says why), so the stack does what
Pub/Sub would after the failed deliveries: it publishes the message to the dead-letter topic, whose
push subscription feeds record_dead_letter under functions-framework.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.e2e.conftest import ADMIN, DOMAIN, PROJECT, World
from tests.sims.classroom_sim import ClassroomSimulator
from tests.sims.clever_sim import CleverSimulator
from tests.sims.stack import DEFAULT_SOURCE_DIR, LocalStack

pytestmark = pytest.mark.e2e

FAILED_ATTEMPTS = 3


@pytest.fixture
def dl_world(emulators):
    with CleverSimulator() as clever, ClassroomSimulator(domain=DOMAIN, admin_email=ADMIN) as classroom:
        classroom.add_user(ADMIN, "District", "Admin")
        env = {
            "CLEVER_API_BASE": clever.base_url,
            "CLEVER_TOKEN": clever.token,
            "CLASSROOM_API_ENDPOINT": classroom.base_url,
            "ADMIN_SUBJECT": ADMIN,
            "POLL_TIME_BUDGET_SECONDS": "120",
            "APPLY_TIME_BUDGET_SECONDS": "1",  # fail fast: Classroom stays down for these tests
        }
        with LocalStack(project=PROJECT, extra_env=env, emulators=emulators, dead_letters=True) as stack:
            stack.reset()
            yield World(clever, classroom, stack)


def wait_for_failures(stack: LocalStack, attempts: int, timeout: float = 60.0) -> str:
    """The id of the first message that failed `attempts` times."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for message_id, state in list(stack.relay.messages.items()):
            if state.attempts >= attempts and not state.acked:
                return message_id
        time.sleep(0.2)
    raise TimeoutError(f"no message failed {attempts} times: {stack.relay.counters()}\n{stack.applier.log_tail()}")


def admin_command(stack: LocalStack, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PUSH_", "PUBSUB_", "FIRESTORE_"))}
    env.update(
        GOOGLE_CLOUD_PROJECT=stack.project,
        PUBSUB_EMULATOR_HOST=stack.pubsub.host,
        FIRESTORE_EMULATOR_HOST=stack.firestore.host,
        ROSTER_EVENTS_TOPIC=stack.topic,
    )
    return subprocess.run(
        [sys.executable, "-m", "rostersync", *args],
        cwd=DEFAULT_SOURCE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_change_that_always_fails_is_dead_lettered_recorded_and_replayed(dl_world: World):
    world, stack = dl_world, dl_world.stack
    teacher = world.person("teacher", "Ann", "Smith")
    students = [world.person("student", f"Kid{i}", "Student") for i in range(2)]
    section = world.clever.add_section("Biology - Smith", teacher, students=students, teachers=[teacher])
    world.classroom.inject_errors(None, 503, 1000)  # Classroom down for good

    assert stack.poll()["published"] == 1
    message_id = wait_for_failures(stack, FAILED_ATTEMPTS)
    assert world.classroom.courses() == []
    source_subscription = stack.subscription
    stack.dead_letter(message_id)

    dead = [(d.id, d.to_dict()) for d in world.db().collection("dead_letters").stream()]
    assert len(dead) == 1
    dead_id, doc = dead[0]
    assert doc["attributes"] == {"section_id": section, "event_id": doc["event_id"], "kind": "course_wanted"}
    assert doc["section_id"] == section and doc["kind"] == "course_wanted" and doc["event_id"]
    assert doc["delivery_attempts"] >= FAILED_ATTEMPTS
    assert doc["dead_letter_attributes"]["CloudPubSubDeadLetterSourceSubscription"] == source_subscription
    assert section in doc["data_text"] and doc["data_base64"]
    assert doc["reason"].startswith("delivery attempts exhausted") and doc["replayed"] is False

    # A redelivered dead letter (the same push again) changes nothing.
    (push_body,) = [m.push_body for m in stack.dead_letter_relay.messages.values()]
    assert push_body["message"]["messageId"] == dead_id
    request = urllib.request.Request(
        stack.recorder.url, data=json.dumps(push_body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200
    assert [d.id for d in world.db().collection("dead_letters").stream()] == [dead_id]

    # Looking is free: a dry run publishes nothing.
    dry = admin_command(stack, "replay-dead-letters", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"{dead_id}: would replay (course_wanted, section={section}" in dry.stdout

    # Classroom is healthy again; the administrator replays.
    world.classroom._faults.clear()
    acked_before = stack.relay.acked
    replay = admin_command(stack, "replay-dead-letters")
    assert replay.returncode == 0, replay.stderr
    assert f"{dead_id}: replayed" in replay.stdout and "1 replayed" in replay.stdout
    stack.relay.wait_for(acked_before + 1, timeout=60)

    roster = world.classroom.roster(f"d:clever-{section}")
    assert roster["owner"] == world.email(teacher)
    assert roster["students"] == world.emails(*students)
    assert len(world.classroom.courses()) == 1
    doc = world.db().collection("dead_letters").document(dead_id).get().to_dict()
    assert doc["replayed"] is True and doc["replayed_at"] and doc["replay_message_id"]

    again = admin_command(stack, "replay-dead-letters")
    assert again.returncode == 0 and "no dead letters to replay" in again.stdout


def test_the_admin_command_says_what_is_missing_instead_of_a_traceback(tmp_path):
    # No project anywhere: not in the environment, not in gcloud's configuration, no credentials
    # (and no metadata server probe: tests use loopback only).
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("GOOGLE_CLOUD_PROJECT", "GOOGLE_APPLICATION_CREDENTIALS", "GCLOUD_PROJECT")
    }
    env.update(CLOUDSDK_CONFIG=str(tmp_path), NO_GCE_CHECK="true")
    result = subprocess.run(
        [sys.executable, "-m", "rostersync.admin.cli", "replay-dead-letters"],
        cwd=DEFAULT_SOURCE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "no project: pass --project, set GOOGLE_CLOUD_PROJECT" in result.stderr and "Traceback" not in result.stderr

"""Rule 5(b) of "Teachers keep control": teachers' changes seen through Classroom push notifications.

End to end: the one-time consent command stores an administrator's grant in (simulated) Secret
Manager; renew_classroom_registration registers the domain's roster feed with it; the Classroom
simulator publishes every join and leave to the emulator's notifications topic, whose push
subscription feeds record_classroom_notification. No reconcile pass runs here: the overrides come
from the notifications alone, and the sync's own writes never become overrides.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import pytest
import requests

from tests.e2e.conftest import ADMIN, PROJECT, World
from tests.sims.secret_manager_sim import SecretManagerSimulator
from tests.sims.stack import (
    DEFAULT_SOURCE_DIR,
    FunctionServer,
    PubSubNotifier,
    PushRelay,
    create_topic_and_push_subscription,
    delete_subscription,
)

pytestmark = pytest.mark.e2e

TOPIC = "classroom-roster-notifications"
SECRET = f"projects/{PROJECT}/secrets/rostersync-classroom-push-grant"
CLIENT_ID, CLIENT_SECRET = "rostersync-admin.apps.googleusercontent.com", "desktop-client-secret"
GRACE_SECONDS = 10  # longer than the applier needs between its Classroom write and its commit, under load


def consent(world: World, secret_manager: SecretManagerSimulator, tmp_path) -> subprocess.CompletedProcess:
    """`rostersync consent-notifications`, with the test playing the administrator's browser."""
    client_file = tmp_path / "client_secret.json"
    client_file.write_text(
        json.dumps(
            {
                "installed": {
                    "client_id": CLIENT_ID,
                    "client_secret": CLIENT_SECRET,
                    "auth_uri": world.classroom.base_url + "o/oauth2/v2/auth",
                    "token_uri": world.classroom.base_url + "token",
                }
            }
        )
    )
    command = subprocess.Popen(
        [
            sys.executable, "-m", "rostersync", "consent-notifications",
            "--client-secrets", str(client_file),
            "--secret", SECRET,
            "--login-hint", ADMIN,
            "--secret-manager-endpoint", secret_manager.base_url,
            "--timeout", "60",
        ],
        cwd=DEFAULT_SOURCE_DIR,
        env={**os.environ, **world.stack.env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        url = ""
        for line in command.stdout:
            if line.startswith("http"):
                url = line.strip()
                break
        assert url.startswith(world.classroom.base_url + "o/oauth2/v2/auth?"), url
        # The browser: Google's consent screen redirects to the command's loopback listener.
        assert requests.get(url, timeout=30).status_code == 200
        out, err = command.communicate(timeout=60)
    finally:
        command.kill()
    return subprocess.CompletedProcess(command.args, command.returncode, out, err)


@pytest.fixture
def notifications(world: World, tmp_path):
    """The notification function behind a counting relay, subscribed to the notifications topic."""
    env = {**world.stack.env, "NOTIFICATION_GRACE_SECONDS": str(GRACE_SECONDS)}
    server = FunctionServer("record_classroom_notification", "cloudevent", env=env).start()
    relay = PushRelay(server.url).start()
    subscription = f"{TOPIC}-push-{uuid.uuid4().hex[:8]}"
    host = world.stack.pubsub.host
    create_topic_and_push_subscription(host, PROJECT, TOPIC, subscription, relay.url, ordering=False)
    notifier = PubSubNotifier(host)
    world.classroom.notifier = notifier
    world.classroom.register_oauth_client(CLIENT_ID, CLIENT_SECRET)
    try:
        yield relay
    finally:
        world.classroom.notifier = None
        delete_subscription(host, PROJECT, subscription)
        notifier.close()
        relay.stop()
        server.stop()


def renewal_env(world: World, secret_manager: SecretManagerSimulator) -> dict[str, str]:
    return {
        **world.stack.env,
        "CLASSROOM_PUSH_GRANT_SECRET": SECRET,
        "SECRET_MANAGER_API_ENDPOINT": secret_manager.base_url,
    }


def settle(world: World, relay: PushRelay) -> None:
    """Every notification published so far has been handled and acknowledged."""
    world.classroom.drain_notifications()
    relay.wait_for(world.classroom.notifications_published, timeout=120)


def overrides(world: World) -> dict[str, dict]:
    return {
        f"{d['kind']}:{d.get('email')}": d for d in (s.to_dict() for s in world.db().collection("overrides").stream())
    }


def test_rule_5b_push_notifications_record_teachers_changes_and_never_our_own(world: World, notifications, tmp_path):
    relay = notifications
    secret_manager = SecretManagerSimulator().__enter__()
    secret_manager.create_secret(SECRET)
    done = consent(world, secret_manager, tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"{SECRET}/versions/1" in done.stdout
    grant = json.loads(secret_manager.latest(SECRET))
    assert grant["type"] == "authorized_user" and grant["client_id"] == CLIENT_ID and grant["refresh_token"]

    # The daily renewal registers the domain's roster feed with the administrator's grant.
    renewal = FunctionServer("renew_classroom_registration", "http", env=renewal_env(world, secret_manager)).start()
    try:
        answer = requests.post(renewal.url, json={}, timeout=60)
        assert answer.status_code == 200, answer.text
        (registration,) = world.classroom.registrations()
        assert answer.json()["registration_id"] == registration["registrationId"]
        assert registration["cloudPubsubTopic"]["topicName"] == f"projects/{PROJECT}/topics/{TOPIC}"
        state = world.db().collection("sync_state").document("classroom_notifications").get().to_dict()
        assert state["registration_id"] == registration["registrationId"]
        assert state["expiry_time"] == registration["expiryTime"] and state["last_error"] is None
        # Renewing again extends the same registration.
        assert (
            requests.post(renewal.url, json={}, timeout=60).json()["registration_id"] == registration["registrationId"]
        )
        assert len(world.classroom.registrations()) == 1
        status = subprocess.run(
            [sys.executable, "-m", "rostersync", "status"],
            cwd=DEFAULT_SOURCE_DIR,
            env={**os.environ, **world.stack.env},
            capture_output=True,
            text=True,
            timeout=120,
        )
        current = world.classroom.registrations()[0]["expiryTime"]  # extended by the second renewal
        assert f"registered until {current}" in status.stdout, status.stdout + status.stderr
    finally:
        renewal.stop()
        secret_manager.__exit__()

    # The sync's own writes (course, owner, students) are notified too, and are recognised as ours.
    teacher = world.person("teacher", "Ann", "Smith")
    kids = [world.person("student", f"Kid{i}", "Push") for i in range(3)]
    extra = world.person("student", "Hand", "Added")
    section = world.clever.add_section("Chemistry - Smith - Period 4", teacher, students=kids)
    world.stack.poll_and_wait()
    settle(world, relay)
    assert world.classroom.notifications_published >= 4  # the owner joining and three students
    assert overrides(world) == {}

    # A teacher adds a student and removes one of ours, in Classroom only.
    course_id = world.link(section)["course_id"]
    world.classroom.teacher_add_student(course_id, world.email(extra))
    world.classroom.teacher_remove_student(course_id, world.email(kids[0]))
    settle(world, relay)
    found = overrides(world)
    assert set(found) == {
        f"member_added_by_teacher:{world.email(extra)}",
        f"member_removed_by_teacher:{world.email(kids[0])}",
    }
    assert all(o["section_id"] == section and o["course_id"] == course_id for o in found.values())
    link = world.link(section)
    assert link["members"][kids[0]]["status"] == "removed_by_teacher"
    assert link["teacher_added"] == [world.email(extra)]

    # The overrides hold: the next Clever change to the section re-adds nobody the teacher removed.
    newcomer = world.person("student", "New", "Comer")
    world.clever.add_student(section, newcomer)
    world.stack.poll_and_wait()
    settle(world, relay)
    roster = world.classroom.roster(course_id)
    assert world.email(newcomer) in roster["students"]
    assert world.email(kids[0]) not in roster["students"]
    assert world.email(extra) in roster["students"]
    assert set(overrides(world)) == set(found)  # the newcomer, added by the sync, is no override


def test_renewal_without_a_grant_or_with_a_revoked_one_is_reported(world: World, notifications):
    with SecretManagerSimulator() as secret_manager:
        secret_manager.create_secret(SECRET)
        server = FunctionServer("renew_classroom_registration", "http", env=renewal_env(world, secret_manager)).start()
        try:
            # before the consent: the secret has no version
            answer = requests.post(server.url, json={}, timeout=60)
            assert answer.status_code == 500 and "consent-notifications" in answer.json()["error"]
            revoked = {
                "type": "authorized_user",
                "client_id": CLIENT_ID,
                "client_secret": CLIENT_SECRET,
                "refresh_token": "1//revoked",
                "token_uri": world.classroom.base_url + "token",
            }
            secret_manager.secrets[SECRET].append(json.dumps(revoked).encode())
            answer = requests.post(server.url, json={}, timeout=60)
            assert answer.status_code == 503
        finally:
            server.stop()
    state = world.db().collection("sync_state").document("classroom_notifications").get().to_dict()
    assert "invalid_grant" in state["last_error"]
    assert world.classroom.registrations() == []


def test_a_malformed_notification_is_recorded_and_acknowledged(world: World, notifications):
    from tests.sims.stack import publish_raw

    relay = notifications
    publish_raw(world.stack.pubsub.host, PROJECT, TOPIC, b'{"collection": "courses.students"}', {})
    relay.wait_for(1, timeout=60)
    problems = [p for p in world.open_problems() if p["kind"] == "bad_notification"]
    assert len(problems) == 1
    assert "eventType" in problems[0]["message"] and problems[0]["hint"]


def test_all_rules_together_with_push_notifications_and_no_reconcile_pass(world: World, notifications, tmp_path):
    """The random all-rules district of test_teacher_control, with teachers' changes seen only
    through push notifications (rule 5b): no reconcile pass runs at all."""
    from tests.e2e.test_teacher_control import all_rules_in_random_order

    relay = notifications
    with SecretManagerSimulator() as secret_manager:
        secret_manager.create_secret(SECRET)
        assert consent(world, secret_manager, tmp_path).returncode == 0
        renewal = FunctionServer("renew_classroom_registration", "http", env=renewal_env(world, secret_manager))
        renewal.start()
        try:
            assert requests.post(renewal.url, json={}, timeout=60).status_code == 200
        finally:
            renewal.stop()

    def checkpoint(step: int) -> None:
        if step % 6 == 5:
            settle(world, relay)  # the teachers' changes are overrides before Clever's next changes apply
            world.stack.poll_and_wait()

    def finish() -> None:
        settle(world, relay)
        world.stack.poll_and_wait()
        settle(world, relay)

    all_rules_in_random_order(world, checkpoint, finish)
    kinds = {o["kind"] for o in overrides(world).values()}
    assert {"member_removed_by_teacher", "member_added_by_teacher"} <= kinds

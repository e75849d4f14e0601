"""The functions' output as Cloud Logging reads it: every line one JSON entry with a valid severity,
outcomes as fields, one request's lines under its execution id, an exception one entry with its
traceback (rostersync/logs.py)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest
from rostersync.logs import LABELS, SEVERITIES, SOURCE_LOCATION

from tests.e2e.conftest import PROJECT, World
from tests.sims.clever_sim import CleverSimulator
from tests.sims.stack import FunctionServer

pytestmark = pytest.mark.e2e


def structured_entries(server: FunctionServer) -> list[dict]:
    """Every line the function's process wrote (stdout and stderr), each parsed as a JSON entry."""
    lines = server.log_path.read_text().splitlines()
    assert lines[0].startswith("$ ")  # the command line our process runner writes first
    entries = []
    for line in lines[1:]:
        try:
            entry = json.loads(line)
        except ValueError:
            pytest.fail(f"{server.name} wrote a line that is not JSON: {line!r}")
        assert isinstance(entry, dict), line
        assert entry.get("severity") in SEVERITIES, line
        assert isinstance(entry.get("message"), str) and entry.get(SOURCE_LOCATION), line
        entries.append(entry)
    return entries


def post(url: str, headers: dict[str, str]) -> int:
    request = urllib.request.Request(url, data=b"{}", headers={"Content-Type": "application/json", **headers})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_every_line_of_the_poller_and_the_applier_is_a_structured_entry(world: World):
    teacher = world.person("teacher", "Ann", "Smith")
    students = [world.person("student", f"Kid{i}", "Student") for i in range(3)]
    section = world.clever.add_section("Algebra I", teacher, students=students)
    world.stack.poll_and_wait()
    world.clever.add_student(section, world.person("student", "New", "Kid"))
    # A second poll as Cloud Functions calls it: the platform's execution id on the request.
    assert post(world.stack.poller.url, {"Function-Execution-Id": "exec-e2e-1"}) == 200
    world.stack.relay.wait_for(2)

    polls = [e for e in structured_entries(world.stack.poller) if e.get("operation") == "poll_clever"]
    assert [p["outcome"] for p in polls] == ["ok", "ok"]
    assert polls[0]["bootstrapped"] is True and polls[0]["published"] == 1
    assert polls[1]["changes"] == 1 and polls[1][LABELS] == {"execution_id": "exec-e2e-1"}
    # Every entry of one invocation carries its id (functions-framework makes one up when the
    # platform sends none).
    assert all(LABELS in e for e in structured_entries(world.stack.poller))

    applies = [e for e in structured_entries(world.stack.applier) if e.get("operation") == "apply"]
    assert [a["outcome"] for a in applies] == ["applied", "applied"]
    assert {a["section_id"] for a in applies} == {section}
    assert [a["changes"] for a in applies] == [1, 1]  # a course's creation, then one student added
    assert all(a["calls"] >= 1 and a["event_id"] and a["message_id"] for a in applies)
    assert all(0 <= a["latency_seconds"] < 120 for a in applies)
    assert all(a["logger"] == "rostersync" and a["severity"] == "INFO" for a in applies)


def test_a_failed_poll_is_one_error_entry_with_its_traceback(emulators):
    pubsub, firestore = emulators
    env = {
        "GOOGLE_CLOUD_PROJECT": PROJECT,
        "PUBSUB_EMULATOR_HOST": pubsub.host,
        "FIRESTORE_EMULATOR_HOST": firestore.host,
        "PUSH_AUTH": "off",
    }
    with CleverSimulator() as clever:
        # A token Clever does not know: 401, which no retry mends.
        env |= {"CLEVER_API_BASE": clever.base_url, "CLEVER_TOKEN": clever.token + "-revoked"}
        server = FunctionServer("poll_clever", "http", env=env).start()
        try:
            assert post(server.url, {}) == 503
        finally:
            server.stop()
    entries = structured_entries(server)
    failed = [e for e in entries if e.get("outcome") == "failed"]
    assert len(failed) == 1
    (entry,) = failed
    assert entry["severity"] == "ERROR" and entry["operation"] == "poll_clever"
    lines = entry["message"].splitlines()
    assert lines[0].startswith("poll failed: CleverError")  # the message names the error (redacted)
    assert "Traceback (most recent call last):" in lines
    assert lines[-1].startswith("rostersync.adapters.clever.CleverError")
    # No other entry holds a piece of that traceback.
    assert not [e for e in entries if e is not entry and "Traceback" in e["message"]]

"""Guardians end to end (GUARDIANS=invite): Clever contacts → poll_clever → Pub/Sub emulator →
apply_roster_event → the Classroom simulator's guardian invitations and guardians, with the records
in the Firestore emulator; reconcile_courses reads accepted and expired invitations back."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import requests
from google.cloud.firestore_v1.base_query import FieldFilter

from tests.e2e.conftest import ADMIN, DOMAIN, PROJECT, World
from tests.sims.classroom_sim import ClassroomSimulator
from tests.sims.clever_sim import CleverSimulator
from tests.sims.stack import DEFAULT_SOURCE_DIR, FunctionServer, LocalStack

pytestmark = pytest.mark.e2e

FAMILY = "family.example.com"
PARENT = ("Parent", "Parent/Guardian")
EMERGENCY = ("Grandparent", "Emergency")


@pytest.fixture
def world(emulators):
    with CleverSimulator() as clever, ClassroomSimulator(domain=DOMAIN, admin_email=ADMIN) as classroom:
        classroom.add_user(ADMIN, "District", "Admin")
        env = {
            "CLEVER_API_BASE": clever.base_url,
            "CLEVER_TOKEN": clever.token,
            "CLASSROOM_API_ENDPOINT": classroom.base_url,
            "ADMIN_SUBJECT": ADMIN,
            "POLL_TIME_BUDGET_SECONDS": "120",
            "CLASSROOM_CALLS_PER_MINUTE": "0",
            "PAUSE_CHECK_SECONDS": "0",
            "GUARDIANS": "invite",
            # The functions run on the real clock while the simulator's jumps 120 days: an expired
            # invitation is sent again at once (the unit tests show the period).
            "GUARDIAN_REINVITE_DAYS": "0",
        }
        with LocalStack(project=PROJECT, extra_env=env, emulators=emulators) as stack:
            stack.reset()
            yield World(clever, classroom, stack)


@pytest.fixture
def reconcile_guardians(world: World):
    server = FunctionServer("reconcile_courses", "http", env=world.stack.env).start()

    def run() -> dict:
        resp = requests.post(server.url, json={"guardians": True}, timeout=120)
        assert resp.status_code == 200, resp.text
        return resp.json()

    yield run
    server.stop()


def records(world: World, student: str) -> dict[str, dict]:
    docs = world.db().collection("guardians").where(filter=FieldFilter("student_id", "==", student)).stream()
    return {d.to_dict()["email"]: d.to_dict() for d in docs}


def guardian_calls(world: World) -> dict[str, int]:
    return {k.split("userProfiles.")[1]: v for k, v in world.classroom.calls.items() if ".guardian" in k}


def cli(world: World, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "rostersync", *args],
        cwd=DEFAULT_SOURCE_DIR,
        env={**os.environ, **world.stack.env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def email_of(name: str) -> str:
    return f"{name}@{FAMILY}"


@pytest.fixture
def family(world: World):
    """Two students in a section, each with two parents; one grandparent who is only an emergency
    contact, one parent without an email; bootstrapped."""
    teacher = world.person("teacher", "Ann", "Smith")
    kids = [world.person("student", f"Kid{i}", "Family") for i in range(2)]
    world.clever.add_section("Art - Smith - Period 1", teacher, students=kids)
    parents = {
        kid: [
            world.clever.add_contact(email_of(f"mom{i}"), "Mom", f"{i}", [(kid, *PARENT)], emit=False),
            world.clever.add_contact(email_of(f"dad{i}"), "Dad", f"{i}", [(kid, *PARENT)], emit=False),
        ]
        for i, kid in enumerate(kids)
    }
    world.clever.add_contact(email_of("grandma"), "Grand", "Ma", [(kids[0], *EMERGENCY)], emit=False)
    no_email = world.clever.add_contact(None, "No", "Email", [(kids[1], "Parent", "Primary")], emit=False)
    result = world.stack.poll_and_wait()
    assert result["bootstrapped"] and result["guardian_changes"] == 2
    return kids, parents, no_email


def test_contacts_are_invited_once_and_accepting_ending_and_hand_added_guardians_follow_the_rules(
    world: World, family, reconcile_guardians
):
    kids, parents, no_email = family
    kid0, kid1 = (world.email(k) for k in kids)
    pending0 = {i["invitedEmailAddress"] for i in world.classroom.invitations_of(kid0, "PENDING")}
    assert pending0 == {email_of("mom0"), email_of("dad0")}  # not the emergency-only grandmother
    assert {i["invitedEmailAddress"] for i in world.classroom.invitations_of(kid1)} == {
        email_of("mom1"),
        email_of("dad1"),
    }
    assert guardian_calls(world) == {"guardianInvitations.create": 4}  # one call per pair
    assert {r["state"] for r in records(world, kids[0]).values()} == {"pending"}
    problems = {p["clever_id"]: p for p in world.open_problems()}
    assert problems[no_email]["kind"] == "guardian_without_email"

    # Repeated polls and a second bootstrap invite nobody again.
    world.classroom.reset_counters()
    world.stack.poll_and_wait()
    world.db().collection("sync_state").document("clever").delete()
    again = world.stack.poll_and_wait()
    assert again["bootstrapped"] and again["guardian_changes"] == 2
    # No invitation; a bootstrap's complete change reads pending invitations back (2 reads a student).
    assert guardian_calls(world) == {"guardianInvitations.list": 2, "guardians.list": 2}
    assert len(world.classroom.invitations_of(kid0)) == 2

    # A crash between the sync's creates and their save: kid 1's records are left as the intent
    # written before the creates (state inviting, no invitation id). The next delivery gets
    # Classroom's ALREADY_EXISTS, never a second invitation, and knows the invitations are its own
    # (made after its intent): origin sync, so they are withdrawn when the relationships end.
    for doc in world.db().collection("guardians").where(filter=FieldFilter("student_id", "==", kids[1])).stream():
        doc.reference.update({"state": "inviting", "invitation_id": ""})
    world.db().collection("sync_state").document("clever").delete()
    world.classroom.reset_counters()
    world.stack.poll_and_wait()
    assert len(world.classroom.invitations_of(kid1)) == 2
    assert {(r["state"], r["origin"]) for r in records(world, kids[1]).values()} == {("pending", "sync")}
    assert all(r["invitation_id"] for r in records(world, kids[1]).values())
    # Per pair: the create (ALREADY_EXISTS) and the list that finds it; kid 0's read-back as before.
    assert guardian_calls(world) == {
        "guardianInvitations.create": 2,
        "guardianInvitations.list": 3,
        "guardians.list": 1,
    }

    # Mom 0 accepts; the reconcile pass notices it (2 reads for a student with pending invitations).
    world.classroom.guardian_accepts(kid0, email_of("mom0"))
    world.classroom.add_guardian_by_hand(kid0, email_of("aunt"))  # someone else's guardian
    world.classroom.reset_counters()
    result = reconcile_guardians()
    assert result["students"] == 2
    assert records(world, kids[0])[email_of("mom0")]["state"] == "accepted"
    assert records(world, kids[0])[email_of("dad0")]["state"] == "pending"

    # Both of kid 0's relationships end in Clever: the accepted guardian is removed, the pending
    # invitation withdrawn; the hand-added aunt stays.
    for contact in parents[kids[0]]:
        world.clever.set_relationships(contact, [])
    world.classroom.reset_counters()
    world.stack.poll_and_wait()
    assert world.classroom.guardians_of(kid0) == {email_of("aunt")}
    assert world.classroom.invitations_of(kid0, "PENDING") == []
    states = {e: r["state"] for e, r in records(world, kids[0]).items()}
    assert states == {email_of("mom0"): "removed", email_of("dad0"): "withdrawn"}
    assert guardian_calls(world) == {"guardianInvitations.patch": 1, "guardians.delete": 1}
    # A complete reconcile leaves the aunt alone too, and kid 1's invitations as they are.
    reconcile_guardians()
    assert world.classroom.guardians_of(kid0) == {email_of("aunt")}
    assert len(world.classroom.invitations_of(kid1, "PENDING")) == 2

    # The administrator's views.
    shown = json.loads(cli(world, "guardians", kids[0], "--classroom", "--json"))
    assert {r["email"]: r["state"] for r in shown["records"]} == states
    assert [g["invitedEmailAddress"] for g in shown["classroom"]["guardians"]] == [email_of("aunt")]
    assert any(a["outcome"] == "applied" and "remove guardian" in a["what"] for a in shown["audit"])
    why = cli(world, "why", f"guardians-{kids[0]}", email_of("mom0"))
    assert "the sync removed them from Classroom" in why and "remove guardian" in why
    status = json.loads(cli(world, "status", "--json"))
    assert status["guardians"] == {"removed": 1, "withdrawn": 1, "pending": 2}

    # Mom 1's relationship ends: the invitation adopted after the crash is the sync's, so it is withdrawn.
    world.clever.set_relationships(parents[kids[1]][0], [])
    world.classroom.reset_counters()
    world.stack.poll_and_wait()
    assert {i["invitedEmailAddress"] for i in world.classroom.invitations_of(kid1, "PENDING")} == {email_of("dad1")}
    assert records(world, kids[1])[email_of("mom1")]["state"] == "withdrawn"
    assert guardian_calls(world) == {"guardianInvitations.patch": 1}


def test_email_change_expiry_and_guardian_access_off(world: World, family, reconcile_guardians):
    kids, parents, _ = family
    kid0, kid1 = world.email(kids[0]), world.email(kids[1])
    mom0 = parents[kids[0]][0]

    # Mom 1 accepts; then a teacher removes her in Classroom by hand. The reconcile pass notices (it
    # reads back the guardians the sync invited) and, a human's change winning, invites her no more.
    world.classroom.guardian_accepts(kid1, email_of("mom1"))
    reconcile_guardians()
    assert records(world, kids[1])[email_of("mom1")]["state"] == "accepted"
    world.classroom.remove_guardian_by_hand(kid1, email_of("mom1"))
    world.classroom.reset_counters()
    reconcile_guardians()
    assert records(world, kids[1])[email_of("mom1")]["state"] == "removed_by_hand"
    assert "guardianInvitations.create" not in guardian_calls(world)

    # A contact's email changes: the old invitation is withdrawn, the new address invited.
    world.clever.update_user(mom0, email=email_of("mom0.new"))
    world.stack.poll_and_wait()
    pending = {i["invitedEmailAddress"] for i in world.classroom.invitations_of(kid0, "PENDING")}
    assert pending == {email_of("mom0.new"), email_of("dad0")}
    states = {e: r["state"] for e, r in records(world, kids[0]).items()}
    assert states[email_of("mom0")] == "withdrawn" and states[email_of("mom0.new")] == "pending"

    # Dad 1 declines: Classroom shows his invitation COMPLETE well before its 120 days, with no
    # guardian. Declined, not expired: the admin's view says so, and it is not sent again.
    world.classroom.guardian_declines(kid1, email_of("dad1"))
    reconcile_guardians()
    assert records(world, kids[1])[email_of("dad1")]["state"] == "declined"
    assert "they declined, or someone withdrew it" in cli(world, "why", f"guardians-{kids[1]}", email_of("dad1"))

    # 120 days later the invitations expired: the reconcile pass notices and sends them again.
    world.classroom.advance_guardian_clock(121)
    world.classroom.reset_counters()
    reconcile_guardians()
    assert len(world.classroom.invitations_of(kid0, "PENDING")) == 2
    # Both of kid 0's parents only: mom 1, removed by hand, and dad 1, who declined, are not invited again.
    assert guardian_calls(world)["guardianInvitations.create"] == 2
    assert world.classroom.guardians_of(kid1) == set() and world.classroom.invitations_of(kid1, "PENDING") == []

    # Guardian access turned off for the domain: invitations become problems with the hint, and the
    # roster changes of the same poll still apply.
    world.classroom.set_guardian_access(False)
    newcomer = world.person("student", "New", "Kid")
    section = world.clever.section_ids[0]
    world.clever.add_student(section, newcomer)
    world.clever.add_contact(email_of("newmom"), "New", "Mom", [(newcomer, *PARENT)])
    world.stack.poll_and_wait()
    assert world.email(newcomer) in world.classroom.roster(f"d:clever-{section}")["students"]
    [problem] = [p for p in world.open_problems() if p["kind"] == "guardian_access_off"]
    assert problem["reason"] == "PERMISSION_DENIED" and "Admin console" in problem["hint"]
    assert records(world, newcomer)[email_of("newmom")]["state"] == "problem"
    # Turned on again: `plan` shows the invitation the nightly pass will retry (writing nothing),
    # and the pass sends it.
    world.classroom.set_guardian_access(True)
    world.classroom.reset_counters()
    planned = json.loads(cli(world, "plan", "--json"))["changes"]
    assert [c["action"] for c in planned if "guardian" in c["action"]] == ["invite guardian"]
    assert email_of("newmom") in planned[-1]["detail"]
    assert "classroom.userProfiles.guardianInvitations.create" not in world.classroom.calls
    reconcile_guardians()
    assert records(world, newcomer)[email_of("newmom")]["state"] == "pending"
    assert not [p for p in world.open_problems() if p["kind"] == "guardian_access_off"]

    # The new student is deleted in Clever: the sync's pending invitation is withdrawn, a guardian
    # someone added by hand stays.
    new_kid = world.email(newcomer)
    world.classroom.add_guardian_by_hand(new_kid, email_of("newaunt"))
    world.clever.delete_user(newcomer)
    world.classroom.reset_counters()
    world.stack.poll_and_wait()
    assert world.classroom.invitations_of(new_kid, "PENDING") == []
    assert world.classroom.guardians_of(new_kid) == {email_of("newaunt")}
    assert records(world, newcomer)[email_of("newmom")]["state"] == "withdrawn"
    assert guardian_calls(world)["guardianInvitations.patch"] == 1


def test_guardian_records_are_written_with_preconditions(emulators):
    """Two writers that read the same records: the second save writes nothing and says so."""
    import uuid
    from dataclasses import replace

    from rostersync.adapters.store import FirestoreStore
    from rostersync.domain.guardians import GuardianRecord, GuardianState, StaleRecords

    from tests.sims.stack import _temporary_env

    _, firestore_emulator = emulators
    with _temporary_env(FIRESTORE_EMULATOR_HOST=firestore_emulator.host):
        from google.cloud import firestore

        store = FirestoreStore(firestore.Client(project=PROJECT))
    student = f"kid-{uuid.uuid4().hex[:8]}"
    pending = GuardianRecord(student, email_of("mom"), "mom", GuardianState.PENDING, "0" * 23 + "1")
    store.save_guardian_records([], [pending])
    with pytest.raises(StaleRecords):
        store.save_guardian_records([], [pending])  # created twice: the second finds it there
    read_by_one = store.load_guardian_records(student)
    read_by_other = store.load_guardian_records(student)
    withdrawn = [replace(r, state=GuardianState.WITHDRAWN) for r in read_by_one]
    store.save_guardian_records(read_by_one, withdrawn)
    accepted = [replace(r, state=GuardianState.ACCEPTED) for r in read_by_other]
    with pytest.raises(StaleRecords):
        store.save_guardian_records(read_by_other, accepted)
    assert [r.state for r in store.load_guardian_records(student)] == [GuardianState.WITHDRAWN]
    # The intent before a create is written the same way: of two attempts that read the same record
    # only one records it, and the save after its calls holds on to the version the intent wrote.
    read = store.load_guardian_records(student)
    inviting = [replace(r, state=GuardianState.INVITING) for r in read]
    [intent] = store.record_guardian_intents(read, inviting)
    with pytest.raises(StaleRecords):
        store.record_guardian_intents(read, inviting)
    with pytest.raises(StaleRecords):
        store.save_guardian_records(read, [replace(r, state=GuardianState.PENDING) for r in read])
    store.save_guardian_records([intent], [replace(intent, state=GuardianState.PENDING)])
    assert [r.state for r in store.load_guardian_records(student)] == [GuardianState.PENDING]

"""The Classroom adapter's guardian calls against the Classroom simulator, through
google-api-python-client and the bundled discovery document: invitations, acceptance, withdrawal,
expiry, removal, and the refusals Classroom documents."""

import pytest
from rostersync.adapters.classroom import ClassroomAdapter, build_classroom_service
from rostersync.config import load_settings
from rostersync.domain.ports import NOT_MEMBER, REMOVED, ClassroomError
from rostersync.retry import Deadline, RetryPolicy

from tests.sims.classroom_sim import ClassroomSimulator

DOMAIN = "district.example.org"
KID = f"kid@{DOMAIN}"
MOM = "mom@family.example.com"


@pytest.fixture
def sim():
    with ClassroomSimulator(domain=DOMAIN) as sim:
        sim.add_user(KID, "Kid", "One")
        yield sim


@pytest.fixture
def adapter(sim, monkeypatch):
    monkeypatch.setenv("CLASSROOM_API_ENDPOINT", sim.base_url)
    return ClassroomAdapter(
        build_classroom_service(load_settings()),
        sim.base_url,
        retry=RetryPolicy(base_delay=0.01, max_delay=0.02),
        deadline_factory=lambda: Deadline(2),
    )


def test_an_invitation_is_pending_until_accepted_and_a_second_one_is_already_exists(sim, adapter):
    invitation = adapter.invite_guardian(KID, MOM)
    assert invitation["state"] == "PENDING" and invitation["invitedEmailAddress"] == MOM
    assert invitation["creationTime"].endswith("Z") and invitation["invitationId"]
    with pytest.raises(ClassroomError) as exc:
        adapter.invite_guardian(KID, MOM)
    assert exc.value.already_exists and not exc.value.retryable
    assert [i["invitationId"] for i in adapter.guardian_invitations(KID, MOM)] == [invitation["invitationId"]]
    gid = sim.guardian_accepts(KID, MOM)
    assert adapter.guardian_invitations(KID) == []  # PENDING only by default
    assert adapter.guardian_invitations(KID, states=("COMPLETE",))[0]["state"] == "COMPLETE"
    [guardian] = adapter.guardians(KID, MOM)
    assert guardian["guardianId"] == gid and guardian["guardianProfile"]["emailAddress"] == MOM
    with pytest.raises(ClassroomError) as exc:
        adapter.invite_guardian(KID, MOM)  # already a guardian
    assert exc.value.already_exists
    assert adapter.remove_guardian(KID, gid) == REMOVED
    assert adapter.remove_guardian(KID, gid) == NOT_MEMBER
    assert sim.guardians_of(KID) == set()


def test_withdrawal_expiry_and_the_failed_precondition_of_a_completed_invitation(sim, adapter):
    first = adapter.invite_guardian(KID, MOM)
    assert adapter.withdraw_guardian_invitation(KID, first["invitationId"])["state"] == "COMPLETE"
    with pytest.raises(ClassroomError) as exc:
        adapter.withdraw_guardian_invitation(KID, first["invitationId"])
    assert exc.value.status == "FAILED_PRECONDITION"
    second = adapter.invite_guardian(KID, MOM)  # a withdrawn invitation does not block a new one
    sim.advance_guardian_clock(119)
    assert [i["invitationId"] for i in adapter.guardian_invitations(KID)] == [second["invitationId"]]
    sim.advance_guardian_clock(2)  # 120 days: expired
    assert adapter.guardian_invitations(KID) == []
    with pytest.raises(KeyError):
        sim.guardian_accepts(KID, MOM)


def test_refusals_are_the_documented_codes_and_the_link_limit_is_not_retried(sim, adapter):
    with pytest.raises(ClassroomError) as exc:
        adapter.invite_guardian(f"ghost@{DOMAIN}", MOM)
    assert exc.value.status == "NOT_FOUND"
    with pytest.raises(ClassroomError) as exc:
        adapter.invite_guardian(KID, "not an address")
    assert exc.value.status == "INVALID_ARGUMENT"
    sim.guardian_link_limit = 2
    adapter.invite_guardian(KID, "a@family.example.com")
    adapter.invite_guardian(KID, "b@family.example.com")
    sim.reset_counters()
    with pytest.raises(ClassroomError) as exc:
        adapter.invite_guardian(KID, "c@family.example.com")
    assert exc.value.status == "RESOURCE_EXHAUSTED" and not exc.value.retryable
    assert sim.calls["classroom.userProfiles.guardianInvitations.create"] == 1  # not retried
    sim.set_guardian_access(False)
    for call in (lambda: adapter.invite_guardian(KID, MOM), lambda: adapter.guardians(KID)):
        with pytest.raises(ClassroomError) as exc:
            call()
        assert exc.value.status == "PERMISSION_DENIED"


def test_the_quota_answer_of_create_is_still_retried(sim, adapter):
    sim.set_quota(1)
    adapter.guardians(KID)  # spends the minute's one call
    with pytest.raises(ClassroomError) as exc:
        adapter.invite_guardian(KID, MOM)
    assert exc.value.status == "RESOURCE_EXHAUSTED" and exc.value.retryable
    assert sim.calls["classroom.userProfiles.guardianInvitations.create"] > 1  # retried until the deadline


def test_classroom_calls_per_guardian_change_and_for_a_bootstrap_with_two_contacts_per_student(sim, adapter):
    """The figures docs/guardians.md quotes, counted at the simulator (every call, reads included)."""
    from dataclasses import replace

    from rostersync.app.guardian_applier import GuardianApplier
    from rostersync.domain.changes import Person
    from rostersync.domain.guardians import GuardianChange, GuardianState

    from tests.unit.test_guardians import FakeStore

    students = [Person(f"s{n}", f"s{n}@{DOMAIN}") for n in range(30)]
    for s in students:
        sim.add_user(s.email, s.clever_id, "Kid")
    contacts = {
        s.clever_id: (
            Person(f"m{s.clever_id}", f"m.{s.clever_id}@f.org"),
            Person(f"d{s.clever_id}", f"d.{s.clever_id}@f.org"),
        )
        for s in students
    }
    store = FakeStore()
    guardians = GuardianApplier(store, adapter, 30)

    def run(*changes, refresh=False) -> int:
        sim.reset_counters()
        for change in changes:
            guardians.apply_all([change], refresh=refresh)
        return sum(sim.calls.values())

    def ev(n):
        return f"{n:024x}"

    bootstrap = [GuardianChange(s, ev(1), "", contacts[s.clever_id], complete=True) for s in students]
    assert run(*bootstrap) == 60  # one create per (student, contact) pair, nothing else
    assert run(*bootstrap) == 0  # a second bootstrap (or a redelivery): no call
    assert run(*bootstrap, refresh=True) == 60  # the nightly read-back: 2 reads per student with one pending
    first, mom = students[0], contacts["s0"][0]
    assert run(GuardianChange(first, ev(2), "", (Person("new", "new@f.org"),))) == 1  # a new contact: 1 create
    assert run(GuardianChange(first, ev(3), "", ended=(mom,))) == 1  # a pending one ends: 1 patch
    sim.guardian_accepts(first.email, contacts["s0"][1].email)
    # Ended after it was accepted but before the sync noticed: patch refused, 1 list, 1 delete.
    assert run(GuardianChange(first, ev(4), "", ended=(contacts["s0"][1],))) == 3
    moved = Person("new", "new.address@f.org")
    assert run(GuardianChange(first, ev(5), "", (moved,))) == 2  # an email change: 1 patch + 1 create
    # A crash between the creates and their save leaves the intents (inviting, no invitation id):
    # each create answers ALREADY_EXISTS and one list finds the pending invitation, made after the
    # intent, so it is recorded as the sync's: 2 calls a pair, no second invitation.
    store.records = {
        k: replace(v, state=GuardianState.INVITING, invitation_id="") if v.student_id == "s1" else v
        for k, v in store.records.items()
    }
    assert run(GuardianChange(students[1], ev(6), "", contacts["s1"])) == 4
    assert len(sim.invitations_of(students[1].email)) == 2
    adopted = [r for r in store.records.values() if r.student_id == "s1"]
    assert {(r.state, r.origin) for r in adopted} == {(GuardianState.PENDING, "sync")}


def test_a_declined_invitation_is_complete_without_a_guardian_and_keeps_its_creation_time(sim, adapter):
    # As the discovery document says: COMPLETE "may have been accepted, declined, withdrawn or it
    # may have expired"; only the guardian list and creationTime tell them apart.
    sent = adapter.invite_guardian(KID, MOM)
    sim.guardian_declines(KID, MOM)
    assert adapter.guardian_invitations(KID) == []
    [done] = adapter.guardian_invitations(KID, states=("PENDING", "COMPLETE"))
    assert (done["invitationId"], done["state"]) == (sent["invitationId"], "COMPLETE")
    assert done["creationTime"] == sent["creationTime"] and adapter.guardians(KID) == []
    sim.advance_guardian_clock(121)  # time passes for the invitation: its creationTime moves back
    [aged] = adapter.guardian_invitations(KID, MOM, states=("COMPLETE",))
    assert aged["creationTime"] < sent["creationTime"]
    assert adapter.invite_guardian(KID, MOM)["state"] == "PENDING"  # a declined one does not block a new one

"""Guardians: the pure rules, Clever contact events -> guardian changes, the message form, the brake,
and the guardian applier over in-memory fakes."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

import pytest
from rostersync.adapters.bus import pack_by_section
from rostersync.app.applier import Applier
from rostersync.app.guardian_applier import GuardianApplier
from rostersync.domain.brake import BrakeSettings, GuardianBrake
from rostersync.domain.changes import InvalidChange, Person, encode_message
from rostersync.domain.guardians import (
    GuardianChange,
    GuardianKind,
    GuardianRecord,
    GuardianState,
    Invite,
    RemoveGuardian,
    Withdraw,
    decode_guardian_message,
    decode_held,
    encode_email,
    plan_guardians,
    record_id,
)
from rostersync.domain.ports import ClassroomError
from rostersync.domain.sources.clever_contacts import district_guardian_changes, guardian_changes_from_event

NOW = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
TYPES = ("Parent/Guardian", "Primary")
KID = Person("kid1", "kid1@district.example.org")
MOM = Person("mom1", "mom@family.example.com")
DAD = Person("dad1", "dad@family.example.com")


def ev(n: int) -> str:
    return f"{n:024x}"


def change(n: int, wanted=(), ended=(), complete=False, student=KID) -> GuardianChange:
    return GuardianChange(student, ev(n), "", tuple(wanted), tuple(ended), complete)


def rec(person: Person, state: GuardianState, n: int, **kw) -> GuardianRecord:
    return GuardianRecord(KID.clever_id, person.email or "", person.clever_id, state, ev(n), **kw)


# -- rules ---------------------------------------------------------------------------------------


def test_a_wanted_contact_is_invited_once_and_a_repeat_makes_no_call():
    p = plan_guardians(change(5, [MOM, DAD]), [], NOW, 30)
    assert p.ops == [Invite(DAD), Invite(MOM)]
    done = [rec(MOM, GuardianState.PENDING, 5), rec(DAD, GuardianState.ACCEPTED, 5)]
    again = plan_guardians(change(5, [MOM, DAD]), done, NOW, 30)
    assert again.ops == [] and again.problems == []
    newer = plan_guardians(change(9, [MOM]), done, NOW, 30)
    assert newer.ops == [] and newer.records[MOM.email].event_id == ev(9)  # an older end cannot win now


def test_an_ended_relationship_withdraws_pending_and_removes_accepted_but_never_others():
    records = [
        rec(MOM, GuardianState.PENDING, 5, invitation_id="i1"),
        rec(DAD, GuardianState.ACCEPTED, 5, guardian_id="g1"),
    ]
    p = plan_guardians(change(7, ended=[MOM, DAD]), records, NOW, 30)
    assert p.ops == [RemoveGuardian(records[1]), Withdraw(records[0])]
    existing = [replace(records[1], origin="existing")]
    q = plan_guardians(change(7, ended=[DAD]), existing, NOW, 30)
    assert q.ops == [] and q.records[DAD.email].state == GuardianState.RELEASED


def test_an_older_end_is_skipped_and_an_end_without_a_record_blocks_an_older_invite():
    records = [rec(MOM, GuardianState.PENDING, 8)]
    assert plan_guardians(change(7, ended=[MOM]), records, NOW, 30).ops == []
    p = plan_guardians(change(9, ended=[DAD]), [], NOW, 30)
    assert p.ops == [] and p.records[DAD.email].state == GuardianState.WITHDRAWN
    late = plan_guardians(change(6, [DAD]), list(p.records.values()), NOW, 30)
    assert late.ops == [] and "older" in late.notes[0]


def test_a_changed_email_ends_the_old_address_and_invites_the_new_one():
    records = [rec(MOM, GuardianState.PENDING, 5, invitation_id="i1")]
    moved = Person(MOM.clever_id, "mom.new@family.example.com")
    p = plan_guardians(change(6, [moved]), records, NOW, 30)  # even without the old email in `ended`
    assert p.ops == [Withdraw(records[0]), Invite(moved)]


def test_an_expired_invitation_is_sent_again_at_most_once_a_period():
    sent = (NOW - dt.timedelta(days=10)).isoformat()
    records = [rec(MOM, GuardianState.EXPIRED, 5, invited_at=sent)]
    p = plan_guardians(change(6, [MOM]), records, NOW, 30)
    assert p.ops == [] and "at most every 30 days" in p.notes[0]
    assert plan_guardians(change(6, [MOM]), records, NOW + dt.timedelta(days=21), 30).ops == [Invite(MOM)]


def test_a_refused_invitation_is_tried_again_by_the_reconcile_or_a_newer_event_only():
    records = [rec(MOM, GuardianState.PROBLEM, 5, reason="PERMISSION_DENIED")]
    assert plan_guardians(change(5, [MOM]), records, NOW, 30).ops == []
    assert plan_guardians(change(5, [MOM]), records, NOW, 30, retry_problems=True).ops == [Invite(MOM)]
    assert plan_guardians(change(6, [MOM]), records, NOW, 30).ops == [Invite(MOM)]


def test_a_complete_change_ends_what_is_not_on_the_list_and_missing_emails_are_problems():
    records = [rec(MOM, GuardianState.PENDING, 5, invitation_id="i1")]
    p = plan_guardians(change(6, [Person("aunt", None)], complete=True), records, NOW, 30)
    assert p.ops == [Withdraw(records[0])]
    assert [pr.kind for pr in p.problems] == ["guardian_without_email"]
    q = plan_guardians(change(6, [MOM], student=Person("kid1", None)), [], NOW, 30)
    assert q.ops == [] and [pr.kind for pr in q.problems] == ["student_without_email"]


# -- Clever contacts -------------------------------------------------------------------------------


def contact(cid="mom1", email="Mom@Family.example.com", rels=(("kid1", "Parent/Guardian"),)) -> dict:
    return {
        "id": cid,
        "email": email,
        "roles": {
            "contact": {"student_relationships": [{"student": s, "relationship": "Parent", "type": t} for s, t in rels]}
        },
    }


def event(kind: str, obj: dict, previous=None, n=10) -> dict:
    data = {"object": obj}
    if previous is not None:
        data["previous_attributes"] = previous
    return {"id": ev(n), "type": f"users.{kind}", "created": "2026-12-01T00:00:00Z", "data": data}


EMAILS = {"kid1": KID.email, "kid2": "kid2@district.example.org"}


def test_contact_events_become_one_guardian_change_per_student():
    [created] = guardian_changes_from_event(event("created", contact()), EMAILS, TYPES)
    assert created.wanted == (MOM,) and created.student == KID and created.kind == GuardianKind.GUARDIANS_WANTED
    old = contact()["roles"]["contact"]["student_relationships"]
    now = contact(rels=(("kid2", "Primary"), ("kid1", "Emergency")))
    updated = guardian_changes_from_event(
        event("updated", now, {"roles": {"contact": {"student_relationships": old}}}), EMAILS, TYPES
    )
    assert [(c.student.clever_id, c.wanted, c.ended) for c in updated] == [("kid2", (MOM,), ()), ("kid1", (), (MOM,))]
    assert updated[1].kind == GuardianKind.GUARDIAN_REMOVED
    moved = guardian_changes_from_event(
        event("updated", contact(email="new@family.example.com"), {"email": "mom@family.example.com"}), EMAILS, TYPES
    )
    assert [(c.wanted[0].email, c.ended[0].email) for c in moved] == [
        ("new@family.example.com", "mom@family.example.com")
    ]
    [deleted] = guardian_changes_from_event(event("deleted", contact()), EMAILS, TYPES)
    assert deleted.ended == (MOM,) and deleted.wanted == ()
    phone = guardian_changes_from_event(event("updated", contact(), {"name": {"first": "M"}}), EMAILS, TYPES)
    assert phone == []  # nothing about the guardian changed
    student = {"id": "kid1", "email": KID.email, "roles": {"student": {}}}
    assert guardian_changes_from_event(event("updated", student, {"email": "x@y"}), EMAILS, TYPES) == []


def test_the_bootstrap_makes_one_complete_change_per_student_including_ones_no_contact_names():
    contacts = [contact(), contact("dad1", DAD.email, (("kid1", "Primary"), ("kid2", "Emergency")))]
    changes = district_guardian_changes(contacts, EMAILS, TYPES, ev(1), "", also_students=["kid9"])
    assert [(c.student.clever_id, {p.clever_id for p in c.wanted}) for c in changes] == [
        ("kid1", {"mom1", "dad1"}),
        ("kid9", set()),
    ]
    assert all(c.complete for c in changes)


# -- the message, the held form and the brake ------------------------------------------------------


def test_guardian_changes_travel_one_ordering_key_per_student_and_decode_back():
    changes = [change(5, [MOM]), change(6, ended=[MOM]), change(7, [DAD], student=Person("kid2", "k2@d.org"))]
    groups = pack_by_section(changes)
    assert [len(g) for g in groups] == [2, 1] and groups[0][0].ordering_key == "guardians-kid1"
    assert decode_guardian_message(encode_message(groups[0])) == groups[0]
    assert decode_guardian_message(changes[2].to_json()) == [changes[2]]
    assert decode_held(changes[1].to_json().decode()) == changes[1]
    assert decode_guardian_message(b'{"schema": 1, "kind": "student_added"}') is None
    with pytest.raises(InvalidChange):
        decode_guardian_message(b'{"schema": 4, "student": {}}')


def test_the_brake_holds_guardian_removals_past_the_limit():
    brake = GuardianBrake(BrakeSettings(0.25, 0.05, 20, 2), guardians_known=20)
    assert brake.limit == 2
    ends = [change(n, ended=[MOM], student=Person(f"k{n}", "k@d.org")) for n in range(4)]
    assert brake.filter(ends[:2] + [change(9, [DAD])]) == ends[:2] + [change(9, [DAD])]
    assert brake.filter(ends[2:]) == [] and brake.held == ends[2:]


def test_record_ids_hold_no_slash_and_differ_per_address():
    assert "/" not in record_id("kid1", "a/b@x.org") and encode_email("a/b@x.org") != encode_email("a_b@x.org")


# -- the applier -------------------------------------------------------------------------------------


class FakeStore:
    """The Firestore store's guardian part in memory, counting commits and documents written as
    the real one writes them (changed records only, audit entries, problems, resolutions)."""

    def __init__(self):
        self.records: dict[str, GuardianRecord] = {}
        self.problems: dict[str, object] = {}
        self.resolved: list[str] = []
        self.saves = 0
        self.commits = 0
        self.writes = 0

    def load_guardian_records(self, student_id):
        return [r for r in self.records.values() if r.student_id == student_id]

    def record_guardian_intents(self, before, intents):
        self.commits += 1
        self.writes += len(intents)
        self.records.update({r.doc_id: r for r in intents})
        return list(intents)

    def save_guardian_records(self, before, after, problems=(), resolved=(), audit=()):
        old = {r.doc_id: r for r in before}
        changed = [r for r in after if old.get(r.doc_id) != r]
        if changed or problems or resolved or audit:
            self.commits += 1
            self.writes += len(changed) + len(problems) + len(resolved) + len(audit)
        self.saves += 1
        self.records.update({r.doc_id: r for r in after})
        self.problems.update({p.key: p for p in problems})
        self.resolved += list(resolved)

    def record_problems(self, problems):
        self.problems.update({p.key: p for p in problems})


class FakeClassroom:
    """Classroom's guardian behaviour in memory (the simulator is the full version)."""

    def __init__(self):
        self.pending: dict[str, str] = {}  # email -> invitation id
        self.complete: dict[str, str] = {}  # invitation id -> email: accepted, declined, withdrawn, expired
        self.created: dict[str, str] = {}  # invitation id -> creationTime
        self.clock = NOW
        self.guardian_ids: dict[str, str] = {}  # email -> guardian id
        self.calls: list[str] = []
        self.refuse: ClassroomError | None = None

    def invite_guardian(self, student, email):
        self.calls.append("create")
        if self.refuse:
            raise self.refuse
        if email in self.pending or email in self.guardian_ids:
            raise ClassroomError(409, "ALREADY_EXISTS", "exists")
        self.pending[email] = f"inv-{len(self.calls)}"
        self.created[self.pending[email]] = self.clock.isoformat()
        return {"invitationId": self.pending[email], "state": "PENDING"}

    def guardian_invitations(self, student, email=None, states=("PENDING",)):
        self.calls.append("list_invitations")
        listed = [(i, e, "PENDING") for e, i in self.pending.items()]
        listed += [(i, e, "COMPLETE") for i, e in self.complete.items()]
        return [
            {"invitationId": i, "invitedEmailAddress": e, "state": st, "creationTime": self.created.get(i, "")}
            for i, e, st in listed
            if email in (None, e) and st in states
        ]

    def withdraw_guardian_invitation(self, student, invitation_id):
        self.calls.append("patch")
        email = next((e for e, i in self.pending.items() if i == invitation_id), None)
        if email is None:
            raise ClassroomError(400, "FAILED_PRECONDITION", "not pending")
        del self.pending[email]
        self.complete[invitation_id] = email
        return {}

    def guardians(self, student, email=None):
        self.calls.append("list_guardians")
        return [{"guardianId": g, "invitedEmailAddress": e} for e, g in self.guardian_ids.items() if email in (None, e)]

    def remove_guardian(self, student, guardian_id):
        self.calls.append("delete")
        self.guardian_ids = {e: g for e, g in self.guardian_ids.items() if g != guardian_id}
        return "removed"

    def accept(self, email):
        self.complete[self.pending.pop(email)] = email
        self.guardian_ids[email] = f"g-{email}"

    def decline(self, email):
        self.complete[self.pending.pop(email)] = email

    def expire(self):
        for email in list(self.pending):
            self.decline(email)  # COMPLETE as well: only the invitation's age tells them apart


def applier():
    store, classroom = FakeStore(), FakeClassroom()
    return GuardianApplier(store, classroom, 30, clock=lambda: NOW), store, classroom


def test_the_applier_invites_adopts_existing_ones_and_never_touches_them():
    guardians, store, classroom = applier()
    classroom.pending[DAD.email] = "by-hand"  # invited by someone else before the sync
    outcome = guardians.apply_all([change(5, [MOM, DAD])])
    assert outcome.status == "applied" and store.saves == 1
    by_email = {r.email: r for r in store.records.values()}
    assert (by_email[MOM.email].origin, by_email[DAD.email].origin) == ("sync", "existing")
    assert by_email[DAD.email].invitation_id == "by-hand"
    classroom.calls.clear()
    guardians.apply_all([change(6, ended=[MOM, DAD])])
    assert classroom.calls == ["patch"] and DAD.email in classroom.pending


def test_an_accepted_invitation_is_noticed_and_a_late_withdrawal_removes_the_guardian():
    guardians, store, classroom = applier()
    guardians.apply_all([change(5, [MOM])])
    classroom.accept(MOM.email)
    # Withdrawing an invitation accepted meanwhile: FAILED_PRECONDITION, so the guardian goes.
    guardians.apply_all([change(6, ended=[MOM])])
    assert classroom.guardian_ids == {} and classroom.calls[-3:] == ["patch", "list_guardians", "delete"]
    [record] = store.records.values()
    assert record.state == GuardianState.REMOVED
    # The reconcile's refresh notices acceptances.
    guardians.apply_all([change(7, [DAD])])
    classroom.accept(DAD.email)
    guardians.apply_all([change(7, [DAD], complete=True)], refresh=True)
    assert {r.email: r.state for r in store.records.values()}[DAD.email] == GuardianState.ACCEPTED


def test_a_guardian_removed_by_hand_is_noticed_and_not_invited_again_until_the_relationship_restarts():
    guardians, store, classroom = applier()
    guardians.apply_all([change(5, [MOM, DAD])])
    classroom.accept(MOM.email)
    classroom.accept(DAD.email)
    guardians.apply_all([change(6, [MOM, DAD], complete=True)], refresh=True)
    assert {r.state for r in store.records.values()} == {GuardianState.ACCEPTED}
    # A settled student costs one read; the teacher then removes Mom in Classroom.
    classroom.calls.clear()
    guardians.apply_all([change(6, [MOM, DAD], complete=True)], refresh=True)
    assert classroom.calls == ["list_guardians"]
    del classroom.guardian_ids[MOM.email]
    outcome = guardians.apply_all([change(7, [MOM, DAD], complete=True)], refresh=True)
    states = {r.email: r.state for r in store.records.values()}
    assert states == {MOM.email: GuardianState.REMOVED_BY_HAND, DAD.email: GuardianState.ACCEPTED}
    assert "removed in Classroom by hand" in outcome.detail
    # Neither the nightly pass nor a newer event for the same relationship invites her again.
    classroom.calls.clear()
    guardians.apply_all([change(8, [MOM, DAD], complete=True)], refresh=True)
    guardians.apply_all([change(9, [MOM])])
    assert "create" not in classroom.calls and MOM.email not in classroom.pending
    # The relationship ends (no call: nothing left to delete) and starts again: invited.
    classroom.calls.clear()
    guardians.apply_all([change(10, ended=[MOM])])
    assert classroom.calls == [] and {r.email: r.state for r in store.records.values()}[MOM.email] == "removed"
    guardians.apply_all([change(11, [MOM])])
    assert classroom.calls == ["create"] and MOM.email in classroom.pending


def test_a_student_deleted_in_clever_loses_the_guardians_the_sync_invited_and_keeps_hand_added_ones():
    deleted_kid = {"id": "kid1", "email": KID.email, "roles": {"student": {"grade": "3"}}}
    [gone] = guardian_changes_from_event(event("deleted", deleted_kid, n=20), {}, TYPES)
    assert gone.student == KID and gone.complete and gone.wanted == () and gone.ended == ()
    assert gone.kind == GuardianKind.GUARDIAN_REMOVED  # the brake counts it like an ended relationship
    brake = GuardianBrake(BrakeSettings(0.25, 0.05, 20, 1), guardians_known=4)
    second = replace(gone, student=Person("kid2", "kid2@district.example.org"))
    assert brake.filter([gone]) == [gone] and brake.filter([second]) == [] and brake.held == [second]
    # A deleted teacher, or a deleted student's event without an id, makes no guardian change.
    teacher = {"id": "t1", "email": "t@d.org", "roles": {"teacher": {}}}
    assert guardian_changes_from_event(event("deleted", teacher), {}, TYPES) == []

    guardians, store, classroom = applier()
    guardians.apply_all([change(5, [MOM, DAD])])
    classroom.accept(DAD.email)
    guardians.apply_all([change(6, [MOM, DAD], complete=True)], refresh=True)  # Dad's acceptance noticed
    classroom.guardian_ids["aunt@family.example.com"] = "g-aunt"  # added by hand
    classroom.calls.clear()
    outcome = guardians.apply_all([gone])
    assert outcome.status == "applied"
    assert classroom.pending == {} and classroom.guardian_ids == {"aunt@family.example.com": "g-aunt"}
    states = {r.email: r.state for r in store.records.values()}
    assert states == {MOM.email: GuardianState.WITHDRAWN, DAD.email: GuardianState.REMOVED}
    assert {r.event_id for r in store.records.values()} == {ev(20)}
    # Delivered twice, or an older invitation arriving late: nothing is called.
    classroom.calls.clear()
    guardians.apply_all([gone])
    guardians.apply_all([change(19, [MOM])])
    assert [c for c in classroom.calls if c not in ("list_invitations", "list_guardians")] == []


def test_a_declined_invitation_is_told_from_an_expired_one_by_its_age_and_not_sent_again():
    guardians, store, classroom = applier()
    guardians.apply_all([change(5, [MOM, DAD])])
    # Ten days later Mom declines (COMPLETE, no guardian): declined, with a hint, and never re-sent.
    classroom.decline(MOM.email)
    ten_days = GuardianApplier(store, classroom, 0, clock=lambda: NOW + dt.timedelta(days=10))
    outcome = ten_days.apply_all([change(6, [MOM, DAD], complete=True)], refresh=True)
    mom = {r.email: r for r in store.records.values()}[MOM.email]
    assert mom.state == GuardianState.DECLINED and "declined" in mom.reason
    assert "declined; not invited again" in outcome.detail
    assert classroom.calls.count("create") == 2 and MOM.email not in classroom.pending
    # 121 days on, Dad's invitation is as COMPLETE as Mom's, but old enough: expired, sent again
    # (GUARDIAN_REINVITE_DAYS 0 here); Mom still is not.
    classroom.expire()
    later = GuardianApplier(store, classroom, 0, clock=lambda: NOW + dt.timedelta(days=121))
    later.apply_all([change(7, [MOM, DAD], complete=True)], refresh=True)
    states = {r.email: r.state for r in store.records.values()}
    assert states == {MOM.email: GuardianState.DECLINED, DAD.email: GuardianState.PENDING}
    assert list(classroom.pending) == [DAD.email] and classroom.calls.count("create") == 3
    # The relationship ends (no call) and starts again: Mom is invited again.
    later.apply_all([change(8, ended=[MOM])])
    later.apply_all([change(9, [MOM])])
    assert MOM.email in classroom.pending and classroom.calls.count("create") == 4


@pytest.mark.parametrize(
    "status,kind",
    [
        ("PERMISSION_DENIED", "guardian_access_off"),
        ("RESOURCE_EXHAUSTED", "guardian_link_limit"),
        ("INVALID_ARGUMENT", "guardian_email_invalid"),
        ("NOT_FOUND", "guardian_student_not_in_classroom"),
    ],
)
def test_refusals_are_problems_with_hints_and_acknowledged(status, kind):
    guardians, store, classroom = applier()
    code = {"PERMISSION_DENIED": 403, "RESOURCE_EXHAUSTED": 429, "INVALID_ARGUMENT": 400, "NOT_FOUND": 404}[status]
    err = ClassroomError(code, status, "refused")
    err.retryable = False  # the adapter marks the link limit final
    classroom.refuse = err
    outcome = guardians.apply_all([change(5, [MOM])])
    assert outcome.ack and [p.kind for p in outcome.problems] == [kind]
    assert outcome.problems[0].hint and outcome.problems[0].section_id == "guardians-kid1"
    [record] = store.records.values()
    assert record.state == GuardianState.PROBLEM and record.reason == status
    classroom.refuse = None
    guardians.apply_all([change(5, [MOM])], retry_problems=True)
    assert [r.state for r in store.records.values()] == [GuardianState.PENDING]
    assert outcome.problems[0].key in store.resolved


def test_a_transient_fault_saves_what_succeeded_and_asks_for_a_redelivery():
    guardians, store, classroom = applier()
    calls = {"n": 0}
    real = classroom.invite_guardian

    def flaky(student, email):
        calls["n"] += 1
        if calls["n"] == 2:
            raise ClassroomError(503, "UNAVAILABLE", "try later")
        return real(student, email)

    classroom.invite_guardian = flaky
    outcome = guardians.apply_all([change(5, [MOM, DAD])])
    assert outcome.status == "retry"
    # Dad's invitation succeeded and is saved; Mom's create failed: her intent stays for the redelivery.
    states = {r.email: r.state for r in store.records.values()}
    assert states == {DAD.email: GuardianState.PENDING, MOM.email: GuardianState.INVITING}
    again = guardians.apply_all([change(5, [MOM, DAD])])
    assert again.status == "applied" and len(classroom.pending) == 2


def test_the_roster_applier_hands_guardian_messages_over_or_records_a_problem_when_off():
    guardians, store, _ = applier()
    message = change(5, [MOM]).to_json()
    on = Applier(store, None, guardians=guardians)
    assert on.handle_message(message).status == "applied" and len(store.records) == 1
    off_store = FakeStore()
    off = Applier(off_store, None)
    outcome = off.handle_message(message, {"section_id": "guardians-kid1"})
    assert outcome.status == "rejected" and "GUARDIANS=off" in outcome.detail
    assert [p.kind for p in off_store.problems.values()] == ["bad_message"]


# -- OneRoster ---------------------------------------------------------------------------------------


def test_oneroster_agents_from_either_end_make_complete_changes_of_parents_and_guardians():
    from rostersync.domain.sources.oneroster_guardians import guardian_changes_from_read

    users = {
        "kid1": {"role": "student", "email": KID.email, "agents": [{"sourcedId": "mom1", "type": "user"}]},
        "kid2": {"roles": [{"role": "student"}], "email": "kid2@d.org"},
        "mom1": {"role": "parent", "email": MOM.email},
        "dad1": {"roles": [{"role": "guardian"}], "email": DAD.email, "agents": [{"sourcedId": "kid1"}]},
        "aunt": {"role": "relative", "email": "aunt@f.org", "agents": [{"sourcedId": "kid2"}]},
        "gone": {"role": "parent", "email": "gone@f.org", "status": "tobedeleted", "agents": [{"sourcedId": "kid2"}]},
    }
    changes = guardian_changes_from_read(users, TYPES, ev(3), "", also_students=["kid2"])
    assert [(c.student.clever_id, {p.clever_id for p in c.wanted}) for c in changes] == [
        ("kid1", {"mom1", "dad1"}),
        ("kid2", set()),  # a relative is not a guardian type; a deleted parent no longer counts
    ]
    assert all(c.complete and c.source == "oneroster" for c in changes)
    assert changes[1].kind == GuardianKind.GUARDIAN_REMOVED  # the brake counts a student losing everyone


def test_why_tells_each_guardian_state_in_a_sentence_with_its_event():
    from rostersync.admin import views as admin

    records = [
        {"email": MOM.email, "contact_id": "mom1", "state": "removed", "event_id": ev(7)},
        {
            "email": DAD.email,
            "contact_id": "dad1",
            "state": "problem",
            "reason": "PERMISSION_DENIED",
            "event_id": ev(5),
        },
    ]
    problems = [{"kind": "guardian_access_off", "message": "refused", "hint": "Turn on guardian access"}]
    text = admin.why_guardians("kid1", records, problems, [], user="dad1")
    assert "could not be invited: Classroom refused (PERMISSION_DENIED)" in text and MOM.email not in text
    assert "Hint: Turn on guardian access" in text
    assert "the sync removed them" in admin.why_guardians("kid1", records, [], [], user=MOM.email)
    assert "no guardian record" in admin.why_guardians("kid9", [], [], [])


# -- the poller ------------------------------------------------------------------------------------


def test_the_poller_publishes_contacts_at_the_bootstrap_and_holds_a_mass_of_guardian_removals():
    from rostersync.app.poller import Poller
    from rostersync.domain.brake import BrakeSettings
    from rostersync.domain.ports import Cursor
    from rostersync.retry import Deadline

    from tests.unit.fakes import FakePublisher, FakeStore
    from tests.unit.test_poller import Directory, FakeClever

    kids = [f"kid{n}" for n in range(10)]
    contacts = [contact(f"mom{n}", f"mom{n}@f.org", ((k, "Parent/Guardian"),)) for n, k in enumerate(kids)]

    class Clever(FakeClever):
        def contact_pages(self):
            yield contacts

    clever, store, publisher = Clever(), FakeStore(), FakePublisher()
    poller = Poller(clever, Directory(), store, publisher, Deadline(60), BrakeSettings(0.25, 0.05, 20, 3), TYPES)
    result = poller.poll()
    assert result.bootstrapped and result.guardian_changes == 10
    assert store.load_cursor().guardians == 10
    ended = {"roles": {"contact": {"student_relationships": []}}}
    ends = [event("updated", {**c, **ended}, {"roles": c["roles"]}, n=100 + i) for i, c in enumerate(contacts[:6])]
    clever.events = ends
    store.save_cursor(Cursor(ev(1), "", 0, 10))
    later = poller.poll()
    # Pages of 2 events: the first page's 2 removals are within max(3, 5% of 10); from the page that
    # passes the limit on, every guardian removal of the poll is held.
    assert later.guardian_changes == 2 and later.held_guardians == 4
    assert [c.student.clever_id for c in store.held[later.held_guardian_batch][1]] == kids[2:6]


def test_records_changed_by_another_writer_ask_for_a_redelivery_that_finds_the_calls_done():
    from rostersync.domain.guardians import StaleRecords

    guardians, store, classroom = applier()
    real = store.save_guardian_records
    raced = {"once": True}

    def racing(*args, **kwargs):
        if raced.pop("once", False):
            raise StaleRecords("changed meanwhile")
        return real(*args, **kwargs)

    store.save_guardian_records = racing
    outcome = guardians.apply_all([change(5, [MOM])])
    assert outcome.status == "retry" and not outcome.ack
    assert [r.state for r in store.records.values()] == [GuardianState.INVITING]  # only the intent
    again = guardians.apply_all([change(5, [MOM])])  # ALREADY_EXISTS after our intent: ours
    assert again.status == "applied" and len(classroom.pending) == 1
    [record] = store.records.values()
    assert record.state == GuardianState.PENDING and record.invitation_id == classroom.pending[MOM.email]
    assert record.origin == "sync"


class StoreKilledAfterTheCreate(Exception):
    """The instance died after Classroom's create answered and before the records' save."""


def crash_before_the_save(store: FakeStore):
    real = store.save_guardian_records

    def dies(*args, **kwargs):
        raise StoreKilledAfterTheCreate

    store.save_guardian_records = dies
    return lambda: setattr(store, "save_guardian_records", real)


def test_a_crash_between_our_create_and_its_save_is_adopted_as_ours_and_withdrawn_when_the_relationship_ends():
    guardians, store, classroom = applier()
    # Dad had an invitation from someone else (three days before the sync's first try).
    classroom.pending[DAD.email] = "by-hand"
    classroom.created["by-hand"] = (NOW - dt.timedelta(days=3)).isoformat()
    revive = crash_before_the_save(store)
    with pytest.raises(StoreKilledAfterTheCreate):
        guardians.apply_all([change(5, [MOM, DAD])])
    assert {r.email: r.state for r in store.records.values()} == {
        MOM.email: GuardianState.INVITING,
        DAD.email: GuardianState.INVITING,
    }
    assert MOM.email in classroom.pending  # Classroom made the sync's invitation; its save was lost
    revive()
    classroom.calls.clear()
    redelivered = guardians.apply_all([change(5, [MOM, DAD])])
    assert redelivered.status == "applied" and classroom.calls.count("create") == 2
    records = {r.email: r for r in store.records.values()}
    assert (records[MOM.email].state, records[MOM.email].origin) == (GuardianState.PENDING, "sync")
    assert records[MOM.email].invitation_id == classroom.pending[MOM.email]
    # Dad's invitation is older than the intent: someone else's, as without a crash.
    assert (records[DAD.email].state, records[DAD.email].origin) == (GuardianState.PENDING, "existing")
    assert len(classroom.pending) == 2  # no second invitation
    classroom.calls.clear()
    guardians.apply_all([change(5, [MOM, DAD])])  # delivered once more: nothing called, nothing written
    assert classroom.calls == []
    # Both relationships end: the sync's invitation is withdrawn, the other one stays.
    guardians.apply_all([change(6, ended=[MOM, DAD])])
    assert classroom.calls == ["patch"] and list(classroom.pending) == [DAD.email]
    states = {r.email: r.state for r in store.records.values()}
    assert states == {MOM.email: GuardianState.WITHDRAWN, DAD.email: GuardianState.RELEASED}


def test_a_relationship_ending_after_a_crash_finds_the_sync_s_invitation_even_once_accepted():
    guardians, store, classroom = applier()
    classroom.guardian_ids[DAD.email] = "g-dad-by-hand"  # a guardian before the sync, added by hand
    revive = crash_before_the_save(store)
    with pytest.raises(StoreKilledAfterTheCreate):
        guardians.apply_all([change(5, [MOM, DAD])])
    revive()
    classroom.accept(MOM.email)  # Mom accepts the invitation whose save was lost
    classroom.calls.clear()
    outcome = guardians.apply_all([change(6, ended=[MOM, DAD])])  # the newer event ends both
    assert outcome.status == "applied"
    # Mom: her invitation was made after the intent, so her guardian is the sync's and goes. Dad has
    # no invitation made after the intent: the hand-added guardian stays.
    assert classroom.guardian_ids == {DAD.email: "g-dad-by-hand"}
    assert classroom.calls.count("delete") == 1 and "create" not in classroom.calls
    states = {r.email: r.state for r in store.records.values()}
    assert states == {MOM.email: GuardianState.REMOVED, DAD.email: GuardianState.WITHDRAWN}


def test_the_intent_costs_one_write_per_new_invitation_and_none_when_nobody_is_invited():
    guardians, store, classroom = applier()
    guardians.apply_all([change(5, [MOM, DAD])])
    # Per new invitation: its intent, its record and its audit entry (without the intent: 2), in
    # two commits for the student (the intents, then the outcome) instead of one.
    assert (store.writes, store.commits) == (6, 2)
    classroom.calls.clear()
    store.writes = store.commits = 0
    guardians.apply_all([change(5, [MOM, DAD])])
    guardians.apply_all([change(7, [MOM, DAD])])  # a newer event naming the same guardians
    assert classroom.calls == [] and store.commits == 1  # the newer event id only: no intent


def test_the_reconcile_pass_holds_a_mass_of_guardian_removals_like_the_poller():
    from rostersync.app.guardian_reconcile import GuardianReconciler
    from rostersync.domain.ports import Cursor

    kids = [Person(f"kid{n}", f"kid{n}@district.example.org") for n in range(6)]
    moms = [Person(f"mom{n}", f"mom{n}@family.example.com") for n in range(6)]

    class Store(FakeStore):
        def __init__(self):
            super().__init__()
            self.held: dict = {}

        def guardian_student_ids(self):
            return {r.student_id for r in self.records.values()}

        def load_cursor(self):
            return Cursor(ev(50), "", 0, guardians=6)

        def hold_changes(self, reasons, changes, batch_id=None):
            self.held["held-1"] = (list(reasons), list(changes))
            return "held-1"

    class Clever:
        def __init__(self):
            self.contacts: list = []

        def contact_pages(self):
            yield self.contacts

    class Users:
        def emails(self, ids):
            return {k.clever_id: k.email for k in kids if k.clever_id in ids}

    store, classroom = Store(), FakeClassroom()
    guardians = GuardianApplier(store, classroom, 30, clock=lambda: NOW)
    for kid, mom in zip(kids, moms, strict=True):
        guardians.apply_all([change(5, [mom], student=kid)])
    clever = Clever()
    clever.contacts = [
        contact(m.clever_id, m.email, ((k.clever_id, "Parent/Guardian"),)) for k, m in zip(kids, moms, strict=True)
    ]
    brake = BrakeSettings(0.25, 0.05, 20, 2)
    reconciler = GuardianReconciler(clever, Users(), store, guardians, TYPES, brake)
    calm = reconciler.reconcile_all()
    assert calm.held == 0 and calm.students == 6 and len(classroom.pending) == 6
    # The SIS export lost every contact: 2 students' invitations are withdrawn (the limit), the
    # other 4 students' changes are held whole for an administrator, nothing called for them.
    clever.contacts = []
    classroom.calls.clear()
    result = reconciler.reconcile_all()
    assert result.held == 4 and result.held_batch == "held-1"
    assert classroom.calls.count("patch") == 2 and len(classroom.pending) == 4
    reasons, held = store.held["held-1"]
    assert "guardian removals in one reconcile pass (limit 2)" in reasons[0]
    assert [c.student.clever_id for c in held] == ["kid2", "kid3", "kid4", "kid5"]
    assert all(c.complete and c.wanted == () for c in held)
    states = [r.state for r in sorted(store.records.values(), key=lambda r: r.student_id)]
    assert states == [GuardianState.WITHDRAWN] * 2 + [GuardianState.PENDING] * 4

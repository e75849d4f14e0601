"""The OneRoster client and poll against providers that behave as real ones do (the simulator's
switches): each poll works or fails clearly, no switch ever produces a removal the district did
not make, and at the end every class is compared with the provider's data."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest
from rostersync.adapters.oneroster import DEFAULT_SCOPES, OneRosterClient, OneRosterError
from rostersync.app.oneroster_poller import OVERLAP, OneRosterPoller
from rostersync.domain.changes import ChangeKind, RosterChange
from rostersync.retry import Deadline, RetryPolicy

from tests.sims.oneroster_sim import OneRosterSimulator
from tests.unit.fakes import FakePublisher
from tests.unit.test_oneroster_poller import MemoryState

REMOVALS = {ChangeKind.STUDENT_REMOVED, ChangeKind.TEACHER_REMOVED, ChangeKind.SECTION_DELETED}
# Each switch: the simulator's settings, and whether its reads can be known complete.
SWITCHES = {
    "as_the_spec_says": ({}, True),
    "required_scope": ({"required_scope": DEFAULT_SCOPES["1.2"]}, True),
    "limit_capped_at_100_no_total_no_links": ({"max_limit": 100, "total_count": False, "link_header": False}, True),
    "limit_capped_at_100_with_links": ({"max_limit": 100}, True),
    "no_total_count": ({"total_count": False}, True),
    "delta_filter_rejected": ({"delta_filter": "reject"}, True),
    "delta_filter_ignored": ({"delta_filter": "ignore"}, True),
    "status_filter_rejected": ({"status_filter": "reject"}, True),
    "no_role_routes": ({"role_routes": False}, True),
    # These four page (limit capped at 100): their reads cannot be known complete.
    "unstable_order": ({"unstable_order": True, "max_limit": 100}, False),
    "unstable_order_no_total": ({"unstable_order": True, "max_limit": 100, "total_count": False}, False),
    "offset_ignored": ({"ignore_offset": True, "max_limit": 100}, False),
    "offset_ignored_no_total_no_links": (
        {"ignore_offset": True, "max_limit": 100, "total_count": False, "link_header": False},
        False,
    ),
}


def now() -> dt.datetime:
    """The poller's clock, ahead by its overlap: each delta asks for exactly what changed since the
    last poll started (the simulator stamps records with the real time)."""
    return dt.datetime.now(dt.UTC) + OVERLAP


def client(sim, version="1.2", page_size=200, **kwargs):
    return OneRosterClient(
        sim.base_url,
        version,
        sim.client_id,
        sim.client_secret,
        sim.token_url,
        page_size=page_size,
        retry=RetryPolicy(base_delay=0.01, max_delay=0.05, sleep=lambda s: None),
        deadline=kwargs.pop("deadline", Deadline(60)),
        **kwargs,
    )


def district(sim: OneRosterSimulator) -> None:
    """151 users and 161 enrollments: more than one capped page of each (the issue's provider)."""
    sim.add_user("t1", "teacher", "t1@d.example.org")
    sim.add_user("t2", "teacher", "t2@d.example.org")
    sim.add_user("g1", "guardian", "parent@home.example.org")
    sim.add_user("loner", "student", "loner@d.example.org")  # in no class yet
    for i in range(148):
        sim.add_user(f"s{i:03}", "student", f"s{i:03}@d.example.org")
    sim.add_class("c1", "Big PE")
    sim.add_class("c2", "Band")
    sim.enroll("e-t1", "c1", "t1", "teacher", primary=True)
    sim.enroll("e-t2", "c2", "t2", "teacher", primary=True)
    for i in range(148):
        sim.enroll(f"e-c1-{i:03}", "c1", f"s{i:03}", "student")
    for i in range(10):
        sim.enroll(f"e-c2-{i:03}", "c2", f"s{i:03}", "student")


def members(state) -> dict[str, set[str]]:
    return {
        "teachers": {e for e in state.members("teacher").values() if e},
        "students": {e for e in state.members("student").values() if e},
    }


@pytest.mark.parametrize("switch", list(SWITCHES))
def test_each_provider_behaviour_poll_after_poll(switch):
    settings, can_be_complete = SWITCHES[switch]
    with OneRosterSimulator(**settings) as sim:
        district(sim)
        state, publisher = MemoryState(), FakePublisher()
        poller = OneRosterPoller(client(sim), state, publisher, clock=now)

        first = poller.poll()
        assert first.full_read and first.complete is can_be_complete, first
        if not can_be_complete:
            assert first.incomplete_reasons and not state.cursor.last_full_read  # still to be done
            assert any(p.kind == "oneroster_incomplete_read" for p in state.problems)

        # The district's changes: an unchanged user enrolled for the first time, one enrollment
        # tobedeleted, one dropped without a trace (only a complete full read can see that).
        sim.enroll("e-loner", "c2", "loner", "student")
        sim.delete("enrollments", "e-c1-001")
        sim.delete("enrollments", "e-c1-002", silent=True)
        made = {("c1", "s001"), ("c1", "s002")}
        poller.poll()
        poller.poll(force_full=True)

        changes = [RosterChange.from_json(m) for m in publisher.messages]
        removed = {(c.section_id, c.person.clever_id if c.person else None) for c in changes if c.kind in REMOVALS}
        assert removed <= made, f"{switch}: removals the district did not make: {removed - made}"
        provider = sim.active_roster()
        if can_be_complete:
            assert removed == made
            for class_id, expected in provider.items():
                assert members(state.states[class_id]) == expected, class_id
            assert "loner@d.example.org" in members(state.states["c2"])["students"]
        else:
            # Never known complete: nothing missing is removed, and the poll says why.
            assert ("c1", "s002") not in removed
            assert state.status["complete"] is False and state.status["incomplete_reasons"]
            for class_id, expected in provider.items():
                got = members(state.states[class_id])
                assert got["students"] - expected["students"] <= {"s002@d.example.org"}


def test_a_delta_fetches_the_users_it_names_but_does_not_carry():
    with OneRosterSimulator() as sim:
        district(sim)
        state, publisher = MemoryState(), FakePublisher()
        poller = OneRosterPoller(client(sim), state, publisher, clock=now)
        poller.poll()
        publisher.messages.clear()
        sim.enroll("e-loner", "c2", "loner", "student")
        result = poller.poll()
        assert not result.full_read and result.users_fetched == 1
        (added,) = [RosterChange.from_json(m) for m in publisher.messages]
        assert added.kind == ChangeKind.STUDENT_ADDED and added.person.email == "loner@d.example.org"
        assert any(p.endswith("/users/loner") for _, p in sim.requests)


def test_full_reads_ask_for_active_teachers_and_students_only():
    with OneRosterSimulator() as sim:
        district(sim)
        read = client(sim).read()
        assert "g1" not in read.users and len(read.users) == 151
        paths = [p for _, p in sim.requests]
        assert any("/teachers?" in p for p in paths) and any("/students?" in p for p in paths)
        assert not any("/users?" in p for p in paths)
        assert all("status%3D%27active%27" in p for p in paths if "?" in p)


def test_a_rejected_delta_is_a_full_read_with_a_recorded_problem():
    with OneRosterSimulator(delta_filter="reject") as sim:
        district(sim)
        state = MemoryState()
        poller = OneRosterPoller(client(sim), state, FakePublisher(), clock=now)
        poller.poll()
        result = poller.poll()
        assert result.full_read and result.delta_refused and result.complete
        assert [p.kind for p in state.problems] == ["oneroster_delta_filter_refused"]


def test_an_ignored_delta_is_noticed():
    with OneRosterSimulator(delta_filter="ignore") as sim:
        district(sim)
        state = MemoryState()
        poller = OneRosterPoller(client(sim), state, FakePublisher(), clock=now)
        poller.poll()
        result = poller.poll()
        assert not result.full_read and result.delta_ignored and result.changes == 0
        assert "oneroster_delta_filter_ignored" in [p.kind for p in state.problems]


def test_scope_required_configured_and_granted():
    core = "https://purl.imsglobal.org/spec/or/v1p2/scope/roster-core.readonly"
    with OneRosterSimulator(required_scope=core) as sim:
        district(sim)
        with pytest.raises(OneRosterError) as err:
            client(sim).read()
        assert err.value.status == 400 and "scope" in str(err.value) and not err.value.retryable
        assert len(client(sim, scope=core).read().classes) == 2
        assert sim.token_requests[-1]["scope"] == core
    other = "https://purl.imsglobal.org/spec/or/v1p2/scope/resource.readonly"
    with OneRosterSimulator(granted_scope=other) as sim, pytest.raises(OneRosterError, match="granted the scope"):
        client(sim).read()
    with OneRosterSimulator() as sim:
        client(sim, scope="").read()
        assert "scope" not in sim.token_requests[-1]


def test_next_links_to_another_host_are_not_followed():
    with OneRosterSimulator(link_base="http://attacker.example.com") as sim:
        district(sim)
        read = client(sim, page_size=50).read()
        assert not read.complete and "another scheme or host" in read.incomplete_reasons[0]
        assert all(p.startswith("/ims/") for _, p in sim.requests if not p.startswith("/token"))


def test_an_ignored_offset_stops_at_the_repeated_page_instead_of_looping():
    with OneRosterSimulator(ignore_offset=True, total_count=False, link_header=False) as sim:
        district(sim)
        walk_requests = len(sim.requests)
        read = client(sim, page_size=50).read()
        assert not read.complete and any("repeated" in r for r in read.incomplete_reasons)
        # Two pages a collection (teachers fit in one page and are repeated once): no loop.
        assert len(sim.requests) - walk_requests <= 2 * 4 + 1


def test_the_deadline_is_checked_before_every_page():
    ticks = itertools.count()
    with OneRosterSimulator(max_limit=10) as sim:
        district(sim)
        deadline = Deadline(6, clock=lambda: next(ticks))
        with pytest.raises(OneRosterError, match="time budget ran out") as err:
            client(sim, page_size=10, deadline=deadline).read()
        assert not err.value.retryable
        assert sum(1 for m, _ in sim.requests if m == "GET") < 6


def test_many_missing_users_are_read_in_one_paged_read_of_users(monkeypatch):
    from rostersync.adapters import oneroster

    monkeypatch.setattr(oneroster, "MAX_SINGLE_USER_READS", 3)
    with OneRosterSimulator() as sim:
        district(sim)
        sim.add_user("aide1", "aide", "aide1@d.example.org")  # not in /teachers or /students
        wanted = {"loner", "s001", "s002", "aide1", "nobody"}
        found = client(sim, page_size=50).users(wanted)
        assert set(found) == wanted - {"nobody"}
        assert not any("/users/" in p for _, p in sim.requests)

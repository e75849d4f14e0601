"""The OneRoster adapter and poll against the OneRoster simulator over HTTP, for 1.1 and 1.2."""

import datetime as dt

import pytest
from rostersync.adapters.oneroster import OneRosterClient, OneRosterError
from rostersync.app.oneroster_poller import OneRosterPoller
from rostersync.domain.changes import ChangeKind, RosterChange
from rostersync.retry import Deadline, RetryPolicy

from tests.sims.oneroster_sim import OneRosterSimulator
from tests.unit.fakes import FakePublisher
from tests.unit.test_oneroster_poller import MemoryState


@pytest.fixture
def sim():
    with OneRosterSimulator() as s:
        s.add_user("t1", "teacher", "Ann.Smith@D.example.org")
        for i in range(4):
            s.add_user(f"s{i}", "student", f"kid{i}@d.example.org")
        s.add_class("c1", "Biology")
        s.enroll("e-t1", "c1", "t1", "teacher", primary=True)
        for i in range(4):
            s.enroll(f"e-s{i}", "c1", f"s{i}", "student")
        yield s


def client(sim, version, secret=None, page_size=2):
    return OneRosterClient(
        sim.base_url,
        version,
        sim.client_id,
        secret or sim.client_secret,
        sim.token_url,
        page_size=page_size,
        retry=RetryPolicy(base_delay=0.01, max_delay=0.05, sleep=lambda s: None),
        deadline=Deadline(30),
    )


@pytest.mark.parametrize("version", ["1.1", "1.2"])
def test_a_full_read_pages_through_every_collection(sim, version):
    c = client(sim, version)
    read = c.read()
    assert read.full and set(read.classes) == {"c1"} and len(read.users) == 5 and len(read.enrollments) == 5
    paths = [p for m, p in sim.requests if m == "GET"]
    assert sum("/enrollments" in p for p in paths) == 3  # 5 records, 2 a page
    assert all(
        p.startswith({"1.1": "/ims/oneroster/v1p1", "1.2": "/ims/oneroster/rostering/v1p2"}[version]) for p in paths
    )


def test_a_delta_read_asks_with_the_filter_and_gets_only_changes(sim):
    c = client(sim, "1.2")
    sim.delete("enrollments", "e-s1")
    # Just before the delete: records made in that same millisecond come back too, nothing older.
    changed_at = dt.datetime.fromisoformat(
        sim.records["enrollments"]["e-s1"]["dateLastModified"].replace("Z", "+00:00")
    )
    since = (changed_at - dt.timedelta(milliseconds=1)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    read = c.read(since=since)
    assert not read.full and read.enrollments["e-s1"]["status"] == "tobedeleted"
    every = [r for kind in (read.classes, read.users, read.enrollments) for r in kind.values()]
    assert all(r["dateLastModified"] > since for r in every)
    assert any("filter=dateLastModified" in p for _, p in sim.requests)


def test_bad_credentials_fail_without_retrying_and_an_expired_token_is_fetched_again(sim):
    with pytest.raises(OneRosterError) as err:
        client(sim, "1.2", secret="wrong").read()
    assert err.value.status == 401
    c = client(sim, "1.2")
    list(c.pages("classes"))
    posts_before = sum(1 for m, _ in sim.requests if m == "POST")
    sim.expire_tokens()
    assert [r["sourcedId"] for p in c.pages("classes") for r in p] == ["c1"]
    assert sum(1 for m, _ in sim.requests if m == "POST") == posts_before + 1


def test_429_is_retried(sim):
    sim.force_429(2, retry_after=0)
    assert len(client(sim, "1.1").read().users) == 5


@pytest.mark.parametrize("version", ["1.1", "1.2"])
def test_poll_against_the_simulator_new_class_then_removals_by_tobedeleted_and_by_absence(sim, version):
    state, publisher = MemoryState(), FakePublisher()
    clock = [dt.datetime.now(dt.UTC)]
    poller = OneRosterPoller(client(sim, version), state, publisher, clock=lambda: clock[0])
    poller.poll()
    first = [RosterChange.from_json(m) for m in publisher.messages]
    assert [c.kind for c in first] == [ChangeKind.COURSE_WANTED]
    assert first[0].section.primary_teacher.email == "ann.smith@d.example.org"
    assert len(first[0].section.students) == 4

    publisher.messages.clear()
    sim.delete("enrollments", "e-s1")  # tobedeleted: a delta sees it
    sim.delete("enrollments", "e-s2", silent=True)  # gone: only a full read sees it
    poller.poll()
    assert [(c.kind, c.person.clever_id) for c in map(RosterChange.from_json, publisher.messages)] == [
        (ChangeKind.STUDENT_REMOVED, "s1")
    ]
    publisher.messages.clear()
    poller.poll(force_full=True)
    assert [(c.kind, c.person.clever_id) for c in map(RosterChange.from_json, publisher.messages)] == [
        (ChangeKind.STUDENT_REMOVED, "s2")
    ]

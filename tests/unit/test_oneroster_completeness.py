"""A read not known complete infers no removal, and what the poller does with the cursor then."""

import datetime as dt

from rostersync.app.oneroster_poller import FULL_READ_RETRY, OneRosterPoller
from rostersync.domain.changes import ChangeKind, RosterChange
from rostersync.domain.sources.oneroster_diff import ClassState, Enrollment, EventIds, RosterRead, diff

from tests.unit.fakes import FakePublisher
from tests.unit.test_oneroster_poller import T0, FakeOneRoster, MemoryState

BEFORE = {
    "c1": ClassState(
        "c1",
        "Bio",
        enrollments={
            "e-t": Enrollment("t", "teacher", True, "t@d.org"),
            "e-a": Enrollment("a", "student", False, "a@d.org"),
            "e-b": Enrollment("b", "student", False, "b@d.org"),
        },
    ),
    "c2": ClassState("c2", "Chem", enrollments={"e-t2": Enrollment("t", "teacher", True, "t@d.org")}),
}


def full_read(complete: bool) -> RosterRead:
    """c2 and b's enrollment missing; a new student c."""
    read = RosterRead(full=True, complete=complete)
    read.classes["c1"] = {"sourcedId": "c1", "title": "Bio", "status": "active"}
    for enr, user, role in (("e-t", "t", "teacher"), ("e-a", "a", "student"), ("e-c", "c", "student")):
        teacher = role == "teacher"
        read.enrollments[enr] = {"sourcedId": enr, "class": "c1", "user": user, "role": role, "primary": teacher}
        read.users[user] = {"sourcedId": user, "email": f"{user}@d.org"}
    return read


def kinds(changes):
    return sorted((c.kind.value, c.section_id, c.person.clever_id if c.person else None) for c in changes)


def test_a_complete_full_read_removes_what_is_missing_an_incomplete_one_does_not():
    complete = diff(BEFORE, full_read(True), EventIds(T0))
    assert kinds(complete.changes) == kinds(
        [
            RosterChange(ChangeKind.STUDENT_ADDED, "c1", "", "", None, _p("c")),
            RosterChange(ChangeKind.STUDENT_REMOVED, "c1", "", "", None, _p("b")),
            RosterChange(ChangeKind.SECTION_DELETED, "c2", "", "", None),
        ]
    )
    partial = diff(BEFORE, full_read(False), EventIds(T0))
    assert kinds(partial.changes) == [("student_added", "c1", "c")]
    assert set(partial.states["c1"].members("student")) == {"a", "b", "c"}


def _p(uid):
    from rostersync.domain.changes import Person

    return Person(uid, f"{uid}@d.org")


class IncompleteOnce(FakeOneRoster):
    """Full reads are not known complete while `broken` (a provider ignoring offset)."""

    broken = True

    def read(self, since=None):
        read = super().read(since)
        if since is None and self.broken:
            read.complete, read.incomplete_reasons = False, ["users: page 2 repeated records already read"]
        return read


def test_an_incomplete_full_read_keeps_the_full_read_due_and_deltas_run_meanwhile():
    source, state, publisher = IncompleteOnce(), MemoryState(), FakePublisher()
    source.put("users", "t", email="t@d.org")
    source.put("classes", "c1", title="Bio")
    source.put("enrollments", "e-t", **{"class": "c1", "user": "t", "role": "teacher", "primary": True})
    now = [T0]
    poller = OneRosterPoller(source, state, publisher, clock=lambda: now[0])
    first = poller.poll()
    assert first.full_read and not first.complete
    assert state.cursor.last_full_read == "" and state.cursor.last_incomplete_full_read
    assert state.status["complete"] is False and "repeated" in state.status["incomplete_reasons"][0]
    now[0] += dt.timedelta(minutes=10)
    assert not poller.poll().full_read  # a delta: tobedeleted records still arrive
    assert [p.kind for p in state.problems] == ["oneroster_incomplete_read"]  # open until a full read completes
    now[0] += FULL_READ_RETRY
    source.broken = False
    again = poller.poll()
    assert again.full_read and again.complete
    assert "oneroster_incomplete_read" in state.resolved
    assert not [p for p in state.problems if p.kind == "oneroster_incomplete_read"]
    assert state.cursor.last_full_read and not state.cursor.last_incomplete_full_read

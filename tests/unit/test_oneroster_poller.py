"""The OneRoster poll: full vs. delta reads, the cursor, and publish-before-save crash safety."""

import datetime as dt

import pytest
from rostersync.app.oneroster_poller import OneRosterPoller
from rostersync.domain.changes import ChangeKind, RosterChange
from rostersync.domain.sources.oneroster_diff import RosterRead

from tests.unit.fakes import FakePublisher

T0 = dt.datetime(2026, 9, 1, 12, 0, tzinfo=dt.UTC)


class FakeOneRoster:
    """A district as OneRoster records; `read` answers a delta with what changed after `since`."""

    def __init__(self):
        self.records = {"classes": {}, "users": {}, "enrollments": {}}
        self.modified = {}  # sourcedId -> ISO time
        self.reads = []
        self.now = T0

    def put(self, kind, sourced_id, **fields):
        self.records[kind][sourced_id] = {"sourcedId": sourced_id, "status": "active"} | fields
        self.modified[sourced_id] = self.now.isoformat().replace("+00:00", "Z")

    def drop(self, kind, sourced_id):
        """Gone without a trace: no tobedeleted record, so only a full read can see it."""
        del self.records[kind][sourced_id]

    def users(self, ids):
        self.user_lookups = getattr(self, "user_lookups", []) + [set(ids)]
        return {i: self.records["users"][i] for i in ids if i in self.records["users"]}

    def read(self, since=None):
        self.reads.append(since)
        out = RosterRead(full=since is None)
        for kind, target in (("classes", out.classes), ("users", out.users), ("enrollments", out.enrollments)):
            for sid, record in self.records[kind].items():
                if since is None or self.modified[sid] > since:
                    target[sid] = record
        return out


class MemoryState:
    def __init__(self):
        self.cursor = None
        self.states = {}
        self.problems = []
        self.status = None

    def load_oneroster_cursor(self):
        return self.cursor

    def save_oneroster_cursor(self, cursor):
        self.cursor = cursor

    def load_class_states(self):
        return dict(self.states)

    def save_class_states(self, states):
        self.states.update(states)

    def save_oneroster_poll_status(self, status):
        self.status = status

    def record_problems(self, problems):
        self.problems += problems

    def load_guardian_links(self, student_ids=None):
        links = getattr(self, "guardian_links", None)
        if student_ids is None or links is None:
            return None if links is None else dict(links)
        return {s: links[s] for s in student_ids if s in links}

    def students_linked_to(self, guardian_ids):
        out = {}
        for sid, link in (getattr(self, "guardian_links", None) or {}).items():
            for gid in set(link.guardian_ids) & set(guardian_ids):
                out.setdefault(gid, set()).add(sid)
        return out

    def save_guardian_links(self, links):
        saved = getattr(self, "guardian_links", None) or {}
        for sid, link in links.items():
            if link is None:
                saved.pop(sid, None)
            else:
                saved[sid] = link
        self.guardian_links = saved

    def resolve_provider_problems(self, kinds):
        self.resolved = getattr(self, "resolved", []) + sorted(kinds)
        self.problems = [p for p in self.problems if p.section_id != "oneroster:provider" or p.kind not in kinds]


@pytest.fixture
def district():
    src = FakeOneRoster()
    for uid in ("t1", "s1", "s2"):
        src.put("users", uid, email=f"{uid}@school.org")
    src.put("classes", "c1", title="Biology")
    src.put(
        "enrollments", "e1", **{"class": {"sourcedId": "c1"}, "user": {"sourcedId": "t1"}}, role="teacher", primary=True
    )
    src.put("enrollments", "e2", **{"class": {"sourcedId": "c1"}, "user": {"sourcedId": "s1"}}, role="student")
    src.put("enrollments", "e3", **{"class": {"sourcedId": "c1"}, "user": {"sourcedId": "s2"}}, role="student")
    return src


def make(src, state, publisher, clock):
    return OneRosterPoller(src, state, publisher, full_read_every=dt.timedelta(hours=24), clock=lambda: clock[0])


def kinds(publisher):
    return [(c.kind, c.person.clever_id if c.person else None) for c in map(RosterChange.from_json, publisher.messages)]


def test_first_poll_is_full_then_deltas_then_the_nightly_full_read_sees_a_silent_removal(district):
    state, clock = MemoryState(), [T0]
    publisher = FakePublisher()
    poller = make(district, state, publisher, clock)
    first = poller.poll()
    assert first.full_read and kinds(publisher) == [(ChangeKind.COURSE_WANTED, None)]

    # A delta: a tobedeleted enrollment removes s1; s2 vanishes silently and a delta cannot tell.
    clock[0] = district.now = T0 + dt.timedelta(minutes=10)
    district.put(
        "enrollments",
        "e2",
        **{"class": {"sourcedId": "c1"}, "user": {"sourcedId": "s1"}},
        role="student",
        status="tobedeleted",
    )
    district.drop("enrollments", "e3")
    publisher.messages.clear()
    second = poller.poll()
    assert not second.full_read and district.reads[-1] == "2026-09-01T11:55:00.000Z"  # the first read, less the overlap
    assert kinds(publisher) == [(ChangeKind.STUDENT_REMOVED, "s1")]

    # The full read a day later catches the silent removal.
    clock[0] = T0 + dt.timedelta(hours=24, minutes=1)
    publisher.messages.clear()
    third = poller.poll()
    assert third.full_read and kinds(publisher) == [(ChangeKind.STUDENT_REMOVED, "s2")]
    assert state.status["outcome"] == "ok"


def test_a_failed_publish_saves_nothing_so_the_next_poll_publishes_again(district):
    state, clock = MemoryState(), [T0]
    failing = FakePublisher()
    failing.fail = True
    with pytest.raises(RuntimeError):
        make(district, state, failing, clock).poll()
    assert state.cursor is None and state.states == {} and state.status["outcome"] == "failed"
    publisher = FakePublisher()
    make(district, state, publisher, clock).poll()
    assert kinds(publisher) == [(ChangeKind.COURSE_WANTED, None)]
    assert state.cursor is not None and set(state.states) == {"c1"}


def test_a_bad_record_is_recorded_as_a_problem(district):
    district.put("enrollments", "bad", role="student", user={"sourcedId": "s1"})
    state = MemoryState()
    result = make(district, state, FakePublisher(), [T0]).poll()
    assert result.bad_records == 1
    assert state.problems[0].kind == "bad_oneroster_record" and "bad" in state.problems[0].message


# -- guardians from deltas (GUARDIANS=invite) --------------------------------------------------------


def guardians_published(publisher):
    from rostersync.domain.guardians import decode_guardian_message

    out = {}
    for message in publisher.messages:
        for change in decode_guardian_message(message) or []:
            assert change.complete
            out[change.student.clever_id] = sorted(p.clever_id for p in change.wanted)
    publisher.messages.clear()
    return out


def test_a_delta_states_the_guardians_of_students_whose_links_changed_reading_what_it_lacks(district):
    def agents(*ids):
        return [{"sourcedId": i, "type": "user"} for i in ids]

    district.put("users", "t1", email="t1@school.org", role="teacher")
    district.put("users", "s1", email="s1@school.org", role="student", agents=agents("mom1"))
    district.put("users", "s2", email="s2@school.org", role="student")
    district.put("users", "mom1", email="mom1@family.org", role="parent", agents=agents("s1"))
    district.put("users", "dad1", email="dad1@family.org", role="guardian", agents=agents("s2"))  # his end only
    # The full read well after T0, so the deltas (read from 5 minutes before the last read) carry only what follows.
    state, clock, publisher = MemoryState(), [T0 + dt.timedelta(minutes=10)], FakePublisher()
    poller = OneRosterPoller(
        district, state, publisher, clock=lambda: clock[0], guardian_types=("Parent/Guardian",), guardian_students=set
    )

    def delta():
        """The next changes, stamped now; the poll 6 minutes later, so the one after (which reads
        from 5 minutes before this one) does not carry them again."""
        district.now = clock[0] + dt.timedelta(minutes=10)
        clock[0] = district.now + dt.timedelta(minutes=6)

    assert poller.poll().guardian_changes == 2  # the full read: everyone's
    assert guardians_published(publisher) == {"s1": ["mom1"], "s2": ["dad1"]}

    # s1's own record adds gran1 (a new user): s1 restated; mom1, not in the delta, is read.
    delta()
    district.put("users", "gran1", email="gran1@family.org", role="guardian")
    district.put("users", "s1", email="s1@school.org", role="student", agents=agents("mom1", "gran1"))
    district.user_lookups = []
    result = poller.poll()
    assert not result.full_read and result.guardian_changes == 1
    assert guardians_published(publisher) == {"s1": ["gran1", "mom1"]}
    assert district.user_lookups == [{"mom1"}] and result.guardian_users_fetched == 1

    # s2's record changes (a new email), still naming nobody: dad1, linked from his end only at the
    # last read, is read, so his link stands. The student's new address restates it.
    delta()
    district.put("users", "s2", email="s2.new@school.org", role="student")
    district.user_lookups = []
    assert poller.poll().guardian_changes == 1
    assert guardians_published(publisher) == {"s2": ["dad1"]}
    assert district.user_lookups == [{"dad1"}]

    # A teacher's change concerns nobody's guardians: no read, no change.
    delta()
    district.put("users", "t1", email="t1@school.org", role="teacher", givenName="T")
    district.user_lookups = []
    assert poller.poll().guardian_changes == 0 and district.user_lookups == []

    # dad1 drops s2 from his own record: s2 (not in the delta) is read and now has nobody.
    delta()
    district.put("users", "dad1", email="dad1@family.org", role="guardian", agents=[])
    district.user_lookups = []
    result = poller.poll()
    assert guardians_published(publisher) == {"s2": []}
    assert district.user_lookups == [{"s2"}]
    assert "s2" not in state.guardian_links

    # mom1 is deleted (tobedeleted): s1 keeps gran1 only.
    delta()
    district.put("users", "mom1", email="mom1@family.org", role="parent", agents=agents("s1"), status="tobedeleted")
    clock[0] = district.now
    poller.poll()
    assert guardians_published(publisher) == {"s1": ["gran1"]}

    # The same span read again (a delta overlaps the last by 5 minutes): mom1 again, nothing published.
    clock[0] = district.now + dt.timedelta(minutes=1)
    assert poller.poll().users_read == 1 and guardians_published(publisher) == {}

    # s1 leaves the district (tobedeleted): a change naming nobody, so the sync's invitations end.
    delta()
    district.put("users", "s1", email="s1@school.org", role="student", agents=agents("gran1"), status="tobedeleted")
    poller.poll()
    assert guardians_published(publisher) == {"s1": []} and state.guardian_links == {}


def test_a_full_read_not_known_complete_states_no_guardians(district):
    """Missing parents would be missing links: a complete change from such a read could withdraw them."""
    district.put("users", "s1", email="s1@school.org", role="student", agents=[{"sourcedId": "mom1"}])
    district.put("users", "mom1", email="mom1@family.org", role="parent")
    read = district.read

    def incomplete(since=None):
        out = read(since)
        out.complete, out.incomplete_reasons = False, ["X-Total-Count says 9, 6 read"]
        return out

    district.read = incomplete
    state, publisher = MemoryState(), FakePublisher()
    poller = OneRosterPoller(district, state, publisher, clock=lambda: T0, guardian_types=("Parent/Guardian",))
    assert poller.poll().guardian_changes == 0 and guardians_published(publisher) == {}
    district.read = read
    assert poller.poll(force_full=True).guardian_changes == 1
    assert guardians_published(publisher) == {"s1": ["mom1"]}


def test_a_delta_answered_in_full_or_carrying_many_parents_publishes_only_the_changed_students(district, monkeypatch):
    """A provider that refuses the delta filter is read in full every poll: restating every student
    each time would make the applier read back every student's invitations every 10 minutes."""
    import rostersync.app.oneroster_poller as module

    for s in ("s1", "s2"):
        district.put("users", s, email=f"{s}@school.org", role="student", agents=[{"sourcedId": f"mom-{s}"}])
        district.put("users", f"mom-{s}", email=f"mom-{s}@family.org", role="parent")
    read = district.read

    def refused(since=None):
        out = read(None)  # everything, as the poller's fallback reads it
        out.delta_refused = since is not None
        return out

    district.read = refused
    state, publisher, clock = MemoryState(), FakePublisher(), [T0]
    poller = OneRosterPoller(district, state, publisher, clock=lambda: clock[0], guardian_types=("Parent/Guardian",))
    assert poller.poll().guardian_changes == 2
    guardians_published(publisher)
    clock[0] += dt.timedelta(minutes=10)
    assert poller.poll().guardian_changes == 0  # read in full, nothing changed: nothing published
    district.put("users", "dad-s2", email="dad-s2@family.org", role="guardian", agents=[{"sourcedId": "s2"}])
    clock[0] += dt.timedelta(minutes=10)
    poller.poll()
    assert guardians_published(publisher) == {"s2": ["dad-s2", "mom-s2"]}

    # A delta carrying more parents than are worth querying 30 at a time reads the saved links whole.
    district.read = read
    monkeypatch.setattr(module, "MANY_GUARDIANS", 1)
    district.now = clock[0] + dt.timedelta(minutes=10)
    district.put("users", "dad-s2", email="dad-s2@family.org", role="guardian", agents=[])
    district.put("users", "mom-s1", email="mom-s1@family.org", role="parent", status="tobedeleted")
    clock[0] = district.now + dt.timedelta(minutes=6)
    poller.poll()
    assert guardians_published(publisher) == {"s1": [], "s2": ["mom-s2"]}

"""One poll cycle, driven with fakes of Clever, Firestore and Pub/Sub."""

import json

import pytest
from rostersync.app.poller import BEGINNING, Poller
from rostersync.domain.ports import Cursor, CursorExpiredError
from rostersync.retry import Deadline

from tests.unit.clever_payloads import EMAILS, STUDENTS, event, section
from tests.unit.fakes import FakePublisher, FakeStore


class FakeClever:
    def __init__(self, sections=(), events=(), page=2):
        self.sections = list(sections)
        self.events = list(events)
        self.page = page
        self.expired_before = ""
        self.calls = []

    def newest_event_id(self):
        self.calls.append("newest")
        return self.events[-1]["id"] if self.events else None

    def event_pages(self, after):
        self.calls.append(f"events>{after}")
        if after and after < self.expired_before:
            raise CursorExpiredError(after)
        todo = [e for e in self.events if after is None or e["id"] > after]
        for i in range(0, len(todo), self.page):
            yield todo[i : i + self.page]

    def section(self, section_id):
        return next((s for s in self.sections if s["id"] == section_id), None)

    def section_pages(self, after=None):
        self.calls.append(f"sections>{after}" if after else "sections")
        todo = sorted((s for s in self.sections if after is None or s["id"] > after), key=lambda s: s["id"])
        for i in range(0, len(todo), self.page):
            yield todo[i : i + self.page]


class Directory:
    def __init__(self):
        self.asked = []

    def emails(self, ids):
        ids = set(ids)
        self.asked.append(ids)
        return {i: EMAILS.get(i) for i in ids}


def ev_id(n):
    return f"6553a0f27d0c8a0001b{n:05d}"


def sec(n, **kw):
    return section(id=f"5c40b5127d0c8a0001a7f{n:03d}", name=f"Section {n}", **kw)


def make(clever):
    store, pub = FakeStore(), FakePublisher()
    return store, pub, Poller(clever, Directory(), store, pub, Deadline(60))


def decoded(pub):
    return [json.loads(m) for m in pub.messages]


def test_bootstrap_notes_newest_event_first_then_reads_sections_then_follows_events():
    clever = FakeClever(sections=[sec(1), sec(2), sec(3)], events=[event(ev_id(1), "sections.created", sec(1))])
    store, pub, poller = make(clever)
    result = poller.poll()
    assert clever.calls[:2] == ["newest", "sections"]
    assert clever.calls[2] == f"events>{ev_id(1)}"
    assert result.bootstrapped and result.sections_read == 3 and result.published == 3
    assert [m["kind"] for m in decoded(pub)] == ["course_wanted"] * 3
    assert {m["event_id"] for m in decoded(pub)} == {ev_id(1)}
    assert store.cursor == Cursor(
        ev_id(1), store.cursor.bootstrapped_at, memberships=3 * (1 + 5), caught_up_at=result.caught_up_at
    )
    assert result.caught_up_at  # read to the end: the cursor's age counts from this poll


def test_bootstrap_of_a_district_without_events_starts_from_the_beginning():
    clever = FakeClever(sections=[sec(1)])
    store, pub, poller = make(clever)
    poller.poll()
    assert store.cursor.last_event_id == BEGINNING
    clever.events.append(event(ev_id(1), "sections.updated", sec(1, students=STUDENTS[:6]), {"students": STUDENTS[:5]}))
    result = poller.poll()
    assert result.published == 1 and clever.calls[-1] == "events>None"


def test_events_become_changes_and_the_cursor_follows_each_page():
    events = [
        event(ev_id(2), "sections.updated", sec(1, students=STUDENTS[:6]), {"students": STUDENTS[:5]}),
        event(ev_id(3), "users.updated", {"id": STUDENTS[0]}, {"email": "x@y"}),
        event(ev_id(4), "sections.updated", sec(1, students=STUDENTS[:4]), {"students": STUDENTS[:6]}),
    ]
    clever = FakeClever(events=events)
    store, pub, poller = make(clever)
    store.cursor = Cursor(ev_id(1))
    result = poller.poll()
    assert [m["kind"] for m in decoded(pub)] == ["student_added", "student_removed", "student_removed"]
    assert result.events_read == 3 and result.events_skipped == 1
    assert store.cursor.last_event_id == ev_id(4)
    assert all(m["section_id"] == sec(1)["id"] for m in decoded(pub))


def test_idle_poll_costs_one_read_and_one_write():
    clever = FakeClever(events=[event(ev_id(1), "sections.created", sec(1))])
    store, pub, poller = make(clever)
    store.cursor = Cursor(ev_id(1))
    result = poller.poll()
    assert result.published == 0
    assert sum(store.ops.values()) == 2


def test_a_paused_sync_reads_nothing_from_clever_and_costs_one_read_and_one_write():
    clever = FakeClever(events=[event(ev_id(2), "sections.created", sec(1))])
    store, pub, poller = make(clever)
    store.cursor, store.paused = Cursor(ev_id(1)), True
    result = poller.poll()
    assert result.outcome == "paused" and result.published == 0 and pub.messages == []
    assert clever.calls == [] and store.cursor.last_event_id == ev_id(1)
    assert store.poll_status["outcome"] == "paused"
    assert sum(store.ops.values()) == 2
    store.paused = False
    assert poller.poll().published == 1


def test_failed_publish_does_not_move_the_cursor():
    clever = FakeClever(events=[event(ev_id(2), "sections.created", sec(1))])
    store, pub, poller = make(clever)
    store.cursor = Cursor(ev_id(1))
    pub.fail = True
    with pytest.raises(RuntimeError):
        poller.poll()
    assert store.cursor == Cursor(ev_id(1))
    pub.fail = False
    assert poller.poll().published == 1 and store.cursor.last_event_id == ev_id(2)


def test_expired_cursor_bootstraps_again_instead_of_leaving_a_gap():
    clever = FakeClever(sections=[sec(1), sec(2)], events=[event(ev_id(9), "sections.created", sec(2))])
    clever.expired_before = ev_id(5)
    store, pub, poller = make(clever)
    store.cursor = Cursor(ev_id(1))
    result = poller.poll()
    assert result.rebootstrapped and result.published == 2
    assert store.cursor.last_event_id == ev_id(9)


def test_a_bad_event_is_recorded_and_the_rest_still_publish():
    events = [
        {"id": ev_id(2), "type": "sections.updated", "data": {"object": {"id": "x"}}},
        event(ev_id(3), "sections.created", sec(1)),
    ]
    clever = FakeClever(events=events)
    store, pub, poller = make(clever)
    store.cursor = Cursor(ev_id(1))
    result = poller.poll()
    assert result.bad_events == 1 and result.published == 1
    assert store.cursor.last_event_id == ev_id(3)
    [problem] = store.open_problems().values()
    assert problem["kind"] == "bad_clever_record" and ev_id(2) in problem["message"]


def test_one_directory_lookup_per_page():
    events = [
        event(ev_id(i), "sections.updated", sec(1, students=STUDENTS[: i + 1]), {"students": STUDENTS[:i]})
        for i in range(2, 6)
    ]
    clever = FakeClever(events=events, page=4)
    store, pub, poller = make(clever)
    store.cursor = Cursor(ev_id(1))
    poller.poll()
    assert len(poller._users.asked) == 1


def test_a_changed_email_makes_each_section_of_the_user_converge():
    clever = FakeClever(sections=[sec(1), sec(2)])
    clever.events = [
        event(ev_id(2), "users.updated", {"id": STUDENTS[0], "email": "new@district.example.org"}, {"email": "x"}),
        event(ev_id(3), "users.updated", {"id": STUDENTS[1], "name": {"first": "A"}}, {"name": {"first": "B"}}),
    ]
    store, pub, poller = make(clever)
    store.cursor = Cursor(ev_id(1))
    store.links = {sec(1)["id"]: {"members": {STUDENTS[0]: {}}}, sec(2)["id"]: {"members": {}}}
    result = poller.poll()
    [message] = decoded(pub)
    assert message["kind"] == "course_wanted" and message["section_id"] == sec(1)["id"]
    emails = {p["clever_id"]: p["email"] for p in message["section"]["students"]}
    assert emails[STUDENTS[0]] == "new@district.example.org"
    assert result.events_skipped == 1  # the name change


def test_a_bootstrap_cut_by_the_time_budget_is_continued_by_the_next_poll_not_begun_again():
    sections = [sec(n) for n in range(1, 8)]
    clever = FakeClever(sections=sections, events=[event(ev_id(1), "sections.created", sec(1))])
    pages_read = []
    section_pages = clever.section_pages

    def counted(after=None):
        for page in section_pages(after):
            pages_read.append([s["id"] for s in page])
            yield page

    clever.section_pages = counted
    store, pub = FakeStore(), FakePublisher()
    budget = Deadline(60)
    budget.expired = lambda: len(pages_read) >= 2  # the budget runs out after two pages
    first = Poller(clever, Directory(), store, pub, budget).poll()
    assert first.outcome == "partial" and not first.bootstrapped and first.sections_read == 4
    assert store.cursor is None  # no cursor yet: events are not followed before every section is read
    assert store.bootstrap.marker == ev_id(1) and store.bootstrap.after == sections[3]["id"]
    assert store.bootstrap.memberships == 4 * (1 + 5)

    second = Poller(clever, Directory(), store, pub, Deadline(60)).poll()
    assert second.bootstrapped and second.sections_read == 3
    assert clever.calls.count("newest") == 1  # the same marker: no second look for the newest event
    assert f"sections>{sections[3]['id']}" in clever.calls
    assert [m["section_id"] for m in decoded(pub)] == [s["id"] for s in sections]  # each once, in order
    assert store.cursor.last_event_id == ev_id(1) and store.cursor.memberships == 7 * (1 + 5)
    assert store.bootstrap is None
    assert clever.calls[-1] == f"events>{ev_id(1)}"

"""Issue 12 part B with fakes: the expired cursor found before events are trusted, the brake's
defaults on both sides (a pilot district's normal day, a school emptied), and a section whose
owner had no account tried again on its next change and in the reconcile pass."""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter

from rostersync.app.applier import Applier
from rostersync.app.poller import BEGINNING, Poller, event_time
from rostersync.domain.brake import BrakeSettings, apply_brake
from rostersync.domain.changes import ChangeKind, Person, RosterChange, SectionSnapshot
from rostersync.domain.links import course_alias
from rostersync.domain.ports import Cursor
from rostersync.domain.rules import CreateCourse, plan
from rostersync.domain.sources.clever_events import changes_from_event
from rostersync.retry import Deadline

from tests.unit.clever_payloads import EMAILS, STUDENTS, TEACHER_A, event, section
from tests.unit.fakes import FakeClassroom, FakePublisher, FakeStore
from tests.unit.test_poller import Directory, FakeClever, sec

NOW = dt.datetime(2026, 12, 3, 9, 0, tzinfo=dt.UTC)
MAX_AGE = dt.timedelta(days=28)


def oid(when: dt.datetime, n: int = 1) -> str:
    """A Clever event id made at `when` (an ObjectId: 8 hex digits of seconds, then the rest)."""
    return f"{int(when.timestamp()):08x}7d0c8a0001b{n:05d}"


def iso(when: dt.datetime) -> str:
    return when.isoformat().replace("+00:00", "Z")


class CheckedClever(FakeClever):
    """FakeClever that also answers GET /events/{id}: only the events it still keeps exist."""

    def event_exists(self, event_id):
        self.calls.append(f"exists {event_id}")
        return any(e["id"] == event_id for e in self.events)


def checked_poller(clever, store, now=NOW):
    return Poller(clever, Directory(), store, FakePublisher(), Deadline(60), cursor_max_age=MAX_AGE, clock=lambda: now)


def test_event_time_is_the_objectid_timestamp():
    assert event_time(oid(NOW)) == NOW
    assert event_time("5c40b5127d0c8a0001a7f001") == dt.datetime(2019, 1, 17, 17, 2, 10, tzinfo=dt.UTC)
    assert event_time(BEGINNING) is None and event_time("not-an-id") is None


def test_a_month_long_stop_bootstraps_again_before_any_event_is_read():
    month_ago = NOW - dt.timedelta(days=40)
    kept = [event(oid(NOW - dt.timedelta(days=2), 2), "sections.created", sec(2))]
    clever = CheckedClever(sections=[sec(1), sec(2)], events=kept)
    store = FakeStore()
    store.cursor = Cursor(oid(month_ago), iso(month_ago), caught_up_at=iso(month_ago))
    result = checked_poller(clever, store).poll()
    # The expired cursor is never paged after: Clever would answer with the oldest events it keeps.
    assert clever.calls[:2] == ["newest", "sections"]
    assert result.rebootstrapped and result.published == 2
    assert "more than 28 days ago" in result.rebootstrap_reason
    [(reason, old)] = store.rebootstraps
    assert old == oid(month_ago) and reason == result.rebootstrap_reason
    assert any(p.startswith("re-bootstrap:") for p in store.poll_status["problems"])
    assert store.cursor.last_event_id == kept[0]["id"]


def test_a_cursor_event_clever_no_longer_has_bootstraps_again():
    yesterday = NOW - dt.timedelta(days=1)
    clever = CheckedClever(sections=[sec(1)], events=[event(oid(NOW, 5), "sections.created", sec(1))])
    store = FakeStore()
    store.cursor = Cursor(oid(yesterday), caught_up_at=iso(yesterday))
    result = checked_poller(clever, store).poll()
    assert clever.calls[:3] == [f"exists {oid(yesterday)}", "newest", "sections"]
    assert result.rebootstrapped and "404" in result.rebootstrap_reason


def test_a_quiet_district_keeps_its_old_cursor_while_polls_keep_reading_to_the_end():
    """Summer: no event for 40 days, the cursor event is 40 days old, but every poll saw the end
    of the feed: nothing could have been dropped, so no bootstrap (and none on every poll)."""
    old = oid(NOW - dt.timedelta(days=40))
    clever = CheckedClever(sections=[sec(1)], events=[event(old, "sections.created", sec(1))])
    store = FakeStore()
    store.cursor = Cursor(old, caught_up_at=iso(NOW - dt.timedelta(minutes=5)))
    for minutes in (0, 5, 10):
        result = checked_poller(clever, store, NOW + dt.timedelta(minutes=minutes)).poll()
        assert not result.rebootstrapped and result.outcome == "ok"
    assert store.cursor.caught_up_at == iso(NOW + dt.timedelta(minutes=10)).replace("Z", ".000Z")
    assert "sections" not in clever.calls


def test_after_a_rebootstrap_an_old_newest_event_does_not_bootstrap_every_poll():
    old = oid(NOW - dt.timedelta(days=35))
    clever = CheckedClever(sections=[sec(1)], events=[event(old, "sections.created", sec(1))])
    store = FakeStore()
    store.cursor = Cursor(oid(NOW - dt.timedelta(days=36)), caught_up_at=iso(NOW - dt.timedelta(days=36)))
    assert checked_poller(clever, store).poll().rebootstrapped
    assert store.cursor.last_event_id == old  # the newest event Clever keeps is itself 35 days old
    assert not checked_poller(clever, store, NOW + dt.timedelta(minutes=5)).poll().rebootstrapped


def test_a_district_without_events_is_aged_by_its_bootstrap():
    clever = CheckedClever(sections=[sec(1)])
    store = FakeStore()
    store.cursor = Cursor(BEGINNING, iso(NOW - dt.timedelta(days=2)))
    assert not checked_poller(clever, store).poll().rebootstrapped
    assert not any(c.startswith("exists") for c in clever.calls)  # no event to ask about
    store.cursor = Cursor(BEGINNING, iso(NOW - dt.timedelta(days=31)))
    assert checked_poller(clever, store).poll().rebootstrapped


def test_a_partial_poll_does_not_count_as_caught_up():
    events = [event(oid(NOW, n), "sections.created", sec(n)) for n in range(0, 4)]
    clever = CheckedClever(events=events, page=1)
    store = FakeStore()
    store.cursor = Cursor(oid(NOW, 0), caught_up_at="2026-12-01T00:00:00.000Z")
    poller = Poller(clever, Directory(), store, FakePublisher(), Deadline(0), cursor_max_age=MAX_AGE, clock=lambda: NOW)
    result = poller.poll()
    assert result.outcome == "partial" and result.caught_up_at == ""
    assert store.cursor.caught_up_at == "2026-12-01T00:00:00.000Z"


# -- the brake's defaults, both sides ---------------------------------------------------------------

PILOT_STUDENTS = [f"5c40b5127d0c8a0001c{n:05d}" for n in range(40)]
PILOT_TEACHERS = [f"5c40b5127d0c8a0001d{n:05d}" for n in range(5)]


def pilot_section(n: int, students: list[str]) -> SectionSnapshot:
    return SectionSnapshot(
        section_id=f"5c40b5127d0c8a0001e{n:05d}",
        name=f"Pilot {n}",
        primary_teacher=Person(PILOT_TEACHERS[n], None),
        teachers=(Person(PILOT_TEACHERS[n], None),),
        students=tuple(Person(s, None) for s in students),
        school="north" if n < 2 else "south",
    )


def removals(n: int, gone: list[str], event_no: int) -> list[RosterChange]:
    """Section n of the pilot district (8 students each) after `gone` left it."""
    members = [s for s in PILOT_STUDENTS[n * 8 : n * 8 + 8] if s not in gone]
    snap = pilot_section(n, members)
    ev = f"6553a0f27d0c8a0001b{event_no:05d}"
    return [RosterChange(ChangeKind.STUDENT_REMOVED, snap.section_id, ev, "", snap, Person(s, None)) for s in gone]


PILOT_MEMBERSHIPS = 45  # 5 sections of 1 teacher and 8 students


def test_a_pilot_districts_normal_day_of_8_removals_flows_with_the_default_brake():
    day = [2, 2, 2, 1, 1]  # students leaving sections here and there
    changes = [c for n, k in enumerate(day) for c in removals(n, PILOT_STUDENTS[n * 8 : n * 8 + k], n + 1)]
    assert len(changes) == 8
    keep, held = apply_brake(changes, Counter(), PILOT_MEMBERSHIPS, BrakeSettings())
    assert held is None and keep == changes
    # Even 4 from one class of 9 (a small group moving to another period) flows.
    four = removals(0, PILOT_STUDENTS[:4], 9)
    assert apply_brake(four, Counter(), PILOT_MEMBERSHIPS, BrakeSettings())[1] is None


def test_a_pilot_school_emptied_is_held_with_the_default_brake():
    north = [c for n in (0, 1) for c in removals(n, PILOT_STUDENTS[n * 8 : n * 8 + 8], n + 1)]
    normal = removals(3, PILOT_STUDENTS[24:25], 4)  # one student elsewhere, the same night
    keep, held = apply_brake(north + normal, Counter(), PILOT_MEMBERSHIPS, BrakeSettings())
    assert keep == normal
    assert held is not None and held.removals == 16 and len(held.sections) == 2
    assert all("over 50%" in r for r in held.reasons)


def test_a_large_share_of_a_big_districts_classes_gone_is_held_and_a_normal_day_is_not():
    def spread(total: int) -> list[RosterChange]:
        # One student from each of `total` sections: nothing a section's share would see.
        out = []
        for n in range(total):
            snap = pilot_section(0, PILOT_STUDENTS[:7])
            snap = SectionSnapshot(**{**snap.__dict__, "section_id": f"5c40b5127d0c8a0002{n:06d}"})
            out.append(RosterChange(ChangeKind.STUDENT_REMOVED, snap.section_id, "e", "", snap, Person("x", None)))
        return out

    managed = 10_000
    assert apply_brake(spread(400), Counter(), managed, BrakeSettings())[1] is None  # 4 %: a busy day
    assert apply_brake(spread(499), Counter(), 5_000, BrakeSettings())[1] is None  # under the floor of 500
    keep, held = apply_brake(spread(600), Counter(), managed, BrakeSettings())  # 6 %: an export gone wrong
    assert held is not None and held.removals > 0 and "of 10000 managed memberships" in held.reasons[0]


def test_the_brake_settings_default_to_the_brake_defaults(monkeypatch):
    from rostersync import config

    for name in ("BRAKE_SECTION_PERCENT", "BRAKE_TOTAL_PERCENT", "BRAKE_MAX_ARCHIVES", "BRAKE_MIN_REMOVALS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("BRAKE_TOTAL_MIN_REMOVALS", raising=False)
    monkeypatch.setenv("PUSH_AUTH", "oidc")
    s = config.load_settings()
    assert (
        BrakeSettings(
            s.brake_section_percent / 100,
            s.brake_total_percent / 100,
            s.brake_max_archives,
            s.brake_min_removals,
            s.brake_total_min_removals,
        )
        == BrakeSettings()
    )
    assert s.clever_cursor_max_age_days == 28


# -- a section without a course because of its owner --------------------------------------------


def ev(n: int) -> str:
    return f"6553a0f27d0c8a0001b{n:05d}"


def test_the_reconcile_pass_tries_a_refused_owner_again():
    classroom = FakeClassroom(accounts=[e for e in EMAILS.values() if e != EMAILS[TEACHER_A]])
    store = FakeStore()
    applier = Applier(store, classroom)
    [created] = changes_from_event(event(ev(1), "sections.created", section()), EMAILS)
    applier.apply(created)
    assert classroom.courses == {} and classroom.writes == 1
    link = store.load_link(created.section_id)
    assert [type(op) for op in plan(created, link).ops] == []  # the same event: not again
    assert [type(op) for op in plan(created, link, retry_problems=True).ops][:1] == [CreateCourse]
    classroom.accounts.add(EMAILS[TEACHER_A])
    applier.apply(created, retry_problems=True)  # what the reconcile pass does
    assert classroom.roster(course_alias(created.section_id))["owner"] == EMAILS[TEACHER_A]
    assert not store.open_problems()


def test_several_changes_in_one_message_make_one_create_call():
    classroom = FakeClassroom(accounts=[e for e in EMAILS.values() if e != EMAILS[TEACHER_A]])
    store = FakeStore()
    applier = Applier(store, classroom)
    applier.apply(changes_from_event(event(ev(1), "sections.created", section()), EMAILS)[0])
    later = [
        c
        for n in (2, 3)
        for c in changes_from_event(
            event(ev(n), "sections.updated", section(students=STUDENTS[: 4 + n]), {"students": STUDENTS[: 3 + n]}),
            EMAILS,
        )
    ]
    assert len({c.event_id for c in later}) == 2
    before = classroom.calls["courses.create"]
    outcome = applier.apply_all(later)
    assert outcome.ack and classroom.calls["courses.create"] == before + 1


def test_poll_status_carries_the_rebootstrap_for_the_administrator():
    month_ago = NOW - dt.timedelta(days=31)
    clever = CheckedClever(sections=[sec(1)])
    store = FakeStore()
    store.cursor = Cursor(oid(month_ago), iso(month_ago), caught_up_at=iso(month_ago))
    checked_poller(clever, store).poll()
    status = json.loads(json.dumps(store.poll_status))
    assert status["rebootstrapped"] and status["rebootstrap_reason"] and status["outcome"] == "ok"


def test_a_rebootstrap_of_an_emptied_feed_is_not_older_than_what_was_applied():
    """Everything dropped, even the cursor's event: the bootstrap's changes carry a marker newer
    than the old cursor (BEGINNING would make them stale beside what the links hold), and the
    next polls neither ask Clever about it nor bootstrap again."""
    old = oid(NOW - dt.timedelta(days=3))
    clever = CheckedClever(sections=[sec(1)])
    store = FakeStore()
    store.cursor = Cursor(old, caught_up_at=iso(NOW - dt.timedelta(hours=1)))
    pub = FakePublisher()
    poller = Poller(clever, Directory(), store, pub, Deadline(60), cursor_max_age=MAX_AGE, clock=lambda: NOW)
    assert poller.poll().rebootstrapped
    [message] = [json.loads(m) for m in pub.messages]
    assert message["event_id"] > old and store.cursor.last_event_id == message["event_id"]
    assert event_time(message["event_id"]) == event_time(old) + dt.timedelta(seconds=1)
    clever.calls.clear()
    assert not poller.poll().rebootstrapped
    assert not any(c.startswith("exists") for c in clever.calls)

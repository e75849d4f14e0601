"""optimistic.run and the applier's re-plan, with the in-memory store's versions (issue 13)."""

from __future__ import annotations

import pytest
from rostersync import optimistic
from rostersync.app.applier import Applier
from rostersync.domain.links import MemberStatus
from rostersync.domain.sources.clever_events import changes_from_event
from rostersync.optimistic import StaleWrite

from tests.unit.clever_payloads import EMAILS, SECTION, STUDENTS, event, section
from tests.unit.fakes import FakeClassroom, FakeStore


def _ev(n: int) -> str:
    return f"6553a0f27d0c8a0001d{n:05d}"


def test_run_reads_again_after_a_conflict_and_gives_up_after_the_last_attempt():
    reads, writes = [], []

    def load():
        reads.append(len(reads))
        return len(reads)

    def write(current, attempt):
        writes.append((current, attempt))
        if attempt < 2:
            raise StaleWrite("moved")
        return "done"

    assert optimistic.run(load, write, "x", sleep=lambda s: None) == "done"
    assert writes == [(1, 0), (2, 1), (3, 2)]
    with pytest.raises(StaleWrite):
        optimistic.run(load, lambda c, a: (_ for _ in ()).throw(StaleWrite("always")), "y", 3, lambda s: None)


class RacingStore(FakeStore):
    """Runs `between` once, after the applier read the link and before it saves."""

    between = None

    def save_link(self, *args, **kwargs):
        hook, self.between = self.between, None
        if hook:
            hook()
        return super().save_link(*args, **kwargs)


def test_a_conflict_free_change_costs_one_read_and_one_commit_and_a_conflict_one_read_more():
    store, classroom = RacingStore(), FakeClassroom(EMAILS.values())
    applier = Applier(store, classroom)
    [created] = changes_from_event(event(_ev(1), "sections.created", section(students=STUDENTS[:4])), EMAILS)
    applier.apply(created)
    s = STUDENTS[5]
    add = changes_from_event(
        event(_ev(2), "sections.updated", section(students=STUDENTS[:4] + [s]), {"students": STUDENTS[:4]}), EMAILS
    )
    remove = changes_from_event(
        event(_ev(3), "sections.updated", section(students=STUDENTS[:4]), {"students": STUDENTS[:4] + [s]}), EMAILS
    )
    other = Applier(store, classroom)
    store.ops.clear()
    store.between = lambda: other.apply_all(remove)
    assert applier.apply_all(add).status == "applied"
    # ours: read, (the other: read, commit), conflict, read again, commit
    assert store.ops == {"read": 3, "commit": 2} and store.conflicts == 1
    record = store.load_link(SECTION).members[s]
    assert (record.status, record.event_id) == (MemberStatus.REMOVED, _ev(3))
    assert EMAILS[s] not in classroom.roster(f"d:clever-{SECTION}")["students"]


class EveryCommitLosesStore(FakeStore):
    """Another writer commits before each of the applier's saves: a notification's harmless
    write (the version moves) on every attempt but the last, and on the last a newer removal of the
    student, committed without a Classroom call (the link did not have them yet)."""

    def __init__(self, last_hook):
        super().__init__()
        self.saves = 0
        self.armed = False
        self.last_hook = last_hook

    def save_link(self, before, after, *args, **kwargs):
        if self.armed:
            self.saves += 1
            if self.saves < optimistic.MAX_ATTEMPTS:
                self.versions[after.section_id] = self.versions.get(after.section_id, 0) + 1
            else:
                self.armed = False
                self.last_hook()
        return super().save_link(before, after, *args, **kwargs)


def test_an_applier_that_gives_up_squares_its_calls_with_the_link_before_asking_for_a_redelivery(monkeypatch):
    monkeypatch.setattr(optimistic.time, "sleep", lambda s: None)
    classroom = FakeClassroom(EMAILS.values())
    s = STUDENTS[5]
    add = changes_from_event(
        event(_ev(2), "sections.updated", section(students=STUDENTS[:4] + [s]), {"students": STUDENTS[:4]}), EMAILS
    )
    remove = changes_from_event(
        event(_ev(3), "sections.updated", section(students=STUDENTS[:4]), {"students": STUDENTS[:4] + [s]}), EMAILS
    )
    store = EveryCommitLosesStore(lambda: Applier(store, classroom).apply_all(remove))
    applier = Applier(store, classroom)
    [created] = changes_from_event(event(_ev(1), "sections.created", section(students=STUDENTS[:4])), EMAILS)
    applier.apply(created)
    store.armed = True
    outcome = applier.apply_all(add)
    # Every attempt lost: the message goes back for a redelivery, and nothing is lost...
    assert outcome.status == "retry" and store.saves == optimistic.MAX_ATTEMPTS
    # ...but the add its attempts made is not left behind: the newer removal wants the student out.
    assert EMAILS[s] not in classroom.roster(f"d:clever-{SECTION}")["students"]
    record = store.load_link(SECTION).members[s]
    assert (record.status, record.event_id) == (MemberStatus.REMOVED, _ev(3))
    # The redelivery plans from the link: the add is older than the removal, and nothing changes.
    assert Applier(store, classroom).apply_all(add).status == "applied"
    assert EMAILS[s] not in classroom.roster(f"d:clever-{SECTION}")["students"]


def test_a_re_plan_that_only_puts_classroom_back_still_moves_the_links_update_time():
    """A reconcile pass that read the link before our square and Classroom during it must not
    commit what it saw: our commit moves the update time even though the link's fields, overrides
    and problems are unchanged (only the audit trail has something new)."""
    store, classroom = RacingStore(), FakeClassroom(EMAILS.values())
    applier = Applier(store, classroom)
    [created] = changes_from_event(event(_ev(1), "sections.created", section(students=STUDENTS[:4])), EMAILS)
    applier.apply(created)
    s = STUDENTS[5]
    # The teacher added the student by hand a moment ago: our add is ALREADY_MEMBER (not our doing).
    classroom.add_members(store.load_link(SECTION).course_id, [("student", EMAILS[s])])
    add = changes_from_event(
        event(_ev(2), "sections.updated", section(students=STUDENTS[:4] + [s]), {"students": STUDENTS[:4]}), EMAILS
    )
    remove = changes_from_event(
        event(_ev(3), "sections.updated", section(students=STUDENTS[:4]), {"students": STUDENTS[:4] + [s]}), EMAILS
    )
    store.between = lambda: Applier(store, classroom).apply_all(remove)  # committed without a call
    versions_read: list[int] = []
    remove_member = classroom.remove_member

    def remove_and_note(course_id, role, email):
        versions_read.append(store.versions[SECTION])  # the version our re-plan read
        return remove_member(course_id, role, email)

    classroom.remove_member = remove_and_note
    assert applier.apply_all(add).status == "applied"
    assert versions_read, "the re-plan removed the student: the newer removal wants them out"
    record = store.load_link(SECTION).members[s]
    assert (record.status, record.event_id) == (MemberStatus.REMOVED, _ev(3))  # unchanged by the square
    assert store.versions[SECTION] == versions_read[-1] + 1  # ...yet the commit moved the version
    assert EMAILS[s] not in classroom.roster(f"d:clever-{SECTION}")["students"]

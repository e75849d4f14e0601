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

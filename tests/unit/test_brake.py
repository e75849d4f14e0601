"""The brake on mass changes: pure rules, and the poller holding a mass removal while additions flow."""

import json
from collections import Counter

from rostersync.app.poller import Poller
from rostersync.domain.brake import BrakeSettings, apply_brake
from rostersync.domain.ports import Cursor
from rostersync.domain.sources.clever_events import changes_from_event
from rostersync.retry import Deadline

from tests.unit.clever_payloads import EMAILS, STUDENTS, event
from tests.unit.fakes import FakePublisher, FakeStore
from tests.unit.test_poller import FakeClever, ev_id, sec

ALL = STUDENTS[:10]


def removal_changes(section_id_n, keep, n=1):
    return changes_from_event(
        event(ev_id(n), "sections.updated", sec(section_id_n, students=ALL[:keep]), {"students": ALL}), EMAILS
    )


def test_a_few_removals_pass():
    changes = removal_changes(1, keep=8)
    keep, held = apply_brake(changes, Counter(), 1000, BrakeSettings())
    assert keep == changes and held is None


def test_more_than_half_of_a_section_is_held():
    changes = removal_changes(1, keep=4)  # 6 of 11 members
    keep, held = apply_brake(changes, Counter(), 100_000, BrakeSettings())
    assert keep == [] and len(held.changes) == 6
    assert "6 of about 11 members" in held.reasons[0]


def test_the_share_counts_members_added_in_the_same_poll():
    changes = removal_changes(1, keep=4)
    # Had the poll also added 20 members, 6 removals of 31 stay under a quarter.
    keep, held = apply_brake(changes, Counter({sec(1)["id"]: 20}), 100_000, BrakeSettings())
    assert held is None


def test_many_small_removals_across_the_district_are_held_together():
    changes = [c for n in range(1, 8) for c in removal_changes(n, keep=9, n=n)]  # 7 removals, 1 each
    keep, held = apply_brake(changes, Counter(), 100, BrakeSettings(total_share=0.05, total_min_removals=5))
    assert keep == [] and held.removals == 7 and "7 removals of 100" in held.reasons[0]


def test_too_many_deleted_sections_are_held_but_other_changes_go():
    deletions = [changes_from_event(event(ev_id(n), "sections.deleted", sec(n)), EMAILS)[0] for n in range(1, 4)]
    removals = removal_changes(9, keep=9)
    keep, held = apply_brake(deletions + removals, Counter(), 1000, BrakeSettings(max_archives=2))
    assert keep == removals and held.archives == 3


def test_poller_holds_a_mass_removal_publishes_additions_and_moves_on():
    emptied = [event(ev_id(2), "sections.updated", sec(n, students=[]), {"students": ALL}) for n in range(1, 4)]
    joined = event(ev_id(3), "sections.updated", sec(7, students=ALL[:6]), {"students": ALL[:5]})
    clever = FakeClever(events=[*emptied, joined], page=10)
    store, pub = FakeStore(), FakePublisher()
    store.cursor = Cursor(ev_id(1), memberships=600)
    result = Poller(
        clever,
        type("D", (), {"emails": lambda self, ids: {i: EMAILS.get(i) for i in ids}})(),
        store,
        pub,
        Deadline(60),
        BrakeSettings(),
    ).poll()
    assert [json.loads(m)["kind"] for m in pub.messages] == ["student_added"]
    assert result.held == 30 and result.held_batch in store.held
    reasons, held = store.held[result.held_batch]
    assert len(held) == 30 and all(c.kind.value == "student_removed" for c in held)
    assert store.cursor.last_event_id == ev_id(3)


def test_a_braked_publisher_holds_an_emptied_export_and_publishes_the_rest():
    """OneRoster: one poll or bundle is one publish call; an export that empties classes is held."""
    from rostersync.domain.brake import BrakedPublisher

    class Holder:
        def __init__(self):
            self.batches = []

        def hold_changes(self, reasons, changes):
            self.batches.append((reasons, list(changes)))
            return f"batch-{len(self.batches)}"

    published = []

    class Inner:
        def publish(self, changes):
            published.extend(changes)
            return len(changes)

    holder = Holder()
    braked = BrakedPublisher(Inner(), BrakeSettings(), holder)
    emptied = removal_changes(1, keep=0)  # every student of the class gone
    fine = removal_changes(2, keep=9, n=2)  # one student of another class
    assert braked.publish(emptied + fine) == len(fine)
    assert published == fine
    ((reasons, held),) = holder.batches
    assert held == emptied and "10 of about" in reasons[0]
    assert braked.held_batches == ["batch-1"]
    assert braked.publish(fine) == len(fine) and len(holder.batches) == 1  # a fresh brake per call

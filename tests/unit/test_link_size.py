"""A link's size against Firestore's 1 MiB a document (issue 12): measured the way Firestore counts,
kept under budget by pruning old removed members first, and a problem before a save would fail."""

from __future__ import annotations

import datetime as dt

from rostersync.app.applier import Applier
from rostersync.domain.links import LinkState, MemberRecord, MemberStatus, SectionCourseLink
from rostersync.domain.retention import LINK_BYTES_BUDGET, link_bytes, prune_to_fit
from rostersync.domain.sources.clever_events import changes_from_event

from tests.unit.clever_payloads import EMAILS, SECTION, STUDENTS, event, section
from tests.unit.fakes import FakeClassroom, FakeStore
from tests.unit.firestore_size import document_size

NOW = dt.datetime(2026, 12, 3, tzinfo=dt.UTC)


def _event_id(when: dt.datetime, n: int) -> str:
    return f"{int(when.timestamp()):08x}{n:016x}"


def _link(active: int, removed_old: int, removed_recent: int) -> SectionCourseLink:
    members = {}
    for n in range(active + removed_old + removed_recent):
        cid = f"5c40b4f37d0c8a{n:010x}"
        email = f"firstname.lastname{n:05d}@district.example.org"
        if n < active:
            status, when = MemberStatus.ACTIVE, NOW - dt.timedelta(days=100)
        elif n < active + removed_old:
            status, when = MemberStatus.REMOVED, NOW - dt.timedelta(days=20 + n % 10)
        else:
            status, when = MemberStatus.REMOVED, NOW - dt.timedelta(days=2)
        members[cid] = MemberRecord(cid, email, "student", status, _event_id(when, n))
    return SectionCourseLink(SECTION, LinkState.ACTIVE, f"d:clever-{SECTION}", "123", "Online PE", members=members)


def test_link_bytes_is_firestores_count_of_the_stored_document():
    link = _link(active=300, removed_old=40, removed_recent=10)
    stored = link.to_doc() | {"member_ids": sorted(link.members), "updated_at": NOW}
    assert abs(link_bytes(link) - document_size("sections", SECTION, stored)) <= 16


def test_a_link_over_budget_loses_its_oldest_removed_members_and_never_recent_or_active_ones():
    link = _link(active=4_600, removed_old=800, removed_recent=300)
    assert link_bytes(link) > LINK_BYTES_BUDGET
    pruned, size = prune_to_fit(link, now=NOW)
    assert link_bytes(pruned) == size <= LINK_BYTES_BUDGET
    gone = set(link.members) - set(pruned.members)
    assert gone and all(link.members[c].status == MemberStatus.REMOVED for c in gone)
    recent = {
        c
        for c, m in link.members.items()
        if m.status == MemberStatus.REMOVED and m.event_id >= _event_id(NOW - dt.timedelta(days=7), 0)
    }
    assert not gone & recent  # within Pub/Sub's 7 days an older add can still arrive: kept
    kept_old = [m.event_id for c, m in pruned.members.items() if m.status == MemberStatus.REMOVED and c not in recent]
    assert all(link.members[c].event_id <= min(kept_old) for c in gone)  # the oldest went first
    assert (
        prune_to_fit(_link(active=300, removed_old=40, removed_recent=0), now=NOW)[0].members.keys()
        == _link(300, 40, 0).members.keys()
    )


def test_a_section_too_large_even_after_pruning_is_a_problem_and_closes_when_it_fits_again():
    store, classroom = FakeStore(), FakeClassroom(EMAILS.values())
    applier = Applier(store, classroom)
    [created] = changes_from_event(event(_event_id(NOW, 1), "sections.created", section(students=STUDENTS[:4])), EMAILS)
    applier.apply(created)
    big = _link(active=5_600, removed_old=0, removed_recent=0)  # all active: nothing may be pruned
    doc = store.load_link(SECTION).to_doc()
    doc["members"].update({cid: m.to_doc() for cid, m in big.members.items()})
    store.links[SECTION] = doc
    s = STUDENTS[5]
    add = changes_from_event(
        event(_event_id(NOW, 2), "sections.updated", section(students=STUDENTS[:4] + [s]), {"students": STUDENTS[:4]}),
        EMAILS,
    )
    assert applier.apply_all(add).status == "applied"
    problem = store.open_problems()[f"{SECTION}__link_too_large"]
    assert "holds 5,606 members" in problem["message"] and "Split the section" in problem["hint"]
    # A thousand of them left the section in the SIS a month ago (their records say removed then):
    # the next save prunes them, the record fits again, and the problem closes.
    doc = store.links[SECTION]
    month_ago = _event_id(NOW - dt.timedelta(days=30), 0)
    for cid in list(big.members)[:1_000]:
        doc["members"][cid] = {**doc["members"][cid], "status": "removed", "event_id": month_ago}
    remove = changes_from_event(
        event(_event_id(NOW, 3), "sections.updated", section(students=STUDENTS[:4]), {"students": STUDENTS[:4] + [s]}),
        EMAILS,
    )
    assert applier.apply_all(remove).status == "applied"
    assert f"{SECTION}__link_too_large" not in store.open_problems()
    after = store.load_link(SECTION)
    assert link_bytes(after) <= LINK_BYTES_BUDGET
    left = set(big.members) - set(after.members)
    assert left and left <= set(list(big.members)[:1_000])  # only removed ones went, as few as fit

"""Sizes at district scale, without Firestore or Pub/Sub: messages packed by bytes (issue 12.1),
held batches laid out by bytes (12.2), a 5,000-member link document (12.4) and document ids made
from hostile strings (12.10)."""

from __future__ import annotations

import json
import random
import re

import pytest
from rostersync.domain.changes import (
    MAX_MESSAGE_BYTES,
    ChangeKind,
    InvalidChange,
    Person,
    RosterChange,
    SectionSnapshot,
    decode_message,
    encode_message,
    pack_changes,
    split_message,
)
from rostersync.domain.docids import MAX_ENCODED_BYTES, doc_id, raw_id
from rostersync.domain.held import (
    HELD_COMMIT_BYTES,
    HELD_COMMIT_WRITES,
    HELD_PART_BYTES,
    changes_of_parts,
    commit_groups,
    held_parts,
)
from rostersync.domain.links import LinkState, MemberRecord, MemberStatus, SectionCourseLink

from tests.unit.firestore_size import MAX_DOCUMENT_BYTES, MAX_INDEX_ENTRIES, document_size, index_entries

rng = random.Random(12)


def oid(n: int, prefix: str = "6553a0f27d0c8a00") -> str:
    return f"{prefix}{n:08x}"


def person(n: int) -> Person:
    return Person(oid(n, "5c40b4f37d0c8a00"), f"firstname.lastname{n}@students.district.example.org")


def snapshot(section: str, students: range) -> SectionSnapshot:
    teacher = person(9_999_999)
    return SectionSnapshot(
        section, f"Physical Education - Smith - Period {section[-1]}", teacher, (teacher,),
        tuple(person(n) for n in students), "3", "PE and health", None, "school-1", "SEC00001",
    )  # fmt: skip


def term_start(sections: dict[str, int], changes_each: int) -> list[RosterChange]:
    """One sections.updated per change, each with the whole section as it then was (as Clever
    sends them): additions and removals, interleaved across sections."""
    out = []
    members = {s: list(range(size)) for s, size in sections.items()}
    plan = [s for s in sections for _ in range(changes_each)]
    rng.shuffle(plan)
    for event, section in enumerate(plan, 1):
        if rng.random() < 0.5 and members[section]:
            who = members[section].pop(rng.randrange(len(members[section])))
            kind = ChangeKind.STUDENT_REMOVED
        else:
            who = 100_000 + event
            members[section].append(who)
            kind = ChangeKind.STUDENT_ADDED
        snap = snapshot(section, range(0))
        snap = SectionSnapshot(**{**snap.__dict__, "students": tuple(person(n) for n in members[section])})
        out.append(RosterChange(kind, section, oid(event), "2026-08-20T08:00:00Z", snap, person(who)))
    return out


def test_a_big_section_with_60_changes_is_packed_under_the_bound_and_in_order():
    # The case of the issue: 400 students, 60 changes, once a 2 MB message the applier refused.
    changes = term_start({oid(1, "5c40b5127d0c8a00"): 400}, 60)
    assert sum(len(c.to_json()) for c in changes) > 1_000_000  # each change with its snapshot
    messages, too_large = pack_changes(changes)
    assert not too_large
    assert all(len(m.data) <= MAX_MESSAGE_BYTES for m in messages)
    decoded = [c for m in messages for c in decode_message(m.data)]
    assert [(c.kind, c.person, c.event_id) for c in decoded] == [(c.kind, c.person, c.event_id) for c in changes]
    # The snapshot travels once a message: 60 changes cost about one snapshot, not 60.
    assert len(messages) == 1 and len(messages[0].data) < 2 * len(changes[-1].to_json())


def test_a_term_start_across_sections_keeps_each_sections_order_and_every_message_under_budget():
    sizes = {oid(n, "5c40b5127d0c8a00"): [25, 30, 350, 1_200][n % 4] for n in range(30)}
    changes = term_start(sizes, 25)
    budget = 300_000
    messages, too_large = pack_changes(changes, target_bytes=budget, max_bytes=budget)
    assert not too_large
    assert max(len(m.data) for m in messages) <= budget
    for section in sizes:
        sent = [c.event_id for m in messages if m.ordering_key == section for c in decode_message(m.data)]
        assert sent == [c.event_id for c in changes if c.section_id == section]
        assert all(m.attributes["section_id"] == m.ordering_key for m in messages)
    # The snapshot is not repeated: each section's 25 changes, 1,200-member ones included, fit one.
    assert len(messages) == len(sizes)
    # Under a budget that fits only a few changes beside a 1,200-member snapshot, they are split.
    tight, too_large = pack_changes(changes, target_bytes=130_000, max_bytes=130_000)
    assert not too_large and max(len(m.data) for m in tight) <= 130_000 and len(tight) > len(messages)


def test_a_course_wanted_keeps_its_own_snapshot_and_the_others_read_the_newest():
    section = oid(7, "5c40b5127d0c8a00")
    old, new = snapshot(section, range(10)), snapshot(section, range(5, 20))
    wanted = RosterChange(ChangeKind.COURSE_WANTED, section, oid(1), "", old)
    added = RosterChange(ChangeKind.STUDENT_ADDED, section, oid(2), "", new, person(19))
    decoded = decode_message(encode_message([wanted, added]))
    assert decoded[0].section == old and decoded[1].section == new
    assert json.loads(encode_message([wanted, added]))["schema"] == 3


def test_a_change_too_large_for_any_message_is_set_apart_not_dropped():
    section = oid(8, "5c40b5127d0c8a00")
    huge = RosterChange(ChangeKind.COURSE_WANTED, section, oid(1), "", snapshot(section, range(3_000)))
    small = RosterChange(ChangeKind.STUDENT_ADDED, section, oid(2), "", snapshot(section, range(3)), person(1))
    messages, too_large = pack_changes([huge, small], target_bytes=50_000, max_bytes=100_000)
    assert [t.change for t in too_large] == [huge] and too_large[0].size > 100_000
    assert [c for m in messages for c in m.changes] == [small]


def test_an_old_oversized_message_is_split_into_bounded_ones_and_the_applier_refuses_it_whole():
    section = oid(9, "5c40b5127d0c8a00")
    changes = term_start({section: 1_500}, 50)
    # Schema 2, as written before: every change with its snapshot, about 6 MB.
    old = json.dumps({"schema": 2, "section_id": section, "changes": [json.loads(c.to_json()) for c in changes]})
    assert len(old) > MAX_MESSAGE_BYTES
    with pytest.raises(InvalidChange, match="larger than"):
        decode_message(old.encode())
    parts = split_message(old.encode())
    assert all(len(p.data) <= MAX_MESSAGE_BYTES for p in parts)
    assert [c.event_id for p in parts for c in decode_message(p.data)] == [c.event_id for c in changes]


def test_a_20000_removal_batch_is_held_in_parts_and_commits_within_firestores_limits():
    sections = {oid(n, "5c40b5127d0c8a00"): 30 for n in range(700)}
    removals = []
    for n, section in enumerate(sections):
        emptied = snapshot(section, range(0))
        removals += [
            RosterChange(ChangeKind.STUDENT_REMOVED, section, oid(n * 100 + k), "", emptied, person(n * 100 + k))
            for k in range(29)
        ]
    assert len(removals) >= 20_000
    parts = held_parts(removals)
    sizes = [sum(len(m) for m in part) for part in parts]
    assert max(sizes) <= HELD_PART_BYTES
    assert all(document_size("parts", f"{n:05d}", {"messages": p}) < MAX_DOCUMENT_BYTES for n, p in enumerate(parts))
    commits = commit_groups(sizes)
    assert sorted(i for group in commits for i in group) == list(range(len(parts)))
    assert all(len(g) <= HELD_COMMIT_WRITES and sum(sizes[i] for i in g) <= HELD_COMMIT_BYTES for g in commits)
    back = changes_of_parts(parts)
    assert [(c.section_id, c.event_id) for c in back] == [(c.section_id, c.event_id) for c in removals]
    # Page by page: a second page's parts follow the first's, nothing rewritten.
    first, second = held_parts(removals[:9_000]), held_parts(removals[9_000:])
    assert [c.event_id for c in changes_of_parts(first + second)] == [c.event_id for c in removals]


def test_commit_groups_split_by_writes_and_by_bytes():
    assert commit_groups([10] * 900) == [list(range(0, 400)), list(range(400, 800)), list(range(800, 900))]
    assert [len(g) for g in commit_groups([900_000] * 10)] == [4, 4, 2]


def test_a_5000_member_section_link_stays_under_firestores_size_and_index_limits():
    section = oid(5, "5c40b5127d0c8a00")
    link = SectionCourseLink(section, LinkState.ACTIVE, f"d:clever-{section}", "123456789012", "PE - Smith")
    for n in range(5_000):
        p = person(n)
        status = MemberStatus.PROBLEM if n % 20 == 0 else MemberStatus.ACTIVE
        reason = "@CannotDirectAddUser" if status == MemberStatus.PROBLEM else ""
        link = link.with_member(MemberRecord(p.clever_id, p.email, "student", status, oid(n), reason))
    doc = {**link.to_doc(), "member_ids": sorted(link.members), "updated_at": None}
    size = document_size("sections", section, doc)
    assert size < 0.9 * MAX_DOCUMENT_BYTES, size
    assert index_entries(doc, exempt={"members"}) < MAX_INDEX_ENTRIES
    # What the exemption is for: indexed, the members map alone would pass the limit.
    assert index_entries(doc) > MAX_INDEX_ENTRIES
    assert SectionCourseLink.from_doc(doc) == link


HOSTILE = [
    "exports/roster.zip",
    "a/b/c",
    ".",
    "..",
    "__x__",
    "__",
    "___name___",
    "",
    "%",
    "%2F",
    "~",
    "~5c0e",
    " ",
    "sourcedId with spaces and ünïcödé 漢字 🎒",
    "\x00\x01\n\t",
    "\ud800",  # a lone surrogate, as a broken JSON escape gives
    "x" * 1_499,
    "é" * 800,
    "/".join(["seg"] * 600),
]


@pytest.mark.parametrize("raw", HOSTILE, ids=lambda v: repr(v[:24]))
def test_any_external_string_makes_a_valid_document_id(raw):
    encoded = doc_id(raw)
    assert encoded and "/" not in encoded and encoded not in (".", "..")
    assert not re.fullmatch(r"__.*__", encoded, re.DOTALL)
    assert len(encoded.encode()) <= MAX_ENCODED_BYTES + 1
    back = raw_id(encoded)
    assert back == raw or (back is None and encoded.startswith("~"))


def test_document_ids_are_distinct_for_distinct_values_and_ordinary_ids_unchanged():
    encoded = [doc_id(v) for v in HOSTILE]
    assert len(set(encoded)) == len(HOSTILE)
    assert doc_id("5c40b5127d0c8a0001a7f001") == "5c40b5127d0c8a0001a7f001"
    assert doc_id("sec-1__student_without_email") == "sec-1__student_without_email"

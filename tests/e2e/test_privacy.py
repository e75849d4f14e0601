"""Student data stays private, end to end through the emulators, the functions and the CLI:

- the functions and the commands log nobody by full email, name or token, even at DEBUG (the
  conftest checks every function server's output after every e2e test; here the CLI's too, and
  a district with a problem, a teacher's change and a removal, so the lines that used to carry
  emails run);
- every document the code dates with expire_at, for Firestore's TTL policies (infra/firestore.tf);
- `rostersync forget`: dry run first, then the person's email is nowhere in Firestore (every
  collection and subcollection scanned, dead letters' base64 messages decoded), the others' data
  stays, one audit entry without the email, and a second run changes nothing.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os

import pytest
from rostersync.adapters.deadletter_store import FirestoreDeadLetterStore
from rostersync.adapters.oneroster_store import OneRosterFirestoreStore
from rostersync.adapters.store import FirestoreStore
from rostersync.app.deadletters import dead_letter_doc
from rostersync.domain.audit import AuditEntry
from rostersync.domain.changes import ChangeKind, Person, RosterChange, SectionSnapshot, encode_message
from rostersync.domain.links import LinkState, MemberRecord, MemberStatus, SectionCourseLink
from rostersync.domain.retention import Retention
from rostersync.domain.rules import Problem
from rostersync.domain.sources.oneroster_diff import ClassState, Enrollment

from tests.e2e import test_cli
from tests.e2e.conftest import World, people_names, pii_in_lines
from tests.e2e.test_cli import ok, rostersync

pytestmark = pytest.mark.e2e

district = test_cli.district  # Biology (3 students, one without Google) and Chemistry (2), synced

DAY = dt.timedelta(days=1)


def every_document(db):
    """(path, data) of every document in the emulator, subcollections included."""

    def walk(collections):
        for collection in collections:
            for snap in collection.stream():
                yield snap.reference.path, snap.to_dict() or {}
                yield from walk(snap.reference.collections())

    return list(walk(db.collections()))


def where_named(db, email: str) -> list[str]:
    """Every document path whose id, data or base64-encoded message contains the email."""
    found = []
    for path, data in every_document(db):
        text = (path + repr(data)).lower()
        encoded = data.get("data_base64")
        if encoded:
            text += base64.b64decode(encoded).decode("utf-8", "replace").lower()
        if email.lower() in text:
            found.append(path)
    return found


def close_to(value, expected: dt.datetime, slack=dt.timedelta(minutes=10)) -> bool:
    return value is not None and abs(value - expected) < slack


# -- logs ---------------------------------------------------------------------------------------------


def test_functions_and_commands_log_no_one_at_debug(world: World, district, logs_name_no_one):
    """A district synced with a problem (a student without Google: Classroom's error names them),
    then the commands; every line at DEBUG. (The reconcile function, notifications, dead letters
    and OneRoster run in their own e2e tests, under the same conftest check.)"""
    biology, kids, ghost = district["biology"], district["kids"], district["ghost"]

    env = {**os.environ, **world.stack.env, "LOG_LEVEL": "debug"}
    names = people_names(world)
    outputs = []
    # The commands that print problems, overrides and the trail (stdout is the administrator's;
    # stderr is their log) and forget's dry run.
    for args in (["problems"], ["why", biology], ["forget", ghost]):
        result = rostersync(world, *args, env=env)
        assert result.returncode == 0, (args, result.stderr)
        outputs.append(result.stderr)
    leaks = pii_in_lines("\n".join(outputs).splitlines(), names, [world.clever.token])
    assert leaks == [], leaks

    # The check has something to check: the servers did log at DEBUG, and a leak would be caught.
    servers = {s.target: s for s in logs_name_no_one}
    applier_log = servers["apply_roster_event"].log_path.read_text()
    entries = [json.loads(line) for line in applier_log.splitlines() if line.startswith("{")]
    assert any(
        e.get("severity") == "DEBUG" and str(e.get("message", "")).startswith("applying course_wanted") for e in entries
    )
    assert "***@" in applier_log  # course owners by masked email
    assert pii_in_lines([f"INFO x: added {world.email(kids[0])}"]) != []
    assert pii_in_lines([f"DEBUG x: DELETE /v1/courses/1/students/{world.email(kids[0]).replace('@', '%40')}"])
    assert pii_in_lines(["GET ?name=Kid0 Cli"], names) != []


# -- spreadsheet-safe exports ---------------------------------------------------------------------


def test_problems_csv_and_tables_are_safe_with_formula_and_control_character_values(world: World):
    import csv
    import io

    hostile = Problem(
        "classroom_rejected",
        '=HYPERLINK("evil.example","click")',
        "+SUM(1,2)\x1b[2J cleared",
        hint="-2+3",
        clever_id="\tu1",
        email="@evil.example",
        reason="@CannotDirectAddUser",
    )
    FirestoreStore(world.db()).record_problems([hostile])
    rows = list(csv.DictReader(io.StringIO(ok(world, "problems", "--csv"))))
    assert len(rows) == 1
    row = rows[0]
    for column in ("section_id", "message", "hint", "clever_id", "email", "reason"):
        assert row[column].startswith("'"), (column, row[column])
        assert not any(ord(ch) < 32 or 0x7F <= ord(ch) <= 0x9F for ch in row[column]), column
    assert row["reason"] == "'@CannotDirectAddUser" and row["message"] == "'+SUM(1,2)[2J cleared"
    # Tables drop control characters too (cli._cell, tests/unit/test_privacy.py).


# -- retention ------------------------------------------------------------------------------------------


def test_every_retention_field_is_set_when_the_data_stops_being_needed(world: World):
    db = world.db()
    retention = Retention(
        closed_problem_days=3, replayed_dead_letter_days=4, decided_held_batch_days=5, deleted_class_days=6
    )
    store = FirestoreStore(db, retention=retention)
    now = dt.datetime.now(dt.UTC)

    # A problem: open, no expiry; closed, expires; open again, the expiry goes.
    problem = Problem("user_not_in_google", "s1", "not in Google", clever_id="u1", email="kid@example.org")
    link = SectionCourseLink.new("s1")
    store.save_link(None, link, problems=[problem])
    doc = db.collection("problems").document(problem.key)
    assert "expire_at" not in doc.get().to_dict()
    store.save_link(link, link, resolved=[problem.key], audit=[AuditEntry("s1", "applied", "x", "e1", "k")])
    closed = doc.get().to_dict()
    assert closed["open"] is False and close_to(closed["expire_at"], now + 3 * DAY)
    store.record_problems([problem])
    assert doc.get().to_dict()["open"] is True and "expire_at" not in doc.get().to_dict()
    audit = [d.to_dict() for d in db.collection("audit").stream()]
    assert audit and all(close_to(a["expire_at"], now + 90 * DAY) for a in audit)

    # A held batch and its changes expire once decided.
    change = _change("s1", "u1", "kid@example.org", ChangeKind.STUDENT_REMOVED)
    batch_id = store.hold_changes(["test"], [change])
    held = db.collection("held_batches").document(batch_id)
    assert "expire_at" not in held.get().to_dict()
    store.set_held_status(batch_id, "discarded")
    assert close_to(held.get().to_dict()["expire_at"], now + 5 * DAY)
    parts = [p.to_dict() for p in held.collection("parts").stream()]
    assert parts and all(close_to(p["expire_at"], now + 5 * DAY) for p in parts)

    # A dead letter expires once replayed.
    letters = FirestoreDeadLetterStore(db, replayed_retention_days=4)
    letters.create_dead_letter("m1", dead_letter_doc(encode_message([change]), change.attributes()))
    assert "expire_at" not in letters.get_dead_letter("m1") or letters.get_dead_letter("m1")["expire_at"] is None
    letters.mark_replayed("m1", now, "m2")
    assert close_to(letters.get_dead_letter("m1")["expire_at"], now + 4 * DAY)

    # A OneRoster class's state expires once the class is deleted.
    oneroster = OneRosterFirestoreStore(db, retention=retention)
    enrolled = {"e1": Enrollment("u1", "student", email="kid@example.org")}
    oneroster.save_class_states({"c1": ClassState("c1", "Bio", "active", enrolled)})
    assert "expire_at" not in db.collection("oneroster_classes").document("c1").get().to_dict()
    oneroster.save_class_states({"c1": ClassState("c1", "Bio", "tobedeleted", enrolled)})
    assert close_to(db.collection("oneroster_classes").document("c1").get().to_dict()["expire_at"], now + 6 * DAY)


def test_members_removed_long_ago_are_pruned_from_the_link_document(world: World):
    from rostersync.domain.retention import prune_removed_members

    db = world.db()
    store = FirestoreStore(db)
    old = f"{int((dt.datetime.now(dt.UTC) - 61 * DAY).timestamp()):08x}0000000000000001"
    recent = f"{int(dt.datetime.now(dt.UTC).timestamp()):08x}0000000000000002"
    link = SectionCourseLink("s9", LinkState.ACTIVE, "d:clever-s9", course_id="c9")
    for cid, status, event in (("gone", "removed", old), ("left", "removed", recent), ("here", "active", old)):
        link = link.with_member(MemberRecord(cid, f"{cid}@example.org", "student", MemberStatus(status), event))
    store.save_link(None, link)
    pruned = prune_removed_members(link, 60)
    store.save_link(link, pruned)
    members = db.collection("sections").document("s9").get().to_dict()["members"]
    assert set(members) == {"left", "here"}


def _change(section_id: str, clever_id: str, email: str, kind=ChangeKind.STUDENT_ADDED) -> RosterChange:
    snapshot = SectionSnapshot(section_id, "Bio", Person("t1", "teacher@example.org"))
    return RosterChange(kind, section_id, "6b0b0b035c1e7e4a0d000273", "", snapshot, Person(clever_id, email))


# -- forget -----------------------------------------------------------------------------------------


def test_forget_removes_a_person_from_every_collection_and_keeps_an_audit_entry(world: World, district):
    db = world.db()
    biology, chemistry, kids = district["biology"], district["chemistry"], district["kids"]
    kid, other = kids[0], kids[1]
    email, other_email = world.email(kid), world.email(other)
    # The kid is also in a teacher's change, a dead letter (with another kid's change), a held
    # batch and a OneRoster class state.
    course = world.classroom.course(f"d:clever-{biology}")
    world.classroom.teacher_remove_student(course["id"], email)
    ok(world, "resync", biology)
    changes = [_change(biology, kid, email), _change(biology, other, other_email)]
    FirestoreDeadLetterStore(db).create_dead_letter(
        "dl-1", dead_letter_doc(encode_message(changes), changes[0].attributes())
    )
    FirestoreStore(db).hold_changes(["test"], changes)
    enrolled = {"e1": Enrollment(kid, "student", email=email), "e2": Enrollment(other, "student", email=other_email)}
    OneRosterFirestoreStore(db).save_class_states({"c1": ClassState("c1", "Bio", "active", enrolled)})
    named = where_named(db, email)
    assert {p.split("/")[0] for p in named} >= {"sections", "overrides", "audit", "dead_letters", "held_batches"}
    assert any(p.startswith("oneroster_classes") for p in named)
    before = every_document(db)

    dry = ok(world, "forget", email)  # by email: resolved to the Clever id too
    assert "dry run: nothing was changed" in dry and "sections:" in dry and "dead_letters:" in dry
    assert every_document(db) == before

    done = ok(world, "forget", email, "--yes")
    assert "forgot them in" in done
    assert where_named(db, email) == []
    assert not any(kid in repr(data) or kid in path for path, data in every_document(db) if "audit" not in path)
    # Only the person is gone: the other kid is still in both links, the dead letter, the held
    # batch and the class, and the sections still follow Clever.
    for section in (biology, chemistry):
        members = world.link(section)["members"]
        assert kid not in members and members[other]["email"] == other_email
    assert {p.split("/")[0] for p in where_named(db, other_email)} >= {"sections", "dead_letters", "held_batches"}
    letter = FirestoreDeadLetterStore(db).get_dead_letter("dl-1")
    assert other_email in base64.b64decode(letter["data_base64"]).decode() and email not in letter["data_text"]
    forgotten = [d.to_dict() for d in db.collection("audit").stream() if d.to_dict().get("kind") == "forget"]
    assert len(forgotten) == 1 and forgotten[0]["email"] is None and kid in forgotten[0]["clever_id"]

    again = ok(world, "forget", kid, "--yes")  # by Clever id now: nothing left
    assert "nothing to forget" in again
    assert len([d for d in db.collection("audit").stream() if d.to_dict().get("kind") == "forget"]) == 1

"""The administrator's views (admin.py) from Firestore-shaped documents, and the pause switch in
poll_clever. The CLI itself runs end to end in tests/e2e/test_cli.py."""

from __future__ import annotations

import base64

import pytest
from rostersync.admin import views as admin
from rostersync.admin.cli import main as cli_main

LINK = {
    "section_id": "sec1",
    "section_name": "Biology - Smith",
    "state": "active",
    "course_id": "123456789012",
    "alias": "d:clever-sec1",
    "name_set": "Biology - Smith",
    "owner_clever_id": "t1",
    "owner_email": "ann.smith@district.example.org",
    "owner_event_id": "e1",
    "members": {
        "t1": {"clever_id": "t1", "email": "ann.smith@district.example.org", "role": "teacher", "status": "active"},
        "s1": {"clever_id": "s1", "email": "kid1@district.example.org", "role": "student", "status": "active",
               "event_id": "e1"},
        "s2": {"clever_id": "s2", "email": "ghost@district.example.org", "role": "student", "status": "problem",
               "event_id": "e1", "reason": "@CannotDirectAddUser"},
        "s3": {"clever_id": "s3", "email": "kid3@district.example.org", "role": "student",
               "status": "removed_by_teacher", "event_id": "e1"},
    },
}  # fmt: skip
PROBLEM = {
    "id": "sec1__user__s2",
    "kind": "user_not_in_google",
    "section_id": "sec1",
    "clever_id": "s2",
    "email": "ghost@district.example.org",
    "reason": "@CannotDirectAddUser",
    "message": "ghost@district.example.org has no Google account",
    "hint": "Create the account in the Admin console",
    "open": True,
}
OVERRIDE = {
    "id": "sec1__member_removed_by_teacher__s3",
    "kind": "member_removed_by_teacher",
    "section_id": "sec1",
    "clever_id": "s3",
    "email": "kid3@district.example.org",
    "detail": "a teacher removed kid3 from the course",
}


def test_the_classroom_link_is_the_base64_of_the_course_id_as_classroom_and_the_simulator_build_it():
    for course_id in ("1", "12", "123", "594257454096", "9999999999999"):
        simulator = base64.b64encode(course_id.encode()).decode().rstrip("=")
        assert admin.classroom_link(course_id) == f"https://classroom.google.com/c/{simulator}"
    assert admin.classroom_link(None) == ""


def test_why_a_course_is_in_classroom_names_its_course_owner_overrides_and_problems():
    text = admin.why(LINK, [OVERRIDE], [PROBLEM])
    assert "Section sec1 (Biology - Smith) is in Classroom as course 123456789012" in text
    assert "ann.smith@district.example.org" in text and "manages 2 of its members" in text
    assert "a teacher removed kid3" in text and "Hint: Create the account" in text


@pytest.mark.parametrize(
    ("user", "fragment"),
    [
        ("s1", "is in the course as a student: rostersync added them (Clever event e1)"),
        ("GHOST@district.example.org", "could not add them (Classroom said @CannotDirectAddUser)"),
        ("s3", "a teacher removed them by hand"),
        ("nobody@district.example.org", "has no record of nobody@district.example.org"),
        ("t1", "They are the course owner"),
    ],
)
def test_why_a_member_is_or_is_not_in_classroom(user, fragment):
    assert fragment in admin.why(LINK, [OVERRIDE], [PROBLEM], user)


def test_why_a_declined_course_says_how_to_offer_it_again():
    text = admin.why({**LINK, "state": "declined"}, [], [])
    assert "declined" in text and "rostersync reoffer sec1" in text


class FakeAdminStore:
    def sync_state(self, name="clever"):
        return {"last_event_id": "ev9", "last_poll": {"outcome": "ok"}, "paused": True} if name == "clever" else {}

    def sections(self, state=None):
        return [{"section_id": "a", "state": "active"}, {"section_id": "b", "state": "owner_problem"}]

    def problems(self, section_id=None):
        return [PROBLEM]

    def overrides(self, section_id=None):
        return [OVERRIDE, OVERRIDE]

    def unreplayed_dead_letters(self):
        return 0

    def held_batch_count(self):
        return 1

    def guardian_state_counts(self):
        return {"pending": 3, "accepted": 1}


def test_status_counts_sections_by_state_problems_overrides_and_held_batches():
    st = admin.status(FakeAdminStore())
    assert st["paused"] is True and st["cursor"]["last_event_id"] == "ev9"
    assert st["sections"] == {
        "total": 2,
        "by_state": {**dict.fromkeys(admin.STATES, 0), "active": 1, "owner_problem": 1},
    }
    assert (st["open_problems"], st["overrides"], st["held_batches"]) == (1, 2, 1)
    assert st["guardians"] == {"pending": 3, "accepted": 1}


def test_the_cli_rejects_an_unknown_state(capsys):
    with pytest.raises(SystemExit) as exc:
        cli_main(["sections", "--state", "bogus"])
    assert exc.value.code == 2 and "invalid choice" in capsys.readouterr().err

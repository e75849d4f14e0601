"""`rostersync status` says whether the last OneRoster read was known complete, and why not."""

from rostersync.admin import views as admin
from rostersync.admin.cli import oneroster_status_lines

from tests.unit.test_admin import FakeAdminStore


class OneRosterAdminStore(FakeAdminStore):
    def sync_state(self, name="clever"):
        if name != "oneroster":
            return {}
        return {
            "since": "2026-09-01T11:55:00.000Z",
            "last_full_read": "",
            "last_incomplete_full_read": "2026-09-01T12:00:00.000Z",
            "last_poll": {
                "outcome": "ok",
                "full_read": True,
                "complete": False,
                "incomplete_reasons": ["students: page 2 repeated records already read (is offset ignored?)"],
                "classes_read": 2,
                "changes": 1,
                "published": 1,
                "problems": ["the read is not known to be complete ..."],
            },
        }


def test_an_incomplete_read_shows_in_status_with_its_reason():
    st = admin.status(OneRosterAdminStore())
    assert st["oneroster"]["complete"] is False
    lines = oneroster_status_lines(st["oneroster"])
    text = "\n".join(lines)
    assert "NOT COMPLETE: no removal was inferred" in text
    assert "why: students: page 2 repeated records" in text
    assert "full read (classes_read 2, changes 1, published 1)" in text


def test_a_clever_district_shows_nothing_of_oneroster():
    st = admin.status(FakeAdminStore())
    assert st["oneroster"] is None and oneroster_status_lines(None) == []

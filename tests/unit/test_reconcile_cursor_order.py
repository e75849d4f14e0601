"""The reconcile pass reads the cursor before the section (issue 13): the section is then at
least as new as the event id it is labelled with."""

from __future__ import annotations

from types import SimpleNamespace

from rostersync import wiring
from rostersync.adapters import clever as clever_module
from rostersync.domain.ports import Cursor

from tests.unit.clever_payloads import EMAILS, SECTION, section


def test_current_section_reads_the_cursor_first_and_labels_the_section_with_it(monkeypatch):
    reads: list[str] = []

    class Store:
        def load_cursor(self):
            reads.append("cursor")
            return Cursor("6553a0f27d0c8a0001b00042")

    class Clever:
        def __init__(self, *args, **kwargs):
            pass

        def section(self, section_id):
            reads.append("section")
            return section()

    class Users:
        def __init__(self, client):
            pass

        def emails(self, ids):
            return {i: EMAILS.get(i) for i in ids}

    settings = SimpleNamespace(
        require_clever=lambda: None,
        clever_api_base="http://127.0.0.1:9",
        clever_token="t",
        clever_page_size=100,
        reconcile_time_budget_seconds=60.0,
        term_end_action="keep",
        retain_removed_members_days=60,
        section_deleted_action="archive",
        reconcile_reads_per_minute=300,
    )
    monkeypatch.setattr(wiring, "settings", lambda: settings)
    monkeypatch.setattr(wiring, "store", lambda: Store())
    monkeypatch.setattr(wiring, "_classroom", lambda: object())
    monkeypatch.setattr(clever_module, "CleverClient", Clever)
    monkeypatch.setattr(clever_module, "CleverUserDirectory", Users)
    reconciler = wiring.reconciler()
    change = reconciler._current_section(SECTION)
    assert reads == ["cursor", "section"]
    assert change.event_id == "6553a0f27d0c8a0001b00042"

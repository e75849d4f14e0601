"""The status page's pure parts (health, problem groups, members, timeline, charts) and its views
rendered by Flask's test client over an in-memory store shaped like Firestore's documents. The
real Firestore reads and the browser are in tests/e2e/test_status_page.py."""

from __future__ import annotations

import datetime as dt
import html
import re
import zoneinfo

import pytest
from rostersync.admin import status_page
from rostersync.admin import views as admin

NOW = dt.datetime(2026, 12, 3, 10, 0, tzinfo=dt.UTC)
DOMAIN = "district.example.org"


def link(i: int, school: str, state: str = "active", students: int = 3) -> dict:
    sid = f"sec{i:04d}"
    members = {"t": {"clever_id": f"t{i}", "email": f"teacher{i}@{DOMAIN}", "role": "teacher", "status": "active"}}
    for n in range(students):
        members[f"s{i}_{n}"] = {
            "clever_id": f"s{i}_{n}",
            "email": f"student{i}.{n}@{DOMAIN}",
            "role": "student",
            "status": "active" if n else "problem",
            "reason": "" if n else "@CannotDirectAddUser",
        }
    return {
        "section_id": sid,
        "section_name": f"Class {i:04d}",
        "name_set": f"Class {i:04d}",
        "state": state,
        "school": school,
        "course_id": str(1000 + i) if state != "owner_problem" else None,
        "owner_email": f"teacher{i}@{DOMAIN}",
        "owner_clever_id": f"t{i}",
        "members": members,
    }


def no_google(i: int, n: int = 0) -> dict:
    email = f"student{i}.{n}@{DOMAIN}"
    return {
        "id": f"sec{i:04d}__s{i}_{n}",
        "kind": "user_not_in_google",
        "section_id": f"sec{i:04d}",
        "clever_id": f"s{i}_{n}",
        "email": email,
        "role": "student",
        "reason": "@CannotDirectAddUser",
        "message": f"Could not add student {email} to the course: no such user",
        "hint": "Create the Google account (or fix the email in the SIS)",
    }


class FakeStatusStore:
    """The reads status_page.py makes, over lists of documents (what AdminStore returns)."""

    def __init__(self, links, problems=(), clever=None, notifications=None, audit=(), counts=None):
        self.links = {lk["section_id"]: lk for lk in links}
        self.problem_docs = list(problems)
        self.clever = clever or {}
        self.notifications = notifications or {}
        self.audit_docs = list(audit)
        self.extra_counts = counts or {}
        self.member_reads = 0

    def sync_state(self, name="clever"):
        return self.clever if name == "clever" else self.notifications

    def section_state_counts(self, states):
        return {s: sum(1 for lk in self.links.values() if lk["state"] == s) for s in states}

    def counts(self):
        return {
            "open_problems": len(self.problem_docs),
            "overrides": 0,
            "dead_letters_unreplayed": 0,
            "held_batches": 0,
            "dead_letters_held_while_paused": 0,
        } | self.extra_counts

    def open_problem_rows(self, kind=None, limit=None):
        rows = sorted((p for p in self.problem_docs if not kind or p["kind"] == kind), key=lambda p: p["id"])
        return rows[:limit] if limit else rows

    def open_problem_kind_counts(self, kinds):
        return {k: sum(1 for p in self.problem_docs if p["kind"] == k) for k in kinds}

    def open_problem_counts_for(self, ids):
        return {i: n for i in ids if (n := sum(1 for p in self.problem_docs if p["section_id"] == i))}

    def _row(self, lk):
        return {k: v for k, v in lk.items() if k != "members"}

    def section_page(self, state, school, after, limit):
        rows = [
            self._row(lk)
            for lk in self.links.values()
            if (not state or lk["state"] == state) and (not school or lk["school"] == school)
        ]
        rows.sort(key=lambda r: (r["school"], r["section_name"], r["section_id"]))
        if after:
            rows = [r for r in rows if (r["school"], r["section_name"], r["section_id"]) > tuple(after)]
        return rows[:limit], len([1 for lk in self.links.values() if not state or lk["state"] == state])

    def all_section_rows(self):
        return [self._row(lk) for lk in self.links.values()]

    def section_rows(self, ids):
        return [self._row(self.links[i]) for i in ids if i in self.links]

    def section_members(self, ids):
        self.member_reads += len(ids)
        return {i: self.links[i]["members"] for i in ids if i in self.links}

    def schools(self):
        return sorted({lk["school"] for lk in self.links.values()})

    def audit_count(self, outcome, start, end):
        return sum(1 for a in self.audit_docs if a["outcome"] == outcome and start <= a["at"] < end)

    def section(self, sid):
        return self.links.get(sid)

    def overrides(self, section_id=None):
        return []

    def problems(self, section_id=None):
        return [p for p in self.problem_docs if not section_id or p["section_id"] == section_id]

    def audit(self, section_id, user=None):
        return [a for a in self.audit_docs if a.get("section_id") == section_id]


def healthy_state(**over):
    st = {
        "paused": False,
        "last_poll": {"outcome": "ok", "at": NOW - dt.timedelta(minutes=3)},
        "dead_letters_unreplayed": 0,
        "held_batches": 0,
        "open_problems": 0,
        "push_notifications": {"registration_id": "r1", "expiry_time": (NOW + dt.timedelta(days=5)).isoformat()},
    }
    return st | over


def test_health_is_healthy_when_polls_succeed_and_nothing_waits():
    h = admin.health(healthy_state(), [], NOW)
    assert h == {"level": "healthy", "label": "Healthy", "findings": []}


@pytest.mark.parametrize(
    ("change", "level", "title", "command"),
    [
        ({"last_poll": {"outcome": "failed", "at": NOW, "problems": ["HTTPError: 401"]}}, "failing",
         "The last poll failed", "rostersync status"),
        ({"last_poll": {"outcome": "ok", "at": NOW - dt.timedelta(hours=3)}}, "failing", "No poll for 180 minutes",
         "rostersync status"),
        ({"dead_letters_unreplayed": 4}, "failing", "4 changes not applied (dead letters)",
         "rostersync replay-dead-letters"),
        ({"held_batches": 1}, "attention", "1 batch of removals held by the brake", "rostersync held"),
        ({"paused": True}, "attention", "The sync is paused", "rostersync resume"),
        ({"push_notifications": {}}, "attention", "Classroom push notifications are not registered",
         "rostersync consent-notifications"),
        ({"push_notifications": {"registration_id": "r", "last_error": "invalid_grant"}}, "attention",
         "Classroom push notifications could not be renewed", "rostersync consent-notifications"),
        ({"last_poll": None}, "attention", "No poll has run yet", "rostersync status"),
        ({"open_problems": 2}, "attention", "2 open problems", "rostersync problems"),
    ],
)  # fmt: skip
def test_each_cause_sets_the_level_and_names_the_command_that_fixes_it(change, level, title, command):
    h = admin.health(healthy_state(**change), None, NOW)
    assert h["level"] == level
    assert [(f["title"], f["command"]) for f in h["findings"]] == [(title, command)]


def test_the_worst_finding_sets_the_level_and_comes_first():
    h = admin.health(healthy_state(held_batches=2, dead_letters_unreplayed=1), None, NOW)
    assert h["level"] == "failing" and [f["level"] for f in h["findings"]] == ["failing", "attention"]


def test_changes_held_while_paused_are_not_counted_as_failures():
    h = admin.health(healthy_state(paused=True, dead_letters_unreplayed=3, dead_letters_held_while_paused=3), [], NOW)
    assert h["level"] == "attention" and [f["command"] for f in h["findings"]] == ["rostersync resume"]
    assert "3 held so far" in h["findings"][0]["detail"]


def test_a_failed_polls_reason_is_shown_with_emails_masked():
    poll = {"outcome": "failed", "at": NOW, "problems": ["bad user ann.smith@district.example.org"]}
    detail = admin.health(healthy_state(last_poll=poll), [], NOW)["findings"][0]["detail"]
    assert "a***h@district.example.org" in detail and "ann.smith@" not in detail


def test_three_hundred_students_without_google_accounts_are_one_group_of_three_hundred():
    problems = [no_google(i % 100, i // 100) for i in range(300)]  # 300 students in 100 sections
    problems += [
        {"id": "x", "kind": "section_without_teacher", "section_id": "sec0007", "hint": "Give it a teacher"},
        {"id": "y", "kind": "section_without_teacher", "section_id": "sec0008", "hint": "Give it a teacher"},
    ]
    groups = admin.group_problems(problems)
    assert [(g["kind"], g["count"], len(g["people"]), len(g["sections"])) for g in groups] == [
        ("user_not_in_google", 300, 300, 100),
        ("section_without_teacher", 2, 0, 2),
    ]
    students = groups[0]
    assert students["hint"] == "Create the Google account (or fix the email in the SIS)"
    assert students["label"] == "People without a Google account"
    assert students["people"][0]["email"] == "s***0@district.example.org"
    assert all("student" not in p["email"] for p in students["people"])  # masked: no local part
    assert "s***0@district.example.org" in students["example"] and "student0.0@" not in students["example"]
    full = admin.group_problems(problems, masked=False)
    assert full[0]["people"][0]["email"].startswith("student")


def test_a_person_in_several_sections_is_one_entry_listing_the_sections():
    groups = admin.group_problems([no_google(1), {**no_google(1), "id": "b", "section_id": "sec0002"}])
    assert groups[0]["count"] == 2 and groups[0]["people"][0]["sections"] == ["sec0001", "sec0002"]


def test_members_are_grouped_teachers_first_then_by_status():
    groups = admin.member_groups(link(1, "sch1", students=3))
    assert [(g["role"], g["status"], len(g["people"])) for g in groups] == [
        ("teacher", "active", 1),
        ("student", "active", 2),
        ("student", "problem", 1),
    ]
    assert groups[2]["people"][0] == {"clever_id": "s1_0", "email": "s***0@district.example.org",
                                      "reason": "@CannotDirectAddUser"}  # fmt: skip


def test_the_timeline_is_newest_first_with_its_source_and_masked_emails():
    trail = [
        {"at": NOW - dt.timedelta(days=1), "event_id": "e1", "what": "add student kid@district.example.org",
         "outcome": "applied"},
        {"at": NOW, "event_id": "reconcile", "what": "rename the course to 'Bio'", "outcome": "skipped_override"},
    ]  # fmt: skip
    entries = admin.timeline(trail)
    assert [(e["source"], e["what"], e["outcome_label"]) for e in entries] == [
        ("the reconcile pass", "rename the course to 'Bio'", "skipped override"),
        ("Clever event e1", "add student k***@district.example.org", "applied"),
    ]


def test_relative_times():
    assert status_page.relative(NOW - dt.timedelta(seconds=20), NOW) == "just now"
    assert status_page.relative(NOW - dt.timedelta(minutes=1), NOW) == "1 minute ago"
    assert status_page.relative(NOW - dt.timedelta(hours=5, minutes=3), NOW) == "5 hours ago"
    assert status_page.relative(NOW + dt.timedelta(days=2, hours=1), NOW) == "in 2 days"
    assert status_page.relative(None, NOW) == "never"


def test_the_day_chart_scales_bars_to_the_busiest_day():
    days = [{"label": f"d{i}", "short": f"{i}", "applied": i * 10, "problems": i} for i in range(14)]
    chart = status_page.day_bars(days)
    heights = {b["title"]: b["h"] for b in chart["bars"]}
    assert len(chart["bars"]) == 28 and heights["d13: 130 changes applied"] == max(heights.values())
    assert heights["d0: 0 changes applied"] == 0
    assert heights["d13: 13 problems opened"] == pytest.approx(heights["d13: 130 changes applied"] / 10, abs=0.2)


def test_the_poll_chart_colours_each_poll_by_outcome():
    polls = [{"outcome": "ok", "seconds": 2, "at": NOW}, {"outcome": "failed", "seconds": 8, "at": NOW}]
    chart = status_page.poll_bars(polls, NOW)
    assert [b["cls"] for b in chart["bars"]] == ["poll-ok", "poll-failed"]
    assert chart["bars"][1]["h"] == pytest.approx(4 * chart["bars"][0]["h"])
    assert chart["outcomes"] == {"ok": 1, "failed": 1}


# -- the views, through Flask's test client ----------------------------------------------------------


def district(sections: int = 120, bad: int = 300):
    links = [link(i, f"school-{i % 3}", "owner_problem" if i % 40 == 39 else "active") for i in range(sections)]
    problems = [no_google(i % sections, i // sections) for i in range(bad)]
    audit = [
        {"section_id": "sec0001", "at": NOW - dt.timedelta(hours=h), "outcome": o, "event_id": "e", "what": w}
        for h, o, w in ((30, "applied", "add student student1.1@district.example.org"), (2, "problem", "oops"))
    ]
    clever = {
        "last_poll": {"outcome": "failed", "at": NOW, "seconds": 3.5, "problems": ["HTTPError: 401 Unauthorized"]},
        "recent_polls": [{"outcome": "ok", "seconds": 2.0, "at": NOW - dt.timedelta(minutes=m)} for m in (9, 6)]
        + [{"outcome": "failed", "seconds": 3.5, "at": NOW}],
    }
    return FakeStatusStore(links, problems, clever, {"registration_id": "r1"}, audit)


@pytest.fixture
def client_for():
    def make(store):
        app = status_page.create_app(lambda: store, tz=zoneinfo.ZoneInfo("America/Chicago"))
        return app.test_client()

    return make


def visible(response) -> str:
    return html.unescape(re.sub(r"<[^>]+>", " ", response.get_data(as_text=True)))


def test_the_front_page_leads_with_failing_health_and_groups_problems(client_for):
    store = district()
    response = client_for(store).get("/")
    assert response.status_code == 200 and response.content_type.startswith("text/html")
    page = response.get_data(as_text=True)
    text = " ".join(visible(response).split())
    assert text.index("Sync health: Failing") < text.index("At a glance") < text.index("Open problems")
    assert "The last poll failed" in text and "Fix: rostersync status" in text
    assert "300 People without a Google account 300 people in 120 sections" in text
    assert text.count("Create the Google account (or fix the email in the SIS)") == 1  # the hint once
    assert "@district.example.org" in text and not re.search(r"student\d", text)  # masked, never in full
    assert "<script" not in page and " style=" not in page and " on" not in re.sub(r"<[^>]*>", "", page)[:0]
    assert not re.search(r"<[^>]+\son[a-z]+=", page)  # no inline event handlers: a CSP forbids them
    assert '<svg viewBox="0 0 480 190" role="img"' in page and 'class="poll-failed"' in page


def test_the_front_page_reads_members_of_one_page_of_sections_only(client_for):
    store = district(sections=120)
    first = client_for(store).get("/")
    assert store.member_reads == status_page.PAGE_SIZE
    text = " ".join(visible(first).split())
    assert "Sections 1 to 50 of 120" in text and "School school-0" in text
    nxt = re.search(r'href="(/\?[^"]*after_id=[^"]*)"', first.get_data(as_text=True)).group(1)
    second = " ".join(visible(client_for(store).get(html.unescape(nxt))).split())
    assert "Sections 51 to 100 of 120" in second
    assert "Class 0000" in text and "Class 0000" not in second


def test_the_sections_filter_by_school_state_and_problem_kind(client_for):
    client = client_for(district(sections=120, bad=10))
    by_school = visible(client.get("/?school=school-1"))
    assert "School school-1" in by_school and "School school-0" not in by_school
    by_state = " ".join(visible(client.get("/?state=owner_problem")).split())
    assert "Sections 1 to 3 of 3" in by_state and "no course" in by_state
    by_kind = " ".join(visible(client.get("/?kind=user_not_in_google")).split())
    assert "Sections 1 to 10 of 10" in by_kind
    searched = " ".join(visible(client.get("/?q=class 0042")).split())
    assert "Sections 1 to 1 of 1" in searched and "Class 0042" in searched


def test_a_section_page_is_titled_by_its_name_with_course_link_members_and_history(client_for):
    response = client_for(district()).get("/section/sec0001")
    page = response.get_data(as_text=True)
    text = " ".join(visible(response).split())
    assert "<title>Class 0001 · rostersync</title>" in page
    assert admin.classroom_link("1001") in page and "Open the course in Classroom" in text
    assert "Teachers, active (1)" in text and "Students, problem (1)" in text and "Students, active (2)" in text
    assert "failed_owner_email" not in text and "updated_at" not in text
    history = text[text.index("History") :]
    assert history.index("oops") < history.index("add student s***1@district.example.org")  # newest first
    assert re.search(r'<time datetime="2026-12-03T08:00:00\+00:00" title="Thu 03 Dec 2026, 02:00:00 CST">', page)
    assert not re.search(r"student\d", text)


def test_the_problems_page_lists_every_person_of_a_kind(client_for):
    text = " ".join(visible(client_for(district(bad=300)).get("/problems?kind=user_not_in_google")).split())
    assert "300 People without a Google account" in text
    assert len(re.findall(r"s\*\*\*\d@district", text)) == 300 + 1  # and the example


def test_the_stylesheet_is_served(client_for):
    response = client_for(district(sections=1, bad=0)).get("/assets/status.css")
    assert response.status_code == 200 and "@media (max-width: 640px)" in response.get_data(as_text=True)


def test_rostersync_problems_prints_the_same_groups_with_full_emails(monkeypatch, capsys):
    from rostersync.admin import cli

    problems = [no_google(i % 40, i // 40) for i in range(300)]
    problems.append({"id": "z", "kind": "section_without_teacher", "section_id": "sec0009", "hint": "Give it one"})

    class Store:
        def problems(self, section_id=None):
            return problems

    monkeypatch.setattr(cli, "_admin", lambda: Store())
    assert cli.main(["problems"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "301 open problems in 2 kinds (300 people)"
    assert "People without a Google account (user_not_in_google): 300 problems, 300 people in 40 sections" in out
    assert out.count("what to do: Create the Google account") == 1 and "student0.0@district.example.org" in out
    assert "Sections without a primary teacher (section_without_teacher): 1 problems, 1 sections" in out
    assert "  sections:   sec0009" in out
    assert cli.main(["problems", "--flat"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 302  # a header and a row a problem
    assert cli.main(["problems", "--csv"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 302


def test_a_big_group_counts_every_problem_but_reads_only_the_first_ones(client_for, monkeypatch):
    monkeypatch.setattr(status_page, "GROUP_SAMPLE", 50)
    store = district(sections=120, bad=300)
    store.problem_docs.append({"id": "zz", "kind": "brand_new_kind", "section_id": "sec0003", "message": "new"})
    text = " ".join(visible(client_for(store).get("/")).split())
    assert "300 People without a Google account the first 50: 50 people in 17 sections" in text
    # A kind the page has no label for, beyond the sample, is still counted.
    assert "1 Other problems" in text and "301 open problems" in text


def test_a_chart_whose_counts_time_out_does_not_hide_the_banner(client_for):
    from rostersync.adapters.admin_store import UnreachableError

    store = district(sections=10, bad=5)

    def too_slow(*args):
        raise UnreachableError("Firestore did not answer: Timeout of 10.0s exceeded")

    store.audit_count = too_slow
    response = client_for(store).get("/")
    text = " ".join(visible(response).split())
    assert response.status_code == 200 and "Sync health: Failing" in text
    assert "Not available: Firestore did not count the audit trail in time" in text

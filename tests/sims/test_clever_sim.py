"""The Clever simulator over HTTP, as a client sees it, and the sample-district generator."""

from __future__ import annotations

import re
import threading
import time
from datetime import UTC, datetime

import pytest
import requests

from tests.sims.clever_sim import CleverSimulator
from tests.sims.district import make_district

ID = re.compile(r"^[0-9a-f]{24}$")
CREATED = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@pytest.fixture
def clever():
    with CleverSimulator() as sim:
        yield sim


def get(sim: CleverSimulator, uri: str, token: str | None = None, **params) -> requests.Response:
    url = uri if uri.startswith("http") else sim.base_url + uri
    headers = {"Authorization": f"Bearer {token or sim.token}"}
    return requests.get(url, params=params or None, headers=headers, timeout=10)


def link(body: dict, rel: str) -> str | None:
    return next((item["uri"] for item in body["links"] if item["rel"] == rel), None)


def all_pages(sim: CleverSimulator, uri: str, **params) -> tuple[list[dict], int]:
    """Follows next links until an empty page or one without a next link; returns the objects and
    the number of requests."""
    resp = get(sim, uri, **params)
    objects, n = [], 1
    while True:
        assert resp.status_code == 200, resp.text
        body = resp.json()
        if not body["data"]:
            return objects, n
        objects += [item["data"] for item in body["data"]]
        nxt = link(body, "next")
        if nxt is None:
            return objects, n
        assert nxt.startswith("/v3.0/")  # relative, as Clever returns them
        resp = get(sim, nxt)
        n += 1


def people(sim: CleverSimulator, n: int, role: str = "student", emit: bool = False) -> list[str]:
    return [sim.add_user(role, f"{role}{i}@d.example.org", f"First{i}", "Last", emit=emit) for i in range(n)]


def section_with_people(sim: CleverSimulator):
    ann = sim.add_user("teacher", "ann.smith@d.example.org", "Ann", "Smith", emit=False)
    bob = sim.add_user("teacher", "bob.jones@d.example.org", "Bob", "Jones", emit=False)
    kids = people(sim, 4)
    section = sim.add_section("Algebra I - Smith - Period 3", ann, students=kids[:3], period="3")
    return section, ann, bob, kids


def newest_event(sim: CleverSimulator) -> dict:
    return sim.events[-1]


# -- auth, ids, lists ------------------------------------------------------------------------------


def test_missing_or_wrong_token_is_401(clever):
    assert requests.get(f"{clever.base_url}/v3.0/sections", timeout=5).status_code == 401
    resp = get(clever, "/v3.0/sections", token="not-the-token")
    assert resp.status_code == 401 and resp.json() == {"error": "Unauthorized"}
    assert get(clever, "/v3.0/sections").status_code == 200


def test_ids_are_ascending_object_ids_and_times_come_from_the_simulated_clock():
    start = datetime(2026, 11, 28, 17, 0, tzinfo=UTC)
    sim = CleverSimulator(start_time=start)
    ids = people(sim, 3, emit=True)
    ids.append(sim.add_section("Art - Last - Period 1", ids[0]))
    assert all(ID.match(i) for i in ids) and ids == sorted(ids) and len(set(ids)) == 4
    events = sim.events
    assert [e["id"] for e in events] == sorted(e["id"] for e in events)
    assert all(CREATED.match(e["created"]) for e in events)
    assert events[0]["created"] > "2026-11-28T17:00:00.000Z"
    assert int(events[0]["id"][:8], 16) >= int(start.timestamp())
    again = CleverSimulator(start_time=start)
    assert people(again, 3, emit=True) == ids[:3]  # deterministic


def test_sections_page_by_next_links_to_the_last_page(clever):
    teacher = clever.add_user("teacher", "t@d.example.org", "Tea", "Cher", emit=False)
    made = [clever.add_section(f"Math - Cher - Period {i}", teacher, emit=False) for i in range(7)]
    resp = get(clever, "/v3.0/sections", limit=3)
    body = resp.json()
    assert [item["uri"] for item in body["data"]] == [f"/v3.0/sections/{s}" for s in made[:3]]
    assert link(body, "self") == "/v3.0/sections?limit=3"
    assert link(body, "next") == f"/v3.0/sections?limit=3&starting_after={made[2]}"
    assert link(body, "prev") is None
    objects, n = all_pages(clever, "/v3.0/sections", limit=3)
    assert [o["id"] for o in objects] == made and n == 3  # 3 + 3 + 1: the partial page has no next link
    short = get(clever, "/v3.0/sections", limit=3, starting_after=made[5]).json()
    assert len(short["data"]) == 1 and link(short, "next") is None and link(short, "prev")
    six = made[:6]
    full_last = get(clever, "/v3.0/sections", limit=3, starting_after=six[2], ending_before=made[6]).json()
    assert link(full_last, "next")  # a full page cannot know it is the last
    last = get(clever, "/v3.0/sections", limit=3, starting_after=made[-1]).json()
    assert last["data"] == [] and link(last, "next") is None
    # default page size 100
    assert len(get(clever, "/v3.0/sections").json()["data"]) == 7
    # ending_before pages backwards
    before = get(clever, "/v3.0/sections", limit=2, ending_before=made[4]).json()
    assert [item["data"]["id"] for item in before["data"]] == made[2:4]


def test_limit_above_10000_is_413(clever):
    assert get(clever, "/v3.0/sections", limit=10001).status_code == 413
    assert "error" in get(clever, "/v3.0/events", limit=10001).json()
    assert get(clever, "/v3.0/users", limit=10000).status_code == 200
    assert get(clever, "/v3.0/users", limit=0).status_code == 400


def test_section_and_user_shapes_and_404s(clever):
    section, ann, bob, kids = section_with_people(clever)
    body = get(clever, f"/v3.0/sections/{section}").json()
    s = body["data"]
    assert link(body, "self") == f"/v3.0/sections/{section}"
    for key in (
        "id",
        "district",
        "name",
        "period",
        "subject",
        "course",
        "term_id",
        "school",
        "sis_id",
        "section_number",
        "grade",
        "teacher",
        "teachers",
        "students",
        "created",
        "last_modified",
    ):
        assert key in s, key  # fmt: skip
    assert s["teacher"] == ann and s["teachers"] == [ann] and s["students"] == kids[:3]
    user = get(clever, f"/v3.0/users/{ann}").json()["data"]
    assert user["email"] == "ann.smith@d.example.org" and user["name"]["first"] == "Ann"
    assert "teacher" in user["roles"] and user["district"] == s["district"]
    assert get(clever, "/v3.0/sections/5c40b5127d0c8a0001a7f001").status_code == 404
    assert get(clever, "/v3.0/users/nope").status_code == 404
    assert get(clever, "/v3.0/events/5c40b5127d0c8a0001a7f001").status_code == 404
    blank = clever.add_user("student", None, "No", "Email", emit=False)
    assert "email" not in get(clever, f"/v3.0/users/{blank}").json()["data"]


def test_users_filter_by_role(clever):
    teachers = people(clever, 3, role="teacher")
    students = people(clever, 5)
    assert [u["id"] for u in all_pages(clever, "/v3.0/users", role="teacher", limit=2)[0]] == teachers
    found = all_pages(clever, "/v3.0/users", role="student", limit=2)[0]
    assert [u["id"] for u in found] == students and all("student" in u["roles"] for u in found)
    assert len(all_pages(clever, "/v3.0/users")[0]) == 8


def test_deleted_section_is_gone_from_lists_and_404(clever):
    section, *_ = section_with_people(clever)
    clever.delete_section(section)
    assert get(clever, f"/v3.0/sections/{section}").status_code == 404
    assert get(clever, "/v3.0/sections").json()["data"] == []


# -- events ----------------------------------------------------------------------------------------


def test_events_filter_by_record_type_and_school(clever):
    north = clever.add_school("North High")
    south = clever.add_school("South High")
    t_north = clever.add_user("teacher", "n@d.example.org", "N", "Orth", school=north)
    t_south = clever.add_user("teacher", "s@d.example.org", "S", "Outh", school=south)
    s_north = clever.add_section("Art - Orth - Period 1", t_north)
    clever.add_section("Art - Outh - Period 1", t_south)
    clever.emit_event("terms.created", {"id": "5c40b5127d0c8a0001a7f0d9", "name": "Spring"})
    all_types = [e["type"] for e in all_pages(clever, "/v3.0/events")[0]]
    assert all_types == ["schools.created"] * 2 + ["users.created"] * 2 + ["sections.created"] * 2 + ["terms.created"]
    only = all_pages(clever, "/v3.0/events", record_type=["sections", "users"], limit=2)[0]
    assert [e["type"].split(".")[0] for e in only] == ["users", "users", "sections", "sections"]
    assert [e["type"] for e in all_pages(clever, "/v3.0/events", record_type="terms")[0]] == ["terms.created"]
    # the next link keeps the filters
    body = get(clever, "/v3.0/events", record_type=["sections", "users"], limit=1).json()
    assert "record_type=sections" in link(body, "next") and "record_type=users" in link(body, "next")
    in_north = all_pages(clever, "/v3.0/events", school=north, record_type="sections")[0]
    assert [e["data"]["object"]["id"] for e in in_north] == [s_north]


def test_ending_before_last_gives_the_newest_event(clever):
    assert get(clever, "/v3.0/events", ending_before="last", limit=1).json()["data"] == []
    people(clever, 3, emit=True)
    newest = clever.emit_event("courses.created", {"id": "5c40b5127d0c8a0001a7f0c1", "name": "Algebra I"})
    body = get(clever, "/v3.0/events", ending_before="last", limit=1).json()
    assert [item["data"]["id"] for item in body["data"]] == [newest]
    two = get(clever, "/v3.0/events", ending_before="last", limit=2).json()["data"]
    assert [item["data"]["id"] for item in two] == [e["id"] for e in clever.events[-2:]]  # still ascending
    users_only = get(clever, "/v3.0/events", ending_before="last", limit=1, record_type="users").json()["data"]
    assert users_only[0]["data"]["id"] == clever.events[-2]["id"]


def test_starting_after_pages_only_newer_events(clever):
    section, ann, bob, kids = section_with_people(clever)
    cursor = newest_event(clever)["id"]
    assert get(clever, "/v3.0/events", starting_after=cursor).json()["data"] == []
    new = [clever.add_student(section, kids[3]), clever.add_teacher(section, bob), clever.rename_section(section, "X")]
    events, n = all_pages(clever, "/v3.0/events", starting_after=cursor, limit=2)
    assert [e["id"] for e in events] == new and n == 2
    one = get(clever, f"/v3.0/events/{new[1]}").json()
    assert one["data"]["id"] == new[1] and link(one, "self") == f"/v3.0/events/{new[1]}"
    page = get(clever, "/v3.0/events", starting_after=cursor, limit=2).json()
    assert link(page, "prev") == f"/v3.0/events?limit=2&ending_before={new[0]}"


def test_an_expired_cursor_answers_200_with_the_oldest_events_kept_as_recorded(clever):
    people(clever, 4, emit=True)
    ids = [e["id"] for e in clever.events]
    clever.expire_events(keep_last=2)
    assert [e["id"] for e in clever.events] == ids[2:]
    # As the real v3.0 API answered a cursor 43 days old: not 404, the first page with no cursor.
    resp = get(clever, "/v3.0/events", starting_after=ids[0])
    assert resp.status_code == 200 and [i["data"]["id"] for i in resp.json()["data"]] == ids[2:]
    assert get(clever, f"/v3.0/events/{ids[0]}").status_code == 404  # the event itself is gone
    assert get(clever, "/v3.0/events", starting_after=ids[2]).json()["data"][0]["data"]["id"] == ids[3]
    never = get(clever, "/v3.0/events", starting_after="5c40b5127d0c8a0001a7f001")
    assert never.status_code == 200 and len(never.json()["data"]) == 2
    clever.expire_events()
    assert clever.events == [] and get(clever, "/v3.0/events", starting_after=ids[3]).json()["data"] == []


def test_events_older_than_the_retention_drop_as_the_clock_moves(clever):
    first = people(clever, 2, emit=True)
    clever.advance_clock(days=20)
    later = people(clever, 1, emit=True)
    assert [e["data"]["object"]["id"] for e in clever.events] == first + later
    clever.advance_clock(days=11)  # the first events are now 31 days old, the later one 11
    assert [e["data"]["object"]["id"] for e in clever.events] == later
    newest = clever.events[-1]
    assert int(newest["id"][:8], 16) == int(datetime.fromisoformat(newest["created"]).timestamp())
    assert (clever.now() - datetime.fromisoformat(newest["created"])).days == 11


def test_ending_before_last_can_be_refused_or_answered_with_nothing(clever):
    people(clever, 2, emit=True)
    clever.refuse_ending_before_last("400")
    assert get(clever, "/v3.0/events", ending_before="last", limit=1).status_code == 400
    clever.refuse_ending_before_last("empty")
    assert get(clever, "/v3.0/events", ending_before="last", limit=1).json()["data"] == []
    assert len(get(clever, "/v3.0/events").json()["data"]) == 2  # the rest answers as before


def test_hostile_next_links(clever):
    people(clever, 5, emit=True)
    clever.hostile_next_links("other_host", "https://evil.example.test")
    body = get(clever, "/v3.0/events", limit=2).json()
    assert link(body, "next").startswith("https://evil.example.test/v3.0/events?")
    clever.hostile_next_links("other_scheme")
    assert link(get(clever, "/v3.0/events", limit=2).json(), "next").startswith("https://127.0.0.1:")
    clever.hostile_next_links("repeat")
    first = get(clever, "/v3.0/events", limit=2).json()
    again = get(clever, "/v3.0/events", limit=2, starting_after=first["data"][-1]["data"]["id"]).json()
    assert again["data"] == first["data"] and link(again, "next") != link(first, "next")


def event_data(sim: CleverSimulator, event_id: str) -> dict:
    body = get(sim, f"/v3.0/events/{event_id}").json()["data"]
    assert set(body) == {"id", "type", "created", "data"}  # previous_attributes sits inside data
    return body


def test_created_events_carry_the_object_and_no_previous_attributes(clever):
    section, ann, *_ = section_with_people(clever)
    ev = event_data(clever, newest_event(clever)["id"])
    assert ev["type"] == "sections.created" and ev["data"] == {"object": clever.section(section)}


def test_enrollment_changes_send_the_old_arrays_whole(clever):
    section, ann, bob, kids = section_with_people(clever)
    ev = event_data(clever, clever.add_student(section, kids[3]))
    assert ev["type"] == "sections.updated"
    assert ev["data"]["previous_attributes"] == {"students": kids[:3]}
    assert ev["data"]["object"]["students"] == kids
    ev = event_data(clever, clever.remove_student(section, kids[0]))
    assert ev["data"]["previous_attributes"] == {"students": kids}
    assert ev["data"]["object"]["students"] == kids[1:]
    ev = event_data(clever, clever.add_teacher(section, bob))
    assert ev["data"]["previous_attributes"] == {"teachers": [ann]}
    assert ev["data"]["object"]["teachers"] == [ann, bob] and ev["data"]["object"]["teacher"] == ann
    ev = event_data(clever, clever.remove_teacher(section, bob))
    assert ev["data"]["previous_attributes"] == {"teachers": [ann, bob]}
    assert clever.add_student(section, kids[3]) == ""  # already there: no change, no event


def test_primary_teacher_change_and_rename(clever):
    section, ann, bob, _ = section_with_people(clever)
    ev = event_data(clever, clever.set_primary_teacher(section, bob))
    assert ev["data"]["previous_attributes"] == {"teacher": ann, "teachers": [ann]}
    assert ev["data"]["object"]["teacher"] == bob and ev["data"]["object"]["teachers"] == [bob, ann]
    ev = event_data(clever, clever.set_primary_teacher(section, ann, keep_old_as_coteacher=False))
    assert ev["data"]["previous_attributes"] == {"teacher": bob, "teachers": [bob, ann]}
    assert ev["data"]["object"]["teachers"] == [ann]
    ev = event_data(clever, clever.rename_section(section, "Algebra I - Smith - Period 4"))
    assert ev["data"]["previous_attributes"] == {"name": "Algebra I - Smith - Period 3"}
    ev = event_data(clever, clever.update_section(section, period="4", teachers=[bob, ann]))
    assert ev["data"]["previous_attributes"] == {"period": "3", "teacher": ann, "teachers": [ann]}
    assert ev["data"]["object"]["last_modified"] == ev["created"]


def test_delete_carries_the_full_object(clever):
    section, *_ = section_with_people(clever)
    before = clever.section(section)
    ev = event_data(clever, clever.delete_section(section))
    assert ev["type"] == "sections.deleted" and ev["data"] == {"object": before}


def test_user_update_previous_attributes_are_nested(clever):
    school = clever.add_school("North High", emit=False)
    other = clever.add_school("South High", emit=False)
    kid = clever.add_user("student", "kid@d.example.org", "Kid", "One", school=school)
    clever.update_user(kid, email="kid.one@d.example.org", school=other)
    ev = newest_event(clever)
    assert ev["type"] == "users.updated"
    assert ev["data"]["previous_attributes"] == {
        "email": "kid@d.example.org",
        "roles": {"student": {"school": school, "schools": [school]}},
    }
    assert ev["data"]["object"]["email"] == "kid.one@d.example.org"
    clever.update_user(kid, first="Kiddo")
    assert newest_event(clever)["data"]["previous_attributes"] == {"name": {"first": "Kid"}}


def test_other_record_types_pass_through(clever):
    previous = {"last_sync": "2026-11-27T16:08:33.459Z"}
    eid = clever.emit_event("districts.updated", {"id": clever.district_id, "name": "D"}, previous)
    ev = event_data(clever, eid)
    assert ev["type"] == "districts.updated" and ev["data"]["previous_attributes"] == previous


# -- rate limit, faults, counters ------------------------------------------------------------------


def test_rate_limit_headers_and_429(clever):
    resp = get(clever, "/v3.0/sections")
    assert resp.headers["X-RateLimit-Limit"] == "1200"
    assert resp.headers["X-RateLimit-Remaining"] == "1199"
    assert resp.headers["X-RateLimit-Bucket"]
    assert 0 < int(resp.headers["X-RateLimit-Reset"]) - time.time() <= 61
    clever.set_rate_limit(3)
    assert [get(clever, "/v3.0/sections").status_code for _ in range(3)] == [200, 200, 429]
    over = get(clever, "/v3.0/users")
    assert over.status_code == 429 and over.headers["X-RateLimit-Remaining"] == "0"
    assert "Retry-After" not in over.headers
    clever.set_rate_limit(2, window_seconds=0.3)
    time.sleep(0.35)  # the window started by the first request above is over
    assert [get(clever, "/v3.0/users").status_code for _ in range(3)] == [200, 200, 429]


def test_forced_429_and_injected_errors(clever):
    clever.force_429(2, retry_after=3)
    clever.inject_errors(503, 1)
    first, second = get(clever, "/v3.0/sections"), get(clever, "/v3.0/events")
    assert first.status_code == second.status_code == 429 and first.headers["Retry-After"] == "3"
    assert get(clever, "/v3.0/users").status_code == 503
    assert get(clever, "/v3.0/users").status_code == 200
    clever.force_429(1)
    quick = get(clever, "/v3.0/users")
    assert quick.status_code == 429 and "Retry-After" not in quick.headers
    assert int(quick.headers["X-RateLimit-Reset"]) - time.time() <= 2
    clever.inject_errors(500, 1)
    assert get(clever, "/v3.0/sections/x").status_code == 500
    assert clever.requests == {"sections": 1, "events": 1, "users": 3, "section": 1}
    assert clever.responses[429] == 3 and clever.responses[500] == 1


# -- the sample district ---------------------------------------------------------------------------


def district_snapshot(sim: CleverSimulator, d) -> tuple:
    return (
        [sim.section(s) for s in d.sections],
        [sim.user(u) for u in d.teachers + d.students],
        d.google_accounts,
        d.students_without_google,
        d.users_without_email,
        d.teachers_without_google,
    )


def test_make_district_is_deterministic_for_a_seed():
    a, b, c = CleverSimulator(), CleverSimulator(), CleverSimulator()
    da, db = make_district(a, seed=11), make_district(b, seed=11)
    assert district_snapshot(a, da) == district_snapshot(b, db)
    dc = make_district(c, seed=12)
    assert [c.section(s)["name"] for s in dc.sections] != [a.section(s)["name"] for s in da.sections]
    assert a.events == []  # emit=False by default: a district as it is before a bootstrap


def test_sample_district_looks_like_a_district(clever):
    d = make_district(clever)
    assert (len(d.schools), len(d.sections), len(d.students)) == (3, 40, 600)
    sections = [clever.section(s) for s in d.sections]
    assert all(re.fullmatch(r".+ - .+ - Period [1-7]", s["name"]) for s in sections)
    assert all(18 <= len(s["students"]) <= 33 for s in sections)
    assert all(s["teachers"][0] == s["teacher"] for s in sections)
    assert 0 < sum(len(s["teachers"]) > 1 for s in sections) < 12  # ~10% co-taught
    emails = [e for e, _, _ in d.google_accounts]
    assert len(emails) == len(set(emails)) and all(
        e == e.lower() and e.endswith("@district.example.org") for e in emails
    )
    listed, _ = all_pages(clever, "/v3.0/sections", limit=15)
    assert [s["id"] for s in listed] == d.sections


def test_sample_district_has_the_broken_users(clever):
    d = make_district(clever, seed=3)
    assert len(d.students_without_google) == 2 and len(d.users_without_email) == 1
    assert len(d.teachers_without_google) == 1
    google = {e for e, _, _ in d.google_accounts}
    for uid in d.students_without_google:
        assert clever.user(uid)["email"] and clever.user(uid)["email"] not in google
    assert "email" not in clever.user(d.users_without_email[0])
    assert len(google) == len(d.teachers) + len(d.students) - 4
    sections = [clever.section(s) for s in d.sections]
    [teacher] = d.teachers_without_google
    assert [s["teacher"] for s in sections].count(teacher) == 1
    assert sum(teacher in s["teachers"] for s in sections) == 1
    for uid in d.students_without_google + d.users_without_email:
        assert any(uid in s["students"] for s in sections[5:])
        assert not any(uid in s["students"] for s in sections[:5])
    clean = make_district(CleverSimulator(), seed=3, broken_users=False)
    assert not (clean.students_without_google or clean.users_without_email or clean.teachers_without_google)


def test_make_district_can_emit_events(clever):
    d = make_district(clever, schools=1, sections=3, students=30, emit=True)
    types = [e["type"] for e in clever.events]
    assert types.count("sections.created") == 3 and types.count("users.created") == len(d.students) + len(d.teachers)


def test_concurrent_reads_and_changes(clever):
    section, _, _, kids = section_with_people(clever)
    extra = people(clever, 40)
    statuses: list[int] = []

    def reader():
        with requests.Session() as s:
            s.headers["Authorization"] = f"Bearer {clever.token}"
            for _ in range(15):
                statuses.append(s.get(f"{clever.base_url}/v3.0/events", params={"limit": 5}, timeout=10).status_code)

    threads = [threading.Thread(target=reader) for _ in range(6)]
    for t in threads:
        t.start()
    for uid in extra:
        clever.add_student(section, uid)
    for t in threads:
        t.join()
    assert statuses == [200] * 90
    assert clever.section(section)["students"] == kids[:3] + extra
    assert len(all_pages(clever, "/v3.0/events", limit=7)[0]) == 41


def test_reads_for_tests_are_copies(clever):
    section, *_ = section_with_people(clever)
    clever.section(section)["students"].append("tampered")
    assert "tampered" not in clever.section(section)["students"]

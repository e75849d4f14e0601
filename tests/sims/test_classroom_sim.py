"""The Classroom simulator through the real google-api-python-client, built as production builds it."""

from __future__ import annotations

import json
import re
import threading
import urllib.error
import urllib.request
from pathlib import Path

import googleapiclient
import pytest
from google.auth.credentials import AnonymousCredentials
from googleapiclient.discovery import build
from googleapiclient.errors import HttpError
from googleapiclient.http import BatchHttpRequest

from tests.sims.classroom_sim import ClassroomSimulator

DOMAIN = "district.example.org"
ADMIN = f"admin@{DOMAIN}"
ANN = f"ann.smith@{DOMAIN}"
BOB = f"bob.jones@{DOMAIN}"
NUMERIC = re.compile(r"^\d+$")
PRE = "FAILED_PRECONDITION"
DISCOVERY = json.loads(
    (Path(googleapiclient.__file__).parent / "discovery_cache/documents/classroom.v1.json").read_text()
)


class RecordingSimulator(ClassroomSimulator):
    """Keeps every call it answers (also each call of a batch), to check what the client sends."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.seen: list[tuple[str, str, bytes, int, bytes]] = []

    def handle(self, method, path_and_query, body, authorization=""):
        status, headers, out = super().handle(method, path_and_query, body, authorization)
        self.seen.append((method, path_and_query, body, status, out))
        return status, headers, out


@pytest.fixture
def sim():
    with RecordingSimulator(domain=DOMAIN, admin_email=ADMIN, member_limit=12, teacher_limit=4) as s:
        s.add_user(ADMIN, "District", "Admin")
        s.add_user(ANN, "Ann", "Smith")
        s.add_user(BOB, "Bob", "Jones")
        yield s


def client(base_url: str):
    return build(
        "classroom",
        "v1",
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": base_url},
        static_discovery=True,
        cache_discovery=False,
    )


@pytest.fixture
def api(sim):
    return client(sim.base_url)


def error_of(exc: HttpError) -> tuple[int, str, str]:
    assert exc.resp["content-type"].startswith("application/json")
    err = json.loads(exc.content)["error"]
    assert err["code"] == exc.resp.status
    return exc.resp.status, err["status"], err["message"]


def fails(request, status: int, code: str, reason: str | None = None) -> str:
    with pytest.raises(HttpError) as info:
        request.execute()
    got_status, got_code, message = error_of(info.value)
    assert (got_status, got_code) == (status, code), message
    if reason is not None:
        assert message.startswith(f"@{reason} "), message
    return message


def students(sim, n: int, start: int = 0) -> list[str]:
    emails = [f"student{i}@{DOMAIN}" for i in range(start, start + n)]
    for i, email in enumerate(emails, start):
        sim.add_user(email, f"Student{i}", "Kid")
    return emails


def make_course(api, alias: str | None = "d:sec-1", name: str = "Algebra I - Smith - Period 3", owner: str = ANN):
    body = {"name": name, "ownerId": owner}
    if alias:
        body["id"] = alias
    return api.courses().create(body=body).execute()


def batch_of(sim, requests) -> dict[str, tuple[dict | None, HttpError | None]]:
    results: dict[str, tuple[dict | None, HttpError | None]] = {}
    batch = BatchHttpRequest(
        callback=lambda rid, resp, exc: results.__setitem__(rid, (resp, exc)), batch_uri=sim.base_url + "batch"
    )
    for request in requests:
        batch.add(request)
    batch.execute()
    return results


# -- the client reaches the simulator --------------------------------------------------------------


def test_api_endpoint_with_or_without_trailing_slash_routes_to_the_simulator(sim):
    assert sim.base_url.endswith("/") and sim.base_url.startswith("http://127.0.0.1:")
    for endpoint in (sim.base_url, sim.base_url.rstrip("/")):
        service = client(endpoint)
        request = service.courses().list()
        assert request.uri.startswith(sim.base_url + "v1/courses")
        assert request.execute() == {}
    assert sim.calls["classroom.courses.list"] == 2


# -- courses.create --------------------------------------------------------------------------------


def test_create_course_with_alias_owner_is_teacher_and_reads_carry_the_real_id(sim, api):
    course = make_course(api)
    assert NUMERIC.match(course["id"])
    ann_id = api.userProfiles().get(userId=ANN).execute()["id"]
    assert course["ownerId"] == ann_id
    assert course["courseState"] == "PROVISIONED"
    assert course["name"] == "Algebra I - Smith - Period 3"
    assert course["alternateLink"].startswith("https://classroom.google.com/c/")
    assert course["guardiansEnabled"] is False
    for key in ("creationTime", "updateTime", "enrollmentCode", "teacherGroupEmail", "courseGroupEmail", "calendarId"):
        assert course[key]
    assert "section" not in course  # empty fields are left out
    assert api.courses().get(id="d:sec-1").execute() == course
    assert api.courses().get(id=course["id"]).execute()["id"] == course["id"]
    assert sim.course("d:sec-1") == course
    assert sim.aliases(course["id"]) == ["d:sec-1"]
    assert sim.roster("d:sec-1") == {
        "owner": ANN,
        "teachers": {ANN},
        "students": set(),
        "state": "PROVISIONED",
        "name": "Algebra I - Smith - Period 3",
    }
    teachers = api.courses().teachers().list(courseId="d:sec-1").execute()["teachers"]
    assert [t["profile"]["emailAddress"] for t in teachers] == [ANN]
    assert teachers[0]["courseId"] == course["id"]


def test_create_course_owner_by_me_or_numeric_id_and_active_state(sim, api):
    mine = api.courses().create(body={"name": "Admin's", "ownerId": "me"}).execute()
    assert sim.roster(mine["id"])["owner"] == ADMIN
    assert sim.aliases(mine["id"]) == []
    bob_id = api.userProfiles().get(userId=BOB).execute()["id"]
    active = api.courses().create(body={"name": "Bio", "ownerId": bob_id, "courseState": "ACTIVE"}).execute()
    assert active["courseState"] == "ACTIVE" and active["ownerId"] == bob_id
    assert active["id"] != mine["id"]


def test_duplicate_alias_is_already_exists_and_creates_nothing(sim, api):
    make_course(api)
    message = fails(
        api.courses().create(body={"id": "d:sec-1", "name": "Other", "ownerId": BOB}), 409, "ALREADY_EXISTS"
    )
    assert message == "Requested entity already exists"
    assert len(sim.courses()) == 1
    api.courses().create(body={"id": "p:sec-1", "name": "Other", "ownerId": BOB}).execute()  # another scope


def test_create_course_validation(sim, api):
    sim.add_user(f"gone@{DOMAIN}", "Gone", "Away", suspended=True)
    sim.add_user("visitor@other.example.com", "Vis", "Itor")
    create = api.courses().create
    fails(create(body={"ownerId": ANN}), 400, "INVALID_ARGUMENT")
    fails(create(body={"name": "x" * 751, "ownerId": ANN}), 400, "INVALID_ARGUMENT")
    fails(create(body={"name": "Algebra"}), 400, "INVALID_ARGUMENT")
    fails(create(body={"name": "Algebra", "ownerId": ANN, "id": "sec-1"}), 400, "INVALID_ARGUMENT")
    fails(create(body={"name": "Algebra", "ownerId": ANN, "courseState": "ARCHIVED"}), 400, "INVALID_ARGUMENT")
    fails(
        create(body={"name": "See https://example.com/x", "ownerId": ANN}),
        400,
        "FAILED_PRECONDITION",
        "CourseTitleCannotContainUrl",
    )
    fails(create(body={"name": "Algebra", "ownerId": f"nobody@{DOMAIN}"}), 404, "NOT_FOUND")
    fails(
        create(body={"name": "Algebra", "ownerId": f"gone@{DOMAIN}"}), 400, "FAILED_PRECONDITION", "UserCannotOwnCourse"
    )
    fails(
        create(body={"name": "Algebra", "ownerId": "visitor@other.example.com"}),
        400,
        "FAILED_PRECONDITION",
        "UserCannotOwnCourse",
    )
    assert sim.courses() == []
    assert create(body={"name": "x" * 750, "ownerId": ANN}).execute()["name"] == "x" * 750


# -- patch, update, states, delete -------------------------------------------------------------------


def test_patch_needs_an_update_mask_of_known_fields(sim, api):
    course = make_course(api)
    fails(api.courses().patch(id="d:sec-1", body={"name": "New"}), 400, "INVALID_ARGUMENT")
    fails(api.courses().patch(id="d:sec-1", updateMask="id", body={"id": "9"}), 400, "INVALID_ARGUMENT")
    fails(api.courses().patch(id="d:nope", updateMask="name", body={"name": "New"}), 404, "NOT_FOUND")
    patched = (
        api.courses().patch(id="d:sec-1", updateMask="name,section", body={"name": "New", "section": "P3"}).execute()
    )
    assert (patched["id"], patched["name"], patched["section"]) == (course["id"], "New", "P3")
    assert sim.roster(course["id"])["name"] == "New"
    cleared = api.courses().patch(id=course["id"], updateMask="section", body={}).execute()
    assert "section" not in cleared and cleared["name"] == "New"
    fails(
        api.courses().patch(id=course["id"], updateMask="name", body={"name": "www.example.com"}),
        400,
        "FAILED_PRECONDITION",
        "CourseTitleCannotContainUrl",
    )


def test_ownership_moves_only_to_a_current_teacher_and_the_old_owner_stays(sim, api):
    make_course(api)
    patch = api.courses().patch
    fails(
        patch(id="d:sec-1", updateMask="ownerId", body={"ownerId": BOB}), 400, "FAILED_PRECONDITION", "IneligibleOwner"
    )
    api.courses().teachers().create(courseId="d:sec-1", body={"userId": BOB}).execute()
    moved = patch(id="d:sec-1", updateMask="ownerId", body={"ownerId": BOB}).execute()
    assert moved["ownerId"] == api.userProfiles().get(userId=BOB).execute()["id"]
    roster = sim.roster("d:sec-1")
    assert roster["owner"] == BOB and roster["teachers"] == {ANN, BOB}
    api.courses().teachers().delete(courseId="d:sec-1", userId=ANN).execute()  # no longer the owner
    fails(
        api.courses().teachers().delete(courseId="d:sec-1", userId=BOB),
        400,
        "FAILED_PRECONDITION",
        "CannotRemoveCourseOwner",
    )


def test_state_transitions(sim, api):
    make_course(api)

    def to(state):
        return api.courses().patch(id="d:sec-1", updateMask="courseState", body={"courseState": state})

    assert to("DECLINED").execute()["courseState"] == "DECLINED"
    fails(to("ACTIVE"), 400, "FAILED_PRECONDITION")
    assert to("PROVISIONED").execute()["courseState"] == "PROVISIONED"
    assert to("ACTIVE").execute()["courseState"] == "ACTIVE"
    fails(to("PROVISIONED"), 400, "FAILED_PRECONDITION")
    fails(to("DECLINED"), 400, "FAILED_PRECONDITION")
    fails(to("SUSPENDED"), 400, "INVALID_ARGUMENT")
    assert to("ARCHIVED").execute()["courseState"] == "ARCHIVED"
    assert to("ACTIVE").execute()["courseState"] == "ACTIVE"
    assert sim.roster("d:sec-1")["state"] == "ACTIVE"


def test_an_archived_course_changes_only_its_state_and_takes_no_members(sim, api):
    course = make_course(api)
    kid = students(sim, 1)[0]
    api.courses().students().create(courseId="d:sec-1", body={"userId": kid}).execute()
    api.courses().patch(id="d:sec-1", updateMask="courseState", body={"courseState": "ARCHIVED"}).execute()
    fails(
        api.courses().patch(id="d:sec-1", updateMask="name", body={"name": "New"}),
        400,
        "FAILED_PRECONDITION",
        "CourseNotModifiable",
    )
    fails(
        api.courses().update(id="d:sec-1", body={**course, "courseState": "ARCHIVED", "name": "New"}),
        400,
        "FAILED_PRECONDITION",
        "CourseNotModifiable",
    )
    fails(
        api.courses().students().create(courseId="d:sec-1", body={"userId": BOB}),
        400,
        "FAILED_PRECONDITION",
        "CourseNotModifiable",
    )
    fails(
        api.courses().teachers().create(courseId="d:sec-1", body={"userId": BOB}),
        400,
        "FAILED_PRECONDITION",
        "CourseNotModifiable",
    )
    assert sim.roster("d:sec-1")["name"] == course["name"]
    # the state may change together with other fields when it leaves ARCHIVED
    back = (
        api.courses()
        .patch(id="d:sec-1", updateMask="courseState,name", body={"courseState": "ACTIVE", "name": "New"})
        .execute()
    )
    assert (back["courseState"], back["name"]) == ("ACTIVE", "New")


def test_update_replaces_the_editable_fields(sim, api):
    course = api.courses().create(body={"name": "Alg", "section": "P1", "room": "12", "ownerId": ANN}).execute()
    body = {k: v for k, v in course.items() if k != "room"}
    updated = api.courses().update(id=course["id"], body={**body, "name": "Algebra"}).execute()
    assert updated["name"] == "Algebra" and updated["section"] == "P1" and "room" not in updated
    assert updated["ownerId"] == course["ownerId"] and updated["creationTime"] == course["creationTime"]


def test_delete_course_frees_its_alias(sim, api):
    course = make_course(api)
    assert api.courses().delete(id="d:sec-1").execute() == {}
    fails(api.courses().get(id="d:sec-1"), 404, "NOT_FOUND")
    fails(api.courses().get(id=course["id"]), 404, "NOT_FOUND")
    fails(api.courses().delete(id=course["id"]), 404, "NOT_FOUND")
    assert sim.course(course["id"]) is None and sim.courses() == []
    again = make_course(api)
    assert again["id"] != course["id"]


# -- aliases -----------------------------------------------------------------------------------------


def test_aliases_create_list_delete(sim, api):
    course = make_course(api)
    aliases = api.courses().aliases()
    assert aliases.create(courseId=course["id"], body={"alias": "p:abc"}).execute() == {"alias": "p:abc"}
    assert aliases.list(courseId="p:abc").execute() == {"aliases": [{"alias": "d:sec-1"}, {"alias": "p:abc"}]}
    fails(aliases.create(courseId=course["id"], body={"alias": "d:sec-1"}), 409, "ALREADY_EXISTS")
    fails(aliases.create(courseId=course["id"], body={"alias": "plain"}), 400, "INVALID_ARGUMENT")
    fails(aliases.create(courseId="d:missing", body={"alias": "d:new"}), 404, "NOT_FOUND")
    other = make_course(api, alias="d:sec-2")
    fails(aliases.delete(courseId=other["id"], alias="p:abc"), 404, "NOT_FOUND")
    assert aliases.delete(courseId=course["id"], alias="d:sec-1").execute() == {}
    assert sim.aliases(course["id"]) == ["p:abc"]
    fails(api.courses().get(id="d:sec-1"), 404, "NOT_FOUND")
    assert api.courses().get(id="p:abc").execute()["id"] == course["id"]
    aliases.delete(courseId=course["id"], alias="p:abc").execute()
    assert aliases.list(courseId=course["id"]).execute() == {}


def test_alias_with_slash_and_percent_is_one_path_segment(sim, api):
    course = make_course(api, alias="d:2026/fall%20-1")
    assert api.courses().get(id="d:2026/fall%20-1").execute()["id"] == course["id"]
    api.courses().students().create(courseId="d:2026/fall%20-1", body={"userId": BOB}).execute()
    assert sim.roster(course["id"])["students"] == {BOB}


# -- teachers and students ---------------------------------------------------------------------------


def test_add_get_list_and_remove_members_by_email_or_id(sim, api):
    course = make_course(api)
    kid = students(sim, 1)[0]
    kid_id = api.userProfiles().get(userId=kid).execute()["id"]
    added = api.courses().students().create(courseId="d:sec-1", body={"userId": kid}).execute()
    assert added == {
        "courseId": course["id"],
        "userId": kid_id,
        "profile": {
            "id": kid_id,
            "name": {"givenName": "Student0", "familyName": "Kid", "fullName": "Student0 Kid"},
            "emailAddress": kid,
            "photoUrl": added["profile"]["photoUrl"],
        },
    }
    teacher = api.courses().teachers().create(courseId=course["id"], body={"userId": BOB}).execute()
    assert teacher["profile"]["emailAddress"] == BOB
    assert api.courses().students().get(courseId="d:sec-1", userId=kid_id).execute() == added
    assert api.courses().students().get(courseId="d:sec-1", userId=kid).execute() == added
    fails(api.courses().students().get(courseId="d:sec-1", userId=BOB), 404, "NOT_FOUND")
    fails(api.courses().teachers().get(courseId="d:sec-1", userId=kid), 404, "NOT_FOUND")
    assert sim.roster("d:sec-1")["students"] == {kid} and sim.roster("d:sec-1")["teachers"] == {ANN, BOB}
    assert api.courses().students().delete(courseId="d:sec-1", userId=kid_id).execute() == {}
    api.courses().teachers().delete(courseId="d:sec-1", userId=BOB).execute()
    fails(api.courses().students().delete(courseId="d:sec-1", userId=kid), 404, "NOT_FOUND")
    fails(api.courses().teachers().delete(courseId="d:sec-1", userId=f"nobody@{DOMAIN}"), 404, "NOT_FOUND")
    assert api.courses().students().list(courseId="d:sec-1").execute() == {}
    assert sim.roster("d:sec-1")["teachers"] == {ANN}


def test_member_add_errors(sim, api):
    make_course(api)
    sim.add_user("parent@gmail.example.com", "Out", "Side")
    sim.add_user(f"gone@{DOMAIN}", "Gone", "Away", suspended=True)
    add_student = api.courses().students().create
    for who in (f"nobody@{DOMAIN}", "parent@gmail.example.com", "99999999"):
        fails(add_student(courseId="d:sec-1", body={"userId": who}), 403, "PERMISSION_DENIED", "CannotDirectAddUser")
        fails(
            api.courses().teachers().create(courseId="d:sec-1", body={"userId": who}),
            403,
            "PERMISSION_DENIED",
            "CannotDirectAddUser",
        )
    fails(add_student(courseId="d:sec-1", body={"userId": f"gone@{DOMAIN}"}), 400, "FAILED_PRECONDITION")
    fails(add_student(courseId="d:missing", body={"userId": BOB}), 404, "NOT_FOUND")
    add_student(courseId="d:sec-1", body={"userId": BOB}).execute()
    fails(add_student(courseId="d:sec-1", body={"userId": BOB}), 409, "ALREADY_EXISTS")
    fails(api.courses().teachers().create(courseId="d:sec-1", body={"userId": BOB}), 409, "ALREADY_EXISTS")
    fails(add_student(courseId="d:sec-1", body={"userId": ANN}), 409, "ALREADY_EXISTS")  # the owner
    assert sim.roster("d:sec-1")["students"] == {BOB}


def test_member_and_teacher_limits(sim, api):
    make_course(api)  # member_limit=12, teacher_limit=4 in the fixture
    teachers = [f"t{i}@{DOMAIN}" for i in range(4)]
    for t in teachers:
        sim.add_user(t, "T", "Eacher")
    for t in teachers[:3]:
        api.courses().teachers().create(courseId="d:sec-1", body={"userId": t}).execute()
    fails(
        api.courses().teachers().create(courseId="d:sec-1", body={"userId": teachers[3]}),
        400,
        "FAILED_PRECONDITION",
        "CourseTeacherLimitReached",
    )
    kids = students(sim, 9)
    for kid in kids[:8]:
        api.courses().students().create(courseId="d:sec-1", body={"userId": kid}).execute()
    fails(
        api.courses().students().create(courseId="d:sec-1", body={"userId": kids[8]}),
        400,
        "FAILED_PRECONDITION",
        "CourseMemberLimitReached",
    )
    roster = sim.roster("d:sec-1")
    assert len(roster["teachers"]) == 4 and len(roster["students"]) == 8


def test_inactive_owner_blocks_adds(sim, api):
    make_course(api)
    sim.set_suspended(ANN)
    fails(
        api.courses().students().create(courseId="d:sec-1", body={"userId": BOB}),
        400,
        "FAILED_PRECONDITION",
        "InactiveCourseOwner",
    )


# -- lists and paging --------------------------------------------------------------------------------


def test_courses_list_pages_newest_first_with_filters(sim, api):
    ids = [make_course(api, alias=f"d:s{i}", name=f"Course {i}", owner=ANN if i % 2 else BOB)["id"] for i in range(7)]
    page = api.courses().list(pageSize=3).execute()
    assert [c["id"] for c in page["courses"]] == ids[::-1][:3]
    seen, token, pages = [], None, 0
    while True:
        page = api.courses().list(pageSize=3, pageToken=token).execute()
        seen += [c["id"] for c in page.get("courses", [])]
        pages += 1
        token = page.get("nextPageToken")
        if not token:
            break
    assert seen == ids[::-1] and pages == 3
    everything = api.courses().list().execute()
    assert len(everything["courses"]) == 7 and "nextPageToken" not in everything
    anns = api.courses().list(teacherId=ANN).execute()["courses"]
    assert [c["id"] for c in anns] == [ids[5], ids[3], ids[1]]
    fails(api.courses().list(teacherId=f"nobody@{DOMAIN}"), 404, "NOT_FOUND")
    fails(api.courses().list(teacherId=ANN, studentId=BOB), 400, "INVALID_ARGUMENT")
    api.courses().students().create(courseId="d:s1", body={"userId": BOB}).execute()
    assert [c["id"] for c in api.courses().list(studentId=BOB).execute()["courses"]] == [ids[1]]
    api.courses().patch(id="d:s2", updateMask="courseState", body={"courseState": "ACTIVE"}).execute()
    active = api.courses().list(courseStates=["ACTIVE"]).execute()["courses"]
    assert [c["id"] for c in active] == [ids[2]]
    both = api.courses().list(courseStates=["ACTIVE", "PROVISIONED"], pageSize=100).execute()["courses"]
    assert len(both) == 7
    token = api.courses().list(pageSize=3).execute()["nextPageToken"]
    fails(api.courses().list(pageSize=3, pageToken=token, teacherId=ANN), 400, "INVALID_ARGUMENT")
    fails(api.courses().list(pageToken="garbage"), 400, "INVALID_ARGUMENT")


def test_roster_lists_page_30_by_default_in_join_order(sim, api):
    sim.member_limit = 1000
    make_course(api)
    kids = students(sim, 65)
    results = batch_of(
        sim, [api.courses().students().create(courseId="d:sec-1", body={"userId": k}) for k in kids[:50]]
    )
    assert all(exc is None for _, exc in results.values())
    for kid in kids[50:]:
        api.courses().students().create(courseId="d:sec-1", body={"userId": kid}).execute()
    first = api.courses().students().list(courseId="d:sec-1").execute()
    assert len(first["students"]) == 30
    # a page token stays good when members come and go between pages
    api.courses().students().delete(courseId="d:sec-1", userId=kids[0]).execute()
    seen = [s["profile"]["emailAddress"] for s in first["students"]]
    token = first["nextPageToken"]
    while token:
        page = api.courses().students().list(courseId="d:sec-1", pageToken=token).execute()
        seen += [s["profile"]["emailAddress"] for s in page["students"]]
        token = page.get("nextPageToken")
    assert seen == kids
    teachers = api.courses().teachers().list(courseId="d:sec-1", pageSize=1).execute()
    assert len(teachers["teachers"]) == 1 and "nextPageToken" not in teachers
    fails(api.courses().students().list(courseId="d:nope"), 404, "NOT_FOUND")


def test_partial_response_fields(sim, api):
    make_course(api)
    listed = api.courses().list(fields="courses(id,name),nextPageToken").execute()
    assert set(listed["courses"][0]) == {"id", "name"}
    assert set(api.courses().get(id="d:sec-1", fields="id").execute()) == {"id"}


# -- user profiles -----------------------------------------------------------------------------------


def test_user_profiles(sim, api):
    me = api.userProfiles().get(userId="me").execute()
    assert me["emailAddress"] == ADMIN and me["name"]["fullName"] == "District Admin"
    assert api.userProfiles().get(userId=me["id"]).execute() == me
    fails(api.userProfiles().get(userId=f"nobody@{DOMAIN}"), 403, "PERMISSION_DENIED")
    uid = sim.add_user(f"fixed@{DOMAIN}", user_id="123456789")
    assert uid == "123456789" and api.userProfiles().get(userId=f"fixed@{DOMAIN}").execute()["id"] == uid


# -- batch -------------------------------------------------------------------------------------------


def test_batch_of_50_runs_each_call_and_51_is_rejected_whole(sim, api):
    sim.member_limit = 1000
    make_course(api)
    kids = students(sim, 51)
    sim.reset_counters()
    adds = [api.courses().students().create(courseId="d:sec-1", body={"userId": k}) for k in kids[:50]]
    results = batch_of(sim, adds)
    assert len(results) == 50 and all(exc is None for _, exc in results.values())
    assert results["1"][0]["profile"]["emailAddress"] == kids[0]
    assert sim.calls["classroom.courses.students.create"] == 50 and sim.batch_requests == 1
    too_many = [api.courses().students().create(courseId="d:sec-1", body={"userId": k}) for k in kids]
    with pytest.raises(HttpError) as info:
        batch_of(sim, too_many)
    assert error_of(info.value)[:2] == (400, "INVALID_ARGUMENT")
    assert sim.calls["classroom.courses.students.create"] == 50 and sim.batch_requests == 2
    assert len(sim.roster("d:sec-1")["students"]) == 50


def test_batch_sub_calls_answer_on_their_own(sim, api):
    course = make_course(api)
    results = batch_of(
        sim,
        [
            api.courses().get(id="d:sec-1"),
            api.courses().students().create(courseId="d:sec-1", body={"userId": BOB}),
            api.courses().students().create(courseId="d:sec-1", body={"userId": BOB}),
            api.courses().teachers().create(courseId="d:sec-1", body={"userId": f"nobody@{DOMAIN}"}),
            api.courses().get(id="d:missing"),
            api.courses().patch(id="d:sec-1", updateMask="name", body={"name": "Renamed"}),
        ],
    )
    assert results["1"][0]["id"] == course["id"]
    assert results["2"][0]["profile"]["emailAddress"] == BOB
    assert error_of(results["3"][1])[:2] == (409, "ALREADY_EXISTS")
    status, code, message = error_of(results["4"][1])
    assert (status, code) == (403, "PERMISSION_DENIED") and message.startswith("@CannotDirectAddUser ")
    assert error_of(results["5"][1])[:2] == (404, "NOT_FOUND")
    assert results["6"][0]["name"] == "Renamed"
    assert sim.calls["classroom.courses.get"] == 2 and sim.calls["classroom.courses.students.create"] == 2


# -- quota and faults --------------------------------------------------------------------------------


def test_quota_is_a_sliding_minute_and_a_rejected_call_changes_nothing(sim, api):
    clock = [1000.0]
    sim._clock = lambda: clock[0]
    sim.set_quota(3)
    make_course(api)
    api.courses().get(id="d:sec-1").execute()
    clock[0] += 30
    api.courses().get(id="d:sec-1").execute()
    with pytest.raises(HttpError) as info:
        api.courses().students().create(courseId="d:sec-1", body={"userId": BOB}).execute()
    status, code, message = error_of(info.value)
    assert (status, code) == (429, "RESOURCE_EXHAUSTED") and message.startswith("Quota exceeded")
    assert "retry-after" not in info.value.resp
    assert sim.roster("d:sec-1")["students"] == set()
    clock[0] += 30  # the first two calls leave the window
    results = batch_of(
        sim,
        [api.courses().students().create(courseId="d:sec-1", body={"userId": u}) for u in (BOB, ADMIN)]
        + [api.courses().get(id="d:sec-1")],
    )
    assert results["1"][1] is None and results["2"][1] is None
    assert error_of(results["3"][1])[:2] == (429, "RESOURCE_EXHAUSTED")
    assert sim.roster("d:sec-1")["students"] == {BOB, ADMIN}
    assert sim.statuses[429] == 2 and sim.calls["classroom.courses.students.create"] == 3
    sim.set_quota(None)
    api.courses().get(id="d:sec-1").execute()


def test_injected_faults(sim, api):
    make_course(api)
    sim.inject_errors("classroom.courses.get", 503, 2)
    fails(api.courses().get(id="d:sec-1"), 503, "UNAVAILABLE")
    api.courses().list().execute()  # other methods are not affected
    fails(api.courses().get(id="d:sec-1"), 503, "UNAVAILABLE")
    api.courses().get(id="d:sec-1").execute()
    sim.inject_errors(None, 500, 1)
    fails(api.courses().students().create(courseId="d:sec-1", body={"userId": BOB}), 500, "INTERNAL")
    assert sim.roster("d:sec-1")["students"] == set()  # a failed call changes nothing
    sim.inject_errors("classroom.courses.students.create", 429, 1, reason="UserCourseJoinRateLimitReached")
    results = batch_of(
        sim, [api.courses().students().create(courseId="d:sec-1", body={"userId": u}) for u in (BOB, ADMIN)]
    )
    status, code, message = error_of(results["1"][1])
    assert (status, code) == (429, "RESOURCE_EXHAUSTED") and message.startswith("@UserCourseJoinRateLimitReached ")
    assert results["2"][1] is None
    sim.inject_errors("batch", 503, 1)
    with pytest.raises(HttpError) as info:
        batch_of(sim, [api.courses().get(id="d:sec-1")])
    assert info.value.resp.status == 503
    assert sim.calls["classroom.courses.get"] == 3
    sim.inject_errors("classroom.courses.patch", 400, 1, reason="@CourseNotModifiable")
    fails(api.courses().patch(id="d:sec-1", updateMask="name", body={"name": "New"}), 400, PRE, "CourseNotModifiable")
    assert sim.statuses[503] == 2 and sim.statuses[500] == 1 and sim.statuses[429] == 1
    sim.reset_counters()
    assert sum(sim.calls.values()) == 0 and sim.batch_requests == 0 and not sim.statuses


# -- raw HTTP details --------------------------------------------------------------------------------


def raw(sim, method: str, path: str, body: dict | None = None) -> tuple[int, str, dict]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(sim.base_url + path, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, resp.headers["Content-Type"], json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], json.loads(exc.read())


def test_unknown_paths_params_and_fields_are_rejected(sim):
    status, ctype, body = raw(sim, "GET", "v1/nothing")
    assert status == 404 and ctype.startswith("application/json") and body["error"]["status"] == "NOT_FOUND"
    assert raw(sim, "GET", "v2/courses")[0] == 404
    assert raw(sim, "GET", "v1/courses?colour=red")[0] == 400
    status, _, body = raw(sim, "POST", "v1/courses", {"name": "A", "ownerId": ANN, "title": "x"})
    assert status == 400 and "title" in body["error"]["message"]
    assert raw(sim, "POST", "v1/courses", {"name": "A", "ownerId": ANN})[0] == 200
    assert sum(sim.calls.values()) == 3  # unknown paths are not calls


# -- UI actions and concurrency ----------------------------------------------------------------------


def test_teacher_ui_actions(sim, api):
    course = make_course(api)
    sim.teacher_accept(course["id"])
    sim.teacher_rename(course["id"], "Renamed by hand")
    sim.teacher_add_student(course["id"], BOB)
    sim.teacher_add_teacher(course["id"], ADMIN)
    roster = sim.roster("d:sec-1")
    assert roster["state"] == "ACTIVE" and roster["name"] == "Renamed by hand"
    assert roster["students"] == {BOB} and roster["teachers"] == {ANN, ADMIN}
    sim.teacher_remove_student(course["id"], BOB)
    sim.teacher_remove_teacher(course["id"], ADMIN)
    assert sim.roster(course["id"])["students"] == set() and sim.roster(course["id"])["teachers"] == {ANN}
    by_hand = sim.teacher_create_course(BOB, "Homeroom")
    assert sim.aliases(by_hand) == [] and api.courses().get(id=by_hand).execute()["name"] == "Homeroom"
    other = make_course(api, alias="d:sec-2")
    sim.teacher_decline(other["id"])
    assert sim.roster(other["id"])["state"] == "DECLINED"
    assert sum(sim.calls.values()) == 3  # only the API calls above


def test_many_threads_at_once(sim):
    sim.member_limit = 1000
    course = make_course(client(sim.base_url))
    kids = students(sim, 40)
    errors: list[Exception] = []

    def work(chunk):
        service = client(sim.base_url)  # httplib2 connections are not thread-safe: one client per thread
        for kid in chunk:
            try:
                service.courses().students().create(courseId=course["id"], body={"userId": kid}).execute()
                service.courses().students().create(courseId=course["id"], body={"userId": kid}).execute()
            except HttpError as exc:
                if exc.resp.status != 409:
                    errors.append(exc)

    threads = [threading.Thread(target=work, args=(kids[i::8],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sim.roster(course["id"])["students"] == set(kids)
    assert sim.calls["classroom.courses.students.create"] == 80


# -- the answers and the requests match the discovery document ---------------------------------------

JSON_TYPES = {"string": str, "boolean": bool, "integer": int, "number": (int, float), "array": list, "object": dict}
METHODS = {
    m["id"]: m
    for r in [DISCOVERY["resources"]["courses"], DISCOVERY["resources"]["userProfiles"]]
    + list(DISCOVERY["resources"]["courses"]["resources"].values())
    for m in r["methods"].values()
}


def check(value, schema: dict, where: str) -> None:
    if "$ref" in schema:
        schema = DISCOVERY["schemas"][schema["$ref"]]
    kind = schema.get("type", "object")
    assert isinstance(value, JSON_TYPES[kind]) and not (kind != "boolean" and isinstance(value, bool)), where
    if kind == "string" and "enum" in schema:
        assert value in schema["enum"], where
    if kind == "array":
        for i, item in enumerate(value):
            check(item, schema["items"], f"{where}[{i}]")
    if kind == "object":
        props = schema.get("properties", {})
        for key, item in value.items():
            assert key in props, f"{where}.{key} is not in {schema.get('id')}"
            check(item, props[key], f"{where}.{key}")


def method_of(method: str, path: str) -> dict:
    path = path.split("?", 1)[0].lstrip("/")
    for m in METHODS.values():
        pattern = re.sub(r"\{[^}]+\}", "[^/]+", m["path"])
        if m["httpMethod"] == method and re.fullmatch(pattern, path):
            return m
    raise AssertionError(f"no discovery method for {method} {path}")


def test_answers_and_request_bodies_follow_the_discovery_document(sim, api):
    course = make_course(api)
    api.courses().create(
        body={
            "name": "Full",
            "section": "S",
            "descriptionHeading": "H",
            "description": "D",
            "room": "R",
            "subject": "Math",
            "ownerId": ANN,
            "courseState": "ACTIVE",
        }
    ).execute()
    api.courses().students().create(courseId="d:sec-1", body={"userId": BOB}).execute()
    api.courses().teachers().create(courseId="d:sec-1", body={"userId": ADMIN}).execute()
    api.courses().students().list(courseId="d:sec-1").execute()
    api.courses().teachers().list(courseId="d:sec-1", pageSize=1).execute()
    api.courses().students().get(courseId="d:sec-1", userId=BOB).execute()
    api.courses().teachers().get(courseId="d:sec-1", userId=ANN).execute()
    api.courses().list(pageSize=1).execute()
    api.courses().list(courseStates=["ARCHIVED"]).execute()
    api.courses().aliases().create(courseId=course["id"], body={"alias": "p:x"}).execute()
    api.courses().aliases().list(courseId=course["id"]).execute()
    api.courses().patch(id="d:sec-1", updateMask="room", body={"room": "9"}).execute()
    api.courses().update(id="d:sec-1", body=api.courses().get(id="d:sec-1").execute()).execute()
    api.userProfiles().get(userId="me").execute()
    api.courses().students().delete(courseId="d:sec-1", userId=BOB).execute()
    api.courses().aliases().delete(courseId=course["id"], alias="p:x").execute()
    batch_of(
        sim,
        [api.courses().get(id="d:sec-1"), api.courses().teachers().create(courseId="d:sec-1", body={"userId": BOB})],
    )
    api.courses().delete(id="d:sec-1").execute()
    checked = set()
    for method, path, body, status, out in sim.seen:
        m = method_of(method, path)
        if body:
            assert "request" in m, m["id"]
            check(json.loads(body), m["request"], f"request {m['id']}")
        answer = json.loads(out)
        if status == 200:
            check(answer, m["response"], f"response {m['id']}")
            checked.add(m["id"])
        else:
            assert set(answer) == {"error"} and set(answer["error"]) == {"code", "message", "status"}
    assert checked >= {
        f"classroom.{name}"
        for name in [
            "courses.create",
            "courses.get",
            "courses.list",
            "courses.patch",
            "courses.update",
            "courses.delete",
            "courses.aliases.create",
            "courses.aliases.list",
            "courses.aliases.delete",
            "courses.students.create",
            "courses.students.get",
            "courses.students.list",
            "courses.students.delete",
            "courses.teachers.create",
            "courses.teachers.get",
            "courses.teachers.list",
            "userProfiles.get",
        ]
    }

"""The OneRoster simulator against the rostering calls and fields that Google Classroom's OneRoster
1.2 provider conformance suite checks (written from the 1.2 REST binding and the suite's list of
calls), and the switches that make it behave as real providers do."""

import pytest
import requests

from tests.sims.oneroster_sim import OneRosterSimulator

V11 = "/ims/oneroster/v1p1"
V12 = "/ims/oneroster/rostering/v1p2"
SCOPE = "https://purl.imsglobal.org/spec/or/v1p2/scope/roster.readonly"


def district(sim: OneRosterSimulator) -> None:
    sim.add_org("org1", "Lincoln High")
    sim.add_org("dist", "The District", type="district")
    sim.add_session("term1", "Fall 2026", "2026-08-20", "2026-12-18")
    sim.add_session("gp1", "Q1", "2026-08-20", "2026-10-15", type="gradingPeriod", parent="term1")
    sim.add_session("gp2", "Q2", "2026-10-16", "2026-12-18", type="gradingPeriod", parent="term1")
    sim.add_course("course1", "Biology")
    sim.add_user("t1", "teacher", "ann@d.example.org")
    sim.add_user("g1", "guardian", "mum@home.example.org")
    for i in range(3):
        sim.add_user(f"s{i}", "student", f"kid{i}@d.example.org")
    sim.add_class("c1", "Biology - Period 2")
    sim.add_class("c2", "Chemistry")
    sim.enroll("e-t1", "c1", "t1", "teacher", primary=True)
    for i in range(3):
        sim.enroll(f"e-s{i}", "c1", f"s{i}", "student")
    sim.enroll("e-s0-c2", "c2", "s0", "student")


def bearer(sim: OneRosterSimulator, scope: str | None = SCOPE) -> str:
    data = {"grant_type": "client_credentials"} | ({"scope": scope} if scope else {})
    resp = requests.post(sim.token_url, data=data, auth=(sim.client_id, sim.client_secret), timeout=5)
    assert resp.status_code == 200, resp.text
    return resp.json()["access_token"]


@pytest.fixture
def sim():
    with OneRosterSimulator() as s:
        district(s)
        yield s


def get(sim, path, token, **params):
    return requests.get(sim.base_url + path, params=params, headers={"Authorization": f"Bearer {token}"}, timeout=5)


def ids(resp, key):
    assert resp.status_code == 200, resp.text
    return sorted(r["sourcedId"] for r in resp.json()[key])


def test_the_role_type_and_nested_routes_googles_consumer_reads(sim):
    token = bearer(sim)
    assert ids(get(sim, f"{V12}/teachers", token), "users") == ["t1"]
    assert ids(get(sim, f"{V12}/students", token), "users") == ["s0", "s1", "s2"]
    assert ids(get(sim, f"{V12}/schools", token), "orgs") == ["org1"]
    assert ids(get(sim, f"{V12}/terms", token), "academicSessions") == ["term1"]
    assert ids(get(sim, f"{V12}/terms/term1/gradingPeriods", token), "academicSessions") == ["gp1", "gp2"]
    assert ids(get(sim, f"{V12}/classes/c1/students", token), "users") == ["s0", "s1", "s2"]
    assert ids(get(sim, f"{V12}/classes/c1/teachers", token), "users") == ["t1"]
    assert ids(get(sim, f"{V12}/teachers/t1/classes", token), "classes") == ["c1"]
    assert ids(get(sim, f"{V12}/students/s0/classes", token), "classes") == ["c1", "c2"]
    assert ids(get(sim, f"{V12}/schools/org1/classes", token), "classes") == ["c1", "c2"]
    assert get(sim, f"{V12}/students/s0", token).json()["user"]["sourcedId"] == "s0"
    assert get(sim, f"{V12}/students/t1", token).status_code == 404  # a teacher is not a student
    assert get(sim, f"{V12}/schools/dist", token).status_code == 404  # a district is not a school


def test_the_fields_the_suite_checks_on_classes_users_enrollments_and_sessions(sim):
    token = bearer(sim)
    cls = get(sim, f"{V12}/classes/c1", token).json()["class"]
    assert cls["terms"] and cls["terms"][0]["sourcedId"] == "term1" and cls["terms"][0]["type"] == "academicSession"
    for field in ("sourcedId", "status", "dateLastModified", "title", "classType", "course", "school", "classCode"):
        assert field in cls
    user12 = get(sim, f"{V12}/users/s1", token).json()["user"]
    assert "role" not in user12
    assert user12["roles"] == [
        {"roleType": "primary", "role": "student", "org": {"href": "/orgs/org1", "sourcedId": "org1", "type": "org"}}
    ]
    assert user12["primaryOrg"]["sourcedId"] == "org1" and user12["enabledUser"] is True
    user11 = get(sim, f"{V11}/users/s1", token).json()["user"]
    assert user11["role"] == "student" and user11["orgs"][0]["sourcedId"] == "org1"
    enrollment = get(sim, f"{V12}/enrollments/e-t1", token).json()["enrollment"]
    assert enrollment["role"] == "teacher" and enrollment["primary"] is True
    assert enrollment["class"]["sourcedId"] == "c1" and enrollment["user"]["sourcedId"] == "t1"
    term = get(sim, f"{V12}/terms/term1", token).json()["academicSession"]
    assert (term["type"], term["startDate"], term["endDate"], term["schoolYear"]) == (
        "term",
        "2026-08-20",
        "2026-12-18",
        "2026",
    )


@pytest.mark.parametrize(
    ("flt", "expected"),
    [
        ("role='student'", ["e-s0", "e-s0-c2", "e-s1", "e-s2"]),
        ("role!='student'", ["e-t1"]),
        ("class.sourcedId='c2'", ["e-s0-c2"]),
        ("sourcedId>'e-s1'", ["e-s2", "e-t1"]),
        ("sourcedId>='e-s1'", ["e-s1", "e-s2", "e-t1"]),
        ("sourcedId<'e-s0-c2'", ["e-s0"]),
        ("sourcedId<='e-s0'", ["e-s0"]),
        ("sourcedId~'S0'", ["e-s0", "e-s0-c2"]),
        ("role='student' AND class.sourcedId='c1'", ["e-s0", "e-s1", "e-s2"]),
        ("sourcedId='e-t1' OR sourcedId='e-s2'", ["e-s2", "e-t1"]),
        ("primary='true'", ["e-t1"]),
    ],
)
def test_the_filter_grammar(sim, flt, expected):
    assert ids(get(sim, f"{V12}/enrollments", bearer(sim), filter=flt), "enrollments") == expected


def test_filters_outside_the_grammar_are_400(sim):
    token = bearer(sim)
    for flt in ("role='student' AND status='active' OR sourcedId='x'", "role is 'student'", "role='student"):
        assert get(sim, f"{V12}/enrollments", token, filter=flt).status_code == 400


def test_writes_are_405(sim):
    token = bearer(sim)
    headers = {"Authorization": f"Bearer {token}"}
    for method in ("PUT", "POST", "DELETE", "PATCH"):
        resp = requests.request(method, f"{sim.base_url}{V12}/classes/c1", headers=headers, json={}, timeout=5)
        assert resp.status_code == 405 and resp.headers["Allow"] == "GET"
    assert get(sim, f"{V12}/classes/c1", token).json()["class"]["title"] == "Biology - Period 2"


def test_scopes_asked_required_and_granted():
    with OneRosterSimulator(required_scope=SCOPE) as sim:
        form = {"grant_type": "client_credentials"}
        auth = (sim.client_id, sim.client_secret)
        refused = requests.post(sim.token_url, data=form, auth=auth, timeout=5)
        assert refused.status_code == 400 and refused.json()["error"] == "invalid_scope"
        unknown = requests.post(sim.token_url, data=form | {"scope": "everything"}, auth=auth, timeout=5)
        assert unknown.status_code == 400
        granted = requests.post(sim.token_url, data=form | {"scope": SCOPE}, auth=auth, timeout=5).json()
        assert granted["scope"] == SCOPE and sim.token_requests[-1]["scope"] == SCOPE


def test_switches_capped_limit_no_totals_no_links_ignored_offset_unstable_order():
    with OneRosterSimulator(max_limit=2, total_count=False, link_header=False) as sim:
        district(sim)
        resp = get(sim, f"{V12}/users", bearer(sim), limit=100)
        assert len(resp.json()["users"]) == 2 and "X-Total-Count" not in resp.headers and "Link" not in resp.headers
    with OneRosterSimulator(ignore_offset=True) as sim:
        district(sim)
        token = bearer(sim)
        assert ids(get(sim, f"{V12}/users", token, limit=2, offset=2), "users") == ids(
            get(sim, f"{V12}/users", token, limit=2, offset=0), "users"
        )
    with OneRosterSimulator(unstable_order=True) as sim:
        district(sim)
        token = bearer(sim)
        orders = {tuple(r["sourcedId"] for r in get(sim, f"{V12}/users", token).json()["users"]) for _ in range(5)}
        assert len(orders) > 1
    with OneRosterSimulator(delta_filter="reject", status_filter="reject", role_routes=False) as sim:
        district(sim)
        token = bearer(sim)
        assert get(sim, f"{V12}/users", token, filter="dateLastModified>'2026-01-01T00:00:00Z'").status_code == 400
        assert get(sim, f"{V12}/users", token, filter="status='active'").status_code == 400
        assert get(sim, f"{V12}/students", token).status_code == 404
    with OneRosterSimulator(delta_filter="ignore") as sim:
        district(sim)
        resp = get(sim, f"{V12}/users", bearer(sim), filter="dateLastModified>'2999-01-01T00:00:00Z'")
        assert len(resp.json()["users"]) == 5

"""Bad input, table-driven (issue 4, item 4): malformed Pub/Sub messages and malformed Clever
responses each get a clear recorded problem (its kind, and a message naming what was wrong), no
exception escapes the handler, and the changes behind them still apply."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

import flask
import pytest
from cloudevents.http import CloudEvent
from rostersync import wiring
from rostersync.adapters.clever import CleverClient, CleverError, CleverUserDirectory
from rostersync.adapters.push_auth import PushAuthenticator
from rostersync.app.applier import Applier
from rostersync.app.poller import Poller
from rostersync.domain.changes import MAX_MESSAGE_BYTES
from rostersync.domain.links import course_alias
from rostersync.domain.ports import Cursor
from rostersync.domain.sources.clever_events import changes_from_event
from rostersync.retry import Deadline, RetryPolicy

from tests.sims.clever_sim import CleverSimulator
from tests.unit.clever_payloads import EMAILS, SECTION, STUDENTS, event, section, wrapped
from tests.unit.fakes import FakeClassroom, FakePublisher, FakeStore

ALIAS = course_alias(SECTION)
OTHER = "5c40b5127d0c8a0001a7f0ff"


def ev_id(n: int) -> str:
    return f"6553a0f27d0c8a0001b{n:05d}"


# -- Pub/Sub messages to Applier.handle_message -----------------------------------------------


def good_message(n: int = 2, student: str = STUDENTS[5]) -> dict:
    """A student_added change as the poller publishes it, as a dict to spoil."""
    [change] = changes_from_event(
        event(ev_id(n), "sections.updated", section(students=[*STUDENTS[:5], student]), {"students": STUDENTS[:5]}),
        EMAILS,
    )
    return json.loads(change.to_json())


def spoil(**edits: Any) -> bytes:
    body = good_message()
    for key, value in edits.items():
        if value is DROP:
            body.pop(key)
        else:
            body[key] = value
    return json.dumps(body).encode()


def spoil_section(**edits: Any) -> bytes:
    body = good_message()
    body["section"].update(edits)
    return json.dumps(body).encode()


DROP = object()


def cases(table):
    """pytest params from (id, *values) rows; a row may end with a pytest mark (a known bug)."""
    out = []
    for name, *values in table:
        marks = [values.pop()] if values and isinstance(values[-1], pytest.MarkDecorator) else []
        out.append(pytest.param(*values, id=name, marks=marks))
    return out


ATTRS = {"section_id": SECTION, "event_id": ev_id(2), "kind": "student_added"}

# (case id, message body, what the recorded message must name)
MESSAGES = [
    ("not_json", b"{not json", "not JSON"),
    ("not_an_object", b'"student_added"', "must be a JSON object"),
    ("json_array", json.dumps([good_message()]).encode(), "must be a JSON object"),
    ("json_null", b"null", "must be a JSON object"),
    ("missing_schema", spoil(schema=DROP), "schema version None"),
    ("wrong_schema", spoil(schema=99), "schema version 99"),
    ("unknown_kind", spoil(kind="student_teleported"), "unknown change kind 'student_teleported'"),
    ("missing_kind", spoil(kind=DROP), "unknown change kind None"),
    ("missing_section_id", spoil(section_id=DROP), "section_id is missing"),
    ("empty_section_id", spoil(section_id=""), "section_id is missing"),
    ("missing_event_id", spoil(event_id=DROP), "event_id is missing"),
    ("event_id_not_a_string", spoil(event_id=12), "event_id is missing"),
    ("section_id_mismatch", spoil(section_id=OTHER), "section.section_id does not match section_id"),
    ("section_not_an_object", spoil(section=["x"]), "section must be an object"),
    ("section_without_name", spoil_section(name=None), "section.name must be a string"),
    ("member_change_without_person", spoil(person=None), "student_added needs a person"),
    ("person_without_clever_id", spoil(person={"email": "x@district.example.org"}), "person must be an object"),
    ("person_not_an_object", spoil(person="5c40b4f37d0c8a0001a7e205"), "person must be an object"),
    ("email_not_a_string", spoil(person={"clever_id": STUDENTS[5], "email": 42}), "person.email must be a string"),
    ("students_not_a_list", spoil_section(students="all of them"), "section.students must be a list"),
    ("teacher_in_list_without_id", spoil_section(teachers=[{"email": "a@b"}]), "section.teachers[0]"),
    ("period_not_a_string", spoil_section(period=3), "section.period must be a string"),
    ("rename_without_name", spoil(kind="name_changed", name=None, person=None), "name_changed needs a name"),
    ("owner_change_without_person", spoil(kind="primary_teacher_changed", person=None), "needs a person"),
    ("extra_not_an_object", spoil(extra=["a"]), "extra must be an object"),
    ("oversized", b'{"pad":"' + b"x" * MAX_MESSAGE_BYTES + b'"}', f"larger than {MAX_MESSAGE_BYTES}"),
    ("invalid_utf8", b'{"schema":1,"kind":"\xff\xfe"}', "not JSON"),
    ("empty_body", b"", "not JSON"),
    ("event_time_not_a_string", spoil(event_time=5), "event_time is missing"),
    (
        "deeply_nested_json",
        b"[" * 200_000,  # 200 KB, under the size limit
        "not JSON",
    ),
]


@pytest.fixture
def applied():
    """A course for SECTION already made, as after its bootstrap change."""
    classroom = FakeClassroom(accounts=EMAILS.values())
    store = FakeStore()
    applier = Applier(store, classroom)
    [wanted] = changes_from_event(event(ev_id(1), "sections.created", section()), EMAILS)
    assert applier.apply(wanted).status == "applied"
    return classroom, store, applier


def assert_rejected(outcome, store: FakeStore, fragment: str, section_id: str = SECTION) -> dict:
    assert outcome.status == "rejected" and outcome.ack, outcome
    [problem] = [p for p in store.problems.values() if p["kind"] == "bad_message"]
    assert fragment in problem["message"], problem["message"]
    assert problem["section_id"] == section_id and problem["open"]
    return problem


@pytest.mark.parametrize(("data", "fragment"), cases(MESSAGES))
def test_bad_message_is_recorded_acknowledged_and_does_not_block_its_section(applied, data, fragment):
    classroom, store, applier = applied
    writes = classroom.writes
    outcome = applier.handle_message(data, ATTRS)
    problem = assert_rejected(outcome, store, fragment)
    assert problem["event_id"] == ev_id(2)
    assert classroom.writes == writes  # nothing half-applied
    # The change behind it, in the same section, still applies.
    behind = good_message(3, STUDENTS[6])
    assert applier.handle_message(json.dumps(behind).encode(), ATTRS).status == "applied"
    assert EMAILS[STUDENTS[6]] in classroom.roster(ALIAS)["students"]


def test_bad_message_without_attributes_is_recorded_under_unknown(applied):
    _, store, applier = applied
    outcome = applier.handle_message(b"{not json", None)
    assert_rejected(outcome, store, "not JSON", section_id="unknown")


# -- Pub/Sub pushes through functions/main.py -------------------------------------------------


class _LetEveryPushIn:
    def check(self, authorization):  # the access check is item 5's; here every push passes
        return None


@pytest.fixture
def main_applier(applied, monkeypatch):
    import main

    _, _, applier = applied
    monkeypatch.setattr(wiring, "applier", lambda: applier)
    monkeypatch.setattr(wiring, "push_authenticator", lambda: _LetEveryPushIn(), raising=False)
    monkeypatch.setattr(wiring, "applying_paused", lambda: False)
    return main, applied


def push(main, data: Any) -> None:
    message = {"attributes": ATTRS, "messageId": "1", "publishTime": "2026-11-28T17:00:00Z"}
    if data is not DROP:
        message["data"] = data
    cloud_event = CloudEvent(
        {"type": "google.cloud.pubsub.topic.v1.messagePublished", "source": "//pubsub.googleapis.com/test"},
        {"message": message, "subscription": "projects/p/subscriptions/roster-events-apply"},
    )
    with flask.Flask(__name__).test_request_context("/", method="POST", json={"message": message}):
        main.apply_roster_event(cloud_event)  # returning acknowledges: no exception may escape


PUSHES = [
    ("base64_garbage", "!!!! not base64 ####", "not JSON"),
    ("base64_of_not_json", base64.b64encode(b"{half").decode(), "not JSON"),
    ("no_data", DROP, "not JSON"),
    ("base64_of_a_json_array", base64.b64encode(b"[]").decode(), "must be a JSON object"),
]


@pytest.mark.parametrize(("data", "fragment"), cases(PUSHES))
def test_bad_push_through_the_entry_point_is_acknowledged_and_recorded(main_applier, data, fragment):
    main, (classroom, store, _) = main_applier
    push(main, data)
    [problem] = [p for p in store.problems.values() if p["kind"] == "bad_message"]
    assert fragment in problem["message"] and problem["section_id"] == SECTION
    push(main, base64.b64encode(json.dumps(good_message(3, STUDENTS[6])).encode()).decode())
    assert EMAILS[STUDENTS[6]] in classroom.roster(ALIAS)["students"]


# -- Clever records to the poller --------------------------------------------------------------


class FakeClever:
    def __init__(self, sections=(), events=()):
        self.sections, self.events = list(sections), list(events)

    def newest_event_id(self):
        return ev_id(0)

    def event_pages(self, after):
        todo = [e for e in self.events if after is None or not isinstance(e, dict) or str(e.get("id", "~")) > after]
        if todo:
            yield todo

    def section_pages(self, after=None):
        if self.sections:
            yield self.sections


class Directory:
    def emails(self, ids):
        return {i: EMAILS.get(i) for i in set(ids)}


GOOD_SECTION = section(id=OTHER, name="Good Section")
GOOD_EVENT = event(ev_id(90), "sections.created", GOOD_SECTION)


def bad_section(**kw):
    body = section(**kw)
    for key, value in list(kw.items()):
        if value is DROP:
            body.pop(key)
    return body


def bad_event(**kw):
    body = event(ev_id(5), "sections.updated", section(students=STUDENTS[:6]), {"students": STUDENTS[:5]})
    for key, value in kw.items():
        if key == "object":
            body["data"]["object"] = value
        elif key == "previous":
            body["data"]["previous_attributes"] = value
        elif value is DROP:
            body.pop(key)
        else:
            body[key] = value
    return body


# (case id, bootstrap sections or None, events, what the bad_clever_record message must name)
CLEVER_RECORDS = [
    ("section_without_id", [bad_section(id=DROP), GOOD_SECTION], [], "has no id"),
    ("section_without_name", [bad_section(name=DROP), GOOD_SECTION], [], f"section {SECTION} has no name"),
    ("section_blank_name", [bad_section(name="   "), GOOD_SECTION], [], f"section {SECTION} has no name"),
    ("section_teacher_not_a_string", [bad_section(teacher=["x"]), GOOD_SECTION], [], "teacher must be a user id"),
    ("section_students_not_a_list", [bad_section(students="x"), GOOD_SECTION], [], "students must be a list"),
    ("event_without_type", None, [bad_event(type=DROP), GOOD_EVENT], f"event {ev_id(5)} has no type"),
    ("event_without_id", None, [bad_event(id=DROP), GOOD_EVENT], "event has no id"),
    ("event_without_object", None, [bad_event(object=DROP), GOOD_EVENT], "has no data.object"),
    ("event_object_not_a_dict", None, [bad_event(object=["x"]), GOOD_EVENT], "has no data.object"),
    ("event_unknown_action", None, [bad_event(type="sections.merged"), GOOD_EVENT], "unknown type sections.merged"),
    ("previous_not_an_object", None, [bad_event(previous=["x"]), GOOD_EVENT], "previous_attributes is not an object"),
    (
        "event_students_not_a_list",
        None,
        [bad_event(object=section(students="x")), GOOD_EVENT],
        "students must be a list of user ids",
    ),
    (
        "previous_students_not_a_list",
        None,
        [bad_event(previous={"students": 7}), GOOD_EVENT],
        "previous students must be a list",
    ),
    ("event_not_an_object", None, ["sections.updated", GOOD_EVENT], "event ?"),
    (
        "section_not_an_object",
        ["oops", GOOD_SECTION],
        [],
        "section",
    ),
    (
        "section_null",
        [None, GOOD_SECTION],  # {"data": null, "uri": ...} in the /sections page
        [],
        "section",
    ),
]


@pytest.mark.parametrize(("sections", "events", "fragment"), cases(CLEVER_RECORDS))
def test_bad_clever_record_is_recorded_and_the_rest_is_published(sections, events, fragment):
    store, publisher = FakeStore(), FakePublisher()
    if sections is None:
        store.cursor = Cursor(ev_id(0), "2026-11-28T17:00:00Z")
    poller = Poller(FakeClever(sections or [], events), Directory(), store, publisher, Deadline(30))
    result = poller.poll()  # no exception escapes
    assert result.outcome == "ok" and result.bad_events == 1
    [problem] = store.problems.values()
    assert problem["kind"] == "bad_clever_record"
    assert fragment in problem["message"], problem["message"]
    # The good record behind it is published and applies.
    kinds = [json.loads(m)["section_id"] for m in publisher.messages]
    assert kinds == [OTHER]
    classroom = FakeClassroom(accounts=EMAILS.values())
    applier = Applier(FakeStore(), classroom)
    assert [applier.handle_message(m).status for m in publisher.messages] == ["applied"]
    assert classroom.roster(course_alias(OTHER))["name"] == "Good Section"
    if sections is None:
        assert store.cursor.last_event_id == ev_id(90)  # the cursor moves past the bad event too


def test_duplicated_ids_in_students_give_one_change_each():
    store, publisher = FakeStore(), FakePublisher()
    store.cursor = Cursor(ev_id(0))
    twice = [*STUDENTS[:5], STUDENTS[5], STUDENTS[5], STUDENTS[0]]
    ev = event(ev_id(5), "sections.updated", section(students=twice), {"students": [*STUDENTS[:5], STUDENTS[0]]})
    result = Poller(FakeClever(events=[ev]), Directory(), store, publisher, Deadline(30)).poll()
    assert result.bad_events == 0 and store.problems == {}
    changes = [json.loads(m) for m in publisher.messages]
    assert [(c["kind"], c["person"]["clever_id"]) for c in changes] == [("student_added", STUDENTS[5])]
    assert [s["clever_id"] for s in changes[0]["section"]["students"]] == STUDENTS[:6]


# -- Clever users: unknown ids and missing emails, through the Clever simulator ---------------


@dataclass
class CleverWorld:
    sim: CleverSimulator
    teacher: str
    kids: list[str]
    section: str


@pytest.fixture
def clever_world():
    with CleverSimulator() as sim:
        teacher = sim.add_user("teacher", "ann.smith@district.example.org", "Ann", "Smith", emit=False)
        kids = [sim.add_user("student", f"kid{i}@district.example.org", "Kid", str(i), emit=False) for i in range(3)]
        sid = sim.add_section("Algebra I - Smith - Period 3", teacher, students=kids[:2], emit=False)
        yield CleverWorld(sim, teacher, kids, sid)


def sim_client(sim: CleverSimulator) -> CleverClient:
    return CleverClient(
        sim.base_url,
        sim.token,
        page_size=10,
        retry=RetryPolicy(base_delay=0.0, max_delay=0.0, sleep=lambda s: None),
        deadline=Deadline(30),
    )


def poll_and_apply(world: CleverWorld, store: FakeStore, publisher: FakePublisher, applier: Applier):
    client = sim_client(world.sim)
    Poller(client, CleverUserDirectory(client), store, publisher, Deadline(30)).poll()
    outcomes = [applier.handle_message(m) for m in publisher.messages]
    publisher.messages.clear()
    return outcomes


@pytest.mark.parametrize("who", ["unknown_user_id", "user_without_email"])
def test_users_clever_cannot_match_become_user_without_email_and_the_rest_syncs(clever_world, who):
    w = clever_world
    classroom = FakeClassroom(
        accounts=["ann.smith@district.example.org"] + [f"kid{i}@district.example.org" for i in range(3)]
    )
    store, publisher = FakeStore(), FakePublisher()
    applier = Applier(store, classroom)
    assert [o.status for o in poll_and_apply(w, store, publisher, applier)] == ["applied"]  # the bootstrap
    if who == "unknown_user_id":
        stranger = "5c1e7e4a0d5c1e7e4a0dffff"  # Clever answers 404 for /users/{id}
    else:
        stranger = w.sim.add_user("student", None, "No", "Email", emit=False)
    obj = {**w.sim.section(w.section), "students": [*w.kids[:2], stranger, w.kids[2]]}
    w.sim.emit_event("sections.updated", obj, {"students": w.kids[:2]})
    outcomes = poll_and_apply(w, store, publisher, applier)
    assert [o.status for o in outcomes] == ["applied", "applied"]
    problem = store.problems[f"{w.section}__user__{stranger}"]
    assert problem["kind"] == "user_without_email" and problem["open"]
    assert stranger in problem["message"] and "no email" in problem["message"]
    roster = classroom.roster(course_alias(w.section))
    assert roster["students"] == {f"kid{i}@district.example.org" for i in range(3)}  # the kid behind still joins
    if who == "unknown_user_id":
        assert w.sim.responses[404] >= 1


# -- malformed paging: the poll fails cleanly, nothing is lost --------------------------------


class FakeResponse:
    def __init__(self, body: Any, status: int = 200):
        self.status_code = status
        self._body = body
        self.headers: dict[str, str] = {}
        self.text = body if isinstance(body, str) else json.dumps(body)
        self.content = self.text.encode()

    def json(self):
        if isinstance(self._body, str):
            return json.loads(self._body)
        return self._body


class ScriptedSession:
    """A requests.Session stand-in: answers each GET from a function of the URL."""

    def __init__(self, answer):
        self.headers: dict[str, str] = {}
        self.answer = answer
        self.urls: list[str] = []

    def get(self, url, params=None, timeout=None):
        self.urls.append(url)
        if "/v3.0/users/" in url:  # user lookups answer well: the events are what is malformed
            user_id = url.rsplit("/", 1)[-1]
            return FakeResponse({"data": {"id": user_id, "email": EMAILS.get(user_id)}})
        return self.answer(url)


def page(events, next_uri: str | None):
    links = [{"rel": "self", "uri": "/v3.0/events"}]
    if next_uri:
        links.append({"rel": "next", "uri": next_uri})
    return {"data": [wrapped(e) for e in events], "links": links}


FIRST = [event(ev_id(10 + i), "sections.created", section(id=f"5c40b5127d0c8a0001a7f1{i:02d}")) for i in range(2)]


def loops_back(url):
    # The first page's next link is the very request that gave it.
    return FakeResponse(page(FIRST, url.split("clever.invalid", 1)[1]))


def loops_back_spelled_differently(url):
    # The same page again under another spelling of its query: read twice, then the loop is seen.
    return FakeResponse(page(FIRST, f"/v3.0/events?limit=2&record_type=sections&starting_after={ev_id(0)}"))


def no_data_list(url):
    if "starting_after=" + ev_id(0) in url:
        return FakeResponse(page(FIRST, f"/v3.0/events?starting_after={ev_id(11)}"))
    return FakeResponse({"links": [], "data": {"oops": 1}})


def not_json(url):
    if "starting_after=" + ev_id(0) in url:
        return FakeResponse(page(FIRST, f"/v3.0/events?starting_after={ev_id(11)}"))
    return FakeResponse("<html>gateway says hi</html>")


def not_an_object(url):
    return FakeResponse([{"data": FIRST[0]}])


PAGING = [
    # (case id, answers, the last event read from a good page, what the error names)
    ("next_link_loops_back", loops_back, ev_id(11), "loops back"),
    ("next_link_loops_back_spelled_differently", loops_back_spelled_differently, ev_id(11), "loops back"),
    ("page_without_data_list", no_data_list, ev_id(11), "has no data list"),
    ("body_not_json", not_json, ev_id(11), "not JSON"),
    ("body_not_an_object", not_an_object, ev_id(0), "not an object"),
]


def paging_poller(answer, store: FakeStore, publisher: FakePublisher) -> Poller:
    deadline = Deadline(30)
    client = CleverClient(
        "http://clever.invalid",
        "token",
        page_size=2,
        retry=RetryPolicy(base_delay=0.0, max_delay=0.0, max_attempts=2, sleep=lambda s: None),
        deadline=deadline,
        session=ScriptedSession(answer),  # type: ignore[arg-type]
    )
    return Poller(client, CleverUserDirectory(client), store, publisher, deadline)


@pytest.mark.parametrize(("answer", "furthest", "fragment"), cases(PAGING))
def test_malformed_paging_fails_the_poll_cleanly_without_losing_anything(monkeypatch, answer, furthest, fragment):
    import main

    store, publisher = FakeStore(), FakePublisher()
    store.cursor = Cursor(ev_id(0), "2026-11-28T17:00:00Z")
    monkeypatch.setattr(wiring, "poller", lambda: paging_poller(answer, store, publisher))
    monkeypatch.setattr(wiring, "scheduler_authenticator", lambda: PushAuthenticator("off"))
    with flask.Flask(__name__).test_request_context("/", method="POST"):
        body, status = main.poll_clever(flask.request)
    assert status == 503 and body["outcome"] == "failed"
    assert fragment in body["error"] and "CleverError" in body["error"]
    # The cursor moved at most past what was published, so the next poll loses nothing (it may
    # read the published page again: the applier ignores repeats).
    published = {json.loads(m)["event_id"] for m in publisher.messages}
    assert store.cursor.last_event_id in (ev_id(0), furthest)
    assert {e["id"] for e in FIRST if e["id"] <= store.cursor.last_event_id} <= published
    assert published <= {e["id"] for e in FIRST if e["id"] <= furthest}
    assert len(publisher.messages) <= 2 * len(FIRST)  # a page read twice at most
    assert store.poll_status is not None  # the failed poll still says how far it got


def test_malformed_paging_is_a_clever_error_from_the_adapter():
    client = paging_poller(loops_back, FakeStore(), FakePublisher())._clever
    with pytest.raises(CleverError) as exc:
        list(client.event_pages(ev_id(0)))
    assert exc.value.status == 502 and "loops back" in str(exc.value)


def test_a_failed_poll_records_that_it_failed():
    store, publisher = FakeStore(), FakePublisher()
    store.cursor = Cursor(ev_id(0), "2026-11-28T17:00:00Z")
    with pytest.raises(CleverError):
        paging_poller(no_data_list, store, publisher).poll()
    assert store.poll_status["outcome"] != "ok", store.poll_status

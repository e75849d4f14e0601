"""What may reach a log line or a spreadsheet (privacy.py, cli.csv_cell) and what `forget` and the
retention rules do to a document (forget.py, retention.py), without I/O."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import logging

import httplib2
from googleapiclient.errors import HttpError
from rostersync.adapters.classroom import classroom_error
from rostersync.admin.cli import _cell, csv_cell
from rostersync.domain.forget import Identity, plan_document, resolve
from rostersync.domain.links import LinkState, MemberRecord, MemberStatus, SectionCourseLink
from rostersync.domain.ports import ClassroomError
from rostersync.domain.retention import event_time, prune_removed_members
from rostersync.privacy import RedactingFilter, error_text, mask_email, redact

EMAIL = "jane.doe@district.example.org"


def http_error(status: int, message: str, uri: str) -> HttpError:
    body = json.dumps({"error": {"code": status, "message": message, "status": "FAILED_PRECONDITION"}}).encode()
    return HttpError(httplib2.Response({"status": status}), body, uri=uri)


def test_emails_are_masked_everywhere_in_a_line_also_url_encoded():
    assert mask_email(EMAIL) == "j***@district.example.org" and mask_email(None) == "-"
    line = redact(f"added {EMAIL} and JOHN@district.example.org via /students/jane.doe%40district.example.org")
    assert "jane.doe" not in line and "JOHN@" not in line and line.count("***@district.example.org") == 3
    assert redact("https://classroom.googleapis.com/v1/courses/1/students/x?alt=json") == (
        "https://classroom.googleapis.com/…"
    )
    assert "eyJ" not in redact("Authorization: Bearer eyJhbGciOi.eyJzdWIiOiIx.c2lnbmF0dXJl")


def test_error_texts_come_from_status_and_reason_never_the_uri():
    uri = "https://classroom.googleapis.com/v1/courses/7/students/jane.doe%40district.example.org?alt=json"
    exc = http_error(400, f"@CannotDirectAddUser {EMAIL} cannot be added", uri)
    assert "jane.doe%40" in str(exc)  # the raw text carries the URI...
    assert error_text(exc) == "HttpError 400 FAILED_PRECONDITION @CannotDirectAddUser"  # ...ours never
    err = classroom_error(exc)
    assert err.reason == "@CannotDirectAddUser" and EMAIL in err.message  # kept for the problem record
    assert "jane" not in str(err) and "jane" not in error_text(err)
    assert "jane" not in str(ClassroomError(404, "NOT_FOUND", f"Requested entity {EMAIL} was not found."))
    assert "jane" not in str(classroom_error(http_error(500, "", uri)))


def test_the_log_filter_redacts_messages_and_tracebacks():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter())
    logger = logging.getLogger("test_privacy")
    logger.addHandler(handler)
    try:
        logger.warning("could not add %s", EMAIL)
        try:
            raise ValueError(f"no user {EMAIL}")
        except ValueError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    out = stream.getvalue()
    assert "jane.doe" not in out and "j***@district.example.org" in out and "ValueError" in out


def test_csv_cells_cannot_be_formulas_or_carry_control_characters():
    for value in ('=HYPERLINK("http://x")', "+1", "-1+2", "@CannotDirectAddUser", "\t=1", "\r@x"):
        cell = csv_cell(value)
        assert cell.startswith("'") and not any(ch in cell for ch in "\t\r\n"), (value, cell)
    assert csv_cell("Biology\x1b[31m red\x07") == "Biology[31m red"
    assert csv_cell(None) == "" and csv_cell("plain text") == "plain text" and csv_cell(3) == "3"
    # Written and read back as CSV: one row, the apostrophe kept.
    out = io.StringIO()
    csv.writer(out).writerow([csv_cell("=1+1"), csv_cell("a\nb")])
    assert list(csv.reader(io.StringIO(out.getvalue()))) == [["'=1+1", "a b"]]
    assert _cell("x\x1b[2J\x1b]0;title\x07y") == "x[2J]0;titley"


def test_forget_plans_per_document():
    docs = [
        ("sections", "sections/s1", {"members": {"u1": {"clever_id": "u1", "email": EMAIL}}, "owner_email": None}),
        ("problems", "problems/p1", {"clever_id": "u2", "email": "x@y.org"}),
    ]
    who = resolve(EMAIL.upper(), docs)
    assert who.ids == {"u1"} and who.emails == {EMAIL}
    link = {
        "section_id": "s1",
        "owner_email": EMAIL,
        "owner_clever_id": "u1",
        "teacher_added": [EMAIL, "other@y.org"],
        "members": {"u1": {"clever_id": "u1", "email": EMAIL}, "u2": {"clever_id": "u2", "email": "x@y.org"}},
    }
    action = plan_document("sections", "sections/s1", link, who)
    assert action.kind == "update" and action.data["members"] == {"u2": link["members"]["u2"]}
    assert action.data["owner_email"] is None and action.data["teacher_added"] == ["other@y.org"]
    assert plan_document("problems", "problems/s1__u1", {"clever_id": "u1"}, who).kind == "delete"
    assert plan_document("problems", "problems/p1", docs[1][2], who) is None
    assert plan_document("audit", "audit/a", {"kind": "forget", "clever_id": "u1"}, who) is None
    short = Identity(ids={"s1"})  # a short sourcedId matches whole values only
    assert short.mentioned_in({"x": "s1"}) and not short.mentioned_in({"x": "s10 and more"})


def test_forget_deletes_guardian_documents_named_after_the_person_and_scrubs_the_others():
    student = Identity(ids={"stu-000123"}, emails={"kid@district.example.org"})
    parent = Identity(ids={"par-000001"}, emails={"mom@example.com"})
    links = {"student_id": "stu-000123", "digest": "d1", "guardian_ids": ["par-000001", "par-000002"]}
    # The student's saved guardian links are named by their id: gone, not kept with the id in the name.
    assert plan_document("oneroster_guardian_links", "oneroster_guardian_links/stu-000123", links, student).kind == (
        "delete"
    )
    # A parent is one of the ids in another student's document: only that id leaves it.
    action = plan_document("oneroster_guardian_links", "oneroster_guardian_links/stu-000123", links, parent)
    assert action.kind == "update" and action.data["guardian_ids"] == ["par-000002"]
    record = {"student_id": "stu-000123", "email": "mom@example.com", "state": "pending"}
    assert plan_document("guardians", "guardians/stu-000123__mom@example.com", record, parent).kind == "delete"
    assert plan_document("guardians", "guardians/stu-000123__mom@example.com", record, student).kind == "delete"
    other = {"student_id": "stu-000999", "email": "dad@example.com", "state": "pending"}
    assert plan_document("guardians", "guardians/stu-000999__dad@example.com", other, parent) is None


def test_members_removed_long_ago_are_pruned_and_no_others():
    now = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    old = f"{int((now - dt.timedelta(days=61)).timestamp()):08x}" + "0" * 16
    new = f"{int((now - dt.timedelta(days=59)).timestamp()):08x}" + "0" * 16
    assert event_time(old) < now and event_time("not-an-id") is None
    link = SectionCourseLink("s", LinkState.ACTIVE, "d:clever-s")
    for cid, status, event in (
        ("a", "removed", old),
        ("b", "removed", new),
        ("c", "active", old),
        ("d", "removed", "x"),
    ):
        link = link.with_member(MemberRecord(cid, None, "student", MemberStatus(status), event))
    assert set(prune_removed_members(link, 60, now).members) == {"b", "c", "d"}
    assert prune_removed_members(link, 90, now) is link


# -- the smaller items: push auth in the cloud, audiences, input before auth, foreign registrations --


def test_push_auth_off_is_refused_in_cloud_run_even_with_an_emulator_variable(monkeypatch):
    import pytest
    from rostersync.config import ConfigError, load_settings

    monkeypatch.setenv("PUSH_AUTH", "off")
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", "127.0.0.1:8085")
    monkeypatch.delenv("K_SERVICE", raising=False)
    assert load_settings().push_auth == "off"
    monkeypatch.setenv("K_SERVICE", "rostersync-apply-roster-event")
    with pytest.raises(ConfigError, match="K_SERVICE"):
        load_settings()


def test_each_function_accepts_only_its_own_audience(monkeypatch):
    import pytest
    from rostersync.config import ConfigError
    from rostersync.wiring import own_audiences

    urls = (
        "https://rostersync-apply-roster-event-123.us-central1.run.app",
        "https://rostersync-record-dead-letter-123.us-central1.run.app",
    )
    monkeypatch.delenv("K_SERVICE", raising=False)
    assert own_audiences(urls) == urls  # locally: every configured audience
    monkeypatch.setenv("K_SERVICE", "rostersync-record-dead-letter")
    assert own_audiences(urls) == (urls[1],)
    monkeypatch.setenv("K_SERVICE", "rostersync-poll-clever")
    with pytest.raises(ConfigError):
        own_audiences(urls)


def test_poll_oneroster_reads_no_body_before_the_caller_is_known(monkeypatch):
    import flask
    import main
    from rostersync import wiring
    from rostersync.adapters.push_auth import PushAuthError

    class Refuses:
        def check(self, authorization):
            raise PushAuthError("no Authorization header")

    read = []
    monkeypatch.setattr(wiring, "scheduler_authenticator", lambda: Refuses())
    monkeypatch.setattr(wiring, "oneroster_poller", lambda: read.append("poller"))
    monkeypatch.setattr(main, "_json_body", lambda request: read.append("body"))
    with flask.Flask(__name__).test_request_context("/", method="POST", data="[" * 100_000):
        body, status = main.poll_oneroster(flask.request)
    assert status == 403 and body == {"outcome": "forbidden"} and read == []


def test_deeply_nested_json_is_bad_input_not_a_recursion_error():
    import flask
    import main
    import pytest
    from rostersync.app.notifications import InvalidNotification, decode_notification

    deep = b"[" * 100_000 + b"]" * 100_000
    nested = b"[" * 4_000 + b"]" * 4_000  # small enough to be read, deeper than the parser's stack
    with pytest.raises(InvalidNotification, match="RecursionError"):
        decode_notification(nested)
    with flask.Flask(__name__).test_request_context("/", method="POST", data=deep, content_type="application/json"):
        assert main._json_body(flask.request) is None


def test_a_notification_of_another_registration_is_acknowledged_at_once():
    from rostersync.app.notifications import NotificationHandler, Outcome, decode_notification

    data = json.dumps(
        {"collection": "courses.students", "eventType": "CREATED", "resourceId": {"courseId": "1", "userId": "2"}}
    ).encode()
    notification = decode_notification(data, {"registrationId": "theirs"}, "2099-01-01T00:00:00Z")

    class NoLinks:
        def link_for_course(self, course_id):
            raise AssertionError("not looked up: the notification is not ours")

    result = NotificationHandler(NoLinks(), None, 300, registration_id="ours").handle(notification)
    assert result.outcome == Outcome.NOT_OUR_REGISTRATION and result.ack


def test_the_status_page_refuses_everything_in_cloud_run_without_an_iap_audience(monkeypatch):
    from rostersync.admin import status_page

    monkeypatch.setattr(status_page, "_iap_verifier", lambda: None)  # IAP_AUDIENCE unset
    monkeypatch.setenv("K_SERVICE", "rostersync-status-page")
    refused = status_page.create_app(store_factory=lambda: None).test_client().get("/no-such-page")
    assert refused.status_code == 403 and "Forbidden" in refused.text
    assert refused.headers["X-Frame-Options"] == "DENY" and refused.headers["X-Content-Type-Options"] == "nosniff"
    monkeypatch.delenv("K_SERVICE")
    local = status_page.create_app(store_factory=lambda: None).test_client().get("/no-such-page")
    assert local.status_code == 404  # on a workstation: open to its own user
    assert "frame-ancestors 'none'" in local.headers["Content-Security-Policy"]

"""rostersync/logs.py: every record is one JSON line in Cloud Logging's structured format."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
from rostersync import logs

FUNCTIONS = Path(__file__).resolve().parents[2] / "functions"


@pytest.fixture
def captured():
    """The root logger sending JSON to a buffer; the root's handlers and level put back afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    out = io.StringIO()
    logs.setup("json", stream=out, level=logging.DEBUG)
    yield out
    root.handlers[:] = handlers
    root.setLevel(level)


def entries(out: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_a_record_is_one_line_with_severity_message_logger_source_location_and_fields(captured):
    logging.getLogger("rostersync.app.applier").warning(
        "apply %s in %s", "retry", "s-1", extra={"json_fields": {"section_id": "s-1", "calls": 3, "severity": "x"}}
    )
    (entry,) = entries(captured)
    assert entry["severity"] == "WARNING"
    assert entry["message"] == "apply retry in s-1"
    assert entry["logger"] == "rostersync.app.applier"
    assert entry["section_id"] == "s-1" and entry["calls"] == 3  # fields land in jsonPayload
    location = entry[logs.SOURCE_LOCATION]
    assert location["file"] == __file__ and location["function"].startswith("test_a_record")
    assert isinstance(location["line"], int) and location["line"] > 0
    assert entry["time"].endswith("+00:00")


@pytest.mark.parametrize(
    ("level", "severity"),
    [(logging.DEBUG, "DEBUG"), (logging.INFO, "INFO"), (logging.WARNING, "WARNING"), (logging.ERROR, "ERROR")]
    + [(logging.CRITICAL, "CRITICAL"), (logging.INFO + 5, "INFO"), (logging.ERROR + 1, "ERROR")],
)
def test_python_levels_become_cloud_logging_severities(captured, level, severity):
    logging.getLogger("x").log(level, "m")
    (entry,) = entries(captured)
    assert entry["severity"] == severity and severity in logs.SEVERITIES


def test_an_exception_is_one_entry_with_its_whole_traceback(captured):
    try:
        {}["missing"]
    except KeyError:
        logging.getLogger("rostersync").exception("poll failed", extra={"json_fields": {"outcome": "failed"}})
    lines = captured.getvalue().splitlines()
    assert len(lines) == 1  # not one entry per traceback line
    entry = json.loads(lines[0])
    assert entry["severity"] == "ERROR" and entry["outcome"] == "failed"
    message = entry["message"].splitlines()
    assert message[0] == "poll failed"
    assert message[1] == "Traceback (most recent call last):"
    assert message[-1] == "KeyError: 'missing'"


def test_a_field_that_is_not_json_is_logged_as_its_text(captured):
    import datetime as dt

    when = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    logging.getLogger("x").info("m", extra={"json_fields": {"when": when, "ids": ("a", "b")}})
    (entry,) = entries(captured)
    assert entry["when"] == str(when) and entry["ids"] == ["a", "b"]


def test_setting_up_twice_keeps_one_line_per_record(captured):
    again = io.StringIO()
    logs.setup("json", stream=again)
    logging.getLogger("x").info("once")
    assert captured.getvalue() == ""
    assert len(again.getvalue().splitlines()) == 1


def test_the_execution_id_of_the_functions_framework_request_is_a_label(captured):
    flask = pytest.importorskip("flask")
    from functions_framework import execution_id

    app = flask.Flask("t")
    headers = {"Function-Execution-Id": "exec-123", "X-Cloud-Trace-Context": "abc/456;o=1"}
    with app.test_request_context("/", headers=headers):
        execution_id._set_current_context(execution_id._extract_context_from_headers(flask.request.headers))
        logging.getLogger("x").info("in a request")
    execution_id.execution_context_var.set(None)
    logging.getLogger("x").info("outside")
    inside, outside = entries(captured)
    assert inside[logs.LABELS] == {"execution_id": "exec-123"}
    assert inside[logs.SPAN_ID] == "456"
    assert logs.LABELS not in outside


def test_human_format_shows_the_fields_after_the_message():
    record = logging.LogRecord("rostersync", logging.WARNING, __file__, 1, "held %d", (2,), None)
    record.json_fields = {"batch": "b-1"}
    assert logs.HumanFormatter().format(record) == 'WARNING rostersync: held 2 batch="b-1"'


def test_main_logs_json_on_stdout_from_import_on():
    """functions/main.py sets the JSON handler up when functions-framework imports it."""
    code = (
        "import logging, main\n"
        "logging.getLogger('rostersync.app.poller')"
        ".info('ready', extra={'json_fields': {'operation': 'poll_clever'}})\n"
        "try:\n    1/0\nexcept ZeroDivisionError:\n    logging.getLogger('rostersync').exception('boom')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=FUNCTIONS, capture_output=True, text=True, timeout=60, check=True
    )
    lines = done.stdout.splitlines()
    assert len(lines) == 2, done.stdout + done.stderr
    ready, boom = map(json.loads, lines)
    assert ready["severity"] == "INFO" and ready["operation"] == "poll_clever"
    assert boom["severity"] == "ERROR" and "ZeroDivisionError" in boom["message"]
    assert done.stderr == ""

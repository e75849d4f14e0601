"""Log lines as Cloud Logging reads them: one JSON object per line (its "structured logging" format).

Cloud Functions (gen2) and Cloud Run parse each JSON line written to stdout into a LogEntry:
`severity` becomes the entry's level, `message` its text (a traceback stays inside the one entry,
where Error Reporting finds it), `logging.googleapis.com/sourceLocation` and
`logging.googleapis.com/labels` become those fields of the entry, and every other key lands in
jsonPayload, where log queries and log-based metrics read it (`jsonPayload.outcome="applied"`).

Fields go with a log call as `log.info("applied", extra={"json_fields": {"section_id": ..., "calls": 3}})`
(the same form as google-cloud-logging's handlers, so the call sites would not change with it).

The execution id: functions-framework gives each request one (the platform's Function-Execution-Id
header, or one it makes up) and keeps it in a context variable; we put it in the entry's labels,
as Cloud Functions' own lines have it, so one invocation's lines are found together.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from typing import IO

# Python's levels -> Cloud Logging's LogSeverity names (the ones it knows; NOTSET becomes DEFAULT).
_SEVERITIES = ((logging.CRITICAL, "CRITICAL"), (logging.ERROR, "ERROR"), (logging.WARNING, "WARNING"))
SEVERITIES = frozenset({"DEFAULT", "DEBUG", "INFO", "NOTICE", "WARNING", "ERROR", "CRITICAL", "ALERT", "EMERGENCY"})

SOURCE_LOCATION = "logging.googleapis.com/sourceLocation"
LABELS = "logging.googleapis.com/labels"
SPAN_ID = "logging.googleapis.com/spanId"
# Keys an entry sets itself; json_fields cannot overwrite them.
_RESERVED = frozenset({"severity", "message", "logger", "time", SOURCE_LOCATION, LABELS, SPAN_ID})

# Where rostersync's own handler is marked, so that setting up twice replaces it instead of doubling lines.
_OURS = "_rostersync_handler"


def severity(levelno: int) -> str:
    for threshold, name in _SEVERITIES:
        if levelno >= threshold:
            return name
    if levelno >= logging.INFO:
        return "INFO"
    return "DEBUG" if levelno > logging.NOTSET else "DEFAULT"


def _execution_context() -> tuple[str | None, str | None]:
    """(execution id, span id) of the functions-framework request being served, else (None, None)."""
    framework = sys.modules.get("functions_framework.execution_id")
    if framework is None:
        return None, None
    try:
        context = framework._get_current_context()
    except Exception:  # outside a request, or a functions-framework without it: no id, still a log line
        return None, None
    if context is None:
        return None, None
    return getattr(context, "execution_id", None), getattr(context, "span_id", None)


class CloudLoggingFormatter(logging.Formatter):
    """One LogRecord -> one line of JSON in Cloud Logging's structured format."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info:
            # The traceback in the same entry: Error Reporting reads it from an ERROR's message.
            message = f"{message}\n{self.formatException(record.exc_info)}"
        elif record.exc_text:
            message = f"{message}\n{record.exc_text}"
        if record.stack_info:
            message = f"{message}\n{self.formatStack(record.stack_info)}"
        entry: dict = {
            "severity": severity(record.levelno),
            "message": message,
            "logger": record.name,
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="microseconds"),
            SOURCE_LOCATION: {"file": record.pathname, "line": record.lineno, "function": record.funcName},
        }
        fields = getattr(record, "json_fields", None)
        if isinstance(fields, dict):
            for key, value in fields.items():
                if key not in _RESERVED:
                    entry[str(key)] = value
        execution_id, span_id = _execution_context()
        if execution_id:
            entry[LABELS] = {"execution_id": str(execution_id)}
        if span_id:
            entry[SPAN_ID] = str(span_id)
        # default=str: a field that is not JSON (a datetime, an enum) is logged as its text, never lost.
        return json.dumps(entry, ensure_ascii=False, default=str)


class HumanFormatter(logging.Formatter):
    """`LEVEL logger: message key=value ...` for a person at a terminal (the CLI's default)."""

    def __init__(self) -> None:
        super().__init__("%(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = getattr(record, "json_fields", None)
        if isinstance(fields, dict) and fields:
            text += " " + " ".join(f"{k}={json.dumps(v, default=str)}" for k, v in fields.items())
        return text


def setup(fmt: str = "json", stream: IO[str] | None = None, level: int | str | None = None) -> logging.Handler:
    """Sends every logger's records (the root's handler) to `stream` (stdout by default) as JSON
    ("json") or as text ("human"). Called again, it replaces its own handler: one line per record."""
    if fmt not in ("json", "human"):
        raise ValueError(f"log format must be 'json' or 'human', not {fmt!r}")
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, _OURS, False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(stream if stream is not None else sys.stdout)
    handler.setFormatter(CloudLoggingFormatter() if fmt == "json" else HumanFormatter())
    setattr(handler, _OURS, True)
    root.addHandler(handler)
    # Every line is redacted on its way out (privacy.py): emails masked, URLs cut, tokens removed.
    from rostersync.privacy import install_log_redaction

    install_log_redaction(root)
    if level is not None:
        root.setLevel(level.upper() if isinstance(level, str) else level)
    # Python's warnings become log records too: a bare line on stderr would be an entry without severity.
    logging.captureWarnings(True)
    return handler

"""What may be logged about people: Clever and Google ids, and emails only masked.

Logs are read by more people than Firestore (anyone with Logs Viewer, every log sink), so nothing
that names a student goes there: a change is described by `RosterChange.describe()` (kind, Clever
id, section, event), an error by `error_text()` (HTTP status, status and `@Reason`, never the raw
HttpError, whose text carries the request URI `/students/jane.doe%40...`), and an email, where
one helps an administrator, by `mask_email()`. `RedactingFilter`, attached to the log handlers in
functions/main.py and the CLI, is the safety net for what a library or a future log call lets
through: it masks every email (plain or URL-encoded), cuts URLs to their host and removes bearer
tokens and JWTs from each line, tracebacks included.

Imports nothing of ours (ports.py uses it for ClassroomError's text).
"""

from __future__ import annotations

import json
import logging
import re

# An email, also URL-encoded in a request URI (jane.doe%40district.org).
_EMAIL = re.compile(r"[A-Za-z0-9._%+'-]+?(?:@|%40)(?P<domain>[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+)")
_URL = re.compile(r"(?P<base>https?://[^/\s'\"<>]+)(?P<rest>[^\s'\"<>]*)")
_BEARER = re.compile(r"(?i)\b(bearer|token[=:]\s*)\s*[A-Za-z0-9._~+/=-]{8,}")
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*")


def mask_email(email: str | None) -> str:
    """An email as logs may show it: the first letter of the local part and the domain."""
    if not email or "@" not in email:
        return "-"
    local, domain = str(email).split("@", 1)
    return f"{local[:1]}***@{domain}"


def _mask_match(match: re.Match) -> str:
    return f"{match.group(0)[:1]}***@{match.group('domain')}"


def redact(text: object) -> str:
    """The text with every email masked, every URL cut to its scheme and host, and every bearer
    token or JWT removed."""
    out = str(text)
    out = _JWT.sub("<jwt>", out)
    out = _BEARER.sub(lambda m: f"{m.group(1)}<redacted>", out)
    out = _URL.sub(lambda m: m.group("base") + ("/…" if m.group("rest") not in ("", "/") else ""), out)
    return _EMAIL.sub(_mask_match, out)


def redact_value(value):
    """A JSON-like value (a function's result) with every string redacted, for a log line."""
    if isinstance(value, dict):
        return {k: redact_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_value(v) for v in value]
    if isinstance(value, str):
        return redact(value)
    return value


def error_text(exc: BaseException) -> str:
    """A log-safe description of an error: its type and HTTP status, Google's status and the
    `@Reason` of its message when it has them; for other errors their own text, redacted."""
    resp = getattr(exc, "resp", None)
    if resp is not None and hasattr(exc, "content"):  # googleapiclient's HttpError
        status, reason = "", ""
        try:
            body = json.loads(exc.content.decode() if isinstance(exc.content, bytes) else exc.content)
            err = body.get("error", {}) if isinstance(body, dict) else {}
            status = str(err.get("status") or "")
            message = str(err.get("message") or "")
            reason = message.split(" ", 1)[0] if message.startswith("@") else ""
        except (ValueError, AttributeError, TypeError):
            pass
        return " ".join(p for p in (f"{type(exc).__name__} {getattr(resp, 'status', '?')}", status, reason) if p)
    http_status = getattr(exc, "http_status", None)
    if http_status is not None:  # our ClassroomError and its kind
        return " ".join(
            p for p in (f"{http_status}", str(getattr(exc, "status", "") or ""), getattr(exc, "reason", "")) if p
        )
    return f"{type(exc).__name__}: {redact(exc)[:300]}"


class RedactingFilter(logging.Filter):
    """Redacts each record's message and traceback (see `redact`) before a handler formats it."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed log call still logs, as logging itself would
            message = str(record.msg)
        record.msg, record.args = redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


# Libraries that log request URIs (Classroom's /students/{email}) at DEBUG.
QUIET_LOGGERS = ("googleapiclient.discovery", "googleapiclient.http", "urllib3.connectionpool", "werkzeug")


def install_log_redaction(root: logging.Logger | None = None) -> None:
    """Attaches one RedactingFilter to each handler of the root logger (records from every logger
    pass through them) and keeps the URI-logging libraries at WARNING."""
    root = root or logging.getLogger()
    for handler in root.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)

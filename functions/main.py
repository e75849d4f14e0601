"""Cloud Functions entry points. Thin: decode the request, call a handler, map the outcome."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import logging

import flask
import functions_framework
from cloudevents.http import CloudEvent
from rostersync import logs, wiring
from rostersync.config import ConfigError
from rostersync.privacy import error_text, redact, redact_value

# One JSON line per record on stdout: Cloud Logging's structured format (rostersync/logs.py);
# every line through the handler is redacted (emails masked, URLs cut, tokens removed): privacy.py.
logs.setup("json", level=logging.INFO)
log = logging.getLogger("rostersync")


def _fields(**fields) -> dict:
    """`extra` for a log call: fields that become jsonPayload.<name> in Cloud Logging."""
    return {"json_fields": fields}


def _scheduler_refusal() -> tuple[dict, int] | None:
    """A 403 answer unless the caller is Cloud Scheduler's account (PUSH_AUTH, on top of Cloud
    Run's own check), else None."""
    from rostersync.adapters.push_auth import PushAuthError

    try:
        wiring.scheduler_authenticator().check(flask.request.headers.get("Authorization"))
    except PushAuthError as exc:
        log.warning("call to %s rejected (403): %s", flask.request.path, exc)
        return {"outcome": "forbidden"}, 403
    return None


def _run_scheduled(what: str, work, operation: str):
    """A scheduled HTTP function's answer: 403 for anyone but the scheduler, 500 for missing
    configuration, 503 for a failure the next scheduled run retries, else 200 with the result.
    Each run ends in one log entry with jsonPayload.operation and jsonPayload.outcome (the
    log-based metrics in infra/monitoring.tf count them)."""
    try:
        refusal = _scheduler_refusal()
        if refusal:
            return refusal
        result = work()
    except ConfigError as exc:
        log.error("%s: configuration: %s", what, exc, extra=_fields(operation=operation, outcome="config_error"))
        return {"outcome": "config_error", "error": str(exc)}, 500
    except Exception as exc:
        log.exception("%s failed: %s", what, error_text(exc), extra=_fields(operation=operation, outcome="failed"))
        return {"outcome": "failed", "error": error_text(exc)}, 503
    answer = result.to_json()
    outcome = str(answer.get("outcome") or "ok")
    log.log(
        logging.ERROR if outcome == "failed" else logging.INFO,  # a OneRoster poll reports its failure
        "%s %s",
        what,
        outcome,
        # Fields are not redacted by the log filter: the answer is, before it becomes fields.
        extra=_fields(**{**redact_value(answer), "operation": operation, "outcome": outcome}),
    )
    return answer, 200


def _log_held_batches() -> None:
    """After a poll: how long the oldest batch the mass-change brake holds has waited (one Firestore
    query), as jsonPayload.oldest_held_hours for the "held batch waiting" alert. A failure here is
    logged and leaves the poll's answer alone."""
    try:
        batches = wiring.store().held_batches("held")
    except Exception as exc:
        log.warning("held batches could not be read: %s", exc, extra=_fields(operation="held_batches"))
        return
    if not batches:
        return
    now = dt.datetime.now(dt.UTC)
    ages = [(now - b["held_at"]).total_seconds() / 3600 for b in batches if isinstance(b.get("held_at"), dt.datetime)]
    oldest = max(ages, default=0.0)
    log.warning(
        "%d held batches wait for rostersync approve or discard (oldest %.1f hours)",
        len(batches),
        oldest,
        extra=_fields(operation="held_batches", held_batches=len(batches), oldest_held_hours=round(oldest, 2)),
    )


def _poll_then_report_held(poll):
    result = poll()
    _log_held_batches()
    return result


@functions_framework.http
def poll_clever(request: flask.Request):
    """Called by Cloud Scheduler: one poll of Clever's events (or the first full read). A failed poll
    left the cursor before anything unpublished; the next scheduled poll retries."""
    return _run_scheduled("poll", lambda: _poll_then_report_held(wiring.poller().poll), "poll_clever")


@functions_framework.http
def poll_oneroster(request: flask.Request):
    """Called by Cloud Scheduler: one read of the OneRoster provider (a delta, or every record when
    the body says {"full": true} or the last full read is older than ONEROSTER_FULL_READ_HOURS).
    Nothing is saved before every change is published; the next scheduled poll retries."""

    def work():
        # The body is read only once the caller is known to be the scheduler (_run_scheduled).
        body = _json_body(request)
        full = isinstance(body, dict) and body.get("full") is True
        return _poll_then_report_held(lambda: wiring.oneroster_poller().poll(force_full=full))

    return _run_scheduled("oneroster poll", work, "poll_oneroster")


def _json_body(request: flask.Request):
    """The request's JSON, or None when it is not JSON (or nested past the parser's stack)."""
    try:
        return request.get_json(silent=True)
    except RecursionError:
        return None


@functions_framework.cloud_event
def import_oneroster_bundle(cloud_event: CloudEvent) -> None:
    """Pub/Sub push of a Cloud Storage notification: a OneRoster CSV bundle was uploaded. Returning
    acknowledges it (imported, rejected with a recorded problem, or stale); raising asks for redelivery."""
    _authorize_push()
    envelope = cloud_event.data if isinstance(cloud_event.data, dict) else {}
    message = envelope.get("message") if isinstance(envelope.get("message"), dict) else {}
    attributes = message.get("attributes") or {}
    if attributes.get("eventType") != "OBJECT_FINALIZE":
        log.info("bundle notification %s ignored", attributes.get("eventType"))
        return
    result = wiring.bundle_importer().handle(
        attributes.get("bucketId", ""), attributes.get("objectId", ""), attributes.get("objectGeneration", "")
    )
    log.info(
        "oneroster bundle %s",
        result.outcome,
        extra=_fields(**{**redact_value(result.to_json()), "operation": "import_bundle"}),
    )
    if result.outcome == "rejected":
        log.error(
            "OneRoster bundle %s rejected: %s",
            result.bundle,
            redact(result.reason),
            extra=_fields(operation="import_bundle", outcome="rejected", bundle=result.bundle),
        )


def _authorize_push() -> None:
    """Answers 403 to a push without a valid OIDC token of our push subscription (PUSH_AUTH).

    flask.abort raises an HTTPException, which functions-framework leaves to Flask: the answer is
    403, not 500, and the message is neither read nor acknowledged."""
    from rostersync.adapters.push_auth import PushAuthError

    try:
        wiring.push_authenticator().check(flask.request.headers.get("Authorization"))
    except PushAuthError as exc:
        log.warning("push to %s rejected (403): %s", flask.request.path, exc)
        flask.abort(403)


@functions_framework.cloud_event
def apply_roster_event(cloud_event: CloudEvent) -> None:
    """Pub/Sub push of one roster change. Returning acknowledges it; raising asks for redelivery."""
    _authorize_push()
    envelope = cloud_event.data if isinstance(cloud_event.data, dict) else {}
    message = envelope.get("message") if isinstance(envelope.get("message"), dict) else {}
    try:
        data = base64.b64decode(message.get("data") or "", validate=True)
    except (binascii.Error, ValueError):
        data = b"\x00not base64"
    if wiring.applying_paused():
        # Held, not applied and not lost: kept like a dead letter until `rostersync resume`
        # publishes it again (acknowledging it here keeps Pub/Sub from dead-lettering it).
        held = wiring.dead_letter_recorder().record(
            str(message.get("messageId") or message.get("message_id") or cloud_event["id"] or ""),
            data,
            message.get("attributes") or {},
            publish_time=str(message.get("publishTime") or message.get("publish_time") or ""),
            held_while_paused=True,
        )
        log.warning(
            "sync paused: held message %s of section %s",
            held.message_id,
            held.section_id or "?",
            extra=_fields(operation="apply", outcome="held_while_paused", section_id=held.section_id),
        )
        return
    attributes = message.get("attributes") or {}
    outcome = wiring.applier().handle_message(data, attributes)
    changes = _change_count(data)
    log.log(
        logging.WARNING if outcome.status == "retry" else logging.INFO,
        "apply %s: %s (%d Classroom calls)",
        outcome.status,
        redact(outcome.detail)[:300],
        outcome.calls,
        extra=_fields(
            operation="apply",
            outcome=outcome.status,
            section_id=attributes.get("section_id"),
            event_id=attributes.get("event_id"),
            message_id=str(message.get("messageId") or message.get("message_id") or ""),
            calls=outcome.calls,
            changes=changes,
            calls_per_change=round(outcome.calls / changes, 3) if changes else None,
            problems=len(outcome.problems),
            latency_seconds=_seconds_since(message.get("publishTime") or message.get("publish_time")),
        ),
    )
    if not outcome.ack:
        raise RuntimeError(f"transient failure, asking Pub/Sub to redeliver: {redact(outcome.detail)[:300]}")


def _seconds_since(timestamp) -> float | None:
    """Seconds from an RFC 3339 time (the message's publishTime: when the poll published it) to now:
    the poll -> apply latency on the dashboard. None when there is no readable time."""
    try:
        then = dt.datetime.fromisoformat(str(timestamp).replace("Z", "+00:00"))
    except ValueError:
        return None
    if then.tzinfo is None:
        return None
    return round((dt.datetime.now(dt.UTC) - then).total_seconds(), 3)


def _change_count(data: bytes) -> int | None:
    """How many roster changes a message carried (for calls per change), None if it cannot be read."""
    from rostersync.domain.changes import InvalidChange, decode_message

    try:
        return len(decode_message(data))
    except InvalidChange:
        return None


@functions_framework.cloud_event
def record_dead_letter(cloud_event: CloudEvent) -> None:
    """Pub/Sub push from the dead-letter topic: records the change in dead_letters/{message id}.
    Returning acknowledges it; raising (Firestore down) asks for redelivery."""
    from rostersync.app.deadletters import decode_push_data

    _authorize_push()
    envelope = cloud_event.data if isinstance(cloud_event.data, dict) else {}
    message = envelope.get("message") if isinstance(envelope.get("message"), dict) else {}
    # functions-framework keeps only the message of a raw push; the attempt count is beside it.
    raw = _json_body(flask.request)
    attempt = raw.get("deliveryAttempt") if isinstance(raw, dict) else None
    outcome = wiring.dead_letter_recorder().record(
        str(message.get("messageId") or message.get("message_id") or cloud_event["id"] or ""),
        decode_push_data(message.get("data")),
        message.get("attributes") or {},
        delivery_attempt=attempt if isinstance(attempt, int) else None,
        publish_time=str(message.get("publishTime") or message.get("publish_time") or ""),
    )
    log.error(
        "dead letter %s %s: section %s event %s kind %s",
        outcome.message_id,
        "recorded" if outcome.created else "already recorded",
        outcome.section_id or "?",
        outcome.event_id or "?",
        outcome.kind or "?",
        extra=_fields(
            operation="record_dead_letter",
            outcome="recorded" if outcome.created else "already_recorded",
            message_id=outcome.message_id,
            section_id=outcome.section_id,
            event_id=outcome.event_id,
            kind=outcome.kind,
        ),
    )


@functions_framework.http
def reconcile_courses(request: flask.Request):
    """Compares linked courses with what we last set (teachers' changes become overrides), then
    applies the sections as Clever has them now. Body {"section_id": ...} for one, {} for all
    (paced; Cloud Scheduler calls it nightly)."""
    from rostersync.app.reconcile import reconcile_targets
    from rostersync.retry import Deadline

    def work():
        if wiring.applying_paused():
            log.warning("reconcile skipped: the sync is paused (rostersync resume)")
            return wiring.PausedRun()
        body = _json_body(request)
        if isinstance(body, dict) and body.get("guardians") is True:
            # Only the guardian part (GUARDIANS=invite): {"guardians": true}.
            return wiring.guardian_reconciler().reconcile_all(Deadline(wiring.settings().reconcile_time_budget_seconds))
        reconciler = wiring.reconciler()
        targets = reconcile_targets(body)
        if targets is None:
            deadline = Deadline(wiring.settings().reconcile_time_budget_seconds)
            result = reconciler.reconcile_all(deadline)
            if wiring.settings().guardians_on:
                # The guardians after the courses, within the same time budget.
                result.guardians = wiring.guardian_reconciler().reconcile_all(deadline).to_json()
            return result
        result = None
        for section_id in targets:
            result = reconciler.reconcile_section(section_id, result)
        return result

    return _run_scheduled("reconcile", work, "reconcile_courses")


@functions_framework.cloud_event
def record_classroom_notification(cloud_event: CloudEvent) -> None:
    """Pub/Sub push of one Classroom roster notification: a teacher's change becomes an override.
    Returning acknowledges it; raising asks for redelivery (a change our own link may not show yet)."""
    from rostersync.app.deadletters import decode_push_data
    from rostersync.app.notifications import InvalidNotification, decode_notification
    from rostersync.domain.rules import Problem

    _authorize_push()
    envelope = cloud_event.data if isinstance(cloud_event.data, dict) else {}
    message = envelope.get("message") if isinstance(envelope.get("message"), dict) else {}
    message_id = str(message.get("messageId") or message.get("message_id") or "")
    try:
        notification = decode_notification(
            decode_push_data(message.get("data")),
            message.get("attributes") or {},
            str(message.get("publishTime") or message.get("publish_time") or ""),
        )
    except InvalidNotification as exc:
        log.error("bad Classroom notification %s: %s", message_id, redact(exc))
        wiring.store().record_problems(
            [
                Problem(
                    kind="bad_notification",
                    section_id=f"classroom-notification-{message_id or 'unknown'}",  # one record per message
                    message=f"Classroom notification {message_id} could not be read: {exc}",
                    hint="Only Classroom should publish to the notifications topic",
                    reason=message_id,
                )
            ]
        )
        return
    result = wiring.notification_handler().handle(notification)
    log.info(
        "notification %s: %s %s",
        message_id,
        result.outcome.value,
        redact(result.detail)[:300],
        extra=_fields(operation="classroom_notification", outcome=result.outcome.value, message_id=message_id),
    )
    if not result.ack:
        raise RuntimeError(f"asking Pub/Sub to redeliver: {redact(result.detail)[:300]}")


@functions_framework.http
def renew_classroom_registration(request: flask.Request):
    """Called daily by Cloud Scheduler: extends the Classroom push-notification registration."""
    return _run_scheduled(
        "registration renewal", lambda: wiring.registration_renewer().renew(), "renew_classroom_registration"
    )


@functions_framework.http
def status_page(request: flask.Request):
    """The read-only status page (rostersync/admin/status_page.py): status, sections, problems and
    overrides with a search box, and a page per section. Behind IAP / IAM in the cloud."""
    from rostersync.admin.status_page import serve

    return serve(request)

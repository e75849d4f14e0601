"""Cloud Functions entry points. Thin: decode the request, call a handler, map the outcome."""

from __future__ import annotations

import base64
import binascii
import logging

import flask
import functions_framework
from cloudevents.http import CloudEvent
from rostersync import wiring
from rostersync.config import ConfigError
from rostersync.privacy import error_text, install_log_redaction, redact, redact_value

logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
# Every line through the handler is redacted (emails masked, URLs cut, tokens removed): see privacy.py.
install_log_redaction()
log = logging.getLogger("rostersync")


def _scheduler_refusal() -> tuple[dict, int] | None:
    """A 403 answer unless the caller is Cloud Scheduler's account (PUSH_AUTH, on top of Cloud
    Run's own check), else None."""
    from rostersync.push_auth import PushAuthError

    try:
        wiring.scheduler_authenticator().check(flask.request.headers.get("Authorization"))
    except PushAuthError as exc:
        log.warning("call to %s rejected (403): %s", flask.request.path, exc)
        return {"outcome": "forbidden"}, 403
    return None


def _run_scheduled(what: str, work):
    """A scheduled HTTP function's answer: 403 for anyone but the scheduler, 500 for missing
    configuration, 503 for a failure the next scheduled run retries, else 200 with the result."""
    try:
        refusal = _scheduler_refusal()
        if refusal:
            return refusal
        result = work()
    except ConfigError as exc:
        log.error("configuration: %s", exc)
        return {"outcome": "config_error", "error": str(exc)}, 500
    except Exception as exc:
        log.exception("%s failed: %s", what, error_text(exc))
        return {"outcome": "failed", "error": error_text(exc)}, 503
    log.info("%s %s", what, redact_value(result.to_json()))
    return result.to_json(), 200


@functions_framework.http
def poll_clever(request: flask.Request):
    """Called by Cloud Scheduler: one poll of Clever's events (or the first full read). A failed poll
    left the cursor before anything unpublished; the next scheduled poll retries."""
    return _run_scheduled("poll", lambda: wiring.poller().poll())


@functions_framework.http
def poll_oneroster(request: flask.Request):
    """Called by Cloud Scheduler: one read of the OneRoster provider (a delta, or every record when
    the body says {"full": true} or the last full read is older than ONEROSTER_FULL_READ_HOURS).
    Nothing is saved before every change is published; the next scheduled poll retries."""

    def work():
        # The body is read only once the caller is known to be the scheduler (_run_scheduled).
        body = _json_body(request)
        full = isinstance(body, dict) and body.get("full") is True
        return wiring.oneroster_poller().poll(force_full=full)

    return _run_scheduled("oneroster poll", work)


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
    log.info("oneroster bundle %s", redact_value(result.to_json()))
    if result.outcome == "rejected":
        log.error("OneRoster bundle %s rejected: %s", result.bundle, redact(result.reason))


def _authorize_push() -> None:
    """Answers 403 to a push without a valid OIDC token of our push subscription (PUSH_AUTH).

    flask.abort raises an HTTPException, which functions-framework leaves to Flask: the answer is
    403, not 500, and the message is neither read nor acknowledged."""
    from rostersync.push_auth import PushAuthError

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
        log.warning("sync paused: held message %s of section %s", held.message_id, held.section_id or "?")
        return
    outcome = wiring.applier().handle_message(data, message.get("attributes") or {})
    log.info("apply %s: %s (%d Classroom calls)", outcome.status, redact(outcome.detail)[:300], outcome.calls)
    if not outcome.ack:
        raise RuntimeError(f"transient failure, asking Pub/Sub to redeliver: {redact(outcome.detail)[:300]}")


@functions_framework.cloud_event
def record_dead_letter(cloud_event: CloudEvent) -> None:
    """Pub/Sub push from the dead-letter topic: records the change in dead_letters/{message id}.
    Returning acknowledges it; raising (Firestore down) asks for redelivery."""
    from rostersync.deadletters import decode_push_data

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
    )


@functions_framework.http
def reconcile_courses(request: flask.Request):
    """Compares linked courses with what we last set (teachers' changes become overrides), then
    applies the sections as Clever has them now. Body {"section_id": ...} for one, {} for all
    (paced; Cloud Scheduler calls it nightly)."""
    from rostersync.reconcile import reconcile_targets
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

    return _run_scheduled("reconcile", work)


@functions_framework.cloud_event
def record_classroom_notification(cloud_event: CloudEvent) -> None:
    """Pub/Sub push of one Classroom roster notification: a teacher's change becomes an override.
    Returning acknowledges it; raising asks for redelivery (a change our own link may not show yet)."""
    from rostersync.deadletters import decode_push_data
    from rostersync.notifications import InvalidNotification, decode_notification
    from rostersync.rules import Problem

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
    log.info("notification %s: %s %s", message_id, result.outcome.value, redact(result.detail)[:300])
    if not result.ack:
        raise RuntimeError(f"asking Pub/Sub to redeliver: {redact(result.detail)[:300]}")


@functions_framework.http
def renew_classroom_registration(request: flask.Request):
    """Called daily by Cloud Scheduler: extends the Classroom push-notification registration."""
    return _run_scheduled("registration renewal", lambda: wiring.registration_renewer().renew())


@functions_framework.http
def status_page(request: flask.Request):
    """The read-only status page (rostersync/status_page.py): status, sections, problems and
    overrides with a search box, and a page per section. Behind IAP / IAM in the cloud."""
    from rostersync.status_page import serve

    return serve(request)

"""Builds the handlers from the settings and the real adapters: the composition root.

Clients are made once per function instance and reused across invocations, as Cloud Functions
recommends; a unit of work gets its own deadline.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import threading

from rostersync.app.applier import Applier
from rostersync.app.poller import Poller
from rostersync.config import ConfigError, Settings, load_settings
from rostersync.domain.brake import BrakeSettings
from rostersync.retry import Deadline


@functools.cache
def settings() -> Settings:
    s = load_settings()
    logging.getLogger().setLevel(s.log_level.upper())
    return s


@functools.cache
def store():
    from rostersync.adapters.store import FirestoreStore

    s = settings()
    return FirestoreStore.connect(s.project, s.firestore_database, s.audit_retention_days, s.retention())


@functools.cache
def admin_store():
    """Reads for the administrator's views (the CLI and the status page)."""
    from rostersync.adapters.admin_store import AdminStore

    s = settings()
    return AdminStore.connect(s.project, s.firestore_database)


_per_thread = threading.local()


def applier() -> Applier:
    """One applier per thread: google-api-python-client's httplib2 transport is not thread-safe,
    and functions-framework serves concurrent requests on threads."""
    if getattr(_per_thread, "applier", None) is None:
        _per_thread.applier = _build_applier()
    return _per_thread.applier


@functools.cache
def _classroom_limiter():
    """One rate limit per instance, shared by its threads."""
    from rostersync.adapters.throttle import RateLimiter

    per_minute = settings().classroom_calls_per_minute
    return RateLimiter(per_minute) if per_minute > 0 else None


def _classroom():
    from rostersync.adapters.classroom import ClassroomAdapter, build_classroom_services

    s = settings()
    s.require_classroom()
    return ClassroomAdapter(
        build_classroom_services(s),
        s.classroom_api_endpoint,
        deadline_factory=lambda: Deadline(s.apply_time_budget_seconds),
        limiter=_classroom_limiter(),
    )


def _build_applier() -> Applier:
    classroom = _classroom()
    s = settings()
    return Applier(
        store(),
        classroom,
        s.section_deleted_action,
        guardians=_guardian_applier(classroom),
        removed_member_days=s.retain_removed_members_days,
    )


def _guardian_applier(classroom, links=None):
    """The guardian applier with GUARDIANS=invite (else None: guardian changes are refused as problems)."""
    from rostersync.app.guardian_applier import GuardianApplier

    s = settings()
    if not s.guardians_on:
        return None
    return GuardianApplier(links or store(), classroom, s.guardian_reinvite_days)


def guardian_reconciler(dry_run=None):
    """The guardian part of the reconcile pass (GUARDIANS=invite): every student's contacts as
    Clever has them now, with pending invitations read back from Classroom."""
    from rostersync.adapters.clever import CleverClient, CleverUserDirectory
    from rostersync.app.guardian_reconcile import GuardianReconciler

    s = settings()
    s.require_clever()
    classroom = _classroom()
    clever = CleverClient(s.clever_api_base, s.clever_token, s.clever_page_size)
    links = store()
    brake: BrakeSettings | None = _brake_settings()
    if dry_run is not None:
        from rostersync.admin.dryrun import DryRunClassroom, DryRunStore

        classroom, links = DryRunClassroom(classroom, dry_run), DryRunStore(links, dry_run)
        brake = None  # the plan shows every change; nothing is applied to hold back
    return GuardianReconciler(
        clever,
        CleverUserDirectory(clever),
        links,
        _guardian_applier(classroom, links),
        s.guardian_relationship_types,
        brake,
    )


def reconciler(dry_run=None):
    """A reconciler for one request: its own Classroom client, and Clever for the sections' state.
    With dry_run (a dryrun.PlanLog) its Classroom and Firestore writes are only recorded there."""
    from rostersync.adapters.clever import CleverClient, CleverUserDirectory
    from rostersync.app.poller import BEGINNING
    from rostersync.app.reconcile import Reconciler
    from rostersync.domain.changes import RosterChange
    from rostersync.domain.sources.clever_events import course_wanted, section_user_ids

    s = settings()
    s.require_clever()
    classroom = _classroom()
    # The reconcile pass's budget bounds its Clever calls' timeouts (retry.Deadline.call_timeout).
    clever = CleverClient(
        s.clever_api_base, s.clever_token, s.clever_page_size, deadline=Deadline(s.reconcile_time_budget_seconds)
    )
    users = CleverUserDirectory(clever)

    def current_section(section_id: str) -> RosterChange | None:
        # The cursor first, the section second: the section read then is at least as new as every
        # event the cursor covers, so labelling it with the cursor never claims more than it holds.
        # (Read the other way round, a change published between the two reads would be covered by
        # the label and missing from the content, and an equal event id passes the staleness check.)
        cursor = store().load_cursor()
        marker = (cursor.last_event_id if cursor else "") or BEGINNING
        section = clever.section(section_id)
        if section is None:
            return None
        return course_wanted(section, marker, "", users.emails(section_user_ids(section)))

    @functools.cache
    def term_over(term_id: str) -> bool:
        if s.term_end_action != "archive":
            return False
        term = clever.term(term_id)
        end = (term or {}).get("end_date")
        try:
            ended = dt.date.fromisoformat(str(end)[:10])
        except ValueError:
            return False  # no (readable) end date: never archived for its term
        return (dt.datetime.now(dt.UTC).date() - ended).days >= s.term_archive_after_days

    links = store()
    if dry_run is not None:
        from rostersync.admin.dryrun import DryRunClassroom, DryRunStore

        classroom, links = DryRunClassroom(classroom, dry_run), DryRunStore(links, dry_run)
    return Reconciler(
        links,
        classroom,
        Applier(links, classroom, s.section_deleted_action, removed_member_days=s.retain_removed_members_days),
        current_section,
        reads_per_minute=s.reconcile_reads_per_minute,
        term_over=term_over,
    )


def clever_section_ids() -> list[str]:
    """Every section Clever has for the district (for `rostersync plan`)."""
    from rostersync.adapters.clever import CleverClient

    s = settings()
    s.require_clever()
    clever = CleverClient(s.clever_api_base, s.clever_token, s.clever_page_size)
    return [str((item.get("data") or item).get("id")) for page in clever.section_pages() for item in page]


@functools.cache
def publisher():
    from rostersync.adapters.bus import PubSubPublisher

    s = settings()
    return PubSubPublisher(s.project, s.roster_events_topic, on_too_large=_keep_too_large)


def _keep_too_large(refused, data: bytes) -> None:
    """A change too large for any message: kept as a dead letter (visible, replayable once the
    limit allows), never dropped. Its id is made from the change, so a poll that reads it again
    finds it recorded already."""
    from rostersync.app.deadletters import TOO_LARGE_REASON
    from rostersync.domain.docids import doc_id

    change = refused.change
    dead_letter_recorder().record(
        doc_id(f"too-large-{change.section_id}-{change.event_id}-{change.kind.value}"),
        data,
        change.attributes(),
        reason=TOO_LARGE_REASON,
    )


class PausedRun:
    """A scheduled run that did nothing because an administrator paused the sync."""

    def to_json(self) -> dict:
        return {"outcome": "paused", "detail": "sync_state/clever.paused is set: rostersync resume"}


_pause_cache = {"checked": -1e9, "paused": False}


def applying_paused() -> bool:
    """Whether an administrator paused the sync, read at most every PAUSE_CHECK_SECONDS per
    instance: the appliers learn it without a Firestore read per message."""
    import time

    from rostersync.adapters.control import is_paused

    now = time.monotonic()
    if now - _pause_cache["checked"] >= settings().pause_check_seconds:
        _pause_cache["paused"] = is_paused(admin_store().client)
        _pause_cache["checked"] = now
    return bool(_pause_cache["paused"])


def poller() -> Poller:
    """A new poller each invocation: its Clever client carries this poll's deadline and user cache."""
    from rostersync.adapters.clever import CleverClient, CleverUserDirectory

    s = settings()
    s.require_clever()
    deadline = Deadline(s.poll_time_budget_seconds)
    clever = CleverClient(s.clever_api_base, s.clever_token, s.clever_page_size, deadline=deadline)
    return Poller(
        clever,
        CleverUserDirectory(clever),
        store(),
        publisher(),
        deadline,
        _brake_settings(),
        guardian_types=s.guardian_relationship_types if s.guardians_on else (),
        cursor_max_age=dt.timedelta(days=s.clever_cursor_max_age_days),
    )


def own_audiences(audiences: tuple[str, ...]) -> tuple[str, ...]:
    """In Cloud Run, only this function's own audience (https://<K_SERVICE>-<number>.<region>.run.app)
    of the deployment's list: a token minted for another function is refused here. Elsewhere all."""
    from urllib.parse import urlparse

    from rostersync.config import cloud_run_service

    service = cloud_run_service()
    if not service:
        return audiences
    own = tuple(a for a in audiences if (urlparse(a).hostname or "").startswith(f"{service}-"))
    if not own:
        raise ConfigError(f"none of the configured audiences is this function's ({service}): it accepts nothing")
    return own


@functools.cache
def push_authenticator():
    """Checks the OIDC token of every Pub/Sub push (PUSH_AUTH, PUSH_SERVICE_ACCOUNT, PUSH_AUDIENCE)."""
    from rostersync.adapters.push_auth import PushAuthenticator

    s = settings()
    s.require_push_auth()
    return PushAuthenticator(s.push_auth, s.push_service_account, own_audiences(s.push_audiences))


@functools.cache
def scheduler_authenticator():
    """Checks the OIDC token Cloud Scheduler sends to the scheduled HTTP functions."""
    from rostersync.adapters.push_auth import PushAuthenticator

    s = settings()
    s.require_scheduler_auth()
    return PushAuthenticator(s.push_auth, s.scheduler_service_account, own_audiences(s.scheduler_audiences))


@functools.cache
def dead_letter_store():
    from rostersync.adapters.deadletter_store import FirestoreDeadLetterStore

    s = settings()
    return FirestoreDeadLetterStore.connect(s.project, s.firestore_database, s.retain_replayed_dead_letters_days)


def dead_letter_recorder():
    from rostersync.app.deadletters import DeadLetterRecorder

    return DeadLetterRecorder(dead_letter_store())


def notification_handler():
    """Classroom push notifications -> overrides (notifications.py), with the applier's Classroom access."""
    from rostersync.app.notifications import NotificationHandler

    registration = str(store().load_registration().get("registration_id") or "")  # one read
    return NotificationHandler(
        store(), _classroom(), settings().notification_grace_seconds, registration_id=registration
    )


def _push_grant(s: Settings) -> dict:
    """The administrator's grant (authorized-user JSON) from Secret Manager."""
    import json

    from rostersync.adapters.secret_store import SecretMissingError, SecretStore
    from rostersync.config import ConfigError

    secret = s.require_push_grant_secret()
    try:
        grant = json.loads(SecretStore(s.secret_manager_api_endpoint).access_latest(secret))
    except SecretMissingError:
        raise ConfigError(f"{secret} has no version: run `rostersync consent-notifications` once") from None
    except ValueError:
        grant = None
    if not isinstance(grant, dict) or not all(grant.get(k) for k in ("client_id", "client_secret", "refresh_token")):
        raise ConfigError(f"{secret} does not hold an authorized-user grant: run `rostersync consent-notifications`")
    return grant


def registration_renewer():
    """Renews the push-notification registration with the administrator's OAuth grant."""
    from google.oauth2.credentials import Credentials

    from rostersync.adapters.classroom import ClassroomAdapter, build_classroom_service
    from rostersync.app.push_registration import PUSH_SCOPES, RegistrationRenewer

    s = settings()
    grant = _push_grant(s)
    # Not from_authorized_user_info, which always uses Google's token endpoint: the grant names the
    # endpoint that issued it (the consent command records it; the simulator's in tests).
    credentials = Credentials(
        None,
        refresh_token=grant["refresh_token"],
        token_uri=grant.get("token_uri") or "https://oauth2.googleapis.com/token",
        client_id=grant["client_id"],
        client_secret=grant["client_secret"],
        scopes=PUSH_SCOPES,
    )
    classroom = ClassroomAdapter(build_classroom_service(s, credentials), s.classroom_api_endpoint)
    return RegistrationRenewer(classroom, store(), s.classroom_notifications_topic_path)


def oneroster_poller():
    """A new OneRoster poller each invocation: its client carries this poll's deadline (ROSTER_SOURCE
    must be oneroster, so a district never has two sources publishing for the same courses)."""
    from rostersync.adapters.oneroster import OneRosterClient
    from rostersync.adapters.oneroster_store import OneRosterFirestoreStore
    from rostersync.app.oneroster_poller import OneRosterPoller

    s = settings()
    if s.roster_source != "oneroster":
        raise ConfigError(f"ROSTER_SOURCE is {s.roster_source!r}: set it to oneroster to poll OneRoster")
    s.require_oneroster()
    client = OneRosterClient(
        s.oneroster_api_base,
        s.oneroster_version,
        s.oneroster_client_id,
        s.oneroster_client_secret,
        s.oneroster_token_url,
        s.oneroster_page_size,
        deadline=Deadline(s.poll_time_budget_seconds),
        auth=s.oneroster_auth,
        scope=s.oneroster_scope,
        with_guardians=s.guardians_on,
    )
    return OneRosterPoller(
        client,
        OneRosterFirestoreStore.connect(s.project, s.firestore_database, s.retention()),
        _braked_publisher(),
        full_read_every=dt.timedelta(hours=s.oneroster_full_read_hours),
        guardian_types=s.guardian_relationship_types if s.guardians_on else (),
        guardian_students=store().guardian_student_ids,
    )


def _brake_settings() -> BrakeSettings:
    s = settings()
    return BrakeSettings(
        section_share=s.brake_section_percent / 100,
        total_share=s.brake_total_percent / 100,
        max_archives=s.brake_max_archives,
        min_removals=s.brake_min_removals,
        total_min_removals=s.brake_total_min_removals,
    )


def _braked_publisher():
    """OneRoster's changes through the mass-change brake: held ones wait in held_batches."""
    from rostersync.domain.brake import BrakedPublisher

    return BrakedPublisher(publisher(), _brake_settings(), store())


def bundle_importer():
    """Imports OneRoster CSV bundles from Cloud Storage (ROSTER_SOURCE must be oneroster)."""
    from rostersync.adapters.oneroster_store import OneRosterFirestoreStore
    from rostersync.adapters.storage import StorageReader
    from rostersync.app.oneroster_bundles import BundleImporter
    from rostersync.config import _is_loopback

    s = settings()
    if s.roster_source != "oneroster":
        raise ConfigError(f"ROSTER_SOURCE is {s.roster_source!r}: set it to oneroster to import OneRoster bundles")
    credentials = None
    if not _is_loopback(s.storage_api_endpoint):
        import google.auth

        credentials, _ = google.auth.default(scopes=["https://www.googleapis.com/auth/devstorage.read_only"])
    return BundleImporter(
        StorageReader(s.storage_api_endpoint, credentials),
        OneRosterFirestoreStore.connect(s.project, s.firestore_database, s.retention()),
        _braked_publisher(),
        guardian_types=s.guardian_relationship_types if s.guardians_on else (),
        guardian_students=store().guardian_student_ids,
    )

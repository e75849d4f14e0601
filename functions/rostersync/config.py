"""Every setting rostersync reads, in one place.

Settings come from environment variables (docs/configuration.md lists them). They are read once per process
into a frozen `Settings`; handlers receive it instead of reading the environment themselves, so a
test can build one directly.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from urllib.parse import urlparse

DEFAULT_CLEVER_API_BASE = "https://api.clever.com"
DEFAULT_CLASSROOM_API_ENDPOINT = "https://classroom.googleapis.com/"
DEFAULT_ROSTER_EVENTS_TOPIC = "roster-events"
DEFAULT_CLASSROOM_NOTIFICATIONS_TOPIC = "classroom-roster-notifications"
DEFAULT_SECRET_MANAGER_API_ENDPOINT = "https://secretmanager.googleapis.com/"


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    project: str
    clever_api_base: str
    clever_token: str
    classroom_api_endpoint: str
    admin_subject: str
    roster_events_topic: str
    firestore_database: str
    clever_page_size: int
    poll_time_budget_seconds: float
    apply_time_budget_seconds: float
    section_deleted_action: str
    log_level: str
    reconcile_reads_per_minute: int
    reconcile_time_budget_seconds: float
    # The most Classroom calls one function instance makes a minute (0: no limit of our own).
    classroom_calls_per_minute: int
    # The mass-change brake (brake.py): percentages and counts over which one poll's removals wait
    # (defaults justified in docs/clever-feed.md).
    brake_section_percent: int
    brake_total_percent: int
    brake_max_archives: int
    brake_min_removals: int
    # A section whose term ended this many days ago gets its course archived by the reconcile
    # pass (TERM_END_ACTION=archive), or left as it is (keep).
    term_end_action: str = "archive"
    term_archive_after_days: int = 14
    # Who may push to the Pub/Sub-fed functions (push_auth.py): "oidc" or "off" (emulator only).
    push_auth: str = "oidc"
    push_service_account: str = ""
    push_audiences: tuple[str, ...] = ()
    # Who may call the scheduled HTTP functions (poll_clever, reconcile_courses), under PUSH_AUTH.
    scheduler_service_account: str = ""
    scheduler_audiences: tuple[str, ...] = ()
    # Days the audit trail (Firestore audit/) keeps a record; a TTL policy on expire_at deletes it.
    audit_retention_days: int = 90
    # How long an applier instance trusts its last look at the pause flag (control.py).
    pause_check_seconds: int = 30
    # Classroom push notifications (notifications.py): the topic Classroom publishes to, how long an
    # unexplained notification waits for our own link to catch up, and the Secret Manager secret
    # holding the administrator's OAuth grant (`rostersync consent-notifications` adds its versions).
    classroom_notifications_topic: str = DEFAULT_CLASSROOM_NOTIFICATIONS_TOPIC
    notification_grace_seconds: int = 300
    classroom_push_grant_secret: str = ""
    secret_manager_api_endpoint: str = DEFAULT_SECRET_MANAGER_API_ENDPOINT

    @property
    def classroom_notifications_topic_path(self) -> str:
        return f"projects/{self.project}/topics/{self.classroom_notifications_topic}"

    def require_push_grant_secret(self) -> str:
        if not self.classroom_push_grant_secret:
            raise ConfigError(
                "CLASSROOM_PUSH_GRANT_SECRET is not set: the secret (projects/P/secrets/S) that "
                "`rostersync consent-notifications` stores the administrator's grant in"
            )
        return self.classroom_push_grant_secret

    # Where rosters come from: "clever" (poll_clever) or "oneroster" (poll_oneroster, CSV bundles).
    roster_source: str = "clever"
    oneroster_api_base: str = ""
    oneroster_version: str = "1.2"
    oneroster_client_id: str = ""
    oneroster_client_secret: str = ""
    oneroster_token_url: str = ""
    oneroster_auth: str = "oauth2"  # or "oauth1": OAuth 1.0a request signing (some 1.1 providers)
    oneroster_page_size: int = 1000
    oneroster_full_read_hours: int = 24
    # Cloud Storage's JSON API, where CSV bundles are read (a loopback URL: the simulator, anonymously).
    storage_api_endpoint: str = "https://storage.googleapis.com/"
    # OneRoster against real providers (issue 16): the token's scope. None: the version's default
    # (adapters/oneroster.DEFAULT_SCOPES); "" (ONEROSTER_SCOPE=none): no scope asked for.
    oneroster_scope: str | None = None
    # Guardians (guardians.py, docs/guardians.md): GUARDIANS=invite invites each student's qualifying
    # contacts to Classroom's guardian summaries (off: nothing about guardians is read or sent);
    # which relationship types count; how often an expired invitation may be sent again.
    guardians: str = "off"
    guardian_relationship_types: tuple[str, ...] = ("Parent/Guardian", "Primary")
    guardian_reinvite_days: int = 30

    @property
    def guardians_on(self) -> bool:
        return self.guardians == "invite"

    # The Clever feed (issue 12 part B, docs/clever-feed.md). Clever keeps events 30 days: a cursor
    # whose feed was last read to its end longer ago than this is given up for a re-bootstrap
    # (30 days less 2 for clock skew, Clever's unpublished exact cut-off and a poll in progress).
    clever_cursor_max_age_days: int = 28
    # The district-wide brake trips only from this many removals in one poll (and above
    # BRAKE_TOTAL_PERCENT): Entra ID Connect's default deletion threshold is 500 objects.
    brake_total_min_removals: int = 500

    # Retention (privacy, docs/privacy.md): days after which a Firestore TTL policy deletes a closed
    # problem, a replayed dead letter, a decided held batch and a deleted OneRoster class's state,
    # and after which the applier prunes a member Clever removed from the section's link.
    retain_closed_problems_days: int = 30
    retain_replayed_dead_letters_days: int = 30
    retain_decided_held_batches_days: int = 30
    retain_removed_members_days: int = 60
    retain_deleted_classes_days: int = 30
    # Least privilege (privacy): the account whose client id holds domain-wide delegation; the
    # calling function's own account signs its JWT (signJwt only). Empty: the runtime account itself.
    classroom_delegate_account: str = ""
    # The status page verifies IAP's signed header (iap_auth.py) for this audience, with the keys at
    # iap_keys_url. Empty audience: refused in Cloud Run (K_SERVICE), open on a workstation.
    iap_audience: str = ""
    iap_keys_url: str = "https://www.gstatic.com/iap/verify/public_key-jwk"

    def retention(self):
        from rostersync.domain.retention import Retention

        return Retention(
            closed_problem_days=self.retain_closed_problems_days,
            replayed_dead_letter_days=self.retain_replayed_dead_letters_days,
            decided_held_batch_days=self.retain_decided_held_batches_days,
            removed_member_days=self.retain_removed_members_days,
            deleted_class_days=self.retain_deleted_classes_days,
            audit_days=self.audit_retention_days,
        )

    # The status page (issue 18): the district's time zone, in which it shows times (IANA name).
    status_page_timezone: str = "UTC"

    @property
    def classroom_is_local(self) -> bool:
        """A loopback Classroom endpoint is our simulator: no Google credentials are used."""
        return _is_loopback(self.classroom_api_endpoint)

    def require_clever(self) -> None:
        if not self.clever_token:
            raise ConfigError("CLEVER_TOKEN is not set: the poller needs the Clever district app token")

    def require_oneroster(self) -> None:
        missing = [
            name
            for name, value in (
                ("ONEROSTER_API_BASE", self.oneroster_api_base),
                ("ONEROSTER_CLIENT_ID", self.oneroster_client_id),
                ("ONEROSTER_CLIENT_SECRET", self.oneroster_client_secret),
                # A signing (oauth1) provider has no token endpoint.
                ("ONEROSTER_TOKEN_URL", self.oneroster_token_url or self.oneroster_auth == "oauth1"),
            )
            if not value
        ]
        if missing:
            raise ConfigError(f"{', '.join(missing)} not set: the OneRoster poller needs the provider's API and keys")

    def require_classroom(self) -> None:
        if not self.classroom_is_local and not self.admin_subject:
            raise ConfigError(
                "ADMIN_SUBJECT is not set: the Workspace administrator the service account acts as "
                "through domain-wide delegation"
            )

    def require_scheduler_auth(self) -> None:
        if self.push_auth == "oidc" and not self.scheduler_service_account:
            raise ConfigError("SCHEDULER_SERVICE_ACCOUNT is not set: the account Cloud Scheduler calls us as")
        if self.push_auth == "oidc" and not self.scheduler_audiences:
            raise ConfigError("SCHEDULER_AUDIENCE is not set: the audience of the scheduler's OIDC tokens")

    def require_push_auth(self) -> None:
        """The push endpoints check OIDC tokens against these; without them they accept nothing."""
        if self.push_auth == "oidc" and not self.push_service_account:
            raise ConfigError("PUSH_SERVICE_ACCOUNT is not set: the service account Pub/Sub signs pushes as")
        if self.push_auth == "oidc" and not self.push_audiences:
            raise ConfigError("PUSH_AUDIENCE is not set: the audience of the push subscriptions' OIDC tokens")


def _is_loopback(url: str) -> bool:
    host = (urlparse(url).hostname or "").lower()
    return host in ("localhost", "::1") or host.startswith("127.")


def _int(name: str, default: int, low: int, high: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise ConfigError(f"{name}={raw!r} is not a whole number") from exc
    if not low <= value <= high:
        raise ConfigError(f"{name}={value} is outside {low}..{high}")
    return value


def _choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    value = os.environ.get(name, "").strip().lower() or default
    if value not in choices:
        raise ConfigError(f"{name}={value!r} must be one of {', '.join(choices)}")
    return value


def cloud_run_service() -> str:
    """The Cloud Run service (the function) we run as: K_SERVICE, set by the platform; "" elsewhere."""
    return os.environ.get("K_SERVICE", "").strip()


def in_cloud_run() -> bool:
    """Cloud Run (and so every deployed function) sets K_SERVICE; a workstation or a test does not."""
    return bool(cloud_run_service())


def _push_auth() -> str:
    mode = _choice("PUSH_AUTH", "oidc", ("oidc", "off"))
    if mode == "off" and in_cloud_run():
        # Cloud Run (and so Cloud Functions) sets K_SERVICE: an emulator variable left in a
        # deployed function's environment must not switch the check off.
        raise ConfigError("PUSH_AUTH=off is refused in Cloud Run (K_SERVICE is set): every push needs an OIDC token")
    if mode == "off" and not os.environ.get("PUBSUB_EMULATOR_HOST", "").strip():
        raise ConfigError(
            "PUSH_AUTH=off is only allowed with the local Pub/Sub emulator (PUBSUB_EMULATOR_HOST set): "
            "in the cloud every push must carry a valid OIDC token"
        )
    return mode


def load_settings() -> Settings:
    """Reads the environment; raises ConfigError naming the first bad variable."""
    endpoint = os.environ.get("CLASSROOM_API_ENDPOINT", "").strip() or DEFAULT_CLASSROOM_API_ENDPOINT
    if not endpoint.endswith("/"):
        # google-api-python-client joins "v1/courses" onto the endpoint as given.
        endpoint += "/"
    return Settings(
        project=os.environ.get("GOOGLE_CLOUD_PROJECT", "").strip() or "rostersync-local",
        clever_api_base=(os.environ.get("CLEVER_API_BASE", "").strip() or DEFAULT_CLEVER_API_BASE).rstrip("/"),
        clever_token=os.environ.get("CLEVER_TOKEN", "").strip(),
        classroom_api_endpoint=endpoint,
        admin_subject=os.environ.get("ADMIN_SUBJECT", "").strip(),
        roster_events_topic=os.environ.get("ROSTER_EVENTS_TOPIC", "").strip() or DEFAULT_ROSTER_EVENTS_TOPIC,
        firestore_database=os.environ.get("FIRESTORE_DATABASE", "").strip() or "(default)",
        # Clever allows up to 10000 a page; 1000 keeps a page of sections well inside a small function.
        clever_page_size=_int("CLEVER_PAGE_SIZE", 1000, 1, 10000),
        # Stay under the function timeout so the cursor is saved before the platform kills us.
        poll_time_budget_seconds=float(_int("POLL_TIME_BUDGET_SECONDS", 480, 5, 3600)),
        apply_time_budget_seconds=float(_int("APPLY_TIME_BUDGET_SECONDS", 50, 1, 600)),
        section_deleted_action=_choice("SECTION_DELETED_ACTION", "archive", ("archive", "keep")),
        log_level=_choice("LOG_LEVEL", "info", ("debug", "info", "warning", "error")),
        term_end_action=_choice("TERM_END_ACTION", "archive", ("archive", "keep")),
        term_archive_after_days=_int("TERM_ARCHIVE_AFTER_DAYS", 14, 0, 3650),
        # A quarter of the 1,200 a minute Classroom allows the admin we act as: the pass never
        # starves the applier.
        reconcile_reads_per_minute=_int("RECONCILE_READS_PER_MINUTE", 300, 1, 3000),
        reconcile_time_budget_seconds=float(_int("RECONCILE_TIME_BUDGET_SECONDS", 3300, 5, 3600)),
        # 1,200 a minute is Classroom's quota for the one admin we act as; terraform divides the
        # ceiling (admins x 1,200, at most the project's 3,000) among the applier's instances.
        classroom_calls_per_minute=_int("CLASSROOM_CALLS_PER_MINUTE", 1200, 0, 100_000),
        brake_section_percent=_int("BRAKE_SECTION_PERCENT", 50, 1, 100),
        brake_total_percent=_int("BRAKE_TOTAL_PERCENT", 5, 1, 100),
        brake_max_archives=_int("BRAKE_MAX_ARCHIVES", 20, 0, 1_000_000),
        brake_min_removals=_int("BRAKE_MIN_REMOVALS", 5, 1, 1_000_000),
        push_auth=_push_auth(),
        push_service_account=os.environ.get("PUSH_SERVICE_ACCOUNT", "").strip(),
        push_audiences=tuple(a.strip() for a in os.environ.get("PUSH_AUDIENCE", "").split(",") if a.strip()),
        scheduler_service_account=os.environ.get("SCHEDULER_SERVICE_ACCOUNT", "").strip(),
        scheduler_audiences=tuple(a.strip() for a in os.environ.get("SCHEDULER_AUDIENCE", "").split(",") if a.strip()),
        audit_retention_days=_int("AUDIT_RETENTION_DAYS", 90, 1, 3650),
        pause_check_seconds=_int("PAUSE_CHECK_SECONDS", 30, 0, 3600),
        classroom_notifications_topic=os.environ.get("CLASSROOM_NOTIFICATIONS_TOPIC", "").strip()
        or DEFAULT_CLASSROOM_NOTIFICATIONS_TOPIC,
        # Longer than an applier's time budget: by then our own writes are committed to the link.
        notification_grace_seconds=_int("NOTIFICATION_GRACE_SECONDS", 300, 0, 86_400),
        classroom_push_grant_secret=os.environ.get("CLASSROOM_PUSH_GRANT_SECRET", "").strip(),
        secret_manager_api_endpoint=os.environ.get("SECRET_MANAGER_API_ENDPOINT", "").strip()
        or DEFAULT_SECRET_MANAGER_API_ENDPOINT,
        roster_source=_choice("ROSTER_SOURCE", "clever", ("clever", "oneroster")),
        oneroster_api_base=os.environ.get("ONEROSTER_API_BASE", "").strip().rstrip("/"),
        oneroster_version=_choice("ONEROSTER_VERSION", "1.2", ("1.1", "1.2")),
        oneroster_client_id=os.environ.get("ONEROSTER_CLIENT_ID", "").strip(),
        oneroster_client_secret=os.environ.get("ONEROSTER_CLIENT_SECRET", "").strip(),
        oneroster_token_url=os.environ.get("ONEROSTER_TOKEN_URL", "").strip(),
        oneroster_auth=_choice("ONEROSTER_AUTH", "oauth2", ("oauth2", "oauth1")),
        oneroster_page_size=_int("ONEROSTER_PAGE_SIZE", 1000, 1, 10000),
        oneroster_full_read_hours=_int("ONEROSTER_FULL_READ_HOURS", 24, 1, 24 * 30),
        storage_api_endpoint=os.environ.get("STORAGE_API_ENDPOINT", "").strip() or "https://storage.googleapis.com/",
        # OneRoster against real providers (issue 16).
        oneroster_scope=_oneroster_scope(),
        # Guardians
        guardians=_choice("GUARDIANS", "off", ("off", "invite")),
        guardian_relationship_types=_types("GUARDIAN_RELATIONSHIP_TYPES", ("Parent/Guardian", "Primary")),
        guardian_reinvite_days=_int("GUARDIAN_REINVITE_DAYS", 30, 0, 3650),
        # The Clever feed (issue 12 part B): see the Settings fields.
        clever_cursor_max_age_days=_int("CLEVER_CURSOR_MAX_AGE_DAYS", 28, 1, 29),
        brake_total_min_removals=_int("BRAKE_TOTAL_MIN_REMOVALS", 500, 1, 10_000_000),
        # Retention (privacy). Removed members: longer than Clever's 30 days of events (retention.py).
        retain_closed_problems_days=_int("RETAIN_CLOSED_PROBLEMS_DAYS", 30, 1, 3650),
        retain_replayed_dead_letters_days=_int("RETAIN_REPLAYED_DEAD_LETTERS_DAYS", 30, 1, 3650),
        retain_decided_held_batches_days=_int("RETAIN_DECIDED_HELD_BATCHES_DAYS", 30, 1, 3650),
        retain_removed_members_days=_int("RETAIN_REMOVED_MEMBERS_DAYS", 60, 31, 3650),
        retain_deleted_classes_days=_int("RETAIN_DELETED_CLASSES_DAYS", 30, 1, 3650),
        classroom_delegate_account=os.environ.get("CLASSROOM_DELEGATE_ACCOUNT", "").strip(),
        iap_audience=os.environ.get("IAP_AUDIENCE", "").strip(),
        iap_keys_url=os.environ.get("IAP_KEYS_URL", "").strip() or "https://www.gstatic.com/iap/verify/public_key-jwk",
        # The status page (issue 18)
        status_page_timezone=_timezone("STATUS_PAGE_TIMEZONE"),
    )


def _oneroster_scope() -> str | None:
    """ONEROSTER_SCOPE: space-separated scopes; unset or empty for the version's default, `none`
    for a token request without any scope (a provider that refuses unknown scopes)."""
    raw = " ".join(os.environ.get("ONEROSTER_SCOPE", "").split())
    if not raw:
        return None
    return "" if raw.lower() == "none" else raw


def _types(name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    """A comma-separated list (Clever's relationship types contain "/" and spaces, not commas)."""
    raw = os.environ.get(name, "")
    values = tuple(v.strip() for v in raw.split(",") if v.strip())
    if raw.strip() and not values:
        raise ConfigError(f"{name}={raw!r} names no relationship type")
    return values or default


def _timezone(name: str) -> str:
    import zoneinfo

    value = os.environ.get(name, "").strip() or "UTC"
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"{name}={value!r} is not a time zone (an IANA name such as America/Chicago)") from None
    return value

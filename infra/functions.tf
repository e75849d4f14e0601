# The Cloud Functions (2nd gen), one resource per entry point in functions/main.py, all built from
# functions/ (storage.tf) with the Python 3.11 runtime, each running as its own service account (iam.tf).
#
# Sizing, against the Google Classroom quota (1,200 queries/minute per impersonated user, and every
# call is made as ADMIN_SUBJECT; 3,000 queries/minute per project):
# - The applier handles one roster event per instance at a time (concurrency 1: the Classroom
#   client's transport is not thread-safe anyway) and at most apply_max_instances (10) instances.
#   One event is a few sequential Classroom calls of roughly 0.3-1 s each, so one instance makes
#   about 60-200 calls a minute and ten make about 600-2,000: around the per-user quota, and below
#   the project's 3,000. Short bursts above it get 429s, which the Classroom adapter retries with
#   jittered backoff inside the event's time budget, and Pub/Sub redelivers with backoff after
#   that; raising apply_max_instances would only buy more 429s. Pub/Sub backs off itself when the
#   function answers 429 because all instances are busy.
# - 256Mi is plenty for one event at a time; timeout 60 s leaves 10 s over the 50 s
#   APPLY_TIME_BUDGET_SECONDS for the answer to reach Pub/Sub.
# - The poller must never run twice at once (one cursor): max 1 instance, concurrency 1. Its
#   timeout (540 s) leaves a minute over the 480 s POLL_TIME_BUDGET_SECONDS to save the cursor.

locals {
  # Every environment variable functions/rostersync/config.py reads, except CLEVER_TOKEN, which
  # comes from Secret Manager (secret_environment_variables below), and only to the poller.
  function_env = {
    GOOGLE_CLOUD_PROJECT          = var.project_id
    CLEVER_API_BASE               = var.clever_api_base
    CLASSROOM_API_ENDPOINT        = var.classroom_api_endpoint
    ADMIN_SUBJECT                 = var.admin_subject
    ROSTER_EVENTS_TOPIC           = google_pubsub_topic.roster_events.name
    FIRESTORE_DATABASE            = google_firestore_database.rostersync.name
    CLEVER_PAGE_SIZE              = tostring(var.clever_page_size)
    POLL_TIME_BUDGET_SECONDS      = tostring(var.poll_time_budget_seconds)
    APPLY_TIME_BUDGET_SECONDS     = tostring(var.apply_time_budget_seconds)
    SECTION_DELETED_ACTION        = var.section_deleted_action
    LOG_LEVEL                     = var.log_level
    RECONCILE_READS_PER_MINUTE    = tostring(var.reconcile_reads_per_minute)
    TERM_END_ACTION               = var.term_end_action
    TERM_ARCHIVE_AFTER_DAYS       = tostring(var.term_archive_after_days)
    CLASSROOM_CALLS_PER_MINUTE    = tostring(local.classroom_calls_per_instance)
    BRAKE_SECTION_PERCENT         = tostring(var.brake_section_percent)
    BRAKE_TOTAL_PERCENT           = tostring(var.brake_total_percent)
    BRAKE_MAX_ARCHIVES            = tostring(var.brake_max_archives)
    BRAKE_MIN_REMOVALS            = tostring(var.brake_min_removals)
    BRAKE_TOTAL_MIN_REMOVALS      = tostring(var.brake_total_min_removals)
    CLEVER_CURSOR_MAX_AGE_DAYS    = tostring(var.clever_cursor_max_age_days)
    RECONCILE_TIME_BUDGET_SECONDS = tostring(var.reconcile_time_budget_seconds)
    AUDIT_RETENTION_DAYS          = tostring(var.audit_retention_days)
    PAUSE_CHECK_SECONDS           = "30"
    CLASSROOM_NOTIFICATIONS_TOPIC = google_pubsub_topic.classroom_notifications.name
    NOTIFICATION_GRACE_SECONDS    = tostring(var.notification_grace_seconds)
    CLASSROOM_PUSH_GRANT_SECRET   = google_secret_manager_secret.classroom_push_grant.id
    SECRET_MANAGER_API_ENDPOINT   = "https://secretmanager.googleapis.com/"
    # Pushes must carry a Google-signed OIDC token of the push account for one of these audiences.
    PUSH_AUTH            = "oidc"
    PUSH_SERVICE_ACCOUNT = google_service_account.pubsub_push.email
    PUSH_AUDIENCE        = join(",", values(local.push_urls))
    # Cloud Scheduler's calls must carry an OIDC token of the scheduler account, for its job's URL.
    SCHEDULER_SERVICE_ACCOUNT = google_service_account.scheduler.email
    SCHEDULER_AUDIENCE        = join(",", values(local.scheduled_urls))
    # The OneRoster source (oneroster.tf); ONEROSTER_CLIENT_SECRET comes from Secret Manager.
    ROSTER_SOURCE             = var.roster_source
    ONEROSTER_API_BASE        = var.oneroster_api_base
    ONEROSTER_VERSION         = var.oneroster_version
    ONEROSTER_CLIENT_ID       = var.oneroster_client_id
    ONEROSTER_TOKEN_URL       = var.oneroster_token_url
    ONEROSTER_AUTH            = var.oneroster_auth
    ONEROSTER_PAGE_SIZE       = tostring(var.oneroster_page_size)
    ONEROSTER_FULL_READ_HOURS = tostring(var.oneroster_full_read_hours)
    STORAGE_API_ENDPOINT      = "https://storage.googleapis.com/"
    ONEROSTER_SCOPE           = var.oneroster_scope
    # Guardians (guardians.tf, docs/guardians.md).
    GUARDIANS                   = var.guardians
    GUARDIAN_RELATIONSHIP_TYPES = join(",", var.guardian_relationship_types)
    GUARDIAN_REINVITE_DAYS      = tostring(var.guardian_reinvite_days)
    # The account whose client id holds domain-wide delegation (iam.tf); its JWTs are signed by
    # the calling function's own account, which may only signJwt on it.
    CLASSROOM_DELEGATE_ACCOUNT = google_service_account.classroom.email
    # Retention (docs/privacy.md): TTL policies in firestore.tf delete what these date.
    RETAIN_CLOSED_PROBLEMS_DAYS       = tostring(var.retain_closed_problems_days)
    RETAIN_REPLAYED_DEAD_LETTERS_DAYS = tostring(var.retain_replayed_dead_letters_days)
    RETAIN_DECIDED_HELD_BATCHES_DAYS  = tostring(var.retain_decided_held_batches_days)
    RETAIN_REMOVED_MEMBERS_DAYS       = tostring(var.retain_removed_members_days)
    RETAIN_DELETED_CLASSES_DAYS       = tostring(var.retain_deleted_classes_days)
    # The status page (status_page.tf): the time zone it shows times in.
    STATUS_PAGE_TIMEZONE = var.status_page_timezone
  }

  # The Pub/Sub-fed functions' names and their deterministic run.app URLs
  # (https://<service>-<project number>.<region>.run.app, see Cloud Run's "Service URL"): the push
  # subscriptions use them as endpoint and OIDC audience, and the functions are told them in
  # PUSH_AUDIENCE. Computed, not read from the functions, which would depend on themselves.
  push_function_names = {
    apply_roster_event            = "${var.name_prefix}-apply-roster-event"
    record_dead_letter            = "${var.name_prefix}-record-dead-letter"
    record_classroom_notification = "${var.name_prefix}-record-notification"
    import_oneroster_bundle       = "${var.name_prefix}-import-oneroster-bundle"
  }
  scheduled_function_names = {
    poll_clever                  = "${var.name_prefix}-poll-clever"
    reconcile_courses            = "${var.name_prefix}-reconcile-courses"
    renew_classroom_registration = "${var.name_prefix}-renew-registration"
    poll_oneroster               = "${var.name_prefix}-poll-oneroster"
  }
  scheduled_urls = {
    for entry, name in local.scheduled_function_names :
    entry => "https://${name}-${data.google_project.this.number}.${var.region}.run.app"
  }
  push_urls = {
    for entry, name in local.push_function_names :
    entry => "https://${name}-${data.google_project.this.number}.${var.region}.run.app"
  }

  function_source = {
    bucket = google_storage_bucket.functions_source.name
    object = google_storage_bucket_object.functions_source.name
  }

  # The Clever token, from Secret Manager, for the functions that read Clever.
  clever_token_secret = {
    CLEVER_TOKEN = { secret = google_secret_manager_secret.clever_token.secret_id, version = var.clever_token_version }
  }

  # Every entry point of functions/main.py (the key), deployed by the one resource below.
  # time_budget_seconds is how long the code works before it saves its state and answers: it must
  # stay below the platform's timeout. invoker says who may call it: scheduler (Cloud Scheduler's
  # account), push (the push subscriptions' account) or viewers (var.status_page_viewers).
  functions = {
    # HTTP, called by Cloud Scheduler (scheduler.tf): reads Clever's events, publishes roster changes.
    poll_clever = {
      name                = local.scheduled_function_names.poll_clever
      description         = "polls Clever and publishes roster changes to ${var.roster_events_topic}."
      service_account     = google_service_account.function["poll_clever"].email
      timeout_seconds     = var.poll_timeout_seconds
      time_budget_seconds = var.poll_time_budget_seconds
      max_instances       = 1 # one cursor: never two polls at once
      ingress             = var.ingress_settings
      env                 = local.function_env
      secrets             = local.clever_token_secret
      invoker             = "scheduler"
      sources             = ["clever"]
      memory              = var.poll_clever_memory
    }
    # CloudEvent, fed by the push subscription `apply` (pubsub.tf): applies roster changes to
    # Google Classroom through domain-wide delegation as ADMIN_SUBJECT.
    apply_roster_event = {
      name                = local.push_function_names.apply_roster_event
      description         = "applies roster changes from ${var.apply_subscription} to Google Classroom."
      service_account     = google_service_account.function["apply_roster_event"].email
      timeout_seconds     = var.apply_timeout_seconds
      time_budget_seconds = var.apply_time_budget_seconds
      max_instances       = var.apply_max_instances
      ingress             = var.ingress_settings
      env                 = local.function_env
      secrets             = {}
      invoker             = "push"
      sources             = ["clever", "oneroster"]
      memory              = var.function_memory
    }
    # CloudEvent, fed by the push subscription `dead_letter` (pubsub.tf): records each roster change
    # Pub/Sub gave up on in Firestore (dead_letters/{message id}) for inspection and replay.
    record_dead_letter = {
      name                = local.push_function_names.record_dead_letter
      description         = "records dead-lettered roster changes from ${var.dead_letter_subscription} in Firestore."
      service_account     = google_service_account.function["record_dead_letter"].email
      timeout_seconds     = 60 # one Firestore write
      time_budget_seconds = 0
      max_instances       = 2
      ingress             = var.ingress_settings
      env                 = local.function_env
      secrets             = {}
      invoker             = "push"
      sources             = ["clever", "oneroster"]
      memory              = var.function_memory
    }
    # HTTP, nightly from Cloud Scheduler (reconcile.tf): records teachers' changes and catches up on Clever.
    reconcile_courses = {
      name                = local.scheduled_function_names.reconcile_courses
      description         = "records teachers' changes in Classroom and catches up on Clever."
      service_account     = google_service_account.function["reconcile_courses"].email
      timeout_seconds     = 3600
      time_budget_seconds = var.reconcile_time_budget_seconds
      max_instances       = 1 # one pass at a time: it keeps one position
      ingress             = var.ingress_settings
      env                 = local.function_env
      secrets             = local.clever_token_secret
      invoker             = "scheduler"
      sources             = ["clever"]
      memory              = var.function_memory
    }
    # CloudEvent, fed by the push subscription `classroom_notifications` (notifications.tf): a
    # teacher's roster change in Classroom becomes an override within minutes.
    record_classroom_notification = {
      name                = local.push_function_names.record_classroom_notification
      description         = "records teachers' roster changes from Classroom's push notifications."
      service_account     = google_service_account.function["record_classroom_notification"].email
      timeout_seconds     = 60
      time_budget_seconds = 0
      max_instances       = 3
      ingress             = var.ingress_settings
      env                 = local.function_env
      secrets             = {}
      invoker             = "push"
      sources             = ["clever", "oneroster"]
      memory              = var.function_memory
    }
    # HTTP, daily from Cloud Scheduler (notifications.tf): extends the push-notification registration.
    renew_classroom_registration = {
      name                = local.scheduled_function_names.renew_classroom_registration
      description         = "renews the Classroom push-notification registration."
      service_account     = google_service_account.function["renew_classroom_registration"].email
      timeout_seconds     = 60
      time_budget_seconds = 0
      max_instances       = 1
      ingress             = var.ingress_settings
      env                 = local.function_env
      secrets             = {}
      invoker             = "scheduler"
      sources             = ["clever", "oneroster"]
      memory              = var.function_memory
    }
    # HTTP, called by Cloud Scheduler (oneroster.tf): reads OneRoster, publishes roster changes.
    poll_oneroster = {
      name                = local.scheduled_function_names.poll_oneroster
      description         = "polls OneRoster and publishes roster changes to ${var.roster_events_topic}."
      service_account     = google_service_account.function["poll_oneroster"].email
      timeout_seconds     = var.poll_timeout_seconds
      time_budget_seconds = var.poll_time_budget_seconds
      max_instances       = 1 # one saved state: never two polls at once
      ingress             = var.ingress_settings
      env                 = local.function_env
      secrets = {
        ONEROSTER_CLIENT_SECRET = { secret = google_secret_manager_secret.oneroster_client_secret.secret_id, version = "latest" }
      }
      invoker = "scheduler"
      sources = ["oneroster"]
      memory  = var.function_memory
    }
    # CloudEvent, fed by the bundle notifications' push subscription (oneroster_bundles.tf).
    import_oneroster_bundle = {
      name                = local.push_function_names.import_oneroster_bundle
      description         = "imports OneRoster CSV bundles and publishes roster changes to ${var.roster_events_topic}."
      service_account     = google_service_account.function["import_oneroster_bundle"].email
      timeout_seconds     = var.poll_timeout_seconds
      time_budget_seconds = var.poll_time_budget_seconds
      max_instances       = 1 # one saved state: bundles one at a time
      ingress             = var.ingress_settings
      env                 = local.function_env
      secrets             = {}
      invoker             = "push"
      sources             = ["oneroster"]
      memory              = "1Gi" # a 50,000-student bundle, streamed, peaks near 370 MiB (docs/oneroster.md)
    }
    # HTTP, the read-only status page (status_page.tf): its own account, which may only read
    # Firestore, and only the settings it reads (no Clever or Classroom).
    status_page = {
      name                = local.status_page_name
      description         = "the read-only status page."
      service_account     = google_service_account.status_page.email
      timeout_seconds     = 60
      time_budget_seconds = 0
      max_instances       = 2
      ingress             = "ALLOW_INTERNAL_AND_GCLB" # the load balancer (IAP) and internal callers only
      env = {
        GOOGLE_CLOUD_PROJECT = var.project_id
        FIRESTORE_DATABASE   = google_firestore_database.rostersync.name
        # Every request must carry IAP's signed header for this audience (status_page.tf).
        IAP_AUDIENCE = local.status_page_iap_audience
        IAP_KEYS_URL = "https://www.gstatic.com/iap/verify/public_key-jwk"
      }
      secrets = {}
      invoker = "viewers"
      sources = ["clever", "oneroster"]
      memory  = var.function_memory
    }
  }

  # Who may invoke which function: one IAM binding per (function, member). The keys hold no
  # computed values (for_each keys must be known at plan time).
  invoker_members = {
    scheduler = { account = "serviceAccount:${google_service_account.scheduler.email}" }
    push      = { account = "serviceAccount:${google_service_account.pubsub_push.email}" }
    viewers   = { for i, member in var.status_page_viewers : tostring(i) => member }
  }
  # Only the functions of the district's roster source are deployed (a Clever district needs no
  # OneRoster secret, and the reconcile pass, which reads Clever, is not deployed for OneRoster).
  deployed_functions = { for entry, fn in local.functions : entry => fn if contains(fn.sources, var.roster_source) }

  function_invokers = merge([
    for entry, fn in local.deployed_functions : {
      for id, member in local.invoker_members[fn.invoker] : "${entry}/${id}" => { entry = entry, member = member }
    }
  ]...)
}

# All the functions, built from functions/ (storage.tf) with the Python 3.11 runtime.
resource "google_cloudfunctions2_function" "rostersync" {
  #checkov:skip=CKV_GCP_124:Ingress comes per function from local.functions (var.ingress_settings, default ALLOW_INTERNAL_ONLY; the status page ALLOW_INTERNAL_AND_GCLB), which checkov cannot follow through for_each; tests/unit/test_infra.py checks that no function defaults to ALLOW_ALL.
  for_each = local.deployed_functions

  project     = var.project_id
  location    = var.region
  name        = each.value.name
  description = "rostersync for ${var.district_name}: ${each.value.description}"
  labels      = local.labels

  build_config {
    runtime         = "python311"
    entry_point     = each.key
    service_account = google_service_account.build.id
    source {
      storage_source {
        bucket = local.function_source.bucket
        object = local.function_source.object
      }
    }
  }

  service_config {
    service_account_email            = each.value.service_account
    available_memory                 = each.value.memory
    timeout_seconds                  = each.value.timeout_seconds
    min_instance_count               = 0
    max_instance_count               = each.value.max_instances
    max_instance_request_concurrency = 1 # the Google clients' transports are not thread-safe
    ingress_settings                 = each.value.ingress
    all_traffic_on_latest_revision   = true

    environment_variables = each.value.env

    dynamic "secret_environment_variables" {
      for_each = each.value.secrets
      content {
        key        = secret_environment_variables.key
        project_id = var.project_id
        secret     = secret_environment_variables.value.secret
        version    = secret_environment_variables.value.version
      }
    }
  }

  lifecycle {
    precondition {
      condition     = each.value.time_budget_seconds < each.value.timeout_seconds
      error_message = "The time budget of ${each.key} must stay below its timeout, or the platform stops it before it saves its state."
    }
    precondition {
      # Cloud Run gives a service a deterministic URL only while name and project number fit in a
      # DNS label; the push subscriptions and the scheduler's OIDC audiences rely on it.
      condition     = length("${each.value.name}-${data.google_project.this.number}") <= 63
      error_message = "name_prefix is too long for the functions' deterministic run.app URLs (service name plus project number must fit in 63 characters)."
    }
  }

  # Everything a function needs before it can start: APIs, its identity's grants, the build account.
  depends_on = [
    google_project_service.enabled,
    google_project_iam_member.function_firestore,
    google_project_iam_member.function_logs,
    google_project_iam_member.status_page,
    google_project_iam_member.status_page_logs,
    google_project_iam_member.build,
    google_storage_bucket_iam_member.build_reads_source,
    google_secret_manager_secret_iam_member.functions_read_clever_token,
    google_secret_manager_secret_iam_member.functions_read_classroom_push_grant,
    google_secret_manager_secret_iam_member.functions_read_oneroster_client_secret,
    google_storage_bucket_iam_member.functions_read_bundles,
    google_service_account_iam_member.classroom_sign_jwt,
  ]
}

# 2nd gen functions are Cloud Run services of the same name; invoking one takes run.invoker on it.
resource "google_cloud_run_service_iam_member" "invokers" {
  for_each = local.function_invokers

  project  = var.project_id
  location = google_cloudfunctions2_function.rostersync[each.value.entry].location
  service  = google_cloudfunctions2_function.rostersync[each.value.entry].name
  role     = "roles/run.invoker"
  member   = each.value.member
}

# The Cloud Functions (2nd gen), one resource per entry point in functions/main.py, all built from
# functions/ (storage.tf) with the Python 3.11 runtime, running as the functions service account.
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
    RECONCILE_TIME_BUDGET_SECONDS = tostring(var.reconcile_time_budget_seconds)
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
    ONEROSTER_PAGE_SIZE       = tostring(var.oneroster_page_size)
    ONEROSTER_FULL_READ_HOURS = tostring(var.oneroster_full_read_hours)
    STORAGE_API_ENDPOINT      = "https://storage.googleapis.com/"
  }

  # The Pub/Sub-fed functions' names and their deterministic run.app URLs
  # (https://<service>-<project number>.<region>.run.app, see Cloud Run's "Service URL"): the push
  # subscriptions use them as endpoint and OIDC audience, and the functions are told them in
  # PUSH_AUDIENCE. Computed, not read from the functions, which would depend on themselves.
  push_function_names = {
    apply_roster_event      = "${var.name_prefix}-apply-roster-event"
    record_dead_letter      = "${var.name_prefix}-record-dead-letter"
    import_oneroster_bundle = "${var.name_prefix}-import-oneroster-bundle"
  }
  scheduled_function_names = {
    poll_clever       = "${var.name_prefix}-poll-clever"
    reconcile_courses = "${var.name_prefix}-reconcile-courses"
    poll_oneroster    = "${var.name_prefix}-poll-oneroster"
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
}

# HTTP, called by Cloud Scheduler (scheduler.tf): reads Clever's events, publishes roster changes.
resource "google_cloudfunctions2_function" "poll_clever" {
  project     = var.project_id
  location    = var.region
  name        = "${var.name_prefix}-poll-clever"
  description = "rostersync for ${var.district_name}: polls Clever and publishes roster changes to ${var.roster_events_topic}."
  labels      = local.labels

  build_config {
    runtime         = "python311"
    entry_point     = "poll_clever"
    service_account = google_service_account.build.id
    source {
      storage_source {
        bucket = local.function_source.bucket
        object = local.function_source.object
      }
    }
  }

  service_config {
    service_account_email            = google_service_account.functions.email
    available_memory                 = var.function_memory
    timeout_seconds                  = var.poll_timeout_seconds
    min_instance_count               = 0
    max_instance_count               = 1 # one cursor: never two polls at once
    max_instance_request_concurrency = 1
    ingress_settings                 = var.ingress_settings
    all_traffic_on_latest_revision   = true

    environment_variables = local.function_env

    secret_environment_variables {
      key        = "CLEVER_TOKEN"
      project_id = var.project_id
      secret     = google_secret_manager_secret.clever_token.secret_id
      version    = var.clever_token_version
    }
  }

  lifecycle {
    precondition {
      condition     = var.poll_time_budget_seconds < var.poll_timeout_seconds
      error_message = "poll_time_budget_seconds must be below poll_timeout_seconds, or the platform stops a poll before it saves its cursor."
    }
  }

  # Everything a function needs before it can start: APIs, its identity's grants, the build account.
  depends_on = [
    google_project_service.enabled,
    google_project_iam_member.functions,
    google_project_iam_member.build,
    google_storage_bucket_iam_member.build_reads_source,
    google_secret_manager_secret_iam_member.functions_read_clever_token,
    google_service_account_iam_member.functions_sign_jwt_as_itself,
  ]
}

# CloudEvent function fed by the push subscription `apply` (pubsub.tf): applies one roster change
# to Google Classroom through domain-wide delegation as ADMIN_SUBJECT.
resource "google_cloudfunctions2_function" "apply_roster_event" {
  project     = var.project_id
  location    = var.region
  name        = local.push_function_names.apply_roster_event
  description = "rostersync for ${var.district_name}: applies roster changes from ${var.apply_subscription} to Google Classroom."
  labels      = local.labels

  build_config {
    runtime         = "python311"
    entry_point     = "apply_roster_event"
    service_account = google_service_account.build.id
    source {
      storage_source {
        bucket = local.function_source.bucket
        object = local.function_source.object
      }
    }
  }

  service_config {
    service_account_email            = google_service_account.functions.email
    available_memory                 = var.function_memory
    timeout_seconds                  = var.apply_timeout_seconds
    min_instance_count               = 0
    max_instance_count               = var.apply_max_instances
    max_instance_request_concurrency = 1
    ingress_settings                 = var.ingress_settings
    all_traffic_on_latest_revision   = true

    environment_variables = local.function_env
  }

  lifecycle {
    precondition {
      condition     = var.apply_time_budget_seconds < var.apply_timeout_seconds
      error_message = "apply_time_budget_seconds must be below apply_timeout_seconds."
    }
    precondition {
      # Cloud Run gives a service a deterministic URL only while name and project number fit in a
      # DNS label; the push subscription relies on it (local.push_urls).
      condition     = length("${local.push_function_names.apply_roster_event}-${data.google_project.this.number}") <= 63
      error_message = "name_prefix is too long for the functions' deterministic run.app URLs (service name plus project number must fit in 63 characters)."
    }
  }

  # Everything a function needs before it can start: APIs, its identity's grants, the build account.
  depends_on = [
    google_project_service.enabled,
    google_project_iam_member.functions,
    google_project_iam_member.build,
    google_storage_bucket_iam_member.build_reads_source,
    google_secret_manager_secret_iam_member.functions_read_clever_token,
    google_service_account_iam_member.functions_sign_jwt_as_itself,
  ]
}

# CloudEvent function fed by the push subscription `dead_letter` (pubsub.tf): records each roster
# change Pub/Sub gave up on in Firestore (dead_letters/{message id}) for inspection and replay.
resource "google_cloudfunctions2_function" "record_dead_letter" {
  project     = var.project_id
  location    = var.region
  name        = local.push_function_names.record_dead_letter
  description = "rostersync for ${var.district_name}: records dead-lettered roster changes from ${var.dead_letter_subscription} in Firestore."
  labels      = local.labels

  build_config {
    runtime         = "python311"
    entry_point     = "record_dead_letter"
    service_account = google_service_account.build.id
    source {
      storage_source {
        bucket = local.function_source.bucket
        object = local.function_source.object
      }
    }
  }

  service_config {
    service_account_email            = google_service_account.functions.email
    available_memory                 = var.function_memory
    timeout_seconds                  = 60 # one Firestore write
    min_instance_count               = 0
    max_instance_count               = 2
    max_instance_request_concurrency = 1
    ingress_settings                 = var.ingress_settings
    all_traffic_on_latest_revision   = true

    environment_variables = local.function_env
  }

  lifecycle {
    precondition {
      # Cloud Run gives a service a deterministic URL only while name and project number fit in a
      # DNS label; the push subscription relies on it.
      condition     = length("${local.push_function_names.record_dead_letter}-${data.google_project.this.number}") <= 63
      error_message = "name_prefix is too long for the functions' deterministic run.app URLs (service name plus project number must fit in 63 characters)."
    }
  }

  depends_on = [
    google_project_service.enabled,
    google_project_iam_member.functions,
    google_project_iam_member.build,
    google_storage_bucket_iam_member.build_reads_source,
    google_secret_manager_secret_iam_member.functions_read_clever_token,
    google_service_account_iam_member.functions_sign_jwt_as_itself,
  ]
}

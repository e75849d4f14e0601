# The reconcile pass (functions/rostersync/reconcile.py): compares every linked course with what
# rostersync last set, records the teachers' changes as overrides, and applies each section as Clever
# has it now. Nightly by default; paced by RECONCILE_READS_PER_MINUTE so it takes only a share of
# the Classroom quota, and it resumes where the last run stopped.

variable "reconcile_schedule" {
  description = "When Cloud Scheduler runs the reconcile pass (unix-cron). Default: 02:30 every night."
  type        = string
  default     = "30 2 * * *"

  validation {
    condition     = length(split(" ", trimspace(var.reconcile_schedule))) == 5
    error_message = "reconcile_schedule must be a 5-field unix-cron expression, e.g. \"30 2 * * *\"."
  }
}

variable "reconcile_reads_per_minute" {
  description = "Classroom reads a minute the reconcile pass may use (3 per course); the rest of the 1,200 a minute of the admin is left to the applier."
  type        = number
  default     = 300

  validation {
    condition     = var.reconcile_reads_per_minute >= 1 && var.reconcile_reads_per_minute <= 3000
    error_message = "reconcile_reads_per_minute must be between 1 and 3000."
  }
}

variable "reconcile_time_budget_seconds" {
  description = "How long one reconcile run works before it saves its position (must be below its 3600 s timeout)."
  type        = number
  default     = 3300

  validation {
    condition     = var.reconcile_time_budget_seconds >= 5 && var.reconcile_time_budget_seconds < 3600
    error_message = "reconcile_time_budget_seconds must be between 5 and 3599."
  }
}

variable "term_end_action" {
  description = "What the reconcile pass does with a course whose section's term has ended: archive (after term_archive_after_days) or keep."
  type        = string
  default     = "archive"

  validation {
    condition     = contains(["archive", "keep"], var.term_end_action)
    error_message = "term_end_action must be archive or keep."
  }
}

variable "term_archive_after_days" {
  description = "Days after a term's end date before the reconcile pass archives its sections' courses."
  type        = number
  default     = 14

  validation {
    condition     = var.term_archive_after_days >= 0 && var.term_archive_after_days <= 3650
    error_message = "term_archive_after_days must be between 0 and 3650."
  }
}

resource "google_cloudfunctions2_function" "reconcile_courses" {
  project     = var.project_id
  location    = var.region
  name        = "${var.name_prefix}-reconcile-courses"
  description = "rostersync for ${var.district_name}: records teachers' changes in Classroom and catches up on Clever."
  labels      = local.labels

  build_config {
    runtime         = "python311"
    entry_point     = "reconcile_courses"
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
    timeout_seconds                  = 3600
    min_instance_count               = 0
    max_instance_count               = 1 # one pass at a time: it keeps one position
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

  depends_on = [
    google_project_service.enabled,
    google_project_iam_member.functions,
    google_project_iam_member.build,
    google_storage_bucket_iam_member.build_reads_source,
    google_secret_manager_secret_iam_member.functions_read_clever_token,
    google_service_account_iam_member.functions_sign_jwt_as_itself,
  ]
}

resource "google_cloud_run_service_iam_member" "scheduler_invokes_reconcile" {
  project  = var.project_id
  location = var.region
  service  = google_cloudfunctions2_function.reconcile_courses.service_config[0].service
  role     = "roles/run.invoker"
  member   = "serviceAccount:${google_service_account.scheduler.email}"
}

resource "google_cloud_scheduler_job" "reconcile_courses" {
  project          = var.project_id
  region           = var.region
  name             = "${var.name_prefix}-reconcile-courses"
  description      = "rostersync for ${var.district_name}: nightly reconcile of every linked course."
  schedule         = var.reconcile_schedule
  time_zone        = var.poll_time_zone
  paused           = var.poll_paused
  attempt_deadline = "1800s"

  retry_config {
    retry_count = 0 # the next night resumes where this run stopped
  }

  http_target {
    http_method = "POST"
    uri         = google_cloudfunctions2_function.reconcile_courses.service_config[0].uri
    body        = base64encode("{}")
    headers     = { "Content-Type" = "application/json" }

    oidc_token {
      service_account_email = google_service_account.scheduler.email
      audience              = local.scheduled_urls["reconcile_courses"] # as the function checks it
    }
  }

  depends_on = [google_cloud_run_service_iam_member.scheduler_invokes_reconcile]
}

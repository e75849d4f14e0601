# The reconcile pass (functions/rostersync/app/reconcile.py): compares every linked course with what
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

resource "google_cloud_scheduler_job" "reconcile_courses" {
  count = var.roster_source == "clever" ? 1 : 0 # its function is deployed for Clever districts only

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
    uri         = google_cloudfunctions2_function.rostersync["reconcile_courses"].service_config[0].uri
    body        = base64encode("{}")
    headers     = { "Content-Type" = "application/json" }

    oidc_token {
      service_account_email = google_service_account.scheduler.email
      audience              = local.scheduled_urls["reconcile_courses"] # as the function checks it
    }
  }

  depends_on = [google_cloud_run_service_iam_member.invokers]
}

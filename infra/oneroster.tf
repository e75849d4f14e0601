# The OneRoster source (ClassLink, or a SIS that speaks OneRoster 1.1/1.2 REST): a poller beside
# poll_clever that publishes the same roster changes to the same topic, and the scheduler jobs
# that run it (a delta every oneroster_poll_schedule, a full read on oneroster_full_read_schedule).
# Its functions and jobs exist only with roster_source = "oneroster" (functions.tf, local.deployed_functions).

variable "roster_source" {
  description = "ROSTER_SOURCE: where rosters come from, \"clever\" or \"oneroster\"."
  type        = string
  default     = "clever"

  validation {
    condition     = contains(["clever", "oneroster"], var.roster_source)
    error_message = "roster_source must be \"clever\" or \"oneroster\"."
  }
}

variable "oneroster_api_base" {
  description = "ONEROSTER_API_BASE: the provider's base URL, before /ims/oneroster/... (ClassLink: https://<tenant>-<app>.oneroster.com)."
  type        = string
  default     = "https://oneroster.invalid"

  validation {
    condition     = can(regex("^https://[^\\s/]+", var.oneroster_api_base))
    error_message = "oneroster_api_base must be an https:// URL."
  }
}

variable "oneroster_version" {
  description = "ONEROSTER_VERSION: \"1.1\" (/ims/oneroster/v1p1) or \"1.2\" (/ims/oneroster/rostering/v1p2)."
  type        = string
  default     = "1.2"

  validation {
    condition     = contains(["1.1", "1.2"], var.oneroster_version)
    error_message = "oneroster_version must be \"1.1\" or \"1.2\"."
  }
}

variable "oneroster_client_id" {
  description = "ONEROSTER_CLIENT_ID: the OAuth 2 client id the provider issued (not secret)."
  type        = string
  default     = ""
}

variable "oneroster_token_url" {
  description = "ONEROSTER_TOKEN_URL: the provider's OAuth 2 token endpoint (client credentials)."
  type        = string
  default     = "https://oneroster.invalid/token"

  validation {
    condition     = can(regex("^https://[^\\s/]+", var.oneroster_token_url))
    error_message = "oneroster_token_url must be an https:// URL."
  }
}

variable "oneroster_auth" {
  description = "ONEROSTER_AUTH: oauth2 (client credentials for a bearer token) or oauth1 (OAuth 1.0a HMAC-SHA256 request signing, which some OneRoster 1.1 providers require; no token URL then)."
  type        = string
  default     = "oauth2"

  validation {
    condition     = contains(["oauth2", "oauth1"], var.oneroster_auth)
    error_message = "oneroster_auth must be oauth2 or oauth1."
  }
}

variable "oneroster_client_secret_id" {
  description = "Id of the Secret Manager secret holding the OneRoster client secret (ONEROSTER_CLIENT_SECRET). Terraform creates the secret, never its value."
  type        = string
  default     = "oneroster-client-secret"

  validation {
    condition     = can(regex("^[A-Za-z0-9_-]{1,255}$", var.oneroster_client_secret_id))
    error_message = "oneroster_client_secret_id may contain letters, digits, hyphens and underscores only."
  }
}

variable "oneroster_scope" {
  description = "ONEROSTER_SCOPE: the OAuth 2 token's scope(s), space-separated; empty for the version's roster.readonly, none for no scope (docs/oneroster.md)."
  type        = string
  default     = ""

  validation {
    condition     = can(regex("^[ -~]*$", var.oneroster_scope))
    error_message = "oneroster_scope must be printable ASCII (space-separated scope URIs, or none)."
  }
}

variable "oneroster_page_size" {
  description = "ONEROSTER_PAGE_SIZE: the limit of each OneRoster list request."
  type        = number
  default     = 1000

  validation {
    condition     = var.oneroster_page_size >= 1 && var.oneroster_page_size <= 10000
    error_message = "oneroster_page_size must be 1..10000."
  }
}

variable "oneroster_full_read_hours" {
  description = "ONEROSTER_FULL_READ_HOURS: a poll reads every record when the last full read is older than this."
  type        = number
  default     = 24

  validation {
    condition     = var.oneroster_full_read_hours >= 1 && var.oneroster_full_read_hours <= 720
    error_message = "oneroster_full_read_hours must be 1..720."
  }
}

variable "oneroster_poll_schedule" {
  description = "When Cloud Scheduler runs the OneRoster delta poll (unix-cron), in poll_time_zone."
  type        = string
  default     = "*/10 * * * *"

  validation {
    condition     = length(split(" ", trimspace(var.oneroster_poll_schedule))) == 5
    error_message = "oneroster_poll_schedule must be a 5-field unix-cron expression."
  }
}

variable "oneroster_full_read_schedule" {
  description = "When Cloud Scheduler runs the OneRoster full read (unix-cron), in poll_time_zone. Default: nightly at 01:30."
  type        = string
  default     = "30 1 * * *"

  validation {
    condition     = length(split(" ", trimspace(var.oneroster_full_read_schedule))) == 5
    error_message = "oneroster_full_read_schedule must be a 5-field unix-cron expression."
  }
}

locals {
  oneroster_jobs = var.roster_source == "oneroster" ? {
    delta = { schedule = var.oneroster_poll_schedule, body = "{}", what = "poll OneRoster for roster changes" }
    full  = { schedule = var.oneroster_full_read_schedule, body = "{\"full\": true}", what = "read every OneRoster record (catches what a delta missed)" }
  } : {}
}

resource "google_secret_manager_secret" "oneroster_client_secret" {
  project   = var.project_id
  secret_id = var.oneroster_client_secret_id
  labels    = local.labels

  replication {
    auto {}
  }

  depends_on = [google_project_service.enabled]
}

resource "google_secret_manager_secret_iam_member" "functions_read_oneroster_client_secret" {
  project   = var.project_id
  secret_id = google_secret_manager_secret.oneroster_client_secret.secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = local.function_members["poll_oneroster"]
}

resource "google_cloud_scheduler_job" "poll_oneroster" {
  for_each    = local.oneroster_jobs
  project     = var.project_id
  region      = var.region
  name        = "${var.name_prefix}-poll-oneroster-${each.key}"
  description = "rostersync for ${var.district_name}: ${each.value.what}."
  schedule    = each.value.schedule
  time_zone   = var.poll_time_zone
  paused      = var.poll_paused

  attempt_deadline = "${min(1800, var.poll_timeout_seconds + 60)}s"

  retry_config {
    # A failed poll saved nothing; the next scheduled run is the retry.
    retry_count = 0
  }

  http_target {
    http_method = "POST"
    uri         = google_cloudfunctions2_function.rostersync["poll_oneroster"].service_config[0].uri
    body        = base64encode(each.value.body)
    headers     = { "Content-Type" = "application/json" }

    oidc_token {
      service_account_email = google_service_account.scheduler.email
      audience              = local.scheduled_urls["poll_oneroster"] # as the function checks it (SCHEDULER_AUDIENCE)
    }
  }

  depends_on = [google_cloud_run_service_iam_member.invokers]
}

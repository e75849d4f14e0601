# Every setting of a deployment. Only project_id, district_name and admin_subject have no default;
# terraform.tfvars.example shows a filled-in set. Defaults of the function settings match
# functions/rostersync/config.py, and their validation matches what config.py accepts.

# -- where --------------------------------------------------------------------------------------

variable "project_id" {
  description = "The Google Cloud project to deploy into (its id, not its name or number)."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.project_id))
    error_message = "project_id must be a Google Cloud project id: 6-30 characters, lowercase letters, digits and hyphens, starting with a letter."
  }
}

variable "region" {
  description = "Region of the functions, the source bucket and the scheduler job, e.g. us-central1."
  type        = string
  default     = "us-central1"

  validation {
    condition     = can(regex("^[a-z]+-[a-z]+[0-9]+$", var.region))
    error_message = "region must be a Google Cloud region such as us-central1 or europe-west1."
  }
}

variable "firestore_location" {
  description = "Location of the Firestore database: a multi-region (nam5, eur3) or a region (us-central1). Cannot be changed after creation."
  type        = string
  default     = "nam5"

  validation {
    condition     = can(regex("^(nam5|nam7|eur3|[a-z]+-[a-z]+[0-9]+)$", var.firestore_location))
    error_message = "firestore_location must be nam5, nam7, eur3 or a region such as us-central1."
  }
}

variable "firestore_database" {
  description = "Firestore database id (FIRESTORE_DATABASE). \"(default)\" unless the project's default database is used by something else."
  type        = string
  default     = "(default)"

  validation {
    condition     = var.firestore_database == "(default)" || can(regex("^[a-z][a-z0-9-]{2,61}[a-z0-9]$", var.firestore_database))
    error_message = "firestore_database must be \"(default)\" or 4-63 lowercase letters, digits and hyphens, starting with a letter."
  }
}

variable "firestore_delete_protection" {
  description = "Protect the Firestore database (the section-course links) from deletion, also from `terraform destroy`."
  type        = bool
  default     = true
}

variable "district_name" {
  description = "The district's name, e.g. \"Springfield Public Schools\". Used in descriptions and (lowercased) as the `district` label."
  type        = string

  validation {
    condition     = length(trimspace(var.district_name)) > 0 && length(var.district_name) <= 100
    error_message = "district_name must be 1-100 characters."
  }
}

variable "name_prefix" {
  description = "Prefix of the functions, service accounts, bucket and scheduler job names. Change it only to run two deployments in one project."
  type        = string
  default     = "rostersync"

  validation {
    # The longest service account id is "<prefix>-pubsub-push": 30 characters at most.
    condition     = can(regex("^[a-z][a-z0-9-]{2,13}[a-z0-9]$", var.name_prefix))
    error_message = "name_prefix must be 4-15 lowercase letters, digits and hyphens, starting with a letter."
  }
}

# -- Clever and Google Workspace ----------------------------------------------------------------

variable "admin_subject" {
  description = "ADMIN_SUBJECT: the Google Workspace administrator (an email) the functions act as through domain-wide delegation. Courses are created on behalf of this user."
  type        = string

  validation {
    condition     = alltrue([for a in split(",", var.admin_subject) : can(regex("^[^@\\s]+@[^@\\s]+\\.[^@\\s]+$", trimspace(a)))])
    error_message = "admin_subject must be the email address of a Google Workspace administrator, or several, comma-separated."
  }
}

variable "clever_api_base" {
  description = "CLEVER_API_BASE: base URL of the Clever API."
  type        = string
  default     = "https://api.clever.com"

  validation {
    condition     = can(regex("^https://[^\\s/]+", var.clever_api_base))
    error_message = "clever_api_base must be an https:// URL."
  }
}

variable "classroom_api_endpoint" {
  description = "CLASSROOM_API_ENDPOINT: the Google Classroom API endpoint. Change it only for testing against a simulator."
  type        = string
  default     = "https://classroom.googleapis.com/"

  validation {
    condition     = can(regex("^https://[^\\s/]+", var.classroom_api_endpoint))
    error_message = "classroom_api_endpoint must be an https:// URL."
  }
}

variable "clever_token_secret_id" {
  description = "Id of the Secret Manager secret holding the Clever district app token (given to the poller as CLEVER_TOKEN). Terraform creates the secret, never its value."
  type        = string
  default     = "clever-token"

  validation {
    condition     = can(regex("^[A-Za-z0-9_-]{1,255}$", var.clever_token_secret_id))
    error_message = "clever_token_secret_id may contain letters, digits, hyphens and underscores only."
  }
}

variable "clever_token_version" {
  description = "Version of the Clever token secret the poller uses: \"latest\" (new instances pick up a rotated token), or a version number to switch to it at once on the next apply."
  type        = string
  default     = "latest"

  validation {
    condition     = can(regex("^(latest|[1-9][0-9]*)$", var.clever_token_version))
    error_message = "clever_token_version must be \"latest\" or a version number."
  }
}

# -- sync behaviour (the functions' environment) ------------------------------------------------

variable "section_deleted_action" {
  description = "SECTION_DELETED_ACTION, the archive policy: what happens to the Classroom course when its Clever section is deleted: \"archive\" it or \"keep\" it active."
  type        = string
  default     = "archive"

  validation {
    condition     = contains(["archive", "keep"], var.section_deleted_action)
    error_message = "section_deleted_action must be \"archive\" or \"keep\"."
  }
}

variable "clever_page_size" {
  description = "CLEVER_PAGE_SIZE: records per Clever API page (1-10000)."
  type        = number
  default     = 1000

  validation {
    condition     = var.clever_page_size == floor(var.clever_page_size) && var.clever_page_size >= 1 && var.clever_page_size <= 10000
    error_message = "clever_page_size must be a whole number from 1 to 10000."
  }
}

variable "poll_time_budget_seconds" {
  description = "POLL_TIME_BUDGET_SECONDS: how long one poll may read Clever before it saves its cursor and stops. Must stay below poll_timeout_seconds."
  type        = number
  default     = 480

  validation {
    condition     = var.poll_time_budget_seconds == floor(var.poll_time_budget_seconds) && var.poll_time_budget_seconds >= 5 && var.poll_time_budget_seconds <= 3600
    error_message = "poll_time_budget_seconds must be a whole number from 5 to 3600."
  }
}

variable "apply_time_budget_seconds" {
  description = "APPLY_TIME_BUDGET_SECONDS: how long the applier may spend (with retries) on one roster event. Must stay below apply_timeout_seconds."
  type        = number
  default     = 50

  validation {
    condition     = var.apply_time_budget_seconds == floor(var.apply_time_budget_seconds) && var.apply_time_budget_seconds >= 1 && var.apply_time_budget_seconds <= 600
    error_message = "apply_time_budget_seconds must be a whole number from 1 to 600."
  }
}

variable "log_level" {
  description = "LOG_LEVEL of the functions: debug, info, warning or error."
  type        = string
  default     = "info"

  validation {
    condition     = contains(["debug", "info", "warning", "error"], var.log_level)
    error_message = "log_level must be one of debug, info, warning, error."
  }
}

# -- function sizing (see the comment in functions.tf) -------------------------------------------

variable "poll_timeout_seconds" {
  description = "Timeout of the poller function, in seconds (max 3600 for HTTP functions). Must exceed poll_time_budget_seconds."
  type        = number
  default     = 540

  validation {
    condition     = var.poll_timeout_seconds >= 60 && var.poll_timeout_seconds <= 3600
    error_message = "poll_timeout_seconds must be from 60 to 3600."
  }
}

variable "apply_timeout_seconds" {
  description = "Timeout of the applier function, in seconds. Must exceed apply_time_budget_seconds."
  type        = number
  default     = 60

  validation {
    condition     = var.apply_timeout_seconds >= 10 && var.apply_timeout_seconds <= 540
    error_message = "apply_timeout_seconds must be from 10 to 540."
  }
}

variable "apply_max_instances" {
  description = "Most applier instances at once (each handles one roster event at a time). Caps the load on the Classroom API quota; see functions.tf."
  type        = number
  default     = 10

  validation {
    condition     = var.apply_max_instances >= 1 && var.apply_max_instances <= 20
    error_message = "apply_max_instances must be from 1 to 20: more would exceed the Classroom per-user quota (1,200 queries/minute)."
  }
}

variable "poll_clever_memory" {
  description = "Memory of the Clever poller: a poll of a 5,000-student section's changes peaked at 235 MiB (docs/scale.md), too near 256Mi."
  type        = string
  default     = "512Mi"

  validation {
    condition     = contains(["256Mi", "512Mi", "1Gi", "2Gi"], var.poll_clever_memory)
    error_message = "poll_clever_memory must be one of 256Mi, 512Mi, 1Gi, 2Gi."
  }
}

variable "function_memory" {
  description = "Memory of each function instance."
  type        = string
  default     = "256Mi"

  validation {
    condition     = contains(["256Mi", "512Mi", "1Gi", "2Gi"], var.function_memory)
    error_message = "function_memory must be one of 256Mi, 512Mi, 1Gi, 2Gi."
  }
}

variable "ingress_settings" {
  description = "Network ingress of the functions. ALLOW_INTERNAL_ONLY admits Cloud Scheduler and Pub/Sub of the same project and nothing from the internet; IAM (run.invoker) is enforced either way."
  type        = string
  default     = "ALLOW_INTERNAL_ONLY"

  validation {
    condition     = contains(["ALLOW_INTERNAL_ONLY", "ALLOW_INTERNAL_AND_GCLB", "ALLOW_ALL"], var.ingress_settings)
    error_message = "ingress_settings must be ALLOW_INTERNAL_ONLY, ALLOW_INTERNAL_AND_GCLB or ALLOW_ALL."
  }
}

# -- schedule -----------------------------------------------------------------------------------

variable "poll_schedule" {
  description = "When Cloud Scheduler runs the poller (unix-cron). Default: every 5 minutes."
  type        = string
  default     = "*/5 * * * *"

  validation {
    condition     = length(split(" ", trimspace(var.poll_schedule))) == 5
    error_message = "poll_schedule must be a 5-field unix-cron expression, e.g. \"*/5 * * * *\"."
  }
}

variable "poll_time_zone" {
  description = "Time zone of poll_schedule (IANA tz name), e.g. America/Chicago."
  type        = string
  default     = "Etc/UTC"

  validation {
    condition     = can(regex("^[A-Za-z_]+(/[A-Za-z0-9_+-]+)*$", var.poll_time_zone))
    error_message = "poll_time_zone must be an IANA time zone name such as America/Chicago or Etc/UTC."
  }
}

variable "poll_paused" {
  description = "Create the scheduler job paused (no automatic polls; `gcloud scheduler jobs run` still works)."
  type        = bool
  default     = false
}

# -- Pub/Sub ------------------------------------------------------------------------------------

variable "roster_events_topic" {
  description = "ROSTER_EVENTS_TOPIC: the topic the poller publishes roster changes to (config.py's DEFAULT_ROSTER_EVENTS_TOPIC)."
  type        = string
  default     = "roster-events"

  validation {
    condition     = can(regex("^[A-Za-z][A-Za-z0-9._~+%-]{2,254}$", var.roster_events_topic))
    error_message = "roster_events_topic must be a valid Pub/Sub topic name."
  }
}

variable "apply_subscription" {
  description = "The push subscription that delivers roster events to the applier."
  type        = string
  default     = "roster-events-apply"

  validation {
    condition     = can(regex("^[A-Za-z][A-Za-z0-9._~+%-]{2,254}$", var.apply_subscription))
    error_message = "apply_subscription must be a valid Pub/Sub subscription name."
  }
}

variable "dead_letter_topic" {
  description = "Where roster events go after max_delivery_attempts failed deliveries."
  type        = string
  default     = "roster-events-dead-letter"

  validation {
    condition     = can(regex("^[A-Za-z][A-Za-z0-9._~+%-]{2,254}$", var.dead_letter_topic))
    error_message = "dead_letter_topic must be a valid Pub/Sub topic name."
  }
}

variable "dead_letter_subscription" {
  description = "Push subscription that feeds dead-lettered roster events to record_dead_letter (Firestore dead_letters)."
  type        = string
  default     = "roster-events-dead-letter-sub"

  validation {
    condition     = can(regex("^[A-Za-z][A-Za-z0-9._~+%-]{2,254}$", var.dead_letter_subscription))
    error_message = "dead_letter_subscription must be a valid Pub/Sub subscription name."
  }
}

variable "classroom_notifications_topic" {
  description = "Topic for Google Classroom roster change notifications (Classroom publishes to it)."
  type        = string
  default     = "classroom-roster-notifications"

  validation {
    condition     = can(regex("^[A-Za-z][A-Za-z0-9._~+%-]{2,254}$", var.classroom_notifications_topic))
    error_message = "classroom_notifications_topic must be a valid Pub/Sub topic name."
  }
}

variable "max_delivery_attempts" {
  description = "Deliveries of a roster event to the applier before it is dead-lettered (5-100)."
  type        = number
  default     = 20

  validation {
    condition     = var.max_delivery_attempts >= 5 && var.max_delivery_attempts <= 100
    error_message = "max_delivery_attempts must be from 5 to 100 (Pub/Sub's limits)."
  }
}

variable "retry_minimum_backoff" {
  description = "Shortest wait before Pub/Sub redelivers a roster event the applier failed (a duration such as \"10s\", 0-600s)."
  type        = string
  default     = "10s"

  validation {
    condition     = can(regex("^[0-9]+(\\.[0-9]+)?s$", var.retry_minimum_backoff)) && try(tonumber(trimsuffix(var.retry_minimum_backoff, "s")) <= 600, false)
    error_message = "retry_minimum_backoff must be a duration in seconds such as \"10s\", at most \"600s\"."
  }
}

variable "retry_maximum_backoff" {
  description = "Longest wait before Pub/Sub redelivers a roster event (a duration such as \"600s\", at most 600s)."
  type        = string
  default     = "600s"

  validation {
    condition     = can(regex("^[0-9]+(\\.[0-9]+)?s$", var.retry_maximum_backoff)) && try(tonumber(trimsuffix(var.retry_maximum_backoff, "s")) <= 600, false)
    error_message = "retry_maximum_backoff must be a duration in seconds such as \"600s\", at most \"600s\"."
  }
}

variable "labels" {
  description = "Extra labels for the resources that take labels (app and district are always set)."
  type        = map(string)
  default     = {}
}

variable "audit_retention_days" {
  description = "AUDIT_RETENTION_DAYS: days the audit trail keeps a record (the Firestore TTL policy on audit.expire_at deletes it then)."
  type        = number
  default     = 90
  validation {
    condition     = var.audit_retention_days >= 1 && var.audit_retention_days <= 3650
    error_message = "audit_retention_days must be 1..3650."
  }
}

# Issue 12 part B (docs/clever-feed.md): Clever keeps events 30 days.
variable "clever_cursor_max_age_days" {
  description = "CLEVER_CURSOR_MAX_AGE_DAYS: a Clever cursor whose feed was last read to its end longer ago is given up for a re-bootstrap (1-29)."
  type        = number
  default     = 28

  validation {
    condition     = var.clever_cursor_max_age_days == floor(var.clever_cursor_max_age_days) && var.clever_cursor_max_age_days >= 1 && var.clever_cursor_max_age_days <= 29
    error_message = "clever_cursor_max_age_days must be a whole number from 1 to 29."
  }
}

# -- retention (docs/privacy.md) -------------------------------------------------------------------

variable "retain_closed_problems_days" {
  description = "Days a closed problem (with the student's email) is kept before Firestore's TTL policy deletes it."
  type        = number
  default     = 30
}

variable "retain_replayed_dead_letters_days" {
  description = "Days a replayed dead letter (a whole roster message) is kept before Firestore's TTL policy deletes it."
  type        = number
  default     = 30
}

variable "retain_decided_held_batches_days" {
  description = "Days an approved or discarded held batch of the mass-change brake is kept before Firestore's TTL policy deletes it."
  type        = number
  default     = 30
}

variable "retain_removed_members_days" {
  description = "Days after their removal event that a member Clever removed is pruned from the section's link (at least 31: Clever replays 30 days of events)."
  type        = number
  default     = 60

  validation {
    condition     = var.retain_removed_members_days >= 31
    error_message = "retain_removed_members_days must be at least 31 (longer than Clever keeps events)."
  }
}

variable "retain_deleted_classes_days" {
  description = "Days a deleted OneRoster class's last state is kept before Firestore's TTL policy deletes it."
  type        = number
  default     = 30
}

# Classroom push notifications (functions/rostersync/app/notifications.py): Classroom publishes every
# join and leave of a course in the domain to the classroom_notifications topic (pubsub.tf, with
# its publisher grant in iam.tf); this push subscription feeds record_classroom_notification, which
# records the teachers' changes as overrides within minutes instead of at the nightly reconcile.
#
# The registration that makes Classroom publish lasts a week and needs an administrator's own
# OAuth grant (Classroom refuses domain-wide delegation for it): once, after the first apply,
#   rostersync consent-notifications \
#     --client-secrets client_secret.json --secret <output classroom_push_grant_secret>
# adds the grant as a version of the secret below; renew_classroom_registration reads it daily
# (renewal_schedule) and extends the registration. Until then the renewal answers "run
# consent-notifications" and the nightly reconcile pass still sees every teacher's change.

variable "notification_grace_seconds" {
  description = "NOTIFICATION_GRACE_SECONDS: how long a notification the sync's own link does not explain is redelivered before it is judged a teacher's change (must exceed apply_time_budget_seconds)."
  type        = number
  default     = 300

  validation {
    condition     = var.notification_grace_seconds >= 60 && var.notification_grace_seconds <= 3600
    error_message = "notification_grace_seconds must be between 60 and 3600."
  }
}

variable "renewal_schedule" {
  description = "When Cloud Scheduler renews the Classroom push-notification registration (unix-cron; registrations last 7 days). Default: 03:17 daily."
  type        = string
  default     = "17 3 * * *"

  validation {
    condition     = length(split(" ", trimspace(var.renewal_schedule))) == 5
    error_message = "renewal_schedule must be a 5-field unix-cron expression."
  }
}

variable "classroom_push_grant_secret_id" {
  description = "Secret Manager secret id for the administrator's push-notification OAuth grant (versions are added by `rostersync consent-notifications`)."
  type        = string
  default     = "rostersync-classroom-push-grant"
}

resource "google_secret_manager_secret" "classroom_push_grant" {
  project   = var.project_id
  secret_id = var.classroom_push_grant_secret_id
  labels    = local.labels

  replication {
    auto {}
  }

  depends_on = [google_project_service.enabled]
}

# Only the functions' runtime account reads it (the renewal, at run time, so it deploys before
# the consent has added a version); the administrator who runs the consent adds versions with
# their own roles/secretmanager.secretVersionAdder.
resource "google_secret_manager_secret_iam_member" "functions_read_classroom_push_grant" {
  project   = var.project_id
  secret_id = google_secret_manager_secret.classroom_push_grant.secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = local.function_members["renew_classroom_registration"]
}

# Notifications Pub/Sub could not deliver: kept here 7 days for inspection (they are only hints;
# the nightly reconcile pass finds the same changes), not replayed into roster-events.
resource "google_pubsub_topic" "classroom_notifications_dead_letter" {
  #checkov:skip=CKV_GCP_83:Classroom notifications carry only course and user ids; Google-managed encryption at rest is enough (see the roster-events topic).
  project = var.project_id
  name    = "${var.classroom_notifications_topic}-dead-letter"
  labels  = local.labels

  depends_on = [google_project_service.enabled]
}

resource "google_pubsub_subscription" "classroom_notifications_dead_letter" {
  project                    = var.project_id
  name                       = "${var.classroom_notifications_topic}-dead-letter-sub"
  topic                      = google_pubsub_topic.classroom_notifications_dead_letter.id
  labels                     = local.labels
  message_retention_duration = "604800s"

  expiration_policy {
    ttl = ""
  }
}

resource "google_pubsub_subscription" "classroom_notifications" {
  project = var.project_id
  name    = "${var.classroom_notifications_topic}-record"
  topic   = google_pubsub_topic.classroom_notifications.id
  labels  = local.labels

  # The handler reads Classroom's current roster before it records anything, so order does not
  # matter; ordering is on for the same delivery semantics as the other subscriptions.
  enable_message_ordering    = true
  ack_deadline_seconds       = 60
  message_retention_duration = "604800s"

  push_config {
    push_endpoint = local.push_urls.record_classroom_notification

    oidc_token {
      service_account_email = google_service_account.pubsub_push.email
      audience              = local.push_urls.record_classroom_notification
    }
  }

  # A notification our own link does not explain yet is answered 500 and comes back with backoff
  # until NOTIFICATION_GRACE_SECONDS have passed (notifications.py).
  retry_policy {
    minimum_backoff = "10s"
    maximum_backoff = "120s"
  }

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.classroom_notifications_dead_letter.id
    max_delivery_attempts = 20
  }

  expiration_policy {
    ttl = ""
  }

  depends_on = [
    google_cloudfunctions2_function.rostersync,
    google_service_account_iam_member.pubsub_agent_mints_push_tokens,
    google_cloud_run_service_iam_member.invokers,
    google_pubsub_topic_iam_member.notifications_dead_letter_publisher,
  ]
}

resource "google_pubsub_topic_iam_member" "notifications_dead_letter_publisher" {
  project = var.project_id
  topic   = google_pubsub_topic.classroom_notifications_dead_letter.name
  role    = "roles/pubsub.publisher"
  member  = local.pubsub_service_agent
}

resource "google_pubsub_subscription_iam_member" "notifications_dead_letter_subscriber" {
  project      = var.project_id
  subscription = google_pubsub_subscription.classroom_notifications.name
  role         = "roles/pubsub.subscriber"
  member       = local.pubsub_service_agent
}

resource "google_cloud_scheduler_job" "renew_classroom_registration" {
  project          = var.project_id
  region           = var.region
  name             = "${var.name_prefix}-renew-classroom-registration"
  description      = "rostersync for ${var.district_name}: renew the Classroom push-notification registration."
  schedule         = var.renewal_schedule
  time_zone        = var.poll_time_zone
  paused           = var.poll_paused
  attempt_deadline = "120s"

  retry_config {
    retry_count          = 3 # a registration lasts a week: a few retries today are plenty
    min_backoff_duration = "60s"
  }

  http_target {
    http_method = "POST"
    uri         = google_cloudfunctions2_function.rostersync["renew_classroom_registration"].service_config[0].uri
    body        = base64encode("{}")
    headers     = { "Content-Type" = "application/json" }

    oidc_token {
      service_account_email = google_service_account.scheduler.email
      audience              = local.scheduled_urls["renew_classroom_registration"]
    }
  }

  depends_on = [google_cloud_run_service_iam_member.invokers]
}

output "classroom_push_grant_secret" {
  description = "The secret `rostersync consent-notifications --secret` stores the administrator's grant in."
  value       = google_secret_manager_secret.classroom_push_grant.id
}

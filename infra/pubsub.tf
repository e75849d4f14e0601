# Roster changes flow poller -> roster-events topic -> push subscription -> applier. Failed
# deliveries are retried with backoff; after max_delivery_attempts they go to the dead-letter topic,
# whose push subscription feeds record_dead_letter: it keeps each one in Firestore (dead_letters),
# from where `rostersync replay-dead-letters` publishes them again.

resource "google_pubsub_topic" "roster_events" {
  #checkov:skip=CKV_GCP_83:Roster events (section ids, emails) are encrypted at rest with Google-managed keys; a customer-managed KMS key would add a key ring, rotation and its IAM for every district with no requirement for it.
  project = var.project_id
  name    = var.roster_events_topic
  labels  = local.labels

  # Unacknowledged events are kept by the subscription; the topic keeps a copy for replays (seek).
  message_retention_duration = "604800s"

  depends_on = [google_project_service.enabled]
}

resource "google_pubsub_topic" "dead_letter" {
  #checkov:skip=CKV_GCP_83:Same data as the roster-events topic, Google-managed encryption at rest (see there).
  project = var.project_id
  name    = var.dead_letter_topic
  labels  = local.labels

  depends_on = [google_project_service.enabled]
}

# The dead letters' push subscription: every dead-lettered change is recorded in Firestore by
# record_dead_letter (a pull subscription beside it would only hold a second copy nobody reads).
resource "google_pubsub_subscription" "dead_letter" {
  project = var.project_id
  name    = var.dead_letter_subscription
  topic   = google_pubsub_topic.dead_letter.id
  labels  = local.labels

  # Dead-lettered messages keep their ordering key; recording them in order costs nothing.
  enable_message_ordering    = true
  ack_deadline_seconds       = 60
  message_retention_duration = "604800s" # the maximum, 7 days

  push_config {
    push_endpoint = local.push_urls.record_dead_letter

    # The same push account and check as the applier's (see there).
    oidc_token {
      service_account_email = google_service_account.pubsub_push.email
      audience              = local.push_urls.record_dead_letter
    }
  }

  # No dead-letter policy of its own: a dead letter the recorder cannot store (Firestore down)
  # stays here and is retried with backoff for the 7 days of retention.
  retry_policy {
    minimum_backoff = var.retry_minimum_backoff
    maximum_backoff = var.retry_maximum_backoff
  }

  expiration_policy {
    ttl = "" # never expires, even when nothing is dead-lettered for a long time
  }

  depends_on = [
    google_cloudfunctions2_function.rostersync,
    google_service_account_iam_member.pubsub_agent_mints_push_tokens,
    google_cloud_run_service_iam_member.invokers,
  ]
}

# The push subscription that feeds the applier. Push (not an Eventarc trigger) so that we own the
# ordering, retry and dead-letter settings.
resource "google_pubsub_subscription" "apply" {
  project = var.project_id
  name    = var.apply_subscription
  topic   = google_pubsub_topic.roster_events.id
  labels  = local.labels

  # Changes of one section carry the same ordering key; they are applied in the order published.
  enable_message_ordering = true

  # Longer than the applier's timeout, so Pub/Sub does not redeliver an event still being applied.
  ack_deadline_seconds       = min(600, var.apply_timeout_seconds + 30)
  message_retention_duration = "604800s"

  push_config {
    # The function's deterministic run.app URL (functions.tf, local.push_urls), the same value the
    # function checks the audience against: known before the function exists, so no cycle.
    push_endpoint = local.push_urls.apply_roster_event

    # Pub/Sub signs each push with an OIDC token of the push service account. Cloud Run only lets
    # it in because that account has run.invoker on the function (iam.tf), and the function checks
    # the token again in code (PUSH_AUTH, PUSH_SERVICE_ACCOUNT, PUSH_AUDIENCE).
    oidc_token {
      service_account_email = google_service_account.pubsub_push.email
      audience              = local.push_urls.apply_roster_event
    }
  }

  retry_policy {
    minimum_backoff = var.retry_minimum_backoff
    maximum_backoff = var.retry_maximum_backoff
  }

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.dead_letter.id
    max_delivery_attempts = var.max_delivery_attempts
  }

  expiration_policy {
    ttl = ""
  }

  depends_on = [
    google_cloudfunctions2_function.rostersync,
    google_pubsub_topic_iam_member.dead_letter_publisher,
    google_service_account_iam_member.pubsub_agent_mints_push_tokens,
    google_cloud_run_service_iam_member.invokers,
  ]
}

# Google Classroom publishes course roster change notifications here once a registration exists
# (notifications.tf: the registration's renewal and the subscription that consumes them).
resource "google_pubsub_topic" "classroom_notifications" {
  #checkov:skip=CKV_GCP_83:Classroom notifications carry only course and user ids; Google-managed encryption at rest is enough (see the roster-events topic).
  project = var.project_id
  name    = var.classroom_notifications_topic
  labels  = local.labels

  message_retention_duration = "604800s"

  depends_on = [google_project_service.enabled]
}

# OneRoster CSV bundles: a SIS or ClassLink drops a zip into this bucket; Cloud Storage notifies the
# oneroster-bundles topic on OBJECT_FINALIZE, and its ordered push subscription feeds
# import_oneroster_bundle (with the same OIDC checks, retries and dead letters as the applier).

data "google_storage_project_service_account" "gcs_agent" {
  project = var.project_id
}

resource "google_storage_bucket" "oneroster_bundles" {
  #checkov:skip=CKV_GCP_62:Access logs would need a second log bucket; Cloud Audit Logs record who wrote bundles, and the importer logs each one.
  name     = "${var.project_id}-${var.name_prefix}-oneroster-bundles"
  project  = var.project_id
  location = var.region
  labels   = local.labels

  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"

  versioning {
    enabled = true
  }

  # Bundles carry student names and emails: keep them only as long as a re-import may need them.
  lifecycle_rule {
    condition {
      age = 30
    }
    action {
      type = "Delete"
    }
  }
  lifecycle_rule {
    condition {
      days_since_noncurrent_time = 7
    }
    action {
      type = "Delete"
    }
  }
}

resource "google_pubsub_topic" "oneroster_bundles" {
  #checkov:skip=CKV_GCP_83:Notifications carry only bucket and object names; Google-managed encryption at rest is enough (see the roster-events topic).
  project = var.project_id
  name    = "${var.name_prefix}-oneroster-bundles"
  labels  = local.labels

  depends_on = [google_project_service.enabled]
}

resource "google_pubsub_topic_iam_member" "gcs_publishes_bundle_notifications" {
  project = var.project_id
  topic   = google_pubsub_topic.oneroster_bundles.id
  role    = "roles/pubsub.publisher"
  member  = "serviceAccount:${data.google_storage_project_service_account.gcs_agent.email_address}"
}

resource "google_storage_notification" "oneroster_bundles" {
  bucket         = google_storage_bucket.oneroster_bundles.name
  payload_format = "JSON_API_V1"
  topic          = google_pubsub_topic.oneroster_bundles.id
  event_types    = ["OBJECT_FINALIZE"]

  depends_on = [google_pubsub_topic_iam_member.gcs_publishes_bundle_notifications]
}

# The importer reads the bundles, nothing else.
resource "google_storage_bucket_iam_member" "functions_read_bundles" {
  bucket = google_storage_bucket.oneroster_bundles.name
  role   = "roles/storage.objectViewer"
  member = local.function_members["import_oneroster_bundle"]
}

resource "google_pubsub_subscription" "oneroster_bundles" {
  project = var.project_id
  name    = "${var.name_prefix}-oneroster-bundles-import"
  topic   = google_pubsub_topic.oneroster_bundles.id
  labels  = local.labels

  # One ordering key for no message: bundles are ordered by their generation in the importer.
  enable_message_ordering    = true
  ack_deadline_seconds       = min(600, var.poll_timeout_seconds + 30)
  message_retention_duration = "604800s"

  push_config {
    push_endpoint = local.push_urls.import_oneroster_bundle

    oidc_token {
      service_account_email = google_service_account.pubsub_push.email
      audience              = local.push_urls.import_oneroster_bundle
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

resource "google_pubsub_subscription_iam_member" "bundle_dead_letter_subscriber" {
  project      = var.project_id
  subscription = google_pubsub_subscription.oneroster_bundles.name
  role         = "roles/pubsub.subscriber"
  member       = local.pubsub_service_agent
}

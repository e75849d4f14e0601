# Values derived from the variables and shared by several files.
data "google_project" "this" {
  project_id = var.project_id
}

locals {
  # Label values: lowercase letters, digits, "_" and "-", at most 63 characters.
  district_label = substr(trim(replace(lower(var.district_name), "/[^a-z0-9_-]+/", "-"), "-"), 0, 63)

  labels = merge(var.labels, {
    app      = "rostersync"
    district = local.district_label
  })

  # The Pub/Sub service agent: it dead-letters messages and mints the push subscription's OIDC tokens.
  pubsub_service_agent = "serviceAccount:${google_project_service_identity.pubsub.email}"
}

# Makes sure the Pub/Sub service agent exists before we grant it roles (it is created lazily).
resource "google_project_service_identity" "pubsub" {
  provider = google-beta

  project = var.project_id
  service = "pubsub.googleapis.com"

  depends_on = [google_project_service.enabled]
}

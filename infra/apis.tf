# The Google Cloud APIs rostersync uses. Eventarc is not enabled: the applier is fed by an explicit
# Pub/Sub push subscription (pubsub.tf), not an Eventarc trigger, so we control message ordering,
# the retry policy and the dead-letter policy ourselves.
locals {
  required_apis = toset([
    "artifactregistry.googleapis.com", # Cloud Functions (2nd gen) stores the built images here
    "classroom.googleapis.com",        # the applier's target
    "cloudbuild.googleapis.com",       # builds the functions from the uploaded source
    "cloudfunctions.googleapis.com",
    "cloudresourcemanager.googleapis.com",
    "cloudscheduler.googleapis.com", # runs the poller every few minutes
    "firestore.googleapis.com",
    "iam.googleapis.com",
    "iamcredentials.googleapis.com", # signJwt, for domain-wide delegation from a keyless runtime
    "logging.googleapis.com",
    "monitoring.googleapis.com", # alert policies and the dashboard (monitoring.tf)
    "pubsub.googleapis.com",
    "run.googleapis.com", # 2nd gen functions run as Cloud Run services
    "secretmanager.googleapis.com",
    "storage.googleapis.com",
  ])
}

resource "google_project_service" "enabled" {
  for_each = local.required_apis

  project = var.project_id
  service = each.value

  # Turning an API off on `terraform destroy` could break other things in a shared project.
  disable_on_destroy         = false
  disable_dependent_services = false
}

# The status page (functions/rostersync/status_page.py): a read-only web page of the sync's status,
# sections, problems and overrides, with a search box. It runs as its own service account, which
# may only read Firestore, and only the accounts in status_page_viewers may invoke it.
#
# It has no sign-in of its own. Reaching it:
# - `gcloud run services proxy <prefix>-status-page --region <REGION>` from a workstation of a
#   viewer (IAM checks the caller's Google identity; the page is then on http://localhost:8080); or
# - Google sign-in in the browser through Identity-Aware Proxy: an external HTTPS load balancer
#   with a serverless NEG for the service and IAP enabled on its backend service (not created here:
#   it needs a domain and a certificate). Grant the IAP service agent
#   (service-<project number>@gcp-sa-iap.iam.gserviceaccount.com) run.invoker by adding it to
#   status_page_viewers, and the people roles/iap.httpsResourceAccessor on the backend service.
# Ingress admits internal traffic and the load balancer only, never the internet directly.

variable "status_page_viewers" {
  description = "IAM members that may open the status page (run.invoker), e.g. [\"group:rostersync-admins@district.example.org\"] or the IAP service agent. Empty: nobody but project owners."
  type        = list(string)
  default     = []
}

resource "google_service_account" "status_page" {
  project      = var.project_id
  account_id   = "${var.name_prefix}-status-page"
  display_name = "rostersync status page (${var.district_name})"
  description  = "Runtime of the read-only rostersync status page: reads Firestore, nothing else."
  depends_on   = [google_project_service.enabled]
}

resource "google_project_iam_member" "status_page" {
  for_each = toset([
    "roles/datastore.viewer",  # read sections, problems, overrides, sync_state, dead_letters, held_batches
    "roles/logging.logWriter", # structured logs
  ])

  project = var.project_id
  role    = each.value
  member  = "serviceAccount:${google_service_account.status_page.email}"
}

resource "google_cloudfunctions2_function" "status_page" {
  project     = var.project_id
  location    = var.region
  name        = "${var.name_prefix}-status-page"
  description = "rostersync for ${var.district_name}: the read-only status page."
  labels      = local.labels

  build_config {
    runtime         = "python311"
    entry_point     = "status_page"
    service_account = google_service_account.build.id
    source {
      storage_source {
        bucket = local.function_source.bucket
        object = local.function_source.object
      }
    }
  }

  service_config {
    service_account_email            = google_service_account.status_page.email
    available_memory                 = var.function_memory
    timeout_seconds                  = 60
    min_instance_count               = 0
    max_instance_count               = 2
    max_instance_request_concurrency = 1 # google-cloud-firestore's client is shared per instance
    ingress_settings                 = "ALLOW_INTERNAL_AND_GCLB"
    all_traffic_on_latest_revision   = true

    # Only what the page reads: the project and database (it reads no Clever or Classroom; its
    # LOG_LEVEL stays the default, info).
    environment_variables = {
      GOOGLE_CLOUD_PROJECT = var.project_id
      FIRESTORE_DATABASE   = google_firestore_database.rostersync.name
    }
  }

  depends_on = [
    google_project_service.enabled,
    google_project_iam_member.status_page,
    google_project_iam_member.build,
    google_storage_bucket_iam_member.build_reads_source,
  ]
}

resource "google_cloud_run_service_iam_member" "status_page_viewers" {
  for_each = toset(var.status_page_viewers)

  project  = var.project_id
  location = google_cloudfunctions2_function.status_page.location
  service  = google_cloudfunctions2_function.status_page.name
  role     = "roles/run.invoker"
  member   = each.value
}

output "status_page_url" {
  description = "The status page's run.app URL (reach it through IAP or `gcloud run services proxy`, see status_page.tf)."
  value       = google_cloudfunctions2_function.status_page.service_config[0].uri
}

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

output "status_page_url" {
  description = "The status page's run.app URL (reach it through IAP or `gcloud run services proxy`, see status_page.tf)."
  value       = google_cloudfunctions2_function.rostersync["status_page"].service_config[0].uri
}

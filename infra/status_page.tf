# The status page (functions/rostersync/status_page.py): a read-only web page of the sync's status,
# sections, problems and overrides, with a search box. It runs as its own service account, which
# may only read Firestore, and only the accounts in status_page_viewers may invoke it.
#
# It has no sign-in of its own. Reaching it:
# - `gcloud run services proxy <prefix>-status-page --region <REGION>` from a workstation of a
#   viewer (IAM checks the caller's Google identity; the page is then on http://localhost:8080); or
# - Google sign-in in the browser through Identity-Aware Proxy: set status_page_domain (a name you
#   can point at the load balancer's address, output status_page_ip) and this file adds an
#   external HTTPS load balancer (Google-managed certificate, a serverless NEG for the service, IAP
#   on its backend service), lets IAP's service agent invoke the service, and lets
#   status_page_viewers through IAP (roles/iap.httpsResourceAccessor). IAP uses a Google-managed
#   OAuth client; the project needs an OAuth consent screen (APIs & Services > OAuth consent
#   screen, type Internal) before the first sign-in.
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

variable "status_page_domain" {
  description = "A DNS name for the status page behind Identity-Aware Proxy (Google sign-in), e.g. \"rostersync.district.example.org\". Empty: no load balancer, reach it with gcloud run services proxy."
  type        = string
  default     = ""
}

locals {
  status_page_iap = var.status_page_domain != "" ? 1 : 0
}

resource "google_project_service" "iap" {
  for_each           = local.status_page_iap == 1 ? toset(["iap.googleapis.com", "compute.googleapis.com"]) : toset([])
  project            = var.project_id
  service            = each.value
  disable_on_destroy = false
}

resource "google_project_service_identity" "iap" {
  count    = local.status_page_iap
  provider = google-beta
  project  = var.project_id
  service  = "iap.googleapis.com"
}

# IAP calls the service as its service agent, with the signed-in user's identity in a header.
resource "google_cloud_run_service_iam_member" "status_page_iap" {
  count    = local.status_page_iap
  project  = var.project_id
  location = google_cloudfunctions2_function.rostersync["status_page"].location
  service  = google_cloudfunctions2_function.rostersync["status_page"].name
  role     = "roles/run.invoker"
  member   = "serviceAccount:${google_project_service_identity.iap[0].email}"
}

resource "google_compute_region_network_endpoint_group" "status_page" {
  count                 = local.status_page_iap
  project               = var.project_id
  name                  = "${var.name_prefix}-status-page"
  region                = var.region
  network_endpoint_type = "SERVERLESS"
  cloud_run {
    service = google_cloudfunctions2_function.rostersync["status_page"].name
  }
}

resource "google_compute_backend_service" "status_page" {
  count                 = local.status_page_iap
  project               = var.project_id
  name                  = "${var.name_prefix}-status-page"
  load_balancing_scheme = "EXTERNAL_MANAGED"
  protocol              = "HTTPS"
  backend {
    group = google_compute_region_network_endpoint_group.status_page[0].id
  }
  iap {
    enabled = true
  }
  log_config {
    enable = true
  }
  depends_on = [google_project_service.iap]
}

resource "google_iap_web_backend_service_iam_member" "status_page_viewers" {
  for_each            = local.status_page_iap == 1 ? toset(var.status_page_viewers) : toset([])
  project             = var.project_id
  web_backend_service = google_compute_backend_service.status_page[0].name
  role                = "roles/iap.httpsResourceAccessor"
  member              = each.value
}

resource "google_compute_global_address" "status_page" {
  count   = local.status_page_iap
  project = var.project_id
  name    = "${var.name_prefix}-status-page"
}

resource "google_compute_managed_ssl_certificate" "status_page" {
  count   = local.status_page_iap
  project = var.project_id
  name    = "${var.name_prefix}-status-page"
  managed {
    domains = [var.status_page_domain]
  }
}

resource "google_compute_ssl_policy" "status_page" {
  count           = local.status_page_iap
  project         = var.project_id
  name            = "${var.name_prefix}-status-page"
  profile         = "MODERN"
  min_tls_version = "TLS_1_2"
}

resource "google_compute_url_map" "status_page" {
  count           = local.status_page_iap
  project         = var.project_id
  name            = "${var.name_prefix}-status-page"
  default_service = google_compute_backend_service.status_page[0].id
}

resource "google_compute_target_https_proxy" "status_page" {
  count            = local.status_page_iap
  project          = var.project_id
  name             = "${var.name_prefix}-status-page"
  url_map          = google_compute_url_map.status_page[0].id
  ssl_certificates = [google_compute_managed_ssl_certificate.status_page[0].id]
  ssl_policy       = google_compute_ssl_policy.status_page[0].id
}

resource "google_compute_global_forwarding_rule" "status_page" {
  count                 = local.status_page_iap
  project               = var.project_id
  name                  = "${var.name_prefix}-status-page"
  load_balancing_scheme = "EXTERNAL_MANAGED"
  ip_address            = google_compute_global_address.status_page[0].address
  port_range            = "443"
  target                = google_compute_target_https_proxy.status_page[0].id
}

output "status_page_ip" {
  description = "With status_page_domain set: the address to point that DNS name at (an A record)."
  value       = local.status_page_iap == 1 ? google_compute_global_address.status_page[0].address : null
}

output "status_page_url" {
  description = "The status page's run.app URL (reach it through IAP or `gcloud run services proxy`, see status_page.tf)."
  value       = google_cloudfunctions2_function.rostersync["status_page"].service_config[0].uri
}

variable "status_page_timezone" {
  description = "The district's time zone (an IANA name such as America/Chicago): the status page shows times in it."
  type        = string
  default     = "UTC"

  validation {
    condition     = can(regex("^[A-Za-z_]+(/[A-Za-z0-9_+-]+)*$", var.status_page_timezone))
    error_message = "status_page_timezone must be an IANA time zone name such as America/Chicago or UTC."
  }
}

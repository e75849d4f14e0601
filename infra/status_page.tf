# The status page (functions/rostersync/admin/status_page.py): a read-only web page of the sync's status,
# sections, problems and overrides, with a search box. It runs as its own service account, which
# may only read Firestore, and only the accounts in status_page_viewers may invoke it.
#
# Reaching it: Google sign-in in the browser through Identity-Aware Proxy. Set status_page_domain
# (a name you point at the load balancer's address, output status_page_ip) and this file adds an
# external HTTPS load balancer (Google-managed certificate, a serverless NEG for the service, IAP
# on its backend service), lets IAP's service agent invoke the service, and lets
# status_page_viewers through IAP (roles/iap.httpsResourceAccessor). IAP uses a Google-managed
# OAuth client; the project needs an OAuth consent screen (APIs & Services > OAuth consent
# screen, type Internal) before the first sign-in. The page verifies IAP's signed header
# (x-goog-iap-jwt-assertion, audience: this backend service, IAP_AUDIENCE) on every request and
# shows the identity in it; without a valid one it answers 403.
# Ingress admits internal traffic and the load balancer only, never the internet directly, so
# `gcloud run services proxy` (which comes from the internet) cannot reach it; without
# status_page_domain the deployed page answers nothing but 403. An administrator can run the page
# on a workstation instead, with their own credentials (docs/privacy.md, "The status page").

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

# Read sections, problems, overrides, sync_state, dead_letters, held_batches: this database only.
resource "google_project_iam_member" "status_page" {
  project = var.project_id
  role    = "roles/datastore.viewer"
  member  = "serviceAccount:${google_service_account.status_page.email}"

  condition {
    title       = "rostersync database only"
    description = "Firestore access limited to the ${var.firestore_database} database"
    expression  = local.firestore_database_condition
  }
}

resource "google_project_iam_member" "status_page_logs" {
  project = var.project_id
  role    = "roles/logging.logWriter"
  member  = "serviceAccount:${google_service_account.status_page.email}"
}

variable "status_page_domain" {
  description = "A DNS name for the status page behind Identity-Aware Proxy (Google sign-in), e.g. \"rostersync.district.example.org\". Empty: no load balancer, reach it with gcloud run services proxy."
  type        = string
  default     = ""
}

locals {
  status_page_iap  = var.status_page_domain != "" ? 1 : 0
  status_page_name = "${var.name_prefix}-status-page"
  # The audience of IAP's signed header: /projects/<number>/global/backendServices/<id>.
  status_page_iap_audience = local.status_page_iap == 1 ? "/projects/${data.google_project.this.number}/global/backendServices/${google_compute_backend_service.status_page[0].generated_id}" : ""
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
    # The function's (Cloud Run service's) name, not a reference to it: the function's IAP_AUDIENCE
    # names the backend service, which would otherwise depend on the function.
    service = local.status_page_name
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
  description = "The status page's run.app URL (internal and load balancer ingress only: reach it through IAP at status_page_domain, see status_page.tf)."
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

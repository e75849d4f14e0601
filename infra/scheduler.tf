# Runs the poller on poll_schedule, authenticated with an OIDC token of the scheduler account
# (which has run.invoker on the poller and nothing else).
resource "google_cloud_scheduler_job" "poll_clever" {
  count = var.roster_source == "clever" ? 1 : 0 # its function is deployed for Clever districts only

  project     = var.project_id
  region      = var.region
  name        = "${var.name_prefix}-poll-clever"
  description = "rostersync for ${var.district_name}: poll Clever for roster changes."
  schedule    = var.poll_schedule
  time_zone   = var.poll_time_zone
  paused      = var.poll_paused

  # Wait for the whole poll (it answers within its timeout), plus a margin.
  attempt_deadline = "${min(1800, var.poll_timeout_seconds + 60)}s"

  retry_config {
    # A failed poll leaves the cursor where it was; the next scheduled run is the retry.
    retry_count = 0
  }

  http_target {
    http_method = "POST"
    uri         = google_cloudfunctions2_function.rostersync["poll_clever"].service_config[0].uri

    oidc_token {
      service_account_email = google_service_account.scheduler.email
      audience              = local.scheduled_urls["poll_clever"] # as the function checks it (SCHEDULER_AUDIENCE)
    }
  }

  depends_on = [google_cloud_run_service_iam_member.invokers]
}

output "functions_service_account_emails" {
  description = "Runtime service account of each function (one each, with only its own grants)."
  value       = { for entry, account in google_service_account.function : entry => account.email }
}

output "domain_wide_delegation_client_id" {
  description = "Numeric OAuth client id of the Classroom delegate account: enter it in the Google Admin console under Security > Access and data control > API controls > Domain-wide delegation."
  value       = google_service_account.classroom.unique_id
}

output "domain_wide_delegation_scopes" {
  description = "The OAuth scopes to grant that client id, exactly these (comma-separated, as the Admin console wants them); with guardians = \"invite\" also classroom.guardianlinks.students."
  value = join(",", concat([
    "https://www.googleapis.com/auth/classroom.courses",
    "https://www.googleapis.com/auth/classroom.rosters",
    "https://www.googleapis.com/auth/classroom.profile.emails",
  ], local.guardian_scopes))
}

output "poll_function_url" {
  description = "URL of the poller function (callable only with an OIDC token of the scheduler account)."
  value       = try(google_cloudfunctions2_function.rostersync["poll_clever"].service_config[0].uri, google_cloudfunctions2_function.rostersync["poll_oneroster"].service_config[0].uri)
}

output "apply_function_url" {
  description = "URL of the applier function (the push subscription's endpoint)."
  value       = google_cloudfunctions2_function.rostersync["apply_roster_event"].service_config[0].uri
}

output "roster_events_topic" {
  description = "Topic the poller publishes roster changes to."
  value       = google_pubsub_topic.roster_events.name
}

output "apply_subscription" {
  description = "Push subscription that delivers roster changes to the applier."
  value       = google_pubsub_subscription.apply.name
}

output "dead_letter_topic" {
  description = "Topic of the roster changes the applier failed max_delivery_attempts times."
  value       = google_pubsub_topic.dead_letter.name
}

output "dead_letter_subscription" {
  description = "Push subscription feeding dead-lettered roster changes to record_dead_letter (Firestore dead_letters)."
  value       = google_pubsub_subscription.dead_letter.name
}

output "classroom_notifications_topic" {
  description = "Topic for Google Classroom roster notifications."
  value       = google_pubsub_topic.classroom_notifications.name
}

output "clever_token_secret" {
  description = "Secret Manager secret to put the Clever district app token in."
  value       = google_secret_manager_secret.clever_token.secret_id
}

output "scheduler_job" {
  description = "Cloud Scheduler job that runs the poller."
  value       = try(google_cloud_scheduler_job.poll_clever[0].name, google_cloud_scheduler_job.poll_oneroster["delta"].name)
}

output "first_sync_command" {
  description = "Runs the poller now instead of waiting for the schedule."
  value       = "gcloud scheduler jobs run ${try(google_cloud_scheduler_job.poll_clever[0].name, google_cloud_scheduler_job.poll_oneroster["delta"].name)} --location=${var.region} --project=${var.project_id}"
}

output "firestore_database" {
  description = "Firestore database holding the links (sections), problems and the cursor (sync_state)."
  value       = google_firestore_database.rostersync.name
}

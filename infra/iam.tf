# Identities and least-privilege grants. No primitive roles (owner/editor) anywhere; grants are on
# the single resource that needs them wherever the service supports it.
#
#   <prefix>-functions    runtime of every function but the status page
#   <prefix>-scheduler    Cloud Scheduler's identity: may invoke the scheduled functions, nothing else
#   <prefix>-pubsub-push  the push subscriptions' identity: may invoke the applier and the dead-letter recorder, nothing else
#   <prefix>-build        Cloud Build's identity for building the functions (instead of the default
#                         compute service account, which has roles/editor in older projects)

resource "google_service_account" "functions" {
  project      = var.project_id
  account_id   = "${var.name_prefix}-functions"
  display_name = "rostersync functions (${var.district_name})"
  description  = "Runtime of the rostersync functions. Its client id is granted domain-wide delegation for the Classroom scopes."
  depends_on   = [google_project_service.enabled]
}

resource "google_service_account" "scheduler" {
  project      = var.project_id
  account_id   = "${var.name_prefix}-scheduler"
  display_name = "rostersync scheduler (${var.district_name})"
  description  = "Cloud Scheduler calls the rostersync poller with an OIDC token of this account."
  depends_on   = [google_project_service.enabled]
}

resource "google_service_account" "pubsub_push" {
  project      = var.project_id
  account_id   = "${var.name_prefix}-pubsub-push"
  display_name = "rostersync Pub/Sub push (${var.district_name})"
  description  = "Pub/Sub pushes roster events to the rostersync applier with an OIDC token of this account."
  depends_on   = [google_project_service.enabled]
}

resource "google_service_account" "build" {
  project      = var.project_id
  account_id   = "${var.name_prefix}-build"
  display_name = "rostersync function builds (${var.district_name})"
  description  = "Cloud Build builds the rostersync functions as this account."
  depends_on   = [google_project_service.enabled]
}

# -- the functions' runtime ---------------------------------------------------------------------

# Project-level only where the service has no narrower resource: Firestore access is granted per
# project, and log writing is a project permission.
resource "google_project_iam_member" "functions" {
  for_each = toset([
    "roles/datastore.user",    # read and write sections, problems, sync_state
    "roles/logging.logWriter", # structured logs
  ])

  project = var.project_id
  role    = each.value
  member  = "serviceAccount:${google_service_account.functions.email}"
}

# The poller publishes roster changes: publisher on this one topic only.
resource "google_pubsub_topic_iam_member" "functions_publish_roster_events" {
  project = var.project_id
  topic   = google_pubsub_topic.roster_events.name
  role    = "roles/pubsub.publisher"
  member  = "serviceAccount:${google_service_account.functions.email}"
}

# Domain-wide delegation from a keyless runtime: the applier signs the delegation JWT (with
# sub = ADMIN_SUBJECT) through the IAM Credentials signJwt API, as its own account. This grant is
# on the account itself, so it cannot act as any other account.
resource "google_service_account_iam_member" "functions_sign_jwt_as_itself" {
  service_account_id = google_service_account.functions.name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = "serviceAccount:${google_service_account.functions.email}"
}

# Who may invoke which function: google_cloud_run_service_iam_member.invokers in functions.tf.

# -- the Pub/Sub service agent ------------------------------------------------------------------

# Dead-lettering: the agent republishes to the dead-letter topic and acknowledges on the source
# subscription.
resource "google_pubsub_topic_iam_member" "dead_letter_publisher" {
  project = var.project_id
  topic   = google_pubsub_topic.dead_letter.name
  role    = "roles/pubsub.publisher"
  member  = local.pubsub_service_agent
}

resource "google_pubsub_subscription_iam_member" "dead_letter_subscriber" {
  project      = var.project_id
  subscription = google_pubsub_subscription.apply.name
  role         = "roles/pubsub.subscriber"
  member       = local.pubsub_service_agent
}

# Pub/Sub mints the push OIDC tokens as the push account. Projects created after April 2021 have
# this through the agent's own role; older ones need it granted (here: on that one account only).
resource "google_service_account_iam_member" "pubsub_agent_mints_push_tokens" {
  service_account_id = google_service_account.pubsub_push.name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = local.pubsub_service_agent
}

# Google Classroom publishes roster notifications as this Google-owned account.
resource "google_pubsub_topic_iam_member" "classroom_publishes_notifications" {
  project = var.project_id
  topic   = google_pubsub_topic.classroom_notifications.name
  role    = "roles/pubsub.publisher"
  member  = "serviceAccount:classroom-notifications@system.gserviceaccount.com"
}

# -- the build account --------------------------------------------------------------------------

resource "google_project_iam_member" "build" {
  for_each = toset([
    "roles/logging.logWriter",       # build logs
    "roles/artifactregistry.writer", # push the function images (gcf-artifacts repository)
  ])

  project = var.project_id
  role    = each.value
  member  = "serviceAccount:${google_service_account.build.email}"
}

resource "google_storage_bucket_iam_member" "build_reads_source" {
  bucket = google_storage_bucket.functions_source.name
  role   = "roles/storage.objectViewer"
  member = "serviceAccount:${google_service_account.build.email}"
}

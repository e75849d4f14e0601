# Identities and least-privilege grants. No primitive roles (owner/editor) anywhere; grants are on
# the single resource that needs them wherever the service supports it.
#
#   <prefix>-fn-<name>    one runtime account per function (local.function_accounts), each with
#                         only the grants its own work needs (below)
#   <prefix>-classroom    the Classroom delegate: its client id holds domain-wide delegation; it
#                         runs nothing, and only the functions that call Classroom may sign its JWTs
#   <prefix>-scheduler    Cloud Scheduler's identity: may invoke the scheduled functions, nothing else
#   <prefix>-pubsub-push  the push subscriptions' identity: may invoke the applier and the dead-letter recorder, nothing else
#   <prefix>-build        Cloud Build's identity for building the functions (instead of the default
#                         compute service account, which has roles/editor in older projects)

locals {
  # One runtime account per function (its id after "<prefix>-"), and what each may do beside
  # reading and writing the project's Firestore database and writing logs:
  #   classroom  sign the delegate's JWT (domain-wide delegation as ADMIN_SUBJECT)
  #   publish    publish to roster-events
  # Secrets and the bundle bucket are granted to their one reader where they are defined.
  function_accounts = {
    poll_clever                   = { id = "fn-poll-clever", classroom = false, publish = true }
    apply_roster_event            = { id = "fn-apply", classroom = true, publish = false }
    record_dead_letter            = { id = "fn-deadletters", classroom = false, publish = false }
    reconcile_courses             = { id = "fn-reconcile", classroom = true, publish = false }
    record_classroom_notification = { id = "fn-notify", classroom = true, publish = false }
    renew_classroom_registration  = { id = "fn-renew", classroom = false, publish = false }
    poll_oneroster                = { id = "fn-oneroster", classroom = false, publish = true }
    import_oneroster_bundle       = { id = "fn-bundles", classroom = false, publish = true }
  }
  function_members = { for entry, a in local.function_accounts : entry => "serviceAccount:${google_service_account.function[entry].email}" }

  # Firestore roles are granted on the project, so they are limited to this deployment's database
  # by an IAM condition (a shared project's other databases stay out of reach).
  firestore_database_condition = "resource.name == \"projects/${var.project_id}/databases/${var.firestore_database}\""
}

resource "google_service_account" "function" {
  for_each     = local.function_accounts
  project      = var.project_id
  account_id   = "${var.name_prefix}-${each.value.id}"
  display_name = "rostersync ${each.key} (${var.district_name})"
  description  = "Runtime of the rostersync function ${each.key} only."
  depends_on   = [google_project_service.enabled]
}

resource "google_service_account" "classroom" {
  project      = var.project_id
  account_id   = "${var.name_prefix}-classroom"
  display_name = "rostersync Classroom delegate (${var.district_name})"
  description  = "Its client id is granted domain-wide delegation for the Classroom scopes; the functions that call Classroom sign its JWT (signJwt only). Runs nothing, has no key."
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

# Firestore: read and write, on this deployment's database only (IAM condition).
resource "google_project_iam_member" "function_firestore" {
  for_each = local.function_accounts

  project = var.project_id
  role    = "roles/datastore.user"
  member  = local.function_members[each.key]

  condition {
    title       = "rostersync database only"
    description = "Firestore access limited to the ${var.firestore_database} database"
    expression  = local.firestore_database_condition
  }
}

# Log writing is a project permission.
resource "google_project_iam_member" "function_logs" {
  for_each = local.function_accounts

  project = var.project_id
  role    = "roles/logging.logWriter"
  member  = local.function_members[each.key]
}

# The pollers and the bundle importer publish roster changes: publisher on this one topic only.
resource "google_pubsub_topic_iam_member" "functions_publish_roster_events" {
  for_each = { for entry, a in local.function_accounts : entry => a if a.publish }

  project = var.project_id
  topic   = google_pubsub_topic.roster_events.name
  role    = "roles/pubsub.publisher"
  member  = local.function_members[each.key]
}

# Domain-wide delegation from keyless runtimes: a function that calls Classroom signs the
# delegation JWT (sub = ADMIN_SUBJECT) as the Classroom delegate through the IAM Credentials
# signJwt API. Token Creator would also let it mint access and ID tokens; this role holds
# iam.serviceAccounts.signJwt alone, granted on the delegate account only.
resource "google_project_iam_custom_role" "sign_jwt" {
  project     = var.project_id
  role_id     = "${replace(var.name_prefix, "-", "_")}_signJwt"
  title       = "rostersync: sign a JWT as the Classroom delegate"
  description = "iam.serviceAccounts.signJwt only: the keyless domain-wide delegation of the Classroom calls."
  permissions = ["iam.serviceAccounts.signJwt"]
}

resource "google_service_account_iam_member" "classroom_sign_jwt" {
  for_each = { for entry, a in local.function_accounts : entry => a if a.classroom }

  service_account_id = google_service_account.classroom.name
  role               = google_project_iam_custom_role.sign_jwt.name
  member             = local.function_members[each.key]
}

# Data Access audit logs for Firestore: who read or wrote student data, and when (Cloud Logging's
# _Default bucket keeps them 30 days; route them to a longer bucket if the district's agreement
# asks). The service name datastore.googleapis.com configures Firestore's too.
resource "google_project_iam_audit_config" "firestore_data_access" {
  project = var.project_id
  service = "datastore.googleapis.com"

  audit_log_config {
    log_type = "DATA_READ"
  }
  audit_log_config {
    log_type = "DATA_WRITE"
  }
  audit_log_config {
    log_type = "ADMIN_READ"
  }
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

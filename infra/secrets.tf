# The Clever district app token. Terraform creates the secret and who may read it, never its value:
# the value is added with `gcloud secrets versions add` (docs/deploy.md, "The Clever side"), so it never
# lands in the terraform state.
resource "google_secret_manager_secret" "clever_token" {
  project   = var.project_id
  secret_id = var.clever_token_secret_id
  labels    = local.labels

  replication {
    auto {}
  }

  depends_on = [google_project_service.enabled]
}

# Only the two functions that read Clever (the poller and the reconcile pass), on this one secret.
resource "google_secret_manager_secret_iam_member" "functions_read_clever_token" {
  for_each  = toset(["poll_clever", "reconcile_courses"])
  project   = var.project_id
  secret_id = google_secret_manager_secret.clever_token.secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = local.function_members[each.key]
}

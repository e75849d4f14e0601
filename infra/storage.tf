# The functions' source: functions/ zipped by terraform and uploaded to a private bucket. The object
# name carries the zip's hash, so a code change uploads a new object and redeploys the functions.

data "archive_file" "functions_source" {
  type        = "zip"
  source_dir  = "${path.module}/../functions"
  output_path = "${path.module}/build/functions-source.zip"
  # Directory patterns end without "/**" so that both the glob (archive >= 2.4) and the older
  # prefix matching skip the whole directory.
  excludes = [
    "__pycache__",
    "**/__pycache__",
    "**/*.pyc",
    ".pytest_cache",
    ".ruff_cache",
    # What `pip install -e .` leaves beside the package (the functions install from requirements.txt).
    "rostersync.egg-info",
    "**/*.egg-info",
  ]
}

resource "google_storage_bucket" "functions_source" {
  #checkov:skip=CKV_GCP_62:Access logs of a bucket that only terraform writes and only Cloud Build reads would need a second log bucket; Cloud Audit Logs already record who changed its objects.
  name     = "${var.project_id}-${var.name_prefix}-source"
  project  = var.project_id
  location = var.region
  labels   = local.labels

  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = true # holds only build inputs that terraform re-creates

  versioning {
    enabled = true
  }

  # Every deploy uploads a new object; old ones are only useful for a rollback for a while.
  lifecycle_rule {
    condition {
      age = 90
    }
    action {
      type = "Delete"
    }
  }
  lifecycle_rule {
    condition {
      days_since_noncurrent_time = 30
    }
    action {
      type = "Delete"
    }
  }

  depends_on = [google_project_service.enabled]
}

resource "google_storage_bucket_object" "functions_source" {
  name   = "functions-source-${data.archive_file.functions_source.output_md5}.zip"
  bucket = google_storage_bucket.functions_source.name
  source = data.archive_file.functions_source.output_path
}

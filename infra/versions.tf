# Terraform and provider versions. Pinned to a minor series so a district's `terraform init` a year
# from now resolves to providers this configuration was written against.
#
# State: local by default. To keep it in a Cloud Storage bucket instead (recommended, see docs/deploy.md
# "Optional: keep the terraform state in a bucket"), add a backend.tf next to this file with
#   terraform { backend "gcs" { bucket = "<your state bucket>"  prefix = "rostersync" } }
terraform {
  required_version = ">= 1.11.0"

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = "~> 6.40"
    }
    google-beta = {
      source  = "hashicorp/google-beta"
      version = "~> 6.40"
    }
    archive = {
      source  = "hashicorp/archive"
      version = "~> 2.7"
    }
  }
}

provider "google" {
  project = var.project_id
  region  = var.region
}

# Only for google_project_service_identity (the Pub/Sub service agent), which is beta-only.
provider "google-beta" {
  project = var.project_id
  region  = var.region
}

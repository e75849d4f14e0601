# Firestore (native mode) holds rostersync's state:
#   sections/{clever section id}   the link to the Classroom course (state, course_id, members ...)
#   problems/{key}                 why Classroom and Clever differ (open, section_id, kind, last_seen ...)
#   sync_state/clever              the Clever event cursor and the last poll's outcome
#   audit/{auto id}                what the sync applied or skipped, and why (expire_at: TTL)
# Retention (docs/privacy.md): each collection below with a TTL policy on expire_at; the code sets
# expire_at when the document stops being needed (functions/rostersync/domain/retention.py).
resource "google_firestore_database" "rostersync" {
  project     = var.project_id
  name        = var.firestore_database
  location_id = var.firestore_location
  type        = "FIRESTORE_NATIVE"

  # Seven days of history to recover from a bad sync (e.g. a wrong SECTION_DELETED_ACTION).
  point_in_time_recovery_enablement = "POINT_IN_TIME_RECOVERY_ENABLED"
  delete_protection_state           = var.firestore_delete_protection ? "DELETE_PROTECTION_ENABLED" : "DELETE_PROTECTION_DISABLED"
  # `terraform destroy` leaves the database (and the links) in place unless protection is off.
  deletion_policy = var.firestore_delete_protection ? "ABANDON" : "DELETE"

  depends_on = [google_project_service.enabled]
}

# The admin view lists open problems, newest first:
#   problems where open == true order by last_seen desc
resource "google_firestore_index" "open_problems_by_last_seen" {
  project    = var.project_id
  database   = google_firestore_database.rostersync.name
  collection = "problems"

  fields {
    field_path = "open"
    order      = "ASCENDING"
  }
  fields {
    field_path = "last_seen"
    order      = "DESCENDING"
  }
}

# The audit trail expires: each record carries expire_at (written AUDIT_RETENTION_DAYS after it),
# and Firestore's TTL policy deletes it some time after that (usually within a day).
resource "google_firestore_field" "audit_expire_at" {
  project    = var.project_id
  database   = google_firestore_database.rostersync.name
  collection = "audit"
  field      = "expire_at"

  ttl_config {}
  # A timestamp only ever compared with now: no single-field index needed.
  index_config {}
}

# A link keeps its members in one map (sections/{id}.members, about 130 bytes a member). Indexed,
# every member would cost a dozen index entries and a 5,000-member section would pass Firestore's
# 40,000 index entries a document; nothing queries inside the map, so it is not indexed at all.
# Who is in which section is queried on member_ids (array-contains, indexed by default).
resource "google_firestore_field" "sections_members" {
  project    = var.project_id
  database   = google_firestore_database.rostersync.name
  collection = "sections"
  field      = "members"

  index_config {}
}

# Student data is kept no longer than it is needed (docs/privacy.md): the code dates each of these
# when it stops being needed (a problem closes, a dead letter is replayed, a held batch decided, a
# OneRoster class deleted) and Firestore's TTL policy deletes it after that (usually within a day).
locals {
  ttl_collections = {
    problems          = "closed problems (RETAIN_CLOSED_PROBLEMS_DAYS after they close)"
    dead_letters      = "dead letters (RETAIN_REPLAYED_DEAD_LETTERS_DAYS after their replay)"
    held_batches      = "held batches (RETAIN_DECIDED_HELD_BATCHES_DAYS after approve or discard)"
    changes           = "the changes of a held batch written before parts (held_batches/{id}/changes, with their batch)"
    parts             = "the parts of a held batch (held_batches/{id}/parts, dated with their batch)"
    data              = "the data parts of a large dead letter (dead_letters/{id}/data, dated at its replay)"
    oneroster_classes = "a deleted OneRoster class's last state (RETAIN_DELETED_CLASSES_DAYS)"
  }
}

resource "google_firestore_field" "expire_at" {
  for_each   = local.ttl_collections
  project    = var.project_id
  database   = google_firestore_database.rostersync.name
  collection = each.key
  field      = "expire_at"

  ttl_config {}
  index_config {}
}

# The status page (functions/rostersync/admin/status_page.py) lists sections a page at a time, by school
# and name, filtered by school and/or state (admin_store.section_page):
#   sections [where school == S] order by school, section_name, __name__
#   sections where state == X [and school == S] order by school, section_name, __name__
resource "google_firestore_index" "sections_by_school_and_name" {
  project    = var.project_id
  database   = google_firestore_database.rostersync.name
  collection = "sections"

  fields {
    field_path = "school"
    order      = "ASCENDING"
  }
  fields {
    field_path = "section_name"
    order      = "ASCENDING"
  }
}

resource "google_firestore_index" "sections_by_state_school_and_name" {
  project    = var.project_id
  database   = google_firestore_database.rostersync.name
  collection = "sections"

  fields {
    field_path = "state"
    order      = "ASCENDING"
  }
  fields {
    field_path = "school"
    order      = "ASCENDING"
  }
  fields {
    field_path = "section_name"
    order      = "ASCENDING"
  }
}

# ... and counts the audit trail's changes applied and problems opened a day (admin_store.audit_count):
#   count(audit where outcome == X and at >= day and at < next day)
resource "google_firestore_index" "audit_by_outcome_and_time" {
  project    = var.project_id
  database   = google_firestore_database.rostersync.name
  collection = "audit"

  fields {
    field_path = "outcome"
    order      = "ASCENDING"
  }
  fields {
    field_path = "at"
    order      = "ASCENDING"
  }
}

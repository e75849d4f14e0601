# Monitoring: log-based metrics from the functions' structured log entries (rostersync/logs.py; the
# fields are in docs/operations.md), alert policies that tell the district's IT team when the sync is
# unhealthy, and one Cloud Monitoring dashboard. Alerts go to var.alert_notification_channels and,
# when var.alert_email is set, to an e-mail channel made here.

# -- variables ------------------------------------------------------------------------------------

variable "alert_notification_channels" {
  description = "Notification channels (projects/P/notificationChannels/N) every rostersync alert is sent to, e.g. the IT team's e-mail, SMS or PagerDuty channel. Empty: alerts open incidents in the console only."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for c in var.alert_notification_channels : can(regex("^projects/[^/]+/notificationChannels/[^/]+$", c))])
    error_message = "alert_notification_channels entries must look like projects/PROJECT/notificationChannels/ID."
  }
}

variable "alert_email" {
  description = "An e-mail address for rostersync's alerts (an e-mail notification channel is made for it). Empty: none."
  type        = string
  default     = ""
}

variable "alert_poll_missing_minutes" {
  description = "Alert when no poll has succeeded for this many minutes. Default 30: six runs of the default 5-minute schedule, so one failed run (a Clever blip the next poll retries) does not page anyone, while a sync that stopped is known within half an hour."
  type        = number
  default     = 30

  validation {
    condition     = var.alert_poll_missing_minutes >= 10 && var.alert_poll_missing_minutes <= 1380
    error_message = "alert_poll_missing_minutes must be between 10 and 1380 (23 hours)."
  }
}

variable "alert_applier_errors" {
  description = "Alert when the applier logs more than this many errors in 10 minutes. Default 5: one error is usually a transient Classroom failure that Pub/Sub's redelivery mends; more than five in ten minutes is a pattern (credentials, quota, a bug)."
  type        = number
  default     = 5
}

variable "alert_backlog_minutes" {
  description = "Alert when the oldest unacknowledged message on the roster-events subscription is older than this many minutes. Default 60: a change is normally applied within seconds; an hour means the applier is stuck or far behind (expected only during a large district's first sync, which the Classroom quota paces)."
  type        = number
  default     = 60
}

variable "alert_held_batch_hours" {
  description = "Alert when a batch held by the mass-change brake has waited this many hours for `rostersync approve` or `discard`. Default 24: a school day for an administrator to look; after that, removals and archives have been waiting a day."
  type        = number
  default     = 24
}

variable "alert_classroom_quota_minutes" {
  description = "Alert when Classroom has answered 429 (quota exhausted) throughout this many minutes. Default 15: short bursts of 429 are normal (the applier backs off and retries), a quarter of an hour without relief means the quota is too small for the load."
  type        = number
  default     = 15
}

# -- notification channels and shared values ------------------------------------------------------

resource "google_monitoring_notification_channel" "email" {
  count = var.alert_email == "" ? 0 : 1

  project      = var.project_id
  display_name = "rostersync alerts (${var.district_name})"
  type         = "email"
  labels = {
    email_address = var.alert_email
  }
  user_labels = local.labels
}

locals {
  alert_channels = concat(var.alert_notification_channels, google_monitoring_notification_channel.email[*].id)

  # Every entry our functions write (2nd gen functions run as Cloud Run services).
  our_entries = "resource.type=\"cloud_run_revision\" AND resource.labels.service_name:\"${var.name_prefix}-\""

  log_metric_prefix = "logging.googleapis.com/user/"
}

# -- log-based metrics ----------------------------------------------------------------------------

resource "google_logging_metric" "poll_succeeded" {
  project     = var.project_id
  name        = "rostersync_poll_succeeded"
  description = "Polls (Clever or OneRoster) that finished: ok, partial (time budget spent, the next poll goes on) or paused."
  filter      = "${local.our_entries} AND jsonPayload.operation=(\"poll_clever\" OR \"poll_oneroster\") AND jsonPayload.outcome=(\"ok\" OR \"partial\" OR \"paused\")"

  metric_descriptor {
    metric_kind = "DELTA"
    value_type  = "INT64"
    unit        = "1"
  }
}

resource "google_logging_metric" "apply_outcomes" {
  project     = var.project_id
  name        = "rostersync_apply_outcomes"
  description = "Roster change messages the applier handled, by outcome (applied, rejected, retry, held_while_paused)."
  filter      = "${local.our_entries} AND jsonPayload.operation=\"apply\""

  metric_descriptor {
    metric_kind = "DELTA"
    value_type  = "INT64"
    unit        = "1"
    labels {
      key         = "outcome"
      value_type  = "STRING"
      description = "applied, rejected, retry or held_while_paused"
    }
  }
  label_extractors = {
    outcome = "EXTRACT(jsonPayload.outcome)"
  }
}

resource "google_logging_metric" "apply_changes" {
  project     = var.project_id
  name        = "rostersync_apply_changes"
  description = "Roster changes per applied message (its sum is the number of changes applied)."
  filter      = "${local.our_entries} AND jsonPayload.operation=\"apply\" AND jsonPayload.outcome=\"applied\""

  metric_descriptor {
    metric_kind = "DELTA"
    value_type  = "DISTRIBUTION"
    unit        = "1"
  }
  value_extractor = "EXTRACT(jsonPayload.changes)"
  bucket_options {
    exponential_buckets {
      num_finite_buckets = 12
      growth_factor      = 2
      scale              = 1
    }
  }
}

resource "google_logging_metric" "apply_calls" {
  project     = var.project_id
  name        = "rostersync_apply_calls"
  description = "Classroom calls per applied message (with rostersync_apply_changes: calls per change)."
  filter      = "${local.our_entries} AND jsonPayload.operation=\"apply\" AND jsonPayload.outcome=\"applied\""

  metric_descriptor {
    metric_kind = "DELTA"
    value_type  = "DISTRIBUTION"
    unit        = "1"
  }
  value_extractor = "EXTRACT(jsonPayload.calls)"
  bucket_options {
    exponential_buckets {
      num_finite_buckets = 12
      growth_factor      = 2
      scale              = 1
    }
  }
}

resource "google_logging_metric" "apply_latency" {
  project     = var.project_id
  name        = "rostersync_apply_latency"
  description = "Seconds from the poll publishing a change to the applier finishing it (the message's publish time to the apply entry)."
  filter      = "${local.our_entries} AND jsonPayload.operation=\"apply\" AND jsonPayload.outcome=\"applied\""

  metric_descriptor {
    metric_kind = "DELTA"
    value_type  = "DISTRIBUTION"
    unit        = "s"
  }
  value_extractor = "EXTRACT(jsonPayload.latency_seconds)"
  bucket_options {
    exponential_buckets {
      num_finite_buckets = 20
      growth_factor      = 2
      scale              = 0.25
    }
  }
}

resource "google_logging_metric" "apply_errors" {
  project     = var.project_id
  name        = "rostersync_apply_errors"
  description = "Errors the applier logged: its own, and the platform's for a crashed or redelivered message."
  filter      = "${local.our_entries} AND severity>=ERROR AND (jsonPayload.operation=\"apply\" OR resource.labels.service_name=\"${local.push_function_names.apply_roster_event}\")"

  metric_descriptor {
    metric_kind = "DELTA"
    value_type  = "INT64"
    unit        = "1"
  }
}

resource "google_logging_metric" "problems" {
  project     = var.project_id
  name        = "rostersync_problems"
  description = "Applied messages that left a problem for an administrator (rostersync problems)."
  filter      = "${local.our_entries} AND jsonPayload.operation=\"apply\" AND jsonPayload.problems>0"

  metric_descriptor {
    metric_kind = "DELTA"
    value_type  = "INT64"
    unit        = "1"
  }
}

resource "google_logging_metric" "dead_letters" {
  project     = var.project_id
  name        = "rostersync_dead_letters"
  description = "Roster changes Pub/Sub gave up on, recorded in Firestore dead_letters (rostersync replay-dead-letters)."
  filter      = "${local.our_entries} AND jsonPayload.operation=\"record_dead_letter\" AND jsonPayload.outcome=\"recorded\""

  metric_descriptor {
    metric_kind = "DELTA"
    value_type  = "INT64"
    unit        = "1"
  }
}

resource "google_logging_metric" "held_batch_overdue" {
  project     = var.project_id
  name        = "rostersync_held_batch_overdue"
  description = "Polls that found a batch held by the mass-change brake for alert_held_batch_hours or longer."
  filter      = "${local.our_entries} AND jsonPayload.operation=\"held_batches\" AND jsonPayload.oldest_held_hours>=${var.alert_held_batch_hours}"

  metric_descriptor {
    metric_kind = "DELTA"
    value_type  = "INT64"
    unit        = "1"
  }
}

resource "google_logging_metric" "renewal_failed" {
  project     = var.project_id
  name        = "rostersync_renewal_failed"
  description = "Daily renewals of the Classroom push-notification registration that failed (it lapses 7 days after the last success)."
  filter      = "${local.our_entries} AND jsonPayload.operation=\"renew_classroom_registration\" AND severity>=ERROR"

  metric_descriptor {
    metric_kind = "DELTA"
    value_type  = "INT64"
    unit        = "1"
  }
}

# -- alert policies -------------------------------------------------------------------------------

resource "google_monitoring_alert_policy" "poll_missing" {
  project               = var.project_id
  display_name          = "rostersync: no successful poll for ${var.alert_poll_missing_minutes} minutes"
  combiner              = "OR"
  notification_channels = local.alert_channels
  user_labels           = local.labels

  conditions {
    display_name = "No successful poll"
    condition_absent {
      filter   = "metric.type=\"${local.log_metric_prefix}${google_logging_metric.poll_succeeded.name}\" AND resource.type=\"cloud_run_revision\""
      duration = "${var.alert_poll_missing_minutes * 60}s"
      aggregations {
        alignment_period     = "300s"
        per_series_aligner   = "ALIGN_SUM"
        cross_series_reducer = "REDUCE_SUM"
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = "No poll has succeeded for ${var.alert_poll_missing_minutes} minutes: Clever (or OneRoster) changes are not reaching Classroom. Look at the poller's entries: `jsonPayload.operation=\"poll_clever\"` (docs/operations.md), the scheduler job, and `rostersync status`."
  }
}

resource "google_monitoring_alert_policy" "applier_errors" {
  project               = var.project_id
  display_name          = "rostersync: applier errors"
  combiner              = "OR"
  notification_channels = local.alert_channels
  user_labels           = local.labels

  conditions {
    display_name = "More than ${var.alert_applier_errors} applier errors in 10 minutes"
    condition_threshold {
      filter          = "metric.type=\"${local.log_metric_prefix}${google_logging_metric.apply_errors.name}\" AND resource.type=\"cloud_run_revision\""
      comparison      = "COMPARISON_GT"
      threshold_value = var.alert_applier_errors
      duration        = "0s"
      aggregations {
        alignment_period     = "600s"
        per_series_aligner   = "ALIGN_SUM"
        cross_series_reducer = "REDUCE_SUM"
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = "The applier is failing repeatedly. Its errors: `jsonPayload.operation=\"apply\" AND severity>=ERROR` (docs/operations.md); open problems: `rostersync problems`."
  }
}

resource "google_monitoring_alert_policy" "backlog" {
  project               = var.project_id
  display_name          = "rostersync: roster changes waiting over ${var.alert_backlog_minutes} minutes"
  combiner              = "OR"
  notification_channels = local.alert_channels
  user_labels           = local.labels

  conditions {
    display_name = "Oldest unacknowledged message on ${var.apply_subscription}"
    condition_threshold {
      filter          = "metric.type=\"pubsub.googleapis.com/subscription/oldest_unacked_message_age\" AND resource.type=\"pubsub_subscription\" AND resource.labels.subscription_id=\"${google_pubsub_subscription.apply.name}\""
      comparison      = "COMPARISON_GT"
      threshold_value = var.alert_backlog_minutes * 60
      duration        = "300s"
      aggregations {
        alignment_period   = "60s"
        per_series_aligner = "ALIGN_MAX"
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = "Roster changes have waited over ${var.alert_backlog_minutes} minutes to be applied. Expected during a large district's first sync (the Classroom quota paces it); otherwise see the applier's errors and whether the sync is paused (`rostersync status`)."
  }
}

resource "google_monitoring_alert_policy" "dead_letters" {
  project               = var.project_id
  display_name          = "rostersync: a roster change was dead-lettered"
  combiner              = "OR"
  notification_channels = local.alert_channels
  user_labels           = local.labels

  conditions {
    display_name = "Any dead letter"
    condition_threshold {
      filter          = "metric.type=\"${local.log_metric_prefix}${google_logging_metric.dead_letters.name}\" AND resource.type=\"cloud_run_revision\""
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "0s"
      aggregations {
        alignment_period     = "300s"
        per_series_aligner   = "ALIGN_SUM"
        cross_series_reducer = "REDUCE_SUM"
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = "Pub/Sub gave up on a roster change after its delivery attempts; it is kept in Firestore dead_letters. Fix the cause (the applier's errors), then `rostersync replay-dead-letters`."
  }
}

resource "google_monitoring_alert_policy" "held_batch" {
  project               = var.project_id
  display_name          = "rostersync: a held batch has waited ${var.alert_held_batch_hours} hours"
  combiner              = "OR"
  notification_channels = local.alert_channels
  user_labels           = local.labels

  conditions {
    display_name = "Held batch older than ${var.alert_held_batch_hours} hours"
    condition_threshold {
      filter          = "metric.type=\"${local.log_metric_prefix}${google_logging_metric.held_batch_overdue.name}\" AND resource.type=\"cloud_run_revision\""
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "0s"
      aggregations {
        alignment_period     = "600s"
        per_series_aligner   = "ALIGN_SUM"
        cross_series_reducer = "REDUCE_SUM"
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = "The mass-change brake is holding removals or archives for an administrator. `rostersync held` lists them; `rostersync approve BATCH` or `rostersync discard BATCH` decides."
  }
}

resource "google_monitoring_alert_policy" "renewal_failing" {
  project               = var.project_id
  display_name          = "rostersync: Classroom push-notification renewal failing"
  combiner              = "OR"
  notification_channels = local.alert_channels
  user_labels           = local.labels

  conditions {
    display_name = "Registration renewal failed"
    condition_threshold {
      filter          = "metric.type=\"${local.log_metric_prefix}${google_logging_metric.renewal_failed.name}\" AND resource.type=\"cloud_run_revision\""
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "0s"
      aggregations {
        alignment_period     = "3600s"
        per_series_aligner   = "ALIGN_SUM"
        cross_series_reducer = "REDUCE_SUM"
      }
    }
  }

  alert_strategy {
    auto_close = "86400s"
  }

  documentation {
    mime_type = "text/markdown"
    content   = "The daily renewal of the Classroom push-notification registration failed; the registration lapses 7 days after the last success and teachers' changes then go unnoticed until the nightly reconcile. Usually the administrator's grant was revoked: run `rostersync consent-notifications` again."
  }
}

resource "google_monitoring_alert_policy" "classroom_quota" {
  project               = var.project_id
  display_name          = "rostersync: Classroom quota exhausted for ${var.alert_classroom_quota_minutes} minutes"
  combiner              = "OR"
  notification_channels = local.alert_channels
  user_labels           = local.labels

  conditions {
    display_name = "Classroom API answering 429"
    condition_threshold {
      filter          = "metric.type=\"serviceruntime.googleapis.com/api/request_count\" AND resource.type=\"consumed_api\" AND resource.labels.service=\"classroom.googleapis.com\" AND metric.labels.response_code=\"429\""
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "${var.alert_classroom_quota_minutes * 60}s"
      aggregations {
        alignment_period     = "60s"
        per_series_aligner   = "ALIGN_RATE"
        cross_series_reducer = "REDUCE_SUM"
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = "Classroom has refused calls for quota for ${var.alert_classroom_quota_minutes} minutes. Lower classroom_calls_per_minute or apply_max_instances, or ask Google for more Classroom quota."
  }
}

# -- dashboard ------------------------------------------------------------------------------------

locals {
  # PromQL names of the log-based metrics (Cloud Monitoring's mapping: "/" and "." become "_").
  promql_user = "logging_googleapis_com:user_"

  dashboard_tiles = [
    {
      title = "Roster changes applied (per 5 minutes)"
      query = { prometheusQuery = "sum(increase(${local.promql_user}${google_logging_metric.apply_changes.name}_sum{monitored_resource=\"cloud_run_revision\"}[5m]))" }
    },
    {
      title = "Classroom calls per change"
      query = { prometheusQuery = "sum(rate(${local.promql_user}${google_logging_metric.apply_calls.name}_sum{monitored_resource=\"cloud_run_revision\"}[15m])) / sum(rate(${local.promql_user}${google_logging_metric.apply_changes.name}_sum{monitored_resource=\"cloud_run_revision\"}[15m]))" }
    },
    {
      title = "Latency from poll to apply (seconds, 95th percentile)"
      query = { prometheusQuery = "histogram_quantile(0.95, sum by (le) (rate(${local.promql_user}${google_logging_metric.apply_latency.name}_bucket{monitored_resource=\"cloud_run_revision\"}[15m])))" }
    },
    {
      title = "Backlog: unacknowledged roster changes"
      query = {
        timeSeriesFilter = {
          filter      = "metric.type=\"pubsub.googleapis.com/subscription/num_undelivered_messages\" AND resource.type=\"pubsub_subscription\" AND resource.labels.subscription_id=\"${google_pubsub_subscription.apply.name}\""
          aggregation = { alignmentPeriod = "60s", perSeriesAligner = "ALIGN_MAX" }
        }
      }
    },
    {
      title = "Backlog: oldest unacknowledged change (seconds)"
      query = {
        timeSeriesFilter = {
          filter      = "metric.type=\"pubsub.googleapis.com/subscription/oldest_unacked_message_age\" AND resource.type=\"pubsub_subscription\" AND resource.labels.subscription_id=\"${google_pubsub_subscription.apply.name}\""
          aggregation = { alignmentPeriod = "60s", perSeriesAligner = "ALIGN_MAX" }
        }
      }
    },
    {
      title = "Messages that left problems (per 5 minutes)"
      query = {
        timeSeriesFilter = {
          filter      = "metric.type=\"${local.log_metric_prefix}${google_logging_metric.problems.name}\" AND resource.type=\"cloud_run_revision\""
          aggregation = { alignmentPeriod = "300s", perSeriesAligner = "ALIGN_SUM", crossSeriesReducer = "REDUCE_SUM" }
        }
      }
    },
    {
      title = "Dead letters (per 5 minutes)"
      query = {
        timeSeriesFilter = {
          filter      = "metric.type=\"${local.log_metric_prefix}${google_logging_metric.dead_letters.name}\" AND resource.type=\"cloud_run_revision\""
          aggregation = { alignmentPeriod = "300s", perSeriesAligner = "ALIGN_SUM", crossSeriesReducer = "REDUCE_SUM" }
        }
      }
    },
    {
      title = "Applier outcomes (per 5 minutes)"
      query = {
        timeSeriesFilter = {
          filter      = "metric.type=\"${local.log_metric_prefix}${google_logging_metric.apply_outcomes.name}\" AND resource.type=\"cloud_run_revision\""
          aggregation = { alignmentPeriod = "300s", perSeriesAligner = "ALIGN_SUM", crossSeriesReducer = "REDUCE_SUM", groupByFields = ["metric.label.outcome"] }
        }
      }
    },
  ]
}

resource "google_monitoring_dashboard" "rostersync" {
  project = var.project_id
  dashboard_json = jsonencode({
    displayName = "rostersync (${var.district_name})"
    mosaicLayout = {
      columns = 12
      tiles = [
        for i, tile in local.dashboard_tiles : {
          xPos   = (i % 2) * 6
          yPos   = floor(i / 2) * 4
          width  = 6
          height = 4
          widget = {
            title = tile.title
            xyChart = {
              dataSets = [{ timeSeriesQuery = tile.query, plotType = "LINE" }]
            }
          }
        }
      ]
    }
  })
}

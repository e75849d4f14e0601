# How fast rostersync may call Classroom, and the brake on mass changes.
#
# Classroom allows 1,200 queries a minute per user (with domain-wide delegation: per admin subject
# we act as) and 3,000 a minute per project. With several admin subjects (admin_subject may list
# them, comma-separated) the calls take turns between them, so the ceiling is
# min(1,200 x subjects, 3,000) a minute. Each applier instance gets an equal share of it as its own
# client-side rate limit (CLASSROOM_CALLS_PER_MINUTE), so that even with every instance busy the
# project stays under the ceiling instead of spending calls on 429 answers. The reconcile pass takes
# its reads out of the same quota at reconcile_reads_per_minute.

locals {
  admin_subject_count          = length([for a in split(",", var.admin_subject) : a if trimspace(a) != ""])
  classroom_ceiling_per_minute = min(1200 * local.admin_subject_count, 3000) - var.reconcile_reads_per_minute
  classroom_calls_per_instance = max(1, floor(local.classroom_ceiling_per_minute / var.apply_max_instances))
}

variable "brake_section_percent" {
  description = "Hold one poll's removals from a section when they are more than this percentage of its members (docs/clever-feed.md)."
  type        = number
  default     = 50

  validation {
    condition     = var.brake_section_percent >= 1 && var.brake_section_percent <= 100
    error_message = "brake_section_percent must be between 1 and 100."
  }
}

variable "brake_total_percent" {
  description = "Hold all of one poll's removals when they are more than this percentage of every membership rostersync manages."
  type        = number
  default     = 5

  validation {
    condition     = var.brake_total_percent >= 1 && var.brake_total_percent <= 100
    error_message = "brake_total_percent must be between 1 and 100."
  }
}

variable "brake_max_archives" {
  description = "Hold one poll's section deletions (course archives) when there are more than this many."
  type        = number
  default     = 20

  validation {
    condition     = var.brake_max_archives >= 0
    error_message = "brake_max_archives must be 0 or more."
  }
}

variable "brake_min_removals" {
  description = "Fewer removals than this from one section in one poll never trip brake_section_percent (small classes)."
  type        = number
  default     = 5

  validation {
    condition     = var.brake_min_removals >= 1
    error_message = "brake_min_removals must be 1 or more."
  }
}

# Issue 12 part B (docs/clever-feed.md): the district-wide share trips only from this many removals,
# so a small district's normal day flows; Entra ID Connect holds deletions above 500 objects.
variable "brake_total_min_removals" {
  description = "Fewer removals than this in one poll never trip brake_total_percent."
  type        = number
  default     = 500

  validation {
    condition     = var.brake_total_min_removals >= 1
    error_message = "brake_total_min_removals must be 1 or more."
  }
}

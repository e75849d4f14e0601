# Guardians from the SIS (docs/guardians.md): with guardians = "invite" the sync invites each
# student's qualifying contacts to Classroom's guardian email summaries. That needs one more
# domain-wide delegation scope, which the output domain_wide_delegation_scopes then lists (and the
# functions ask for); with "off" the scope is neither listed nor requested. Guardian access must
# also be on for the domain (Admin console > Apps > Google Workspace > Classroom > Guardian settings).

variable "guardians" {
  description = "GUARDIANS: \"invite\" to invite students' parents/guardians from the SIS to Classroom guardian summaries, \"off\" (default) for none."
  type        = string
  default     = "off"
  validation {
    condition     = contains(["off", "invite"], var.guardians)
    error_message = "guardians must be off or invite."
  }
}

variable "guardian_relationship_types" {
  description = "GUARDIAN_RELATIONSHIP_TYPES: the Clever student_relationships types (or OneRoster agent roles mapped to them) that make a contact a guardian."
  type        = list(string)
  default     = ["Parent/Guardian", "Primary"]
  validation {
    condition     = length(var.guardian_relationship_types) > 0 && alltrue([for t in var.guardian_relationship_types : !strcontains(t, ",")])
    error_message = "guardian_relationship_types needs at least one type, none containing a comma."
  }
}

variable "guardian_reinvite_days" {
  description = "GUARDIAN_REINVITE_DAYS: an expired guardian invitation is sent again at most once in this many days (a declined one is not sent again)."
  type        = number
  default     = 30
  validation {
    condition     = var.guardian_reinvite_days >= 0 && var.guardian_reinvite_days <= 3650
    error_message = "guardian_reinvite_days must be within 0..3650."
  }
}

locals {
  guardian_scopes = var.guardians == "invite" ? ["https://www.googleapis.com/auth/classroom.guardianlinks.students"] : []
}

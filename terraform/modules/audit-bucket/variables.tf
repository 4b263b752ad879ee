variable "name" {
  description = "Bucket name (globally unique)."
  type        = string
}

variable "retention_days" {
  description = "Object Lock retention in compliance mode: no one can delete a record sooner."
  type        = number
}

variable "glacier_after_days" {
  type    = number
  default = 90
}

variable "deep_archive_after_days" {
  type    = number
  default = 365
}

variable "access_log_bucket" {
  description = "Bucket receiving this bucket's S3 server access logs."
  type        = string
}

variable "custodian_arn" {
  description = "The only principal that may delete, disable or re-policy the audit key (break-glass or log-archive role ARN)."
  type        = string
}

variable "key_deletion_window_days" {
  description = "Waiting period of a scheduled deletion of the audit key (the custodian can cancel it)."
  type        = number
  default     = 30
}

variable "trail_name" {
  description = "Name of the CloudTrail trail recording the audit bucket's data events."
  type        = string
}

variable "shipped_prefix" {
  description = "Key prefix the audit shippers write under (S3 request metrics filter)."
  type        = string
}

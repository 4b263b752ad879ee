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

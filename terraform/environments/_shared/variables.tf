# Shared by every environment (symlinked into environments/<name>/): the inputs that differ per
# account and are set in terraform.tfvars.

variable "region" {
  type    = string
  default = "eu-west-1"
}

variable "azs" {
  type    = list(string)
  default = ["eu-west-1a", "eu-west-1b", "eu-west-1c"]
}

variable "domain" {
  description = "Private DNS zone, e.g. dbgw.internal.example.com."
  type        = string
}

variable "private_ca_arn" {
  type = string
}

variable "oidc_issuer" {
  type = string
}

variable "images" {
  description = "Every image by digest (<repository>@sha256:<64 hex>): a tag can be moved to other content, a digest says exactly what runs (docs/operations.md, Deploy step 2 prints these lines)."
  type = object({
    proxy         = string
    approvals     = string
    rates_api     = string
    dbgw_db       = string
    audit_shipper = string
  })
  validation {
    condition     = alltrue([for name, image in var.images : can(regex("^[a-z0-9][^@\\s]*@sha256:[0-9a-f]{64}$", image))])
    error_message = "Every image must be pinned by digest, <repository>@sha256:<64 hex digits> (docs/operations.md, Deploy step 2); a tag is not enough."
  }
}

variable "client_cidrs" {
  type = list(string)
}

variable "db_admin_access" {
  type    = bool
  default = false
}

variable "alarm_email" {
  type    = string
  default = ""
}

variable "rotation_zip_path" {
  description = "The rotation function's package; empty: target/lambda/rotation/bootstrap.zip from `make lambda`."
  type        = string
  default     = ""
}

variable "enable_rotation" {
  description = "Rotation of the database logins (every 30 days). false in the first apply, true after the db-admin setup (docs/operations.md, Deploy)."
  type        = bool
  default     = false
}

variable "start_services" {
  description = "Run the services' tasks: false in the first apply (no task before the roles and secrets exist), true from Deploy step 6 on (docs/operations.md). modules/stack."
  type        = bool
  default     = true
}

variable "write_secret_values" {
  description = "Always true; false only in the terraform test suites (mock providers cannot run ephemeral resources). modules/stack."
  type        = bool
  default     = true
}

variable "people_login" {
  description = "modules/stack: how people's roles log in to RDS: rds-iam (no password; the proxy signs IAM auth tokens) or password (a secret per grant, rotated)."
  type        = string
  default     = "rds-iam"
}

variable "people_secrets_enforced" {
  description = "modules/stack: refuse people's secrets without their KMS key or recovery window (the approvals app sets both: secrets.kms_key_id, secrets.recovery_window_days)."
  type        = bool
  default     = true
}

variable "name" {
  description = "Instance identifier and name prefix."
  type        = string
}

variable "vpc_id" {
  type = string
}

variable "subnet_ids" {
  description = "Private subnets, in at least two availability zones."
  type        = list(string)
}

variable "client_security_group_ids" {
  description = "The only security groups that may connect, by purpose (proxy, rotation, approvals)."
  type        = map(string)
}

variable "engine_version" {
  description = "PostgreSQL version: a major version (minor upgrades are automatic) in RDS standard support, 15 or later."
  type        = string
  default     = "17"

  # The approvals login's narrow interface (db/provisioner.sql) is tested on 15 (make test)
  # and on 18 for what differs from 16 on (make test-pg18: grantors, ADMIN OPTION). Before
  # 16 CREATEROLE may grant predefined roles, so nothing but that interface keeps the login
  # narrow, and 13 and 14 have never run it (nor are they in RDS standard support).
  validation {
    condition     = can(regex("^[0-9]+(\\.[0-9]+)?$", var.engine_version)) && try(tonumber(split(".", var.engine_version)[0]) >= 15, false)
    error_message = "engine_version must be PostgreSQL 15 or later (\"17\", \"16.4\"): the approvals login's provisioning interface is tested on 15 and 18 only (docs/approvals.md)."
  }
}

variable "instance_class" {
  type    = string
  default = "db.t4g.medium"
}

variable "allocated_storage_gb" {
  type    = number
  default = 50
}

variable "max_allocated_storage_gb" {
  type    = number
  default = 500
}

variable "multi_az" {
  description = "A standby in a second zone with automatic failover."
  type        = bool
  default     = true
}

variable "backup_retention_days" {
  type    = number
  default = 14
}

variable "deletion_protection" {
  type    = bool
  default = true
}

variable "log_retention_days" {
  type = number
}

variable "logs_kms_key_arn" {
  type = string
}

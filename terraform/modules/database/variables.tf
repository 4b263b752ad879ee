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
  description = "PostgreSQL version: a major version (minor upgrades are automatic) in RDS standard support. The rates dump loads on 13 and later."
  type        = string
  default     = "17"
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

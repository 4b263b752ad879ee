variable "name" {
  description = "Name prefix of every resource (e.g. dbgw-staging)."
  type        = string
}

variable "cidr" {
  description = "The VPC's address range."
  type        = string
}

variable "azs" {
  description = "Availability zones, one private subnet in each (three for production)."
  type        = list(string)
}

variable "nat_for_identity_provider" {
  description = "Add NAT gateways so the services reach an identity provider outside AWS. AWS APIs never need them."
  type        = bool
  default     = true
}

variable "log_retention_days" {
  description = "How long VPC flow logs are kept."
  type        = number
}

variable "logs_kms_key_arn" {
  description = "KMS key that encrypts the log groups."
  type        = string
}

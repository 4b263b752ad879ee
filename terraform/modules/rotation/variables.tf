variable "name" {
  type = string
}

variable "zip_path" {
  description = "The function's package: target/lambda/rotation/bootstrap.zip, made by `make lambda`."
  type        = string
}

variable "vpc_id" {
  type = string
}

variable "vpc_cidr" {
  type = string
}

variable "subnet_ids" {
  type = list(string)
}

variable "rotated_secret_arns" {
  description = "The secrets this function rotates (applications, control-plane logins)."
  type        = list(string)
}

variable "person_secret_prefix" {
  description = "Name prefix of people's secrets, made by the approvals app; empty: there are none (people log in with RDS IAM), and the function gets no right on them."
  type        = string
}

variable "master_secret_arn" {
  description = "The RDS-managed master secret, used to set other users' passwords."
  type        = string
}

variable "kms_key_arns" {
  description = "Keys of the rotated secrets and of the master secret."
  type        = list(string)
}

variable "lambda_kms_key_arn" {
  description = "Key encrypting the function's environment."
  type        = string
}

variable "environment" {
  description = "ROTATION_* configuration of the function."
  type        = map(string)
}

variable "log_retention_days" {
  type = number
}

variable "logs_kms_key_arn" {
  type = string
}

variable "reserved_concurrency" {
  description = <<-EOT
    Concurrent executions reserved for the function, or null (the default) for none: it
    then shares the account's pool. Reserving needs the account's concurrency quota to keep
    at least 100 unreserved: a new account's quota is 10, and AWS refuses any reservation
    there (PutFunctionConcurrency), so apply would stop. Set it once the quota is raised.
  EOT
  type        = number
  default     = null
}

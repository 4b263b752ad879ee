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
  description = "Name prefix of people's secrets, made by the approvals app."
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

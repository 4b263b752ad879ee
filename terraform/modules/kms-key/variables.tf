variable "alias" {
  description = "Alias name, without the alias/ prefix."
  type        = string
}

variable "description" {
  type = string
}

variable "extra_policy_json" {
  description = "Further key policy statements (a policy document), or empty."
  type        = string
  default     = ""
}

variable "environment" {
  description = "staging or production: part of every name."
  type        = string
}

variable "domain" {
  description = "Private DNS zone of this environment (db.<domain>, approvals.<domain>, rates.<domain>)."
  type        = string
}

variable "private_ca_arn" {
  description = "ACM Private CA that issues the proxy's and the ALB's certificates (usually shared by the organisation)."
  type        = string
}

variable "oidc_issuer" {
  description = "The company's OpenID Connect provider (https://...)."
  type        = string
}

variable "oidc_audiences" {
  description = "Client ids whose ID tokens the proxy accepts (the dbgw CLI's)."
  type        = list(string)
  default     = ["dbgw-cli"]
}

variable "approvals_oidc_client_id" {
  type    = string
  default = "dbgw-approvals"
}

variable "approvals_scim_enabled" {
  description = "Turn on the approvals app's SCIM endpoint (docs/approvals.md, \"Deprovisioning (SCIM)\"): creates the approvals-scim secret, whose value {\"token\": \"...\"} the identity provider's administrators set, and gives the task its ARN."
  type        = bool
  default     = false
}

variable "images" {
  description = "Container images by digest (docs/operations.md, Deploy step 2); the environments refuse tags. audit_shipper also runs the proxy task's proxy-cert and metrics-agent containers."
  type = object({
    proxy         = string
    approvals     = string
    rates_api     = string
    dbgw_db       = string
    audit_shipper = string
  })
}

variable "rotation_zip_path" {
  description = "The rotation function's package, made by `make lambda`."
  type        = string
}

variable "vpc_cidr" {
  type = string
}

variable "azs" {
  type = list(string)
}

variable "nat_for_identity_provider" {
  type    = bool
  default = true
}

variable "client_cidrs" {
  description = "Networks allowed to reach the proxy (5432) and the web apps (443): VPN, office, peered VPCs."
  type        = list(string)
}

variable "https_egress_cidrs" {
  description = "Where the proxy and approvals may open HTTPS connections: the AWS API endpoints and the identity provider."
  type        = list(string)
  default     = ["0.0.0.0/0"]
}

variable "db_engine_version" {
  type    = string
  default = "17"
}

variable "db_instance_class" {
  type = string
}

variable "db_multi_az" {
  type    = bool
  default = true
}

variable "db_backup_retention_days" {
  type    = number
  default = 14
}

variable "db_deletion_protection" {
  type    = bool
  default = true
}

variable "db_admin_access" {
  description = "Let the db-admin task reach the database (migrations, break-glass). Off in normal operation."
  type        = bool
  default     = false
}

variable "proxy_cpu" {
  type    = number
  default = 1024
}

variable "proxy_memory" {
  type    = number
  default = 2048
}

variable "proxy_min_tasks" {
  type    = number
  default = 3
}

variable "proxy_max_tasks" {
  type    = number
  default = 9
}

variable "proxy_drain_secs" {
  description = "How long a stopping proxy task keeps its sessions (NLB deregistration delay, container stop timeout)."
  type        = number
  default     = 90
}

variable "rates_api_cpu" {
  type    = number
  default = 512
}

variable "rates_api_memory" {
  type    = number
  default = 1024
}

variable "rates_api_min_tasks" {
  type    = number
  default = 2
}

variable "rates_api_max_tasks" {
  type    = number
  default = 6
}

variable "approvals_cpu" {
  type    = number
  default = 256
}

variable "approvals_memory" {
  type    = number
  default = 512
}

variable "audit_retention_days" {
  description = "Object Lock compliance retention of audit files."
  type        = number
}

variable "access_log_retention_days" {
  type    = number
  default = 365
}

variable "log_retention_days" {
  type    = number
  default = 365
}

variable "lb_deletion_protection" {
  type    = bool
  default = true
}

variable "alarm_email" {
  description = "Where alarms are mailed (empty: subscribe the topic yourself)."
  type        = string
  default     = ""
}

variable "enable_rotation" {
  description = "Turn on the 30-day rotation of the database logins. Off in the first apply; on once the db-admin task has made the roles (docs/operations.md, Deploy step 5)."
  type        = bool
  default     = false
}

variable "start_services" {
  description = "Run the services' tasks. false in the first apply: the services exist with no task until the db-admin task has made the roles and the secrets are filled (docs/operations.md, Deploy steps 3 and 6); then true, and it stays true."
  type        = bool
  default     = true
}

variable "rotation_reserved_concurrency" {
  description = "Concurrent executions reserved for the rotation function; null: none (new accounts cannot reserve any, modules/rotation)."
  type        = number
  default     = null
}

variable "write_secret_values" {
  description = <<-EOT
    Write the secrets' first values (random, from Secrets Manager's generator, through
    ephemeral resources: never in the plan or the state). Always true in a real apply. false
    only in the offline test suites: Terraform's mock providers cannot run ephemeral
    resources, so those plans leave the first values out.
  EOT
  type        = bool
  default     = true
}

variable "audit_custodian_arn" {
  description = "The break-glass or log-archive principal that alone may delete, disable or re-policy the audit key; empty: arn:aws:iam::<this account>:role/dbgw-audit-custodian."
  type        = string
  default     = ""
}

variable "audit_silence_minutes" {
  description = "Alarm when proxies accept connections (each one writes an audit record) and no audit object arrives for this long (a multiple of 5)."
  type        = number
  default     = 10
}

variable "people_login" {
  description = "How people's roles log in to RDS. rds-iam (default): members of rds_iam with no password; the proxy signs an IAM auth token per login (rds-db:connect on p_*), no person's secret exists and nothing of theirs rotates. password: a random password per grant in dbgw/person/<role>, rotated by the function (docs/operations.md, \"People's logins\")."
  type        = string
  default     = "rds-iam"
  validation {
    condition     = contains(["rds-iam", "password"], var.people_login)
    error_message = "people_login must be \"rds-iam\" or \"password\"."
  }
}

variable "people_secrets_enforced" {
  description = "Deny the approvals app creating people's secrets without their KMS key, or deleting them without a recovery window. The approvals app passes both (secrets.kms_key_id, secrets.recovery_window_days), so this is on."
  type        = bool
  default     = true
}

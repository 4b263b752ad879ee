variable "name" {
  description = "Service and main container name (proxy, approvals, rates-api)."
  type        = string
}

variable "cluster_name" {
  type = string
}

variable "cluster_arn" {
  type = string
}

variable "image" {
  description = "Container image, pinned by digest or immutable tag."
  type        = string
}

variable "cpu" {
  type = number
}

variable "memory" {
  type = number
}

variable "cpu_architecture" {
  type    = string
  default = "X86_64"
}

variable "ephemeral_storage_gib" {
  type    = number
  default = 21
}

variable "container_ports" {
  description = "Ports the main container listens on (service port first)."
  type        = list(number)
}

variable "health_port" {
  description = "Port of /health/ready (the proxy's admin port, the web port otherwise)."
  type        = number
}

variable "container_health_path" {
  description = "The container health check's path: liveness (the process answers), never a check that depends on the database."
  type        = string
  default     = "/health/live"
}

variable "environment" {
  description = "Plain configuration, <PREFIX><SECTION>__<KEY> variables. Never secrets."
  type        = map(string)
}

variable "secrets" {
  description = "Environment variables injected by ECS from Secrets Manager (name -> secret ARN[:json-key::])."
  type        = map(string)
  default     = {}
}

variable "injected_secret_arns" {
  description = "Secrets the execution role may read to inject `secrets`."
  type        = list(string)
  default     = []
}

variable "secrets_kms_key_arn" {
  type = string
}

variable "task_policy_json" {
  description = "What the running code may do (its own secrets and nothing more)."
  type        = string
}

variable "volumes" {
  description = "Task-local volumes mounted into the main container (the root filesystem is read-only)."
  type = list(object({
    name = string
    path = string
  }))
  default = []
}

variable "start_after" {
  description = "Sidecars the main container starts after (and so stops before)."
  type        = list(string)
  default     = []
}

variable "start_after_success" {
  description = "One-shot sidecars that must exit 0 before the main container starts (e.g. the proxy's certificate fetch)."
  type        = list(string)
  default     = []
}

variable "sidecar_volumes" {
  description = "Task-local volumes only the sidecars mount."
  type        = list(string)
  default     = []
}

variable "sidecars" {
  # `any`, not list(any): the sidecars are objects of different shapes (a list would need
  # them all to have one type, and `terraform validate` fails).
  description = "Further container definitions (audit shipper, metrics agent); logging is added here."
  type        = any
  default     = []
}

variable "stop_timeout_secs" {
  description = "Time between SIGTERM and SIGKILL for the main container (at most 120 on Fargate)."
  type        = number
  default     = 60
}

variable "subnet_ids" {
  type = list(string)
}

variable "security_group_id" {
  type = string
}

variable "target_groups" {
  description = "Load balancer target groups and the container port each sends to."
  type = list(object({
    arn  = string
    port = number
  }))
  default = []
}

variable "min_tasks" {
  description = "At least two, in different zones, so a task or a zone can go without downtime."
  type        = number
  default     = 2
}

variable "started" {
  description = "false: the service exists with no task (desired count and autoscaling range 0), so no task starts before its secrets and database roles exist (the first apply, docs/operations.md Deploy); true: min_tasks to max_tasks."
  type        = bool
  default     = true
}

variable "max_tasks" {
  type    = number
  default = 6
}

variable "cpu_target_percent" {
  type    = number
  default = 60
}

variable "log_retention_days" {
  type = number
}

variable "logs_kms_key_arn" {
  type = string
}

variable "service_registry" {
  description = "Cloud Map service each task registers in (an A record), or null."
  type        = string
  default     = null
}

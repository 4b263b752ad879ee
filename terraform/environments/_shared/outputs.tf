# Shared by every environment (symlinked into environments/<name>/): what the README and
# docs/operations.md read with `terraform output`.

output "proxy_endpoint" {
  value = module.dbgw.proxy_endpoint
}

output "approvals_url" {
  value = module.dbgw.approvals_url
}

output "rates_api_url" {
  value = module.dbgw.rates_api_url
}

output "cluster_name" {
  value = module.dbgw.cluster_name
}

output "private_subnet_ids" {
  value = module.dbgw.private_subnet_ids
}

output "db_admin_security_group_id" {
  value = module.dbgw.db_admin_security_group_id
}

output "db_admin_task_definition" {
  value = module.dbgw.db_admin_task_definition
}

output "rotated_secret_names" {
  value = module.dbgw.rotated_secret_names
}

output "proxy_cert_roll_state_machine" {
  value = module.dbgw.proxy_cert_roll_state_machine
}

output "proxy_certificate_arn" {
  value = module.dbgw.proxy_certificate_arn
}

output "approvals_oidc_secret_name" {
  value = module.dbgw.approvals_oidc_secret_name
}

output "audit_bucket" {
  value = module.dbgw.audit_bucket
}

output "rotation_function_name" {
  value = module.dbgw.rotation_function_name
}

output "alarm_topic_arn" {
  value = module.dbgw.alarm_topic_arn
}

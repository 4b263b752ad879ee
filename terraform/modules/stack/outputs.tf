output "proxy_endpoint" {
  description = "Where PostgreSQL clients connect (TLS, port 5432)."
  value       = "${local.db_host}:5432"
}

output "approvals_url" {
  value = "https://approvals.${var.domain}"
}

output "rates_api_url" {
  value = "https://rates.${var.domain}"
}

output "cluster_name" {
  value = aws_ecs_cluster.this.name
}

output "private_subnet_ids" {
  value = module.network.private_subnet_ids
}

output "db_admin_security_group_id" {
  value = aws_security_group.db_admin.id
}

output "db_admin_task_definition" {
  value = aws_ecs_task_definition.db_admin.arn
}

output "db_address" {
  value = module.database.address
}

output "db_master_secret_arn" {
  value = module.database.master_user_secret_arn
}

output "rotated_secret_names" {
  value = [for s in aws_secretsmanager_secret.db : s.name]
}

output "proxy_cert_roll_state_machine" {
  description = "Rolls the proxy service so its tasks fetch the proxy certificate anew (run by the ACM renewal event; scripts/deploy/proxy-cert.sh starts it by hand)."
  value       = aws_sfn_state_machine.proxy_roll.arn
}

output "proxy_certificate_arn" {
  value = aws_acm_certificate.proxy.arn
}

output "approvals_oidc_secret_name" {
  value = aws_secretsmanager_secret.approvals_oidc.name
}

output "audit_bucket" {
  value = module.audit_bucket.bucket
}

output "rotation_function_name" {
  value = module.rotation.function_name
}

output "alarm_topic_arn" {
  value = aws_sns_topic.alarms.arn
}

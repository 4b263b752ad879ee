output "address" {
  value = aws_db_instance.this.address
}

output "port" {
  value = aws_db_instance.this.port
}

output "arn" {
  value = aws_db_instance.this.arn
}

output "resource_id" {
  description = "For rds-db:connect policies (IAM authentication)."
  value       = aws_db_instance.this.resource_id
}

output "master_user_secret_arn" {
  description = "The RDS-managed master login (Secrets Manager); the rotation function uses it as masterarn."
  value       = aws_db_instance.this.master_user_secret[0].secret_arn
}

output "kms_key_arn" {
  value = module.key.arn
}

output "security_group_id" {
  value = aws_security_group.db.id
}

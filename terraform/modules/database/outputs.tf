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

output "posture" {
  description = "What this module promises, as planned (asserted by the terraform test suites, terraform/environments/_shared/tests)."
  value = {
    publicly_accessible = aws_db_instance.this.publicly_accessible
    storage_encrypted   = aws_db_instance.this.storage_encrypted
    iam_auth            = aws_db_instance.this.iam_database_authentication_enabled
    kms_key_id          = aws_db_instance.this.kms_key_id
    key_arn             = module.key.arn
    security_group_id   = aws_security_group.db.id
    security_group_ids  = aws_db_instance.this.vpc_security_group_ids
    parameters          = { for p in aws_db_parameter_group.this.parameter : p.name => p.value }
    ingress = [for r in aws_vpc_security_group_ingress_rule.clients : {
      from_security_group = r.referenced_security_group_id
      cidr                = r.cidr_ipv4
      from_port           = r.from_port
      to_port             = r.to_port
    }]
  }
}

output "postgresql_log_group_name" {
  description = "RDS's PostgreSQL log (pgaudit): exported to the audit bucket by modules/stack."
  value       = aws_cloudwatch_log_group.postgresql.name
}

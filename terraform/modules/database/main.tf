# RDS PostgreSQL: encrypted with its own KMS key, private, TLS only, pgaudit as a second,
# server-side audit layer, the master password managed by RDS in Secrets Manager, IAM
# authentication on, backups, deletion protection, Performance Insights and enhanced
# monitoring. Only the security groups passed in `client_security_group_ids` may connect.

locals {
  major = split(".", var.engine_version)[0]

  # Parameters RDS for PostgreSQL does not let a parameter group set (IsModifiable = false
  # in `aws rds describe-engine-default-parameters --db-parameter-group-family postgres<N>`;
  # the AWS guide "Parameters for logging in RDS for PostgreSQL" gives log_line_prefix's
  # fixed value `%t:%r:%u@%d:[%p]:`). Setting one makes ModifyDBParameterGroup fail in the
  # middle of an apply, so the parameter group below refuses them at plan time. RDS sets
  # them itself (paths, ports, sockets, certificates, WAL archiving) or offers its own
  # parameter instead (rds.force_ssl for ssl, rds.logical_replication for wal_level).
  # Refresh from the command above when a new major version is adopted.
  rds_unmodifiable_parameters = toset([
    "log_line_prefix", "log_directory", "log_file_mode", "data_directory", "config_file",
    "hba_file", "ident_file", "external_pid_file", "listen_addresses", "port",
    "unix_socket_directories", "unix_socket_group", "unix_socket_permissions", "ssl",
    "ssl_cert_file", "ssl_key_file", "ssl_ca_file", "ssl_crl_file", "archive_mode",
    "archive_command", "restore_command", "wal_level", "krb_server_keyfile", "event_source",
  ])
}

module "key" {
  source      = "../kms-key"
  alias       = "${var.name}-db"
  description = "${var.name}: RDS storage, snapshots, Performance Insights, master secret"
}

resource "aws_db_subnet_group" "this" {
  name       = var.name
  subnet_ids = var.subnet_ids
}

resource "aws_security_group" "db" {
  name        = "${var.name}-db"
  description = "PostgreSQL, reachable only from the proxy, the rotation function and the approvals provisioner"
  vpc_id      = var.vpc_id
}

resource "aws_vpc_security_group_ingress_rule" "clients" {
  for_each                     = var.client_security_group_ids
  security_group_id            = aws_security_group.db.id
  description                  = "PostgreSQL from ${each.key}"
  referenced_security_group_id = each.value
  ip_protocol                  = "tcp"
  from_port                    = 5432
  to_port                      = 5432
}

locals {
  # The parameter group's settings: name -> value (apply_method pending-reboot for the
  # static ones). Checked against rds_unmodifiable_parameters before anything is applied.
  parameters = {
    # TLS only; SCRAM for the passwords that exist at all.
    "rds.force_ssl"       = "1"
    "password_encryption" = "scram-sha-256"
    # pgaudit: the database's own record, independent of the proxy's (issue 12 compares them).
    "shared_preload_libraries" = "pgaudit,pg_stat_statements"
    # Everything, catalog queries included, as in the local stack: `proxy audit crosscheck`
    # expects an entry for every statement the proxy saw run (BEGIN, SET and psql's catalog
    # queries too), so a narrower log would show up as differences.
    "pgaudit.log"         = "all"
    "pgaudit.log_catalog" = "1"
    # Parameters can carry secrets (a password in an ALTER ROLE); the proxy's audit has them,
    # capped and with passwords redacted.
    "pgaudit.log_parameter" = "0"
    "pgaudit.log_relation"  = "1"
    # log_line_prefix is fixed on RDS (%t:%r:%u@%d:[%p]:, not modifiable: see the list
    # above). The proxy's session id still reaches the log: it is the connection's
    # application_name, which log_connections prints in the "connection authorized" line,
    # and every later line of that backend carries the same [pid].
    "log_connections"            = "1"
    "log_disconnections"         = "1"
    "log_min_duration_statement" = "1000"
  }
  static_parameters    = toset(["shared_preload_libraries"])
  forbidden_parameters = setintersection(toset(keys(local.parameters)), local.rds_unmodifiable_parameters)
}

resource "aws_db_parameter_group" "this" {
  name   = "${var.name}-pg${local.major}"
  family = "postgres${local.major}"

  dynamic "parameter" {
    for_each = local.parameters
    content {
      name         = parameter.key
      value        = parameter.value
      apply_method = contains(local.static_parameters, parameter.key) ? "pending-reboot" : "immediate"
    }
  }

  lifecycle {
    create_before_destroy = true
    precondition {
      condition     = length(local.forbidden_parameters) == 0
      error_message = "RDS for PostgreSQL does not let a parameter group set ${join(", ", sort(local.forbidden_parameters))} (modules/database: rds_unmodifiable_parameters); apply would stop at ModifyDBParameterGroup."
    }
  }
}

data "aws_iam_policy_document" "monitoring_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["monitoring.rds.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "monitoring" {
  name               = "${var.name}-rds-monitoring"
  assume_role_policy = data.aws_iam_policy_document.monitoring_assume.json
}

resource "aws_iam_role_policy_attachment" "monitoring" {
  role       = aws_iam_role.monitoring.name
  policy_arn = "arn:aws:iam::aws:policy/service-role/AmazonRDSEnhancedMonitoringRole"
}

# RDS writes its logs here; created first so they are encrypted and expire.
resource "aws_cloudwatch_log_group" "postgresql" {
  name              = "/aws/rds/instance/${var.name}/postgresql"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.logs_kms_key_arn
}

resource "aws_cloudwatch_log_group" "upgrade" {
  name              = "/aws/rds/instance/${var.name}/upgrade"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.logs_kms_key_arn
}

resource "aws_db_instance" "this" {
  identifier     = var.name
  engine         = "postgres"
  engine_version = var.engine_version
  instance_class = var.instance_class
  db_name        = "rates"
  username       = "dbgw_admin"
  port           = 5432

  # The master password is made, stored (Secrets Manager, our key) and rotated by RDS.
  manage_master_user_password   = true
  master_user_secret_kms_key_id = module.key.arn

  iam_database_authentication_enabled = true
  publicly_accessible                 = false
  db_subnet_group_name                = aws_db_subnet_group.this.name
  vpc_security_group_ids              = [aws_security_group.db.id]
  parameter_group_name                = aws_db_parameter_group.this.name
  ca_cert_identifier                  = "rds-ca-rsa2048-g1"

  storage_type          = "gp3"
  allocated_storage     = var.allocated_storage_gb
  max_allocated_storage = var.max_allocated_storage_gb
  storage_encrypted     = true
  kms_key_id            = module.key.arn

  multi_az                  = var.multi_az
  backup_retention_period   = var.backup_retention_days
  backup_window             = "02:00-03:00"
  maintenance_window        = "sun:03:30-sun:04:30"
  copy_tags_to_snapshot     = true
  delete_automated_backups  = false
  deletion_protection       = var.deletion_protection
  skip_final_snapshot       = false
  final_snapshot_identifier = "${var.name}-final"

  auto_minor_version_upgrade  = true
  allow_major_version_upgrade = false
  apply_immediately           = false

  performance_insights_enabled          = true
  performance_insights_kms_key_id       = module.key.arn
  performance_insights_retention_period = 7
  monitoring_interval                   = 30
  monitoring_role_arn                   = aws_iam_role.monitoring.arn
  enabled_cloudwatch_logs_exports       = ["postgresql", "upgrade"]

  depends_on = [aws_cloudwatch_log_group.postgresql, aws_cloudwatch_log_group.upgrade]
}

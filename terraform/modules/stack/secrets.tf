# The secrets the services log in with, in the layout of AWS's RDS rotation functions
# ({engine, host, port, username, password, dbname, masterarn}), each rotated every 30 days
# by the rotation function. Their first password is random, made at apply time and never
# stored in the Terraform state (write-only argument); the first rotation (docs/operations.md)
# sets the real one on the database.

locals {
  # name -> database user and whether the alternating-users scheme applies (applications).
  db_secrets = {
    "rates-api"     = { username = "rates_api", dbname = "rates", alternating = true }
    "proxy-control" = { username = "dbgw_proxy", dbname = "dbgw", alternating = false }
    "approvals"     = { username = "dbgw_approvals", dbname = "dbgw", alternating = false }
  }
}

# Secrets Manager's own generator (GetRandomPassword), an ephemeral resource: the value is
# never in the plan or the state. (hashicorp/random is not needed.)
ephemeral "aws_secretsmanager_random_password" "initial" {
  for_each            = var.write_secret_values ? local.db_secrets : {}
  provider            = aws.generator
  password_length     = 40
  exclude_punctuation = true
}

resource "aws_secretsmanager_secret" "db" {
  # checkov:skip=CKV2_AWS_57: rotation is turned on below (aws_secretsmanager_secret_rotation.db) from the second apply, enable_rotation = true; the terraform test suite (environments/_shared/tests) asserts every one rotates every 30 days then.
  for_each                = local.db_secrets
  name                    = "${local.secret_prefix}/${each.key}"
  description             = "Database login of ${each.key} (user ${each.value.username})"
  kms_key_id              = module.secrets_key.arn
  recovery_window_in_days = 30
}

resource "aws_secretsmanager_secret_version" "db" {
  for_each  = var.write_secret_values ? local.db_secrets : {}
  secret_id = aws_secretsmanager_secret.db[each.key].id
  secret_string_wo = jsonencode(merge(
    {
      engine   = "postgres"
      host     = module.database.address
      port     = module.database.port
      username = each.value.username
      password = ephemeral.aws_secretsmanager_random_password.initial[each.key].random_password
      dbname   = each.value.dbname
    },
    # The master sets the first password on the database in both schemes (the random one
    # above was never set there); single-user logins then keep their one user.
    { masterarn = module.database.master_user_secret_arn },
    each.value.alternating ? {} : { rotation = "single-user" },
  ))
  secret_string_wo_version = 1
  lifecycle {
    # After the first rotation the function owns the value.
    ignore_changes = [secret_string_wo_version]
  }
}

# Turned on in a second apply (var.enable_rotation, docs/operations.md "Deploy"): turning
# rotation on makes Secrets Manager call the function at once (it tests the rotation
# configuration even without rotate_immediately), and in the first apply neither the
# database roles (made by the db-admin task afterwards) nor the permissions it needs are in
# place, so that call fails and the apply stops.
resource "aws_secretsmanager_secret_rotation" "db" {
  for_each            = var.enable_rotation ? local.db_secrets : {}
  secret_id           = aws_secretsmanager_secret.db[each.key].id
  rotation_lambda_arn = module.rotation.function_arn
  # The roles exist only after `dbgw-db setup`; the first rotation is started by hand then.
  rotate_immediately = false
  rotation_rules {
    automatically_after_days = 30
  }
  depends_on = [aws_secretsmanager_secret_version.db]
}

# The approvals app's OpenID Connect client secret: issued and rotated by the identity
# provider, copied here by its administrators.
resource "aws_secretsmanager_secret" "approvals_oidc" {
  # checkov:skip=CKV2_AWS_57: the identity provider issues and rotates this client secret; Secrets Manager only carries it.
  name                    = "${local.secret_prefix}/approvals-oidc"
  description             = "OIDC client secret of the approvals app (value set by the IdP administrators)"
  kms_key_id              = module.secrets_key.arn
  recovery_window_in_days = 30
}

# The bearer token the identity provider deprovisions people with (SCIM), when enabled:
# generated and set by its administrators (`openssl rand -hex 32`), the same in the provider.
resource "aws_secretsmanager_secret" "approvals_scim" {
  # checkov:skip=CKV2_AWS_57: the token is shared with the identity provider and replaced there and here together; Secrets Manager only carries it.
  count                   = var.approvals_scim_enabled ? 1 : 0
  name                    = "${local.secret_prefix}/approvals-scim"
  description             = "SCIM bearer token of the approvals app, {\"token\": \"...\"} (value set by the IdP administrators)"
  kms_key_id              = module.secrets_key.arn
  recovery_window_in_days = 30
}

module "rotation" {
  source              = "../rotation"
  name                = local.name
  zip_path            = var.rotation_zip_path
  vpc_id              = module.network.vpc_id
  vpc_cidr            = module.network.vpc_cidr
  subnet_ids          = module.network.private_subnet_ids
  rotated_secret_arns = [for s in aws_secretsmanager_secret.db : s.arn]
  # With IAM logins there are no people's secrets: the function gets no right on the prefix.
  person_secret_prefix = local.people_iam ? "" : local.person_secret_prefix
  master_secret_arn    = module.database.master_user_secret_arn
  kms_key_arns         = [module.secrets_key.arn, module.database.kms_key_arn, module.people_secrets_key.arn]
  lambda_kms_key_arn   = module.secrets_key.arn
  reserved_concurrency = var.rotation_reserved_concurrency
  # Whom the function acts for (docs/rotation.md): its configuration, never the secret,
  # names the masters, which secrets alternate users and where people's secrets live.
  environment = {
    ROTATION_DATABASE__CA_FILE      = "/var/task/rds-ca/global-bundle.pem"
    ROTATION_DATABASE__DEFAULT_HOST = module.database.address
    ROTATION_LOG__FORMAT            = "json"
    ROTATION_POLICY__MASTERS        = jsonencode([module.database.master_user_secret_arn])
    ROTATION_POLICY__PERSON_MASTERS = jsonencode([aws_secretsmanager_secret.db["approvals"].arn])
    ROTATION_POLICY__ALTERNATING    = jsonencode([for k, v in local.db_secrets : aws_secretsmanager_secret.db[k].arn if v.alternating])
    ROTATION_POLICY__PERSON_PREFIX  = local.person_secret_prefix
  }
  log_retention_days = var.log_retention_days
  logs_kms_key_arn   = module.logs_key.arn
}

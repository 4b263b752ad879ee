# The three services on Fargate. Configuration is the workspace's one scheme: every key as a
# <PREFIX><SECTION>__<KEY> variable (docs/proxy.md, docs/rates-api.md); no secret is ever in
# the environment except the PEM files that the images' entrypoint writes to /run/dbgw (a
# task-local volume) and removes from the environment before starting the service.

locals {
  # A VOLUME of the proxy and shipper images (so Fargate makes it writable by uid 10001);
  # not /var/lib/dbgw/audit, which the compose stack shares under its own volume.
  audit_dir = "/var/lib/dbgw-audit"
  own_secret_read = {
    actions = ["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"]
  }
}


# --- proxy ---

data "aws_iam_policy_document" "proxy_task" {
  statement {
    sid     = "ServiceAndControlLogins"
    actions = local.own_secret_read.actions
    resources = [
      aws_secretsmanager_secret.db["rates-api"].arn,
      aws_secretsmanager_secret.db["proxy-control"].arn,
      aws_secretsmanager_secret.proxy_fleet.arn,
    ]
  }
  # People's logins: their secrets (password), or IAM auth tokens for their roles (rds-iam).
  dynamic "statement" {
    for_each = local.people_iam ? [] : ["password"]
    content {
      sid       = "PeoplesLogins"
      actions   = local.own_secret_read.actions
      resources = ["${local.secret_arn_prefix}${local.person_secret_prefix}*"]
    }
  }
  statement {
    sid       = "DecryptSecrets"
    actions   = ["kms:Decrypt"]
    resources = [module.secrets_key.arn, module.people_secrets_key.arn]
  }
  dynamic "statement" {
    for_each = local.people_iam ? ["rds-iam"] : []
    content {
      sid       = "IamAuthForPeoplesRoles"
      actions   = ["rds-db:connect"]
      resources = ["arn:aws:rds-db:${local.region}:${local.account_id}:dbuser:${module.database.resource_id}/p_*"]
    }
  }
  # The proxy-cert container (same task): its own certificate, at every task start.
  statement {
    sid       = "ExportOwnCertificate"
    actions   = ["acm:ExportCertificate"]
    resources = [aws_acm_certificate.proxy.arn]
  }
  # The audit shipper (same task): put objects, never delete or change retention.
  statement {
    sid       = "ShipAudit"
    actions   = ["s3:PutObject"]
    resources = ["${module.audit_bucket.arn}/${var.environment}/*"]
  }
  statement {
    sid       = "AuditKey"
    actions   = ["kms:GenerateDataKey", "kms:Encrypt"]
    resources = [module.audit_bucket.kms_key_arn]
  }
}

module "proxy" {
  source       = "../ecs-service"
  name         = "proxy"
  cluster_name = aws_ecs_cluster.this.name
  cluster_arn  = aws_ecs_cluster.this.arn
  image        = var.images.proxy
  cpu          = var.proxy_cpu
  memory       = var.proxy_memory
  # 6432 PostgreSQL clients, 9187 health and metrics, 6433 peers (forwarded cancels).
  container_ports = [6432, 9187, 6433]
  health_port     = 9187
  environment = {
    PROXY_LISTEN              = "0.0.0.0:6432"
    PROXY_ADMIN_LISTEN        = "0.0.0.0:9187"
    PROXY_SHUTDOWN_GRACE_SECS = tostring(var.proxy_drain_secs - 15)
    # One session thread per vCPU the task pays for: Fargate may show a small task more
    # CPUs than its quota, and a second thread on one vCPU only adds sleeps and wake-ups.
    PROXY_WORKER_THREADS           = tostring(max(1, floor(var.proxy_cpu / 1024)))
    PROXY_TLS__CERT_FILE           = "/run/dbgw/tls.crt"
    PROXY_TLS__KEY_FILE            = "/run/dbgw/tls.key"
    PROXY_TLS__PLAINTEXT           = "never"
    PROXY_UPSTREAM__HOST           = module.database.address
    PROXY_UPSTREAM__PORT           = tostring(module.database.port)
    PROXY_UPSTREAM__TLS            = "verify-full"
    PROXY_UPSTREAM__CA_FILE        = local.rds_ca_file
    PROXY_UPSTREAM__AUTH           = var.people_login
    PROXY_UPSTREAM__REGION         = local.region
    PROXY_PROXY_PROTOCOL__FROM     = jsonencode([module.network.vpc_cidr])
    PROXY_SERVICES__RATES_API      = aws_secretsmanager_secret.db["rates-api"].name
    PROXY_OIDC__ISSUER             = var.oidc_issuer
    PROXY_OIDC__AUDIENCES          = jsonencode(var.oidc_audiences)
    PROXY_GRANTS__DATABASE         = "dbgw"
    PROXY_GRANTS__SECRET           = aws_secretsmanager_secret.db["proxy-control"].name
    PROXY_AUDIT__DIR               = local.audit_dir
    PROXY_AUDIT__DURABILITY        = "fsync"
    PROXY_AUDIT__MAX_FILE_AGE_SECS = "300"
    PROXY_SECRETS__BACKEND         = local.secrets_backend
    PROXY_LOG__FORMAT              = "json"
    PROXY_FLEET__LISTEN            = "0.0.0.0:${local.proxy_peer_port}"
    PROXY_FLEET__PEERS             = jsonencode([local.proxy_peers])
    PROXY_FLEET__SECRET            = aws_secretsmanager_secret.proxy_fleet.name
  }
  # The TLS certificate and key: fetched from ACM at task start by the proxy-cert container
  # below into /run/dbgw (proxy_cert.tf: a renewal rolls the service).
  secrets_kms_key_arn = module.secrets_key.arn
  task_policy_json    = data.aws_iam_policy_document.proxy_task.json
  volumes = [
    { name = "run", path = "/run/dbgw" },
    { name = "audit", path = local.audit_dir },
  ]
  sidecar_volumes     = ["shipper-state"]
  start_after         = ["audit-shipper"]
  start_after_success = ["proxy-cert"]
  sidecars = [
    {
      # Exports the proxy's certificate from ACM (deploy/proxy-cert/fetch.sh) into the run
      # volume and exits; the proxy starts only once it succeeded.
      name                   = "proxy-cert"
      image                  = var.images.audit_shipper
      essential              = false
      readonlyRootFilesystem = true
      user                   = "10001:10001"
      entryPoint             = ["/usr/local/bin/proxy-cert-fetch"]
      environment = [
        { name = "ACM_CERTIFICATE_ARN", value = aws_acm_certificate.proxy.arn },
        { name = "CERT_DIR", value = "/run/dbgw" },
      ]
      mountPoints = [
        { sourceVolume = "run", containerPath = "/run/dbgw", readOnly = false },
      ]
    },
    {
      # Ships every audit file and the chain's head checkpoint to the Object Lock bucket;
      # on stop it waits for the proxy to finish, then ships the last records.
      name                   = "audit-shipper"
      image                  = var.images.audit_shipper
      essential              = true
      readonlyRootFilesystem = true
      user                   = "10001:10001"
      stopTimeout            = 120
      environment = [
        { name = "AUDIT_DIR", value = local.audit_dir },
        { name = "AUDIT_BUCKET", value = module.audit_bucket.bucket },
        { name = "AUDIT_PREFIX", value = var.environment },
        { name = "AUDIT_KMS_KEY_ID", value = module.audit_bucket.kms_key_arn },
        { name = "SHIP_PROXY_ADMIN_URL", value = "http://127.0.0.1:9187" },
        { name = "SHIP_INTERVAL_SECS", value = "15" },
      ]
      mountPoints = [
        { sourceVolume = "audit", containerPath = local.audit_dir, readOnly = true },
        { sourceVolume = "shipper-state", containerPath = "/var/lib/audit-shipper", readOnly = false },
      ]
    },
    {
      # Reads the proxy's /metrics and prints the alarms' metrics as embedded-metric-format
      # lines (deploy/audit-shipper/metrics.sh); the proxy's log group turns them into
      # CloudWatch metrics. Our image, as the task's user, read-only root, no volume.
      name                   = "metrics-agent"
      image                  = var.images.audit_shipper
      essential              = false
      readonlyRootFilesystem = true
      user                   = "10001:10001"
      entryPoint             = ["/usr/local/bin/proxy-metrics"]
      environment = [
        { name = "METRICS_URL", value = "http://127.0.0.1:9187/metrics" },
        { name = "METRICS_NAMESPACE", value = local.metrics_namespace },
        { name = "METRICS_NAMES", value = join(",", local.proxy_alarm_metrics) },
        { name = "METRICS_INTERVAL_SECS", value = "60" },
      ]
    },
  ]
  stop_timeout_secs  = var.proxy_drain_secs
  subnet_ids         = module.network.private_subnet_ids
  security_group_id  = aws_security_group.proxy.id
  target_groups      = [{ arn = aws_lb_target_group.proxy.arn, port = 6432 }]
  service_registry   = aws_service_discovery_service.proxy_peers.arn
  min_tasks          = var.proxy_min_tasks
  max_tasks          = var.proxy_max_tasks
  started            = var.start_services
  log_retention_days = var.log_retention_days
  logs_kms_key_arn   = module.logs_key.arn
}

# --- rates-api ---

data "aws_iam_policy_document" "rates_api_task" {
  statement {
    sid       = "OwnLogin"
    actions   = local.own_secret_read.actions
    resources = [aws_secretsmanager_secret.db["rates-api"].arn]
  }
  statement {
    sid       = "DecryptSecrets"
    actions   = ["kms:Decrypt"]
    resources = [module.secrets_key.arn]
  }
}

module "rates_api" {
  source          = "../ecs-service"
  name            = "rates-api"
  cluster_name    = aws_ecs_cluster.this.name
  cluster_arn     = aws_ecs_cluster.this.arn
  image           = var.images.rates_api
  cpu             = var.rates_api_cpu
  memory          = var.rates_api_memory
  container_ports = [3000]
  health_port     = 3000
  environment = {
    RATES_API_LISTEN            = "0.0.0.0:3000"
    RATES_API_DATABASE__HOST    = local.db_host
    RATES_API_DATABASE__PORT    = "5432"
    RATES_API_DATABASE__DBNAME  = "rates"
    RATES_API_DATABASE__TLS     = "verify-full"
    RATES_API_DATABASE__CA_FILE = "/run/dbgw/ca.pem"
    RATES_API_DATABASE__SECRET  = aws_secretsmanager_secret.db["rates-api"].name
    RATES_API_SECRETS__BACKEND  = local.secrets_backend
    RATES_API_LOG__FORMAT       = "json"
    # The private CA's certificate (public): the entrypoint writes it to /run/dbgw/ca.pem.
    CA_PEM = data.aws_acmpca_certificate_authority.private.certificate
  }
  secrets_kms_key_arn = module.secrets_key.arn
  task_policy_json    = data.aws_iam_policy_document.rates_api_task.json
  volumes             = [{ name = "run", path = "/run/dbgw" }]
  subnet_ids          = module.network.private_subnet_ids
  security_group_id   = aws_security_group.rates_api.id
  target_groups       = [{ arn = aws_lb_target_group.web["rates"].arn, port = 3000 }]
  min_tasks           = var.rates_api_min_tasks
  max_tasks           = var.rates_api_max_tasks
  started             = var.start_services
  log_retention_days  = var.log_retention_days
  logs_kms_key_arn    = module.logs_key.arn
}

# --- approvals ---

data "aws_iam_policy_document" "approvals_task" {
  statement {
    sid     = "OwnLogins"
    actions = local.own_secret_read.actions
    resources = concat([
      aws_secretsmanager_secret.db["approvals"].arn,
      aws_secretsmanager_secret.approvals_oidc.arn,
    ], aws_secretsmanager_secret.approvals_scim[*].arn)
  }
  # People's secrets: made on approval, deleted when the last grant ends, rotated by the
  # function. With IAM logins none is made: the app may only delete what a password era left
  # (it does at start-up), never write one, so it cannot aim the rotation function at a user.
  statement {
    sid = "PeoplesLogins"
    actions = local.people_iam ? ["secretsmanager:DescribeSecret", "secretsmanager:DeleteSecret"] : [
      "secretsmanager:CreateSecret", "secretsmanager:PutSecretValue", "secretsmanager:GetSecretValue",
      "secretsmanager:DescribeSecret", "secretsmanager:DeleteSecret", "secretsmanager:TagResource",
      "secretsmanager:RotateSecret",
    ]
    resources = ["${local.secret_arn_prefix}${local.person_secret_prefix}*"]
  }
  dynamic "statement" {
    for_each = local.people_iam ? [] : ["password"]
    content {
      sid       = "RotationFunction"
      actions   = ["lambda:InvokeFunction"]
      resources = [module.rotation.function_arn]
    }
  }
  # "Activity under this access" (docs/approvals.md): the shipped proxy audit, read only.
  statement {
    sid       = "ReadAudit"
    actions   = ["s3:GetObject"]
    resources = ["${module.audit_bucket.arn}/${var.environment}/*"]
  }
  statement {
    sid       = "ListAudit"
    actions   = ["s3:ListBucket"]
    resources = [module.audit_bucket.arn]
    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["${var.environment}/*"]
    }
  }
  statement {
    sid       = "AuditKeyDecrypt"
    actions   = ["kms:Decrypt"]
    resources = [module.audit_bucket.kms_key_arn]
  }
  statement {
    sid       = "Secrets"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [module.secrets_key.arn, module.people_secrets_key.arn]
  }
  # People's secrets must be made with their key and deleted with a recovery window. Off
  # until the approvals app passes KmsKeyId and RecoveryWindowInDays (docs/operations.md,
  # "People's secrets"): today it creates them with the default key and deletes them at once,
  # and these denies would make every approval fail.
  dynamic "statement" {
    for_each = var.people_secrets_enforced ? ["on"] : []
    content {
      sid       = "PeoplesSecretsOnlyWithTheirKey"
      effect    = "Deny"
      actions   = ["secretsmanager:CreateSecret"]
      resources = ["${local.secret_arn_prefix}${local.person_secret_prefix}*"]
      condition {
        test     = "StringNotEqualsIfExists"
        variable = "secretsmanager:KmsKeyArn"
        values   = [module.people_secrets_key.arn]
      }
    }
  }
  dynamic "statement" {
    for_each = var.people_secrets_enforced ? ["on"] : []
    content {
      sid       = "PeoplesSecretsNotDeletedAtOnce"
      effect    = "Deny"
      actions   = ["secretsmanager:DeleteSecret"]
      resources = ["${local.secret_arn_prefix}${local.person_secret_prefix}*"]
      condition {
        test     = "Bool"
        variable = "secretsmanager:ForceDeleteWithoutRecovery"
        values   = ["true"]
      }
    }
  }
}

module "approvals" {
  source          = "../ecs-service"
  name            = "approvals"
  cluster_name    = aws_ecs_cluster.this.name
  cluster_arn     = aws_ecs_cluster.this.arn
  image           = var.images.approvals
  cpu             = var.approvals_cpu
  memory          = var.approvals_memory
  container_ports = [8080]
  health_port     = 8080
  environment = merge({
    APPROVALS_LISTEN           = "0.0.0.0:8080"
    APPROVALS_PUBLIC_URL       = "https://approvals.${var.domain}"
    APPROVALS_CONTROL__HOST    = module.database.address
    APPROVALS_CONTROL__PORT    = tostring(module.database.port)
    APPROVALS_CONTROL__DBNAME  = "dbgw"
    APPROVALS_CONTROL__CA_FILE = local.rds_ca_file
    APPROVALS_CONTROL__SECRET  = aws_secretsmanager_secret.db["approvals"].name
    APPROVALS_TARGET__HOST     = module.database.address
    APPROVALS_TARGET__PORT     = tostring(module.database.port)
    APPROVALS_TARGET__CA_FILE  = local.rds_ca_file
    APPROVALS_TARGET__SECRET   = aws_secretsmanager_secret.db["approvals"].name
    APPROVALS_OIDC__ISSUER     = var.oidc_issuer
    APPROVALS_OIDC__CLIENT_ID  = var.approvals_oidc_client_id
    APPROVALS_OIDC__SECRET     = aws_secretsmanager_secret.approvals_oidc.name
    APPROVALS_SECRETS__BACKEND = local.secrets_backend
    APPROVALS_PEOPLE__LOGIN    = var.people_login
    # People's secrets: their own key, and a week to restore one deleted by mistake.
    APPROVALS_SECRETS__KMS_KEY_ID           = module.people_secrets_key.arn
    APPROVALS_SECRETS__RECOVERY_WINDOW_DAYS = "7"
    APPROVALS_LOG__FORMAT                   = "json"
    APPROVALS_AUDIT__LOCATION               = "s3://${module.audit_bucket.bucket}/${var.environment}"
    }, {
    # People's passwords rotate with the function; IAM logins have none.
    for k, v in { APPROVALS_ROTATION__FUNCTION_ARN = module.rotation.function_arn } : k => v if !local.people_iam
    }, {
    # The SCIM endpoint, when enabled (docs/approvals.md, "Deprovisioning (SCIM)").
    for k, v in {
      APPROVALS_SCIM__ENABLED = "true"
      APPROVALS_SCIM__SECRET  = one(aws_secretsmanager_secret.approvals_scim[*].name)
    } : k => v if var.approvals_scim_enabled
  })
  secrets_kms_key_arn = module.secrets_key.arn
  task_policy_json    = data.aws_iam_policy_document.approvals_task.json
  volumes             = [{ name = "run", path = "/run/dbgw" }]
  subnet_ids          = module.network.private_subnet_ids
  security_group_id   = aws_security_group.approvals.id
  target_groups       = [{ arn = aws_lb_target_group.web["approvals"].arn, port = 8080 }]
  min_tasks           = 2
  max_tasks           = 4
  started             = var.start_services
  log_retention_days  = var.log_retention_days
  logs_kms_key_arn    = module.logs_key.arn
}

# --- db-admin: one-off tasks (dbgw-db setup / migrate), started by hand ---

data "aws_iam_policy_document" "db_admin_task" {
  statement {
    sid       = "MasterLogin"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [module.database.master_user_secret_arn]
  }
  statement {
    sid       = "MasterKey"
    actions   = ["kms:Decrypt"]
    resources = [module.database.kms_key_arn]
  }
  # `setup --adopt`: each login's first password (written by Terraform) is set on the
  # database, so the rotation function can prove it before its first rotation.
  statement {
    sid       = "FirstPasswords"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [for s in aws_secretsmanager_secret.db : s.arn]
  }
  statement {
    sid       = "FirstPasswordsKey"
    actions   = ["kms:Decrypt"]
    resources = [module.secrets_key.arn]
  }
}

resource "aws_cloudwatch_log_group" "db_admin" {
  name              = "/dbgw/${local.name}/db-admin"
  retention_in_days = var.log_retention_days
  kms_key_id        = module.logs_key.arn
}

resource "aws_iam_role" "db_admin_task" {
  name               = "${local.name}-db-admin-task"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
}

resource "aws_iam_role_policy" "db_admin_task" {
  role   = aws_iam_role.db_admin_task.id
  policy = data.aws_iam_policy_document.db_admin_task.json
}

resource "aws_iam_role" "db_admin_execution" {
  name               = "${local.name}-db-admin-execution"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
}

resource "aws_iam_role_policy_attachment" "db_admin_execution" {
  role       = aws_iam_role.db_admin_execution.name
  policy_arn = "arn:aws:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy"
}

data "aws_iam_policy_document" "ecs_tasks_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ecs-tasks.amazonaws.com"]
    }
  }
}

resource "aws_ecs_task_definition" "db_admin" {
  family                   = "${local.name}-db-admin"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = 512
  memory                   = 1024
  execution_role_arn       = aws_iam_role.db_admin_execution.arn
  task_role_arn            = aws_iam_role.db_admin_task.arn
  container_definitions = jsonencode([{
    name                   = "dbgw-db"
    image                  = var.images.dbgw_db
    essential              = true
    readonlyRootFilesystem = true
    user                   = "10001:10001"
    command = concat(
      ["setup", "--host", module.database.address, "--port", tostring(module.database.port), "--ca", local.rds_ca_file, "--admin-secret", module.database.master_user_secret_arn],
      flatten([for s in aws_secretsmanager_secret.db : ["--adopt", s.arn]]),
    )
    environment = [
      # The secret-store backend of issue 10; dbgw-db reads the master secret by its ARN.
      { name = "DBGW_SECRETS_BACKEND", value = local.secrets_backend },
    ]
    logConfiguration = {
      logDriver = "awslogs"
      options = {
        "awslogs-group"         = aws_cloudwatch_log_group.db_admin.name
        "awslogs-region"        = local.region
        "awslogs-stream-prefix" = "db-admin"
      }
    }
  }])
  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = "X86_64"
  }
}

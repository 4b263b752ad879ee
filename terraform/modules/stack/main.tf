# The whole dbgw system in one AWS account and region: network, database, the three ECS
# services (proxy, approvals, rates-api), the rotation function, the secrets it rotates, the
# audit bucket and the alarms. The environments (staging, production) are thin root modules
# that call this one with their own sizes and names.

data "aws_caller_identity" "current" {}
data "aws_region" "current" {}

locals {
  name          = "dbgw-${var.environment}"
  secret_prefix = "dbgw/${var.environment}"
  # People's secrets are made and deleted by the approvals app, under this prefix: the one
  # the apps use (grants::person_secret), the same in every environment (one per account).
  person_secret_prefix = "dbgw/person/"
  # People's roles log in with IAM auth tokens: no person's secret is made, read or rotated.
  people_iam        = var.people_login == "rds-iam"
  account_id        = data.aws_caller_identity.current.account_id
  region            = data.aws_region.current.name
  secret_arn_prefix = "arn:aws:secretsmanager:${local.region}:${local.account_id}:secret:"
  db_host           = "db.${var.domain}"
  # The secret-store backend of issue 10 (AWS Secrets Manager); the file backend is local only.
  secrets_backend = "aws"
  # RDS's CA bundle, put into the images by `make rds-ca` (docs/operations.md).
  rds_ca_file = "/etc/dbgw/rds-ca/global-bundle.pem"
}

# One key for the log groups, one for the secrets; the database and the audit bucket have
# their own (modules/database, modules/audit-bucket).
data "aws_iam_policy_document" "logs_kms" {
  statement {
    sid       = "CloudWatchLogsEncrypts"
    actions   = ["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"]
    resources = ["*"]
    principals {
      type        = "Service"
      identifiers = ["logs.${local.region}.amazonaws.com"]
    }
    condition {
      test     = "ArnLike"
      variable = "kms:EncryptionContext:aws:logs:arn"
      values   = ["arn:aws:logs:${local.region}:${local.account_id}:log-group:*"]
    }
  }
}

data "aws_iam_policy_document" "secrets_kms" {
  # checkov:skip=CKV_AWS_111: a key policy statement: Resource "*" means this key, granted to the two AWS services that publish to the encrypted alarm topic.
  # checkov:skip=CKV_AWS_356: as above.
  # CloudWatch alarms and EventBridge publish to the encrypted alarm topic.
  statement {
    sid       = "AlarmPublishers"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey*"]
    resources = ["*"]
    principals {
      type        = "Service"
      identifiers = ["cloudwatch.amazonaws.com", "events.amazonaws.com"]
    }
  }
}

module "logs_key" {
  source            = "../kms-key"
  alias             = "${local.name}-logs"
  description       = "${local.name}: CloudWatch log groups"
  extra_policy_json = data.aws_iam_policy_document.logs_kms.json
}

module "secrets_key" {
  source            = "../kms-key"
  alias             = "${local.name}-secrets"
  description       = "${local.name}: Secrets Manager secrets, the rotation function's environment, alarm topic"
  extra_policy_json = data.aws_iam_policy_document.secrets_kms.json
}

# People's database logins (dbgw/person/*, made by the approvals app on approval): their own
# customer-managed key, so who may read them is this key's and the roles' policies, not the
# account-wide aws/secretsmanager key's. Used through IAM (AWS's default key policy).
module "people_secrets_key" {
  source      = "../kms-key"
  alias       = "${local.name}-people-secrets"
  description = "${local.name}: people's database logins (Secrets Manager, dbgw/person/*)"
}

module "network" {
  source                    = "../network"
  name                      = local.name
  cidr                      = var.vpc_cidr
  azs                       = var.azs
  nat_for_identity_provider = var.nat_for_identity_provider
  log_retention_days        = var.log_retention_days
  logs_kms_key_arn          = module.logs_key.arn
}

module "database" {
  source         = "../database"
  name           = local.name
  vpc_id         = module.network.vpc_id
  subnet_ids     = module.network.private_subnet_ids
  engine_version = var.db_engine_version
  instance_class = var.db_instance_class
  multi_az       = var.db_multi_az
  # Only these reach PostgreSQL. db_admin (migrations, break-glass) only while switched on.
  client_security_group_ids = merge(
    {
      proxy     = aws_security_group.proxy.id
      rotation  = module.rotation.security_group_id
      approvals = aws_security_group.approvals.id
    },
    var.db_admin_access ? { db_admin = aws_security_group.db_admin.id } : {},
  )
  backup_retention_days = var.db_backup_retention_days
  deletion_protection   = var.db_deletion_protection
  log_retention_days    = var.log_retention_days
  logs_kms_key_arn      = module.logs_key.arn
}

resource "aws_ecs_cluster" "this" {
  name = local.name
  setting {
    name  = "containerInsights"
    value = "enhanced"
  }
}

resource "aws_ecs_cluster_capacity_providers" "this" {
  cluster_name       = aws_ecs_cluster.this.name
  capacity_providers = ["FARGATE"]
  default_capacity_provider_strategy {
    capacity_provider = "FARGATE"
    weight            = 1
  }
}

# Private DNS: db.<domain> (the proxy), approvals.<domain> and rates.<domain> (the ALB).
resource "aws_route53_zone" "internal" {
  # checkov:skip=CKV2_AWS_38: DNSSEC signing is for public zones; this zone is private to the VPC.
  # checkov:skip=CKV2_AWS_39: query logging for a private zone goes through Route 53 Resolver query logs, an account-wide setting.
  name = var.domain
  vpc {
    vpc_id = module.network.vpc_id
  }
}

resource "aws_route53_record" "db" {
  zone_id = aws_route53_zone.internal.zone_id
  name    = local.db_host
  type    = "A"
  alias {
    name                   = aws_lb.proxy.dns_name
    zone_id                = aws_lb.proxy.zone_id
    evaluate_target_health = true
  }
}

resource "aws_route53_record" "web" {
  for_each = toset(["approvals", "rates"])
  zone_id  = aws_route53_zone.internal.zone_id
  name     = "${each.key}.${var.domain}"
  type     = "A"
  alias {
    name                   = aws_lb.web.dns_name
    zone_id                = aws_lb.web.zone_id
    evaluate_target_health = true
  }
}

# Certificates from the company's ACM Private CA: the ALB's is used by ACM directly; the
# proxy's is exported into a secret (the proxy terminates TLS itself: PostgreSQL starts TLS
# inside the protocol, after an SSLRequest, which a load balancer cannot answer).
data "aws_acmpca_certificate_authority" "private" {
  arn = var.private_ca_arn
}

resource "aws_acm_certificate" "web" {
  domain_name               = "approvals.${var.domain}"
  subject_alternative_names = ["rates.${var.domain}"]
  certificate_authority_arn = var.private_ca_arn
  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_acm_certificate" "proxy" {
  domain_name               = local.db_host
  certificate_authority_arn = var.private_ca_arn
  lifecycle {
    create_before_destroy = true
  }
}

# Bucket for S3 server access logs and load balancer access logs (SSE-S3: ELB access logs
# cannot use a customer-managed key).
resource "aws_s3_bucket" "access_logs" {
  # checkov:skip=CKV_AWS_145: load balancer access logs can only be written with SSE-S3, not with a customer-managed KMS key.
  # checkov:skip=CKV_AWS_18: this is the access-log bucket itself; logging it into itself would loop.
  # checkov:skip=CKV_AWS_144: access logs are operational data; the audit trail proper is in the Object Lock bucket.
  # checkov:skip=CKV2_AWS_62: nothing consumes events from the access-log bucket.
  bucket = "${local.name}-access-logs-${local.account_id}"
}

resource "aws_s3_bucket_versioning" "access_logs" {
  bucket = aws_s3_bucket.access_logs.id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "access_logs" {
  bucket = aws_s3_bucket.access_logs.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256"
    }
  }
}

module "access_logs_guard" {
  source     = "../bucket-guard"
  bucket     = aws_s3_bucket.access_logs.id
  bucket_arn = aws_s3_bucket.access_logs.arn
}

moved {
  from = aws_s3_bucket_public_access_block.access_logs
  to   = module.access_logs_guard.aws_s3_bucket_public_access_block.this
}

resource "aws_s3_bucket_lifecycle_configuration" "access_logs" {
  bucket = aws_s3_bucket.access_logs.id
  rule {
    id     = "expire"
    status = "Enabled"
    filter {}
    expiration {
      days = var.access_log_retention_days
    }
    noncurrent_version_expiration {
      noncurrent_days = 30
    }
    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }
  }
}

# The region's Elastic Load Balancing account: ALB access logs in regions opened before
# August 2022 (eu-west-1 among them) are written by it; newer regions use the service
# principal logdelivery.elasticloadbalancing.amazonaws.com. Both are granted.
data "aws_elb_service_account" "current" {}

data "aws_iam_policy_document" "access_logs" {
  # TlsOnly: the bucket guard's statement.
  source_policy_documents = [module.access_logs_guard.tls_only_policy]
  statement {
    sid       = "ApplicationLoadBalancerLogs"
    actions   = ["s3:PutObject"]
    resources = ["${aws_s3_bucket.access_logs.arn}/lb/web/AWSLogs/${local.account_id}/*"]
    principals {
      type        = "AWS"
      identifiers = [data.aws_elb_service_account.current.arn]
    }
    principals {
      type        = "Service"
      identifiers = ["logdelivery.elasticloadbalancing.amazonaws.com"]
    }
  }
  # Network Load Balancers deliver through CloudWatch's log delivery, which checks the
  # bucket's ACL first; only when the proxy's NLB logs at all (a TLS listener).
  dynamic "statement" {
    for_each = local.proxy_nlb_access_logs ? ["on"] : []
    content {
      sid       = "NetworkLoadBalancerLogs"
      actions   = ["s3:PutObject"]
      resources = ["${aws_s3_bucket.access_logs.arn}/lb/proxy/AWSLogs/${local.account_id}/*"]
      principals {
        type        = "Service"
        identifiers = ["delivery.logs.amazonaws.com"]
      }
      condition {
        test     = "StringEquals"
        variable = "s3:x-amz-acl"
        values   = ["bucket-owner-full-control"]
      }
      condition {
        test     = "StringEquals"
        variable = "aws:SourceAccount"
        values   = [local.account_id]
      }
    }
  }
  dynamic "statement" {
    for_each = local.proxy_nlb_access_logs ? ["on"] : []
    content {
      sid       = "NetworkLoadBalancerLogsAcl"
      actions   = ["s3:GetBucketAcl"]
      resources = [aws_s3_bucket.access_logs.arn]
      principals {
        type        = "Service"
        identifiers = ["delivery.logs.amazonaws.com"]
      }
      condition {
        test     = "StringEquals"
        variable = "aws:SourceAccount"
        values   = [local.account_id]
      }
    }
  }
  statement {
    sid       = "S3ServerAccessLogs"
    actions   = ["s3:PutObject"]
    resources = ["${aws_s3_bucket.access_logs.arn}/s3/*"]
    principals {
      type        = "Service"
      identifiers = ["logging.s3.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

resource "aws_s3_bucket_policy" "access_logs" {
  bucket = aws_s3_bucket.access_logs.id
  policy = data.aws_iam_policy_document.access_logs.json
}

module "audit_bucket" {
  source         = "../audit-bucket"
  name           = "${local.name}-audit-${local.account_id}"
  retention_days = var.audit_retention_days
  # Through the bucket policy: S3 checks, when logging is turned on, that the target's policy
  # lets logging.s3.amazonaws.com write (moto found the logging set before the policy).
  access_log_bucket = aws_s3_bucket_policy.access_logs.bucket
  # Only this principal may delete, disable or re-policy the audit key (docs/operations.md,
  # "Audit custody"); by default a break-glass role of this account, which the SCP names too.
  custodian_arn  = coalesce(var.audit_custodian_arn, "arn:aws:iam::${local.account_id}:role/dbgw-audit-custodian")
  trail_name     = "${local.name}-audit"
  shipped_prefix = var.environment
}

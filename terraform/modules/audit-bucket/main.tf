# Write-once storage for the proxy's audit files and their head checkpoints: S3 with Object
# Lock in compliance mode (nobody, root included, can delete or overwrite a locked version
# before its retention ends), encrypted with its own KMS key, TLS only, moved to Glacier as
# it ages. The shipper may only put objects; nothing in the system may delete them.

data "aws_caller_identity" "current" {}
data "aws_region" "current" {}

locals {
  account_id = data.aws_caller_identity.current.account_id
  region     = data.aws_region.current.name
  # The trail's ARN, built from its name: the key and the trail bucket name it before it exists.
  trail_arn = "arn:aws:cloudtrail:${local.region}:${local.account_id}:trail/${var.trail_name}"
  # What no one but the custodian may do to the audit key (the key policy denies it; the
  # organisation's SCP in docs/operations.md denies it again, by this tag).
  custody_tags = { "dbgw-custody" = "audit" }
  protected_key_actions = [
    "kms:ScheduleKeyDeletion", "kms:PutKeyPolicy", "kms:DisableKey", "kms:DisableKeyRotation",
  ]
}

# Audit custody (issue 18): the key that encrypts every audit object, CloudTrail's record of
# who read or wrote them, and the pgaudit export. The account's own administrators may use
# and describe it (AWS's default statement, so IAM policies grant its use), but only the
# custodian (a break-glass or log-archive principal, var.custodian_arn) may delete it,
# disable it or change its policy.
data "aws_iam_policy_document" "key" {
  # checkov:skip=CKV_AWS_109: a KMS key policy: Resource "*" means this key only; the account-root statement is AWS's default key policy, which lets IAM policies grant use; the Deny below takes deletion and policy changes away from everyone but the custodian.
  # checkov:skip=CKV_AWS_111: as above (key policy, not an identity policy).
  # checkov:skip=CKV_AWS_356: as above (key policy, not an identity policy).
  statement {
    sid       = "AccountAdministers"
    actions   = ["kms:*"]
    resources = ["*"]
    principals {
      type        = "AWS"
      identifiers = ["arn:aws:iam::${local.account_id}:root"]
    }
  }
  statement {
    sid       = "OnlyTheCustodianDeletesOrChangesTheKey"
    effect    = "Deny"
    actions   = local.protected_key_actions
    resources = ["*"]
    principals {
      type        = "AWS"
      identifiers = ["*"]
    }
    condition {
      test     = "ArnNotEquals"
      variable = "aws:PrincipalArn"
      values   = [var.custodian_arn]
    }
  }
  # A custodian in another account (log archive) needs the key's own grant as well.
  dynamic "statement" {
    for_each = split(":", var.custodian_arn)[4] == local.account_id ? [] : ["other account"]
    content {
      sid       = "CustodianAdministers"
      actions   = concat(local.protected_key_actions, ["kms:DescribeKey", "kms:GetKeyPolicy", "kms:CancelKeyDeletion", "kms:EnableKey"])
      resources = ["*"]
      principals {
        type        = "AWS"
        identifiers = [var.custodian_arn]
      }
    }
  }
  statement {
    sid       = "CloudTrailEncryptsItsLogs"
    actions   = ["kms:GenerateDataKey*"]
    resources = ["*"]
    principals {
      type        = "Service"
      identifiers = ["cloudtrail.amazonaws.com"]
    }
    condition {
      test     = "StringLike"
      variable = "kms:EncryptionContext:aws:cloudtrail:arn"
      values   = ["arn:aws:cloudtrail:*:${local.account_id}:trail/*"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceArn"
      values   = [local.trail_arn]
    }
  }
  statement {
    sid       = "CloudTrailDescribes"
    actions   = ["kms:DescribeKey"]
    resources = ["*"]
    principals {
      type        = "Service"
      identifiers = ["cloudtrail.amazonaws.com"]
    }
  }
}

resource "aws_kms_key" "audit" {
  description             = "${var.name}: audit log objects, their CloudTrail record, the pgaudit export"
  enable_key_rotation     = true
  deletion_window_in_days = var.key_deletion_window_days
  policy                  = data.aws_iam_policy_document.key.json
  # The policy denies PutKeyPolicy to everyone but the custodian, whoever runs this apply
  # included: KMS's lockout check would refuse it. From now on, a change to this policy is
  # an apply run by the custodian (docs/operations.md, "Audit custody").
  bypass_policy_lockout_safety_check = true
  tags                               = local.custody_tags
  lifecycle {
    prevent_destroy = true
  }
}

resource "aws_kms_alias" "audit" {
  name          = "alias/${var.name}"
  target_key_id = aws_kms_key.audit.key_id
}

resource "aws_s3_bucket" "audit" {
  # checkov:skip=CKV_AWS_144: cross-region replication is a per-company choice (a second region with its own lock); docs/operations.md says how to add it.
  # checkov:skip=CKV2_AWS_62: nothing consumes events from this bucket; CloudTrail data events record every access, S3 request metrics feed the audit-not-arriving alarm.
  bucket              = var.name
  object_lock_enabled = true
  force_destroy       = false
}

resource "aws_s3_bucket_versioning" "audit" {
  bucket = aws_s3_bucket.audit.id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_object_lock_configuration" "audit" {
  bucket = aws_s3_bucket.audit.id
  rule {
    default_retention {
      mode = "COMPLIANCE"
      days = var.retention_days
    }
  }
  # Object Lock needs versioning on: set after it, removed before it.
  depends_on = [aws_s3_bucket_versioning.audit]
}

resource "aws_s3_bucket_server_side_encryption_configuration" "audit" {
  bucket = aws_s3_bucket.audit.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = aws_kms_key.audit.arn
    }
    bucket_key_enabled = true
  }
}

module "audit_guard" {
  source     = "../bucket-guard"
  bucket     = aws_s3_bucket.audit.id
  bucket_arn = aws_s3_bucket.audit.arn
}

moved {
  from = aws_s3_bucket_public_access_block.audit
  to   = module.audit_guard.aws_s3_bucket_public_access_block.this
}

resource "aws_s3_bucket_ownership_controls" "audit" {
  bucket = aws_s3_bucket.audit.id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_logging" "audit" {
  bucket        = aws_s3_bucket.audit.id
  target_bucket = var.access_log_bucket
  target_prefix = "s3/${var.name}/"
}

resource "aws_s3_bucket_lifecycle_configuration" "audit" {
  bucket = aws_s3_bucket.audit.id

  rule {
    id     = "age-to-glacier"
    status = "Enabled"
    filter {}
    transition {
      days          = var.glacier_after_days
      storage_class = "GLACIER_IR"
    }
    transition {
      days          = var.deep_archive_after_days
      storage_class = "DEEP_ARCHIVE"
    }
    noncurrent_version_transition {
      noncurrent_days = var.glacier_after_days
      storage_class   = "GLACIER_IR"
    }
    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }
  }
}

data "aws_iam_policy_document" "bucket" {
  # TlsOnly: the bucket guard's statement.
  source_policy_documents = [module.audit_guard.tls_only_policy]
  statement {
    sid       = "OurKeyOnly"
    effect    = "Deny"
    actions   = ["s3:PutObject"]
    resources = ["${aws_s3_bucket.audit.arn}/*"]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "StringNotEqualsIfExists"
      variable = "s3:x-amz-server-side-encryption-aws-kms-key-id"
      values   = [aws_kms_key.audit.arn]
    }
  }
}

resource "aws_s3_bucket_policy" "audit" {
  bucket = aws_s3_bucket.audit.id
  policy = data.aws_iam_policy_document.bucket.json
}

# Request metrics of what the shippers put (their prefix): the audit-not-arriving alarm
# (modules/stack/alarms.tf) watches PutRequests of this filter.
resource "aws_s3_bucket_metric" "shipped" {
  bucket = aws_s3_bucket.audit.id
  name   = "shipped"
  filter {
    prefix = "${var.shipped_prefix}/"
  }
}

# --- CloudTrail: every read and write of an audit object (S3 data events), into a bucket of
# its own with the same Object Lock (logging the audit bucket into itself would log its
# own deliveries).

resource "aws_s3_bucket" "trail" {
  # checkov:skip=CKV_AWS_144: as the audit bucket: cross-region replication is a per-company choice (docs/operations.md).
  # checkov:skip=CKV2_AWS_62: nothing consumes events from CloudTrail's bucket.
  bucket              = "${var.name}-trail"
  object_lock_enabled = true
  force_destroy       = false
  tags                = local.custody_tags
}

resource "aws_s3_bucket_versioning" "trail" {
  bucket = aws_s3_bucket.trail.id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_object_lock_configuration" "trail" {
  bucket = aws_s3_bucket.trail.id
  rule {
    default_retention {
      mode = "COMPLIANCE"
      days = var.retention_days
    }
  }
  # Object Lock needs versioning on: set after it, removed before it.
  depends_on = [aws_s3_bucket_versioning.trail]
}

resource "aws_s3_bucket_server_side_encryption_configuration" "trail" {
  bucket = aws_s3_bucket.trail.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = aws_kms_key.audit.arn
    }
    bucket_key_enabled = true
  }
}

module "trail_guard" {
  source     = "../bucket-guard"
  bucket     = aws_s3_bucket.trail.id
  bucket_arn = aws_s3_bucket.trail.arn
}

moved {
  from = aws_s3_bucket_public_access_block.trail
  to   = module.trail_guard.aws_s3_bucket_public_access_block.this
}

resource "aws_s3_bucket_ownership_controls" "trail" {
  bucket = aws_s3_bucket.trail.id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_logging" "trail" {
  bucket        = aws_s3_bucket.trail.id
  target_bucket = var.access_log_bucket
  target_prefix = "s3/${var.name}-trail/"
}

resource "aws_s3_bucket_lifecycle_configuration" "trail" {
  bucket = aws_s3_bucket.trail.id
  rule {
    id     = "age-to-glacier"
    status = "Enabled"
    filter {}
    transition {
      days          = var.glacier_after_days
      storage_class = "GLACIER_IR"
    }
    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }
  }
}

data "aws_iam_policy_document" "trail_bucket" {
  # TlsOnly: the bucket guard's statement.
  source_policy_documents = [module.trail_guard.tls_only_policy]
  statement {
    sid       = "CloudTrailAclCheck"
    actions   = ["s3:GetBucketAcl"]
    resources = [aws_s3_bucket.trail.arn]
    principals {
      type        = "Service"
      identifiers = ["cloudtrail.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceArn"
      values   = [local.trail_arn]
    }
  }
  statement {
    sid       = "CloudTrailWrites"
    actions   = ["s3:PutObject"]
    resources = ["${aws_s3_bucket.trail.arn}/AWSLogs/${local.account_id}/*"]
    principals {
      type        = "Service"
      identifiers = ["cloudtrail.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "s3:x-amz-acl"
      values   = ["bucket-owner-full-control"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceArn"
      values   = [local.trail_arn]
    }
  }
}

resource "aws_s3_bucket_policy" "trail" {
  bucket = aws_s3_bucket.trail.id
  policy = data.aws_iam_policy_document.trail_bucket.json
}

resource "aws_cloudtrail" "audit" {
  # checkov:skip=CKV2_AWS_10: the trail's files are kept under Object Lock; a CloudWatch Logs copy could be deleted and adds nothing to custody.
  # checkov:skip=CKV_AWS_252: SNS notification per delivered file: nothing consumes them.
  name                          = var.trail_name
  s3_bucket_name                = aws_s3_bucket.trail.id
  kms_key_id                    = aws_kms_key.audit.arn
  enable_log_file_validation    = true
  is_multi_region_trail         = true
  include_global_service_events = true
  # Data events only (management events are the organisation trail's): every object-level
  # call on the audit bucket, reads included.
  advanced_event_selector {
    name = "Every object-level call on the audit bucket"
    field_selector {
      field  = "eventCategory"
      equals = ["Data"]
    }
    field_selector {
      field  = "resources.type"
      equals = ["AWS::S3::Object"]
    }
    field_selector {
      field       = "resources.ARN"
      starts_with = ["${aws_s3_bucket.audit.arn}/"]
    }
  }
  tags       = local.custody_tags
  depends_on = [aws_s3_bucket_policy.trail]
}

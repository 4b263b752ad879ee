# Audit custody, the parts outside the audit bucket's module (which holds the key, its
# policy and the CloudTrail trail): pgaudit's log exported past CloudWatch Logs' retention
# into the Object Lock bucket, and an alarm when audit objects stop arriving.

# --- pgaudit: the database's log group -> subscription filter -> Firehose -> the audit bucket
# (pgaudit/<env>/YYYY/MM/DD/, gzip'd CloudWatch Logs batches, under Object Lock).

data "aws_iam_policy_document" "firehose_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["firehose.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "sts:ExternalId"
      values   = [local.account_id]
    }
  }
}

resource "aws_iam_role" "pgaudit_firehose" {
  name               = "${local.name}-pgaudit-firehose"
  assume_role_policy = data.aws_iam_policy_document.firehose_assume.json
}

data "aws_iam_policy_document" "pgaudit_firehose" {
  statement {
    sid       = "DeliverToTheAuditBucket"
    actions   = ["s3:PutObject", "s3:AbortMultipartUpload"]
    resources = ["${module.audit_bucket.arn}/pgaudit/${var.environment}/*", "${module.audit_bucket.arn}/pgaudit-errors/${var.environment}/*"]
  }
  statement {
    sid       = "TheBucket"
    actions   = ["s3:GetBucketLocation", "s3:ListBucket", "s3:ListBucketMultipartUploads"]
    resources = [module.audit_bucket.arn]
  }
  statement {
    sid       = "TheAuditKey"
    actions   = ["kms:GenerateDataKey", "kms:Decrypt"]
    resources = [module.audit_bucket.kms_key_arn]
  }
}

resource "aws_iam_role_policy" "pgaudit_firehose" {
  role   = aws_iam_role.pgaudit_firehose.id
  policy = data.aws_iam_policy_document.pgaudit_firehose.json
}

resource "aws_kinesis_firehose_delivery_stream" "pgaudit" {
  name        = "${local.name}-pgaudit"
  destination = "extended_s3"
  server_side_encryption {
    enabled  = true
    key_type = "CUSTOMER_MANAGED_CMK"
    key_arn  = module.audit_bucket.kms_key_arn
  }
  extended_s3_configuration {
    role_arn            = aws_iam_role.pgaudit_firehose.arn
    bucket_arn          = module.audit_bucket.arn
    prefix              = "pgaudit/${var.environment}/!{timestamp:yyyy/MM/dd}/"
    error_output_prefix = "pgaudit-errors/${var.environment}/!{firehose:error-output-type}/!{timestamp:yyyy/MM/dd}/"
    buffering_size      = 5
    buffering_interval  = 300
    # CloudWatch Logs already gzips what it sends.
    compression_format = "UNCOMPRESSED"
    kms_key_arn        = module.audit_bucket.kms_key_arn
  }
  depends_on = [aws_iam_role_policy.pgaudit_firehose]
}

data "aws_iam_policy_document" "logs_to_firehose_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["logs.${local.region}.amazonaws.com"]
    }
    condition {
      test     = "StringLike"
      variable = "aws:SourceArn"
      values   = ["arn:aws:logs:${local.region}:${local.account_id}:*"]
    }
  }
}

resource "aws_iam_role" "pgaudit_logs" {
  name               = "${local.name}-pgaudit-logs"
  assume_role_policy = data.aws_iam_policy_document.logs_to_firehose_assume.json
}

data "aws_iam_policy_document" "pgaudit_logs" {
  statement {
    actions   = ["firehose:PutRecord", "firehose:PutRecordBatch"]
    resources = [aws_kinesis_firehose_delivery_stream.pgaudit.arn]
  }
}

resource "aws_iam_role_policy" "pgaudit_logs" {
  role   = aws_iam_role.pgaudit_logs.id
  policy = data.aws_iam_policy_document.pgaudit_logs.json
}

# The whole PostgreSQL log (pgaudit's AUDIT lines and the log_connections lines that carry
# the proxy's session id), not only AUDIT: the cross-check needs both.
resource "aws_cloudwatch_log_subscription_filter" "pgaudit" {
  name            = "pgaudit-to-audit-bucket"
  log_group_name  = module.database.postgresql_log_group_name
  filter_pattern  = ""
  destination_arn = aws_kinesis_firehose_delivery_stream.pgaudit.arn
  role_arn        = aws_iam_role.pgaudit_logs.arn
  depends_on      = [aws_iam_role_policy.pgaudit_logs]
}

# --- No audit object arrives while the proxy serves. Each accepted connection writes an
# auth record, which the shipper uploads within SHIP_INTERVAL_SECS (15 s): a period with
# connections and no PutRequests under <env>/ means audit is not reaching the bucket. Two
# such periods in a row (10 minutes by default), so a connection at the end of one period
# shipped in the next does not alarm.
resource "aws_cloudwatch_metric_alarm" "audit_not_arriving" {
  alarm_name          = "${local.name}-audit-not-arriving"
  alarm_description   = "Proxies accepted connections but no audit object arrived in s3://${module.audit_bucket.bucket}/${var.environment}/ for ${var.audit_silence_minutes} minutes: the audit shipper is failing (its log: the proxy task's audit-shipper stream)."
  comparison_operator = "GreaterThanOrEqualToThreshold"
  threshold           = 1
  evaluation_periods  = ceil(var.audit_silence_minutes / 5)
  datapoints_to_alarm = ceil(var.audit_silence_minutes / 5)
  treat_missing_data  = "notBreaching"
  alarm_actions       = [aws_sns_topic.alarms.arn]
  ok_actions          = [aws_sns_topic.alarms.arn]

  metric_query {
    id = "connections"
    metric {
      namespace   = local.metrics_namespace
      metric_name = "dbgw_proxy_connections_total"
      dimensions  = { job = "proxy" }
      stat        = "Sum"
      period      = 300
    }
  }
  metric_query {
    id = "puts"
    metric {
      namespace   = "AWS/S3"
      metric_name = "PutRequests"
      dimensions  = { BucketName = module.audit_bucket.bucket, FilterId = module.audit_bucket.shipped_metrics_filter }
      stat        = "Sum"
      period      = 300
    }
  }
  metric_query {
    id          = "silent"
    expression  = "IF(FILL(connections, 0) > 0 AND FILL(puts, 0) == 0, 1, 0)"
    label       = "connections without audit uploads"
    return_data = true
  }
}

output "bucket" {
  value = aws_s3_bucket.audit.id
}

output "arn" {
  value = aws_s3_bucket.audit.arn
}

output "kms_key_arn" {
  value = aws_kms_key.audit.arn
}

output "object_lock" {
  description = "The bucket's Object Lock, as planned (asserted by the terraform test suites)."
  value = {
    enabled = aws_s3_bucket.audit.object_lock_enabled
    mode    = aws_s3_bucket_object_lock_configuration.audit.rule[0].default_retention[0].mode
    days    = aws_s3_bucket_object_lock_configuration.audit.rule[0].default_retention[0].days
  }
}

output "trail_bucket" {
  value = aws_s3_bucket.trail.id
}

output "shipped_metrics_filter" {
  value = aws_s3_bucket_metric.shipped.name
}

output "custody" {
  description = "Audit custody as planned (asserted by the terraform test suites): the key's denies, its deletion window and tags, the trail's selectors."
  value = {
    custodian            = var.custodian_arn
    key_arn              = aws_kms_key.audit.arn
    key_tags             = aws_kms_key.audit.tags
    deletion_window_days = aws_kms_key.audit.deletion_window_in_days
    key_denies = [for s in data.aws_iam_policy_document.key.statement : {
      actions    = s.actions
      principals = flatten([for p in s.principals : p.identifiers])
      conditions = [for c in s.condition : { test = c.test, variable = c.variable, values = c.values }]
    } if s.effect == "Deny"]
    bucket_name = aws_s3_bucket.audit.bucket
    trail = {
      name                = aws_cloudtrail.audit.name
      arn                 = local.trail_arn
      bucket              = aws_cloudtrail.audit.s3_bucket_name
      kms_key_id          = aws_cloudtrail.audit.kms_key_id
      log_file_validation = aws_cloudtrail.audit.enable_log_file_validation
      selectors = [for sel in aws_cloudtrail.audit.advanced_event_selector : {
        for f in sel.field_selector : f.field => concat(f.equals == null ? [] : tolist(f.equals), f.starts_with == null ? [] : tolist(f.starts_with))
      }]
    }
    trail_bucket_lock = {
      mode = aws_s3_bucket_object_lock_configuration.trail.rule[0].default_retention[0].mode
      days = aws_s3_bucket_object_lock_configuration.trail.rule[0].default_retention[0].days
    }
    shipped_metrics = { bucket = aws_s3_bucket_metric.shipped.bucket, filter = aws_s3_bucket_metric.shipped.name, prefix = aws_s3_bucket_metric.shipped.filter[0].prefix }
  }
}

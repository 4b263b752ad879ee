output "bucket" {
  value = aws_s3_bucket.audit.id
}

output "arn" {
  value = aws_s3_bucket.audit.arn
}

output "kms_key_arn" {
  value = module.key.arn
}

output "object_lock" {
  description = "The bucket's Object Lock, as planned (asserted by the terraform test suites)."
  value = {
    enabled = aws_s3_bucket.audit.object_lock_enabled
    mode    = aws_s3_bucket_object_lock_configuration.audit.rule[0].default_retention[0].mode
    days    = aws_s3_bucket_object_lock_configuration.audit.rule[0].default_retention[0].days
  }
}

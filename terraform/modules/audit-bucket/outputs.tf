output "bucket" {
  value = aws_s3_bucket.audit.id
}

output "arn" {
  value = aws_s3_bucket.audit.arn
}

output "kms_key_arn" {
  value = module.key.arn
}

output "arn" {
  value = aws_kms_key.this.arn
}

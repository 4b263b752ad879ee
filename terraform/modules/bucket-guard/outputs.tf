output "tls_only_policy" {
  description = "The TlsOnly deny statement of this bucket, as a policy document to merge."
  value       = data.aws_iam_policy_document.tls_only.json
}

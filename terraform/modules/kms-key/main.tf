# A customer-managed KMS key with yearly rotation and an alias. Its policy lets the account
# administer the key (AWS's default key policy, so IAM policies can grant its use) plus the
# service statements a caller adds (CloudWatch Logs, alarm publishers).

data "aws_caller_identity" "current" {}

data "aws_iam_policy_document" "key" {
  # checkov:skip=CKV_AWS_109: a KMS key policy: Resource "*" means this key only; the account-root statement is AWS's default key policy, which lets IAM policies grant use.
  # checkov:skip=CKV_AWS_111: as above (key policy, not an identity policy).
  # checkov:skip=CKV_AWS_356: as above (key policy, not an identity policy).
  source_policy_documents = var.extra_policy_json == "" ? [] : [var.extra_policy_json]
  statement {
    sid       = "AccountAdministers"
    actions   = ["kms:*"]
    resources = ["*"]
    principals {
      type        = "AWS"
      identifiers = ["arn:aws:iam::${data.aws_caller_identity.current.account_id}:root"]
    }
  }
}

resource "aws_kms_key" "this" {
  description         = var.description
  enable_key_rotation = true
  policy              = data.aws_iam_policy_document.key.json
}

resource "aws_kms_alias" "this" {
  name          = "alias/${var.alias}"
  target_key_id = aws_kms_key.this.key_id
}

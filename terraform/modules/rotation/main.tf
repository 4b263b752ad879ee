# The rotation function: the `rotation` crate's `bootstrap` binary (Rust, arm64, built by
# `make lambda` with cargo-lambda), called by Secrets Manager every 30 days for each secret
# whose rotation names it. It runs in the VPC, reaches Secrets Manager through its endpoint
# and the database directly (its security group is one of the three the database admits).

data "aws_region" "current" {}
data "aws_caller_identity" "current" {}

resource "aws_security_group" "rotation" {
  name        = "${var.name}-rotation"
  description = "The rotation function: out to PostgreSQL and to the AWS API endpoints only"
  vpc_id      = var.vpc_id
}

resource "aws_vpc_security_group_egress_rule" "rotation_db" {
  security_group_id = aws_security_group.rotation.id
  description       = "PostgreSQL"
  cidr_ipv4         = var.vpc_cidr
  ip_protocol       = "tcp"
  from_port         = 5432
  to_port           = 5432
}

resource "aws_vpc_security_group_egress_rule" "rotation_https" {
  security_group_id = aws_security_group.rotation.id
  description       = "Secrets Manager and KMS through the VPC endpoints"
  cidr_ipv4         = var.vpc_cidr
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
}

resource "aws_cloudwatch_log_group" "rotation" {
  name              = "/aws/lambda/${var.name}-rotation"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.logs_kms_key_arn
}

data "aws_iam_policy_document" "assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["lambda.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "rotation" {
  name               = "${var.name}-rotation"
  assume_role_policy = data.aws_iam_policy_document.assume.json
}

resource "aws_iam_role_policy_attachment" "vpc" {
  role       = aws_iam_role.rotation.name
  policy_arn = "arn:aws:iam::aws:policy/service-role/AWSLambdaVPCAccessExecutionRole"
}

resource "aws_iam_role_policy_attachment" "xray" {
  role       = aws_iam_role.rotation.name
  policy_arn = "arn:aws:iam::aws:policy/AWSXRayDaemonWriteAccess"
}

# The four steps on the rotated secrets; the master secret only read (masterarn).
data "aws_iam_policy_document" "rotation" {
  statement {
    sid = "RotateOurSecrets"
    actions = [
      "secretsmanager:DescribeSecret",
      "secretsmanager:GetSecretValue",
      "secretsmanager:PutSecretValue",
      "secretsmanager:UpdateSecretVersionStage",
    ]
    resources = var.rotated_secret_arns
  }
  dynamic "statement" {
    for_each = var.person_secret_prefix == "" ? [] : ["people"]
    content {
      sid       = "RotatePeopleSecrets"
      actions   = ["secretsmanager:DescribeSecret", "secretsmanager:GetSecretValue", "secretsmanager:PutSecretValue", "secretsmanager:UpdateSecretVersionStage"]
      resources = ["arn:aws:secretsmanager:${data.aws_region.current.name}:${data.aws_caller_identity.current.account_id}:secret:${var.person_secret_prefix}*"]
    }
  }
  statement {
    sid       = "ReadMaster"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [var.master_secret_arn]
  }
  statement {
    sid       = "NewPasswords"
    actions   = ["secretsmanager:GetRandomPassword"]
    resources = ["*"]
  }
  statement {
    sid       = "Keys"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = var.kms_key_arns
  }
}

resource "aws_iam_role_policy" "rotation" {
  role   = aws_iam_role.rotation.id
  policy = data.aws_iam_policy_document.rotation.json
}

resource "aws_lambda_function" "rotation" {
  # checkov:skip=CKV_AWS_116: Secrets Manager calls the function synchronously and retries a failed step itself; a dead-letter queue only receives asynchronous events.
  # checkov:skip=CKV_AWS_272: the zip is built and hashed in CI (source_code_hash); AWS Signer profiles are per account and set up with the account, not here.
  function_name                  = "${var.name}-rotation"
  role                           = aws_iam_role.rotation.arn
  filename                       = var.zip_path
  source_code_hash               = filebase64sha256(var.zip_path)
  runtime                        = "provided.al2023"
  handler                        = "bootstrap"
  architectures                  = ["arm64"]
  memory_size                    = 256
  timeout                        = 60
  reserved_concurrent_executions = var.reserved_concurrency
  kms_key_arn                    = var.lambda_kms_key_arn

  vpc_config {
    subnet_ids         = var.subnet_ids
    security_group_ids = [aws_security_group.rotation.id]
  }

  environment {
    variables = var.environment
  }

  tracing_config {
    mode = "Active"
  }

  logging_config {
    log_format = "JSON"
    log_group  = aws_cloudwatch_log_group.rotation.name
  }

  depends_on = [aws_iam_role_policy.rotation, aws_iam_role_policy_attachment.vpc]
}

resource "aws_lambda_permission" "secretsmanager" {
  statement_id   = "SecretsManagerRotates"
  action         = "lambda:InvokeFunction"
  function_name  = aws_lambda_function.rotation.function_name
  principal      = "secretsmanager.amazonaws.com"
  source_account = data.aws_caller_identity.current.account_id
}

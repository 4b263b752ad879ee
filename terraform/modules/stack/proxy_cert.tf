# The proxy's TLS certificate follows ACM's renewal without a person. The proxy terminates
# TLS itself (PostgreSQL starts TLS inside its protocol), so the certificate cannot stay in
# ACM as the ALB's does: every proxy task exports it from ACM at start (the proxy-cert
# container, deploy/proxy-cert/fetch.sh, services.tf). ACM renews private certificates
# before they expire and then sends "ACM Certificate Available"; this rule answers it by
# rolling the proxy service (a Step Functions task calling ecs:UpdateService with
# forceNewDeployment: no code to package), and the new tasks fetch the renewed certificate.
# The rolling deployment is the usual one (new tasks healthy first, old ones drain).
# Should a renewal not happen, "ACM Certificate Approaching Expiration" reaches the alarm topic.

resource "aws_cloudwatch_event_rule" "proxy_cert_renewed" {
  name        = "${local.name}-proxy-cert-renewed"
  description = "ACM renewed the proxy's certificate: roll the proxy so its tasks fetch it"
  event_pattern = jsonencode({
    source        = ["aws.acm"]
    "detail-type" = ["ACM Certificate Available"]
    resources     = [aws_acm_certificate.proxy.arn]
  })
}

resource "aws_cloudwatch_log_group" "proxy_roll" {
  name              = "/dbgw/${local.name}/proxy-roll"
  retention_in_days = var.log_retention_days
  kms_key_id        = module.logs_key.arn
}

data "aws_iam_policy_document" "states_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["states.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

resource "aws_iam_role" "proxy_roll" {
  name               = "${local.name}-proxy-roll"
  assume_role_policy = data.aws_iam_policy_document.states_assume.json
}

data "aws_iam_policy_document" "proxy_roll" {
  # checkov:skip=CKV_AWS_111: CloudWatch Logs' log delivery actions and X-Ray's PutTraceSegments take no resource ARN (Step Functions' documented policy).
  # checkov:skip=CKV_AWS_356: as above.
  statement {
    sid       = "RollTheProxy"
    actions   = ["ecs:UpdateService", "ecs:DescribeServices"]
    resources = [module.proxy.service_arn]
  }
  statement {
    sid = "ExecutionLogsAndTraces"
    actions = [
      "logs:CreateLogDelivery", "logs:GetLogDelivery", "logs:UpdateLogDelivery", "logs:DeleteLogDelivery",
      "logs:ListLogDeliveries", "logs:PutResourcePolicy", "logs:DescribeResourcePolicies", "logs:DescribeLogGroups",
      "xray:PutTraceSegments", "xray:PutTelemetryRecords", "xray:GetSamplingRules", "xray:GetSamplingTargets",
    ]
    resources = ["*"]
  }
}

resource "aws_iam_role_policy" "proxy_roll" {
  role   = aws_iam_role.proxy_roll.id
  policy = data.aws_iam_policy_document.proxy_roll.json
}

resource "aws_sfn_state_machine" "proxy_roll" {
  name     = "${local.name}-proxy-roll"
  role_arn = aws_iam_role.proxy_roll.arn
  definition = jsonencode({
    Comment = "Roll the proxy service: its new tasks export the (renewed) certificate from ACM at start."
    StartAt = "ForceNewDeployment"
    States = {
      ForceNewDeployment = {
        Type     = "Task"
        Resource = "arn:aws:states:::aws-sdk:ecs:updateService"
        Parameters = {
          Cluster            = aws_ecs_cluster.this.arn
          Service            = module.proxy.service_name
          ForceNewDeployment = true
        }
        Retry = [{ ErrorEquals = ["States.ALL"], IntervalSeconds = 30, MaxAttempts = 5, BackoffRate = 2 }]
        End   = true
      }
    }
  })
  logging_configuration {
    log_destination        = "${aws_cloudwatch_log_group.proxy_roll.arn}:*"
    include_execution_data = true
    level                  = "ALL"
  }
  tracing_configuration {
    enabled = true
  }
  depends_on = [aws_iam_role_policy.proxy_roll]
}

data "aws_iam_policy_document" "events_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["events.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

resource "aws_iam_role" "proxy_cert_events" {
  name               = "${local.name}-proxy-cert-events"
  assume_role_policy = data.aws_iam_policy_document.events_assume.json
}

data "aws_iam_policy_document" "proxy_cert_events" {
  statement {
    actions   = ["states:StartExecution"]
    resources = [aws_sfn_state_machine.proxy_roll.arn]
  }
}

resource "aws_iam_role_policy" "proxy_cert_events" {
  role   = aws_iam_role.proxy_cert_events.id
  policy = data.aws_iam_policy_document.proxy_cert_events.json
}

resource "aws_cloudwatch_event_target" "proxy_cert_renewed" {
  rule     = aws_cloudwatch_event_rule.proxy_cert_renewed.name
  arn      = aws_sfn_state_machine.proxy_roll.arn
  role_arn = aws_iam_role.proxy_cert_events.arn
}

# A renewal that does not happen (the CA disabled, a permission lost) shows up here first.
resource "aws_cloudwatch_event_rule" "cert_expiring" {
  name        = "${local.name}-cert-expiring"
  description = "ACM: the proxy's or the ALB's certificate approaches expiry without renewal"
  event_pattern = jsonencode({
    source        = ["aws.acm"]
    "detail-type" = ["ACM Certificate Approaching Expiration", "ACM Certificate Renewal Action Required"]
    resources     = [aws_acm_certificate.proxy.arn, aws_acm_certificate.web.arn]
  })
}

resource "aws_cloudwatch_event_target" "cert_expiring" {
  rule = aws_cloudwatch_event_rule.cert_expiring.name
  arn  = aws_sns_topic.alarms.arn
}

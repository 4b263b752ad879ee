# Alarms, to an SNS topic: the proxy not ready (no healthy task, or fewer than asked),
# audit write errors (the proxy refuses statements while its log fails), rotation failures
# (the function's errors and Secrets Manager's RotationFailed events).

locals {
  metrics_namespace = "dbgw/${var.environment}"
  # The proxy's metrics the alarms watch, published by the proxy task's metrics-agent
  # container (deploy/audit-shipper/metrics.sh) as embedded-metric-format lines in the proxy's
  # log group: counters as their increase per minute, dimension job = proxy.
  proxy_alarm_metrics = ["dbgw_proxy_audit_write_errors_total", "dbgw_proxy_audit_queue_depth", "dbgw_proxy_active_sessions", "dbgw_proxy_connections_total"]
}

resource "aws_sns_topic" "alarms" {
  name              = "${local.name}-alarms"
  kms_master_key_id = module.secrets_key.arn
}

resource "aws_sns_topic_subscription" "email" {
  count     = var.alarm_email == "" ? 0 : 1
  topic_arn = aws_sns_topic.alarms.arn
  protocol  = "email"
  endpoint  = var.alarm_email
}

resource "aws_cloudwatch_metric_alarm" "proxy_unready" {
  alarm_name          = "${local.name}-proxy-not-ready"
  alarm_description   = "Fewer proxy tasks pass /health/ready than the minimum: audit log failing, draining, or tasks down."
  namespace           = "AWS/NetworkELB"
  metric_name         = "HealthyHostCount"
  dimensions          = { LoadBalancer = aws_lb.proxy.arn_suffix, TargetGroup = aws_lb_target_group.proxy.arn_suffix }
  statistic           = "Minimum"
  period              = 60
  evaluation_periods  = 3
  comparison_operator = "LessThanThreshold"
  threshold           = var.proxy_min_tasks
  treat_missing_data  = "breaching"
  alarm_actions       = [aws_sns_topic.alarms.arn]
  ok_actions          = [aws_sns_topic.alarms.arn]
}

resource "aws_cloudwatch_metric_alarm" "audit_write_errors" {
  alarm_name          = "${local.name}-audit-write-errors"
  alarm_description   = "dbgw_proxy_audit_write_errors_total increased: a proxy could not write its audit log and refuses statements."
  namespace           = local.metrics_namespace
  metric_name         = "dbgw_proxy_audit_write_errors_total"
  dimensions          = { job = "proxy" }
  statistic           = "Sum"
  period              = 60
  evaluation_periods  = 1
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  treat_missing_data  = "notBreaching"
  alarm_actions       = [aws_sns_topic.alarms.arn]
  ok_actions          = [aws_sns_topic.alarms.arn]
}

resource "aws_cloudwatch_metric_alarm" "rotation_errors" {
  alarm_name          = "${local.name}-rotation-errors"
  alarm_description   = "The rotation function failed a step; Secrets Manager retries, the old password keeps working. See docs/operations.md."
  namespace           = "AWS/Lambda"
  metric_name         = "Errors"
  dimensions          = { FunctionName = module.rotation.function_name }
  statistic           = "Sum"
  period              = 300
  evaluation_periods  = 1
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  treat_missing_data  = "notBreaching"
  alarm_actions       = [aws_sns_topic.alarms.arn]
}

resource "aws_cloudwatch_event_rule" "rotation_failed" {
  name        = "${local.name}-rotation-failed"
  description = "Secrets Manager gave up on a rotation"
  event_pattern = jsonencode({
    source        = ["aws.secretsmanager"]
    "detail-type" = ["AWS Service Event via CloudTrail"]
    detail = {
      eventName = ["RotationFailed", "RotationAbandoned"]
    }
  })
}

resource "aws_cloudwatch_event_target" "rotation_failed" {
  rule = aws_cloudwatch_event_rule.rotation_failed.name
  arn  = aws_sns_topic.alarms.arn
}

data "aws_iam_policy_document" "alarms_topic" {
  statement {
    sid       = "EventBridgePublishes"
    actions   = ["sns:Publish"]
    resources = [aws_sns_topic.alarms.arn]
    principals {
      type        = "Service"
      identifiers = ["events.amazonaws.com"]
    }
    condition {
      test     = "ArnEquals"
      variable = "aws:SourceArn"
      values   = [aws_cloudwatch_event_rule.rotation_failed.arn, aws_cloudwatch_event_rule.cert_expiring.arn]
    }
  }
  statement {
    sid       = "CloudWatchPublishes"
    actions   = ["sns:Publish"]
    resources = [aws_sns_topic.alarms.arn]
    principals {
      type        = "Service"
      identifiers = ["cloudwatch.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

resource "aws_sns_topic_policy" "alarms" {
  arn    = aws_sns_topic.alarms.arn
  policy = data.aws_iam_policy_document.alarms_topic.json
}

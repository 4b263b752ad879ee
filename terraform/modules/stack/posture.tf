# What the design promises (docs/secure-access.md), as this plan would make it: read by the
# terraform test suites (terraform/environments/_shared/tests, run by `make lint-deploy`
# with a mock provider) and by anyone reviewing a plan. Only names, ids and settings; no
# secret values.

output "posture" {
  value = {
    database = module.database.posture
    # 5432 ingress rules on the database's security group made outside modules/database.
    db_ingress_elsewhere = [for r in aws_vpc_security_group_ingress_rule.this : r.referenced_security_group_id if r.security_group_id == module.database.security_group_id]
    security_groups = {
      proxy     = aws_security_group.proxy.id
      rotation  = module.rotation.security_group_id
      approvals = aws_security_group.approvals.id
      rates_api = aws_security_group.rates_api.id
      db_admin  = aws_security_group.db_admin.id
      proxy_lb  = aws_security_group.proxy_lb.id
      web_lb    = aws_security_group.web_lb.id
    }
    s3_prefix_list = module.network.s3_prefix_list_id
    egress = concat(
      [for r in aws_vpc_security_group_egress_rule.this : { sg = r.security_group_id, port = r.from_port, cidr = r.cidr_ipv4, prefix_list = r.prefix_list_id }],
      [for r in aws_vpc_security_group_egress_rule.s3 : { sg = r.security_group_id, port = r.from_port, cidr = r.cidr_ipv4, prefix_list = r.prefix_list_id }],
    )
    # Every database login secret, and the rotation each has (none until enable_rotation).
    db_secrets = { for k, s in aws_secretsmanager_secret.db : k => s.name }
    rotations = { for k, r in aws_secretsmanager_secret_rotation.db : k => {
      function = r.rotation_lambda_arn
      days     = r.rotation_rules[0].automatically_after_days
    } }
    rotation_function = module.rotation.function_arn
    rotation          = module.rotation.posture
    audit_lock        = module.audit_bucket.object_lock
    # Audit custody: the key only its custodian can delete or re-policy, CloudTrail's data
    # events, pgaudit's export, the alarm when audit objects stop arriving.
    audit_custody = merge(module.audit_bucket.custody, {
      pgaudit_export = {
        log_group      = aws_cloudwatch_log_subscription_filter.pgaudit.log_group_name
        database_log   = module.database.postgresql_log_group_name
        filter_pattern = aws_cloudwatch_log_subscription_filter.pgaudit.filter_pattern
        destination    = aws_cloudwatch_log_subscription_filter.pgaudit.destination_arn
        firehose       = aws_kinesis_firehose_delivery_stream.pgaudit.arn
        bucket_arn     = aws_kinesis_firehose_delivery_stream.pgaudit.extended_s3_configuration[0].bucket_arn
        audit_bucket   = module.audit_bucket.arn
        prefix         = aws_kinesis_firehose_delivery_stream.pgaudit.extended_s3_configuration[0].prefix
        kms_key_arn    = aws_kinesis_firehose_delivery_stream.pgaudit.extended_s3_configuration[0].kms_key_arn
      }
      silence_alarm = {
        actions = aws_cloudwatch_metric_alarm.audit_not_arriving.alarm_actions
        topic   = aws_sns_topic.alarms.arn
        metrics = [for q in aws_cloudwatch_metric_alarm.audit_not_arriving.metric_query : {
          namespace  = q.metric[0].namespace
          name       = q.metric[0].metric_name
          dimensions = q.metric[0].dimensions
        } if length(q.metric) > 0]
        expression = one([for q in aws_cloudwatch_metric_alarm.audit_not_arriving.metric_query : q.expression if q.return_data == true])
        minutes    = aws_cloudwatch_metric_alarm.audit_not_arriving.evaluation_periods * 5
      }
    })
    services = {
      proxy     = module.proxy.scaling
      rates-api = module.rates_api.scaling
      approvals = module.approvals.scaling
    }
    task_cpu = {
      proxy = module.proxy.cpu
    }
    tasks = {
      proxy     = module.proxy.containers
      rates-api = module.rates_api.containers
      approvals = module.approvals.containers
      db-admin  = jsondecode(aws_ecs_task_definition.db_admin.container_definitions)
    }
    # People's secrets (dbgw/person/*): their own key, usable by the services that need it.
    people_secrets = {
      key_arn        = module.people_secrets_key.arn
      other_keys     = [module.secrets_key.arn, module.logs_key.arn, module.database.kms_key_arn, module.audit_bucket.kms_key_arn]
      prefix         = "${local.secret_arn_prefix}${local.person_secret_prefix}*"
      approvals      = [for st in data.aws_iam_policy_document.approvals_task.statement : { effect = coalesce(st.effect, "Allow"), actions = st.actions, resources = st.resources, conditions = [for c in st.condition : { test = c.test, variable = c.variable, values = c.values }] }]
      proxy          = [for st in data.aws_iam_policy_document.proxy_task.statement : { actions = st.actions, resources = st.resources }]
      rotation_keys  = module.rotation.posture.kms_key_arns
      approvals_envs = [for c in module.approvals.containers : [for e in c.environment : e.name] if c.name == "approvals"][0]
    }
    # The proxy's certificate: fetched from ACM by each task, and a renewal rolls the service.
    proxy_cert = {
      certificate       = aws_acm_certificate.proxy.arn
      task_policy       = [for st in data.aws_iam_policy_document.proxy_task.statement : { actions = st.actions, resources = st.resources }]
      renewal_rule      = jsondecode(aws_cloudwatch_event_rule.proxy_cert_renewed.event_pattern)
      renewal_rule_name = aws_cloudwatch_event_rule.proxy_cert_renewed.name
      target_rule       = aws_cloudwatch_event_target.proxy_cert_renewed.rule
      target            = aws_cloudwatch_event_target.proxy_cert_renewed.arn
      state_machine     = aws_sfn_state_machine.proxy_roll.arn
      definition        = jsondecode(aws_sfn_state_machine.proxy_roll.definition)
      cluster           = aws_ecs_cluster.this.arn
      service           = module.proxy.service_name
    }
    load_balancers = {
      proxy = {
        type        = aws_lb.proxy.load_balancer_type
        access_logs = aws_lb.proxy.access_logs[0].enabled
        listeners   = [aws_lb_listener.proxy.protocol]
        health_path = aws_lb_target_group.proxy.health_check[0].path
      }
      web = {
        type        = aws_lb.web.load_balancer_type
        access_logs = aws_lb.web.access_logs[0].enabled
        listeners   = [aws_lb_listener.web.protocol]
        health_path = distinct([for t in aws_lb_target_group.web : t.health_check[0].path])[0]
      }
    }
    elb_account = data.aws_elb_service_account.current.arn
    # The access-log bucket policy's grants, as "principal action".
    access_log_grants = toset(flatten([for s in data.aws_iam_policy_document.access_logs.statement : [
      for p in flatten([for pr in s.principals : pr.identifiers]) : [for a in s.actions : "${p} ${a}"]
    ] if s.effect != "Deny"]))
  }
}

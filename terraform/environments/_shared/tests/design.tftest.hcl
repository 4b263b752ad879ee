# What the design promises (docs/secure-access.md), asserted on a plan of the environment
# that runs this file (each of environments/{staging,production}/tests links it), with a
# mock AWS provider: nothing is created, nothing is called. Run by `make lint-deploy`
# (scripts/deploy/tf_check.sh) with the environment's terraform.tfvars.example and a
# stand-in rotation package. `command = apply` makes the mock's ids concrete, so the
# wiring (which security group, which key) can be compared.

# Mock providers cannot have ephemeral resources (the secrets' first random values): those
# use aws.generator, a real provider configured offline and never called (no values written).
variables {
  write_secret_values = false
}

provider "aws" {
  alias                       = "generator"
  region                      = "eu-west-1"
  access_key                  = "offline"
  secret_key                  = "offline"
  skip_credentials_validation = true
  skip_requesting_account_id  = true
  skip_metadata_api_check     = true
  skip_region_validation      = true
}

mock_provider "aws" {
  source = "./tests/mocks"
}

# The database's own key, told apart from the other keys (which share one mock ARN).
override_resource {
  target = module.dbgw.module.database.module.key.aws_kms_key.this
  values = { arn = "arn:aws:kms:eu-west-1:111122223333:key/database" }
}

# The first apply: rotation is not turned on, and no service runs a task, before the db-admin
# task has made the roles and the secrets are filled.
run "first_apply" {
  command = apply
  variables {
    enable_rotation = false
    start_services  = false
  }
  assert {
    condition     = alltrue([for s in values(module.dbgw.posture.services) : s.desired == 0 && s.min == 0 && s.max == 0])
    error_message = "a service starts tasks in the first apply (start_services = false): they would fail until the roles and secrets exist, and the first deploy would flap"
  }
  assert {
    condition     = length(module.dbgw.posture.rotations) == 0
    error_message = "rotation is turned on in the first apply (enable_rotation = false): Secrets Manager would call the function before the roles exist"
  }
  assert {
    condition     = module.dbgw.posture.rotation.reserved_concurrency == null
    error_message = "the rotation function reserves concurrency by default; a new account (quota 10) refuses any reservation"
  }
}

# The audit key and bucket, told apart from the other keys and buckets.
override_resource {
  target = module.dbgw.module.audit_bucket.aws_kms_key.audit
  values = { arn = "arn:aws:kms:eu-west-1:111122223333:key/audit" }
}
override_resource {
  target = module.dbgw.module.audit_bucket.aws_s3_bucket.audit
  values = { arn = "arn:aws:s3:::audit" }
}

# People's secrets' key, told apart from the other keys.
override_resource {
  target = module.dbgw.module.people_secrets_key.aws_kms_key.this
  values = { arn = "arn:aws:kms:eu-west-1:111122223333:key/people" }
}

# The proxy's certificate, told apart from the ALB's.
override_resource {
  target = module.dbgw.aws_acm_certificate.proxy
  values = { arn = "arn:aws:acm:eu-west-1:111122223333:certificate/proxy" }
}

run "design" {
  command = apply
  variables {
    enable_rotation = true
    start_services  = true
  }

  # --- Once started, every service runs at least two tasks (a task or a zone can go). This
  # run follows first_apply: Terraform leaves the desired count (0) to autoscaling, and
  # raising the range's minimum is what raises the count (RegisterScalableTarget).
  assert {
    condition     = length(module.dbgw.posture.services) == 3 && alltrue([for s in values(module.dbgw.posture.services) : s.min >= 2 && s.max >= s.min])
    error_message = "a started service's autoscaling range does not start at two tasks or more"
  }

  # --- The database: private, encrypted with its own key, TLS only, pgaudit loaded.
  assert {
    condition     = module.dbgw.posture.database.publicly_accessible == false
    error_message = "the database is publicly accessible"
  }
  assert {
    condition     = module.dbgw.posture.database.storage_encrypted && module.dbgw.posture.database.kms_key_id == module.dbgw.posture.database.key_arn
    error_message = "the database is not encrypted with its own KMS key (modules/database, module.key)"
  }
  assert {
    condition     = toset(module.dbgw.posture.database.security_group_ids) == toset([module.dbgw.posture.database.security_group_id])
    error_message = "the database has security groups other than its own"
  }
  assert {
    condition     = lookup(module.dbgw.posture.database.parameters, "rds.force_ssl", "") == "1"
    error_message = "rds.force_ssl is not 1: the database would accept connections without TLS"
  }
  assert {
    condition     = contains([for l in split(",", lookup(module.dbgw.posture.database.parameters, "shared_preload_libraries", "")) : trimspace(l)], "pgaudit")
    error_message = "pgaudit is not in shared_preload_libraries"
  }
  assert {
    condition     = lookup(module.dbgw.posture.database.parameters, "pgaudit.log", "none") != "none"
    error_message = "pgaudit.log is not set: pgaudit would log nothing"
  }

  # --- Only the proxy, the rotation function and the approvals app reach PostgreSQL.
  assert {
    condition = toset([for r in module.dbgw.posture.database.ingress : r.from_security_group]) == toset([
      module.dbgw.posture.security_groups.proxy,
      module.dbgw.posture.security_groups.rotation,
      module.dbgw.posture.security_groups.approvals,
    ])
    error_message = "the database admits security groups other than proxy, rotation and approvals (db_admin only while db_admin_access is on)"
  }
  assert {
    condition     = alltrue([for r in module.dbgw.posture.database.ingress : r.cidr == null && r.from_port == 5432 && r.to_port == 5432])
    error_message = "a database ingress rule admits an address range, or ports other than 5432"
  }
  assert {
    condition     = length(module.dbgw.posture.db_ingress_elsewhere) == 0
    error_message = "a rule outside modules/database opens the database's security group"
  }

  # --- Every database login rotates every 30 days, by the rotation function.
  assert {
    condition     = length(module.dbgw.posture.db_secrets) > 0 && keys(module.dbgw.posture.rotations) == keys(module.dbgw.posture.db_secrets)
    error_message = "a database login secret has no rotation: ${join(", ", setsubtract(keys(module.dbgw.posture.db_secrets), keys(module.dbgw.posture.rotations)))}"
  }
  assert {
    condition     = alltrue([for r in values(module.dbgw.posture.rotations) : r.days == 30 && r.function == module.dbgw.posture.rotation_function])
    error_message = "a rotation is not every 30 days by the rotation function"
  }
  assert {
    condition     = module.dbgw.posture.rotation.environment["ROTATION_DATABASE__CA_FILE"] == "/var/task/rds-ca/global-bundle.pem"
    error_message = "the rotation function does not read the RDS CA bundle from its package (scripts/deploy/lambda.sh puts it at rds-ca/global-bundle.pem)"
  }

  # --- The audit bucket: Object Lock in compliance mode (the retention: per environment).
  assert {
    condition     = module.dbgw.posture.audit_lock.enabled == true && module.dbgw.posture.audit_lock.mode == "COMPLIANCE"
    error_message = "the audit bucket is not under Object Lock in compliance mode"
  }

  # --- Audit custody (issue 18, docs/operations.md "Audit custody"). The audit key: only
  # the custodian may delete, disable or re-policy it; a 30-day deletion window; Terraform
  # refuses to destroy it.
  assert {
    condition = anytrue([for d in module.dbgw.posture.audit_custody.key_denies :
      length(setsubtract(["kms:ScheduleKeyDeletion", "kms:PutKeyPolicy", "kms:DisableKey"], d.actions)) == 0 && contains(d.principals, "*") &&
      anytrue([for c in d.conditions : contains(["ArnNotEquals", "ArnNotLike"], c.test) && c.variable == "aws:PrincipalArn" && toset(c.values) == toset([module.dbgw.posture.audit_custody.custodian])])
    ]) && module.dbgw.posture.audit_custody.custodian != ""
    error_message = "the audit key's policy does not deny ScheduleKeyDeletion, PutKeyPolicy and DisableKey to every principal but the custodian (modules/audit-bucket)"
  }
  assert {
    condition     = module.dbgw.posture.audit_custody.deletion_window_days == 30 && can(regex("resource \"aws_kms_key\" \"audit\" \\{(?:[^{}]|\\{[^{}]*\\})*lifecycle \\{\\s*prevent_destroy\\s*=\\s*true", file("../../modules/audit-bucket/main.tf")))
    error_message = "the audit key has no 30-day deletion window, or no lifecycle { prevent_destroy = true } (modules/audit-bucket/main.tf)"
  }
  # The organisation's SCP (docs/operations.md, the JSON after <!-- scp:audit-custody -->)
  # denies the same to the account's administrators, and covers the key (by its tag), the
  # trail, the audit bucket and the pgaudit export (by their names).
  assert {
    condition = anytrue([for st in jsondecode(regex("(?s)<!-- scp:audit-custody -->\\s*```json\\n(.*?)\\n```", file("../../../docs/operations.md"))[0]).Statement :
      st.Effect == "Deny" && length(setsubtract(["kms:ScheduleKeyDeletion", "kms:PutKeyPolicy", "kms:DisableKey"], flatten([st.Action]))) == 0 &&
      lookup(lookup(try(st.Condition, {}), "StringEquals", {}), "aws:ResourceTag/dbgw-custody", "") == module.dbgw.posture.audit_custody.key_tags["dbgw-custody"] &&
      anytrue([for p in flatten([lookup(lookup(try(st.Condition, {}), "ArnNotLike", {}), "aws:PrincipalArn", [])]) : can(regex("^${replace(replace(p, ".", "\\."), "*", ".*")}$", module.dbgw.posture.audit_custody.custodian))])
    ])
    error_message = "docs/operations.md's SCP (<!-- scp:audit-custody --> JSON) does not deny ScheduleKeyDeletion/PutKeyPolicy/DisableKey on keys tagged like the audit key to all but the custodian"
  }
  assert {
    condition = alltrue([for need in [
      { arn = module.dbgw.posture.audit_custody.trail.arn, actions = ["cloudtrail:StopLogging", "cloudtrail:DeleteTrail", "cloudtrail:PutEventSelectors"] },
      { arn = "arn:aws:s3:::${module.dbgw.posture.audit_custody.bucket_name}", actions = ["s3:DeleteBucket", "s3:PutBucketPolicy", "s3:PutBucketObjectLockConfiguration"] },
      { arn = "arn:aws:logs:eu-west-1:111122223333:log-group:${module.dbgw.posture.audit_custody.pgaudit_export.database_log}", actions = ["logs:DeleteSubscriptionFilter", "logs:DeleteLogGroup"] },
      ] : anytrue([for st in jsondecode(regex("(?s)<!-- scp:audit-custody -->\\s*```json\\n(.*?)\\n```", file("../../../docs/operations.md"))[0]).Statement :
        st.Effect == "Deny" && length(setsubtract(need.actions, flatten([st.Action]))) == 0 &&
        anytrue([for r in flatten([st.Resource]) : can(regex("^${replace(replace(r, ".", "\\."), "*", ".*")}$", need.arn))])
    ])])
    error_message = "docs/operations.md's SCP does not cover the audit trail, the audit bucket and the pgaudit log group by name"
  }
  # CloudTrail records every object-level call on the audit bucket, into a locked bucket.
  assert {
    condition = anytrue([for sel in module.dbgw.posture.audit_custody.trail.selectors :
      join(",", lookup(sel, "eventCategory", [])) == "Data" && join(",", lookup(sel, "resources.type", [])) == "AWS::S3::Object" &&
      join(",", lookup(sel, "resources.ARN", [])) == "arn:aws:s3:::audit/" && !contains(keys(sel), "readOnly")
    ]) && module.dbgw.posture.audit_custody.trail.log_file_validation && module.dbgw.posture.audit_custody.trail.kms_key_id == module.dbgw.posture.audit_custody.key_arn
    error_message = "no CloudTrail trail records the audit bucket's S3 data events (reads and writes), with log file validation and the audit key"
  }
  assert {
    condition     = module.dbgw.posture.audit_custody.trail_bucket_lock.mode == "COMPLIANCE" && module.dbgw.posture.audit_custody.trail_bucket_lock.days == module.dbgw.posture.audit_lock.days
    error_message = "the CloudTrail bucket is not under the audit bucket's Object Lock"
  }
  # pgaudit's log outlives CloudWatch's retention: the database's log group is subscribed to
  # a Firehose stream that writes into the audit bucket with the audit key.
  assert {
    condition = (module.dbgw.posture.audit_custody.pgaudit_export.log_group == module.dbgw.posture.audit_custody.pgaudit_export.database_log &&
      endswith(module.dbgw.posture.audit_custody.pgaudit_export.database_log, "/postgresql") &&
      module.dbgw.posture.audit_custody.pgaudit_export.filter_pattern == "" &&
      module.dbgw.posture.audit_custody.pgaudit_export.destination == module.dbgw.posture.audit_custody.pgaudit_export.firehose &&
      module.dbgw.posture.audit_custody.pgaudit_export.bucket_arn == module.dbgw.posture.audit_custody.pgaudit_export.audit_bucket &&
    module.dbgw.posture.audit_custody.pgaudit_export.kms_key_arn == module.dbgw.posture.audit_custody.key_arn)
    error_message = "the PostgreSQL (pgaudit) log is not exported whole to the audit bucket (subscription filter -> Firehose -> Object Lock bucket, audit key)"
  }
  # An alarm when proxies take connections and no audit object arrives.
  assert {
    condition = (contains(module.dbgw.posture.audit_custody.silence_alarm.actions, module.dbgw.posture.audit_custody.silence_alarm.topic) &&
      anytrue([for m in module.dbgw.posture.audit_custody.silence_alarm.metrics : m.namespace == "AWS/S3" && m.name == "PutRequests" && lookup(m.dimensions, "BucketName", "") == module.dbgw.posture.audit_custody.shipped_metrics.bucket && lookup(m.dimensions, "FilterId", "") == module.dbgw.posture.audit_custody.shipped_metrics.filter]) &&
      module.dbgw.posture.audit_custody.shipped_metrics.prefix == "${one(flatten([for c in module.dbgw.posture.tasks["proxy"] : [for e in c.environment : e.value if e.name == "AUDIT_PREFIX"] if c.name == "audit-shipper"]))}/" &&
      anytrue([for m in module.dbgw.posture.audit_custody.silence_alarm.metrics : m.name == "dbgw_proxy_connections_total"]) &&
    module.dbgw.posture.audit_custody.silence_alarm.minutes <= 15)
    error_message = "no alarm when the proxies serve and no audit object arrives under the shipper's AUDIT_PREFIX in the audit bucket for up to 15 minutes (S3 request metrics + dbgw_proxy_connections_total)"
  }

  # --- Each task's environment names are its service's configuration keys (checked
  # against the code by the services' docs tests, assert_deployed_keys, which read these
  # names from the Terraform text) or the entrypoint's PEM variables.
  assert {
    condition = alltrue(flatten([for task, prefix in { proxy = "PROXY_", rates-api = "RATES_API_", approvals = "APPROVALS_", db-admin = "DBGW_" } : [
      for c in module.dbgw.posture.tasks[task] : [
        for e in try(c.environment, []) : startswith(e.name, prefix) || contains(["TLS_CERT_PEM", "TLS_KEY_PEM", "CA_PEM"], e.name)
      ] if c.name == task || (task == "db-admin" && c.name == "dbgw-db")
    ]]))
    error_message = "a task sets an environment variable that is not one of its service's <PREFIX>* configuration keys"
  }

  # One session thread per vCPU of the proxy's task, not one per CPU the task happens to see.
  assert {
    condition     = anytrue([for c in module.dbgw.posture.tasks["proxy"] : contains([for e in c.environment : "${e.name}=${e.value}"], "PROXY_WORKER_THREADS=${max(1, floor(tonumber(module.dbgw.posture.task_cpu.proxy) / 1024))}") if c.name == "proxy"])
    error_message = "the proxy does not set PROXY_WORKER_THREADS to its task's vCPUs: it would run one session thread per CPU Fargate shows it"
  }

  # The audit shipper is a shell script: each variable its container sets is one it reads.
  assert {
    condition = alltrue(flatten([for c in module.dbgw.posture.tasks["proxy"] : [
      for e in c.environment : anytrue([for form in ["$${%s", "$%s"] : strcontains(file("../../../deploy/audit-shipper/ship.sh"), format(form, e.name))])
    ] if c.name == "audit-shipper"]))
    error_message = "the audit shipper's container sets a variable deploy/audit-shipper/ship.sh does not read"
  }

  # --- The proxy's TLS certificate follows ACM's renewal without a person (issue 18): each
  # task exports it from ACM at start (the proxy-cert container, which the proxy waits for),
  # and ACM's "Certificate Available" event rolls the proxy service.
  assert {
    condition = alltrue([for c in module.dbgw.posture.tasks["proxy"] : (
      length([for sct in try(c.secrets, []) : sct if startswith(sct.name, "TLS_")]) == 0 &&
      contains([for d in try(c.dependsOn, []) : "${d.containerName} ${d.condition}"], "proxy-cert SUCCESS") &&
      anytrue([for e in c.environment : e.name == "PROXY_TLS__CERT_FILE" && e.value == "/run/dbgw/tls.crt"]) &&
      contains([for m in c.mountPoints : "${m.sourceVolume} ${m.containerPath}"], "run /run/dbgw")
      ) if c.name == "proxy"]) && anytrue([for c in module.dbgw.posture.tasks["proxy"] : (
      contains([for e in c.environment : "${e.name}=${e.value}"], "ACM_CERTIFICATE_ARN=${module.dbgw.posture.proxy_cert.certificate}") &&
      contains([for e in c.environment : "${e.name}=${e.value}"], "CERT_DIR=/run/dbgw") &&
      contains([for m in c.mountPoints : "${m.sourceVolume} ${m.containerPath} ${m.readOnly}"], "run /run/dbgw false") &&
      c.essential == false && strcontains(file("../../../deploy/audit-shipper/Dockerfile"), "COPY deploy/proxy-cert/fetch.sh ${c.entryPoint[0]}") &&
      alltrue([for e in c.environment : strcontains(file("../../../deploy/proxy-cert/fetch.sh"), "$${${e.name}")])
    ) if c.name == "proxy-cert"])
    error_message = "the proxy does not start after a proxy-cert container that exports its ACM certificate into /run/dbgw (deploy/proxy-cert/fetch.sh, in the audit-shipper image), or still takes TLS_* from a secret copied by hand"
  }
  assert {
    condition     = anytrue([for st in module.dbgw.posture.proxy_cert.task_policy : contains(st.actions, "acm:ExportCertificate") && toset(st.resources) == toset([module.dbgw.posture.proxy_cert.certificate])])
    error_message = "the proxy task role may not export its own certificate (acm:ExportCertificate on aws_acm_certificate.proxy, and only that)"
  }
  assert {
    condition = (module.dbgw.posture.proxy_cert.renewal_rule.source == ["aws.acm"] &&
      contains(module.dbgw.posture.proxy_cert.renewal_rule["detail-type"], "ACM Certificate Available") &&
      module.dbgw.posture.proxy_cert.renewal_rule.resources == [module.dbgw.posture.proxy_cert.certificate] &&
      module.dbgw.posture.proxy_cert.target_rule == module.dbgw.posture.proxy_cert.renewal_rule_name &&
      module.dbgw.posture.proxy_cert.target == module.dbgw.posture.proxy_cert.state_machine &&
      anytrue([for st in values(module.dbgw.posture.proxy_cert.definition.States) : (
        st.Resource == "arn:aws:states:::aws-sdk:ecs:updateService" && st.Parameters.ForceNewDeployment == true &&
        st.Parameters.Service == module.dbgw.posture.proxy_cert.service && st.Parameters.Cluster == module.dbgw.posture.proxy_cert.cluster
    )]))
    error_message = "ACM's \"ACM Certificate Available\" event for the proxy's certificate does not roll the proxy service (EventBridge rule -> state machine -> ecs:UpdateService forceNewDeployment)"
  }

  # --- People's secrets (dbgw/person/*) have a customer-managed key of their own, which the
  # approvals app (creates them), the proxy (reads them) and the rotation function can use.
  assert {
    condition = (!contains(module.dbgw.posture.people_secrets.other_keys, module.dbgw.posture.people_secrets.key_arn) &&
      anytrue([for st in module.dbgw.posture.people_secrets.approvals : st.effect == "Allow" && length(setsubtract(["kms:GenerateDataKey", "kms:Decrypt"], st.actions)) == 0 && contains(st.resources, module.dbgw.posture.people_secrets.key_arn)]) &&
      anytrue([for st in module.dbgw.posture.people_secrets.proxy : contains(st.actions, "kms:Decrypt") && contains(st.resources, module.dbgw.posture.people_secrets.key_arn)]) &&
    contains(module.dbgw.posture.people_secrets.rotation_keys, module.dbgw.posture.people_secrets.key_arn))
    error_message = "people's secrets have no customer-managed KMS key of their own that approvals (GenerateDataKey, Decrypt), the proxy (Decrypt) and the rotation function may use"
  }
  # The approvals app creates them with that key and deletes them with a recovery window
  # (secrets.kms_key_id, secrets.recovery_window_days), and IAM refuses anything else by default.
  assert {
    condition = (anytrue([for c in module.dbgw.posture.tasks["approvals"] : (
      contains([for e in c.environment : "${e.name}=${e.value}"], "APPROVALS_SECRETS__KMS_KEY_ID=${module.dbgw.posture.people_secrets.key_arn}") &&
      anytrue([for e in c.environment : e.name == "APPROVALS_SECRETS__RECOVERY_WINDOW_DAYS" && try(tonumber(e.value) >= 7 && tonumber(e.value) <= 30, false)])
      ) if c.name == "approvals"]) &&
    anytrue([for st in module.dbgw.posture.people_secrets.approvals : st.effect == "Deny" && contains(st.actions, "secretsmanager:CreateSecret")]))
    error_message = "the approvals task is not given the people's key (APPROVALS_SECRETS__KMS_KEY_ID) and a 7-30 day recovery window, or the IAM denies are not on by default"
  }

  # --- Health: ECS restarts on liveness only; the load balancers route on readiness.
  assert {
    condition = alltrue([for task in ["proxy", "rates-api", "approvals"] : alltrue([
      for c in module.dbgw.posture.tasks[task] : strcontains(join(" ", c.healthCheck.command), "/health/live") if c.name == task
    ])])
    error_message = "a container health check is not /health/live: a database failover would fail /health/ready and ECS would stop every task"
  }
  assert {
    condition     = alltrue([for lb in values(module.dbgw.posture.load_balancers) : lb.health_path == "/health/ready"])
    error_message = "a load balancer health check is not /health/ready"
  }

  # --- Fargate volumes are writable by uid 10001 only where the image declares a VOLUME at
  # the mount path (otherwise root:root 0755): every mount of our images is a VOLUME.
  assert {
    condition = alltrue(flatten([for task, containers in module.dbgw.posture.tasks : [
      for c in containers : [
        for m in try(c.mountPoints, []) : strcontains(
          join(" ", flatten(regexall("(?m)^VOLUME\\s+(.*)$", file({
            proxy         = "../../../proxy/Dockerfile"
            rates-api     = "../../../rates-api/Dockerfile"
            approvals     = "../../../approvals/Dockerfile"
            dbgw-db       = "../../../db/Dockerfile"
            audit-shipper = "../../../deploy/audit-shipper/Dockerfile"
            proxy-cert    = "../../../deploy/audit-shipper/Dockerfile"
            metrics-agent = "../../../deploy/audit-shipper/Dockerfile"
          }[c.name])))),
          "\"${m.containerPath}\""
        )
      ]
    ]]))
    error_message = "a task mounts a volume at a path its image does not declare as VOLUME (JSON form): Fargate would make it root-owned and the service (uid 10001) could not write there"
  }

  # --- Every container of every task, sidecars included, runs as the services' user (never
  # root) on a read-only root filesystem (ECS.5 and ECS.20 of AWS's security standard).
  assert {
    condition = alltrue(flatten([for task, containers in module.dbgw.posture.tasks : [
      for c in containers : try(c.user, "") == "10001:10001" && try(c.readonlyRootFilesystem, false) == true
    ]]))
    error_message = "a task container runs as root or with a writable root filesystem: ${join(", ", flatten([for task, containers in module.dbgw.posture.tasks : [for c in containers : "${task}/${c.name}" if !(try(c.user, "") == "10001:10001" && try(c.readonlyRootFilesystem, false) == true)]]))}"
  }
  # The proxy's metrics reach CloudWatch through our own sidecar (deploy/audit-shipper/metrics.sh
  # in the shipper's image), which reads every variable it is given and publishes every
  # dbgw_proxy_* metric the audit-silence alarm watches.
  assert {
    condition = anytrue([for c in module.dbgw.posture.tasks["proxy"] : (
      strcontains(file("../../../deploy/audit-shipper/Dockerfile"), "COPY deploy/audit-shipper/metrics.sh ${c.entryPoint[0]}") &&
      alltrue([for e in c.environment : strcontains(file("../../../deploy/audit-shipper/metrics.sh"), "$${${e.name}")]) &&
      alltrue([for m in module.dbgw.posture.audit_custody.silence_alarm.metrics :
      contains(split(",", one([for e in c.environment : e.value if e.name == "METRICS_NAMES"])), m.name) if !startswith(m.namespace, "AWS/")])
    ) if c.name == "metrics-agent"])
    error_message = "the proxy task has no metrics-agent container running deploy/audit-shipper/metrics.sh that publishes the metrics the alarms watch"
  }

  # --- Image layers come from S3: every task's security group reaches the S3 prefix list.
  assert {
    condition = alltrue([for sg in ["proxy", "approvals", "rates_api", "db_admin"] : anytrue([
      for e in module.dbgw.posture.egress : e.sg == module.dbgw.posture.security_groups[sg] && e.port == 443 && (e.prefix_list == module.dbgw.posture.s3_prefix_list || e.cidr == "0.0.0.0/0")
    ])])
    error_message = "a task's security group cannot reach S3 (the gateway endpoint's prefix list): ECR image layers would not download"
  }

  # --- Load balancer access logs: on only where that type writes them, with the grant it needs.
  assert {
    condition = alltrue([for lb in values(module.dbgw.posture.load_balancers) : !lb.access_logs || (
      lb.type == "network" ? contains(lb.listeners, "TLS") && contains(module.dbgw.posture.access_log_grants, "delivery.logs.amazonaws.com s3:PutObject") && contains(module.dbgw.posture.access_log_grants, "delivery.logs.amazonaws.com s3:GetBucketAcl")
      : contains(module.dbgw.posture.access_log_grants, "logdelivery.elasticloadbalancing.amazonaws.com s3:PutObject") && contains(module.dbgw.posture.access_log_grants, "${module.dbgw.posture.elb_account} s3:PutObject")
    )])
    error_message = "a load balancer logs without the bucket grant its type needs (NLB: delivery.logs.amazonaws.com PutObject + GetBucketAcl, and only with a TLS listener; ALB: the region's ELB account and logdelivery.elasticloadbalancing.amazonaws.com)"
  }
}

# People's roles log in to RDS with IAM auth tokens by default (issue 17): no password exists,
# so none can leak, be set by the approvals task, or be rotated for someone else. Only the
# proxy's task role may sign tokens for p_* roles; no task may write a person's secret.
run "people_log_in_with_rds_iam" {
  command = apply
  assert {
    condition     = module.dbgw.posture.database.iam_auth == true
    error_message = "the database does not accept IAM auth tokens (iam_database_authentication_enabled)"
  }
  assert {
    condition = anytrue([for c in module.dbgw.posture.tasks["proxy"] : (
      contains([for e in c.environment : "${e.name}=${e.value}"], "PROXY_UPSTREAM__AUTH=rds-iam") &&
      contains([for e in c.environment : "${e.name}=${e.value}"], "PROXY_UPSTREAM__TLS=verify-full") &&
      anytrue([for e in c.environment : e.name == "PROXY_UPSTREAM__REGION" && e.value != ""])
    ) if c.name == "proxy"])
    error_message = "the proxy does not log people in with RDS IAM tokens over verified TLS (PROXY_UPSTREAM__AUTH, __TLS, __REGION)"
  }
  assert {
    condition = anytrue([for c in module.dbgw.posture.tasks["approvals"] : (
      contains([for e in c.environment : "${e.name}=${e.value}"], "APPROVALS_PEOPLE__LOGIN=rds-iam") &&
      !anytrue([for e in c.environment : e.name == "APPROVALS_ROTATION__FUNCTION_ARN"])
    ) if c.name == "approvals"])
    error_message = "the approvals app still gives people passwords (APPROVALS_PEOPLE__LOGIN) or turns on their rotation"
  }
  assert {
    condition = (anytrue([for st in module.dbgw.posture.people_secrets.proxy : contains(st.actions, "rds-db:connect") && alltrue([for r in st.resources : endswith(r, "/p_*")])]) &&
    !anytrue([for st in module.dbgw.posture.people_secrets.proxy : contains(st.resources, module.dbgw.posture.people_secrets.prefix)]))
    error_message = "the proxy's task role may not sign IAM tokens for p_* roles only, or still reads people's secrets"
  }
  assert {
    condition = !anytrue([for st in module.dbgw.posture.people_secrets.approvals : (
      st.effect == "Allow" && contains(st.resources, module.dbgw.posture.people_secrets.prefix) &&
      length(setintersection(st.actions, ["secretsmanager:CreateSecret", "secretsmanager:PutSecretValue", "secretsmanager:GetSecretValue", "secretsmanager:RotateSecret"])) > 0
    )])
    error_message = "the approvals task may still write, read or rotate people's secrets"
  }
  assert {
    condition     = !anytrue([for st in module.dbgw.posture.rotation.statements : anytrue([for r in st.resources : strcontains(r, "dbgw/person/")])])
    error_message = "the rotation function still has rights on people's secrets"
  }
}

# people_login = "password" keeps the secrets, their rotation and the rights they need.
run "people_log_in_with_passwords" {
  command = apply
  variables {
    people_login = "password"
  }
  assert {
    condition = (anytrue([for st in module.dbgw.posture.people_secrets.proxy : contains(st.actions, "secretsmanager:GetSecretValue") && contains(st.resources, module.dbgw.posture.people_secrets.prefix)]) &&
    !anytrue([for st in module.dbgw.posture.people_secrets.proxy : contains(st.actions, "rds-db:connect")]))
    error_message = "with passwords, the proxy must read people's secrets and sign no IAM token"
  }
  assert {
    condition = (anytrue([for st in module.dbgw.posture.people_secrets.approvals : st.effect == "Allow" && contains(st.actions, "secretsmanager:CreateSecret") && contains(st.resources, module.dbgw.posture.people_secrets.prefix)]) &&
      anytrue([for c in module.dbgw.posture.tasks["approvals"] : (
        contains([for e in c.environment : "${e.name}=${e.value}"], "APPROVALS_PEOPLE__LOGIN=password") &&
        anytrue([for e in c.environment : e.name == "APPROVALS_ROTATION__FUNCTION_ARN"])
    ) if c.name == "approvals"]))
    error_message = "with passwords, the approvals app must create people's secrets and turn on their rotation"
  }
  assert {
    condition     = anytrue([for st in module.dbgw.posture.rotation.statements : st.sid == "RotatePeopleSecrets"])
    error_message = "with passwords, the rotation function must rotate people's secrets"
  }
}

# Once the approvals app passes KmsKeyId and RecoveryWindowInDays, people_secrets_enforced
# makes IAM refuse a person's secret made without their key or deleted without recovery.
run "people_secrets_enforced" {
  command = apply
  variables {
    people_secrets_enforced = true
  }
  assert {
    condition = anytrue([for st in module.dbgw.posture.people_secrets.approvals : (
      st.effect == "Deny" && contains(st.actions, "secretsmanager:CreateSecret") && contains(st.resources, module.dbgw.posture.people_secrets.prefix) &&
      anytrue([for c in st.conditions : c.test == "StringNotEqualsIfExists" && c.variable == "secretsmanager:KmsKeyArn" && toset(c.values) == toset([module.dbgw.posture.people_secrets.key_arn])])
    )])
    error_message = "people_secrets_enforced does not deny creating a person's secret without the people's key (secretsmanager:KmsKeyArn)"
  }
  assert {
    condition = anytrue([for st in module.dbgw.posture.people_secrets.approvals : (
      st.effect == "Deny" && contains(st.actions, "secretsmanager:DeleteSecret") && contains(st.resources, module.dbgw.posture.people_secrets.prefix) &&
      anytrue([for c in st.conditions : c.test == "Bool" && c.variable == "secretsmanager:ForceDeleteWithoutRecovery" && toset(c.values) == toset(["true"])])
    )])
    error_message = "people_secrets_enforced does not deny deleting a person's secret without a recovery window (ForceDeleteWithoutRecovery)"
  }
}

# The db-admin window: its security group is admitted only while db_admin_access is on.
run "db_admin_window" {
  command = apply
  variables {
    db_admin_access = true
  }
  assert {
    condition     = contains([for r in module.dbgw.posture.database.ingress : r.from_security_group], module.dbgw.posture.security_groups.db_admin) && length(module.dbgw.posture.database.ingress) == 4
    error_message = "db_admin_access = true does not add exactly the db-admin security group"
  }
}

# Images by digest only: a tag can be moved to other content after the plan was reviewed.
run "image_by_tag_refused" {
  command = plan
  variables {
    images = {
      proxy         = "111122223333.dkr.ecr.eu-west-1.amazonaws.com/dbgw/proxy:0a1b2c3"
      approvals     = "111122223333.dkr.ecr.eu-west-1.amazonaws.com/dbgw/approvals@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
      rates_api     = "111122223333.dkr.ecr.eu-west-1.amazonaws.com/dbgw/rates-api@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
      dbgw_db       = "111122223333.dkr.ecr.eu-west-1.amazonaws.com/dbgw/dbgw-db@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
      audit_shipper = "111122223333.dkr.ecr.eu-west-1.amazonaws.com/dbgw/audit-shipper@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
    }
  }
  expect_failures = [var.images]
}

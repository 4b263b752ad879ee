# Security groups: who may talk to whom. PostgreSQL itself admits only the proxy, the
# rotation function and the approvals app (modules/database); everything else reaches data
# through the proxy, which audits it.

resource "aws_security_group" "proxy_lb" {
  name        = "${local.name}-proxy-nlb"
  description = "The proxy's load balancer: PostgreSQL clients in, proxies out"
  vpc_id      = module.network.vpc_id
}

resource "aws_security_group" "proxy" {
  # checkov:skip=CKV2_AWS_5: attached to the proxy tasks through module.proxy (ecs-service), which checkov does not follow.
  name        = "${local.name}-proxy"
  description = "Proxy tasks"
  vpc_id      = module.network.vpc_id
}

resource "aws_security_group" "web_lb" {
  name        = "${local.name}-web-alb"
  description = "The internal ALB: HTTPS in, approvals and rates-api out"
  vpc_id      = module.network.vpc_id
}

resource "aws_security_group" "approvals" {
  # checkov:skip=CKV2_AWS_5: attached to the approvals tasks through module.approvals (ecs-service), which checkov does not follow.
  name        = "${local.name}-approvals"
  description = "Approvals tasks (the provisioner of people's roles)"
  vpc_id      = module.network.vpc_id
}

resource "aws_security_group" "rates_api" {
  name        = "${local.name}-rates-api"
  description = "rates-api tasks"
  vpc_id      = module.network.vpc_id
}

resource "aws_security_group" "db_admin" {
  # checkov:skip=CKV2_AWS_5: used only by one-off `aws ecs run-task` calls (migrations, break-glass), never by a standing resource.
  name        = "${local.name}-db-admin"
  description = "One-off admin tasks (migrations, break-glass); admitted by the database only while db_admin_access is on"
  vpc_id      = module.network.vpc_id
}

locals {
  # [security group, description, port, from: cidr list or security group]
  ingress = {
    proxy_lb_clients  = { sg = aws_security_group.proxy_lb.id, port = 5432, cidrs = var.client_cidrs, from_sg = null, what = "PostgreSQL clients (people through the VPN, other VPCs)" }
    proxy_lb_rates    = { sg = aws_security_group.proxy_lb.id, port = 5432, cidrs = [], from_sg = aws_security_group.rates_api.id, what = "rates-api" }
    proxy_from_lb     = { sg = aws_security_group.proxy.id, port = 6432, cidrs = [], from_sg = aws_security_group.proxy_lb.id, what = "client connections from the NLB" }
    proxy_health      = { sg = aws_security_group.proxy.id, port = 9187, cidrs = [], from_sg = aws_security_group.proxy_lb.id, what = "NLB health checks on /health/ready" }
    proxy_peers       = { sg = aws_security_group.proxy.id, port = 6433, cidrs = [], from_sg = aws_security_group.proxy.id, what = "cancel requests forwarded by other proxies" }
    web_lb_clients    = { sg = aws_security_group.web_lb.id, port = 443, cidrs = var.client_cidrs, from_sg = null, what = "HTTPS from the company network" }
    approvals_from_lb = { sg = aws_security_group.approvals.id, port = 8080, cidrs = [], from_sg = aws_security_group.web_lb.id, what = "HTTP from the ALB" }
    rates_api_from_lb = { sg = aws_security_group.rates_api.id, port = 3000, cidrs = [], from_sg = aws_security_group.web_lb.id, what = "HTTP from the ALB" }
  }
  egress = {
    proxy_lb_to_proxy   = { sg = aws_security_group.proxy_lb.id, port = 6432, cidrs = [], from_sg = aws_security_group.proxy.id, what = "to the proxies" }
    proxy_lb_to_health  = { sg = aws_security_group.proxy_lb.id, port = 9187, cidrs = [], from_sg = aws_security_group.proxy.id, what = "health checks" }
    proxy_to_db         = { sg = aws_security_group.proxy.id, port = 5432, cidrs = [], from_sg = module.database.security_group_id, what = "PostgreSQL" }
    proxy_to_peers      = { sg = aws_security_group.proxy.id, port = 6433, cidrs = [], from_sg = aws_security_group.proxy.id, what = "cancel requests forwarded to other proxies" }
    proxy_https         = { sg = aws_security_group.proxy.id, port = 443, cidrs = var.https_egress_cidrs, from_sg = null, what = "AWS API endpoints, the identity provider's keys" }
    web_lb_to_approvals = { sg = aws_security_group.web_lb.id, port = 8080, cidrs = [], from_sg = aws_security_group.approvals.id, what = "approvals" }
    web_lb_to_rates     = { sg = aws_security_group.web_lb.id, port = 3000, cidrs = [], from_sg = aws_security_group.rates_api.id, what = "rates-api" }
    approvals_to_db     = { sg = aws_security_group.approvals.id, port = 5432, cidrs = [], from_sg = module.database.security_group_id, what = "PostgreSQL (provisioning people's roles)" }
    approvals_https     = { sg = aws_security_group.approvals.id, port = 443, cidrs = var.https_egress_cidrs, from_sg = null, what = "AWS API endpoints, the identity provider, the webhook" }
    rates_to_proxy      = { sg = aws_security_group.rates_api.id, port = 5432, cidrs = [], from_sg = aws_security_group.proxy_lb.id, what = "the database, through the proxy" }
    rates_https         = { sg = aws_security_group.rates_api.id, port = 443, cidrs = [module.network.vpc_cidr], from_sg = null, what = "AWS API endpoints" }
    db_admin_to_db      = { sg = aws_security_group.db_admin.id, port = 5432, cidrs = [], from_sg = module.database.security_group_id, what = "PostgreSQL" }
    db_admin_https      = { sg = aws_security_group.db_admin.id, port = 443, cidrs = [module.network.vpc_cidr], from_sg = null, what = "AWS API endpoints" }
  }
  # One rule per (rule, cidr) or per (rule, security group). Told apart by the cidr list,
  # which is known at plan time: a security group id is not (until the group exists), and
  # for_each keys that depend on it stop the first plan ("Invalid for_each argument").
  ingress_rules = merge(
    { for k, r in local.ingress : k => r if length(r.cidrs) == 0 },
    merge([for k, r in local.ingress : { for c in r.cidrs : "${k}-${c}" => merge(r, { cidrs = [c] }) } if length(r.cidrs) > 0]...),
  )
  egress_rules = merge(
    { for k, r in local.egress : k => r if length(r.cidrs) == 0 },
    merge([for k, r in local.egress : { for c in r.cidrs : "${k}-${c}" => merge(r, { cidrs = [c] }) } if length(r.cidrs) > 0]...),
  )
}

resource "aws_vpc_security_group_ingress_rule" "this" {
  for_each                     = local.ingress_rules
  security_group_id            = each.value.sg
  description                  = each.value.what
  ip_protocol                  = "tcp"
  from_port                    = each.value.port
  to_port                      = each.value.port
  referenced_security_group_id = each.value.from_sg
  cidr_ipv4                    = length(each.value.cidrs) > 0 ? each.value.cidrs[0] : null
}

resource "aws_vpc_security_group_egress_rule" "this" {
  for_each                     = local.egress_rules
  security_group_id            = each.value.sg
  description                  = each.value.what
  ip_protocol                  = "tcp"
  from_port                    = each.value.port
  to_port                      = each.value.port
  referenced_security_group_id = each.value.from_sg
  cidr_ipv4                    = length(each.value.cidrs) > 0 ? each.value.cidrs[0] : null
}

# S3 through the gateway endpoint's prefix list: every task pulls its image's layers from
# S3 (ECR stores them there), and the gateway endpoint is not inside the VPC's CIDR, so a
# task whose HTTPS egress is the VPC CIDR alone could not start. The proxy's task also ships
# the audit there.
resource "aws_vpc_security_group_egress_rule" "s3" {
  for_each = {
    proxy     = aws_security_group.proxy.id
    approvals = aws_security_group.approvals.id
    rates_api = aws_security_group.rates_api.id
    db_admin  = aws_security_group.db_admin.id
  }
  security_group_id = each.value
  description       = "S3 through the gateway endpoint (image layers from ECR${each.key == "proxy" ? ", audit shipping" : ""})"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  prefix_list_id    = module.network.s3_prefix_list_id
}

moved {
  from = aws_vpc_security_group_egress_rule.proxy_s3
  to   = aws_vpc_security_group_egress_rule.s3["proxy"]
}

# --- The proxy's load balancer: TCP on 5432, TLS end to end (terminated by the proxy). ---

locals {
  # PostgreSQL starts TLS inside its own protocol, so the proxy's listener is TCP.
  proxy_listener_protocol = "TCP"
  # A Network Load Balancer writes access logs only for its TLS listeners: with TCP ones
  # alone it writes none, so logging is on only if the proxy's listener is TLS. Who
  # connected is in the proxy's audit (auth records, with the client address) and the VPC
  # flow logs. When on, the bucket policy grants what NLB log delivery needs
  # (delivery.logs.amazonaws.com: s3:PutObject and s3:GetBucketAcl; modules/stack/main.tf).
  proxy_nlb_access_logs = local.proxy_listener_protocol == "TLS"
}

resource "aws_lb" "proxy" {
  # checkov:skip=CKV2_AWS_28: WAF filters HTTP; this load balancer carries the PostgreSQL protocol.
  # checkov:skip=CKV_AWS_91: an NLB with only TCP listeners writes no access logs (AWS writes them for TLS listeners only); connections are in the proxy's audit and the VPC flow logs.
  name                             = "${local.name}-proxy"
  internal                         = true
  load_balancer_type               = "network"
  subnets                          = module.network.private_subnet_ids
  security_groups                  = [aws_security_group.proxy_lb.id]
  enable_cross_zone_load_balancing = true
  enable_deletion_protection       = var.lb_deletion_protection
  access_logs {
    bucket  = aws_s3_bucket.access_logs.id
    prefix  = "lb/proxy"
    enabled = local.proxy_nlb_access_logs
  }
}

resource "aws_lb_target_group" "proxy" {
  name                 = "${local.name}-proxy"
  port                 = 6432
  protocol             = "TCP"
  target_type          = "ip"
  vpc_id               = module.network.vpc_id
  deregistration_delay = var.proxy_drain_secs
  # IP targets do not see the client's address: the NLB sends it first (PROXY protocol v2),
  # and the proxy trusts the header from the VPC only (PROXY_PROXY_PROTOCOL__FROM; only the
  # NLB's security group reaches 6432).
  proxy_protocol_v2 = true
  # Sessions already open keep their task until it drains; new ones go to healthy tasks.
  connection_termination = false
  health_check {
    protocol            = "HTTP"
    port                = "9187"
    path                = "/health/ready"
    interval            = 10
    healthy_threshold   = 2
    unhealthy_threshold = 2
  }
}

resource "aws_lb_listener" "proxy" {
  # checkov:skip=CKV_AWS_2: PostgreSQL negotiates TLS inside its own protocol (SSLRequest), so the listener is TCP and the proxy terminates TLS with the ACM Private CA certificate.
  # checkov:skip=CKV_AWS_103: as above: TLS is between the client and the proxy, not at the listener.
  load_balancer_arn = aws_lb.proxy.arn
  port              = 5432
  protocol          = local.proxy_listener_protocol
  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.proxy.arn
  }
}

# --- The web load balancer: HTTPS for approvals and rates-api. ---

resource "aws_lb" "web" {
  # checkov:skip=CKV2_AWS_28: internal load balancer reachable only from the company network; add a WAF web ACL here if it is ever exposed.
  name                       = "${local.name}-web"
  internal                   = true
  load_balancer_type         = "application"
  subnets                    = module.network.private_subnet_ids
  security_groups            = [aws_security_group.web_lb.id]
  drop_invalid_header_fields = true
  enable_deletion_protection = var.lb_deletion_protection
  access_logs {
    bucket  = aws_s3_bucket.access_logs.id
    prefix  = "lb/web"
    enabled = true
  }
}

resource "aws_lb_listener" "web" {
  load_balancer_arn = aws_lb.web.arn
  port              = 443
  protocol          = "HTTPS"
  ssl_policy        = "ELBSecurityPolicy-TLS13-1-2-Res-2021-06"
  certificate_arn   = aws_acm_certificate.web.arn
  default_action {
    type = "fixed-response"
    fixed_response {
      content_type = "text/plain"
      message_body = "not found"
      status_code  = "404"
    }
  }
}

resource "aws_lb_target_group" "web" {
  # checkov:skip=CKV_AWS_378: TLS ends at the internal ALB; the hop to the task stays inside the VPC's private subnets and security groups.
  for_each             = { approvals = 8080, rates = 3000 }
  name                 = "${local.name}-${each.key}"
  port                 = each.value
  protocol             = "HTTP"
  target_type          = "ip"
  vpc_id               = module.network.vpc_id
  deregistration_delay = 30
  health_check {
    path                = "/health/ready"
    interval            = 10
    healthy_threshold   = 2
    unhealthy_threshold = 2
  }
}

resource "aws_lb_listener_rule" "web" {
  for_each     = aws_lb_target_group.web
  listener_arn = aws_lb_listener.web.arn
  condition {
    host_header {
      values = ["${each.key}.${var.domain}"]
    }
  }
  action {
    type             = "forward"
    target_group_arn = each.value.arn
  }
}

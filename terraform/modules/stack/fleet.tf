# The proxy as a fleet (docs/proxy.md, "The proxy as a fleet"): replicas forward cancel
# requests for each other's sessions over an HMAC-authenticated peer channel (port 6433).
# Peers find each other by DNS: every proxy task registers an A record in a Cloud Map
# service, so autoscaling needs no per-task configuration. Each replica's name is its ECS
# task id (the entrypoint sets it), the same id the audit shipper files its chain under.

resource "aws_service_discovery_private_dns_namespace" "internal" {
  name        = "${var.environment}.dbgw.internal"
  description = "dbgw service discovery (proxy peers)"
  vpc         = module.network.vpc_id
}

resource "aws_service_discovery_service" "proxy_peers" {
  name = "proxy-peers"
  dns_config {
    namespace_id   = aws_service_discovery_private_dns_namespace.internal.id
    routing_policy = "MULTIVALUE"
    dns_records {
      type = "A"
      ttl  = 10
    }
  }
  health_check_custom_config {
    failure_threshold = 1
  }
}

locals {
  proxy_peer_port = 6433
  proxy_peers     = "proxy-peers.${aws_service_discovery_private_dns_namespace.internal.name}:${local.proxy_peer_port}"
}

# The peer channel's key: random, made at apply time and never in the Terraform state.
ephemeral "aws_secretsmanager_random_password" "proxy_fleet" {
  count               = var.write_secret_values ? 1 : 0
  provider            = aws.generator
  password_length     = 64
  exclude_punctuation = true
}

resource "aws_secretsmanager_secret" "proxy_fleet" {
  # checkov:skip=CKV2_AWS_57: not a database login; the replicas read it at start, so it changes with a redeploy (docs/operations.md), not by the RDS rotation function.
  name                    = "${local.secret_prefix}/proxy-fleet"
  description             = "HMAC key of the proxies' peer channel (forwarded cancel requests)"
  kms_key_id              = module.secrets_key.arn
  recovery_window_in_days = 30
}

resource "aws_secretsmanager_secret_version" "proxy_fleet" {
  count                    = var.write_secret_values ? 1 : 0
  secret_id                = aws_secretsmanager_secret.proxy_fleet.id
  secret_string_wo         = ephemeral.aws_secretsmanager_random_password.proxy_fleet[0].random_password
  secret_string_wo_version = 1
}

# One service on ECS Fargate: its task definition (the main container plus optional
# sidecars), its log group, the execution role (pull the image, inject the secrets it names)
# and the task role (what the code itself may call), rolling deployments that keep every
# old task until a new one is healthy, and autoscaling on CPU.

data "aws_region" "current" {}

locals {
  log_options = {
    "awslogs-group"         = aws_cloudwatch_log_group.this.name
    "awslogs-region"        = data.aws_region.current.name
    "awslogs-stream-prefix" = var.name
  }
  main = {
    name                   = var.name
    image                  = var.image
    essential              = true
    readonlyRootFilesystem = true
    user                   = "10001:10001"
    portMappings = [for p in var.container_ports : {
      containerPort = p
      protocol      = "tcp"
    }]
    environment = [for k in sort(keys(var.environment)) : {
      name  = k
      value = var.environment[k]
    }]
    secrets = [for k in sort(keys(var.secrets)) : {
      name      = k
      valueFrom = var.secrets[k]
    }]
    mountPoints = [for v in var.volumes : {
      sourceVolume  = v.name
      containerPath = v.path
      readOnly      = false
    }]
    healthCheck = {
      # Liveness, not readiness: ECS replaces a container that fails this. /health/ready also
      # fails while the database is unreachable (a Multi-AZ failover), and ECS would then
      # kill every task at once; readiness is the load balancer's check (target groups).
      command     = ["CMD", "curl", "-fsS", "-o", "/dev/null", "http://127.0.0.1:${var.health_port}${var.container_health_path}"]
      interval    = 10
      timeout     = 5
      retries     = 3
      startPeriod = 30
    }
    stopTimeout = var.stop_timeout_secs
    # Started after these sidecars, so stopped before them: the proxy drains and syncs its
    # audit log while the shipper still runs.
    dependsOn = concat(
      [for n in var.start_after : { containerName = n, condition = "START" }],
      [for n in var.start_after_success : { containerName = n, condition = "SUCCESS" }],
    )
    logConfiguration = {
      logDriver = "awslogs"
      options   = local.log_options
    }
  }
  sidecars = [for c in var.sidecars : merge(c, {
    logConfiguration = {
      logDriver = "awslogs"
      options   = merge(local.log_options, { "awslogs-stream-prefix" = "${var.name}-${c.name}" })
    }
  })]
}

resource "aws_cloudwatch_log_group" "this" {
  name              = "/dbgw/${var.cluster_name}/${var.name}"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.logs_kms_key_arn
}

data "aws_iam_policy_document" "assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ecs-tasks.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "execution" {
  name               = "${var.cluster_name}-${var.name}-execution"
  assume_role_policy = data.aws_iam_policy_document.assume.json
}

resource "aws_iam_role_policy_attachment" "execution" {
  role       = aws_iam_role.execution.name
  policy_arn = "arn:aws:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy"
}

# The execution role reads exactly the secrets injected into this task's environment.
data "aws_iam_policy_document" "execution_secrets" {
  count = length(var.injected_secret_arns) > 0 ? 1 : 0
  statement {
    actions   = ["secretsmanager:GetSecretValue"]
    resources = var.injected_secret_arns
  }
  statement {
    actions   = ["kms:Decrypt"]
    resources = [var.secrets_kms_key_arn]
  }
}

resource "aws_iam_role_policy" "execution_secrets" {
  count  = length(var.injected_secret_arns) > 0 ? 1 : 0
  role   = aws_iam_role.execution.id
  policy = data.aws_iam_policy_document.execution_secrets[0].json
}

resource "aws_iam_role" "task" {
  name               = "${var.cluster_name}-${var.name}-task"
  assume_role_policy = data.aws_iam_policy_document.assume.json
}

resource "aws_iam_role_policy" "task" {
  role   = aws_iam_role.task.id
  policy = var.task_policy_json
}

resource "aws_ecs_task_definition" "this" {
  family                   = "${var.cluster_name}-${var.name}"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.cpu
  memory                   = var.memory
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = aws_iam_role.task.arn
  container_definitions    = jsonencode(concat([local.main], local.sidecars))

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = var.cpu_architecture
  }

  ephemeral_storage {
    size_in_gib = var.ephemeral_storage_gib
  }

  dynamic "volume" {
    for_each = toset(concat([for v in var.volumes : v.name], var.sidecar_volumes))
    content {
      name = volume.value
    }
  }
}

resource "aws_ecs_service" "this" {
  name                              = var.name
  cluster                           = var.cluster_arn
  task_definition                   = aws_ecs_task_definition.this.arn
  desired_count                     = var.started ? var.min_tasks : 0
  launch_type                       = "FARGATE"
  platform_version                  = "LATEST"
  health_check_grace_period_seconds = length(var.target_groups) > 0 ? 60 : null
  propagate_tags                    = "SERVICE"
  enable_execute_command            = false

  # A new task must be healthy before an old one stops; a failing rollout rolls back.
  deployment_minimum_healthy_percent = 100
  deployment_maximum_percent         = 200
  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  network_configuration {
    subnets          = var.subnet_ids
    security_groups  = [var.security_group_id]
    assign_public_ip = false
  }

  dynamic "service_registries" {
    for_each = var.service_registry == null ? [] : [var.service_registry]
    content {
      registry_arn = service_registries.value
    }
  }

  dynamic "load_balancer" {
    for_each = var.target_groups
    content {
      target_group_arn = load_balancer.value.arn
      container_name   = var.name
      container_port   = load_balancer.value.port
    }
  }

  lifecycle {
    # Autoscaling owns the count after creation.
    ignore_changes = [desired_count]
  }
}

resource "aws_appautoscaling_target" "this" {
  service_namespace  = "ecs"
  resource_id        = "service/${var.cluster_name}/${aws_ecs_service.this.name}"
  scalable_dimension = "ecs:service:DesiredCount"
  # Raising min_capacity on an active service raises its desired count to it: how the
  # services start once `started` is true (RegisterScalableTarget).
  min_capacity = var.started ? var.min_tasks : 0
  max_capacity = var.started ? var.max_tasks : 0
}

resource "aws_appautoscaling_policy" "cpu" {
  name               = "${var.name}-cpu"
  service_namespace  = aws_appautoscaling_target.this.service_namespace
  resource_id        = aws_appautoscaling_target.this.resource_id
  scalable_dimension = aws_appautoscaling_target.this.scalable_dimension
  policy_type        = "TargetTrackingScaling"

  target_tracking_scaling_policy_configuration {
    target_value       = var.cpu_target_percent
    scale_in_cooldown  = 300
    scale_out_cooldown = 60
    predefined_metric_specification {
      predefined_metric_type = "ECSServiceAverageCPUUtilization"
    }
  }
}

output "service_arn" {
  value = aws_ecs_service.this.id
}

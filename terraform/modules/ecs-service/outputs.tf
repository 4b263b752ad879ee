output "service_name" {
  value = aws_ecs_service.this.name
}

output "task_role_arn" {
  value = aws_iam_role.task.arn
}

output "task_definition_arn" {
  value = aws_ecs_task_definition.this.arn
}

output "log_group" {
  value = aws_cloudwatch_log_group.this.name
}

output "containers" {
  description = "The task's container definitions, as planned (asserted by the terraform test suites)."
  value       = jsondecode(aws_ecs_task_definition.this.container_definitions)
}

output "cpu" {
  description = "The task's CPU units (1024 per vCPU), as planned."
  value       = aws_ecs_task_definition.this.cpu
}

output "volumes" {
  value = [for v in aws_ecs_task_definition.this.volume : v.name]
}

output "scaling" {
  description = "Desired count and autoscaling range, as planned (asserted by the terraform test suites)."
  value = {
    desired = aws_ecs_service.this.desired_count
    min     = aws_appautoscaling_target.this.min_capacity
    max     = aws_appautoscaling_target.this.max_capacity
  }
}

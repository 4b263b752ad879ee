output "function_arn" {
  value = aws_lambda_function.rotation.arn
}

output "function_name" {
  value = aws_lambda_function.rotation.function_name
}

output "security_group_id" {
  value = aws_security_group.rotation.id
}

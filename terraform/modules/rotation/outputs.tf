output "function_arn" {
  value = aws_lambda_function.rotation.arn
}

output "function_name" {
  value = aws_lambda_function.rotation.function_name
}

output "security_group_id" {
  value = aws_security_group.rotation.id
}

output "posture" {
  description = "The function's settings, as planned (asserted by the terraform test suites)."
  value = {
    reserved_concurrency = aws_lambda_function.rotation.reserved_concurrent_executions
    environment          = aws_lambda_function.rotation.environment[0].variables
    package              = var.zip_path
    kms_key_arns         = var.kms_key_arns
    statements           = [for st in data.aws_iam_policy_document.rotation.statement : { sid = st.sid, actions = st.actions, resources = st.resources }]
  }
}

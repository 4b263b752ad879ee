# aws.generator makes the secrets' first random values (ephemeral
# aws_secretsmanager_random_password: Secrets Manager's GetRandomPassword, never in the plan
# or the state). The environments pass a configuration of their own for it, so that the
# offline test suites can mock `aws` and keep a real, never-called one here: Terraform's
# mock providers cannot have ephemeral resources.
terraform {
  required_providers {
    aws = {
      source                = "hashicorp/aws"
      configuration_aliases = [aws.generator]
    }
  }
}

# Valid-looking values for the mock AWS provider of the test suites: a mock invents random
# strings, and the provider's own argument checks refuse them where an ARN is expected.
# Resources whose identity a test compares get distinct values (override_resource in
# the test files).

mock_resource "aws_kms_key" {
  defaults = {
    arn = "arn:aws:kms:eu-west-1:111122223333:key/mock"
  }
}

mock_resource "aws_iam_role" {
  defaults = {
    arn = "arn:aws:iam::111122223333:role/mock"
  }
}

mock_resource "aws_cloudwatch_log_group" {
  defaults = {
    arn = "arn:aws:logs:eu-west-1:111122223333:log-group:mock"
  }
}

mock_resource "aws_sns_topic" {
  defaults = {
    arn = "arn:aws:sns:eu-west-1:111122223333:mock"
  }
}

mock_resource "aws_lb" {
  defaults = {
    arn = "arn:aws:elasticloadbalancing:eu-west-1:111122223333:loadbalancer/app/mock/0"
  }
}

mock_resource "aws_lb_target_group" {
  defaults = {
    arn = "arn:aws:elasticloadbalancing:eu-west-1:111122223333:targetgroup/mock/0"
  }
}

mock_resource "aws_lb_listener" {
  defaults = {
    arn = "arn:aws:elasticloadbalancing:eu-west-1:111122223333:listener/app/mock/0/0"
  }
}

mock_resource "aws_acm_certificate" {
  defaults = {
    arn = "arn:aws:acm:eu-west-1:111122223333:certificate/mock"
  }
}

mock_resource "aws_lambda_function" {
  defaults = {
    arn = "arn:aws:lambda:eu-west-1:111122223333:function:mock"
  }
}

mock_resource "aws_secretsmanager_secret" {
  defaults = {
    arn = "arn:aws:secretsmanager:eu-west-1:111122223333:secret:mock"
  }
}

mock_resource "aws_ecs_cluster" {
  defaults = {
    arn = "arn:aws:ecs:eu-west-1:111122223333:cluster/mock"
  }
}

mock_resource "aws_ecs_task_definition" {
  defaults = {
    arn = "arn:aws:ecs:eu-west-1:111122223333:task-definition/mock:1"
  }
}

mock_resource "aws_ecs_service" {
  defaults = {
    arn = "arn:aws:ecs:eu-west-1:111122223333:service/mock/mock"
  }
}

mock_resource "aws_s3_bucket" {
  defaults = {
    arn = "arn:aws:s3:::mock"
  }
}

mock_resource "aws_service_discovery_service" {
  defaults = {
    arn = "arn:aws:servicediscovery:eu-west-1:111122223333:service/srv-mock"
  }
}

mock_resource "aws_service_discovery_private_dns_namespace" {
  defaults = {
    arn = "arn:aws:servicediscovery:eu-west-1:111122223333:namespace/ns-mock"
  }
}

mock_resource "aws_cloudwatch_event_rule" {
  defaults = {
    arn = "arn:aws:events:eu-west-1:111122223333:rule/mock"
  }
}

mock_resource "aws_db_instance" {
  defaults = {
    arn                = "arn:aws:rds:eu-west-1:111122223333:db:mock"
    master_user_secret = [{ secret_arn = "arn:aws:secretsmanager:eu-west-1:111122223333:secret:rds!db-mock", kms_key_id = "arn:aws:kms:eu-west-1:111122223333:key/db-mock", secret_status = "active" }]
  }
}

mock_resource "aws_db_parameter_group" {
  defaults = {
    arn = "arn:aws:rds:eu-west-1:111122223333:pg:mock"
  }
}

mock_resource "aws_security_group" {
  defaults = {
    arn = "arn:aws:ec2:eu-west-1:111122223333:security-group/sg-mock"
  }
}

mock_resource "aws_vpc" {
  defaults = {
    arn = "arn:aws:ec2:eu-west-1:111122223333:vpc/vpc-mock"
  }
}

mock_data "aws_caller_identity" {
  defaults = { account_id = "111122223333", arn = "arn:aws:iam::111122223333:root" }
}

mock_data "aws_region" {
  defaults = { name = "eu-west-1" }
}

mock_data "aws_iam_policy_document" {
  defaults = { json = "{\"Version\":\"2012-10-17\",\"Statement\":[]}" }
}

mock_data "aws_elb_service_account" {
  defaults = { arn = "arn:aws:iam::156460612806:root" }
}

mock_data "aws_acmpca_certificate_authority" {
  defaults = { certificate = "-----BEGIN CERTIFICATE-----\nmock\n-----END CERTIFICATE-----" }
}

mock_resource "aws_kinesis_firehose_delivery_stream" {
  defaults = {
    arn = "arn:aws:firehose:eu-west-1:111122223333:deliverystream/mock"
  }
}

mock_resource "aws_cloudtrail" {
  defaults = {
    arn = "arn:aws:cloudtrail:eu-west-1:111122223333:trail/mock"
  }
}

mock_resource "aws_sfn_state_machine" {
  defaults = {
    arn = "arn:aws:states:eu-west-1:111122223333:stateMachine:mock"
  }
}

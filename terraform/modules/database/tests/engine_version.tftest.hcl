# The engine versions the database module accepts (issue 17, item 4): before PostgreSQL 15
# nothing keeps the approvals login narrow but the provisioning interface, and 13 and 14
# have never run it, so a plan with an older version (or no version number at all) fails at
# the variable's validation, before anything is planned. Run by `make lint-deploy`
# (scripts/deploy/tf_check.sh) with a mock AWS provider: nothing is called.

mock_provider "aws" {
  source = "./tests/mocks"
}

variables {
  name                      = "dbgw-test"
  vpc_id                    = "vpc-0123456789abcdef0"
  subnet_ids                = ["subnet-0123456789abcdef0", "subnet-0123456789abcdef1"]
  client_security_group_ids = { proxy = "sg-0123456789abcdef0" }
  log_retention_days        = 30
  logs_kms_key_arn          = "arn:aws:kms:eu-west-1:111122223333:key/logs"
}

run "refuses_14" {
  command = plan
  variables {
    engine_version = "14"
  }
  expect_failures = [var.engine_version]
}

run "refuses_13_minor" {
  command = plan
  variables {
    engine_version = "13.7"
  }
  expect_failures = [var.engine_version]
}

run "refuses_a_name_instead_of_a_version" {
  command = plan
  variables {
    engine_version = "latest"
  }
  expect_failures = [var.engine_version]
}

run "accepts_15" {
  command = plan
  variables {
    engine_version = "15"
  }
  assert {
    condition     = aws_db_instance.this.engine_version == "15"
    error_message = "engine_version 15 is not what the instance is planned with"
  }
}

run "accepts_a_minor_of_18" {
  command = plan
  variables {
    engine_version = "18.1"
  }
  assert {
    condition     = aws_db_parameter_group.this.family == "postgres18"
    error_message = "engine_version 18.1 does not give the postgres18 parameter family"
  }
}

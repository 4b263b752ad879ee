# Staging's own numbers (the shared promises: design.tftest.hcl).
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

run "staging" {
  command = plan
  assert {
    condition     = module.dbgw.posture.audit_lock.days == 30
    error_message = "staging's audit retention (Object Lock, compliance) is not the configured 30 days"
  }
}

# The production environment: one call of modules/stack with production's sizes. State in S3 (bucket
# from terraform/bootstrap, given at init), locked with an S3 lock file.

terraform {
  required_version = ">= 1.11"
  required_providers {
    aws = {
      source = "hashicorp/aws"
      # The versions lint-deploy tests (docs/tools.md): 5.100 is in the offline mirror.
      version = "~> 5.100"
    }
  }
  backend "s3" {
    key          = "dbgw/production/terraform.tfstate"
    encrypt      = true
    use_lockfile = true
  }
}

provider "aws" {
  region = var.region
  default_tags {
    tags = {
      project     = "dbgw"
      environment = "production"
    }
  }
}

# The secrets' first random values (modules/stack/versions.tf): the same account and region.
provider "aws" {
  alias  = "generator"
  region = var.region
}

module "dbgw" {
  source = "../../modules/stack"
  providers = {
    aws           = aws
    aws.generator = aws.generator
  }
  environment             = "production"
  domain                  = var.domain
  private_ca_arn          = var.private_ca_arn
  oidc_issuer             = var.oidc_issuer
  images                  = var.images
  rotation_zip_path       = coalesce(var.rotation_zip_path, "${path.root}/../../../target/lambda/rotation/bootstrap.zip")
  vpc_cidr                = "10.41.0.0/16"
  azs                     = var.azs
  client_cidrs            = var.client_cidrs
  db_instance_class       = "db.r7g.large"
  db_multi_az             = true
  db_deletion_protection  = true
  db_admin_access         = var.db_admin_access
  enable_rotation         = var.enable_rotation
  start_services          = var.start_services
  write_secret_values     = var.write_secret_values
  people_secrets_enforced = var.people_secrets_enforced
  people_login            = var.people_login
  proxy_min_tasks         = 3
  audit_retention_days    = 2557
  lb_deletion_protection  = true
  alarm_email             = var.alarm_email
}

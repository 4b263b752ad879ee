# Run once per AWS account, with local state: the S3 bucket that holds every environment's
# Terraform state (versioned, encrypted, TLS only) and the ECR repositories of the images.
# Locking uses S3 lock files (use_lockfile), so no DynamoDB table is needed.

terraform {
  required_version = ">= 1.11"
  required_providers {
    aws = {
      source = "hashicorp/aws"
      # The versions lint-deploy tests (docs/tools.md): 5.100 is in the offline mirror.
      version = "~> 5.100"
    }
  }
}

provider "aws" {
  region = var.region
}

variable "region" {
  type    = string
  default = "eu-west-1"
}

data "aws_caller_identity" "current" {}

locals {
  repositories = toset(["proxy", "approvals", "rates-api", "dbgw-db", "audit-shipper"])
}

resource "aws_kms_key" "state" {
  # checkov:skip=CKV2_AWS_64: the default key policy (the account administers the key) is what a state key needs.
  description         = "dbgw Terraform state and images"
  enable_key_rotation = true
}

resource "aws_s3_bucket" "state" {
  # checkov:skip=CKV_AWS_18: access to the state bucket is recorded by CloudTrail data events, set account-wide.
  # checkov:skip=CKV_AWS_144: state is versioned; a second region adds little for a bucket re-creatable from code and backups.
  # checkov:skip=CKV2_AWS_62: nothing consumes events from the state bucket.
  # checkov:skip=CKV2_AWS_61: state objects are kept in full history on purpose (versioning, no expiry).
  bucket = "dbgw-terraform-state-${data.aws_caller_identity.current.account_id}"
}

resource "aws_s3_bucket_versioning" "state" {
  bucket = aws_s3_bucket.state.id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "state" {
  bucket = aws_s3_bucket.state.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = aws_kms_key.state.arn
    }
    bucket_key_enabled = true
  }
}

module "state_guard" {
  source     = "../modules/bucket-guard"
  bucket     = aws_s3_bucket.state.id
  bucket_arn = aws_s3_bucket.state.arn
}

moved {
  from = aws_s3_bucket_public_access_block.state
  to   = module.state_guard.aws_s3_bucket_public_access_block.this
}

resource "aws_s3_bucket_policy" "state" {
  bucket = aws_s3_bucket.state.id
  policy = module.state_guard.tls_only_policy
}

resource "aws_ecr_repository" "images" {
  for_each             = local.repositories
  name                 = "dbgw/${each.key}"
  image_tag_mutability = "IMMUTABLE"
  image_scanning_configuration {
    scan_on_push = true
  }
  encryption_configuration {
    encryption_type = "KMS"
    kms_key         = aws_kms_key.state.arn
  }
}

output "state_bucket" {
  value = aws_s3_bucket.state.id
}

# The state bucket's region: environments pass it at init (-backend-config=region=...).
output "state_region" {
  value = var.region
}

output "ecr_registry" {
  value = "${data.aws_caller_identity.current.account_id}.dkr.ecr.${var.region}.amazonaws.com"
}

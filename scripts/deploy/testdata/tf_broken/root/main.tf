# Every kind of dangling reference tf_refs.py must report (its self-test, run by lint-deploy).
locals {
  known = "a"
}

module "child" {
  source   = "../child"
  optional = local.known
  unknown  = "passed but not declared"
}

module "gone" {
  source = "../nowhere"
}

resource "aws_sns_topic" "t" {
  name              = "${var.undeclared}-${local.missing}"
  kms_master_key_id = module.child.no_such_output
  policy            = data.aws_iam_policy_document.absent.json
  display_name      = aws_sqs_queue.absent.name
  tags              = { bucket = module.child.bucket }
}

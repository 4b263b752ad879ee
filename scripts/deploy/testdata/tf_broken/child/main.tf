# A child module for tf_refs.py's self-test.
variable "needed" {
  type = string
}

variable "optional" {
  type    = string
  default = "x"
}

resource "aws_s3_bucket" "b" {
  bucket = var.needed
}

output "bucket" {
  value = aws_s3_bucket.b.id
}

variable "bucket" {
  description = "The bucket's name (id)."
  type        = string
}

variable "bucket_arn" {
  type = string
}

# One region of Berth on AWS: a bucket for blobs (and, in the home region, metadata), the
# function that serves the registry API from it behind a function URL, and what they need.
# lambda/README.md describes the function's settings; docs/deploy-consistency.md how regions
# relate.

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}
data "aws_region" "current" {}

locals {
  account   = data.aws_caller_identity.current.account_id
  partition = data.aws_partition.current.partition
  region    = data.aws_region.current.region

  bucket_name = coalesce(var.bucket_name, "${var.name}-${local.account}-${local.region}")
  # Built from names rather than resource attributes, so the key policy can name the log group
  # before either exists.
  log_group_name = "/aws/lambda/${var.name}"
  log_group_arn  = "arn:${local.partition}:logs:${local.region}:${local.account}:log-group:${local.log_group_name}"

  # The home region keeps metadata in its own bucket; every other region points at the home's,
  # for metadata and for content not replicated yet.
  is_home = var.home == null
  home = local.is_home ? {
    bucket_name = aws_s3_bucket.this.id
    bucket_arn  = aws_s3_bucket.this.arn
    region      = local.region
    kms_key_arn = aws_kms_key.this.arn
  } : var.home

  auth_config_secret_name = var.create_auth_config_secret ? aws_secretsmanager_secret.auth_config[0].name : var.auth_config_secret_name

  tags = merge({ "berth:region" = local.region }, var.tags)
}

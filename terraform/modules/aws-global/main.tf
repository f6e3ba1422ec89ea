# What spans Berth's regions on AWS: one CloudFront distribution in front of the regional
# function URLs (writes to the home region, reads failing over to a second one), replication of
# blobs and metadata between the regional buckets, and the optional custom domain.
# docs/deploy-consistency.md tells the story this implements.

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}
data "aws_region" "current" {}

locals {
  account   = data.aws_caller_identity.current.account_id
  partition = data.aws_partition.current.partition

  origin_id      = { for label, r in var.regions : label => "region-${label}" }
  home_origin    = local.origin_id[var.home]
  failover_group = "reads-${var.home}-then-${var.failover}"

  tags = merge({ "berth:stack" = var.name }, var.tags)
}

# The labels must name regional stacks, and two different ones.
check "home_and_failover" {
  assert {
    condition     = contains(keys(var.regions), var.home) && contains(keys(var.regions), var.failover) && var.home != var.failover
    error_message = "home and failover must be two different keys of regions."
  }
}

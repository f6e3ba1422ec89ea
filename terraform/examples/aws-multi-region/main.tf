# Berth in three AWS regions behind one CloudFront distribution.

locals {
  # The regional stacks by label; aws-global and the outputs take them from here.
  regional = {
    home   = module.home
    second = module.second
    third  = module.third
  }
}

module "home" {
  source    = "../../modules/aws-region"
  providers = { aws = aws.home }

  name          = var.name
  lambda_zip    = var.lambda_zip
  force_destroy = var.force_destroy
  tags          = var.tags

  # The home region (no `home` input) keeps the metadata and the auth config secret, which it
  # replicates to the other two regions.
  create_auth_config_secret   = true
  auth_config_replica_regions = [var.regions.second, var.regions.third]

  # Garbage collection every hour (docs/gc.md), here only: the other regions share this
  # region's metadata.
  gc_schedule = "rate(1 hour)"
}

module "second" {
  source    = "../../modules/aws-region"
  providers = { aws = aws.second }

  name          = var.name
  lambda_zip    = var.lambda_zip
  force_destroy = var.force_destroy
  tags          = var.tags

  home                    = module.home.home
  auth_config_secret_name = module.home.auth_config_secret_name
}

module "third" {
  source    = "../../modules/aws-region"
  providers = { aws = aws.third }

  name          = var.name
  lambda_zip    = var.lambda_zip
  force_destroy = var.force_destroy
  tags          = var.tags

  home                    = module.home.home
  auth_config_secret_name = module.home.auth_config_secret_name
}

module "global" {
  source    = "../../modules/aws-global"
  providers = { aws = aws.global }

  name = var.name
  regions = {
    for label, stack in local.regional : label => {
      region      = stack.region
      host        = stack.host
      bucket_name = stack.bucket_name
      bucket_arn  = stack.bucket_arn
      kms_key_arn = stack.kms_key_arn
    }
  }
  home     = "home"
  failover = "second"

  domain_name     = var.domain_name
  route53_zone_id = var.route53_zone_id
  tags            = var.tags
}

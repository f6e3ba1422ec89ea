output "registry_url" {
  description = "The global URL (CloudFront): what `docker login` and image references use."
  value       = module.global.url
}

output "registry_host" {
  description = "The global host name, for image references: <host>/<repository>:<tag>."
  value       = module.global.host
}

output "regional_urls" {
  description = "Each region's own URL (its function URL)."
  value       = { for stack in local.regional : stack.region => stack.url }
}

output "token_realm" {
  description = "The realm to put in the auth config ([token] realm) before exporting it to the secret."
  value       = module.global.token_realm
}

output "auth_config_secret" {
  description = "Secrets Manager secret (home region, replicated) to put the auth config into."
  value       = { name = module.home.auth_config_secret_name, region = module.home.region }
}

output "log_groups" {
  description = "Each region's log group: requests and the audit log."
  value       = { for stack in local.regional : stack.region => stack.log_group_name }
}

output "distribution_id" {
  description = "CloudFront distribution id (for invalidations)."
  value       = module.global.distribution_id
}

output "certificate_validation_records" {
  description = "DNS records to create for the custom domain's certificate when route53_zone_id is not set."
  value       = module.global.certificate_validation_records
}

output "registry_url" {
  description = "The registry's URL (custom domain, or workers.dev when workers_dev_subdomain is set)."
  value       = module.berth.url
}

output "worker_name" {
  description = "The Worker's name (`wrangler tail <name>` follows its log)."
  value       = module.berth.worker_name
}

output "maintenance_worker_name" {
  description = "The background Worker's name (`wrangler tail <name>` follows garbage collection, webhook deliveries and replication)."
  value       = module.berth.maintenance_worker_name
}

output "bucket_name" {
  description = "The R2 bucket."
  value       = module.berth.bucket_name
}

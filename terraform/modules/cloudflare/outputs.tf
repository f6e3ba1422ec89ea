output "url" {
  description = "The registry's URL: the custom domain, the route's host, or the workers.dev URL (when workers_dev_subdomain is given)."
  value       = local.url
}

output "worker_name" {
  description = "Name of the Worker that answers requests."
  value       = cloudflare_worker.this.name
}

output "maintenance_worker_name" {
  description = "Name of the background Worker that runs the Cron Trigger and consumes the webhook queue (null without maintenance_bundle_dir: worker_name runs them)."
  value       = local.split ? cloudflare_worker.maintenance[0].name : null
}

output "version_id" {
  description = "The deployed Worker version."
  value       = cloudflare_worker_version.this.id
}

output "bucket_name" {
  description = "The R2 bucket."
  value       = cloudflare_r2_bucket.blobs.name
}

output "kv_namespace_id" {
  description = "The manifest cache's KV namespace id."
  value       = cloudflare_workers_kv_namespace.manifest_cache.id
}

output "webhook_queue_name" {
  description = "The webhook wake-up queue (null when webhook_queue is false)."
  value       = var.webhook_queue ? cloudflare_queue.webhooks[0].queue_name : null
}

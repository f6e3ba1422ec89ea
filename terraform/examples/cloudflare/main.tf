# Berth on Cloudflare Workers, R2 and Workers KV: one Worker answers requests, a second one
# (<name>-maintenance) runs garbage collection, retention, webhook deliveries and replication.

module "berth" {
  source = "../../modules/cloudflare"

  account_id            = var.account_id
  name                  = var.name
  bundle_dir            = var.bundle_dir
  bucket_name           = var.bucket_name
  auth_config           = var.auth_config
  custom_domain         = var.custom_domain
  workers_dev_subdomain = var.workers_dev_subdomain

  presign_access_key_id     = var.presign_access_key_id
  presign_secret_access_key = var.presign_secret_access_key

  # The background work in a Worker of its own; null (with bundle_dir = edge/build): one Worker.
  maintenance_bundle_dir = var.maintenance_bundle_dir

  # Garbage collection every hour (docs/gc.md).
  gc_crons = ["17 * * * *"]
}

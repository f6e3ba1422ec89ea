# Berth on Cloudflare: the Worker (edge/) with its R2 bucket and KV namespace, as wrangler.toml
# describes it for `wrangler dev`. edge/README.md explains every binding and setting.
# With maintenance_bundle_dir, a second Worker (<name>-maintenance) runs the Cron Trigger's and
# the queue's work, so the Worker that answers requests carries none of that code.

locals {
  presign = var.presign_access_key_id != null
  # Whether a secret was given is not itself a secret.
  auth = nonsensitive(var.auth_config != null)

  # The variables the Worker reads (edge/src/settings.rs): plain-text bindings...
  vars = merge(
    {
      MAX_REQUEST_BODY = tostring(var.max_request_body)
      PART_SIZE        = tostring(var.part_size)
      BLOB_CACHE       = var.blob_cache ? "on" : "off"
      # Pull-through caches' upstreams (docs/mirror.md).
      UPSTREAM_TIMEOUT_SECS = tostring(var.upstream_timeout_seconds)
      # Garbage collection on the Cron Trigger below (edge/src/lib.rs, docs/gc.md).
      BERTH_GC_GRACE       = var.gc_grace
      BERTH_GC_SETTLE      = var.gc_settle
      BERTH_GC_UPLOAD_IDLE = var.gc_upload_idle
      BERTH_GC_BUDGET      = var.gc_budget
    },
    var.policy_config == null ? {} : { POLICY_CONFIG = var.policy_config },
    var.public_url == null ? {} : { PUBLIC_URL = var.public_url },
    # Replication on the Cron Trigger and the queue consumer (edge/src/replication.rs,
    # docs/replication.md): full runs of every rule this often; how long one run copies.
    var.replication_schedule == null ? {} : { BERTH_REPLICATION_SCHEDULE = var.replication_schedule },
    { BERTH_REPLICATION_BUDGET = var.replication_budget },
    local.presign ? {
      S3_ENDPOINT  = "https://${var.account_id}.r2.cloudflarestorage.com"
      S3_BUCKET    = cloudflare_r2_bucket.blobs.name
      S3_REGION    = "auto"
      PRESIGN_SECS = tostring(var.presign_expiry_seconds)
    } : {},
  )
  # ...and secrets.
  secret_bindings = concat(
    [{ name = "UPLOAD_SECRET", type = "secret_text", text = random_password.upload_secret.result }],
    local.auth ? [{ name = "AUTH_CONFIG", type = "secret_text", text = var.auth_config }] : [],
    local.presign ? [
      { name = "S3_ACCESS_KEY_ID", type = "secret_text", text = var.presign_access_key_id },
      { name = "S3_SECRET_ACCESS_KEY", type = "secret_text", text = var.presign_secret_access_key },
    ] : [],
  )

  # Both Workers read the same settings and stores: one list, so they cannot drift apart.
  bindings = concat(
    [
      { name = "BLOBS", type = "r2_bucket", bucket_name = cloudflare_r2_bucket.blobs.name },
      { name = "MANIFEST_CACHE", type = "kv_namespace", namespace_id = cloudflare_workers_kv_namespace.manifest_cache.id },
    ],
    # One Analytics Engine data point per request (docs/observability.md); the dataset is made
    # by the first write.
    var.analytics_dataset == null ? [] : [{ name = "METRICS", type = "analytics_engine", dataset = var.analytics_dataset }],
    # Webhooks: the wake-up queue below (producer side). The request Worker sends the wake-ups;
    # on the maintenance Worker the binding is unused and harmless.
    var.webhook_queue ? [{ name = "WEBHOOK_QUEUE", type = "queue", queue_name = cloudflare_queue.webhooks[0].queue_name }] : [],
    [for k in sort(keys(local.vars)) : { name = k, type = "plain_text", text = local.vars[k] }],
    local.secret_bindings,
  )

  # Whether the background work has a Worker of its own (edge/build-maintenance)...
  split = var.maintenance_bundle_dir != null
  # ...which then gets the Cron Trigger and the queue; else the all-in-one Worker runs them.
  background_worker = local.split ? cloudflare_worker.maintenance[0].name : cloudflare_worker.this.name

  url = (
    var.custom_domain != null ? "https://${var.custom_domain.hostname}" :
    var.route != null ? "https://${split("/", var.route.pattern)[0]}" :
    var.workers_dev && var.workers_dev_subdomain != null ? "https://${var.name}.${var.workers_dev_subdomain}.workers.dev" :
    null
  )
}

# The source of truth: blobs, manifests, tags and upload sessions (conditional writes).
resource "cloudflare_r2_bucket" "blobs" {
  account_id   = var.account_id
  name         = var.bucket_name
  location     = var.bucket_location
  jurisdiction = var.bucket_jurisdiction
}

# Abandoned uploads: multipart uploads never completed, and staging objects under uploads/.
# Published content lives under data/ and blobs/ and is never touched.
resource "cloudflare_r2_bucket_lifecycle" "blobs" {
  account_id   = var.account_id
  bucket_name  = cloudflare_r2_bucket.blobs.name
  jurisdiction = var.bucket_jurisdiction
  rules = [
    {
      id         = "abort-stale-multipart-uploads"
      enabled    = true
      conditions = { prefix = "" }
      abort_multipart_uploads_transition = {
        condition = { type = "Age", max_age = var.stale_upload_days * 86400 }
      }
    },
    {
      id         = "expire-upload-staging"
      enabled    = true
      conditions = { prefix = "uploads/" }
      delete_objects_transition = {
        condition = { type = "Age", max_age = var.stale_upload_days * 86400 }
      }
    },
    # Their sessions: every chunk rewrites a session, so only idle ones expire.
    {
      id         = "expire-idle-upload-sessions"
      enabled    = true
      conditions = { prefix = "meta/uploads/" }
      delete_objects_transition = {
        condition = { type = "Age", max_age = var.stale_upload_days * 86400 }
      }
    },
  ]
}

# A read-through cache of manifests by digest (never the source of truth: KV is eventually
# consistent).
resource "cloudflare_workers_kv_namespace" "manifest_cache" {
  account_id = var.account_id
  title      = "${var.name}-manifest-cache"
}

# Signs upload ids (at least 32 bytes).
resource "random_password" "upload_secret" {
  length  = 64
  special = false
}

resource "cloudflare_worker" "this" {
  account_id = var.account_id
  name       = var.name
  subdomain = {
    enabled = var.workers_dev
  }
  observability = {
    enabled = true
  }
}

resource "cloudflare_worker_version" "this" {
  account_id         = var.account_id
  worker_id          = cloudflare_worker.this.id
  compatibility_date = var.compatibility_date
  main_module        = "index.js"

  # worker-build's output: the JS glue imports ./index_bg.wasm by that name.
  modules = [
    {
      name         = "index.js"
      content_type = "application/javascript+module"
      content_file = "${var.bundle_dir}/index.js"
    },
    {
      name         = "index_bg.wasm"
      content_type = "application/wasm"
      content_file = "${var.bundle_dir}/index_bg.wasm"
    },
  ]

  bindings = local.bindings

  lifecycle {
    precondition {
      condition     = !local.presign || nonsensitive(var.presign_secret_access_key != null)
      error_message = "presign_access_key_id needs presign_secret_access_key."
    }
    # The request-only bundle has no scheduled or queue handler: alone, the Cron Trigger and
    # the queue would fire into nothing and garbage collection, retention, webhook deliveries
    # and replication would silently never run.
    precondition {
      condition     = local.split || basename(trimsuffix(var.bundle_dir, "/")) != "build-serve"
      error_message = "bundle_dir is the request-only bundle (edge/build-serve): set maintenance_bundle_dir to edge/build-maintenance, or use the all-in-one edge/build."
    }
  }
}

resource "cloudflare_workers_deployment" "this" {
  account_id  = var.account_id
  script_name = cloudflare_worker.this.name
  strategy    = "percentage"
  versions = [{
    version_id = cloudflare_worker_version.this.id
    percentage = 100
  }]
}

resource "cloudflare_workers_custom_domain" "this" {
  count      = var.custom_domain == null ? 0 : 1
  account_id = var.account_id
  zone_id    = var.custom_domain.zone_id
  hostname   = var.custom_domain.hostname
  service    = cloudflare_worker.this.name
  depends_on = [cloudflare_workers_deployment.this]
}

resource "cloudflare_workers_route" "this" {
  count      = var.route == null ? 0 : 1
  zone_id    = var.route.zone_id
  pattern    = var.route.pattern
  script     = cloudflare_worker.this.name
  depends_on = [cloudflare_workers_deployment.this]
}

# The background Worker (maintenance_bundle_dir): the same bundle layout, bindings and settings
# as the request Worker, built with only the scheduled and queue handlers (GC, retention, webhook
# deliveries, replication). It answers no requests, so it has no workers.dev URL.
resource "cloudflare_worker" "maintenance" {
  count      = local.split ? 1 : 0
  account_id = var.account_id
  name       = "${var.name}-maintenance"
  subdomain = {
    enabled          = false
    previews_enabled = false
  }
  observability = {
    enabled = true
  }

  lifecycle {
    # Worker names have at most 63 characters, as the name variable's validation says.
    precondition {
      condition     = length(var.name) <= 51
      error_message = "With maintenance_bundle_dir, name must be at most 51 characters (<name>-maintenance names the second Worker)."
    }
  }
}

resource "cloudflare_worker_version" "maintenance" {
  count              = local.split ? 1 : 0
  account_id         = var.account_id
  worker_id          = cloudflare_worker.maintenance[0].id
  compatibility_date = var.compatibility_date
  main_module        = "index.js"

  # worker-build's output, as for the request Worker.
  modules = [
    {
      name         = "index.js"
      content_type = "application/javascript+module"
      content_file = "${var.maintenance_bundle_dir}/index.js"
    },
    {
      name         = "index_bg.wasm"
      content_type = "application/wasm"
      content_file = "${var.maintenance_bundle_dir}/index_bg.wasm"
    },
  ]

  bindings = local.bindings
}

resource "cloudflare_workers_deployment" "maintenance" {
  count       = local.split ? 1 : 0
  account_id  = var.account_id
  script_name = cloudflare_worker.maintenance[0].name
  strategy    = "percentage"
  versions = [{
    version_id = cloudflare_worker_version.maintenance[0].id
    percentage = 100
  }]
}

# Garbage collection (docs/gc.md): the background Worker's scheduled handler runs on these
# crons; each trigger collects for gc_budget and the next one continues from the checkpoint in
# R2. The trigger needs a deployed script with a scheduled handler: whichever Worker that is.
resource "cloudflare_workers_cron_trigger" "gc" {
  count       = length(var.gc_crons) == 0 ? 0 : 1
  account_id  = var.account_id
  script_name = local.background_worker
  schedules   = [for cron in var.gc_crons : { cron = cron }]
  depends_on  = [cloudflare_workers_deployment.this, cloudflare_workers_deployment.maintenance]
}

# Webhooks (docs/webhooks.md): a request that wrote outbox entries sends a wake-up message to
# this queue (bound as WEBHOOK_QUEUE), and the background Worker's queue handler delivers at
# once. The outbox in R2 stays the record: a lost message only delays a delivery to the next
# Cron Trigger (gc_crons), so that schedule is still what retries failed deliveries.
resource "cloudflare_queue" "webhooks" {
  count      = var.webhook_queue ? 1 : 0
  account_id = var.account_id
  queue_name = "${var.name}-webhooks"
}

resource "cloudflare_queue_consumer" "webhooks" {
  count       = var.webhook_queue ? 1 : 0
  account_id  = var.account_id
  queue_id    = cloudflare_queue.webhooks[0].queue_id
  script_name = local.background_worker
  type        = "worker"
  # Wake-ups are alike: up to a second to gather a batch, which runs one delivery step.
  settings = {
    batch_size       = 100
    max_wait_time_ms = 1000
    max_retries      = 1
  }
  depends_on = [cloudflare_workers_deployment.this, cloudflare_workers_deployment.maintenance]
}

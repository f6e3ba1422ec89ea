variable "account_id" {
  description = "Cloudflare account id."
  type        = string
}

variable "name" {
  description = "Worker name (also the prefix of the KV namespace's title)."
  type        = string
  default     = "berth"

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9-]{0,61}[a-z0-9]$", var.name))
    error_message = "name must be 2-63 characters of a-z, 0-9 and '-'."
  }
}

variable "bundle_dir" {
  description = "Directory of the built Worker that answers requests (index.js and index_bg.wasm, after `bash infra/edge-build.sh`): edge/build-serve with maintenance_bundle_dir, else the all-in-one edge/build."
  type        = string
}

variable "maintenance_bundle_dir" {
  description = "Directory of the built background Worker (edge/build-maintenance after `bash infra/edge-build.sh`): the Cron Trigger's and the queue's work (garbage collection, retention, webhook deliveries, replication) in a Worker of its own (<name>-maintenance), so the Worker that answers requests carries none of that code (a 16% smaller bundle). null: the Worker at bundle_dir runs them itself (then bundle_dir must be the all-in-one edge/build)."
  type        = string
  default     = null
}

variable "compatibility_date" {
  description = "Workers compatibility date; the one wrangler.toml uses and the tests run with."
  type        = string
  default     = "2026-04-20"
}

variable "bucket_name" {
  description = "R2 bucket for blobs, manifests, tags and upload sessions."
  type        = string
  default     = "berth-blobs"
}

variable "bucket_location" {
  description = "R2 location hint (apac, eeur, enam, weur, wnam, oc); null lets R2 choose. Only honoured when the bucket is created."
  type        = string
  default     = null
}

variable "bucket_jurisdiction" {
  description = "R2 jurisdiction: default, eu or fedramp."
  type        = string
  default     = "default"
}

variable "stale_upload_days" {
  description = "Days after which unfinished multipart uploads are aborted and upload staging objects (uploads/) are deleted."
  type        = number
  default     = 7
}

variable "max_request_body" {
  description = "MAX_REQUEST_BODY: request bodies above this many bytes get 413 with a hint; match your Workers plan (100 MB by default)."
  type        = number
  default     = 100000000
}

variable "part_size" {
  description = "PART_SIZE: R2 multipart part size in bytes (at least 5 MiB), also advertised as OCI-Chunk-Min-Length."
  type        = number
  default     = 8388608

  validation {
    condition     = var.part_size >= 5242880
    error_message = "part_size must be at least 5 MiB (5242880 bytes)."
  }
}

variable "upstream_timeout_seconds" {
  description = "UPSTREAM_TIMEOUT_SECS: how long an upstream registry of a pull-through cache may stay silent, before its answer and between two chunks of a body (docs/mirror.md)."
  type        = number
  default     = 30
}

variable "blob_cache" {
  description = "BLOB_CACHE: serve uploaded blobs through the Workers Cache API."
  type        = bool
  default     = true
}

variable "gc_crons" {
  description = "Cron expressions on which the Worker collects garbage (docs/gc.md), e.g. [\"17 * * * *\"]; each trigger collects for gc_budget and the next continues. Empty: no garbage collection."
  type        = list(string)
  default     = []
}

variable "gc_grace" {
  description = "BERTH_GC_GRACE: how long an uploaded blob no manifest references is kept (s, m, h or d)."
  type        = string
  default     = "24h"
}

variable "gc_settle" {
  description = "BERTH_GC_SETTLE: upper bound on a request's duration that garbage collection waits out before deleting."
  type        = string
  default     = "1h"
}

variable "gc_upload_idle" {
  description = "BERTH_GC_UPLOAD_IDLE: upload sessions untouched this long are aborted with their data."
  type        = string
  default     = "24h"
}

variable "gc_budget" {
  description = "BERTH_GC_BUDGET: how long one Cron Trigger collects (wall time)."
  type        = string
  default     = "60s"
}

variable "replication_schedule" {
  description = "BERTH_REPLICATION_SCHEDULE: how often the Cron Trigger copies everything each [[policies.replication]] rule covers (s, m, h or d; docs/replication.md). null: only on push."
  type        = string
  default     = null
}

variable "replication_budget" {
  description = "BERTH_REPLICATION_BUDGET: how long one Cron Trigger or queue batch runs replication copies (wall time); the next one continues."
  type        = string
  default     = "120s"
}

variable "presign_access_key_id" {
  description = "Access key id of an R2 API token (Object Read & Write on the bucket). With presign_secret_access_key, blob GETs are answered with 307 redirects to presigned R2 URLs; null streams blobs through the Worker."
  type        = string
  default     = null
}

variable "presign_secret_access_key" {
  description = "Secret access key of that R2 API token (pass it as TF_VAR_presign_secret_access_key)."
  type        = string
  default     = null
  sensitive   = true
}

variable "presign_expiry_seconds" {
  description = "PRESIGN_SECS: lifetime of presigned R2 URLs."
  type        = number
  default     = 600
}

variable "auth_config" {
  description = "The auth config with its keys inline, as JSON: `berth auth export --json` prints it (docs/auth.md; the Worker reads JSON only). Null leaves the registry open. Pass it as TF_VAR_auth_config and keep the state encrypted: it holds the signing keys."
  type        = string
  default     = null
  sensitive   = true
  validation {
    condition     = var.auth_config == null || can(jsondecode(var.auth_config))
    error_message = "auth_config must be JSON, as `berth auth export --json --config FILE` prints it: the Worker reads no TOML."
  }
}

variable "workers_dev" {
  description = "Serve the Worker on <name>.<account subdomain>.workers.dev as well."
  type        = bool
  default     = true
}

variable "workers_dev_subdomain" {
  description = "The account's workers.dev subdomain (dashboard: Workers & Pages), only to print the workers.dev URL."
  type        = string
  default     = null
}

variable "custom_domain" {
  description = "Serve the registry on its own host name: a Workers custom domain (Cloudflare creates the DNS record and certificate). zone_id is the zone that holds hostname."
  type = object({
    zone_id  = string
    hostname = string
  })
  default = null
}

variable "route" {
  description = "Or a route on a proxied zone, e.g. { zone_id = \"…\", pattern = \"registry.example.com/*\" }."
  type = object({
    zone_id = string
    pattern = string
  })
  default = null
}

variable "policy_config" {
  description = "Tag policies, retention and quotas for a registry without token auth (docs/policies.md): a file with only [policies] (and [webhooks], docs/webhooks.md) as JSON, from `berth auth export --json --config FILE` or jsonencode({ policies = { ... } }); the Worker reads JSON only. With token auth, put them in the auth config instead. Null: none."
  type        = string
  default     = null
  validation {
    condition     = var.policy_config == null || can(jsondecode(var.policy_config))
    error_message = "policy_config must be JSON (`berth auth export --json --config FILE`, or jsonencode): the Worker reads no TOML."
  }
}

variable "public_url" {
  description = "The registry's public URL (https://registry.example.com), for webhook payloads: the target's url and the event's source (docs/webhooks.md). Null: left out of payloads."
  type        = string
  default     = null
}

variable "analytics_dataset" {
  description = "Workers Analytics Engine dataset the Worker writes one data point per request to (bound as METRICS; docs/observability.md has the queries). null: no metrics."
  type        = string
  default     = "berth"
}

variable "webhook_queue" {
  description = "Create a Cloudflare Queue (<name>-webhooks, bound as WEBHOOK_QUEUE, consumed by the Worker that runs the background work) so webhook deliveries start within seconds of their event (docs/webhooks.md). false: deliveries wait for the Cron Trigger (gc_crons)."
  type        = bool
  default     = true
}

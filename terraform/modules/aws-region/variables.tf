variable "name" {
  description = "Prefix of every resource name (function, role, secrets, bucket)."
  type        = string
  default     = "berth"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,30}[a-z0-9]$", var.name))
    error_message = "name must be 3-32 characters of a-z, 0-9 and '-', starting with a letter."
  }
}

variable "lambda_zip" {
  description = "Path to the function's bootstrap.zip, built offline by `cargo lambda build --profile lambda --compiler cargo --output-format zip -p berth-lambda` (x86_64)."
  type        = string
}

variable "bucket_name" {
  description = "Name of this region's bucket. Default: <name>-<account id>-<region>."
  type        = string
  default     = null
}

variable "home" {
  description = "The home region's bucket (its aws-region module's `home` output), which holds the metadata (tags, repository links, upload sessions) for every region and the content pushed through the global URL; this region reads content from it until replication brings a copy. null makes this region the home region."
  type = object({
    bucket_name = string
    bucket_arn  = string
    region      = string
    kms_key_arn = string
  })
  default = null
}

variable "create_auth_config_secret" {
  description = "Create the Secrets Manager secret that holds the auth config (signing keys, users, policy; `berth auth export`) in this region, replicated to auth_config_replica_regions. Set it in the home region only. Its value is put after apply (see the example's README), so it never enters the Terraform state."
  type        = bool
  default     = false
}

variable "auth_config_replica_regions" {
  description = "Regions that get a replica of the auth config secret (the other regions of the deployment); used with create_auth_config_secret."
  type        = list(string)
  default     = []
}

variable "auth_config_secret_name" {
  description = "Name of an auth config secret readable in this region (the home region's replica, or an existing secret). null with create_auth_config_secret = false: no token auth, the registry is open to anyone who can reach it."
  type        = string
  default     = null
}

variable "upload_key_version" {
  description = "Bump to generate a new upload-signing key (uploads in progress then fail and must restart)."
  type        = number
  default     = 1
}

variable "memory_size" {
  description = "Function memory in MB; CPU scales with it, and sha256 of streamed bodies is CPU-bound."
  type        = number
  default     = 1024
}

variable "timeout" {
  description = "Function timeout in seconds. Completing a direct upload re-reads the object through sha256 (about 1 GiB per 5-10 s), so large layers need minutes."
  type        = number
  default     = 900

  validation {
    condition     = var.timeout >= 10 && var.timeout <= 900
    error_message = "timeout must be 10-900 seconds."
  }
}

variable "reserved_concurrency" {
  description = "Reserved concurrent executions for the function; null leaves it on the account's unreserved pool."
  type        = number
  default     = null
}

variable "redirect_expiry_seconds" {
  description = "Lifetime of presigned blob GET URLs (BERTH_REDIRECT_EXPIRY_SECS)."
  type        = number
  default     = 300
}

variable "part_url_expiry_seconds" {
  description = "Lifetime of presigned part-upload URLs for direct uploads (BERTH_PART_URL_EXPIRY_SECS)."
  type        = number
  default     = 3600
}

variable "upstream_timeout_seconds" {
  description = "How long an upstream registry of a pull-through cache may stay silent, before its answer and between two chunks of a body (BERTH_UPSTREAM_TIMEOUT_SECS; docs/mirror.md)."
  type        = number
  default     = 30
}

variable "log_level" {
  description = "RUST_LOG filter of the function (audit lines are logged at info)."
  type        = string
  default     = "info"
}

variable "log_retention_days" {
  description = "Retention of the function's log group, which holds the audit log."
  type        = number
  default     = 365
}

variable "stale_upload_days" {
  description = "Days after which unfinished multipart uploads are aborted and upload staging objects (uploads/) expire."
  type        = number
  default     = 7
}

variable "gc_schedule" {
  description = "EventBridge schedule expression (e.g. \"rate(1 hour)\") on which the function collects garbage (docs/gc.md); created in the home region only, whose metadata every region shares. null: no garbage collection."
  type        = string
  default     = null
}

variable "replication_schedule" {
  description = "How often the scheduled invocations copy everything each [[policies.replication]] rule covers (BERTH_REPLICATION_SCHEDULE; s, m, h or d; docs/replication.md). null: only on push (woken by the webhook_queue's SQS queue)."
  type        = string
  default     = null
}

variable "webhook_queue" {
  description = "Whether an SQS queue wakes the function to deliver webhooks and run replication copies right after a request writes outbox entries (BERTH_WEBHOOK_QUEUE_URL; docs/webhooks.md, docs/replication.md). false: they wait for gc_schedule's invocations."
  type        = bool
  default     = true
}

variable "gc_grace" {
  description = "How long an uploaded blob no manifest references is kept (BERTH_GC_GRACE; s, m, h or d)."
  type        = string
  default     = "24h"
}

variable "gc_settle" {
  description = "Upper bound on a request's duration that garbage collection waits out before deleting (BERTH_GC_SETTLE); at least the function timeout."
  type        = string
  default     = "1h"
}

variable "gc_upload_idle" {
  description = "Upload sessions untouched this long are aborted with their data (BERTH_GC_UPLOAD_IDLE)."
  type        = string
  default     = "24h"
}

variable "noncurrent_version_days" {
  description = "Days a deleted or overwritten object's old version is kept (the bucket is versioned for replication)."
  type        = number
  default     = 30
}

variable "force_destroy" {
  description = "Let `terraform destroy` delete the bucket with everything in it. Keep false for a registry you care about."
  type        = bool
  default     = false
}

variable "tags" {
  description = "Tags for every resource."
  type        = map(string)
  default     = {}
}

variable "policy_config" {
  description = "Tag policies, retention and quotas for a registry without token auth (docs/policies.md): TOML with only [policies] (and [webhooks], docs/webhooks.md). With token auth, put them in the auth config instead. Null: none."
  type        = string
  default     = null
}

variable "public_url" {
  description = "The registry's public URL (https://registry.example.com), for webhook payloads: the target's url and the event's source (docs/webhooks.md). Null: left out of payloads."
  type        = string
  default     = null
}

variable "metrics_namespace" {
  description = "CloudWatch namespace of the function's embedded-metric-format records (BERTH_METRICS=emf; docs/observability.md), which the slow-pulls alarm reads. Null: no records (each dimension set is a billed custom metric) and no slow-pulls alarm."
  type        = string
  default     = null
}

variable "storage_capacity_bytes" {
  description = "Storage budget for this region's bucket: an alarm fires above 85 % of it. Null: no storage alarm."
  type        = number
  default     = null
}

variable "alarm_actions" {
  description = "SNS topic ARNs the CloudWatch alarms notify (alarm and OK). Empty: alarms show in the console only."
  type        = list(string)
  default     = []
}

variable "metrics_max_repositories" {
  description = "BERTH_METRICS_MAX_REPOSITORIES: repositories with a Repository dimension of their own per function instance; the rest share _other."
  type        = number
  default     = 50
}

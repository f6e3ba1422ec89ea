variable "account_id" {
  description = "Cloudflare account id (dashboard: Workers & Pages, right-hand column)."
  type        = string
}

variable "name" {
  description = "Worker name."
  type        = string
  default     = "berth"
}

variable "bundle_dir" {
  description = "The built Worker that answers requests: edge/build-serve after `bash infra/edge-build.sh` (run from the repository root); the all-in-one edge/build when maintenance_bundle_dir is null."
  type        = string
  default     = "../../../edge/build-serve"
}

variable "maintenance_bundle_dir" {
  description = "The built background Worker (garbage collection, retention, webhook deliveries, replication): edge/build-maintenance, which `bash infra/edge-build.sh` builds too. null: no second Worker, the one at bundle_dir (then edge/build) runs them."
  type        = string
  default     = "../../../edge/build-maintenance"
}

variable "bucket_name" {
  description = "R2 bucket name."
  type        = string
  default     = "berth-blobs"
}

variable "auth_config" {
  description = "`berth auth export --json` output (signing keys, users, policy; the Worker reads JSON only); null leaves the registry open. Set it as TF_VAR_auth_config."
  type        = string
  default     = null
  sensitive   = true
}

variable "custom_domain" {
  description = "Optional host name for the registry on a zone of this account: { zone_id = \"…\", hostname = \"registry.example.com\" }."
  type = object({
    zone_id  = string
    hostname = string
  })
  default = null
}

variable "workers_dev_subdomain" {
  description = "The account's workers.dev subdomain, only to print the workers.dev URL."
  type        = string
  default     = null
}

variable "presign_access_key_id" {
  description = "Optional R2 API token access key id: blob GETs become 307 redirects to presigned R2 URLs."
  type        = string
  default     = null
}

variable "presign_secret_access_key" {
  description = "The R2 API token's secret access key (TF_VAR_presign_secret_access_key)."
  type        = string
  default     = null
  sensitive   = true
}

variable "name" {
  description = "Prefix of resource names (cache policies, replication role)."
  type        = string
  default     = "berth"
}

variable "regions" {
  description = "Every regional stack, keyed by a short label: the aws-region modules' outputs region, host, bucket_name, bucket_arn and kms_key_arn."
  type = map(object({
    region      = string
    host        = string
    bucket_name = string
    bucket_arn  = string
    kms_key_arn = string
  }))

  validation {
    condition     = length(var.regions) >= 2
    error_message = "regions needs at least two regional stacks (one home, one to fail over to)."
  }
}

variable "home" {
  description = "Label (key of regions) of the home region: it holds the metadata, takes every write and is CloudFront's primary origin."
  type        = string
}

variable "failover" {
  description = "Label of the region CloudFront retries reads (blob GET/HEAD) in when the home origin answers 500, 502, 503 or 504 or cannot be reached."
  type        = string
}

variable "domain_name" {
  description = "Custom domain for the registry, e.g. registry.example.com. null: use the distribution's *.cloudfront.net name."
  type        = string
  default     = null
}

variable "route53_zone_id" {
  description = "Route 53 hosted zone of domain_name: when set, the certificate is validated and the alias records created there. null: create the validation and alias records yourself (see the outputs)."
  type        = string
  default     = null
}

variable "price_class" {
  description = "CloudFront price class: PriceClass_100, PriceClass_200 or PriceClass_All."
  type        = string
  default     = "PriceClass_All"

  validation {
    condition     = contains(["PriceClass_100", "PriceClass_200", "PriceClass_All"], var.price_class)
    error_message = "price_class must be PriceClass_100, PriceClass_200 or PriceClass_All."
  }
}

variable "origin_read_timeout" {
  description = "Seconds CloudFront waits for a function's response (CloudFront allows 1-60 without a quota increase). A direct upload's completion of a very large layer can take longer: `berth push` such layers to a regional URL."
  type        = number
  default     = 60
}

variable "web_acl_id" {
  description = "ARN of an AWS WAF web ACL (scope CLOUDFRONT) to attach; null for none."
  type        = string
  default     = null
}

variable "replication_time_control" {
  description = "S3 Replication Time Control: replicate 99.99% of objects within 15 minutes, with metrics, for an extra charge. Without it most objects replicate within seconds to minutes, with no bound."
  type        = bool
  default     = false
}

variable "tags" {
  description = "Tags for every resource."
  type        = map(string)
  default     = {}
}

variable "name" {
  description = "Prefix of every resource name."
  type        = string
  default     = "berth"
}

variable "regions" {
  description = "The three regions: home holds the metadata and takes the writes; second is where reads fail over to; third serves its own regional URL and keeps a replica."
  type = object({
    home   = string
    second = string
    third  = string
  })
  default = {
    home   = "us-east-1"
    second = "us-west-2"
    third  = "eu-west-1"
  }

  validation {
    condition     = length(distinct([var.regions.home, var.regions.second, var.regions.third])) == 3
    error_message = "The three regions must differ."
  }
}

variable "lambda_zip" {
  description = "The function's bootstrap.zip; the default is where `cargo lambda build --profile lambda --compiler cargo --output-format zip -p berth-lambda` puts it."
  type        = string
  default     = "../../../target/lambda/berth-lambda/bootstrap.zip"
}

variable "domain_name" {
  description = "Optional custom domain for the global URL, e.g. registry.example.com."
  type        = string
  default     = null
}

variable "route53_zone_id" {
  description = "Route 53 zone of domain_name, to validate its certificate and point it at CloudFront; null to make those records yourself."
  type        = string
  default     = null
}

variable "force_destroy" {
  description = "Let `terraform destroy` delete the buckets with their contents (set it, apply, then destroy)."
  type        = bool
  default     = false
}

variable "tags" {
  description = "Tags for every resource."
  type        = map(string)
  default     = {}
}

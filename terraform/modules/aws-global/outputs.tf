output "url" {
  description = "The registry's global URL (CloudFront), e.g. https://registry.example.com"
  value       = "https://${coalesce(var.domain_name, aws_cloudfront_distribution.this.domain_name)}"
}

output "host" {
  description = "Host name for `docker login` and image references."
  value       = coalesce(var.domain_name, aws_cloudfront_distribution.this.domain_name)
}

output "token_realm" {
  description = "Put this in the auth config (`[token] realm`), so clients fetch tokens through CloudFront too."
  value       = "https://${coalesce(var.domain_name, aws_cloudfront_distribution.this.domain_name)}/token"
}

output "distribution_id" {
  description = "CloudFront distribution id (for invalidations)."
  value       = aws_cloudfront_distribution.this.id
}

output "distribution_domain_name" {
  description = "The distribution's *.cloudfront.net name, the target of the custom domain's DNS records."
  value       = aws_cloudfront_distribution.this.domain_name
}

output "certificate_validation_records" {
  description = "DNS records that validate the custom domain's certificate, when route53_zone_id is null and you create them yourself."
  value = var.domain_name == null ? [] : [
    for o in aws_acm_certificate.this[0].domain_validation_options : {
      name  = o.resource_record_name
      type  = o.resource_record_type
      value = o.resource_record_value
    }
  ]
}

output "replication_role_arn" {
  description = "ARN of the role S3 replication uses."
  value       = aws_iam_role.replication.arn
}

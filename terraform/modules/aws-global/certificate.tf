# The optional custom domain: an ACM certificate (CloudFront takes them from us-east-1 only, so
# this module's provider must be configured there), DNS validation and alias records in Route 53
# when the zone is given.

resource "aws_acm_certificate" "this" {
  count             = var.domain_name == null ? 0 : 1
  domain_name       = var.domain_name
  validation_method = "DNS"
  tags              = local.tags

  lifecycle {
    create_before_destroy = true
    precondition {
      condition     = data.aws_region.current.region == "us-east-1"
      error_message = "CloudFront only uses certificates from us-east-1: configure aws-global's provider with region = \"us-east-1\"."
    }
  }
}

resource "aws_route53_record" "validation" {
  for_each = var.domain_name == null || var.route53_zone_id == null ? {} : {
    for o in aws_acm_certificate.this[0].domain_validation_options : o.domain_name => o
  }
  zone_id         = var.route53_zone_id
  name            = each.value.resource_record_name
  type            = each.value.resource_record_type
  records         = [each.value.resource_record_value]
  ttl             = 300
  allow_overwrite = true
}

# Waits for the certificate to be issued (records made here, or by hand from the
# certificate_validation_records output).
resource "aws_acm_certificate_validation" "this" {
  count                   = var.domain_name == null ? 0 : 1
  certificate_arn         = aws_acm_certificate.this[0].arn
  validation_record_fqdns = var.route53_zone_id == null ? null : [for r in aws_route53_record.validation : r.fqdn]
}

resource "aws_route53_record" "alias" {
  for_each = var.domain_name == null || var.route53_zone_id == null ? toset([]) : toset(["A", "AAAA"])
  zone_id  = var.route53_zone_id
  name     = var.domain_name
  type     = each.value
  alias {
    name                   = aws_cloudfront_distribution.this.domain_name
    zone_id                = aws_cloudfront_distribution.this.hosted_zone_id
    evaluate_target_health = false
  }
}

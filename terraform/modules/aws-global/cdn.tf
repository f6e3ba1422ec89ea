# CloudFront caches what the registry marks cacheable and nothing else (docs/architecture.md,
# "Caching"): digest-addressed manifests and blobs come with
# `Cache-Control: public, max-age=31536000, immutable` and are kept up to a year; content of
# private repositories comes with `private` and is never stored; tag lookups (`no-cache`),
# redirects to presigned URLs (no Cache-Control), errors and everything else are not cached.

data "aws_cloudfront_cache_policy" "disabled" {
  name = "Managed-CachingDisabled"
}

# Every viewer header but Host (a function URL only answers to its own host name). With caching
# disabled this also forwards Authorization.
data "aws_cloudfront_origin_request_policy" "all_but_host" {
  name = "Managed-AllViewerExceptHostHeader"
}

data "aws_cloudfront_response_headers_policy" "security" {
  name = "Managed-SecurityHeadersPolicy"
}

# Digest-addressed paths: the origin's Cache-Control decides (min 0, default 0, max one year),
# so a 307 to a presigned URL, which has none, is never cached. Authorization is part of the key:
# CloudFront forwards it on cached paths only then, and one client's answer is never served for
# another's token. Manifests add Accept: the registry refuses a manifest whose media type the
# request's Accept excludes.
locals {
  digest_cache_keys = {
    blobs     = ["Authorization"]
    manifests = ["Authorization", "Accept"]
  }
}

resource "aws_cloudfront_cache_policy" "digest" {
  for_each    = local.digest_cache_keys
  name        = "${var.name}-digest-${each.key}"
  comment     = "Berth: ${each.key} by digest; the origin's Cache-Control decides; ${join(" and ", each.value)} in the key"
  min_ttl     = 0
  default_ttl = 0
  max_ttl     = 31536000

  parameters_in_cache_key_and_forwarded_to_origin {
    enable_accept_encoding_gzip   = false
    enable_accept_encoding_brotli = false
    cookies_config {
      cookie_behavior = "none"
    }
    headers_config {
      header_behavior = "whitelist"
      headers {
        items = each.value
      }
    }
    query_strings_config {
      query_string_behavior = "none"
    }
  }
}

resource "aws_cloudfront_distribution" "this" {
  #checkov:skip=CKV_AWS_68:WAF is optional (var.web_acl_id); the registry's token auth decides access.
  #checkov:skip=CKV2_AWS_47:WAF is optional (var.web_acl_id); the origin is Rust, not a Java stack exposed to Log4j.
  #checkov:skip=CKV_AWS_86:Standard logging needs an ACL-enabled log bucket; each function logs every request and the audit trail.
  #checkov:skip=CKV_AWS_174:With var.domain_name the viewer policy is TLSv1.2_2021; the default *.cloudfront.net certificate has a fixed policy.
  #checkov:skip=CKV2_AWS_42:A custom certificate comes with var.domain_name; without one the *.cloudfront.net certificate is used.
  #checkov:skip=CKV_AWS_305:An API, not a website: there is no root object to serve.
  #checkov:skip=CKV_AWS_374:A registry serves its users wherever they are; access is decided by its token auth, not by country.
  enabled         = true
  comment         = "Berth container registry"
  aliases         = var.domain_name == null ? [] : [var.domain_name]
  price_class     = var.price_class
  http_version    = "http2and3"
  is_ipv6_enabled = true
  web_acl_id      = var.web_acl_id
  tags            = local.tags

  dynamic "origin" {
    for_each = var.regions
    content {
      origin_id   = local.origin_id[origin.key]
      domain_name = origin.value.host
      custom_origin_config {
        http_port              = 80
        https_port             = 443
        origin_protocol_policy = "https-only"
        origin_ssl_protocols   = ["TLSv1.2"]
        origin_read_timeout    = var.origin_read_timeout
      }
    }
  }

  # Failover only works for GET, HEAD and OPTIONS (CloudFront's rule), so only the read-only
  # blob path uses the group; everything that writes goes to the home region.
  origin_group {
    origin_id = local.failover_group
    failover_criteria {
      status_codes = [500, 502, 503, 504]
    }
    member {
      origin_id = local.home_origin
    }
    member {
      origin_id = local.origin_id[var.failover]
    }
  }

  # Blob GET and HEAD by digest: cached per the origin, failing over between regions. (Blob
  # DELETE, optional in the OCI spec, goes to a regional URL: CloudFront answers 403 here.)
  ordered_cache_behavior {
    path_pattern               = "/v2/*/blobs/sha256:*"
    target_origin_id           = local.failover_group
    allowed_methods            = ["GET", "HEAD", "OPTIONS"]
    cached_methods             = ["GET", "HEAD"]
    viewer_protocol_policy     = "https-only"
    compress                   = false
    cache_policy_id            = aws_cloudfront_cache_policy.digest["blobs"].id
    origin_request_policy_id   = data.aws_cloudfront_origin_request_policy.all_but_host.id
    response_headers_policy_id = data.aws_cloudfront_response_headers_policy.security.id
  }

  # Manifests by digest: cached per the origin; PUT (index children are pushed by digest) and
  # DELETE reach the home region.
  ordered_cache_behavior {
    path_pattern               = "/v2/*/manifests/sha256:*"
    target_origin_id           = local.home_origin
    allowed_methods            = ["GET", "HEAD", "OPTIONS", "PUT", "PATCH", "POST", "DELETE"]
    cached_methods             = ["GET", "HEAD"]
    viewer_protocol_policy     = "https-only"
    compress                   = false
    cache_policy_id            = aws_cloudfront_cache_policy.digest["manifests"].id
    origin_request_policy_id   = data.aws_cloudfront_origin_request_policy.all_but_host.id
    response_headers_policy_id = data.aws_cloudfront_response_headers_policy.security.id
  }

  # Everything else (tag lookups, uploads, tags/list, catalog, referrers, the token endpoint):
  # never cached, every method, the home region.
  default_cache_behavior {
    target_origin_id           = local.home_origin
    allowed_methods            = ["GET", "HEAD", "OPTIONS", "PUT", "PATCH", "POST", "DELETE"]
    cached_methods             = ["GET", "HEAD"]
    viewer_protocol_policy     = "https-only"
    compress                   = false
    cache_policy_id            = data.aws_cloudfront_cache_policy.disabled.id
    origin_request_policy_id   = data.aws_cloudfront_origin_request_policy.all_but_host.id
    response_headers_policy_id = data.aws_cloudfront_response_headers_policy.security.id
  }

  # Never cache an error: a push probes blobs with HEAD before uploading them, and would
  # otherwise keep seeing a 404 for ten seconds after the upload.
  dynamic "custom_error_response" {
    for_each = toset([400, 403, 404, 405, 414, 416, 500, 501, 502, 503, 504])
    content {
      error_code            = custom_error_response.value
      error_caching_min_ttl = 0
    }
  }

  restrictions {
    geo_restriction {
      restriction_type = "none"
    }
  }

  viewer_certificate {
    cloudfront_default_certificate = var.domain_name == null
    acm_certificate_arn            = var.domain_name == null ? null : aws_acm_certificate_validation.this[0].certificate_arn
    ssl_support_method             = var.domain_name == null ? null : "sni-only"
    minimum_protocol_version       = var.domain_name == null ? "TLSv1" : "TLSv1.2_2021"
  }
}

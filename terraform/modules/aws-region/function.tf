# The function, its role and log group, and its public URL.

resource "aws_cloudwatch_log_group" "function" {
  name              = local.log_group_name
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.this.arn
  tags              = local.tags
}

# Lambda assumes the role itself (it passes no source account to condition on).
data "aws_iam_policy_document" "assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["lambda.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "function" {
  name               = "${var.name}-${local.region}"
  description        = "Berth's function in ${local.region}"
  assume_role_policy = data.aws_iam_policy_document.assume.json
  tags               = local.tags
}

# What lambda/README.md lists, on this stack's bucket prefixes, key and secrets only.
data "aws_iam_policy_document" "function" {
  statement {
    sid       = "Logs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.function.arn}:*"]
  }

  # Presigned URLs act with these rights too: a client's GET of blob content, a direct
  # upload's PUT of a part.
  statement {
    sid = "BlobObjects"
    actions = [
      "s3:GetObject", "s3:PutObject", "s3:DeleteObject",
      "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts",
    ]
    resources = [
      "${aws_s3_bucket.this.arn}/blobs/*",
      "${aws_s3_bucket.this.arn}/data/*",
      "${aws_s3_bucket.this.arn}/uploads/*",
    ]
  }

  # Unconditional: without s3:ListBucket, S3 answers 403 rather than 404 for a missing key,
  # and a missing blob or tag is an everyday answer.
  statement {
    sid       = "ListBuckets"
    actions   = ["s3:ListBucket"]
    resources = distinct([aws_s3_bucket.this.arn, local.home.bucket_arn])
  }

  statement {
    sid       = "MetadataObjects"
    actions   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"]
    resources = ["${local.home.bucket_arn}/meta/*"]
  }

  # Outside the home region: content not replicated here yet is read (and presigned) from home.
  dynamic "statement" {
    for_each = local.is_home ? [] : [local.home.bucket_arn]
    content {
      sid       = "HomeContent"
      actions   = ["s3:GetObject"]
      resources = ["${statement.value}/blobs/*", "${statement.value}/data/*"]
    }
  }

  # SSE-KMS objects (this bucket, and the home bucket's) and the upload key's secret.
  statement {
    sid       = "Keys"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = distinct([aws_kms_key.this.arn, local.home.kms_key_arn])
  }

  # The webhook wake-up queue (webhooks.tf): sent to after requests, read by the event source
  # mapping with the function's role.
  dynamic "statement" {
    for_each = aws_sqs_queue.webhooks[*].arn
    content {
      sid       = "WebhookQueue"
      actions   = ["sqs:SendMessage", "sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"]
      resources = [statement.value]
    }
  }

  statement {
    sid     = "Secrets"
    actions = ["secretsmanager:GetSecretValue"]
    resources = concat(
      [aws_secretsmanager_secret.upload_key.arn],
      # A replica's ARN is only known in its own region: its name plus Secrets Manager's
      # six-character suffix.
      local.auth_config_secret_name == null ? [] : [
        "arn:${local.partition}:secretsmanager:${local.region}:${local.account}:secret:${local.auth_config_secret_name}-??????"
      ],
    )
  }
}

resource "aws_iam_role_policy" "function" {
  name   = "berth-registry"
  role   = aws_iam_role.function.id
  policy = data.aws_iam_policy_document.function.json
}

resource "aws_lambda_function" "this" {
  #checkov:skip=CKV_AWS_50:X-Ray needs xray:PutTraceSegments on "*", outside this stack's ARNs; the function logs each request.
  #checkov:skip=CKV_AWS_115:Reserved concurrency is var.reserved_concurrency; reserving by default would take from small accounts' pools.
  #checkov:skip=CKV_AWS_116:Invocations are synchronous (function URL); a dead-letter queue only receives asynchronous events.
  #checkov:skip=CKV_AWS_117:The function only calls S3 and Secrets Manager over TLS; a VPC would add NAT or endpoints and protect nothing here.
  #checkov:skip=CKV_AWS_272:The zip is built from source by the operator (lambda/README.md); AWS Signer profiles are outside this module.
  function_name                  = var.name
  description                    = "Berth container registry (OCI Distribution API)"
  role                           = aws_iam_role.function.arn
  filename                       = var.lambda_zip
  source_code_hash               = filebase64sha256(var.lambda_zip)
  handler                        = "bootstrap"
  runtime                        = "provided.al2023"
  architectures                  = ["x86_64"]
  memory_size                    = var.memory_size
  timeout                        = var.timeout
  reserved_concurrent_executions = var.reserved_concurrency
  kms_key_arn                    = aws_kms_key.this.arn

  environment {
    variables = merge(
      {
        BERTH_BUCKET                = aws_s3_bucket.this.id
        BERTH_META_BUCKET           = local.home.bucket_name
        BERTH_META_REGION           = local.home.region
        BERTH_HOME_BUCKET           = local.home.bucket_name
        BERTH_HOME_REGION           = local.home.region
        BERTH_UPLOAD_SECRET_ID      = aws_secretsmanager_secret.upload_key.name
        BERTH_REDIRECT_EXPIRY_SECS  = tostring(var.redirect_expiry_seconds)
        BERTH_PART_URL_EXPIRY_SECS  = tostring(var.part_url_expiry_seconds)
        BERTH_UPSTREAM_TIMEOUT_SECS = tostring(var.upstream_timeout_seconds)
        BERTH_GC_GRACE              = var.gc_grace
        BERTH_GC_SETTLE             = var.gc_settle
        BERTH_GC_UPLOAD_IDLE        = var.gc_upload_idle
        BERTH_GC_DRY_RUN            = "false"
        RUST_LOG                    = var.log_level
      },
      local.auth_config_secret_name == null ? {} : { BERTH_AUTH_CONFIG_SECRET = local.auth_config_secret_name },
      var.policy_config == null ? {} : { BERTH_POLICY_CONFIG = var.policy_config },
      var.metrics_namespace == null ? {} : {
        BERTH_METRICS                  = "emf"
        BERTH_METRICS_NAMESPACE        = var.metrics_namespace
        BERTH_METRICS_MAX_REPOSITORIES = tostring(var.metrics_max_repositories)
      },
      var.public_url == null ? {} : { BERTH_PUBLIC_URL = var.public_url },
      var.webhook_queue ? { BERTH_WEBHOOK_QUEUE_URL = aws_sqs_queue.webhooks[0].url } : {},
      var.replication_schedule == null ? {} : { BERTH_REPLICATION_SCHEDULE = var.replication_schedule },
    )
  }

  logging_config {
    log_format = "Text"
    log_group  = aws_cloudwatch_log_group.function.name
  }

  tags = local.tags

  # The role must be able to read the secrets and write logs before the first init.
  depends_on = [aws_iam_role_policy.function, aws_secretsmanager_secret_version.upload_key]
}

# Public: the registry authenticates every request itself (token auth, docs/auth.md). CloudFront
# cannot sign requests to it with IAM (origin access control) without replacing the clients'
# Authorization header, which carries their registry tokens.
resource "aws_lambda_function_url" "this" {
  #checkov:skip=CKV_AWS_258:The registry's own token auth (docs/auth.md) authenticates requests; IAM auth would replace clients' Bearer tokens.
  function_name      = aws_lambda_function.this.function_name
  authorization_type = "NONE"
  invoke_mode        = "BUFFERED"
}

# A public function URL needs both statements: one for the URL, one for the invocation it makes.
resource "aws_lambda_permission" "url" {
  #checkov:skip=CKV_AWS_301:The function URL is public by design; the registry's token auth decides access.
  statement_id           = "FunctionURLAllowPublicAccess"
  action                 = "lambda:InvokeFunctionUrl"
  function_name          = aws_lambda_function.this.function_name
  principal              = "*"
  function_url_auth_type = "NONE"
}

resource "aws_lambda_permission" "url_invoke" {
  #checkov:skip=CKV_AWS_301:Only invocations through the function URL, which is public by design.
  statement_id             = "FunctionURLInvokeAllowPublicAccess"
  action                   = "lambda:InvokeFunction"
  function_name            = aws_lambda_function.this.function_name
  principal                = "*"
  invoked_via_function_url = true
}

# Garbage collection (docs/gc.md): EventBridge invokes the function with a "Scheduled Event",
# which it runs the core's collection for, until shortly before the invocation's deadline; the
# next invocation continues from the checkpoint in the metadata bucket. The home region only:
# one metadata store, one run.
locals {
  gc = var.gc_schedule != null && local.is_home ? 1 : 0
}

resource "aws_cloudwatch_event_rule" "gc" {
  count               = local.gc
  name                = "${var.name}-gc"
  description         = "Berth garbage collection (docs/gc.md)"
  schedule_expression = var.gc_schedule
  tags                = local.tags
}

resource "aws_cloudwatch_event_target" "gc" {
  count = local.gc
  rule  = aws_cloudwatch_event_rule.gc[0].name
  arn   = aws_lambda_function.this.arn
}

resource "aws_lambda_permission" "gc" {
  count         = local.gc
  statement_id  = "AllowGarbageCollectionSchedule"
  action        = "lambda:InvokeFunction"
  function_name = aws_lambda_function.this.function_name
  principal     = "events.amazonaws.com"
  source_arn    = aws_cloudwatch_event_rule.gc[0].arn
}

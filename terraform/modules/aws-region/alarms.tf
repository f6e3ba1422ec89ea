# CloudWatch alarms for the thresholds of observability/alerts.yml (docs/observability.md): the
# share of 5xx answers, slow pulls, storage near its capacity, and the function failing or
# throttled. They notify var.alarm_actions (SNS topic ARNs); with none they still show in the
# console. The 5xx share reads the function URL's own metrics (no EMF needed); slow pulls read
# the function's embedded-metric-format records, so they exist only with metrics_namespace set.

locals {
  alarm_prefix = "${var.name}-${local.region}"
  emf_metrics  = var.metrics_namespace != null
}

resource "aws_cloudwatch_metric_alarm" "server_errors" {
  alarm_name          = "${local.alarm_prefix}-5xx-share"
  alarm_description   = "More than 5 % of the registry's answers were 5xx over 5 minutes (observability/alerts.yml BerthServerErrors)."
  comparison_operator = "GreaterThanThreshold"
  threshold           = 5
  evaluation_periods  = 1
  treat_missing_data  = "notBreaching"
  alarm_actions       = var.alarm_actions
  ok_actions          = var.alarm_actions

  metric_query {
    id          = "share"
    expression  = "100 * errors / IF(requests > 0, requests, 1)"
    label       = "5xx share (%)"
    return_data = true
  }
  dynamic "metric_query" {
    for_each = { errors = "Url5xxCount", requests = "UrlRequestCount" }
    content {
      id = metric_query.key
      metric {
        namespace   = "AWS/Lambda"
        metric_name = metric_query.value
        dimensions  = { FunctionName = aws_lambda_function.this.function_name }
        period      = 300
        stat        = "Sum"
      }
    }
  }
  tags = local.tags
}

resource "aws_cloudwatch_metric_alarm" "slow_pulls" {
  count               = local.emf_metrics ? 1 : 0
  alarm_name          = "${local.alarm_prefix}-slow-pulls"
  alarm_description   = "The average manifest or blob GET took more than 3 s over 5 minutes (observability/alerts.yml BerthSlowPulls)."
  comparison_operator = "GreaterThanThreshold"
  threshold           = 3
  evaluation_periods  = 1
  treat_missing_data  = "notBreaching"
  alarm_actions       = var.alarm_actions
  ok_actions          = var.alarm_actions

  metric_query {
    id          = "average"
    expression  = "(manifest_sum + blob_sum) / IF(manifest_count + blob_count > 0, manifest_count + blob_count, 1)"
    label       = "average pull time (s)"
    return_data = true
  }
  dynamic "metric_query" {
    for_each = {
      manifest_sum   = ["manifest_get", "Sum"]
      manifest_count = ["manifest_get", "SampleCount"]
      blob_sum       = ["blob_get", "Sum"]
      blob_count     = ["blob_get", "SampleCount"]
    }
    content {
      id = metric_query.key
      metric {
        namespace   = var.metrics_namespace
        metric_name = "Latency"
        dimensions  = { Route = metric_query.value[0] }
        period      = 300
        stat        = metric_query.value[1]
      }
    }
  }
  tags = local.tags
}

resource "aws_cloudwatch_metric_alarm" "storage_nearly_full" {
  count               = var.storage_capacity_bytes == null ? 0 : 1
  alarm_name          = "${local.alarm_prefix}-storage-85pct"
  alarm_description   = "The bucket holds more than 85 % of storage_capacity_bytes (observability/alerts.yml BerthStorageNearlyFull). S3 reports its size once a day."
  namespace           = "AWS/S3"
  metric_name         = "BucketSizeBytes"
  dimensions          = { BucketName = aws_s3_bucket.this.id, StorageType = "StandardStorage" }
  statistic           = "Average"
  period              = 86400
  evaluation_periods  = 1
  comparison_operator = "GreaterThanThreshold"
  threshold           = floor(var.storage_capacity_bytes * 0.85)
  treat_missing_data  = "notBreaching"
  alarm_actions       = var.alarm_actions
  ok_actions          = var.alarm_actions
  tags                = local.tags
}

resource "aws_cloudwatch_metric_alarm" "function_failing" {
  for_each            = { errors = "Errors", throttles = "Throttles" }
  alarm_name          = "${local.alarm_prefix}-function-${each.key}"
  alarm_description   = "The function's invocations ended in ${each.value} (crashes, timeouts or the concurrency limit) over 5 minutes."
  namespace           = "AWS/Lambda"
  metric_name         = each.value
  dimensions          = { FunctionName = aws_lambda_function.this.function_name }
  statistic           = "Sum"
  period              = 300
  evaluation_periods  = 1
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  treat_missing_data  = "notBreaching"
  alarm_actions       = var.alarm_actions
  ok_actions          = var.alarm_actions
  tags                = local.tags
}

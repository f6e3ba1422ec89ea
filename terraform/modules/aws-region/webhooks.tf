# Webhook wake-up (docs/webhooks.md): after a request that wrote outbox entries, the function
# sends one small message to this queue (BERTH_WEBHOOK_QUEUE_URL); the event source mapping
# invokes the function with it, and it runs the core's delivery step. The message is only a
# wake-up: the outbox in the metadata bucket is the record, so a lost message delays delivery to
# the next scheduled invocation and never loses an event. Every region has its own queue, which
# wakes its own function (they share the home region's outbox).
locals {
  webhook_queue = var.webhook_queue ? 1 : 0
}

# Where a message goes after failed invocations (the function answers every batch as done, so
# only invocations that never ran, e.g. a failed init, land here).
resource "aws_sqs_queue" "webhooks_dead" {
  count                             = local.webhook_queue
  name                              = "${var.name}-webhooks-dead"
  kms_master_key_id                 = aws_kms_key.this.arn
  kms_data_key_reuse_period_seconds = 300
  message_retention_seconds         = 86400
  tags                              = local.tags
}

resource "aws_sqs_queue" "webhooks" {
  count                             = local.webhook_queue
  name                              = "${var.name}-webhooks"
  kms_master_key_id                 = aws_kms_key.this.arn
  kms_data_key_reuse_period_seconds = 300
  # Lambda requires at least the function's timeout; AWS advises six times it.
  visibility_timeout_seconds = var.timeout * 6
  # A wake-up older than an hour is stale: the schedule has delivered by then.
  message_retention_seconds = 3600
  redrive_policy = jsonencode({
    deadLetterTargetArn = aws_sqs_queue.webhooks_dead[0].arn
    maxReceiveCount     = 5
  })
  tags = local.tags
}

resource "aws_lambda_event_source_mapping" "webhooks" {
  count            = local.webhook_queue
  event_source_arn = aws_sqs_queue.webhooks[0].arn
  function_name    = aws_lambda_function.this.arn
  # One invocation delivers everything due, so a batch of wake-ups is one delivery run.
  batch_size                         = 10
  maximum_batching_window_in_seconds = 1
  function_response_types            = ["ReportBatchItemFailures"]
  # Deliveries are few and each run drains the outbox: two at once is plenty and leaves the
  # account's concurrency to the registry's requests.
  scaling_config {
    maximum_concurrency = 2
  }
  tags = local.tags

  # The role must be able to read the queue before the mapping is created (Lambda checks).
  depends_on = [aws_iam_role_policy.function]
}

//! The webhook wake-up on SQS (docs/webhooks.md), as the Worker's Cloudflare Queue: after a
//! request whose answer says it wrote outbox entries ([`berth_core::webhooks::Enqueued`]), one
//! small message goes to the queue named by `BERTH_WEBHOOK_QUEUE_URL`; the queue's event source
//! mapping invokes this function with it, and [`is_sqs`] events run the core's delivery step
//! and replication's (a push that replication rules cover writes outbox entries too).
//! The message is only a wake-up, the outbox is the record: a message that is lost (or no queue)
//! delays the delivery to the next scheduled invocation, it never loses the event.

use std::time::Duration;

use serde_json::Value;

/// The send must finish before the invocation returns (Lambda freezes the process after the
/// response, so a spawned send could stall until the next event): one call, bounded by this.
const SEND_TIMEOUT: Duration = Duration::from_secs(2);

pub struct Wake {
    client: aws_sdk_sqs::Client,
    queue_url: String,
}

impl Wake {
    /// `None` without a queue: deliveries then wait for the schedule.
    pub fn new(sdk: &aws_config::SdkConfig, queue_url: Option<&str>, endpoint: Option<&str>) -> Option<Self> {
        let queue_url = queue_url?.to_owned();
        let mut builder = aws_sdk_sqs::config::Builder::from(sdk);
        if let Some(endpoint) = endpoint {
            builder = builder.endpoint_url(endpoint);
        }
        Some(Wake { client: aws_sdk_sqs::Client::from_conf(builder.build()), queue_url })
    }

    /// Sends the wake-up for a request that wrote `n` outbox entries ([`entries`]). Never fails
    /// the response: an error or a timeout is logged and the schedule delivers instead.
    pub async fn send(&self, n: usize) {
        let send = self.client.send_message().queue_url(&self.queue_url).message_body(message(n)).send();
        match tokio::time::timeout(SEND_TIMEOUT, send).await {
            Ok(Ok(_)) => tracing::debug!(entries = n, "webhook wake-up sent"),
            Ok(Err(e)) => tracing::warn!(
                error = %aws_sdk_sqs::error::DisplayErrorContext(e),
                "webhook wake-up not sent (the schedule will deliver)"
            ),
            Err(_) => tracing::warn!(timeout_ms = SEND_TIMEOUT.as_millis() as u64, "webhook wake-up timed out (the schedule will deliver)"),
        }
    }
}

/// How many outbox entries the request that got `response` wrote, when it wrote any.
pub fn entries(response: &berth_core::Response) -> Option<usize> {
    response.extensions().get::<berth_core::webhooks::Enqueued>().map(|e| e.0)
}

/// The message body: how many outbox entries the request wrote (informative only; the consumer
/// delivers whatever is due).
fn message(entries: usize) -> String {
    serde_json::json!({ "webhooks": entries }).to_string()
}

/// Whether the event is a batch from an SQS event source mapping (an HTTP or scheduled event
/// never has `Records`).
pub fn is_sqs(event: &Value) -> bool {
    event
        .get("Records")
        .and_then(Value::as_array)
        .and_then(|records| records.first())
        .and_then(|record| record.get("eventSource"))
        .and_then(Value::as_str)
        == Some("aws:sqs")
}

/// The answer to an SQS batch: no item failed, so the mapping deletes every message (what
/// was not delivered stays due in the outbox, not in the queue).
pub fn batch_done() -> Value {
    serde_json::json!({ "batchItemFailures": [] })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_an_sqs_batch_from_other_events() {
        let sqs = serde_json::json!({ "Records": [{
            "messageId": "m", "receiptHandle": "r", "body": "{\"webhooks\":1}", "attributes": {},
            "messageAttributes": {}, "md5OfBody": "x", "eventSource": "aws:sqs",
            "eventSourceARN": "arn:aws:sqs:eu-west-1:1:berth-webhooks", "awsRegion": "eu-west-1"
        }]});
        assert!(is_sqs(&sqs));
        assert!(!is_sqs(&serde_json::json!({ "Records": [{ "eventSource": "aws:s3" }] })));
        assert!(!is_sqs(&serde_json::json!({ "Records": [] })));
        assert!(!is_sqs(&serde_json::json!({ "rawPath": "/v2/", "requestContext": {} })));
        assert!(!is_sqs(&serde_json::json!({ "detail-type": "Scheduled Event", "source": "aws.events" })));
    }

    #[test]
    fn the_message_is_small() {
        assert_eq!(message(2), r#"{"webhooks":2}"#);
    }
}

//! Dead-lettering: an event that failed too often is published to the
//! subscription's dead-letter topic, with where it came from and why in its
//! attributes, and settled once that publish is stored.

use bytes::{Bytes, BytesMut};
use herald::v1::Event;
use prost::Message;
use tokio::time::Instant;

use super::dispatch::EventRef;
use super::task::{Running, SubscriptionTask};
use crate::broker::EncodedEvent;
use crate::broker::error::BrokerError;
use crate::broker::telemetry;

impl SubscriptionTask {
    /// Publishes `event` to the dead-letter topic off the task; the outcome
    /// comes back on `run.dlq_rx`.
    pub(super) fn dead_letter(
        &mut self,
        run: &mut Running,
        event: EventRef,
        attempts: u32,
        reason: String,
    ) -> Result<(), BrokerError> {
        let Some(record) = self.record(run, event)? else {
            self.dispatcher.dead_lettered(event, true, Instant::now());
            return Ok(());
        };
        let dead = with_attributes(
            &record.payload,
            [
                ("herald_dlq_source_topic", self.info.topic.clone()),
                ("herald_dlq_source_partition", event.0.to_string()),
                ("herald_dlq_source_offset", event.1.to_string()),
                ("herald_dlq_subscription", self.info.name.clone()),
                ("herald_dlq_attempts", attempts.to_string()),
                ("herald_dlq_reason", reason.clone()),
            ],
        );
        let topic = self.info.settings.dead_letter_topic.clone();
        let broker = self.broker.clone();
        let done = run.dlq_tx.clone();
        let (source, subscription) = (self.info.topic.clone(), self.info.name.clone());
        run.log.forget(event);
        let span = telemetry::dead_letter_span(&self.info, &dead, attempts, &reason);
        let (message_id, event_type) = (dead.id().to_owned(), dead.event_type().to_owned());
        let publish = async move {
            let stored = match broker.submit(&topic, vec![dead]).await {
                Ok(pending) => pending.wait().await,
                Err(error) => Err(error),
            };
            let published = match stored {
                Ok(_) => {
                    tracing::warn!(
                        message_id = %message_id,
                        topic = %source,
                        subscription = %subscription,
                        event_type = %event_type,
                        status = "dead_lettered",
                        attempt = attempts,
                        partition = event.0,
                        offset = event.1,
                        %reason,
                        dead_letter_topic = %topic,
                        "event dead-lettered"
                    );
                    true
                }
                Err(error) => {
                    tracing::error!(topic = %source, subscription = %subscription, %error, "dead-letter publish failed; will retry");
                    false
                }
            };
            let _ = done.send((event, published));
        };
        self.tasks
            .spawn(tracing::Instrument::instrument(publish, span));
        Ok(())
    }
}

/// The stored event with `attributes` added (replacing any of the same
/// name): the entries are appended as more `attributes` map fields, which
/// Protobuf merges into the map, so the stored bytes are not decoded.
fn with_attributes<const N: usize>(
    stored: &Bytes,
    attributes: [(&str, String); N],
) -> EncodedEvent {
    let extra = Event {
        attributes: attributes
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
        ..Default::default()
    };
    let mut bytes = BytesMut::with_capacity(stored.len() + extra.encoded_len());
    bytes.extend_from_slice(stored);
    extra
        .encode(&mut bytes)
        .expect("the buffer has room for the extra attributes");
    EncodedEvent::parse(bytes.freeze())
        .or_else(|_| EncodedEvent::parse(Bytes::from(extra.encode_to_vec())))
        .expect("prost encodes well-formed events")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn added_attributes_merge_into_the_stored_event() {
        let original = Event {
            id: "e1".into(),
            r#type: "OrderPlaced".into(),
            data: Bytes::from_static(b"payload"),
            attributes: [
                ("keep".to_owned(), "1".to_owned()),
                ("herald_dlq_reason".to_owned(), "old".to_owned()),
            ]
            .into(),
            ..Default::default()
        };
        let stored = Bytes::from(original.encode_to_vec());
        let dead = with_attributes(
            &stored,
            [
                ("herald_dlq_reason", "too many attempts".to_owned()),
                ("herald_dlq_attempts", "3".to_owned()),
            ],
        );
        let decoded = dead.decode();
        assert_eq!(decoded.id, "e1");
        assert_eq!(decoded.data, original.data);
        assert_eq!(decoded.attributes["keep"], "1");
        assert_eq!(decoded.attributes["herald_dlq_reason"], "too many attempts");
        assert_eq!(decoded.attributes["herald_dlq_attempts"], "3");
        assert_eq!(decoded.attributes.len(), 3);
    }

    #[test]
    fn an_unparseable_stored_event_still_carries_the_attributes() {
        let dead = with_attributes(&Bytes::from_static(&[0xff]), [("a", "b".to_owned())]);
        let decoded = dead.decode();
        assert_eq!(decoded.attributes["a"], "b");
        assert!(decoded.id.is_empty());
    }
}

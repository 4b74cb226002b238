//! Reading a topic from a position with no subscription and no acks (event
//! sourcing, audit replay), optionally following new events as they are
//! stored.

use std::sync::Arc;

use futures::future::select_all;
use tokio::sync::watch;

use super::{Broker, BrokerError, Position, Result, StoredEvent};
use crate::storage::PartitionLog;

/// Most records one storage read returns: small enough that a synchronous
/// read does not hold up the runtime, large enough to amortize the call.
const CHUNK_RECORDS: usize = 500;
/// Most payload bytes one storage read returns (one record always comes).
const CHUNK_BYTES: usize = 1024 * 1024;

/// What to read and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadOptions {
    /// Where to start in each partition.
    pub position: Position,
    /// Partitions to read; empty reads them all.
    pub partitions: Vec<u32>,
    /// When caught up, wait for new events instead of ending.
    pub follow: bool,
    /// Stop after this many events; 0 means no limit.
    pub max_events: u64,
}

/// A read in progress; see [`Broker::read`].
pub struct Reader {
    /// The topic, for errors.
    topic: String,
    /// One per partition read, in partition order.
    cursors: Vec<Cursor>,
    /// Index into `cursors` of the partition to read next, so every
    /// partition gets its turn and none starves the others.
    turn: usize,
    /// Whether to wait for new events once caught up.
    follow: bool,
    /// Events still allowed under `max_events`; `None` is unlimited.
    remaining: Option<u64>,
    /// Set after the last batch or an error: the reader yields nothing more.
    done: bool,
}

/// Where the reader is in one partition.
struct Cursor {
    /// Partition number.
    partition: u32,
    /// The partition's log.
    log: Arc<dyn PartitionLog>,
    /// Offset of the next record to read.
    next: u64,
    /// The log's durable end; wakes a caught-up follower (and fires on
    /// close, so a deleted topic ends the read instead of hanging it).
    end: watch::Receiver<u64>,
}

impl Broker {
    /// Starts reading `topic`. Positions are resolved now, so `Latest` means
    /// events stored after this call.
    pub fn read(&self, topic: &str, options: ReadOptions) -> Result<Reader> {
        let logs = self.partition_logs(topic)?;
        let partitions: Vec<u32> = if options.partitions.is_empty() {
            (0..logs.len() as u32).collect()
        } else {
            let mut partitions = options.partitions;
            partitions.sort_unstable();
            partitions.dedup();
            if let Some(&partition) = partitions.iter().find(|&&p| p as usize >= logs.len()) {
                return Err(BrokerError::PartitionOutOfRange {
                    topic: topic.to_owned(),
                    partition,
                    partitions: logs.len() as u32,
                });
            }
            partitions
        };
        let mut cursors = Vec::with_capacity(partitions.len());
        for partition in partitions {
            let log = logs[partition as usize].clone();
            // Subscribe before resolving: an event stored in between is then
            // either read or announced, never missed.
            let end = log.watch_end();
            let next = options
                .position
                .resolve(log.as_ref(), partition)
                .map_err(|source| BrokerError::from_partition(topic, partition, source))?;
            cursors.push(Cursor {
                partition,
                log,
                next,
                end,
            });
        }
        Ok(Reader {
            topic: topic.to_owned(),
            cursors,
            turn: 0,
            follow: options.follow,
            remaining: (options.max_events > 0).then_some(options.max_events),
            done: false,
        })
    }
}

impl Reader {
    /// The next batch of one partition's records, in offset order; `None`
    /// once the read is complete (caught up without `follow`, or
    /// `max_events` reached). After an error it yields `None`.
    ///
    /// Cancel-safe: the only await is the wait for new events, and a cursor
    /// moves only after its records are in hand.
    pub async fn next_batch(&mut self) -> Option<Result<(u32, Vec<StoredEvent>)>> {
        loop {
            if self.done || self.remaining == Some(0) || self.cursors.is_empty() {
                return None;
            }
            match self.read_round() {
                Ok(Some(batch)) => return Some(Ok(batch)),
                Ok(None) if !self.follow => {
                    self.done = true;
                    return None;
                }
                Ok(None) => {
                    if let Err(error) = self.wait_for_new_events().await {
                        self.done = true;
                        return Some(Err(error));
                    }
                }
                Err(error) => {
                    self.done = true;
                    return Some(Err(error));
                }
            }
        }
    }

    /// Tries each partition once, starting at `turn`; the first with records
    /// answers. `None` when every partition is caught up.
    fn read_round(&mut self) -> Result<Option<(u32, Vec<StoredEvent>)>> {
        let max_records = self
            .remaining
            .map_or(CHUNK_RECORDS, |r| r.min(CHUNK_RECORDS as u64) as usize);
        let count = self.cursors.len();
        for step in 0..count {
            let index = (self.turn + step) % count;
            let cursor = &mut self.cursors[index];
            // Mark the end seen before reading: anything stored after this
            // read then shows as a change, so the wait cannot miss it.
            cursor.end.borrow_and_update();
            let records = cursor
                .log
                .read(cursor.next, max_records, CHUNK_BYTES)
                .map_err(|source| {
                    BrokerError::from_partition(&self.topic, cursor.partition, source)
                })?;
            let Some(last) = records.last() else {
                continue;
            };
            cursor.next = last.offset + 1;
            if let Some(remaining) = &mut self.remaining {
                *remaining -= records.len() as u64;
            }
            self.turn = (index + 1) % count;
            let events = records.into_iter().map(StoredEvent::from).collect();
            return Ok(Some((cursor.partition, events)));
        }
        Ok(None)
    }

    /// Waits until any partition's durable end moves (or its log closes).
    async fn wait_for_new_events(&mut self) -> Result<()> {
        let changes = self
            .cursors
            .iter_mut()
            .map(|cursor| Box::pin(cursor.end.changed()));
        let (changed, _, _) = select_all(changes).await;
        // The sender lives in the log we hold, so this only fails if the log
        // went away underneath us: the topic is gone.
        changed.map_err(|_| BrokerError::TopicDeleted {
            topic: self.topic.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use herald::v1::Event;
    use prost::Message;

    use super::*;
    use crate::broker::TopicSettingsPatch;

    const WAIT: Duration = Duration::from_secs(5);

    fn broker() -> Broker {
        crate::broker::in_memory_broker()
    }

    fn topic(broker: &Broker, name: &str, partitions: u32) {
        let patch = TopicSettingsPatch {
            partitions: Some(partitions),
            ..Default::default()
        };
        broker.create_topic(name, &patch).unwrap();
    }

    fn event(id: &str, key: &str) -> Event {
        Event {
            id: id.to_owned(),
            key: key.to_owned(),
            source: "/tests".into(),
            r#type: "test".into(),
            ..Default::default()
        }
    }

    async fn publish(broker: &Broker, topic: &str, ids: &[&str]) {
        let events = ids.iter().map(|id| event(id, "")).collect();
        broker.publish(topic, events).await.unwrap();
    }

    fn options(position: Position) -> ReadOptions {
        ReadOptions {
            position,
            partitions: Vec::new(),
            follow: false,
            max_events: 0,
        }
    }

    /// Every (partition, offset, id) the reader yields until it ends.
    async fn drain(reader: &mut Reader) -> Vec<(u32, u64, String)> {
        let mut out = Vec::new();
        while let Some(batch) = tokio::time::timeout(WAIT, reader.next_batch())
            .await
            .expect("a non-following reader ends by itself")
        {
            let (partition, records) = batch.unwrap();
            for record in records {
                let event = Event::decode(record.bytes).unwrap();
                out.push((partition, record.offset, event.id));
            }
        }
        out
    }

    #[tokio::test]
    async fn reads_from_earliest_in_order_then_ends() {
        let broker = broker();
        topic(&broker, "t", 1);
        publish(&broker, "t", &["a", "b"]).await;
        publish(&broker, "t", &["c"]).await;
        let mut reader = broker.read("t", options(Position::Earliest)).unwrap();
        let read = drain(&mut reader).await;
        let expected: Vec<(u32, u64, String)> = ["a", "b", "c"]
            .iter()
            .enumerate()
            .map(|(i, id)| (0, i as u64, id.to_string()))
            .collect();
        assert_eq!(read, expected);
        assert!(reader.next_batch().await.is_none());
    }

    #[tokio::test]
    async fn long_partitions_are_read_in_chunks_round_robin() {
        let broker = broker();
        topic(&broker, "t", 2);
        let keyed = |partition: u32| {
            // Find a key landing on `partition`.
            let key = (0..)
                .map(|i| format!("k{i}"))
                .find(|k| crate::broker::partition_for_key(k, 2) == partition)
                .unwrap();
            (0..CHUNK_RECORDS + 10)
                .map(|i| event(&format!("{partition}-{i}"), &key))
                .collect::<Vec<_>>()
        };
        broker.publish("t", keyed(0)).await.unwrap();
        broker.publish("t", keyed(1)).await.unwrap();
        let mut reader = broker.read("t", options(Position::Earliest)).unwrap();
        let mut order = Vec::new();
        while let Some(batch) = reader.next_batch().await {
            let (partition, records) = batch.unwrap();
            assert!(records.len() <= CHUNK_RECORDS);
            order.push((partition, records.len()));
        }
        assert_eq!(
            order,
            vec![(0, CHUNK_RECORDS), (1, CHUNK_RECORDS), (0, 10), (1, 10)]
        );
    }

    #[tokio::test]
    async fn max_events_stops_the_read_mid_partition() {
        let broker = broker();
        topic(&broker, "t", 1);
        publish(&broker, "t", &["a", "b", "c", "d"]).await;
        let mut reader = broker
            .read(
                "t",
                ReadOptions {
                    max_events: 3,
                    follow: true,
                    ..options(Position::Earliest)
                },
            )
            .unwrap();
        let ids: Vec<String> = drain(&mut reader).await.into_iter().map(|r| r.2).collect();
        assert_eq!(ids, ["a", "b", "c"]);
    }

    #[tokio::test]
    async fn positions_and_partition_filter_choose_what_is_read() {
        let broker = broker();
        topic(&broker, "t", 1);
        publish(&broker, "t", &["a", "b", "c"]).await;
        let offsets = Position::Offsets([(0, 2)].into());
        let mut reader = broker.read("t", options(offsets)).unwrap();
        assert_eq!(drain(&mut reader).await, vec![(0, 2, "c".to_owned())]);
        let mut reader = broker.read("t", options(Position::Latest)).unwrap();
        assert!(drain(&mut reader).await.is_empty());

        topic(&broker, "three", 3);
        for partition in 0..3 {
            let key = (0..)
                .map(|i| format!("k{i}"))
                .find(|k| crate::broker::partition_for_key(k, 3) == partition)
                .unwrap();
            let id = format!("p{partition}");
            broker
                .publish("three", vec![event(&id, &key)])
                .await
                .unwrap();
        }
        let mut reader = broker
            .read(
                "three",
                ReadOptions {
                    partitions: vec![2, 0],
                    ..options(Position::Earliest)
                },
            )
            .unwrap();
        let mut read = drain(&mut reader).await;
        read.sort();
        assert_eq!(read, vec![(0, 0, "p0".into()), (2, 0, "p2".into())]);
    }

    #[tokio::test]
    async fn unknown_topics_and_partitions_are_refused() {
        let broker = broker();
        assert!(matches!(
            broker.read("missing", options(Position::Earliest)),
            Err(BrokerError::TopicNotFound { .. })
        ));
        topic(&broker, "t", 2);
        let error = broker
            .read(
                "t",
                ReadOptions {
                    partitions: vec![0, 2],
                    ..options(Position::Earliest)
                },
            )
            .err()
            .unwrap();
        assert!(
            matches!(
                error,
                BrokerError::PartitionOutOfRange {
                    partition: 2,
                    partitions: 2,
                    ..
                }
            ),
            "{error:?}"
        );
        assert!(error.to_string().contains("0-1"), "{error}");
    }

    #[tokio::test]
    async fn following_reader_yields_events_published_after_it_caught_up() {
        let broker = broker();
        topic(&broker, "t", 2);
        publish(&broker, "t", &["old"]).await;
        let mut reader = broker
            .read(
                "t",
                ReadOptions {
                    follow: true,
                    ..options(Position::Earliest)
                },
            )
            .unwrap();
        let (_, records) = reader.next_batch().await.unwrap().unwrap();
        assert_eq!(records.len(), 1);
        // Caught up: nothing comes until something is published.
        assert!(
            tokio::time::timeout(Duration::from_millis(50), reader.next_batch())
                .await
                .is_err()
        );
        let publisher = broker.clone();
        tokio::spawn(async move { publish(&publisher, "t", &["new"]).await });
        let (_, records) = tokio::time::timeout(WAIT, reader.next_batch())
            .await
            .expect("the follower wakes on publish")
            .unwrap()
            .unwrap();
        assert_eq!(Event::decode(records[0].bytes.clone()).unwrap().id, "new");
    }

    #[tokio::test]
    async fn deleting_the_topic_ends_a_following_read_with_an_error() {
        let broker = broker();
        topic(&broker, "t", 1);
        let mut reader = broker
            .read(
                "t",
                ReadOptions {
                    follow: true,
                    ..options(Position::Earliest)
                },
            )
            .unwrap();
        let waiting = tokio::spawn(async move { reader.next_batch().await });
        tokio::task::yield_now().await;
        broker.delete_topic("t").await.unwrap();
        let outcome = tokio::time::timeout(WAIT, waiting)
            .await
            .expect("the follower wakes on delete")
            .unwrap();
        assert!(
            matches!(outcome, Some(Err(BrokerError::TopicDeleted { .. }))),
            "{outcome:?}"
        );
    }
}

//! `herald stats`: a running server's topics and subscriptions as two
//! tables for a person at a terminal, read through the Admin API (so it
//! works against any server it can reach, with nothing but the endpoint).
//!
//! The publish rate needs two samples: the first table comes after two
//! samples `--interval` apart, and rate is the growth of the topic's next
//! offsets between them divided by the time between them. With `--watch`
//! each new sample is compared with the one before.

use std::time::{Duration, Instant};

use herald::v1::admin_client::AdminClient;
use herald::v1::{
    GetSubscriptionStatsRequest, GetTopicStatsRequest, ListSubscriptionsRequest, ListTopicsRequest,
    SubscriptionType,
};
use tonic::transport::{Channel, Endpoint};

/// `herald stats` flags.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct StatsArgs {
    /// The server's gRPC endpoint: host:port, http://host:port or https://host:port.
    #[arg(
        long,
        env = "HERALD_ENDPOINT",
        default_value = "http://127.0.0.1:50051"
    )]
    pub endpoint: String,
    /// Time between the two samples a publish rate needs, e.g. "1s".
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub interval: Duration,
    /// Print the tables again every interval until interrupted.
    #[arg(long)]
    pub watch: bool,
}

/// Why stats could not be shown.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StatsError {
    #[error("{endpoint:?} is not a valid endpoint (write e.g. http://127.0.0.1:50051): {source}")]
    Endpoint {
        endpoint: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("cannot reach a Herald server at {endpoint}; is it running? (pass --endpoint)")]
    Unreachable {
        endpoint: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("{call} failed: {}", .source.message())]
    Call {
        call: &'static str,
        #[source]
        source: tonic::Status,
    },
}

/// One topic in a sample.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TopicRow {
    pub name: String,
    pub partitions: usize,
    /// Events stored now.
    pub events: u64,
    pub bytes: u64,
    /// Sum of the partitions' next offsets: grows by one per event published.
    pub published: u64,
}

/// One subscription in a sample.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SubscriptionRow {
    pub topic: String,
    pub name: String,
    pub kind: String,
    pub consumers: usize,
    pub backlog: u64,
    pub unacked: u64,
    pub lag: Option<Duration>,
    pub redelivered: u64,
    pub dead_lettered: u64,
}

/// Everything read at one moment.
#[derive(Debug, Clone)]
pub(crate) struct Sample {
    pub at: Instant,
    pub topics: Vec<TopicRow>,
    pub subscriptions: Vec<SubscriptionRow>,
}

/// Runs `herald stats`: prints the tables once, or every interval with `--watch`.
pub(crate) async fn run(args: StatsArgs) -> Result<(), StatsError> {
    let mut admin = connect(&args.endpoint).await?;
    let mut previous = sample(&mut admin).await?;
    loop {
        tokio::time::sleep(args.interval).await;
        let current = sample(&mut admin).await?;
        if args.watch {
            // Clear the screen and home the cursor, like `watch` does.
            print!("\x1b[2J\x1b[H");
        }
        print!("{}", render(&previous, &current));
        if !args.watch {
            return Ok(());
        }
        previous = current;
    }
}

async fn connect(endpoint: &str) -> Result<AdminClient<Channel>, StatsError> {
    let channel = Endpoint::from_shared(herald::endpoint::uri(endpoint))
        .map_err(|source| StatsError::Endpoint {
            endpoint: endpoint.to_owned(),
            source,
        })?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|source| StatsError::Unreachable {
            endpoint: endpoint.to_owned(),
            source,
        })?;
    Ok(AdminClient::new(channel))
}

/// Reads every topic and subscription. Ones deleted while reading are
/// left out.
pub(crate) async fn sample(admin: &mut AdminClient<Channel>) -> Result<Sample, StatsError> {
    let call = |call| move |source| StatsError::Call { call, source };
    let topics = admin
        .list_topics(ListTopicsRequest {})
        .await
        .map_err(call("ListTopics"))?
        .into_inner()
        .topics;
    let mut sample = Sample {
        at: Instant::now(),
        topics: Vec::new(),
        subscriptions: Vec::new(),
    };
    for topic in topics {
        let stats = match admin
            .get_topic_stats(GetTopicStatsRequest {
                name: topic.name.clone(),
            })
            .await
        {
            Ok(stats) => stats.into_inner(),
            Err(status) if status.code() == tonic::Code::NotFound => continue,
            Err(status) => return Err(call("GetTopicStats")(status)),
        };
        sample.topics.push(TopicRow {
            name: topic.name.clone(),
            partitions: stats.partitions.len(),
            events: stats.event_count,
            bytes: stats.bytes,
            published: stats.partitions.iter().map(|p| p.next_offset).sum(),
        });
        let subscriptions = match admin
            .list_subscriptions(ListSubscriptionsRequest {
                topic: topic.name.clone(),
            })
            .await
        {
            Ok(list) => list.into_inner().subscriptions,
            Err(status) if status.code() == tonic::Code::NotFound => continue,
            Err(status) => return Err(call("ListSubscriptions")(status)),
        };
        for subscription in subscriptions {
            let stats = match admin
                .get_subscription_stats(GetSubscriptionStatsRequest {
                    topic: topic.name.clone(),
                    name: subscription.name.clone(),
                })
                .await
            {
                Ok(stats) => stats.into_inner(),
                Err(status) if status.code() == tonic::Code::NotFound => continue,
                Err(status) => return Err(call("GetSubscriptionStats")(status)),
            };
            sample.subscriptions.push(SubscriptionRow {
                topic: topic.name.clone(),
                name: subscription.name,
                kind: kind_name(subscription.r#type),
                consumers: stats.consumers.len(),
                backlog: stats.backlog,
                unacked: stats.unacked,
                lag: stats
                    .oldest_unacked_age
                    .and_then(|d| Duration::try_from(d).ok()),
                redelivered: stats.redelivered,
                dead_lettered: stats.dead_lettered,
            });
        }
    }
    sample.at = Instant::now();
    Ok(sample)
}

fn kind_name(kind: i32) -> String {
    match SubscriptionType::try_from(kind) {
        Ok(SubscriptionType::Exclusive) => "exclusive",
        Ok(SubscriptionType::Shared) => "shared",
        Ok(SubscriptionType::Failover) => "failover",
        Ok(SubscriptionType::KeyShared) => "key_shared",
        _ => "?",
    }
    .to_owned()
}

/// The two tables; rates compare `current` with `previous`.
pub(crate) fn render(previous: &Sample, current: &Sample) -> String {
    let seconds = current
        .at
        .saturating_duration_since(previous.at)
        .as_secs_f64();
    let topics = current
        .topics
        .iter()
        .map(|t| {
            let before = previous.topics.iter().find(|p| p.name == t.name);
            // A topic new since the last sample has no rate yet.
            let rate = match before {
                Some(p) if seconds > 0.0 => {
                    format!(
                        "{:.1}",
                        t.published.saturating_sub(p.published) as f64 / seconds
                    )
                }
                _ => "-".to_owned(),
            };
            vec![
                t.name.clone(),
                t.partitions.to_string(),
                t.events.to_string(),
                human_bytes(t.bytes),
                rate,
            ]
        })
        .collect();
    let subscriptions = current
        .subscriptions
        .iter()
        .map(|s| {
            vec![
                s.topic.clone(),
                s.name.clone(),
                s.kind.clone(),
                s.consumers.to_string(),
                s.backlog.to_string(),
                s.unacked.to_string(),
                s.lag.map_or("-".to_owned(), human_duration),
                s.redelivered.to_string(),
                s.dead_lettered.to_string(),
            ]
        })
        .collect();
    let mut out = table(
        &["TOPIC", "PARTITIONS", "EVENTS", "BYTES", "PUBLISH/S"],
        topics,
    );
    out.push('\n');
    out.push_str(&table(
        &[
            "TOPIC",
            "SUBSCRIPTION",
            "TYPE",
            "CONSUMERS",
            "BACKLOG",
            "UNACKED",
            "LAG",
            "REDELIVERED",
            "DLQ",
        ],
        subscriptions,
    ));
    out
}

/// Columns padded to their widest cell; names left-aligned, numbers right.
fn table(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    if rows.is_empty() {
        return format!("{}\n(none)\n", headers.join("  "));
    }
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let numeric = |column: usize| {
        rows.iter().all(|row| {
            row[column]
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_digit() || c == '-')
        })
    };
    let right: Vec<bool> = (0..headers.len()).map(numeric).collect();
    let line = |cells: Vec<&str>| {
        let mut line = cells
            .iter()
            .enumerate()
            .map(|(i, cell)| {
                if right[i] {
                    format!("{cell:>w$}", w = widths[i])
                } else {
                    format!("{cell:<w$}", w = widths[i])
                }
            })
            .collect::<Vec<_>>()
            .join("  ");
        line.truncate(line.trim_end().len());
        line.push('\n');
        line
    };
    let mut out = line(headers.to_vec());
    for row in &rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn human_duration(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 1.0 {
        format!("{}ms", d.as_millis())
    } else if s < 120.0 {
        format!("{s:.1}s")
    } else if s < 7200.0 {
        format!("{:.0}m", s / 60.0)
    } else {
        format!("{:.1}h", s / 3600.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(name: &str, published: u64) -> TopicRow {
        TopicRow {
            name: name.into(),
            partitions: 2,
            events: published,
            bytes: 2048,
            published,
        }
    }

    #[test]
    fn rate_is_the_growth_between_samples_per_second() {
        let start = Instant::now();
        let previous = Sample {
            at: start,
            topics: vec![topic("orders", 100)],
            subscriptions: vec![],
        };
        let current = Sample {
            at: start + Duration::from_secs(2),
            topics: vec![topic("orders", 150), topic("fresh", 7)],
            subscriptions: vec![SubscriptionRow {
                topic: "orders".into(),
                name: "billing".into(),
                kind: "shared".into(),
                consumers: 1,
                backlog: 40,
                unacked: 3,
                lag: Some(Duration::from_millis(2500)),
                redelivered: 5,
                dead_lettered: 2,
            }],
        };
        let text = render(&previous, &current);
        let rows: Vec<Vec<&str>> = text
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert!(
            rows.contains(&vec!["orders", "2", "150", "2.0", "KiB", "25.0"]),
            "{text}"
        );
        assert!(
            rows.contains(&vec!["fresh", "2", "7", "2.0", "KiB", "-"]),
            "{text}"
        );
        assert!(
            rows.contains(&vec![
                "orders", "billing", "shared", "1", "40", "3", "2.5s", "5", "2"
            ]),
            "{text}"
        );
    }

    #[test]
    fn empty_tables_say_none() {
        let now = Instant::now();
        let empty = Sample {
            at: now,
            topics: vec![],
            subscriptions: vec![],
        };
        assert_eq!(render(&empty, &empty).matches("(none)").count(), 2);
    }

    #[test]
    fn sizes_and_ages_read_like_a_person_writes_them() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(human_duration(Duration::from_secs(600)), "10m");
    }
}

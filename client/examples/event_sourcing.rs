//! Event sourcing: replay a topic from the start with the reader and
//! rebuild state — here, account balances from `BalanceChanged` events.
//!
//! Runs against `HERALD_ENDPOINT` if set, else against an in-process broker:
//! `cargo run -p herald-client --example event_sourcing`.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::ensure;
use futures::StreamExt;
use herald_client::prelude::*;

/// An account's balance moved by `delta_cents`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct BalanceChanged {
    /// The account; the ordering key, so one account's changes stay in order.
    #[prost(string, tag = "1")]
    pub account: String,
    /// Positive for deposits, negative for withdrawals.
    #[prost(int64, tag = "2")]
    pub delta_cents: i64,
}

impl prost::Name for BalanceChanged {
    const NAME: &'static str = "BalanceChanged";
    const PACKAGE: &'static str = "acme.ledger.v1";
}

impl Event for BalanceChanged {
    const TOPIC: &'static str = "ledger.balance-changes";
    const TYPE: &'static str = "com.example.ledger.balance_changed";
    const SOURCE: &'static str = "/services/ledger";
    fn key(&self) -> Option<String> {
        Some(self.account.clone())
    }
}

/// Publishes a history of changes, then rebuilds every balance by replaying
/// the topic from the start, and checks it against the expected balances.
pub async fn run_example() -> anyhow::Result<()> {
    // An in-process broker unless HERALD_ENDPOINT names a real one.
    let (_server, endpoint) =
        herald_server::testing::endpoint_from_env_or_in_memory("HERALD_ENDPOINT").await;
    let client = Client::builder()
        .endpoint(&endpoint)
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await?;

    // Accounts named per run, so reruns against a real broker add up.
    let run = uuid::Uuid::now_v7().simple().to_string();
    let producer = client.producer::<BalanceChanged>().build();
    let mut expected: BTreeMap<String, i64> = BTreeMap::new();
    for i in 0..200i64 {
        let account = format!("acct-{run}-{}", i % 7);
        let delta_cents = if i % 3 == 0 { -(i * 10) } else { i * 25 };
        *expected.entry(account.clone()).or_default() += delta_cents;
        producer
            .publish(&BalanceChanged {
                account,
                delta_cents,
            })
            .await?;
    }
    producer.close().await;

    // The projection: fold every event, from the first, into balances.
    let mut balances: BTreeMap<String, i64> = BTreeMap::new();
    let mut events = client
        .reader::<BalanceChanged>()
        .position(Position::Earliest)
        .read()
        .await?;
    while let Some(event) = events.next().await {
        let event = event?;
        if event.value.account.contains(&run) {
            *balances.entry(event.value.account).or_default() += event.value.delta_cents;
        }
    }
    ensure!(
        balances == expected,
        "replayed {balances:?}, expected {expected:?}"
    );
    for (account, cents) in &balances {
        println!("{account}: {:.2}", *cents as f64 / 100.0);
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    run_example().await
}

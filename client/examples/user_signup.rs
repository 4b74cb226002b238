//! The seed's sign-up flow: a `UserSignedUp` producer publishing to
//! `user.signup`, and a consumer checking type, payload and timestamp.
//!
//! Runs against `HERALD_ENDPOINT` if set, else against an in-process broker:
//! `cargo run -p herald-client --example user_signup`.

use std::time::{Duration, SystemTime};

use anyhow::{Context, ensure};
use herald_client::prelude::*;

/// A user finished signing up.
#[derive(Clone, PartialEq, prost::Message)]
pub struct UserSignedUp {
    /// The new user's id; the ordering key.
    #[prost(string, tag = "1")]
    pub user_id: String,
    /// Where to send the welcome mail.
    #[prost(string, tag = "2")]
    pub email: String,
}

impl prost::Name for UserSignedUp {
    const NAME: &'static str = "UserSignedUp";
    const PACKAGE: &'static str = "acme.signup.v1";
}

impl Event for UserSignedUp {
    const TOPIC: &'static str = "user.signup";
    const TYPE: &'static str = "com.example.user.signed_up";
    const SOURCE: &'static str = "/services/signup";
    fn key(&self) -> Option<String> {
        Some(self.user_id.clone())
    }
}

/// Publishes one sign-up and consumes it back, checking what arrives.
pub async fn run_example() -> anyhow::Result<()> {
    // An in-process broker unless HERALD_ENDPOINT names a real one.
    let (_server, endpoint) =
        herald_server::testing::endpoint_from_env_or_in_memory("HERALD_ENDPOINT").await;
    let client = Client::builder()
        .endpoint(&endpoint)
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await?;

    // A fresh subscription name per run, so reruns against a real broker
    // only see their own event.
    let run_id = uuid::Uuid::now_v7().to_string();
    let consumer = client
        .consumer::<UserSignedUp>(format!("welcome-{run_id}"))
        .subscription_type(SubscriptionType::Exclusive)
        .initial_position(Position::Latest)
        .subscribe()
        .await?;

    let producer = client.producer::<UserSignedUp>().build();
    let sent = UserSignedUp {
        user_id: format!("user-{run_id}"),
        email: "ada@example.com".into(),
    };
    let before = SystemTime::now();
    let receipt = producer.publish(&sent).await?;
    println!(
        "published {} to partition {} offset {}",
        receipt.id, receipt.partition, receipt.offset
    );
    producer.close().await;

    let shutdown = CancellationToken::new();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let stop = shutdown.clone();
    let consuming = tokio::spawn(consumer.run_until(shutdown.clone(), move |event| {
        let (tx, stop) = (tx.clone(), stop.clone());
        async move {
            let _ = tx.send(event);
            stop.cancel();
            Ok::<(), String>(())
        }
    }));
    let received: Envelope<UserSignedUp> = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .context("no event within 10 s")?
        .context("consumer ended")?;
    consuming.await??;

    ensure!(
        received.event_type == "com.example.user.signed_up",
        "type {}",
        received.event_type
    );
    ensure!(received.value == sent, "payload {:?}", received.value);
    ensure!(
        received.id == receipt.id,
        "id {} != {}",
        received.id,
        receipt.id
    );
    let time = received.time.context("no time")?;
    ensure!(
        time >= before - Duration::from_secs(1) && time <= SystemTime::now(),
        "time {time:?}"
    );
    println!(
        "consumed {} for {} ({})",
        received.event_type, received.value.user_id, received.value.email
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    run_example().await
}

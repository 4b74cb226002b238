//! The seed's transport flow:
//! - `RouteAllocationRecorded` events are published to
//!   `transport.route-allocations`;
//! - a shared-subscription handler turns each into a `DriverAlertRequested`
//!   on `transport.driver-alerts`;
//! - a poison allocation (no driver) fails every time and, after three
//!   attempts, lands in the dead-letter topic with the reason;
//! - a failover pair of dispatchers: killing the active one hands over to
//!   the standby, which carries on.
//!
//! Runs against `HERALD_ENDPOINT` if set, else against an in-process broker:
//! `cargo run -p herald-client --example route_allocation`.

use std::time::Duration;

use anyhow::{Context, ensure};
use futures::StreamExt;
use herald_client::prelude::*;
use tokio::sync::mpsc;

/// A route was allocated to a driver and vehicle.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RouteAllocationRecorded {
    /// The route; the ordering key.
    #[prost(string, tag = "1")]
    pub route_id: String,
    /// Who drives it; empty means the allocation is broken.
    #[prost(string, tag = "2")]
    pub driver_id: String,
    /// With what.
    #[prost(string, tag = "3")]
    pub vehicle_id: String,
}

impl prost::Name for RouteAllocationRecorded {
    const NAME: &'static str = "RouteAllocationRecorded";
    const PACKAGE: &'static str = "acme.transport.v1";
}

impl Event for RouteAllocationRecorded {
    const TOPIC: &'static str = "transport.route-allocations";
    const TYPE: &'static str = "com.example.transport.route_allocation_recorded";
    const SOURCE: &'static str = "/services/allocation";
    fn key(&self) -> Option<String> {
        Some(self.route_id.clone())
    }
}

/// A driver should be told about a route.
#[derive(Clone, PartialEq, prost::Message)]
pub struct DriverAlertRequested {
    /// Whom to alert; the ordering key.
    #[prost(string, tag = "1")]
    pub driver_id: String,
    /// About which route.
    #[prost(string, tag = "2")]
    pub route_id: String,
    /// What to say.
    #[prost(string, tag = "3")]
    pub message: String,
}

impl prost::Name for DriverAlertRequested {
    const NAME: &'static str = "DriverAlertRequested";
    const PACKAGE: &'static str = "acme.transport.v1";
}

impl Event for DriverAlertRequested {
    const TOPIC: &'static str = "transport.driver-alerts";
    const TYPE: &'static str = "com.example.transport.driver_alert_requested";
    const SOURCE: &'static str = "/services/alerting";
    fn key(&self) -> Option<String> {
        Some(self.driver_id.clone())
    }
}

/// Runs the whole flow and checks each step.
pub async fn run_example() -> anyhow::Result<()> {
    // An in-process broker unless HERALD_ENDPOINT names a real one.
    let (_server, endpoint) =
        herald_server::testing::endpoint_from_env_or_in_memory("HERALD_ENDPOINT").await;
    let client = Client::builder()
        .endpoint(&endpoint)
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await?;
    let run = uuid::Uuid::now_v7().simple().to_string();
    let alerting = format!("alerting-{run}");

    // 1. The alerting service: a shared subscription whose handler publishes
    //    a DriverAlertRequested per allocation, and refuses broken ones.
    let consumer = client
        .consumer::<RouteAllocationRecorded>(alerting.clone())
        .subscription_type(SubscriptionType::Shared)
        .initial_position(Position::Latest)
        .redelivery(Redelivery {
            min_backoff: Some(Duration::from_millis(50)),
            max_backoff: Some(Duration::from_millis(200)),
            max_delivery_attempts: 3,
            ..Redelivery::default()
        })
        .subscribe()
        .await?;
    let alerts = client.producer::<DriverAlertRequested>().build();
    let stop_alerting = CancellationToken::new();
    let alerting_task = tokio::spawn(consumer.run_until(
        stop_alerting.clone(),
        move |allocation| {
            let alerts = alerts.clone();
            async move {
                let a = allocation.value;
                if a.driver_id.is_empty() {
                    return Err(format!("route {} has no driver", a.route_id));
                }
                alerts
                    .publish(&DriverAlertRequested {
                        driver_id: a.driver_id.clone(),
                        route_id: a.route_id.clone(),
                        message: format!("You drive route {} with {}", a.route_id, a.vehicle_id),
                    })
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
        },
    ));

    // 2. Watch the alerts topic.
    let alert_watcher = client
        .consumer::<DriverAlertRequested>(format!("alert-audit-{run}"))
        .subscription_type(SubscriptionType::Exclusive)
        .initial_position(Position::Latest)
        .subscribe()
        .await?;
    let (alert_tx, mut alert_rx) = mpsc::unbounded_channel();
    let stop_watch = CancellationToken::new();
    let watch_task = tokio::spawn(alert_watcher.run_until(stop_watch.clone(), move |alert| {
        let tx = alert_tx.clone();
        async move {
            let _ = tx.send(alert.value);
            Ok::<(), String>(())
        }
    }));

    // 3. Publish two good allocations and a poison one.
    let allocations = client.producer::<RouteAllocationRecorded>().build();
    for (route, driver) in [("r1", "d-ada"), ("r2", "d-grace"), ("r-poison", "")] {
        allocations
            .publish(&RouteAllocationRecorded {
                route_id: format!("{route}-{run}"),
                driver_id: driver.into(),
                vehicle_id: "van-7".into(),
            })
            .await?;
    }
    let mut alerted = Vec::new();
    while alerted.len() < 2 {
        let alert = tokio::time::timeout(Duration::from_secs(10), alert_rx.recv())
            .await
            .context("no driver alert within 10 s")?
            .context("alert watcher ended")?;
        alerted.push(alert.driver_id);
    }
    alerted.sort();
    ensure!(
        alerted == ["d-ada", "d-grace"],
        "alerts went to {alerted:?}"
    );
    println!("alerts sent to {alerted:?}");

    // 4. The poison allocation ends in the dead-letter topic, with why.
    let dead_letter_topic = format!("{}.{alerting}.dlq", RouteAllocationRecorded::TOPIC);
    let mut dead = None;
    for _ in 0..100 {
        let mut letters = client
            .reader::<RouteAllocationRecorded>()
            .topic(dead_letter_topic.clone())
            .read()
            .await?;
        if let Some(letter) = letters.next().await {
            dead = Some(letter?);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let dead = dead.context("the poison allocation never reached the dead-letter topic")?;
    ensure!(
        dead.value.route_id == format!("r-poison-{run}"),
        "dead letter {:?}",
        dead.value
    );
    let reason = dead
        .attributes
        .get("herald_dlq_reason")
        .cloned()
        .unwrap_or_default();
    ensure!(reason.contains("has no driver"), "reason {reason:?}");
    ensure!(
        dead.attributes
            .get("herald_dlq_attempts")
            .map(String::as_str)
            == Some("3")
    );
    println!(
        "dead-lettered {} after 3 attempts: {reason}",
        dead.value.route_id
    );
    stop_alerting.cancel();
    stop_watch.cancel();
    alerting_task.await??;
    watch_task.await??;

    // 5. A failover pair of dispatchers: the preferred one is active; when
    //    it goes away, the standby takes over and carries on.
    let dispatch = format!("dispatch-{run}");
    let pair = |name: &str, priority: i32| {
        client
            .consumer::<RouteAllocationRecorded>(dispatch.clone())
            .subscription_type(SubscriptionType::Failover)
            .consumer_name(name)
            .priority(priority)
            .initial_position(Position::Latest)
            .subscribe()
    };
    let primary = pair("dispatcher-a", 0).await?;
    let standby = pair("dispatcher-b", 1).await?;
    let mut standby_role = standby.active_state();
    let (seen_tx, mut seen_rx) = mpsc::unbounded_channel();
    let stop_standby = CancellationToken::new();
    let standby_task = tokio::spawn(standby.run_until(stop_standby.clone(), move |allocation| {
        let tx = seen_tx.clone();
        async move {
            let _ = tx.send(allocation.value.route_id);
            Ok::<(), String>(())
        }
    }));
    // "Kill" the active dispatcher: its stream goes away.
    drop(primary);
    tokio::time::timeout(Duration::from_secs(10), async {
        while !standby_role
            .borrow_and_update()
            .as_ref()
            .is_some_and(|s| s.active)
        {
            standby_role.changed().await.context("role updates ended")?;
        }
        anyhow::Ok(())
    })
    .await
    .context("the standby never became active")??;
    allocations
        .publish(&RouteAllocationRecorded {
            route_id: format!("r3-{run}"),
            driver_id: "d-linus".into(),
            vehicle_id: "truck-2".into(),
        })
        .await?;
    let handled = tokio::time::timeout(Duration::from_secs(10), seen_rx.recv())
        .await
        .context("the new active dispatcher got nothing")?
        .context("dispatcher ended")?;
    ensure!(handled == format!("r3-{run}"), "handled {handled}");
    println!("dispatcher-b took over and handled {handled}");
    stop_standby.cancel();
    standby_task.await??;
    allocations.close().await;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    run_example().await
}

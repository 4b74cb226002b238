//! The gRPC surface: thin tonic services that decode, call the broker and
//! map errors (in `status`). No broker logic lives here.

pub mod admin;
pub mod convert;
pub mod limits;
pub mod publisher;
pub mod status;
pub mod subscribe;
pub mod subscriber;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::broker::Broker;

/// What every service needs: the broker, a tracker for the tasks that drive
/// streams, and the shutdown signal that ends those streams.
#[derive(Clone)]
pub struct ApiContext {
    /// The broker handle.
    pub broker: Broker,
    /// Stream-driving tasks, awaited at shutdown.
    pub tasks: TaskTracker,
    /// Cancelled when the server starts draining.
    pub shutdown: CancellationToken,
    /// Open streams, for the metrics endpoint.
    pub open: crate::metrics::connections::OpenCounts,
}

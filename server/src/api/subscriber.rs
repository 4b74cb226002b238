//! `herald.v1.Subscriber`: the service, which starts one task per stream
//! and hands it to the RPC's own module ([`super::read`],
//! [`super::subscribe`]).

use std::pin::Pin;

use herald::v1::{ReadRequest, SubscribeRequest};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::ApiContext;
use super::convert::position;
use super::subscriber_service::subscriber_server::Subscriber;
use super::wire::{ReadReply as ReadResponse, SubscribeReply as SubscribeResponse};
use crate::broker::Position;
use crate::broker::reader::ReadOptions;
use crate::metrics::connections::StreamKind;

/// The Subscriber service.
pub(crate) struct SubscriberService {
    ctx: ApiContext,
}

impl SubscriberService {
    pub(crate) fn new(ctx: ApiContext) -> Self {
        Self { ctx }
    }
}

type Stream<T> = Pin<Box<dyn futures::Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl Subscriber for SubscriberService {
    type ReadStream = Stream<ReadResponse>;

    async fn read(
        &self,
        request: Request<ReadRequest>,
    ) -> Result<Response<Self::ReadStream>, Status> {
        let request = request.into_inner();
        let options = ReadOptions {
            position: position(request.position.as_ref(), Position::Earliest),
            partitions: request.partitions,
            follow: request.follow,
            max_events: request.max_events,
        };
        let reader = self.ctx.broker.read(&request.topic, options)?;
        let (tx, rx) = mpsc::channel(super::read::READ_BUFFER);
        let ctx = self.ctx.clone();
        let open = self.ctx.open.stream(StreamKind::Read);
        self.ctx.tasks.spawn(async move {
            let _open = open;
            super::read::drive_read(ctx, request.topic, reader, tx).await
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    type SubscribeStream = Stream<SubscribeResponse>;

    async fn subscribe(
        &self,
        request: Request<Streaming<SubscribeRequest>>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let (tx, rx) = mpsc::channel(64);
        let ctx = self.ctx.clone();
        let open = self.ctx.open.stream(StreamKind::Subscribe);
        let inbound = request.into_inner();
        self.ctx.tasks.spawn(async move {
            let _open = open;
            super::subscribe::drive_subscribe(ctx, inbound, tx).await
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

//! `herald.v1.Admin`: topics and subscriptions: create, inspect, change,
//! delete, and seek.

use herald::v1::admin_server::Admin;
use herald::v1::*;
use tonic::{Request, Response, Status};

use super::ApiContext;
use super::convert::{self, settings_patch};
use super::status::invalid_request;
use crate::broker::Position;

/// The Admin service.
pub(crate) struct AdminService {
    ctx: ApiContext,
}

impl AdminService {
    pub(crate) fn new(ctx: ApiContext) -> Self {
        Self { ctx }
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn create_topic(
        &self,
        request: Request<CreateTopicRequest>,
    ) -> Result<Response<Topic>, Status> {
        let request = request.into_inner();
        let patch = settings_patch(request.config.as_ref())?;
        // Creating waits on fsyncs: off the async workers, so creates of
        // different topics overlap and publishes keep flowing meanwhile.
        let name = request.name;
        let info = self
            .ctx
            .broker
            .run_blocking(move |broker| broker.create_topic(&name, &patch))
            .await?;
        tracing::info!(topic = %info.name, partitions = info.settings.partitions, "topic created");
        Ok(Response::new(convert::topic(&info)))
    }

    async fn get_topic(
        &self,
        request: Request<GetTopicRequest>,
    ) -> Result<Response<Topic>, Status> {
        let info = self.ctx.broker.get_topic(&request.into_inner().name)?;
        Ok(Response::new(convert::topic(&info)))
    }

    async fn list_topics(
        &self,
        _request: Request<ListTopicsRequest>,
    ) -> Result<Response<ListTopicsResponse>, Status> {
        let topics = self
            .ctx
            .broker
            .list_topics()
            .iter()
            .map(convert::topic)
            .collect();
        Ok(Response::new(ListTopicsResponse { topics }))
    }

    async fn update_topic(
        &self,
        request: Request<UpdateTopicRequest>,
    ) -> Result<Response<Topic>, Status> {
        let request = request.into_inner();
        let patch = settings_patch(request.config.as_ref())?;
        let name = request.name;
        let info = self
            .ctx
            .broker
            .run_blocking(move |broker| broker.update_topic(&name, &patch))
            .await?;
        tracing::info!(topic = %info.name, "topic updated");
        Ok(Response::new(convert::topic(&info)))
    }

    async fn delete_topic(
        &self,
        request: Request<DeleteTopicRequest>,
    ) -> Result<Response<DeleteTopicResponse>, Status> {
        let name = request.into_inner().name;
        let kept_dead_letter_topics = self.ctx.broker.delete_topic(&name).await?;
        tracing::info!(topic = %name, "topic deleted");
        Ok(Response::new(DeleteTopicResponse {
            kept_dead_letter_topics,
        }))
    }

    async fn get_topic_stats(
        &self,
        request: Request<GetTopicStatsRequest>,
    ) -> Result<Response<TopicStats>, Status> {
        let stats = self.ctx.broker.topic_stats(&request.into_inner().name)?;
        Ok(Response::new(convert::topic_stats(&stats)))
    }

    async fn create_subscription(
        &self,
        request: Request<CreateSubscriptionRequest>,
    ) -> Result<Response<Subscription>, Status> {
        let r = request.into_inner();
        let spec = convert::subscription_spec(
            r.r#type,
            r.initial_position.as_ref(),
            Position::Latest,
            r.ack_deadline.as_ref(),
            r.redelivery.as_ref(),
        )?;
        let info = self
            .ctx
            .broker
            .run_blocking(move |broker| broker.create_subscription(&r.topic, &r.name, &spec))
            .await?;
        Ok(Response::new(convert::subscription(&info)))
    }

    async fn get_subscription(
        &self,
        request: Request<GetSubscriptionRequest>,
    ) -> Result<Response<Subscription>, Status> {
        let r = request.into_inner();
        let info = self.ctx.broker.get_subscription(&r.topic, &r.name)?;
        Ok(Response::new(convert::subscription(&info)))
    }

    async fn list_subscriptions(
        &self,
        request: Request<ListSubscriptionsRequest>,
    ) -> Result<Response<ListSubscriptionsResponse>, Status> {
        let subscriptions = self
            .ctx
            .broker
            .list_subscriptions(&request.into_inner().topic)?
            .iter()
            .map(convert::subscription)
            .collect();
        Ok(Response::new(ListSubscriptionsResponse { subscriptions }))
    }

    async fn delete_subscription(
        &self,
        request: Request<DeleteSubscriptionRequest>,
    ) -> Result<Response<DeleteSubscriptionResponse>, Status> {
        let r = request.into_inner();
        let kept_dead_letter_topics = self
            .ctx
            .broker
            .delete_subscription(&r.topic, &r.name, r.force)
            .await?;
        Ok(Response::new(DeleteSubscriptionResponse {
            kept_dead_letter_topics,
        }))
    }

    async fn get_subscription_stats(
        &self,
        request: Request<GetSubscriptionStatsRequest>,
    ) -> Result<Response<SubscriptionStats>, Status> {
        let r = request.into_inner();
        let stats = self
            .ctx
            .broker
            .subscription_stats(&r.topic, &r.name)
            .await?;
        Ok(Response::new(convert::subscription_stats(
            &r.topic, &r.name, &stats,
        )))
    }

    async fn seek(&self, request: Request<SeekRequest>) -> Result<Response<SeekResponse>, Status> {
        let r = request.into_inner();
        let Some(position) = r.position.as_ref().filter(|p| p.kind.is_some()) else {
            return Err(invalid_request(
                "Seek needs a position: earliest, latest, offsets or timestamp",
            ));
        };
        let position = convert::position(Some(position), Position::Latest);
        #[allow(deprecated)]
        let name = match (r.name.as_str(), r.subscription.as_str()) {
            (name, "") => name,
            ("", old) => old,
            (name, old) if name == old => name,
            (name, old) => {
                return Err(invalid_request(format!(
                    "Seek names the subscription twice, as name {name:?} and as the deprecated subscription {old:?}; set only name"
                )));
            }
        };
        self.ctx.broker.seek(&r.topic, name, position).await?;
        Ok(Response::new(SeekResponse {}))
    }
}

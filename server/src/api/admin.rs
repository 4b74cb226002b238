//! `herald.v1.Admin`: topic management and stats. Subscription management
//! answers UNIMPLEMENTED (with code NOT_IMPLEMENTED) until subscriptions land.

use herald::v1::admin_server::Admin;
use herald::v1::*;
use tonic::{Request, Response, Status};

use super::ApiContext;
use super::convert::{self, settings_patch};
use super::status::{not_implemented, to_status};

/// The Admin service.
pub struct AdminService {
    ctx: ApiContext,
}

impl AdminService {
    pub fn new(ctx: ApiContext) -> Self {
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
        let patch = settings_patch(request.config.as_ref()).map_err(|e| to_status(&e))?;
        let info = self
            .ctx
            .broker
            .create_topic(&request.name, &patch)
            .map_err(|e| to_status(&e))?;
        tracing::info!(topic = %info.name, partitions = info.settings.partitions, "topic created");
        Ok(Response::new(convert::topic(&info)))
    }

    async fn get_topic(
        &self,
        request: Request<GetTopicRequest>,
    ) -> Result<Response<Topic>, Status> {
        let info = self
            .ctx
            .broker
            .get_topic(&request.into_inner().name)
            .map_err(|e| to_status(&e))?;
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
        let patch = settings_patch(request.config.as_ref()).map_err(|e| to_status(&e))?;
        let info = self
            .ctx
            .broker
            .update_topic(&request.name, &patch)
            .map_err(|e| to_status(&e))?;
        tracing::info!(topic = %info.name, "topic updated");
        Ok(Response::new(convert::topic(&info)))
    }

    async fn delete_topic(
        &self,
        request: Request<DeleteTopicRequest>,
    ) -> Result<Response<DeleteTopicResponse>, Status> {
        let name = request.into_inner().name;
        self.ctx
            .broker
            .delete_topic(&name)
            .map_err(|e| to_status(&e))?;
        tracing::info!(topic = %name, "topic deleted");
        Ok(Response::new(DeleteTopicResponse {}))
    }

    async fn get_topic_stats(
        &self,
        request: Request<GetTopicStatsRequest>,
    ) -> Result<Response<TopicStats>, Status> {
        let stats = self
            .ctx
            .broker
            .topic_stats(&request.into_inner().name)
            .map_err(|e| to_status(&e))?;
        Ok(Response::new(convert::topic_stats(&stats)))
    }

    async fn create_subscription(
        &self,
        _: Request<CreateSubscriptionRequest>,
    ) -> Result<Response<Subscription>, Status> {
        Err(not_implemented("Admin.CreateSubscription"))
    }

    async fn get_subscription(
        &self,
        _: Request<GetSubscriptionRequest>,
    ) -> Result<Response<Subscription>, Status> {
        Err(not_implemented("Admin.GetSubscription"))
    }

    async fn list_subscriptions(
        &self,
        _: Request<ListSubscriptionsRequest>,
    ) -> Result<Response<ListSubscriptionsResponse>, Status> {
        Err(not_implemented("Admin.ListSubscriptions"))
    }

    async fn delete_subscription(
        &self,
        _: Request<DeleteSubscriptionRequest>,
    ) -> Result<Response<DeleteSubscriptionResponse>, Status> {
        Err(not_implemented("Admin.DeleteSubscription"))
    }

    async fn get_subscription_stats(
        &self,
        _: Request<GetSubscriptionStatsRequest>,
    ) -> Result<Response<SubscriptionStats>, Status> {
        Err(not_implemented("Admin.GetSubscriptionStats"))
    }

    async fn seek(&self, _: Request<SeekRequest>) -> Result<Response<SeekResponse>, Status> {
        Err(not_implemented("Admin.Seek"))
    }
}

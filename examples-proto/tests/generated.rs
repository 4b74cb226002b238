//! The generated `Event` impl: its constants, its key, and a publish/consume
//! round trip against an in-process broker.

use std::time::{Duration, SystemTime};

use futures::StreamExt;
use herald_client::prelude::*;
use herald_examples::signup::v1::UserSignedUp;
use herald_server::testing::start_in_memory;

fn signup(user_id: &str) -> UserSignedUp {
    UserSignedUp {
        user_id: user_id.into(),
        email: format!("{user_id}@example.com"),
        signed_up_at: Some(herald_client::to_timestamp(SystemTime::now())),
    }
}

#[test]
fn constants_come_from_the_proto_option() {
    assert_eq!(<UserSignedUp as Event>::TOPIC, "user.signup");
    assert_eq!(<UserSignedUp as Event>::TYPE, "com.example.user.signed_up");
    assert_eq!(<UserSignedUp as Event>::SOURCE, "/services/signup");
    assert_eq!(UserSignedUp::schema(), "acme.signup.v1.UserSignedUp");
}

#[test]
fn key_is_the_key_field_and_empty_means_keyless() {
    assert_eq!(signup("u-1").key().as_deref(), Some("u-1"));
    assert_eq!(signup("").key(), None);
}

#[tokio::test]
async fn generated_events_round_trip_through_the_broker() {
    let server = start_in_memory().await;
    let client = Client::connect(server.endpoint()).await.expect("connect");
    let producer = client.producer::<UserSignedUp>().build();
    let sent = [signup("alice"), signup("bob")];
    for event in &sent {
        producer.publish(event).await.expect("publish");
    }
    let consumer = client
        .consumer::<UserSignedUp>("welcome-mail")
        .initial_position(Position::Earliest)
        .subscribe()
        .await
        .expect("subscribe");
    let received = tokio::time::timeout(
        Duration::from_secs(10),
        consumer.stream().take(2).collect::<Vec<_>>(),
    )
    .await
    .expect("both events delivered");
    for (envelope, sent) in received.into_iter().zip(&sent) {
        let envelope = envelope.expect("decoded");
        assert_eq!(&envelope.value, sent);
        assert_eq!(envelope.topic, "user.signup");
        assert_eq!(envelope.event_type, "com.example.user.signed_up");
        assert_eq!(envelope.source, "/services/signup");
        assert_eq!(envelope.data_schema, "acme.signup.v1.UserSignedUp");
        assert_eq!(envelope.key, sent.user_id);
        envelope.ack();
    }
}

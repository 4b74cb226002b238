//! Generates the server side of `herald.v1.Publisher` and
//! `herald.v1.Subscriber` with the message types of `api::wire`, which move
//! events as bytes (kept as the producer sent them, delivered as stored) and
//! encode publish results straight from the broker's receipts. The wire
//! format is exactly `proto/herald/v1/*.proto`'s; clients keep the prost
//! types.

fn main() {
    let method = |name: &str, route: &str, input: &str, output: &str| {
        tonic_build::manual::Method::builder()
            .name(name)
            .route_name(route)
            .input_type(input)
            .output_type(output)
            .codec_path("tonic_prost::ProstCodec")
    };
    let publisher = tonic_build::manual::Service::builder()
        .name("Publisher")
        .package("herald.v1")
        .method(
            method(
                "publish",
                "Publish",
                "herald::v1::PublishRequest",
                "herald::v1::PublishResponse",
            )
            .build(),
        )
        .method(
            method(
                "publish_stream",
                "PublishStream",
                "crate::api::wire::PublishStreamFrame",
                "crate::api::wire::PublishStreamReply",
            )
            .client_streaming()
            .server_streaming()
            .build(),
        )
        .build();
    let subscriber = tonic_build::manual::Service::builder()
        .name("Subscriber")
        .package("herald.v1")
        .method(
            method(
                "read",
                "Read",
                "herald::v1::ReadRequest",
                "crate::api::wire::ReadReply",
            )
            .server_streaming()
            .build(),
        )
        .method(
            method(
                "subscribe",
                "Subscribe",
                "herald::v1::SubscribeRequest",
                "crate::api::wire::SubscribeReply",
            )
            .client_streaming()
            .server_streaming()
            .build(),
        )
        .build();
    tonic_build::manual::Builder::new()
        .build_client(false)
        .compile(&[publisher, subscriber]);
}

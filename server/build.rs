//! Generates the server side of `herald.v1.Publisher` with the request and
//! response types of `api::wire`, which PublishStream reads and writes in
//! place (events kept as the bytes the producer sent, results encoded
//! straight from the broker's receipts). The wire format is exactly
//! `proto/herald/v1/publisher.proto`'s; clients keep the prost types.

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
    tonic_build::manual::Builder::new()
        .build_client(false)
        .compile(&[publisher]);
}

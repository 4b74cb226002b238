//! Runs the examples' logic as tests, against an in-process broker.

#[allow(dead_code)]
#[path = "../examples/user_signup.rs"]
mod user_signup;

#[tokio::test]
async fn user_signup_example_round_trips() {
    user_signup::run_example().await.expect("example succeeds");
}

#[allow(dead_code)]
#[path = "../examples/event_sourcing.rs"]
mod event_sourcing;

#[tokio::test]
async fn event_sourcing_example_rebuilds_balances() {
    event_sourcing::run_example()
        .await
        .expect("example succeeds");
}

#[allow(dead_code)]
#[path = "../examples/route_allocation.rs"]
mod route_allocation;

#[tokio::test(flavor = "multi_thread")]
async fn route_allocation_example_runs_the_whole_flow() {
    route_allocation::run_example()
        .await
        .expect("example succeeds");
}

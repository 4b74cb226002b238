//! Runs the examples' logic as tests, against an in-process broker.

#[allow(dead_code)]
#[path = "../examples/user_signup.rs"]
mod user_signup;

#[tokio::test]
async fn user_signup_example_round_trips() {
    user_signup::run_example().await.expect("example succeeds");
}

//! Delivers the account and session events whose put failed (CONTRACT §7 "Events"),
//! on a schedule; all logic lives in `foodsave_auth::events`.

// One thread: Lambda hands a container one event at a time.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    foodsave_auth::runtime::serve_event_relay().await
}

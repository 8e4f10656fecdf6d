//! Lambda function for the `token-refresh` endpoint; all logic lives in `foodsave_auth::api::token_refresh`.

use foodsave_auth::api::token_refresh::TokenRefresh;

// One thread: Lambda hands a container one event at a time (measured: less CPU per
// request and at init than the multi-threaded runtime, no cross-thread wake-ups).
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    foodsave_auth::runtime::serve::<TokenRefresh>().await
}

//! Lambda function for the `otp-verify` endpoint; all logic lives in `foodsave_auth::api::otp_verify`.

use foodsave_auth::api::otp_verify::OtpVerify;

// One thread: Lambda hands a container one event at a time (measured: less CPU per
// request and at init than the multi-threaded runtime, no cross-thread wake-ups).
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    foodsave_auth::runtime::serve::<OtpVerify>().await
}

//! Lambda function for the `otp-verify` endpoint; all logic lives in `foodsave_auth::api::otp_verify`.

use foodsave_auth::api::otp_verify::OtpVerify;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    foodsave_auth::runtime::serve::<OtpVerify>().await
}

//! Lambda function for the `otp-send` endpoint; all logic lives in `foodsave_auth::api::otp_send`.

use foodsave_auth::api::otp_send::OtpSend;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    foodsave_auth::runtime::serve::<OtpSend>().await
}

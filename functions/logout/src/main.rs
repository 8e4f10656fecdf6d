//! Lambda function for the `logout` endpoint; all logic lives in `foodsave_auth::api::logout`.

use foodsave_auth::api::logout::Logout;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    foodsave_auth::runtime::serve::<Logout>().await
}

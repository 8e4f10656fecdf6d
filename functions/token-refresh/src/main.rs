//! Lambda function for the `token-refresh` endpoint; all logic lives in `foodsave_auth::api::token_refresh`.

use foodsave_auth::api::token_refresh::TokenRefresh;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    foodsave_auth::runtime::serve::<TokenRefresh>().await
}

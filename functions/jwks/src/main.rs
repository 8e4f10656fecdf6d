//! Lambda function for the `jwks` endpoints; all logic lives in `foodsave_auth::api::jwks`.

use foodsave_auth::api::jwks::Jwks;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    foodsave_auth::runtime::serve::<Jwks>().await
}

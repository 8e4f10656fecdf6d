//! Secrets Manager rotation function for the auth secret; all logic lives in
//! `foodsave_auth::rotation`.

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    foodsave_auth::runtime::serve_rotation().await
}

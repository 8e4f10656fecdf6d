//! The `main` of every function: build the endpoint once, then serve Lambda events.

use std::convert::Infallible;
use std::sync::Arc;

use lambda_http::{Request, service_fn};

use crate::adapters::load_sdk_config;
use crate::api::Endpoint;
use crate::clock::SystemClock;
use crate::config::ProcessEnv;

/// Initialise logging, the SDK and the endpoint `E`, then run the Lambda runtime loop.
/// An init failure is logged with its cause and ends the process, so the platform
/// reports an init error and retries.
pub async fn serve<E: Endpoint>() -> Result<(), lambda_http::Error> {
    crate::telemetry::init();
    let aws = load_sdk_config().await;
    let endpoint = match E::init(&aws, &ProcessEnv, Arc::new(SystemClock)).await {
        Ok(endpoint) => endpoint,
        Err(err) => {
            tracing::error!(function = E::NAME, error = %crate::telemetry::chain(&err), "init failed");
            return Err(err.into());
        }
    };
    let endpoint = &endpoint;
    lambda_http::run(service_fn(move |req: Request| async move {
        Ok::<_, Infallible>(endpoint.handle(req).await)
    }))
    .await
}

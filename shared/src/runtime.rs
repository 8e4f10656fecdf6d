//! The `main` of every function: build the endpoint once, then serve Lambda events.

use std::convert::Infallible;
use std::sync::Arc;

use lambda_http::request::LambdaRequest;
use lambda_http::{Adapter, LambdaEvent, Request, Service, service_fn};

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
        Err(err) => return Err(init_failed(E::NAME, err).await),
    };
    ready(E::NAME);
    let endpoint = &endpoint;
    let handler =
        service_fn(
            move |req: Request| async move { Ok::<_, Infallible>(endpoint.handle(req).await) },
        );
    lambda_http::lambda_runtime::run(Sanitized(Adapter::from(handler))).await
}

/// Runs [`crate::http::event::sanitize`] on each event before `lambda_http` converts it.
struct Sanitized<S>(S);

impl<S> Service<LambdaEvent<LambdaRequest>> for Sanitized<S>
where
    S: Service<LambdaEvent<LambdaRequest>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, mut event: LambdaEvent<LambdaRequest>) -> Self::Future {
        crate::http::event::sanitize(&mut event.payload);
        self.0.call(event)
    }
}

/// The rotation function: Secrets Manager rotation steps and the emergency revocation.
/// Needs `JWKS_SECRET_ID`; `AUTH_SECRET_ID` (for revocation) and
/// `ACCESS_TOKEN_TTL_SECONDS` (for retiring keys) are read when set.
pub async fn serve_rotation() -> Result<(), lambda_http::Error> {
    use crate::config::{Env, TokenConfig, jwks_secret_id};
    use crate::rotation::{KeyRotation, RotationRequest};
    use lambda_http::LambdaEvent;

    crate::telemetry::init();
    let env = ProcessEnv;
    let jwks_secret_id = match jwks_secret_id(&env) {
        Ok(id) => id,
        Err(err) => return Err(init_failed("key-rotation", err).await),
    };
    let access_ttl = match TokenConfig::access_ttl(&env) {
        Ok(ttl) => ttl,
        Err(err) => return Err(init_failed("key-rotation", err).await),
    };
    let aws = load_sdk_config().await;
    let rotation = KeyRotation::new(
        aws_sdk_secretsmanager::Client::new(&aws),
        env.get("AUTH_SECRET_ID").filter(|v| !v.trim().is_empty()),
        jwks_secret_id,
        access_ttl,
        Arc::new(SystemClock),
    );
    let rotation = &rotation;
    ready("key-rotation");
    lambda_http::lambda_runtime::run(lambda_http::service_fn(
        move |event: LambdaEvent<RotationRequest>| async move {
            rotation.handle(event.payload).await.map_err(|err| {
                tracing::error!(error = %crate::telemetry::chain(&err), "rotation failed");
                lambda_http::Error::from(err)
            })
        },
    ))
    .await
}

/// The event relay (CONTRACT §7 "Events"), invoked on a schedule: whatever the event,
/// one run of [`crate::events::Relay`], whose summary line (an EMF metric record) goes
/// to stdout. Needs `TABLE_NAME` and `EVENT_BUS_NAME`.
pub async fn serve_event_relay() -> Result<(), lambda_http::Error> {
    use crate::config::{ConfigError, StoreConfig, event_bus_name};
    use crate::events::Relay;
    use crate::ports::Clock;
    use lambda_http::LambdaEvent;

    crate::telemetry::init();
    let env = ProcessEnv;
    let config = StoreConfig::load(&env).and_then(|store| {
        event_bus_name(&env)?
            .map(|bus| (store.table_name, bus))
            .ok_or(ConfigError::Missing("EVENT_BUS_NAME"))
    });
    let (table, bus) = match config {
        Ok(config) => config,
        Err(err) => return Err(init_failed("event-relay", err).await),
    };
    let aws = load_sdk_config().await;
    let relay = Relay::new(
        crate::adapters::DynamoDbStore::new(aws_sdk_dynamodb::Client::new(&aws), table),
        crate::adapters::EventBus::new(aws_sdk_eventbridge::Client::new(&aws), bus),
        Arc::new(SystemClock),
    );
    let relay = &relay;
    ready("event-relay");
    lambda_http::lambda_runtime::run(lambda_http::service_fn(
        move |event: LambdaEvent<serde_json::Value>| async move {
            let budget = crate::budget::Budget::from_deadline(event.context.deadline);
            match relay.run(&budget).await {
                Ok(report) => {
                    println!("{}", report.line(SystemClock.now()));
                    Ok(serde_json::json!({
                        "delivered": report.delivered,
                        "failed": report.failed,
                        "unreadable": report.unreadable,
                        "oldestPendingAgeSeconds": report.oldest_age_secs,
                    }))
                }
                Err(err) => {
                    tracing::error!(error = %crate::telemetry::chain(&err), "event relay failed");
                    Err(lambda_http::Error::from(err))
                }
            }
        },
    ))
    .await
}

/// The init line: which function, which release.
fn ready(function: &'static str) {
    tracing::info!(function, version = crate::VERSION, "ready");
}

/// An init failure: log it with its cause, report it to the Runtime API's `/init/error`
/// (so Lambda shows the reason, answers 5xx and retries the init), and end the process.
async fn init_failed<E>(function: &'static str, err: E) -> lambda_http::Error
where
    E: std::error::Error + Send + Sync + 'static,
{
    let message = crate::telemetry::chain(&err);
    tracing::error!(function, error = %message, "init failed");
    if let Ok(api) = std::env::var("AWS_LAMBDA_RUNTIME_API") {
        let body = serde_json::json!({ "errorMessage": message, "errorType": "Runtime.InitError" })
            .to_string();
        if let Err(report) = post_init_error(&api, &body).await {
            tracing::warn!(error = %report, "could not report the init error to the Runtime API");
        }
    }
    err.into()
}

/// `POST /2018-06-01/runtime/init/error` over a plain HTTP/1.1 connection.
async fn post_init_error(api: &str, body: &str) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(api).await?;
    let request = format!(
        "POST /2018-06-01/runtime/init/error HTTP/1.1\r\nHost: {api}\r\n\
         Lambda-Runtime-Function-Error-Type: Runtime.InitError\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await?;
    // Wait for the answer, so the report is in before the process exits.
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await?;
    Ok(())
}

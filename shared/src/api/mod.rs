//! One module per endpoint: parse the request, call the domain and the store, answer.
//! Each endpoint is built once per container ([`Endpoint::init`]) and then serves every
//! request of that container.

pub mod account_delete;
pub mod bearer;
pub mod jwks;
pub mod logout;
pub mod otp_send;
pub mod otp_verify;
pub mod sessions;
pub mod token_refresh;

use std::future::Future;
use std::sync::Arc;

use aws_config::SdkConfig;
use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use serde_json::{Value, json};

use crate::adapters::AuthSecret;
use crate::adapters::secrets::{SecretCache, SecretError};
use crate::budget::Budget;
use crate::config::{ConfigError, Env, SecretConfig};
use crate::domain::AuthError;
use crate::http::{CachePolicy, error_response, json_response};
use crate::ports::{Clock, StoreError};

/// Why a function could not start. Logged by the runtime wrapper; the platform answers
/// 5xx and retries the init.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Secret(#[from] SecretError),
}

/// A Lambda function's request handler with its per-container state.
pub trait Endpoint: Sized + Send + Sync {
    /// For logs.
    const NAME: &'static str;

    fn init(
        aws: &SdkConfig,
        env: &dyn Env,
        clock: Arc<dyn Clock>,
    ) -> impl Future<Output = Result<Self, InitError>> + Send;

    fn handle(&self, req: Request) -> impl Future<Output = Response<Body>> + Send;
}

/// Turn a handler's outcome into the response, logging one line per request.
pub(crate) fn respond(
    endpoint: &'static str,
    req_id: Option<String>,
    outcome: Result<Value, AuthError>,
) -> Response<Body> {
    match outcome {
        Ok(body) => {
            tracing::info!(endpoint, status = 200, "ok");
            json_response(StatusCode::OK, &body, CachePolicy::NoStore)
        }
        Err(err) => {
            let resp = error_response(&err, req_id.as_deref());
            if !resp.status().is_server_error() {
                tracing::info!(endpoint, status = resp.status().as_u16(), outcome = %err, "rejected");
            }
            resp
        }
    }
}

/// The token pair of CONTRACT §1.
pub(crate) fn token_pair(access: String, refresh: &str, expires_in: u64) -> Value {
    json!({
        "accessToken": access,
        "refreshToken": refresh,
        "tokenType": "Bearer",
        "expiresIn": expires_in,
    })
}

impl From<StoreError> for AuthError {
    fn from(err: StoreError) -> Self {
        match err {
            // A race that escaped its caller's loop: contention, never a bug (CONTRACT §1).
            StoreError::Unavailable(_) | StoreError::Conflict => {
                AuthError::unavailable("dynamodb", err)
            }
            StoreError::Corrupt(_) | StoreError::Other(_) => AuthError::internal("dynamodb", err),
        }
    }
}

/// A bound on rounds of one request's read-decide-write cycle: each lost race means
/// another writer made progress, so it is reached only under pathological contention.
pub(crate) const MAX_WRITE_RACES: u32 = 16;

pub(crate) fn too_much_contention() -> AuthError {
    AuthError::unavailable("dynamodb", "too many concurrent writers for one item")
}

/// How one round of a read-decide-write cycle ended.
pub(crate) enum Round<S, T> {
    /// Decided: the request's outcome.
    Done(T),
    /// Lost a race to another writer: back off, then decide again from `S` (what the
    /// failed condition returned) or, with `None`, from a fresh read.
    Lost(Option<S>),
    /// Not a race, just a second step (logout with an older token of a chain): decide
    /// again from `S` at once.
    Next(S),
}

/// The one place that settles races for every endpoint (CONTRACT §1): run `round`
/// until it decides, backing off with jitter after each lost race, within the
/// invocation's budget. Races never become errors; only a budget or bound exhausted
/// by contention does (503).
pub(crate) async fn settle<S, T, F, Fut>(budget: &Budget, mut round: F) -> Result<T, AuthError>
where
    F: FnMut(Option<S>) -> Fut,
    Fut: Future<Output = Result<Round<S, T>, AuthError>>,
{
    let mut known = None;
    let mut lost = 0;
    loop {
        match round(known.take()).await? {
            Round::Done(outcome) => return Ok(outcome),
            Round::Next(state) => known = Some(state),
            Round::Lost(state) => {
                if lost >= MAX_WRITE_RACES || !budget.back_off(lost).await {
                    return Err(too_much_contention());
                }
                lost += 1;
                known = state;
            }
        }
    }
}

/// A store call bounded by the invocation's budget: out of time is "unavailable" (503).
pub(crate) async fn within<T>(
    budget: &Budget,
    call: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    budget
        .bound(call)
        .await
        .unwrap_or_else(|out_of_time| Err(StoreError::Unavailable(out_of_time.into())))
}

/// The longest a request waits for a due refresh of a cached secret before going on
/// with the cached value (CONTRACT §1: a failed refresh keeps the cached one).
const SECRET_REFRESH_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// The cached secret, refreshed first if due and Secrets Manager answers in time.
pub(crate) async fn current_secret<T: Send + Sync>(
    budget: &Budget,
    cache: &SecretCache<T>,
) -> Arc<T> {
    let wait = SECRET_REFRESH_WAIT.min(budget.remaining() / 4);
    tokio::time::timeout(wait, cache.get())
        .await
        .unwrap_or_else(|_| cache.cached())
}

/// For signers: the auth secret, re-read within seconds while it has no key active at
/// `now` (an emergency revocation, a first key), with the same bounded wait.
pub(crate) async fn signing_secret(
    budget: &Budget,
    cache: &SecretCache<AuthSecret>,
    now: crate::domain::UnixMillis,
) -> Arc<AuthSecret> {
    let wait = SECRET_REFRESH_WAIT.min(budget.remaining() / 4);
    tokio::time::timeout(wait, cache.get_with_active_key(now))
        .await
        .unwrap_or_else(|_| cache.cached())
}

/// The auth secret, read at init with `parse`; a function that cannot read it fails
/// its init.
pub(crate) async fn load_auth_secret(
    aws: &SdkConfig,
    env: &dyn Env,
    clock: &Arc<dyn Clock>,
    parse: fn(&str) -> Result<AuthSecret, String>,
) -> Result<SecretCache<AuthSecret>, InitError> {
    let id = SecretConfig::load(env)?.auth_secret_id;
    let client = aws_sdk_secretsmanager::Client::new(aws);
    Ok(SecretCache::load(client, id, parse, Arc::clone(clock)).await?)
}

pub(crate) fn rng_failed(_: ring::error::Unspecified) -> AuthError {
    AuthError::internal("random", "system random source failed")
}

//! One module per endpoint: parse the request, call the domain and the store, answer.
//! Each endpoint is built once per container ([`Endpoint::init`]) and then serves every
//! request of that container.

pub mod jwks;
pub mod logout;
pub mod otp_send;
pub mod otp_verify;
pub mod token_refresh;

use std::future::Future;
use std::sync::Arc;

use aws_config::SdkConfig;
use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use serde_json::{Value, json};

use crate::adapters::AuthSecret;
use crate::adapters::secrets::{SecretCache, SecretError};
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
            StoreError::Unavailable(_) => AuthError::unavailable("dynamodb", err),
            StoreError::Conflict | StoreError::Corrupt(_) | StoreError::Other(_) => {
                AuthError::internal("dynamodb", err)
            }
        }
    }
}

/// Bounded retries of an optimistic read-decide-write cycle: each retry means another
/// writer made progress, so this bound is reached only under pathological contention.
pub(crate) const MAX_WRITE_RACES: usize = 16;

pub(crate) fn too_much_contention() -> AuthError {
    AuthError::unavailable("dynamodb", "too many concurrent writers for one item")
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

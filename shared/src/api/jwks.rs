//! GET /.well-known/jwks.json and /.well-known/openid-configuration (CONTRACT §1, §5).
//!
//! The function reads only the public JWKS secret (`JWKS_SECRET_ID`), never the auth
//! secret: it cannot see a private key. The set is served as stored. Both documents are
//! cacheable for 300 s; the secret is re-read at most every 300 s.

use std::sync::Arc;

use aws_config::SdkConfig;
use lambda_http::http::{Method, StatusCode};
use lambda_http::{Body, Request, Response};
use serde_json::{Value, json};

use super::{Endpoint, InitError};
use crate::adapters::secrets::SecretCache;
use crate::config::{Env, issuer, jwks_secret_id};
use crate::domain::AuthError;
use crate::http::{CachePolicy, error_response, json_response};
use crate::ports::Clock;

/// `Cache-Control: public, max-age=300` for both documents.
pub const MAX_AGE_SECONDS: u32 = 300;

pub struct Jwks {
    keys: SecretCache<Value>,
    discovery: Value,
}

/// The stored set must be a JSON object with a `keys` array; it is served as is.
pub fn parse_jwks(raw: &str) -> Result<Value, String> {
    let value: Value = serde_json::from_str(raw).map_err(|_| "not JSON".to_owned())?;
    if value.get("keys").is_some_and(Value::is_array) {
        Ok(value)
    } else {
        Err("expected {\"keys\":[...]}".into())
    }
}

/// The discovery document for an issuer (enough for an API Gateway JWT authorizer).
pub fn discovery_document(issuer: &str) -> Value {
    json!({
        "issuer": issuer,
        "jwks_uri": format!("{issuer}/.well-known/jwks.json"),
        "id_token_signing_alg_values_supported": ["RS256"],
        "subject_types_supported": ["public"],
        "response_types_supported": ["token"],
    })
}

impl Jwks {
    pub fn new(keys: SecretCache<Value>, issuer: &str) -> Self {
        Self {
            keys,
            discovery: discovery_document(issuer),
        }
    }

    async fn serve(&self, req: &Request) -> Result<Response<Body>, AuthError> {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return Err(AuthError::MethodNotAllowed { allow: "GET, HEAD" });
        }
        let cache = CachePolicy::Public {
            max_age: MAX_AGE_SECONDS,
        };
        // Whatever prefix the path carries (stage, custom-domain base path).
        let path = req.uri().path().trim_end_matches('/');
        if path.ends_with("/.well-known/jwks.json") {
            Ok(json_response(
                StatusCode::OK,
                &*self.keys.get().await,
                cache,
            ))
        } else if path.ends_with("/.well-known/openid-configuration") {
            Ok(json_response(StatusCode::OK, &self.discovery, cache))
        } else {
            Err(AuthError::NotFound)
        }
    }
}

impl Endpoint for Jwks {
    const NAME: &'static str = "jwks";

    async fn init(
        aws: &SdkConfig,
        env: &dyn Env,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, InitError> {
        let jwks_secret_id = jwks_secret_id(env)?;
        let issuer = issuer(env)?;
        let keys = SecretCache::load(
            aws_sdk_secretsmanager::Client::new(aws),
            jwks_secret_id,
            parse_jwks,
            clock,
        )
        .await?;
        Ok(Self::new(keys, &issuer))
    }

    async fn handle(&self, req: Request) -> Response<Body> {
        self.serve(&req)
            .await
            .unwrap_or_else(|err| error_response(&err, crate::http::request_id(&req).as_deref()))
    }
}

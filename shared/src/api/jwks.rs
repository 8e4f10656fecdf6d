//! GET /.well-known/jwks.json and /.well-known/openid-configuration (CONTRACT §1, §5).
//!
//! The function reads only the public JWKS secret (`JWKS_SECRET_ID`), never the auth
//! secret: it cannot see a private key. The set is served as stored. Both documents are
//! cacheable for 300 s; the secret is re-read at most every 300 s.
//!
//! Both bodies are rendered once (the set at each read of its secret, the discovery
//! document at init), not per request: a request only copies the text out.

use std::sync::Arc;

use aws_config::SdkConfig;
use lambda_http::http::{HeaderValue, Method, header};
use lambda_http::{Body, Request, Response};
use serde_json::{Value, json};

use super::{Endpoint, InitError};
use crate::adapters::secrets::SecretCache;
use crate::config::{Env, issuer, jwks_secret_id};
use crate::domain::AuthError;
use crate::http::error_response;
use crate::ports::Clock;

/// `Cache-Control: public, max-age=300` for both documents.
pub const MAX_AGE_SECONDS: u32 = 300;

/// The `Cache-Control` value of both documents ([`MAX_AGE_SECONDS`]).
const CACHE_CONTROL: &str = "public, max-age=300";

pub struct Jwks {
    /// The stored set, as served.
    keys: SecretCache<String>,
    /// The discovery document, as served.
    discovery: String,
}

/// The stored set checked by [`parse_jwks`], as the body it is served as.
pub fn render_jwks(raw: &str) -> Result<String, String> {
    parse_jwks(raw).map(|set| set.to_string())
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
    /// `keys` holds the set as [`render_jwks`] renders it.
    pub fn new(keys: SecretCache<String>, issuer: &str) -> Self {
        Self {
            keys,
            discovery: discovery_document(issuer).to_string(),
        }
    }

    async fn serve(&self, req: &Request) -> Result<Response<Body>, AuthError> {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return Err(AuthError::MethodNotAllowed { allow: "GET, HEAD" });
        }
        // Whatever prefix the path carries (stage, custom-domain base path).
        let path = req.uri().path().trim_end_matches('/');
        if path.ends_with("/.well-known/jwks.json") {
            Ok(cacheable_json(self.keys.get().await.as_str().to_owned()))
        } else if path.ends_with("/.well-known/openid-configuration") {
            Ok(cacheable_json(self.discovery.clone()))
        } else {
            Err(AuthError::NotFound)
        }
    }
}

/// A 200 with a rendered JSON body, cacheable for [`MAX_AGE_SECONDS`]: the headers of
/// `http::json_response` with `CachePolicy::Public`.
fn cacheable_json(body: String) -> Response<Body> {
    let mut response = Response::new(Body::Text(body));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(CACHE_CONTROL),
    );
    response
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
            render_jwks,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_header_says_max_age_seconds() {
        assert_eq!(CACHE_CONTROL, format!("public, max-age={MAX_AGE_SECONDS}"));
    }

    #[test]
    fn the_set_is_served_compact_as_stored_and_a_set_without_keys_is_refused() {
        assert_eq!(
            render_jwks("{ \"keys\": [ {\"kid\": \"a\"} ] }").as_deref(),
            Ok("{\"keys\":[{\"kid\":\"a\"}]}")
        );
        assert!(render_jwks("{\"other\": []}").is_err());
        assert!(render_jwks("not json").is_err());
    }
}

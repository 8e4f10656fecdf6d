//! RS256 access tokens (CONTRACT §4, RFC 9068): header `typ: at+jwt` and `kid`.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ring::rand::SecureRandom;
use serde::Serialize;

use super::secrets::AuthSecret;
use crate::config::TokenConfig;
use crate::domain::session::Session;
use crate::domain::{AuthError, UnixMillis};

/// Claims of an access token. `aud` is a single string; `iat`/`exp` are NumericDates.
#[derive(Debug, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct AccessClaims {
    pub iss: String,
    pub aud: String,
    pub sub: String,
    pub phone_number: String,
    pub sid: String,
    pub iat: u64,
    pub exp: u64,
    pub jti: String,
    pub client_id: String,
}

/// Signs access tokens with the active key of the auth secret.
#[derive(Debug, Clone)]
pub struct JwtIssuer {
    config: TokenConfig,
}

impl JwtIssuer {
    pub fn new(config: TokenConfig) -> Self {
        Self { config }
    }

    pub fn access_ttl_seconds(&self) -> u64 {
        u64::from(self.config.access_ttl_seconds.get())
    }

    pub fn issue(
        &self,
        secret: &AuthSecret,
        rng: &dyn SecureRandom,
        now: UnixMillis,
        session: &Session,
    ) -> Result<String, AuthError> {
        let key = secret
            .active_key(now)
            .ok_or_else(|| AuthError::internal("signing", "no signing key is active"))?;
        let mut jti = [0u8; 16];
        rng.fill(&mut jti)
            .map_err(|_| AuthError::internal("signing", "random source failed"))?;
        let iat = now.as_secs();
        let claims = AccessClaims {
            iss: self.config.issuer.clone(),
            aud: self.config.audience.clone(),
            sub: session.sub.clone(),
            phone_number: session.phone.clone(),
            sid: session.id.as_str().to_owned(),
            iat,
            exp: iat.saturating_add(self.access_ttl_seconds()),
            jti: URL_SAFE_NO_PAD.encode(jti),
            client_id: self.config.client_id.clone(),
        };
        let mut header = Header::new(Algorithm::RS256);
        header.typ = Some("at+jwt".into());
        header.kid = Some(key.kid.clone());
        jsonwebtoken::encode(&header, &claims, &key.key)
            .map_err(|e| AuthError::internal("signing", e))
    }
}

/// Sign a throwaway message: proves at parse time that a key can sign RS256, so a bad
/// key fails the secret's load instead of a login.
pub(crate) fn check_signing_key(key: &EncodingKey) -> Result<(), jsonwebtoken::errors::Error> {
    jsonwebtoken::encode(&Header::new(Algorithm::RS256), &serde_json::json!({}), key).map(|_| ())
}

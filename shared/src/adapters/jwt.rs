//! RS256 access tokens (CONTRACT §4, RFC 9068): header `typ: at+jwt` and `kid`.
//!
//! Signed here as a compact JWS (RFC 7515 §7.1): base64url(header) `.` base64url(claims)
//! `.` base64url(RSASSA-PKCS1-v1_5 SHA-256 signature of the first two, RFC 7518 §3.3),
//! with the key parsed once when the secret was read ([`crate::keys::RsaPrivateKey`]).
//! jsonwebtoken cannot sign with a parsed key: it re-parses the DER at every signature.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SecureRandom;
use serde::Serialize;

use super::secrets::{AuthSecret, SigningKey};
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
    /// When the OTP verify that started the session happened; unchanged by refreshes
    /// (CONTRACT §4, RFC 9068 §2.2.1), so a deletion can ask for a recent one (§7).
    pub auth_time: u64,
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
            auth_time: session.created_at.as_secs(),
        };
        sign_jws(key, rng, &claims)
    }
}

/// The JOSE header of an access token (RFC 7515 §4, RFC 9068 §2.1).
#[derive(Serialize)]
struct AccessHeader<'a> {
    alg: &'static str,
    typ: &'static str,
    kid: &'a str,
}

/// The compact JWS of `claims`, signed with `key`'s parsed private key.
fn sign_jws(
    key: &SigningKey,
    rng: &dyn SecureRandom,
    claims: &AccessClaims,
) -> Result<String, AuthError> {
    let header = AccessHeader {
        alg: "RS256",
        typ: "at+jwt",
        kid: &key.kid,
    };
    let header = serde_json::to_vec(&header).map_err(|e| AuthError::internal("signing", e))?;
    let claims = serde_json::to_vec(claims).map_err(|e| AuthError::internal("signing", e))?;
    // About 900 bytes with a 2048-bit key: one allocation.
    let mut token = String::with_capacity(1024);
    URL_SAFE_NO_PAD.encode_string(header, &mut token);
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(claims, &mut token);
    let signature = key
        .key
        .sign_rs256(rng, token.as_bytes())
        .map_err(|e| AuthError::internal("signing", e))?;
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(signature, &mut token);
    Ok(token)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use std::num::NonZeroU32;
    use std::sync::Arc;

    use jsonwebtoken::jwk::Jwk;
    use jsonwebtoken::{Algorithm, DecodingKey, Validation};
    use ring::rand::SystemRandom;
    use secrecy::ExposeSecret;
    use serde_json::{Value, json};

    use super::*;
    use crate::domain::RefreshToken;
    use crate::domain::session::SessionId;
    use crate::keys::{GeneratedKey, generate_signing_key, parses_on_this_thread};

    const ISSUER: &str = "https://api.foodsave.kz/api/v1/auth";
    const PEPPER: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="; // 32 bytes
    const NOW_SECS: u64 = 1_767_225_600;

    fn issuer() -> JwtIssuer {
        JwtIssuer::new(TokenConfig {
            issuer: ISSUER.into(),
            audience: "foodsave".into(),
            client_id: "foodsave-app".into(),
            access_ttl_seconds: NonZeroU32::new(3600).unwrap(),
            refresh_ttl_seconds: NonZeroU32::new(2_592_000).unwrap(),
            session_max_seconds: NonZeroU32::new(31_536_000).unwrap(),
            refresh_reuse_grace_seconds: 10,
        })
    }

    fn secret_of(keys: &[&GeneratedKey]) -> AuthSecret {
        let keys: Vec<Value> = keys
            .iter()
            .map(|k| json!({"kid": k.kid, "privateKeyPem": k.private_key_pem.expose_secret()}))
            .collect();
        AuthSecret::parse(&json!({"otpPepper": PEPPER, "signingKeys": keys}).to_string()).unwrap()
    }

    fn session(rng: &SystemRandom) -> Session {
        let id = SessionId::generate(rng, &crate::domain::random_id(rng).unwrap()).unwrap();
        let first = RefreshToken::generate(rng, &id).unwrap();
        let now = UnixMillis::from_secs(NOW_SECS);
        Session::start(
            id,
            "user-1".into(),
            "+77001234567".into(),
            &first,
            now,
            86_400,
            3600,
        )
    }

    /// Verified with jsonwebtoken (the library relying parties use) and the key's public JWK.
    fn decode(
        token: &str,
        public_jwk: &Value,
    ) -> jsonwebtoken::errors::Result<jsonwebtoken::TokenData<AccessClaims>> {
        let jwk: Jwk = serde_json::from_value(public_jwk.clone()).unwrap();
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_audience(&["foodsave"]);
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
        // The fixed clock of these tests is in the past of the wall clock jsonwebtoken reads.
        validation.validate_exp = false;
        jsonwebtoken::decode(token, &DecodingKey::from_jwk(&jwk).unwrap(), &validation)
    }

    fn segment(token: &str, i: usize) -> Value {
        let part = token.split('.').nth(i).unwrap();
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
    }

    #[test]
    fn a_token_verifies_with_the_keys_public_jwk_and_a_tampered_one_does_not() {
        let rng = SystemRandom::new();
        let key = generate_signing_key().unwrap();
        let secret = secret_of(&[&key]);
        let session = session(&rng);
        let token = issuer()
            .issue(&secret, &rng, UnixMillis::from_secs(NOW_SECS), &session)
            .unwrap();

        assert_eq!(token.split('.').count(), 3);
        assert_eq!(
            segment(&token, 0),
            json!({"alg": "RS256", "typ": "at+jwt", "kid": key.kid})
        );
        let data = decode(&token, &key.public_jwk).unwrap();
        assert_eq!(data.header.alg, Algorithm::RS256);
        assert_eq!(data.header.typ.as_deref(), Some("at+jwt"));
        assert_eq!(data.header.kid.as_deref(), Some(key.kid.as_str()));
        let jti = data.claims.jti.clone();
        assert_eq!(URL_SAFE_NO_PAD.decode(&jti).unwrap().len(), 16);
        assert_eq!(
            data.claims,
            AccessClaims {
                iss: ISSUER.into(),
                aud: "foodsave".into(),
                sub: "user-1".into(),
                phone_number: "+77001234567".into(),
                sid: session.id.as_str().to_owned(),
                iat: NOW_SECS,
                exp: NOW_SECS + 3600,
                jti,
                client_id: "foodsave-app".into(),
                auth_time: NOW_SECS,
            }
        );
        // Exactly these claims, nothing more.
        let mut names: Vec<String> = segment(&token, 1)
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "aud",
                "auth_time",
                "client_id",
                "exp",
                "iat",
                "iss",
                "jti",
                "phone_number",
                "sid",
                "sub"
            ]
        );

        // One bit of the signature flipped.
        let (input, signature) = token.rsplit_once('.').unwrap();
        let mut bytes = URL_SAFE_NO_PAD.decode(signature).unwrap();
        bytes[100] ^= 0x01;
        let tampered = format!("{input}.{}", URL_SAFE_NO_PAD.encode(&bytes));
        assert!(decode(&tampered, &key.public_jwk).is_err());
        // Claims changed under the original signature.
        let mut claims = segment(&token, 1);
        claims["sub"] = json!("user-2");
        let forged = format!(
            "{}.{}.{signature}",
            token.split('.').next().unwrap(),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        assert!(decode(&forged, &key.public_jwk).is_err());
        // Another key's JWK under the same kid.
        let mut other = generate_signing_key().unwrap().public_jwk;
        other["kid"] = json!(key.kid);
        assert!(decode(&token, &other).is_err());
    }

    #[test]
    fn each_key_is_parsed_once_when_the_secret_is_read_and_never_at_signing() {
        let rng = SystemRandom::new();
        let (old, new) = (
            generate_signing_key().unwrap(),
            generate_signing_key().unwrap(),
        );
        let before = parses_on_this_thread();
        let secret = secret_of(&[&old, &new]);
        assert_eq!(parses_on_this_thread() - before, 2, "one parse per key");

        let active = secret.active_key(UnixMillis::from_secs(NOW_SECS)).unwrap();
        let held = Arc::clone(&active.key);
        let issuer = issuer();
        let session = session(&rng);
        let tokens: Vec<String> = (0..2)
            .map(|_| {
                issuer
                    .issue(&secret, &rng, UnixMillis::from_secs(NOW_SECS), &session)
                    .unwrap()
            })
            .collect();
        assert_eq!(parses_on_this_thread() - before, 2, "no parse at signing");
        // The secret still holds the same parsed key, and both tokens are its signatures.
        assert!(Arc::ptr_eq(
            &held,
            &secret
                .active_key(UnixMillis::from_secs(NOW_SECS))
                .unwrap()
                .key
        ));
        assert_ne!(tokens[0], tokens[1], "each token has its own jti");
        // Both keys active since 0: the first listed signs (CONTRACT §5).
        assert_eq!(active.kid, old.kid);
        for token in &tokens {
            assert_eq!(segment(token, 0)["kid"], json!(old.kid));
            decode(token, &old.public_jwk).unwrap();
        }
    }
}

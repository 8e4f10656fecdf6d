//! Signing-key rotation for the auth secret, as a Secrets Manager rotation function
//! (createSecret → setSecret → testSecret → finishSecret), and the emergency revocation.
//!
//! Timeline of a key (CONTRACT §5): a new key is published at once (the JWKS secret is
//! written in setSecret, before the auth secret's new version becomes current) with an
//! `activeFrom` [`PUBLISH_LEAD_SECONDS`] ahead, so every JWKS cache (API Gateway keeps
//! one up to 2 hours) holds it before the first token it signs. The very first key is
//! active at once. A key is dropped once a newer key has been active long enough that
//! no token it signed can still be live: access-token lifetime plus [`RETIRE_MARGIN_SECONDS`].

use std::sync::Arc;

use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::error::{DisplayErrorContext, ProvideErrorMetadata};
use base64::Engine;
use ring::rand::SecureRandom;
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::adapters::AuthSecret;
use crate::adapters::secrets::{SECRET_REFRESH_SECONDS, fetch_secret_string};
use crate::api::jwks::parse_jwks;
use crate::domain::UnixMillis;
use crate::keys::{GeneratedKey, KeyError, generate_signing_key, public_jwk_from_pem};
use crate::ports::Clock;

/// API Gateway caches a JWKS up to 2 hours; our JWKS response is cacheable 300 s and the
/// `jwks` function caches its secret up to [`SECRET_REFRESH_SECONDS`].
pub const PUBLISH_LEAD_SECONDS: u64 = 2 * 3600 + 300 + SECRET_REFRESH_SECONDS;
/// After a newer key becomes active, signers may still hold the old one for a secret
/// refresh period; plus clock skew.
pub const RETIRE_MARGIN_SECONDS: u64 = SECRET_REFRESH_SECONDS + 300;
/// Decoded pepper length generated when the secret has none.
const PEPPER_BYTES: usize = 32;

const AWSCURRENT: &str = "AWSCURRENT";
const AWSPENDING: &str = "AWSPENDING";

#[derive(Debug, thiserror::Error)]
pub enum RotationError {
    #[error("secrets manager call failed: {0}")]
    SecretsManager(String),
    #[error("secret {0} is not valid JSON of the expected shape")]
    Malformed(String),
    #[error("pending version failed its test: {0}")]
    TestFailed(String),
    #[error("unknown rotation step {0:?}")]
    UnknownStep(String),
    #[error("no key with kid {0:?} in the secret")]
    UnknownKid(String),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("random source failed")]
    Random,
}

fn sm_error<E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static>(
    err: aws_sdk_secretsmanager::error::SdkError<E>,
) -> RotationError {
    RotationError::SecretsManager(DisplayErrorContext(err).to_string())
}

fn is_not_found<E: ProvideErrorMetadata>(err: &aws_sdk_secretsmanager::error::SdkError<E>) -> bool {
    err.as_service_error()
        .and_then(ProvideErrorMetadata::code)
        .is_some_and(|c| c == "ResourceNotFoundException")
}

/// The auth secret's document, with unknown fields kept as they are.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct KeyDoc {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub otp_pepper: Option<String>,
    #[serde(default)]
    pub signing_keys: Vec<KeyEntry>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct KeyEntry {
    pub kid: String,
    pub private_key_pem: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_from: Option<u64>,
}

impl KeyEntry {
    fn from_generated(key: GeneratedKey, active_from: u64) -> Self {
        Self {
            kid: key.kid,
            private_key_pem: key.private_key_pem.expose_secret().to_owned(),
            active_from: Some(active_from),
        }
    }

    fn active_from(&self) -> u64 {
        self.active_from.unwrap_or(0)
    }
}

fn pepper_is_valid(pepper: Option<&str>) -> bool {
    pepper
        .and_then(|p| {
            base64::engine::general_purpose::STANDARD
                .decode(p.trim())
                .ok()
        })
        .is_some_and(|bytes| bytes.len() >= PEPPER_BYTES)
}

fn new_pepper() -> Result<String, RotationError> {
    let mut bytes = [0u8; PEPPER_BYTES];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| RotationError::Random)?;
    Ok(base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// The next version of the document at `now` (epoch seconds): pepper ensured, retired keys
/// dropped, and a new key published ahead of its activation unless one is already waiting.
pub fn rotate(
    doc: &KeyDoc,
    now: u64,
    access_ttl_secs: u64,
    new_key: impl FnOnce() -> Result<GeneratedKey, KeyError>,
) -> Result<KeyDoc, RotationError> {
    let mut next = doc.clone();
    if !pepper_is_valid(next.otp_pepper.as_deref()) {
        next.otp_pepper = Some(new_pepper()?);
    }
    let keys = &doc.signing_keys;
    next.signing_keys = keys
        .iter()
        .filter(|k| {
            // The earliest newer key that is already active supersedes k.
            let superseded_at = keys
                .iter()
                .map(KeyEntry::active_from)
                .filter(|&t| t > k.active_from() && t <= now)
                .min();
            superseded_at.is_none_or(|t| now < t + access_ttl_secs + RETIRE_MARGIN_SECONDS)
        })
        .cloned()
        .collect();
    let waiting = next.signing_keys.iter().any(|k| k.active_from() > now);
    if next.signing_keys.is_empty() {
        next.signing_keys
            .push(KeyEntry::from_generated(new_key()?, now));
    } else if !waiting {
        next.signing_keys.push(KeyEntry::from_generated(
            new_key()?,
            now + PUBLISH_LEAD_SECONDS,
        ));
    }
    Ok(next)
}

/// Emergency: drop the key `kid` and sign with a fresh key from `now` on. Tokens it
/// signed stop verifying once caches refresh; that is the point.
pub fn revoke(
    doc: &KeyDoc,
    kid: &str,
    now: u64,
    new_key: impl FnOnce() -> Result<GeneratedKey, KeyError>,
) -> Result<KeyDoc, RotationError> {
    if !doc.signing_keys.iter().any(|k| k.kid == kid) {
        return Err(RotationError::UnknownKid(kid.to_owned()));
    }
    let mut next = doc.clone();
    next.signing_keys.retain(|k| k.kid != kid);
    // First in the list wins a tie on activeFrom (CONTRACT §5).
    next.signing_keys
        .insert(0, KeyEntry::from_generated(new_key()?, now));
    if !pepper_is_valid(next.otp_pepper.as_deref()) {
        next.otp_pepper = Some(new_pepper()?);
    }
    Ok(next)
}

/// The public JWK Set of every key in the document (CONTRACT §5).
pub fn jwks_of(doc: &KeyDoc) -> Result<Value, RotationError> {
    let keys = doc
        .signing_keys
        .iter()
        .map(|k| public_jwk_from_pem(&k.kid, &k.private_key_pem))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(json!({ "keys": keys }))
}

/// A Secrets Manager rotation request.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RotationEvent {
    pub secret_id: String,
    pub client_request_token: String,
    pub step: String,
}

/// An invocation of the rotation function: a rotation step from Secrets Manager, or the
/// documented emergency revocation (`{"revokeKid":"<kid>"}`, on the auth secret the
/// function is configured with).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RotationRequest {
    Step(RotationEvent),
    Revoke {
        #[serde(rename = "revokeKid")]
        revoke_kid: String,
    },
}

/// Drives the rotation against Secrets Manager, keeping the public JWKS secret in step.
pub struct KeyRotation {
    client: Client,
    auth_secret_id: Option<String>,
    jwks_secret_id: String,
    access_ttl_secs: u64,
    clock: Arc<dyn Clock>,
}

impl KeyRotation {
    pub fn new(
        client: Client,
        auth_secret_id: Option<String>,
        jwks_secret_id: String,
        access_ttl_secs: u64,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            client,
            auth_secret_id,
            jwks_secret_id,
            access_ttl_secs,
            clock,
        }
    }

    pub async fn handle(&self, request: RotationRequest) -> Result<Value, RotationError> {
        match request {
            RotationRequest::Step(event) => {
                self.step(&event).await?;
                Ok(json!({ "step": event.step, "ok": true }))
            }
            RotationRequest::Revoke { revoke_kid } => {
                let secret_id = self.auth_secret_id.clone().ok_or_else(|| {
                    RotationError::Malformed("AUTH_SECRET_ID is not configured".into())
                })?;
                let new_kid = self.revoke_key(&secret_id, &revoke_kid).await?;
                Ok(json!({ "revoked": revoke_kid, "activeKid": new_kid }))
            }
        }
    }

    pub async fn step(&self, event: &RotationEvent) -> Result<(), RotationError> {
        let (id, token) = (&event.secret_id, &event.client_request_token);
        tracing::info!(step = %event.step, secret = %id, "rotation step");
        match event.step.as_str() {
            "createSecret" => self.create_secret(id, token).await,
            "setSecret" => self.set_secret(id, token).await,
            "testSecret" => self.test_secret(id, token).await,
            "finishSecret" => self.finish_secret(id, token).await,
            other => Err(RotationError::UnknownStep(other.to_owned())),
        }
    }

    /// All four steps with a fresh token, as Secrets Manager would run them. Used by local
    /// runs and tests, where nothing invokes rotation functions.
    pub async fn rotate_now(&self, secret_id: &str) -> Result<String, RotationError> {
        let mut bytes = [0u8; 16];
        ring::rand::SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| RotationError::Random)?;
        let token = bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
        for step in ["createSecret", "setSecret", "testSecret", "finishSecret"] {
            self.step(&RotationEvent {
                secret_id: secret_id.to_owned(),
                client_request_token: token.clone(),
                step: step.to_owned(),
            })
            .await?;
        }
        Ok(token)
    }

    fn now_secs(&self) -> u64 {
        self.clock.now().as_secs()
    }

    async fn read(
        &self,
        id: &str,
        version: Option<&str>,
        stage: &str,
    ) -> Result<Option<KeyDoc>, RotationError> {
        let mut get = self
            .client
            .get_secret_value()
            .secret_id(id)
            .version_stage(stage);
        if let Some(v) = version {
            get = get.version_id(v);
        }
        match get.send().await {
            Ok(out) => {
                let raw = out.secret_string.unwrap_or_default();
                if raw.trim().is_empty() {
                    return Ok(Some(KeyDoc::default()));
                }
                serde_json::from_str(&raw)
                    .map(Some)
                    .map_err(|_| RotationError::Malformed(id.to_owned()))
            }
            Err(err) if is_not_found(&err) => Ok(None),
            Err(err) => Err(sm_error(err)),
        }
    }

    async fn create_secret(&self, id: &str, token: &str) -> Result<(), RotationError> {
        if self.read(id, Some(token), AWSPENDING).await?.is_some() {
            return Ok(()); // A retried step: the pending version is already there.
        }
        let current = self.read(id, None, AWSCURRENT).await?.unwrap_or_default();
        let next = rotate(
            &current,
            self.now_secs(),
            self.access_ttl_secs,
            generate_signing_key,
        )?;
        self.write(id, Some(token), &next).await
    }

    /// Write `doc` as a new version of `id`: staged AWSPENDING under the rotation's
    /// `token`, or (no token) straight to AWSCURRENT.
    async fn write(
        &self,
        id: &str,
        token: Option<&str>,
        doc: &KeyDoc,
    ) -> Result<(), RotationError> {
        let body =
            serde_json::to_string(doc).map_err(|_| RotationError::Malformed(id.to_owned()))?;
        let mut put = self
            .client
            .put_secret_value()
            .secret_id(id)
            .secret_string(body);
        if let Some(token) = token {
            put = put.client_request_token(token).version_stages(AWSPENDING);
        }
        put.send().await.map_err(sm_error)?;
        Ok(())
    }

    async fn read_pending(&self, id: &str, token: &str) -> Result<KeyDoc, RotationError> {
        self.read(id, Some(token), AWSPENDING)
            .await?
            .ok_or_else(|| RotationError::TestFailed("no pending version".into()))
    }

    /// Publish the pending version's public keys before it can become current.
    async fn set_secret(&self, id: &str, token: &str) -> Result<(), RotationError> {
        self.publish_jwks(&self.read_pending(id, token).await?)
            .await
    }

    async fn publish_jwks(&self, doc: &KeyDoc) -> Result<(), RotationError> {
        let jwks = jwks_of(doc)?;
        self.client
            .put_secret_value()
            .secret_id(&self.jwks_secret_id)
            .secret_string(jwks.to_string())
            .send()
            .await
            .map_err(sm_error)?;
        Ok(())
    }

    async fn test_secret(&self, id: &str, token: &str) -> Result<(), RotationError> {
        let pending = self.read_pending(id, token).await?;
        let raw =
            serde_json::to_string(&pending).map_err(|_| RotationError::Malformed(id.to_owned()))?;
        let parsed = AuthSecret::parse(&raw).map_err(RotationError::TestFailed)?;
        if parsed.pepper().is_none() {
            return Err(RotationError::TestFailed("no otpPepper".into()));
        }
        if parsed
            .active_key(UnixMillis::from_secs(self.now_secs()))
            .is_none()
        {
            return Err(RotationError::TestFailed("no key is active".into()));
        }
        let published = fetch_secret_string(&self.client, &self.jwks_secret_id)
            .await
            .map_err(|e| RotationError::SecretsManager(e.to_string()))?;
        let published = parse_jwks(&published)
            .map_err(|_| RotationError::Malformed(self.jwks_secret_id.clone()))?;
        let kids: Vec<&str> = published
            .get("keys")
            .and_then(Value::as_array)
            .map(|keys| {
                keys.iter()
                    .filter_map(|k| k.get("kid").and_then(Value::as_str))
                    .collect()
            })
            .unwrap_or_default();
        if let Some(missing) = pending
            .signing_keys
            .iter()
            .find(|k| !kids.contains(&k.kid.as_str()))
        {
            return Err(RotationError::TestFailed(format!(
                "key {} is not in the JWKS",
                missing.kid
            )));
        }
        Ok(())
    }

    async fn finish_secret(&self, id: &str, token: &str) -> Result<(), RotationError> {
        let described = self
            .client
            .describe_secret()
            .secret_id(id)
            .send()
            .await
            .map_err(sm_error)?;
        let versions = described.version_ids_to_stages();
        let stages_of = |version: &str| -> Vec<String> {
            versions
                .and_then(|v| v.get(version))
                .cloned()
                .unwrap_or_default()
        };
        let current = versions.and_then(|v| {
            v.iter()
                .find(|(_, stages)| stages.iter().any(|s| s == AWSCURRENT))
                .map(|(version, _)| version.clone())
        });
        if current.as_deref() != Some(token) {
            self.client
                .update_secret_version_stage()
                .secret_id(id)
                .version_stage(AWSCURRENT)
                .move_to_version_id(token)
                .set_remove_from_version_id(current)
                .send()
                .await
                .map_err(sm_error)?;
        }
        // The first version of a secret is made AWSCURRENT by PutSecretValue itself.
        if stages_of(token).iter().any(|s| s == AWSPENDING) {
            self.client
                .update_secret_version_stage()
                .secret_id(id)
                .version_stage(AWSPENDING)
                .remove_from_version_id(token)
                .send()
                .await
                .map_err(sm_error)?;
        }
        tracing::info!(secret = %id, "rotation finished");
        Ok(())
    }

    /// The emergency path: drop `kid` from both secrets and sign with a fresh key at once.
    /// Returns the new key's kid.
    pub async fn revoke_key(&self, secret_id: &str, kid: &str) -> Result<String, RotationError> {
        let current = self
            .read(secret_id, None, AWSCURRENT)
            .await?
            .ok_or_else(|| RotationError::Malformed(secret_id.to_owned()))?;
        let next = revoke(&current, kid, self.now_secs(), generate_signing_key)?;
        let new_kid = next
            .signing_keys
            .first()
            .map(|k| k.kid.clone())
            .unwrap_or_default();
        // Publish first: the new key must verify before anything signs with it.
        self.publish_jwks(&next).await?;
        self.write(secret_id, None, &next).await?;
        tracing::warn!(revoked = kid, active = %new_kid, "signing key revoked");
        Ok(new_kid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: u64 = 3600;

    fn key(kid: &str) -> impl FnOnce() -> Result<GeneratedKey, KeyError> + use<> {
        let kid = kid.to_owned();
        move || {
            Ok(GeneratedKey {
                kid,
                private_key_pem: secrecy::SecretString::from("pem"),
                public_jwk: json!({}),
            })
        }
    }

    fn kids(doc: &KeyDoc) -> Vec<(&str, u64)> {
        doc.signing_keys
            .iter()
            .map(|k| (k.kid.as_str(), k.active_from()))
            .collect()
    }

    #[test]
    fn the_first_rotation_creates_a_pepper_and_a_key_active_at_once() {
        let doc = rotate(&KeyDoc::default(), 1_000, TTL, key("a")).unwrap();
        assert!(pepper_is_valid(doc.otp_pepper.as_deref()));
        assert_eq!(kids(&doc), vec![("a", 1_000)]);
    }

    #[test]
    fn later_keys_are_published_ahead_and_the_old_key_is_dropped_after_its_tokens_die() {
        let first = rotate(&KeyDoc::default(), 1_000, TTL, key("a")).unwrap();
        let second = rotate(&first, 10_000, TTL, key("b")).unwrap();
        let b_from = 10_000 + PUBLISH_LEAD_SECONDS;
        assert_eq!(kids(&second), vec![("a", 1_000), ("b", b_from)]);
        assert_eq!(second.otp_pepper, first.otp_pepper);
        // A rotation while b still waits adds nothing.
        let waiting = rotate(&second, 10_500, TTL, key("c")).unwrap();
        assert_eq!(kids(&waiting), kids(&second));
        // Just before a's last token can have expired: a stays.
        let keep = rotate(
            &second,
            b_from + TTL + RETIRE_MARGIN_SECONDS - 1,
            TTL,
            key("c"),
        )
        .unwrap();
        assert!(kids(&keep).iter().any(|(k, _)| *k == "a"));
        // From then on, a goes.
        let drop = rotate(&second, b_from + TTL + RETIRE_MARGIN_SECONDS, TTL, key("c")).unwrap();
        assert_eq!(kids(&drop).first().map(|(k, _)| *k), Some("b"));
        assert!(!kids(&drop).iter().any(|(k, _)| *k == "a"));
        assert_eq!(kids(&drop).len(), 2);
    }

    #[test]
    fn revoking_drops_the_key_and_puts_a_fresh_one_first_active_now() {
        let first = rotate(&KeyDoc::default(), 1_000, TTL, key("a")).unwrap();
        let revoked = revoke(&first, "a", 2_000, key("z")).unwrap();
        assert_eq!(kids(&revoked), vec![("z", 2_000)]);
        assert!(matches!(
            revoke(&first, "nope", 2_000, key("z")),
            Err(RotationError::UnknownKid(_))
        ));
    }

    #[test]
    fn the_deployed_initial_value_keeps_its_generated_pepper() {
        // template.yaml's GenerateSecretString: 64 alphanumerics under otpPepper.
        let initial: KeyDoc = serde_json::from_value(json!({
            "signingKeys": [],
            "otpPepper": "Q7pXk2LmN9vB4cR8sT1wY6zA3dF5gH0jK2lM4nP6qR8sT0uV2wX4yZ6aB8cD0eF2"
        }))
        .unwrap();
        let doc = rotate(&initial, 1_000, TTL, key("a")).unwrap();
        assert_eq!(doc.otp_pepper, initial.otp_pepper);
        assert_eq!(kids(&doc), vec![("a", 1_000)]);
    }

    #[test]
    fn a_short_or_missing_pepper_is_replaced_and_a_good_one_kept() {
        let short = KeyDoc {
            otp_pepper: Some(base64::engine::general_purpose::STANDARD.encode([1u8; 16])),
            ..KeyDoc::default()
        };
        let doc = rotate(&short, 1, TTL, key("a")).unwrap();
        assert_ne!(doc.otp_pepper, short.otp_pepper);
        let again = rotate(&doc, 2, TTL, key("b")).unwrap();
        assert_eq!(again.otp_pepper, doc.otp_pepper);
    }
}

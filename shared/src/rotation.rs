//! Signing-key rotation for the auth secret, as a Secrets Manager rotation function
//! (createSecret → setSecret → testSecret → finishSecret), and the emergency revocation.
//!
//! Timeline of a key (CONTRACT §5): a new key is published at once (the JWKS secret is
//! written in setSecret, before the auth secret's new version becomes current) with an
//! `activeFrom` [`PUBLISH_LEAD_SECONDS`] ahead, so every JWKS cache (API Gateway keeps
//! one up to 2 hours) holds it before the first token it signs. The very first key is
//! active at once. A key is dropped once a newer key has been active long enough that
//! no token it signed can still be live: access-token lifetime plus [`RETIRE_MARGIN_SECONDS`].
//!
//! A revocation during a rotation wins: the rotation's pending version was built from the
//! AWSCURRENT the revocation replaced, so the revocation strips its AWSPENDING label, and
//! every later step checks that its pending version is still AWSPENDING and still holds
//! every key AWSCURRENT holds; if not, the step does nothing but republish the JWKS of what
//! is current, and finishSecret never makes that version current. The move of AWSCURRENT
//! names the version it takes the label from, so a revocation written between that check
//! and the move fails the move (Secrets Manager retries the step, which then sees it).
//!
//! testSecret proves each key's RSA math before a signer can load it (signers only parse
//! their keys, `AuthSecret::parse`): the PKCS#8 key must pass *ring*'s private-key
//! validation and sign, and the published JWK must be its public half and verify that
//! signature.

use std::collections::HashMap;
use std::sync::Arc;

use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::error::{DisplayErrorContext, ProvideErrorMetadata};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SecureRandom;
use ring::signature::{
    RSA_PKCS1_2048_8192_SHA256, RSA_PKCS1_SHA256, RsaKeyPair, RsaPublicKeyComponents,
};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::adapters::AuthSecret;
use crate::adapters::secrets::{
    MIN_PEPPER_BYTES, SECRET_REFRESH_SECONDS, decode_pepper, fetch_secret_string,
};
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
const PEPPER_BYTES: usize = MIN_PEPPER_BYTES;

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

/// Whether the functions can use `pepper`, decided by their own parser: a pepper they use
/// is never replaced (that would void every live code and every chain's older tokens);
/// only a missing or unusable one, with which no function starts, is.
fn pepper_is_valid(pepper: Option<&str>) -> bool {
    pepper.is_some_and(|p| decode_pepper(p).is_ok())
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
    next.signing_keys = retained(&doc.signing_keys, now, access_ttl_secs)
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

/// The keys a rotation at `now` keeps: all but those superseded long enough ago that no
/// token they signed can still be live. Keeping only shrinks as `now` grows, so a version
/// built by [`rotate`] holds every key its base version still keeps at any later time.
fn retained(keys: &[KeyEntry], now: u64, access_ttl_secs: u64) -> impl Iterator<Item = &KeyEntry> {
    keys.iter().filter(move |k| {
        // The earliest newer key that is already active supersedes k.
        let superseded_at = keys
            .iter()
            .map(KeyEntry::active_from)
            .filter(|&t| t > k.active_from() && t <= now)
            .min();
        superseded_at.is_none_or(|t| now < t + access_ttl_secs + RETIRE_MARGIN_SECONDS)
    })
}

/// A key `current` still keeps at `now` that `pending` lacks: proof that `pending` was not
/// built from `current` but from a version something (an emergency revocation, whose fresh
/// key is in no pending version) has replaced since. `None`: `pending` may go ahead.
pub fn missing_from_pending<'a>(
    current: &'a KeyDoc,
    pending: &KeyDoc,
    now: u64,
    access_ttl_secs: u64,
) -> Option<&'a str> {
    retained(&current.signing_keys, now, access_ttl_secs)
        .find(|k| !pending.signing_keys.iter().any(|p| p.kid == k.kid))
        .map(|k| k.kid.as_str())
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

/// Prove `entry`'s RSA math and that `published` (every JWK of the JWKS under its kid) is
/// its public half: the PKCS#8 key passes *ring*'s validation and signs (together, RFC 8017
/// consistency of every component signing uses: *ring* checks `dP` and `dQ` only when it
/// signs, against its own signature), each published JWK carries the same modulus and
/// exponent, and a signature made with the private key verifies with them.
/// Messages name the kid, never key material.
pub fn check_key_pair(entry: &KeyEntry, published: &[&Value]) -> Result<(), RotationError> {
    let kid = &entry.kid;
    let failed = |what: &str| RotationError::TestFailed(format!("key {kid}: {what}"));
    let pem = pem::parse(&entry.private_key_pem).map_err(|_| failed("privateKeyPem is not PEM"))?;
    if pem.tag() != "PRIVATE KEY" {
        return Err(failed("privateKeyPem is not a PKCS#8 private key"));
    }
    let pair = RsaKeyPair::from_pkcs8(pem.contents())
        .map_err(|e| failed(&format!("not a valid RSA private key ({e})")))?;
    let public = RsaPublicKeyComponents::<Vec<u8>>::from(pair.public());
    let message = format!("foodsave-auth rotation test of key {kid}");
    let mut signature = vec![0u8; pair.public().modulus_len()];
    pair.sign(
        &RSA_PKCS1_SHA256,
        &ring::rand::SystemRandom::new(),
        message.as_bytes(),
        &mut signature,
    )
    .map_err(|_| failed("cannot sign RS256"))?;
    if published.is_empty() {
        return Err(failed("not in the JWKS"));
    }
    for jwk in published {
        let field = |name: &str| jwk.get(name).and_then(Value::as_str);
        if field("kty") != Some("RSA") {
            return Err(failed("published JWK is not kty RSA"));
        }
        if field("alg").is_some_and(|alg| alg != "RS256")
            || field("use").is_some_and(|u| u != "sig")
        {
            return Err(failed("published JWK is not for RS256 signatures"));
        }
        let decode = |name: &str| field(name).and_then(|v| URL_SAFE_NO_PAD.decode(v).ok());
        let (Some(n), Some(e)) = (decode("n"), decode("e")) else {
            return Err(failed("published JWK has no base64url n and e"));
        };
        if n != public.n || e != public.e {
            return Err(failed(
                "published JWK is not the public half of the private key",
            ));
        }
        RsaPublicKeyComponents { n: &n, e: &e }
            .verify(&RSA_PKCS1_2048_8192_SHA256, message.as_bytes(), &signature)
            .map_err(|_| failed("published JWK does not verify the key's signature"))?;
    }
    Ok(())
}

/// Where a rotation's pending version stands when one of its later steps runs.
#[derive(Debug)]
enum Pending {
    /// Still AWSPENDING and built from what is AWSCURRENT now: the step goes ahead.
    Live {
        doc: KeyDoc,
        current_version: Option<String>,
    },
    /// Already AWSCURRENT and no longer AWSPENDING: a retried finishSecret.
    Finished,
    /// Replaced under the rotation (an emergency revocation): the step must not use it.
    Superseded(String),
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

    /// One version of `id`: by `version` id, by `stage`, or both (they must agree).
    async fn read(
        &self,
        id: &str,
        version: Option<&str>,
        stage: Option<&str>,
    ) -> Result<Option<KeyDoc>, RotationError> {
        let get = self
            .client
            .get_secret_value()
            .secret_id(id)
            .set_version_id(version.map(str::to_owned))
            .set_version_stage(stage.map(str::to_owned));
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

    async fn read_current(&self, id: &str) -> Result<Option<KeyDoc>, RotationError> {
        self.read(id, None, Some(AWSCURRENT)).await
    }

    /// The staging labels of each labelled version of `id`.
    async fn stages(&self, id: &str) -> Result<HashMap<String, Vec<String>>, RotationError> {
        let described = self
            .client
            .describe_secret()
            .secret_id(id)
            .send()
            .await
            .map_err(sm_error)?;
        Ok(described.version_ids_to_stages.unwrap_or_default())
    }

    async fn create_secret(&self, id: &str, token: &str) -> Result<(), RotationError> {
        // A retried step: the version is already there (pending, or since superseded).
        if self.read(id, Some(token), None).await?.is_some() {
            return Ok(());
        }
        let current = self.read_current(id).await?.unwrap_or_default();
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

    /// The rotation `token`'s pending version, if a later step may still use it. One that
    /// AWSCURRENT has moved away from (it lacks a key AWSCURRENT keeps) loses its
    /// AWSPENDING label here, so no later step and no retry can promote it.
    async fn pending(&self, id: &str, token: &str) -> Result<Pending, RotationError> {
        let stages = self.stages(id).await?;
        let has = |version: &str, stage: &str| {
            stages
                .get(version)
                .is_some_and(|labels| labels.iter().any(|l| l == stage))
        };
        let current_version = stages
            .keys()
            .find(|version| has(version, AWSCURRENT))
            .cloned();
        if !has(token, AWSPENDING) {
            if has(token, AWSCURRENT) {
                return Ok(Pending::Finished);
            }
            // DescribeSecret leaves out versions without labels: ask for this one by id.
            return match self.read(id, Some(token), None).await? {
                Some(_) => Ok(Pending::Superseded(
                    "its version is no longer AWSPENDING (an emergency revocation took it)".into(),
                )),
                None => Err(RotationError::TestFailed(format!("no version {token}"))),
            };
        }
        let doc = self
            .read(id, Some(token), Some(AWSPENDING))
            .await?
            .ok_or_else(|| RotationError::TestFailed("no pending version".into()))?;
        if let Some(current_id) = current_version.as_deref().filter(|v| *v != token) {
            let current = self
                .read(id, Some(current_id), None)
                .await?
                .unwrap_or_default();
            let now = self.now_secs();
            if let Some(kid) = missing_from_pending(&current, &doc, now, self.access_ttl_secs) {
                let why = format!(
                    "AWSCURRENT changed since it was built: it holds key {kid}, the pending version does not"
                );
                self.abandon(id, token).await?;
                return Ok(Pending::Superseded(why));
            }
        }
        Ok(Pending::Live {
            doc,
            current_version,
        })
    }

    /// Take AWSPENDING off `version`: it will never become current, and a new rotation
    /// may start (Secrets Manager refuses one while AWSPENDING is elsewhere than AWSCURRENT).
    async fn abandon(&self, id: &str, version: &str) -> Result<(), RotationError> {
        self.client
            .update_secret_version_stage()
            .secret_id(id)
            .version_stage(AWSPENDING)
            .remove_from_version_id(version)
            .send()
            .await
            .map_err(sm_error)?;
        tracing::warn!(secret = %id, version, "pending version abandoned");
        Ok(())
    }

    /// A superseded rotation's step: log it and put back the JWKS of what is current, in
    /// case its own setSecret published the old keys after the revocation did.
    async fn skip_superseded(&self, id: &str, step: &str, why: &str) -> Result<(), RotationError> {
        tracing::warn!(secret = %id, step, reason = why, "rotation superseded; step skipped");
        self.publish_current(id).await
    }

    /// Publish the JWKS of AWSCURRENT plus the keys of a rotation in flight built from it
    /// (whose setSecret has published them, or will).
    async fn publish_current(&self, id: &str) -> Result<(), RotationError> {
        let mut doc = self.read_current(id).await?.unwrap_or_default();
        let stages = self.stages(id).await?;
        let in_flight = stages.iter().find(|(_, labels)| {
            labels.iter().any(|l| l == AWSPENDING) && !labels.iter().any(|l| l == AWSCURRENT)
        });
        if let Some((version, _)) = in_flight
            && let Some(pending) = self.read(id, Some(version), Some(AWSPENDING)).await?
            && missing_from_pending(&doc, &pending, self.now_secs(), self.access_ttl_secs).is_none()
        {
            let extra: Vec<KeyEntry> = pending
                .signing_keys
                .into_iter()
                .filter(|p| !doc.signing_keys.iter().any(|k| k.kid == p.kid))
                .collect();
            doc.signing_keys.extend(extra);
        }
        self.publish_jwks(&doc).await
    }

    /// Publish the pending version's public keys before it can become current.
    async fn set_secret(&self, id: &str, token: &str) -> Result<(), RotationError> {
        match self.pending(id, token).await? {
            Pending::Live { doc, .. } => {
                self.publish_jwks(&doc).await?;
                // A revocation between the check and the publish: undo the publish.
                match self.pending(id, token).await? {
                    Pending::Superseded(why) => self.skip_superseded(id, "setSecret", &why).await,
                    Pending::Live { .. } | Pending::Finished => Ok(()),
                }
            }
            Pending::Finished => Ok(()),
            Pending::Superseded(why) => self.skip_superseded(id, "setSecret", &why).await,
        }
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
        match self.pending(id, token).await? {
            Pending::Live { doc, .. } => self.test_pending(id, &doc).await,
            Pending::Finished => Ok(()),
            Pending::Superseded(why) => self.skip_superseded(id, "testSecret", &why).await,
        }
    }

    /// The pending version works as the signers will use it (pepper, an active key, each
    /// key loads and signs), each key's RSA math holds, and the published JWKS carries
    /// each key's public half ([`check_key_pair`]).
    async fn test_pending(&self, id: &str, pending: &KeyDoc) -> Result<(), RotationError> {
        let raw =
            serde_json::to_string(pending).map_err(|_| RotationError::Malformed(id.to_owned()))?;
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
        let published: &[Value] = published
            .get("keys")
            .and_then(Value::as_array)
            .map_or(&[], Vec::as_slice);
        for (i, key) in pending.signing_keys.iter().enumerate() {
            if pending
                .signing_keys
                .iter()
                .take(i)
                .any(|earlier| earlier.kid == key.kid)
            {
                return Err(RotationError::TestFailed(format!(
                    "kid {} is used by two keys",
                    key.kid
                )));
            }
            let jwks: Vec<&Value> = published
                .iter()
                .filter(|jwk| jwk.get("kid").and_then(Value::as_str) == Some(key.kid.as_str()))
                .collect();
            check_key_pair(key, &jwks)?;
        }
        Ok(())
    }

    async fn finish_secret(&self, id: &str, token: &str) -> Result<(), RotationError> {
        let current_version = match self.pending(id, token).await? {
            Pending::Live {
                current_version, ..
            } => current_version,
            Pending::Finished => {
                tracing::info!(secret = %id, "rotation already finished");
                return Ok(());
            }
            Pending::Superseded(why) => {
                return self.skip_superseded(id, "finishSecret", &why).await;
            }
        };
        // The first version of a secret is made AWSCURRENT by PutSecretValue itself.
        if current_version.as_deref() != Some(token) {
            // Naming the version the label leaves makes the move conditional: if a
            // revocation made another version current since the check, it fails.
            self.client
                .update_secret_version_stage()
                .secret_id(id)
                .version_stage(AWSCURRENT)
                .move_to_version_id(token)
                .set_remove_from_version_id(current_version)
                .send()
                .await
                .map_err(sm_error)?;
        }
        self.client
            .update_secret_version_stage()
            .secret_id(id)
            .version_stage(AWSPENDING)
            .remove_from_version_id(token)
            .send()
            .await
            .map_err(sm_error)?;
        tracing::info!(secret = %id, "rotation finished");
        Ok(())
    }

    /// The emergency path: drop `kid` from both secrets and sign with a fresh key at once.
    /// A rotation in flight was built from the version this replaces: it is abandoned, so
    /// its later steps cannot bring the key back. Returns the new key's kid.
    pub async fn revoke_key(&self, secret_id: &str, kid: &str) -> Result<String, RotationError> {
        let current = self
            .read_current(secret_id)
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
        let stages = self.stages(secret_id).await?;
        let in_flight = stages.iter().filter(|(_, labels)| {
            labels.iter().any(|l| l == AWSPENDING) && !labels.iter().any(|l| l == AWSCURRENT)
        });
        for (version, _) in in_flight {
            // Built before this write, it lacks the fresh key (one built after has it).
            let stale = self
                .read(secret_id, Some(version), Some(AWSPENDING))
                .await?
                .is_some_and(|pending| {
                    missing_from_pending(&next, &pending, self.now_secs(), self.access_ttl_secs)
                        .is_some()
                });
            if stale {
                self.abandon(secret_id, version).await?;
            }
        }
        // Again, over anything a rotation's setSecret published since the first publish.
        self.publish_current(secret_id).await?;
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
    fn a_pending_version_stays_valid_while_its_base_is_current_but_not_after_a_revocation() {
        let base = rotate(&KeyDoc::default(), 1_000, TTL, key("a")).unwrap();
        let pending = rotate(&base, 10_000, TTL, key("b")).unwrap();
        let b_from = 10_000 + PUBLISH_LEAD_SECONDS;
        // However late the later steps run, the base never holds a key the pending lacks.
        for later in [
            10_000,
            10_001,
            b_from,
            b_from + TTL + RETIRE_MARGIN_SECONDS,
            u64::MAX / 4,
        ] {
            assert_eq!(
                missing_from_pending(&base, &pending, later, TTL),
                None,
                "at {later}"
            );
        }
        // A revocation replaces the base: its fresh key is in no pending version.
        let revoked = revoke(&base, "a", 10_005, key("z")).unwrap();
        assert_eq!(
            missing_from_pending(&revoked, &pending, 10_005, TTL),
            Some("z")
        );
        // A pending version built from the revocation's version is fine.
        let rebuilt = rotate(&revoked, 10_010, TTL, key("c")).unwrap();
        assert_eq!(missing_from_pending(&revoked, &rebuilt, 10_010, TTL), None);
    }

    fn real_key() -> (KeyEntry, Value) {
        let generated = generate_signing_key().unwrap();
        let jwk = generated.public_jwk.clone();
        (KeyEntry::from_generated(generated, 0), jwk)
    }

    #[test]
    fn the_key_test_accepts_a_key_with_its_own_jwk_and_refuses_any_other() {
        let (entry, jwk) = real_key();
        check_key_pair(&entry, &[&jwk]).unwrap();

        let (_, other) = real_key();
        let mut swapped = other.clone();
        swapped["kid"] = json!(entry.kid);
        let err = check_key_pair(&entry, &[&swapped]).unwrap_err();
        assert!(err.to_string().contains("public half"), "{err}");
        // Every JWK under the kid must match, not only the first.
        assert!(check_key_pair(&entry, &[&jwk, &swapped]).is_err());
        assert!(
            check_key_pair(&entry, &[])
                .unwrap_err()
                .to_string()
                .contains("not in the JWKS")
        );

        let mut wrong_e = jwk.clone();
        wrong_e["e"] = json!("AQAC");
        assert!(check_key_pair(&entry, &[&wrong_e]).is_err());
        let mut wrong_alg = jwk.clone();
        wrong_alg["alg"] = json!("RS512");
        assert!(check_key_pair(&entry, &[&wrong_alg]).is_err());
    }

    #[test]
    fn the_key_test_refuses_a_private_key_whose_components_do_not_hold_together() {
        let (entry, jwk) = real_key();
        // Flip one bit deep inside the DER (in the private exponent or a prime): the PEM
        // and PKCS#8 structure still parse, the RSA math does not hold.
        let mut der = pem::parse(&entry.private_key_pem).unwrap().into_contents();
        let at = der.len() - 40;
        der[at] ^= 0x01;
        let broken = KeyEntry {
            private_key_pem: pem::encode(&pem::Pem::new("PRIVATE KEY", der)),
            ..entry.clone()
        };
        let err = check_key_pair(&broken, &[&jwk]).unwrap_err();
        assert!(err.to_string().contains(&entry.kid), "{err}");
        assert!(!err.to_string().contains("PRIVATE"), "{err}");
        let not_pem = KeyEntry {
            private_key_pem: "not a key".into(),
            ..entry
        };
        assert!(check_key_pair(&not_pem, &[&jwk]).is_err());
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

    #[test]
    fn no_rotation_step_changes_a_pepper_the_functions_accept_in_any_of_its_forms() {
        let (_, forms) = crate::adapters::secrets::tests::pepper_forms();
        for form in forms {
            let base = KeyDoc {
                otp_pepper: Some(form.clone()),
                ..KeyDoc::default()
            };
            let first = rotate(&base, 1_000, TTL, key("a")).unwrap();
            assert_eq!(first.otp_pepper.as_deref(), Some(form.as_str()));
            let second = rotate(&first, 1_000 + 86_400, TTL, key("b")).unwrap();
            assert_eq!(second.otp_pepper.as_deref(), Some(form.as_str()));
            let revoked = revoke(&second, "a", 1_000 + 86_401, key("c")).unwrap();
            assert_eq!(revoked.otp_pepper.as_deref(), Some(form.as_str()));
        }
    }
}

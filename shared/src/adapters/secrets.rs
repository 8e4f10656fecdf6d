//! The auth secret (`AUTH_SECRET_ID`: OTP pepper and signing keys) read from Secrets
//! Manager once per container and re-read when the cached copy is older than a refresh
//! period, so a rotated key is picked up without a redeploy:
//!
//! - [`SECRET_REFRESH_SECONDS`] for the pepper and the public JWK Set;
//! - [`SIGNING_REFRESH_SECONDS`] for signers ([`SecretCache::get_with_active_key`]): a key
//!   removed from the secret signs no token more than 60 s after the secret changed, on
//!   warm instances too (CONTRACT §5). A signer that read the secret just before it
//!   changed signs with the removed key until its next read, at most this period later,
//!   plus the rest of a request that read it (the function's timeout, 10 s).
//! - A signer whose cached secret has no active key (an emergency revocation or a first
//!   key written after the container started) re-reads it after
//!   [`URGENT_REFRESH_SECONDS`].
//!
//! A failed or stalled read keeps the cached value (CONTRACT §1); the next is tried no
//! sooner than [`URGENT_REFRESH_SECONDS`] later, so an outage of Secrets Manager costs each
//! container one slow request every few seconds, not every request. A read that finds the
//! version it already holds keeps the parsed value (no signing key is parsed again).
//!
//! The pepper has one parser, [`decode_pepper`]: the functions and the rotation accept
//! exactly the same forms, so no rotation can mistake a pepper in use for a bad one.

use std::fmt;
use std::sync::{Arc, RwLock};

use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::error::DisplayErrorContext;
use secrecy::SecretSlice;
use serde::Deserialize;

use crate::config::decode_base64;
use crate::domain::error::BoxError;
use crate::domain::{ChainKey, UnixMillis};
use crate::keys::RsaPrivateKey;
use crate::ports::Clock;

/// How long a fetched secret is trusted before it is read again.
pub const SECRET_REFRESH_SECONDS: u64 = 300;

/// How long a signer trusts its cached signing keys: 45 s of staleness plus a request's
/// 10 s keeps a removed key from signing more than 60 s after the change (CONTRACT §5).
/// One `GetSecretValue` per warm signer a minute at most, and only when it serves traffic.
pub const SIGNING_REFRESH_SECONDS: u64 = 45;

/// The least time between two reads of a secret whose cached value cannot serve (no active
/// signing key): soon enough that signing recovers within seconds, rare enough that a
/// secret with no key at all costs one `GetSecretValue` per container every few seconds,
/// not one per request.
pub const URGENT_REFRESH_SECONDS: u64 = 5;

/// The minimum pepper length (CONTRACT §5).
pub const MIN_PEPPER_BYTES: usize = 32;

/// The one reading of `otpPepper` (CONTRACT §5: base64 of at least 32 bytes): standard or
/// URL-safe alphabet, padded or not, surrounding whitespace ignored. The functions and the
/// rotation both decide with it whether a pepper is usable, so a rotation keeps every
/// pepper the functions use. The error never quotes the value.
pub fn decode_pepper(raw: &str) -> Result<SecretSlice<u8>, String> {
    let bytes = decode_base64(raw).ok_or("otpPepper is not base64")?;
    if bytes.len() < MIN_PEPPER_BYTES {
        return Err(format!(
            "otpPepper must decode to at least {MIN_PEPPER_BYTES} bytes"
        ));
    }
    Ok(SecretSlice::from(bytes))
}

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("secret {id} could not be read")]
    Unavailable {
        id: String,
        #[source]
        source: BoxError,
    },
    #[error("secret {id} is malformed: {reason}")]
    Malformed { id: String, reason: String },
}

/// One signing key of the auth secret, parsed once when the secret is read: every token
/// it signs uses this parsed key, never its PEM again.
#[derive(Clone)]
pub struct SigningKey {
    pub kid: String,
    /// Epoch seconds from which it may sign; absent counts as 0.
    pub active_from: u64,
    pub(crate) key: Arc<RsaPrivateKey>,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("active_from", &self.active_from)
            .finish_non_exhaustive()
    }
}

/// The parsed `AUTH_SECRET_ID` document.
pub struct AuthSecret {
    pepper: Option<SecretSlice<u8>>,
    /// Derived from the pepper once per read of the secret, not per request.
    chain_key: Option<ChainKey>,
    pub signing_keys: Vec<SigningKey>,
}

impl fmt::Debug for AuthSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthSecret")
            .field("pepper", &self.pepper.as_ref().map(|_| "[redacted]"))
            .field("signing_keys", &self.signing_keys)
            .finish()
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AuthSecretDoc {
    otp_pepper: Option<String>,
    #[serde(default)]
    signing_keys: Vec<SigningKeyDoc>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SigningKeyDoc {
    kid: String,
    private_key_pem: String,
    active_from: Option<u64>,
}

impl AuthSecret {
    /// Parse the secret, each signing key into a ready-to-sign [`RsaPrivateKey`] (a key
    /// that does not parse fails the whole secret, so a signer's init); error messages
    /// never quote its content. The full check of a key's math belongs to where keys are
    /// made: the rotation's testSecret (`rotation::check_key_pair`).
    pub fn parse(raw: &str) -> Result<Self, String> {
        Self::parse_with(raw, true)
    }

    /// The pepper only, for functions that never sign: no key is decoded or parsed.
    pub fn parse_pepper_only(raw: &str) -> Result<Self, String> {
        Self::parse_with(raw, false)
    }

    fn parse_with(raw: &str, with_keys: bool) -> Result<Self, String> {
        let doc: AuthSecretDoc = serde_json::from_str(raw).map_err(|e| {
            format!(
                "not the expected JSON ({} at column {})",
                e.classify_kind(),
                e.column()
            )
        })?;
        let pepper = doc.otp_pepper.as_deref().map(decode_pepper).transpose()?;
        let mut signing_keys = Vec::with_capacity(doc.signing_keys.len());
        for k in doc.signing_keys.into_iter().filter(|_| with_keys) {
            let key = RsaPrivateKey::from_pem(&k.private_key_pem)
                .map_err(|_| format!("signing key {} is not an RSA private key in PEM", k.kid))?;
            signing_keys.push(SigningKey {
                kid: k.kid,
                active_from: k.active_from.unwrap_or(0),
                key: Arc::new(key),
            });
        }
        Ok(Self {
            chain_key: pepper.as_ref().map(ChainKey::derive),
            pepper,
            signing_keys,
        })
    }

    pub fn pepper(&self) -> Option<&SecretSlice<u8>> {
        self.pepper.as_ref()
    }

    /// The refresh-token chain key, derived from the pepper under its own label.
    pub fn chain_key(&self) -> Option<&ChainKey> {
        self.chain_key.as_ref()
    }

    /// The key that signs at `now`: the largest `activeFrom` that has passed, the first
    /// listed on a tie (CONTRACT §5).
    pub fn active_key(&self, now: UnixMillis) -> Option<&SigningKey> {
        let now_secs = now.as_secs();
        self.signing_keys
            .iter()
            .filter(|k| k.active_from <= now_secs)
            .fold(None, |best: Option<&SigningKey>, k| match best {
                Some(b) if b.active_from >= k.active_from => Some(b),
                _ => Some(k),
            })
    }
}

trait ClassifyKind {
    fn classify_kind(&self) -> &'static str;
}

impl ClassifyKind for serde_json::Error {
    fn classify_kind(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "I/O error",
            serde_json::error::Category::Syntax => "syntax error",
            serde_json::error::Category::Data => "wrong field types",
            serde_json::error::Category::Eof => "truncated",
        }
    }
}

/// Reads one secret's string, for the cache.
pub async fn fetch_secret_string(client: &Client, id: &str) -> Result<String, SecretError> {
    fetch_secret_version(client, id).await.map(|(_, raw)| raw)
}

/// Reads one secret's current version: its id (when Secrets Manager names it) and string.
async fn fetch_secret_version(
    client: &Client,
    id: &str,
) -> Result<(Option<String>, String), SecretError> {
    let out = client
        .get_secret_value()
        .secret_id(id)
        .version_stage("AWSCURRENT")
        .send()
        .await
        .map_err(|e| SecretError::Unavailable {
            id: id.to_owned(),
            source: DisplayErrorContext(e).to_string().into(),
        })?;
    let raw = out.secret_string.ok_or_else(|| SecretError::Malformed {
        id: id.to_owned(),
        reason: "no SecretString".into(),
    })?;
    Ok((out.version_id, raw))
}

struct Cached<T> {
    value: Arc<T>,
    /// The Secrets Manager version `value` was parsed from.
    version: Option<String>,
    /// When the read that gave `value` started: the refresh period runs from here.
    fetched_at: UnixMillis,
    /// When a read last started, whatever its outcome: reads are spaced from here.
    attempted_at: UnixMillis,
}

/// A secret parsed into `T`, read at init and re-read when older than the refresh period.
pub struct SecretCache<T> {
    client: Client,
    id: String,
    parse: fn(&str) -> Result<T, String>,
    clock: Arc<dyn Clock>,
    state: RwLock<Cached<T>>,
}

impl<T: Send + Sync> SecretCache<T> {
    /// The first read: failing it fails the function's init.
    pub async fn load(
        client: Client,
        id: String,
        parse: fn(&str) -> Result<T, String>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, SecretError> {
        let fetched_at = clock.now();
        let (version, raw) = fetch_secret_version(&client, &id).await?;
        let value = parse(&raw).map_err(|reason| SecretError::Malformed {
            id: id.clone(),
            reason,
        })?;
        Ok(Self {
            client,
            id,
            parse,
            clock,
            state: RwLock::new(Cached {
                value: Arc::new(value),
                version,
                fetched_at,
                attempted_at: fetched_at,
            }),
        })
    }

    fn read_state(&self) -> std::sync::RwLockReadGuard<'_, Cached<T>> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write_state(&self) -> std::sync::RwLockWriteGuard<'_, Cached<T>> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The cached value as it is, without any read.
    pub fn cached(&self) -> Arc<T> {
        Arc::clone(&self.read_state().value)
    }

    /// The current value, re-read first if the cached one is older than
    /// [`SECRET_REFRESH_SECONDS`].
    pub async fn get(&self) -> Arc<T> {
        self.get_within(SECRET_REFRESH_SECONDS).await
    }

    /// The current value, re-read first if the cached one is older than `period_secs`
    /// and no read started in the last [`URGENT_REFRESH_SECONDS`].
    async fn get_within(&self, period_secs: u64) -> Arc<T> {
        match self.claim_read(Some(period_secs)) {
            Some(now) => self.fetch_and_store(now).await,
            None => self.cached(),
        }
    }

    /// The current value (within `period_secs`) if `usable` accepts it; if not, re-read
    /// early: at most once per [`URGENT_REFRESH_SECONDS`] (on the injected clock, never
    /// sleeping). Returns the cached value when the re-read is not yet due, fails or
    /// still yields an unusable value: the caller decides what unusable means for it.
    async fn get_usable_within(&self, period_secs: u64, usable: impl Fn(&T) -> bool) -> Arc<T> {
        let value = self.get_within(period_secs).await;
        if usable(&value) {
            return value;
        }
        let Some(now) = self.claim_read(None) else {
            return value;
        };
        tracing::warn!(secret = %self.id, "cached secret cannot serve; re-reading it early");
        self.fetch_and_store(now).await
    }

    /// Whether a read may start now: the cached value is older than `period_secs` (any
    /// age when `None`) and no read started in the last [`URGENT_REFRESH_SECONDS`]. If
    /// so, the read is marked as started, under the same lock, so concurrent requests of
    /// one container start at most one; returns when it started.
    fn claim_read(&self, period_secs: Option<u64>) -> Option<UnixMillis> {
        let now = self.clock.now();
        {
            let state = self.read_state();
            let fresh = period_secs.is_some_and(|p| state.fetched_at.plus_secs(p) > now);
            if fresh || state.attempted_at.plus_secs(URGENT_REFRESH_SECONDS) > now {
                return None;
            }
        }
        let mut state = self.write_state();
        if state.attempted_at.plus_secs(URGENT_REFRESH_SECONDS) > now {
            return None;
        }
        state.attempted_at = now;
        Some(now)
    }

    /// Read the secret (a read that started at `now`) and keep it; on failure keep and
    /// return the cached one. A read of the version already held keeps its parsed value.
    async fn fetch_and_store(&self, now: UnixMillis) -> Arc<T> {
        let read = fetch_secret_version(&self.client, &self.id).await;
        let fresh = read.and_then(|(version, raw)| {
            let unchanged = version.is_some() && self.read_state().version == version;
            if unchanged {
                return Ok((version, None));
            }
            (self.parse)(&raw)
                .map(|value| (version, Some(Arc::new(value))))
                .map_err(|reason| SecretError::Malformed {
                    id: self.id.clone(),
                    reason,
                })
        });
        let mut state = self.write_state();
        match fresh {
            Ok((version, value)) => {
                if let Some(value) = value {
                    state.value = value;
                    state.version = version;
                }
                state.fetched_at = state.fetched_at.max(now);
            }
            Err(err) => {
                tracing::warn!(secret = %self.id, error = %crate::telemetry::chain(&err), "secret refresh failed; keeping the cached value");
            }
        }
        Arc::clone(&state.value)
    }
}

impl SecretCache<AuthSecret> {
    /// For signers: the auth secret, re-read when older than [`SIGNING_REFRESH_SECONDS`]
    /// (a removed key stops signing within 60 s, CONTRACT §5), and within
    /// [`URGENT_REFRESH_SECONDS`] while it has no key active at `now` (every `activeFrom`
    /// in the future, or no keys). Still none after that is the caller's logged 500. Only
    /// for caches parsed with [`AuthSecret::parse`]: a pepper-only parse never has a key.
    pub async fn get_with_active_key(&self, now: UnixMillis) -> Arc<AuthSecret> {
        self.get_usable_within(SIGNING_REFRESH_SECONDS, |secret| {
            secret.active_key(now).is_some()
        })
        .await
    }
}

/// Functions that handle codes cannot work without the pepper: fail their init.
pub async fn require_pepper(cache: &SecretCache<AuthSecret>) -> Result<(), SecretError> {
    if cache.get().await.pepper().is_some() {
        Ok(())
    } else {
        Err(SecretError::Malformed {
            id: cache.id.clone(),
            reason: "otpPepper is missing".into(),
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::keys::generate_signing_key;
    use secrecy::ExposeSecret;
    use serde_json::json;

    const PEPPER: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="; // 32 bytes

    fn doc(keys: &[(&str, &str, Option<u64>)]) -> String {
        let keys: Vec<_> = keys
            .iter()
            .map(|(kid, pem, from)| match from {
                Some(f) => json!({"kid": kid, "privateKeyPem": pem, "activeFrom": f}),
                None => json!({"kid": kid, "privateKeyPem": pem}),
            })
            .collect();
        json!({"otpPepper": PEPPER, "signingKeys": keys}).to_string()
    }

    #[test]
    fn the_signer_is_the_latest_key_that_has_passed_its_active_from_first_on_a_tie() {
        let pem = generate_signing_key()
            .unwrap()
            .private_key_pem
            .expose_secret()
            .to_owned();
        let raw = doc(&[
            ("zero", &pem, None),
            ("a", &pem, Some(100)),
            ("b", &pem, Some(100)),
            ("future", &pem, Some(1_000)),
        ]);
        let secret = AuthSecret::parse(&raw).unwrap();
        let kid_at = |secs| {
            secret
                .active_key(UnixMillis::from_secs(secs))
                .map(|k| k.kid.as_str())
        };
        assert_eq!(kid_at(50), Some("zero"));
        assert_eq!(kid_at(100), Some("a"));
        assert_eq!(kid_at(999), Some("a"));
        assert_eq!(kid_at(1_000), Some("future"));
        let none_active = AuthSecret::parse(&doc(&[("f", &pem, Some(1_000))])).unwrap();
        assert!(none_active.active_key(UnixMillis::from_secs(10)).is_none());
    }

    #[test]
    fn a_bad_key_fails_the_full_parse_but_not_the_pepper_only_one() {
        let raw = doc(&[(
            "bad",
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
            None,
        )]);
        let err = AuthSecret::parse(&raw).unwrap_err();
        assert!(err.contains("bad") && !err.contains("AAAA"), "{err}");
        let pepper_only = AuthSecret::parse_pepper_only(&raw).unwrap();
        assert!(pepper_only.pepper().is_some());
        assert!(pepper_only.signing_keys.is_empty());
    }

    #[test]
    fn a_key_whose_modulus_is_not_the_product_of_its_primes_fails_the_full_parse() {
        let good = generate_signing_key().unwrap();
        let mut der = pem::parse(good.private_key_pem.expose_secret())
            .unwrap()
            .into_contents();
        // The PKCS#8 header (26 bytes), the RSAPrivateKey SEQUENCE and version (7), the
        // modulus INTEGER (02 82 01 01 00, then 256 bytes): flip a bit in its middle.
        assert_eq!(der[26..28], [0x30, 0x82]);
        assert_eq!(der[33..38], [0x02, 0x82, 0x01, 0x01, 0x00]);
        der[38 + 128] ^= 0x10;
        let broken = pem::encode(&pem::Pem::new("PRIVATE KEY", der));
        let raw = doc(&[
            ("good", good.private_key_pem.expose_secret(), None),
            ("flipped", &broken, None),
        ]);
        let err = AuthSecret::parse(&raw).unwrap_err();
        assert!(err.contains("flipped"), "{err}");
        assert!(AuthSecret::parse_pepper_only(&raw).is_ok());
    }

    #[test]
    fn a_short_or_garbled_pepper_is_rejected_without_quoting_it() {
        let short = json!({"otpPepper": "c2hvcnQ=", "signingKeys": []}).to_string();
        assert!(AuthSecret::parse(&short).unwrap_err().contains("32 bytes"));
        let garbled = json!({"otpPepper": "not base64 at all!", "signingKeys": []}).to_string();
        let err = AuthSecret::parse(&garbled).unwrap_err();
        assert!(!err.contains("not base64 at all"), "{err}");
        assert!(
            AuthSecret::parse("{not json")
                .unwrap_err()
                .contains("not the expected JSON")
        );
    }

    /// The same 32 bytes in each form the functions accept; the bytes make `+`, `/` and
    /// padding appear, so the forms really differ.
    pub(crate) fn pepper_forms() -> (Vec<u8>, Vec<String>) {
        use base64::Engine;
        use base64::engine::general_purpose::{
            STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD,
        };
        let bytes: Vec<u8> = (0u8..32).map(|i| 0xf8 | (i % 8)).collect();
        let forms = vec![
            STANDARD.encode(&bytes),
            STANDARD_NO_PAD.encode(&bytes),
            URL_SAFE.encode(&bytes),
            URL_SAFE_NO_PAD.encode(&bytes),
            format!(" {}\n", STANDARD.encode(&bytes)),
        ];
        (bytes, forms)
    }

    #[test]
    fn every_accepted_form_of_the_pepper_decodes_to_the_same_bytes() {
        let (bytes, forms) = pepper_forms();
        assert!(forms[0].contains('+') && forms[0].contains('/') && forms[0].ends_with('='));
        assert!(forms[3].contains('-') && forms[3].contains('_') && !forms[3].ends_with('='));
        for form in &forms {
            let pepper = decode_pepper(form).unwrap();
            assert_eq!(pepper.expose_secret(), bytes.as_slice(), "{form:?}");
            let raw = json!({"otpPepper": form, "signingKeys": []}).to_string();
            let parsed = AuthSecret::parse_pepper_only(&raw).unwrap();
            assert_eq!(parsed.pepper().unwrap().expose_secret(), bytes.as_slice());
        }
        // Both alphabets at once is no form at all; neither is a short pepper.
        let mixed = forms[0].replacen('+', "-", 1);
        assert!(decode_pepper(&mixed).unwrap_err().contains("not base64"));
        assert!(
            decode_pepper(&forms[3][..40])
                .unwrap_err()
                .contains("32 bytes")
        );
    }
}

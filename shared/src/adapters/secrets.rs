//! The auth secret (`AUTH_SECRET_ID`: OTP pepper and signing keys) read from Secrets
//! Manager once per container and refreshed at most every [`SECRET_REFRESH_SECONDS`], so
//! a rotated key is picked up without a redeploy. A failed refresh keeps the cached value.
//! A signer whose cached secret has no active key (an emergency revocation or a first key
//! written after the container started) re-reads it after [`URGENT_REFRESH_SECONDS`]
//! instead of a whole refresh period: [`SecretCache::get_with_active_key`].

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

/// The least time between two reads of a secret whose cached value cannot serve (no active
/// signing key): soon enough that signing recovers within seconds, rare enough that a
/// secret with no key at all costs one `GetSecretValue` per container every few seconds,
/// not one per request.
pub const URGENT_REFRESH_SECONDS: u64 = 5;

/// The minimum pepper length (CONTRACT §5).
const MIN_PEPPER_BYTES: usize = 32;

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
        let pepper = match doc.otp_pepper {
            None => None,
            Some(b64) => {
                let bytes = decode_base64(&b64).ok_or("otpPepper is not base64")?;
                if bytes.len() < MIN_PEPPER_BYTES {
                    return Err(format!(
                        "otpPepper must decode to at least {MIN_PEPPER_BYTES} bytes"
                    ));
                }
                Some(SecretSlice::from(bytes))
            }
        };
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
    out.secret_string.ok_or_else(|| SecretError::Malformed {
        id: id.to_owned(),
        reason: "no SecretString".into(),
    })
}

struct Cached<T> {
    value: Arc<T>,
    /// When the value was read, or a read of it last failed: the refresh period runs from here.
    fetched_at: UnixMillis,
    /// When a read last started, whatever its outcome: early reads are spaced from here.
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
        let value = Self::fetch(&client, &id, parse).await?;
        let fetched_at = clock.now();
        Ok(Self {
            client,
            id,
            parse,
            clock,
            state: RwLock::new(Cached {
                value: Arc::new(value),
                fetched_at,
                attempted_at: fetched_at,
            }),
        })
    }

    async fn fetch(
        client: &Client,
        id: &str,
        parse: fn(&str) -> Result<T, String>,
    ) -> Result<T, SecretError> {
        let raw = fetch_secret_string(client, id).await?;
        parse(&raw).map_err(|reason| SecretError::Malformed {
            id: id.to_owned(),
            reason,
        })
    }

    fn snapshot(&self) -> (Arc<T>, UnixMillis) {
        match self.state.read() {
            Ok(s) => (Arc::clone(&s.value), s.fetched_at),
            Err(poisoned) => {
                let s = poisoned.into_inner();
                (Arc::clone(&s.value), s.fetched_at)
            }
        }
    }

    /// The cached value as it is, without any read.
    pub fn cached(&self) -> Arc<T> {
        self.snapshot().0
    }

    /// The current value, re-read first if the cached one is stale.
    pub async fn get(&self) -> Arc<T> {
        let now = self.clock.now();
        let (value, fetched_at) = self.snapshot();
        if fetched_at.plus_secs(SECRET_REFRESH_SECONDS) > now {
            return value;
        }
        self.refresh().await.unwrap_or(value)
    }

    /// The current value if `usable` accepts it; if not, re-read early: at most once per
    /// [`URGENT_REFRESH_SECONDS`] (on the injected clock, never sleeping), whatever the
    /// refresh period says. Returns the cached value when the re-read is not yet due, fails
    /// or still yields an unusable value: the caller decides what unusable means for it.
    pub async fn get_usable(&self, usable: impl Fn(&T) -> bool) -> Arc<T> {
        let value = self.get().await;
        if usable(&value) || !self.claim_early_read() {
            return value;
        }
        tracing::warn!(secret = %self.id, "cached secret cannot serve; re-reading it early");
        self.fetch_and_store(self.clock.now())
            .await
            .unwrap_or(value)
    }

    /// Whether an early read may start now; if so, no other may for the next
    /// [`URGENT_REFRESH_SECONDS`] (checked and marked under one lock, so concurrent
    /// requests of one container start at most one).
    fn claim_early_read(&self) -> bool {
        let now = self.clock.now();
        let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
        if state.attempted_at.plus_secs(URGENT_REFRESH_SECONDS) > now {
            return false;
        }
        state.attempted_at = now;
        true
    }

    /// Re-read now. On failure the cached value stays and the failure is logged.
    pub async fn refresh(&self) -> Option<Arc<T>> {
        let now = self.clock.now();
        {
            let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
            state.attempted_at = now;
        }
        self.fetch_and_store(now).await
    }

    /// Read the secret (a read that started at `now`) and keep it, or keep the cached one.
    async fn fetch_and_store(&self, now: UnixMillis) -> Option<Arc<T>> {
        match Self::fetch(&self.client, &self.id, self.parse).await {
            Ok(fresh) => {
                let fresh = Arc::new(fresh);
                let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
                *state = Cached {
                    value: Arc::clone(&fresh),
                    fetched_at: now,
                    attempted_at: state.attempted_at.max(now),
                };
                Some(fresh)
            }
            Err(err) => {
                tracing::warn!(secret = %self.id, error = %crate::telemetry::chain(&err), "secret refresh failed; keeping the cached value");
                // Retry no sooner than one refresh period from now.
                let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
                state.fetched_at = now;
                None
            }
        }
    }
}

impl SecretCache<AuthSecret> {
    /// For signers: the auth secret, re-read within [`URGENT_REFRESH_SECONDS`] rather than
    /// a whole refresh period while it has no key active at `now` (every `activeFrom` in
    /// the future, or no keys). Still none after that is the caller's logged 500. Only for
    /// caches parsed with [`AuthSecret::parse`]: a pepper-only parse never has a key.
    pub async fn get_with_active_key(&self, now: UnixMillis) -> Arc<AuthSecret> {
        self.get_usable(|secret| secret.active_key(now).is_some())
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
mod tests {
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
}

//! Sessions and their refresh-token chain (CONTRACT §4, RFC 9700 §4.14.2).
//!
//! A session id is `base64url(account ‖ 128 random bits)`, where the account is the 128
//! bits of the user's `sub`: a session names the account it belongs to, so every
//! session is stored in its account's item collection (listed with one Query, CONTRACT
//! §7) and a refresh token, which carries its session id, finds its item with no lookup.
//!
//! A refresh token is `base64url(session id ‖ 256 bits)`: 86 URL-safe characters. The
//! 256 bits of a session's first token come from the CSPRNG; those of every later token
//! are `HMAC-SHA256(chain key, previous token)`. The chain runs forward only: from any
//! token the service can compute every later one, never an earlier one, and nobody
//! without the key can compute any. So the session item stores just the SHA-256 of the
//! one live token and how many rotations the chain has had; an older token of the chain
//! is recognised by walking forward from it to the live one (reuse detection, logout),
//! and a retry inside the grace is answered with the very successor its rotation issued
//! without that successor ever being stored in clear.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SecureRandom;
use ring::{digest, hmac};
use secrecy::{ExposeSecret, SecretSlice};

use super::time::UnixMillis;

/// A `sub` is 128 random bits (`domain::random_id`).
const ACCOUNT_BYTES: usize = 16;
const SESSION_ID_BYTES: usize = ACCOUNT_BYTES + 16;
const SECRET_BYTES: usize = 32;
const TOKEN_BYTES: usize = SESSION_ID_BYTES + SECRET_BYTES;

/// How far back a token of a chain is still recognised: exactly the 1,000 rotations the
/// contract asks for (CONTRACT §4), no more, because an invented token naming a real
/// session costs the whole walk (one SHA-256 and one HMAC per step, about 0.5 ms on an
/// x86 core; the crypto bench's `invented_refresh_token_walk`) before it is refused. An
/// older token of the chain counts as one never issued.
pub const MAX_CHAIN_WALK: u64 = 1_000;

/// A session id (base64url of the account's 128 bits and 128 random ones); also the
/// access token's `sid`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SessionId(String);

impl SessionId {
    /// A new session of the account `sub` (which must be a `domain::random_id`).
    pub fn generate(rng: &dyn SecureRandom, sub: &str) -> Result<Self, ring::error::Unspecified> {
        let account = account_bytes(sub).ok_or(ring::error::Unspecified)?;
        let mut bytes = [0u8; SESSION_ID_BYTES];
        let (head, tail) = bytes.split_at_mut(ACCOUNT_BYTES);
        head.copy_from_slice(&account);
        rng.fill(tail)?;
        Ok(Self(URL_SAFE_NO_PAD.encode(bytes)))
    }

    /// A session id as a client sent it: `None` unless it has the shape of ours.
    pub fn parse(raw: &str) -> Option<Self> {
        let bytes = URL_SAFE_NO_PAD.decode(raw).ok()?;
        (bytes.len() == SESSION_ID_BYTES && URL_SAFE_NO_PAD.encode(&bytes) == raw)
            .then(|| Self(raw.to_owned()))
    }

    pub fn from_stored(raw: String) -> Self {
        Self(raw)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The `sub` of the account the session belongs to (empty for an id not of our
    /// shape, which names no stored session).
    pub fn account(&self) -> String {
        URL_SAFE_NO_PAD
            .decode(&self.0)
            .ok()
            .and_then(|bytes| {
                bytes
                    .get(..ACCOUNT_BYTES)
                    .map(|a| URL_SAFE_NO_PAD.encode(a))
            })
            .unwrap_or_default()
    }
}

/// The 128 bits of a `sub`.
fn account_bytes(sub: &str) -> Option<[u8; ACCOUNT_BYTES]> {
    URL_SAFE_NO_PAD.decode(sub).ok()?.as_slice().try_into().ok()
}

/// The key of the refresh-token chains: derived from the pepper under its own label, so
/// the secret keeps its shape (CONTRACT §5) and no two uses share a key.
pub struct ChainKey(hmac::Key);

impl ChainKey {
    const LABEL: &'static [u8] = b"foodsave-auth/refresh-token-chain/v1";

    pub fn derive(pepper: &SecretSlice<u8>) -> Self {
        let root = hmac::Key::new(hmac::HMAC_SHA256, pepper.expose_secret());
        let derived = hmac::sign(&root, Self::LABEL);
        Self(hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref()))
    }
}

impl fmt::Debug for ChainKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ChainKey(..)")
    }
}

/// A refresh token as presented or issued. `Debug` never shows it.
#[derive(Clone)]
pub struct RefreshToken {
    text: String,
    sid: [u8; SESSION_ID_BYTES],
    session_id: SessionId,
}

/// Not a token this service could have issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnknownToken;

impl RefreshToken {
    /// The first token of a session: 256 bits from the CSPRNG.
    pub fn generate(
        rng: &dyn SecureRandom,
        session_id: &SessionId,
    ) -> Result<Self, ring::error::Unspecified> {
        let decoded = URL_SAFE_NO_PAD
            .decode(session_id.as_str())
            .map_err(|_| ring::error::Unspecified)?;
        let sid: [u8; SESSION_ID_BYTES] = decoded
            .as_slice()
            .try_into()
            .map_err(|_| ring::error::Unspecified)?;
        let mut secret = [0u8; SECRET_BYTES];
        rng.fill(&mut secret)?;
        Ok(Self::assemble(sid, &secret))
    }

    fn assemble(sid: [u8; SESSION_ID_BYTES], secret: &[u8]) -> Self {
        let mut bytes = Vec::with_capacity(TOKEN_BYTES);
        bytes.extend_from_slice(&sid);
        bytes.extend_from_slice(secret);
        Self {
            text: URL_SAFE_NO_PAD.encode(bytes),
            session_id: SessionId(URL_SAFE_NO_PAD.encode(sid)),
            sid,
        }
    }

    /// The token that replaces this one when it is rotated: same session,
    /// `HMAC-SHA256(key, this token)` as its secret part.
    pub fn successor(&self, key: &ChainKey) -> Self {
        let tag = hmac::sign(&key.0, self.text.as_bytes());
        Self::assemble(self.sid, tag.as_ref())
    }

    /// Recognise the shape of our tokens; anything else is simply unknown.
    pub fn parse(raw: &str) -> Result<Self, UnknownToken> {
        let bytes = URL_SAFE_NO_PAD.decode(raw).map_err(|_| UnknownToken)?;
        if bytes.len() != TOKEN_BYTES {
            return Err(UnknownToken);
        }
        let sid: [u8; SESSION_ID_BYTES] = bytes
            .get(..SESSION_ID_BYTES)
            .and_then(|s| s.try_into().ok())
            .ok_or(UnknownToken)?;
        Ok(Self {
            text: raw.to_owned(),
            session_id: SessionId(URL_SAFE_NO_PAD.encode(sid)),
            sid,
        })
    }

    pub fn session_id(&self) -> &SessionId {
        &self.session_id
    }

    /// SHA-256 of the token text, base64url: the only form that is stored.
    pub fn hash(&self) -> String {
        URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, self.text.as_bytes()))
    }

    /// The token itself, for the response body only.
    pub fn expose(&self) -> &str {
        &self.text
    }
}

impl fmt::Debug for RefreshToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RefreshToken(..)")
    }
}

/// Where a session's refresh-token chain stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    /// SHA-256 of the one live refresh token.
    pub current_hash: String,
    /// Rotations so far: 0 while the first token is live.
    pub generation: u64,
    /// When the live token was issued, i.e. when its predecessor was spent.
    pub rotated_at: UnixMillis,
    /// When the live token expires (`REFRESH_TOKEN_TTL_SECONDS` after issue); older
    /// tokens of the chain count as unexpired exactly as long (CONTRACT §4).
    pub token_expires_at: UnixMillis,
    /// Marks the write of the latest rotation, so that a repeat of that very write
    /// (an SDK retry after a lost answer) is recognised as done, not as a race.
    pub rotation_id: Option<String>,
}

impl Chain {
    /// The chain after its live token is rotated to `next` at `now`.
    pub fn rotated(
        &self,
        next: &RefreshToken,
        now: UnixMillis,
        token_ttl_secs: u64,
        rotation_id: String,
    ) -> Self {
        Self {
            current_hash: next.hash(),
            generation: self.generation.saturating_add(1),
            rotated_at: now,
            token_expires_at: now.plus_secs(token_ttl_secs),
            rotation_id: Some(rotation_id),
        }
    }
}

/// A login session and its refresh-token chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub id: SessionId,
    pub sub: String,
    pub phone: String,
    pub created_at: UnixMillis,
    /// No token of the session outlives this (`SESSION_MAX_SECONDS`).
    pub expires_at: UnixMillis,
    pub revoked: bool,
    /// The write that revoked it, so that a repeat of that write is recognised as done.
    pub revoked_by: Option<String>,
    /// The verify request's `User-Agent`, sanitised ([`sanitize_user_agent`]).
    pub user_agent: Option<String>,
    pub chain: Chain,
}

/// The longest `User-Agent` kept with a session (CONTRACT §7), in characters.
pub const MAX_USER_AGENT_CHARS: usize = 200;

/// A `User-Agent` as a session keeps it (CONTRACT §7): control characters removed, cut
/// to [`MAX_USER_AGENT_CHARS`], surrounding spaces trimmed; `None` when nothing is left.
pub fn sanitize_user_agent(raw: Option<&str>) -> Option<String> {
    let kept: String = raw?
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_USER_AGENT_CHARS)
        .collect();
    let kept = kept.trim();
    (!kept.is_empty()).then(|| kept.to_owned())
}

impl Session {
    /// A new session whose live token is `first`.
    pub fn start(
        id: SessionId,
        sub: String,
        phone: String,
        first: &RefreshToken,
        now: UnixMillis,
        session_max_secs: u64,
        token_ttl_secs: u64,
    ) -> Self {
        Self {
            id,
            sub,
            phone,
            created_at: now,
            expires_at: now.plus_secs(session_max_secs),
            revoked: false,
            revoked_by: None,
            user_agent: None,
            chain: Chain {
                current_hash: first.hash(),
                generation: 0,
                rotated_at: now,
                token_expires_at: now.plus_secs(token_ttl_secs),
                rotation_id: None,
            },
        }
    }

    /// With the verify request's `User-Agent`, sanitised.
    pub fn with_user_agent(mut self, raw: Option<&str>) -> Self {
        self.user_agent = sanitize_user_agent(raw);
        self
    }

    /// When the session was last used: its latest refresh, or its verify (CONTRACT §7's
    /// `lastUsedAt`), which is when its live token was issued.
    pub fn last_used_at(&self) -> UnixMillis {
        self.chain.rotated_at
    }

    /// Not revoked, and neither the session nor its live token has expired.
    pub fn is_live(&self, now: UnixMillis) -> bool {
        !self.revoked && now < self.expires_at && now < self.chain.token_expires_at
    }

    /// How many rotations ago `token` was the live token of this session: `Some(0)` for
    /// the live one, `None` for a token that was never of this chain (or is further back
    /// than [`MAX_CHAIN_WALK`]).
    pub fn rotations_behind(&self, token: &RefreshToken, key: &ChainKey) -> Option<u64> {
        if *token.session_id() != self.id {
            return None;
        }
        let mut candidate = token.clone();
        for behind in 0..=self.chain.generation.min(MAX_CHAIN_WALK) {
            if candidate.hash() == self.chain.current_hash {
                return Some(behind);
            }
            candidate = candidate.successor(key);
        }
        None
    }
}

/// What to do with a presented refresh token, given the session as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshDecision {
    /// The live token: spend it, its successor becomes live.
    Rotate,
    /// The token spent by the latest rotation, presented again less than the grace after
    /// (a client retrying a lost response, or two refreshes at once): answer with the
    /// same successor, which is still unspent. Nothing changes.
    RepeatSuccessor,
    /// A spent token at or after the grace, or one whose successor has itself been
    /// spent: the token leaked. Revoke the session (RFC 9700 §4.14.2).
    RevokeSession,
    /// Unknown, expired, or of a revoked or expired session: changes nothing.
    Reject,
}

pub fn decide_refresh(
    token: &RefreshToken,
    key: &ChainKey,
    session: Option<&Session>,
    now: UnixMillis,
    grace_millis: u64,
) -> RefreshDecision {
    let Some(session) = session.filter(|s| s.is_live(now)) else {
        return RefreshDecision::Reject;
    };
    match session.rotations_behind(token, key) {
        None => RefreshDecision::Reject,
        Some(0) => RefreshDecision::Rotate,
        Some(1) if now.0.saturating_sub(session.chain.rotated_at.0) < grace_millis => {
            RefreshDecision::RepeatSuccessor
        }
        Some(_) => RefreshDecision::RevokeSession,
    }
}

/// Logout accepts any unexpired token of a live session's chain, spent or not; the grace
/// plays no part (CONTRACT §4).
pub fn may_log_out(
    token: &RefreshToken,
    key: &ChainKey,
    session: Option<&Session>,
    now: UnixMillis,
) -> bool {
    session.is_some_and(|s| s.is_live(now) && s.rotations_behind(token, key).is_some())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use ring::rand::SystemRandom;

    fn key() -> ChainKey {
        ChainKey::derive(&SecretSlice::from(vec![7u8; 32]))
    }

    fn started(now: UnixMillis) -> (Session, RefreshToken) {
        let rng = SystemRandom::new();
        let sid = SessionId::generate(&rng, &crate::domain::random_id(&rng).unwrap()).unwrap();
        let first = RefreshToken::generate(&rng, &sid).unwrap();
        let session = Session::start(
            sid,
            "sub".into(),
            "+77001234567".into(),
            &first,
            now,
            1000,
            100,
        );
        (session, first)
    }

    /// The session after `token` was rotated at `now`.
    fn rotate(session: &mut Session, token: &RefreshToken, now: UnixMillis) -> RefreshToken {
        let next = token.successor(&key());
        session.chain = session.chain.rotated(&next, now, 100, "r".into());
        next
    }

    #[test]
    fn tokens_are_86_url_safe_chars_and_carry_their_session() {
        let rng = SystemRandom::new();
        let sid = SessionId::generate(&rng, &crate::domain::random_id(&rng).unwrap()).unwrap();
        let t = RefreshToken::generate(&rng, &sid).unwrap();
        for token in [t.clone(), t.successor(&key())] {
            assert_eq!(token.expose().len(), 86);
            assert!(
                token
                    .expose()
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            );
            let parsed = RefreshToken::parse(token.expose()).unwrap();
            assert_eq!(parsed.session_id(), &sid);
            assert_eq!(parsed.hash(), token.hash());
            assert_ne!(token.hash(), token.expose());
        }
        assert_eq!(format!("{t:?}"), "RefreshToken(..)");
        assert_eq!(format!("{:?}", key()), "ChainKey(..)");
    }

    #[test]
    fn a_session_id_names_its_account() {
        let rng = SystemRandom::new();
        let sub = crate::domain::random_id(&rng).unwrap();
        let sid = SessionId::generate(&rng, &sub).unwrap();
        assert_eq!(sid.account(), sub);
        assert_eq!(sid.as_str().len(), 43);
        assert_eq!(SessionId::parse(sid.as_str()), Some(sid.clone()));
        assert_ne!(SessionId::generate(&rng, &sub).unwrap(), sid);
        for raw in ["", "abc", &sub, &format!("{}=", sid.as_str()), "é"] {
            assert_eq!(SessionId::parse(raw), None, "{raw:?}");
        }
        assert!(SessionId::generate(&rng, "not-a-sub").is_err());
        assert_eq!(SessionId::from_stored("!".into()).account(), "");
    }

    #[test]
    fn user_agents_lose_control_characters_and_stop_at_200_characters() {
        assert_eq!(sanitize_user_agent(None), None);
        assert_eq!(sanitize_user_agent(Some("")), None);
        assert_eq!(sanitize_user_agent(Some(" \t\r\n ")), None);
        assert_eq!(
            sanitize_user_agent(Some("FoodSave/5.2\r\n (iPhone)\u{7f}")).as_deref(),
            Some("FoodSave/5.2 (iPhone)")
        );
        let long = "ж".repeat(300);
        assert_eq!(
            sanitize_user_agent(Some(&long)).unwrap().chars().count(),
            MAX_USER_AGENT_CHARS
        );
    }

    #[test]
    fn the_successor_is_keyed_deterministic_and_not_the_token() {
        let (_, first) = started(UnixMillis(0));
        let next = first.successor(&key());
        assert_eq!(next.expose(), first.successor(&key()).expose());
        assert_ne!(next.expose(), first.expose());
        let other_key = ChainKey::derive(&SecretSlice::from(vec![8u8; 32]));
        assert_ne!(next.expose(), first.successor(&other_key).expose());
    }

    #[test]
    fn other_shapes_are_unknown() {
        for raw in [
            "def50200",
            "",
            "a".repeat(64).as_str(),
            "a".repeat(85).as_str(),
            "a".repeat(87).as_str(),
            &"+".repeat(86),
        ] {
            assert_eq!(
                RefreshToken::parse(raw).err(),
                Some(UnknownToken),
                "{raw:?}"
            );
        }
    }

    #[test]
    fn the_live_token_rotates_and_the_previous_one_depends_on_the_grace() {
        let now = UnixMillis::from_secs(10_000);
        let (mut s, first) = started(now);
        let k = key();
        assert_eq!(
            decide_refresh(&first, &k, Some(&s), now, 10_000),
            RefreshDecision::Rotate
        );
        let second = rotate(&mut s, &first, now);
        assert_eq!(
            decide_refresh(&first, &k, Some(&s), now.plus_millis(9_999), 10_000),
            RefreshDecision::RepeatSuccessor
        );
        assert_eq!(
            decide_refresh(&first, &k, Some(&s), now.plus_millis(10_000), 10_000),
            RefreshDecision::RevokeSession
        );
        // Grace 0: any reuse, even in the same millisecond, revokes.
        assert_eq!(
            decide_refresh(&first, &k, Some(&s), now, 0),
            RefreshDecision::RevokeSession
        );
        // Once the successor is spent, the first token is reuse, grace or not.
        rotate(&mut s, &second, now.plus_millis(1));
        assert_eq!(
            decide_refresh(&first, &k, Some(&s), now.plus_millis(2), 10_000),
            RefreshDecision::RevokeSession
        );
    }

    #[test]
    fn a_token_far_back_in_the_chain_is_recognised_and_an_invented_one_is_not() {
        let now = UnixMillis::from_secs(10_000);
        let (mut s, first) = started(now);
        let mut token = first.clone();
        for _ in 0..1_000 {
            token = rotate(&mut s, &token, now);
        }
        assert_eq!(s.rotations_behind(&first, &key()), Some(1_000));
        assert_eq!(s.rotations_behind(&token, &key()), Some(0));
        assert!(may_log_out(&first, &key(), Some(&s), now));
        // Same session id, bits of our own choosing: not of the chain.
        let rng = SystemRandom::new();
        let invented = RefreshToken::generate(&rng, &s.id).unwrap();
        assert_eq!(s.rotations_behind(&invented, &key()), None);
        assert_eq!(
            decide_refresh(&invented, &key(), Some(&s), now, 10_000),
            RefreshDecision::Reject
        );
        assert!(!may_log_out(&invented, &key(), Some(&s), now));
        // A token of another session is not of this chain either.
        let (_, foreign) = started(now);
        assert_eq!(s.rotations_behind(&foreign, &key()), None);
    }

    #[test]
    fn a_token_more_than_the_walk_behind_counts_as_never_issued() {
        let now = UnixMillis::from_secs(10_000);
        let (mut s, first) = started(now);
        let mut token = first.clone();
        let mut second = None;
        for _ in 0..=MAX_CHAIN_WALK {
            token = rotate(&mut s, &token, now);
            second.get_or_insert_with(|| token.clone());
        }
        let second = second.unwrap();
        let k = key();
        // The walk's floor: 1,000 back is still the chain's (and so reuse: revoke).
        assert_eq!(MAX_CHAIN_WALK, 1_000);
        assert_eq!(s.rotations_behind(&second, &k), Some(MAX_CHAIN_WALK));
        assert_eq!(
            decide_refresh(&second, &k, Some(&s), now.plus_secs(60), 10_000),
            RefreshDecision::RevokeSession
        );
        // 1,001 back: never issued as far as the session can tell; nothing changes.
        assert_eq!(s.rotations_behind(&first, &k), None);
        assert_eq!(
            decide_refresh(&first, &k, Some(&s), now.plus_secs(60), 10_000),
            RefreshDecision::Reject
        );
        assert!(!may_log_out(&first, &k, Some(&s), now));
    }

    #[test]
    fn expired_tokens_and_dead_sessions_are_rejected() {
        let now = UnixMillis::from_secs(10_000);
        let (mut s, first) = started(now);
        let k = key();
        assert_eq!(
            decide_refresh(&first, &k, Some(&s), now.plus_secs(100), 0),
            RefreshDecision::Reject
        );
        assert!(!may_log_out(&first, &k, Some(&s), now.plus_secs(100)));
        s.revoked = true;
        assert_eq!(
            decide_refresh(&first, &k, Some(&s), now, 0),
            RefreshDecision::Reject
        );
        assert!(!may_log_out(&first, &k, Some(&s), now));
        assert_eq!(
            decide_refresh(&first, &k, None, now, 0),
            RefreshDecision::Reject
        );
    }

    #[test]
    fn logout_accepts_a_spent_token_of_a_live_session() {
        let now = UnixMillis::from_secs(10_000);
        let (mut s, first) = started(now);
        rotate(&mut s, &first, now);
        assert!(may_log_out(&first, &key(), Some(&s), now.plus_secs(50)));
    }
}

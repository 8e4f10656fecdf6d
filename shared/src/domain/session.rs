//! Sessions and rotating refresh tokens (CONTRACT §4, RFC 9700 §4.14.2).
//!
//! A refresh token is `base64url(session id ‖ 256 random bits)`: 64 URL-safe characters.
//! Carrying the session id lets one batched read fetch both the token's record and its
//! session; only the token's SHA-256 is stored.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::digest;
use ring::rand::SecureRandom;

use super::time::UnixMillis;

const SESSION_ID_BYTES: usize = 16;
const SECRET_BYTES: usize = 32;
const TOKEN_BYTES: usize = SESSION_ID_BYTES + SECRET_BYTES;

/// Random 128-bit session id (base64url); also the access token's `sid`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SessionId(String);

impl SessionId {
    pub fn generate(rng: &dyn SecureRandom) -> Result<Self, ring::error::Unspecified> {
        let mut bytes = [0u8; SESSION_ID_BYTES];
        rng.fill(&mut bytes)?;
        Ok(Self(URL_SAFE_NO_PAD.encode(bytes)))
    }

    pub fn from_stored(raw: String) -> Self {
        Self(raw)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A refresh token as presented or issued. `Debug` never shows it.
#[derive(Clone)]
pub struct RefreshToken {
    text: String,
    session_id: SessionId,
}

/// Not a token this service could have issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnknownToken;

impl RefreshToken {
    pub fn generate(
        rng: &dyn SecureRandom,
        session_id: &SessionId,
    ) -> Result<Self, ring::error::Unspecified> {
        let mut bytes = [0u8; TOKEN_BYTES];
        let sid = URL_SAFE_NO_PAD
            .decode(session_id.as_str())
            .map_err(|_| ring::error::Unspecified)?;
        let (head, tail) = bytes.split_at_mut(SESSION_ID_BYTES);
        if sid.len() != SESSION_ID_BYTES {
            return Err(ring::error::Unspecified);
        }
        head.copy_from_slice(&sid);
        rng.fill(tail)?;
        Ok(Self {
            text: URL_SAFE_NO_PAD.encode(bytes),
            session_id: session_id.clone(),
        })
    }

    /// Recognise the shape of our tokens; anything else is simply unknown.
    pub fn parse(raw: &str) -> Result<Self, UnknownToken> {
        let bytes = URL_SAFE_NO_PAD.decode(raw).map_err(|_| UnknownToken)?;
        if bytes.len() != TOKEN_BYTES {
            return Err(UnknownToken);
        }
        let sid = bytes.get(..SESSION_ID_BYTES).ok_or(UnknownToken)?;
        Ok(Self {
            text: raw.to_owned(),
            session_id: SessionId(URL_SAFE_NO_PAD.encode(sid)),
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

/// A login session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub id: SessionId,
    pub sub: String,
    pub phone: String,
    pub created_at: UnixMillis,
    /// No token of the session outlives this (`SESSION_MAX_SECONDS`).
    pub expires_at: UnixMillis,
    pub revoked: bool,
}

impl Session {
    pub fn is_live(&self, now: UnixMillis) -> bool {
        !self.revoked && now < self.expires_at
    }
}

/// The stored record of one issued refresh token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRefreshToken {
    pub hash: String,
    pub session_id: SessionId,
    pub issued_at: UnixMillis,
    /// min(issued + `REFRESH_TOKEN_TTL_SECONDS`, session expiry).
    pub expires_at: UnixMillis,
    /// Set when a refresh rotated it.
    pub spent_at: Option<UnixMillis>,
}

impl StoredRefreshToken {
    pub fn issue(hash: String, session: &Session, now: UnixMillis, ttl_secs: u64) -> Self {
        Self {
            hash,
            session_id: session.id.clone(),
            issued_at: now,
            expires_at: now.plus_secs(ttl_secs).min(session.expires_at),
            spent_at: None,
        }
    }
}

/// What to do with a presented refresh token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshDecision {
    /// A live token: spend it and issue the next one.
    Rotate,
    /// Spent less than the grace ago: a client retrying a lost response. Issue another
    /// pair; the earlier ones stay live.
    RotateWithinGrace { spent_at: UnixMillis },
    /// Spent at or after the grace: the token leaked. Revoke the session (RFC 9700 §4.14.2).
    RevokeSession,
    /// Unknown, expired, or of a revoked or expired session.
    Reject,
}

pub fn decide_refresh(
    token: Option<&StoredRefreshToken>,
    session: Option<&Session>,
    now: UnixMillis,
    grace_millis: u64,
) -> RefreshDecision {
    let (Some(token), Some(session)) = (token, session) else {
        return RefreshDecision::Reject;
    };
    if token.session_id != session.id || !session.is_live(now) || now >= token.expires_at {
        return RefreshDecision::Reject;
    }
    match token.spent_at {
        None => RefreshDecision::Rotate,
        Some(spent_at) if now.0.saturating_sub(spent_at.0) < grace_millis => {
            RefreshDecision::RotateWithinGrace { spent_at }
        }
        Some(_) => RefreshDecision::RevokeSession,
    }
}

/// Logout accepts any unexpired token of a live session, spent or not; the grace plays
/// no part (CONTRACT §4).
pub fn may_log_out(
    token: Option<&StoredRefreshToken>,
    session: Option<&Session>,
    now: UnixMillis,
) -> bool {
    match (token, session) {
        (Some(t), Some(s)) => t.session_id == s.id && s.is_live(now) && now < t.expires_at,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use ring::rand::SystemRandom;

    fn session(now: UnixMillis) -> Session {
        Session {
            id: SessionId::generate(&SystemRandom::new()).unwrap(),
            sub: "sub".into(),
            phone: "+77001234567".into(),
            created_at: now,
            expires_at: now.plus_secs(1000),
            revoked: false,
        }
    }

    #[test]
    fn tokens_are_64_url_safe_chars_and_carry_their_session() {
        let rng = SystemRandom::new();
        let sid = SessionId::generate(&rng).unwrap();
        let t = RefreshToken::generate(&rng, &sid).unwrap();
        assert_eq!(t.expose().len(), 64);
        assert!(
            t.expose()
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        let parsed = RefreshToken::parse(t.expose()).unwrap();
        assert_eq!(parsed.session_id(), &sid);
        assert_eq!(parsed.hash(), t.hash());
        assert_ne!(t.hash(), t.expose());
        assert_eq!(format!("{t:?}"), "RefreshToken(..)");
    }

    #[test]
    fn other_shapes_are_unknown() {
        for raw in [
            "def50200",
            "",
            "a".repeat(63).as_str(),
            "a".repeat(65).as_str(),
            &"+".repeat(64),
        ] {
            assert_eq!(
                RefreshToken::parse(raw).err(),
                Some(UnknownToken),
                "{raw:?}"
            );
        }
    }

    #[test]
    fn a_live_token_rotates_and_a_spent_one_depends_on_the_grace() {
        let now = UnixMillis::from_secs(10_000);
        let s = session(now);
        let mut t = StoredRefreshToken::issue("h".into(), &s, now, 100);
        assert_eq!(
            decide_refresh(Some(&t), Some(&s), now, 10_000),
            RefreshDecision::Rotate
        );
        t.spent_at = Some(now);
        assert_eq!(
            decide_refresh(Some(&t), Some(&s), now.plus_millis(9_999), 10_000),
            RefreshDecision::RotateWithinGrace { spent_at: now }
        );
        assert_eq!(
            decide_refresh(Some(&t), Some(&s), now.plus_millis(10_000), 10_000),
            RefreshDecision::RevokeSession
        );
        // Grace 0: any reuse, even in the same millisecond, revokes.
        assert_eq!(
            decide_refresh(Some(&t), Some(&s), now, 0),
            RefreshDecision::RevokeSession
        );
    }

    #[test]
    fn expired_tokens_and_dead_sessions_are_rejected() {
        let now = UnixMillis::from_secs(10_000);
        let mut s = session(now);
        let t = StoredRefreshToken::issue("h".into(), &s, now, 100);
        assert_eq!(
            decide_refresh(Some(&t), Some(&s), now.plus_secs(100), 0),
            RefreshDecision::Reject
        );
        assert!(!may_log_out(Some(&t), Some(&s), now.plus_secs(100)));
        // The session's absolute expiry caps the token's own.
        let long = StoredRefreshToken::issue("h".into(), &s, now, 5_000);
        assert_eq!(long.expires_at, s.expires_at);
        s.revoked = true;
        assert_eq!(
            decide_refresh(Some(&t), Some(&s), now, 0),
            RefreshDecision::Reject
        );
        assert!(!may_log_out(Some(&t), Some(&s), now));
        assert_eq!(
            decide_refresh(None, Some(&s), now, 0),
            RefreshDecision::Reject
        );
    }

    #[test]
    fn logout_accepts_a_spent_token_of_a_live_session() {
        let now = UnixMillis::from_secs(10_000);
        let s = session(now);
        let mut t = StoredRefreshToken::issue("h".into(), &s, now, 100);
        t.spent_at = Some(now);
        assert!(may_log_out(Some(&t), Some(&s), now.plus_secs(50)));
    }
}

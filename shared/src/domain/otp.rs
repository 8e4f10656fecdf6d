//! One-time codes (CONTRACT §2) and the sliding send window (CONTRACT §3).
//!
//! All of a phone's OTP state is one value, [`OtpState`], stored as one item and replaced
//! only by a write conditioned on the version that was read: every race (parallel sends,
//! parallel verifies, a send rolled back after SNS refused it) resolves in DynamoDB.

use std::fmt;

use ring::hmac;
use ring::rand::SecureRandom;
use secrecy::{ExposeSecret, SecretSlice};

use super::phone::PhoneNumber;
use super::time::UnixMillis;

/// Six ASCII digits. `Debug` never shows them.
#[derive(Clone, PartialEq, Eq)]
pub struct OtpCode(String);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidCodeFormat;

/// The largest multiple of 10^6 not above 2^32: draws at or above it are rejected so
/// that every code is equally likely (no modulo bias).
const UNBIASED_LIMIT: u32 = (u32::MAX / 1_000_000) * 1_000_000;

impl OtpCode {
    pub fn parse(raw: &str) -> Result<Self, InvalidCodeFormat> {
        if raw.len() == 6 && raw.bytes().all(|b| b.is_ascii_digit()) {
            Ok(Self(raw.to_owned()))
        } else {
            Err(InvalidCodeFormat)
        }
    }

    /// A uniform code from a CSPRNG.
    pub fn generate(rng: &dyn SecureRandom) -> Result<Self, ring::error::Unspecified> {
        loop {
            let mut buf = [0u8; 4];
            rng.fill(&mut buf)?;
            let n = u32::from_be_bytes(buf);
            if n < UNBIASED_LIMIT {
                return Ok(Self(format!("{:06}", n % 1_000_000)));
            }
        }
    }

    /// The digits, for the SMS text only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for OtpCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OtpCode(******)")
    }
}

/// HMAC-SHA256 over phone and code, keyed with the pepper: what is stored instead of a code.
#[derive(Clone, PartialEq, Eq)]
pub struct CodeMac(Vec<u8>);

impl CodeMac {
    pub fn compute(pepper: &SecretSlice<u8>, phone: &PhoneNumber, code: &OtpCode) -> Self {
        let key = hmac::Key::new(hmac::HMAC_SHA256, pepper.expose_secret());
        Self(
            hmac::sign(&key, &Self::message(phone, code))
                .as_ref()
                .to_vec(),
        )
    }

    /// Constant-time comparison (ring's `hmac::verify`).
    pub fn matches(&self, pepper: &SecretSlice<u8>, phone: &PhoneNumber, code: &OtpCode) -> bool {
        let key = hmac::Key::new(hmac::HMAC_SHA256, pepper.expose_secret());
        hmac::verify(&key, &Self::message(phone, code), &self.0).is_ok()
    }

    fn message(phone: &PhoneNumber, code: &OtpCode) -> Vec<u8> {
        format!("{}:{}", phone.e164(), code.expose()).into_bytes()
    }

    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for CodeMac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CodeMac(..)")
    }
}

/// The code a phone may currently verify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveCode {
    /// Random id of this code, so a write can be conditioned on "still this code".
    pub id: String,
    pub mac: CodeMac,
    pub expires_at: UnixMillis,
    /// Wrong tries so far.
    pub attempts: u32,
}

/// The wrong-guess budget's window (CONTRACT §3b): a day.
pub const GUESS_WINDOW_SECS: u64 = 86_400;

/// The send that issued the active code carried this `Idempotency-Key` (CONTRACT §3b).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotentSend {
    /// SHA-256 of the key, base64url: keys are the client's, not ours to store.
    pub key_hash: String,
    pub code_id: String,
}

/// Everything stored about one phone's codes, sends and wrong guesses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OtpState {
    /// Accepted sends, oldest first. Only those inside the window matter.
    pub sends: Vec<UnixMillis>,
    pub code: Option<ActiveCode>,
    /// Wrong codes entered against this phone's active codes, oldest first; only the
    /// last [`GUESS_WINDOW_SECS`] matter, and no more than the budget are kept.
    pub wrong: Vec<UnixMillis>,
    /// Set when the send that issued the active code carried an `Idempotency-Key`.
    pub idempotency: Option<IdempotentSend>,
    /// Bumped by every write; `None` while no item exists.
    pub version: Option<u64>,
    /// Ids of the item's last writes, newest first (at most [`WRITES_KEPT`]), so that a
    /// write whose answer was lost, and its retry, recognise their own effect (CONTRACT §1).
    pub writes: Vec<String>,
    /// An operator blocked the phone (CONTRACT §7): send and verify answer 403 before
    /// anything is spent. Kept in the phone's OTP item, which both already read or
    /// condition on, so a block costs them no request.
    pub blocked: Option<Block>,
}

/// An operator's block of a phone: when, and why (kept in the table only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    pub at: UnixMillis,
    pub reason: Option<String>,
}

/// How many write ids an OTP item keeps: a retry comes within seconds, while at most a
/// few other writes (a send, a wrong code) can land on one phone in between.
pub const WRITES_KEPT: usize = 4;

/// Per-phone send and guess limits, from configuration.
#[derive(Debug, Clone, Copy)]
pub struct SendPolicy {
    pub limit: u32,
    pub window_secs: u64,
    /// Tries per code (`OTP_MAX_ATTEMPTS`): a burned code is no longer valid to replay.
    pub max_attempts: u32,
    pub guesses: GuessPolicy,
}

/// What verification needs of the OTP settings.
#[derive(Debug, Clone, Copy)]
pub struct VerifyPolicy {
    /// `OTP_MAX_ATTEMPTS`: tries per code.
    pub max_attempts: u32,
    pub guesses: GuessPolicy,
    /// `OTP_SEND_WINDOW_SECONDS`: how long a send still counts (the item's lifetime).
    pub send_window_secs: u64,
}

/// `OTP_MAX_WRONG_PER_DAY`: wrong codes per phone per day, whatever code they were
/// against; 0 turns the budget off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuessPolicy {
    pub limit: u32,
}

/// Which budget refused a send (CONTRACT §3b, in the order they are checked).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendLimit {
    GuessLock,
    PhoneWindow,
    Ip,
    Global,
}

impl SendLimit {
    /// For logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::GuessLock => "guess_lock",
            Self::PhoneWindow => "phone_window",
            Self::Ip => "ip",
            Self::Global => "global",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendOutcome {
    /// The state to write (conditioned on the version that was read).
    Admitted(Box<OtpState>),
    /// The same `Idempotency-Key` as the send that issued the still valid code: answer
    /// that send's 200 again; nothing is sent or spent.
    Replay,
    /// The phone is blocked: 403, nothing sent or spent (CONTRACT §3b's order).
    Blocked,
    RateLimited {
        limit: SendLimit,
        retry_after_secs: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyOutcome {
    /// The code matches: consume it (conditioned on the version that was read).
    Accepted,
    /// Wrong code: write `next` (the try counted against the code and the phone's
    /// guesses). `attempts_left` is the smaller of the tries left on the code and the
    /// guesses left for the phone.
    Wrong {
        next: Box<OtpState>,
        attempts_left: u32,
        /// This try was the code's last: it is burned.
        burned: bool,
        /// This try used up the phone's guess budget: it is locked for a while.
        guesses_exhausted: bool,
    },
    /// Never sent, expired, used or burned.
    NoActiveCode,
    /// The phone has used its guess budget: 429, even for the right code.
    Locked { retry_after_secs: u64 },
    /// The phone is blocked: 403, whatever the code.
    Blocked,
}

/// Of `times` (any order), how long until fewer than `limit` are less than `window_secs`
/// old: `None` while fewer than `limit` are.
fn wait_for_room(
    times: &[UnixMillis],
    now: UnixMillis,
    limit: u32,
    window_secs: u64,
) -> Option<u64> {
    let mut live: Vec<UnixMillis> = times
        .iter()
        .copied()
        .filter(|t| t.plus_secs(window_secs) > now)
        .collect();
    let limit = limit as usize;
    if live.len() < limit {
        return None;
    }
    live.sort_unstable();
    // Room frees when the (len - limit + 1)-th oldest leaves the window.
    let freeing = live
        .get(live.len() - limit)
        .copied()
        .unwrap_or(now)
        .plus_secs(window_secs);
    Some(now.secs_until_ceil(freeing).max(1))
}

impl GuessPolicy {
    /// How long the phone stays locked, if it has used its budget.
    pub fn lock(&self, wrong: &[UnixMillis], now: UnixMillis) -> Option<u64> {
        if self.limit == 0 {
            return None;
        }
        wait_for_room(wrong, now, self.limit, GUESS_WINDOW_SECS)
    }

    /// Guesses the phone has left today (`u32::MAX` with the budget off).
    pub fn left(&self, wrong: &[UnixMillis], now: UnixMillis) -> u32 {
        if self.limit == 0 {
            return u32::MAX;
        }
        let counted = wrong
            .iter()
            .filter(|t| t.plus_secs(GUESS_WINDOW_SECS) > now)
            .count();
        self.limit
            .saturating_sub(u32::try_from(counted).unwrap_or(u32::MAX))
    }

    /// The wrong tries worth keeping after one more at `now`: the last day's, at most
    /// the budget's worth (older ones can never count again).
    fn after_wrong(&self, wrong: &[UnixMillis], now: UnixMillis) -> Vec<UnixMillis> {
        let mut kept: Vec<UnixMillis> = wrong
            .iter()
            .copied()
            .filter(|t| t.plus_secs(GUESS_WINDOW_SECS) > now)
            .collect();
        kept.push(now);
        kept.sort_unstable();
        let keep = (self.limit as usize).max(1);
        if kept.len() > keep {
            kept.drain(..kept.len() - keep);
        }
        kept
    }

    fn in_window(&self, wrong: &[UnixMillis], now: UnixMillis) -> Vec<UnixMillis> {
        wrong
            .iter()
            .copied()
            .filter(|t| t.plus_secs(GUESS_WINDOW_SECS) > now)
            .collect()
    }
}

impl OtpState {
    /// This state, to be written by the write `id`.
    #[must_use]
    pub fn tagged(mut self, id: &str) -> Self {
        self.writes.insert(0, id.to_owned());
        self.writes.truncate(WRITES_KEPT);
        self
    }

    /// Whether the write `id` is one of the item's last writes.
    pub fn wrote(&self, id: &str) -> bool {
        self.writes.iter().any(|w| w == id)
    }

    /// The version a write of this state's successor at `now` carries. A phone's first
    /// item (or one replacing an item whose TTL has passed) starts at `now` in
    /// milliseconds, not at 1, so a writer still holding a version of an earlier, expired
    /// item can never match the new one.
    fn next_version(&self, now: UnixMillis) -> Option<u64> {
        Some(
            self.version
                .map_or(now.as_millis(), |v| v.saturating_add(1)),
        )
    }

    /// Whether `key_hash` is the key of the send that issued a code still valid at `now`.
    fn is_replay(&self, key_hash: &str, now: UnixMillis, max_attempts: u32) -> bool {
        match (&self.idempotency, &self.code) {
            (Some(sent), Some(code)) => {
                sent.key_hash == key_hash
                    && sent.code_id == code.id
                    && code.expires_at > now
                    && code.attempts < max_attempts
            }
            _ => false,
        }
    }

    /// Admit a send of `code` at `now` (CONTRACT §3, §3b, in order: idempotent replay,
    /// guess lock, per-phone window), or say which limit refuses and for how long.
    pub fn admit_send(
        &self,
        now: UnixMillis,
        policy: SendPolicy,
        code: ActiveCode,
        idempotency_key_hash: Option<&str>,
    ) -> SendOutcome {
        if self.blocked.is_some() {
            return SendOutcome::Blocked;
        }
        if let Some(key) = idempotency_key_hash
            && self.is_replay(key, now, policy.max_attempts)
        {
            return SendOutcome::Replay;
        }
        if let Some(retry_after_secs) = policy.guesses.lock(&self.wrong, now) {
            return SendOutcome::RateLimited {
                limit: SendLimit::GuessLock,
                retry_after_secs,
            };
        }
        if let Some(retry_after_secs) =
            wait_for_room(&self.sends, now, policy.limit, policy.window_secs)
        {
            return SendOutcome::RateLimited {
                limit: SendLimit::PhoneWindow,
                retry_after_secs,
            };
        }
        let mut sends: Vec<UnixMillis> = self
            .sends
            .iter()
            .copied()
            .filter(|s| s.plus_secs(policy.window_secs) > now)
            .collect();
        sends.sort_unstable();
        sends.push(now);
        SendOutcome::Admitted(Box::new(OtpState {
            sends,
            idempotency: idempotency_key_hash.map(|key| IdempotentSend {
                key_hash: key.to_owned(),
                code_id: code.id.clone(),
            }),
            code: Some(code),
            wrong: policy.guesses.in_window(&self.wrong, now),
            version: self.next_version(now),
            writes: self.writes.clone(),
            blocked: None,
        }))
    }

    /// The state after taking back a send whose SMS SNS did not accept: the slot is
    /// returned and, if our code is still the current one, the previous code (and the
    /// key of the send that issued it) comes back, so our key is free again.
    pub fn without_send(
        &self,
        sent_at: UnixMillis,
        our_code_id: &str,
        previous: &OtpState,
    ) -> OtpState {
        let mut sends = self.sends.clone();
        if let Some(pos) = sends.iter().position(|s| *s == sent_at) {
            sends.remove(pos);
        }
        let ours = self.code.as_ref().is_some_and(|c| c.id == our_code_id);
        let (code, idempotency) = if ours {
            (previous.code.clone(), previous.idempotency.clone())
        } else {
            (self.code.clone(), self.idempotency.clone())
        };
        OtpState {
            sends,
            code,
            idempotency,
            wrong: self.wrong.clone(),
            version: self.next_version(sent_at),
            writes: self.writes.clone(),
            blocked: self.blocked.clone(),
        }
    }

    /// Check `code` against the active code at `now` (CONTRACT §2, §3b: the guess lock
    /// first, then the code).
    pub fn check(
        &self,
        now: UnixMillis,
        max_attempts: u32,
        guesses: GuessPolicy,
        pepper: &SecretSlice<u8>,
        phone: &PhoneNumber,
        code: &OtpCode,
    ) -> VerifyOutcome {
        if self.blocked.is_some() {
            return VerifyOutcome::Blocked;
        }
        if let Some(retry_after_secs) = guesses.lock(&self.wrong, now) {
            return VerifyOutcome::Locked { retry_after_secs };
        }
        let Some(active) = self
            .code
            .as_ref()
            .filter(|c| c.expires_at > now && c.attempts < max_attempts)
        else {
            return VerifyOutcome::NoActiveCode;
        };
        if active.mac.matches(pepper, phone, code) {
            return VerifyOutcome::Accepted;
        }
        let attempts = active.attempts.saturating_add(1);
        let code_left = max_attempts.saturating_sub(attempts);
        let wrong = guesses.after_wrong(&self.wrong, now);
        let guesses_left = guesses.left(&wrong, now);
        VerifyOutcome::Wrong {
            next: Box::new(OtpState {
                sends: self.sends.clone(),
                code: Some(ActiveCode {
                    attempts,
                    ..active.clone()
                }),
                wrong,
                idempotency: self.idempotency.clone(),
                version: self.next_version(now),
                writes: self.writes.clone(),
                blocked: None,
            }),
            attempts_left: code_left.min(guesses_left),
            burned: code_left == 0,
            guesses_exhausted: guesses_left == 0,
        }
    }

    /// When DynamoDB may delete the item: once no code, send or counted wrong try matters.
    pub fn expires_at(&self, window_secs: u64) -> UnixMillis {
        let last_send = self
            .sends
            .iter()
            .max()
            .map_or(UnixMillis(0), |s| s.plus_secs(window_secs));
        let code = self.code.as_ref().map_or(UnixMillis(0), |c| c.expires_at);
        let last_wrong = self
            .wrong
            .iter()
            .max()
            .map_or(UnixMillis(0), |w| w.plus_secs(GUESS_WINDOW_SECS));
        last_send.max(code).max(last_wrong)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use ring::rand::SystemRandom;

    const GUESSES: GuessPolicy = GuessPolicy { limit: 20 };
    const POLICY: SendPolicy = SendPolicy {
        limit: 3,
        window_secs: 300,
        max_attempts: 5,
        guesses: GUESSES,
    };

    fn pepper() -> SecretSlice<u8> {
        SecretSlice::from(vec![7u8; 32])
    }

    fn phone() -> PhoneNumber {
        PhoneNumber::parse("+77001234567").unwrap()
    }

    fn code_for(id: &str, digits: &str, expires_at: UnixMillis) -> ActiveCode {
        ActiveCode {
            id: id.into(),
            mac: CodeMac::compute(&pepper(), &phone(), &OtpCode::parse(digits).unwrap()),
            expires_at,
            attempts: 0,
        }
    }

    fn admitted(outcome: SendOutcome) -> OtpState {
        match outcome {
            SendOutcome::Admitted(s) => *s,
            other => panic!("expected admission, got {other:?}"),
        }
    }

    #[test]
    fn codes_are_six_ascii_digits() {
        let rng = SystemRandom::new();
        for _ in 0..200 {
            let c = OtpCode::generate(&rng).unwrap();
            assert!(OtpCode::parse(c.expose()).is_ok());
        }
        for bad in [
            "12345",
            "1234567",
            "12345a",
            "１２３４５６",
            " 123456",
            "123456\n",
        ] {
            assert!(OtpCode::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            format!("{:?}", OtpCode::parse("123456").unwrap()),
            "OtpCode(******)"
        );
    }

    #[test]
    fn the_fourth_send_in_the_window_is_limited_until_the_oldest_leaves() {
        let t0 = UnixMillis::from_secs(1_000);
        let mut state = OtpState::default();
        for i in 0..3u64 {
            let at = t0.plus_secs(i * 10);
            state = admitted(state.admit_send(
                at,
                POLICY,
                code_for("c", "111111", at.plus_secs(300)),
                None,
            ));
        }
        assert_eq!(state.version, Some(t0.as_millis() + 2));
        let at = t0.plus_secs(100);
        assert_eq!(
            state.admit_send(at, POLICY, code_for("d", "222222", at), None),
            SendOutcome::RateLimited {
                limit: SendLimit::PhoneWindow,
                retry_after_secs: 200
            }
        );
        // One millisecond before the oldest leaves: still limited, and never "0 s".
        let almost = t0.plus_secs(300).plus_millis(0);
        let limited = state.admit_send(
            UnixMillis(almost.0 - 1),
            POLICY,
            code_for("d", "222222", at),
            None,
        );
        assert_eq!(
            limited,
            SendOutcome::RateLimited {
                limit: SendLimit::PhoneWindow,
                retry_after_secs: 1
            }
        );
        // At t0 + 300 s the first send is out of the sliding window.
        let next =
            admitted(state.admit_send(almost, POLICY, code_for("d", "222222", almost), None));
        assert_eq!(next.sends.len(), 3);
        assert_eq!(next.sends[0], t0.plus_secs(10));
    }

    #[test]
    fn taking_back_a_send_restores_the_slot_and_the_previous_code() {
        let t0 = UnixMillis::from_secs(1_000);
        let first = admitted(OtpState::default().admit_send(
            t0,
            POLICY,
            code_for("a", "111111", t0.plus_secs(300)),
            None,
        ));
        let t1 = t0.plus_secs(5);
        let second = admitted(first.admit_send(
            t1,
            POLICY,
            code_for("b", "222222", t1.plus_secs(300)),
            None,
        ));
        let back = second.without_send(t1, "b", &first);
        assert_eq!(back.sends, first.sends);
        assert_eq!(back.code, first.code);
        assert_eq!(back.version, Some(t0.as_millis() + 2));
    }

    #[test]
    fn taking_back_a_send_keeps_a_newer_code() {
        let t0 = UnixMillis::from_secs(1_000);
        let ours = admitted(OtpState::default().admit_send(
            t0,
            POLICY,
            code_for("a", "111111", t0.plus_secs(300)),
            None,
        ));
        let t1 = t0.plus_secs(1);
        let theirs =
            admitted(ours.admit_send(t1, POLICY, code_for("b", "222222", t1.plus_secs(300)), None));
        let back = theirs.without_send(t0, "a", &OtpState::default());
        assert_eq!(back.sends, vec![t1]);
        assert_eq!(back.code.map(|c| c.id), Some("b".to_owned()));
    }

    #[test]
    fn verification_counts_wrong_tries_and_burns_at_the_limit() {
        let t0 = UnixMillis::from_secs(1_000);
        let mut state = admitted(OtpState::default().admit_send(
            t0,
            POLICY,
            code_for("a", "111111", t0.plus_secs(300)),
            None,
        ));
        let wrong = OtpCode::parse("000000").unwrap();
        let right = OtpCode::parse("111111").unwrap();
        for expected_left in (0..5).rev() {
            match state.check(t0, 5, GUESSES, &pepper(), &phone(), &wrong) {
                VerifyOutcome::Wrong {
                    next,
                    attempts_left,
                    burned,
                    guesses_exhausted,
                } => {
                    assert_eq!(attempts_left, expected_left);
                    assert_eq!(burned, expected_left == 0);
                    assert!(!guesses_exhausted);
                    state = *next;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(state.wrong.len(), 5);
        assert_eq!(
            state.check(t0, 5, GUESSES, &pepper(), &phone(), &right),
            VerifyOutcome::NoActiveCode
        );
    }

    #[test]
    fn an_expired_code_is_not_active_even_if_the_item_survives() {
        let t0 = UnixMillis::from_secs(1_000);
        let state = admitted(OtpState::default().admit_send(
            t0,
            POLICY,
            code_for("a", "111111", t0.plus_secs(300)),
            None,
        ));
        let right = OtpCode::parse("111111").unwrap();
        assert!(matches!(
            state.check(t0.plus_secs(299), 5, GUESSES, &pepper(), &phone(), &right),
            VerifyOutcome::Accepted
        ));
        assert_eq!(
            state.check(t0.plus_secs(300), 5, GUESSES, &pepper(), &phone(), &right),
            VerifyOutcome::NoActiveCode
        );
    }

    /// `n` wrong tries against fresh codes, one code per 5 tries, a minute apart.
    fn guessed(mut state: OtpState, t0: UnixMillis, n: u64) -> OtpState {
        let wrong = OtpCode::parse("000000").unwrap();
        for i in 0..n {
            let at = t0.plus_secs(i * 60);
            if state.code.as_ref().is_none_or(|c| c.attempts >= 5) {
                state.code = Some(code_for(&format!("c{i}"), "111111", at.plus_secs(300)));
            }
            state = match state.check(at, 5, GUESSES, &pepper(), &phone(), &wrong) {
                VerifyOutcome::Wrong { next, .. } => *next,
                other => panic!("try {i}: {other:?}"),
            };
        }
        state
    }

    #[test]
    fn twenty_wrong_codes_in_a_day_lock_verify_and_send_until_the_oldest_is_a_day_old() {
        let t0 = UnixMillis::from_secs(1_000_000);
        let state = guessed(OtpState::default(), t0, 19);
        // The 20th wrong try exhausts the budget, whatever tries its code had left.
        let last_at = t0.plus_secs(19 * 60);
        let mut state = state;
        state.code = Some(code_for("fresh", "111111", last_at.plus_secs(300)));
        let wrong = OtpCode::parse("000000").unwrap();
        let state = match state.check(last_at, 5, GUESSES, &pepper(), &phone(), &wrong) {
            VerifyOutcome::Wrong {
                next,
                attempts_left,
                burned,
                guesses_exhausted,
            } => {
                assert_eq!(attempts_left, 0, "min(4 on the code, 0 for the phone)");
                assert!(!burned);
                assert!(guesses_exhausted);
                next
            }
            other => panic!("{other:?}"),
        };
        // Locked: even the right code gets 429, and so does a send.
        let right = OtpCode::parse("111111").unwrap();
        let now = last_at.plus_secs(1);
        let until_oldest_leaves = t0.plus_secs(GUESS_WINDOW_SECS);
        assert_eq!(
            state.check(now, 5, GUESSES, &pepper(), &phone(), &right),
            VerifyOutcome::Locked {
                retry_after_secs: now.secs_until_ceil(until_oldest_leaves)
            }
        );
        assert_eq!(
            state.admit_send(now, POLICY, code_for("x", "222222", now), None),
            SendOutcome::RateLimited {
                limit: SendLimit::GuessLock,
                retry_after_secs: now.secs_until_ceil(until_oldest_leaves)
            }
        );
        // A day after the first wrong try, one guess is free again.
        assert_eq!(GUESSES.lock(&state.wrong, until_oldest_leaves), None);
        assert_eq!(GUESSES.left(&state.wrong, until_oldest_leaves), 1);
        assert_eq!(
            GUESSES.lock(&state.wrong, UnixMillis(until_oldest_leaves.0 - 1)),
            Some(1)
        );
        assert!(state.wrong.len() <= 20);
        // Off at 0.
        let off = GuessPolicy { limit: 0 };
        assert_eq!(off.lock(&state.wrong, now), None);
    }

    #[test]
    fn attempts_left_is_the_smaller_of_the_code_and_the_phone_budget() {
        let t0 = UnixMillis::from_secs(1_000_000);
        let mut state = guessed(OtpState::default(), t0, 17);
        let at = t0.plus_secs(17 * 60);
        state.code = Some(code_for("fresh", "111111", at.plus_secs(300)));
        let wrong = OtpCode::parse("000000").unwrap();
        match state.check(at, 5, GUESSES, &pepper(), &phone(), &wrong) {
            VerifyOutcome::Wrong { attempts_left, .. } => assert_eq!(attempts_left, 2),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_repeated_idempotency_key_replays_while_its_code_is_valid() {
        let t0 = UnixMillis::from_secs(1_000);
        let first = admitted(OtpState::default().admit_send(
            t0,
            POLICY,
            code_for("a", "111111", t0.plus_secs(300)),
            Some("key-hash"),
        ));
        let t1 = t0.plus_secs(10);
        assert_eq!(
            first.admit_send(t1, POLICY, code_for("b", "222222", t1), Some("key-hash")),
            SendOutcome::Replay
        );
        // Another key, or none, is another send.
        assert!(matches!(
            first.admit_send(t1, POLICY, code_for("b", "222222", t1), Some("other")),
            SendOutcome::Admitted(_)
        ));
        assert!(matches!(
            first.admit_send(t1, POLICY, code_for("b", "222222", t1), None),
            SendOutcome::Admitted(_)
        ));
        // Once the code has expired, the key sends again.
        let late = t0.plus_secs(300);
        assert!(matches!(
            first.admit_send(
                late,
                POLICY,
                code_for("b", "222222", late),
                Some("key-hash")
            ),
            SendOutcome::Admitted(_)
        ));
        // A refused send gives its key back.
        let second = admitted(first.admit_send(
            t1,
            POLICY,
            code_for("b", "222222", t1.plus_secs(300)),
            Some("key-2"),
        ));
        let back = second.without_send(t1, "b", &first);
        assert_eq!(back.idempotency, first.idempotency);
    }

    #[test]
    fn the_mac_binds_code_and_phone() {
        let code = OtpCode::parse("123456").unwrap();
        let mac = CodeMac::compute(&pepper(), &phone(), &code);
        assert!(mac.matches(&pepper(), &phone(), &code));
        let other_phone = PhoneNumber::parse("+77001234568").unwrap();
        assert!(!mac.matches(&pepper(), &other_phone, &code));
        let other_pepper = SecretSlice::from(vec![8u8; 32]);
        assert!(!mac.matches(&other_pepper, &phone(), &code));
    }
}

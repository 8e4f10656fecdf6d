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

/// Everything stored about one phone's codes and sends.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OtpState {
    /// Accepted sends, oldest first. Only those inside the window matter.
    pub sends: Vec<UnixMillis>,
    pub code: Option<ActiveCode>,
    /// Bumped by every write; `None` while no item exists.
    pub version: Option<u64>,
}

/// Send limits, from configuration.
#[derive(Debug, Clone, Copy)]
pub struct SendPolicy {
    pub limit: u32,
    pub window_secs: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendOutcome {
    /// The state to write (conditioned on the version that was read).
    Admitted(OtpState),
    RateLimited {
        retry_after_secs: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyOutcome {
    /// The code matches: consume it (conditioned on its id and attempt count).
    Accepted { code_id: String, attempts: u32 },
    /// Wrong code: record the attempt; `attempts_left` is what remains after it.
    Wrong {
        code_id: String,
        attempts: u32,
        attempts_left: u32,
    },
    /// Never sent, expired, used or burned.
    NoActiveCode,
}

impl OtpState {
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

    /// Sends still inside the window at `now`.
    fn sends_in_window(&self, now: UnixMillis, window_secs: u64) -> Vec<UnixMillis> {
        self.sends
            .iter()
            .copied()
            .filter(|s| s.plus_secs(window_secs) > now)
            .collect()
    }

    /// Admit a send of `code` at `now`, or say how long until a slot frees.
    pub fn admit_send(&self, now: UnixMillis, policy: SendPolicy, code: ActiveCode) -> SendOutcome {
        let mut sends = self.sends_in_window(now, policy.window_secs);
        sends.sort_unstable();
        let limit = policy.limit as usize;
        if sends.len() >= limit {
            // The slot frees when the (len - limit + 1)-th oldest send leaves the window.
            let freeing = sends
                .get(sends.len() - limit)
                .copied()
                .unwrap_or(now)
                .plus_secs(policy.window_secs);
            return SendOutcome::RateLimited {
                retry_after_secs: now.secs_until_ceil(freeing).max(1),
            };
        }
        sends.push(now);
        SendOutcome::Admitted(OtpState {
            sends,
            code: Some(code),
            version: self.next_version(now),
        })
    }

    /// The state after taking back a send whose SMS SNS did not accept: the slot is
    /// returned and, if our code is still the current one, the previous code comes back.
    pub fn without_send(
        &self,
        sent_at: UnixMillis,
        our_code_id: &str,
        previous_code: Option<ActiveCode>,
    ) -> OtpState {
        let mut sends = self.sends.clone();
        if let Some(pos) = sends.iter().position(|s| *s == sent_at) {
            sends.remove(pos);
        }
        let code = match &self.code {
            Some(current) if current.id == our_code_id => previous_code,
            other => other.clone(),
        };
        OtpState {
            sends,
            code,
            version: self.next_version(sent_at),
        }
    }

    /// Check `code` against the active code at `now`.
    pub fn check(
        &self,
        now: UnixMillis,
        max_attempts: u32,
        pepper: &SecretSlice<u8>,
        phone: &PhoneNumber,
        code: &OtpCode,
    ) -> VerifyOutcome {
        let Some(active) = self
            .code
            .as_ref()
            .filter(|c| c.expires_at > now && c.attempts < max_attempts)
        else {
            return VerifyOutcome::NoActiveCode;
        };
        if active.mac.matches(pepper, phone, code) {
            VerifyOutcome::Accepted {
                code_id: active.id.clone(),
                attempts: active.attempts,
            }
        } else {
            let attempts = active.attempts.saturating_add(1);
            VerifyOutcome::Wrong {
                code_id: active.id.clone(),
                attempts: active.attempts,
                attempts_left: max_attempts.saturating_sub(attempts),
            }
        }
    }

    /// When DynamoDB may delete the item: once neither the code nor any send matters.
    pub fn expires_at(&self, window_secs: u64) -> UnixMillis {
        let last_send = self
            .sends
            .iter()
            .max()
            .map_or(UnixMillis(0), |s| s.plus_secs(window_secs));
        let code = self.code.as_ref().map_or(UnixMillis(0), |c| c.expires_at);
        last_send.max(code)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use ring::rand::SystemRandom;

    const POLICY: SendPolicy = SendPolicy {
        limit: 3,
        window_secs: 300,
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
            SendOutcome::Admitted(s) => s,
            SendOutcome::RateLimited { .. } => panic!("expected admission"),
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
            state =
                admitted(state.admit_send(at, POLICY, code_for("c", "111111", at.plus_secs(300))));
        }
        assert_eq!(state.version, Some(t0.as_millis() + 2));
        let at = t0.plus_secs(100);
        assert_eq!(
            state.admit_send(at, POLICY, code_for("d", "222222", at)),
            SendOutcome::RateLimited {
                retry_after_secs: 200
            }
        );
        // One millisecond before the oldest leaves: still limited, and never "0 s".
        let almost = t0.plus_secs(300).plus_millis(0);
        let limited = state.admit_send(
            UnixMillis(almost.0 - 1),
            POLICY,
            code_for("d", "222222", at),
        );
        assert_eq!(
            limited,
            SendOutcome::RateLimited {
                retry_after_secs: 1
            }
        );
        // At t0 + 300 s the first send is out of the sliding window.
        let next = admitted(state.admit_send(almost, POLICY, code_for("d", "222222", almost)));
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
        ));
        let t1 = t0.plus_secs(5);
        let second =
            admitted(first.admit_send(t1, POLICY, code_for("b", "222222", t1.plus_secs(300))));
        let back = second.without_send(t1, "b", first.code.clone());
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
        ));
        let t1 = t0.plus_secs(1);
        let theirs =
            admitted(ours.admit_send(t1, POLICY, code_for("b", "222222", t1.plus_secs(300))));
        let back = theirs.without_send(t0, "a", None);
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
        ));
        let wrong = OtpCode::parse("000000").unwrap();
        let right = OtpCode::parse("111111").unwrap();
        for expected_left in (0..5).rev() {
            match state.check(t0, 5, &pepper(), &phone(), &wrong) {
                VerifyOutcome::Wrong { attempts_left, .. } => {
                    assert_eq!(attempts_left, expected_left)
                }
                other => panic!("unexpected {other:?}"),
            }
            if let Some(c) = state.code.as_mut() {
                c.attempts += 1;
            }
        }
        assert_eq!(
            state.check(t0, 5, &pepper(), &phone(), &right),
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
        ));
        let right = OtpCode::parse("111111").unwrap();
        assert!(matches!(
            state.check(t0.plus_secs(299), 5, &pepper(), &phone(), &right),
            VerifyOutcome::Accepted { .. }
        ));
        assert_eq!(
            state.check(t0.plus_secs(300), 5, &pepper(), &phone(), &right),
            VerifyOutcome::NoActiveCode
        );
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

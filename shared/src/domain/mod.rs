//! The domain: phone numbers, one-time codes, the send window, sessions and refresh
//! tokens, access-token claims. No AWS and no HTTP types live here.

pub mod error;
pub mod events;
pub mod global_budget;
pub mod otp;
pub mod phone;
pub mod session;
pub mod slots;
pub mod sms;
pub mod source_ip;
pub mod time;

pub use error::AuthError;
pub use otp::{CodeMac, OtpCode, OtpState, SendOutcome, VerifyOutcome};
pub use phone::PhoneNumber;
pub use session::{ChainKey, RefreshDecision, RefreshToken, Session};
pub use source_ip::SourceIp;
pub use time::UnixMillis;

/// A new random id (user `sub`, code id): 128 bits from the CSPRNG, base64url. Not
/// derived from anything, so a `sub` reveals nothing about the phone.
pub fn random_id(rng: &dyn ring::rand::SecureRandom) -> Result<String, ring::error::Unspecified> {
    use base64::Engine;
    let mut bytes = [0u8; 16];
    rng.fill(&mut bytes)?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

//! What the domain needs from the outside world, in domain types only. The AWS
//! adapters in `adapters/` implement these; nothing here names an SDK type.

use crate::domain::error::BoxError;
use crate::domain::{PhoneNumber, UnixMillis};

/// The only source of "now". Production reads the wall clock (`SystemClock`); tests
/// pin or advance it (`ManualClock`), so windows, expiry and rotation need no sleeping.
pub trait Clock: Send + Sync {
    fn now(&self) -> UnixMillis;
}

/// How a storage call failed, as the domain needs to tell it apart.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A conditional write lost a race: re-read and decide again.
    #[error("conditional write lost a race")]
    Conflict,
    /// Throttled, unreachable or failing on the service side: worth a 503.
    #[error("store unavailable")]
    Unavailable(#[source] BoxError),
    /// An item that does not have the shape this code writes.
    #[error("stored item is malformed: {0}")]
    Corrupt(&'static str),
    #[error("store call failed")]
    Other(#[source] BoxError),
}

/// Why an SMS was not accepted. Either way nothing was sent, so the send is taken back.
#[derive(Debug, thiserror::Error)]
pub enum SmsError {
    #[error("SMS provider unavailable")]
    Unavailable(#[source] BoxError),
    #[error("SMS provider refused the message")]
    Refused(#[source] BoxError),
}

/// Delivers a text message to a phone.
pub trait SmsSender: Send + Sync {
    fn send(
        &self,
        phone: &PhoneNumber,
        text: &str,
    ) -> impl std::future::Future<Output = Result<(), SmsError>> + Send;
}

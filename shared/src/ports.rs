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
    /// A transaction lost a race (a failed condition, or cancelled for
    /// `TransactionConflict` while another transaction held an item): re-read and
    /// decide again. Single-item writes answer [`Conditional::Held`] instead.
    #[error("write lost a race")]
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

/// The outcome of a single-item conditional write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Conditional<Done, Found> {
    /// The write happened.
    Applied(Done),
    /// A condition failed: the item as it stood instead (`None`: there was none), read
    /// by the same request (`ReturnValuesOnConditionCheckFailure`), so deciding again
    /// needs no other read.
    Failed(Option<Found>),
    /// A transaction held the item (`TransactionConflictException`): this attempt wrote
    /// nothing and read nothing. The same lost race as a failed condition (CONTRACT §1):
    /// back off and try the same write again, whose condition then tells whether an
    /// earlier attempt of it (one whose answer was lost) was applied.
    Held,
}

/// Why an SMS did not go out as asked (CONTRACT §3).
#[derive(Debug, thiserror::Error)]
pub enum SmsError {
    /// A definite no: the provider answered with an error, or no connection to it could
    /// be made. Nothing was sent. `retryable` when the answer was throttling, or the
    /// connection was never made: trying again cannot send twice.
    #[error("SMS provider refused the message")]
    Refused {
        retryable: bool,
        #[source]
        source: BoxError,
    },
    /// No answer in time: the message may have been accepted and may still arrive, so it
    /// is never sent again for the same request.
    #[error("SMS provider did not answer")]
    Unanswered(#[source] BoxError),
}

/// Delivers a text message to a phone.
pub trait SmsSender: Send + Sync {
    fn send(
        &self,
        phone: &PhoneNumber,
        text: &str,
    ) -> impl std::future::Future<Output = Result<(), SmsError>> + Send;
}

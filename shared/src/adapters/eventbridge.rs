//! The EventBridge bus that account and session events go to (CONTRACT §7 "Events").

use aws_sdk_eventbridge::Client;
use aws_sdk_eventbridge::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_eventbridge::primitives::DateTime;
use aws_sdk_eventbridge::types::PutEventsRequestEntry;

use crate::domain::UnixMillis;
use crate::domain::events::{Entry, SOURCE};

/// `PutEvents` takes at most this many entries.
pub const MAX_ENTRIES_PER_PUT: usize = 10;

/// A put that failed as a whole: the error's code (never its message, which may quote
/// the request), or the SDK's description of a transport failure.
#[derive(Debug, thiserror::Error)]
#[error("EventBridge PutEvents failed: {0}")]
pub struct PutFailed(pub String);

#[derive(Debug, Clone)]
pub struct EventBus {
    client: Client,
    name: String,
}

impl EventBus {
    /// `name`: the bus's name or ARN (`EVENT_BUS_NAME`).
    pub fn new(client: Client, name: impl Into<String>) -> Self {
        Self {
            client,
            name: name.into(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Put up to [`MAX_ENTRIES_PER_PUT`] events, each with the time of its change. One
    /// request; answers, per entry in order, whether the bus took it or the error code
    /// it refused it with (`FailedEntryCount` > 0).
    pub async fn put(
        &self,
        entries: &[(UnixMillis, &Entry)],
    ) -> Result<Vec<Result<(), String>>, PutFailed> {
        if entries.len() > MAX_ENTRIES_PER_PUT {
            return Err(PutFailed(format!(
                "{} entries in one put (at most {MAX_ENTRIES_PER_PUT})",
                entries.len()
            )));
        }
        let mut request = self.client.put_events();
        for (at, entry) in entries {
            request = request.entries(
                PutEventsRequestEntry::builder()
                    .event_bus_name(&self.name)
                    .source(SOURCE)
                    .detail_type(&entry.detail_type)
                    .detail(&entry.detail)
                    .time(DateTime::from_millis(
                        i64::try_from(at.as_millis()).unwrap_or(i64::MAX),
                    ))
                    .build(),
            );
        }
        let out = request.send().await.map_err(put_failed)?;
        let results = out.entries();
        Ok((0..entries.len())
            .map(|i| match results.get(i) {
                Some(r) if r.error_code().is_none() && r.event_id().is_some() => Ok(()),
                Some(r) => Err(r.error_code().unwrap_or("no event id").to_owned()),
                None => Err("no answer for the entry".to_owned()),
            })
            .collect())
    }
}

/// Entry error codes that a later put may not meet again (the bus was busy or failing);
/// any other (`InvalidArgument`, `MalformedDetail`, an authorization error) is the same
/// every time until someone changes the bus, its policy or the roles.
pub fn is_transient(code: &str) -> bool {
    matches!(
        code,
        "ThrottlingException" | "InternalFailure" | "InternalException" | "ServiceUnavailable"
    )
}

fn put_failed<E>(err: SdkError<E>) -> PutFailed
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match &err {
        SdkError::ServiceError(service) => PutFailed(
            service
                .err()
                .code()
                .unwrap_or("unknown service error")
                .to_owned(),
        ),
        _ => PutFailed(DisplayErrorContext(&err).to_string()),
    }
}

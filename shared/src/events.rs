//! Account and session events on EventBridge, delivered at least once (CONTRACT §7
//! "Events").
//!
//! A request that makes a change builds its events ([`Events::stage`]) before the write,
//! and the write stores them with the change (one request: see `adapters::dynamodb`), so
//! nothing is lost if the function dies after the change. Once the change is stored the
//! request puts them ([`Events::deliver`]); when the bus has them, their stored copy is
//! deleted. A put that fails (an error, no answer in time, or `FailedEntryCount` > 0)
//! never fails the request: the copy stays, and [`Relay`] (`functions/event-relay`, on a
//! schedule) puts what is stored, oldest first, until it goes through. A write that was
//! refused stores nothing, so no event is ever put for a change that did not happen.
//!
//! A change whose write was applied but whose answer was lost, recognised later by its
//! tag, is delivered by the relay: the round that recognises it does not know what the
//! lost round stored. Delivery is at least once: a consumer may see an event twice (the
//! request's put answered too late, the delete of the copy failed), always with the same
//! `eventId`.

use std::sync::Arc;
use std::time::Duration;

use aws_config::SdkConfig;
use ring::rand::SystemRandom;
use serde_json::json;

use crate::adapters::DynamoDbStore;
use crate::adapters::dynamodb::StoredEvents;
use crate::adapters::eventbridge::{EventBus, MAX_ENTRIES_PER_PUT, is_transient};
use crate::api::within;
use crate::budget::Budget;
use crate::config::{ConfigError, Env};
use crate::domain::events::{Change, Entry, Pending};
use crate::domain::{AuthError, UnixMillis};
use crate::ports::{Clock, StoreError};

/// The longest a request waits for the bus (then the relay delivers): EventBridge answers
/// a put in tens of milliseconds.
pub const PUT_WAIT: Duration = Duration::from_secs(2);

/// The relay leaves events younger than this to the request that stored them, which is
/// putting them right now (a function runs at most 10 s).
pub const RELAY_GRACE_SECS: u64 = 30;

/// Stored events read per page by the relay.
const RELAY_PAGE: i32 = 50;

/// Time the relay keeps back from its deadline: one more put and the closing read of
/// the oldest kept event, so a run that has more to do ends with its report.
const RELAY_RESERVE: Duration = Duration::from_secs(5);

/// The bus, for a function whose changes make events.
#[derive(Debug, Clone)]
pub struct Events {
    bus: EventBus,
    rng: SystemRandom,
}

impl Events {
    pub fn new(bus: EventBus) -> Self {
        Self {
            bus,
            rng: SystemRandom::new(),
        }
    }

    /// From `EVENT_BUS_NAME` (`None`: not set, no events).
    pub fn from_env(aws: &SdkConfig, env: &dyn Env) -> Result<Option<Self>, ConfigError> {
        Ok(crate::config::event_bus_name(env)?
            .map(|name| Self::new(EventBus::new(aws_sdk_eventbridge::Client::new(aws), name))))
    }

    /// The events of a change about to be written at `at` (`None`: no events to put).
    pub fn stage(
        events: Option<&Self>,
        at: UnixMillis,
        changes: impl IntoIterator<Item = Change>,
    ) -> Result<Option<Pending>, AuthError> {
        match events {
            None => Ok(None),
            Some(events) => Pending::new(&events.rng, at, changes)
                .map_err(|_| AuthError::internal("random", "system random source failed")),
        }
    }

    /// Put the events of a change that is stored, then delete their stored copy. Never
    /// fails: what did not go through stays stored for the relay.
    pub async fn deliver(&self, store: &DynamoDbStore, budget: &Budget, pending: &Pending) {
        let entries = pending.entries();
        let put: Vec<(UnixMillis, &Entry)> = entries.iter().map(|e| (pending.at, e)).collect();
        let ids = pending.ids().join(",");
        let wait = PUT_WAIT.min(budget.remaining());
        let refused: Vec<String> = match tokio::time::timeout(wait, self.bus.put(&put)).await {
            Ok(Ok(answers)) => answers.into_iter().filter_map(Result::err).collect(),
            Ok(Err(err)) => {
                tracing::warn!(events = %ids, error = %err, "event put failed; kept for the relay");
                return;
            }
            Err(_) => {
                tracing::warn!(events = %ids, "event put not answered in time; kept for the relay");
                return;
            }
        };
        if !refused.is_empty() {
            tracing::warn!(
                events = %ids,
                codes = %refused.join(","),
                "the bus refused events; kept for the relay"
            );
            return;
        }
        let wait = PUT_WAIT.min(budget.remaining());
        match tokio::time::timeout(wait, store.delete_events(&pending.key)).await {
            Ok(Ok(())) => tracing::info!(events = %ids, "events put"),
            // The relay puts them again, with the same ids.
            _ => tracing::warn!(events = %ids, "events put; their stored copy stays"),
        }
    }
}

/// Put the staged events of a change that was stored, if there are any.
pub async fn deliver(
    events: Option<&Events>,
    store: &DynamoDbStore,
    budget: &Budget,
    pending: Option<&Pending>,
) {
    if let (Some(events), Some(pending)) = (events, pending) {
        events.deliver(store, budget, pending).await;
    }
}

/// `functions/event-relay`: puts the stored events, oldest first.
pub struct Relay {
    store: DynamoDbStore,
    bus: EventBus,
    clock: Arc<dyn Clock>,
}

/// What one run of the relay did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RelayReport {
    /// Events the bus took (and whose stored copy was deleted).
    pub delivered: usize,
    /// Events put and refused, or not put because the bus failed.
    pub failed: usize,
    /// Stored items that could not be read (left in place).
    pub unreadable: usize,
    /// Age of the oldest stored event after the run (0: none left).
    pub oldest_age_secs: u64,
}

impl Relay {
    pub fn new(store: DynamoDbStore, bus: EventBus, clock: Arc<dyn Clock>) -> Self {
        Self { store, bus, clock }
    }

    /// One run: put what is stored (older than [`RELAY_GRACE_SECS`]), oldest first, up to
    /// ten at a time; delete each item whose events the bus took; stop at the first put
    /// that fails or is refused for a passing reason (the next run starts again from the
    /// oldest), or when the run's time is nearly up. A store failure is an error (the
    /// invocation fails and Lambda's `Errors` metric counts it); a bus failure is in the
    /// report.
    pub async fn run(&self, budget: &Budget) -> Result<RelayReport, StoreError> {
        let now = self.clock.now();
        let before = UnixMillis(
            now.as_millis()
                .saturating_sub(RELAY_GRACE_SECS.saturating_mul(1000)),
        );
        let mut report = RelayReport::default();
        let mut start = None;
        'pages: while budget.remaining() > RELAY_RESERVE {
            let (page, next) = within(
                budget,
                self.store.stored_events(before, start.take(), RELAY_PAGE),
            )
            .await?;
            let mut readable = Vec::new();
            for mut stored in page {
                match stored.entries.take() {
                    Some(entries)
                        if !entries.is_empty() && entries.len() <= MAX_ENTRIES_PER_PUT =>
                    {
                        readable.push((stored, entries))
                    }
                    _ => {
                        tracing::error!(key = %stored.key, "stored events not readable; left in place");
                        report.unreadable += 1;
                    }
                }
            }
            for batch in batches(&readable) {
                // Out of time: what is left waits for the next run.
                if budget.remaining() <= RELAY_RESERVE {
                    break 'pages;
                }
                let put: Vec<(UnixMillis, &Entry)> = batch
                    .iter()
                    .flat_map(|(stored, entries)| entries.iter().map(|e| (stored.at, e)))
                    .collect();
                let wait = PUT_WAIT.min(budget.remaining());
                let answers = match tokio::time::timeout(wait, self.bus.put(&put)).await {
                    Ok(Ok(answers)) => answers,
                    Ok(Err(err)) => {
                        tracing::warn!(error = %err, "event put failed");
                        report.failed += put.len();
                        break 'pages;
                    }
                    Err(_) => {
                        tracing::warn!("event put not answered in time");
                        report.failed += put.len();
                        break 'pages;
                    }
                };
                let mut answers = answers.into_iter();
                let mut busy = false;
                for (stored, entries) in batch.iter().copied() {
                    // This item's answers, taken whether or not an earlier one failed.
                    let mine: Vec<Result<(), String>> =
                        answers.by_ref().take(entries.len()).collect();
                    let refused: Vec<&str> = mine
                        .iter()
                        .filter_map(|a| a.as_ref().err().map(String::as_str))
                        .collect();
                    if mine.len() == entries.len() && refused.is_empty() {
                        within(budget, self.store.delete_events(&stored.key)).await?;
                        report.delivered += entries.len();
                        let ids: Vec<&str> = entries.iter().map(|e| e.id.as_str()).collect();
                        tracing::info!(events = %ids.join(","), "events relayed");
                    } else {
                        report.failed += entries.len();
                        busy |= refused.is_empty() || refused.iter().any(|c| is_transient(c));
                        tracing::warn!(
                            key = %stored.key,
                            codes = %refused.join(","),
                            "the bus refused events; kept"
                        );
                    }
                }
                // A busy or failing bus: stop, the next run starts again from the oldest.
                // A refusal that will not change (a malformed or unauthorised entry) is
                // kept for an operator and does not hold back the events behind it.
                if busy {
                    break 'pages;
                }
            }
            match next {
                Some(next) => start = Some(next),
                None => break,
            }
        }
        let oldest = within(budget, self.store.oldest_events()).await?;
        report.oldest_age_secs = oldest.map_or(0, |at| {
            now.as_millis().saturating_sub(at.as_millis()) / 1000
        });
        Ok(report)
    }
}

/// Consecutive stored items whose events fit one put (at most ten events).
fn batches(stored: &[(StoredEvents, Vec<Entry>)]) -> Vec<Vec<&(StoredEvents, Vec<Entry>)>> {
    let mut batches: Vec<Vec<&(StoredEvents, Vec<Entry>)>> = Vec::new();
    let mut count = 0;
    for item in stored {
        let size = item.1.len();
        match batches.last_mut() {
            Some(batch) if count + size <= MAX_ENTRIES_PER_PUT => {
                batch.push(item);
                count += size;
            }
            _ => {
                batches.push(vec![item]);
                count = size;
            }
        }
    }
    batches
}

impl RelayReport {
    /// The run's summary line: JSON on stdout that is also a CloudWatch embedded metric
    /// record (namespace `FoodSave/Auth`, dimension `Function`): `PendingEventAgeSeconds`
    /// (the age of the oldest stored event, alarmed on in `template.yaml`) and
    /// `EventsRelayed`.
    pub fn line(&self, now: UnixMillis) -> String {
        json!({
            "relay": "event-relay",
            "delivered": self.delivered,
            "failed": self.failed,
            "unreadable": self.unreadable,
            "Function": "event-relay",
            "PendingEventAgeSeconds": self.oldest_age_secs,
            "EventsRelayed": self.delivered,
            "_aws": {
                "Timestamp": now.as_millis(),
                "CloudWatchMetrics": [{
                    "Namespace": "FoodSave/Auth",
                    "Dimensions": [["Function"]],
                    "Metrics": [
                        {"Name": "PendingEventAgeSeconds", "Unit": "Seconds"},
                        {"Name": "EventsRelayed", "Unit": "Count"}
                    ]
                }]
            }
        })
        .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(n: usize) -> (StoredEvents, Vec<Entry>) {
        let entry = Entry {
            id: "id".into(),
            detail_type: "AccountDeleted".into(),
            detail: "{}".into(),
        };
        (
            StoredEvents {
                key: "k".into(),
                at: UnixMillis(0),
                entries: None,
            },
            vec![entry; n],
        )
    }

    #[test]
    fn batches_hold_at_most_ten_events_and_keep_the_order() {
        let items = vec![
            stored(2),
            stored(2),
            stored(2),
            stored(2),
            stored(2),
            stored(1),
            stored(2),
        ];
        let sizes: Vec<usize> = batches(&items)
            .iter()
            .map(|b| b.iter().map(|(_, e)| e.len()).sum())
            .collect();
        assert_eq!(sizes, vec![10, 3]);
        assert!(batches(&[]).is_empty());
    }
}

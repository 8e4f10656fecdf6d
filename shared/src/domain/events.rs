//! Account and session events (CONTRACT §7 "Events"): what other FoodSave services are
//! told when an account is created or deleted or sessions end.
//!
//! A change's events are [`Pending`] from the moment they are built: they are stored with
//! the change (in the same DynamoDB write), put to the bus once it is stored, and dropped
//! from the table only after the bus took them. The detail of each is exactly the
//! contract's keys plus `eventId`, which stays the same on every redelivery so that a
//! consumer can drop a repeat. No phone number, code or token is ever in an event.

use ring::rand::SecureRandom;
use serde_json::{Map, Value, json};

use super::UnixMillis;

/// Every event's `Source`.
pub const SOURCE: &str = "foodsave.auth";

/// Why sessions ended (the `reason` of `SessionsRevoked`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// `POST /logout`, any scope.
    Logout,
    /// `POST /sessions/revoke`.
    User,
    /// A superseded refresh token was presented (CONTRACT §4).
    Reuse,
    /// A login pushed the account past `MAX_SESSIONS_PER_ACCOUNT`.
    Limit,
    /// The account was deleted (the API or the command line).
    AccountDeleted,
    /// An operator's `block` or `revoke`.
    Admin,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Logout => "logout",
            Self::User => "user",
            Self::Reuse => "reuse",
            Self::Limit => "limit",
            Self::AccountDeleted => "account_deleted",
            Self::Admin => "admin",
        }
    }
}

/// What changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A verify created this `sub`.
    AccountCreated { sub: String },
    /// The account `sub` was erased.
    AccountDeleted { sub: String },
    /// These sessions of `sub` were revoked (never empty: a revocation that revoked
    /// nothing has no event).
    SessionsRevoked {
        sub: String,
        session_ids: Vec<String>,
        reason: Reason,
    },
}

impl Change {
    /// The event's `DetailType`.
    pub fn detail_type(&self) -> &'static str {
        match self {
            Self::AccountCreated { .. } => "AccountCreated",
            Self::AccountDeleted { .. } => "AccountDeleted",
            Self::SessionsRevoked { .. } => "SessionsRevoked",
        }
    }
}

/// One event: its id and its change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub id: String,
    pub change: Change,
}

impl Event {
    /// The detail: exactly the contract's keys and `eventId`.
    pub fn detail(&self) -> Value {
        let mut detail = Map::new();
        detail.insert("eventId".into(), json!(self.id));
        match &self.change {
            Change::AccountCreated { sub } | Change::AccountDeleted { sub } => {
                detail.insert("sub".into(), json!(sub));
            }
            Change::SessionsRevoked {
                sub,
                session_ids,
                reason,
            } => {
                detail.insert("sub".into(), json!(sub));
                detail.insert("sessionIds".into(), json!(session_ids));
                detail.insert("reason".into(), json!(reason.as_str()));
            }
        }
        Value::Object(detail)
    }
}

/// The events of one change, from its write until the bus has them. `key` orders them
/// oldest first (the relay's order) and names the stored copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub key: String,
    pub at: UnixMillis,
    pub events: Vec<Event>,
}

/// An event as stored: its id, type and detail (the detail as the bus gets it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub id: String,
    pub detail_type: String,
    pub detail: String,
}

impl Pending {
    /// The events of a change made at `at`, each with a new random id; `None` when there
    /// are none (a revocation that revoked nothing). Session ids are sorted, so a detail
    /// does not depend on the order the sessions were read in.
    pub fn new(
        rng: &dyn SecureRandom,
        at: UnixMillis,
        changes: impl IntoIterator<Item = Change>,
    ) -> Result<Option<Self>, ring::error::Unspecified> {
        let mut events = Vec::new();
        for mut change in changes {
            if let Change::SessionsRevoked { session_ids, .. } = &mut change {
                if session_ids.is_empty() {
                    continue;
                }
                session_ids.sort_unstable();
                session_ids.dedup();
            }
            events.push(Event {
                id: event_id(rng)?,
                change,
            });
        }
        let Some(first) = events.first() else {
            return Ok(None);
        };
        // Zero-padded milliseconds sort as numbers do; the first event's id makes the
        // key unique.
        let key = format!("{:013}#{}", at.as_millis(), first.id);
        Ok(Some(Self { key, at, events }))
    }

    /// The events as stored and put.
    pub fn entries(&self) -> Vec<Entry> {
        self.events
            .iter()
            .map(|e| Entry {
                id: e.id.clone(),
                detail_type: e.change.detail_type().to_owned(),
                detail: e.detail().to_string(),
            })
            .collect()
    }

    /// The ids, for logs.
    pub fn ids(&self) -> Vec<&str> {
        self.events.iter().map(|e| e.id.as_str()).collect()
    }
}

/// Stored entries as one JSON text, and back.
pub fn entries_to_json(entries: &[Entry]) -> String {
    Value::Array(
        entries
            .iter()
            .map(|e| json!({ "id": e.id, "type": e.detail_type, "detail": e.detail }))
            .collect(),
    )
    .to_string()
}

pub fn entries_from_json(text: &str) -> Option<Vec<Entry>> {
    let parsed: Value = serde_json::from_str(text).ok()?;
    parsed
        .as_array()?
        .iter()
        .map(|e| {
            Some(Entry {
                id: e.get("id")?.as_str()?.to_owned(),
                detail_type: e.get("type")?.as_str()?.to_owned(),
                detail: e.get("detail")?.as_str()?.to_owned(),
            })
        })
        .collect()
}

/// A random UUID (version 4, RFC 9562), the form EventBridge's own event ids take.
fn event_id(rng: &dyn SecureRandom) -> Result<String, ring::error::Unspecified> {
    let mut b = [0u8; 16];
    rng.fill(&mut b)?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;

    #[test]
    fn details_carry_exactly_the_contract_keys() {
        let rng = SystemRandom::new();
        let pending = Pending::new(
            &rng,
            UnixMillis(1_767_225_600_000),
            [
                Change::SessionsRevoked {
                    sub: "s".into(),
                    session_ids: vec!["b".into(), "a".into(), "b".into()],
                    reason: Reason::AccountDeleted,
                },
                Change::AccountDeleted { sub: "s".into() },
            ],
        )
        .unwrap()
        .unwrap();
        let [revoked, deleted] = pending.events.as_slice() else {
            panic!("two events")
        };
        assert_eq!(
            revoked.detail(),
            json!({"eventId": revoked.id, "sub": "s", "sessionIds": ["a", "b"], "reason": "account_deleted"})
        );
        assert_eq!(deleted.detail(), json!({"eventId": deleted.id, "sub": "s"}));
        assert_eq!(pending.key, format!("1767225600000#{}", revoked.id));
        assert_ne!(revoked.id, deleted.id);
        let entries = pending.entries();
        assert_eq!(entries_from_json(&entries_to_json(&entries)), Some(entries));
    }

    #[test]
    fn a_revocation_of_nothing_has_no_event() {
        let rng = SystemRandom::new();
        let none = Pending::new(
            &rng,
            UnixMillis(1),
            [Change::SessionsRevoked {
                sub: "s".into(),
                session_ids: Vec::new(),
                reason: Reason::Logout,
            }],
        )
        .unwrap();
        assert_eq!(none, None);
    }

    #[test]
    fn event_ids_are_version_4_uuids() {
        let id = event_id(&SystemRandom::new()).unwrap();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert!(matches!(&id[19..20], "8" | "9" | "a" | "b"));
    }
}

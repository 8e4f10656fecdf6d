//! The one table (see `template.yaml`): key `pk` + `sk`, TTL attribute `expiresAt`.
//!
//! | item      | pk              | sk        | holds                                            |
//! |-----------|-----------------|-----------|--------------------------------------------------|
//! | OTP state | `PHONE#<e164>`  | `OTP`     | sends, active code MAC, tries, wrong guesses,    |
//! |           |                 |           | idempotency key hash, version, last write ids    |
//! | user      | `PHONE#<e164>`  | `USER`    | the phone's account: its opaque `sub`            |
//! | account   | `ACCOUNT#<sub>` | `ACCOUNT` | phone, createdAt, version (bumped by each login) |
//! | session   | `ACCOUNT#<sub>` | `SESSION#<sid>` | sub, phone, expiry, user agent, revocation |
//! |           |                 |           | (and its write id), and the refresh chain: live  |
//! |           |                 |           | token's hash, generation, rotatedAt (= last      |
//! |           |                 |           | used), the rotation's id                         |
//! | IP budget | `IP#<address>`  | `SENDS`   | slots `s0`…: time of the send holding each       |
//! | global    | `GLOBAL#<n>`    | `SENDS`   | slots of shard n of the hourly SMS budget        |
//! | events    | `EVENTS`        | `<ms>#<id>` | a change's events not yet on the bus (no TTL)  |
//!
//! Every race is settled by a condition in DynamoDB, never by reading twice, and a
//! failed condition returns the item as it stood (`ReturnValuesOnConditionCheckFailure`)
//! so the caller decides again without another read. A single-item write that meets an
//! item held by a transaction answers [`Conditional::Held`], decided in one place
//! ([`single_write`]).
//!
//! Every conditional write is recognisable as its own when it is repeated (CONTRACT §1:
//! an attempt whose answer was lost may have been applied, and the SDK's retry, or the
//! caller's next round, must not apply it twice): an OTP state write carries its id in
//! the item's `wids` (the last few), a rotation its `rotationId`, a revocation its
//! `revokedBy`, a login the new session's random id, a slot claim the OTP write of its
//! transaction. A repeat's condition refuses it, and the item it returns names the
//! write that is already there.
//!
//! An account's sessions are its item collection (CONTRACT §7): listing them is one
//! strongly consistent Query, which reads its own writes (a sparse GSI would not), and a
//! session id names its account (`domain::session`), so a refresh token finds its item
//! without a lookup. The account item's version is what a login and a deletion race on:
//! each conditions on the version it read, so a login racing a deletion never brings the
//! old `sub` back and a deletion never misses a session a login added. Partition keys
//! separate what each function may touch (`dynamodb:LeadingKeys` in `template.yaml`):
//! refresh and logout reach only `ACCOUNT#` items, never the `PHONE#` account mapping.
//!
//! Requests per call on the common path: send 1 (a conditional put that also reads what it replaces; with the IP or
//! global budget on, one transaction that also claims their slots), verify 2 (batch
//! get, transaction; 3 for a returning account, whose sessions are read to keep their
//! limit), refresh 1 (conditional update), logout 1 (conditional update; 2 with a token
//! the chain has rotated past; scopes `others` and `all`: Query, transaction), the
//! session list 1 (Query), a session's revocation 2 (Query, update), an account's
//! deletion 2 (Query, transaction). Without events, refresh and scope `session` logout
//! never use a transaction.
//! A send past a spent global budget: at most 3 (see `domain::global_budget`).
//!
//! With `EVENT_BUS_NAME` set (CONTRACT §7 "Events"), a write that makes an event also
//! puts the event's item (`EVENTS`, keyed by time, so the relay reads the oldest first)
//! in the same request: a single-item revocation (scope `session` logout, a revocation
//! on refresh-token reuse, `/sessions/revoke`) becomes a two-item transaction, the
//! transactions gain one item. Once the bus has taken the events the function deletes
//! the item: one more request (an account's first verify 3, a logout 2, a deletion 3;
//! measured in `shared/tests/account_events.rs`); while the bus fails, the item stays
//! for `functions/event-relay` and the request costs what it did without events. Paths
//! that make no event (send, a returning login within the limit, refresh, the list)
//! cost the same with events on.
//! User items carry no TTL: a user's `sub` must never change.

use std::collections::HashMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{
    AttributeValue, ConditionCheck, KeysAndAttributes, Put, ReturnValue,
    ReturnValuesOnConditionCheckFailure, TransactWriteItem, Update,
};

use crate::domain::events::{Entry, Pending, entries_from_json, entries_to_json};
use crate::domain::global_budget::shard_key;
use crate::domain::otp::{ActiveCode, Block, IdempotentSend};
use crate::domain::session::{Chain, SessionId};
use crate::domain::slots::Slots;
use crate::domain::{CodeMac, OtpState, PhoneNumber, Session, SourceIp, UnixMillis};
use crate::ports::{Conditional, StoreError};

const PK: &str = "pk";
const SK: &str = "sk";
/// The table's TTL attribute (epoch seconds).
pub const TTL_ATTRIBUTE: &str = "expiresAt";

const SK_OTP: &str = "OTP";
const SK_USER: &str = "USER";
const SK_ACCOUNT: &str = "ACCOUNT";
const SK_SESSION_PREFIX: &str = "SESSION#";
const SK_SENDS: &str = "SENDS";
/// The partition of events not yet on the bus (CONTRACT §7 "Events").
pub const EVENTS_PK: &str = "EVENTS";

/// The most items one transaction may write (DynamoDB's limit).
pub const MAX_TRANSACTION_ITEMS: usize = 100;
/// Pages of an account's item collection read before giving up (each up to 1 MB,
/// thousands of sessions): far beyond what `MAX_SESSIONS_PER_ACCOUNT` and the TTL leave.
const ACCOUNT_QUERY_PAGES: u32 = 8;

/// How many times a batch read asks again for keys DynamoDB left unprocessed.
const BATCH_GET_ROUNDS: u32 = 6;

type Item = HashMap<String, AttributeValue>;

#[derive(Debug, Clone)]
pub struct DynamoDbStore {
    client: Client,
    table: String,
}

/// What the OTP item must hold for [`DynamoDbStore::save_otp`] to replace it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// No item, or one whose TTL has passed (nothing in it matters any more).
    Fresh,
    /// The item at this version.
    Version(u64),
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: u64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

/// DynamoDB TTL is in whole seconds; round up so an item never goes before it may.
fn ttl(at: UnixMillis) -> AttributeValue {
    n(at.as_millis().div_ceil(1000))
}

fn phone_pk(phone: &PhoneNumber) -> String {
    format!("PHONE#{}", phone.e164())
}

fn account_pk(sub: &str) -> String {
    format!("ACCOUNT#{sub}")
}

/// A session's key: in its account's item collection.
fn session_key(sid: &SessionId) -> Item {
    key(
        account_pk(&sid.account()),
        &format!("{SK_SESSION_PREFIX}{}", sid.as_str()),
    )
}

fn key(pk: String, sk: &str) -> Item {
    HashMap::from([(PK.to_owned(), s(pk)), (SK.to_owned(), s(sk))])
}

fn get_s<'a>(item: &'a Item, name: &'static str) -> Result<&'a str, StoreError> {
    match item.get(name) {
        Some(AttributeValue::S(v)) => Ok(v),
        _ => Err(StoreError::Corrupt(name)),
    }
}

fn get_n(item: &Item, name: &'static str) -> Result<u64, StoreError> {
    match item.get(name) {
        Some(AttributeValue::N(v)) => v.parse().map_err(|_| StoreError::Corrupt(name)),
        _ => Err(StoreError::Corrupt(name)),
    }
}

fn get_opt_s(item: &Item, name: &'static str) -> Result<Option<String>, StoreError> {
    match item.get(name) {
        None | Some(AttributeValue::Null(_)) => Ok(None),
        Some(_) => get_s(item, name).map(|v| Some(v.to_owned())),
    }
}

/// DynamoDB error codes that mean "throttled or failing on the service side": a 503.
const UNAVAILABLE_CODES: [&str; 9] = [
    "ThrottlingException",
    "Throttling",
    "ProvisionedThroughputExceededException",
    "RequestLimitExceeded",
    "InternalServerError",
    "InternalFailure",
    "ServiceUnavailable",
    "KMSThrottlingException",
    "TransactionInProgressException",
];

/// Classify an SDK failure for the domain.
fn store_error<E>(err: SdkError<E>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let code = match &err {
        SdkError::ServiceError(service) => service.err().code(),
        _ => None,
    };
    // A single-item write that met an item held by a transaction: a lost race.
    if code == Some("TransactionConflictException") {
        return StoreError::Conflict;
    }
    let transient = match &err {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            true
        }
        _ => code.is_some_and(|c| UNAVAILABLE_CODES.contains(&c)),
    };
    // A service error's message may quote key values (a phone number): keep its code only.
    let detail = match code {
        Some(code) => format!("DynamoDB error {code}"),
        None if matches!(err, SdkError::ServiceError(_)) => "DynamoDB error unknown".to_owned(),
        None => DisplayErrorContext(&err).to_string(),
    };
    if transient {
        StoreError::Unavailable(detail.into())
    } else {
        StoreError::Other(detail.into())
    }
}

/// How a cancelled transaction's per-item reasons decide its outcome (CONTRACT §1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cancelled {
    /// Every reason is `None`, `ConditionalCheckFailed` or `TransactionConflict`.
    LostRace,
    /// Some item was throttled.
    Throttled,
    /// Anything else (`ValidationError`, `ItemCollectionSizeLimitExceeded`, …): a bug
    /// or a limit, not worth retrying.
    Failed,
}

fn classify_cancellation<'a>(codes: impl IntoIterator<Item = Option<&'a str>>) -> Cancelled {
    let mut outcome = Cancelled::LostRace;
    for code in codes {
        match code {
            None | Some("None" | "ConditionalCheckFailed" | "TransactionConflict") => {}
            Some("ThrottlingError" | "ProvisionedThroughputExceeded" | "RequestLimitExceeded") => {
                return Cancelled::Throttled;
            }
            Some(_) => outcome = Cancelled::Failed,
        }
    }
    outcome
}

/// A cancelled transaction's reason codes, one per item in order (empty for any other
/// failure).
fn cancelled_codes(err: &SdkError<TransactWriteItemsError>) -> Vec<&str> {
    match err {
        SdkError::ServiceError(service) => match service.err() {
            TransactWriteItemsError::TransactionCanceledException(cancel) => cancel
                .cancellation_reasons()
                .iter()
                .map(|r| r.code().unwrap_or("None"))
                .collect(),
            _ => Vec::new(),
        },
        _ => Vec::new(),
    }
}

fn transaction_error(err: SdkError<TransactWriteItemsError>) -> StoreError {
    if let SdkError::ServiceError(service) = &err
        && let TransactWriteItemsError::TransactionCanceledException(cancel) = service.err()
    {
        let reasons = cancel.cancellation_reasons();
        let codes: Vec<&str> = reasons.iter().map(|r| r.code().unwrap_or("None")).collect();
        return match classify_cancellation(codes.iter().map(|c| Some(*c))) {
            Cancelled::LostRace => StoreError::Conflict,
            Cancelled::Throttled => StoreError::Unavailable(
                format!("transaction throttled: {}", codes.join(",")).into(),
            ),
            Cancelled::Failed => {
                StoreError::Other(format!("transaction cancelled: {}", codes.join(",")).into())
            }
        };
    }
    store_error(err)
}

/// The item a cancelled transaction returned for its item `index` (asked for with
/// `ReturnValuesOnConditionCheckFailure`).
fn cancelled_item(err: &SdkError<TransactWriteItemsError>, index: usize) -> Option<Item> {
    match err {
        SdkError::ServiceError(service) => match service.err() {
            TransactWriteItemsError::TransactionCanceledException(cancel) => cancel
                .cancellation_reasons()
                .get(index)
                .and_then(|r| r.item().cloned()),
            _ => None,
        },
        _ => None,
    }
}

fn put_item_found(err: &PutItemError) -> Option<Item> {
    match err {
        PutItemError::ConditionalCheckFailedException(failed) => failed.item().cloned(),
        _ => None,
    }
}

fn update_item_found(err: &UpdateItemError) -> Option<Item> {
    match err {
        UpdateItemError::ConditionalCheckFailedException(failed) => failed.item().cloned(),
        _ => None,
    }
}

/// The outcome of a conditional single-item write (PutItem, UpdateItem), decided in one
/// place (CONTRACT §1): a failed condition is [`Conditional::Failed`] with the item as it
/// stood; a transaction holding the item (`TransactionConflictException`) is
/// [`Conditional::Held`], the same lost race; anything else a [`StoreError`].
fn single_write<O, E>(
    result: Result<O, SdkError<E>>,
    item: impl FnOnce(&E) -> Option<Item>,
) -> Result<Conditional<O, Item>, StoreError>
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let err = match result {
        Ok(out) => return Ok(Conditional::Applied(out)),
        Err(err) => err,
    };
    if let SdkError::ServiceError(service) = &err {
        match service.err().code() {
            Some("ConditionalCheckFailedException") => {
                return Ok(Conditional::Failed(item(service.err())));
            }
            Some("TransactionConflictException") => return Ok(Conditional::Held),
            _ => {}
        }
    }
    Err(store_error(err))
}

impl DynamoDbStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    // ---- one-time codes -------------------------------------------------------------

    /// Replace the phone's OTP state if the item is as `expect`ed. One request; when the
    /// condition fails, the state it found instead.
    pub async fn save_otp(
        &self,
        phone: &PhoneNumber,
        expect: Expect,
        state: &OtpState,
        window_secs: u64,
        now: UnixMillis,
    ) -> Result<Conditional<(), OtpState>, StoreError> {
        let put = self.otp_put(phone, expect, state, window_secs, now)?;
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(put.item))
            .set_condition_expression(put.condition_expression)
            .set_expression_attribute_names(put.expression_attribute_names)
            .set_expression_attribute_values(put.expression_attribute_values)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        Ok(match single_write(result, put_item_found)? {
            Conditional::Applied(_) => Conditional::Applied(()),
            Conditional::Failed(found) => {
                Conditional::Failed(found.as_ref().map(otp_from_item).transpose()?)
            }
            Conditional::Held => Conditional::Held,
        })
    }

    /// The phone's OTP state and its account's `sub`, if it has one. One request.
    pub async fn load_login(&self, phone: &PhoneNumber) -> Result<Login, StoreError> {
        let keys = vec![key(phone_pk(phone), SK_OTP), key(phone_pk(phone), SK_USER)];
        let mut login = Login::default();
        for item in &self.batch_get(keys).await? {
            match get_s(item, SK)? {
                SK_OTP => login.otp = otp_from_item(item)?,
                SK_USER => login.sub = Some(get_s(item, "sub")?.to_owned()),
                _ => {}
            }
        }
        Ok(login)
    }

    /// An account's item collection: the account item and every stored session (live
    /// or not), strongly consistent. One request unless the collection is over 1 MB.
    pub async fn load_account(&self, sub: &str) -> Result<Account, StoreError> {
        let mut account = Account {
            sub: sub.to_owned(),
            ..Account::default()
        };
        let mut start = None;
        for _ in 0..ACCOUNT_QUERY_PAGES {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .consistent_read(true)
                .key_condition_expression("pk = :pk")
                .expression_attribute_values(":pk", s(account_pk(sub)))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(store_error)?;
            for item in out.items.unwrap_or_default() {
                let sk = get_s(&item, SK)?;
                if sk == SK_ACCOUNT {
                    account.phone = Some(get_s(&item, "phone")?.to_owned());
                    account.version = Some(get_n(&item, "ver")?);
                } else if let Some(sid) = sk.strip_prefix(SK_SESSION_PREFIX) {
                    let sid = SessionId::from_stored(sid.to_owned());
                    account.sessions.push(session_from_item(&item, &sid)?);
                }
            }
            match out.last_evaluated_key {
                Some(last) if !last.is_empty() => start = Some(last),
                _ => return Ok(account),
            }
        }
        Err(StoreError::Other(
            "account collection too large to read".into(),
        ))
    }

    /// In one transaction: consume the code (if the phone's state is still at `version`,
    /// so no wrong try, send or other verify came in between), make the phone's account
    /// `session.sub` (new, or still at the version `account` read, so that no deletion or
    /// other login came in between), create the session with its first refresh token,
    /// and revoke `account.evict` (the least recently used sessions past
    /// `MAX_SESSIONS_PER_ACCOUNT`, CONTRACT §7) while they are still not revoked (so its
    /// `SessionsRevoked` names only sessions this login ended), with `events`. Of concurrent verifies of one code exactly
    /// one commits. A repeat of a login that was applied (its answer lost, the SDK's retry
    /// refused: ClientRequestToken makes that retry idempotent on AWS for 10 minutes, not
    /// on every endpoint) finds its own session, whose id is random and this login's
    /// alone, and is success.
    pub async fn complete_login(
        &self,
        phone: &PhoneNumber,
        version: u64,
        now: UnixMillis,
        session: &Session,
        account: &LoginAccount,
        events: Option<&Pending>,
    ) -> Result<(), StoreError> {
        let consume = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key(phone_pk(phone), SK_OTP)))
            .update_expression(
                "REMOVE codeId, codeMac, codeExpiresAt, attempts, idemKey, idemCodeId \
                 SET ver = ver + :one",
            )
            .condition_expression("ver = :ver AND codeExpiresAt > :now")
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":ver", n(version))
            .expression_attribute_values(":now", n(now.as_millis()))
            .build()
            .map_err(|e| StoreError::Other(e.into()))?;
        // The phone's account as the login read it: still this `sub`, or still none (a
        // deletion in between must not let an older `sub` come back, CONTRACT §7).
        let user_condition = if account.existing {
            "#sub = :sub"
        } else {
            "attribute_not_exists(#sub)"
        };
        let user = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key(phone_pk(phone), SK_USER)))
            .update_expression(
                "SET #sub = :sub, createdAt = if_not_exists(createdAt, :now), lastLoginAt = :now",
            )
            .condition_expression(user_condition)
            .expression_attribute_names("#sub", "sub")
            .expression_attribute_values(":sub", s(session.sub.clone()))
            .expression_attribute_values(":now", n(now.as_millis()))
            .build()
            .map_err(|e| StoreError::Other(e.into()))?;
        let account_item = match account.version {
            None => {
                let mut item = key(account_pk(&session.sub), SK_ACCOUNT);
                item.insert("phone".into(), s(phone.e164()));
                item.insert("createdAt".into(), n(now.as_millis()));
                item.insert("ver".into(), n(1));
                TransactWriteItem::builder()
                    .put(self.put_new(item)?)
                    .build()
            }
            Some(read) => TransactWriteItem::builder()
                .update(
                    Update::builder()
                        .table_name(&self.table)
                        .set_key(Some(key(account_pk(&session.sub), SK_ACCOUNT)))
                        .update_expression("SET ver = ver + :one, lastLoginAt = :now")
                        .condition_expression("ver = :ver")
                        .expression_attribute_values(":one", n(1))
                        .expression_attribute_values(":ver", n(read))
                        .expression_attribute_values(":now", n(now.as_millis()))
                        .build()
                        .map_err(|e| StoreError::Other(e.into()))?,
                )
                .build(),
        };
        let mut request = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().update(consume).build())
            .transact_items(TransactWriteItem::builder().update(user).build())
            .transact_items(account_item)
            .transact_items(
                TransactWriteItem::builder()
                    .put(self.put_new(session_item(session))?)
                    .build(),
            );
        for sid in &account.evict {
            request = request.transact_items(
                TransactWriteItem::builder()
                    .update(self.revocation(sid, now, session.id.as_str())?)
                    .build(),
            );
        }
        if let Some(events) = events {
            request = request.transact_items(self.events_put(events)?);
        }
        match request.send().await {
            Ok(_) => Ok(()),
            Err(err) if cancelled_codes(&err).get(3).copied() == Some("ConditionalCheckFailed") => {
                Ok(())
            }
            Err(err) => Err(transaction_error(err)),
        }
    }

    /// The update that revokes a session in a transaction, tagged `write_id`,
    /// conditioned on the session being there and not revoked (a lost race otherwise).
    fn revocation(
        &self,
        sid: &SessionId,
        now: UnixMillis,
        write_id: &str,
    ) -> Result<Update, StoreError> {
        Update::builder()
            .table_name(&self.table)
            .set_key(Some(session_key(sid)))
            .update_expression("SET revokedAt = :now, revokedBy = :wid")
            .condition_expression("attribute_exists(pk) AND attribute_not_exists(revokedAt)")
            .expression_attribute_values(":now", n(now.as_millis()))
            .expression_attribute_values(":wid", s(write_id))
            .build()
            .map_err(|e| StoreError::Other(e.into()))
    }

    /// Revoke the live sessions `sids` of one account in one transaction tagged
    /// `write_id` (logout with scope `others` or `all`, CONTRACT §7), and with `keep`,
    /// only while that session is still not revoked. [`StoreError::Conflict`] when any
    /// of them changed meanwhile: read the account again (a session revoked with
    /// `write_id` is this write's, applied by an attempt whose answer was lost).
    pub async fn revoke_sessions(
        &self,
        sids: &[SessionId],
        keep: Option<&SessionId>,
        write_id: &str,
        now: UnixMillis,
        events: Option<&Pending>,
    ) -> Result<(), StoreError> {
        if sids.len() + usize::from(keep.is_some()) + usize::from(events.is_some())
            > MAX_TRANSACTION_ITEMS
        {
            return Err(StoreError::Other(
                "too many sessions for one transaction".into(),
            ));
        }
        let mut request = self.client.transact_write_items();
        for sid in sids {
            request = request.transact_items(
                TransactWriteItem::builder()
                    .update(self.revocation(sid, now, write_id)?)
                    .build(),
            );
        }
        if let Some(sid) = keep {
            request = request.transact_items(
                TransactWriteItem::builder()
                    .condition_check(
                        ConditionCheck::builder()
                            .table_name(&self.table)
                            .set_key(Some(session_key(sid)))
                            .condition_expression(
                                "attribute_exists(pk) AND attribute_not_exists(revokedAt)",
                            )
                            .build()
                            .map_err(|e| StoreError::Other(e.into()))?,
                    )
                    .build(),
            );
        }
        if let Some(events) = events {
            request = request.transact_items(self.events_put(events)?);
        }
        request.send().await.map(|_| ()).map_err(transaction_error)
    }

    /// Erase an account (CONTRACT §7) in one transaction: its account item (still at
    /// `account.version`), the phone's mapping to it, its sessions `delete` (at most
    /// [`MAX_TRANSACTION_ITEMS`] − 4; those marked live only while still not revoked, so
    /// that its `SessionsRevoked` names only sessions it ended), the item of its
    /// `events`, and the phone's OTP item as `otp` expects it: its
    /// active code and `Idempotency-Key` cleared and its version bumped (the send window,
    /// guess count and a block stay), or checked absent. Either way the transaction
    /// holds the OTP item, so a login that read the code before fails and reads again.
    /// Answers [`Deletion::OtpItemOtherwise`] when the OTP item is not as expected (try
    /// again with the other expectation), [`StoreError::Conflict`] when anything else
    /// changed meanwhile (read again: an account that is gone was deleted, by this write
    /// or another).
    pub async fn delete_account(
        &self,
        account: &Account,
        phone: &PhoneNumber,
        version: u64,
        delete: &[(SessionId, bool)],
        otp: OtpItem,
        events: Option<&Pending>,
    ) -> Result<Deletion, StoreError> {
        if delete.len() + 3 + usize::from(events.is_some()) > MAX_TRANSACTION_ITEMS {
            return Err(StoreError::Other(
                "too many sessions for one transaction".into(),
            ));
        }
        let delete_item = |key: Item, live: bool| -> Result<TransactWriteItem, StoreError> {
            let delete = aws_sdk_dynamodb::types::Delete::builder()
                .table_name(&self.table)
                .set_key(Some(key));
            let delete = if live {
                delete.condition_expression("attribute_not_exists(revokedAt)")
            } else {
                delete
            };
            let delete = delete.build().map_err(|e| StoreError::Other(e.into()))?;
            Ok(TransactWriteItem::builder().delete(delete).build())
        };
        let account_delete = aws_sdk_dynamodb::types::Delete::builder()
            .table_name(&self.table)
            .set_key(Some(key(account_pk(&account.sub), SK_ACCOUNT)))
            .condition_expression("ver = :ver")
            .expression_attribute_values(":ver", n(version))
            .build()
            .map_err(|e| StoreError::Other(e.into()))?;
        let user_delete = aws_sdk_dynamodb::types::Delete::builder()
            .table_name(&self.table)
            .set_key(Some(key(phone_pk(phone), SK_USER)))
            .condition_expression("attribute_not_exists(pk) OR #sub = :sub")
            .expression_attribute_names("#sub", "sub")
            .expression_attribute_values(":sub", s(account.sub.clone()))
            .build()
            .map_err(|e| StoreError::Other(e.into()))?;
        let mut request = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().delete(account_delete).build())
            .transact_items(TransactWriteItem::builder().delete(user_delete).build());
        let otp_write = match otp {
            OtpItem::Clear => TransactWriteItem::builder()
                .update(
                    Update::builder()
                        .table_name(&self.table)
                        .set_key(Some(key(phone_pk(phone), SK_OTP)))
                        .update_expression(
                            "REMOVE codeId, codeMac, codeExpiresAt, attempts, idemKey, \
                             idemCodeId SET ver = ver + :one",
                        )
                        .condition_expression("attribute_exists(pk)")
                        .expression_attribute_values(":one", n(1))
                        .build()
                        .map_err(|e| StoreError::Other(e.into()))?,
                )
                .build(),
            OtpItem::Absent => TransactWriteItem::builder()
                .condition_check(
                    ConditionCheck::builder()
                        .table_name(&self.table)
                        .set_key(Some(key(phone_pk(phone), SK_OTP)))
                        .condition_expression("attribute_not_exists(pk)")
                        .build()
                        .map_err(|e| StoreError::Other(e.into()))?,
                )
                .build(),
        };
        request = request.transact_items(otp_write);
        for (sid, live) in delete {
            request = request.transact_items(delete_item(session_key(sid), *live)?);
        }
        if let Some(events) = events {
            request = request.transact_items(self.events_put(events)?);
        }
        match request.send().await {
            Ok(_) => Ok(Deletion::Deleted),
            Err(err) => {
                let codes = cancelled_codes(&err);
                let only_otp = codes
                    .iter()
                    .enumerate()
                    .all(|(i, c)| i == 2 || matches!(*c, "None"));
                if codes.get(2).copied() == Some("ConditionalCheckFailed") && only_otp {
                    Ok(Deletion::OtpItemOtherwise)
                } else {
                    Err(transaction_error(err))
                }
            }
        }
    }

    /// The put of a phone's OTP state, conditioned as `expect`ed.
    fn otp_put(
        &self,
        phone: &PhoneNumber,
        expect: Expect,
        state: &OtpState,
        window_secs: u64,
        now: UnixMillis,
    ) -> Result<Put, StoreError> {
        let mut put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(otp_item(phone, state, window_secs)))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        put = match expect {
            // The TTL is rounded up to whole seconds: strictly below `now` in seconds,
            // everything in the item is over.
            Expect::Fresh => put
                .condition_expression("attribute_not_exists(pk) OR #ttl < :now")
                .expression_attribute_names("#ttl", TTL_ATTRIBUTE)
                .expression_attribute_values(":now", n(now.as_secs())),
            Expect::Version(v) => put
                .condition_expression("ver = :ver")
                .expression_attribute_values(":ver", n(v)),
        };
        put.build().map_err(|e| StoreError::Other(e.into()))
    }

    /// Admit a send: the phone's new OTP state and, in the same all-or-nothing request,
    /// a slot of each budget in `claims` (CONTRACT §3b). Without claims this is
    /// [`Self::save_otp`]: one put. When a condition fails, what each item held instead.
    pub async fn save_send(
        &self,
        phone: &PhoneNumber,
        expect: Expect,
        state: &OtpState,
        window_secs: u64,
        now: UnixMillis,
        claims: &[SlotClaim],
    ) -> Result<SendWrite, StoreError> {
        if claims.is_empty() {
            return Ok(
                match self
                    .save_otp(phone, expect, state, window_secs, now)
                    .await?
                {
                    Conditional::Applied(()) => SendWrite::Applied,
                    Conditional::Failed(found) => SendWrite::Failed {
                        phone: Box::new(Found::Changed(found)),
                        claims: Vec::new(),
                    },
                    Conditional::Held => SendWrite::Failed {
                        phone: Box::new(Found::Unknown),
                        claims: Vec::new(),
                    },
                },
            );
        }
        let mut transaction = self.client.transact_write_items().transact_items(
            TransactWriteItem::builder()
                .put(self.otp_put(phone, expect, state, window_secs, now)?)
                .build(),
        );
        for claim in claims {
            transaction = transaction.transact_items(
                TransactWriteItem::builder()
                    .update(self.slot_claim(claim)?)
                    .build(),
            );
        }
        let err = match transaction.send().await {
            Ok(_) => return Ok(SendWrite::Applied),
            Err(err) => err,
        };
        let reasons = match &err {
            SdkError::ServiceError(service) => match service.err() {
                TransactWriteItemsError::TransactionCanceledException(cancel) => {
                    Some(cancel.cancellation_reasons().to_vec())
                }
                _ => None,
            },
            _ => None,
        };
        let Some(reasons) = reasons else {
            return Err(transaction_error(err));
        };
        match classify_cancellation(reasons.iter().map(|r| r.code())) {
            Cancelled::LostRace => {}
            _ => return Err(transaction_error(err)),
        }
        let found = |i: usize| {
            reasons.get(i).map_or(Found::Unknown, |r| match r.code() {
                None | Some("None") => Found::Fine,
                Some("ConditionalCheckFailed") => Found::Changed(r.item().cloned()),
                Some(_) => Found::Unknown,
            })
        };
        let phone_found = match found(0) {
            Found::Changed(item) => Found::Changed(item.as_ref().map(otp_from_item).transpose()?),
            Found::Fine => Found::Fine,
            Found::Unknown => Found::Unknown,
        };
        let claims_found = claims
            .iter()
            .enumerate()
            .map(|(i, claim)| match found(i + 1) {
                Found::Changed(item) => {
                    Found::Changed(item.as_ref().map(|item| slots_from_item(item, claim.limit)))
                }
                Found::Fine => Found::Fine,
                Found::Unknown => Found::Unknown,
            })
            .collect();
        Ok(SendWrite::Failed {
            phone: Box::new(phone_found),
            claims: claims_found,
        })
    }

    fn slot_claim(&self, claim: &SlotClaim) -> Result<Update, StoreError> {
        let cutoff = claim
            .at
            .as_millis()
            .saturating_sub(claim.window_secs.saturating_mul(1000));
        Update::builder()
            .table_name(&self.table)
            .set_key(Some(key(claim.key.clone(), SK_SENDS)))
            .update_expression("SET #slot = :at, #ttl = :ttl")
            .condition_expression("attribute_not_exists(#slot) OR #slot <= :cutoff")
            .expression_attribute_names("#slot", format!("s{}", claim.slot))
            .expression_attribute_names("#ttl", TTL_ATTRIBUTE)
            .expression_attribute_values(":at", n(claim.at.as_millis()))
            .expression_attribute_values(":cutoff", n(cutoff))
            .expression_attribute_values(":ttl", ttl(claim.at.plus_secs(claim.window_secs)))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .build()
            .map_err(|e| StoreError::Other(e.into()))
    }

    /// Give back a slot a send claimed (its SMS was refused): only if it still holds
    /// that send. One request; a slot already given back or reused is left alone
    /// ([`Conditional::Failed`]). A repeat cannot give back another send's claim: a
    /// later claim of the slot holds a later time than this send's.
    pub async fn release_slot(&self, claim: &SlotClaim) -> Result<Conditional<(), ()>, StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(claim.key.clone(), SK_SENDS)))
            .update_expression("REMOVE #slot")
            .condition_expression("#slot = :at")
            .expression_attribute_names("#slot", format!("s{}", claim.slot))
            .expression_attribute_values(":at", n(claim.at.as_millis()))
            .send()
            .await;
        Ok(match single_write(result, |_| None)? {
            Conditional::Applied(_) => Conditional::Applied(()),
            Conditional::Failed(_) => Conditional::Failed(None),
            Conditional::Held => Conditional::Held,
        })
    }

    /// Write a budget item's slots as given (fixtures: a budget already spent). One
    /// unconditional put; the item expires once its last slot has left `window_secs`.
    pub async fn write_slots(
        &self,
        budget_key: &str,
        slots: &Slots,
        window_secs: u64,
    ) -> Result<(), StoreError> {
        let mut item = key(budget_key.to_owned(), SK_SENDS);
        let mut last = UnixMillis(0);
        for (i, at) in slots.0.iter().enumerate() {
            if let Some(at) = at {
                item.insert(format!("s{i}"), n(at.as_millis()));
                last = last.max(*at);
            }
        }
        item.insert(TTL_ATTRIBUTE.into(), ttl(last.plus_secs(window_secs)));
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(store_error)?;
        Ok(())
    }

    /// What a send decides from, read in one strongly consistent request (CONTRACT §3b:
    /// a spent global budget is refused in at most three requests): the phone's OTP
    /// state, the IP's budget item (`key`, number of slots) and the global shards
    /// (shard, number of slots), as many of them as asked for.
    pub async fn read_send_items(
        &self,
        phone: Option<&PhoneNumber>,
        ip: Option<(&str, u32)>,
        shards: &[(u32, u32)],
    ) -> Result<SendItems, StoreError> {
        let mut keys = Vec::with_capacity(shards.len() + 2);
        if let Some(phone) = phone {
            keys.push(key(phone_pk(phone), SK_OTP));
        }
        if let Some((ip_key, _)) = ip {
            keys.push(key(ip_key.to_owned(), SK_SENDS));
        }
        keys.extend(
            shards
                .iter()
                .map(|(shard, _)| key(shard_key(*shard), SK_SENDS)),
        );
        let mut items: HashMap<String, Item> = HashMap::new();
        for item in self.batch_get(keys).await? {
            items.insert(get_s(&item, PK)?.to_owned(), item);
        }
        Ok(SendItems {
            phone: phone
                .map(|p| items.get(&phone_pk(p)).map(otp_from_item).transpose())
                .transpose()?,
            ip: ip.map(|(ip_key, limit)| items.get(ip_key).map(|i| slots_from_item(i, limit))),
            shards: shards
                .iter()
                .map(|(shard, quota)| {
                    let found = items
                        .get(&shard_key(*shard))
                        .map(|i| slots_from_item(i, *quota));
                    (*shard, found)
                })
                .collect(),
        })
    }

    // ---- sessions and their refresh-token chain ---------------------------------------

    // ---- operator actions (CONTRACT §7) ------------------------------------------------

    /// Block the phone: its OTP item (made if it has none) says so and loses its TTL, so
    /// the block lasts until lifted; its version is bumped, so a send, verify or login
    /// that read the item before fails its condition and reads the block. Setting the
    /// same block again changes nothing that matters, so a repeated write is harmless.
    pub async fn block_phone(
        &self,
        phone: &PhoneNumber,
        reason: Option<&str>,
        now: UnixMillis,
    ) -> Result<Conditional<(), ()>, StoreError> {
        let mut update = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(phone_pk(phone), SK_OTP)))
            .expression_attribute_names("#ttl", TTL_ATTRIBUTE)
            .expression_attribute_values(":yes", AttributeValue::Bool(true))
            .expression_attribute_values(":now", n(now.as_millis()))
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":none", AttributeValue::L(Vec::new()));
        let set = "SET blocked = :yes, blockedAt = :now, ver = if_not_exists(ver, :zero) + :one, \
                   sends = if_not_exists(sends, :none)";
        update = match reason {
            Some(reason) => update
                .update_expression(format!("{set}, blockReason = :reason REMOVE #ttl"))
                .expression_attribute_values(":reason", s(reason)),
            None => update.update_expression(format!("{set} REMOVE #ttl, blockReason")),
        };
        Ok(
            match single_write(update.send().await, update_item_found)? {
                Conditional::Applied(_) => Conditional::Applied(()),
                Conditional::Failed(_) => Conditional::Failed(None),
                Conditional::Held => Conditional::Held,
            },
        )
    }

    /// Lift a block: the item gets a TTL again (`keep_secs` from now, long enough for
    /// its send window and guess count). `Failed` when the phone was not blocked. The
    /// write is tagged `write_id`, so its repeat after a lost answer is `Applied` too.
    pub async fn unblock_phone(
        &self,
        phone: &PhoneNumber,
        now: UnixMillis,
        keep_secs: u64,
        write_id: &str,
    ) -> Result<Conditional<(), ()>, StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(phone_pk(phone), SK_OTP)))
            .update_expression(
                "REMOVE blocked, blockedAt, blockReason \
                 SET ver = ver + :one, #ttl = :ttl, unblockedBy = :wid",
            )
            .condition_expression("attribute_exists(blocked) OR unblockedBy = :wid")
            .expression_attribute_values(":wid", s(write_id))
            .expression_attribute_names("#ttl", TTL_ATTRIBUTE)
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":ttl", ttl(now.plus_secs(keep_secs)))
            .send()
            .await;
        Ok(match single_write(result, |_| None)? {
            Conditional::Applied(_) => Conditional::Applied(()),
            Conditional::Failed(_) => Conditional::Failed(None),
            Conditional::Held => Conditional::Held,
        })
    }

    /// Clear the phone's guess count and send window (CONTRACT §7 `unlock`); its code,
    /// a block and everything else stay. `Failed` when the phone has no OTP item.
    pub async fn unlock_phone(
        &self,
        phone: &PhoneNumber,
    ) -> Result<Conditional<(), ()>, StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(phone_pk(phone), SK_OTP)))
            .update_expression("REMOVE wrong SET sends = :none, ver = ver + :one")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(":none", AttributeValue::L(Vec::new()))
            .expression_attribute_values(":one", n(1))
            .send()
            .await;
        Ok(match single_write(result, |_| None)? {
            Conditional::Applied(_) => Conditional::Applied(()),
            Conditional::Failed(_) => Conditional::Failed(None),
            Conditional::Held => Conditional::Held,
        })
    }

    /// Store an account and the phone's mapping to it, outside a login (imports,
    /// fixtures): one transaction; [`StoreError::Conflict`] if either exists.
    pub async fn insert_account(
        &self,
        sub: &str,
        phone: &PhoneNumber,
        now: UnixMillis,
    ) -> Result<(), StoreError> {
        let mut account = key(account_pk(sub), SK_ACCOUNT);
        account.insert("phone".into(), s(phone.e164()));
        account.insert("createdAt".into(), n(now.as_millis()));
        account.insert("ver".into(), n(1));
        let mut user = key(phone_pk(phone), SK_USER);
        user.insert("sub".into(), s(sub));
        user.insert("createdAt".into(), n(now.as_millis()));
        self.client
            .transact_write_items()
            .transact_items(
                TransactWriteItem::builder()
                    .put(self.put_new(account)?)
                    .build(),
            )
            .transact_items(
                TransactWriteItem::builder()
                    .put(self.put_new(user)?)
                    .build(),
            )
            .send()
            .await
            .map(|_| ())
            .map_err(transaction_error)
    }

    /// Store a new session, outside a login (imports, fixtures). One request;
    /// [`StoreError::Conflict`] if it exists.
    pub async fn insert_session(&self, session: &Session) -> Result<(), StoreError> {
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(session_item(session)))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        match single_write(result, |_| None)? {
            Conditional::Applied(_) => Ok(()),
            Conditional::Failed(_) | Conditional::Held => Err(StoreError::Conflict),
        }
    }

    /// Rotate the session's live token from `presented_hash` to `next` in one
    /// conditional update: only if `presented_hash` is still the live token and the
    /// session and that token are live at `now`. `next.rotation_id` marks this write, so
    /// a repeat of it (the SDK retrying after a lost answer) can be recognised. Answers
    /// the session as written, or as it stood when the condition failed.
    pub async fn rotate_refresh(
        &self,
        sid: &SessionId,
        presented_hash: &str,
        next: &Chain,
        now: UnixMillis,
    ) -> Result<Conditional<Session, Session>, StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(session_key(sid)))
            .update_expression(
                "SET cur = :next, gen = gen + :one, rotatedAt = :now, \
                 tokenExpiresAt = :texp, rotationId = :rid, #ttl = :ttl",
            )
            .condition_expression(
                "cur = :cur AND attribute_not_exists(revokedAt) \
                 AND sessionExpiresAt > :now AND tokenExpiresAt > :now",
            )
            .expression_attribute_names("#ttl", TTL_ATTRIBUTE)
            .expression_attribute_values(":cur", s(presented_hash))
            .expression_attribute_values(":next", s(next.current_hash.clone()))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":now", n(now.as_millis()))
            .expression_attribute_values(":texp", n(next.token_expires_at.as_millis()))
            .expression_attribute_values(":rid", s(next.rotation_id.clone().unwrap_or_default()))
            .expression_attribute_values(":ttl", ttl(next.token_expires_at))
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        Ok(match single_write(result, update_item_found)? {
            Conditional::Applied(out) => {
                let item = out.attributes.ok_or(StoreError::Corrupt("attributes"))?;
                Conditional::Applied(session_from_item(&item, sid)?)
            }
            Conditional::Failed(found) => Conditional::Failed(
                found
                    .as_ref()
                    .map(|i| session_from_item(i, sid))
                    .transpose()?,
            ),
            Conditional::Held => Conditional::Held,
        })
    }

    /// Revoke a live session in one conditional update; with `only_if_current`, only
    /// while that hash is its live token. Answers the session as it stood when the
    /// condition failed (already revoked, expired, rotated on, or absent). `write_id`
    /// marks the revocation (`revokedBy`): a repeat of one that was applied is
    /// [`Conditional::Applied`]. With `events`, the same update and the events' item in
    /// one transaction (still one request).
    pub async fn revoke_session(
        &self,
        sid: &SessionId,
        now: UnixMillis,
        only_if_current: Option<&str>,
        write_id: &str,
        events: Option<&Pending>,
    ) -> Result<Conditional<(), Session>, StoreError> {
        let live =
            "attribute_not_exists(revokedAt) AND sessionExpiresAt > :now AND tokenExpiresAt > :now";
        let mut values = HashMap::from([
            (":now".to_owned(), n(now.as_millis())),
            (":wid".to_owned(), s(write_id)),
        ]);
        let condition = match only_if_current {
            Some(hash) => {
                values.insert(":cur".to_owned(), s(hash));
                format!("cur = :cur AND {live}")
            }
            None => format!("attribute_exists(pk) AND {live}"),
        };
        let found = match events {
            None => {
                let result = self
                    .client
                    .update_item()
                    .table_name(&self.table)
                    .set_key(Some(session_key(sid)))
                    .update_expression("SET revokedAt = :now, revokedBy = :wid")
                    .condition_expression(condition)
                    .set_expression_attribute_values(Some(values))
                    .return_values_on_condition_check_failure(
                        ReturnValuesOnConditionCheckFailure::AllOld,
                    )
                    .send()
                    .await;
                match single_write(result, update_item_found)? {
                    Conditional::Applied(_) => return Ok(Conditional::Applied(())),
                    Conditional::Held => return Ok(Conditional::Held),
                    Conditional::Failed(found) => found,
                }
            }
            Some(events) => {
                let update = Update::builder()
                    .table_name(&self.table)
                    .set_key(Some(session_key(sid)))
                    .update_expression("SET revokedAt = :now, revokedBy = :wid")
                    .condition_expression(condition)
                    .set_expression_attribute_values(Some(values))
                    .return_values_on_condition_check_failure(
                        ReturnValuesOnConditionCheckFailure::AllOld,
                    )
                    .build()
                    .map_err(|e| StoreError::Other(e.into()))?;
                let result = self
                    .client
                    .transact_write_items()
                    .transact_items(TransactWriteItem::builder().update(update).build())
                    .transact_items(self.events_put(events)?)
                    .send()
                    .await;
                match result {
                    Ok(_) => return Ok(Conditional::Applied(())),
                    // The session's condition failed: the transaction returned it.
                    Err(err)
                        if cancelled_codes(&err).first() == Some(&"ConditionalCheckFailed") =>
                    {
                        cancelled_item(&err, 0)
                    }
                    Err(err) => {
                        return match transaction_error(err) {
                            // A transaction held an item: the same lost race.
                            StoreError::Conflict => Ok(Conditional::Held),
                            other => Err(other),
                        };
                    }
                }
            }
        };
        Ok(match found {
            Some(item) if get_opt_s(&item, "revokedBy")?.as_deref() == Some(write_id) => {
                Conditional::Applied(())
            }
            found => Conditional::Failed(
                found
                    .as_ref()
                    .map(|i| session_from_item(i, sid))
                    .transpose()?,
            ),
        })
    }

    // ---- events not yet on the bus (CONTRACT §7 "Events") ------------------------------

    /// The put of a change's events item, for the change's own transaction. No
    /// condition: a repeat of the transaction writes the same item.
    fn events_put(&self, events: &Pending) -> Result<TransactWriteItem, StoreError> {
        let mut item = key(EVENTS_PK.to_owned(), &events.key);
        item.insert("at".into(), n(events.at.as_millis()));
        item.insert("events".into(), s(entries_to_json(&events.entries())));
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .build()
            .map_err(|e| StoreError::Other(e.into()))?;
        Ok(TransactWriteItem::builder().put(put).build())
    }

    /// Delete an events item once the bus has its events. One request; deleting one
    /// that is gone (the relay was first) is no error.
    pub async fn delete_events(&self, key_: &str) -> Result<(), StoreError> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key(EVENTS_PK.to_owned(), key_)))
            .send()
            .await
            .map(|_| ())
            .map_err(store_error)
    }

    /// Events items stored before `before`, oldest first, from `start` (the previous
    /// page's end): at most `limit` of them and where the next page starts.
    pub async fn stored_events(
        &self,
        before: UnixMillis,
        start: Option<Item>,
        limit: i32,
    ) -> Result<(Vec<StoredEvents>, Option<Item>), StoreError> {
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .consistent_read(true)
            .key_condition_expression("pk = :pk AND sk < :before")
            .expression_attribute_values(":pk", s(EVENTS_PK))
            .expression_attribute_values(":before", s(format!("{:013}", before.as_millis())))
            .set_exclusive_start_key(start)
            .limit(limit)
            .send()
            .await
            .map_err(store_error)?;
        let stored = out
            .items
            .unwrap_or_default()
            .iter()
            .map(|item| {
                Ok(StoredEvents {
                    key: get_s(item, SK)?.to_owned(),
                    at: UnixMillis(get_n(item, "at")?),
                    entries: get_s(item, "events").ok().and_then(entries_from_json),
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let next = out.last_evaluated_key.filter(|k| !k.is_empty());
        Ok((stored, next))
    }

    /// When the oldest stored events item's change was made (`None`: none stored).
    pub async fn oldest_events(&self) -> Result<Option<UnixMillis>, StoreError> {
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .consistent_read(true)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", s(EVENTS_PK))
            .limit(1)
            .send()
            .await
            .map_err(store_error)?;
        out.items
            .unwrap_or_default()
            .first()
            .map(|item| get_n(item, "at").map(UnixMillis))
            .transpose()
    }

    // ---- helpers -----------------------------------------------------------------------

    fn put_new(&self, item: Item) -> Result<Put, StoreError> {
        Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .build()
            .map_err(|e| StoreError::Other(e.into()))
    }

    /// Strongly consistent batch read. Keys DynamoDB leaves unprocessed (it does under
    /// throttling) are asked for again after a jittered back-off, a bounded number of times.
    async fn batch_get(&self, keys: Vec<Item>) -> Result<Vec<Item>, StoreError> {
        let mut pending = Some(keys);
        let mut found = Vec::new();
        for round in 0..BATCH_GET_ROUNDS {
            let Some(keys) = pending.take().filter(|k| !k.is_empty()) else {
                return Ok(found);
            };
            if round > 0 {
                crate::budget::back_off(round).await;
            }
            let request = KeysAndAttributes::builder()
                .set_keys(Some(keys))
                .consistent_read(true)
                .build()
                .map_err(|e| StoreError::Other(e.into()))?;
            let out = self
                .client
                .batch_get_item()
                .request_items(&self.table, request)
                .send()
                .await
                .map_err(store_error)?;
            if let Some(mut responses) = out.responses {
                found.extend(responses.remove(&self.table).unwrap_or_default());
            }
            pending = out
                .unprocessed_keys
                .and_then(|mut u| u.remove(&self.table))
                .map(|k| k.keys);
        }
        if pending.is_some_and(|k| !k.is_empty()) {
            return Err(StoreError::Unavailable(
                "batch read left keys unprocessed".into(),
            ));
        }
        Ok(found)
    }
}

/// A slot of a budget item that a send claims at `at` (CONTRACT §3b).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotClaim {
    /// `IP#<address>` or `GLOBAL#<shard>`.
    pub key: String,
    pub slot: u32,
    pub at: UnixMillis,
    pub window_secs: u64,
    /// The budget's number of slots (the item's size).
    pub limit: u32,
}

impl SlotClaim {
    pub fn ip_key(ip: &SourceIp) -> String {
        format!("IP#{ip}")
    }

    pub fn global_key(shard: u32) -> String {
        shard_key(shard)
    }
}

/// What one item of a failed write held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found<T> {
    /// Its condition held; another item's failed.
    Fine,
    /// Its condition failed: what it held (`None`: no item).
    Changed(Option<T>),
    /// Not known (held by another transaction): read again or guess.
    Unknown,
}

/// The outcome of [`DynamoDbStore::save_send`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendWrite {
    Applied,
    /// Nothing was written. `claims` in the order given.
    Failed {
        phone: Box<Found<OtpState>>,
        claims: Vec<Found<Slots>>,
    },
}

/// An events item as stored: its key, its change's time, and its events (`None`: not
/// readable, left where it is).
#[derive(Debug, Clone)]
pub struct StoredEvents {
    pub key: String,
    pub at: UnixMillis,
    pub entries: Option<Vec<Entry>>,
}

/// What [`DynamoDbStore::load_login`] read.
#[derive(Debug, Clone, Default)]
pub struct Login {
    /// The phone's OTP state (default: no item).
    pub otp: OtpState,
    /// Its account's `sub`, if it has one.
    pub sub: Option<String>,
}

/// What [`DynamoDbStore::load_account`] read of an account's item collection.
#[derive(Debug, Clone, Default)]
pub struct Account {
    pub sub: String,
    /// The account item's phone and version (`None`: no account item, e.g. deleted).
    pub phone: Option<String>,
    pub version: Option<u64>,
    /// Every stored session, live or not.
    pub sessions: Vec<Session>,
}

impl Account {
    /// The session `sid`, if stored.
    pub fn session(&self, sid: &SessionId) -> Option<&Session> {
        self.sessions.iter().find(|s| s.id == *sid)
    }

    /// Its live sessions at `now`, most recently used first.
    pub fn live_sessions(&self, now: UnixMillis) -> Vec<&Session> {
        let mut live: Vec<&Session> = self.sessions.iter().filter(|s| s.is_live(now)).collect();
        live.sort_by(|a, b| {
            b.last_used_at()
                .cmp(&a.last_used_at())
                .then(b.created_at.cmp(&a.created_at))
        });
        live
    }
}

/// The account side of a login: whether the phone had this account when it was read
/// (`false`: the login creates it), the account item's version as read (`None`: no
/// account item yet), and the sessions the login revokes to stay within the limit.
#[derive(Debug, Clone, Default)]
pub struct LoginAccount {
    pub existing: bool,
    pub version: Option<u64>,
    pub evict: Vec<SessionId>,
}

/// The outcome of [`DynamoDbStore::delete_account`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deletion {
    Deleted,
    /// The phone's OTP item is not as expected (there is none to clear, or one appeared);
    /// nothing was written.
    OtpItemOtherwise,
}

/// What an account's erasure expects of the phone's OTP item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtpItem {
    /// There: clear its code and bump its version.
    Clear,
    /// Not there: check that it still is not.
    Absent,
}

impl OtpItem {
    /// The other expectation.
    pub fn flipped(self) -> Self {
        match self {
            Self::Clear => Self::Absent,
            Self::Absent => Self::Clear,
        }
    }
}

/// What [`DynamoDbStore::read_send_items`] read: for each item asked for, what it holds
/// (`None`: no item).
#[derive(Debug, Clone, Default)]
pub struct SendItems {
    pub phone: Option<Option<OtpState>>,
    pub ip: Option<Option<Slots>>,
    pub shards: Vec<(u32, Option<Slots>)>,
}

fn slots_from_item(item: &Item, limit: u32) -> Slots {
    Slots(
        (0..limit)
            .map(|i| match item.get(&format!("s{i}")) {
                Some(AttributeValue::N(v)) => v.parse().ok().map(UnixMillis),
                _ => None,
            })
            .collect(),
    )
}

fn otp_item(phone: &PhoneNumber, state: &OtpState, window_secs: u64) -> Item {
    let mut item = key(phone_pk(phone), SK_OTP);
    item.insert("ver".into(), n(state.version.unwrap_or(0)));
    item.insert(
        "sends".into(),
        AttributeValue::L(state.sends.iter().map(|t| n(t.as_millis())).collect()),
    );
    if !state.wrong.is_empty() {
        item.insert(
            "wrong".into(),
            AttributeValue::L(state.wrong.iter().map(|t| n(t.as_millis())).collect()),
        );
    }
    if let Some(code) = &state.code {
        item.insert("codeId".into(), s(code.id.clone()));
        item.insert(
            "codeMac".into(),
            AttributeValue::B(Blob::new(code.mac.as_bytes())),
        );
        item.insert("codeExpiresAt".into(), n(code.expires_at.as_millis()));
        item.insert("attempts".into(), n(u64::from(code.attempts)));
    }
    if let Some(sent) = &state.idempotency {
        item.insert("idemKey".into(), s(sent.key_hash.clone()));
        item.insert("idemCodeId".into(), s(sent.code_id.clone()));
    }
    if !state.writes.is_empty() {
        item.insert(
            "wids".into(),
            AttributeValue::L(state.writes.iter().map(|w| s(w.clone())).collect()),
        );
    }
    if let Some(block) = &state.blocked {
        // A block lasts until it is lifted (CONTRACT §7): no TTL.
        item.insert("blocked".into(), AttributeValue::Bool(true));
        item.insert("blockedAt".into(), n(block.at.as_millis()));
        if let Some(reason) = &block.reason {
            item.insert("blockReason".into(), s(reason.clone()));
        }
    } else {
        item.insert(TTL_ATTRIBUTE.into(), ttl(state.expires_at(window_secs)));
    }
    item
}

fn millis_list(item: &Item, name: &'static str) -> Result<Vec<UnixMillis>, StoreError> {
    match item.get(name) {
        Some(AttributeValue::L(values)) => values
            .iter()
            .map(|v| match v {
                AttributeValue::N(raw) => raw
                    .parse()
                    .map(UnixMillis)
                    .map_err(|_| StoreError::Corrupt(name)),
                _ => Err(StoreError::Corrupt(name)),
            })
            .collect(),
        None => Ok(Vec::new()),
        Some(_) => Err(StoreError::Corrupt(name)),
    }
}

fn otp_from_item(item: &Item) -> Result<OtpState, StoreError> {
    let sends = millis_list(item, "sends")?;
    let code = match item.get("codeId") {
        None => None,
        Some(_) => Some(ActiveCode {
            id: get_s(item, "codeId")?.to_owned(),
            mac: match item.get("codeMac") {
                Some(AttributeValue::B(blob)) => CodeMac::from_bytes(blob.as_ref().to_vec()),
                _ => return Err(StoreError::Corrupt("codeMac")),
            },
            expires_at: UnixMillis(get_n(item, "codeExpiresAt")?),
            attempts: u32::try_from(get_n(item, "attempts")?)
                .map_err(|_| StoreError::Corrupt("attempts"))?,
        }),
    };
    let idempotency = match (get_opt_s(item, "idemKey")?, get_opt_s(item, "idemCodeId")?) {
        (Some(key_hash), Some(code_id)) => Some(IdempotentSend { key_hash, code_id }),
        _ => None,
    };
    Ok(OtpState {
        sends,
        code,
        wrong: millis_list(item, "wrong")?,
        idempotency,
        version: Some(get_n(item, "ver")?),
        writes: match item.get("wids") {
            None => Vec::new(),
            Some(AttributeValue::L(ids)) => ids
                .iter()
                .map(|id| match id {
                    AttributeValue::S(id) => Ok(id.clone()),
                    _ => Err(StoreError::Corrupt("wids")),
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(StoreError::Corrupt("wids")),
        },
        blocked: match item.get("blocked") {
            Some(AttributeValue::Bool(true)) => Some(Block {
                at: UnixMillis(get_n(item, "blockedAt").unwrap_or(0)),
                reason: get_opt_s(item, "blockReason")?,
            }),
            _ => None,
        },
    })
}

fn session_item(session: &Session) -> Item {
    let mut item = session_key(&session.id);
    item.insert("sub".into(), s(session.sub.clone()));
    item.insert("phone".into(), s(session.phone.clone()));
    item.insert("createdAt".into(), n(session.created_at.as_millis()));
    item.insert("sessionExpiresAt".into(), n(session.expires_at.as_millis()));
    if let Some(agent) = &session.user_agent {
        item.insert("userAgent".into(), s(agent.clone()));
    }
    item.insert("cur".into(), s(session.chain.current_hash.clone()));
    item.insert("gen".into(), n(session.chain.generation));
    item.insert("rotatedAt".into(), n(session.chain.rotated_at.as_millis()));
    item.insert(
        "tokenExpiresAt".into(),
        n(session.chain.token_expires_at.as_millis()),
    );
    // Gone once its live token has expired: every token of the chain has by then.
    item.insert(
        TTL_ATTRIBUTE.into(),
        ttl(session.chain.token_expires_at.min(session.expires_at)),
    );
    item
}

fn session_from_item(item: &Item, sid: &SessionId) -> Result<Session, StoreError> {
    Ok(Session {
        id: sid.clone(),
        sub: get_s(item, "sub")?.to_owned(),
        phone: get_s(item, "phone")?.to_owned(),
        created_at: UnixMillis(get_n(item, "createdAt")?),
        expires_at: UnixMillis(get_n(item, "sessionExpiresAt")?),
        revoked: item.contains_key("revokedAt"),
        revoked_by: get_opt_s(item, "revokedBy")?,
        user_agent: get_opt_s(item, "userAgent")?,
        chain: Chain {
            current_hash: get_s(item, "cur")?.to_owned(),
            generation: get_n(item, "gen")?,
            rotated_at: UnixMillis(get_n(item, "rotatedAt")?),
            token_expires_at: UnixMillis(get_n(item, "tokenExpiresAt")?),
            rotation_id: get_opt_s(item, "rotationId")?,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cancelled_transaction_is_decided_by_its_reasons() {
        let decide = |codes: &[&'static str]| classify_cancellation(codes.iter().map(|c| Some(*c)));
        assert_eq!(
            decide(&["None", "TransactionConflict"]),
            Cancelled::LostRace
        );
        assert_eq!(
            decide(&["ConditionalCheckFailed", "None"]),
            Cancelled::LostRace
        );
        assert_eq!(
            decide(&["TransactionConflict", "ThrottlingError"]),
            Cancelled::Throttled
        );
        assert_eq!(
            decide(&["None", "ProvisionedThroughputExceeded"]),
            Cancelled::Throttled
        );
        assert_eq!(decide(&["ValidationError", "None"]), Cancelled::Failed);
        assert_eq!(
            decide(&["ValidationError", "ThrottlingError"]),
            Cancelled::Throttled
        );
    }
}

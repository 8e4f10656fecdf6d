//! The one table (see `template.yaml`): key `pk` + `sk`, TTL attribute `expiresAt`.
//!
//! | item            | pk                 | sk          | holds                                   |
//! |-----------------|--------------------|-------------|-----------------------------------------|
//! | OTP state       | `PHONE#<e164>`     | `OTP`       | send timestamps, active code MAC, tries |
//! | user            | `PHONE#<e164>`     | `USER`      | the stable opaque `sub`                 |
//! | session         | `SESSION#<sid>`    | `SESSION`   | sub, phone, expiry, revocation          |
//! | refresh token   | `SESSION#<sid>`    | `RT#<hash>` | issue/expiry/spent times                |
//!
//! Every race is settled by a condition in DynamoDB, never by reading twice. Round trips
//! per successful request: send 2 (get, conditional put), verify 2 (batch get,
//! transaction), refresh 2 (batch get, transaction), logout 2 (batch get, update).
//! User items carry no TTL: a user's `sub` must never change.

use std::collections::HashMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{
    AttributeValue, ConditionCheck, KeysAndAttributes, Put, TransactWriteItem, Update,
};

use crate::domain::otp::ActiveCode;
use crate::domain::session::SessionId;
use crate::domain::{CodeMac, OtpState, PhoneNumber, Session, StoredRefreshToken, UnixMillis};
use crate::ports::StoreError;

const PK: &str = "pk";
const SK: &str = "sk";
/// The table's TTL attribute (epoch seconds).
pub const TTL_ATTRIBUTE: &str = "expiresAt";

const SK_OTP: &str = "OTP";
const SK_USER: &str = "USER";
const SK_SESSION: &str = "SESSION";

type Item = HashMap<String, AttributeValue>;

#[derive(Debug, Clone)]
pub struct DynamoDbStore {
    client: Client,
    table: String,
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

fn session_pk(sid: &SessionId) -> String {
    format!("SESSION#{}", sid.as_str())
}

fn token_sk(hash: &str) -> String {
    format!("RT#{hash}")
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

fn get_opt_n(item: &Item, name: &'static str) -> Result<Option<u64>, StoreError> {
    match item.get(name) {
        None | Some(AttributeValue::Null(_)) => Ok(None),
        Some(_) => get_n(item, name).map(Some),
    }
}

/// Classify an SDK failure for the domain.
fn store_error<E>(err: SdkError<E>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    if let SdkError::ServiceError(service) = &err
        && service.err().code() == Some("ConditionalCheckFailedException")
    {
        return StoreError::Conflict;
    }
    let transient = super::is_transient(&err);
    // A service error's message may quote key values (a phone number): keep its code only.
    let detail = match &err {
        SdkError::ServiceError(service) => {
            format!(
                "DynamoDB error {}",
                service.err().code().unwrap_or("unknown")
            )
        }
        other => DisplayErrorContext(other).to_string(),
    };
    if transient {
        StoreError::Unavailable(detail.into())
    } else {
        StoreError::Other(detail.into())
    }
}

/// A cancelled transaction is a lost race unless a reason says throttling.
fn transaction_error(err: SdkError<TransactWriteItemsError>) -> StoreError {
    if let SdkError::ServiceError(service) = &err
        && let TransactWriteItemsError::TransactionCanceledException(cancel) = service.err()
    {
        let reasons = cancel.cancellation_reasons();
        let throttled = reasons.iter().any(|r| {
            matches!(
                r.code(),
                Some("ThrottlingError" | "ProvisionedThroughputExceeded" | "TransactionConflict")
            )
        });
        if !throttled {
            return StoreError::Conflict;
        }
    }
    store_error(err)
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

    /// The phone's OTP state (empty if it has none). One round trip.
    pub async fn load_otp(&self, phone: &PhoneNumber) -> Result<OtpState, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(phone_pk(phone), SK_OTP)))
            .consistent_read(true)
            .send()
            .await
            .map_err(store_error)?;
        out.item
            .as_ref()
            .map_or(Ok(OtpState::default()), otp_from_item)
    }

    /// Replace the phone's OTP state if it is still at `expected` (`None`: no item yet).
    /// One round trip; [`StoreError::Conflict`] when another writer got there first.
    pub async fn save_otp(
        &self,
        phone: &PhoneNumber,
        expected: Option<u64>,
        state: &OtpState,
        window_secs: u64,
    ) -> Result<(), StoreError> {
        let mut item = key(phone_pk(phone), SK_OTP);
        item.insert("ver".into(), n(state.version.unwrap_or(0)));
        item.insert(
            "sends".into(),
            AttributeValue::L(state.sends.iter().map(|t| n(t.as_millis())).collect()),
        );
        if let Some(code) = &state.code {
            item.insert("codeId".into(), s(code.id.clone()));
            item.insert(
                "codeMac".into(),
                AttributeValue::B(Blob::new(code.mac.as_bytes())),
            );
            item.insert("codeExpiresAt".into(), n(code.expires_at.as_millis()));
            item.insert("attempts".into(), n(u64::from(code.attempts)));
        }
        item.insert(TTL_ATTRIBUTE.into(), ttl(state.expires_at(window_secs)));
        let mut put = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item));
        put = match expected {
            None => put.condition_expression("attribute_not_exists(pk)"),
            Some(v) => put
                .condition_expression("ver = :ver")
                .expression_attribute_values(":ver", n(v)),
        };
        put.send().await.map_err(store_error)?;
        Ok(())
    }

    /// Count one wrong try against the code `code_id`, if it still has `attempts_before`
    /// tries recorded (an exact compare-and-set: concurrent wrong tries each count).
    pub async fn record_wrong_attempt(
        &self,
        phone: &PhoneNumber,
        code_id: &str,
        attempts_before: u32,
    ) -> Result<(), StoreError> {
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(phone_pk(phone), SK_OTP)))
            .update_expression("SET attempts = attempts + :one, ver = ver + :one")
            .condition_expression("codeId = :id AND attempts = :before")
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":id", s(code_id))
            .expression_attribute_values(":before", n(u64::from(attempts_before)))
            .send()
            .await
            .map_err(store_error)?;
        Ok(())
    }

    /// The phone's OTP state and its user's `sub`, if it has logged in before. One round trip.
    pub async fn load_login(
        &self,
        phone: &PhoneNumber,
    ) -> Result<(OtpState, Option<String>), StoreError> {
        let items = self
            .batch_get(vec![
                key(phone_pk(phone), SK_OTP),
                key(phone_pk(phone), SK_USER),
            ])
            .await?;
        let mut otp = OtpState::default();
        let mut sub = None;
        for item in &items {
            match get_s(item, SK)? {
                SK_OTP => otp = otp_from_item(item)?,
                SK_USER => sub = Some(get_s(item, "sub")?.to_owned()),
                _ => {}
            }
        }
        Ok((otp, sub))
    }

    /// In one transaction: consume the code (if it is still `code_id` with `attempts`
    /// tries and unexpired), create the user's `sub` if new, create the session and its
    /// first refresh token. Of concurrent verifies of one code exactly one commits.
    pub async fn complete_login(
        &self,
        phone: &PhoneNumber,
        code_id: &str,
        attempts: u32,
        now: UnixMillis,
        session: &Session,
        token: &StoredRefreshToken,
    ) -> Result<(), StoreError> {
        let consume = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key(phone_pk(phone), SK_OTP)))
            .update_expression(
                "REMOVE codeId, codeMac, codeExpiresAt, attempts SET ver = ver + :one",
            )
            .condition_expression("codeId = :id AND attempts = :attempts AND codeExpiresAt > :now")
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":id", s(code_id))
            .expression_attribute_values(":attempts", n(u64::from(attempts)))
            .expression_attribute_values(":now", n(now.as_millis()))
            .build()
            .map_err(|e| StoreError::Other(e.into()))?;
        let user = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key(phone_pk(phone), SK_USER)))
            .update_expression(
                "SET #sub = :sub, createdAt = if_not_exists(createdAt, :now), lastLoginAt = :now",
            )
            .condition_expression("attribute_not_exists(#sub) OR #sub = :sub")
            .expression_attribute_names("#sub", "sub")
            .expression_attribute_values(":sub", s(session.sub.clone()))
            .expression_attribute_values(":now", n(now.as_millis()))
            .build()
            .map_err(|e| StoreError::Other(e.into()))?;
        let [new_session, first_token] = self.new_session_items(session, token)?;
        self.transact(vec![
            TransactWriteItem::builder().update(consume).build(),
            TransactWriteItem::builder().update(user).build(),
            new_session,
            first_token,
        ])
        .await
    }

    // ---- sessions and refresh tokens -------------------------------------------------

    /// Store a new session with its first refresh token, outside a login (imports,
    /// fixtures). One transaction; [`StoreError::Conflict`] if either exists.
    pub async fn insert_session(
        &self,
        session: &Session,
        token: &StoredRefreshToken,
    ) -> Result<(), StoreError> {
        self.transact(self.new_session_items(session, token)?.into())
            .await
    }

    /// The presented token's record and its session. One round trip.
    pub async fn load_refresh(
        &self,
        sid: &SessionId,
        token_hash: &str,
    ) -> Result<(Option<StoredRefreshToken>, Option<Session>), StoreError> {
        let items = self
            .batch_get(vec![
                key(session_pk(sid), SK_SESSION),
                key(session_pk(sid), &token_sk(token_hash)),
            ])
            .await?;
        let mut token = None;
        let mut session = None;
        for item in &items {
            let sk = get_s(item, SK)?;
            if sk == SK_SESSION {
                session = Some(session_from_item(item, sid)?);
            } else if sk.strip_prefix("RT#") == Some(token_hash) {
                token = Some(token_from_item(item, sid, token_hash)?);
            }
        }
        Ok((token, session))
    }

    /// In one transaction: spend `old` (if live) or confirm it is still the spent token
    /// seen at `spent_at` (reuse inside the grace), check the session is live, and store
    /// `new`. [`StoreError::Conflict`] when a concurrent refresh or revocation won.
    pub async fn rotate_refresh(
        &self,
        old: &StoredRefreshToken,
        spent_at: Option<UnixMillis>,
        now: UnixMillis,
        new: &StoredRefreshToken,
    ) -> Result<(), StoreError> {
        let old_key = key(session_pk(&old.session_id), &token_sk(&old.hash));
        let old_op = match spent_at {
            None => TransactWriteItem::builder()
                .update(
                    Update::builder()
                        .table_name(&self.table)
                        .set_key(Some(old_key))
                        .update_expression("SET spentAt = :now")
                        .condition_expression(
                            "attribute_exists(pk) AND attribute_not_exists(spentAt)",
                        )
                        .expression_attribute_values(":now", n(now.as_millis()))
                        .build()
                        .map_err(|e| StoreError::Other(e.into()))?,
                )
                .build(),
            Some(at) => TransactWriteItem::builder()
                .condition_check(
                    ConditionCheck::builder()
                        .table_name(&self.table)
                        .set_key(Some(old_key))
                        .condition_expression("spentAt = :spent")
                        .expression_attribute_values(":spent", n(at.as_millis()))
                        .build()
                        .map_err(|e| StoreError::Other(e.into()))?,
                )
                .build(),
        };
        let session_live = ConditionCheck::builder()
            .table_name(&self.table)
            .set_key(Some(key(session_pk(&old.session_id), SK_SESSION)))
            .condition_expression("attribute_exists(pk) AND attribute_not_exists(revokedAt) AND sessionExpiresAt > :now")
            .expression_attribute_values(":now", n(now.as_millis()))
            .build()
            .map_err(|e| StoreError::Other(e.into()))?;
        self.transact(vec![
            old_op,
            TransactWriteItem::builder()
                .condition_check(session_live)
                .build(),
            TransactWriteItem::builder()
                .put(self.put_new(token_item(new))?)
                .build(),
        ])
        .await
    }

    /// Revoke a session; `Ok(false)` if it was already revoked or does not exist.
    pub async fn revoke_session(
        &self,
        sid: &SessionId,
        now: UnixMillis,
    ) -> Result<bool, StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(session_pk(sid), SK_SESSION)))
            .update_expression("SET revokedAt = :now")
            .condition_expression("attribute_exists(pk) AND attribute_not_exists(revokedAt)")
            .expression_attribute_values(":now", n(now.as_millis()))
            .send()
            .await
            .map_err(store_error);
        match result {
            Ok(_) => Ok(true),
            Err(StoreError::Conflict) => Ok(false),
            Err(e) => Err(e),
        }
    }

    // ---- helpers -----------------------------------------------------------------------

    /// A new session item and its first token item, each conditioned on not existing.
    fn new_session_items(
        &self,
        session: &Session,
        token: &StoredRefreshToken,
    ) -> Result<[TransactWriteItem; 2], StoreError> {
        Ok([
            TransactWriteItem::builder()
                .put(self.put_new(session_item(session))?)
                .build(),
            TransactWriteItem::builder()
                .put(self.put_new(token_item(token))?)
                .build(),
        ])
    }

    /// One all-or-nothing transaction; a failed condition is [`StoreError::Conflict`].
    async fn transact(&self, items: Vec<TransactWriteItem>) -> Result<(), StoreError> {
        self.client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await
            .map_err(transaction_error)?;
        Ok(())
    }

    fn put_new(&self, item: Item) -> Result<Put, StoreError> {
        Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .build()
            .map_err(|e| StoreError::Other(e.into()))
    }

    /// Strongly consistent batch read; unprocessed keys are retried (bounded).
    async fn batch_get(&self, keys: Vec<Item>) -> Result<Vec<Item>, StoreError> {
        let mut pending = Some(keys);
        let mut found = Vec::new();
        for _ in 0..5 {
            let Some(keys) = pending.take().filter(|k| !k.is_empty()) else {
                return Ok(found);
            };
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

fn otp_from_item(item: &Item) -> Result<OtpState, StoreError> {
    let sends = match item.get("sends") {
        Some(AttributeValue::L(values)) => values
            .iter()
            .map(|v| match v {
                AttributeValue::N(raw) => raw
                    .parse()
                    .map(UnixMillis)
                    .map_err(|_| StoreError::Corrupt("sends")),
                _ => Err(StoreError::Corrupt("sends")),
            })
            .collect::<Result<Vec<_>, _>>()?,
        None => Vec::new(),
        Some(_) => return Err(StoreError::Corrupt("sends")),
    };
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
    Ok(OtpState {
        sends,
        code,
        version: Some(get_n(item, "ver")?),
    })
}

fn session_item(session: &Session) -> Item {
    let mut item = key(session_pk(&session.id), SK_SESSION);
    item.insert("sub".into(), s(session.sub.clone()));
    item.insert("phone".into(), s(session.phone.clone()));
    item.insert("createdAt".into(), n(session.created_at.as_millis()));
    item.insert("sessionExpiresAt".into(), n(session.expires_at.as_millis()));
    item.insert(TTL_ATTRIBUTE.into(), ttl(session.expires_at));
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
    })
}

fn token_item(token: &StoredRefreshToken) -> Item {
    let mut item = key(session_pk(&token.session_id), &token_sk(&token.hash));
    item.insert("issuedAt".into(), n(token.issued_at.as_millis()));
    item.insert("tokenExpiresAt".into(), n(token.expires_at.as_millis()));
    item.insert(TTL_ATTRIBUTE.into(), ttl(token.expires_at));
    item
}

fn token_from_item(
    item: &Item,
    sid: &SessionId,
    hash: &str,
) -> Result<StoredRefreshToken, StoreError> {
    Ok(StoredRefreshToken {
        hash: hash.to_owned(),
        session_id: sid.clone(),
        issued_at: UnixMillis(get_n(item, "issuedAt")?),
        expires_at: UnixMillis(get_n(item, "tokenExpiresAt")?),
        spent_at: get_opt_n(item, "spentAt")?.map(UnixMillis),
    })
}

//! State that sample events and benchmarks assume, written through the real store.

use ring::rand::SystemRandom;
use secrecy::SecretSlice;

use crate::adapters::DynamoDbStore;
use crate::adapters::dynamodb::Expect;
use crate::domain::error::BoxError;
use crate::domain::global_budget::{WINDOW_SECS, shard_key, shard_quotas};
use crate::domain::otp::ActiveCode;
use crate::domain::session::SessionId;
use crate::domain::slots::Slots;
use crate::domain::{
    CodeMac, OtpCode, OtpState, PhoneNumber, RefreshToken, Session, UnixMillis, random_id,
};

/// An active code `code` for a phone with no OTP state yet, as if sent at `now`.
pub async fn seed_code(
    store: &DynamoDbStore,
    pepper: &SecretSlice<u8>,
    phone: &PhoneNumber,
    code: &OtpCode,
    now: UnixMillis,
) -> Result<(), BoxError> {
    let state = OtpState {
        sends: vec![now],
        code: Some(ActiveCode {
            id: random_id(&SystemRandom::new()).map_err(|_| "random source failed")?,
            mac: CodeMac::compute(pepper, phone, code),
            expires_at: now.plus_secs(300),
            attempts: 0,
        }),
        version: Some(1),
        ..OtpState::default()
    };
    store
        .save_otp(phone, Expect::Fresh, &state, 300, now)
        .await?;
    Ok(())
}

/// A live session (one day) whose refresh token is `token` (one hour).
pub async fn seed_session(
    store: &DynamoDbStore,
    token: &RefreshToken,
    now: UnixMillis,
) -> Result<(), BoxError> {
    let session = Session::start(
        token.session_id().clone(),
        token.session_id().account(),
        "+77001234561".into(),
        token,
        now,
        86_400,
        3600,
    );
    store.insert_session(&session).await?;
    Ok(())
}

/// A global SMS budget of `limit` an hour spent as if every send had gone out at `at`,
/// but for `free` slots (spread over the shards, one shard after another): its shard
/// items written directly, as the budget lays them out (`domain::global_budget`), so a
/// test can reach the template's default size without sending that many SMS.
pub async fn fill_global_budget(
    store: &DynamoDbStore,
    limit: u32,
    at: UnixMillis,
    free: u32,
) -> Result<(), BoxError> {
    let quotas = shard_quotas(limit);
    let shards = u32::try_from(quotas.len()).unwrap_or(u32::MAX).max(1);
    for (shard, quota) in (0u32..).zip(quotas) {
        let left = free / shards + u32::from(shard < free % shards);
        let slots = Slots((0..quota).map(|i| (i >= left).then_some(at)).collect());
        store
            .write_slots(&shard_key(shard), &slots, WINDOW_SECS)
            .await?;
    }
    Ok(())
}

/// The environment a function binary runs with against the local stack: the contract's
/// variables for `table` and the two secrets, and JSON logs as in Lambda.
pub fn function_env(table: &str, auth_secret: &str, jwks_secret: &str) -> Vec<(String, String)> {
    [
        ("TABLE_NAME", table),
        ("AUTH_SECRET_ID", auth_secret),
        ("JWKS_SECRET_ID", jwks_secret),
        ("JWT_ISSUER", "https://api.foodsave.kz/api/v1/auth"),
        ("AWS_LAMBDA_LOG_FORMAT", "JSON"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// The key that signs the access tokens of the sample events (`events/sessions*.json`,
/// `events/account-delete*.json`), so that they verify whenever they are replayed
/// against a local stack: its public JWK is added to the stack's JWK Set by
/// [`publish_sample_key`]. A local fixture only: nothing deployed holds or trusts it.
pub const SAMPLE_KEY_PEM: &str = include_str!("sample-events-key.pem");
/// The sample key's `kid`.
pub const SAMPLE_KID: &str = "sample-events";

/// Add the sample key's public JWK to the JWK Set secret `jwks_secret_id` (once).
pub async fn publish_sample_key(
    client: &aws_sdk_secretsmanager::Client,
    jwks_secret_id: &str,
) -> Result<(), BoxError> {
    let raw = crate::adapters::secrets::fetch_secret_string(client, jwks_secret_id).await?;
    let mut set: serde_json::Value = serde_json::from_str(&raw)?;
    let keys = set
        .get_mut("keys")
        .and_then(serde_json::Value::as_array_mut)
        .ok_or("the JWK Set has no keys array")?;
    if keys
        .iter()
        .any(|k| k.get("kid").and_then(serde_json::Value::as_str) == Some(SAMPLE_KID))
    {
        return Ok(());
    }
    keys.push(crate::keys::public_jwk_from_pem(
        SAMPLE_KID,
        SAMPLE_KEY_PEM,
    )?);
    client
        .put_secret_value()
        .secret_id(jwks_secret_id)
        .secret_string(set.to_string())
        .send()
        .await
        .map_err(|e| aws_sdk_secretsmanager::error::DisplayErrorContext(e).to_string())?;
    Ok(())
}

/// A live session `sid` (one day) of its account, creating the account for `phone` if
/// it has none yet: the state a sample access token names.
pub async fn seed_account_session(
    store: &DynamoDbStore,
    sid: &SessionId,
    phone: &PhoneNumber,
    now: UnixMillis,
) -> Result<(), BoxError> {
    let sub = sid.account();
    match store.insert_account(&sub, phone, now).await {
        Ok(()) | Err(crate::ports::StoreError::Conflict) => {}
        Err(e) => return Err(e.into()),
    }
    let token =
        RefreshToken::generate(&SystemRandom::new(), sid).map_err(|_| "random source failed")?;
    let session = Session::start(
        sid.clone(),
        sub,
        phone.e164().to_owned(),
        &token,
        now,
        86_400,
        86_400,
    );
    store.insert_session(&session).await?;
    Ok(())
}

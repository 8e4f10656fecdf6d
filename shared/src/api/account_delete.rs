//! POST /account/delete (CONTRACT §7): the in-app account deletion both app stores
//! require. Takes the Bearer access token ([`super::bearer`]) of a recent OTP verify
//! (`auth_time` at most `REAUTH_MAX_AGE_SECONDS` old, else 401 `REAUTH_REQUIRED`, RFC
//! 9470), then in one transaction ends every session, erases the phone's account (its
//! next verify creates a new `sub`) and removes the phone's active code with its
//! `Idempotency-Key`. The send window, the guess count and every budget stay: deleting
//! resets nothing.
//!
//! Requests: the check's Query, then the transaction (one more when the phone has no
//! OTP item to clear). The transaction conditions on the account item's version, which
//! every login bumps, so a login racing the deletion either lands first (and its
//! session is deleted with the rest) or fails and finds no code and no account.

use std::sync::Arc;

use aws_config::SdkConfig;
use lambda_http::{Body, Request, Response};
use serde_json::{Value, json};

use super::bearer::Bearer;
use super::{Endpoint, InitError, Round, respond, settle, within};
use crate::adapters::DynamoDbStore;
use crate::adapters::dynamodb::{Account, Deletion, MAX_TRANSACTION_ITEMS};
use crate::audit::{Audit, AuditEvent};
use crate::budget::Budget;
use crate::config::{AccountConfig, Env, StoreConfig, TokenConfig};
use crate::domain::session::SessionId;
use crate::domain::{AuthError, PhoneNumber};
use crate::http::require_post;
use crate::ports::{Clock, StoreError};

pub struct AccountDelete {
    store: DynamoDbStore,
    bearer: Bearer,
    accounts: AccountConfig,
    clock: Arc<dyn Clock>,
}

/// What the rounds of one deletion know.
struct Attempt {
    /// The account as last read (`None`: read it again).
    account: Option<Account>,
    /// A deletion of this request was sent: it may have been applied.
    sent: bool,
    /// Clear the phone's OTP item (it has one).
    otp: bool,
}

impl AccountDelete {
    pub fn new(
        store: DynamoDbStore,
        bearer: Bearer,
        accounts: AccountConfig,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            store,
            bearer,
            accounts,
            clock,
        }
    }

    async fn delete(&self, req: &Request) -> Result<Value, AuthError> {
        require_post(req)?;
        let budget = Budget::from_request(req);
        let now = self.clock.now();
        let caller = self.bearer.check(req, &budget, &self.store, now).await?;
        let max_age = u64::from(self.accounts.reauth_max_age_seconds.get());
        if now.as_secs().saturating_sub(caller.access.auth_time) > max_age {
            return Err(AuthError::ReauthRequired { max_age });
        }
        let sub = caller.access.sub.clone();
        let caller_sid = caller.sid.clone();
        // The first round decides from the check's read; later ones read again.
        let mut first = Some(Attempt {
            account: Some(caller.account),
            sent: false,
            otp: true,
        });
        let ended = settle(&budget, |known: Option<Attempt>| {
            let attempt = known.or_else(|| first.take()).unwrap_or(Attempt {
                account: None,
                sent: true,
                otp: true,
            });
            self.delete_round(&budget, &sub, attempt)
        })
        .await?;
        let ip = crate::http::source_ip(req);
        Audit::new(AuditEvent::AccountDeleted, Self::NAME)
            .request_id(crate::http::request_id(req).as_deref())
            .source_ip(ip.as_ref().map(crate::domain::SourceIp::as_str))
            .user(&sub)
            .session(caller_sid.as_str())
            .count("sessions", ended as u64)
            .emit(self.clock.now());
        Ok(json!({}))
    }

    /// One round: from the account as read, the transaction. Answers how many live
    /// sessions it ended.
    async fn delete_round(
        &self,
        budget: &Budget,
        sub: &str,
        attempt: Attempt,
    ) -> Result<Round<Attempt, usize>, AuthError> {
        let now = self.clock.now();
        let account = match attempt.account {
            Some(account) => account,
            None => within(budget, self.store.load_account(sub)).await?,
        };
        let (Some(version), Some(phone)) = (account.version, account.phone.as_deref()) else {
            // Gone: deleted by this request's own write (its answer lost) or by another
            // deletion at the same moment. Either way the account is erased.
            return if attempt.sent {
                Ok(Round::Done(0))
            } else {
                Err(AuthError::InvalidAccessToken("account deleted"))
            };
        };
        let phone = PhoneNumber::parse(phone).map_err(|_| StoreError::Corrupt("phone"))?;
        let live: Vec<SessionId> = account
            .live_sessions(now)
            .into_iter()
            .map(|s| s.id.clone())
            .collect();
        // Every session item goes, live ones first; what does not fit one transaction is
        // already dead (revoked or expired) and leaves with its TTL.
        let room = MAX_TRANSACTION_ITEMS - 3;
        let mut delete = live.clone();
        delete.extend(
            account
                .sessions
                .iter()
                .filter(|s| !live.contains(&s.id))
                .map(|s| s.id.clone()),
        );
        delete.truncate(room);
        match within(
            budget,
            self.store
                .delete_account(&account, &phone, version, &delete, attempt.otp),
        )
        .await
        {
            Ok(Deletion::Deleted) => Ok(Round::Done(live.len())),
            // No code to clear: the same deletion without it, from the same read.
            Ok(Deletion::NoOtpItem) => Ok(Round::Next(Attempt {
                account: Some(account),
                sent: attempt.sent,
                otp: false,
            })),
            // A login, a logout or a refresh changed the account meanwhile, or a
            // transaction held an item: read again and decide anew.
            Err(StoreError::Conflict) => Ok(Round::Lost(Some(Attempt {
                account: None,
                sent: true,
                otp: attempt.otp,
            }))),
            Err(e) => Err(e.into()),
        }
    }
}

impl Endpoint for AccountDelete {
    const NAME: &'static str = "account-delete";

    async fn init(
        aws: &SdkConfig,
        env: &dyn Env,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, InitError> {
        let store = StoreConfig::load(env)?;
        let tokens = TokenConfig::load(env)?;
        let accounts = AccountConfig::load(env)?;
        let bearer = Bearer::load(aws, env, &tokens, &clock).await?;
        Ok(Self::new(
            DynamoDbStore::new(aws_sdk_dynamodb::Client::new(aws), store.table_name),
            bearer,
            accounts,
            clock,
        ))
    }

    async fn handle(&self, req: Request) -> Response<Body> {
        respond(
            Self::NAME,
            crate::http::request_id(&req),
            self.delete(&req).await,
        )
    }
}

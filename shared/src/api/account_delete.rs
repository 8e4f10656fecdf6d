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
use super::{Endpoint, InitError, respond};
use crate::adapters::DynamoDbStore;
use crate::audit::{Audit, AuditEvent};
use crate::budget::Budget;
use crate::config::{AccountConfig, Env, StoreConfig, TokenConfig};
use crate::domain::AuthError;
use crate::events::Events;
use crate::http::require_post;
use crate::ports::Clock;

pub struct AccountDelete {
    store: DynamoDbStore,
    bearer: Bearer,
    accounts: AccountConfig,
    clock: Arc<dyn Clock>,
    events: Option<Events>,
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
            events: None,
        }
    }

    /// Put account and session events on this bus (CONTRACT §7 "Events").
    #[must_use]
    pub fn with_events(mut self, events: Option<Events>) -> Self {
        self.events = events;
        self
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
        // The first round decides from the check's read.
        let ended = crate::accounts::erase(
            &self.store,
            &*self.clock,
            &budget,
            &sub,
            Some(caller.account),
            self.events.as_ref(),
        )
        .await?
        .ok_or(AuthError::InvalidAccessToken("account deleted"))?
        .len();
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
        let events = Events::from_env(aws, env)?;
        Ok(Self::new(
            DynamoDbStore::new(aws_sdk_dynamodb::Client::new(aws), store.table_name),
            bearer,
            accounts,
            clock,
        )
        .with_events(events))
    }

    async fn handle(&self, req: Request) -> Response<Body> {
        respond(
            Self::NAME,
            crate::http::request_id(&req),
            self.delete(&req).await,
        )
    }
}

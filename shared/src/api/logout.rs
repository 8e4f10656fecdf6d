//! POST /logout (CONTRACT §1, §4, §7): revoke the session a refresh token belongs to,
//! with any unexpired token of its chain; with `scope` `others` or `all`, the account's
//! other sessions or all of them.

use std::sync::Arc;

use aws_config::SdkConfig;
use lambda_http::{Body, Request, Response};
use serde_json::{Value, json};

use ring::rand::SystemRandom;

use super::{Endpoint, InitError, Round, current_secret, respond, rng_failed, settle, within};
use crate::adapters::secrets::{SecretCache, require_pepper};
use crate::adapters::{AuthSecret, DynamoDbStore};
use crate::audit::{Audit, AuditEvent};
use crate::budget::Budget;
use crate::config::{Env, StoreConfig};
use crate::domain::events::{Change, Reason};
use crate::domain::session::{SessionId, may_log_out};
use crate::domain::{AuthError, ChainKey, RefreshToken, Session, random_id};
use crate::events::Events;
use crate::http::{
    LogoutScope, json_object, logout_scope_field, refresh_token_field, require_post,
};
use crate::ports::{Clock, Conditional, StoreError};

pub struct Logout {
    store: DynamoDbStore,
    secret: SecretCache<AuthSecret>,
    clock: Arc<dyn Clock>,
    events: Option<Events>,
}

impl Logout {
    pub fn new(
        store: DynamoDbStore,
        secret: SecretCache<AuthSecret>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            store,
            secret,
            clock,
            events: None,
        }
    }

    /// Put session events on this bus (CONTRACT §7 "Events").
    #[must_use]
    pub fn with_events(mut self, events: Option<Events>) -> Self {
        self.events = events;
        self
    }

    async fn logout(&self, req: &Request) -> Result<Value, AuthError> {
        require_post(req)?;
        let body = json_object(req)?;
        let raw = refresh_token_field(&body)?;
        let scope = logout_scope_field(&body)?;
        let presented = RefreshToken::parse(raw).map_err(|_| AuthError::InvalidToken)?;
        let budget = Budget::from_request(req);
        let secret = current_secret(&budget, &self.secret).await;
        let key = secret
            .chain_key()
            .ok_or_else(|| AuthError::internal("secret", "auth secret has no otpPepper"))?;
        let request_id = crate::http::request_id(req);
        let ip = crate::http::source_ip(req);
        let audit = || {
            Audit::new(AuditEvent::SessionRevoked, Self::NAME)
                .request_id(request_id.as_deref())
                .source_ip(ip.as_ref().map(crate::domain::SourceIp::as_str))
                .session(presented.session_id().as_str())
                .reason("logout")
        };
        // One revocation per request, recognisable when repeated (CONTRACT §1).
        let write_id = random_id(&SystemRandom::new()).map_err(rng_failed)?;
        if scope != LogoutScope::Session {
            let revoked = settle(&budget, |_: Option<()>| {
                self.logout_account_round(&budget, key, &presented, scope, &write_id)
            })
            .await?;
            if revoked > 0 {
                audit()
                    .user(&presented.session_id().account())
                    .count("sessions", revoked as u64)
                    .emit(self.clock.now());
            }
            return Ok(json!({}));
        }
        let answer = settle(&budget, |known| {
            self.logout_round(&budget, key, &presented, &write_id, known)
        })
        .await?;
        audit().emit(self.clock.now());
        Ok(answer)
    }

    /// Scopes `others` and `all` (CONTRACT §7): read the account's sessions (one Query),
    /// check the presented token as §4 does, and revoke the live sessions in scope in one
    /// transaction tagged `write_id`; for `others`, only while the token's session is
    /// still live. A round after a lost answer recognises its transaction by the tag.
    /// Answers how many sessions were revoked.
    async fn logout_account_round(
        &self,
        budget: &Budget,
        key: &ChainKey,
        presented: &RefreshToken,
        scope: LogoutScope,
        write_id: &str,
    ) -> Result<Round<(), usize>, AuthError> {
        let sid = presented.session_id();
        let now = self.clock.now();
        let account = within(budget, self.store.load_account(&sid.account())).await?;
        let ours = account
            .sessions
            .iter()
            .filter(|s| s.revoked_by.as_deref() == Some(write_id))
            .count();
        if ours > 0 {
            return Ok(Round::Done(ours));
        }
        if !may_log_out(presented, key, account.session(sid), now) {
            return Err(AuthError::InvalidToken);
        }
        let targets: Vec<SessionId> = account
            .live_sessions(now)
            .into_iter()
            .filter(|s| scope == LogoutScope::All || s.id != *sid)
            .map(|s| s.id.clone())
            .collect();
        if targets.is_empty() {
            return Ok(Round::Done(0));
        }
        let keep = (scope == LogoutScope::Others).then_some(sid);
        let events = Events::stage(
            self.events.as_ref(),
            now,
            [Change::SessionsRevoked {
                sub: sid.account(),
                session_ids: targets.iter().map(|s| s.as_str().to_owned()).collect(),
                reason: Reason::Logout,
            }],
        )?;
        match within(
            budget,
            self.store
                .revoke_sessions(&targets, keep, write_id, now, events.as_ref()),
        )
        .await
        {
            Ok(()) => {
                crate::events::deliver(self.events.as_ref(), &self.store, budget, events.as_ref())
                    .await;
                Ok(Round::Done(targets.len()))
            }
            // A session in scope changed meanwhile (a login, a logout, a refresh of the
            // kept one is no change): read again and decide anew.
            Err(StoreError::Conflict) => Ok(Round::Lost(None)),
            Err(e) => Err(e.into()),
        }
    }

    /// First round: revoke if the presented token is the live one (one conditional
    /// update). Otherwise the session as it stood decides: an older token of its chain
    /// revokes it with a second update.
    async fn logout_round(
        &self,
        budget: &Budget,
        key: &ChainKey,
        presented: &RefreshToken,
        write_id: &str,
        known: Option<Session>,
    ) -> Result<Round<Session, Value>, AuthError> {
        let sid = presented.session_id();
        let now = self.clock.now();
        let hash = presented.hash();
        let only_if_current = match &known {
            None => Some(hash.as_str()),
            Some(session) if may_log_out(presented, key, Some(session), now) => None,
            Some(_) => return Err(AuthError::InvalidToken),
        };
        let events = Events::stage(
            self.events.as_ref(),
            now,
            [Change::SessionsRevoked {
                sub: sid.account(),
                session_ids: vec![sid.as_str().to_owned()],
                reason: Reason::Logout,
            }],
        )?;
        match within(
            budget,
            self.store
                .revoke_session(sid, now, only_if_current, write_id, events.as_ref()),
        )
        .await?
        {
            // Applied, by this attempt or by an earlier one whose answer was lost.
            Conditional::Applied(()) => {
                crate::events::deliver(self.events.as_ref(), &self.store, budget, events.as_ref())
                    .await;
                Ok(Round::Done(json!({})))
            }
            // A transaction held the session: the same revocation again.
            Conditional::Held => Ok(Round::Lost(known)),
            // Absent, revoked (a concurrent logout or reuse detection), or expired.
            Conditional::Failed(None) => Err(AuthError::InvalidToken),
            Conditional::Failed(Some(session)) if !session.is_live(now) => {
                Err(AuthError::InvalidToken)
            }
            // Live, but the token is not its live one: is it an older one of the chain?
            Conditional::Failed(Some(session)) if known.is_none() => Ok(Round::Next(session)),
            // A live session whose condition still failed: raced with a rotation.
            Conditional::Failed(Some(session)) => Ok(Round::Lost(Some(session))),
        }
    }
}

impl Endpoint for Logout {
    const NAME: &'static str = "logout";

    async fn init(
        aws: &SdkConfig,
        env: &dyn Env,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, InitError> {
        let store = StoreConfig::load(env)?;
        let secret =
            super::load_auth_secret(aws, env, &clock, AuthSecret::parse_pepper_only).await?;
        require_pepper(&secret).await?;
        let events = Events::from_env(aws, env)?;
        Ok(Self::new(
            DynamoDbStore::new(aws_sdk_dynamodb::Client::new(aws), store.table_name),
            secret,
            clock,
        )
        .with_events(events))
    }

    async fn handle(&self, req: Request) -> Response<Body> {
        respond(
            Self::NAME,
            crate::http::request_id(&req),
            self.logout(&req).await,
        )
    }
}

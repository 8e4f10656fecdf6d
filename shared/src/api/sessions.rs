//! GET /sessions and POST /sessions/revoke (CONTRACT §7): the live sessions of the
//! caller's account, and ending one of them. Both take the Bearer access token
//! ([`super::bearer`]), checked before the body is read.
//!
//! The list is the account's item collection as the check's Query read it: one DynamoDB
//! request, strongly consistent, so a session is listed from the moment its verify
//! answered and never once revoked. A revocation is one more request: a conditional
//! update tagged with the request's write id, recognised if it is repeated.

use std::sync::Arc;

use aws_config::SdkConfig;
use lambda_http::http::Method;
use lambda_http::{Body, Request, Response};
use ring::rand::SystemRandom;
use serde_json::{Value, json};

use super::bearer::Bearer;
use super::{Endpoint, InitError, Round, respond, rng_failed, settle, within};
use crate::adapters::DynamoDbStore;
use crate::audit::{Audit, AuditEvent};
use crate::budget::Budget;
use crate::config::{Env, StoreConfig, TokenConfig};
use crate::domain::events::{Change, Reason};
use crate::domain::session::SessionId;
use crate::domain::{AuthError, random_id};
use crate::events::Events;
use crate::http::{json_object, string_field};
use crate::ports::{Clock, Conditional};

pub struct Sessions {
    store: DynamoDbStore,
    bearer: Bearer,
    clock: Arc<dyn Clock>,
    events: Option<Events>,
}

impl Sessions {
    pub fn new(store: DynamoDbStore, bearer: Bearer, clock: Arc<dyn Clock>) -> Self {
        Self {
            store,
            bearer,
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

    async fn serve(&self, req: &Request) -> Result<Value, AuthError> {
        // Whatever prefix the path carries (stage, custom-domain base path).
        let path = req.uri().path().trim_end_matches('/');
        if path.ends_with("/sessions/revoke") {
            if req.method() != Method::POST {
                return Err(AuthError::MethodNotAllowed { allow: "POST" });
            }
            self.revoke(req).await
        } else if path.ends_with("/sessions") {
            if req.method() != Method::GET {
                return Err(AuthError::MethodNotAllowed { allow: "GET" });
            }
            self.list(req).await
        } else {
            Err(AuthError::NotFound)
        }
    }

    /// The caller's live sessions, most recently used first.
    async fn list(&self, req: &Request) -> Result<Value, AuthError> {
        let budget = Budget::from_request(req);
        let now = self.clock.now();
        let caller = self.bearer.check(req, &budget, &self.store, now).await?;
        let sessions: Vec<Value> = caller
            .account
            .live_sessions(now)
            .into_iter()
            .map(|s| {
                json!({
                    "id": s.id.as_str(),
                    "createdAt": s.created_at.as_secs(),
                    "lastUsedAt": s.last_used_at().as_secs(),
                    "current": s.id == caller.sid,
                    "userAgent": s.user_agent,
                })
            })
            .collect();
        Ok(json!({ "sessions": sessions }))
    }

    /// Revoke one live session of the caller's account (the current one included).
    async fn revoke(&self, req: &Request) -> Result<Value, AuthError> {
        let budget = Budget::from_request(req);
        let now = self.clock.now();
        let caller = self.bearer.check(req, &budget, &self.store, now).await?;
        let body = json_object(req)?;
        let raw = string_field(&body, "sessionId")?;
        if raw.is_empty() {
            return Err(AuthError::bad_request("sessionId: must not be empty"));
        }
        // Any id that is not a live session of this account, another account's
        // included, is simply not found.
        let target = SessionId::parse(raw)
            .filter(|sid| caller.account.session(sid).is_some_and(|s| s.is_live(now)))
            .ok_or(AuthError::SessionNotFound)?;
        let write_id = random_id(&SystemRandom::new()).map_err(rng_failed)?;
        let request_id = crate::http::request_id(req);
        let ip = crate::http::source_ip(req);
        let audit = || {
            Audit::new(AuditEvent::SessionRevoked, Self::NAME)
                .request_id(request_id.as_deref())
                .source_ip(ip.as_ref().map(crate::domain::SourceIp::as_str))
                .user(&caller.access.sub)
                .session(target.as_str())
                .reason("user")
        };
        settle(&budget, |_: Option<()>| {
            self.revoke_round(&budget, &target, &write_id, &audit)
        })
        .await
    }

    async fn revoke_round<'a>(
        &self,
        budget: &Budget,
        target: &SessionId,
        write_id: &str,
        audit: &impl Fn() -> Audit<'a>,
    ) -> Result<Round<(), Value>, AuthError> {
        let now = self.clock.now();
        let events = Events::stage(
            self.events.as_ref(),
            now,
            [Change::SessionsRevoked {
                sub: target.account(),
                session_ids: vec![target.as_str().to_owned()],
                reason: Reason::User,
            }],
        )?;
        match within(
            budget,
            self.store
                .revoke_session(target, now, None, write_id, events.as_ref()),
        )
        .await?
        {
            // Applied, by this attempt or by an earlier one whose answer was lost.
            Conditional::Applied(()) => {
                crate::events::deliver(self.events.as_ref(), &self.store, budget, events.as_ref())
                    .await;
                audit().emit(now);
                Ok(Round::Done(json!({})))
            }
            // A transaction held the session: the same revocation again.
            Conditional::Held => Ok(Round::Lost(None)),
            // Revoked or expired meanwhile: no longer a live session.
            Conditional::Failed(_) => Err(AuthError::SessionNotFound),
        }
    }
}

impl Endpoint for Sessions {
    const NAME: &'static str = "sessions";

    async fn init(
        aws: &SdkConfig,
        env: &dyn Env,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, InitError> {
        let store = StoreConfig::load(env)?;
        let tokens = TokenConfig::load(env)?;
        let bearer = Bearer::load(aws, env, &tokens, &clock).await?;
        let events = Events::from_env(aws, env)?;
        Ok(Self::new(
            DynamoDbStore::new(aws_sdk_dynamodb::Client::new(aws), store.table_name),
            bearer,
            clock,
        )
        .with_events(events))
    }

    async fn handle(&self, req: Request) -> Response<Body> {
        respond(
            Self::NAME,
            crate::http::request_id(&req),
            self.serve(&req).await,
        )
    }
}

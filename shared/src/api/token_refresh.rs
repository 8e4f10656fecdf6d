//! POST /token/refresh (CONTRACT §1, §4): rotate a refresh token, with reuse detection
//! (RFC 9700 §4.14.2).

use std::sync::Arc;

use aws_config::SdkConfig;
use lambda_http::{Body, Request, Response};
use ring::rand::SystemRandom;
use serde_json::Value;

use super::{
    Endpoint, InitError, Round, respond, rng_failed, settle, signing_secret, token_pair, within,
};
use crate::adapters::secrets::SecretCache;
use crate::adapters::{AuthSecret, DynamoDbStore, JwtIssuer};
use crate::audit::{Audit, AuditEvent};
use crate::budget::Budget;
use crate::config::{Env, StoreConfig, TokenConfig};
use crate::domain::events::{Change, Reason};
use crate::domain::session::{Chain, decide_refresh};
use crate::domain::{AuthError, ChainKey, RefreshDecision, RefreshToken, random_id};
use crate::events::Events;
use crate::http::{json_object, refresh_token_field, require_post};
use crate::ports::{Clock, Conditional};

pub struct TokenRefresh {
    store: DynamoDbStore,
    secret: SecretCache<AuthSecret>,
    tokens: TokenConfig,
    issuer: JwtIssuer,
    clock: Arc<dyn Clock>,
    rng: SystemRandom,
    events: Option<Events>,
}

impl TokenRefresh {
    pub fn new(
        store: DynamoDbStore,
        secret: SecretCache<AuthSecret>,
        tokens: TokenConfig,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            store,
            secret,
            issuer: JwtIssuer::new(tokens.clone()),
            tokens,
            clock,
            rng: SystemRandom::new(),
            events: None,
        }
    }

    /// Put session events on this bus (CONTRACT §7 "Events").
    #[must_use]
    pub fn with_events(mut self, events: Option<Events>) -> Self {
        self.events = events;
        self
    }

    async fn refresh(&self, req: &Request) -> Result<Value, AuthError> {
        require_post(req)?;
        let body = json_object(req)?;
        let presented = RefreshToken::parse(refresh_token_field(&body)?)
            .map_err(|_| AuthError::InvalidRefreshToken)?;
        let budget = Budget::from_request(req);
        let secret = signing_secret(&budget, &self.secret, self.clock.now()).await;
        let key = secret
            .chain_key()
            .ok_or_else(|| AuthError::internal("secret", "auth secret has no otpPepper"))?;
        // Refuse before spending the token if no key could sign the answer.
        if secret.active_key(self.clock.now()).is_none() {
            return Err(AuthError::internal("signing", "no signing key is active"));
        }
        let request_id = crate::http::request_id(req);
        let ip = crate::http::source_ip(req);
        let audit = |event| {
            Audit::new(event, Self::NAME)
                .request_id(request_id.as_deref())
                .source_ip(ip.as_ref().map(crate::domain::SourceIp::as_str))
                .session(presented.session_id().as_str())
        };
        // One rotation id per request, so that every round and every SDK retry of it
        // recognises the rotation once it is applied (CONTRACT §1).
        let rotation_id = random_id(&self.rng).map_err(rng_failed)?;
        settle(&budget, |_: Option<()>| {
            self.refresh_round(&budget, &secret, key, &presented, &rotation_id, &audit)
        })
        .await
    }

    /// One round: a single conditional update rotates the live token; if it was not the
    /// live token, the session as it stood decides (CONTRACT §4).
    async fn refresh_round<'a>(
        &self,
        budget: &Budget,
        secret: &AuthSecret,
        key: &ChainKey,
        presented: &RefreshToken,
        rotation_id: &str,
        audit: &impl Fn(AuditEvent) -> Audit<'a>,
    ) -> Result<Round<(), Value>, AuthError> {
        let sid = presented.session_id();
        let now = self.clock.now();
        let next = presented.successor(key);
        let ttl = u64::from(self.tokens.refresh_ttl_seconds.get());
        let grace_millis = u64::from(self.tokens.refresh_reuse_grace_seconds).saturating_mul(1000);
        // Only `current_hash`, `token_expires_at` and `rotation_id` of the new chain are
        // written; the generation is incremented in DynamoDB.
        let chain = Chain {
            current_hash: next.hash(),
            generation: 0,
            rotated_at: now,
            token_expires_at: now.plus_secs(ttl),
            rotation_id: Some(rotation_id.to_owned()),
        };
        let outcome = within(
            budget,
            self.store
                .rotate_refresh(sid, &presented.hash(), &chain, now),
        )
        .await?;
        let session = match outcome {
            Conditional::Applied(session) => {
                audit(AuditEvent::RefreshRotated)
                    .user(&session.sub)
                    .count("generation", session.chain.generation)
                    .emit(now);
                session
            }
            Conditional::Failed(None) => return Err(AuthError::InvalidRefreshToken),
            // A transaction held the session: the same rotation again.
            Conditional::Held => return Ok(Round::Lost(None)),
            // This very rotation, applied by an attempt whose answer was lost.
            Conditional::Failed(Some(session))
                if session.chain.rotation_id.as_deref() == Some(rotation_id) =>
            {
                session
            }
            Conditional::Failed(Some(session)) => {
                match decide_refresh(presented, key, Some(&session), now, grace_millis) {
                    RefreshDecision::Reject => return Err(AuthError::InvalidRefreshToken),
                    RefreshDecision::RepeatSuccessor => {
                        audit(AuditEvent::RefreshRetried)
                            .user(&session.sub)
                            .emit(now);
                        session
                    }
                    RefreshDecision::RevokeSession => {
                        audit(AuditEvent::RefreshReuseDetected)
                            .user(&session.sub)
                            .emit(now);
                        let events = Events::stage(
                            self.events.as_ref(),
                            now,
                            [Change::SessionsRevoked {
                                sub: session.sub.clone(),
                                session_ids: vec![sid.as_str().to_owned()],
                                reason: Reason::Reuse,
                            }],
                        )?;
                        let revoked = match within(
                            budget,
                            self.store
                                .revoke_session(sid, now, None, rotation_id, events.as_ref()),
                        )
                        .await?
                        {
                            Conditional::Applied(()) => {
                                crate::events::deliver(
                                    self.events.as_ref(),
                                    &self.store,
                                    budget,
                                    events.as_ref(),
                                )
                                .await;
                                true
                            }
                            Conditional::Failed(_) => false,
                            // A transaction held the session: decide again, and revoke.
                            Conditional::Held => return Ok(Round::Lost(None)),
                        };
                        if revoked {
                            audit(AuditEvent::SessionRevoked)
                                .user(&session.sub)
                                .reason("reuse")
                                .emit(now);
                        }
                        return Err(AuthError::InvalidRefreshToken);
                    }
                    // The live token after all, yet the write failed: raced with a
                    // change that is gone again. Decide anew.
                    RefreshDecision::Rotate => return Ok(Round::Lost(None)),
                }
            }
        };
        let access = self.issuer.issue(secret, &self.rng, now, &session)?;
        Ok(Round::Done(token_pair(
            access,
            next.expose(),
            self.issuer.access_ttl_seconds(),
        )))
    }
}

impl Endpoint for TokenRefresh {
    const NAME: &'static str = "token-refresh";

    async fn init(
        aws: &SdkConfig,
        env: &dyn Env,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, InitError> {
        let store = StoreConfig::load(env)?;
        let tokens = TokenConfig::load(env)?;
        let secret = super::load_auth_secret(aws, env, &clock, AuthSecret::parse).await?;
        let events = Events::from_env(aws, env)?;
        Ok(Self::new(
            DynamoDbStore::new(aws_sdk_dynamodb::Client::new(aws), store.table_name),
            secret,
            tokens,
            clock,
        )
        .with_events(events))
    }

    async fn handle(&self, req: Request) -> Response<Body> {
        respond(
            Self::NAME,
            crate::http::request_id(&req),
            self.refresh(&req).await,
        )
    }
}

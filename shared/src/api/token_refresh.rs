//! POST /token/refresh (CONTRACT §1, §4): rotate a refresh token, with reuse detection
//! (RFC 9700 §4.14.2).

use std::sync::Arc;

use aws_config::SdkConfig;
use lambda_http::{Body, Request, Response};
use ring::rand::SystemRandom;
use serde_json::Value;

use super::{
    Endpoint, InitError, MAX_WRITE_RACES, respond, rng_failed, token_pair, too_much_contention,
};
use crate::adapters::secrets::SecretCache;
use crate::adapters::{AuthSecret, DynamoDbStore, JwtIssuer};
use crate::config::{Env, StoreConfig, TokenConfig};
use crate::domain::session::decide_refresh;
use crate::domain::{AuthError, RefreshDecision, RefreshToken, StoredRefreshToken};
use crate::http::{json_object, refresh_token_field, require_post};
use crate::ports::{Clock, StoreError};

pub struct TokenRefresh {
    store: DynamoDbStore,
    secret: SecretCache<AuthSecret>,
    tokens: TokenConfig,
    issuer: JwtIssuer,
    clock: Arc<dyn Clock>,
    rng: SystemRandom,
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
        }
    }

    async fn refresh(&self, req: &Request) -> Result<Value, AuthError> {
        require_post(req)?;
        let body = json_object(req)?;
        let presented = RefreshToken::parse(refresh_token_field(&body)?)
            .map_err(|_| AuthError::InvalidRefreshToken)?;
        let sid = presented.session_id();
        let hash = presented.hash();
        let grace_millis = u64::from(self.tokens.refresh_reuse_grace_seconds).saturating_mul(1000);

        for _ in 0..MAX_WRITE_RACES {
            let now = self.clock.now();
            let (stored, session) = self.store.load_refresh(sid, &hash).await?;
            let spent_at =
                match decide_refresh(stored.as_ref(), session.as_ref(), now, grace_millis) {
                    RefreshDecision::Reject => return Err(AuthError::InvalidRefreshToken),
                    RefreshDecision::RevokeSession => {
                        let revoked = self.store.revoke_session(sid, now).await?;
                        tracing::warn!(
                            sid = sid.as_str(),
                            revoked,
                            "spent refresh token reused; session revoked"
                        );
                        return Err(AuthError::InvalidRefreshToken);
                    }
                    RefreshDecision::Rotate => None,
                    RefreshDecision::RotateWithinGrace { spent_at } => Some(spent_at),
                };
            let (Some(stored), Some(session)) = (stored, session) else {
                return Err(AuthError::InvalidRefreshToken);
            };
            let next = RefreshToken::generate(&self.rng, sid).map_err(rng_failed)?;
            let next_stored = StoredRefreshToken::issue(
                next.hash(),
                &session,
                now,
                u64::from(self.tokens.refresh_ttl_seconds.get()),
            );
            let secret = self.secret.get().await;
            let access = self.issuer.issue(&secret, &self.rng, now, &session)?;
            match self
                .store
                .rotate_refresh(&stored, spent_at, now, &next_stored)
                .await
            {
                Ok(()) => {
                    tracing::info!(
                        sid = sid.as_str(),
                        within_grace = spent_at.is_some(),
                        "refreshed"
                    );
                    return Ok(token_pair(
                        access,
                        next.expose(),
                        self.issuer.access_ttl_seconds(),
                    ));
                }
                Err(StoreError::Conflict) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(too_much_contention())
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
        Ok(Self::new(
            DynamoDbStore::new(aws_sdk_dynamodb::Client::new(aws), store.table_name),
            secret,
            tokens,
            clock,
        ))
    }

    async fn handle(&self, req: Request) -> Response<Body> {
        respond(
            Self::NAME,
            crate::http::request_id(&req),
            self.refresh(&req).await,
        )
    }
}

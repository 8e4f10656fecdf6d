//! POST /logout (CONTRACT §1, §4): revoke the session a refresh token belongs to.

use std::sync::Arc;

use aws_config::SdkConfig;
use lambda_http::{Body, Request, Response};
use serde_json::{Value, json};

use super::{Endpoint, InitError, respond};
use crate::adapters::DynamoDbStore;
use crate::config::{Env, StoreConfig};
use crate::domain::session::may_log_out;
use crate::domain::{AuthError, RefreshToken};
use crate::http::{json_object, refresh_token_field, require_post};
use crate::ports::Clock;

pub struct Logout {
    store: DynamoDbStore,
    clock: Arc<dyn Clock>,
}

impl Logout {
    pub fn new(store: DynamoDbStore, clock: Arc<dyn Clock>) -> Self {
        Self { store, clock }
    }

    async fn logout(&self, req: &Request) -> Result<Value, AuthError> {
        require_post(req)?;
        let body = json_object(req)?;
        let presented = RefreshToken::parse(refresh_token_field(&body)?)
            .map_err(|_| AuthError::InvalidToken)?;
        let sid = presented.session_id();
        let now = self.clock.now();
        let (stored, session) = self.store.load_refresh(sid, &presented.hash()).await?;
        if !may_log_out(stored.as_ref(), session.as_ref(), now) {
            return Err(AuthError::InvalidToken);
        }
        if !self.store.revoke_session(sid, now).await? {
            // A concurrent logout or reuse detection revoked it first.
            return Err(AuthError::InvalidToken);
        }
        tracing::info!(sid = sid.as_str(), "logged out");
        Ok(json!({}))
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
        Ok(Self::new(
            DynamoDbStore::new(aws_sdk_dynamodb::Client::new(aws), store.table_name),
            clock,
        ))
    }

    async fn handle(&self, req: Request) -> Response<Body> {
        respond(
            Self::NAME,
            crate::http::request_id(&req),
            self.logout(&req).await,
        )
    }
}

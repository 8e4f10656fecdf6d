//! POST /otp/verify (CONTRACT §1, §2, §4): trade a code for a token pair.

use std::num::NonZeroU32;
use std::sync::Arc;

use aws_config::SdkConfig;
use lambda_http::{Body, Request, Response};
use ring::rand::SystemRandom;
use serde_json::Value;

use super::{
    Endpoint, InitError, MAX_WRITE_RACES, respond, rng_failed, token_pair, too_much_contention,
};
use crate::adapters::secrets::{SecretCache, require_pepper};
use crate::adapters::{AuthSecret, DynamoDbStore, JwtIssuer};
use crate::config::{Env, OtpConfig, StoreConfig, TokenConfig};
use crate::domain::session::SessionId;
use crate::domain::{
    AuthError, OtpCode, PhoneNumber, RefreshToken, Session, StoredRefreshToken, VerifyOutcome,
    random_id,
};
use crate::http::{json_object, require_post, string_field};
use crate::ports::{Clock, StoreError};

pub struct OtpVerify {
    store: DynamoDbStore,
    secret: SecretCache<AuthSecret>,
    max_attempts: NonZeroU32,
    tokens: TokenConfig,
    issuer: JwtIssuer,
    clock: Arc<dyn Clock>,
    rng: SystemRandom,
}

impl OtpVerify {
    pub fn new(
        store: DynamoDbStore,
        secret: SecretCache<AuthSecret>,
        max_attempts: NonZeroU32,
        tokens: TokenConfig,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            store,
            secret,
            max_attempts,
            issuer: JwtIssuer::new(tokens.clone()),
            tokens,
            clock,
            rng: SystemRandom::new(),
        }
    }

    async fn verify(&self, req: &Request) -> Result<Value, AuthError> {
        require_post(req)?;
        let body = json_object(req)?;
        let phone = PhoneNumber::parse(string_field(&body, "phone")?)
            .map_err(|_| AuthError::bad_request("phone: must be +7 followed by 10 digits"))?;
        let code = OtpCode::parse(string_field(&body, "code")?)
            .map_err(|_| AuthError::bad_request("code: must be exactly 6 digits"))?;
        let secret = self.secret.get().await;
        let pepper = secret
            .pepper()
            .ok_or_else(|| AuthError::internal("secret", "auth secret has no otpPepper"))?;
        let max_attempts = self.max_attempts.get();

        for _ in 0..MAX_WRITE_RACES {
            let now = self.clock.now();
            let (state, existing_sub) = self.store.load_login(&phone).await?;
            match state.check(now, max_attempts, pepper, &phone, &code) {
                VerifyOutcome::NoActiveCode => return Err(AuthError::ExpiredCode),
                VerifyOutcome::Wrong {
                    code_id,
                    attempts,
                    attempts_left,
                } => match self
                    .store
                    .record_wrong_attempt(&phone, &code_id, attempts)
                    .await
                {
                    Ok(()) => {
                        tracing::info!(phone = %phone, attempts_left, "wrong code");
                        return Err(AuthError::InvalidCode { attempts_left });
                    }
                    Err(StoreError::Conflict) => continue,
                    Err(e) => return Err(e.into()),
                },
                VerifyOutcome::Accepted { code_id, attempts } => {
                    let sub = match &existing_sub {
                        Some(sub) => sub.clone(),
                        None => random_id(&self.rng).map_err(rng_failed)?,
                    };
                    let session = Session {
                        id: SessionId::generate(&self.rng).map_err(rng_failed)?,
                        sub,
                        phone: phone.e164().to_owned(),
                        created_at: now,
                        expires_at: now.plus_secs(u64::from(self.tokens.session_max_seconds.get())),
                        revoked: false,
                    };
                    let refresh =
                        RefreshToken::generate(&self.rng, &session.id).map_err(rng_failed)?;
                    let stored = StoredRefreshToken::issue(
                        refresh.hash(),
                        &session,
                        now,
                        u64::from(self.tokens.refresh_ttl_seconds.get()),
                    );
                    // Sign before consuming the code: a signing failure must not burn it.
                    let access = self.issuer.issue(&secret, &self.rng, now, &session)?;
                    match self
                        .store
                        .complete_login(&phone, &code_id, attempts, now, &session, &stored)
                        .await
                    {
                        Ok(()) => {
                            tracing::info!(phone = %phone, first_login = existing_sub.is_none(), "signed in");
                            return Ok(token_pair(
                                access,
                                refresh.expose(),
                                self.issuer.access_ttl_seconds(),
                            ));
                        }
                        Err(StoreError::Conflict) => continue,
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }
        Err(too_much_contention())
    }
}

impl Endpoint for OtpVerify {
    const NAME: &'static str = "otp-verify";

    async fn init(
        aws: &SdkConfig,
        env: &dyn Env,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, InitError> {
        let store = StoreConfig::load(env)?;
        let max_attempts = OtpConfig::max_attempts(env)?;
        let tokens = TokenConfig::load(env)?;
        let secret = super::load_auth_secret(aws, env, &clock, AuthSecret::parse).await?;
        require_pepper(&secret).await?;
        Ok(Self::new(
            DynamoDbStore::new(aws_sdk_dynamodb::Client::new(aws), store.table_name),
            secret,
            max_attempts,
            tokens,
            clock,
        ))
    }

    async fn handle(&self, req: Request) -> Response<Body> {
        respond(
            Self::NAME,
            crate::http::request_id(&req),
            self.verify(&req).await,
        )
    }
}

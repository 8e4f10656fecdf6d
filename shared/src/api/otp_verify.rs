//! POST /otp/verify (CONTRACT §1, §2, §4): trade a code for a token pair.

use std::num::NonZeroU32;
use std::sync::Arc;

use aws_config::SdkConfig;
use lambda_http::{Body, Request, Response};
use ring::rand::SystemRandom;
use serde_json::Value;

use super::{
    Endpoint, InitError, Round, respond, rng_failed, settle, signing_secret, token_pair, within,
};
use crate::adapters::secrets::{SecretCache, require_pepper};
use crate::adapters::{AuthSecret, DynamoDbStore, JwtIssuer};
use crate::budget::Budget;
use crate::config::{Env, OtpConfig, StoreConfig, TokenConfig};
use crate::domain::session::SessionId;
use crate::domain::{
    AuthError, OtpCode, PhoneNumber, RefreshToken, Session, VerifyOutcome, random_id,
};
use crate::http::{json_object, require_post, string_field};
use crate::ports::{Clock, Conditional, StoreError};

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
        let budget = Budget::from_request(req);
        let secret = signing_secret(&budget, &self.secret, self.clock.now()).await;
        settle(&budget, |_: Option<()>| {
            self.verify_round(&budget, &secret, &phone, &code)
        })
        .await
    }

    /// One round: read the phone's code and user (one batched request), then count a
    /// wrong try or consume the code and open the session (one transaction).
    async fn verify_round(
        &self,
        budget: &Budget,
        secret: &AuthSecret,
        phone: &PhoneNumber,
        code: &OtpCode,
    ) -> Result<Round<(), Value>, AuthError> {
        let pepper = secret
            .pepper()
            .ok_or_else(|| AuthError::internal("secret", "auth secret has no otpPepper"))?;
        let now = self.clock.now();
        let (state, existing_sub) = within(budget, self.store.load_login(phone)).await?;
        match state.check(now, self.max_attempts.get(), pepper, phone, code) {
            VerifyOutcome::NoActiveCode => Err(AuthError::ExpiredCode),
            VerifyOutcome::Wrong {
                code_id,
                attempts,
                attempts_left,
            } => match within(
                budget,
                self.store.record_wrong_attempt(phone, &code_id, attempts),
            )
            .await?
            {
                Conditional::Applied(()) => {
                    tracing::info!(phone = %phone, attempts_left, "wrong code");
                    Err(AuthError::InvalidCode { attempts_left })
                }
                Conditional::Failed(_) => Ok(Round::Lost(None)),
            },
            VerifyOutcome::Accepted { code_id, attempts } => {
                let sub = match &existing_sub {
                    Some(sub) => sub.clone(),
                    None => random_id(&self.rng).map_err(rng_failed)?,
                };
                let id = SessionId::generate(&self.rng).map_err(rng_failed)?;
                let refresh = RefreshToken::generate(&self.rng, &id).map_err(rng_failed)?;
                let session = Session::start(
                    id,
                    sub,
                    phone.e164().to_owned(),
                    &refresh,
                    now,
                    u64::from(self.tokens.session_max_seconds.get()),
                    u64::from(self.tokens.refresh_ttl_seconds.get()),
                );
                // Sign before consuming the code: a signing failure must not burn it.
                let access = self.issuer.issue(secret, &self.rng, now, &session)?;
                match within(
                    budget,
                    self.store
                        .complete_login(phone, &code_id, attempts, now, &session),
                )
                .await
                {
                    Ok(()) => {
                        tracing::info!(phone = %phone, first_login = existing_sub.is_none(), "signed in");
                        Ok(Round::Done(token_pair(
                            access,
                            refresh.expose(),
                            self.issuer.access_ttl_seconds(),
                        )))
                    }
                    // Another verify, a wrong try or a new send got there first, or a
                    // transaction held one of the items (`TransactionConflict`).
                    Err(StoreError::Conflict) => Ok(Round::Lost(None)),
                    Err(e) => Err(e.into()),
                }
            }
        }
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

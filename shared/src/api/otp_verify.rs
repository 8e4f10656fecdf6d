//! POST /otp/verify (CONTRACT §1, §2, §4): trade a code for a token pair.

use std::sync::Arc;

use aws_config::SdkConfig;
use lambda_http::{Body, Request, Response};
use ring::rand::SystemRandom;
use serde_json::Value;

use super::{
    Endpoint, InitError, Round, respond, rng_failed, settle, signing_secret, token_pair, within,
};
use crate::adapters::dynamodb::Expect;
use crate::adapters::secrets::{SecretCache, require_pepper};
use crate::adapters::{AuthSecret, DynamoDbStore, JwtIssuer};
use crate::audit::{Audit, AuditEvent};
use crate::budget::Budget;
use crate::config::{Env, OtpConfig, StoreConfig, TokenConfig};
use crate::domain::otp::VerifyPolicy;
use crate::domain::session::SessionId;
use crate::domain::{
    AuthError, OtpCode, PhoneNumber, RefreshToken, Session, SourceIp, VerifyOutcome, random_id,
};
use crate::http::{code_field, json_object, phone_field, require_post, source_ip};
use crate::ports::{Clock, Conditional, StoreError};

pub struct OtpVerify {
    store: DynamoDbStore,
    secret: SecretCache<AuthSecret>,
    policy: VerifyPolicy,
    tokens: TokenConfig,
    issuer: JwtIssuer,
    clock: Arc<dyn Clock>,
    rng: SystemRandom,
}

impl OtpVerify {
    pub fn new(
        store: DynamoDbStore,
        secret: SecretCache<AuthSecret>,
        policy: VerifyPolicy,
        tokens: TokenConfig,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            store,
            secret,
            policy,
            issuer: JwtIssuer::new(tokens.clone()),
            tokens,
            clock,
            rng: SystemRandom::new(),
        }
    }

    async fn verify(&self, req: &Request) -> Result<Value, AuthError> {
        require_post(req)?;
        let body = json_object(req)?;
        let phone = phone_field(&body)?;
        let code = code_field(&body)?;
        let budget = Budget::from_request(req);
        let secret = signing_secret(&budget, &self.secret, self.clock.now()).await;
        let request_id = crate::http::request_id(req);
        let ip = source_ip(req);
        let audit = |event| {
            Audit::new(event, Self::NAME)
                .request_id(request_id.as_deref())
                .phone(&phone)
                .source_ip(ip.as_ref().map(SourceIp::as_str))
        };
        settle(&budget, |_: Option<()>| {
            self.verify_round(&budget, &secret, &phone, &code, &audit)
        })
        .await
    }

    /// One round: read the phone's code and user (one batched request), then count a
    /// wrong try or consume the code and open the session (one transaction).
    async fn verify_round<'a>(
        &self,
        budget: &Budget,
        secret: &AuthSecret,
        phone: &PhoneNumber,
        code: &OtpCode,
        audit: &impl Fn(AuditEvent) -> Audit<'a>,
    ) -> Result<Round<(), Value>, AuthError> {
        let pepper = secret
            .pepper()
            .ok_or_else(|| AuthError::internal("secret", "auth secret has no otpPepper"))?;
        let now = self.clock.now();
        let (state, existing_sub) = within(budget, self.store.load_login(phone)).await?;
        let version = state.version.unwrap_or_default();
        match state.check(
            now,
            self.policy.max_attempts,
            self.policy.guesses,
            pepper,
            phone,
            code,
        ) {
            VerifyOutcome::Locked { retry_after_secs } => {
                audit(AuditEvent::OtpVerifyFailed)
                    .reason("guess_lock")
                    .count("retryAfterSeconds", retry_after_secs)
                    .emit(now);
                Err(AuthError::RateLimited { retry_after_secs })
            }
            VerifyOutcome::NoActiveCode => {
                audit(AuditEvent::OtpVerifyFailed)
                    .reason("no_active_code")
                    .emit(now);
                Err(AuthError::ExpiredCode)
            }
            VerifyOutcome::Wrong {
                next,
                attempts_left,
                burned,
                guesses_exhausted,
            } => {
                // Conditioned on the version read: concurrent wrong tries each count.
                let window = self.policy.send_window_secs;
                match within(
                    budget,
                    self.store
                        .save_otp(phone, Expect::Version(version), &next, window, now),
                )
                .await?
                {
                    Conditional::Applied(()) => {
                        audit(AuditEvent::OtpVerifyFailed)
                            .reason("wrong_code")
                            .count("attemptsLeft", u64::from(attempts_left))
                            .emit(now);
                        if burned {
                            audit(AuditEvent::OtpBurned).emit(now);
                        }
                        if guesses_exhausted {
                            audit(AuditEvent::GuessBudgetExhausted).emit(now);
                        }
                        Err(AuthError::InvalidCode { attempts_left })
                    }
                    Conditional::Failed(_) => Ok(Round::Lost(None)),
                }
            }
            VerifyOutcome::Accepted => {
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
                    self.store.complete_login(phone, version, now, &session),
                )
                .await
                {
                    Ok(()) => {
                        audit(AuditEvent::LoginSucceeded)
                            .user(&session.sub)
                            .session(session.id.as_str())
                            .count("firstLogin", u64::from(existing_sub.is_none()))
                            .emit(now);
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
        let policy = OtpConfig::verify_policy(env)?;
        let tokens = TokenConfig::load(env)?;
        let secret = super::load_auth_secret(aws, env, &clock, AuthSecret::parse).await?;
        require_pepper(&secret).await?;
        Ok(Self::new(
            DynamoDbStore::new(aws_sdk_dynamodb::Client::new(aws), store.table_name),
            secret,
            policy,
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

//! POST /otp/send (CONTRACT §1–3).

use std::sync::Arc;

use aws_config::SdkConfig;
use lambda_http::{Body, Request, Response};
use ring::rand::SystemRandom;
use serde_json::{Value, json};

use super::{Endpoint, InitError, MAX_WRITE_RACES, respond, rng_failed, too_much_contention};
use crate::adapters::secrets::{SecretCache, require_pepper};
use crate::adapters::{AuthSecret, DynamoDbStore, SnsSmsSender};
use crate::config::{Env, OtpConfig, StoreConfig};
use crate::domain::otp::{ActiveCode, SendPolicy};
use crate::domain::{
    AuthError, CodeMac, OtpCode, OtpState, PhoneNumber, SendOutcome, UnixMillis, random_id,
};
use crate::http::{json_object, require_post, string_field};
use crate::ports::{Clock, SmsError, SmsSender, StoreError};

pub struct OtpSend {
    store: DynamoDbStore,
    sms: SnsSmsSender,
    secret: SecretCache<AuthSecret>,
    config: OtpConfig,
    clock: Arc<dyn Clock>,
    rng: SystemRandom,
}

impl OtpSend {
    pub fn new(
        store: DynamoDbStore,
        sms: SnsSmsSender,
        secret: SecretCache<AuthSecret>,
        config: OtpConfig,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            store,
            sms,
            secret,
            config,
            clock,
            rng: SystemRandom::new(),
        }
    }

    fn policy(&self) -> SendPolicy {
        SendPolicy {
            limit: self.config.send_limit.get(),
            window_secs: u64::from(self.config.send_window_seconds.get()),
        }
    }

    async fn send(&self, req: &Request) -> Result<Value, AuthError> {
        require_post(req)?;
        let body = json_object(req)?;
        let phone = PhoneNumber::parse(string_field(&body, "phone")?)
            .map_err(|_| AuthError::bad_request("phone: must be +7 followed by 10 digits"))?;
        if !phone.has_prefix_in(&self.config.allowed_phone_prefixes) {
            return Err(AuthError::bad_request(
                "phone: SMS codes are not available for this number",
            ));
        }
        let secret = self.secret.get().await;
        let pepper = secret
            .pepper()
            .ok_or_else(|| AuthError::internal("secret", "auth secret has no otpPepper"))?;
        let ttl = u64::from(self.config.ttl_seconds.get());

        for _ in 0..MAX_WRITE_RACES {
            let now = self.clock.now();
            let current = self.store.load_otp(&phone).await?;
            let code = OtpCode::generate(&self.rng).map_err(rng_failed)?;
            let active = ActiveCode {
                id: random_id(&self.rng).map_err(rng_failed)?,
                mac: CodeMac::compute(pepper, &phone, &code),
                expires_at: now.plus_secs(ttl),
                attempts: 0,
            };
            let code_id = active.id.clone();
            let next = match current.admit_send(now, self.policy(), active) {
                SendOutcome::RateLimited { retry_after_secs } => {
                    return Err(AuthError::RateLimited { retry_after_secs });
                }
                SendOutcome::Admitted(next) => next,
            };
            match self
                .store
                .save_otp(&phone, current.version, &next, self.policy().window_secs)
                .await
            {
                Ok(()) => {}
                Err(StoreError::Conflict) => continue,
                Err(e) => return Err(e.into()),
            }
            let text = self.config.sms_message.render(code.expose());
            return match self.sms.send(&phone, &text).await {
                Ok(()) => {
                    tracing::info!(phone = %phone, "code sent");
                    Ok(json!({ "message": "OTP sent", "retryAfterSeconds": ttl }))
                }
                Err(sms_error) => {
                    self.take_back(&phone, next, &current, now, &code_id).await;
                    Err(match sms_error {
                        SmsError::Unavailable(_) => AuthError::unavailable("sns", sms_error),
                        SmsError::Refused(_) => {
                            AuthError::unavailable("sns refused the SMS", sms_error)
                        }
                    })
                }
            };
        }
        Err(too_much_contention())
    }

    /// SNS did not take the SMS: give the slot back and bring the previous code back
    /// (CONTRACT §3). One conditional write when nobody wrote in between; otherwise
    /// re-read and take back only our own send.
    async fn take_back(
        &self,
        phone: &PhoneNumber,
        written: OtpState,
        before: &OtpState,
        sent_at: UnixMillis,
        code_id: &str,
    ) {
        let window = self.policy().window_secs;
        let mut current = written;
        for _ in 0..MAX_WRITE_RACES {
            let restored = current.without_send(sent_at, code_id, before.code.clone());
            match self
                .store
                .save_otp(phone, current.version, &restored, window)
                .await
            {
                Ok(()) => return,
                Err(StoreError::Conflict) => match self.store.load_otp(phone).await {
                    Ok(fresh) => current = fresh,
                    Err(err) => {
                        tracing::error!(phone = %phone, error = %crate::telemetry::chain(&err), "could not re-read to take back a failed send");
                        return;
                    }
                },
                Err(err) => {
                    tracing::error!(phone = %phone, error = %crate::telemetry::chain(&err), "could not take back a failed send");
                    return;
                }
            }
        }
        tracing::error!(phone = %phone, "gave up taking back a failed send after repeated races");
    }
}

impl Endpoint for OtpSend {
    const NAME: &'static str = "otp-send";

    async fn init(
        aws: &SdkConfig,
        env: &dyn Env,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, InitError> {
        let store = StoreConfig::load(env)?;
        let config = OtpConfig::load(env)?;
        let secret =
            super::load_auth_secret(aws, env, &clock, AuthSecret::parse_pepper_only).await?;
        require_pepper(&secret).await?;
        let sms = SnsSmsSender::new(aws_sdk_sns::Client::new(aws), config.sms_sender_id.clone());
        Ok(Self::new(
            DynamoDbStore::new(aws_sdk_dynamodb::Client::new(aws), store.table_name),
            sms,
            secret,
            config,
            clock,
        ))
    }

    async fn handle(&self, req: Request) -> Response<Body> {
        respond(
            Self::NAME,
            crate::http::request_id(&req),
            self.send(&req).await,
        )
    }
}

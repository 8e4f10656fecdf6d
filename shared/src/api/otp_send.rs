//! POST /otp/send (CONTRACT §1–3).

use std::sync::Arc;

use aws_config::SdkConfig;
use lambda_http::{Body, Request, Response};
use ring::rand::SystemRandom;
use serde_json::{Value, json};

use secrecy::SecretSlice;

use super::{Endpoint, InitError, Round, current_secret, respond, rng_failed, settle, within};
use crate::adapters::dynamodb::Expect;
use crate::adapters::secrets::{SecretCache, require_pepper};
use crate::adapters::{AuthSecret, DynamoDbStore, SnsSmsSender};
use crate::budget::Budget;
use crate::config::{Env, OtpConfig, StoreConfig};
use crate::domain::otp::{ActiveCode, SendPolicy};
use crate::domain::{
    AuthError, CodeMac, OtpCode, OtpState, PhoneNumber, SendOutcome, UnixMillis, random_id,
};
use crate::http::{json_object, require_post, string_field};
use crate::ports::{Clock, Conditional, SmsError, SmsSender};

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
        let budget = Budget::from_request(req);
        let secret = current_secret(&budget, &self.secret).await;
        let pepper = secret
            .pepper()
            .ok_or_else(|| AuthError::internal("secret", "auth secret has no otpPepper"))?;
        let admitted = settle(&budget, |known| self.admit(&budget, &phone, pepper, known)).await?;
        let text = self.config.sms_message.render(admitted.code.expose());
        match self.publish(&budget, &phone, &text).await {
            Ok(()) => {
                tracing::info!(phone = %phone, "code sent");
                Ok(json!({
                    "message": "OTP sent",
                    "retryAfterSeconds": self.config.ttl_seconds.get(),
                }))
            }
            Err(unanswered @ SmsError::Unanswered(_)) => {
                // It may be on its way: never sent again, and the slot and code stay, so
                // the SMS still works if it arrives (CONTRACT §3).
                tracing::warn!(phone = %phone, error = %crate::telemetry::chain(&unanswered), "SMS publish got no answer; the send keeps its slot and code");
                Err(AuthError::unavailable("sns", unanswered))
            }
            Err(refused @ SmsError::Refused { .. }) => {
                self.take_back(&budget, &phone, &admitted).await;
                Err(AuthError::unavailable("sns refused the SMS", refused))
            }
        }
    }

    /// One round of admitting a send: decide from `known` (or, on the first round,
    /// assume the phone has no live state) and write conditionally. A phone's first send
    /// in a while is one request; otherwise the failed condition returns the state to
    /// decide from.
    async fn admit(
        &self,
        budget: &Budget,
        phone: &PhoneNumber,
        pepper: &SecretSlice<u8>,
        known: Option<OtpState>,
    ) -> Result<Round<OtpState, Admitted>, AuthError> {
        let now = self.clock.now();
        let guessed = known.is_none();
        let (before, expect) = match known {
            Some(state) => {
                let version = state.version.unwrap_or_default();
                (state, Expect::Version(version))
            }
            None => (OtpState::default(), Expect::Fresh),
        };
        let code = OtpCode::generate(&self.rng).map_err(rng_failed)?;
        let active = ActiveCode {
            id: random_id(&self.rng).map_err(rng_failed)?,
            mac: CodeMac::compute(pepper, phone, &code),
            expires_at: now.plus_secs(u64::from(self.config.ttl_seconds.get())),
            attempts: 0,
        };
        let code_id = active.id.clone();
        let written = match before.admit_send(now, self.policy(), active) {
            SendOutcome::RateLimited { retry_after_secs } => {
                return Err(AuthError::RateLimited { retry_after_secs });
            }
            SendOutcome::Admitted(next) => next,
        };
        let window = self.policy().window_secs;
        let outcome = within(
            budget,
            self.store.save_otp(phone, expect, &written, window, now),
        )
        .await?;
        let admitted = || Admitted {
            code: code.clone(),
            code_id: code_id.clone(),
            written: written.clone(),
            before: before.clone(),
            sent_at: now,
        };
        Ok(match outcome {
            Conditional::Applied(()) => Round::Done(admitted()),
            // This very write, applied by an attempt whose answer was lost and repeated
            // by the SDK: done, not a race.
            Conditional::Failed(Some(found))
                if found.code.as_ref().is_some_and(|c| c.id == code_id) =>
            {
                Round::Done(admitted())
            }
            // The phone has state after all: decide from it at once.
            Conditional::Failed(Some(found)) if guessed => Round::Next(found),
            Conditional::Failed(found) => Round::Lost(found),
        })
    }

    /// Publish, retrying only what cannot send twice: a throttled answer, or a
    /// connection that was never made. Cut off by the budget, a publish is unanswered.
    async fn publish(
        &self,
        budget: &Budget,
        phone: &PhoneNumber,
        text: &str,
    ) -> Result<(), SmsError> {
        let mut attempt = 0;
        loop {
            let error = match budget.bound(self.sms.send(phone, text)).await {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(error)) => error,
                Err(out_of_time) => return Err(SmsError::Unanswered(out_of_time.into())),
            };
            let retry = matches!(
                error,
                SmsError::Refused {
                    retryable: true,
                    ..
                }
            ) && attempt + 1 < SNS_ATTEMPTS
                && budget.back_off(attempt + 3).await;
            if !retry {
                return Err(error);
            }
            attempt += 1;
        }
    }

    /// SNS refused the SMS: give every slot back and bring the previous code back
    /// (CONTRACT §3). One conditional write when nobody wrote in between; otherwise
    /// decide again from what the failed condition returned, taking back only our send.
    async fn take_back(&self, budget: &Budget, phone: &PhoneNumber, admitted: &Admitted) {
        let window = self.policy().window_secs;
        let mut first = Some(admitted.written.clone());
        let result = settle(budget, |known: Option<OtpState>| {
            let current = first.take().or(known);
            async move {
                // No item any more: nothing to take back.
                let Some(current) = current else {
                    return Ok(Round::Done(()));
                };
                let restored = current.without_send(
                    admitted.sent_at,
                    &admitted.code_id,
                    admitted.before.code.clone(),
                );
                let expect = Expect::Version(current.version.unwrap_or_default());
                let now = self.clock.now();
                Ok(
                    match within(
                        budget,
                        self.store.save_otp(phone, expect, &restored, window, now),
                    )
                    .await?
                    {
                        Conditional::Applied(()) => Round::Done(()),
                        Conditional::Failed(found) => match found {
                            Some(found) => Round::Lost(Some(found)),
                            None => Round::Done(()),
                        },
                    },
                )
            }
        })
        .await;
        if let Err(err) = result {
            tracing::error!(phone = %phone, error = %crate::telemetry::chain(&err), "could not take back a refused send");
        }
    }
}

/// A send written to the store, before its SMS goes out.
struct Admitted {
    code: OtpCode,
    code_id: String,
    /// The state as written, and as it was before.
    written: OtpState,
    before: OtpState,
    sent_at: UnixMillis,
}

/// Tries of one SMS that SNS throttled or could not be reached for.
const SNS_ATTEMPTS: u32 = 3;

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
        let sms = SnsSmsSender::new(&aws_sdk_sns::Client::new(aws), config.sms_sender_id.clone())
            .with_max_price(config.sms_max_price_usd.clone());
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

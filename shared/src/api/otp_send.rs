//! POST /otp/send (CONTRACT §1–3).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use aws_config::SdkConfig;
use lambda_http::{Body, Request, Response};
use ring::rand::SystemRandom;
use serde_json::{Value, json};

use secrecy::SecretSlice;

use super::{Endpoint, InitError, Round, current_secret, respond, rng_failed, settle, within};
use crate::adapters::dynamodb::{Expect, Found, SendWrite, SlotClaim};
use crate::adapters::secrets::{SecretCache, require_pepper};
use crate::adapters::{AuthSecret, DynamoDbStore, SnsSmsSender};
use crate::audit::{Audit, AuditEvent};
use crate::budget::Budget;
use crate::config::{AbuseMode, Env, OtpConfig, StoreConfig};
use crate::domain::otp::{ActiveCode, SendLimit, SendPolicy};
use crate::domain::slots::{Slots, random_below, shard_quotas};
use crate::domain::{
    AuthError, CodeMac, OtpCode, OtpState, PhoneNumber, SendOutcome, SourceIp, UnixMillis,
    random_id,
};
use crate::http::{
    header_str, idempotency_key_hash, json_object, phone_field, require_post, source_ip,
};
use crate::ports::{Clock, Conditional, SmsError, SmsSender};

pub struct OtpSend {
    store: DynamoDbStore,
    sms: SnsSmsSender,
    secret: SecretCache<AuthSecret>,
    config: OtpConfig,
    clock: Arc<dyn Clock>,
    rng: SystemRandom,
    /// The global budget's shards as this container last wrote or read them: a hint for
    /// the first round of the next send, so that it does not pick a slot already known
    /// to be taken. Never a reason to refuse: only an item read in this request is.
    global_seen: Mutex<HashMap<u32, Slots>>,
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
            global_seen: Mutex::new(HashMap::new()),
        }
    }

    fn policy(&self) -> SendPolicy {
        SendPolicy {
            limit: self.config.send_limit.get(),
            window_secs: u64::from(self.config.send_window_seconds.get()),
            max_attempts: self.config.max_attempts.get(),
            guesses: self.config.guesses,
        }
    }

    async fn send(&self, req: &Request) -> Result<Value, AuthError> {
        require_post(req)?;
        let body = json_object(req)?;
        let phone = phone_field(&body)?;
        if !phone.has_prefix_in(&self.config.allowed_phone_prefixes) {
            return Err(AuthError::bad_request(
                "phone: SMS codes are not available for this number",
            ));
        }
        let idempotency = idempotency_key_hash(req)?;
        let budget = Budget::from_request(req);
        let request = SendRequest {
            phone: &phone,
            idempotency: idempotency.as_deref(),
            ip: source_ip(req),
            request_id: crate::http::request_id(req),
            test_code: self.config.abuse.test_code(&phone),
        };
        let secret = current_secret(&budget, &self.secret).await;
        let pepper = secret
            .pepper()
            .ok_or_else(|| AuthError::internal("secret", "auth secret has no otpPepper"))?;
        let admitted = match settle(&budget, |known| {
            self.admit(&budget, &request, pepper, known)
        })
        .await?
        {
            Admission::Replay => {
                tracing::info!(phone = %phone, "idempotent replay of a send");
                return Ok(self.sent_body());
            }
            Admission::Sent(admitted) => admitted,
        };
        for limit in &admitted.recorded {
            self.audit(AuditEvent::OtpSendRefused, &request)
                .reason(limit.as_str())
                .record_only(true)
                .emit(self.clock.now());
        }
        if request.test_code.is_some() {
            // A test number: no SMS, no SMS budget (CONTRACT §3b).
            self.audit(AuditEvent::OtpSent, &request)
                .reason("test_number")
                .emit(self.clock.now());
            return Ok(self.sent_body());
        }
        let text = self
            .config
            .sms_message
            .for_accept_language(header_str(req, "accept-language"))
            .render(admitted.code.expose());
        match self.publish(&budget, &phone, &text).await {
            Ok(()) => {
                self.audit(AuditEvent::OtpSent, &request)
                    .emit(self.clock.now());
                Ok(self.sent_body())
            }
            Err(unanswered @ SmsError::Unanswered(_)) => {
                // It may be on its way: never sent again, and the slots and code stay,
                // so the SMS still works if it arrives (CONTRACT §3).
                tracing::warn!(phone = %phone, error = %crate::telemetry::chain(&unanswered), "SMS publish got no answer; the send keeps its slots and code");
                Err(AuthError::unavailable("sns", unanswered))
            }
            Err(refused @ SmsError::Refused { .. }) => {
                self.take_back(&budget, &phone, &admitted).await;
                Err(AuthError::unavailable("sns refused the SMS", refused))
            }
        }
    }

    fn sent_body(&self) -> Value {
        json!({
            "message": "OTP sent",
            "retryAfterSeconds": self.config.ttl_seconds.get(),
        })
    }

    fn audit<'a>(&self, event: AuditEvent, request: &'a SendRequest<'a>) -> Audit<'a> {
        Audit::new(event, Self::NAME)
            .request_id(request.request_id.as_deref())
            .phone(request.phone)
            .source_ip(request.ip.as_ref().map(SourceIp::as_str))
    }

    /// Refuse with `limit`'s wait, or (record-only, IP and global budgets) note it.
    fn refuse(
        &self,
        request: &SendRequest<'_>,
        limit: SendLimit,
        retry_after_secs: u64,
    ) -> AuthError {
        self.audit(AuditEvent::OtpSendRefused, request)
            .reason(limit.as_str())
            .count("retryAfterSeconds", retry_after_secs)
            .emit(self.clock.now());
        AuthError::RateLimited { retry_after_secs }
    }

    /// One round of admitting a send (CONTRACT §3, §3b): decide from what is known (on
    /// the first round: assume the phone has no live state and the budgets' slots are
    /// free), then write the phone's state and claim a slot of each budget that applies,
    /// all or nothing. A failed condition tells each item as it stands, to decide again.
    async fn admit(
        &self,
        budget: &Budget,
        request: &SendRequest<'_>,
        pepper: &SecretSlice<u8>,
        known: Option<Known>,
    ) -> Result<Round<Known, Admission>, AuthError> {
        let mut known = known.unwrap_or_default();
        let now = self.clock.now();
        let phone = request.phone;
        let (before, expect) = match &known.phone {
            Some(state) => (
                state.clone(),
                Expect::Version(state.version.unwrap_or_default()),
            ),
            None => (OtpState::default(), Expect::Fresh),
        };
        let code = match request.test_code {
            Some(fixed) => fixed.clone(),
            None => OtpCode::generate(&self.rng).map_err(rng_failed)?,
        };
        let active = ActiveCode {
            id: random_id(&self.rng).map_err(rng_failed)?,
            mac: CodeMac::compute(pepper, phone, &code),
            expires_at: now.plus_secs(u64::from(self.config.ttl_seconds.get())),
            attempts: 0,
        };
        let code_id = active.id.clone();
        let written = match before.admit_send(now, self.policy(), active, request.idempotency) {
            SendOutcome::Replay => return Ok(Round::Done(Admission::Replay)),
            SendOutcome::RateLimited {
                limit,
                retry_after_secs,
            } => return Err(self.refuse(request, limit, retry_after_secs)),
            SendOutcome::Admitted(next) => next,
        };
        let mut claims = Vec::new();
        let mut recorded = Vec::new();
        if request.test_code.is_none() {
            for limit in [SendLimit::Ip, SendLimit::Global] {
                match self.claim(limit, request, &mut known, now) {
                    Claim::None => {}
                    Claim::Slot(claim) => claims.push((limit, claim)),
                    Claim::Full { retry_after_secs } => {
                        if self.config.abuse.mode == AbuseMode::Enforce {
                            return Err(self.refuse(request, limit, retry_after_secs));
                        }
                        recorded.push(limit);
                    }
                }
            }
        }
        let slot_claims: Vec<SlotClaim> = claims.iter().map(|(_, c)| c.clone()).collect();
        let window = self.policy().window_secs;
        let outcome = within(
            budget,
            self.store
                .save_send(phone, expect, &written, window, now, &slot_claims),
        )
        .await?;
        let admitted = || {
            Admission::Sent(Box::new(Admitted {
                code: code.clone(),
                code_id: code_id.clone(),
                written: written.clone(),
                before: before.clone(),
                sent_at: now,
                claims: slot_claims.clone(),
                recorded: recorded.clone(),
            }))
        };
        let (phone_found, claims_found) = match outcome {
            SendWrite::Applied => {
                self.saw_claimed(&known, &claims);
                return Ok(Round::Done(admitted()));
            }
            SendWrite::Failed { phone, claims } => (phone, claims),
        };
        // This very put, applied by an attempt whose answer was lost and repeated by the
        // SDK: done, not a race. (A transaction is idempotent by its client token.)
        if let Found::Changed(Some(found)) = &phone_found
            && found.code.as_ref().is_some_and(|c| c.id == code_id)
        {
            return Ok(Round::Done(admitted()));
        }
        let guess_missed = expect == Expect::Fresh
            && matches!(phone_found, Found::Changed(Some(_)))
            && claims_found.iter().all(|f| *f == Found::Fine);
        match phone_found {
            Found::Changed(found) => known.phone = found,
            Found::Unknown => known.phone = None,
            Found::Fine => {}
        }
        for ((limit, claim), found) in claims.iter().zip(claims_found) {
            let slots = match found {
                Found::Fine => continue,
                Found::Changed(slots) => slots,
                Found::Unknown => None,
            };
            match limit {
                SendLimit::Ip => known.ip = slots,
                _ => {
                    let shard = shard_of(&claim.key);
                    self.saw_shard(shard, slots.as_ref());
                    known.global = slots.map(|s| (shard, s));
                }
            }
        }
        // Only the guess that the phone had no state was wrong: decide again at once.
        Ok(if guess_missed {
            Round::Next(known)
        } else {
            Round::Lost(Some(known))
        })
    }

    /// A slot of `limit`'s budget for this send, if that budget applies.
    fn claim(
        &self,
        limit: SendLimit,
        request: &SendRequest<'_>,
        known: &mut Known,
        now: UnixMillis,
    ) -> Claim {
        let abuse = &self.config.abuse;
        match limit {
            SendLimit::Ip => {
                let (Some(ip), true) = (&request.ip, abuse.ip_send_limit > 0) else {
                    return Claim::None;
                };
                let window = u64::from(abuse.ip_send_window_seconds.get());
                let slots = known
                    .ip
                    .clone()
                    .unwrap_or_else(|| Slots::empty(abuse.ip_send_limit));
                match slots.pick(now, window, &self.rng) {
                    Some(slot) => Claim::Slot(SlotClaim {
                        key: SlotClaim::ip_key(ip),
                        slot,
                        at: now,
                        window_secs: window,
                        limit: abuse.ip_send_limit,
                    }),
                    None => Claim::Full {
                        retry_after_secs: slots.retry_after(now, window),
                    },
                }
            }
            _ => {
                let quotas = shard_quotas(abuse.global_send_limit_per_hour);
                let shards = u32::try_from(quotas.len()).unwrap_or(u32::MAX);
                if shards == 0 {
                    return Claim::None;
                }
                let mut retry_after_secs = u64::MAX;
                // A full shard may refuse a little early; try a few before giving up.
                for _ in 0..GLOBAL_SHARD_TRIES.min(shards) {
                    let (shard, slots) = match known.global.take() {
                        Some(found) => found,
                        None => {
                            let mut shard = random_below(shards, &self.rng);
                            for _ in 0..shards {
                                if !known.full_shards.contains(&shard) {
                                    break;
                                }
                                shard = (shard + 1) % shards;
                            }
                            let quota = quotas.get(shard as usize).copied().unwrap_or(1);
                            (shard, self.global_hint(shard, quota, now))
                        }
                    };
                    let quota = u32::try_from(slots.0.len()).unwrap_or(0);
                    if let Some(slot) = slots.pick(now, GLOBAL_WINDOW_SECS, &self.rng) {
                        known.global = Some((shard, slots));
                        return Claim::Slot(SlotClaim {
                            key: SlotClaim::global_key(shard),
                            slot,
                            at: now,
                            window_secs: GLOBAL_WINDOW_SECS,
                            limit: quota,
                        });
                    }
                    retry_after_secs =
                        retry_after_secs.min(slots.retry_after(now, GLOBAL_WINDOW_SECS));
                    known.full_shards.push(shard);
                }
                Claim::Full { retry_after_secs }
            }
        }
    }

    /// The slots of `shard` to pick from when nothing of it was read in this request:
    /// as this container last saw them if that leaves a slot free now, else all free
    /// (the write's condition decides; a hint must not refuse a send).
    fn global_hint(&self, shard: u32, quota: u32, now: UnixMillis) -> Slots {
        let seen = self
            .global_seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        seen.get(&shard)
            .filter(|slots| slots.0.len() == quota as usize)
            .filter(|slots| !slots.free(now, GLOBAL_WINDOW_SECS).is_empty())
            .cloned()
            .unwrap_or_else(|| Slots::empty(quota))
    }

    /// Remember a global shard as a failed write returned it (`None`: not there).
    fn saw_shard(&self, shard: u32, slots: Option<&Slots>) {
        let mut seen = self
            .global_seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match slots {
            Some(slots) => seen.insert(shard, slots.clone()),
            None => seen.remove(&shard),
        };
    }

    /// Remember the global slot this send just claimed as taken.
    fn saw_claimed(&self, known: &Known, claims: &[(SendLimit, SlotClaim)]) {
        let Some((shard, slots)) = &known.global else {
            return;
        };
        for (_, claim) in claims.iter().filter(|(l, _)| *l == SendLimit::Global) {
            let mut slots = slots.clone();
            if let Some(at) = slots.0.get_mut(claim.slot as usize) {
                *at = Some(claim.at);
            }
            self.saw_shard(*shard, Some(&slots));
        }
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
    /// (CONTRACT §3, §3b). One conditional write when nobody wrote in between; otherwise
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
                let restored =
                    current.without_send(admitted.sent_at, &admitted.code_id, &admitted.before);
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
        for claim in &admitted.claims {
            if let Err(err) = within(budget, self.store.release_slot(claim)).await {
                tracing::error!(budget = %claim.key.split('#').next().unwrap_or(""), error = %crate::telemetry::chain(&err), "could not give back a budget slot of a refused send");
            }
        }
    }
}

/// What one send request carries besides its phone.
struct SendRequest<'a> {
    phone: &'a PhoneNumber,
    idempotency: Option<&'a str>,
    ip: Option<SourceIp>,
    request_id: Option<String>,
    test_code: Option<&'a OtpCode>,
}

/// What a round of admission has learned of the items it writes.
#[derive(Debug, Clone, Default)]
struct Known {
    /// `None`: assume no live state.
    phone: Option<OtpState>,
    /// `None`: assume every slot free.
    ip: Option<Slots>,
    /// The global shard last tried, as it stood.
    global: Option<(u32, Slots)>,
    /// Global shards found full.
    full_shards: Vec<u32>,
}

enum Claim {
    /// The budget does not apply (off, a test number, or no source IP).
    None,
    Slot(SlotClaim),
    Full {
        retry_after_secs: u64,
    },
}

enum Admission {
    Replay,
    Sent(Box<Admitted>),
}

/// A send written to the store, before its SMS goes out.
struct Admitted {
    code: OtpCode,
    code_id: String,
    /// The state as written, and as it was before.
    written: OtpState,
    before: OtpState,
    sent_at: UnixMillis,
    /// Budget slots claimed with it, given back if SNS refuses.
    claims: Vec<SlotClaim>,
    /// Budgets that would have refused it, in record-only mode.
    recorded: Vec<SendLimit>,
}

fn shard_of(key: &str) -> u32 {
    key.rsplit('#')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// The global budget's window: an hour.
const GLOBAL_WINDOW_SECS: u64 = 3600;
/// Global shards tried before a send is refused for the global budget.
const GLOBAL_SHARD_TRIES: u32 = 3;

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
        let sms = SnsSmsSender::new(&SnsSmsSender::client(aws), config.sms_sender_id.clone())
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

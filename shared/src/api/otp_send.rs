//! POST /otp/send (CONTRACT §1–3).

use std::sync::Arc;

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
use crate::domain::global_budget::{self, Choice, GlobalBudget, View, shard_key};
use crate::domain::otp::{ActiveCode, SendLimit, SendPolicy};
use crate::domain::slots::Slots;
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
    /// The global SMS budget, with this container's memory of its shards (`None`: off).
    global: Option<GlobalBudget>,
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
            clock,
            rng: SystemRandom::new(),
            global: GlobalBudget::new(config.abuse.global_send_limit_per_hour),
            config,
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
    /// the first round: assume the phone has no live state and the IP's slots are free;
    /// the global budget's [`GlobalBudget::choose`] says what it knows), then write the
    /// phone's state and claim a slot of each budget that applies, all or nothing. A
    /// failed condition tells each item as it stands, to decide again; when the global
    /// budget needs it, a round reads instead of writing.
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
        // An earlier round's write that was applied though its answer was lost: done.
        if let Some(done) = known.applied_attempt() {
            return Ok(Round::Done(Admission::Sent(Box::new(done))));
        }
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
        let write_id = random_id(&self.rng).map_err(rng_failed)?;
        let written = match before.admit_send(now, self.policy(), active, request.idempotency) {
            SendOutcome::Replay => return Ok(Round::Done(Admission::Replay)),
            SendOutcome::Blocked => {
                self.audit(AuditEvent::OtpSendRefused, request)
                    .reason("blocked")
                    .emit(now);
                return Err(AuthError::PhoneBlocked);
            }
            SendOutcome::RateLimited {
                limit,
                retry_after_secs,
            } => return Err(self.refuse(request, limit, retry_after_secs)),
            SendOutcome::Admitted(next) => (*next).tagged(&write_id),
        };
        let enforce = self.config.abuse.mode == AbuseMode::Enforce;
        let mut claims = Vec::new();
        let mut recorded = Vec::new();
        let mut global_claim = None;
        if request.test_code.is_none() {
            if let Some((key, limit, window)) = self.ip_budget(request) {
                let slots = known.ip.clone().unwrap_or_else(|| Slots::empty(limit));
                match slots.pick(now, window, &self.rng) {
                    Some(slot) => claims.push(SlotClaim {
                        key,
                        slot,
                        at: now,
                        window_secs: window,
                        limit,
                    }),
                    // Only slots read in this request can be all taken.
                    None if enforce => {
                        return Err(self.refuse(
                            request,
                            SendLimit::Ip,
                            slots.retry_after(now, window),
                        ));
                    }
                    None => recorded.push(SendLimit::Ip),
                }
            }
            if let Some(global) = &self.global {
                match global.choose(&mut known.global, now, &self.rng) {
                    Choice::Claim(claim) => {
                        global_claim = Some(claim);
                        claims.push(SlotClaim {
                            key: shard_key(claim.shard),
                            slot: claim.slot,
                            at: now,
                            window_secs: global_budget::WINDOW_SECS,
                            limit: claim.quota,
                        });
                    }
                    Choice::Full { retry_after_secs } if enforce => {
                        return Err(self.refuse(request, SendLimit::Global, retry_after_secs));
                    }
                    Choice::Full { .. } => recorded.push(SendLimit::Global),
                    Choice::Read(shards) => {
                        self.read(budget, request, global, &shards, &mut known)
                            .await?;
                        return Ok(Round::Next(known));
                    }
                }
            }
        }
        let window = self.policy().window_secs;
        let outcome = within(
            budget,
            self.store
                .save_send(phone, expect, &written, window, now, &claims),
        )
        .await?;
        let attempt = Admitted {
            code,
            code_id,
            write_id,
            written,
            before,
            sent_at: now,
            claims,
            recorded,
        };
        let (phone_found, claims_found) = match outcome {
            SendWrite::Applied => {
                if let (Some(global), Some(claim)) = (&self.global, global_claim) {
                    global.claimed(claim, now);
                }
                return Ok(Round::Done(Admission::Sent(Box::new(attempt))));
            }
            SendWrite::Failed { phone, claims } => (*phone, claims),
        };
        let guess_missed = expect == Expect::Fresh
            && matches!(phone_found, Found::Changed(Some(_)))
            && claims_found.iter().all(|f| *f == Found::Fine);
        match phone_found {
            Found::Changed(found) => {
                known.phone = found;
                known.phone_read = true;
            }
            // Held by a transaction: the next write's condition will tell.
            Found::Unknown => known.phone_read = false,
            // As assumed.
            Found::Fine => known.phone_read = true,
        }
        for (claim, found) in attempt.claims.iter().zip(claims_found) {
            let is_global = claim.key.starts_with("GLOBAL#");
            match (is_global, global_claim, found) {
                (false, _, Found::Changed(slots)) => {
                    known.ip = Some(slots.unwrap_or_else(|| Slots::empty(claim.limit)));
                }
                (false, _, Found::Unknown) => known.ip = None,
                (false, _, Found::Fine) | (true, None, _) => {}
                (true, Some(shard), Found::Changed(slots)) => {
                    known.global.claim_lost(shard, slots);
                }
                (true, Some(_), Found::Unknown) => known.global.claim_unknown(),
                (true, Some(shard), Found::Fine) => known.global.claim_held(shard),
            }
        }
        if let Some(global) = &self.global {
            global.remember(&known.global);
        }
        known.attempts.push(attempt);
        // This very write, applied by an attempt whose answer was lost and repeated (by
        // the SDK, or by an earlier round): done, not a race.
        if let Some(done) = known.applied_attempt() {
            return Ok(Round::Done(Admission::Sent(Box::new(done))));
        }
        // Only the guess that the phone had no state was wrong: decide again at once.
        Ok(if guess_missed {
            Round::Next(known)
        } else {
            Round::Lost(Some(known))
        })
    }

    /// The IP budget's item key, number of slots and window, if it applies to this send.
    fn ip_budget(&self, request: &SendRequest<'_>) -> Option<(String, u32, u64)> {
        let abuse = &self.config.abuse;
        let ip = request.ip.as_ref().filter(|_| abuse.ip_send_limit > 0)?;
        Some((
            SlotClaim::ip_key(ip),
            abuse.ip_send_limit,
            u64::from(abuse.ip_send_window_seconds.get()),
        ))
    }

    /// A read round (one strongly consistent batch read): the global shards asked for,
    /// and the phone's and the IP's items unless this request already knows them.
    async fn read(
        &self,
        budget: &Budget,
        request: &SendRequest<'_>,
        global: &GlobalBudget,
        shards: &[u32],
        known: &mut Known,
    ) -> Result<(), AuthError> {
        let ip = self
            .ip_budget(request)
            .filter(|_| known.ip.is_none() && request.test_code.is_none());
        let quotas: Vec<(u32, u32)> = shards.iter().map(|s| (*s, global.quota(*s))).collect();
        let items = within(
            budget,
            self.store.read_send_items(
                (!known.phone_read).then_some(request.phone),
                ip.as_ref().map(|(key, limit, _)| (key.as_str(), *limit)),
                &quotas,
            ),
        )
        .await?;
        if let Some(found) = items.phone {
            known.phone = found;
            known.phone_read = true;
        }
        if let (Some(found), Some((_, limit, _))) = (items.ip, ip) {
            known.ip = Some(found.unwrap_or_else(|| Slots::empty(limit)));
        }
        for (shard, found) in items.shards {
            known.global.shard_read(shard, global.quota(shard), found);
        }
        global.remember(&known.global);
        Ok(())
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
    /// The take-back is tagged, so a repeat of it (a lost answer) knows it is done.
    async fn take_back(&self, budget: &Budget, phone: &PhoneNumber, admitted: &Admitted) {
        let window = self.policy().window_secs;
        let back_id = format!("{}.back", admitted.write_id);
        let mut first = Some(admitted.written.clone());
        let result = settle(budget, |known: Option<OtpState>| {
            let current = first.take().or(known);
            let back_id = back_id.as_str();
            async move {
                // No item any more, or our take-back already in it: nothing to do.
                let Some(current) = current.filter(|c| !c.wrote(back_id)) else {
                    return Ok(Round::Done(()));
                };
                let restored = current
                    .without_send(admitted.sent_at, &admitted.code_id, &admitted.before)
                    .tagged(back_id);
                let expect = Expect::Version(current.version.unwrap_or_default());
                let now = self.clock.now();
                Ok(
                    match within(
                        budget,
                        self.store.save_otp(phone, expect, &restored, window, now),
                    )
                    .await?
                    {
                        Conditional::Applied(()) | Conditional::Failed(None) => Round::Done(()),
                        Conditional::Failed(Some(found)) => Round::Lost(Some(found)),
                        // The same write again: its condition tells whether it landed.
                        Conditional::Held => Round::Lost(Some(current)),
                    },
                )
            }
        })
        .await;
        if let Err(err) = result {
            tracing::error!(phone = %phone, error = %crate::telemetry::chain(&err), "could not take back a refused send");
        }
        for claim in &admitted.claims {
            let released = settle(budget, |_: Option<()>| async {
                Ok(
                    match within(budget, self.store.release_slot(claim)).await? {
                        Conditional::Applied(()) | Conditional::Failed(_) => Round::Done(()),
                        Conditional::Held => Round::Lost(None),
                    },
                )
            })
            .await;
            if let Err(err) = released {
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

/// What a request's rounds of admission have learned of the items they write.
#[derive(Debug, Default)]
struct Known {
    /// `None`: assume no live state.
    phone: Option<OtpState>,
    /// `phone` was read in this request, or a write's condition on it held.
    phone_read: bool,
    /// The IP's slots as read in this request; `None`: assume every slot free.
    ip: Option<Slots>,
    /// The global budget as this request has seen it.
    global: View,
    /// This request's earlier writes, each of which may have been applied with its
    /// answer lost (CONTRACT §1).
    attempts: Vec<Admitted>,
}

impl Known {
    /// The earlier write of this request that the phone's state shows applied.
    fn applied_attempt(&self) -> Option<Admitted> {
        let state = self.phone.as_ref()?;
        self.attempts
            .iter()
            .find(|a| state.wrote(&a.write_id))
            .cloned()
    }
}

enum Admission {
    Replay,
    Sent(Box<Admitted>),
}

/// A send written to the store, before its SMS goes out.
#[derive(Debug, Clone)]
struct Admitted {
    code: OtpCode,
    code_id: String,
    /// The id its OTP write carries (`OtpState::writes`).
    write_id: String,
    /// The state as written, and as it was before.
    written: OtpState,
    before: OtpState,
    sent_at: UnixMillis,
    /// Budget slots claimed with it, given back if SNS refuses.
    claims: Vec<SlotClaim>,
    /// Budgets that would have refused it, in record-only mode.
    recorded: Vec<SendLimit>,
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

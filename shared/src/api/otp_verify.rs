//! POST /otp/verify (CONTRACT §1, §2, §4): trade a code for a token pair.

use std::sync::Arc;

use aws_config::SdkConfig;
use lambda_http::{Body, Request, Response};
use ring::rand::SystemRandom;
use serde_json::Value;

use super::{
    Endpoint, InitError, Round, respond, rng_failed, settle, signing_secret, token_pair, within,
};
use crate::adapters::dynamodb::{Account, Expect, LoginAccount};
use crate::adapters::secrets::{SecretCache, require_pepper};
use crate::adapters::{AuthSecret, DynamoDbStore, JwtIssuer};
use crate::audit::{Audit, AuditEvent};
use crate::budget::Budget;
use crate::config::{AccountConfig, Env, OtpConfig, StoreConfig, TokenConfig};
use crate::domain::events::{Change, Reason};
use crate::domain::otp::VerifyPolicy;
use crate::domain::session::SessionId;
use crate::domain::{
    AuthError, OtpCode, PhoneNumber, RefreshToken, Session, SourceIp, VerifyOutcome, random_id,
};
use crate::events::Events;
use crate::http::{code_field, json_object, phone_field, require_post, source_ip};
use crate::ports::{Clock, Conditional, StoreError};

pub struct OtpVerify {
    store: DynamoDbStore,
    secret: SecretCache<AuthSecret>,
    policy: VerifyPolicy,
    tokens: TokenConfig,
    accounts: AccountConfig,
    issuer: JwtIssuer,
    clock: Arc<dyn Clock>,
    rng: SystemRandom,
    events: Option<Events>,
}

impl OtpVerify {
    pub fn new(
        store: DynamoDbStore,
        secret: SecretCache<AuthSecret>,
        policy: VerifyPolicy,
        tokens: TokenConfig,
        accounts: AccountConfig,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            store,
            secret,
            policy,
            accounts,
            issuer: JwtIssuer::new(tokens.clone()),
            tokens,
            clock,
            rng: SystemRandom::new(),
            events: None,
        }
    }

    /// Put account and session events on this bus (CONTRACT §7 "Events").
    #[must_use]
    pub fn with_events(mut self, events: Option<Events>) -> Self {
        self.events = events;
        self
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
        // Any bytes a client sent: kept as text, then sanitised with the session.
        let user_agent = req
            .headers()
            .get("user-agent")
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        let asked = Asked {
            phone: &phone,
            code: &code,
            user_agent: user_agent.as_deref(),
        };
        settle(&budget, |tried: Option<Tried>| {
            self.verify_round(&budget, &secret, &asked, &audit, tried.unwrap_or_default())
        })
        .await
    }

    /// One round: read the phone's code and user (one batched request), then count a
    /// wrong try or consume the code and open the session (one transaction). A round
    /// after a lost race first looks for its request's earlier writes (CONTRACT §1: one
    /// whose answer was lost may have been applied): a wrong try is counted once, and a
    /// login that happened answers its tokens.
    async fn verify_round<'a>(
        &self,
        budget: &Budget,
        secret: &AuthSecret,
        asked: &Asked<'_>,
        audit: &impl Fn(AuditEvent) -> Audit<'a>,
        mut tried: Tried,
    ) -> Result<Round<Tried, Value>, AuthError> {
        let Asked {
            phone,
            code,
            user_agent,
        } = *asked;
        let pepper = secret
            .pepper()
            .ok_or_else(|| AuthError::internal("secret", "auth secret has no otpPepper"))?;
        let now = self.clock.now();
        let login = within(budget, self.store.load_login(phone)).await?;
        // A login of this request that may have been applied with its answer lost: if
        // the phone's account is its account, its session tells.
        let mut account = None;
        if let Some(prepared) = &tried.login
            && login.sub.as_deref() == Some(prepared.session.sub.as_str())
        {
            let read = within(budget, self.store.load_account(&prepared.session.sub)).await?;
            if read.session(&prepared.session.id).is_some()
                && let Some(prepared) = tried.login.take()
            {
                return Ok(Round::Done(self.logged_in(prepared, audit, now)));
            }
            account = Some(read);
        }
        if let Some((_, wrong)) = tried.wrong.iter().find(|(id, _)| login.otp.wrote(id)) {
            return Err(wrong.answer(audit, now));
        }
        let state = login.otp;
        let version = state.version.unwrap_or_default();
        match state.check(
            now,
            self.policy.max_attempts,
            self.policy.guesses,
            pepper,
            phone,
            code,
        ) {
            VerifyOutcome::Blocked => {
                audit(AuditEvent::OtpVerifyFailed)
                    .reason("blocked")
                    .emit(now);
                Err(AuthError::PhoneBlocked)
            }
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
                let wrong = WrongCode {
                    attempts_left,
                    burned,
                    guesses_exhausted,
                };
                let write_id = random_id(&self.rng).map_err(rng_failed)?;
                // Conditioned on the version read: concurrent wrong tries each count.
                let window = self.policy.send_window_secs;
                let next = (*next).tagged(&write_id);
                match within(
                    budget,
                    self.store
                        .save_otp(phone, Expect::Version(version), &next, window, now),
                )
                .await?
                {
                    Conditional::Applied(()) => Err(wrong.answer(audit, now)),
                    // A repeat of this very write (the SDK's retry after a lost answer).
                    Conditional::Failed(Some(found)) if found.wrote(&write_id) => {
                        Err(wrong.answer(audit, now))
                    }
                    Conditional::Failed(_) | Conditional::Held => {
                        tried.wrong.push((write_id, wrong));
                        Ok(Round::Lost(Some(tried)))
                    }
                }
            }
            VerifyOutcome::Accepted => {
                // One login per request, kept across rounds so that a round after a lost
                // answer can find its session. Prepared again only if another login
                // created the phone's user meanwhile (then ours was not applied: a login
                // that was would have made the user's `sub` ours).
                // Reused only for the same account as read now: the phone's `sub`, or a
                // new account while the phone still has none. After a deletion, a login
                // prepared for the old `sub` is prepared again (CONTRACT §7).
                let prepared = match tried.login.take() {
                    Some(prepared)
                        if match &login.sub {
                            Some(sub) => *sub == prepared.session.sub,
                            None => prepared.first_login,
                        } =>
                    {
                        prepared
                    }
                    _ => {
                        self.prepare_login(secret, phone, login.sub.as_deref(), user_agent, now)?
                    }
                };
                // A returning account: its sessions, to keep within the limit.
                let account = match (&login.sub, account) {
                    (None, _) => LoginAccount::default(),
                    (Some(sub), read) => {
                        let read = match read {
                            Some(read) => read,
                            None => within(budget, self.store.load_account(sub)).await?,
                        };
                        self.login_account(&read, now)
                    }
                };
                // Its events (CONTRACT §7): the account it creates, the sessions it evicts.
                let sub = &prepared.session.sub;
                let events = Events::stage(
                    self.events.as_ref(),
                    now,
                    prepared
                        .first_login
                        .then(|| Change::AccountCreated { sub: sub.clone() })
                        .into_iter()
                        .chain([Change::SessionsRevoked {
                            sub: sub.clone(),
                            session_ids: account
                                .evict
                                .iter()
                                .map(|s| s.as_str().to_owned())
                                .collect(),
                            reason: Reason::Limit,
                        }]),
                )?;
                match within(
                    budget,
                    self.store.complete_login(
                        phone,
                        version,
                        now,
                        &prepared.session,
                        &account,
                        events.as_ref(),
                    ),
                )
                .await
                {
                    Ok(()) => {
                        crate::events::deliver(
                            self.events.as_ref(),
                            &self.store,
                            budget,
                            events.as_ref(),
                        )
                        .await;
                        if !account.evict.is_empty() {
                            audit(AuditEvent::SessionRevoked)
                                .user(&prepared.session.sub)
                                .reason("limit")
                                .count("sessions", account.evict.len() as u64)
                                .emit(now);
                        }
                        Ok(Round::Done(self.logged_in(prepared, audit, now)))
                    }
                    // Another verify, a wrong try or a new send got there first, or a
                    // transaction held one of the items (`TransactionConflict`).
                    Err(StoreError::Conflict) => {
                        tried.login = Some(prepared);
                        Ok(Round::Lost(Some(tried)))
                    }
                    Err(e) => Err(e.into()),
                }
            }
        }
    }

    /// The account item's version as read, and the least recently used live sessions
    /// that a new one would push past `MAX_SESSIONS_PER_ACCOUNT` (CONTRACT §7).
    fn login_account(&self, account: &Account, now: crate::domain::UnixMillis) -> LoginAccount {
        let live = account.live_sessions(now);
        let max = self.accounts.max_sessions_per_account.get() as usize;
        let over = (live.len() + 1).saturating_sub(max);
        LoginAccount {
            existing: true,
            version: account.version,
            evict: live.iter().rev().take(over).map(|s| s.id.clone()).collect(),
        }
    }

    /// A new session for the phone's account (`sub`: a new account if none), its first
    /// refresh token, and its access token, signed before the code is consumed: a
    /// signing failure must not burn it.
    fn prepare_login(
        &self,
        secret: &AuthSecret,
        phone: &PhoneNumber,
        sub: Option<&str>,
        user_agent: Option<&str>,
        now: crate::domain::UnixMillis,
    ) -> Result<Prepared, AuthError> {
        let (sub, first_login) = match sub {
            Some(sub) => (sub.to_owned(), false),
            None => (random_id(&self.rng).map_err(rng_failed)?, true),
        };
        let id = SessionId::generate(&self.rng, &sub).map_err(rng_failed)?;
        let refresh = RefreshToken::generate(&self.rng, &id).map_err(rng_failed)?;
        let session = Session::start(
            id,
            sub,
            phone.e164().to_owned(),
            &refresh,
            now,
            u64::from(self.tokens.session_max_seconds.get()),
            u64::from(self.tokens.refresh_ttl_seconds.get()),
        )
        .with_user_agent(user_agent);
        let access = self.issuer.issue(secret, &self.rng, now, &session)?;
        Ok(Prepared {
            session,
            refresh,
            access,
            first_login,
        })
    }

    fn logged_in<'a>(
        &self,
        prepared: Prepared,
        audit: &impl Fn(AuditEvent) -> Audit<'a>,
        now: crate::domain::UnixMillis,
    ) -> Value {
        audit(AuditEvent::LoginSucceeded)
            .user(&prepared.session.sub)
            .session(prepared.session.id.as_str())
            .count("firstLogin", u64::from(prepared.first_login))
            .emit(now);
        token_pair(
            prepared.access,
            prepared.refresh.expose(),
            self.issuer.access_ttl_seconds(),
        )
    }
}

/// What a verify asks: the phone, the code, and the client's `User-Agent`.
#[derive(Clone, Copy)]
struct Asked<'r> {
    phone: &'r PhoneNumber,
    code: &'r OtpCode,
    user_agent: Option<&'r str>,
}

/// What a verify's earlier rounds wrote, each of which may have been applied with its
/// answer lost.
#[derive(Default)]
struct Tried {
    /// Wrong-code writes: the write's id and the answer it gives.
    wrong: Vec<(String, WrongCode)>,
    /// The login this request prepared, once the code was right.
    login: Option<Prepared>,
}

/// A counted wrong code.
struct WrongCode {
    attempts_left: u32,
    burned: bool,
    guesses_exhausted: bool,
}

impl WrongCode {
    /// Its audit lines and its answer.
    fn answer<'a>(
        &self,
        audit: &impl Fn(AuditEvent) -> Audit<'a>,
        now: crate::domain::UnixMillis,
    ) -> AuthError {
        audit(AuditEvent::OtpVerifyFailed)
            .reason("wrong_code")
            .count("attemptsLeft", u64::from(self.attempts_left))
            .emit(now);
        if self.burned {
            audit(AuditEvent::OtpBurned).emit(now);
        }
        if self.guesses_exhausted {
            audit(AuditEvent::GuessBudgetExhausted).emit(now);
        }
        AuthError::InvalidCode {
            attempts_left: self.attempts_left,
        }
    }
}

/// A login ready to be stored: its session, first refresh token and access token.
struct Prepared {
    session: Session,
    refresh: RefreshToken,
    access: String,
    first_login: bool,
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
        let accounts = AccountConfig::load(env)?;
        let secret = super::load_auth_secret(aws, env, &clock, AuthSecret::parse).await?;
        require_pepper(&secret).await?;
        let events = Events::from_env(aws, env)?;
        Ok(Self::new(
            DynamoDbStore::new(aws_sdk_dynamodb::Client::new(aws), store.table_name),
            secret,
            policy,
            tokens,
            accounts,
            clock,
        )
        .with_events(events))
    }

    async fn handle(&self, req: Request) -> Response<Body> {
        respond(
            Self::NAME,
            crate::http::request_id(&req),
            self.verify(&req).await,
        )
    }
}

//! Test harness: a fresh table and secret on the local AWS stack (moto) per test, the
//! endpoints built over them with a manual clock, and requests made from `events/`.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use aws_config::SdkConfig;
use aws_sdk_dynamodb::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use base64::Engine;
use foodsave_auth::adapters::access_token::PublicKeys;
use foodsave_auth::adapters::secrets::SecretCache;
use foodsave_auth::adapters::{AuthSecret, DynamoDbStore, SnsSmsSender};
use foodsave_auth::api::Endpoint;
use foodsave_auth::api::account_delete::AccountDelete;
use foodsave_auth::api::bearer::Bearer;
use foodsave_auth::api::jwks::Jwks;
use foodsave_auth::api::logout::Logout;
use foodsave_auth::api::otp_send::OtpSend;
use foodsave_auth::api::otp_verify::OtpVerify;
use foodsave_auth::api::sessions::Sessions;
use foodsave_auth::api::token_refresh::TokenRefresh;
use foodsave_auth::clock::{ManualClock, SystemClock};
use foodsave_auth::config::{AccountConfig, OtpConfig, TokenConfig};
use foodsave_auth::devstack;
use foodsave_auth::events::Events;
use foodsave_auth::ports::Clock;
use foodsave_auth::rotation::KeyRotation;
use lambda_http::{Body, Request};
use ring::rand::SecureRandom;
use serde_json::{Value, json};

/// Counts DynamoDB requests put on the wire (round trips).
#[derive(Debug, Clone, Default)]
pub struct RoundTrips(Arc<AtomicUsize>);

impl RoundTrips {
    pub fn take(&self) -> usize {
        self.0.swap(0, Ordering::SeqCst)
    }
}

impl Intercept for RoundTrips {
    fn name(&self) -> &'static str {
        "RoundTrips"
    }

    fn read_before_transmit(
        &self,
        _ctx: &BeforeTransmitInterceptorContextRef<'_>,
        _rc: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), aws_sdk_dynamodb::error::BoxError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

pub struct Stack {
    pub aws: SdkConfig,
    pub ddb: aws_sdk_dynamodb::Client,
    pub sm: aws_sdk_secretsmanager::Client,
    pub table: String,
    pub secret_id: String,
    pub jwks_secret_id: String,
    pub rotation: KeyRotation,
    pub endpoint: String,
    pub clock: Arc<ManualClock>,
    pub round_trips: RoundTrips,
    counted_ddb: aws_sdk_dynamodb::Client,
}

pub fn random_suffix() -> String {
    let mut bytes = [0u8; 8];
    ring::rand::SystemRandom::new().fill(&mut bytes).unwrap();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A phone no other test uses: +77 and ten digits in all.
pub fn random_phone() -> String {
    let mut bytes = [0u8; 8];
    ring::rand::SystemRandom::new().fill(&mut bytes).unwrap();
    format!("+77{:09}", u64::from_le_bytes(bytes) % 1_000_000_000)
}

impl Stack {
    pub async fn new() -> Self {
        Self::starting_at(SystemClock.now()).await
    }

    /// A stack whose manual clock (and the keys made with it) starts at `now`.
    pub async fn starting_at(now: foodsave_auth::domain::UnixMillis) -> Self {
        let endpoint = devstack::endpoint_url().expect("run the tests through `make test`");
        let aws = devstack::sdk_config().await;
        let ddb = aws_sdk_dynamodb::Client::new(&aws);
        let sm = aws_sdk_secretsmanager::Client::new(&aws);
        let suffix = random_suffix();
        let table = format!("auth-test-{suffix}");
        devstack::create_table(&ddb, &table).await.unwrap();
        let secret_id = format!("auth-test-{suffix}");
        let jwks_secret_id = format!("jwks-test-{suffix}");
        let clock = Arc::new(ManualClock::at(now));
        let rotation = devstack::create_secrets(&sm, &secret_id, &jwks_secret_id, clock.clone())
            .await
            .unwrap();
        let round_trips = RoundTrips::default();
        let counted_ddb = aws_sdk_dynamodb::Client::from_conf(
            aws_sdk_dynamodb::config::Builder::from(&aws)
                .interceptor(round_trips.clone())
                .build(),
        );
        Self {
            aws,
            ddb,
            sm,
            table,
            secret_id,
            jwks_secret_id,
            rotation,
            endpoint,
            clock,
            round_trips,
            counted_ddb,
        }
    }

    pub fn env(&self, extra: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + Sync + use<> {
        let mut map: HashMap<String, String> = HashMap::from([
            ("TABLE_NAME".into(), self.table.clone()),
            ("AUTH_SECRET_ID".into(), self.secret_id.clone()),
            ("JWKS_SECRET_ID".into(), self.jwks_secret_id.clone()),
            (
                "JWT_ISSUER".into(),
                "https://auth.test.foodsave.kz/api/v1/auth".into(),
            ),
        ]);
        for (k, v) in extra {
            map.insert((*k).into(), (*v).into());
        }
        move |k: &str| map.get(k).cloned()
    }

    fn clock(&self) -> Arc<dyn Clock> {
        self.clock.clone()
    }

    pub fn store(&self) -> DynamoDbStore {
        DynamoDbStore::new(self.counted_ddb.clone(), &self.table)
    }

    pub async fn secret(&self) -> SecretCache<AuthSecret> {
        self.secret_parsed_by(AuthSecret::parse).await
    }

    pub async fn secret_parsed_by(
        &self,
        parse: fn(&str) -> Result<AuthSecret, String>,
    ) -> SecretCache<AuthSecret> {
        SecretCache::load(self.sm.clone(), self.secret_id.clone(), parse, self.clock())
            .await
            .unwrap()
    }

    pub async fn otp_send(&self, extra: &[(&str, &str)]) -> OtpSend {
        let sns = aws_sdk_sns::Client::new(&self.aws);
        self.otp_send_with_sns(extra, sns).await
    }

    pub async fn otp_send_with_sns(
        &self,
        extra: &[(&str, &str)],
        sns: aws_sdk_sns::Client,
    ) -> OtpSend {
        let otp = OtpConfig::load(&self.env(extra)).unwrap();
        let sms = SnsSmsSender::new(&sns, otp.sms_sender_id.clone())
            .with_max_price(otp.sms_max_price_usd.clone());
        OtpSend::new(
            self.store(),
            sms,
            self.secret_parsed_by(AuthSecret::parse_pepper_only).await,
            otp,
            self.clock(),
        )
    }

    /// A send function (a container of its own) whose DynamoDB requests are counted
    /// apart from every other's: what each of its requests cost.
    pub async fn otp_send_counted(&self, extra: &[(&str, &str)]) -> (OtpSend, RoundTrips) {
        let trips = RoundTrips::default();
        // Bursts of these queue at moto (one request at a time): an attempt may wait there
        // longer than devstack's 30 s on a loaded machine, and a retry would count twice.
        let ddb = aws_sdk_dynamodb::Client::from_conf(
            aws_sdk_dynamodb::config::Builder::from(&self.aws)
                .timeout_config(
                    aws_sdk_dynamodb::config::timeout::TimeoutConfig::builder()
                        .connect_timeout(std::time::Duration::from_secs(5))
                        .operation_attempt_timeout(std::time::Duration::from_secs(110))
                        .operation_timeout(std::time::Duration::from_secs(120))
                        .build(),
                )
                .interceptor(trips.clone())
                .build(),
        );
        let otp = OtpConfig::load(&self.env(extra)).unwrap();
        let sms = SnsSmsSender::new(&aws_sdk_sns::Client::new(&self.aws), None);
        let send = OtpSend::new(
            DynamoDbStore::new(ddb, &self.table),
            sms,
            self.secret_parsed_by(AuthSecret::parse_pepper_only).await,
            otp,
            self.clock(),
        );
        (send, trips)
    }

    /// An SNS client whose endpoint refuses connections: every publish fails.
    pub fn unreachable_sns(&self) -> aws_sdk_sns::Client {
        aws_sdk_sns::Client::from_conf(
            aws_sdk_sns::config::Builder::from(&self.aws)
                .endpoint_url("http://127.0.0.1:9")
                .build(),
        )
    }

    /// The bus of `EVENT_BUS_NAME` in `extra`, if it names one.
    pub fn events(&self, extra: &[(&str, &str)]) -> Option<Events> {
        Events::from_env(&self.aws, &self.env(extra)).unwrap()
    }

    pub async fn otp_verify(&self, extra: &[(&str, &str)]) -> OtpVerify {
        let env = self.env(extra);
        OtpVerify::new(
            self.store(),
            self.secret().await,
            OtpConfig::verify_policy(&env).unwrap(),
            TokenConfig::load(&env).unwrap(),
            AccountConfig::load(&env).unwrap(),
            self.clock(),
        )
        .with_events(self.events(extra))
    }

    pub async fn token_refresh(&self, extra: &[(&str, &str)]) -> TokenRefresh {
        let env = self.env(extra);
        TokenRefresh::new(
            self.store(),
            self.secret().await,
            TokenConfig::load(&env).unwrap(),
            self.clock(),
        )
        .with_events(self.events(extra))
    }

    pub async fn jwks(&self) -> Jwks {
        Jwks::init(&self.aws, &self.env(&[]), self.clock())
            .await
            .unwrap()
    }

    /// The public JWK Set secret as the access-token endpoints read it.
    pub async fn bearer(&self, extra: &[(&str, &str)]) -> Bearer {
        let keys = SecretCache::load(
            self.sm.clone(),
            self.jwks_secret_id.clone(),
            PublicKeys::parse,
            self.clock(),
        )
        .await
        .unwrap();
        Bearer::new(keys, &TokenConfig::load(&self.env(extra)).unwrap())
    }

    pub async fn sessions(&self, extra: &[(&str, &str)]) -> Sessions {
        Sessions::new(self.store(), self.bearer(extra).await, self.clock())
            .with_events(self.events(extra))
    }

    pub async fn account_delete(&self, extra: &[(&str, &str)]) -> AccountDelete {
        AccountDelete::new(
            self.store(),
            self.bearer(extra).await,
            AccountConfig::load(&self.env(extra)).unwrap(),
            self.clock(),
        )
        .with_events(self.events(extra))
    }

    pub async fn logout(&self) -> Logout {
        self.logout_with(&[]).await
    }

    pub async fn logout_with(&self, extra: &[(&str, &str)]) -> Logout {
        Logout::new(
            self.store(),
            self.secret_parsed_by(AuthSecret::parse_pepper_only).await,
            self.clock(),
        )
        .with_events(self.events(extra))
    }

    /// Every SMS text moto accepted for `phone`, oldest first.
    pub async fn sms_to(&self, phone: &str) -> Vec<String> {
        devstack::sent_sms(&self.endpoint)
            .await
            .unwrap()
            .into_iter()
            .filter(|m| m.phone_number == phone)
            .map(|m| m.message)
            .collect()
    }

    /// The code in the latest SMS to `phone`.
    pub async fn last_code(&self, phone: &str) -> String {
        let texts = self.sms_to(phone).await;
        let text = texts.last().expect("an SMS was sent");
        let code = text
            .strip_prefix("FoodSave code: ")
            .expect("default SMS text");
        assert_eq!(code.len(), 6);
        code.to_owned()
    }

    /// Every item in the test's table.
    pub async fn items(&self) -> Vec<HashMap<String, aws_sdk_dynamodb::types::AttributeValue>> {
        self.ddb
            .scan()
            .table_name(&self.table)
            .consistent_read(true)
            .send()
            .await
            .unwrap()
            .items
            .unwrap_or_default()
    }
}

pub mod proxied;

/// `events/<name>.json` as JSON.
pub fn sample_event(name: &str) -> Value {
    let path = devstack::workspace_root()
        .join("events")
        .join(format!("{name}.json"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The request Lambda would hand the function for `event`.
fn to_request(event: &Value) -> Request {
    foodsave_auth::http::event::request_from_json(&event.to_string()).unwrap()
}

/// A request built from `events/<name>.json` with another body (None: no body).
pub fn event_request(name: &str, body: Option<&str>) -> Request {
    let mut event = sample_event(name);
    match body {
        Some(b) => event["body"] = Value::String(b.to_owned()),
        None => {
            event.as_object_mut().unwrap().remove("body");
        }
    }
    to_request(&event)
}

/// Same, with the body base64-encoded as API Gateway does for binary media types.
pub fn event_request_base64(name: &str, body: &str) -> Request {
    let mut event = sample_event(name);
    event["body"] = Value::String(base64::engine::general_purpose::STANDARD.encode(body));
    event["isBase64Encoded"] = Value::Bool(true);
    event["headers"]["content-type"] = Value::String("application/octet-stream".into());
    to_request(&event)
}

pub struct Answer {
    pub status: u16,
    pub body: Value,
    pub headers: lambda_http::http::HeaderMap,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or("")
    }
}

pub async fn call<E: Endpoint>(endpoint: &E, request: Request) -> Answer {
    // Boxed: a test that makes many calls would otherwise hold every endpoint's future
    // inline in its own, past a test thread's stack in a debug build.
    let response = Box::pin(endpoint.handle(request)).await;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = match response.body() {
        Body::Text(t) => serde_json::from_str(t).unwrap(),
        Body::Binary(b) => serde_json::from_slice(b).unwrap(),
        Body::Empty => Value::Null,
        _ => Value::Null,
    };
    Answer {
        status,
        body,
        headers,
    }
}

pub async fn post<E: Endpoint>(endpoint: &E, event: &str, body: &Value) -> Answer {
    call(endpoint, event_request(event, Some(&body.to_string()))).await
}

impl Stack {
    pub fn clock_secs(&self) -> u64 {
        self.clock.now().as_secs()
    }
}

/// The JWK Set as the `jwks` function serves it (a fresh container, so no cache).
pub async fn public_keys(stack: &Stack) -> jsonwebtoken::jwk::JwkSet {
    let answer = call(&stack.jwks().await, event_request("jwks", None)).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    serde_json::from_value(answer.body).unwrap()
}

/// Verify an access token's signature against `jwks` and return its header and claims.
pub fn verify_access_token(
    token: &str,
    jwks: &jsonwebtoken::jwk::JwkSet,
) -> (
    jsonwebtoken::Header,
    foodsave_auth::adapters::jwt::AccessClaims,
) {
    let header = jsonwebtoken::decode_header(token).unwrap();
    let jwk = jwks
        .find(header.kid.as_deref().unwrap())
        .expect("kid in the JWKS");
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_audience(&["foodsave"]);
    validation.set_issuer(&["https://auth.test.foodsave.kz/api/v1/auth"]);
    validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
    let data = jsonwebtoken::decode::<foodsave_auth::adapters::jwt::AccessClaims>(
        token,
        &key,
        &validation,
    )
    .expect("signature and claims verify");
    (data.header, data.claims)
}

pub trait NowMillis {
    fn now_millis(&self) -> foodsave_auth::domain::UnixMillis;
}

impl NowMillis for ManualClock {
    fn now_millis(&self) -> foodsave_auth::domain::UnixMillis {
        self.now()
    }
}

/// A string field of a sample event's JSON body.
pub fn body_field(event: &Value, field: &str) -> String {
    let body: Value = serde_json::from_str(event["body"].as_str().unwrap()).unwrap();
    body[field].as_str().unwrap().to_owned()
}

/// The state the sample events assume: a code 123456 for the phones of `otp-verify` and
/// `otp-verify-wrong-code`, and live sessions for the tokens in `token-refresh` and
/// `logout`.
pub async fn seed_sample_events(
    store: &DynamoDbStore,
    secret: &AuthSecret,
    sm: &aws_sdk_secretsmanager::Client,
    jwks_secret_id: &str,
) {
    use foodsave_auth::devstack::seed::{
        publish_sample_key, seed_account_session, seed_code, seed_session,
    };
    use foodsave_auth::domain::session::SessionId;
    use foodsave_auth::domain::{OtpCode, PhoneNumber, RefreshToken};
    let now = SystemClock.now();
    let code = OtpCode::parse("123456").unwrap();
    for event in ["otp-verify", "otp-verify-wrong-code"] {
        let phone = PhoneNumber::parse(&body_field(&sample_event(event), "phone")).unwrap();
        seed_code(store, secret.pepper().unwrap(), &phone, &code, now)
            .await
            .unwrap();
    }
    for event in ["token-refresh", "logout"] {
        let token = RefreshToken::parse(&body_field(&sample_event(event), "refreshToken")).unwrap();
        seed_session(store, &token, now).await.unwrap();
    }
    // The sessions the sample access tokens name, signed by the sample key.
    publish_sample_key(sm, jwks_secret_id).await.unwrap();
    for event in [
        "sessions",
        "account-delete",
        "account-delete-reauth-required",
    ] {
        let claims = sample_access_claims(event);
        let sid = SessionId::parse(claims["sid"].as_str().unwrap()).unwrap();
        let phone = PhoneNumber::parse(claims["phone_number"].as_str().unwrap()).unwrap();
        seed_account_session(store, &sid, &phone, now)
            .await
            .unwrap();
    }
    // The session events/sessions-revoke.json ends: another of the first account's.
    let claims = sample_access_claims("sessions-revoke");
    let target =
        SessionId::parse(&body_field(&sample_event("sessions-revoke"), "sessionId")).unwrap();
    let phone = PhoneNumber::parse(claims["phone_number"].as_str().unwrap()).unwrap();
    seed_account_session(store, &target, &phone, now)
        .await
        .unwrap();
}

/// The claims of the access token in a sample event's `Authorization` header.
pub fn sample_access_claims(event: &str) -> Value {
    let header = sample_event(event)["headers"]["authorization"]
        .as_str()
        .unwrap()
        .to_owned();
    let token = header.strip_prefix("Bearer ").unwrap();
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

/// A request to one of the access-token routes, as Lambda hands it over.
pub fn bearer_request(
    method: &str,
    path: &str,
    access: &str,
    body: Option<&serde_json::Value>,
) -> lambda_http::Request {
    use lambda_http::RequestExt;
    let mut event = sample_event("logout");
    let full = format!("/api/v1/auth{path}");
    event["rawPath"] = json!(full);
    event["routeKey"] = json!(format!("{method} {full}"));
    event["requestContext"]["http"]["method"] = json!(method);
    event["requestContext"]["http"]["path"] = json!(full);
    event["headers"]["authorization"] = json!(format!("Bearer {access}"));
    match body {
        Some(b) => event["body"] = json!(b.to_string()),
        None => {
            event.as_object_mut().unwrap().remove("body");
        }
    }
    let mut context = lambda_http::Context::default();
    let now = foodsave_auth::ports::Clock::now(&foodsave_auth::clock::SystemClock).as_millis();
    context.deadline = now + 10_000;
    foodsave_auth::http::event::request_from_json(&event.to_string())
        .unwrap()
        .with_lambda_context(context)
}

pub fn access_of(answer: &Answer) -> String {
    answer.body["accessToken"].as_str().unwrap().to_owned()
}

pub fn sid_of(answer: &Answer) -> String {
    let payload = access_of(answer).split('.').nth(1).unwrap().to_owned();
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, payload)
            .unwrap(),
    )
    .unwrap();
    claims["sid"].as_str().unwrap().to_owned()
}

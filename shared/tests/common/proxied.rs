//! The four POST endpoints with every AWS call of theirs going through a fault proxy in
//! front of the local stack, and requests that carry a Lambda deadline.

use std::sync::Arc;
use std::time::Duration;

use aws_config::SdkConfig;
use foodsave_auth::adapters::access_token::PublicKeys;
use foodsave_auth::adapters::{AuthSecret, DynamoDbStore, SecretCache, SnsSmsSender};
use foodsave_auth::api::account_delete::AccountDelete;
use foodsave_auth::api::bearer::Bearer;
use foodsave_auth::api::logout::Logout;
use foodsave_auth::api::otp_send::OtpSend;
use foodsave_auth::api::otp_verify::OtpVerify;
use foodsave_auth::api::sessions::Sessions;
use foodsave_auth::api::token_refresh::TokenRefresh;
use foodsave_auth::config::{AccountConfig, OtpConfig, TokenConfig};
use foodsave_auth::devstack::fault_proxy::FaultProxy;
use foodsave_auth::events::Events;
use foodsave_auth::ports::Clock;
use lambda_http::{Context, RequestExt};
use serde_json::{Value, json};

use super::{Answer, Stack, call, event_request};

/// The endpoints, every AWS call of theirs going through `proxy`.
pub struct Proxied {
    pub proxy: FaultProxy,
    pub send: OtpSend,
    pub verify: OtpVerify,
    pub refresh: TokenRefresh,
    pub logout: Logout,
    pub sessions: Sessions,
    pub account_delete: AccountDelete,
}

pub async fn proxied(stack: &Stack, extra: &[(&str, &str)]) -> Proxied {
    let proxy = FaultProxy::start(&stack.endpoint).await.unwrap();
    let aws: SdkConfig = proxy.sdk_config().await;
    let store = || DynamoDbStore::new(aws_sdk_dynamodb::Client::new(&aws), &stack.table);
    let env = stack.env(extra);
    let clock: Arc<dyn Clock> = stack.clock.clone();
    // EVENT_BUS_NAME in `extra`: events go to the bus through the proxy too.
    let events = || Events::from_env(&aws, &env).unwrap();
    let otp = OtpConfig::load(&env).unwrap();
    let sm = aws_sdk_secretsmanager::Client::new(&aws);
    let secret = |parse: fn(&str) -> Result<AuthSecret, String>| {
        SecretCache::load(sm.clone(), stack.secret_id.clone(), parse, clock.clone())
    };
    let sms = SnsSmsSender::new(&SnsSmsSender::client(&aws), None);
    let send = OtpSend::new(
        store(),
        sms,
        secret(AuthSecret::parse_pepper_only).await.unwrap(),
        otp,
        clock.clone(),
    );
    let verify = OtpVerify::new(
        store(),
        secret(AuthSecret::parse).await.unwrap(),
        OtpConfig::verify_policy(&env).unwrap(),
        TokenConfig::load(&env).unwrap(),
        AccountConfig::load(&env).unwrap(),
        clock.clone(),
    )
    .with_events(events());
    let refresh = TokenRefresh::new(
        store(),
        secret(AuthSecret::parse).await.unwrap(),
        TokenConfig::load(&env).unwrap(),
        clock.clone(),
    )
    .with_events(events());
    let logout = Logout::new(
        store(),
        secret(AuthSecret::parse_pepper_only).await.unwrap(),
        clock.clone(),
    )
    .with_events(events());
    let tokens = TokenConfig::load(&env).unwrap();
    let bearer = || async {
        let keys = SecretCache::load(
            sm.clone(),
            stack.jwks_secret_id.clone(),
            PublicKeys::parse,
            clock.clone(),
        )
        .await
        .unwrap();
        Bearer::new(keys, &tokens)
    };
    let sessions = Sessions::new(store(), bearer().await, clock.clone()).with_events(events());
    let account_delete = AccountDelete::new(
        store(),
        bearer().await,
        AccountConfig::load(&env).unwrap(),
        clock,
    )
    .with_events(events());
    Proxied {
        proxy,
        send,
        verify,
        refresh,
        logout,
        sessions,
        account_delete,
    }
}

/// A request as Lambda hands it over: with the invocation's deadline `left` from now.
pub fn request(event: &str, body: &Value, left: Duration) -> lambda_http::Request {
    let mut context = Context::default();
    let now = foodsave_auth::clock::SystemClock.now().as_millis();
    context.deadline = now + u64::try_from(left.as_millis()).unwrap();
    event_request(event, Some(&body.to_string())).with_lambda_context(context)
}

pub async fn post<E: foodsave_auth::api::Endpoint>(
    endpoint: &E,
    event: &str,
    body: &Value,
) -> Answer {
    call(endpoint, request(event, body, Duration::from_secs(10))).await
}

pub fn assert_unavailable(answer: &Answer) {
    assert_eq!(
        (answer.status, answer.code()),
        (503, "SERVICE_UNAVAILABLE"),
        "{}",
        answer.body
    );
    let wait: u64 = answer.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=30).contains(&wait));
    assert_eq!(answer.body["retryAfterSeconds"].as_u64(), Some(wait));
}

pub async fn sent_code(stack: &Stack, phone: &str) -> String {
    stack.last_code(phone).await
}

pub async fn login(stack: &Stack, p: &Proxied, phone: &str) -> Answer {
    assert_eq!(
        post(&p.send, "otp-send", &json!({ "phone": phone }))
            .await
            .status,
        200
    );
    let code = sent_code(stack, phone).await;
    let answer = post(
        &p.verify,
        "otp-verify",
        &json!({ "phone": phone, "code": code }),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    answer
}

pub fn refresh_body(answer: &Answer) -> Value {
    json!({ "refreshToken": answer.body["refreshToken"] })
}

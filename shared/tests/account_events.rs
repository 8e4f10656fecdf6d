//! Account and session events (CONTRACT §7 "Events") on the local stack's EventBridge:
//! a queue is subscribed to the bus as another service would be (a rule with an SQS
//! target), and every test reads what it delivered. Every change puts its event with
//! exactly the contract's detail; no refused or empty change puts one; while the bus
//! fails (the fault proxy) the events stay in the table and the relay, in-process and as
//! the function binary under the Lambda runtime, delivers each once the bus answers.
//! The DynamoDB requests of the paths that put events are counted with the bus answering
//! and failing.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use common::proxied;
use common::{
    Answer, Stack, access_of, bearer_request, call, post, random_phone, random_suffix, sid_of,
};
use foodsave_auth::adapters::{DynamoDbStore, EventBus};
use foodsave_auth::admin::Admin;
use foodsave_auth::budget::Budget;
use foodsave_auth::devstack;
use foodsave_auth::devstack::fault_proxy::{Fault, FaultProxy};
use foodsave_auth::devstack::lambda_runtime::{self, Posted, function_binary};
use foodsave_auth::events::{Relay, RelayReport};
use foodsave_auth::ports::Clock;
use serde_json::{Value, json};

/// The bus's name and the queue subscribed to it.
struct Bus {
    name: String,
    queue: String,
}

async fn bus(stack: &Stack) -> Bus {
    let name = format!("auth-events-{}", random_suffix());
    let queue = devstack::create_event_tap(&stack.aws, &name).await.unwrap();
    Bus { name, queue }
}

impl Bus {
    /// The environment of functions that put events on this bus.
    fn env(&self) -> Vec<(&str, &str)> {
        vec![
            ("EVENT_BUS_NAME", self.name.as_str()),
            ("OTP_SEND_LIMIT", "50"),
            ("MAX_SESSIONS_PER_ACCOUNT", "3"),
        ]
    }

    /// What the bus delivered since the last look, as (DetailType, detail) pairs.
    async fn received(&self, stack: &Stack) -> Vec<(String, Value)> {
        devstack::tapped_events(&stack.aws, &self.queue)
            .await
            .unwrap()
            .into_iter()
            .map(|event| {
                assert_eq!(event["source"], "foodsave.auth", "{event}");
                (
                    event["detail-type"].as_str().unwrap().to_owned(),
                    event["detail"].clone(),
                )
            })
            .collect()
    }

    /// The bus delivered exactly these events since the last look (any order): each
    /// given as its DetailType and its detail without `eventId`, which must be a
    /// version 4 UUID. Answers the ids.
    async fn expect(&self, stack: &Stack, expected: &[(&str, Value)]) -> Vec<String> {
        let received = self.received(stack).await;
        let mut ids = Vec::new();
        let mut got: Vec<String> = received
            .iter()
            .map(|(kind, detail)| {
                let mut detail = detail.clone();
                let id = detail
                    .as_object_mut()
                    .unwrap()
                    .remove("eventId")
                    .unwrap_or_else(|| panic!("no eventId in {kind}"));
                let id = id.as_str().unwrap().to_owned();
                assert_eq!((id.len(), &id[14..15]), (36, "4"), "{id}");
                ids.push(id);
                json!({ "type": kind, "detail": detail }).to_string()
            })
            .collect();
        let mut want: Vec<String> = expected
            .iter()
            .map(|(kind, detail)| json!({ "type": kind, "detail": detail }).to_string())
            .collect();
        got.sort();
        want.sort();
        assert_eq!(got, want);
        ids
    }
}

/// The table's events items (changes whose events the bus has not taken).
async fn stored(stack: &Stack) -> Vec<HashMap<String, AttributeValue>> {
    stack
        .items()
        .await
        .into_iter()
        .filter(|i| i["pk"] == AttributeValue::S("EVENTS".into()))
        .collect()
}

fn sub_of(answer: &Answer) -> String {
    let payload = access_of(answer).split('.').nth(1).unwrap().to_owned();
    let claims: Value = serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, payload)
            .unwrap(),
    )
    .unwrap();
    claims["sub"].as_str().unwrap().to_owned()
}

fn refresh_of(answer: &Answer) -> Value {
    json!({ "refreshToken": answer.body["refreshToken"] })
}

/// The functions with events on `bus`, over the stack's counted DynamoDB client.
struct App {
    send: foodsave_auth::api::otp_send::OtpSend,
    verify: foodsave_auth::api::otp_verify::OtpVerify,
    refresh: foodsave_auth::api::token_refresh::TokenRefresh,
    logout: foodsave_auth::api::logout::Logout,
    sessions: foodsave_auth::api::sessions::Sessions,
    account_delete: foodsave_auth::api::account_delete::AccountDelete,
}

async fn app(stack: &Stack, bus: &Bus) -> App {
    app_with(stack, &bus.env()).await
}

/// The functions with the environment `env`.
async fn app_with(stack: &Stack, env: &[(&str, &str)]) -> App {
    let env = env.to_vec();
    App {
        send: stack.otp_send(&env).await,
        verify: stack.otp_verify(&env).await,
        refresh: stack.token_refresh(&env).await,
        logout: stack.logout_with(&env).await,
        sessions: stack.sessions(&env).await,
        account_delete: stack.account_delete(&env).await,
    }
}

impl App {
    /// A login a second after the previous one (sessions sort by last use): the
    /// token pair, and the verify's DynamoDB requests.
    async fn login(&self, stack: &Stack, phone: &str) -> (Answer, usize) {
        stack.clock.advance_secs(1);
        let sent = post(&self.send, "otp-send", &json!({ "phone": phone })).await;
        assert_eq!(sent.status, 200, "{}", sent.body);
        let code = stack.last_code(phone).await;
        stack.round_trips.take();
        let answer = post(
            &self.verify,
            "otp-verify",
            &json!({ "phone": phone, "code": code }),
        )
        .await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        (answer, stack.round_trips.take())
    }

    /// A login of a phone in `OTP_TEST_NUMBERS`, a second after the previous one.
    async fn test_number_login(&self, stack: &Stack, phone: &str, code: &str) -> Answer {
        stack.clock.advance_secs(1);
        test_number_login(&self.send, &self.verify, phone, code).await
    }
}

/// A login of a phone in `OTP_TEST_NUMBERS` with its fixed code (no SMS to read back).
async fn test_number_login(
    send: &foodsave_auth::api::otp_send::OtpSend,
    verify: &foodsave_auth::api::otp_verify::OtpVerify,
    phone: &str,
    code: &str,
) -> Answer {
    let sent = post(send, "otp-send", &json!({ "phone": phone })).await;
    assert_eq!(sent.status, 200, "{}", sent.body);
    let answer = post(
        verify,
        "otp-verify",
        &json!({ "phone": phone, "code": code }),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    answer
}

#[tokio::test(flavor = "multi_thread")]
async fn every_change_puts_its_event_with_exactly_the_contract_detail() {
    let stack = Stack::new().await;
    let bus = bus(&stack).await;
    let app = app(&stack, &bus).await;
    let phone = random_phone();

    // A first login creates the account: 2 requests, and 1 to delete the stored copy.
    let (first, requests) = app.login(&stack, &phone).await;
    let sub = sub_of(&first);
    assert_eq!(requests, 3);
    bus.expect(&stack, &[("AccountCreated", json!({ "sub": sub }))])
        .await;

    // A returning login and a refresh change no account and end no session: no event,
    // and their requests are what they were without events.
    let (second, requests) = app.login(&stack, &phone).await;
    assert_eq!(requests, 3);
    let refreshed = post(&app.refresh, "token-refresh", &refresh_of(&second)).await;
    assert_eq!(refreshed.status, 200);
    assert_eq!(stack.round_trips.take(), 1);
    bus.expect(&stack, &[]).await;

    // Logout (scope session): 1 request (a two-item transaction), 1 delete.
    let out = post(&app.logout, "logout", &refresh_of(&refreshed)).await;
    assert_eq!(out.status, 200, "{}", out.body);
    assert_eq!(stack.round_trips.take(), 2);
    bus.expect(
        &stack,
        &[(
            "SessionsRevoked",
            json!({ "sub": sub, "sessionIds": [sid_of(&second)], "reason": "logout" }),
        )],
    )
    .await;

    // Logout with a token the chain has rotated past (CONTRACT §4): the first
    // transaction's failed condition returns the session, which decides the second.
    let (older, _) = app.login(&stack, &phone).await;
    let newer = post(&app.refresh, "token-refresh", &refresh_of(&older)).await;
    assert_eq!(newer.status, 200);
    stack.round_trips.take();
    let out = post(&app.logout, "logout", &refresh_of(&older)).await;
    assert_eq!(out.status, 200, "{}", out.body);
    assert_eq!(stack.round_trips.take(), 3);
    bus.expect(
        &stack,
        &[(
            "SessionsRevoked",
            json!({ "sub": sub, "sessionIds": [sid_of(&older)], "reason": "logout" }),
        )],
    )
    .await;

    // The limit (3): the fourth live session evicts the least recently used (the first).
    let (third, _) = app.login(&stack, &phone).await;
    let (fourth, _) = app.login(&stack, &phone).await;
    bus.expect(&stack, &[]).await;
    let (fifth, requests) = app.login(&stack, &phone).await;
    assert_eq!(requests, 4);
    bus.expect(
        &stack,
        &[(
            "SessionsRevoked",
            json!({ "sub": sub, "sessionIds": [sid_of(&first)], "reason": "limit" }),
        )],
    )
    .await;

    // /sessions/revoke: the check's Query, the transaction, the delete.
    stack.round_trips.take();
    let revoked = call(
        &app.sessions,
        bearer_request(
            "POST",
            "/sessions/revoke",
            &access_of(&fifth),
            Some(&json!({ "sessionId": sid_of(&third) })),
        ),
    )
    .await;
    assert_eq!(revoked.status, 200, "{}", revoked.body);
    assert_eq!(stack.round_trips.take(), 3);
    bus.expect(
        &stack,
        &[(
            "SessionsRevoked",
            json!({ "sub": sub, "sessionIds": [sid_of(&third)], "reason": "user" }),
        )],
    )
    .await;

    // Reuse (CONTRACT §4): a superseded token presented after the grace.
    let rotated = post(&app.refresh, "token-refresh", &refresh_of(&fourth)).await;
    assert_eq!(rotated.status, 200);
    stack.clock.advance_secs(11);
    let reused = post(&app.refresh, "token-refresh", &refresh_of(&fourth)).await;
    assert_eq!(reused.status, 401);
    bus.expect(
        &stack,
        &[(
            "SessionsRevoked",
            json!({ "sub": sub, "sessionIds": [sid_of(&fourth)], "reason": "reuse" }),
        )],
    )
    .await;

    // Logout scope others (the fifth stays), then all: Query, transaction, delete.
    let (sixth, _) = app.login(&stack, &phone).await;
    stack.round_trips.take();
    let others = post(
        &app.logout,
        "logout",
        &json!({ "refreshToken": sixth.body["refreshToken"], "scope": "others" }),
    )
    .await;
    assert_eq!(others.status, 200, "{}", others.body);
    assert_eq!(stack.round_trips.take(), 3);
    bus.expect(
        &stack,
        &[(
            "SessionsRevoked",
            json!({ "sub": sub, "sessionIds": [sid_of(&fifth)], "reason": "logout" }),
        )],
    )
    .await;
    let (seventh, _) = app.login(&stack, &phone).await;
    let all = post(
        &app.logout,
        "logout",
        &json!({ "refreshToken": seventh.body["refreshToken"], "scope": "all" }),
    )
    .await;
    assert_eq!(all.status, 200, "{}", all.body);
    let mut both = vec![sid_of(&sixth), sid_of(&seventh)];
    both.sort();
    bus.expect(
        &stack,
        &[(
            "SessionsRevoked",
            json!({ "sub": sub, "sessionIds": both, "reason": "logout" }),
        )],
    )
    .await;

    // Deletion: the check's Query, the transaction, the delete; two events.
    let (eighth, _) = app.login(&stack, &phone).await;
    stack.round_trips.take();
    let deleted = call(
        &app.account_delete,
        bearer_request("POST", "/account/delete", &access_of(&eighth), None),
    )
    .await;
    assert_eq!(deleted.status, 200, "{}", deleted.body);
    assert_eq!(stack.round_trips.take(), 3);
    bus.expect(
        &stack,
        &[
            (
                "SessionsRevoked",
                json!({ "sub": sub, "sessionIds": [sid_of(&eighth)], "reason": "account_deleted" }),
            ),
            ("AccountDeleted", json!({ "sub": sub })),
        ],
    )
    .await;

    // The operator's actions put the same events.
    let admin =
        Admin::new(stack.store(), stack.clock.clone(), 300).with_events(stack.events(&bus.env()));
    let parsed = foodsave_auth::domain::PhoneNumber::parse(&phone).unwrap();
    let (again, _) = app.login(&stack, &phone).await;
    let new_sub = sub_of(&again);
    assert_ne!(new_sub, sub);
    admin.revoke(&parsed, None).await.unwrap();
    let (blocked, _) = app.login(&stack, &phone).await;
    admin.block(&parsed, Some("test")).await.unwrap();
    admin.unblock(&parsed).await.unwrap();
    let (last, _) = app.login(&stack, &phone).await;
    admin.delete_account(&parsed).await.unwrap();
    bus.expect(
        &stack,
        &[
            ("AccountCreated", json!({ "sub": new_sub })),
            (
                "SessionsRevoked",
                json!({ "sub": new_sub, "sessionIds": [sid_of(&again)], "reason": "admin" }),
            ),
            (
                "SessionsRevoked",
                json!({ "sub": new_sub, "sessionIds": [sid_of(&blocked)], "reason": "admin" }),
            ),
            (
                "SessionsRevoked",
                json!({ "sub": new_sub, "sessionIds": [sid_of(&last)], "reason": "account_deleted" }),
            ),
            ("AccountDeleted", json!({ "sub": new_sub })),
        ],
    )
    .await;

    // Every event went through: nothing is left for the relay.
    assert!(stored(&stack).await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn no_event_for_a_change_that_did_not_happen() {
    let stack = Stack::new().await;
    let bus = bus(&stack).await;
    let app = app(&stack, &bus).await;
    let phone = random_phone();
    let (login, _) = app.login(&stack, &phone).await;
    bus.expect(
        &stack,
        &[("AccountCreated", json!({ "sub": sub_of(&login) }))],
    )
    .await;

    // A wrong code, a send, a list: nothing changes an account or ends a session.
    let sent = post(&app.send, "otp-send", &json!({ "phone": phone })).await;
    assert_eq!(sent.status, 200);
    let code = stack.last_code(&phone).await;
    let wrong = if code == "000000" { "111111" } else { "000000" };
    let answer = post(
        &app.verify,
        "otp-verify",
        &json!({ "phone": phone, "code": wrong }),
    )
    .await;
    assert_eq!(answer.status, 400);
    let listed = call(
        &app.sessions,
        bearer_request("GET", "/sessions", &access_of(&login), None),
    )
    .await;
    assert_eq!(listed.status, 200);
    // Refused: an unknown token, another session's id, a stale sign-in for deletion.
    let unknown = post(
        &app.logout,
        "logout",
        &json!({ "refreshToken": "not-a-token-we-issued" }),
    )
    .await;
    assert_eq!(unknown.status, 400);
    let not_found = call(
        &app.sessions,
        bearer_request(
            "POST",
            "/sessions/revoke",
            &access_of(&login),
            Some(&json!({ "sessionId": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA" })),
        ),
    )
    .await;
    assert_eq!(not_found.status, 404);
    // Revocations that revoke nothing: no other session to log out.
    let others = post(
        &app.logout,
        "logout",
        &json!({ "refreshToken": login.body["refreshToken"], "scope": "others" }),
    )
    .await;
    assert_eq!(others.status, 200);
    stack.clock.advance_secs(301);
    let stale = call(
        &app.account_delete,
        bearer_request("POST", "/account/delete", &access_of(&login), None),
    )
    .await;
    assert_eq!(stale.code(), "REAUTH_REQUIRED");
    bus.expect(&stack, &[]).await;

    // A logout, then the same token again (the session is already ended).
    let out = post(&app.logout, "logout", &refresh_of(&login)).await;
    assert_eq!(out.status, 200);
    bus.expect(
        &stack,
        &[(
            "SessionsRevoked",
            json!({ "sub": sub_of(&login), "sessionIds": [sid_of(&login)], "reason": "logout" }),
        )],
    )
    .await;
    let again = post(&app.logout, "logout", &refresh_of(&login)).await;
    assert_eq!(again.status, 400);
    // The operator's revoke and block of an account with no live session, unlock,
    // unblock of a phone that is not blocked, a block of a phone with no account.
    let admin =
        Admin::new(stack.store(), stack.clock.clone(), 300).with_events(stack.events(&bus.env()));
    let parsed = foodsave_auth::domain::PhoneNumber::parse(&phone).unwrap();
    assert!(admin.revoke(&parsed, None).await.unwrap().1.is_empty());
    admin.block(&parsed, None).await.unwrap();
    admin.unblock(&parsed).await.unwrap();
    admin.unlock(&parsed).await.unwrap();
    let other = foodsave_auth::domain::PhoneNumber::parse(&random_phone()).unwrap();
    admin.block(&other, None).await.unwrap();
    assert!(admin.delete_account(&other).await.is_err());
    bus.expect(&stack, &[]).await;
    assert!(stored(&stack).await.is_empty());
}

/// The DynamoDB operations a proxy forwarded, without the bus's.
fn dynamodb_requests(proxy: &FaultProxy) -> usize {
    proxy
        .counts()
        .iter()
        .filter(|(op, _)| {
            !matches!(
                op.as_str(),
                "PutEvents" | "Publish" | "GetSecretValue" | "DescribeSecret"
            )
        })
        .map(|(_, n)| n)
        .sum()
}

fn relay(stack: &Stack, bus: &Bus, aws: &aws_config::SdkConfig) -> Relay {
    Relay::new(
        DynamoDbStore::new(aws_sdk_dynamodb::Client::new(aws), &stack.table),
        EventBus::new(aws_sdk_eventbridge::Client::new(aws), &bus.name),
        stack.clock.clone(),
    )
}

/// The ids of the stored events, in the relay's order.
async fn stored_ids(stack: &Stack) -> Vec<String> {
    let mut items = stored(stack).await;
    items.sort_by_key(|i| format!("{:?}", i["sk"]));
    items
        .iter()
        .flat_map(|i| {
            let AttributeValue::S(text) = &i["events"] else {
                panic!("events is a string")
            };
            let entries: Vec<Value> = serde_json::from_str(text).unwrap();
            entries
                .into_iter()
                .map(|e| e["id"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn events_kept_while_the_bus_fails_arrive_once_it_answers_and_none_is_invented() {
    let stack = Stack::new().await;
    let bus = bus(&stack).await;
    let p = proxied::proxied(&stack, &bus.env()).await;
    let phone = random_phone();
    let other_phone = random_phone();

    // The bus answers 500 to every put: the requests still answer 200, with the
    // DynamoDB requests of their change and no delete.
    p.proxy.always("PutEvents", Fault::ServerError(500));
    assert_eq!(
        post(&p.send, "otp-send", &json!({ "phone": phone }))
            .await
            .status,
        200
    );
    let code = stack.last_code(&phone).await;
    let before = dynamodb_requests(&p.proxy);
    let first = post(
        &p.verify,
        "otp-verify",
        &json!({ "phone": phone, "code": code }),
    )
    .await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(dynamodb_requests(&p.proxy) - before, 2);
    let before = dynamodb_requests(&p.proxy);
    let out = post(&p.logout, "logout", &refresh_of(&first)).await;
    assert_eq!(out.status, 200, "{}", out.body);
    assert_eq!(dynamodb_requests(&p.proxy) - before, 1);

    // The bus answers 200 with FailedEntryCount > 0: the same.
    p.proxy.clear();
    p.proxy.always("PutEvents", Fault::EntriesFailed);
    let second = proxied::login(&stack, &p, &other_phone).await;
    let before = dynamodb_requests(&p.proxy);
    let deleted = call(
        &p.account_delete,
        bearer_request("POST", "/account/delete", &access_of(&second), None),
    )
    .await;
    assert_eq!(deleted.status, 200, "{}", deleted.body);
    assert_eq!(dynamodb_requests(&p.proxy) - before, 2);

    // A change whose answer was lost (the transaction applied, its answer late): the
    // round that recognises it leaves its events to the relay.
    p.proxy.clear();
    let third = proxied::login(&stack, &p, &phone).await;
    bus.received(&stack).await;
    p.proxy.once(
        "TransactWriteItems",
        Fault::SlowAnswer(Duration::from_secs(3)),
    );
    let all = post(
        &p.logout,
        "logout",
        &json!({ "refreshToken": third.body["refreshToken"], "scope": "all" }),
    )
    .await;
    assert_eq!(all.status, 200, "{}", all.body);

    let sub = sub_of(&first);
    let other_sub = sub_of(&second);
    let expected = [
        ("AccountCreated", json!({ "sub": sub })),
        (
            "SessionsRevoked",
            json!({ "sub": sub, "sessionIds": [sid_of(&first)], "reason": "logout" }),
        ),
        ("AccountCreated", json!({ "sub": other_sub })),
        (
            "SessionsRevoked",
            json!({ "sub": other_sub, "sessionIds": [sid_of(&second)], "reason": "account_deleted" }),
        ),
        ("AccountDeleted", json!({ "sub": other_sub })),
        (
            "SessionsRevoked",
            json!({ "sub": sub, "sessionIds": [sid_of(&third)], "reason": "logout" }),
        ),
    ];
    bus.expect(&stack, &[]).await;
    let kept = stored_ids(&stack).await;
    assert_eq!(kept.len(), expected.len());

    // The relay with the bus still failing: nothing delivered, nothing lost. Events
    // younger than the grace are left alone.
    let aws = p.proxy.sdk_config().await;
    let relay = relay(&stack, &bus, &aws);
    p.proxy.always("PutEvents", Fault::ServerError(503));
    let budget = || Budget::within(Duration::from_secs(60));
    let report = relay.run(&budget()).await.unwrap();
    assert_eq!((report.delivered, report.failed), (0, 0), "{report:?}");
    stack.clock.advance_secs(31);
    let report = relay.run(&budget()).await.unwrap();
    assert_eq!(report.delivered, 0, "{report:?}");
    assert!(report.failed > 0, "{report:?}");
    assert!(report.oldest_age_secs >= 31, "{report:?}");
    assert_eq!(stored_ids(&stack).await, kept);
    bus.expect(&stack, &[]).await;

    // The bus answers: every kept event arrives once, with the id it was kept with.
    p.proxy.clear();
    let report = relay.run(&budget()).await.unwrap();
    assert_eq!(
        report,
        RelayReport {
            delivered: expected.len(),
            ..RelayReport::default()
        }
    );
    let mut ids = bus.expect(&stack, &expected).await;
    ids.sort();
    let mut kept = kept;
    kept.sort();
    assert_eq!(ids, kept);
    assert!(stored(&stack).await.is_empty());
    // Nothing is invented by a run with nothing kept.
    assert_eq!(relay.run(&budget()).await.unwrap(), RelayReport::default());
    bus.expect(&stack, &[]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_relay_function_delivers_kept_events_through_the_lambda_runtime() {
    // Changes made two minutes ago, while the bus failed.
    let now = foodsave_auth::clock::SystemClock.now();
    let two_minutes_ago = foodsave_auth::domain::UnixMillis(now.as_millis() - 120_000);
    let stack = Stack::starting_at(two_minutes_ago).await;
    let bus = bus(&stack).await;
    let p = proxied::proxied(&stack, &bus.env()).await;
    p.proxy.always("PutEvents", Fault::Throttle);
    let phone = random_phone();
    let login = proxied::login(&stack, &p, &phone).await;
    let out = post(&p.logout, "logout", &refresh_of(&login)).await;
    assert_eq!(out.status, 200);
    let kept = stored_ids(&stack).await;
    assert_eq!(kept.len(), 2);

    // The function binary, its EventBridge calls through the proxy.
    let env: Vec<(String, String)> = [
        ("TABLE_NAME", stack.table.as_str()),
        ("EVENT_BUS_NAME", bus.name.as_str()),
        ("AWS_LAMBDA_LOG_FORMAT", "JSON"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .chain([("AWS_ENDPOINT_URL_EVENTBRIDGE".to_owned(), p.proxy.url())])
    .collect();
    let binary = function_binary("event-relay").unwrap();
    let event = common::sample_event("event-relay");
    let run = lambda_runtime::invoke(&binary, event.clone(), &env)
        .await
        .unwrap();
    let Posted::Response(report) = &run.posted else {
        panic!("{:?}\n{}", run.posted, run.logs)
    };
    assert_eq!(report["delivered"], 0, "{report}");
    assert_eq!(report["failed"], 2, "{report}");
    assert!(report["oldestPendingAgeSeconds"].as_u64().unwrap() >= 120);
    // Its summary line is the alarm's metric (EMF).
    let metric: Value = run
        .logs
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| l.get("_aws").is_some())
        .unwrap_or_else(|| panic!("no EMF line in\n{}", run.logs));
    assert!(metric["PendingEventAgeSeconds"].as_u64().unwrap() >= 120);
    assert_eq!(
        metric["_aws"]["CloudWatchMetrics"][0]["Namespace"],
        "FoodSave/Auth"
    );
    assert_eq!(stored_ids(&stack).await, kept);
    bus.expect(&stack, &[]).await;

    p.proxy.clear();
    let run = lambda_runtime::invoke(&binary, event, &env).await.unwrap();
    let Posted::Response(report) = &run.posted else {
        panic!("{:?}\n{}", run.posted, run.logs)
    };
    assert_eq!(report["delivered"], 2, "{report}");
    assert_eq!(report["oldestPendingAgeSeconds"], 0, "{report}");
    let sub = sub_of(&login);
    let mut ids = bus
        .expect(
            &stack,
            &[
                ("AccountCreated", json!({ "sub": sub })),
                (
                    "SessionsRevoked",
                    json!({ "sub": sub, "sessionIds": [sid_of(&login)], "reason": "logout" }),
                ),
            ],
        )
        .await;
    ids.sort();
    let mut kept = kept;
    kept.sort();
    assert_eq!(ids, kept);
    assert!(stored(&stack).await.is_empty());
    // No phone number in any log line of the relay.
    assert!(!run.logs.contains(&phone));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_bus_or_a_conflicting_transaction_still_gives_one_event_per_change() {
    let stack = Stack::new().await;
    let bus = bus(&stack).await;
    let p = proxied::proxied(&stack, &bus.env()).await;
    let phone = random_phone();
    let first = proxied::login(&stack, &p, &phone).await;
    bus.expect(
        &stack,
        &[("AccountCreated", json!({ "sub": sub_of(&first) }))],
    )
    .await;

    // The bus never answers: the logout answers 200 inside the invocation's time, and
    // its event is kept for the relay.
    p.proxy
        .always("PutEvents", Fault::Stall(Duration::from_secs(30)));
    let started = std::time::Instant::now();
    let out = post(&p.logout, "logout", &refresh_of(&first)).await;
    assert_eq!(out.status, 200, "{}", out.body);
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(stored_ids(&stack).await.len(), 1);
    p.proxy.clear();

    // The revocation's two-item transaction meets another transaction holding the
    // session: the same revocation again, one event.
    let second = proxied::login(&stack, &p, &phone).await;
    bus.received(&stack).await;
    p.proxy.once(
        "TransactWriteItems",
        Fault::transaction_canceled(["TransactionConflict", "None"]),
    );
    let out = post(&p.logout, "logout", &refresh_of(&second)).await;
    assert_eq!(out.status, 200, "{}", out.body);
    let sub = sub_of(&second);
    bus.expect(
        &stack,
        &[(
            "SessionsRevoked",
            json!({ "sub": sub, "sessionIds": [sid_of(&second)], "reason": "logout" }),
        )],
    )
    .await;
    // Only the stalled logout's event is still kept.
    assert_eq!(stored_ids(&stack).await.len(), 1);
}

/// At the template's default limit (20, `MAX_SESSIONS_PER_ACCOUNT` unset) and at the
/// most it may be (90): the login past the limit evicts the least recently used session
/// and only it, and the deletion ends every live session and deletes the evicted one in
/// one transaction (at 90: 91 sessions, the account, the phone's two items and the
/// events item, 95 of DynamoDB's 100), with one `SessionsRevoked` naming every session
/// it ended.
#[tokio::test(flavor = "multi_thread")]
async fn at_the_default_limit_and_at_the_cap_one_deletion_ends_every_session() {
    let stack = Stack::new().await;
    let bus = bus(&stack).await;
    for limit in [None, Some(foodsave_auth::config::MAX_SESSIONS_LIMIT)] {
        let phone = random_phone();
        let code = "246810";
        let test_number = format!("{phone}={code}");
        let limit_text = limit.map(|l| l.to_string());
        let mut env = vec![
            ("EVENT_BUS_NAME", bus.name.as_str()),
            ("OTP_SEND_LIMIT", "100"),
            ("OTP_TEST_NUMBERS", test_number.as_str()),
        ];
        if let Some(text) = &limit_text {
            env.push(("MAX_SESSIONS_PER_ACCOUNT", text));
        }
        let app = app_with(&stack, &env).await;
        let limit = usize::try_from(limit.unwrap_or(20)).unwrap();

        let mut logins = Vec::new();
        for _ in 0..=limit {
            logins.push(app.test_number_login(&stack, &phone, code).await);
        }
        let sub = sub_of(&logins[0]);
        bus.expect(
            &stack,
            &[
                ("AccountCreated", json!({ "sub": sub })),
                (
                    "SessionsRevoked",
                    json!({ "sub": sub, "sessionIds": [sid_of(&logins[0])], "reason": "limit" }),
                ),
            ],
        )
        .await;
        let last = access_of(logins.last().unwrap());
        let listed = call(
            &app.sessions,
            bearer_request("GET", "/sessions", &last, None),
        )
        .await;
        assert_eq!(listed.status, 200, "{}", listed.body);
        assert_eq!(listed.body["sessions"].as_array().unwrap().len(), limit);

        // The account's read, the one transaction, the events item's delete.
        stack.round_trips.take();
        let deleted = call(
            &app.account_delete,
            bearer_request("POST", "/account/delete", &last, None),
        )
        .await;
        assert_eq!(deleted.status, 200, "{}", deleted.body);
        assert_eq!(stack.round_trips.take(), 3, "limit {limit}");

        let mut received = bus.received(&stack).await;
        received.sort_by(|a, b| a.0.cmp(&b.0));
        let kinds: Vec<&str> = received.iter().map(|(kind, _)| kind.as_str()).collect();
        assert_eq!(kinds, ["AccountDeleted", "SessionsRevoked"]);
        assert_eq!(received[0].1["sub"], sub.as_str());
        let revoked = &received[1].1;
        assert_eq!(
            (&revoked["sub"], &revoked["reason"]),
            (&json!(sub), &json!("account_deleted"))
        );
        let mut ended: Vec<&str> = revoked["sessionIds"]
            .as_array()
            .unwrap()
            .iter()
            .map(|id| id.as_str().unwrap())
            .collect();
        ended.sort_unstable();
        let mut live: Vec<String> = logins[1..].iter().map(sid_of).collect();
        live.sort();
        assert_eq!(ended, live, "limit {limit}");
        // Nothing of the account is left, nor a kept event.
        let account_pk = AttributeValue::S(format!("ACCOUNT#{sub}"));
        assert!(stack.items().await.iter().all(|i| i["pk"] != account_pk));
        assert!(stored(&stack).await.is_empty());
    }
}

/// A backlog bigger than one relay page (50 items) and than one put (10 entries), kept
/// while the bus refused every entry: one run delivers every event once, in puts of ten, and leaves
/// nothing.
#[tokio::test(flavor = "multi_thread")]
async fn the_relay_delivers_a_backlog_of_several_pages_in_puts_of_ten() {
    const CHANGES: usize = 73;
    let stack = Stack::new().await;
    let bus = bus(&stack).await;
    let code = "135790";
    let phones: Vec<String> = (0..CHANGES).map(|_| random_phone()).collect();
    let test_numbers = phones
        .iter()
        .map(|phone| format!("{phone}={code}"))
        .collect::<Vec<_>>()
        .join(",");
    let mut env = bus.env();
    env.push(("OTP_TEST_NUMBERS", test_numbers.as_str()));
    let p = proxied::proxied(&stack, &env).await;
    // Refused entries (answered at once, not retried by the SDK) keep the events too.
    p.proxy.always("PutEvents", Fault::EntriesFailed);
    let mut subs = Vec::new();
    for phone in &phones {
        let login = test_number_login(&p.send, &p.verify, phone, code).await;
        subs.push(sub_of(&login));
    }
    let kept = stored_ids(&stack).await;
    assert_eq!(kept.len(), CHANGES);
    bus.expect(&stack, &[]).await;

    p.proxy.clear();
    let puts_before = p.proxy.count("PutEvents");
    stack.clock.advance_secs(31);
    let aws = p.proxy.sdk_config().await;
    let relay = relay(&stack, &bus, &aws);
    let report = relay
        .run(&Budget::within(Duration::from_secs(60)))
        .await
        .unwrap();
    assert_eq!(
        report,
        RelayReport {
            delivered: CHANGES,
            ..RelayReport::default()
        }
    );
    // Two pages (50 and 23 items), each in puts of at most ten: 5 + 3.
    assert_eq!(p.proxy.count("PutEvents") - puts_before, 8);
    let expected: Vec<(&str, Value)> = subs
        .iter()
        .map(|sub| ("AccountCreated", json!({ "sub": sub })))
        .collect();
    let mut ids = bus.expect(&stack, &expected).await;
    ids.sort();
    let mut kept = kept;
    kept.sort();
    assert_eq!(ids, kept);
    assert!(stored(&stack).await.is_empty());
}

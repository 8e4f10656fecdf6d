//! Every file in `events/` through the real Lambda runtime path: each function binary
//! (from `cargo build`) is started against a minimal Lambda Runtime API served here, the
//! event is handed out on `/invocation/next`, and the payload it posts back is checked.
//! This is what `sam local invoke -e events/<file>` does inside Docker, without Docker.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::sync::Arc;

use common::{body_field, random_suffix, sample_event, seed_sample_events};
use foodsave_auth::adapters::AuthSecret;
use foodsave_auth::adapters::DynamoDbStore;
use foodsave_auth::adapters::secrets::fetch_secret_string;
use foodsave_auth::clock::SystemClock;
use foodsave_auth::devstack;
use foodsave_auth::devstack::lambda_runtime::{self, Posted, function_binary, function_of};
use foodsave_auth::devstack::seed::function_env;
use serde_json::{Value, json};

/// What each event must produce, in the order they run (sends after the verifies that
/// share nothing with them; the fourth send of one phone is the rate-limited one).
const EXPECTED: [(&str, Outcome); 28] = [
    ("otp-verify", Outcome::Status(200)),
    ("otp-verify-wrong-code", Outcome::Status(400)),
    ("otp-verify-expired-code", Outcome::Status(401)),
    ("otp-verify-bad-code", Outcome::Status(400)),
    ("otp-send", Outcome::Status(200)),
    ("otp-send-rest-api", Outcome::Status(200)),
    ("otp-send-function-url", Outcome::Status(200)),
    ("otp-send-rate-limited", Outcome::Status(429)),
    ("otp-send-bad-phone", Outcome::Status(400)),
    ("otp-send-no-body", Outcome::Status(400)),
    ("token-refresh", Outcome::Status(200)),
    ("token-refresh-unknown-token", Outcome::Status(401)),
    ("token-refresh-empty-token", Outcome::Status(400)),
    ("logout", Outcome::Status(200)),
    ("logout-unknown-token", Outcome::Status(400)),
    ("logout-not-json", Outcome::Status(400)),
    ("logout-alb", Outcome::Status(400)),
    ("sessions", Outcome::Status(200)),
    ("sessions-bad-token", Outcome::Status(401)),
    ("sessions-revoke", Outcome::Status(200)),
    ("account-delete-reauth-required", Outcome::Status(401)),
    ("account-delete", Outcome::Status(200)),
    ("jwks", Outcome::Status(200)),
    ("jwks-openid-configuration", Outcome::Status(200)),
    ("jwks-not-found", Outcome::Status(404)),
    ("key-rotation", Outcome::Succeeds),
    ("key-rotation-revoke-unknown-kid", Outcome::Fails),
    ("event-relay", Outcome::Relays),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Status(u16),
    Succeeds,
    Fails,
    /// The relay's report (its events were put by the functions themselves).
    Relays,
}

async fn invoke(function: &str, event: Value, env: &[(String, String)]) -> (Posted, String) {
    let binary = function_binary(function).unwrap();
    let invocation = lambda_runtime::invoke(&binary, event, env).await.unwrap();
    (invocation.posted, invocation.logs)
}

#[tokio::test(flavor = "multi_thread")]
async fn every_sample_event_runs_through_the_lambda_runtime_with_the_expected_outcome() {
    // Every file in events/ is listed, and every listed file exists.
    let mut on_disk: Vec<String> = std::fs::read_dir(devstack::workspace_root().join("events"))
        .unwrap()
        .filter_map(|e| {
            e.ok()?
                .file_name()
                .to_str()?
                .strip_suffix(".json")
                .map(str::to_owned)
        })
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = EXPECTED.iter().map(|(n, _)| (*n).to_owned()).collect();
    listed.sort();
    assert_eq!(on_disk, listed, "events/ and this test's list differ");

    let aws = devstack::sdk_config().await;
    let ddb = aws_sdk_dynamodb::Client::new(&aws);
    let sm = aws_sdk_secretsmanager::Client::new(&aws);
    let suffix = random_suffix();
    let table = format!("auth-events-{suffix}");
    devstack::create_table(&ddb, &table).await.unwrap();
    let rotation_event = sample_event("key-rotation");
    let auth_secret = rotation_event["SecretId"].as_str().unwrap().to_owned();
    let jwks_secret = format!("{auth_secret}-jwks-{suffix}");
    devstack::create_secrets(&sm, &auth_secret, &jwks_secret, Arc::new(SystemClock))
        .await
        .unwrap();
    let secret = AuthSecret::parse(&fetch_secret_string(&sm, &auth_secret).await.unwrap()).unwrap();
    seed_sample_events(
        &DynamoDbStore::new(ddb.clone(), &table),
        &secret,
        &sm,
        &jwks_secret,
    )
    .await;

    // The functions put their events on a local bus, which a queue is subscribed to.
    let bus = format!("auth-events-{suffix}");
    let tap = devstack::create_event_tap(&aws, &bus).await.unwrap();
    let mut env = function_env(&table, &auth_secret, &jwks_secret);
    env.push(("EVENT_BUS_NAME".to_owned(), bus.clone()));
    let mut secrets_in_events: Vec<String> = vec!["123456".into(), "654321".into()];
    for event in ["token-refresh", "logout"] {
        secrets_in_events.push(body_field(&sample_event(event), "refreshToken"));
    }
    for event in [
        "sessions",
        "account-delete",
        "account-delete-reauth-required",
    ] {
        let header = sample_event(event)["headers"]["authorization"].clone();
        secrets_in_events.push(
            header
                .as_str()
                .unwrap()
                .trim_start_matches("Bearer ")
                .to_owned(),
        );
    }

    for (name, expected) in EXPECTED {
        let function =
            function_of(name).unwrap_or_else(|| panic!("events/{name}.json names no function"));
        let (posted, logs) = invoke(function, sample_event(name), &env).await;
        match (expected, &posted) {
            (Outcome::Status(status), Posted::Response(payload)) => {
                assert_eq!(
                    payload["statusCode"], status,
                    "events/{name}.json via {function}: {payload}"
                );
                let body: Value =
                    serde_json::from_str(payload["body"].as_str().unwrap_or("null")).unwrap();
                if status == 200 && (name == "otp-verify" || name == "token-refresh") {
                    assert_eq!(body["tokenType"], "Bearer", "{name}");
                    let issued = body["refreshToken"].as_str().unwrap().to_owned();
                    assert!(
                        !logs.contains(&issued),
                        "{name} logged the refresh token it issued"
                    );
                    let access = body["accessToken"].as_str().unwrap().to_owned();
                    assert!(
                        !logs.contains(&access),
                        "{name} logged the access token it issued"
                    );
                }
                if status >= 400 {
                    assert!(
                        body["code"].is_string() && body["message"].is_string(),
                        "{name}: {body}"
                    );
                }
            }
            (Outcome::Succeeds, Posted::Response(payload)) => {
                assert_eq!(payload["ok"], json!(true), "{name}")
            }
            (Outcome::Relays, Posted::Response(report)) => {
                assert_eq!(report["failed"], 0, "{name}: {report}");
                assert_eq!(report["oldestPendingAgeSeconds"], 0, "{name}: {report}");
            }
            (Outcome::Fails, Posted::Error(error)) => {
                assert!(error["errorMessage"].is_string(), "{name}: {error}")
            }
            (expected, posted) => panic!(
                "events/{name}.json via {function}: expected {expected:?}, got {posted:?}\n{logs}"
            ),
        }
        // Logs are JSON lines (Lambda's advanced logging) and never carry a code or token.
        for line in logs.lines().filter(|l| !l.trim().is_empty()) {
            assert!(
                serde_json::from_str::<Value>(line).is_ok(),
                "{name}: not a JSON log line: {line}"
            );
        }
        for secret in &secrets_in_events {
            assert!(
                !logs.contains(secret.as_str()),
                "{name} logged a code or token"
            );
        }
        assert!(
            !logs.contains("+77001234567"),
            "{name} logged a full phone number"
        );
    }
    // What the functions put on the bus (CONTRACT §7 "Events"): the sample logout, the
    // revoked session and the deleted account at least; no phone, code or token.
    let delivered = devstack::tapped_events(&aws, &tap).await.unwrap();
    let kinds: Vec<&str> = delivered
        .iter()
        .map(|e| e["detail-type"].as_str().unwrap())
        .collect();
    for kind in ["SessionsRevoked", "AccountDeleted"] {
        assert!(kinds.contains(&kind), "{kind} not among {kinds:?}");
    }
    for event in &delivered {
        let text = event.to_string();
        assert!(!text.contains("+77001234567"), "{text}");
        for secret in &secrets_in_events {
            assert!(!text.contains(secret.as_str()), "{text}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_function_that_cannot_init_reports_why_to_the_runtime_api() {
    let aws = devstack::sdk_config().await;
    let ddb = aws_sdk_dynamodb::Client::new(&aws);
    let table = format!("auth-init-{}", random_suffix());
    devstack::create_table(&ddb, &table).await.unwrap();
    let env = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    };
    let cases = [
        ("logout", env(&[]), "TABLE_NAME"),
        ("logout", env(&[("TABLE_NAME", "  ")]), "TABLE_NAME"),
        (
            "otp-send",
            env(&[("TABLE_NAME", &table), ("AUTH_SECRET_ID", "no-such-secret")]),
            "no-such-secret",
        ),
        (
            "otp-send",
            env(&[
                ("TABLE_NAME", &table),
                ("AUTH_SECRET_ID", "x"),
                ("OTP_SEND_LIMIT", "0"),
            ]),
            "OTP_SEND_LIMIT",
        ),
        (
            "jwks",
            env(&[("JWKS_SECRET_ID", "x"), ("JWT_ISSUER", "not a url")]),
            "JWT_ISSUER",
        ),
        ("key-rotation", env(&[]), "JWKS_SECRET_ID"),
    ];
    for (function, env, named) in cases {
        let (posted, logs) = invoke(function, sample_event("jwks"), &env).await;
        let Posted::Error(report) = posted else {
            panic!("{function} started without {named}: {posted:?}");
        };
        assert_eq!(report["errorType"], "Runtime.InitError", "{function}");
        let message = report["errorMessage"].as_str().unwrap();
        assert!(message.contains(named), "{function}: {message}");
        assert!(
            logs.contains("init failed"),
            "{function} logged no init failure: {logs}"
        );
    }
}

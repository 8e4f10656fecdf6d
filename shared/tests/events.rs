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

use std::collections::HashMap;
use std::convert::Infallible;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use common::random_suffix;
use foodsave_auth::adapters::AuthSecret;
use foodsave_auth::adapters::DynamoDbStore;
use foodsave_auth::adapters::secrets::fetch_secret_string;
use foodsave_auth::clock::SystemClock;
use foodsave_auth::devstack;
use foodsave_auth::domain::otp::ActiveCode;
use foodsave_auth::domain::session::SessionId;
use foodsave_auth::domain::{
    CodeMac, OtpCode, OtpState, PhoneNumber, RefreshToken, Session, StoredRefreshToken,
};
use foodsave_auth::ports::Clock;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;
use tokio::sync::{Mutex, mpsc};

const FUNCTIONS: [&str; 6] = [
    "otp-send",
    "otp-verify",
    "token-refresh",
    "logout",
    "jwks",
    "key-rotation",
];

/// What each event must produce, in the order they run (sends after the verifies that
/// share nothing with them; the fourth send of one phone is the rate-limited one).
const EXPECTED: [(&str, Outcome); 22] = [
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
    ("jwks", Outcome::Status(200)),
    ("jwks-openid-configuration", Outcome::Status(200)),
    ("jwks-not-found", Outcome::Status(404)),
    ("key-rotation", Outcome::Succeeds),
    ("key-rotation-revoke-unknown-kid", Outcome::Fails),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Status(u16),
    Succeeds,
    Fails,
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn binary(name: &str) -> PathBuf {
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root().join("target"), PathBuf::from);
    let path = target.join("debug").join(name);
    assert!(
        path.exists(),
        "{} is missing: build the functions first (`cargo build --workspace`, as `make test` does)",
        path.display()
    );
    path
}

fn function_of(event: &str) -> &'static str {
    FUNCTIONS
        .iter()
        .filter(|f| event == **f || event.starts_with(&format!("{f}-")))
        .max_by_key(|f| f.len())
        .copied()
        .unwrap_or_else(|| panic!("events/{event}.json names no function"))
}

/// What the function posted to the Runtime API.
#[derive(Debug)]
enum Posted {
    Response(Value),
    /// An invocation error (`/invocation/{id}/error`) or an init error (`/init/error`).
    Error(Value),
}

/// Serve the Lambda Runtime API for one invocation of `event` on a free port.
async fn runtime_api(event: Value) -> (String, mpsc::Receiver<Posted>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (tx, rx) = mpsc::channel(4);
    let pending = Arc::new(Mutex::new(Some(event)));
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (tx, pending) = (tx.clone(), Arc::clone(&pending));
            tokio::spawn(async move {
                let service = service_fn(move |req: hyper::Request<Incoming>| {
                    let (tx, pending) = (tx.clone(), Arc::clone(&pending));
                    async move { Ok::<_, Infallible>(runtime_route(req, tx, pending).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, rx)
}

async fn runtime_route(
    req: hyper::Request<Incoming>,
    tx: mpsc::Sender<Posted>,
    pending: Arc<Mutex<Option<Value>>>,
) -> hyper::Response<Full<Bytes>> {
    let path = req.uri().path().to_owned();
    if path.ends_with("/runtime/invocation/next") {
        let Some(event) = pending.lock().await.take() else {
            // One invocation only: the next poll waits until the process is stopped.
            tokio::time::sleep(Duration::from_secs(3600)).await;
            return hyper::Response::new(Full::new(Bytes::new()));
        };
        let deadline = SystemClock.now().as_millis() + 30_000;
        return hyper::Response::builder()
            .header(
                "lambda-runtime-aws-request-id",
                "8476a536-e9f4-11e8-9739-2dfe598c3fcd",
            )
            .header("lambda-runtime-deadline-ms", deadline.to_string())
            .header(
                "lambda-runtime-invoked-function-arn",
                "arn:aws:lambda:us-east-1:123456789012:function:foodsave-auth",
            )
            .header(
                "lambda-runtime-trace-id",
                "Root=1-5bef4de7-ad49b0e87f6ef6c87fc2e700;Parent=9a9197af755a6419;Sampled=1",
            )
            .body(Full::new(Bytes::from(event.to_string())))
            .unwrap();
    }
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let value: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let posted = if path.ends_with("/response") {
        Posted::Response(value)
    } else {
        Posted::Error(value)
    };
    let _ = tx.send(posted).await;
    let mut response = hyper::Response::new(Full::new(Bytes::from_static(b"{}")));
    *response.status_mut() = hyper::StatusCode::ACCEPTED;
    response
}

/// Run one function binary for one event; returns what it posted and what it logged.
async fn invoke(function: &str, event: Value, env: &HashMap<&str, String>) -> (Posted, String) {
    let (addr, mut rx) = runtime_api(event).await;
    let mut child = tokio::process::Command::new(binary(function))
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("AWS_LAMBDA_RUNTIME_API", &addr)
        .env("AWS_LAMBDA_FUNCTION_NAME", function)
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_LOG_STREAM_NAME", "events-test")
        .env(
            "AWS_LAMBDA_LOG_GROUP_NAME",
            format!("/aws/lambda/{function}"),
        )
        .env("AWS_LAMBDA_LOG_FORMAT", "JSON")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let posted = tokio::select! {
        posted = rx.recv() => posted.expect("runtime API channel open"),
        status = child.wait() => panic!("{function} exited before answering: {status:?}"),
        _ = tokio::time::sleep(Duration::from_secs(60)) => panic!("{function} did not answer in 60 s"),
    };
    child.start_kill().unwrap();
    let _ = child.wait().await;
    let mut logs = String::new();
    if let Some(mut out) = child.stdout.take() {
        out.read_to_string(&mut logs).await.unwrap();
    }
    if let Some(mut err) = child.stderr.take() {
        err.read_to_string(&mut logs).await.unwrap();
    }
    (posted, logs)
}

fn read_event(name: &str) -> Value {
    serde_json::from_str(
        &std::fs::read_to_string(root().join("events").join(format!("{name}.json"))).unwrap(),
    )
    .unwrap()
}

fn body_field(event: &Value, field: &str) -> String {
    let body: Value = serde_json::from_str(event["body"].as_str().unwrap()).unwrap();
    body[field].as_str().unwrap().to_owned()
}

/// Put the state the sample events assume: a code 123456 for the phones of `otp-verify`
/// and `otp-verify-wrong-code`, and live sessions for the tokens in `token-refresh` and
/// `logout`.
async fn seed(store: &DynamoDbStore, secret: &AuthSecret) {
    let now = SystemClock.now();
    for event in ["otp-verify", "otp-verify-wrong-code"] {
        let phone = PhoneNumber::parse(&body_field(&read_event(event), "phone")).unwrap();
        let state = OtpState {
            sends: vec![now],
            code: Some(ActiveCode {
                id: random_suffix(),
                mac: CodeMac::compute(
                    secret.pepper().unwrap(),
                    &phone,
                    &OtpCode::parse("123456").unwrap(),
                ),
                expires_at: now.plus_secs(300),
                attempts: 0,
            }),
            version: Some(1),
        };
        store.save_otp(&phone, None, &state, 300).await.unwrap();
    }
    for event in ["token-refresh", "logout"] {
        let token = RefreshToken::parse(&body_field(&read_event(event), "refreshToken")).unwrap();
        let session = Session {
            id: SessionId::from_stored(token.session_id().as_str().to_owned()),
            sub: random_suffix(),
            phone: "+77001234561".into(),
            created_at: now,
            expires_at: now.plus_secs(86_400),
            revoked: false,
        };
        let stored = StoredRefreshToken::issue(token.hash(), &session, now, 3600);
        store.insert_session(&session, &stored).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_sample_event_runs_through_the_lambda_runtime_with_the_expected_outcome() {
    // Every file in events/ is listed, and every listed file exists.
    let mut on_disk: Vec<String> = std::fs::read_dir(root().join("events"))
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
    let rotation_event = read_event("key-rotation");
    let auth_secret = rotation_event["SecretId"].as_str().unwrap().to_owned();
    let jwks_secret = format!("{auth_secret}-jwks-{suffix}");
    devstack::create_secrets(&sm, &auth_secret, &jwks_secret, Arc::new(SystemClock))
        .await
        .unwrap();
    let secret = AuthSecret::parse(&fetch_secret_string(&sm, &auth_secret).await.unwrap()).unwrap();
    seed(&DynamoDbStore::new(ddb.clone(), &table), &secret).await;

    let env: HashMap<&str, String> = HashMap::from([
        ("TABLE_NAME", table.clone()),
        ("AUTH_SECRET_ID", auth_secret.clone()),
        ("JWKS_SECRET_ID", jwks_secret.clone()),
        (
            "JWT_ISSUER",
            "https://api.foodsave.kz/api/v1/auth".to_owned(),
        ),
    ]);
    let mut secrets_in_events: Vec<String> = vec!["123456".into(), "654321".into()];
    for event in ["token-refresh", "logout"] {
        secrets_in_events.push(body_field(&read_event(event), "refreshToken"));
    }

    for (name, expected) in EXPECTED {
        let function = function_of(name);
        let (posted, logs) = invoke(function, read_event(name), &env).await;
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
}

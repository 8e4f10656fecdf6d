//! Logs stay safe at any level: the real function binaries run a whole login (otp-send,
//! otp-verify with the code from the SMS, token-refresh) with `AWS_LAMBDA_LOG_LEVEL=TRACE`,
//! in plain text and as JSON, and nothing they print carries the phone in full, the code,
//! the SMS text, a token, the pepper or a private key; the filter from
//! `foodsave_auth::telemetry` is checked on its own as well (caps that a `RUST_LOG`
//! directive cannot lift).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::{random_phone, random_suffix, sample_event};
use foodsave_auth::adapters::secrets::fetch_secret_string;
use foodsave_auth::clock::SystemClock;
use foodsave_auth::devstack;
use foodsave_auth::devstack::lambda_runtime::{self, Posted, function_binary};
use foodsave_auth::devstack::seed::function_env;
use foodsave_auth::telemetry::LogLevels;
use serde_json::{Value, json};
use tracing::level_filters::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;

// ---- the filter ----------------------------------------------------------------------

fn levels(vars: &[(&str, &str)]) -> LogLevels {
    let vars: Vec<(String, String)> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    LogLevels::from_env(&move |name: &str| {
        vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    })
}

const OWN_TARGETS: [&str; 8] = [
    "foodsave_auth",
    "foodsave_auth::api::otp_send",
    "otp_send",
    "otp_verify",
    "token_refresh",
    "logout",
    "jwks",
    "key_rotation",
];

/// Third-party targets that log request or response bodies, headers or events below warn.
const CAPPED_AT_WARN: [&str; 14] = [
    "aws_smithy_runtime::client::orchestrator",
    "aws_smithy_runtime_api::client::interceptors::context",
    "aws_smithy_http_client::client",
    "aws_smithy_http::event_stream::receiver",
    "aws_config::meta::credentials::chain",
    "aws_sdk_sns::operation::publish",
    "aws_sdk_secretsmanager::operation::get_secret_value",
    "aws_sigv4::http_request::sign",
    "aws_runtime::user_agent",
    "hyper_util::client::legacy::pool",
    "h2::codec::framed_write",
    "rustls::client::hs",
    "tower::buffer::worker",
    "lambda_runtime_api_client",
];

#[test]
fn the_requested_level_applies_to_our_crates_and_third_parties_stay_capped() {
    let trace = levels(&[("AWS_LAMBDA_LOG_LEVEL", "TRACE")]);
    assert_eq!(trace.requested(), LevelFilter::TRACE);
    for target in OWN_TARGETS {
        assert_eq!(trace.level_for(target), LevelFilter::TRACE, "{target}");
    }
    for target in [
        "lambda_runtime",
        "lambda_runtime::layers::api_response",
        "lambda_http::request",
    ] {
        assert_eq!(trace.level_for(target), LevelFilter::INFO, "{target}");
    }
    for target in CAPPED_AT_WARN {
        assert_eq!(trace.level_for(target), LevelFilter::WARN, "{target}");
    }
    // Unknown crates, and names that merely start like ours, get the default cap.
    for target in [
        "some_future_dependency",
        "foodsave_auth_plugin",
        "jwks_client",
        "log",
    ] {
        assert_eq!(trace.level_for(target), LevelFilter::WARN, "{target}");
    }
}

#[test]
fn a_quieter_level_quiets_third_parties_too() {
    let error = levels(&[("AWS_LAMBDA_LOG_LEVEL", "ERROR")]);
    for target in ["foodsave_auth::api", "lambda_runtime", "aws_smithy_runtime"] {
        assert_eq!(error.level_for(target), LevelFilter::ERROR, "{target}");
    }
    let fatal = levels(&[("AWS_LAMBDA_LOG_LEVEL", "FATAL")]);
    assert_eq!(fatal.requested(), LevelFilter::ERROR);
    let off = levels(&[("RUST_LOG", "off")]);
    assert_eq!(off.level_for("foodsave_auth"), LevelFilter::OFF);
    assert_eq!(off.level_for("hyper"), LevelFilter::OFF);
}

#[test]
fn a_rust_log_directive_cannot_lift_a_cap() {
    for value in [
        "aws_smithy_runtime=trace",
        "trace,aws_smithy_runtime=trace,lambda_runtime=trace,hyper_util=trace",
        "aws_smithy_runtime::client::orchestrator=trace",
        "[invoke]=trace",
        "[{body}]=trace",
        "foodsave_auth[invoke]=trace",
        "=trace",
    ] {
        let filter = levels(&[("RUST_LOG", value)]);
        assert_eq!(
            filter.level_for("aws_smithy_runtime::client::orchestrator"),
            LevelFilter::WARN,
            "RUST_LOG={value}"
        );
        assert_eq!(
            filter.level_for("lambda_runtime::layers::api_response"),
            LevelFilter::INFO,
            "RUST_LOG={value}"
        );
        assert_eq!(
            filter.level_for("hyper_util::client"),
            LevelFilter::WARN,
            "RUST_LOG={value}"
        );
    }
    // A bare level, or a level given to one of our crates, is what counts.
    let mixed = levels(&[("RUST_LOG", "warn,aws_config=trace,foodsave_auth=debug")]);
    assert_eq!(mixed.level_for("foodsave_auth::api"), LevelFilter::DEBUG);
    assert_eq!(mixed.level_for("aws_config"), LevelFilter::WARN);
}

#[test]
fn lambdas_level_wins_over_rust_log_and_nonsense_means_info() {
    let both = levels(&[("AWS_LAMBDA_LOG_LEVEL", "debug"), ("RUST_LOG", "error")]);
    assert_eq!(both.requested(), LevelFilter::DEBUG);
    let bad_lambda = levels(&[("AWS_LAMBDA_LOG_LEVEL", "loud"), ("RUST_LOG", "warn")]);
    assert_eq!(bad_lambda.requested(), LevelFilter::WARN);
    assert_eq!(levels(&[]).requested(), LevelFilter::INFO);
    assert_eq!(
        levels(&[("RUST_LOG", "aws_smithy_runtime=trace")]).requested(),
        LevelFilter::INFO
    );
}

/// A writer the test can read back.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn as_a_subscriber_layer_the_filter_drops_third_party_bodies_and_keeps_our_lines() {
    let out = Captured::default();
    let writer = out.clone();
    let subscriber = tracing_subscriber::registry()
        .with(levels(&[
            ("AWS_LAMBDA_LOG_LEVEL", "TRACE"),
            ("RUST_LOG", "trace,aws_smithy_runtime=trace"),
        ]))
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(move || writer.clone()),
        );
    tracing::subscriber::with_default(subscriber, || {
        tracing::trace!(target: "aws_smithy_runtime::client::orchestrator", body = "BODY-1", "transmitting request");
        tracing::debug!(target: "aws_smithy_http_client::client", body = "BODY-2", "response");
        tracing::trace!(target: "lambda_runtime::layers::api_response", body = "BODY-3", "raw JSON event received from Lambda");
        tracing::debug!(target: "hyper_util::client::legacy", "BODY-4");
        tracing::info!(target: "lambda_runtime::layers::trace", "runtime info line");
        tracing::warn!(target: "aws_smithy_runtime::client::retries", "sdk warning line");
        tracing::trace!(target: "foodsave_auth::api::otp_send", "our trace line");
        tracing::debug!(target: "otp_send", "our debug line");
    });
    let logs = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
    for body in ["BODY-1", "BODY-2", "BODY-3", "BODY-4"] {
        assert!(!logs.contains(body), "{body} came through:\n{logs}");
    }
    for line in [
        "runtime info line",
        "sdk warning line",
        "our trace line",
        "our debug line",
    ] {
        assert!(logs.contains(line), "{line} was dropped:\n{logs}");
    }
}

// ---- the function binaries at TRACE --------------------------------------------------

/// Run `function` for `event` and return its answer (HTTP functions: the gateway
/// response) and its logs.
async fn run(function: &str, event: Value, env: &[(String, String)]) -> (Value, String) {
    let binary = function_binary(function).unwrap();
    let invocation = lambda_runtime::invoke(&binary, event, env).await.unwrap();
    match invocation.posted {
        Posted::Response(payload) => (payload, invocation.logs),
        other => panic!("{function} did not answer: {other:?}\n{}", invocation.logs),
    }
}

/// `events/<name>.json` with `body` as its JSON body.
fn event_with_body(name: &str, body: &Value) -> Value {
    let mut event = sample_event(name);
    event["body"] = Value::String(body.to_string());
    event
}

/// The 200 response's JSON body; anything else fails the test with the logs.
fn ok_body(function: &str, payload: &Value, logs: &str) -> Value {
    assert_eq!(payload["statusCode"], 200, "{function}: {payload}\n{logs}");
    serde_json::from_str(payload["body"].as_str().unwrap()).unwrap()
}

/// The logs without their timestamps, whose microseconds could otherwise match a
/// six-digit code by chance.
fn without_timestamps(logs: &str) -> String {
    logs.lines()
        .map(|line| match serde_json::from_str::<Value>(line) {
            Ok(Value::Object(mut fields)) => {
                fields.remove("timestamp");
                Value::Object(fields).to_string()
            }
            _ => match line.split_once(' ') {
                Some((first, rest)) if first.ends_with('Z') && first.contains('T') => {
                    rest.to_owned()
                }
                _ => line.to_owned(),
            },
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Fail if `logs` of `step` carry any of `secrets` (label, value).
fn assert_carries_none(step: &str, logs: &str, secrets: &[(&str, String)]) {
    let scanned = without_timestamps(logs);
    for (label, secret) in secrets {
        assert!(!secret.is_empty(), "{step}: empty {label}");
        assert!(
            !scanned.contains(secret.as_str()),
            "{step} logged the {label} at TRACE:\n{logs}"
        );
    }
    assert!(
        !scanned.contains("PRIVATE KEY"),
        "{step} logged a private key at TRACE:\n{logs}"
    );
}

/// What every step's logs must show: our own per-request line (the crate logs at info
/// and above only, so that is what TRACE must still let through) in the requested
/// format, inside the runtime's request span; and none of the third-party body dumps.
fn assert_still_logs(step: &str, logs: &str, json: bool, endpoint: &str) {
    assert!(
        logs.lines()
            .any(|l| l.contains(&format!("\"{endpoint}\"")) && l.contains("200")),
        "{step} at TRACE lost our own line for {endpoint} and status 200:\n{logs}"
    );
    assert!(
        logs.contains("requestId"),
        "{step} at TRACE lost the runtime's request span:\n{logs}"
    );
    for dump in [
        "raw JSON event received from Lambda",
        "transmitting request",
        "received response from service",
        "read HTTP response body",
    ] {
        assert!(!logs.contains(dump), "{step} printed {dump:?}:\n{logs}");
    }
    if json {
        for line in logs.lines().filter(|l| !l.trim().is_empty()) {
            assert!(
                serde_json::from_str::<Value>(line).is_ok(),
                "{step}: not a JSON log line: {line}"
            );
        }
    } else {
        assert!(
            logs.lines()
                .any(|l| serde_json::from_str::<Value>(l).is_err()),
            "{step}: plain text was asked for:\n{logs}"
        );
    }
}

/// A six-digit run in `text`: the code in the SMS.
fn code_in(text: &str) -> String {
    let digits: Vec<&str> = text
        .split(|c: char| !c.is_ascii_digit())
        .filter(|run| run.len() == 6)
        .collect();
    assert_eq!(digits.len(), 1, "one six-digit code in {text:?}");
    digits[0].to_owned()
}

async fn login_at_trace_logs_nothing_secret(json: bool) {
    let endpoint = devstack::endpoint_url().expect("run the tests through `make test`");
    let aws = devstack::sdk_config().await;
    let ddb = aws_sdk_dynamodb::Client::new(&aws);
    let sm = aws_sdk_secretsmanager::Client::new(&aws);
    let suffix = random_suffix();
    let table = format!("auth-logs-{suffix}");
    devstack::create_table(&ddb, &table).await.unwrap();
    let auth_secret = format!("auth-logs-{suffix}");
    let jwks_secret = format!("jwks-logs-{suffix}");
    devstack::create_secrets(&sm, &auth_secret, &jwks_secret, Arc::new(SystemClock))
        .await
        .unwrap();

    // What the secret holds: the pepper and each private key's PEM body lines.
    let raw: Value =
        serde_json::from_str(&fetch_secret_string(&sm, &auth_secret).await.unwrap()).unwrap();
    let mut secrets: Vec<(&str, String)> =
        vec![("pepper", raw["otpPepper"].as_str().unwrap().to_owned())];
    let keys = raw["signingKeys"].as_array().unwrap();
    assert!(!keys.is_empty(), "the secret has a signing key");
    for key in keys {
        let pem = key["privateKeyPem"].as_str().unwrap();
        for line in pem.lines().filter(|l| !l.starts_with("-----")).take(3) {
            secrets.push(("private key", line.to_owned()));
        }
    }

    let mut env: Vec<(String, String)> = function_env(&table, &auth_secret, &jwks_secret)
        .into_iter()
        .filter(|(k, _)| k != "AWS_LAMBDA_LOG_FORMAT")
        .collect();
    env.push(("AWS_LAMBDA_LOG_LEVEL".into(), "TRACE".into()));
    env.push(("RUST_LOG".into(), "trace".into()));
    // The SDK's own opt-ins to print request and sensitive response bodies at TRACE.
    env.push(("LOG_SIGNABLE_BODY".into(), "true".into()));
    env.push(("LOG_SENSITIVE_BODIES".into(), "true".into()));
    if json {
        env.push(("AWS_LAMBDA_LOG_FORMAT".into(), "JSON".into()));
    } else {
        env.push(("AWS_LAMBDA_LOG_FORMAT".into(), "Text".into()));
    }
    let format = if json { "JSON" } else { "text" };

    // otp-send: the phone in full (also as the SNS form body carries it, `%2B7…`), the
    // code and the SMS text.
    let phone = random_phone();
    let (payload, send_logs) = run(
        "otp-send",
        event_with_body("otp-send", &json!({ "phone": phone })),
        &env,
    )
    .await;
    ok_body("otp-send", &payload, &send_logs);
    let sms = devstack::sent_sms(&endpoint)
        .await
        .unwrap()
        .into_iter()
        .filter(|m| m.phone_number == phone)
        .map(|m| m.message)
        .next_back()
        .expect("otp-send sent an SMS");
    let code = code_in(&sms);
    secrets.push(("phone number", phone.clone()));
    secrets.push((
        "phone number digits",
        phone.trim_start_matches('+').to_owned(),
    ));
    secrets.push(("SMS text", sms.clone()));
    secrets.push(("code", code.clone()));
    let step = format!("otp-send ({format})");
    assert_carries_none(&step, &send_logs, &secrets);
    assert_still_logs(&step, &send_logs, json, "otp-send");

    // otp-verify with that code: the code and both tokens it issues.
    let (payload, verify_logs) = run(
        "otp-verify",
        event_with_body("otp-verify", &json!({ "phone": phone, "code": code })),
        &env,
    )
    .await;
    let issued = ok_body("otp-verify", &payload, &verify_logs);
    let refresh = issued["refreshToken"].as_str().unwrap().to_owned();
    secrets.push((
        "access token",
        issued["accessToken"].as_str().unwrap().to_owned(),
    ));
    secrets.push(("refresh token", refresh.clone()));
    let step = format!("otp-verify ({format})");
    assert_carries_none(&step, &verify_logs, &secrets);
    assert_still_logs(&step, &verify_logs, json, "otp-verify");

    // token-refresh: the token presented and the ones returned.
    let (payload, refresh_logs) = run(
        "token-refresh",
        event_with_body("token-refresh", &json!({ "refreshToken": refresh })),
        &env,
    )
    .await;
    let rotated = ok_body("token-refresh", &payload, &refresh_logs);
    secrets.push((
        "rotated refresh token",
        rotated["refreshToken"].as_str().unwrap().to_owned(),
    ));
    secrets.push((
        "rotated access token",
        rotated["accessToken"].as_str().unwrap().to_owned(),
    ));
    let step = format!("token-refresh ({format})");
    assert_carries_none(&step, &refresh_logs, &secrets);
    assert_still_logs(&step, &refresh_logs, json, "token-refresh");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_login_at_trace_in_plain_text_logs_no_code_token_phone_or_key() {
    login_at_trace_logs_nothing_secret(false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_login_at_trace_as_json_logs_no_code_token_phone_or_key() {
    login_at_trace_logs_nothing_secret(true).await;
}

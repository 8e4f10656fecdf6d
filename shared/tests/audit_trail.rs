//! The audit trail through the Lambda runtime path (CONTRACT §3b): every
//! security decision prints one JSON line that is also an EMF metric record, with the
//! request id, masked phone, user, session and source IP, and nothing secret.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use common::{random_phone, random_suffix, sample_event};
use foodsave_auth::adapters::secrets::fetch_secret_string;
use foodsave_auth::audit::{AuditEvent, NAMESPACE};
use foodsave_auth::clock::SystemClock;
use foodsave_auth::devstack;
use foodsave_auth::devstack::lambda_runtime::{self, Posted, function_binary};
use foodsave_auth::devstack::seed::function_env;
use serde_json::{Value, json};

struct Trail {
    env: Vec<(String, String)>,
    endpoint: String,
    /// Every line the functions printed.
    logs: String,
    /// What must never appear in them.
    secrets: Vec<String>,
    /// The access token of the next call, if it takes one.
    bearer: Option<String>,
}

impl Trail {
    /// Run `function` for its sample event with `body` from `ip`; the answer's status
    /// and body.
    async fn call(
        &mut self,
        function: &str,
        body: Value,
        ip: &str,
        extra: &[(&str, &str)],
    ) -> (u64, Value) {
        let mut event = sample_event(function);
        event["body"] = Value::String(body.to_string());
        if let Some(token) = self.bearer.take() {
            event["headers"]["authorization"] = Value::String(format!("Bearer {token}"));
        }
        event["requestContext"]["http"]["sourceIp"] = Value::String(ip.to_owned());
        let mut env = self.env.clone();
        env.extend(
            extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        let binary = function_binary(function).unwrap();
        let invocation = lambda_runtime::invoke(&binary, event, &env).await.unwrap();
        self.logs.push_str(&invocation.logs);
        let Posted::Response(response) = invocation.posted else {
            panic!("{function}: {:?}\n{}", invocation.posted, invocation.logs);
        };
        let answer: Value = serde_json::from_str(response["body"].as_str().unwrap()).unwrap();
        if let Some(token) = answer["refreshToken"].as_str() {
            self.secrets.push(token.to_owned());
        }
        if let Some(token) = answer["accessToken"].as_str() {
            self.secrets.push(token.to_owned());
        }
        (response["statusCode"].as_u64().unwrap(), answer)
    }

    async fn code(&mut self, phone: &str) -> String {
        let sent = devstack::sent_sms(&self.endpoint).await.unwrap();
        let text = sent.iter().rev().find(|m| m.phone_number == phone).unwrap();
        let code = text.message.rsplit(' ').next().unwrap().to_owned();
        self.secrets.push(code.clone());
        code
    }

    async fn login(&mut self, phone: &str, ip: &str) -> Value {
        assert_eq!(
            self.call("otp-send", json!({ "phone": phone }), ip, &[])
                .await
                .0,
            200
        );
        let code = self.code(phone).await;
        let (status, pair) = self
            .call(
                "otp-verify",
                json!({ "phone": phone, "code": code }),
                ip,
                &[],
            )
            .await;
        assert_eq!(status, 200, "{pair}");
        pair
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_security_decision_is_one_audit_line_and_metric_with_nothing_secret() {
    let aws = devstack::sdk_config().await;
    let ddb = aws_sdk_dynamodb::Client::new(&aws);
    let sm = aws_sdk_secretsmanager::Client::new(&aws);
    let suffix = random_suffix();
    let table = format!("auth-audit-{suffix}");
    devstack::create_table(&ddb, &table).await.unwrap();
    let (auth, jwks) = (format!("audit-{suffix}"), format!("audit-jwks-{suffix}"));
    devstack::create_secrets(&sm, &auth, &jwks, Arc::new(SystemClock))
        .await
        .unwrap();
    let raw_secret: Value =
        serde_json::from_str(&fetch_secret_string(&sm, &auth).await.unwrap()).unwrap();
    let pepper = raw_secret["otpPepper"].as_str().unwrap().to_owned();
    let mut env = function_env(&table, &auth, &jwks);
    env.extend(
        [
            ("OTP_IP_SEND_LIMIT", "1"),
            ("OTP_MAX_WRONG_PER_DAY", "6"),
            ("REFRESH_REUSE_GRACE_SECONDS", "0"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned())),
    );
    let mut trail = Trail {
        env,
        endpoint: devstack::endpoint_url().unwrap(),
        logs: String::new(),
        secrets: Vec::new(),
        bearer: None,
    };
    let phones: Vec<String> = (0..4).map(|_| random_phone()).collect();
    let (a, b, c, d) = (&phones[0], &phones[1], &phones[2], &phones[3]);

    // otp_sent, then otp_send_refused by the IP budget.
    assert_eq!(
        trail
            .call("otp-send", json!({ "phone": a }), "203.0.113.1", &[])
            .await
            .0,
        200
    );
    let code = trail.code(a).await;
    let wrong = if code == "000000" { "111111" } else { "000000" };
    assert_eq!(
        trail
            .call("otp-send", json!({ "phone": b }), "203.0.113.1", &[])
            .await
            .0,
        429
    );
    // otp_verify_failed ×5, the 5th burns the code (otp_burned).
    for _ in 0..5 {
        let (status, _) = trail
            .call(
                "otp-verify",
                json!({ "phone": a, "code": wrong }),
                "203.0.113.1",
                &[],
            )
            .await;
        assert_eq!(status, 400);
    }
    // A new code and a 6th wrong guess: guess_budget_exhausted.
    assert_eq!(
        trail
            .call("otp-send", json!({ "phone": a }), "203.0.113.2", &[])
            .await
            .0,
        200
    );
    let code = trail.code(a).await;
    let wrong = if code == "000000" { "111111" } else { "000000" };
    let (status, _) = trail
        .call(
            "otp-verify",
            json!({ "phone": a, "code": wrong }),
            "203.0.113.2",
            &[],
        )
        .await;
    assert_eq!(status, 400);
    // login_succeeded, refresh_rotated, then with no grace a replay is reuse:
    // refresh_reuse_detected and session_revoked.
    let first = trail.login(c, "203.0.113.3").await;
    let body = json!({ "refreshToken": first["refreshToken"] });
    assert_eq!(
        trail
            .call("token-refresh", body.clone(), "203.0.113.3", &[])
            .await
            .0,
        200
    );
    assert_eq!(
        trail
            .call("token-refresh", body, "203.0.113.3", &[])
            .await
            .0,
        401
    );
    // refresh_retried inside a grace, then logout: session_revoked.
    let first = trail.login(d, "203.0.113.4").await;
    let body = json!({ "refreshToken": first["refreshToken"] });
    let grace = [("REFRESH_REUSE_GRACE_SECONDS", "30")];
    assert_eq!(
        trail
            .call("token-refresh", body.clone(), "203.0.113.4", &grace)
            .await
            .0,
        200
    );
    assert_eq!(
        trail
            .call("token-refresh", body.clone(), "203.0.113.4", &grace)
            .await
            .0,
        200
    );
    assert_eq!(trail.call("logout", body, "203.0.113.4", &[]).await.0, 200);
    // account_deleted, after a fresh verify.
    let e = random_phone();
    let pair = trail.login(&e, "203.0.113.5").await;
    trail.bearer = Some(pair["accessToken"].as_str().unwrap().to_owned());
    let (status, answer) = trail
        .call("account-delete", json!({}), "203.0.113.5", &[])
        .await;
    assert_eq!(status, 200, "{answer}");

    let lines: Vec<Value> = trail
        .logs
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l.get("audit").is_some())
        .collect();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for line in &lines {
        *seen
            .entry(line["audit"].as_str().unwrap().to_owned())
            .or_default() += 1;
        // An EMF record CloudWatch turns into the metric.
        let directive = &line["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], NAMESPACE);
        assert_eq!(line["Events"], 1);
        assert_eq!(line["Event"], line["audit"]);
        assert!(line["_aws"]["Timestamp"].as_u64().is_some());
        // Who and where, for the investigation.
        assert!(
            line["requestId"].as_str().is_some_and(|id| !id.is_empty()),
            "{line}"
        );
        assert!(
            line["sourceIp"]
                .as_str()
                .is_some_and(|ip| ip.starts_with("203.0.113.")),
            "{line}"
        );
    }
    // Every event a function writes (the operator's are tested with the command line).
    let expected: BTreeSet<String> = AuditEvent::ALL
        .iter()
        .filter(|e| !AuditEvent::OPERATOR.contains(e))
        .map(|e| e.as_str().to_owned())
        .collect();
    assert_eq!(
        seen.keys().cloned().collect::<BTreeSet<_>>(),
        expected,
        "{seen:?}"
    );
    assert_eq!(seen["otp_verify_failed"], 6);
    assert_eq!(seen["otp_burned"], 1);
    assert_eq!(seen["guess_budget_exhausted"], 1);
    assert_eq!(seen["session_revoked"], 2);
    let by_event = |event: &'static str| lines.iter().filter(move |l| l["audit"] == event);
    assert!(by_event("otp_send_refused").all(|l| l["reason"] == "ip" && l["phone"].is_string()));
    assert!(by_event("login_succeeded").all(|l| l["sub"].is_string() && l["sid"].is_string()));
    assert!(by_event("refresh_reuse_detected").all(|l| l["sid"].is_string()));
    // Nothing secret in any line the functions printed, audit or not.
    let mut secrets = trail.secrets.clone();
    secrets.extend(phones.iter().cloned());
    secrets.extend(phones.iter().map(|p| p.trim_start_matches('+').to_owned()));
    secrets.push(pepper);
    for secret in &secrets {
        assert!(
            !trail.logs.contains(secret.as_str()),
            "a secret in the logs"
        );
    }
    assert!(!trail.logs.contains("PRIVATE KEY"));
}

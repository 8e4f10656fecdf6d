//! The operator's command line (CONTRACT §7) through the built `foodsave-auth-admin`
//! binary against the local stack: every command, its exit status, what it prints on
//! stdout and stderr; and blocked phones (403 before anything is spent, sessions
//! revoked, the block outliving a deletion, no extra DynamoDB request).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::collections::HashMap;
use std::process::Command;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::{Answer, Stack, call, post, random_phone, sample_event};
use foodsave_auth::api::otp_send::OtpSend;
use foodsave_auth::api::otp_verify::OtpVerify;
use foodsave_auth::devstack::lambda_runtime::function_binary;
use serde_json::{Value, json};

/// What one run of the binary did.
#[derive(Debug)]
struct Run {
    status: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json_lines(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn audit(&self) -> Value {
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "one audit line: {}", self.stderr);
        serde_json::from_str(lines[0]).unwrap()
    }
}

/// `foodsave-auth-admin ARGS` with the functions' environment for `stack`'s table.
fn admin(stack: &Stack, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut command = Command::new(function_binary("foodsave-auth-admin").unwrap());
    command.args(args).env("TABLE_NAME", &stack.table);
    for (k, v) in env {
        command.env(k, v);
    }
    let out = command.output().unwrap();
    Run {
        status: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

fn assert_failed(run: &Run, status: i32, says: &str) {
    assert_eq!(run.status, status, "{run:?}");
    assert!(
        run.stdout.is_empty(),
        "stdout carries results only: {run:?}"
    );
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line on stderr: {run:?}");
    assert!(
        lines[0].starts_with("foodsave-auth-admin: ") && lines[0].contains(says),
        "{run:?}"
    );
}

struct App {
    send: OtpSend,
    verify: OtpVerify,
}

async fn app(stack: &Stack, extra: &[(&str, &str)]) -> App {
    App {
        send: stack.otp_send(extra).await,
        verify: stack.otp_verify(extra).await,
    }
}

async fn send(app: &App, phone: &str) -> Answer {
    post(&app.send, "otp-send", &json!({ "phone": phone })).await
}

async fn verify(app: &App, phone: &str, code: &str) -> Answer {
    post(
        &app.verify,
        "otp-verify",
        &json!({ "phone": phone, "code": code }),
    )
    .await
}

async fn login(stack: &Stack, app: &App, phone: &str) -> Answer {
    assert_eq!(send(app, phone).await.status, 200);
    let code = stack.last_code(phone).await;
    let answer = verify(app, phone, &code).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    answer
}

fn sid(answer: &Answer) -> String {
    let token = answer.body["accessToken"].as_str().unwrap();
    let claims: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(token.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    claims["sid"].as_str().unwrap().to_owned()
}

async fn refresh(stack: &Stack, answer: &Answer) -> Answer {
    post(
        &stack.token_refresh(&[]).await,
        "token-refresh",
        &json!({ "refreshToken": answer.body["refreshToken"] }),
    )
    .await
}

fn assert_blocked(answer: &Answer) {
    assert_eq!(
        (answer.status, answer.code()),
        (403, "PHONE_BLOCKED"),
        "{}",
        answer.body
    );
    assert_eq!(answer.header("cache-control"), Some("no-store"));
}

fn masked(phone: &str) -> String {
    format!("{}******{}", &phone[..4], &phone[10..])
}

#[tokio::test(flavor = "multi_thread")]
async fn every_command_through_the_binary_with_its_exit_status_and_streams() {
    let stack = Stack::new().await;
    let app = app(&stack, &[("OTP_MAX_WRONG_PER_DAY", "2")]).await;
    let phone = random_phone();
    let first = login(&stack, &app, &phone).await;
    // The second is the most recently used (the stack's clock stands still otherwise).
    stack.clock.advance_secs(1);
    let second = login(&stack, &app, &phone).await;
    let alice: &[(&str, &str)] = &[];

    // sessions: one JSON object a line, no audit line for a read.
    let run = admin(&stack, &["--actor", "alice", "sessions", &phone], alice);
    assert_eq!(run.status, 0, "{run:?}");
    assert!(run.stderr.is_empty(), "{run:?}");
    let sessions = run.json_lines();
    assert_eq!(sessions.len(), 2);
    assert_eq!(sessions[0]["id"], sid(&second).as_str());
    assert_eq!(
        sessions[0].as_object().unwrap().keys().collect::<Vec<_>>(),
        ["createdAt", "id", "lastUsedAt", "userAgent"]
    );
    let stranger = random_phone();
    assert_failed(
        &admin(&stack, &["--actor", "alice", "sessions", &stranger], alice),
        1,
        "no account for this phone",
    );

    // revoke one session, then the rest; the operator is in the audit line.
    let run = admin(
        &stack,
        &[
            "revoke",
            &phone,
            "--session",
            &sid(&first),
            "--actor",
            "alice",
        ],
        alice,
    );
    assert_eq!(run.status, 0, "{run:?}");
    assert_eq!(run.json_lines(), [json!({ "revoked": 1 })]);
    let audit = run.audit();
    assert_eq!(audit["audit"], "session_revoked");
    assert_eq!(audit["function"], "admin");
    assert_eq!(audit["actor"], "alice");
    assert_eq!(audit["reason"], "admin");
    assert_eq!(audit["phone"], masked(&phone).as_str());
    assert!(!run.stderr.contains(&phone));
    assert_eq!(
        refresh(&stack, &first).await.code(),
        "INVALID_REFRESH_TOKEN"
    );
    assert_eq!(refresh(&stack, &second).await.status, 200);
    for bogus in [sid(&first), "no-such-session".to_owned()] {
        assert_failed(
            &admin(
                &stack,
                &["--actor", "alice", "revoke", &phone, "--session", &bogus],
                alice,
            ),
            1,
            "no such live session",
        );
    }
    // Without --actor: the AWS caller identity.
    let run = admin(&stack, &["revoke", &phone], alice);
    assert_eq!(run.status, 0, "{run:?}");
    assert_eq!(run.json_lines(), [json!({ "revoked": 1 })]);
    assert!(
        run.audit()["actor"]
            .as_str()
            .unwrap()
            .starts_with("arn:aws:"),
        "{run:?}"
    );
    assert_failed(
        &admin(&stack, &["--actor", "alice", "revoke", &stranger], alice),
        1,
        "no account",
    );

    // unlock: a phone locked by wrong codes can enter its code again.
    assert_eq!(send(&app, &phone).await.status, 200);
    let code = stack.last_code(&phone).await;
    let wrong = if code == "000000" { "111111" } else { "000000" };
    for _ in 0..2 {
        assert_eq!(verify(&app, &phone, wrong).await.code(), "INVALID_CODE");
    }
    assert_eq!(verify(&app, &phone, &code).await.code(), "RATE_LIMIT");
    let run = admin(&stack, &["--actor", "alice", "unlock", &phone], alice);
    assert_eq!(run.status, 0, "{run:?}");
    assert_eq!(run.json_lines(), [json!({ "unlocked": true })]);
    assert_eq!(run.audit()["audit"], "phone_unlocked");
    assert_eq!(verify(&app, &phone, &code).await.status, 200);
    // Nothing to unlock on a phone never seen: still 0.
    let run = admin(&stack, &["--actor", "alice", "unlock", &stranger], alice);
    assert_eq!(
        (run.status, run.json_lines()),
        (0, vec![json!({ "unlocked": false })])
    );

    // delete-account, once.
    let run = admin(
        &stack,
        &["--actor", "alice", "delete-account", &phone],
        alice,
    );
    assert_eq!(run.status, 0, "{run:?}");
    // The session of the verify after the unlock: the others were revoked above.
    assert_eq!(
        run.json_lines(),
        [json!({ "deleted": true, "sessions": 1 })]
    );
    assert_eq!(run.audit()["audit"], "account_deleted");
    assert_eq!(
        refresh(&stack, &second).await.code(),
        "INVALID_REFRESH_TOKEN"
    );
    assert_failed(
        &admin(&stack, &["--actor", "alice", "sessions", &phone], alice),
        1,
        "no account",
    );
    assert_failed(
        &admin(
            &stack,
            &["--actor", "alice", "delete-account", &phone],
            alice,
        ),
        1,
        "no account",
    );

    // Usage errors: 2, with the reason.
    for (args, says) in [
        (vec!["sessions", "87001234567"], "+7 followed by 10 digits"),
        (vec!["frobnicate", &phone], "unknown command"),
        (vec!["revoke"], "PHONE is required"),
        (vec!["block", &phone, "--reason"], "--reason needs a value"),
    ] {
        assert_failed(&admin(&stack, &args, alice), 2, says);
    }
    let mut no_table = Command::new(function_binary("foodsave-auth-admin").unwrap());
    let out = no_table
        .args(["--actor", "alice", "sessions", &phone])
        .env_remove("TABLE_NAME")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("TABLE_NAME"));
    // Help and version: stdout, 0.
    for args in [vec!["--help"], vec!["block", "--help"], vec!["--version"]] {
        let run = admin(&stack, &args, alice);
        assert_eq!(run.status, 0, "{run:?}");
        // The workspace's version, the one every function's init line reports.
        let version = format!("foodsave-auth-admin {}\n", foodsave_auth::VERSION);
        assert!(
            run.stdout.starts_with("usage: ") || run.stdout == version,
            "{run:?}"
        );
        assert!(run.stderr.is_empty());
    }
    // AWS failing: 3.
    let down = [("AWS_ENDPOINT_URL", "http://127.0.0.1:9")];
    assert_failed(
        &admin(&stack, &["--actor", "alice", "sessions", &phone], &down),
        3,
        "",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_table_and_the_event_bus_are_found_in_the_stacks_outputs() {
    let stack = Stack::new().await;
    let app = app(&stack, &[]).await;
    let phone = random_phone();
    let session = login(&stack, &app, &phone).await;
    // A stand-in for the deployed stack: moto's CloudFormation answering DescribeStacks
    // with the TableName and EventBusName outputs, as the template's stack does.
    let name = format!("auth-admin-{}", common::random_suffix());
    let bus = format!("{name}-events");
    let tap = foodsave_auth::devstack::create_event_tap(&stack.aws, &bus)
        .await
        .unwrap();
    let template = json!({
        "Resources": { "Topic": { "Type": "AWS::SNS::Topic" } },
        "Outputs": {
            "TableName": { "Value": stack.table },
            "EventBusName": { "Value": bus },
        },
    });
    aws_sdk_cloudformation::Client::new(&stack.aws)
        .create_stack()
        .stack_name(&name)
        .template_body(template.to_string())
        .send()
        .await
        .unwrap();
    let mut command = Command::new(function_binary("foodsave-auth-admin").unwrap());
    let out = command
        .args(["--stack", &name, "--actor", "alice", "sessions", &phone])
        .env_remove("TABLE_NAME")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(String::from_utf8(out.stdout).unwrap().lines().count(), 1);
    // A revocation through --stack puts its event on the stack's bus (CONTRACT §7).
    let out = Command::new(function_binary("foodsave-auth-admin").unwrap())
        .args(["--stack", &name, "--actor", "alice", "revoke", &phone])
        .env_remove("TABLE_NAME")
        .env_remove("EVENT_BUS_NAME")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let delivered = foodsave_auth::devstack::tapped_events(&stack.aws, &tap)
        .await
        .unwrap();
    let [event] = delivered.as_slice() else {
        panic!("one event, got {delivered:?}")
    };
    assert_eq!(event["detail-type"], "SessionsRevoked");
    assert_eq!(event["detail"]["reason"], "admin");
    assert_eq!(
        event["detail"]["sessionIds"],
        json!([common::sid_of(&session)])
    );
    let out = Command::new(function_binary("foodsave-auth-admin").unwrap())
        .args([
            "--stack",
            "no-such-stack",
            "--actor",
            "alice",
            "sessions",
            &phone,
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{out:?}");
}

/// Slots in use of the budget items (`IP#…`, `GLOBAL#…`).
async fn budget_slots(stack: &Stack) -> HashMap<String, usize> {
    stack
        .items()
        .await
        .into_iter()
        .filter_map(|item| {
            let pk = item["pk"].as_s().unwrap().clone();
            (pk.starts_with("IP#") || pk.starts_with("GLOBAL#")).then(|| {
                let used = item
                    .keys()
                    .filter(|k| k.starts_with('s') && k[1..].parse::<u32>().is_ok())
                    .count();
                (pk, used)
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_blocked_phone_is_refused_before_anything_is_spent_until_unblocked() {
    let stack = Stack::new().await;
    let budgets = [
        ("OTP_IP_SEND_LIMIT", "50"),
        ("OTP_GLOBAL_SEND_LIMIT_PER_HOUR", "2000"),
    ];
    let app = app(&stack, &budgets).await;
    let phone = random_phone();
    let session = login(&stack, &app, &phone).await;
    // A code in flight when the block lands.
    assert_eq!(send(&app, &phone).await.status, 200);
    let code = stack.last_code(&phone).await;
    let sms_before = stack.sms_to(&phone).await.len();
    let slots_before = budget_slots(&stack).await;

    let run = admin(
        &stack,
        &[
            "--actor",
            "alice",
            "block",
            &phone,
            "--reason",
            "fraud reports",
        ],
        &[],
    );
    assert_eq!(run.status, 0, "{run:?}");
    assert_eq!(run.json_lines(), [json!({ "blocked": true, "revoked": 1 })]);
    let audit = run.audit();
    assert_eq!(
        (audit["audit"].as_str(), audit["actor"].as_str()),
        (Some("phone_blocked"), Some("alice"))
    );
    assert!(
        !run.stderr.contains("fraud"),
        "the reason stays in the table"
    );
    // Its sessions are revoked.
    assert_eq!(
        refresh(&stack, &session).await.code(),
        "INVALID_REFRESH_TOKEN"
    );

    // Send and verify: 403, with no SMS, no slot, and one DynamoDB request each.
    stack.round_trips.take();
    assert_blocked(&send(&app, &phone).await);
    assert_eq!(
        stack.round_trips.take(),
        1,
        "a blocked send: the put that read the block"
    );
    assert_blocked(&verify(&app, &phone, &code).await);
    assert_eq!(
        stack.round_trips.take(),
        1,
        "a blocked verify: the batch read"
    );
    assert_blocked(&verify(&app, &phone, "000000").await);
    assert_eq!(stack.sms_to(&phone).await.len(), sms_before, "no SMS");
    assert_eq!(
        budget_slots(&stack).await,
        slots_before,
        "no slot of any budget"
    );
    // Malformed input is still a 400 first.
    let bad = post(&app.send, "otp-send", &json!({ "phone": "+7700" })).await;
    assert_eq!(bad.code(), "BAD_REQUEST");
    // An idempotent replay is refused too: the block comes first (CONTRACT §3b's order).
    let mut event = sample_event("otp-send");
    event["body"] = json!(json!({ "phone": phone }).to_string());
    event["headers"]["idempotency-key"] = json!("k-1");
    let replay = call(
        &app.send,
        foodsave_auth::http::event::request_from_json(&event.to_string()).unwrap(),
    )
    .await;
    assert_blocked(&replay);

    // The block outlives a deletion of the account.
    let run = admin(&stack, &["--actor", "alice", "delete-account", &phone], &[]);
    assert_eq!(run.status, 0, "{run:?}");
    assert_blocked(&send(&app, &phone).await);
    // Blocking again changes nothing and still exits 0.
    let run = admin(&stack, &["--actor", "alice", "block", &phone], &[]);
    assert_eq!(
        (run.status, run.json_lines()),
        (0, vec![json!({ "blocked": true, "revoked": 0 })])
    );

    // Unblocked: normal service, a new account.
    let run = admin(&stack, &["--actor", "alice", "unblock", &phone], &[]);
    assert_eq!(
        (run.status, run.json_lines()),
        (0, vec![json!({ "unblocked": true })])
    );
    assert_eq!(run.audit()["audit"], "phone_unblocked");
    let again = login(&stack, &app, &phone).await;
    assert_ne!(sid(&again), sid(&session));
    let run = admin(&stack, &["--actor", "alice", "unblock", &phone], &[]);
    assert_eq!(
        (run.status, run.json_lines()),
        (0, vec![json!({ "unblocked": false })])
    );
    // Requests per send are what they were before any block (past the send window;
    // without the budgets, whose random global slot may cost a round of its own): a
    // resend is the put that reads the item and the put that writes.
    stack.clock.advance_secs(301);
    let plain = self::app(&stack, &[]).await;
    stack.round_trips.take();
    assert_eq!(send(&plain, &phone).await.status, 200);
    assert_eq!(
        stack.round_trips.take(),
        2,
        "a resend: the put that read, the put that wrote"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_phone_with_no_account_or_state_can_be_blocked() {
    let stack = Stack::new().await;
    let app = app(&stack, &[]).await;
    let phone = random_phone();
    let run = admin(&stack, &["--actor", "alice", "block", &phone], &[]);
    assert_eq!(
        (run.status, run.json_lines()),
        (0, vec![json!({ "blocked": true, "revoked": 0 })])
    );
    assert_blocked(&send(&app, &phone).await);
    assert!(stack.sms_to(&phone).await.is_empty());
    assert_blocked(&verify(&app, &phone, "123456").await);
    // No TTL on the blocked item: it lasts until it is lifted.
    let item = stack
        .items()
        .await
        .into_iter()
        .find(|i| i["pk"].as_s().unwrap() == &format!("PHONE#{phone}"))
        .unwrap();
    assert!(!item.contains_key("expiresAt"));
    stack.clock.advance_secs(400 * 86_400);
    assert_blocked(&send(&app, &phone).await);
    let run = admin(&stack, &["--actor", "alice", "unblock", &phone], &[]);
    assert_eq!(run.status, 0);
    assert!(
        stack
            .items()
            .await
            .into_iter()
            .find(|i| i["pk"].as_s().unwrap() == &format!("PHONE#{phone}"))
            .unwrap()
            .contains_key("expiresAt"),
        "unblocked, the item expires again"
    );
}

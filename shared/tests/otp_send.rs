//! POST /otp/send against the local AWS stack (CONTRACT §1–3).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::sync::Arc;

use common::{Stack, call, event_request, event_request_base64, post, random_phone};
use foodsave_auth::adapters::secrets::fetch_secret_string;
use foodsave_auth::adapters::{AuthSecret, SnsSmsSender};
use foodsave_auth::domain::{CodeMac, OtpCode, PhoneNumber};
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn a_send_answers_the_contract_body_and_delivers_one_sms() {
    let stack = Stack::new().await;
    let send = stack.otp_send(&[]).await;
    let phone = random_phone();
    let answer = post(&send, "otp-send", &json!({ "phone": phone })).await;
    assert_eq!(answer.status, 200);
    assert_eq!(
        answer.body,
        json!({"message": "OTP sent", "retryAfterSeconds": 300})
    );
    assert_eq!(answer.header("content-type"), Some("application/json"));
    assert_eq!(answer.header("cache-control"), Some("no-store"));
    let texts = stack.sms_to(&phone).await;
    assert_eq!(texts.len(), 1);
    let code = stack.last_code(&phone).await;
    assert!(code.bytes().all(|b| b.is_ascii_digit()));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_code_is_stored_only_as_its_hmac_with_a_ttl() {
    let stack = Stack::new().await;
    let send = stack.otp_send(&[]).await;
    let phone = random_phone();
    assert_eq!(
        post(&send, "otp-send", &json!({ "phone": phone }))
            .await
            .status,
        200
    );
    let code = stack.last_code(&phone).await;
    let items = stack.items().await;
    assert_eq!(items.len(), 1);
    let item = &items[0];
    let dump = format!("{item:?}");
    assert!(!dump.contains(&code), "plaintext code stored: {dump}");
    let ttl: u64 = item["expiresAt"].as_n().unwrap().parse().unwrap();
    let now_secs = stack.clock_secs();
    assert!(
        ttl >= now_secs + 300 && ttl <= now_secs + 302,
        "ttl {ttl} vs now {now_secs}"
    );
    let secret = AuthSecret::parse(
        &fetch_secret_string(&stack.sm, &stack.secret_id)
            .await
            .unwrap(),
    )
    .unwrap();
    let expected = CodeMac::compute(
        secret.pepper().unwrap(),
        &PhoneNumber::parse(&phone).unwrap(),
        &OtpCode::parse(&code).unwrap(),
    );
    assert_eq!(
        item["codeMac"].as_b().unwrap().as_ref(),
        expected.as_bytes()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn fifty_concurrent_sends_for_one_phone_yield_three_sms_and_47_rate_limits() {
    let stack = Stack::new().await;
    let send = Arc::new(stack.otp_send(&[]).await);
    let phone = random_phone();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let send = Arc::clone(&send);
        let body = json!({ "phone": phone }).to_string();
        tasks.spawn(
            async move { call(send.as_ref(), event_request("otp-send", Some(&body))).await },
        );
    }
    let mut ok = 0;
    let mut limited = 0;
    while let Some(answer) = tasks.join_next().await {
        let answer = answer.unwrap();
        match answer.status {
            200 => ok += 1,
            429 => {
                limited += 1;
                assert_eq!(answer.code(), "RATE_LIMIT");
                let wait = answer.body["retryAfterSeconds"].as_u64().unwrap();
                assert!((1..=300).contains(&wait), "{wait}");
                assert_eq!(
                    answer.header("retry-after"),
                    Some(wait.to_string().as_str())
                );
            }
            other => panic!("unexpected {other}: {}", answer.body),
        }
    }
    assert_eq!((ok, limited), (3, 47));
    assert_eq!(stack.sms_to(&phone).await.len(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_window_slides_a_slot_free_after_the_configured_seconds() {
    let stack = Stack::new().await;
    let send = stack.otp_send(&[("OTP_SEND_WINDOW_SECONDS", "20")]).await;
    let phone = random_phone();
    let body = json!({ "phone": phone });
    for _ in 0..3 {
        assert_eq!(post(&send, "otp-send", &body).await.status, 200);
        stack.clock.advance_secs(5);
    }
    // Sends at t, t+5, t+10; now t+15: the first frees at t+20.
    let limited = post(&send, "otp-send", &body).await;
    assert_eq!(limited.status, 429);
    assert_eq!(limited.body["retryAfterSeconds"], 5);
    assert_eq!(limited.header("retry-after"), Some("5"));
    // Exactly the contract's keys, and the request id API Gateway gave the request (the
    // event's requestContext.requestId, the access log's $context.requestId).
    assert_eq!(
        limited.body.as_object().unwrap().keys().collect::<Vec<_>>(),
        vec!["code", "message", "requestId", "retryAfterSeconds"]
    );
    assert_eq!(
        limited.body["requestId"],
        common::sample_event("otp-send")["requestContext"]["requestId"]
    );
    stack.clock.advance_secs(5);
    assert_eq!(post(&send, "otp-send", &body).await.status, 200);
    assert_eq!(post(&send, "otp-send", &body).await.status, 429);
    assert_eq!(stack.sms_to(&phone.to_string()).await.len(), 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_sms_sns_does_not_accept_spends_no_slot_and_keeps_the_previous_code() {
    let stack = Stack::new().await;
    let send = stack.otp_send(&[]).await;
    let failing = stack.otp_send_with_sns(&[], stack.unreachable_sns()).await;
    let verify = stack.otp_verify(&[]).await;
    let phone = random_phone();
    let body = json!({ "phone": phone });

    assert_eq!(post(&send, "otp-send", &body).await.status, 200);
    let first_code = stack.last_code(&phone).await;
    let before = stack.items().await;

    let refused = post(&failing, "otp-send", &body).await;
    assert_eq!(refused.status, 503);
    assert_eq!(refused.code(), "SERVICE_UNAVAILABLE");
    assert!(refused.header("retry-after").is_some());
    assert!(refused.body["retryAfterSeconds"].as_u64().unwrap() >= 1);

    // The item is back as it was, but for its version counter.
    let after = stack.items().await;
    for attr in ["sends", "codeId", "codeMac", "codeExpiresAt", "attempts"] {
        assert_eq!(before[0].get(attr), after[0].get(attr), "{attr}");
    }
    // Two more sends fit in the window (one was taken back), the third does not.
    assert_eq!(post(&send, "otp-send", &body).await.status, 200);
    assert_eq!(post(&send, "otp-send", &body).await.status, 200);
    assert_eq!(post(&send, "otp-send", &body).await.status, 429);
    assert_eq!(stack.sms_to(&phone).await.len(), 3);
    // And the first code was valid again in between: verify the latest instead.
    let latest = stack.last_code(&phone).await;
    assert_ne!(first_code.len(), 0);
    let ok = post(
        &verify,
        "otp-verify",
        &json!({"phone": phone, "code": latest}),
    )
    .await;
    assert_eq!(ok.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn after_a_refused_sms_the_previous_code_still_verifies() {
    let stack = Stack::new().await;
    let send = stack.otp_send(&[]).await;
    let failing = stack.otp_send_with_sns(&[], stack.unreachable_sns()).await;
    let verify = stack.otp_verify(&[]).await;
    let phone = random_phone();
    assert_eq!(
        post(&send, "otp-send", &json!({ "phone": phone }))
            .await
            .status,
        200
    );
    let code = stack.last_code(&phone).await;
    assert_eq!(
        post(&failing, "otp-send", &json!({ "phone": phone }))
            .await
            .status,
        503
    );
    let ok = post(
        &verify,
        "otp-verify",
        &json!({"phone": phone, "code": code}),
    )
    .await;
    assert_eq!(ok.status, 200, "{}", ok.body);
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_requests_get_400_naming_the_field_and_change_nothing() {
    let stack = Stack::new().await;
    let send = stack.otp_send(&[]).await;
    // A phone of this test's own: other tests share the SMS log of the local stack.
    let phone = random_phone();
    let oversized = json!({"phone": phone, "pad": "x".repeat(4100)}).to_string();
    let cases: Vec<(Option<String>, &str)> = vec![
        (None, "body"),
        (Some(String::new()), "body"),
        (Some("   ".into()), "body"),
        (Some("{".into()), "body"),
        (Some("null".into()), "body"),
        (Some("[]".into()), "body"),
        (Some("\"+77001234567\"".into()), "body"),
        (Some("{}".into()), "phone"),
        (Some(r#"{"phone":null}"#.into()), "phone"),
        (Some(r#"{"phone":77001234567}"#.into()), "phone"),
        (Some(r#"{"phone":["+77001234567"]}"#.into()), "phone"),
        (Some(r#"{"phone":""}"#.into()), "phone"),
        (Some(r#"{"phone":"87001234567"}"#.into()), "phone"),
        (Some(r#"{"phone":"+7700123456"}"#.into()), "phone"),
        (Some(r#"{"phone":"+770012345678"}"#.into()), "phone"),
        (Some(r#"{"phone":"+7 700 123 45 67"}"#.into()), "phone"),
        (Some(r#"{"phone":"+77001234567\n"}"#.into()), "phone"),
        (Some(r#"{"phone":"+7٧٠٠١٢٣٤٥٦٧"}"#.into()), "phone"),
        (Some(r#"{"phone":"+17001234567"}"#.into()), "phone"),
        (Some(oversized), "body"),
    ];
    for (body, field) in cases {
        let answer = call(&send, event_request("otp-send", body.as_deref())).await;
        assert_eq!(answer.status, 400, "{body:?}: {}", answer.body);
        assert_eq!(answer.code(), "BAD_REQUEST");
        let message = answer.body["message"].as_str().unwrap();
        assert!(message.starts_with(field), "{body:?}: {message}");
        assert_eq!(answer.header("cache-control"), Some("no-store"));
    }
    assert!(stack.items().await.is_empty());
    assert!(stack.sms_to(&phone).await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn phones_outside_the_allowed_prefixes_get_400_and_no_sms() {
    let stack = Stack::new().await;
    let send = stack
        .otp_send(&[("ALLOWED_PHONE_PREFIXES", "+776,+777")])
        .await;
    let answer = post(&send, "otp-send", &json!({"phone": "+77051234567"})).await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.code(), "BAD_REQUEST");
    assert!(
        answer.body["message"]
            .as_str()
            .unwrap()
            .starts_with("phone")
    );
    assert!(stack.items().await.is_empty());
    assert!(stack.sms_to("+77051234567").await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn base64_bodies_any_content_type_and_extra_fields_are_accepted() {
    let stack = Stack::new().await;
    let send = stack.otp_send(&[]).await;
    let phone = random_phone();
    let body = json!({"phone": phone, "locale": "kk"}).to_string();
    let answer = call(&send, event_request_base64("otp-send", &body)).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(stack.sms_to(&phone).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_sms_text_follows_the_configured_template() {
    let stack = Stack::new().await;
    let send = stack
        .otp_send(&[
            ("SMS_MESSAGE", "{code} is your FoodSave code"),
            ("SMS_SENDER_ID", "FoodSave"),
        ])
        .await;
    let phone = random_phone();
    assert_eq!(
        post(&send, "otp-send", &json!({"phone": phone}))
            .await
            .status,
        200
    );
    let text = stack.sms_to(&phone).await.pop().unwrap();
    let (code, rest) = text.split_at(6);
    assert!(code.bytes().all(|b| b.is_ascii_digit()), "{text}");
    assert_eq!(rest, " is your FoodSave code");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_first_send_costs_one_dynamodb_request_and_a_resend_two() {
    let stack = Stack::new().await;
    let send = stack.otp_send(&[]).await;
    let phone = random_phone();
    stack.round_trips.take();
    assert_eq!(
        post(&send, "otp-send", &json!({"phone": phone}))
            .await
            .status,
        200
    );
    assert_eq!(
        stack.round_trips.take(),
        1,
        "first send: one conditional put"
    );
    // The phone has live state now: the put's failed condition returns it, and a
    // second put decides from it.
    assert_eq!(
        post(&send, "otp-send", &json!({"phone": phone}))
            .await
            .status,
        200
    );
    assert_eq!(stack.round_trips.take(), 2, "resend");
    assert_eq!(
        post(&send, "otp-send", &json!({"phone": phone}))
            .await
            .status,
        200
    );
    stack.round_trips.take();
    // A rate-limited send: the one put whose failed condition shows the full window.
    assert_eq!(
        post(&send, "otp-send", &json!({"phone": phone}))
            .await
            .status,
        429
    );
    assert_eq!(stack.round_trips.take(), 1, "rate limited");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_sms_that_gets_no_answer_keeps_its_slot_and_code_and_is_not_sent_again() {
    // An SNS endpoint that accepts connections and never answers: the publish may have
    // gone out, so it must not be repeated, and the send keeps its slot (CONTRACT §3).
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = Arc::clone(&connections);
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            open.push(socket);
        }
    });
    let stack = Stack::new().await;
    // The functions' SNS client (3 s publish timeout), pointed at the silent endpoint.
    let sns = aws_sdk_sns::Client::from_conf(
        SnsSmsSender::client(&stack.aws)
            .config()
            .to_builder()
            .endpoint_url(format!("http://{addr}"))
            .build(),
    );
    let stalled = stack.otp_send_with_sns(&[], sns).await;
    let send = stack.otp_send(&[]).await;
    let phone = random_phone();
    let body = json!({ "phone": phone });
    let answer = post(&stalled, "otp-send", &body).await;
    assert_eq!((answer.status, answer.code()), (503, "SERVICE_UNAVAILABLE"));
    assert!(answer.header("retry-after").is_some());
    assert_eq!(
        connections.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "one publish, no retry"
    );
    // The unanswered send's code stays active and its slot spent.
    let items = stack.items().await;
    assert_eq!(items.len(), 1);
    assert!(items[0].contains_key("codeMac"));
    for _ in 0..2 {
        assert_eq!(post(&send, "otp-send", &body).await.status, 200);
    }
    assert_eq!(post(&send, "otp-send", &body).await.status, 429);
    held.abort();
}

//! The abuse budgets of CONTRACT §3b against the local AWS stack: per source IP, global,
//! wrong guesses across codes, idempotent sends, test numbers, the SMS language.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use common::{Answer, Stack, call, random_phone, sample_event};
use foodsave_auth::api::otp_send::OtpSend;
use lambda_http::Request;
use serde_json::{Value, json};

/// A send for `phone` from `ip` (`None`: no source IP at all), with extra headers.
fn send_request(phone: &str, ip: Option<&str>, headers: &[(&str, &str)]) -> Request {
    let mut event = sample_event("otp-send");
    event["body"] = Value::String(json!({ "phone": phone }).to_string());
    match ip {
        Some(ip) => event["requestContext"]["http"]["sourceIp"] = Value::String(ip.into()),
        None => {
            event["requestContext"]["http"]
                .as_object_mut()
                .unwrap()
                .remove("sourceIp");
        }
    }
    for (name, value) in headers {
        event["headers"][*name] = Value::String((*value).into());
    }
    foodsave_auth::http::event::request_from_json(&event.to_string()).unwrap()
}

fn verify_request(phone: &str, code: &str) -> Request {
    let mut event = sample_event("otp-verify");
    event["body"] = Value::String(json!({ "phone": phone, "code": code }).to_string());
    foodsave_auth::http::event::request_from_json(&event.to_string()).unwrap()
}

/// Fire every request at once; the answers by status.
async fn concurrently(send: &Arc<OtpSend>, requests: Vec<Request>) -> HashMap<u16, Vec<Answer>> {
    let mut tasks = tokio::task::JoinSet::new();
    for request in requests {
        let send = Arc::clone(send);
        tasks.spawn(async move { call(send.as_ref(), request).await });
    }
    let mut by_status: HashMap<u16, Vec<Answer>> = HashMap::new();
    while let Some(answer) = tasks.join_next().await {
        let answer = answer.unwrap();
        by_status.entry(answer.status).or_default().push(answer);
    }
    by_status
}

async fn sms_count(stack: &Stack, phones: &[String]) -> usize {
    let mut n = 0;
    for phone in phones {
        n += stack.sms_to(phone).await.len();
    }
    n
}

fn assert_rate_limited(answers: &[Answer]) {
    for answer in answers {
        assert_eq!(answer.code(), "RATE_LIMIT", "{}", answer.body);
        let wait = answer.body["retryAfterSeconds"].as_u64().unwrap();
        assert!(wait >= 1);
        assert_eq!(
            answer.header("retry-after"),
            Some(wait.to_string().as_str())
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn fifty_concurrent_sends_from_one_ip_over_fifty_phones_let_exactly_the_ip_budget_through() {
    let stack = Stack::new().await;
    let send = Arc::new(stack.otp_send(&[("OTP_IP_SEND_LIMIT", "10")]).await);
    let phones: Vec<String> = (0..50).map(|_| random_phone()).collect();
    let requests = phones
        .iter()
        .map(|p| send_request(p, Some("203.0.113.7"), &[]))
        .collect();
    let answers = concurrently(&send, requests).await;
    assert_eq!(
        answers.get(&200).map_or(0, Vec::len),
        10,
        "{:?}",
        answers.keys()
    );
    assert_eq!(answers.get(&429).map_or(0, Vec::len), 40);
    assert_rate_limited(&answers[&429]);
    assert_eq!(sms_count(&stack, &phones).await, 10);
    // Another address has its own budget; an IPv6 /64 is one address; none at all is
    // never refused for it.
    let other = random_phone();
    assert_eq!(
        call(
            send.as_ref(),
            send_request(&other, Some("198.51.100.1"), &[])
        )
        .await
        .status,
        200
    );
    for (i, ip) in ["2001:db8:7:7::1", "2001:db8:7:7:ffff::2"]
        .iter()
        .enumerate()
    {
        let limited = Arc::new(stack.otp_send(&[("OTP_IP_SEND_LIMIT", "1")]).await);
        let answer = call(
            limited.as_ref(),
            send_request(&random_phone(), Some(ip), &[]),
        )
        .await;
        assert_eq!(answer.status, if i == 0 { 200 } else { 429 }, "{ip}");
    }
    let answer = call(send.as_ref(), send_request(&random_phone(), None, &[])).await;
    assert_eq!(answer.status, 200);
    let answer = call(
        send.as_ref(),
        send_request(&random_phone(), Some("not-an-ip"), &[]),
    )
    .await;
    assert_eq!(answer.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_global_budget_lets_exactly_its_limit_through_from_many_ips() {
    let stack = Stack::new().await;
    let send = Arc::new(
        stack
            .otp_send(&[("OTP_GLOBAL_SEND_LIMIT_PER_HOUR", "7")])
            .await,
    );
    let phones: Vec<String> = (0..30).map(|_| random_phone()).collect();
    let requests = phones
        .iter()
        .enumerate()
        .map(|(i, p)| send_request(p, Some(&format!("198.51.100.{i}")), &[]))
        .collect();
    let answers = concurrently(&send, requests).await;
    assert_eq!(answers.get(&200).map_or(0, Vec::len), 7);
    assert_eq!(answers.get(&429).map_or(0, Vec::len), 23);
    assert_rate_limited(&answers[&429]);
    assert_eq!(sms_count(&stack, &phones).await, 7);
    // An hour later the budget is whole again.
    stack.clock.advance_secs(3600);
    assert_eq!(
        call(send.as_ref(), send_request(&random_phone(), None, &[]))
            .await
            .status,
        200
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sharded_global_budget_never_lets_more_through() {
    let stack = Stack::new().await;
    // 150 an hour: two shards of 75.
    let send = Arc::new(
        stack
            .otp_send(&[("OTP_GLOBAL_SEND_LIMIT_PER_HOUR", "150")])
            .await,
    );
    let phones: Vec<String> = (0..160).map(|_| random_phone()).collect();
    let requests = phones.iter().map(|p| send_request(p, None, &[])).collect();
    let answers = concurrently(&send, requests).await;
    let sent = answers.get(&200).map_or(0, Vec::len);
    assert!(sent <= 150, "{sent} sent");
    // CONTRACT §3b: a sharded budget may refuse early by at most a tenth of the limit.
    assert!(
        sent >= 135,
        "only {sent} sent: the shards refused more than a tenth early"
    );
    assert_eq!(sms_count(&stack, &phones).await, sent);
}

#[tokio::test(flavor = "multi_thread")]
async fn record_only_lets_everything_through_and_spends_no_budget() {
    let stack = Stack::new().await;
    let send = Arc::new(
        stack
            .otp_send(&[
                ("OTP_IP_SEND_LIMIT", "2"),
                ("OTP_GLOBAL_SEND_LIMIT_PER_HOUR", "3"),
                ("ABUSE_MODE", "record-only"),
            ])
            .await,
    );
    let phones: Vec<String> = (0..6).map(|_| random_phone()).collect();
    for phone in &phones {
        let answer = call(send.as_ref(), send_request(phone, Some("203.0.113.9"), &[])).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
    }
    assert_eq!(sms_count(&stack, &phones).await, 6);
    // Enforced afterwards, the same budgets are full: what was counted is exact.
    let enforce = stack
        .otp_send(&[
            ("OTP_IP_SEND_LIMIT", "2"),
            ("OTP_GLOBAL_SEND_LIMIT_PER_HOUR", "3"),
        ])
        .await;
    let answer = call(
        &enforce,
        send_request(&random_phone(), Some("203.0.113.9"), &[]),
    )
    .await;
    assert_eq!((answer.status, answer.code()), (429, "RATE_LIMIT"));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_checks_run_in_order_and_a_refusal_spends_nothing_of_a_later_one() {
    let stack = Stack::new().await;
    let send = stack
        .otp_send(&[("OTP_IP_SEND_LIMIT", "4"), ("OTP_SEND_LIMIT", "1")])
        .await;
    let phone = random_phone();
    assert_eq!(
        call(&send, send_request(&phone, Some("203.0.113.20"), &[]))
            .await
            .status,
        200
    );
    // The per-phone window refuses; the IP budget is not spent by the refusals.
    for _ in 0..5 {
        let answer = call(&send, send_request(&phone, Some("203.0.113.20"), &[])).await;
        assert_eq!(answer.status, 429);
        assert!(answer.body["retryAfterSeconds"].as_u64().unwrap() > 250);
    }
    for _ in 0..3 {
        let answer = call(
            &send,
            send_request(&random_phone(), Some("203.0.113.20"), &[]),
        )
        .await;
        assert_eq!(answer.status, 200);
    }
    let answer = call(
        &send,
        send_request(&random_phone(), Some("203.0.113.20"), &[]),
    )
    .await;
    assert_eq!(answer.status, 429);
    // The IP's wait is its own: the hour, not the phone window's 300 s.
    assert!(answer.body["retryAfterSeconds"].as_u64().unwrap() > 3000);
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_wrong_guesses_across_resends_are_each_counted_then_verify_and_send_lock() {
    let stack = Stack::new().await;
    let extra = [("OTP_MAX_WRONG_PER_DAY", "6"), ("OTP_SEND_LIMIT", "10")];
    let send = stack.otp_send(&extra).await;
    let verify = Arc::new(stack.otp_verify(&extra).await);
    let phone = random_phone();
    let mut invalid = 0;
    let mut locked = 0;
    for _ in 0..2 {
        assert_eq!(
            call(&send, send_request(&phone, None, &[])).await.status,
            200
        );
        let code = stack.last_code(&phone).await;
        let wrong = if code == "000000" { "111111" } else { "000000" };
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..4 {
            let verify = Arc::clone(&verify);
            let phone = phone.clone();
            tasks.spawn(async move { call(verify.as_ref(), verify_request(&phone, wrong)).await });
        }
        while let Some(answer) = tasks.join_next().await {
            let answer = answer.unwrap();
            match (answer.status, answer.code()) {
                (400, "INVALID_CODE") => invalid += 1,
                (429, "RATE_LIMIT") => locked += 1,
                other => panic!("{other:?} {}", answer.body),
            }
        }
    }
    assert_eq!((invalid, locked), (6, 2));
    // Locked: the right code gets 429, and so does a send, both waiting a day.
    let code = stack.last_code(&phone).await;
    let answer = call(verify.as_ref(), verify_request(&phone, &code)).await;
    assert_eq!((answer.status, answer.code()), (429, "RATE_LIMIT"));
    assert!(answer.body["retryAfterSeconds"].as_u64().unwrap() > 86_000);
    let before = stack.sms_to(&phone).await.len();
    let answer = call(&send, send_request(&phone, None, &[])).await;
    assert_eq!((answer.status, answer.code()), (429, "RATE_LIMIT"));
    assert_eq!(
        stack.sms_to(&phone).await.len(),
        before,
        "no SMS for a locked phone"
    );
    // A day later it may try again.
    stack.clock.advance_secs(86_400);
    assert_eq!(
        call(&send, send_request(&phone, None, &[])).await.status,
        200
    );
    let code = stack.last_code(&phone).await;
    assert_eq!(
        call(verify.as_ref(), verify_request(&phone, &code))
            .await
            .status,
        200
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_guess_budget_is_on_by_default_at_twenty_a_day() {
    let stack = Stack::new().await;
    let send = stack.otp_send(&[("OTP_SEND_LIMIT", "10")]).await;
    let verify = stack.otp_verify(&[]).await;
    let phone = random_phone();
    let mut last = None;
    for round in 0..4 {
        assert_eq!(
            call(&send, send_request(&phone, None, &[])).await.status,
            200
        );
        let code = stack.last_code(&phone).await;
        let wrong = if code == "000000" { "111111" } else { "000000" };
        for _ in 0..5 {
            let answer = call(&verify, verify_request(&phone, wrong)).await;
            assert_eq!(answer.status, 400, "round {round}: {}", answer.body);
            last = answer.body["attemptsLeft"].as_u64();
        }
    }
    assert_eq!(last, Some(0));
    assert_eq!(
        call(&send, send_request(&phone, None, &[])).await.status,
        429
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_send_repeated_with_its_idempotency_key_replays_with_one_sms_and_one_slot() {
    let stack = Stack::new().await;
    let send = Arc::new(stack.otp_send(&[]).await);
    let phone = random_phone();
    let key = [("idempotency-key", "3f1c2a9e-retry-after-timeout")];
    // Ten at once with one key (the first still in flight for the others).
    let requests = (0..10).map(|_| send_request(&phone, None, &key)).collect();
    let answers = concurrently(&send, requests).await;
    assert_eq!(answers.get(&200).map_or(0, Vec::len), 10);
    for answer in &answers[&200] {
        assert_eq!(
            answer.body,
            json!({"message": "OTP sent", "retryAfterSeconds": 300})
        );
    }
    assert_eq!(stack.sms_to(&phone).await.len(), 1);
    let code = stack.last_code(&phone).await;
    // One slot spent: two more sends fit, the third does not.
    assert_eq!(
        call(send.as_ref(), send_request(&phone, None, &[]))
            .await
            .status,
        200
    );
    assert_ne!(stack.last_code(&phone).await, "", "a new code");
    assert_eq!(
        call(send.as_ref(), send_request(&phone, None, &[]))
            .await
            .status,
        200
    );
    assert_eq!(
        call(send.as_ref(), send_request(&phone, None, &key))
            .await
            .status,
        429
    );
    assert_eq!(stack.sms_to(&phone).await.len(), 3);
    let _ = code;
    // The same key for another phone is another send.
    let other = random_phone();
    assert_eq!(
        call(send.as_ref(), send_request(&other, None, &key))
            .await
            .status,
        200
    );
    assert_eq!(stack.sms_to(&other).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_whose_sms_was_refused_is_free_again_and_a_bad_key_is_a_400() {
    let stack = Stack::new().await;
    let failing = stack.otp_send_with_sns(&[], stack.unreachable_sns()).await;
    let send = stack.otp_send(&[]).await;
    let phone = random_phone();
    let key = [("idempotency-key", "k-1")];
    assert_eq!(
        call(&failing, send_request(&phone, None, &key))
            .await
            .status,
        503
    );
    assert_eq!(
        call(&send, send_request(&phone, None, &key)).await.status,
        200
    );
    assert_eq!(stack.sms_to(&phone).await.len(), 1);
    for bad in ["", &"x".repeat(256), "has space", "ключ"] {
        let mut event = sample_event("otp-send");
        event["body"] = Value::String(json!({ "phone": random_phone() }).to_string());
        event["headers"]["idempotency-key"] = Value::String(bad.to_owned());
        let request = foodsave_auth::http::event::request_from_json(&event.to_string()).unwrap();
        let answer = call(&send, request).await;
        assert_eq!(
            (answer.status, answer.code()),
            (400, "BAD_REQUEST"),
            "{bad:?}"
        );
        assert!(
            answer.body["message"]
                .as_str()
                .unwrap()
                .starts_with("Idempotency-Key")
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_test_number_gets_its_fixed_code_and_no_sms_and_keeps_every_other_rule() {
    let stack = Stack::new().await;
    let extra = [
        (
            "OTP_TEST_NUMBERS",
            "+77000000001=123456,+77000000002=654321",
        ),
        ("OTP_IP_SEND_LIMIT", "1"),
        ("OTP_GLOBAL_SEND_LIMIT_PER_HOUR", "1"),
    ];
    let send = stack.otp_send(&extra).await;
    let verify = stack.otp_verify(&extra).await;
    let phone = "+77000000002";
    for _ in 0..3 {
        let answer = call(&send, send_request(phone, Some("203.0.113.30"), &[])).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
    }
    assert!(stack.sms_to(phone).await.is_empty());
    // The per-phone window still holds.
    assert_eq!(
        call(&send, send_request(phone, Some("203.0.113.30"), &[]))
            .await
            .status,
        429
    );
    // No SMS budget spent: a real phone from that IP still gets one.
    let real = random_phone();
    assert_eq!(
        call(&send, send_request(&real, Some("203.0.113.30"), &[]))
            .await
            .status,
        200
    );
    // A wrong code counts; the fixed code logs in, once.
    let answer = call(&verify, verify_request(phone, "111111")).await;
    assert_eq!(
        (answer.status, answer.body["attemptsLeft"].as_u64()),
        (400, Some(4))
    );
    assert_eq!(
        call(&verify, verify_request(phone, "654321")).await.status,
        200
    );
    assert_eq!(
        call(&verify, verify_request(phone, "654321")).await.status,
        401
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_sms_comes_in_the_language_the_app_asks_for() {
    let stack = Stack::new().await;
    let send = stack
        .otp_send(&[
            ("SMS_MESSAGE_RU", "Код FoodSave: {code}"),
            ("SMS_MESSAGE_KK", "FoodSave коды: {code}"),
            ("OTP_SEND_LIMIT", "5"),
        ])
        .await;
    let phone = random_phone();
    for (header, prefix) in [
        ("ru-RU,ru;q=0.9,en;q=0.5", "Код FoodSave: "),
        ("en-US,kk;q=0.8", "FoodSave коды: "),
        ("fr", "FoodSave code: "),
    ] {
        let answer = call(
            &send,
            send_request(&phone, None, &[("accept-language", header)]),
        )
        .await;
        assert_eq!(answer.status, 200);
        let text = stack.sms_to(&phone).await.pop().unwrap();
        assert!(text.starts_with(prefix), "{header}: {text}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_send_with_the_budgets_on_is_still_one_dynamodb_request() {
    let stack = Stack::new().await;
    let send = stack
        .otp_send(&[
            ("OTP_IP_SEND_LIMIT", "30"),
            ("OTP_GLOBAL_SEND_LIMIT_PER_HOUR", "1000"),
        ])
        .await;
    stack.round_trips.take();
    let answer = call(
        &send,
        send_request(&random_phone(), Some("203.0.113.40"), &[]),
    )
    .await;
    assert_eq!(answer.status, 200);
    assert_eq!(stack.round_trips.take(), 1, "one transaction");
}

/// A container remembers the global shard as it last wrote or read it, so its next send
/// picks a slot not already known to be taken: sends from one warm container never
/// collide on a slot (without the hint, filling 60 of 80 slots collides about 22 times).
#[tokio::test(flavor = "multi_thread")]
async fn a_warm_container_picks_global_slots_it_knows_are_free() {
    let stack = Stack::new().await;
    let send = stack
        .otp_send(&[("OTP_GLOBAL_SEND_LIMIT_PER_HOUR", "80")])
        .await;
    stack.round_trips.take();
    for _ in 0..60 {
        let answer = call(
            &send,
            send_request(&random_phone(), Some("203.0.113.41"), &[]),
        )
        .await;
        assert_eq!(answer.status, 200, "{}", answer.body);
    }
    assert_eq!(
        stack.round_trips.take(),
        60,
        "one transaction a send, no slot collisions"
    );
    // Another container's sends are not in this one's hint: it may collide, never overrun.
    let other = stack
        .otp_send(&[("OTP_GLOBAL_SEND_LIMIT_PER_HOUR", "80")])
        .await;
    let mut sent = 0;
    for _ in 0..30 {
        let answer = call(
            &other,
            send_request(&random_phone(), Some("203.0.113.42"), &[]),
        )
        .await;
        if answer.status == 200 {
            sent += 1;
        } else {
            assert_eq!(answer.status, 429, "{}", answer.body);
        }
    }
    assert_eq!(sent, 20, "exactly the 20 slots left");
}

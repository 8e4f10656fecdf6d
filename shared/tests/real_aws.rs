//! What real DynamoDB and SNS do that moto never shows (CONTRACT §1, §3, §4), injected by
//! the fault proxy in front of the local stack: cancelled transactions, throttling, 5xx,
//! stalls and slow answers, per operation. Each test asserts the body the contract
//! promises, never the clock.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::time::Duration;

use common::proxied::{assert_unavailable, login, post, proxied, refresh_body, request, sent_code};
use common::{Stack, call, random_phone};
use foodsave_auth::devstack::fault_proxy::{Fault, FaultProxy, Times};
use foodsave_auth::devstack::lambda_runtime;
use serde_json::{Value, json};

// ---- verify: the one transaction ------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn a_verify_whose_transaction_meets_a_conflict_retries_and_succeeds() {
    let stack = Stack::new().await;
    let p = proxied(&stack, &[]).await;
    let phone = random_phone();
    assert_eq!(
        post(&p.send, "otp-send", &json!({ "phone": phone }))
            .await
            .status,
        200
    );
    let code = sent_code(&stack, &phone).await;
    p.proxy.inject(
        "TransactWriteItems",
        Fault::transaction_canceled(["None", "TransactionConflict", "None"]),
        Times::Next(2),
    );
    let answer = post(
        &p.verify,
        "otp-verify",
        &json!({ "phone": phone, "code": code }),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(p.proxy.count("TransactWriteItems"), 3);
    // Decided again from a fresh read each time.
    assert_eq!(p.proxy.count("BatchGetItem"), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_throttled_transaction_is_a_503_and_the_code_still_works() {
    let stack = Stack::new().await;
    let p = proxied(&stack, &[]).await;
    let phone = random_phone();
    assert_eq!(
        post(&p.send, "otp-send", &json!({ "phone": phone }))
            .await
            .status,
        200
    );
    let code = sent_code(&stack, &phone).await;
    let body = json!({ "phone": phone, "code": code });
    p.proxy.always(
        "TransactWriteItems",
        Fault::transaction_canceled(["ThrottlingError", "None", "None"]),
    );
    assert_unavailable(&post(&p.verify, "otp-verify", &body).await);
    p.proxy.clear();
    p.proxy.always(
        "TransactWriteItems",
        Fault::transaction_canceled(["None", "None", "ProvisionedThroughputExceeded"]),
    );
    assert_unavailable(&post(&p.verify, "otp-verify", &body).await);
    p.proxy.clear();
    assert_eq!(post(&p.verify, "otp-verify", &body).await.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn any_other_cancellation_reason_is_a_500_at_once_without_retries() {
    let stack = Stack::new().await;
    let p = proxied(&stack, &[]).await;
    let phone = random_phone();
    assert_eq!(
        post(&p.send, "otp-send", &json!({ "phone": phone }))
            .await
            .status,
        200
    );
    let code = sent_code(&stack, &phone).await;
    p.proxy.always(
        "TransactWriteItems",
        Fault::transaction_canceled(["None", "ValidationError", "None"]),
    );
    let answer = post(
        &p.verify,
        "otp-verify",
        &json!({ "phone": phone, "code": code }),
    )
    .await;
    assert_eq!((answer.status, answer.code()), (500, "INTERNAL_ERROR"));
    assert_eq!(p.proxy.count("TransactWriteItems"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_store_is_a_503_before_the_deadline() {
    let stack = Stack::new().await;
    let p = proxied(&stack, &[]).await;
    let phone = random_phone();
    let first = login(&stack, &p, &phone).await;
    p.proxy
        .always("BatchGetItem", Fault::Stall(Duration::from_secs(60)));
    p.proxy
        .always("UpdateItem", Fault::Stall(Duration::from_secs(60)));
    p.proxy
        .always("PutItem", Fault::Stall(Duration::from_secs(60)));
    // Each with only 3 s left, as a nearly spent invocation would have.
    let left = Duration::from_secs(3);
    let answer = call(
        &p.verify,
        request(
            "otp-verify",
            &json!({ "phone": phone, "code": "123456" }),
            left,
        ),
    )
    .await;
    assert_unavailable(&answer);
    let answer = call(
        &p.refresh,
        request("token-refresh", &refresh_body(&first), left),
    )
    .await;
    assert_unavailable(&answer);
    let answer = call(&p.logout, request("logout", &refresh_body(&first), left)).await;
    assert_unavailable(&answer);
    let answer = call(
        &p.send,
        request("otp-send", &json!({ "phone": phone }), left),
    )
    .await;
    assert_unavailable(&answer);
}

// ---- refresh and logout: one conditional update each --------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn throttled_refresh_and_logout_are_503_and_change_nothing() {
    let stack = Stack::new().await;
    let p = proxied(&stack, &[]).await;
    let phone = random_phone();
    let first = login(&stack, &p, &phone).await;
    p.proxy.always("UpdateItem", Fault::Throttle);
    assert_unavailable(&post(&p.refresh, "token-refresh", &refresh_body(&first)).await);
    assert_unavailable(&post(&p.logout, "logout", &refresh_body(&first)).await);
    p.proxy.clear();
    p.proxy
        .always("UpdateItem", Fault::ProvisionedThroughputExceeded);
    assert_unavailable(&post(&p.refresh, "token-refresh", &refresh_body(&first)).await);
    p.proxy.clear();
    // The token is still the live one.
    let next = post(&p.refresh, "token-refresh", &refresh_body(&first)).await;
    assert_eq!(next.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rotation_whose_answer_was_lost_is_not_mistaken_for_reuse() {
    // The update is applied but its answer comes after the SDK's attempt timeout; the
    // SDK repeats it, the condition fails, and the item shows this very rotation. With
    // no grace a reuse would revoke the session: it must not.
    let stack = Stack::new().await;
    let p = proxied(&stack, &[("REFRESH_REUSE_GRACE_SECONDS", "0")]).await;
    let phone = random_phone();
    let first = login(&stack, &p, &phone).await;
    p.proxy
        .once("UpdateItem", Fault::SlowAnswer(Duration::from_millis(2500)));
    let second = post(&p.refresh, "token-refresh", &refresh_body(&first)).await;
    assert_eq!(second.status, 200, "{}", second.body);
    assert_eq!(p.proxy.count("UpdateItem"), 2);
    let third = post(&p.refresh, "token-refresh", &refresh_body(&second)).await;
    assert_eq!(third.status, 200, "{}", third.body);
}

// ---- send: the SMS -----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_publish_is_sent_once_and_keeps_its_slot() {
    let stack = Stack::new().await;
    let p = proxied(&stack, &[]).await;
    let phone = random_phone();
    let body = json!({ "phone": phone });
    // SNS takes the message but answers after the 3 s publish timeout.
    p.proxy
        .once("Publish", Fault::SlowAnswer(Duration::from_secs(4)));
    assert_unavailable(&post(&p.send, "otp-send", &body).await);
    assert_eq!(p.proxy.count("Publish"), 1, "never published twice");
    assert_eq!(stack.sms_to(&phone).await.len(), 1);
    // The code that did go out works, and its slot stays spent.
    let code = sent_code(&stack, &phone).await;
    let answer = post(
        &p.verify,
        "otp-verify",
        &json!({ "phone": phone, "code": code }),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    for _ in 0..2 {
        assert_eq!(post(&p.send, "otp-send", &body).await.status, 200);
    }
    assert_eq!(post(&p.send, "otp-send", &body).await.status, 429);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replay_after_an_unanswered_publish_is_the_200_of_a_sent_code_with_no_new_sms() {
    let stack = Stack::new().await;
    let p = proxied(&stack, &[]).await;
    let phone = random_phone();
    let body = json!({ "phone": phone });
    let keyed = || {
        let mut req = request("otp-send", &body, Duration::from_secs(10));
        req.headers_mut()
            .insert("idempotency-key", "app-install-7#send-1".parse().unwrap());
        req
    };
    p.proxy
        .once("Publish", Fault::SlowAnswer(Duration::from_secs(4)));
    assert_unavailable(&call(&p.send, keyed()).await);
    // CONTRACT §3b: the code is valid and its SMS may still arrive, so the replay answers
    // as a sent code would, and sends nothing, spends nothing, makes no new code.
    let replay = call(&p.send, keyed()).await;
    assert_eq!(replay.status, 200, "{}", replay.body);
    assert_eq!(replay.body["message"], "OTP sent");
    assert_eq!(p.proxy.count("Publish"), 1, "no second publish");
    assert_eq!(stack.sms_to(&phone).await.len(), 1);
    // The code of the first send is the one that works.
    let code = sent_code(&stack, &phone).await;
    let login = post(
        &p.verify,
        "otp-verify",
        &json!({ "phone": phone, "code": code }),
    )
    .await;
    assert_eq!(login.status, 200, "{}", login.body);
    // Two slots are left of the window: the replay took none.
    for _ in 0..2 {
        assert_eq!(post(&p.send, "otp-send", &body).await.status, 200);
    }
    assert_eq!(post(&p.send, "otp-send", &body).await.status, 429);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_throttled_publish_is_retried_and_sends_one_sms() {
    let stack = Stack::new().await;
    let p = proxied(&stack, &[]).await;
    let phone = random_phone();
    p.proxy.inject("Publish", Fault::Throttle, Times::Next(2));
    let answer = post(&p.send, "otp-send", &json!({ "phone": phone })).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(p.proxy.count("Publish"), 3);
    assert_eq!(stack.sms_to(&phone).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_publish_sns_refuses_is_taken_back() {
    let stack = Stack::new().await;
    let p = proxied(&stack, &[]).await;
    let phone = random_phone();
    let body = json!({ "phone": phone });
    p.proxy.always("Publish", Fault::Throttle);
    assert_unavailable(&post(&p.send, "otp-send", &body).await);
    p.proxy.clear();
    p.proxy.once("Publish", Fault::ServerError(500));
    assert_unavailable(&post(&p.send, "otp-send", &body).await);
    assert_eq!(
        p.proxy.count("Publish"),
        4,
        "three throttled tries, one 500 not retried"
    );
    assert!(stack.sms_to(&phone).await.is_empty());
    // Both were given back: all three slots are free.
    for _ in 0..3 {
        assert_eq!(post(&p.send, "otp-send", &body).await.status, 200);
    }
    assert_eq!(post(&p.send, "otp-send", &body).await.status, 429);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_publish_is_a_503_and_is_not_retried() {
    let stack = Stack::new().await;
    let p = proxied(&stack, &[]).await;
    let phone = random_phone();
    p.proxy
        .always("Publish", Fault::Stall(Duration::from_secs(60)));
    assert_unavailable(&post(&p.send, "otp-send", &json!({ "phone": phone })).await);
    assert_eq!(p.proxy.count("Publish"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_publish_then_a_stalled_take_back_still_answers_503_in_time() {
    let stack = Stack::new().await;
    let p = proxied(&stack, &[]).await;
    let phone = random_phone();
    p.proxy.once("Publish", Fault::ServerError(500));
    // The admitting put goes through; the take-back put stalls.
    p.proxy.once("PutItem", Fault::SlowAnswer(Duration::ZERO));
    p.proxy
        .always("PutItem", Fault::Stall(Duration::from_secs(60)));
    let answer = call(
        &p.send,
        request(
            "otp-send",
            &json!({ "phone": phone }),
            Duration::from_secs(4),
        ),
    )
    .await;
    assert_unavailable(&answer);
    assert!(p.proxy.count("PutItem") >= 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_secret_refresh_keeps_the_cached_secret() {
    let stack = Stack::new().await;
    let p = proxied(&stack, &[]).await;
    let phone = random_phone();
    let first = login(&stack, &p, &phone).await;
    // Past the refresh period: the next request would re-read the secret.
    stack.clock.advance_secs(3600);
    p.proxy
        .always("GetSecretValue", Fault::Stall(Duration::from_secs(60)));
    let seen = p.proxy.count("GetSecretValue");
    let next = post(&p.refresh, "token-refresh", &refresh_body(&first)).await;
    assert_eq!(next.status, 200, "{}", next.body);
    assert_eq!(
        post(&p.send, "otp-send", &json!({ "phone": phone }))
            .await
            .status,
        200
    );
    assert!(
        p.proxy.count("GetSecretValue") > seen,
        "the refresh was tried"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_a_batch_read_leaves_unprocessed_are_read_again() {
    let stack = Stack::new().await;
    let p = proxied(&stack, &[]).await;
    let phone = random_phone();
    assert_eq!(
        post(&p.send, "otp-send", &json!({ "phone": phone }))
            .await
            .status,
        200
    );
    let code = sent_code(&stack, &phone).await;
    p.proxy
        .inject("BatchGetItem", Fault::UnprocessedKeys, Times::Next(2));
    let answer = post(
        &p.verify,
        "otp-verify",
        &json!({ "phone": phone, "code": code }),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(p.proxy.count("BatchGetItem"), 3);
    // Left unprocessed every time: throttled, a 503.
    let phone = random_phone();
    p.proxy.always("BatchGetItem", Fault::UnprocessedKeys);
    assert_unavailable(
        &post(
            &p.verify,
            "otp-verify",
            &json!({ "phone": phone, "code": "123456" }),
        )
        .await,
    );
}

// ---- through the Lambda runtime, with the deadline enforced as Lambda does ------------

/// Run `function`'s binary for `event` with every AWS call through `proxy`, under a
/// Lambda deadline of `timeout`.
async fn invoke_through(
    stack: &Stack,
    proxy: &FaultProxy,
    function: &str,
    body: &Value,
    timeout: Duration,
) -> (lambda_runtime::Posted, Duration) {
    let mut event = common::sample_event(function);
    event["body"] = Value::String(body.to_string());
    let mut env = foodsave_auth::devstack::seed::function_env(
        &stack.table,
        &stack.secret_id,
        &stack.jwks_secret_id,
    );
    env.push(("AWS_ENDPOINT_URL".into(), proxy.url()));
    let binary = lambda_runtime::function_binary(function).unwrap();
    let invocation = lambda_runtime::invoke_with_timeout(&binary, event, &env, timeout)
        .await
        .unwrap();
    (invocation.posted, invocation.handle)
}

fn status_and_code(posted: &lambda_runtime::Posted) -> (u64, String) {
    match posted {
        lambda_runtime::Posted::Response(response) => {
            let body: Value =
                serde_json::from_str(response["body"].as_str().unwrap_or("null")).unwrap();
            (
                response["statusCode"].as_u64().unwrap(),
                body["code"].as_str().unwrap_or("").to_owned(),
            )
        }
        other => panic!("no response: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn when_every_dependency_stalls_each_function_answers_503_before_its_deadline() {
    let stack = Stack::new().await;
    let p = proxied(&stack, &[]).await;
    let phone = random_phone();
    let first = login(&stack, &p, &phone).await;
    // The functions read their secret at init; from then on everything stalls.
    let stall = Fault::Stall(Duration::from_secs(120));
    for op in [
        "PutItem",
        "UpdateItem",
        "BatchGetItem",
        "TransactWriteItems",
        "Publish",
    ] {
        p.proxy.always(op, stall.clone());
    }
    // Lambda's own 10 s timeout, and a nearly spent invocation's 3 s.
    for timeout in [Duration::from_secs(10), Duration::from_secs(3)] {
        for (function, body) in [
            ("otp-send", json!({ "phone": phone })),
            ("otp-verify", json!({ "phone": phone, "code": "123456" })),
            ("token-refresh", refresh_body(&first)),
            ("logout", refresh_body(&first)),
        ] {
            let (posted, took) = invoke_through(&stack, &p.proxy, function, &body, timeout).await;
            // Not asserted (tests assert bodies, not clocks): the worst case, for the record.
            eprintln!(
                "{function}: every dependency stalled, deadline {timeout:?}: answered in {took:?}"
            );
            assert_eq!(
                status_and_code(&posted),
                (503, "SERVICE_UNAVAILABLE".to_owned()),
                "{function} within {timeout:?}"
            );
        }
    }
    // SNS alone stalling: the send's slot and code are kept, and it answers in time.
    p.proxy.clear();
    p.proxy.always("Publish", stall);
    let other = random_phone();
    let (posted, _) = invoke_through(
        &stack,
        &p.proxy,
        "otp-send",
        &json!({ "phone": other }),
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(
        status_and_code(&posted),
        (503, "SERVICE_UNAVAILABLE".to_owned())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_send_with_budgets_whose_transaction_meets_a_conflict_retries_and_one_throttled_is_a_503()
{
    // With the IP budget on, a send is one transaction: the phone's state and an IP slot.
    let stack = Stack::new().await;
    let p = proxied(&stack, &[("OTP_IP_SEND_LIMIT", "5")]).await;
    let phone = random_phone();
    p.proxy.once(
        "TransactWriteItems",
        Fault::transaction_canceled(["None", "TransactionConflict"]),
    );
    let answer = post(&p.send, "otp-send", &json!({ "phone": phone })).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(p.proxy.count("TransactWriteItems"), 2);
    assert_eq!(stack.sms_to(&phone).await.len(), 1);
    p.proxy.always(
        "TransactWriteItems",
        Fault::transaction_canceled(["ThrottlingError", "None"]),
    );
    assert_unavailable(&post(&p.send, "otp-send", &json!({ "phone": random_phone() })).await);
    p.proxy.clear();
    p.proxy
        .always("TransactWriteItems", Fault::Stall(Duration::from_secs(60)));
    let answer = call(
        &p.send,
        request(
            "otp-send",
            &json!({ "phone": random_phone() }),
            Duration::from_secs(3),
        ),
    )
    .await;
    assert_unavailable(&answer);
}

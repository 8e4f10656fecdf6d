//! Writes whose answer comes too late, or that meet an item held by a transaction
//! (CONTRACT §1, "Real DynamoDB"), for every endpoint's writes, through the fault proxy:
//! a slow answer lets the write land and holds its answer past the SDK's 2 s attempt
//! timeout, so the SDK sends it again; `TransactionConflictException` refuses a
//! single-item write the way DynamoDB does while a transaction holds the item. Each test
//! asserts what the client sees and what the store then holds: the outcome of a write
//! that was applied once, never twice.
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
use common::proxied::{Proxied, login, post, proxied, refresh_body, sent_code};
use common::{Stack, access_of, bearer_request, random_phone, sid_of};
use foodsave_auth::devstack::fault_proxy::Fault;
use serde_json::json;

/// Longer than the SDK's attempt timeout (`adapters::sdk_timeouts`: 2 s).
const LATE: Duration = Duration::from_millis(2500);

fn late() -> Fault {
    Fault::SlowAnswer(LATE)
}

type Item = HashMap<String, AttributeValue>;

async fn item(stack: &Stack, pk: &str) -> Option<Item> {
    stack
        .items()
        .await
        .into_iter()
        .find(|i| i.get("pk") == Some(&AttributeValue::S(pk.to_owned())))
}

fn list_len(item: &Item, name: &str) -> usize {
    match item.get(name) {
        Some(AttributeValue::L(values)) => values.len(),
        _ => 0,
    }
}

/// Slots in use of a budget item (`s0`, `s1`, ...).
fn slots_used(item: Option<&Item>) -> usize {
    item.map_or(0, |i| {
        i.keys()
            .filter(|k| k.starts_with('s') && k[1..].parse::<u32>().is_ok())
            .count()
    })
}

async fn wrong_code(p: &Proxied, phone: &str, right: &str) -> common::Answer {
    let wrong = if right == "000000" {
        "111111"
    } else {
        "000000"
    };
    post(
        &p.verify,
        "otp-verify",
        &json!({ "phone": phone, "code": wrong }),
    )
    .await
}

async fn send(p: &Proxied, phone: &str) -> common::Answer {
    post(&p.send, "otp-send", &json!({ "phone": phone })).await
}

// ---- verify ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn a_right_code_whose_answer_came_late_logs_in_and_its_session_works() {
    let stack = Stack::new().await;
    let p = proxied(&stack, &[]).await;
    let phone = random_phone();
    assert_eq!(send(&p, &phone).await.status, 200);
    let code = sent_code(&stack, &phone).await;
    p.proxy.once("TransactWriteItems", late());
    let answer = post(
        &p.verify,
        "otp-verify",
        &json!({ "phone": phone, "code": code }),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(
        p.proxy.count("TransactWriteItems"),
        2,
        "the SDK sent it again"
    );
    let next = post(&p.refresh, "token-refresh", &refresh_body(&answer)).await;
    assert_eq!(next.status, 200, "{}", next.body);
}

/// The SDK's retry meets a transaction holding the phone's item: the verify's next
/// round finds its own session and answers its tokens.
#[tokio::test(flavor = "multi_thread")]
async fn a_login_whose_retry_met_a_conflict_finds_its_own_session() {
    let stack = Stack::new().await;
    let p = proxied(&stack, &[]).await;
    let phone = random_phone();
    assert_eq!(send(&p, &phone).await.status, 200);
    let code = sent_code(&stack, &phone).await;
    p.proxy.once("TransactWriteItems", late());
    p.proxy.once(
        "TransactWriteItems",
        Fault::transaction_canceled(["TransactionConflict", "None", "None"]),
    );
    let answer = post(
        &p.verify,
        "otp-verify",
        &json!({ "phone": phone, "code": code }),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let next = post(&p.refresh, "token-refresh", &refresh_body(&answer)).await;
    assert_eq!(next.status, 200, "{}", next.body);
    let sessions = stack
        .items()
        .await
        .into_iter()
        .filter(
            |i| matches!(i.get("sk"), Some(AttributeValue::S(sk)) if sk.starts_with("SESSION#")),
        )
        .count();
    assert_eq!(sessions, 1, "one login, one session");
}

/// With a daily budget of 3 wrong codes, a wrong code counted twice would answer
/// `attemptsLeft: 1`; counted once it is 2 (and the code itself has 4 tries left).
#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_code_whose_answer_came_late_counts_once() {
    let stack = Stack::new().await;
    let p = proxied(&stack, &[("OTP_MAX_WRONG_PER_DAY", "3")]).await;
    let phone = random_phone();
    assert_eq!(send(&p, &phone).await.status, 200);
    let code = sent_code(&stack, &phone).await;
    p.proxy.once("PutItem", late());
    let answer = wrong_code(&p, &phone, &code).await;
    assert_eq!(
        (answer.status, answer.body["attemptsLeft"].as_u64()),
        (400, Some(2)),
        "{}",
        answer.body
    );
    assert_eq!(
        p.proxy.count("PutItem"),
        3,
        "send, the late write and its repeat"
    );
    let otp = item(&stack, &format!("PHONE#{phone}")).await.unwrap();
    assert_eq!(list_len(&otp, "wrong"), 1);
    assert_eq!(otp["attempts"], AttributeValue::N("1".into()));
    // The right code still logs in.
    let answer = post(
        &p.verify,
        "otp-verify",
        &json!({ "phone": phone, "code": code }),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_code_that_met_a_transaction_counts_once() {
    let stack = Stack::new().await;
    let p = proxied(&stack, &[]).await;
    let phone = random_phone();
    assert_eq!(send(&p, &phone).await.status, 200);
    let code = sent_code(&stack, &phone).await;
    // Refused outright; then late, with the SDK's repeat refused again: the verify's next
    // round finds its own write in the item.
    p.proxy.once("PutItem", Fault::transaction_conflict());
    let answer = wrong_code(&p, &phone, &code).await;
    assert_eq!(
        (answer.status, answer.body["attemptsLeft"].as_u64()),
        (400, Some(4)),
        "{}",
        answer.body
    );
    p.proxy.once("PutItem", late());
    p.proxy.once("PutItem", Fault::transaction_conflict());
    let answer = wrong_code(&p, &phone, &code).await;
    assert_eq!(
        (answer.status, answer.body["attemptsLeft"].as_u64()),
        (400, Some(3)),
        "{}",
        answer.body
    );
    let otp = item(&stack, &format!("PHONE#{phone}")).await.unwrap();
    assert_eq!(list_len(&otp, "wrong"), 2);
}

// ---- send -----------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn a_send_whose_answer_came_late_sends_one_sms_and_counts_once() {
    let stack = Stack::new().await;
    let p = proxied(&stack, &[("OTP_SEND_LIMIT", "2")]).await;
    let phone = random_phone();
    p.proxy.once("PutItem", late());
    let answer = send(&p, &phone).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(stack.sms_to(&phone).await.len(), 1);
    let otp = item(&stack, &format!("PHONE#{phone}")).await.unwrap();
    assert_eq!(list_len(&otp, "sends"), 1);
    // One more send is left in the window. Its first put (a guess that the phone has no
    // state) fails as it should; the second lands late and the SDK's repeat meets a
    // transaction: the next round finds the send in the item.
    p.proxy.once("PutItem", Fault::SlowAnswer(Duration::ZERO));
    p.proxy.once("PutItem", late());
    p.proxy.once("PutItem", Fault::transaction_conflict());
    assert_eq!(send(&p, &phone).await.status, 200);
    assert_eq!(stack.sms_to(&phone).await.len(), 2);
    assert_eq!(send(&p, &phone).await.status, 429);
    let newest = sent_code(&stack, &phone).await;
    let answer = post(
        &p.verify,
        "otp-verify",
        &json!({ "phone": phone, "code": newest }),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_send_without_budgets_that_met_a_transaction_goes_out() {
    let stack = Stack::new().await;
    let p = proxied(&stack, &[]).await;
    let phone = random_phone();
    p.proxy.once("PutItem", Fault::transaction_conflict());
    let answer = send(&p, &phone).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(p.proxy.count("PutItem"), 2);
    assert_eq!(stack.sms_to(&phone).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_send_with_budgets_whose_answer_came_late_claims_one_slot_of_each() {
    let stack = Stack::new().await;
    let p = proxied(
        &stack,
        &[
            ("OTP_IP_SEND_LIMIT", "5"),
            ("OTP_GLOBAL_SEND_LIMIT_PER_HOUR", "2000"),
        ],
    )
    .await;
    let phone = random_phone();
    p.proxy.once("TransactWriteItems", late());
    let answer = send(&p, &phone).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(stack.sms_to(&phone).await.len(), 1);
    let items = stack.items().await;
    let used = |prefix: &str| -> usize {
        items
            .iter()
            .filter(
                |i| matches!(i.get("pk"), Some(AttributeValue::S(pk)) if pk.starts_with(prefix)),
            )
            .map(|i| slots_used(Some(i)))
            .sum()
    };
    assert_eq!(used("IP#"), 1);
    assert_eq!(used("GLOBAL#"), 1);
    let otp = item(&stack, &format!("PHONE#{phone}")).await.unwrap();
    assert_eq!(list_len(&otp, "sends"), 1);
}

// ---- the take-back after a refused SMS -------------------------------------------------

/// SNS refuses the second SMS; the take-back's put and its slot release each answer late
/// (and then meet a transaction): the slot is free again and the first code valid.
#[tokio::test(flavor = "multi_thread")]
async fn a_take_back_whose_writes_came_late_or_met_a_transaction_gives_everything_back() {
    for fault in [late(), Fault::transaction_conflict()] {
        let stack = Stack::new().await;
        let p = proxied(
            &stack,
            &[("OTP_IP_SEND_LIMIT", "2"), ("OTP_SEND_LIMIT", "2")],
        )
        .await;
        let phone = random_phone();
        assert_eq!(send(&p, &phone).await.status, 200);
        let first = sent_code(&stack, &phone).await;
        p.proxy.once("Publish", Fault::ServerError(500));
        p.proxy.once("PutItem", fault.clone());
        p.proxy.once("UpdateItem", fault.clone());
        let answer = send(&p, &phone).await;
        assert_eq!(answer.status, 503, "{}", answer.body);
        assert_eq!(p.proxy.count("PutItem"), 2, "{fault:?}");
        assert_eq!(p.proxy.count("UpdateItem"), 2, "{fault:?}");
        let ip = item(&stack, "IP#192.168.0.1").await;
        assert_eq!(slots_used(ip.as_ref()), 1, "{fault:?}: the slot came back");
        let otp = item(&stack, &format!("PHONE#{phone}")).await.unwrap();
        assert_eq!(list_len(&otp, "sends"), 1, "{fault:?}");
        let answer = post(
            &p.verify,
            "otp-verify",
            &json!({ "phone": phone, "code": first }),
        )
        .await;
        assert_eq!(answer.status, 200, "{fault:?}: {}", answer.body);
    }
}

// ---- refresh and logout ------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn a_rotation_that_met_a_transaction_answers_the_successor() {
    let stack = Stack::new().await;
    let p = proxied(&stack, &[("REFRESH_REUSE_GRACE_SECONDS", "0")]).await;
    let phone = random_phone();
    let first = login(&stack, &p, &phone).await;
    p.proxy.once("UpdateItem", Fault::transaction_conflict());
    let second = post(&p.refresh, "token-refresh", &refresh_body(&first)).await;
    assert_eq!(second.status, 200, "{}", second.body);
    // Late, then the SDK's repeat meets a transaction: the next round's repeat finds it.
    p.proxy.once("UpdateItem", late());
    p.proxy.once("UpdateItem", Fault::transaction_conflict());
    let third = post(&p.refresh, "token-refresh", &refresh_body(&second)).await;
    assert_eq!(third.status, 200, "{}", third.body);
    let fourth = post(&p.refresh, "token-refresh", &refresh_body(&third)).await;
    assert_eq!(fourth.status, 200, "{}", fourth.body);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_logout_whose_answer_came_late_or_met_a_transaction_is_200_and_ends_the_session() {
    for faults in [
        vec![late()],
        vec![Fault::transaction_conflict()],
        vec![late(), Fault::transaction_conflict()],
    ] {
        let stack = Stack::new().await;
        let p = proxied(&stack, &[]).await;
        let first = login(&stack, &p, &random_phone()).await;
        for fault in &faults {
            p.proxy.once("UpdateItem", fault.clone());
        }
        let answer = post(&p.logout, "logout", &refresh_body(&first)).await;
        assert_eq!(answer.status, 200, "{faults:?}: {}", answer.body);
        let refused = post(&p.refresh, "token-refresh", &refresh_body(&first)).await;
        assert_eq!(
            (refused.status, refused.code()),
            (401, "INVALID_REFRESH_TOKEN")
        );
        let again = post(&p.logout, "logout", &refresh_body(&first)).await;
        assert_eq!((again.status, again.code()), (400, "INVALID_TOKEN"));
    }
}

// ---- accounts and sessions (CONTRACT §7) ------------------------------------------------

async fn sessions_listed(p: &Proxied, answer: &common::Answer) -> common::Answer {
    common::call(
        &p.sessions,
        bearer_request("GET", "/sessions", &access_of(answer), None),
    )
    .await
}

/// Session items of the stack, and how many of them are revoked.
async fn session_items(stack: &Stack) -> (usize, usize) {
    let sessions: Vec<Item> = stack
        .items()
        .await
        .into_iter()
        .filter(
            |i| matches!(i.get("sk"), Some(AttributeValue::S(sk)) if sk.starts_with("SESSION#")),
        )
        .collect();
    let revoked = sessions
        .iter()
        .filter(|i| i.contains_key("revokedAt"))
        .count();
    (sessions.len(), revoked)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deletion_whose_answer_came_late_answers_200_and_erases_the_account() {
    let stack = Stack::new().await;
    let p = proxied(&stack, &[]).await;
    let phone = random_phone();
    let session = login(&stack, &p, &phone).await;
    let before = p.proxy.count("TransactWriteItems");
    p.proxy.once("TransactWriteItems", late());
    let answer = common::call(
        &p.account_delete,
        bearer_request("POST", "/account/delete", &access_of(&session), None),
    )
    .await;
    assert_eq!(
        (answer.status, &answer.body),
        (200, &json!({})),
        "{}",
        answer.body
    );
    assert_eq!(
        p.proxy.count("TransactWriteItems") - before,
        2,
        "the SDK sent it again"
    );
    assert_eq!(
        session_items(&stack).await,
        (0, 0),
        "its sessions are erased"
    );
    assert!(
        item(&stack, &format!("PHONE#{phone}")).await.is_some(),
        "the OTP item stays"
    );
    let refreshed = post(&p.refresh, "token-refresh", &refresh_body(&session)).await;
    assert_eq!(refreshed.code(), "INVALID_REFRESH_TOKEN");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deletion_that_met_a_transaction_reads_again_and_deletes() {
    let stack = Stack::new().await;
    let p = proxied(&stack, &[]).await;
    let phone = random_phone();
    let session = login(&stack, &p, &phone).await;
    p.proxy.once(
        "TransactWriteItems",
        Fault::transaction_canceled(["None", "None", "TransactionConflict", "None"]),
    );
    let answer = common::call(
        &p.account_delete,
        bearer_request("POST", "/account/delete", &access_of(&session), None),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(
        p.proxy.count("Query"),
        2,
        "the check's read, and one after the lost race"
    );
    assert_eq!(session_items(&stack).await, (0, 0));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_logout_of_all_sessions_whose_answer_came_late_answers_200() {
    let stack = Stack::new().await;
    let p = proxied(&stack, &[]).await;
    let phone = random_phone();
    let first = login(&stack, &p, &phone).await;
    let second = login(&stack, &p, &phone).await;
    p.proxy.once("TransactWriteItems", late());
    let answer = post(
        &p.logout,
        "logout",
        &json!({ "refreshToken": second.body["refreshToken"], "scope": "all" }),
    )
    .await;
    assert_eq!(
        (answer.status, &answer.body),
        (200, &json!({})),
        "{}",
        answer.body
    );
    assert_eq!(session_items(&stack).await, (2, 2));
    for token in [&first, &second] {
        let refreshed = post(&p.refresh, "token-refresh", &refresh_body(token)).await;
        assert_eq!(refreshed.code(), "INVALID_REFRESH_TOKEN");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_logout_of_the_others_that_met_a_transaction_decides_again() {
    let stack = Stack::new().await;
    let p = proxied(&stack, &[]).await;
    let phone = random_phone();
    let first = login(&stack, &p, &phone).await;
    let second = login(&stack, &p, &phone).await;
    p.proxy.once(
        "TransactWriteItems",
        Fault::transaction_canceled(["TransactionConflict", "None"]),
    );
    let answer = post(
        &p.logout,
        "logout",
        &json!({ "refreshToken": second.body["refreshToken"], "scope": "others" }),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(session_items(&stack).await, (2, 1));
    let gone = post(&p.refresh, "token-refresh", &refresh_body(&first)).await;
    assert_eq!(gone.code(), "INVALID_REFRESH_TOKEN");
    let kept = post(&p.refresh, "token-refresh", &refresh_body(&second)).await;
    assert_eq!(kept.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_revocation_whose_answer_came_late_or_met_a_transaction_answers_200() {
    let stack = Stack::new().await;
    let p = proxied(&stack, &[]).await;
    let phone = random_phone();
    let first = login(&stack, &p, &phone).await;
    let second = login(&stack, &p, &phone).await;
    let third = login(&stack, &p, &phone).await;
    for (target, fault) in [(&first, late()), (&second, Fault::transaction_conflict())] {
        p.proxy.once("UpdateItem", fault);
        let answer = common::call(
            &p.sessions,
            bearer_request(
                "POST",
                "/sessions/revoke",
                &access_of(&third),
                Some(&json!({ "sessionId": sid_of(target) })),
            ),
        )
        .await;
        assert_eq!(
            (answer.status, &answer.body),
            (200, &json!({})),
            "{}",
            answer.body
        );
    }
    assert_eq!(p.proxy.count("UpdateItem"), 4, "each sent twice");
    let listed = sessions_listed(&p, &third).await;
    assert_eq!(listed.body["sessions"].as_array().unwrap().len(), 1);
}

/// A login past the session limit whose answer came late: one new session, the least
/// recently used revoked once, and the tokens answered are the new session's.
#[tokio::test(flavor = "multi_thread")]
async fn a_login_that_evicts_a_session_and_whose_answer_came_late_logs_in_once() {
    let stack = Stack::new().await;
    let p = proxied(&stack, &[("MAX_SESSIONS_PER_ACCOUNT", "1")]).await;
    let phone = random_phone();
    let old = login(&stack, &p, &phone).await;
    assert_eq!(send(&p, &phone).await.status, 200);
    let code = sent_code(&stack, &phone).await;
    p.proxy.once("TransactWriteItems", late());
    let answer = post(
        &p.verify,
        "otp-verify",
        &json!({ "phone": phone, "code": code }),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(session_items(&stack).await, (2, 1));
    let gone = post(&p.refresh, "token-refresh", &refresh_body(&old)).await;
    assert_eq!(gone.code(), "INVALID_REFRESH_TOKEN");
    let listed = sessions_listed(&p, &answer).await;
    assert_eq!(listed.status, 200, "{}", listed.body);
    assert_eq!(listed.body["sessions"][0]["id"], sid_of(&answer).as_str());
}

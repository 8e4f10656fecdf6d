//! What a login costs in DynamoDB capacity, from the items it really writes (the README's
//! cost model). moto answers `ReturnConsumedCapacity` with fixed numbers, so the units are
//! computed here from the stored items by DynamoDB's published rules:
//! <https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/CapacityUnitCalculations.html>
//! (a write unit per 1 KB, twice that in a transaction, the larger of the item before and
//! after an update; a strongly consistent read unit per 4 KB).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use common::{Stack, post, random_phone};
use foodsave_auth::domain::global_budget::SHARD_SLOTS as GLOBAL_SHARD_SLOTS;
use serde_json::json;

/// The template's budgets (template.yaml defaults): the items as production writes them.
const TEMPLATE_BUDGETS: &[(&str, &str)] = &[
    ("OTP_IP_SEND_LIMIT", "50"),
    ("OTP_IP_SEND_WINDOW_SECONDS", "3600"),
    ("OTP_GLOBAL_SEND_LIMIT_PER_HOUR", "2000"),
];

/// An attribute value's size as DynamoDB bills it: strings and binaries by length, a
/// number by 1 byte per two significant digits plus 1, 1 byte for a boolean or null, and a
/// map or list 3 bytes plus 1 per element plus its elements (names included).
fn value_size(value: &AttributeValue) -> usize {
    match value {
        AttributeValue::S(s) => s.len(),
        AttributeValue::N(n) => number_size(n),
        AttributeValue::B(b) => b.as_ref().len(),
        AttributeValue::Bool(_) | AttributeValue::Null(_) => 1,
        AttributeValue::Ss(set) => set.iter().map(String::len).sum(),
        AttributeValue::Ns(set) => set.iter().map(|n| number_size(n)).sum(),
        AttributeValue::Bs(set) => set.iter().map(|b| b.as_ref().len()).sum(),
        AttributeValue::M(map) => {
            3 + map
                .iter()
                .map(|(k, v)| k.len() + value_size(v) + 1)
                .sum::<usize>()
        }
        AttributeValue::L(list) => 3 + list.iter().map(|v| value_size(v) + 1).sum::<usize>(),
        _ => panic!("an attribute type this table never stores: {value:?}"),
    }
}

fn number_size(n: &str) -> usize {
    let digits: String = n.chars().filter(char::is_ascii_digit).collect();
    let significant = digits.trim_start_matches('0').trim_end_matches('0').len();
    significant.div_ceil(2) + 1
}

fn item_size(item: &HashMap<String, AttributeValue>) -> usize {
    item.iter().map(|(k, v)| k.len() + value_size(v)).sum()
}

/// Write units of one item written alone (`factor` 1) or in a transaction (2).
fn write_units(bytes: usize, factor: usize) -> usize {
    bytes.div_ceil(1024).max(1) * factor
}

/// Read units of one strongly consistent read of an item (a missing item still costs 1).
fn read_units(bytes: usize) -> usize {
    bytes.div_ceil(4096).max(1)
}

/// The stored items by kind (`OTP`, `USER`, `ACCOUNT`, `SESSION`, `IP`, `GLOBAL`) →
/// their sizes.
async fn sizes(stack: &Stack) -> HashMap<&'static str, Vec<usize>> {
    let mut by_kind: HashMap<&'static str, Vec<usize>> = HashMap::new();
    for item in stack.items().await {
        let pk = item["pk"].as_s().unwrap();
        let sk = item["sk"].as_s().unwrap();
        let kind = match (pk.split('#').next().unwrap(), sk.as_str()) {
            ("PHONE", "OTP") => "OTP",
            ("PHONE", "USER") => "USER",
            ("ACCOUNT", "ACCOUNT") => "ACCOUNT",
            ("ACCOUNT", sk) if sk.starts_with("SESSION#") => "SESSION",
            ("IP", _) => "IP",
            ("GLOBAL", _) => "GLOBAL",
            other => panic!("an item of an unknown kind: {other:?}"),
        };
        by_kind.entry(kind).or_default().push(item_size(&item));
    }
    by_kind
}

fn largest(sizes: &HashMap<&'static str, Vec<usize>>, kind: &str) -> usize {
    sizes
        .get(kind)
        .and_then(|s| s.iter().max().copied())
        .unwrap_or_else(|| panic!("no {kind} item stored: {sizes:?}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_login_with_the_template_budgets_costs_the_capacity_the_readme_states() {
    let stack = Stack::new().await;
    let send = stack.otp_send(TEMPLATE_BUDGETS).await;
    let verify = stack.otp_verify(&[]).await;
    let refresh = stack.token_refresh(&[]).await;
    let logout = stack.logout().await;
    let phone = random_phone();

    let sent = post(&send, "otp-send", &json!({ "phone": phone })).await;
    assert_eq!(sent.status, 200, "{}", sent.body);
    let after_send = sizes(&stack).await;
    let (otp, ip, global) = (
        largest(&after_send, "OTP"),
        largest(&after_send, "IP"),
        largest(&after_send, "GLOBAL"),
    );

    let code = stack.last_code(&phone).await;
    let verified = post(
        &verify,
        "otp-verify",
        &json!({ "phone": phone, "code": code }),
    )
    .await;
    assert_eq!(verified.status, 200, "{}", verified.body);
    let after_verify = sizes(&stack).await;
    let (otp_after, user, account, session) = (
        largest(&after_verify, "OTP"),
        largest(&after_verify, "USER"),
        largest(&after_verify, "ACCOUNT"),
        largest(&after_verify, "SESSION"),
    );

    let token = verified.body["refreshToken"].as_str().unwrap().to_owned();
    let refreshed = post(&refresh, "token-refresh", &json!({ "refreshToken": token })).await;
    assert_eq!(refreshed.status, 200, "{}", refreshed.body);
    let session_rotated = largest(&sizes(&stack).await, "SESSION");
    let token = refreshed.body["refreshToken"].as_str().unwrap().to_owned();
    let out = post(&logout, "logout", &json!({ "refreshToken": token })).await;
    assert_eq!(out.status, 200, "{}", out.body);
    let session_revoked = largest(&sizes(&stack).await, "SESSION");

    // send: one TransactWriteItems of the phone's OTP item and a slot of each budget.
    let send_wru = write_units(otp, 2) + write_units(ip, 2) + write_units(global, 2);
    // verify: one consistent BatchGetItem (OTP, USER; USER absent on a first login still
    // costs a unit), then one TransactWriteItems of OTP, USER, the new ACCOUNT and the new
    // SESSION. (A returning account's login also reads its item collection with one
    // Query: its ACCOUNT item and sessions, one read unit per 4 KB.)
    let verify_rru = read_units(otp) + read_units(user);
    let verify_wru = write_units(otp.max(otp_after), 2)
        + write_units(user, 2)
        + write_units(account, 2)
        + write_units(session, 2);
    // refresh and logout: one conditional UpdateItem of the SESSION item.
    let refresh_wru = write_units(session.max(session_rotated), 1);
    let logout_wru = write_units(session_rotated.max(session_revoked), 1);

    println!("item sizes (bytes, DynamoDB's rules):");
    println!(
        "  OTP {otp} after send, {otp_after} after verify; USER {user}; ACCOUNT {account}; SESSION {session} → {session_rotated} → {session_revoked}"
    );
    println!("  IP budget {ip} (50 slots, one used); GLOBAL shard {global} (one slot used)");
    println!("capacity per request (on-demand request units):");
    println!("  send    {send_wru} WRU");
    println!("  verify  {verify_rru} RRU + {verify_wru} WRU");
    println!("  refresh {refresh_wru} WRU");
    println!("  logout  {logout_wru} WRU");

    // Every item but a full budget item fits one 1 KB write unit; a login (send, verify,
    // refresh, logout) is 6 + 8 + 1 + 1 = 16 write units and 2 read units.
    for (kind, size) in [
        ("OTP", otp.max(otp_after)),
        ("USER", user),
        ("ACCOUNT", account),
        ("SESSION", session.max(session_rotated).max(session_revoked)),
    ] {
        assert!(
            size <= 1024,
            "{kind} item of {size} bytes costs more than one write unit"
        );
    }
    assert_eq!(
        (send_wru, verify_rru, verify_wru, refresh_wru, logout_wru),
        (6, 2, 8, 1, 1)
    );
}

/// Budget items full of sends: the largest an IP item or a global shard gets, so the
/// most a send's transaction costs. Both must stay within one 1 KB write unit.
#[tokio::test(flavor = "multi_thread")]
async fn full_budget_items_stay_within_one_write_unit() {
    let stack = Stack::new().await;
    let ip_only = stack.otp_send(&[("OTP_IP_SEND_LIMIT", "50")]).await;
    for _ in 0..50 {
        let answer = post(&ip_only, "otp-send", &json!({ "phone": random_phone() })).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
    }
    let slots = GLOBAL_SHARD_SLOTS.to_string();
    let global_only = stack
        .otp_send(&[("OTP_GLOBAL_SEND_LIMIT_PER_HOUR", slots.as_str())])
        .await;
    for _ in 0..GLOBAL_SHARD_SLOTS {
        let answer = post(
            &global_only,
            "otp-send",
            &json!({ "phone": random_phone() }),
        )
        .await;
        assert_eq!(answer.status, 200, "{}", answer.body);
    }
    let refused = post(
        &global_only,
        "otp-send",
        &json!({ "phone": random_phone() }),
    )
    .await;
    assert_eq!(refused.status, 429, "the shard is full");
    let after = sizes(&stack).await;
    let (ip, global) = (largest(&after, "IP"), largest(&after, "GLOBAL"));
    println!(
        "full IP item (50 of 50 slots): {ip} bytes; full global shard ({GLOBAL_SHARD_SLOTS} slots): {global} bytes"
    );
    assert!(ip <= 1024, "a full IP item of {ip} bytes");
    assert!(global <= 1024, "a full global shard of {global} bytes");
}

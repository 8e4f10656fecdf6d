//! The login loop against the local AWS stack: /otp/verify, /token/refresh, /logout
//! (CONTRACT §1, §2, §4).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::sync::Arc;

use common::{
    Answer, Stack, call, event_request, post, public_keys, random_phone, verify_access_token,
};
use foodsave_auth::api::otp_send::OtpSend;
use foodsave_auth::api::otp_verify::OtpVerify;
use foodsave_auth::domain::RefreshToken;
use serde_json::{Value, json};

async fn send_code(stack: &Stack, send: &OtpSend, phone: &str) -> String {
    let answer = post(send, "otp-send", &json!({ "phone": phone })).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    stack.last_code(phone).await
}

async fn login(stack: &Stack, send: &OtpSend, verify: &OtpVerify, phone: &str) -> Answer {
    let code = send_code(stack, send, phone).await;
    let answer = post(
        verify,
        "otp-verify",
        &json!({ "phone": phone, "code": code }),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    answer
}

fn refresh_body(answer: &Answer) -> Value {
    json!({ "refreshToken": answer.body["refreshToken"] })
}

fn assert_token_pair(answer: &Answer) {
    assert_eq!(answer.status, 200, "{}", answer.body);
    let keys: Vec<&String> = answer.body.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        vec!["accessToken", "expiresIn", "refreshToken", "tokenType"]
    );
    assert_eq!(answer.body["tokenType"], "Bearer");
    assert_eq!(answer.body["expiresIn"], 3600);
    assert_eq!(answer.header("cache-control"), Some("no-store"));
    let refresh = answer.body["refreshToken"].as_str().unwrap();
    assert!(refresh.len() >= 43, "≥ 256 bits");
    assert!(
        refresh
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_full_flow_issues_verifiable_tokens_and_logout_ends_it() {
    let stack = Stack::new().await;
    let send = stack.otp_send(&[]).await;
    let verify = stack.otp_verify(&[]).await;
    let refresh = stack.token_refresh(&[]).await;
    let logout = stack.logout().await;
    let jwks = public_keys(&stack).await;
    let phone = random_phone();

    let first = login(&stack, &send, &verify, &phone).await;
    assert_token_pair(&first);
    let (header, claims) = verify_access_token(first.body["accessToken"].as_str().unwrap(), &jwks);
    assert_eq!(header.alg, jsonwebtoken::Algorithm::RS256);
    assert_eq!(header.typ.as_deref(), Some("at+jwt"));
    assert!(header.kid.is_some());
    assert_eq!(claims.iss, "https://auth.test.foodsave.kz/api/v1/auth");
    assert_eq!(claims.aud, "foodsave");
    assert_eq!(claims.client_id, "foodsave-app");
    assert_eq!(claims.phone_number, phone);
    assert_eq!(claims.exp - claims.iat, 3600);
    assert!(
        !claims.sub.contains(&phone[2..]),
        "sub must not derive from the phone"
    );
    assert!(!claims.jti.is_empty() && !claims.sid.is_empty());
    // The raw claim set has exactly the contract's names, aud a single string.
    let payload = first.body["accessToken"]
        .as_str()
        .unwrap()
        .split('.')
        .nth(1)
        .unwrap();
    let raw: Value = serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, payload)
            .unwrap(),
    )
    .unwrap();
    let mut names: Vec<&String> = raw.as_object().unwrap().keys().collect();
    names.sort();
    assert_eq!(
        names,
        vec![
            "aud",
            "auth_time",
            "client_id",
            "exp",
            "iat",
            "iss",
            "jti",
            "phone_number",
            "sid",
            "sub"
        ]
    );
    assert!(raw["aud"].is_string());

    stack.clock.advance_secs(60);
    let second = post(&refresh, "token-refresh", &refresh_body(&first)).await;
    assert_token_pair(&second);
    assert_ne!(second.body["refreshToken"], first.body["refreshToken"]);
    let (_, c2) = verify_access_token(second.body["accessToken"].as_str().unwrap(), &jwks);
    assert_eq!(
        (c2.sub.as_str(), c2.sid.as_str()),
        (claims.sub.as_str(), claims.sid.as_str())
    );
    assert_eq!(c2.exp - c2.iat, 3600);
    assert_ne!(c2.jti, claims.jti);

    stack.clock.advance_secs(60);
    let third = post(&refresh, "token-refresh", &refresh_body(&second)).await;
    assert_token_pair(&third);
    let (_, c3) = verify_access_token(third.body["accessToken"].as_str().unwrap(), &jwks);
    assert_eq!(c3.sid, claims.sid);

    let out = post(&logout, "logout", &refresh_body(&third)).await;
    assert_eq!(out.status, 200);
    assert_eq!(out.body, json!({}));
    assert_eq!(out.header("cache-control"), Some("no-store"));

    let after = post(&refresh, "token-refresh", &refresh_body(&third)).await;
    assert_eq!(after.status, 401);
    assert_eq!(after.code(), "INVALID_REFRESH_TOKEN");
    assert_eq!(after.header("www-authenticate"), Some("Bearer"));
    let again = post(&logout, "logout", &refresh_body(&third)).await;
    assert_eq!((again.status, again.code()), (400, "INVALID_TOKEN"));

    // A second login of the same phone: same sub, new session.
    stack.clock.advance_secs(60);
    let next = login(&stack, &send, &verify, &phone).await;
    let (_, c4) = verify_access_token(next.body["accessToken"].as_str().unwrap(), &jwks);
    assert_eq!(c4.sub, claims.sub);
    assert_ne!(c4.sid, claims.sid);
}

#[tokio::test(flavor = "multi_thread")]
async fn five_wrong_codes_burn_the_code() {
    let stack = Stack::new().await;
    let send = stack.otp_send(&[]).await;
    let verify = stack.otp_verify(&[]).await;
    let phone = random_phone();
    let code = send_code(&stack, &send, &phone).await;
    let wrong = if code == "000000" { "111111" } else { "000000" };
    for left in (0..5).rev() {
        let answer = post(
            &verify,
            "otp-verify",
            &json!({ "phone": phone, "code": wrong }),
        )
        .await;
        assert_eq!(answer.status, 400);
        assert_eq!(answer.code(), "INVALID_CODE");
        assert_eq!(answer.body["attemptsLeft"], left);
        let keys: Vec<&String> = answer.body.as_object().unwrap().keys().collect();
        assert_eq!(keys, vec!["attemptsLeft", "code", "message", "requestId"]);
    }
    let burned = post(
        &verify,
        "otp-verify",
        &json!({ "phone": phone, "code": code }),
    )
    .await;
    assert_eq!((burned.status, burned.code()), (401, "EXPIRED_CODE"));
    assert_eq!(burned.header("www-authenticate"), Some("Bearer"));
    // A new code starts with a fresh budget.
    let fresh = send_code(&stack, &send, &phone).await;
    let wrong = if fresh == "000000" {
        "111111"
    } else {
        "000000"
    };
    let answer = post(
        &verify,
        "otp-verify",
        &json!({ "phone": phone, "code": wrong }),
    )
    .await;
    assert_eq!(answer.body["attemptsLeft"], 4);
    let ok = post(
        &verify,
        "otp-verify",
        &json!({ "phone": phone, "code": fresh }),
    )
    .await;
    assert_eq!(ok.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_wrong_tries_are_each_counted() {
    let stack = Stack::new().await;
    let send = stack.otp_send(&[]).await;
    let verify = Arc::new(stack.otp_verify(&[]).await);
    let phone = random_phone();
    let code = send_code(&stack, &send, &phone).await;
    let wrong = if code == "000000" { "111111" } else { "000000" };
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let verify = Arc::clone(&verify);
        let body = json!({ "phone": phone, "code": wrong }).to_string();
        tasks.spawn(async move {
            call(verify.as_ref(), event_request("otp-verify", Some(&body))).await
        });
    }
    let mut invalid = 0;
    let mut expired = 0;
    while let Some(answer) = tasks.join_next().await {
        match answer.unwrap().status {
            400 => invalid += 1,
            401 => expired += 1,
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!((invalid, expired), (5, 3));
    let answer = post(
        verify.as_ref(),
        "otp-verify",
        &json!({ "phone": phone, "code": code }),
    )
    .await;
    assert_eq!(answer.status, 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_code_gets_401_even_before_ttl_deletes_it() {
    let stack = Stack::new().await;
    let send = stack.otp_send(&[("OTP_TTL_SECONDS", "30")]).await;
    let verify = stack.otp_verify(&[("OTP_TTL_SECONDS", "30")]).await;
    let phone = random_phone();
    let sent = post(&send, "otp-send", &json!({ "phone": phone })).await;
    assert_eq!(sent.body["retryAfterSeconds"], 30);
    let code = stack.last_code(&phone).await;
    stack.clock.advance_secs(30);
    let answer = post(
        &verify,
        "otp-verify",
        &json!({ "phone": phone, "code": code }),
    )
    .await;
    assert_eq!((answer.status, answer.code()), (401, "EXPIRED_CODE"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_code_is_single_use_and_a_never_sent_phone_gets_401() {
    let stack = Stack::new().await;
    let send = stack.otp_send(&[]).await;
    let verify = stack.otp_verify(&[]).await;
    let phone = random_phone();
    let code = send_code(&stack, &send, &phone).await;
    let body = json!({ "phone": phone, "code": code });
    assert_eq!(post(&verify, "otp-verify", &body).await.status, 200);
    let again = post(&verify, "otp-verify", &body).await;
    assert_eq!((again.status, again.code()), (401, "EXPIRED_CODE"));
    let never = post(
        &verify,
        "otp-verify",
        &json!({ "phone": random_phone(), "code": "123456" }),
    )
    .await;
    assert_eq!((never.status, never.code()), (401, "EXPIRED_CODE"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_send_replaces_the_previous_code() {
    let stack = Stack::new().await;
    let send = stack.otp_send(&[]).await;
    let verify = stack.otp_verify(&[]).await;
    let phone = random_phone();
    let old = send_code(&stack, &send, &phone).await;
    let new = send_code(&stack, &send, &phone).await;
    if old != new {
        let answer = post(
            &verify,
            "otp-verify",
            &json!({ "phone": phone, "code": old }),
        )
        .await;
        assert_eq!((answer.status, answer.code()), (400, "INVALID_CODE"));
    }
    let answer = post(
        &verify,
        "otp-verify",
        &json!({ "phone": phone, "code": new }),
    )
    .await;
    assert_eq!(answer.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn twenty_concurrent_verifies_of_one_code_give_exactly_one_token_pair() {
    let stack = Stack::new().await;
    let send = stack.otp_send(&[]).await;
    let verify = Arc::new(stack.otp_verify(&[]).await);
    let phone = random_phone();
    let code = send_code(&stack, &send, &phone).await;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let verify = Arc::clone(&verify);
        let body = json!({ "phone": phone, "code": code }).to_string();
        tasks.spawn(async move {
            call(verify.as_ref(), event_request("otp-verify", Some(&body))).await
        });
    }
    let mut ok = 0;
    let mut expired = 0;
    while let Some(answer) = tasks.join_next().await {
        let answer = answer.unwrap();
        match (answer.status, answer.code()) {
            (200, _) => ok += 1,
            (401, "EXPIRED_CODE") => expired += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((ok, expired), (1, 19));
    let sessions = stack
        .items()
        .await
        .into_iter()
        .filter(|i| i["sk"].as_s().unwrap().starts_with("SESSION#"))
        .count();
    assert_eq!(sessions, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn twenty_concurrent_refreshes_with_no_grace_give_at_most_one_pair_and_revoke() {
    let stack = Stack::new().await;
    let send = stack.otp_send(&[]).await;
    let verify = stack.otp_verify(&[]).await;
    let refresh = Arc::new(
        stack
            .token_refresh(&[("REFRESH_REUSE_GRACE_SECONDS", "0")])
            .await,
    );
    let phone = random_phone();
    let first = login(&stack, &send, &verify, &phone).await;
    let body = refresh_body(&first).to_string();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let refresh = Arc::clone(&refresh);
        let body = body.clone();
        tasks.spawn(async move {
            call(
                refresh.as_ref(),
                event_request("token-refresh", Some(&body)),
            )
            .await
        });
    }
    let mut winners = Vec::new();
    while let Some(answer) = tasks.join_next().await {
        let answer = answer.unwrap();
        match answer.status {
            200 => winners.push(answer),
            401 => assert_eq!(answer.code(), "INVALID_REFRESH_TOKEN"),
            other => panic!("unexpected {other}: {}", answer.body),
        }
    }
    assert!(winners.len() <= 1, "{} winners", winners.len());
    // The reuse revoked the session: the winner's token is dead too.
    for winner in &winners {
        let answer = post(refresh.as_ref(), "token-refresh", &refresh_body(winner)).await;
        assert_eq!(answer.status, 401);
    }
    let logout = stack.logout().await;
    let answer = post(&logout, "logout", &refresh_body(&first)).await;
    assert_eq!((answer.status, answer.code()), (400, "INVALID_TOKEN"));
}

#[tokio::test(flavor = "multi_thread")]
async fn reuse_after_the_grace_revokes_the_session_and_its_newer_tokens() {
    let stack = Stack::new().await;
    let send = stack.otp_send(&[]).await;
    let verify = stack.otp_verify(&[]).await;
    let refresh = stack.token_refresh(&[]).await;
    let phone = random_phone();
    let first = login(&stack, &send, &verify, &phone).await;
    let second = post(&refresh, "token-refresh", &refresh_body(&first)).await;
    assert_eq!(second.status, 200);
    stack.clock.advance_secs(10);
    // now − spentAt = 10 s = the grace: reuse.
    let reuse = post(&refresh, "token-refresh", &refresh_body(&first)).await;
    assert_eq!((reuse.status, reuse.code()), (401, "INVALID_REFRESH_TOKEN"));
    let legit = post(&refresh, "token-refresh", &refresh_body(&second)).await;
    assert_eq!((legit.status, legit.code()), (401, "INVALID_REFRESH_TOKEN"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retry_inside_the_grace_gets_the_same_successor_and_one_chain_stays_live() {
    let stack = Stack::new().await;
    let send = stack.otp_send(&[]).await;
    let verify = stack.otp_verify(&[]).await;
    let refresh = stack.token_refresh(&[]).await;
    let phone = random_phone();
    let first = login(&stack, &send, &verify, &phone).await;
    let second = post(&refresh, "token-refresh", &refresh_body(&first)).await;
    assert_eq!(second.status, 200);
    stack.clock.advance_millis(9_999);
    let retry = post(&refresh, "token-refresh", &refresh_body(&first)).await;
    assert_token_pair(&retry);
    assert_eq!(retry.body["refreshToken"], second.body["refreshToken"]);
    assert_ne!(retry.body["accessToken"], second.body["accessToken"]);
    // The one live token rotates on; the retried pair is the same token, now spent.
    let third = post(&refresh, "token-refresh", &refresh_body(&second)).await;
    assert_eq!(third.status, 200);
    // `first`'s successor has been spent: presenting `first` again is reuse, grace or
    // not, and revokes the session.
    let reuse = post(&refresh, "token-refresh", &refresh_body(&first)).await;
    assert_eq!((reuse.status, reuse.code()), (401, "INVALID_REFRESH_TOKEN"));
    let dead = post(&refresh, "token-refresh", &refresh_body(&third)).await;
    assert_eq!((dead.status, dead.code()), (401, "INVALID_REFRESH_TOKEN"));
}

#[tokio::test(flavor = "multi_thread")]
async fn twenty_concurrent_refreshes_inside_the_grace_all_get_the_same_successor() {
    let stack = Stack::new().await;
    let send = stack.otp_send(&[]).await;
    let verify = stack.otp_verify(&[]).await;
    let refresh = Arc::new(stack.token_refresh(&[]).await);
    let phone = random_phone();
    let first = login(&stack, &send, &verify, &phone).await;
    let body = refresh_body(&first).to_string();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let refresh = Arc::clone(&refresh);
        let body = body.clone();
        tasks.spawn(async move {
            call(
                refresh.as_ref(),
                event_request("token-refresh", Some(&body)),
            )
            .await
        });
    }
    let mut successors = std::collections::HashSet::new();
    while let Some(answer) = tasks.join_next().await {
        let answer = answer.unwrap();
        assert_eq!(answer.status, 200, "{}", answer.body);
        successors.insert(answer.body["refreshToken"].as_str().unwrap().to_owned());
    }
    assert_eq!(successors.len(), 1, "one live refresh token per session");
    let live = successors.into_iter().next().unwrap();
    let next = post(
        refresh.as_ref(),
        "token-refresh",
        &json!({ "refreshToken": live }),
    )
    .await;
    assert_eq!(next.status, 200);
    // The session item carries the chain: nothing is stored per token.
    assert_eq!(
        stack
            .items()
            .await
            .iter()
            .filter(|i| !["OTP", "USER", "ACCOUNT"].contains(&i["sk"].as_s().unwrap().as_str()))
            .count(),
        1
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_invented_token_naming_a_real_session_revokes_nothing() {
    let stack = Stack::new().await;
    let send = stack.otp_send(&[]).await;
    let verify = stack.otp_verify(&[]).await;
    let refresh = stack.token_refresh(&[]).await;
    let logout = stack.logout().await;
    let phone = random_phone();
    let first = login(&stack, &send, &verify, &phone).await;
    let real = RefreshToken::parse(first.body["refreshToken"].as_str().unwrap()).unwrap();
    let invented =
        RefreshToken::generate(&ring::rand::SystemRandom::new(), real.session_id()).unwrap();
    let body = json!({ "refreshToken": invented.expose() });
    let answer = post(&refresh, "token-refresh", &body).await;
    assert_eq!(
        (answer.status, answer.code()),
        (401, "INVALID_REFRESH_TOKEN")
    );
    let answer = post(&logout, "logout", &body).await;
    assert_eq!((answer.status, answer.code()), (400, "INVALID_TOKEN"));
    // The real chain is untouched.
    assert_eq!(
        post(&refresh, "token-refresh", &refresh_body(&first))
            .await
            .status,
        200
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn logout_works_with_a_token_many_rotations_back() {
    let stack = Stack::new().await;
    let send = stack.otp_send(&[]).await;
    let verify = stack.otp_verify(&[]).await;
    let refresh = stack.token_refresh(&[]).await;
    let logout = stack.logout().await;
    let phone = random_phone();
    let first = login(&stack, &send, &verify, &phone).await;
    let mut latest = first.body.clone();
    for _ in 0..25 {
        stack.clock.advance_secs(60);
        let next = post(
            &refresh,
            "token-refresh",
            &json!({ "refreshToken": latest["refreshToken"] }),
        )
        .await;
        assert_eq!(next.status, 200);
        latest = next.body;
    }
    stack.round_trips.take();
    let answer = post(&logout, "logout", &refresh_body(&first)).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(stack.round_trips.take(), 2, "an older token: two updates");
    let answer = post(
        &refresh,
        "token-refresh",
        &json!({ "refreshToken": latest["refreshToken"] }),
    )
    .await;
    assert_eq!(
        (answer.status, answer.code()),
        (401, "INVALID_REFRESH_TOKEN")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn refresh_tokens_expire_and_sessions_have_an_absolute_limit() {
    let stack = Stack::new().await;
    let send = stack.otp_send(&[]).await;
    let verify = stack
        .otp_verify(&[
            ("REFRESH_TOKEN_TTL_SECONDS", "100"),
            ("SESSION_MAX_SECONDS", "150"),
        ])
        .await;
    let refresh = stack
        .token_refresh(&[
            ("REFRESH_TOKEN_TTL_SECONDS", "100"),
            ("SESSION_MAX_SECONDS", "150"),
        ])
        .await;
    let logout = stack.logout().await;
    let phone = random_phone();
    let first = login(&stack, &send, &verify, &phone).await;
    stack.clock.advance_secs(100);
    let expired = post(&refresh, "token-refresh", &refresh_body(&first)).await;
    assert_eq!(expired.status, 401);
    let out = post(&logout, "logout", &refresh_body(&first)).await;
    assert_eq!((out.status, out.code()), (400, "INVALID_TOKEN"));

    let second = login(&stack, &send, &verify, &phone).await;
    stack.clock.advance_secs(90);
    let third = post(&refresh, "token-refresh", &refresh_body(&second)).await;
    assert_eq!(third.status, 200);
    // 150 s after login the session is over, though the token is only 60 s old.
    stack.clock.advance_secs(60);
    let late = post(&refresh, "token-refresh", &refresh_body(&third)).await;
    assert_eq!(late.status, 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn logout_accepts_a_spent_token_and_rejects_tokens_we_did_not_issue() {
    let stack = Stack::new().await;
    let send = stack.otp_send(&[]).await;
    let verify = stack.otp_verify(&[]).await;
    let refresh = stack.token_refresh(&[]).await;
    let logout = stack.logout().await;
    let phone = random_phone();
    let first = login(&stack, &send, &verify, &phone).await;
    let second = post(&refresh, "token-refresh", &refresh_body(&first)).await;
    stack.clock.advance_secs(60);
    // Spent and past the grace, yet logout only revokes (CONTRACT §4).
    let out = post(&logout, "logout", &refresh_body(&first)).await;
    assert_eq!(out.status, 200);
    let dead = post(&refresh, "token-refresh", &refresh_body(&second)).await;
    assert_eq!(dead.status, 401);

    let forged = [
        "def50200...".to_owned(),
        "x".to_owned(),
        "A".repeat(64),
        "🙂".repeat(10),
        first.body["refreshToken"]
            .as_str()
            .unwrap()
            .replace(|c: char| c.is_ascii_digit(), "Q"),
    ];
    for token in forged {
        let a = post(&logout, "logout", &json!({ "refreshToken": token })).await;
        assert_eq!((a.status, a.code()), (400, "INVALID_TOKEN"), "{token}");
        let r = post(&refresh, "token-refresh", &json!({ "refreshToken": token })).await;
        assert_eq!(
            (r.status, r.code()),
            (401, "INVALID_REFRESH_TOKEN"),
            "{token}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_bodies_get_400_naming_the_field_and_write_nothing() {
    let stack = Stack::new().await;
    let verify = stack.otp_verify(&[]).await;
    let refresh = stack.token_refresh(&[]).await;
    let logout = stack.logout().await;
    let long = "a".repeat(513);
    let verify_cases = [
        (None, "body"),
        (Some("not json".to_owned()), "body"),
        (Some("[1]".to_owned()), "body"),
        (Some(r#"{"code":"123456"}"#.to_owned()), "phone"),
        (Some(r#"{"phone":"+77001234567"}"#.to_owned()), "code"),
        (
            Some(r#"{"phone":"+77001234567","code":123456}"#.to_owned()),
            "code",
        ),
        (
            Some(r#"{"phone":"+77001234567","code":"12345"}"#.to_owned()),
            "code",
        ),
        (
            Some(r#"{"phone":"+77001234567","code":"1234567"}"#.to_owned()),
            "code",
        ),
        (
            Some(r#"{"phone":"+77001234567","code":"12345a"}"#.to_owned()),
            "code",
        ),
        (
            Some(r#"{"phone":"+77001234567","code":"１２３４５６"}"#.to_owned()),
            "code",
        ),
        (
            Some(r#"{"phone":"+7700123456","code":"123456"}"#.to_owned()),
            "phone",
        ),
    ];
    for (body, field) in verify_cases {
        let answer = call(&verify, event_request("otp-verify", body.as_deref())).await;
        assert_eq!(
            (answer.status, answer.code()),
            (400, "BAD_REQUEST"),
            "{body:?}"
        );
        assert!(
            answer.body["message"].as_str().unwrap().starts_with(field),
            "{body:?}: {}",
            answer.body
        );
    }
    let token_cases = [
        (None, "body"),
        (Some("{".to_owned()), "body"),
        (Some("true".to_owned()), "body"),
        (Some("{}".to_owned()), "refreshToken"),
        (Some(r#"{"refreshToken":null}"#.to_owned()), "refreshToken"),
        (Some(r#"{"refreshToken":42}"#.to_owned()), "refreshToken"),
        (Some(r#"{"refreshToken":""}"#.to_owned()), "refreshToken"),
        (
            Some(format!(r#"{{"refreshToken":"{long}"}}"#)),
            "refreshToken",
        ),
    ];
    for (body, field) in token_cases {
        for (event, answer) in [
            (
                "token-refresh",
                call(&refresh, event_request("token-refresh", body.as_deref())).await,
            ),
            (
                "logout",
                call(&logout, event_request("logout", body.as_deref())).await,
            ),
        ] {
            assert_eq!(
                (answer.status, answer.code()),
                (400, "BAD_REQUEST"),
                "{event} {body:?}"
            );
            assert!(
                answer.body["message"].as_str().unwrap().starts_with(field),
                "{event} {body:?}"
            );
        }
    }
    assert!(stack.items().await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn dynamodb_requests_per_endpoint_are_the_fewest_the_store_allows() {
    let stack = Stack::new().await;
    let send = stack.otp_send(&[]).await;
    let verify = stack.otp_verify(&[]).await;
    let refresh = stack.token_refresh(&[]).await;
    let logout = stack.logout().await;
    let phone = random_phone();
    let code = send_code(&stack, &send, &phone).await;
    stack.round_trips.take();
    let first = post(
        &verify,
        "otp-verify",
        &json!({ "phone": phone, "code": code }),
    )
    .await;
    assert_eq!(first.status, 200);
    assert_eq!(stack.round_trips.take(), 2, "verify");
    let second = post(&refresh, "token-refresh", &refresh_body(&first)).await;
    assert_eq!(second.status, 200);
    assert_eq!(stack.round_trips.take(), 1, "refresh");
    assert_eq!(
        post(&logout, "logout", &refresh_body(&second)).await.status,
        200
    );
    assert_eq!(stack.round_trips.take(), 1, "logout with the live token");
    // Wrong code: a read and a counted attempt.
    let code = send_code(&stack, &send, &phone).await;
    let wrong = if code == "000000" { "111111" } else { "000000" };
    stack.round_trips.take();
    assert_eq!(
        post(
            &verify,
            "otp-verify",
            &json!({ "phone": phone, "code": wrong })
        )
        .await
        .status,
        400
    );
    assert_eq!(stack.round_trips.take(), 2, "wrong code");
    // A token of a shape we never issue costs nothing.
    assert_eq!(
        post(
            &refresh,
            "token-refresh",
            &json!({ "refreshToken": "def50200" })
        )
        .await
        .status,
        401
    );
    assert_eq!(stack.round_trips.take(), 0, "unknown shape");
}

//! Accounts and sessions (CONTRACT §7) against the local stack: the access-token check
//! (every kind of bad token), the session list, revoking one session, the session limit,
//! the logout scopes, and account deletion (re-authentication, what it erases, what it
//! keeps), with the DynamoDB requests each costs.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::{Answer, Stack, call, post, random_phone, sample_event};
use foodsave_auth::adapters::secrets::fetch_secret_string;
use foodsave_auth::api::otp_send::OtpSend;
use foodsave_auth::api::otp_verify::OtpVerify;
use foodsave_auth::keys::generate_signing_key;
use lambda_http::Request;
use secrecy::ExposeSecret;
use serde_json::{Value, json};

/// Enough sends per phone for several logins in a row.
const ENV: &[(&str, &str)] = &[("OTP_SEND_LIMIT", "50")];

/// An HTTP API request to `path` under the base path, with a Bearer token and a body.
fn request(
    method: &str,
    path: &str,
    authorization: Option<&str>,
    body: Option<&Value>,
    user_agent: Option<&str>,
) -> Request {
    let mut event = sample_event("logout");
    let full = format!("/api/v1/auth{path}");
    event["routeKey"] = json!(format!("{method} {full}"));
    event["rawPath"] = json!(full);
    event["requestContext"]["routeKey"] = json!(format!("{method} {full}"));
    event["requestContext"]["http"]["method"] = json!(method);
    event["requestContext"]["http"]["path"] = json!(full);
    let headers = event["headers"].as_object_mut().unwrap();
    headers.remove("user-agent");
    if let Some(agent) = user_agent {
        headers.insert("user-agent".into(), json!(agent));
    }
    if let Some(value) = authorization {
        headers.insert("authorization".into(), json!(value));
    }
    match body {
        Some(b) => event["body"] = json!(b.to_string()),
        None => {
            event.as_object_mut().unwrap().remove("body");
        }
    }
    foodsave_auth::http::event::request_from_json(&event.to_string()).unwrap()
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

struct App {
    send: OtpSend,
    verify: OtpVerify,
}

async fn app(stack: &Stack, extra: &[(&str, &str)]) -> App {
    let env: Vec<(&str, &str)> = ENV.iter().chain(extra).copied().collect();
    App {
        send: stack.otp_send(&env).await,
        verify: stack.otp_verify(&env).await,
    }
}

/// A login from a client with `user_agent`: the token pair.
async fn login(stack: &Stack, app: &App, phone: &str, user_agent: Option<&str>) -> Answer {
    let sent = post(&app.send, "otp-send", &json!({ "phone": phone })).await;
    assert_eq!(sent.status, 200, "{}", sent.body);
    let code = stack.last_code(phone).await;
    let body = json!({ "phone": phone, "code": code });
    let answer = call(
        &app.verify,
        request("POST", "/otp/verify", None, Some(&body), user_agent),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    answer
}

fn access(answer: &Answer) -> String {
    answer.body["accessToken"].as_str().unwrap().to_owned()
}

fn refresh_token(answer: &Answer) -> String {
    answer.body["refreshToken"].as_str().unwrap().to_owned()
}

fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

async fn list(stack: &Stack, token: &str) -> Answer {
    call(
        &stack.sessions(&[]).await,
        request("GET", "/sessions", Some(&bearer(token)), None, None),
    )
    .await
}

async fn revoke(stack: &Stack, token: &str, body: &Value) -> Answer {
    call(
        &stack.sessions(&[]).await,
        request(
            "POST",
            "/sessions/revoke",
            Some(&bearer(token)),
            Some(body),
            None,
        ),
    )
    .await
}

async fn delete(stack: &Stack, token: &str) -> Answer {
    call(
        &stack.account_delete(&[]).await,
        request(
            "POST",
            "/account/delete",
            Some(&bearer(token)),
            Some(&json!({})),
            None,
        ),
    )
    .await
}

async fn refresh(stack: &Stack, token: &str) -> Answer {
    post(
        &stack.token_refresh(&[]).await,
        "token-refresh",
        &json!({ "refreshToken": token }),
    )
    .await
}

async fn logout(stack: &Stack, body: &Value) -> Answer {
    post(&stack.logout().await, "logout", body).await
}

fn assert_invalid_access_token(answer: &Answer, what: &str) {
    assert_eq!(
        (answer.status, answer.code()),
        (401, "INVALID_ACCESS_TOKEN"),
        "{what}: {}",
        answer.body
    );
    assert_eq!(
        answer.header("www-authenticate"),
        Some("Bearer error=\"invalid_token\""),
        "{what}"
    );
    assert_eq!(answer.header("cache-control"), Some("no-store"));
}

fn session_ids(answer: &Answer) -> Vec<String> {
    answer.body["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .collect()
}

/// The stack's signing key: its `kid` and private key (PKCS#8 PEM).
async fn signing_key(stack: &Stack) -> (String, String) {
    let raw = fetch_secret_string(&stack.sm, &stack.secret_id)
        .await
        .unwrap();
    let secret: Value = serde_json::from_str(&raw).unwrap();
    let key = &secret["signingKeys"][0];
    (
        key["kid"].as_str().unwrap().to_owned(),
        key["privateKeyPem"].as_str().unwrap().to_owned(),
    )
}

/// A token with `header` and `claims`, signed RS256 with `pem`.
fn sign_rs256(header: &Value, claims: &Value, pem: &str) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap();
    let signature =
        jsonwebtoken::crypto::sign(input.as_bytes(), &key, jsonwebtoken::Algorithm::RS256).unwrap();
    format!("{input}.{signature}")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_live_sessions_are_listed_most_recently_used_first_with_their_user_agents() {
    let stack = Stack::new().await;
    let app = app(&stack, &[]).await;
    let phone = random_phone();
    let first = login(&stack, &app, &phone, None).await;
    let created = stack.clock_secs();
    stack.clock.advance_secs(30);
    let second = login(&stack, &app, &phone, Some("FoodSave/5.2\t (iPhone) ")).await;
    stack.round_trips.take();
    let listed = list(&stack, &access(&second)).await;
    assert_eq!(listed.status, 200, "{}", listed.body);
    assert_eq!(stack.round_trips.take(), 1, "the list is one Query");
    assert_eq!(listed.header("cache-control"), Some("no-store"));
    let sessions = listed.body["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 2);
    assert_eq!(
        sessions[0],
        json!({
            "id": claims(&access(&second))["sid"],
            "createdAt": created + 30,
            "lastUsedAt": created + 30,
            "current": true,
            "userAgent": "FoodSave/5.2 (iPhone)",
        })
    );
    assert_eq!(
        sessions[1],
        json!({
            "id": claims(&access(&first))["sid"],
            "createdAt": created,
            "lastUsedAt": created,
            "current": false,
            "userAgent": null,
        })
    );
    // A refresh makes the first the most recently used; its verify time stays.
    stack.clock.advance_secs(60);
    let rotated = refresh(&stack, &refresh_token(&first)).await;
    assert_eq!(rotated.status, 200);
    let listed = list(&stack, &access(&rotated)).await;
    let sessions = listed.body["sessions"].as_array().unwrap();
    assert_eq!(sessions[0]["id"], claims(&access(&first))["sid"]);
    assert_eq!(sessions[0]["createdAt"], created);
    assert_eq!(sessions[0]["lastUsedAt"], created + 90);
    assert_eq!(sessions[0]["current"], true);
    assert_eq!(claims(&access(&rotated))["auth_time"], created);
    // Another account's sessions are its own.
    let other = login(&stack, &app, &random_phone(), None).await;
    assert_eq!(session_ids(&list(&stack, &access(&other)).await).len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn every_kind_of_bad_access_token_is_401_before_the_body_is_read() {
    let stack = Stack::new().await;
    let app = app(&stack, &[]).await;
    let phone = random_phone();
    let good = login(&stack, &app, &phone, None).await;
    let token = access(&good);
    let genuine = claims(&token);
    let (kid, pem) = signing_key(&stack).await;
    let header = json!({ "alg": "RS256", "typ": "at+jwt", "kid": kid });
    let with = |field: &str, value: Value| {
        let mut c = genuine.clone();
        c[field] = value;
        sign_rs256(&header, &c, &pem)
    };
    let without = |field: &str| {
        let mut c = genuine.clone();
        c.as_object_mut().unwrap().remove(field);
        sign_rs256(&header, &c, &pem)
    };
    let other_key = generate_signing_key().unwrap();
    let hs256 = jsonwebtoken::encode(
        &jsonwebtoken::Header {
            alg: jsonwebtoken::Algorithm::HS256,
            typ: Some("at+jwt".into()),
            kid: Some(kid.clone()),
            ..Default::default()
        },
        &genuine,
        &jsonwebtoken::EncodingKey::from_secret(b"a shared secret"),
    )
    .unwrap();
    let none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(json!({"alg": "none", "typ": "at+jwt", "kid": kid}).to_string()),
        URL_SAFE_NO_PAD.encode(genuine.to_string())
    );
    let mut tampered = token.clone();
    tampered.insert(token.find('.').unwrap() + 5, 'x');
    let cases: Vec<(&str, Option<String>)> = vec![
        ("no header", None),
        ("another scheme", Some(format!("Basic {token}"))),
        ("empty bearer", Some("Bearer ".into())),
        ("not a JWS", Some(bearer("not.a.jws"))),
        ("garbage", Some(bearer("eyJhbGciOi"))),
        ("over 4 KiB", Some(bearer(&"a".repeat(5000)))),
        ("tampered", Some(bearer(&tampered))),
        ("alg none", Some(bearer(&none))),
        ("HS256", Some(bearer(&hs256))),
        (
            "another key, same kid",
            Some(bearer(&sign_rs256(
                &header,
                &genuine,
                other_key.private_key_pem.expose_secret(),
            ))),
        ),
        (
            "unknown kid",
            Some(bearer(&sign_rs256(
                &json!({ "alg": "RS256", "typ": "at+jwt", "kid": "no-such-kid" }),
                &genuine,
                &pem,
            ))),
        ),
        (
            "typ JWT",
            Some(bearer(&sign_rs256(
                &json!({ "alg": "RS256", "typ": "JWT", "kid": kid }),
                &genuine,
                &pem,
            ))),
        ),
        (
            "no typ",
            Some(bearer(&sign_rs256(
                &json!({ "alg": "RS256", "kid": kid }),
                &genuine,
                &pem,
            ))),
        ),
        (
            "other issuer",
            Some(bearer(&with("iss", json!("https://evil.example")))),
        ),
        (
            "other audience",
            Some(bearer(&with("aud", json!("someone-else")))),
        ),
        (
            "audience list",
            Some(bearer(&with("aud", json!(["foodsave"])))),
        ),
        (
            "expired",
            Some(bearer(&with("exp", json!(stack.clock_secs() - 61)))),
        ),
        ("no sub", Some(bearer(&without("sub")))),
        ("no sid", Some(bearer(&without("sid")))),
        ("no iat", Some(bearer(&without("iat")))),
        ("no auth_time", Some(bearer(&without("auth_time")))),
        (
            "another account's sub",
            Some(bearer(&with(
                "sub",
                json!(foodsave_auth::domain::random_id(&ring::rand::SystemRandom::new()).unwrap()),
            ))),
        ),
    ];
    let sessions = stack.sessions(&[]).await;
    let deleter = stack.account_delete(&[]).await;
    for (what, authorization) in &cases {
        let answer = call(
            &sessions,
            request("GET", "/sessions", authorization.as_deref(), None, None),
        )
        .await;
        assert_invalid_access_token(&answer, what);
        // The token is checked before the body: no sessionId is still a 401.
        let answer = call(
            &sessions,
            request(
                "POST",
                "/sessions/revoke",
                authorization.as_deref(),
                Some(&json!({})),
                None,
            ),
        )
        .await;
        assert_invalid_access_token(&answer, what);
        let answer = call(
            &deleter,
            request(
                "POST",
                "/account/delete",
                authorization.as_deref(),
                None,
                None,
            ),
        )
        .await;
        assert_invalid_access_token(&answer, what);
    }
    // Within the 60 s leeway after exp, still accepted; the genuine token throughout.
    let late = with("exp", json!(stack.clock_secs() - 30));
    assert_eq!(list(&stack, &late).await.status, 200);
    assert_eq!(list(&stack, &token).await.status, 200);
    // The token's own expiry, by the clock.
    stack.clock.advance_secs(3600 + 60);
    assert_invalid_access_token(&list(&stack, &token).await, "expired by the clock");

    // A session that is not live: logged out, or its account deleted.
    let phone = random_phone();
    let session = login(&stack, &app, &phone, None).await;
    assert_eq!(
        logout(&stack, &json!({ "refreshToken": refresh_token(&session) }))
            .await
            .status,
        200
    );
    assert_invalid_access_token(&list(&stack, &access(&session)).await, "revoked session");
    let gone = login(&stack, &app, &phone, None).await;
    let kept = login(&stack, &app, &phone, None).await;
    assert_eq!(delete(&stack, &access(&gone)).await.status, 200);
    assert_invalid_access_token(&list(&stack, &access(&kept)).await, "deleted account");
    assert_invalid_access_token(&delete(&stack, &access(&kept)).await, "deleted twice");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_is_revoked_by_id_and_any_other_id_is_not_found() {
    let stack = Stack::new().await;
    let app = app(&stack, &[]).await;
    let phone = random_phone();
    let old = login(&stack, &app, &phone, None).await;
    let current = login(&stack, &app, &phone, None).await;
    let stranger = login(&stack, &app, &random_phone(), None).await;
    let token = access(&current);
    let old_sid = claims(&access(&old))["sid"].as_str().unwrap().to_owned();
    let stranger_sid = claims(&access(&stranger))["sid"]
        .as_str()
        .unwrap()
        .to_owned();
    for (body, message) in [
        (json!({}), "sessionId: is required"),
        (json!({ "sessionId": null }), "sessionId: is required"),
        (json!({ "sessionId": "" }), "sessionId: must not be empty"),
        (json!({ "sessionId": 7 }), "sessionId: must be a string"),
    ] {
        let answer = revoke(&stack, &token, &body).await;
        assert_eq!(
            (answer.status, answer.code()),
            (400, "BAD_REQUEST"),
            "{body}"
        );
        assert_eq!(answer.body["message"], message);
    }
    for unknown in [stranger_sid.as_str(), "no-such-session", &"A".repeat(43)] {
        let answer = revoke(&stack, &token, &json!({ "sessionId": unknown })).await;
        assert_eq!((answer.status, answer.code()), (404, "SESSION_NOT_FOUND"));
    }
    // The stranger's session is untouched.
    assert_eq!(list(&stack, &access(&stranger)).await.status, 200);
    stack.round_trips.take();
    let answer = revoke(&stack, &token, &json!({ "sessionId": old_sid })).await;
    assert_eq!((answer.status, &answer.body), (200, &json!({})));
    assert_eq!(stack.round_trips.take(), 2, "Query, then one update");
    assert_eq!(
        refresh(&stack, &refresh_token(&old)).await.code(),
        "INVALID_REFRESH_TOKEN"
    );
    assert_eq!(
        session_ids(&list(&stack, &token).await),
        [claims(&token)["sid"].as_str().unwrap()]
    );
    // Revoked once: no longer a live session of the account.
    let again = revoke(&stack, &token, &json!({ "sessionId": old_sid })).await;
    assert_eq!(again.code(), "SESSION_NOT_FOUND");
    // The current session too; its access token then stops working here.
    let own = claims(&token)["sid"].clone();
    assert_eq!(
        revoke(&stack, &token, &json!({ "sessionId": own }))
            .await
            .status,
        200
    );
    assert_invalid_access_token(&list(&stack, &token).await, "revoked itself");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_login_past_the_session_limit_revokes_the_least_recently_used() {
    let stack = Stack::new().await;
    let limit = [("MAX_SESSIONS_PER_ACCOUNT", "3")];
    let app = app(&stack, &limit).await;
    let phone = random_phone();
    let mut logins = Vec::new();
    for _ in 0..3 {
        logins.push(login(&stack, &app, &phone, None).await);
        stack.clock.advance_secs(10);
    }
    // The first is used again: the second is now the least recently used.
    let first = refresh(&stack, &refresh_token(&logins[0])).await;
    assert_eq!(first.status, 200);
    stack.clock.advance_secs(10);
    stack.round_trips.take();
    let fourth = login(&stack, &app, &phone, None).await;
    let listed = list(&stack, &access(&fourth)).await;
    let sid = |a: &Answer| claims(&access(a))["sid"].as_str().unwrap().to_owned();
    let mut live = session_ids(&listed);
    live.sort();
    let mut expected = vec![sid(&logins[0]), sid(&logins[2]), sid(&fourth)];
    expected.sort();
    assert_eq!(live, expected);
    assert_eq!(
        refresh(&stack, &refresh_token(&logins[1])).await.code(),
        "INVALID_REFRESH_TOKEN",
        "the least recently used was revoked"
    );
    assert_eq!(refresh(&stack, &refresh_token(&first)).await.status, 200);
    // Logged out sessions do not count: after one logout, a login revokes nothing.
    assert_eq!(
        logout(
            &stack,
            &json!({ "refreshToken": refresh_token(&logins[2]) })
        )
        .await
        .status,
        200
    );
    let fifth = login(&stack, &app, &phone, None).await;
    assert_eq!(session_ids(&list(&stack, &access(&fifth)).await).len(), 3);
    assert_eq!(list(&stack, &access(&fourth)).await.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn logout_ends_this_session_the_others_or_all_of_them() {
    let stack = Stack::new().await;
    let app = app(&stack, &[]).await;
    let phone = random_phone();
    let a = login(&stack, &app, &phone, None).await;
    let b = login(&stack, &app, &phone, None).await;
    let c = login(&stack, &app, &phone, None).await;
    let stranger = login(&stack, &app, &random_phone(), None).await;
    for scope in [json!("everything"), json!(null), json!(1), json!("ALL")] {
        let answer = logout(
            &stack,
            &json!({ "refreshToken": refresh_token(&a), "scope": scope }),
        )
        .await;
        assert_eq!(
            (answer.status, answer.code()),
            (400, "BAD_REQUEST"),
            "{scope}"
        );
        assert!(
            answer.body["message"]
                .as_str()
                .unwrap()
                .starts_with("scope:")
        );
    }
    // A spent token of a live session is accepted (§4): rotate b, log out with its old one.
    let b2 = refresh(&stack, &refresh_token(&b)).await;
    stack.round_trips.take();
    let others = logout(
        &stack,
        &json!({ "refreshToken": refresh_token(&b), "scope": "others" }),
    )
    .await;
    assert_eq!((others.status, &others.body), (200, &json!({})));
    assert_eq!(stack.round_trips.take(), 2, "Query, then one transaction");
    for gone in [&a, &c] {
        assert_eq!(
            refresh(&stack, &refresh_token(gone)).await.code(),
            "INVALID_REFRESH_TOKEN"
        );
    }
    // This session stays live and its token was not rotated.
    assert_eq!(
        session_ids(&list(&stack, &access(&b2)).await),
        [claims(&access(&b))["sid"].as_str().unwrap()]
    );
    let b3 = refresh(&stack, &refresh_token(&b2)).await;
    assert_eq!(b3.status, 200);
    // Nothing else to end: still 200, and nothing written.
    stack.round_trips.take();
    let nothing = logout(
        &stack,
        &json!({ "refreshToken": refresh_token(&b3), "scope": "others" }),
    )
    .await;
    assert_eq!(nothing.status, 200);
    assert_eq!(stack.round_trips.take(), 1);
    // "session" is the default.
    let d = login(&stack, &app, &phone, None).await;
    let session = logout(
        &stack,
        &json!({ "refreshToken": refresh_token(&d), "scope": "session" }),
    )
    .await;
    assert_eq!(session.status, 200);
    assert_eq!(list(&stack, &access(&b3)).await.status, 200);
    // "all": every session of the account, this one included; the stranger's stays.
    let e = login(&stack, &app, &phone, None).await;
    let all = logout(
        &stack,
        &json!({ "refreshToken": refresh_token(&e), "scope": "all" }),
    )
    .await;
    assert_eq!(all.status, 200);
    for gone in [&b3, &e] {
        assert_eq!(
            refresh(&stack, &refresh_token(gone)).await.code(),
            "INVALID_REFRESH_TOKEN"
        );
    }
    let again = logout(
        &stack,
        &json!({ "refreshToken": refresh_token(&e), "scope": "all" }),
    )
    .await;
    assert_eq!((again.status, again.code()), (400, "INVALID_TOKEN"));
    assert_eq!(list(&stack, &access(&stranger)).await.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn deletion_needs_a_recent_verify_erases_the_account_and_keeps_every_budget() {
    let stack = Stack::new().await;
    let guesses = [("OTP_MAX_WRONG_PER_DAY", "3")];
    let app = app(&stack, &guesses).await;
    let phone = random_phone();
    let old = login(&stack, &app, &phone, None).await;
    let old_sub = claims(&access(&old))["sub"].as_str().unwrap().to_owned();
    stack.clock.advance_secs(301);
    // Refreshing keeps the verify's auth_time: still too old.
    let refreshed = refresh(&stack, &refresh_token(&old)).await;
    let answer = delete(&stack, &access(&refreshed)).await;
    assert_eq!((answer.status, answer.code()), (401, "REAUTH_REQUIRED"));
    assert_eq!(
        answer.header("www-authenticate"),
        Some("Bearer error=\"insufficient_user_authentication\", max_age=300")
    );
    assert_eq!(
        list(&stack, &access(&refreshed)).await.status,
        200,
        "nothing changed"
    );
    // Re-authenticate: a new verify.
    let fresh = login(&stack, &app, &phone, None).await;
    assert_eq!(claims(&access(&fresh))["sub"], old_sub.as_str());
    // Two wrong guesses on a new code (one left before the lock), and a code left active
    // with an Idempotency-Key.
    let sent = call(&app.send, idempotent_send(&phone, "delete-me-key")).await;
    assert_eq!(sent.status, 200);
    let pending = stack.last_code(&phone).await;
    let wrong = if pending == "000000" {
        "111111"
    } else {
        "000000"
    };
    for _ in 0..2 {
        let answer = post(
            &app.verify,
            "otp-verify",
            &json!({ "phone": phone, "code": wrong }),
        )
        .await;
        assert_eq!(answer.code(), "INVALID_CODE");
    }
    stack.round_trips.take();
    let answer = delete(&stack, &access(&fresh)).await;
    assert_eq!(
        (answer.status, &answer.body),
        (200, &json!({})),
        "{}",
        answer.body
    );
    assert_eq!(answer.header("cache-control"), Some("no-store"));
    assert_eq!(stack.round_trips.take(), 2, "Query, then one transaction");
    // Every session ended.
    for token in [&refreshed, &fresh] {
        assert_eq!(
            refresh(&stack, &refresh_token(token)).await.code(),
            "INVALID_REFRESH_TOKEN"
        );
        assert_invalid_access_token(&list(&stack, &access(token)).await, "after deletion");
    }
    // The active code is gone.
    let answer = post(
        &app.verify,
        "otp-verify",
        &json!({ "phone": phone, "code": pending }),
    )
    .await;
    assert_eq!((answer.status, answer.code()), (401, "EXPIRED_CODE"));
    // Nothing of the account is stored, and its sessions are erased.
    let items = stack.items().await;
    let named = |prefix: &str| {
        items.iter().any(|i| {
            i.get("pk")
                .and_then(|v| v.as_s().ok())
                .is_some_and(|pk| pk.starts_with(prefix))
        })
    };
    assert!(!named(&format!("ACCOUNT#{old_sub}")));
    assert!(!items.iter().any(|i| {
        i.get("pk").and_then(|v| v.as_s().ok()) == Some(&format!("PHONE#{phone}"))
            && i.get("sk").and_then(|v| v.as_s().ok()).map(String::as_str) == Some("USER")
    }));
    // The Idempotency-Key is free again: the same key sends a new code.
    let resent = call(&app.send, idempotent_send(&phone, "delete-me-key")).await;
    assert_eq!(resent.status, 200);
    assert_eq!(stack.sms_to(&phone).await.len(), 4, "a new SMS went out");
    // The guess count stayed: one more wrong guess locks the phone.
    let code = stack.last_code(&phone).await;
    let wrong = if code == "000000" { "111111" } else { "000000" };
    let answer = post(
        &app.verify,
        "otp-verify",
        &json!({ "phone": phone, "code": wrong }),
    )
    .await;
    assert_eq!(answer.body["attemptsLeft"], 0, "{}", answer.body);
    let locked = post(
        &app.verify,
        "otp-verify",
        &json!({ "phone": phone, "code": code }),
    )
    .await;
    assert_eq!((locked.status, locked.code()), (429, "RATE_LIMIT"));
    // A day later the lock is over; the next verify creates a new account.
    stack.clock.advance_secs(86_400);
    let again = login(&stack, &app, &phone, None).await;
    let new_sub = claims(&access(&again))["sub"].as_str().unwrap().to_owned();
    assert_ne!(new_sub, old_sub);
    assert_eq!(session_ids(&list(&stack, &access(&again)).await).len(), 1);
}

/// A deletion keeps the §3 window: a phone that used its sends stays limited.
#[tokio::test(flavor = "multi_thread")]
async fn deletion_keeps_the_send_window() {
    let stack = Stack::new().await;
    let app = App {
        send: stack.otp_send(&[]).await,
        verify: stack.otp_verify(&[]).await,
    };
    let phone = random_phone();
    let session = login(&stack, &app, &phone, None).await;
    for _ in 0..2 {
        assert_eq!(
            post(&app.send, "otp-send", &json!({ "phone": phone }))
                .await
                .status,
            200
        );
    }
    assert_eq!(delete(&stack, &access(&session)).await.status, 200);
    let answer = post(&app.send, "otp-send", &json!({ "phone": phone })).await;
    assert_eq!((answer.status, answer.code()), (429, "RATE_LIMIT"));
}

fn idempotent_send(phone: &str, key: &str) -> Request {
    let mut event = sample_event("otp-send");
    event["body"] = json!(json!({ "phone": phone }).to_string());
    event["headers"]["idempotency-key"] = json!(key);
    foodsave_auth::http::event::request_from_json(&event.to_string()).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn dynamodb_requests_of_verify_refresh_and_logout_with_accounts() {
    let stack = Stack::new().await;
    let app = app(&stack, &[]).await;
    let phone = random_phone();
    let send = |s: &Stack| s.round_trips.take();
    // The first login: batch get, transaction.
    let sent = post(&app.send, "otp-send", &json!({ "phone": phone })).await;
    assert_eq!(sent.status, 200);
    let code = stack.last_code(&phone).await;
    send(&stack);
    let first = post(
        &app.verify,
        "otp-verify",
        &json!({ "phone": phone, "code": code }),
    )
    .await;
    assert_eq!(first.status, 200);
    assert_eq!(stack.round_trips.take(), 2, "first login");
    // A returning account: its sessions are read too.
    assert_eq!(
        post(&app.send, "otp-send", &json!({ "phone": phone }))
            .await
            .status,
        200
    );
    let code = stack.last_code(&phone).await;
    send(&stack);
    let second = post(
        &app.verify,
        "otp-verify",
        &json!({ "phone": phone, "code": code }),
    )
    .await;
    assert_eq!(second.status, 200);
    assert_eq!(stack.round_trips.take(), 3, "returning login");
    let rotated = refresh(&stack, &refresh_token(&first)).await;
    assert_eq!(rotated.status, 200);
    assert_eq!(stack.round_trips.take(), 1, "refresh");
    let out = logout(&stack, &json!({ "refreshToken": refresh_token(&rotated) })).await;
    assert_eq!(out.status, 200);
    assert_eq!(stack.round_trips.take(), 1, "logout");
    assert_eq!(list(&stack, &access(&second)).await.status, 200);
    assert_eq!(stack.round_trips.take(), 1, "GET /sessions");
}

/// A login read before a deletion cannot bring the old `sub` back (CONTRACT §7): its
/// transaction conditions on the phone's account as it read it, so it fails and the
/// verify decides again from the phone as it now is.
#[tokio::test(flavor = "multi_thread")]
async fn a_login_read_before_a_deletion_cannot_bring_the_old_sub_back() {
    use foodsave_auth::adapters::dynamodb::LoginAccount;
    use foodsave_auth::domain::session::SessionId;
    use foodsave_auth::domain::{PhoneNumber, RefreshToken, Session};
    use foodsave_auth::ports::StoreError;
    let stack = Stack::new().await;
    let app = app(&stack, &[]).await;
    let phone = random_phone();
    let session = login(&stack, &app, &phone, None).await;
    let old_sub = claims(&access(&session))["sub"]
        .as_str()
        .unwrap()
        .to_owned();
    let store = stack.store();
    let parsed = PhoneNumber::parse(&phone).unwrap();
    let read = store.load_account(&old_sub).await.unwrap();
    assert_eq!(delete(&stack, &access(&session)).await.status, 200);
    // A new code after the deletion; a login prepared for the old account before it.
    let sent = post(&app.send, "otp-send", &json!({ "phone": phone })).await;
    assert_eq!(sent.status, 200);
    let otp_version = store
        .load_login(&parsed)
        .await
        .unwrap()
        .otp
        .version
        .unwrap();
    let rng = ring::rand::SystemRandom::new();
    let sid = SessionId::generate(&rng, &old_sub).unwrap();
    let first = RefreshToken::generate(&rng, &sid).unwrap();
    let now = foodsave_auth::domain::UnixMillis::from_secs(stack.clock_secs());
    let stale = Session::start(
        sid,
        old_sub.clone(),
        phone.clone(),
        &first,
        now,
        86_400,
        3600,
    );
    for version in [read.version, None] {
        let account = LoginAccount {
            existing: true,
            version,
            evict: Vec::new(),
        };
        let result = store
            .complete_login(&parsed, otp_version, now, &stale, &account, None)
            .await;
        assert!(matches!(result, Err(StoreError::Conflict)), "{result:?}");
    }
    assert!(store.load_login(&parsed).await.unwrap().sub.is_none());
    // The verify itself creates a new account.
    let code = stack.last_code(&phone).await;
    let again = post(
        &app.verify,
        "otp-verify",
        &json!({ "phone": phone, "code": code }),
    )
    .await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert_ne!(claims(&access(&again))["sub"], old_sub.as_str());
}

/// An account erased while its phone has no OTP item: the erasure checks that there is
/// still none, so a code sent meanwhile is cleared instead of surviving it.
#[tokio::test(flavor = "multi_thread")]
async fn an_erasure_holds_the_phone_s_otp_item_whether_or_not_it_exists() {
    use foodsave_auth::adapters::dynamodb::{Deletion, OtpItem};
    use foodsave_auth::domain::PhoneNumber;
    let stack = Stack::new().await;
    let app = app(&stack, &[]).await;
    let phone = random_phone();
    let session = login(&stack, &app, &phone, None).await;
    let sub = claims(&access(&session))["sub"]
        .as_str()
        .unwrap()
        .to_owned();
    let store = stack.store();
    let parsed = PhoneNumber::parse(&phone).unwrap();
    let account = store.load_account(&sub).await.unwrap();
    let version = account.version.unwrap();
    // The phone has an OTP item: expecting none is refused, nothing written.
    let outcome = store
        .delete_account(&account, &parsed, version, &[], OtpItem::Absent, None)
        .await
        .unwrap();
    assert_eq!(outcome, Deletion::OtpItemOtherwise);
    assert!(store.load_account(&sub).await.unwrap().version.is_some());
    // Expecting it: the erasure goes through and clears its code.
    let outcome = store
        .delete_account(&account, &parsed, version, &[], OtpItem::Clear, None)
        .await
        .unwrap();
    assert_eq!(outcome, Deletion::Deleted);
    assert!(store.load_account(&sub).await.unwrap().version.is_none());
}

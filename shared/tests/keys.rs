//! Signing keys without manual steps: rotation steps, JWKS and discovery, emergency
//! revocation, against the local AWS stack with a manual clock (CONTRACT §1, §4, §5).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use common::{
    NowMillis, Stack, call, event_request, post, public_keys, random_phone, verify_access_token,
};
use foodsave_auth::adapters::AuthSecret;
use foodsave_auth::adapters::secrets::fetch_secret_string;
use foodsave_auth::domain::UnixMillis;
use foodsave_auth::rotation::{PUBLISH_LEAD_SECONDS, RETIRE_MARGIN_SECONDS};
use serde_json::{Value, json};

async fn login_token(stack: &Stack, verify: &foodsave_auth::api::otp_verify::OtpVerify) -> String {
    let send = stack.otp_send(&[]).await;
    let phone = random_phone();
    assert_eq!(
        post(&send, "otp-send", &json!({ "phone": phone }))
            .await
            .status,
        200
    );
    let code = stack.last_code(&phone).await;
    let answer = post(
        verify,
        "otp-verify",
        &json!({ "phone": phone, "code": code }),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    answer.body["accessToken"].as_str().unwrap().to_owned()
}

fn kid_of(token: &str) -> String {
    jsonwebtoken::decode_header(token).unwrap().kid.unwrap()
}

async fn auth_doc(stack: &Stack) -> Value {
    serde_json::from_str(
        &fetch_secret_string(&stack.sm, &stack.secret_id)
            .await
            .unwrap(),
    )
    .unwrap()
}

fn kids(jwks: &jsonwebtoken::jwk::JwkSet) -> Vec<String> {
    jwks.keys
        .iter()
        .filter_map(|k| k.common.key_id.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_rotation_steps_make_a_valid_secret_from_an_empty_one() {
    let stack = Stack::new().await;
    let raw = fetch_secret_string(&stack.sm, &stack.secret_id)
        .await
        .unwrap();
    let secret = AuthSecret::parse(&raw).unwrap();
    assert!(secret.pepper().is_some());
    assert_eq!(secret.signing_keys.len(), 1);
    let active = secret
        .active_key(stack.clock.now_millis())
        .expect("the first key is active at once");
    assert_eq!(kids(&public_keys(&stack).await), vec![active.kid.clone()]);
    // The rotated version is AWSCURRENT and no AWSPENDING is left behind.
    let described = stack
        .sm
        .describe_secret()
        .secret_id(&stack.secret_id)
        .send()
        .await
        .unwrap();
    let stages: Vec<String> = described
        .version_ids_to_stages()
        .unwrap()
        .values()
        .flatten()
        .cloned()
        .collect();
    assert_eq!(stages, vec!["AWSCURRENT".to_owned()]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rotated_key_is_published_before_it_signs_and_old_tokens_still_verify() {
    let stack = Stack::new().await;
    let verify = stack.otp_verify(&[]).await;
    let old_token = login_token(&stack, &verify).await;
    let old_kid = kid_of(&old_token);

    stack.clock.advance_secs(86_400);
    stack.rotation.rotate_now(&stack.secret_id).await.unwrap();
    let jwks = public_keys(&stack).await;
    assert_eq!(kids(&jwks).len(), 2);
    let new_kid = kids(&jwks).into_iter().find(|k| *k != old_kid).unwrap();
    // Published, not yet signing: the same (long-lived) verify function still uses the old key.
    stack.clock.advance_secs(600);
    assert_eq!(kid_of(&login_token(&stack, &verify).await), old_kid);

    // Once its activeFrom passes, the same container picks it up without a redeploy.
    stack.clock.advance_secs(PUBLISH_LEAD_SECONDS - 600);
    let new_token = login_token(&stack, &verify).await;
    assert_eq!(kid_of(&new_token), new_kid);
    let jwks = public_keys(&stack).await;
    verify_access_token(&new_token, &jwks);
    verify_access_token(&old_token, &jwks);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rotation_after_the_retention_drops_the_old_key() {
    let stack = Stack::new().await;
    let first_kid = kids(&public_keys(&stack).await).remove(0);
    stack.clock.advance_secs(86_400);
    stack.rotation.rotate_now(&stack.secret_id).await.unwrap();
    let second_kid = kids(&public_keys(&stack).await)
        .into_iter()
        .find(|k| *k != first_kid)
        .unwrap();
    // Still inside the retention: the first key stays; the second is active, so a third
    // key is published ahead.
    stack
        .clock
        .advance_secs(PUBLISH_LEAD_SECONDS + 3600 + RETIRE_MARGIN_SECONDS - 1);
    stack.rotation.rotate_now(&stack.secret_id).await.unwrap();
    let kept = kids(&public_keys(&stack).await);
    assert_eq!(kept.len(), 3);
    assert_eq!(kept[..2], [first_kid.clone(), second_kid.clone()]);
    // One second later the first key's last token has expired: the next rotation drops it
    // and adds nothing while the third key waits.
    stack.clock.advance_secs(1);
    stack.rotation.rotate_now(&stack.secret_id).await.unwrap();
    let now = kids(&public_keys(&stack).await);
    assert_eq!(now, kept[1..].to_vec());
    // The pepper survives every rotation.
    assert!(auth_doc(&stack).await["otpPepper"].is_string());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_emergency_revocation_drops_a_key_and_signs_with_a_fresh_one_at_once() {
    let stack = Stack::new().await;
    let verify = stack.otp_verify(&[]).await;
    let token = login_token(&stack, &verify).await;
    let compromised = kid_of(&token);
    let pepper_before = auth_doc(&stack).await["otpPepper"].clone();

    let out = stack
        .rotation
        .handle(serde_json::from_value(json!({ "revokeKid": compromised })).unwrap())
        .await
        .unwrap();
    let fresh_kid = out["activeKid"].as_str().unwrap().to_owned();
    let jwks = public_keys(&stack).await;
    assert_eq!(kids(&jwks), vec![fresh_kid.clone()]);
    assert!(
        jwks.find(&compromised).is_none(),
        "the revoked key's tokens no longer verify"
    );
    assert_eq!(auth_doc(&stack).await["otpPepper"], pepper_before);
    // A new container signs with the fresh key straight away.
    let verify = stack.otp_verify(&[]).await;
    let new_token = login_token(&stack, &verify).await;
    assert_eq!(kid_of(&new_token), fresh_kid);
    verify_access_token(&new_token, &jwks);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_from_verify_checks_out_with_nothing_but_the_served_jwks() {
    let stack = Stack::new().await;
    let verify = stack.otp_verify(&[]).await;
    let token = login_token(&stack, &verify).await;
    let jwks_fn = stack.jwks().await;
    let answer = call(&jwks_fn, event_request("jwks", None)).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("cache-control"), Some("public, max-age=300"));
    assert_eq!(answer.header("content-type"), Some("application/json"));
    for key in answer.body["keys"].as_array().unwrap() {
        assert_eq!(key["kty"], "RSA");
        assert_eq!(key["use"], "sig");
        assert_eq!(key["alg"], "RS256");
        assert!(key["n"].is_string() && key["e"].is_string() && key["kid"].is_string());
        assert!(
            key.get("d").is_none() && key.get("p").is_none(),
            "no private parts"
        );
    }
    let jwks: jsonwebtoken::jwk::JwkSet = serde_json::from_value(answer.body).unwrap();
    let (header, claims) = verify_access_token(&token, &jwks);
    assert_eq!(header.typ.as_deref(), Some("at+jwt"));
    assert_eq!(claims.exp - claims.iat, 3600);
}

#[tokio::test(flavor = "multi_thread")]
async fn discovery_names_the_issuer_and_the_jwks_under_any_path_prefix() {
    let stack = Stack::new().await;
    let jwks_fn = stack.jwks().await;
    let answer = call(&jwks_fn, event_request("jwks-openid-configuration", None)).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("cache-control"), Some("public, max-age=300"));
    let issuer = "https://auth.test.foodsave.kz/api/v1/auth";
    assert_eq!(
        answer.body,
        json!({
            "issuer": issuer,
            "jwks_uri": format!("{issuer}/.well-known/jwks.json"),
            "id_token_signing_alg_values_supported": ["RS256"],
            "subject_types_supported": ["public"],
            "response_types_supported": ["token"],
        })
    );
    // A REST API stage prefix, a trailing slash, an unknown path, a POST.
    let mut event: Value = serde_json::from_str(
        &std::fs::read_to_string(format!(
            "{}/../events/jwks.json",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap(),
    )
    .unwrap();
    for (path, method, status) in [
        ("/Prod/api/v1/auth/.well-known/jwks.json", "GET", 200),
        ("/api/v1/auth/.well-known/openid-configuration/", "GET", 200),
        ("/api/v1/auth/.well-known/other", "GET", 404),
        ("/api/v1/auth/.well-known/jwks.json", "POST", 405),
    ] {
        event["rawPath"] = json!(path);
        event["requestContext"]["http"]["path"] = json!(path);
        event["requestContext"]["http"]["method"] = json!(method);
        let answer = call(
            &jwks_fn,
            lambda_http::request::from_str(&event.to_string()).unwrap(),
        )
        .await;
        assert_eq!(answer.status, status, "{method} {path}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_jwks_function_needs_only_the_public_secret() {
    let stack = Stack::new().await;
    let env = {
        let jwks = stack.jwks_secret_id.clone();
        move |name: &str| match name {
            "JWKS_SECRET_ID" => Some(jwks.clone()),
            "JWT_ISSUER" => Some("https://auth.test.foodsave.kz/api/v1/auth".to_owned()),
            _ => None,
        }
    };
    use foodsave_auth::api::Endpoint;
    let jwks_fn = foodsave_auth::api::jwks::Jwks::init(&stack.aws, &env, stack.clock.clone())
        .await
        .unwrap();
    let answer = call(&jwks_fn, event_request("jwks", None)).await;
    assert_eq!(answer.status, 200);
    assert!(!answer.body.to_string().contains("PRIVATE"));
}

#[tokio::test(flavor = "multi_thread")]
async fn no_active_key_is_a_logged_500_not_a_panic() {
    let stack = Stack::new().await;
    let mut doc = auth_doc(&stack).await;
    doc["signingKeys"][0]["activeFrom"] =
        json!(UnixMillis::from_secs(stack.clock.now_millis().as_secs() + 3600).as_secs());
    stack
        .sm
        .put_secret_value()
        .secret_id(&stack.secret_id)
        .secret_string(doc.to_string())
        .send()
        .await
        .unwrap();
    let verify = stack.otp_verify(&[]).await;
    let send = stack.otp_send(&[]).await;
    let phone = random_phone();
    assert_eq!(
        post(&send, "otp-send", &json!({ "phone": phone }))
            .await
            .status,
        200
    );
    let code = stack.last_code(&phone).await;
    let answer = post(
        &verify,
        "otp-verify",
        &json!({ "phone": phone, "code": code }),
    )
    .await;
    assert_eq!((answer.status, answer.code()), (500, "INTERNAL_ERROR"));
    assert_eq!(answer.body["message"], "internal error");
}

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
    NowMillis, Stack, call, event_request, post, public_keys, random_phone, random_suffix,
    verify_access_token,
};
use foodsave_auth::adapters::AuthSecret;
use foodsave_auth::adapters::secrets::{
    SECRET_REFRESH_SECONDS, SIGNING_REFRESH_SECONDS, URGENT_REFRESH_SECONDS, fetch_secret_string,
};
use foodsave_auth::devstack::fault_proxy::Fault;
use foodsave_auth::domain::UnixMillis;
use foodsave_auth::keys::generate_signing_key;
use foodsave_auth::rotation::{
    PUBLISH_LEAD_SECONDS, RETIRE_MARGIN_SECONDS, RotationError, RotationEvent,
};
use secrecy::ExposeSecret;
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

async fn put_auth_doc(stack: &Stack, doc: &Value) {
    stack
        .sm
        .put_secret_value()
        .secret_id(&stack.secret_id)
        .secret_string(doc.to_string())
        .send()
        .await
        .unwrap();
}

fn kids_in(doc: &Value, list: &str) -> Vec<String> {
    doc[list]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect()
}

async fn jwks_doc(stack: &Stack) -> Value {
    serde_json::from_str(
        &fetch_secret_string(&stack.sm, &stack.jwks_secret_id)
            .await
            .unwrap(),
    )
    .unwrap()
}

const STEPS: [&str; 4] = ["createSecret", "setSecret", "testSecret", "finishSecret"];

/// A ClientRequestToken as Secrets Manager makes them (32 to 64 characters).
fn rotation_token() -> String {
    format!("{}{}", random_suffix(), random_suffix())
}

async fn run_step(stack: &Stack, token: &str, step: &str) -> Result<(), RotationError> {
    stack
        .rotation
        .step(&RotationEvent {
            secret_id: stack.secret_id.clone(),
            client_request_token: token.to_owned(),
            step: step.to_owned(),
        })
        .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_signer_with_no_active_key_reads_its_secret_again_within_seconds() {
    let stack = Stack::new().await;
    let start = stack.clock_secs();
    let mut doc = auth_doc(&stack).await;
    let mut waiting = doc["signingKeys"][0].clone();
    waiting["activeFrom"] = json!(start + 3600);
    // No keys at all, and only a key whose activeFrom is still ahead.
    for no_active_key in [json!([]), json!([waiting])] {
        doc["signingKeys"] = no_active_key.clone();
        put_auth_doc(&stack, &doc).await;
        let loaded_at = stack.clock_secs();
        let signer = stack.secret().await;
        let plain = stack.secret().await;
        let active_kid = |secret: &AuthSecret| {
            secret
                .active_key(stack.clock.now_millis())
                .map(|k| k.kid.clone())
        };
        let signing_kid =
            || async { active_kid(&*signer.get_with_active_key(stack.clock.now_millis()).await) };
        assert_eq!(signing_kid().await, None);
        // The first early read finds nothing new either.
        stack.clock.advance_secs(URGENT_REFRESH_SECONDS);
        assert_eq!(signing_kid().await, None);

        // A key active at once is written (a revocation's fresh key, a first rotation).
        let fresh = generate_signing_key().unwrap();
        let mut keys = no_active_key.as_array().unwrap().clone();
        keys.push(json!({
            "kid": fresh.kid,
            "privateKeyPem": fresh.private_key_pem.expose_secret(),
            "activeFrom": stack.clock_secs(),
        }));
        doc["signingKeys"] = json!(keys);
        put_auth_doc(&stack, &doc).await;

        // Early reads are spaced: not one per request.
        stack.clock.advance_secs(URGENT_REFRESH_SECONDS - 1);
        assert_eq!(signing_kid().await, None);
        stack.clock.advance_secs(1);
        assert_eq!(signing_kid().await, Some(fresh.kid.clone()));
        assert!(stack.clock_secs() - loaded_at < SECRET_REFRESH_SECONDS / 10);
        // A cache read only by the refresh period still has no key to sign with.
        assert_eq!(active_kid(&*plain.get().await), None);
        // Once it has a key, the signer goes back to the normal period.
        assert_eq!(
            active_kid(&*signer.get_with_active_key(stack.clock.now_millis()).await),
            Some(fresh.kid.clone())
        );
        stack.clock.advance_secs(SECRET_REFRESH_SECONDS);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_revoked_during_a_rotation_cannot_come_back_through_its_later_steps() {
    // Revoked after createSecret, after setSecret (its JWKS already published), after testSecret.
    for revoke_after in 1..STEPS.len() {
        let stack = Stack::new().await;
        let verify = stack.otp_verify(&[]).await;
        let compromised = kid_of(&login_token(&stack, &verify).await);
        // A day on, the rotation publishes a new key ahead and keeps the active one.
        stack.clock.advance_secs(86_400);
        let token = rotation_token();
        for step in &STEPS[..revoke_after] {
            run_step(&stack, &token, step).await.unwrap();
        }
        let pending: Value = serde_json::from_str(
            stack
                .sm
                .get_secret_value()
                .secret_id(&stack.secret_id)
                .version_id(&token)
                .version_stage("AWSPENDING")
                .send()
                .await
                .unwrap()
                .secret_string()
                .unwrap(),
        )
        .unwrap();
        assert!(kids_in(&pending, "signingKeys").contains(&compromised));

        let out = stack
            .rotation
            .handle(serde_json::from_value(json!({ "revokeKid": compromised })).unwrap())
            .await
            .unwrap();
        let fresh = out["activeKid"].as_str().unwrap().to_owned();
        for step in &STEPS[revoke_after..] {
            run_step(&stack, &token, step).await.unwrap();
        }

        let after = STEPS[revoke_after - 1];
        let auth_kids = kids_in(&auth_doc(&stack).await, "signingKeys");
        let jwks_kids = kids_in(&jwks_doc(&stack).await, "keys");
        for (secret, kids) in [("auth", &auth_kids), ("JWKS", &jwks_kids)] {
            assert!(
                !kids.contains(&compromised),
                "revoked after {after}: back in the {secret} secret: {kids:?}"
            );
            assert!(kids.contains(&fresh), "revoked after {after}: {kids:?}");
        }
        // No version is left AWSPENDING: the next rotation can start.
        let stages = stack
            .sm
            .describe_secret()
            .secret_id(&stack.secret_id)
            .send()
            .await
            .unwrap()
            .version_ids_to_stages
            .unwrap();
        assert!(
            stages
                .values()
                .all(|labels| !labels.iter().any(|l| l == "AWSPENDING")),
            "revoked after {after}: {stages:?}"
        );
        // Tokens are signed with the fresh key and verify with what is served.
        let token = login_token(&stack, &stack.otp_verify(&[]).await).await;
        assert_eq!(kid_of(&token), fresh, "revoked after {after}");
        verify_access_token(&token, &public_keys(&stack).await);
        // The next rotation builds on the revocation, not on the abandoned version.
        stack.rotation.rotate_now(&stack.secret_id).await.unwrap();
        let auth_kids = kids_in(&auth_doc(&stack).await, "signingKeys");
        let jwks_kids = kids_in(&jwks_doc(&stack).await, "keys");
        assert!(!auth_kids.contains(&compromised) && !jwks_kids.contains(&compromised));
        assert!(
            auth_kids.contains(&fresh) && auth_kids.len() == 2,
            "{auth_kids:?}"
        );
        assert_eq!(auth_kids, jwks_kids);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn test_secret_fails_when_a_published_jwk_is_not_its_keys_public_half() {
    let stack = Stack::new().await;
    stack.clock.advance_secs(86_400);
    let token = rotation_token();
    for step in &STEPS[..2] {
        run_step(&stack, &token, step).await.unwrap();
    }
    // The new key's kid stays published, with another key's modulus under it.
    let mut jwks = jwks_doc(&stack).await;
    let other = generate_signing_key().unwrap();
    let new_jwk = jwks["keys"].as_array_mut().unwrap().last_mut().unwrap();
    let kid = new_jwk["kid"].as_str().unwrap().to_owned();
    new_jwk["n"] = other.public_jwk["n"].clone();
    stack
        .sm
        .put_secret_value()
        .secret_id(&stack.jwks_secret_id)
        .secret_string(jwks.to_string())
        .send()
        .await
        .unwrap();
    let current_before = auth_doc(&stack).await;

    let err = run_step(&stack, &token, "testSecret").await.unwrap_err();
    assert!(
        matches!(&err, RotationError::TestFailed(m) if m.contains(&kid) && m.contains("public half")),
        "{err}"
    );
    assert_eq!(auth_doc(&stack).await, current_before);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_template_alarms_on_any_rotation_error_and_refuses_an_issuer_with_a_trailing_slash() {
    use serde_yaml::Value as Yaml;
    let template: Yaml = serde_yaml::from_str(
        &std::fs::read_to_string(foodsave_auth::devstack::template_path()).unwrap(),
    )
    .unwrap();
    let resources = &template["Resources"];
    let reference = |name: &str| serde_yaml::from_str::<Yaml>(&format!("!Ref {name}")).unwrap();
    let alarms: Vec<&Yaml> = resources
        .as_mapping()
        .unwrap()
        .values()
        .filter(|r| r["Type"] == "AWS::CloudWatch::Alarm")
        .map(|r| &r["Properties"])
        .filter(|p| {
            p["Namespace"] == "AWS/Lambda"
                && p["Dimensions"].as_sequence().is_some_and(|dims| {
                    dims.iter().any(|d| {
                        d["Name"] == "FunctionName"
                            && d["Value"] == reference("KeyRotationFunction")
                    })
                })
        })
        .collect();
    let [alarm] = alarms.as_slice() else {
        panic!("one alarm on KeyRotationFunction, found {}", alarms.len());
    };
    assert_eq!(alarm["MetricName"], "Errors");
    assert_eq!(alarm["Statistic"], "Sum");
    assert_eq!(alarm["Period"].as_u64(), Some(300));
    assert_eq!(alarm["EvaluationPeriods"].as_u64(), Some(1));
    // Any error: more than 0.
    assert_eq!(alarm["Threshold"].as_u64(), Some(0));
    assert_eq!(alarm["ComparisonOperator"], "GreaterThanThreshold");
    assert_eq!(alarm["TreatMissingData"], "notBreaching");
    assert_eq!(
        alarm["AlarmActions"],
        resources["Api5xxAlarm"]["Properties"]["AlarmActions"]
    );

    let issuer = &template["Parameters"]["PublicBaseUrl"];
    let pattern = issuer["AllowedPattern"].as_str().unwrap();
    assert!(
        issuer["ConstraintDescription"]
            .as_str()
            .unwrap()
            .contains("trailing slash")
    );
    // CloudFormation matches the whole value (Java regex); Python's fullmatch agrees on
    // this syntax, and Python is on hand wherever the local stack runs.
    let cases = [
        // Empty: the issuer follows from the stack (the domain or the API's own URL).
        ("", true),
        ("https://api.foodsave.kz/api/v1/auth", true),
        ("https://auth.test.foodsave.kz/api/v1/auth", true),
        ("http://127.0.0.1:3000", true),
        ("https://api.foodsave.kz/api/v1/auth/", false),
        ("https://api.foodsave.kz/", false),
        ("https://", false),
        ("https://a b", false),
        ("ftp://api.foodsave.kz", false),
    ];
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import re, sys; print(' '.join(str(re.fullmatch(sys.argv[1], u) is not None) for u in sys.argv[2:]))",
            pattern,
        ])
        .args(cases.iter().map(|(url, _)| *url))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let matched: Vec<bool> = String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .map(|b| b == "True")
        .collect();
    for ((url, allowed), got) in cases.iter().zip(&matched) {
        assert_eq!(got, allowed, "{pattern} on {url:?}");
    }
    assert_eq!(matched.len(), cases.len());
}

/// The function timeout of every request-path function (`Globals.Function.Timeout` in
/// template.yaml): a request that read the secret signs at most this much later.
const FUNCTION_TIMEOUT_SECONDS: u64 = 10;

async fn revoke_kid(stack: &Stack, kid: &str) -> String {
    let out = stack
        .rotation
        .handle(serde_json::from_value(json!({ "revokeKid": kid })).unwrap())
        .await
        .unwrap();
    out["activeKid"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_warm_signer_stops_signing_with_a_revoked_key_within_a_minute() {
    const { assert!(SIGNING_REFRESH_SECONDS + FUNCTION_TIMEOUT_SECONDS <= 60) };
    let stack = Stack::new().await;
    let verify = stack.otp_verify(&[]).await;
    let revoked = kid_of(&login_token(&stack, &verify).await);
    // The secret changes right after this container read it: the worst case.
    let fresh = revoke_kid(&stack, &revoked).await;
    let changed_at = stack.clock_secs();
    stack.clock.advance_secs(SIGNING_REFRESH_SECONDS - 1);
    assert_eq!(kid_of(&login_token(&stack, &verify).await), revoked);
    stack.clock.advance_secs(1);
    assert_eq!(kid_of(&login_token(&stack, &verify).await), fresh);
    let lag = stack.clock_secs() - changed_at;
    println!("revoked kid signed for {lag} s after the secret changed (warm signer)");
    assert!(lag + FUNCTION_TIMEOUT_SECONDS <= 60);
    // A cache read without the signer's method keeps the longer period.
    let plain = stack.secret().await;
    revoke_kid(&stack, &fresh).await;
    stack.clock.advance_secs(SIGNING_REFRESH_SECONDS);
    let kept = plain.get().await;
    assert!(kept.signing_keys.iter().any(|k| k.kid == fresh));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_re_read_keeps_the_cached_secret_and_is_tried_again_seconds_later() {
    let stack = Stack::new().await;
    let p = common::proxied::proxied(&stack, &[]).await;
    let phone = random_phone();
    let first = common::proxied::login(&stack, &p, &phone).await;
    let revoked = kid_of(first.body["accessToken"].as_str().unwrap());
    let fresh = revoke_kid(&stack, &revoked).await;
    stack.clock.advance_secs(SIGNING_REFRESH_SECONDS);
    p.proxy.always("GetSecretValue", Fault::ServerError(500));
    let reads = p.proxy.count("GetSecretValue");
    // Secrets Manager fails: the cached secret still signs (the request is served), and
    // the next request in the same few seconds does not try again.
    for _ in 0..2 {
        let next = common::proxied::login(&stack, &p, &random_phone()).await;
        assert_eq!(kid_of(next.body["accessToken"].as_str().unwrap()), revoked);
    }
    let tried = p.proxy.count("GetSecretValue") - reads;
    assert!(tried >= 1, "the re-read was tried");
    p.proxy.clear();
    let reads = p.proxy.count("GetSecretValue");
    stack.clock.advance_secs(URGENT_REFRESH_SECONDS - 1);
    let still = common::proxied::login(&stack, &p, &random_phone()).await;
    assert_eq!(kid_of(still.body["accessToken"].as_str().unwrap()), revoked);
    assert_eq!(p.proxy.count("GetSecretValue"), reads, "reads are spaced");
    stack.clock.advance_secs(1);
    let next = common::proxied::login(&stack, &p, &random_phone()).await;
    assert_eq!(kid_of(next.body["accessToken"].as_str().unwrap()), fresh);
}

/// How many versions of the auth secret carry AWSCURRENT (Secrets Manager: exactly one).
async fn current_versions(stack: &Stack) -> usize {
    let described = stack
        .sm
        .describe_secret()
        .secret_id(&stack.secret_id)
        .send()
        .await
        .unwrap();
    described
        .version_ids_to_stages()
        .unwrap()
        .values()
        .filter(|labels| labels.iter().any(|l| l == "AWSCURRENT"))
        .count()
}

/// The same 32 bytes in each form the functions accept (standard and URL-safe alphabets,
/// padded or not, with whitespace around); the bytes make `+`, `/` and `=` appear.
fn pepper_forms() -> Vec<String> {
    use base64::Engine;
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let bytes: Vec<u8> = (0u8..32).map(|i| 0xf8 | (i % 8)).collect();
    vec![
        STANDARD.encode(&bytes),
        STANDARD_NO_PAD.encode(&bytes),
        URL_SAFE.encode(&bytes),
        URL_SAFE_NO_PAD.encode(&bytes),
        format!(" {}\n", URL_SAFE.encode(&bytes)),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn rotations_and_revocations_keep_the_pepper_in_every_accepted_form() {
    let stack = Stack::new().await;
    for form in pepper_forms() {
        let mut doc = auth_doc(&stack).await;
        doc["otpPepper"] = json!(form);
        put_auth_doc(&stack, &doc).await;
        // A code sent with this pepper, then a rotation (all four steps) and a revocation.
        let phone = random_phone();
        let send = stack.otp_send(&[]).await;
        let sent = post(&send, "otp-send", &json!({ "phone": phone })).await;
        assert_eq!(sent.status, 200, "{form:?}: {}", sent.body);
        let code = stack.last_code(&phone).await;
        stack.rotation.rotate_now(&stack.secret_id).await.unwrap();
        assert_eq!(auth_doc(&stack).await["otpPepper"], json!(form), "rotation");
        let active = AuthSecret::parse(
            &fetch_secret_string(&stack.sm, &stack.secret_id)
                .await
                .unwrap(),
        )
        .unwrap()
        .active_key(stack.clock.now_millis())
        .unwrap()
        .kid
        .clone();
        revoke_kid(&stack, &active).await;
        assert_eq!(current_versions(&stack).await, 1, "one AWSCURRENT version");
        assert_eq!(
            auth_doc(&stack).await["otpPepper"],
            json!(form),
            "revocation"
        );
        // The code sent before both still works in a container that read the new secret.
        let verify = stack.otp_verify(&[]).await;
        let answer = post(
            &verify,
            "otp-verify",
            &json!({ "phone": phone, "code": code }),
        )
        .await;
        assert_eq!(answer.status, 200, "{form:?}: {}", answer.body);
    }
}

//! The per-request crypto, alone: the floor under each function's CPU per warm request
//! in BENCHMARKS.md. Code HMAC (every send, every verify), refresh-token SHA-256 and
//! successor HMAC with the chain key derived per request (refresh, logout), one RS256
//! access token through the public `JwtIssuer::issue` (verify, refresh), and the check of
//! one by the access-token endpoints against a JWK Set of two keys
//! (`AccessTokenVerifier::verify`, CONTRACT §7). And the worst a
//! request can buy: an invented refresh token naming a real, much-rotated session, which
//! costs the whole bounded walk of its chain (`MAX_CHAIN_WALK`) before it is refused.
//!
//! `make bench` runs it before the cold-start bench, which reads the medians from
//! `target/criterion/crypto/*/new/estimates.json` into BENCHMARKS.md.
//! `cargo bench -p foodsave-auth --bench crypto` alone needs no local AWS stack.

use std::hint::black_box;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use criterion::Criterion;
use foodsave_auth::adapters::access_token::{AccessTokenVerifier, PublicKeys};
use foodsave_auth::adapters::{AuthSecret, JwtIssuer};
use foodsave_auth::clock::SystemClock;
use foodsave_auth::config::TokenConfig;
use foodsave_auth::domain::session::{MAX_CHAIN_WALK, SessionId};
use foodsave_auth::domain::{ChainKey, CodeMac, OtpCode, PhoneNumber, RefreshToken, Session};
use foodsave_auth::keys::{RsaPrivateKey, generate_signing_key};
use foodsave_auth::ports::Clock;
use ring::rand::{SecureRandom, SystemRandom};
use secrecy::{ExposeSecret, SecretSlice};
use serde_json::json;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn main() -> Result<(), BoxError> {
    let rng = SystemRandom::new();
    let mut pepper = vec![0u8; 32];
    rng.fill(&mut pepper).map_err(|_| "rng")?;
    let key = generate_signing_key()?;
    // The auth secret as the rotation writes it (CONTRACT §5), parsed as the signers parse it.
    let secret = AuthSecret::parse(
        &json!({
            "otpPepper": STANDARD.encode(&pepper),
            "signingKeys": [{
                "kid": key.kid,
                "privateKeyPem": key.private_key_pem.expose_secret(),
                "activeFrom": 0,
            }],
        })
        .to_string(),
    )?;
    let pepper = SecretSlice::from(pepper);
    let phone = PhoneNumber::parse("+77001234567").map_err(|_| "phone")?;
    let code = OtpCode::generate(&rng).map_err(|_| "rng")?;
    let sub = foodsave_auth::domain::random_id(&rng).map_err(|_| "rng")?;
    let sid = SessionId::generate(&rng, &sub).map_err(|_| "rng")?;
    let token = RefreshToken::generate(&rng, &sid).map_err(|_| "rng")?;
    let chain_key = ChainKey::derive(&pepper);
    let now = SystemClock.now();
    let session = Session::start(sid, sub, phone.e164().to_owned(), &token, now, 86_400, 3600);
    // A session its owner has rotated far more often than the walk reaches, and a token
    // with its id and bits of the attacker's choosing: every step of the walk is taken.
    let mut rotated = session.clone();
    rotated.chain.generation = 10 * MAX_CHAIN_WALK;
    let invented = RefreshToken::generate(&rng, &rotated.id).map_err(|_| "rng")?;
    if rotated.rotations_behind(&invented, &chain_key).is_some() {
        return Err("an invented token was recognised".into());
    }
    let issuer = JwtIssuer::new(TokenConfig::load(&|name: &str| {
        (name == "JWT_ISSUER").then(|| "https://api.foodsave.kz/api/v1/auth".to_owned())
    })?);
    issuer.issue(&secret, &rng, now, &session)?;

    // The JWK Set as the rotation publishes it while a new key waits to sign: two keys.
    // The token carries the claims the issuer writes (CONTRACT §4), signed by the first.
    let next = generate_signing_key()?;
    let public_keys =
        PublicKeys::parse(&json!({"keys": [key.public_jwk, next.public_jwk]}).to_string())?;
    let header = json!({"alg": "RS256", "typ": "at+jwt", "kid": key.kid});
    let iat = now.as_secs();
    let claims = json!({
        "iss": "https://api.foodsave.kz/api/v1/auth",
        "aud": "foodsave",
        "sub": session.sub,
        "phone_number": phone.e164(),
        "sid": session.id.as_str(),
        "iat": iat,
        "exp": iat + 3600,
        "jti": "bench-jti",
        "client_id": "foodsave-app",
        "auth_time": iat,
    });
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature = RsaPrivateKey::from_pem(key.private_key_pem.expose_secret())?
        .sign_rs256(&rng, input.as_bytes())?;
    let authorization = format!("Bearer {input}.{}", URL_SAFE_NO_PAD.encode(signature));
    let verifier = AccessTokenVerifier::new("https://api.foodsave.kz/api/v1/auth", "foodsave");
    verifier
        .verify(&public_keys, Some(&authorization), now)
        .map_err(|refused| refused.0)?;

    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    let mut group = c.benchmark_group("crypto");
    group.bench_function("code_hmac", |b| {
        b.iter(|| CodeMac::compute(black_box(&pepper), black_box(&phone), black_box(&code)));
    });
    group.bench_function("refresh_token_hash", |b| {
        b.iter(|| black_box(&token).hash());
    });
    group.bench_function("chain_key_derive", |b| {
        b.iter(|| ChainKey::derive(black_box(&pepper)));
    });
    group.bench_function("refresh_token_successor", |b| {
        b.iter(|| black_box(&token).successor(black_box(&chain_key)));
    });
    group.bench_function("invented_refresh_token_walk", |b| {
        b.iter(|| black_box(&rotated).rotations_behind(black_box(&invented), &chain_key));
    });
    group.bench_function("rs256_access_token", |b| {
        b.iter(|| issuer.issue(black_box(&secret), &rng, now, black_box(&session)));
    });
    group.bench_function("access_token_verify", |b| {
        b.iter(|| {
            verifier.verify(
                black_box(&public_keys),
                black_box(Some(authorization.as_str())),
                now,
            )
        });
    });
    group.finish();
    c.final_summary();
    Ok(())
}

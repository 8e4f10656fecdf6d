//! Cold starts, measured: every release function binary is started fresh for each run
//! against the Lambda Runtime API driver and the local AWS stack, as Lambda starts a new
//! container. Reports init (process start → first poll: SDK config, secret read, client
//! set-up), the first request's handling time, and peak resident memory.
//!
//! `make bench` (builds the release binaries, starts and stops the local stack).
//! BENCH_RUNS sets the runs per function (default 10).

use std::sync::Arc;
use std::time::Duration;

use foodsave_auth::adapters::secrets::fetch_secret_string;
use foodsave_auth::adapters::{AuthSecret, DynamoDbStore};
use foodsave_auth::clock::SystemClock;
use foodsave_auth::devstack;
use foodsave_auth::devstack::lambda_runtime::{Posted, invoke, profile_binary};
use foodsave_auth::devstack::seed::{function_env, seed_code, seed_session};
use foodsave_auth::domain::session::SessionId;
use foodsave_auth::domain::{OtpCode, PhoneNumber, RefreshToken, random_id};
use foodsave_auth::ports::Clock;
use ring::rand::{SecureRandom, SystemRandom};
use serde_json::{Value, json};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn event(name: &str, body: Option<Value>) -> Result<Value, BoxError> {
    let path = devstack::workspace_root()
        .join("events")
        .join(format!("{name}.json"));
    let mut event: Value = serde_json::from_str(&std::fs::read_to_string(path)?)?;
    if let (Some(body), Some(fields)) = (body, event.as_object_mut()) {
        fields.insert("body".into(), json!(body.to_string()));
    }
    Ok(event)
}

fn random_phone(rng: &SystemRandom) -> Result<PhoneNumber, BoxError> {
    let mut bytes = [0u8; 8];
    rng.fill(&mut bytes).map_err(|_| "rng")?;
    let phone = format!("+77{:09}", u64::from_le_bytes(bytes) % 1_000_000_000);
    PhoneNumber::parse(&phone).map_err(|_| "phone".into())
}

/// A fresh live session and its refresh token, stored.
async fn seeded_token(store: &DynamoDbStore, rng: &SystemRandom) -> Result<String, BoxError> {
    let sid = SessionId::generate(rng).map_err(|_| "rng")?;
    let token = RefreshToken::generate(rng, &sid).map_err(|_| "rng")?;
    seed_session(store, &token, SystemClock.now()).await?;
    Ok(token.expose().to_owned())
}

fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs.get(xs.len() / 2).copied().unwrap_or_default()
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(10);
    let rng = SystemRandom::new();
    let aws = devstack::sdk_config().await;
    let ddb = aws_sdk_dynamodb::Client::new(&aws);
    let sm = aws_sdk_secretsmanager::Client::new(&aws);
    let suffix = random_id(&rng).map_err(|_| "rng")?.replace(['-', '_'], "x");
    let (table, auth, jwks) = (
        format!("bench-{suffix}"),
        format!("bench-auth-{suffix}"),
        format!("bench-jwks-{suffix}"),
    );
    devstack::create_table(&ddb, &table).await?;
    devstack::create_secrets(&sm, &auth, &jwks, Arc::new(SystemClock)).await?;
    let secret = AuthSecret::parse(&fetch_secret_string(&sm, &auth).await?)?;
    let pepper = secret.pepper().ok_or("no pepper")?;
    let store = DynamoDbStore::new(ddb.clone(), &table);
    let env = function_env(&table, &auth, &jwks);

    println!("cold starts, {runs} fresh processes per function (release build, local AWS stack)");
    println!(
        "{:<14} {:>6} {:>12} {:>12} {:>14} {:>14} {:>10}",
        "function", "status", "init p50", "init max", "1st req p50", "1st req max", "peak RSS"
    );
    for function in ["otp-send", "otp-verify", "token-refresh", "logout", "jwks"] {
        let binary = profile_binary(function, "release")?;
        let (mut inits, mut handles, mut rss, mut statuses) = (vec![], vec![], 0u64, vec![]);
        for _ in 0..runs {
            let ev = match function {
                "otp-send" => event(
                    "otp-send",
                    Some(json!({ "phone": random_phone(&rng)?.e164() })),
                )?,
                "otp-verify" => {
                    let phone = random_phone(&rng)?;
                    let code = OtpCode::parse("123456").map_err(|_| "code")?;
                    seed_code(&store, pepper, &phone, &code, SystemClock.now()).await?;
                    event(
                        "otp-verify",
                        Some(json!({ "phone": phone.e164(), "code": "123456" })),
                    )?
                }
                "token-refresh" | "logout" => {
                    let token = seeded_token(&store, &rng).await?;
                    event(function, Some(json!({ "refreshToken": token })))?
                }
                _ => event("jwks", None)?,
            };
            let run = invoke(&binary, ev, &env).await?;
            let status = match &run.posted {
                Posted::Response(payload) => payload
                    .get("statusCode")
                    .and_then(Value::as_u64)
                    .unwrap_or(0),
                Posted::Error(_) | Posted::TimedOut => 0,
            };
            statuses.push(status);
            inits.push(run.init);
            handles.push(run.handle);
            rss = rss.max(run.peak_rss_kib.unwrap_or(0));
        }
        statuses.dedup();
        let status = statuses
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join("/");
        let max = |xs: &[Duration]| xs.iter().max().copied().unwrap_or_default();
        println!(
            "{:<14} {:>6} {:>10.1}ms {:>10.1}ms {:>12.1}ms {:>12.1}ms {:>7.1}MiB",
            function,
            status,
            median(inits.clone()).as_secs_f64() * 1e3,
            max(&inits).as_secs_f64() * 1e3,
            median(handles.clone()).as_secs_f64() * 1e3,
            max(&handles).as_secs_f64() * 1e3,
            rss as f64 / 1024.0,
        );
    }
    Ok(())
}

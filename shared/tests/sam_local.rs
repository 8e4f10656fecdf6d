//! The functions in their Lambda containers, through the SAM CLI itself on this machine's
//! Docker engine: `sam local invoke` of every file in `events/`, with the outcome
//! `events.rs` expects of it, and the whole login flow over HTTP through
//! `sam local start-api` (SAM's API Gateway emulation, HTTP API payload 2.0), the
//! access-token routes included: the session list and the account deletion.
//!
//! Ignored in the plain `cargo test` run: they need Docker, the base image and the
//! `sam build` output, and moto where the containers can reach it. `make test` runs them as
//! `local/sam-local.sh run cargo test -p foodsave-auth --test sam_local -- --ignored`
//! (the script starts moto on the Docker bridge's host address and exports
//! `AWS_ENDPOINT_URL`, `SAM_LOCAL_TEMPLATE` and `SAM_LOCAL_ARCH`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use common::{body_field, random_suffix, sample_event, seed_sample_events};
use foodsave_auth::adapters::secrets::fetch_secret_string;
use foodsave_auth::adapters::{AuthSecret, DynamoDbStore};
use foodsave_auth::clock::SystemClock;
use foodsave_auth::devstack;
use foodsave_auth::devstack::lambda_runtime::function_of;
use foodsave_auth::devstack::seed::function_env;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Status(u16),
    Succeeds,
    Fails,
    Relays,
}

/// The expectations of `events.rs` (its `EXPECTED` table, read from its source so that
/// the two tests cannot drift apart), in its order.
fn expected_outcomes() -> Vec<(String, Outcome)> {
    let source = include_str!("events.rs");
    let table = source
        .split_once("const EXPECTED")
        .expect("events.rs has no EXPECTED table")
        .1;
    let table = table.split_once("];").unwrap().0;
    let mut rows = Vec::new();
    for line in table.lines().map(str::trim) {
        let Some(rest) = line.strip_prefix("(\"") else {
            continue;
        };
        let (name, rest) = rest.split_once('"').unwrap();
        let outcome = rest
            .split_once("Outcome::")
            .unwrap_or_else(|| panic!("events.rs: no outcome in {line}"))
            .1;
        let outcome = if let Some(status) = outcome.strip_prefix("Status(") {
            Outcome::Status(status.split_once(')').unwrap().0.parse().unwrap())
        } else if outcome.starts_with("Succeeds") {
            Outcome::Succeeds
        } else if outcome.starts_with("Fails") {
            Outcome::Fails
        } else if outcome.starts_with("Relays") {
            Outcome::Relays
        } else {
            panic!("events.rs: unknown outcome in {line}")
        };
        rows.push((name.to_owned(), outcome));
    }
    rows
}

fn workspace() -> PathBuf {
    devstack::workspace_root().canonicalize().unwrap()
}

fn required_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run under local/sam-local.sh run (make test does)")
    })
}

/// `otp-send` → `OtpSendFunction`, the template's logical id.
fn logical_id(function: &str) -> String {
    let mut id: String = function
        .split('-')
        .map(|part| {
            let mut chars = part.chars();
            chars
                .next()
                .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
                .unwrap_or_default()
        })
        .collect();
    id.push_str("Function");
    id
}

/// What SAM (1.170.0: `samcli/local/`) and its Runtime Interface Emulator print around a
/// function's own output, including while the first invocations on a machine build the
/// invoke image together.
fn is_sam_line(line: &str) -> bool {
    const PREFIXES: [&str; 23] = [
        "Invoking ",
        "Requested to skip pulling images",
        "Mounting ",
        "SAM_CONTAINER_ID:",
        "START RequestId:",
        "END RequestId:",
        "REPORT RequestId:",
        "Local image",
        "Using local image",
        "Building image",
        "Removing rapid images",
        "Another process is building",
        "Image build completed",
        "Waiting for concurrent",
        "Timeout waiting for concurrent",
        "Concurrent build failed",
        "Expected image not found",
        "Removing stale",
        "Fetching ",
        "Failed to download",
        "Decompressing ",
        "No current session found",
        "Finch reported",
    ];
    PREFIXES.iter().any(|p| line.starts_with(p))
        || line.contains("(rapid)")
        || line.ends_with("lock appears stale, proceeding")
}

struct Invocation {
    payload: Value,
    stderr: String,
    elapsed: Duration,
}

/// `sam local invoke` of `events/<event>.json`, as a user would type it.
async fn sam_invoke(event: &str, env_vars: &str) -> Invocation {
    let function =
        function_of(event).unwrap_or_else(|| panic!("events/{event}.json names no function"));
    let started = Instant::now();
    let output = Command::new("sam")
        .current_dir(workspace())
        .args(["local", "invoke", &logical_id(function)])
        .args(["-e", &format!("events/{event}.json")])
        .args(["-t", &required_env("SAM_LOCAL_TEMPLATE")])
        .args(["--env-vars", env_vars])
        .arg("--skip-pull-image")
        .args([
            "--parameter-overrides",
            &format!("Architecture={}", required_env("SAM_LOCAL_ARCH")),
        ])
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .expect("sam is not on PATH: run under local/sam-local.sh run");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert!(
        output.status.success(),
        "sam local invoke events/{event}.json: {}\n{stdout}\n{stderr}",
        output.status
    );
    let payload = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!("sam local invoke events/{event}.json printed no JSON payload ({e}):\n{stdout}\n{stderr}")
    });
    Invocation {
        payload,
        stderr,
        elapsed: started.elapsed(),
    }
}

/// Checks the payload and the output; whether SAM showed the end of the invocation.
fn check(name: &str, expected: Outcome, run: &Invocation, secrets: &[String]) -> bool {
    let payload = &run.payload;
    let logs = &run.stderr;
    match expected {
        Outcome::Status(status) => {
            assert_eq!(
                payload["statusCode"], status,
                "events/{name}.json: {payload}\n{logs}"
            );
            let body: Value =
                serde_json::from_str(payload["body"].as_str().unwrap_or("null")).unwrap();
            if status == 200 && (name == "otp-verify" || name == "token-refresh") {
                assert_eq!(body["tokenType"], "Bearer", "{name}");
                for issued in ["refreshToken", "accessToken"] {
                    let token = body[issued].as_str().unwrap();
                    assert!(
                        !logs.contains(token),
                        "{name} logged the {issued} it issued"
                    );
                }
            }
            if status >= 400 {
                assert!(
                    body["code"].is_string() && body["message"].is_string(),
                    "{name}: {body}"
                );
            }
        }
        Outcome::Succeeds => assert_eq!(payload["ok"], json!(true), "{name}: {payload}\n{logs}"),
        Outcome::Fails => {
            assert!(
                payload["errorMessage"].is_string() && payload.get("statusCode").is_none(),
                "{name}: expected an invocation error, got {payload}\n{logs}"
            );
        }
        Outcome::Relays => assert_eq!(payload["failed"], json!(0), "{name}: {payload}\n{logs}"),
    }
    // What the function prints (the emulator starts the runtime at the first invoke, so
    // its init is in there too) is JSON lines: the template's LoggingConfig (LogFormat
    // JSON), which SAM passes on as AWS_LAMBDA_LOG_FORMAT. One exception: after END, SAM
    // stops the container, and a runtime already waiting on /invocation/next may print
    // the Runtime API's dropped connection as it exits (Lambda freezes the sandbox
    // instead). Rust prints that line in many small writes ("Error: ", then the error's
    // Debug piece by piece; seen with strace), so the stop can cut it anywhere: any
    // prefix of it is that line. SAM streams a container's output from when it attaches,
    // so under load it can miss some or all of it (START first): what it shows is
    // checked, and the test requires that it showed the logs of at least one invocation.
    const EXIT_LINE: &str =
        "Error: hyper_util::client::legacy::Error(SendRequest, hyper::Error(IncompleteMessage))";
    for line in logs.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if !is_sam_line(line) {
            assert!(
                serde_json::from_str::<Value>(line).is_ok()
                    || (line.starts_with("Error:") && EXIT_LINE.starts_with(line)),
                "{name}: not a JSON log line: {line}"
            );
        }
    }
    // No code, token or full phone number anywhere in the output.
    for secret in secrets {
        assert!(
            !logs.contains(secret.as_str()),
            "{name} logged a code or token"
        );
    }
    assert!(
        !logs.contains("+77001234567"),
        "{name} logged a full phone number"
    );
    logs.contains("END RequestId:")
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs Docker, the base image and sam build output: run by local/sam-local.sh (make test)"]
async fn every_sample_event_through_sam_local_invoke_has_the_outcome_events_rs_expects() {
    let expected = expected_outcomes();
    let mut on_disk: Vec<String> = std::fs::read_dir(workspace().join("events"))
        .unwrap()
        .filter_map(|e| {
            e.ok()?
                .file_name()
                .to_str()?
                .strip_suffix(".json")
                .map(str::to_owned)
        })
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = expected.iter().map(|(n, _)| n.clone()).collect();
    listed.sort();
    assert_eq!(on_disk, listed, "events/ and events.rs's EXPECTED differ");

    // The stack as CloudFormation would leave it: the table, the secrets after the first
    // rotation (the auth secret's name is the one events/key-rotation.json rotates), and
    // the state the sample events assume.
    let endpoint = required_env("AWS_ENDPOINT_URL");
    let aws = devstack::sdk_config().await;
    let ddb = aws_sdk_dynamodb::Client::new(&aws);
    let sm = aws_sdk_secretsmanager::Client::new(&aws);
    let suffix = random_suffix();
    let table = format!("auth-sam-events-{suffix}");
    devstack::create_table(&ddb, &table).await.unwrap();
    let auth_secret = sample_event("key-rotation")["SecretId"]
        .as_str()
        .unwrap()
        .to_owned();
    let jwks_secret = format!("{auth_secret}-jwks-{suffix}");
    devstack::create_secrets(&sm, &auth_secret, &jwks_secret, Arc::new(SystemClock))
        .await
        .unwrap();
    let secret = AuthSecret::parse(&fetch_secret_string(&sm, &auth_secret).await.unwrap()).unwrap();
    seed_sample_events(
        &DynamoDbStore::new(ddb.clone(), &table),
        &secret,
        &sm,
        &jwks_secret,
    )
    .await;

    // --env-vars: what CloudFormation resolves (the table and secret names, the issuer),
    // plus where AWS is. SAM applies a value only to variables the template declares.
    let mut parameters: BTreeMap<String, String> = function_env(&table, &auth_secret, &jwks_secret)
        .into_iter()
        .collect();
    parameters.insert("AWS_ENDPOINT_URL".into(), endpoint);
    // The functions put their events on a local bus (CONTRACT §7).
    let bus = format!("auth-sam-events-{suffix}");
    devstack::create_event_tap(&aws, &bus).await.unwrap();
    parameters.insert("EVENT_BUS_NAME".into(), bus);
    let state = PathBuf::from(required_env("SAM_LOCAL_STATE"));
    let env_vars = state.join(format!("events-env-{suffix}.json"));
    std::fs::write(
        &env_vars,
        serde_json::to_vec_pretty(&json!({ "Parameters": parameters })).unwrap(),
    )
    .unwrap();
    let env_vars = env_vars.to_str().unwrap().to_owned();

    let mut secrets: Vec<String> = vec!["123456".into(), "654321".into()];
    for event in ["token-refresh", "logout"] {
        secrets.push(body_field(&sample_event(event), "refreshToken"));
    }
    for event in [
        "sessions",
        "account-delete",
        "account-delete-reauth-required",
    ] {
        let header = sample_event(event)["headers"]["authorization"].clone();
        secrets.push(
            header
                .as_str()
                .unwrap()
                .trim_start_matches("Bearer ")
                .to_owned(),
        );
    }

    // The events of one function run in events.rs's order (the fourth send of a phone is
    // the rate-limited one); different functions share no state, so they run side by
    // side, and the key rotation, which rewrites the auth secret, runs last.
    let mut by_function: BTreeMap<&'static str, Vec<(String, Outcome)>> = BTreeMap::new();
    for (name, outcome) in &expected {
        by_function
            .entry(function_of(name).unwrap())
            .or_default()
            .push((name.clone(), *outcome));
    }
    let rotation = by_function.remove("key-rotation").unwrap_or_default();
    let started = Instant::now();
    let mut groups = Vec::new();
    for (_, events) in by_function {
        let env_vars = env_vars.clone();
        let secrets = secrets.clone();
        groups.push(tokio::spawn(async move {
            let mut logged = 0;
            for (name, outcome) in events {
                let run = sam_invoke(&name, &env_vars).await;
                logged += usize::from(check(&name, outcome, &run, &secrets));
                eprintln!(
                    "sam local invoke events/{name}.json: ok ({:.1} s)",
                    run.elapsed.as_secs_f64()
                );
            }
            logged
        }));
    }
    let mut logged = 0;
    for group in groups {
        logged += group.await.unwrap();
    }
    for (name, outcome) in rotation {
        let run = sam_invoke(&name, &env_vars).await;
        logged += usize::from(check(&name, outcome, &run, &secrets));
        eprintln!(
            "sam local invoke events/{name}.json: ok ({:.1} s)",
            run.elapsed.as_secs_f64()
        );
    }
    eprintln!(
        "sam local invoke: {} events in {:.1} s (SAM showed the logs of {logged})",
        expected.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(logged > 0, "SAM showed no invocation's logs");
}

/// `local/sam-local.sh start-api` (what `make start-api` runs) as a child: stopped with
/// SIGTERM, as Ctrl-C would, when dropped, so that it stops SAM, its containers and moto.
struct StartApi {
    child: tokio::process::Child,
    output: Arc<Mutex<String>>,
}

impl StartApi {
    fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    /// The first line of the script's output that starts with `prefix`, waiting for it.
    async fn line(&mut self, prefix: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self.output().lines().find(|l| l.starts_with(prefix)) {
                return line.to_owned();
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "sam-local.sh start-api exited ({status}):\n{}",
                    self.output()
                );
            }
            assert!(
                Instant::now() < deadline,
                "no line starting {prefix:?} in {timeout:?}:\n{}",
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        if let Ok(Some(status)) = self.child.try_wait() {
            return Some(status);
        }
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.start_kill();
        None
    }
}

impl Drop for StartApi {
    fn drop(&mut self) {
        self.terminate();
    }
}

struct Response {
    status: u16,
    headers: String,
    body: Value,
}

/// One HTTP/1.1 request to SAM's local gateway (`Connection: close`).
async fn http(base: &str, method: &str, path: &str, body: Option<Value>) -> Response {
    request(base, method, path, body, None).await
}

/// The same with `Authorization: Bearer <access_token>` (the access-token endpoints,
/// CONTRACT §7).
async fn http_bearer(
    base: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
    access_token: &str,
) -> Response {
    request(base, method, path, body, Some(access_token)).await
}

async fn request(
    base: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
    access_token: Option<&str>,
) -> Response {
    let authority = base
        .strip_prefix("http://")
        .unwrap()
        .split('/')
        .next()
        .unwrap();
    let base_path = &base["http://".len() + authority.len()..];
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let authorization = access_token
        .map(|token| format!("Authorization: Bearer {token}\r\n"))
        .unwrap_or_default();
    let mut stream = tokio::net::TcpStream::connect(authority).await.unwrap();
    let request = format!(
        "{method} {base_path}{path} HTTP/1.1\r\nHost: {authority}\r\n{authorization}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let raw = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{method} {path}: no HTTP status in {raw:?}"));
    let body = serde_json::from_str(body).unwrap_or(Value::Null);
    Response {
        status,
        headers: head.to_ascii_lowercase(),
        body,
    }
}

/// `POST /otp/send` for `phone`, and the code of the SMS moto "delivered" for it.
async fn send_code(base: &str, moto: &str, phone: &str, api: &StartApi) -> String {
    let sent = http(base, "POST", "/otp/send", Some(json!({ "phone": phone }))).await;
    assert_eq!(sent.status, 200, "{:?}\n{}", sent.body, api.output());
    assert_eq!(sent.body["message"], "OTP sent");
    assert!(
        sent.headers.contains("cache-control: no-store"),
        "{}",
        sent.headers
    );
    let sms = devstack::sent_sms(moto).await.unwrap();
    let text = &sms
        .iter()
        .rev()
        .find(|m| m.phone_number == phone)
        .unwrap_or_else(|| panic!("no SMS to {phone} in moto: {sms:?}"))
        .message;
    text.split(|c: char| !c.is_ascii_digit())
        .find(|w| w.len() == 6)
        .unwrap_or_else(|| panic!("no code in {text:?}"))
        .to_owned()
}

fn jwt_part(token: &str, index: usize) -> Value {
    let part = token.split('.').nth(index).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs Docker, the base image and sam build output: run by local/sam-local.sh (make test)"]
async fn the_login_flow_through_sam_local_start_api() {
    let started = Instant::now();
    let mut child = Command::new(workspace().join("local/sam-local.sh"))
        .arg("start-api")
        .current_dir(workspace())
        .env("PORT", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let output = Arc::new(Mutex::new(String::new()));
    for stream in [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
    ]
    .into_iter()
    .flatten()
    {
        let output = output.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stream).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let mut out = output.lock().unwrap();
                out.push_str(&line);
                out.push('\n');
            }
        });
    }
    let mut api = StartApi { child, output };

    let moto = api
        .line("local AWS stack: ", Duration::from_secs(120))
        .await;
    let moto = moto
        .trim_start_matches("local AWS stack: ")
        .split(' ')
        .next()
        .unwrap()
        .to_owned();
    let banner = "FoodSave Auth API (sam local start-api): ";
    let base = api.line(banner, Duration::from_secs(180)).await;
    let base = base.trim_start_matches(banner).to_owned();

    // Ready when the gateway answers (the warm containers are started before it listens).
    let deadline = Instant::now() + Duration::from_secs(120);
    let discovery = loop {
        let authority = base
            .trim_start_matches("http://")
            .split('/')
            .next()
            .unwrap();
        if tokio::net::TcpStream::connect(authority).await.is_ok() {
            let r = http(&base, "GET", "/.well-known/openid-configuration", None).await;
            if r.status == 200 {
                break r;
            }
        }
        if let Some(status) = api.child.try_wait().unwrap() {
            panic!(
                "sam-local.sh start-api exited ({status}):\n{}",
                api.output()
            );
        }
        assert!(
            Instant::now() < deadline,
            "start-api not ready:\n{}",
            api.output()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let ready = started.elapsed();
    assert_eq!(
        discovery.body["issuer"],
        base.as_str(),
        "{:?}",
        discovery.body
    );
    let jwks = http(&base, "GET", "/.well-known/jwks.json", None).await;
    assert_eq!(jwks.status, 200, "{:?}", jwks.body);
    let kids: Vec<&str> = jwks.body["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|k| k["kid"].as_str())
        .collect();
    assert!(
        !kids.is_empty(),
        "empty JWKS after the rotation: {:?}",
        jwks.body
    );

    // send → the SMS moto "delivered" → verify → the session list → refresh → logout →
    // refresh fails; then a second login, whose access token deletes the account.
    let phone = "+77001234567";
    let code = send_code(&base, &moto, phone, &api).await;
    let verified = http(
        &base,
        "POST",
        "/otp/verify",
        Some(json!({ "phone": phone, "code": code })),
    )
    .await;
    assert_eq!(verified.status, 200, "{:?}", verified.body);
    assert_eq!(verified.body["tokenType"], "Bearer");
    let access = verified.body["accessToken"].as_str().unwrap();
    assert_eq!(jwt_part(access, 1)["iss"], base.as_str());
    let kid = jwt_part(access, 0)["kid"].as_str().unwrap().to_owned();
    assert!(
        kids.contains(&kid.as_str()),
        "kid {kid} not in the JWKS {kids:?}"
    );
    let first = verified.body["refreshToken"].as_str().unwrap().to_owned();

    // The access-token routes are served with no authorizer in front (CONTRACT §7): the
    // function checks the token, and answers the contract's 401 without one.
    let listed = http_bearer(&base, "GET", "/sessions", None, access).await;
    assert_eq!(listed.status, 200, "{:?}\n{}", listed.body, api.output());
    let sessions = listed.body["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 1, "{:?}", listed.body);
    assert_eq!(sessions[0]["id"], jwt_part(access, 1)["sid"]);
    assert_eq!(sessions[0]["current"], true, "{:?}", listed.body);
    assert!(
        listed.headers.contains("cache-control: no-store"),
        "{}",
        listed.headers
    );
    let anonymous = http(&base, "GET", "/sessions", None).await;
    assert_eq!(anonymous.status, 401, "{:?}", anonymous.body);
    assert_eq!(anonymous.body["code"], "INVALID_ACCESS_TOKEN");
    assert!(
        anonymous.headers.contains("www-authenticate: bearer"),
        "{}",
        anonymous.headers
    );

    let refreshed = http(
        &base,
        "POST",
        "/token/refresh",
        Some(json!({ "refreshToken": first })),
    )
    .await;
    assert_eq!(refreshed.status, 200, "{:?}", refreshed.body);
    let second = refreshed.body["refreshToken"].as_str().unwrap().to_owned();
    assert_ne!(first, second, "the refresh token was not rotated");

    let logout = http(
        &base,
        "POST",
        "/logout",
        Some(json!({ "refreshToken": second })),
    )
    .await;
    assert_eq!(logout.status, 200, "{:?}", logout.body);
    assert_eq!(logout.body, json!({}));

    let after = http(
        &base,
        "POST",
        "/token/refresh",
        Some(json!({ "refreshToken": second })),
    )
    .await;
    assert_eq!(after.status, 401, "refresh after logout: {:?}", after.body);
    assert!(after.body["code"].is_string(), "{:?}", after.body);

    // The deletion needs a recent verify (REAUTH_MAX_AGE_SECONDS): log in again.
    let code = send_code(&base, &moto, phone, &api).await;
    let again = http(
        &base,
        "POST",
        "/otp/verify",
        Some(json!({ "phone": phone, "code": code })),
    )
    .await;
    assert_eq!(again.status, 200, "{:?}", again.body);
    let access = again.body["accessToken"].as_str().unwrap();
    let deleted = http_bearer(&base, "POST", "/account/delete", Some(json!({})), access).await;
    assert_eq!(deleted.status, 200, "{:?}\n{}", deleted.body, api.output());
    assert_eq!(deleted.body, json!({}));
    let gone = http_bearer(&base, "GET", "/sessions", None, access).await;
    assert_eq!(gone.status, 401, "after the deletion: {:?}", gone.body);
    assert_eq!(gone.body["code"], "INVALID_ACCESS_TOKEN");
    let flow = started.elapsed() - ready;

    // Stopped as Ctrl-C stops it: SAM removes its warm containers, the script stops moto.
    let status = api.terminate();
    assert!(status.is_some(), "sam-local.sh did not stop in 60 s");
    let leftovers = std::process::Command::new("docker")
        .args([
            "ps",
            "-aq",
            "--filter",
            "label=sam.cli.container.type=lambda",
        ])
        .output()
        .unwrap();
    let mut ours = Vec::new();
    for id in String::from_utf8_lossy(&leftovers.stdout).split_whitespace() {
        let env = std::process::Command::new("docker")
            .args([
                "inspect",
                "--format",
                "{{range .Config.Env}}{{println .}}{{end}}",
                id,
            ])
            .output()
            .unwrap();
        if String::from_utf8_lossy(&env.stdout)
            .lines()
            .any(|l| l == format!("AWS_ENDPOINT_URL={moto}"))
        {
            ours.push(id.to_owned());
        }
    }
    assert!(ours.is_empty(), "containers left running: {ours:?}");
    eprintln!(
        "sam local start-api: ready in {:.1} s, flow in {:.1} s, stopped after {:.1} s in all",
        ready.as_secs_f64(),
        flow.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}

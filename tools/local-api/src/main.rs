//! `make dev`: the whole API on http://127.0.0.1:3000 (or `PORT`), on the real paths,
//! over the local AWS stack. Each HTTP request becomes the API Gateway HTTP API (2.0)
//! event Lambda would receive, and goes through the same `lambda_http` parsing and the
//! same handler as in production. SMS that moto accepts are printed to the console.
//! `/api/v1/auth/openapi.yaml` is the committed OpenAPI document, `/api/v1/auth/docs`
//! shows it in Swagger UI (`docs.rs`).
//!
//! The functions put their account and session events (CONTRACT §7) on a local bus, and a
//! queue subscribed to it shows each one on the console; the event relay runs every
//! minute as its schedule would, its binary under the Lambda Runtime API.
//!
//! `local-api --invoke events/<name>.json` instead runs that one event through its
//! function's binary and the Lambda Runtime API, the Docker-free counterpart of
//! `sam local invoke -e events/<name>.json <Function>`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use base64::Engine;
use foodsave_auth::api::Endpoint;
use foodsave_auth::api::account_delete::AccountDelete;
use foodsave_auth::api::jwks::Jwks;
use foodsave_auth::api::logout::Logout;
use foodsave_auth::api::otp_send::OtpSend;
use foodsave_auth::api::otp_verify::OtpVerify;
use foodsave_auth::api::sessions::Sessions;
use foodsave_auth::api::token_refresh::TokenRefresh;
use foodsave_auth::clock::SystemClock;
use foodsave_auth::devstack;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::Mutex;

mod docs;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const TABLE: &str = "foodsave-auth-local";
const AUTH_SECRET: &str = "foodsave-auth-local";
const JWKS_SECRET: &str = "foodsave-auth-local-jwks";

struct Gateway {
    send: OtpSend,
    verify: OtpVerify,
    refresh: TokenRefresh,
    logout: Logout,
    /// Both `/sessions` routes, told apart by the end of the path (CONTRACT §6).
    sessions: Sessions,
    account_delete: AccountDelete,
    jwks: Jwks,
    endpoint_url: String,
    sms_seen: Mutex<usize>,
    aws: aws_config::SdkConfig,
    /// The queue subscribed to the event bus.
    tap: String,
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    foodsave_auth::telemetry::init();
    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(3000);
    let endpoint_url = devstack::endpoint_url()?;
    let aws = devstack::sdk_config().await;
    let args: Vec<String> = std::env::args().skip(1).collect();

    devstack::create_table(&aws_sdk_dynamodb::Client::new(&aws), TABLE).await?;
    let clock = Arc::new(SystemClock);
    // Keys the way a deploy gets them: the rotation function's four steps.
    devstack::create_secrets(
        &aws_sdk_secretsmanager::Client::new(&aws),
        AUTH_SECRET,
        JWKS_SECRET,
        clock.clone(),
    )
    .await?;

    let base = format!("http://127.0.0.1:{port}/api/v1/auth");
    let mut vars: HashMap<String, String> = std::env::vars().collect();
    vars.entry("TABLE_NAME".into())
        .or_insert_with(|| TABLE.into());
    vars.entry("AUTH_SECRET_ID".into())
        .or_insert_with(|| AUTH_SECRET.into());
    vars.entry("JWKS_SECRET_ID".into())
        .or_insert_with(|| JWKS_SECRET.into());
    vars.entry("JWT_ISSUER".into())
        .or_insert_with(|| base.clone());
    let bus = vars
        .entry("EVENT_BUS_NAME".into())
        .or_insert_with(|| TABLE.into())
        .clone();
    let tap = devstack::create_event_tap(&aws, &bus).await?;

    if let [flag, event_file] = args.as_slice()
        && flag == "--invoke"
    {
        return invoke_event(event_file, &vars, &endpoint_url).await;
    }
    if !args.is_empty() {
        return Err("usage: local-api [--invoke events/<name>.json]".into());
    }
    let relay_env = function_env(&vars);
    let env = move |name: &str| vars.get(name).cloned();

    let gateway = Arc::new(Gateway {
        send: OtpSend::init(&aws, &env, clock.clone()).await?,
        verify: OtpVerify::init(&aws, &env, clock.clone()).await?,
        refresh: TokenRefresh::init(&aws, &env, clock.clone()).await?,
        logout: Logout::init(&aws, &env, clock.clone()).await?,
        sessions: Sessions::init(&aws, &env, clock.clone()).await?,
        account_delete: AccountDelete::init(&aws, &env, clock.clone()).await?,
        jwks: Jwks::init(&aws, &env, clock).await?,
        endpoint_url,
        sms_seen: Mutex::new(0),
        aws: aws.clone(),
        tap,
    });
    tokio::spawn(relay_every_minute(relay_env));
    // Events put outside a request (the relay, the operator tool) show up too.
    let watcher = gateway.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(std::time::Duration::from_secs(2));
        loop {
            every.tick().await;
            watcher.print_new_events().await;
        }
    });

    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await?;
    println!("FoodSave Auth local API on {base}");
    // The access-token routes take `Authorization: Bearer <accessToken>`; deletion needs a
    // sign-in at most REAUTH_MAX_AGE_SECONDS old (CONTRACT §7).
    let reauth_max_age = env("REAUTH_MAX_AGE_SECONDS").unwrap_or_else(|| "300".into());
    let delete_needs = format!("Bearer <accessToken of a sign-in at most {reauth_max_age} s old>");
    let routes = [
        ("POST", "/otp/send", r#"{"phone":"+77001234567"}"#),
        (
            "POST",
            "/otp/verify",
            r#"{"phone":"+77001234567","code":"<from the SMS below>"}"#,
        ),
        ("POST", "/token/refresh", r#"{"refreshToken":"..."}"#),
        (
            "POST",
            "/logout",
            r#"{"refreshToken":"...","scope":"session"}  (or "others", "all")"#,
        ),
        ("GET", "/sessions", "Bearer <accessToken>"),
        (
            "POST",
            "/sessions/revoke",
            r#"{"sessionId":"..."}  Bearer <accessToken>"#,
        ),
        ("POST", "/account/delete", delete_needs.as_str()),
        ("GET", "/.well-known/jwks.json", ""),
        ("GET", "/.well-known/openid-configuration", ""),
        (
            "GET",
            "/openapi.yaml",
            "the OpenAPI 3.1 document (openapi.yaml)",
        ),
        (
            "GET",
            "/docs",
            "the document in Swagger UI, with Try it out",
        ),
    ];
    for (method, path, what) in routes {
        let line = format!("  {method:4} {base}{path:17} {what}");
        println!("{}", line.trim_end());
    }
    println!("  a click-through page:     http://127.0.0.1:{port}/");
    println!(
        "SMS texts and the events put on the bus ({bus}) appear here; the event relay runs every minute."
    );
    println!("Ctrl-C stops the API and the local AWS stack.");

    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => accepted?,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        let gateway = Arc::clone(&gateway);
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let gateway = Arc::clone(&gateway);
                async move { Ok::<_, Infallible>(gateway.serve(req).await) }
            });
            if let Err(err) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(error = %err, "connection closed");
            }
        });
    }
}

/// Run one sample event through its function binary and the Lambda Runtime API.
async fn invoke_event(
    event_file: &str,
    vars: &HashMap<String, String>,
    endpoint_url: &str,
) -> Result<(), BoxError> {
    use foodsave_auth::devstack::lambda_runtime::{Posted, function_binary, function_of, invoke};
    let name = std::path::Path::new(event_file)
        .file_stem()
        .and_then(|s| s.to_str())
        .ok_or("expected a path like events/otp-send.json")?;
    let function =
        function_of(name).ok_or_else(|| format!("{name}: no function is named by this file"))?;
    let event: Value = serde_json::from_str(&std::fs::read_to_string(event_file)?)?;
    let env = function_env(vars);
    eprintln!("invoking {function} with {event_file} through the Lambda Runtime API");
    let invocation = invoke(&function_binary(function)?, event, &env).await?;
    eprint!("{}", invocation.logs);
    for sms in devstack::sent_sms(endpoint_url).await? {
        eprintln!("SMS to {}: {}", sms.phone_number, sms.message);
    }
    match invocation.posted {
        Posted::Response(payload) => {
            println!("{}", serde_json::to_string_pretty(&payload)?);
            Ok(())
        }
        Posted::Error(error) => {
            println!("{}", serde_json::to_string_pretty(&error)?);
            Err(format!("{function} returned an error").into())
        }
        Posted::TimedOut => Err(format!(
            "{function}: Task timed out after {:.2} seconds",
            invocation.handle.as_secs_f64()
        )
        .into()),
    }
}

/// What a function binary is given, as the template's environment would give it.
fn function_env(vars: &HashMap<String, String>) -> Vec<(String, String)> {
    [
        "TABLE_NAME",
        "AUTH_SECRET_ID",
        "JWKS_SECRET_ID",
        "JWT_ISSUER",
        "EVENT_BUS_NAME",
    ]
    .iter()
    .filter_map(|k| vars.get(*k).map(|v| ((*k).to_owned(), v.clone())))
    .collect()
}

/// `functions/event-relay` on its schedule (every minute, `template.yaml`), its binary
/// under the Lambda Runtime API; a run that delivered or failed something is printed.
async fn relay_every_minute(env: Vec<(String, String)>) {
    use foodsave_auth::devstack::lambda_runtime::{Posted, function_binary, invoke};
    let binary = match function_binary("event-relay") {
        Ok(binary) => binary,
        Err(err) => {
            println!("event relay not running ({err}): cargo build --workspace --bins");
            return;
        }
    };
    let tick = json!({ "detail-type": "Scheduled Event", "source": "aws.events", "detail": {} });
    let mut every = tokio::time::interval(std::time::Duration::from_secs(60));
    every.tick().await;
    loop {
        every.tick().await;
        match invoke(&binary, tick.clone(), &env)
            .await
            .map(|run| run.posted)
        {
            Ok(Posted::Response(report))
                if report.get("delivered") != Some(&json!(0))
                    || report.get("failed") != Some(&json!(0)) =>
            {
                println!("event relay: {report}");
            }
            Ok(Posted::Response(_)) => {}
            Ok(other) => println!("event relay: {other:?}"),
            Err(err) => println!("event relay could not run: {err}"),
        }
    }
}

impl Gateway {
    async fn serve(&self, req: hyper::Request<Incoming>) -> hyper::Response<Full<Bytes>> {
        let (parts, body) = req.into_parts();
        let body = match body.collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(_) => Bytes::new(),
        };
        let path = parts.uri.path().to_owned();
        if parts.method == hyper::Method::GET {
            match path.as_str() {
                "/" | "/index.html" => return page(),
                "/api/v1/auth/openapi.yaml" => return openapi_document(),
                "/api/v1/auth/docs" => return docs::page(),
                _ => {}
            }
            if let Some(file) = path.strip_prefix("/api/v1/auth/docs/") {
                return docs::asset(file);
            }
        }
        let event = gateway_event(&parts, &body);
        let request = match foodsave_auth::http::event::request_from_json(&event.to_string()) {
            Ok(request) => request,
            Err(_) => {
                return plain(
                    400,
                    r#"{"code":"BAD_REQUEST","message":"request could not be read"}"#,
                );
            }
        };
        let response = match path.as_str() {
            "/api/v1/auth/otp/send" => self.send.handle(request).await,
            "/api/v1/auth/otp/verify" => self.verify.handle(request).await,
            "/api/v1/auth/token/refresh" => self.refresh.handle(request).await,
            "/api/v1/auth/logout" => self.logout.handle(request).await,
            "/api/v1/auth/sessions" | "/api/v1/auth/sessions/revoke" => {
                self.sessions.handle(request).await
            }
            "/api/v1/auth/account/delete" => self.account_delete.handle(request).await,
            "/api/v1/auth/.well-known/jwks.json"
            | "/api/v1/auth/.well-known/openid-configuration" => self.jwks.handle(request).await,
            _ => return plain(404, r#"{"code":"NOT_FOUND","message":"no such route"}"#),
        };
        if path.ends_with("/otp/send") {
            self.print_new_sms().await;
        }
        self.print_new_events().await;
        to_hyper(response)
    }

    /// The events the bus delivered to the tap queue since the last look.
    async fn print_new_events(&self) {
        let Ok(events) = devstack::tapped_events(&self.aws, &self.tap).await else {
            return;
        };
        for event in events {
            let kind = event
                .get("detail-type")
                .and_then(Value::as_str)
                .unwrap_or("?");
            let detail = event.get("detail").cloned().unwrap_or(Value::Null);
            println!("event {kind}: {detail}");
        }
    }

    async fn print_new_sms(&self) {
        let Ok(all) = devstack::sent_sms(&self.endpoint_url).await else {
            return;
        };
        let mut seen = self.sms_seen.lock().await;
        for sms in all.iter().skip(*seen) {
            println!("SMS to {}: {}", sms.phone_number, sms.message);
        }
        *seen = all.len();
    }
}

/// The API Gateway HTTP API (payload 2.0) event for a request.
fn gateway_event(parts: &hyper::http::request::Parts, body: &Bytes) -> Value {
    let mut headers = serde_json::Map::new();
    for (name, value) in &parts.headers {
        // A value that is not visible ASCII is handed on as text too (its bytes read as
        // ISO-8859-1, RFC 9110 §5.5), so that the function sees it and judges it (an
        // `Idempotency-Key` of such bytes is a 400), instead of this gateway dropping it.
        let text: String = match value.to_str() {
            Ok(v) => v.to_owned(),
            Err(_) => value.as_bytes().iter().copied().map(char::from).collect(),
        };
        headers.insert(name.as_str().to_owned(), json!(text));
    }
    let path = parts.uri.path();
    let method = parts.method.as_str();
    // API Gateway copies the `User-Agent` header into the request context too; the header
    // itself (like `Authorization`) is handed on above, as the functions read it there
    // (CONTRACT §7: a session's `userAgent`, the Bearer token).
    let user_agent = headers
        .get("user-agent")
        .cloned()
        .unwrap_or_else(|| json!(""));
    let (body, is_base64) = match std::str::from_utf8(body) {
        Ok(text) => (text.to_owned(), false),
        Err(_) => (base64::engine::general_purpose::STANDARD.encode(body), true),
    };
    let mut event = json!({
        "version": "2.0",
        "routeKey": format!("{method} {path}"),
        "rawPath": path,
        "rawQueryString": parts.uri.query().unwrap_or(""),
        "headers": headers,
        "requestContext": {
            "accountId": "000000000000",
            "apiId": "local",
            "domainName": "127.0.0.1",
            "http": { "method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1", "userAgent": user_agent },
            "requestId": "local",
            "routeKey": format!("{method} {path}"),
            "stage": "$default",
            "time": "",
            "timeEpoch": 0
        },
        "isBase64Encoded": is_base64
    });
    if !body.is_empty()
        && let Some(fields) = event.as_object_mut()
    {
        fields.insert("body".into(), json!(body));
    }
    event
}

fn to_hyper(response: lambda_http::Response<lambda_http::Body>) -> hyper::Response<Full<Bytes>> {
    let (parts, body) = response.into_parts();
    let bytes = match body {
        lambda_http::Body::Text(text) => Bytes::from(text),
        lambda_http::Body::Binary(bytes) => Bytes::from(bytes),
        _ => Bytes::new(),
    };
    hyper::Response::from_parts(parts, Full::new(bytes))
}

/// The walk-through page: send → verify → refresh → logout, the sessions list, logout
/// everywhere and account deletion, for people who would rather click.
fn page() -> hyper::Response<Full<Bytes>> {
    docs::respond(
        200,
        "text/html; charset=utf-8",
        Bytes::from_static(include_bytes!("../static/index.html")),
    )
}

/// The committed `openapi.yaml`, built in so that it is always the one in the tree.
fn openapi_document() -> hyper::Response<Full<Bytes>> {
    docs::respond(
        200,
        "application/yaml",
        Bytes::from_static(include_bytes!("../../../openapi.yaml")),
    )
}

/// local-api's own JSON errors, with the POST endpoints' `Cache-Control: no-store`.
fn plain(status: u16, body: &'static str) -> hyper::Response<Full<Bytes>> {
    let mut response = docs::respond(
        status,
        "application/json",
        Bytes::from_static(body.as_bytes()),
    );
    response.headers_mut().insert(
        "cache-control",
        hyper::header::HeaderValue::from_static("no-store"),
    );
    response
}

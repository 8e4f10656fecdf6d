//! A minimal Lambda Runtime API, enough to run one function binary for one event the
//! way Lambda (or `sam local invoke` in Docker) does: the binary polls
//! `/2018-06-01/runtime/invocation/next`, gets the event, and posts its response or error.
//! Used by the events test and by `make invoke`, where there is no Docker.

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::io::AsyncReadExt;
use tokio::sync::{Mutex, mpsc};

use crate::clock::SystemClock;
use crate::domain::error::BoxError;
use crate::ports::Clock;

/// The function packages, each building a binary of the same name.
pub const FUNCTIONS: [&str; 6] = [
    "otp-send",
    "otp-verify",
    "token-refresh",
    "logout",
    "jwks",
    "key-rotation",
];

/// The function an `events/<function>[-<case>].json` file is for.
pub fn function_of(event_name: &str) -> Option<&'static str> {
    FUNCTIONS
        .iter()
        .filter(|f| event_name == **f || event_name.starts_with(&format!("{f}-")))
        .max_by_key(|f| f.len())
        .copied()
}

/// A function binary built by `cargo build` (debug profile) in the workspace target dir.
pub fn function_binary(function: &str) -> Result<PathBuf, BoxError> {
    profile_binary(function, "debug")
}

/// A function binary of a cargo profile (`debug`, `release`) in the workspace target dir.
pub fn profile_binary(function: &str, profile: &str) -> Result<PathBuf, BoxError> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| super::workspace_root().join("target"), PathBuf::from);
    let path = target.join(profile).join(function);
    if path.exists() {
        Ok(path)
    } else {
        Err(format!(
            "{} is missing: run `cargo build --workspace` first",
            path.display()
        )
        .into())
    }
}

/// What the function posted back.
#[derive(Debug)]
pub enum Posted {
    /// `/invocation/{id}/response`: the handler's result (for HTTP functions, the gateway
    /// response with `statusCode`, `headers`, `body`).
    Response(Value),
    /// `/invocation/{id}/error` or `/init/error`.
    Error(Value),
}

/// The outcome of one invocation and everything the process printed.
#[derive(Debug)]
pub struct Invocation {
    pub posted: Posted,
    pub logs: String,
    /// From process start to its first poll for an event: the cold-start init.
    pub init: Duration,
    /// From handing out the event to receiving the answer.
    pub handle: Duration,
    /// Peak resident memory of the process (Linux `VmHWM`), when known.
    pub peak_rss_kib: Option<u64>,
}

/// Peak resident set size of a running process, from `/proc/<pid>/status`.
fn peak_rss_kib(pid: Option<u32>) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid?)).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Run `binary` for `event` with `env` added to this process's environment.
pub async fn invoke(
    binary: &Path,
    event: Value,
    env: &[(String, String)],
) -> Result<Invocation, BoxError> {
    let function = binary
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("function")
        .to_owned();
    let handed_out = Arc::new(Mutex::new(None));
    let (addr, mut rx) = serve_one(event, Arc::clone(&handed_out)).await?;
    let started = Instant::now();
    let mut child = tokio::process::Command::new(binary)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("AWS_LAMBDA_RUNTIME_API", &addr)
        .env("AWS_LAMBDA_FUNCTION_NAME", &function)
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_LOG_STREAM_NAME", "local")
        .env(
            "AWS_LAMBDA_LOG_GROUP_NAME",
            format!("/aws/lambda/{function}"),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let outcome = tokio::select! {
        posted = rx.recv() => posted.ok_or_else(|| BoxError::from("runtime API closed")),
        // A process that reported an init error and exited: the report is already queued.
        status = child.wait() => rx
            .try_recv()
            .map_err(|_| format!("{function} exited before answering ({status:?})").into()),
        _ = tokio::time::sleep(Duration::from_secs(60)) => Err(format!("{function} did not answer in 60 s").into()),
    };
    let answered = Instant::now();
    let peak_rss_kib = peak_rss_kib(child.id());
    let _ = child.start_kill();
    let _ = child.wait().await;
    let handed = handed_out.lock().await.unwrap_or(answered);
    let mut logs = String::new();
    if let Some(mut out) = child.stdout.take() {
        out.read_to_string(&mut logs).await?;
    }
    if let Some(mut err) = child.stderr.take() {
        err.read_to_string(&mut logs).await?;
    }
    match outcome {
        Ok(posted) => Ok(Invocation {
            posted,
            logs,
            init: handed.duration_since(started),
            handle: answered.duration_since(handed),
            peak_rss_kib,
        }),
        Err(err) => Err(format!("{err}\n{logs}").into()),
    }
}

/// Serve the Runtime API for a single invocation on a free loopback port.
async fn serve_one(
    event: Value,
    handed_out: Arc<Mutex<Option<Instant>>>,
) -> Result<(String, mpsc::Receiver<Posted>), BoxError> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?.to_string();
    let (tx, rx) = mpsc::channel(4);
    let pending = Arc::new(Mutex::new(Some(event)));
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (tx, pending, handed_out) =
                (tx.clone(), Arc::clone(&pending), Arc::clone(&handed_out));
            tokio::spawn(async move {
                let service = service_fn(move |req: hyper::Request<Incoming>| {
                    let (tx, pending, handed_out) =
                        (tx.clone(), Arc::clone(&pending), Arc::clone(&handed_out));
                    async move { Ok::<_, Infallible>(route(req, tx, pending, handed_out).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok((addr, rx))
}

async fn route(
    req: hyper::Request<Incoming>,
    tx: mpsc::Sender<Posted>,
    pending: Arc<Mutex<Option<Value>>>,
    handed_out: Arc<Mutex<Option<Instant>>>,
) -> hyper::Response<Full<Bytes>> {
    let path = req.uri().path().to_owned();
    if path.ends_with("/runtime/invocation/next") {
        let Some(event) = pending.lock().await.take() else {
            // One invocation only: the next poll waits until the process is stopped.
            tokio::time::sleep(Duration::from_secs(3600)).await;
            return hyper::Response::new(Full::new(Bytes::new()));
        };
        *handed_out.lock().await = Some(Instant::now());
        let deadline = SystemClock.now().as_millis() + 30_000;
        let mut response = hyper::Response::new(Full::new(Bytes::from(event.to_string())));
        let headers = response.headers_mut();
        for (name, value) in [
            (
                "lambda-runtime-aws-request-id",
                "8476a536-e9f4-11e8-9739-2dfe598c3fcd".to_owned(),
            ),
            ("lambda-runtime-deadline-ms", deadline.to_string()),
            (
                "lambda-runtime-invoked-function-arn",
                "arn:aws:lambda:us-east-1:123456789012:function:foodsave-auth".to_owned(),
            ),
            (
                "lambda-runtime-trace-id",
                "Root=1-5bef4de7-ad49b0e87f6ef6c87fc2e700;Parent=9a9197af755a6419;Sampled=1"
                    .to_owned(),
            ),
        ] {
            if let Ok(value) = hyper::header::HeaderValue::from_str(&value) {
                headers.insert(name, value);
            }
        }
        return response;
    }
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let value: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let posted = if path.ends_with("/response") {
        Posted::Response(value)
    } else {
        Posted::Error(value)
    };
    let _ = tx.send(posted).await;
    let mut response = hyper::Response::new(Full::new(Bytes::from_static(b"{}")));
    *response.status_mut() = hyper::StatusCode::ACCEPTED;
    response
}

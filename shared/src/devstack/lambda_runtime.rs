//! A minimal Lambda Runtime API, enough to run one function binary for one event the
//! way Lambda (or `sam local invoke` in Docker) does: the binary polls
//! `/2018-06-01/runtime/invocation/next`, gets the event, and posts its response or error.
//! Used by the events test and by `make invoke`, where there is no Docker.
//!
//! As in Lambda, the invocation has a deadline: the event carries
//! `lambda-runtime-deadline-ms`, and a function that has not answered by then is stopped
//! and reported as [`Posted::TimedOut`] ("Task timed out after N seconds"; API Gateway
//! answers such an invocation with a bare 5xx).

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
use tokio::sync::{Mutex, mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};

use crate::clock::SystemClock;
use crate::domain::error::BoxError;
use crate::ports::Clock;

/// The functions' `Timeout` in `template.yaml`: how long Lambda lets one invocation run.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the process has to poll for its event at all. Lambda limits init to 10 s
/// separately from the invocation timeout; a debug build on a busy machine gets more.
pub const INIT_LIMIT: Duration = Duration::from_secs(60);

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
    /// Nothing by the deadline: the process was stopped, as Lambda stops a function that
    /// runs past its timeout.
    TimedOut,
}

/// The outcome of one invocation and everything the process printed.
#[derive(Debug)]
pub struct Invocation {
    pub posted: Posted,
    pub logs: String,
    /// From process start to its first poll for an event: the cold-start init.
    pub init: Duration,
    /// From handing out the event to receiving the answer (for [`Posted::TimedOut`],
    /// to the deadline).
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

/// Run `binary` for `event` with `env` added to this process's environment, with the
/// functions' timeout ([`DEFAULT_TIMEOUT`]).
pub async fn invoke(
    binary: &Path,
    event: Value,
    env: &[(String, String)],
) -> Result<Invocation, BoxError> {
    invoke_with_timeout(binary, event, env, DEFAULT_TIMEOUT).await
}

/// Run `binary` for `event` with `env` added to this process's environment. The event's
/// deadline is `timeout` after it is handed out (init does not count, as in Lambda); a
/// process that has not answered by then is killed and the outcome is
/// [`Posted::TimedOut`].
pub async fn invoke_with_timeout(
    binary: &Path,
    event: Value,
    env: &[(String, String)],
    timeout: Duration,
) -> Result<Invocation, BoxError> {
    let function = binary
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("function")
        .to_owned();
    let (handed_tx, mut handed_rx) = watch::channel(None);
    let (addr, mut rx, server) = serve_one(event, timeout, handed_tx).await?;
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
    let mut handed: Option<Instant> = None;
    let outcome: Result<Posted, BoxError> = loop {
        let limit = handed.map_or(started + INIT_LIMIT, |at| at + timeout);
        tokio::select! {
            // An answer that is in counts, even if the deadline passed meanwhile.
            biased;
            posted = rx.recv() => {
                break posted.ok_or_else(|| BoxError::from("runtime API closed"));
            }
            // A process that reported an init error and exited: the report is already queued.
            status = child.wait() => {
                break rx
                    .try_recv()
                    .map_err(|_| format!("{function} exited before answering ({status:?})").into());
            }
            changed = handed_rx.changed(), if handed.is_none() => match changed {
                Ok(()) => handed = *handed_rx.borrow_and_update(),
                Err(_) => break Err("runtime API closed".into()),
            },
            () = tokio::time::sleep_until(limit.into()) => {
                break match handed {
                    Some(_) => Ok(Posted::TimedOut),
                    None => Err(format!(
                        "{function} did not poll for its event in {} s",
                        INIT_LIMIT.as_secs()
                    )
                    .into()),
                };
            }
        }
    };
    let answered = Instant::now();
    let peak_rss_kib = peak_rss_kib(child.id());
    let _ = child.start_kill();
    let _ = child.wait().await;
    server.abort();
    let handed = handed.or(*handed_rx.borrow()).unwrap_or(answered);
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

/// What the Runtime API shares between its connections.
struct Runtime {
    pending: Mutex<Option<Value>>,
    timeout: Duration,
    /// When the event was handed out; the deadline runs from then.
    handed_out: watch::Sender<Option<Instant>>,
    posted: mpsc::Sender<Posted>,
}

/// Serve the Runtime API for a single invocation on a free loopback port, until the
/// returned task is aborted.
async fn serve_one(
    event: Value,
    timeout: Duration,
    handed_out: watch::Sender<Option<Instant>>,
) -> Result<(String, mpsc::Receiver<Posted>, JoinHandle<()>), BoxError> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?.to_string();
    let (posted, rx) = mpsc::channel(4);
    let runtime = Arc::new(Runtime {
        pending: Mutex::new(Some(event)),
        timeout,
        handed_out,
        posted,
    });
    let server = tokio::spawn(async move {
        // Connections live in this set, so aborting the server closes them too.
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((stream, _)) = accepted else { break };
                    let runtime = Arc::clone(&runtime);
                    connections.spawn(async move {
                        let service = service_fn(move |req: hyper::Request<Incoming>| {
                            let runtime = Arc::clone(&runtime);
                            async move { Ok::<_, Infallible>(route(req, &runtime).await) }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
    });
    Ok((addr, rx, server))
}

async fn route(req: hyper::Request<Incoming>, runtime: &Runtime) -> hyper::Response<Full<Bytes>> {
    let path = req.uri().path().to_owned();
    if path.ends_with("/runtime/invocation/next") {
        let Some(event) = runtime.pending.lock().await.take() else {
            // One invocation only: the next poll waits until the process is stopped.
            tokio::time::sleep(Duration::from_secs(3600)).await;
            return hyper::Response::new(Full::new(Bytes::new()));
        };
        runtime.handed_out.send_replace(Some(Instant::now()));
        let timeout_ms = u64::try_from(runtime.timeout.as_millis()).unwrap_or(u64::MAX);
        let deadline = SystemClock.now().as_millis().saturating_add(timeout_ms);
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
    let _ = runtime.posted.send(posted).await;
    let mut response = hyper::Response::new(Full::new(Bytes::from_static(b"{}")));
    *response.status_mut() = hyper::StatusCode::ACCEPTED;
    response
}

#[cfg(all(test, unix))]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use std::os::unix::fs::PermissionsExt;
    use std::sync::OnceLock;

    use super::*;

    /// A function that speaks the Runtime API with bash alone: it waits `INIT_SECONDS`,
    /// takes the event (printing what it got), then either runs for `HANDLE_SECONDS`
    /// without answering or answers `{"ok":true}` at once.
    const FUNCTION: &str = r#"#!/usr/bin/env bash
set -eu
sleep "$INIT_SECONDS"
host=${AWS_LAMBDA_RUNTIME_API%:*}
port=${AWS_LAMBDA_RUNTIME_API##*:}
exec 3<>"/dev/tcp/$host/$port"
printf 'GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n' "$AWS_LAMBDA_RUNTIME_API" >&3
cat <&3
exec 3<&-
if [ "$HANDLE_SECONDS" != 0 ]; then exec sleep "$HANDLE_SECONDS"; fi
exec 4<>"/dev/tcp/$host/$port"
printf 'POST /2018-06-01/runtime/invocation/x/response HTTP/1.1\r\nHost: %s\r\nConnection: close\r\nContent-Length: 11\r\n\r\n{"ok":true}' "$AWS_LAMBDA_RUNTIME_API" >&4
cat <&4 >/dev/null
"#;

    /// Written once, before any test spawns it (a file still open for writing cannot run).
    fn function() -> &'static Path {
        static PATH: OnceLock<PathBuf> = OnceLock::new();
        PATH.get_or_init(|| {
            let path = std::env::temp_dir().join(format!(
                "foodsave-runtime-test-function-{}",
                std::process::id()
            ));
            std::fs::write(&path, FUNCTION).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
            path
        })
    }

    fn env(init: &str, handle: &str) -> Vec<(String, String)> {
        vec![
            ("INIT_SECONDS".into(), init.into()),
            ("HANDLE_SECONDS".into(), handle.into()),
        ]
    }

    #[tokio::test]
    async fn a_function_that_misses_its_deadline_is_stopped_and_reported_timed_out() {
        let timeout = Duration::from_millis(300);
        let before = SystemClock.now().as_millis();
        let invocation = invoke_with_timeout(function(), Value::Null, &env("0", "30"), timeout)
            .await
            .unwrap();
        let after = SystemClock.now().as_millis();
        assert!(
            matches!(invocation.posted, Posted::TimedOut),
            "{invocation:?}"
        );
        assert!(invocation.handle >= timeout, "{invocation:?}");
        let deadline: u64 = invocation
            .logs
            .lines()
            .find_map(|l| l.strip_prefix("lambda-runtime-deadline-ms: "))
            .expect("the event carried its deadline")
            .trim()
            .parse()
            .unwrap();
        assert!(
            (before + 300..=after + 300).contains(&deadline),
            "deadline {deadline} not {before}..{after} + 300 ms"
        );
    }

    #[tokio::test]
    async fn init_does_not_count_against_the_deadline() {
        let invocation = invoke_with_timeout(
            function(),
            Value::Null,
            &env("0.6", "0"),
            Duration::from_millis(300),
        )
        .await
        .unwrap();
        assert!(
            matches!(&invocation.posted, Posted::Response(v) if v["ok"] == true),
            "{invocation:?}"
        );
    }
}

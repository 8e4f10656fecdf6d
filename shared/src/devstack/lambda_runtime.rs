//! A minimal Lambda Runtime API, enough to run one function binary for one event the
//! way Lambda (or `sam local invoke` in Docker) does: the binary polls
//! `/2018-06-01/runtime/invocation/next`, gets the event, and posts its response or error.
//! Used by the events test and by `make invoke`, where there is no Docker.
//!
//! [`invoke_many`] serves a series of events to one process, as a warm container serves
//! them, and samples the process (CPU time, peak memory) each time it polls: the
//! benchmark's warm requests (`shared/benches/cold_start.rs`).
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
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::{Mutex, mpsc, oneshot, watch};
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
pub const FUNCTIONS: [&str; 9] = [
    "otp-send",
    "otp-verify",
    "token-refresh",
    "logout",
    "sessions",
    "account-delete",
    "jwks",
    "key-rotation",
    "event-relay",
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
    let function = function_name(binary);
    let (handed_tx, mut handed_rx) = watch::channel(None);
    let (posted, mut rx) = mpsc::channel(4);
    let events = Events::One {
        pending: Mutex::new(Some(event)),
        timeout,
        handed_out: handed_tx,
    };
    let (addr, server) = serve(Runtime { events, posted }).await?;
    let started = Instant::now();
    let mut child = spawn(binary, &function, &addr, env)?;
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

/// The file name of a function binary: its `AWS_LAMBDA_FUNCTION_NAME`.
fn function_name(binary: &Path) -> String {
    binary
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("function")
        .to_owned()
}

/// Start `binary` as Lambda starts a function: `env` on top of this process's
/// environment, the Runtime API at `addr`, the reserved variables, output captured.
fn spawn(
    binary: &Path,
    function: &str,
    addr: &str,
    env: &[(String, String)],
) -> Result<tokio::process::Child, BoxError> {
    Ok(tokio::process::Command::new(binary)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("AWS_LAMBDA_RUNTIME_API", addr)
        .env("AWS_LAMBDA_FUNCTION_NAME", function)
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
        .spawn()?)
}

/// One invocation of a series ([`invoke_many`]).
#[derive(Debug)]
pub struct Served {
    pub posted: Posted,
    /// From handing out the event to receiving the answer (for [`Posted::TimedOut`],
    /// the timeout).
    pub handle: Duration,
}

/// A series of events served to one process, in order, as a warm container serves them.
#[derive(Debug)]
pub struct Series {
    /// From process start to its first poll for an event: the cold-start init.
    pub init: Duration,
    /// One per event handed out, in order. Shorter than the events only when an
    /// invocation timed out (its process was stopped, as Lambda stops it: the last entry
    /// is [`Posted::TimedOut`]).
    pub served: Vec<Served>,
    /// CPU time (user + system, all threads, `/proc/<pid>/stat`) the process had used at
    /// each of its polls: `cpu[0]` after init, `cpu[i]` after invocation `i` (1-based),
    /// when the process was idle waiting for its next event. `None` where it cannot be read.
    pub cpu: Vec<Option<Duration>>,
    /// Peak resident memory (Linux `VmHWM`) after the last invocation, when known.
    pub peak_rss_kib: Option<u64>,
    /// Everything the process printed.
    pub logs: String,
}

/// Serve `events` to one process of `binary`, one after another, with the functions'
/// timeout per invocation ([`DEFAULT_TIMEOUT`]).
pub async fn invoke_many(
    binary: &Path,
    events: Vec<Value>,
    env: &[(String, String)],
) -> Result<Series, BoxError> {
    invoke_many_observed(binary, events, env, DEFAULT_TIMEOUT, |_| {}).await
}

/// Serve `events` to one process of `binary`, one after another, each with its deadline
/// `timeout` after it is handed out; the process is stopped after its poll following the
/// last answer. `on_poll(i)` runs each time the process polls for event `i` (0-based;
/// `events.len()` for the poll after the last answer), while the process waits and
/// before anything is handed out: the moment to take stock of what it has done so far
/// (the calls a `FaultProxy` has seen, say), since everything up to then belongs to
/// init (`i` = 0) or to invocations `..i`.
///
/// An init error, a process that exits, or one that does not poll in [`INIT_LIMIT`] (or
/// again within `timeout` of an answer) is an `Err` carrying its output.
pub async fn invoke_many_observed(
    binary: &Path,
    events: Vec<Value>,
    env: &[(String, String)],
    timeout: Duration,
    mut on_poll: impl FnMut(usize),
) -> Result<Series, BoxError> {
    let function = function_name(binary);
    let (polls_tx, mut polls) = mpsc::channel(1);
    let (posted_tx, mut posted) = mpsc::channel(4);
    let runtime = Runtime {
        events: Events::Driven(polls_tx),
        posted: posted_tx,
    };
    let (addr, server) = serve(runtime).await?;
    let started = Instant::now();
    let mut child = spawn(binary, &function, &addr, env)?;
    let pid = child.id();
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let mut events = events.into_iter().enumerate();
    let mut init = None;
    let mut served = Vec::new();
    let mut cpu = Vec::new();
    let mut peak_rss = None;
    // While an invocation is out: when it was handed out.
    let mut out: Option<Instant> = None;
    let mut last_answer = started;
    let outcome: Result<(), BoxError> = loop {
        let limit = match (out, init) {
            (Some(handed), _) => handed + timeout,
            (None, None) => started + INIT_LIMIT,
            (None, Some(_)) => last_answer + timeout,
        };
        tokio::select! {
            // An answer that is in counts, even if the deadline passed meanwhile; and it is
            // in before the process's next poll (it posts, is answered, then polls).
            biased;
            answer = posted.recv() => {
                let Some(answer) = answer else { break Err("runtime API closed".into()) };
                let Some(handed) = out.take() else {
                    break Err(format!("{function} failed its init: {answer:?}").into());
                };
                last_answer = Instant::now();
                served.push(Served { posted: answer, handle: last_answer.duration_since(handed) });
            }
            poll = polls.recv() => {
                let Some(poll) = poll else { break Err("runtime API closed".into()) };
                if out.is_some() {
                    break Err(format!("{function} polled again without answering").into());
                }
                let Poll { arrived, reply } = poll;
                init.get_or_insert_with(|| arrived.duration_since(started));
                cpu.push(cpu_time(pid));
                on_poll(served.len());
                let Some((index, event)) = events.next() else {
                    peak_rss = peak_rss_kib(pid);
                    break Ok(());
                };
                out = Some(Instant::now());
                // The process gone meanwhile shows as its exit, next round.
                let _ = reply.send(event_response(&event, timeout, index));
            }
            status = child.wait() => {
                break Err(format!("{function} exited ({status:?})").into());
            }
            () = tokio::time::sleep_until(limit.into()) => {
                match (out, init) {
                    (Some(_), _) => {
                        served.push(Served { posted: Posted::TimedOut, handle: timeout });
                        break Ok(());
                    }
                    (None, None) => break Err(format!(
                        "{function} did not poll for its event in {} s",
                        INIT_LIMIT.as_secs()
                    )
                    .into()),
                    (None, Some(_)) => break Err(format!(
                        "{function} did not poll again within {} s of its answer",
                        timeout.as_secs_f64()
                    )
                    .into()),
                }
            }
        }
    };
    if peak_rss.is_none() {
        peak_rss = peak_rss_kib(pid);
    }
    let _ = child.start_kill();
    let _ = child.wait().await;
    server.abort();
    let mut logs = stdout.await.unwrap_or_default();
    logs.push_str(&stderr.await.unwrap_or_default());
    match (outcome, init) {
        (Ok(()), Some(init)) => Ok(Series {
            init,
            served,
            cpu,
            peak_rss_kib: peak_rss,
            logs,
        }),
        (Ok(()), None) => Err(format!("{function} never polled\n{logs}").into()),
        (Err(err), _) => Err(format!("{err}\n{logs}").into()),
    }
}

/// Read a pipe to its end in the background, so a process that logs a lot never blocks
/// on a full pipe.
fn drain<R>(pipe: Option<R>) -> JoinHandle<String>
where
    R: AsyncRead + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes).await;
        }
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// CPU time a process has used, user plus system, over all its threads (live and
/// exited): fields 14 and 15 of `/proc/<pid>/stat`, in clock ticks.
fn cpu_time(pid: Option<u32>) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid?)).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count from after it.
    let (_, fields) = stat.rsplit_once(')')?;
    let mut fields = fields.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    let ticks = utime.saturating_add(stime);
    let hz = clock_ticks_per_second();
    Some(Duration::from_secs(ticks / hz) + Duration::from_nanos((ticks % hz) * 1_000_000_000 / hz))
}

/// `getconf CLK_TCK`: the unit of `/proc/<pid>/stat` times (`USER_HZ`, 100 on Linux).
fn clock_ticks_per_second() -> u64 {
    static HZ: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *HZ.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .and_then(|hz| hz.trim().parse().ok())
            .filter(|hz| *hz > 0)
            .unwrap_or(100)
    })
}

/// What the process gets for its polls.
enum Events {
    /// One event, handed out once; later polls wait until the process is stopped.
    One {
        pending: Mutex<Option<Value>>,
        timeout: Duration,
        /// When the event was handed out; the deadline runs from then.
        handed_out: watch::Sender<Option<Instant>>,
    },
    /// Each poll goes to the driver ([`invoke_many_observed`]), which answers it with the
    /// next event, or never.
    Driven(mpsc::Sender<Poll>),
}

/// A poll for the next event, waiting for the driver's answer.
struct Poll {
    arrived: Instant,
    reply: oneshot::Sender<hyper::Response<Full<Bytes>>>,
}

/// What the Runtime API shares between its connections.
struct Runtime {
    events: Events,
    posted: mpsc::Sender<Posted>,
}

/// Serve the Runtime API on a free loopback port, until the returned task is aborted.
async fn serve(runtime: Runtime) -> Result<(String, JoinHandle<()>), BoxError> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?.to_string();
    let runtime = Arc::new(runtime);
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
    Ok((addr, server))
}

/// A poll nobody will answer: it waits until the process is stopped.
async fn never() -> hyper::Response<Full<Bytes>> {
    tokio::time::sleep(Duration::from_secs(3600)).await;
    hyper::Response::new(Full::new(Bytes::new()))
}

/// The answer to a poll: invocation `index`'s event with its headers, the deadline
/// `timeout` from now.
fn event_response(event: &Value, timeout: Duration, index: usize) -> hyper::Response<Full<Bytes>> {
    let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
    let deadline = SystemClock.now().as_millis().saturating_add(timeout_ms);
    let mut response = hyper::Response::new(Full::new(Bytes::from(event.to_string())));
    let headers = response.headers_mut();
    for (name, value) in [
        (
            "lambda-runtime-aws-request-id",
            format!(
                "8476a536-e9f4-11e8-9739-{:012x}",
                0x2dfe_598c_3fcd_u64.wrapping_add(u64::try_from(index).unwrap_or(0))
            ),
        ),
        ("lambda-runtime-deadline-ms", deadline.to_string()),
        (
            "lambda-runtime-invoked-function-arn",
            "arn:aws:lambda:us-east-1:123456789012:function:foodsave-auth".to_owned(),
        ),
        (
            "lambda-runtime-trace-id",
            "Root=1-5bef4de7-ad49b0e87f6ef6c87fc2e700;Parent=9a9197af755a6419;Sampled=1".to_owned(),
        ),
    ] {
        if let Ok(value) = hyper::header::HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    }
    response
}

async fn route(req: hyper::Request<Incoming>, runtime: &Runtime) -> hyper::Response<Full<Bytes>> {
    let path = req.uri().path().to_owned();
    if path.ends_with("/runtime/invocation/next") {
        return match &runtime.events {
            Events::One {
                pending,
                timeout,
                handed_out,
            } => {
                let Some(event) = pending.lock().await.take() else {
                    // One invocation only.
                    return never().await;
                };
                handed_out.send_replace(Some(Instant::now()));
                event_response(&event, *timeout, 0)
            }
            Events::Driven(polls) => {
                let (reply, answer) = oneshot::channel();
                let poll = Poll {
                    arrived: Instant::now(),
                    reply,
                };
                if polls.send(poll).await.is_err() {
                    return never().await;
                }
                match answer.await {
                    Ok(response) => response,
                    // The series is over.
                    Err(_) => never().await,
                }
            }
        };
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
    #![allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )]
    use std::os::unix::fs::PermissionsExt;
    use std::sync::OnceLock;

    use serde_json::json;

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
        PATH.get_or_init(|| script("function", FUNCTION))
    }

    /// A warm function in bash: it polls, answers `{"echo": <event>}`, and polls again,
    /// burning a little CPU per event.
    const LOOPING_FUNCTION: &str = r#"#!/usr/bin/env bash
set -eu
host=${AWS_LAMBDA_RUNTIME_API%:*}
port=${AWS_LAMBDA_RUNTIME_API##*:}
while :; do
  exec 3<>"/dev/tcp/$host/$port"
  printf 'GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n' "$AWS_LAMBDA_RUNTIME_API" >&3
  event=$(cat <&3 | tail -n 1)
  exec 3<&-
  for _ in $(seq 1 2000); do :; done
  body="{\"echo\":$event}"
  exec 4<>"/dev/tcp/$host/$port"
  printf 'POST /2018-06-01/runtime/invocation/x/response HTTP/1.1\r\nHost: %s\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s' "$AWS_LAMBDA_RUNTIME_API" "${#body}" "$body" >&4
  cat <&4 >/dev/null
  exec 4<&-
done
"#;

    fn script(name: &str, text: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!(
            "foodsave-runtime-test-{name}-{}",
            std::process::id()
        ));
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    fn looping_function() -> &'static Path {
        static PATH: OnceLock<PathBuf> = OnceLock::new();
        PATH.get_or_init(|| script("looping-function", LOOPING_FUNCTION))
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

    #[tokio::test]
    async fn a_series_is_served_in_order_to_one_process_and_sampled_at_each_poll() {
        let events = vec![json!(1), json!({ "n": 2 }), json!("three")];
        let mut polls = Vec::new();
        let series = invoke_many_observed(
            looping_function(),
            events.clone(),
            &[],
            Duration::from_secs(10),
            |i| polls.push(i),
        )
        .await
        .unwrap();
        assert_eq!(polls, vec![0, 1, 2, 3]);
        let echoed: Vec<Value> = series
            .served
            .iter()
            .map(|s| match &s.posted {
                Posted::Response(v) => v["echo"].clone(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(echoed, events);
        assert_eq!(series.cpu.len(), 4, "{series:?}");
        let cpu: Vec<Duration> = series.cpu.iter().map(|c| c.unwrap()).collect();
        assert!(cpu.windows(2).all(|w| w[0] <= w[1]), "{cpu:?}");
        assert!(series.peak_rss_kib.is_some_and(|kib| kib > 0));
    }

    #[tokio::test]
    async fn a_series_stops_at_an_invocation_that_times_out() {
        let series = invoke_many_observed(
            function(),
            vec![Value::Null, Value::Null],
            &env("0", "30"),
            Duration::from_millis(300),
            |_| {},
        )
        .await
        .unwrap();
        assert_eq!(series.served.len(), 1, "{series:?}");
        assert!(matches!(
            series.served.first().map(|s| &s.posted),
            Some(Posted::TimedOut)
        ));
    }
}

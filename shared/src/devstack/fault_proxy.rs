//! A fault-injecting HTTP/1.1 reverse proxy in front of the local AWS stack, so tests can
//! make DynamoDB, SNS or Secrets Manager fail the way the real services do — a cancelled
//! transaction, throttling, a 5xx, a dependency that never answers or answers too late —
//! while everything else reaches moto unchanged.
//!
//! Point an SDK client at [`FaultProxy::url`] (or build its config with
//! [`FaultProxy::sdk_config`]), or hand a function binary `AWS_ENDPOINT_URL` = the proxy's
//! URL. Each request's AWS operation is read from the wire ([`identify`]): the JSON
//! protocols name it in `X-Amz-Target`, the query protocol (SNS) in the form field
//! `Action`. Rules are set per operation name and consumed in order; a request no rule
//! matches is forwarded as it came (method, path, query, headers including `Host` and the
//! SigV4 `Authorization`, body bytes) and moto's answer returned as it went.
//!
//! Every request is counted per operation, and the time spent forwarding it (sending it
//! to moto and reading the answer) is added up per operation ([`FaultProxy::stats`]):
//! how long a function behind the proxy waited on AWS.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_config::SdkConfig;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode, Version};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

use crate::domain::error::BoxError;

/// What the proxy does to a request its rule matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// DynamoDB's `TransactionCanceledException` (HTTP 400), one cancellation reason per
    /// item of the transaction, in order: `"None"` for an item that was fine,
    /// `"ConditionalCheckFailed"`, `"TransactionConflict"`, `"ThrottlingError"`, ...
    TransactionCanceled(Vec<String>),
    /// The service's throttling answer (HTTP 400): `ThrottlingException` for the JSON
    /// services, `Throttling` ("Rate exceeded") for SNS, as SNS puts it on the wire.
    Throttle,
    /// DynamoDB's `ProvisionedThroughputExceededException` (HTTP 400).
    ProvisionedThroughputExceeded,
    /// A 5xx with the protocol's internal-error body: DynamoDB `InternalServerError`,
    /// Secrets Manager `InternalServiceError`, SNS `InternalError`, others `InternalFailure`.
    ServerError(u16),
    /// Any other error answer, rendered in the request's protocol.
    Error {
        status: u16,
        code: String,
        message: String,
    },
    /// Hold the request this long without forwarding it, then close the connection
    /// without answering: a dependency that never answers.
    Stall(Duration),
    /// Forward the request (so it takes effect: the item is written, the SMS published),
    /// then hold the answer this long before returning it: an answer that comes too late.
    /// The forwarded request runs to its end even when the client gives up first (an
    /// attempt timeout closes its connection), as a request that reached AWS does.
    SlowAnswer(Duration),
    /// Close the connection at once without answering.
    Refuse,
    /// EventBridge's `PutEvents` answered 200 with `FailedEntryCount` = every entry of
    /// the request, each with `ErrorCode` `InternalFailure`: nothing was put, though the
    /// request as a whole succeeded.
    EntriesFailed,
    /// `BatchGetItem` answered with nothing read and every requested key back in
    /// `UnprocessedKeys`, as DynamoDB answers when it throttles a batch read.
    UnprocessedKeys,
}

impl Fault {
    /// DynamoDB's `TransactionConflictException` (HTTP 400) for a single-item write
    /// (PutItem, UpdateItem, DeleteItem) that met an item held by a transaction.
    pub fn transaction_conflict() -> Self {
        Self::Error {
            status: 400,
            code: "TransactionConflictException".into(),
            message: "Transaction is ongoing for the item".into(),
        }
    }

    /// A cancelled transaction with these reason codes, one per item.
    pub fn transaction_canceled<I, S>(reasons: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::TransactionCanceled(reasons.into_iter().map(Into::into).collect())
    }
}

/// How many matching requests a rule applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Times {
    /// The next `n` requests of the operation; then the rule is gone.
    Next(usize),
    /// Every request of the operation from now on (rules set after it are never reached).
    Always,
}

/// The wire protocol of a request, which decides how an injected error is rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Protocol {
    /// `awsJson1_0` / `awsJson1_1`: `X-Amz-Target: <service>.<Operation>`, errors as a JSON
    /// `__type`. `service` is the target's prefix: `DynamoDB_20120810`, `secretsmanager`.
    Json { service: String },
    /// `awsQuery` (SNS): `Action=<Operation>` in the form body or the query string,
    /// errors as an XML `ErrorResponse`.
    Query,
}

/// One request's AWS operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub operation: String,
    pub protocol: Protocol,
}

/// The AWS operation of a request, from its `X-Amz-Target` header, or else from the
/// `Action` field of its form body or query string; `None` for anything else (moto's own
/// `/moto-api/...` requests).
pub fn identify(headers: &HeaderMap, query: Option<&str>, body: &[u8]) -> Option<Call> {
    if let Some(target) = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|t| !t.is_empty())
    {
        let (service, operation) = target.rsplit_once('.').unwrap_or(("", target));
        if !operation.is_empty() {
            return Some(Call {
                operation: operation.to_owned(),
                protocol: Protocol::Json {
                    service: service.to_owned(),
                },
            });
        }
    }
    std::str::from_utf8(body)
        .ok()
        .and_then(form_action)
        .or_else(|| query.and_then(form_action))
        .map(|operation| Call {
            operation,
            protocol: Protocol::Query,
        })
}

/// The `Action` of an `application/x-www-form-urlencoded` string.
fn form_action(form: &str) -> Option<String> {
    form.split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == "Action")
        .map(|(_, value)| value.trim())
        .filter(|v| !v.is_empty() && v.chars().all(|c| c.is_ascii_alphanumeric()))
        .map(str::to_owned)
}

#[derive(Debug)]
struct Rule {
    fault: Fault,
    /// `None`: forever.
    remaining: Option<usize>,
}

/// What the proxy has seen of one operation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OperationStats {
    /// Requests seen, faulted or forwarded.
    pub requests: usize,
    /// Requests forwarded to moto (all but those a fault answered or dropped).
    pub forwarded: usize,
    /// Time spent forwarding them: from sending each to moto until its answer was read.
    pub forwarding: Duration,
}

#[derive(Debug, Default)]
struct Book {
    rules: HashMap<String, VecDeque<Rule>>,
    counts: BTreeMap<String, usize>,
    /// Per operation: requests forwarded and the time that took.
    forwarded: BTreeMap<String, (usize, Duration)>,
}

impl Book {
    /// Count a request of `operation` and take the fault its first rule says, if any.
    fn take(&mut self, operation: &str) -> Option<Fault> {
        *self.counts.entry(operation.to_owned()).or_default() += 1;
        let queue = self.rules.get_mut(operation)?;
        let rule = queue.front_mut()?;
        let fault = rule.fault.clone();
        if let Some(remaining) = rule.remaining.as_mut() {
            *remaining = remaining.saturating_sub(1);
            if *remaining == 0 {
                queue.pop_front();
            }
        }
        Some(fault)
    }

    fn forwarded(&mut self, operation: &str, took: Duration) {
        let (n, total) = self.forwarded.entry(operation.to_owned()).or_default();
        *n += 1;
        *total += took;
    }

    fn stats(&self) -> BTreeMap<String, OperationStats> {
        self.counts
            .iter()
            .map(|(operation, requests)| {
                let (forwarded, forwarding) =
                    self.forwarded.get(operation).copied().unwrap_or_default();
                let stats = OperationStats {
                    requests: *requests,
                    forwarded,
                    forwarding,
                };
                (operation.clone(), stats)
            })
            .collect()
    }
}

#[derive(Debug)]
struct State {
    /// `host:port` of moto.
    upstream: String,
    book: Mutex<Book>,
    request_ids: AtomicU64,
    epoch: u64,
}

impl State {
    fn book(&self) -> MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Forward `req` to moto, adding the time it takes to `operation`'s total.
    async fn forward(
        &self,
        operation: Option<&str>,
        req: Request<Bytes>,
    ) -> Result<Response<Full<Bytes>>, BoxError> {
        let started = Instant::now();
        let answer = forward(&self.upstream, req).await;
        if let Some(operation) = operation {
            self.book().forwarded(operation, started.elapsed());
        }
        answer
    }

    /// A fresh `x-amzn-RequestId`, shaped like AWS's (a UUID).
    fn request_id(&self) -> String {
        let n = self.request_ids.fetch_add(1, Ordering::Relaxed);
        format!(
            "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
            self.epoch & 0xffff_ffff,
            (self.epoch >> 32) & 0xffff,
            (n >> 48) & 0xfff,
            (n >> 36) & 0xfff,
            n & 0xffff_ffff_ffff
        )
    }
}

/// The proxy, serving on a free loopback port until dropped.
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    state: Arc<State>,
    accept: JoinHandle<()>,
}

impl Drop for FaultProxy {
    /// Stop accepting and drop every open connection (the tasks live in the accept task).
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl FaultProxy {
    /// Start a proxy in front of `upstream_url` (`http://host:port`, as `AWS_ENDPOINT_URL`).
    pub async fn start(upstream_url: &str) -> Result<Self, BoxError> {
        let upstream = upstream_url
            .strip_prefix("http://")
            .ok_or("fault proxy: the upstream must be http://host:port")?
            .trim_end_matches('/')
            .to_owned();
        if upstream.is_empty() || upstream.contains('/') {
            return Err(format!("fault proxy: {upstream_url} is not http://host:port").into());
        }
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let epoch = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| {
            u64::try_from(d.as_nanos() & u128::from(u64::MAX)).unwrap_or(0)
        });
        let state = Arc::new(State {
            upstream,
            book: Mutex::new(Book::default()),
            request_ids: AtomicU64::new(0),
            epoch,
        });
        let accept = tokio::spawn(accept_loop(listener, Arc::clone(&state)));
        Ok(Self {
            addr,
            state,
            accept,
        })
    }

    /// `http://127.0.0.1:PORT`, to use as an endpoint URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The functions' SDK configuration (`adapters::load_sdk_config`) with its endpoint
    /// pointed at the proxy. Set in code, so it wins over `AWS_ENDPOINT_URL`.
    pub async fn sdk_config(&self) -> SdkConfig {
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .timeout_config(crate::adapters::sdk_timeouts())
            .http_client(crate::adapters::https_client())
            .endpoint_url(self.url())
            .load()
            .await
    }

    /// Answer the next requests of `operation` (`"TransactWriteItems"`, `"Publish"`,
    /// `"GetSecretValue"`, ...) with `fault`, after the rules already set for it.
    pub fn inject(&self, operation: &str, fault: Fault, times: Times) {
        let remaining = match times {
            Times::Next(0) => return,
            Times::Next(n) => Some(n),
            Times::Always => None,
        };
        self.state
            .book()
            .rules
            .entry(operation.to_owned())
            .or_default()
            .push_back(Rule { fault, remaining });
    }

    /// `fault` for the next request of `operation`.
    pub fn once(&self, operation: &str, fault: Fault) {
        self.inject(operation, fault, Times::Next(1));
    }

    /// `fault` for every request of `operation` from now on.
    pub fn always(&self, operation: &str, fault: Fault) {
        self.inject(operation, fault, Times::Always);
    }

    /// Drop every rule: from now on all requests are forwarded. Counts are kept.
    pub fn clear(&self) {
        self.state.book().rules.clear();
    }

    /// Requests of `operation` seen so far, faulted or forwarded.
    pub fn count(&self, operation: &str) -> usize {
        self.state
            .book()
            .counts
            .get(operation)
            .copied()
            .unwrap_or(0)
    }

    /// Requests seen so far, per operation.
    pub fn counts(&self) -> BTreeMap<String, usize> {
        self.state.book().counts.clone()
    }

    /// Time spent so far forwarding requests of `operation` to moto.
    pub fn forwarding_time(&self, operation: &str) -> Duration {
        self.state
            .book()
            .forwarded
            .get(operation)
            .map_or(Duration::ZERO, |(_, took)| *took)
    }

    /// Everything seen so far, per operation, read at one instant: requests, those
    /// forwarded, and the time forwarding took.
    pub fn stats(&self) -> BTreeMap<String, OperationStats> {
        self.state.book().stats()
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<State>) {
    // Connections live in this set, so aborting this task closes them all.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(serve_connection(stream, Arc::clone(&state)));
                }
                // Out of descriptors, say: wait for connections to finish.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn serve_connection(stream: TcpStream, state: Arc<State>) {
    let service = service_fn(move |req| handle(Arc::clone(&state), req));
    // An error here is a closed or refused connection: the fault working, or the client gone.
    let _ = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

/// Answer one request. An `Err` makes hyper close the connection without answering.
async fn handle(
    state: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, BoxError> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await?.to_bytes();
    let call = identify(&parts.headers, parts.uri.query(), &body);
    let fault = call
        .as_ref()
        .and_then(|call| state.book().take(&call.operation));
    let operation = call.as_ref().map(|c| c.operation.clone());
    let (Some(call), Some(fault)) = (call, fault) else {
        return state
            .forward(operation.as_deref(), Request::from_parts(parts, body))
            .await;
    };
    let request_id = state.request_id();
    match fault {
        Fault::Stall(hold) => {
            tokio::time::sleep(hold).await;
            Err("fault proxy: stalled".into())
        }
        Fault::Refuse => Err("fault proxy: refused".into()),
        Fault::SlowAnswer(hold) => {
            // Its own task: hyper drops this future when the client hangs up, and the
            // request must still reach moto and take effect.
            let forwarding = {
                let state = Arc::clone(&state);
                let operation = call.operation.clone();
                tokio::spawn(async move {
                    state
                        .forward(Some(&operation), Request::from_parts(parts, body))
                        .await
                })
            };
            let answer = forwarding.await?;
            tokio::time::sleep(hold).await;
            answer
        }
        Fault::TransactionCanceled(reasons) => {
            Ok(transaction_canceled(&parts.headers, &reasons, &request_id))
        }
        Fault::UnprocessedKeys => {
            let request: Value = serde_json::from_slice(&body)?;
            let tables = request
                .get("RequestItems")
                .and_then(Value::as_object)
                .ok_or("fault proxy: UnprocessedKeys needs a BatchGetItem request")?;
            let responses: serde_json::Map<String, Value> = tables
                .keys()
                .map(|table| (table.clone(), json!([])))
                .collect();
            let answer = json!({ "Responses": responses, "UnprocessedKeys": tables });
            let content_type = json_content_type(&parts.headers, "DynamoDB_20120810");
            Ok(json_answer(
                StatusCode::OK,
                &content_type,
                &answer,
                &request_id,
            ))
        }
        Fault::EntriesFailed => {
            let request: Value = serde_json::from_slice(&body)?;
            let count = request
                .get("Entries")
                .and_then(Value::as_array)
                .ok_or("fault proxy: EntriesFailed needs a PutEvents request")?
                .len();
            let entry =
                json!({ "ErrorCode": "InternalFailure", "ErrorMessage": "Internal Failure" });
            let answer = json!({ "FailedEntryCount": count, "Entries": vec![entry; count] });
            let content_type = json_content_type(&parts.headers, "AWSEvents");
            Ok(json_answer(
                StatusCode::OK,
                &content_type,
                &answer,
                &request_id,
            ))
        }
        Fault::Throttle => {
            let (code, message) = match &call.protocol {
                Protocol::Json { service } if is_dynamodb(service) => (
                    "ThrottlingException",
                    "Rate of requests exceeds the allowed throughput.",
                ),
                Protocol::Json { .. } => ("ThrottlingException", "Rate exceeded"),
                Protocol::Query => ("Throttling", "Rate exceeded"),
            };
            Ok(error_answer(
                &call,
                &parts.headers,
                StatusCode::BAD_REQUEST,
                code,
                message,
                &request_id,
            ))
        }
        Fault::ProvisionedThroughputExceeded => Ok(error_answer(
            &call,
            &parts.headers,
            StatusCode::BAD_REQUEST,
            "ProvisionedThroughputExceededException",
            "The level of configured provisioned throughput for the table was exceeded. \
             Consider increasing your provisioning level with the UpdateTable API.",
            &request_id,
        )),
        Fault::ServerError(status) => {
            let (code, message) = match &call.protocol {
                Protocol::Json { service } if is_dynamodb(service) => {
                    ("InternalServerError", "Internal server error")
                }
                Protocol::Json { service } if service == "secretsmanager" => (
                    "InternalServiceError",
                    "An error occurred on the server side.",
                ),
                Protocol::Json { .. } => ("InternalFailure", "Internal failure"),
                Protocol::Query => ("InternalError", "Internal Error"),
            };
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            Ok(error_answer(
                &call,
                &parts.headers,
                status,
                code,
                message,
                &request_id,
            ))
        }
        Fault::Error {
            status,
            code,
            message,
        } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
            Ok(error_answer(
                &call,
                &parts.headers,
                status,
                &code,
                &message,
                &request_id,
            ))
        }
    }
}

fn is_dynamodb(service: &str) -> bool {
    service.starts_with("DynamoDB")
}

/// Per-connection headers (RFC 9110 §7.6.1), which a proxy does not pass on.
const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Send `req` to moto on a connection of its own and return its answer.
async fn forward(upstream: &str, req: Request<Bytes>) -> Result<Response<Full<Bytes>>, BoxError> {
    let (mut parts, body) = req.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    parts
        .headers
        .insert(hyper::header::CONNECTION, HeaderValue::from_static("close"));
    parts.version = Version::HTTP_11;
    let req = Request::from_parts(parts, Full::new(body));
    let stream = match TcpStream::connect(upstream).await {
        Ok(stream) => stream,
        Err(err) => return Ok(bad_gateway(&format!("{upstream}: {err}"))),
    };
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(stream)).await?;
    let driver = tokio::spawn(connection);
    let answer = async {
        let response = sender.send_request(req).await?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok::<_, hyper::Error>((parts, body))
    }
    .await;
    driver.abort();
    match answer {
        Ok((mut parts, body)) => {
            strip_hop_by_hop(&mut parts.headers);
            parts.version = Version::HTTP_11;
            Ok(Response::from_parts(parts, Full::new(body)))
        }
        Err(err) => Ok(bad_gateway(&format!("{upstream}: {err}"))),
    }
}

fn bad_gateway(reason: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(format!(
        "fault proxy: upstream failed: {reason}"
    ))));
    *response.status_mut() = StatusCode::BAD_GATEWAY;
    response
}

fn set_header(response: &mut Response<Full<Bytes>>, name: &'static str, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        response
            .headers_mut()
            .insert(HeaderName::from_static(name), value);
    }
}

/// The JSON content type the client spoke (`application/x-amz-json-1.0` or `-1.1`).
fn json_content_type(request: &HeaderMap, service: &str) -> String {
    request
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.starts_with("application/x-amz-json-"))
        .map_or_else(
            || {
                if is_dynamodb(service) {
                    "application/x-amz-json-1.0".to_owned()
                } else {
                    "application/x-amz-json-1.1".to_owned()
                }
            },
            str::to_owned,
        )
}

fn json_answer(
    status: StatusCode,
    content_type: &str,
    body: &Value,
    request_id: &str,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    set_header(&mut response, "content-type", content_type);
    set_header(&mut response, "x-amzn-requestid", request_id);
    response
}

/// An error in the request's protocol: JSON `{"__type", "message"}` (DynamoDB qualifies the
/// type with its namespace) or the query protocol's XML `ErrorResponse`.
fn error_answer(
    call: &Call,
    request: &HeaderMap,
    status: StatusCode,
    code: &str,
    message: &str,
    request_id: &str,
) -> Response<Full<Bytes>> {
    match &call.protocol {
        Protocol::Json { service } => {
            let body = if is_dynamodb(service) {
                json!({
                    "__type": format!("com.amazonaws.dynamodb.v20120810#{code}"),
                    "message": message,
                })
            } else {
                json!({ "__type": code, "Message": message })
            };
            json_answer(
                status,
                &json_content_type(request, service),
                &body,
                request_id,
            )
        }
        Protocol::Query => {
            let kind = if status.is_server_error() {
                "Receiver"
            } else {
                "Sender"
            };
            let body = format!(
                "<ErrorResponse xmlns=\"http://sns.amazonaws.com/doc/2010-03-31/\">\
                 <Error><Type>{kind}</Type><Code>{}</Code><Message>{}</Message></Error>\
                 <RequestId>{request_id}</RequestId></ErrorResponse>",
                xml_escape(code),
                xml_escape(message),
            );
            let mut response = Response::new(Full::new(Bytes::from(body)));
            *response.status_mut() = status;
            set_header(&mut response, "content-type", "text/xml");
            set_header(&mut response, "x-amzn-requestid", request_id);
            response
        }
    }
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// DynamoDB's `TransactionCanceledException`: HTTP 400 with one `CancellationReasons` entry
/// per item, `{"Code":"None"}` for the items that were fine.
fn transaction_canceled(
    request: &HeaderMap,
    reasons: &[String],
    request_id: &str,
) -> Response<Full<Bytes>> {
    json_answer(
        StatusCode::BAD_REQUEST,
        &json_content_type(request, "DynamoDB_20120810"),
        &transaction_canceled_body(reasons),
        request_id,
    )
}

fn transaction_canceled_body(reasons: &[String]) -> Value {
    let entries: Vec<Value> = reasons
        .iter()
        .map(|code| match reason_message(code) {
            Some(message) => json!({ "Code": code, "Message": message }),
            None => json!({ "Code": code }),
        })
        .collect();
    json!({
        "__type": "com.amazonaws.dynamodb.v20120810#TransactionCanceledException",
        "Message": format!(
            "Transaction cancelled, please refer cancellation reasons for specific reasons [{}]",
            reasons.join(", ")
        ),
        "CancellationReasons": entries,
    })
}

/// The message DynamoDB gives with a cancellation reason code.
fn reason_message(code: &str) -> Option<&'static str> {
    match code {
        "ConditionalCheckFailed" => Some("The conditional request failed"),
        "TransactionConflict" => Some("Transaction is ongoing for the item"),
        "ProvisionedThroughputExceeded" => Some(
            "The level of configured provisioned throughput for the table was exceeded. \
             Consider increasing your provisioning level with the UpdateTable API.",
        ),
        "ThrottlingError" => {
            Some("Throughput exceeds the current capacity of your table or index.")
        }
        "ItemCollectionSizeLimitExceeded" => Some("Collection size exceeded."),
        "ValidationError" => Some("One or more parameter values were invalid."),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn dynamodb_operation_comes_from_the_target_header() {
        let call = identify(
            &headers(&[
                ("x-amz-target", "DynamoDB_20120810.TransactWriteItems"),
                ("content-type", "application/x-amz-json-1.0"),
            ]),
            None,
            b"{}",
        )
        .unwrap();
        assert_eq!(call.operation, "TransactWriteItems");
        assert_eq!(
            call.protocol,
            Protocol::Json {
                service: "DynamoDB_20120810".into()
            }
        );
    }

    #[test]
    fn secrets_manager_operation_comes_from_the_target_header() {
        let call = identify(
            &headers(&[("X-Amz-Target", "secretsmanager.GetSecretValue")]),
            None,
            br#"{"SecretId":"x"}"#,
        )
        .unwrap();
        assert_eq!(call.operation, "GetSecretValue");
        assert_eq!(
            call.protocol,
            Protocol::Json {
                service: "secretsmanager".into()
            }
        );
    }

    #[test]
    fn sns_operation_comes_from_the_form_body() {
        let body = b"Action=Publish&Version=2010-03-31&PhoneNumber=%2B77001234567&Message=hi";
        let call = identify(
            &headers(&[("content-type", "application/x-www-form-urlencoded")]),
            None,
            body,
        )
        .unwrap();
        assert_eq!(call.operation, "Publish");
        assert_eq!(call.protocol, Protocol::Query);
    }

    #[test]
    fn sns_operation_comes_from_the_query_string_when_the_body_has_none() {
        let call = identify(
            &HeaderMap::new(),
            Some("Version=2010-03-31&Action=Publish"),
            b"",
        )
        .unwrap();
        assert_eq!(call.operation, "Publish");
    }

    #[test]
    fn requests_without_an_operation_are_not_identified() {
        assert_eq!(identify(&HeaderMap::new(), None, b""), None);
        assert_eq!(identify(&HeaderMap::new(), None, b"{\"Action\":1}"), None);
        assert_eq!(identify(&HeaderMap::new(), Some("Action="), b""), None);
        assert_eq!(
            identify(
                &headers(&[("x-amz-target", "DynamoDB_20120810.")]),
                None,
                b""
            ),
            None
        );
    }

    #[test]
    fn rules_are_consumed_in_order_and_counted() {
        let mut book = Book::default();
        book.rules.entry("PutItem".into()).or_default().extend([
            Rule {
                fault: Fault::Throttle,
                remaining: Some(2),
            },
            Rule {
                fault: Fault::Refuse,
                remaining: Some(1),
            },
        ]);
        assert_eq!(book.take("PutItem"), Some(Fault::Throttle));
        assert_eq!(book.take("PutItem"), Some(Fault::Throttle));
        assert_eq!(book.take("PutItem"), Some(Fault::Refuse));
        assert_eq!(book.take("PutItem"), None);
        assert_eq!(book.take("GetItem"), None);
        assert_eq!(book.counts["PutItem"], 4);
        assert_eq!(book.counts["GetItem"], 1);
    }

    #[test]
    fn forwarding_time_adds_up_per_operation_beside_the_counts() {
        let mut book = Book::default();
        book.take("GetItem");
        book.take("GetItem");
        book.take("Publish");
        book.forwarded("GetItem", Duration::from_millis(3));
        book.forwarded("GetItem", Duration::from_millis(4));
        let stats = book.stats();
        assert_eq!(
            stats["GetItem"],
            OperationStats {
                requests: 2,
                forwarded: 2,
                forwarding: Duration::from_millis(7),
            }
        );
        assert_eq!(
            stats["Publish"],
            OperationStats {
                requests: 1,
                forwarded: 0,
                forwarding: Duration::ZERO,
            }
        );
    }

    #[test]
    fn a_cancelled_transaction_carries_one_reason_per_item() {
        let response = transaction_canceled(
            &HeaderMap::new(),
            &["None".into(), "TransactionConflict".into()],
            "id",
        );
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            response.headers()[CONTENT_TYPE],
            "application/x-amz-json-1.0"
        );
        assert_eq!(response.headers()["x-amzn-RequestId"], "id");
        assert_eq!(
            transaction_canceled_body(&["None".into(), "TransactionConflict".into()]),
            json!({
                "__type": "com.amazonaws.dynamodb.v20120810#TransactionCanceledException",
                "Message": "Transaction cancelled, please refer cancellation reasons for specific reasons [None, TransactionConflict]",
                "CancellationReasons": [
                    { "Code": "None" },
                    { "Code": "TransactionConflict", "Message": "Transaction is ongoing for the item" },
                ],
            })
        );
    }
}

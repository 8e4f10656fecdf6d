//! The request edge driven by arbitrary bytes: the entry points of the fuzz targets in
//! `fuzz/` and of the test that replays their corpus (`shared/tests/fuzz_corpus.rs`).
//!
//! Each target reads its input the way a function reads a request — the gateway event
//! through [`event::sanitize`](super::event::sanitize) and `lambda_http`'s conversion,
//! then the body and headers through the very functions the handlers call, into the
//! domain newtypes — and checks CONTRACT §1 "Every response" on the outcome: malformed
//! input is a 400 `BAD_REQUEST` whose message names the field, nothing at the edge is
//! any other error, and what parses round-trips. A breach is returned, not panicked, so
//! the library keeps its lints; the callers panic on it, as they do on any panic inside.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use lambda_http::http::{HeaderValue, Method, StatusCode, header};
use lambda_http::request::LambdaRequest;
use lambda_http::{Body, Request};
use secrecy::SecretSlice;
use serde_json::{Map, Value, json};

use super::{
    MAX_BODY_BYTES, MAX_REFRESH_TOKEN_BYTES, code_field, error_response, header_str,
    idempotency_key_hash, json_object, phone_field, refresh_token_field, request_id, require_post,
    source_ip,
};
use crate::config::SmsMessages;
use crate::domain::{AuthError, ChainKey, OtpCode, PhoneNumber, RefreshToken};

/// An invariant of the request edge that an input broke.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Breach(String);

impl fmt::Display for Breach {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Breach {}

macro_rules! ensure {
    ($cond:expr, $($why:tt)+) => {
        if !$cond {
            return Err(Breach(format!($($why)+)));
        }
    };
}

/// The fuzz targets, by the names `fuzz/` and its corpus directories use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The input is a gateway event as JSON text (any kind `lambda_http` knows).
    EventJson,
    /// The input fills the fields of an HTTP API v2, REST API v1 or ALB event template.
    EventTemplate,
    /// The input is a POST body, optionally after an `Idempotency-Key` header.
    Body,
    /// The input is a presented refresh token.
    RefreshToken,
}

impl Target {
    pub const ALL: [Target; 4] = [
        Target::EventJson,
        Target::EventTemplate,
        Target::Body,
        Target::RefreshToken,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Target::EventJson => "event_json",
            Target::EventTemplate => "event_template",
            Target::Body => "body",
            Target::RefreshToken => "refresh_token",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == name)
    }

    pub fn run(self, data: &[u8]) -> Result<(), Breach> {
        match self {
            Target::EventJson => event_json(data),
            Target::EventTemplate => event_template(data),
            Target::Body => body(data),
            Target::RefreshToken => refresh_token(data),
        }
    }
}

/// Arbitrary bytes as the event Lambda hands the function: what does not deserialize
/// never reaches the handler (the runtime reports it); everything else is sanitized,
/// converted and read by every endpoint's edge.
pub fn event_json(data: &[u8]) -> Result<(), Breach> {
    let Ok(mut payload) = serde_json::from_slice::<LambdaRequest>(data) else {
        return Ok(());
    };
    super::event::sanitize(&mut payload);
    let req = Request::from(payload);
    edge(&req)
}

/// The fields of one event template, cut from the input: a flags byte, then
/// NUL-separated texts (see [`Fields`]).
pub fn event_template(data: &[u8]) -> Result<(), Breach> {
    let fields = Fields::cut(data);
    let event = fields.event();
    let text = event.to_string();
    let Ok(req) = super::event::request_from_json(&text) else {
        // Only header maps `http` refuses (a name or value it cannot hold) stop here.
        return Ok(());
    };
    check_conversion(&fields, &req)?;
    edge(&req)
}

/// A POST body (and, with the first byte odd, an `Idempotency-Key` header up to the
/// first NUL) as the handlers read it, without a gateway event around it.
pub fn body(data: &[u8]) -> Result<(), Breach> {
    let (flags, rest) = data.split_first().unwrap_or((&0, &[]));
    let (key, bytes) = if flags & 1 == 1 {
        let (key, bytes) = split_nul(rest);
        (Some(key), bytes)
    } else {
        (None, rest)
    };
    let body = match (flags & 2 == 2, std::str::from_utf8(bytes)) {
        (false, Ok(text)) => Body::Text(text.to_owned()),
        _ => Body::Binary(bytes.to_vec()),
    };
    let mut req = Request::new(body);
    *req.method_mut() = Method::POST;
    if let Some(value) = key.and_then(|k| HeaderValue::from_bytes(k).ok()) {
        req.headers_mut().insert("idempotency-key", value);
    }
    edge(&req)?;
    check_body_fields(bytes)
}

/// A presented refresh token, in a body and on its own: the edge takes it iff it is
/// 1–512 bytes, and it is one of ours in shape iff it is 86 canonical base64url
/// characters (64 bytes: session id and secret). What parses round-trips; what is not ours is unknown,
/// never malformed (CONTRACT §1).
pub fn refresh_token(data: &[u8]) -> Result<(), Breach> {
    let raw = String::from_utf8_lossy(data);
    let raw = raw.as_ref();
    let mut body = Map::new();
    body.insert("refreshToken".into(), Value::String(raw.to_owned()));
    let field = refresh_token_field(&body);
    let acceptable = !raw.is_empty() && raw.len() <= MAX_REFRESH_TOKEN_BYTES;
    match &field {
        Ok(taken) => ensure!(
            acceptable && *taken == raw,
            "refreshToken of {} bytes taken",
            raw.len()
        ),
        Err(err) => {
            ensure!(!acceptable, "refreshToken of {} bytes refused", raw.len());
            check_bad_request(err, &["refreshToken:"])?;
        }
    }
    // 64 bytes in canonical unpadded base64url: 86 characters whose last carries no
    // stray bits.
    let ours_in_shape = raw.len() == 86
        && URL_SAFE_NO_PAD
            .decode(raw)
            .is_ok_and(|bytes| bytes.len() == TOKEN_BYTES);
    match RefreshToken::parse(raw) {
        Ok(token) => {
            ensure!(ours_in_shape, "{raw:?} parsed as a refresh token");
            check_token(&token, raw)?;
        }
        Err(_) => ensure!(!ours_in_shape, "{raw:?} refused as a refresh token"),
    }
    // Any 64 bytes, encoded as we issue tokens, parse back to themselves.
    if let Some(bytes) = data.get(..TOKEN_BYTES) {
        let text = URL_SAFE_NO_PAD.encode(bytes);
        let Ok(token) = RefreshToken::parse(&text) else {
            return Err(Breach(format!("issued-shape token {text} refused")));
        };
        check_token(&token, &text)?;
    }
    let req = post(&json!({ "refreshToken": raw }).to_string());
    edge(&req)
}

/// Bytes in a refresh token: a 32-byte session id and 32 secret bytes.
const TOKEN_BYTES: usize = 64;

fn check_token(token: &RefreshToken, raw: &str) -> Result<(), Breach> {
    ensure!(token.expose() == raw, "a parsed token changed its text");
    let decoded = URL_SAFE_NO_PAD.decode(raw).unwrap_or_default();
    let sid = URL_SAFE_NO_PAD
        .decode(token.session_id().as_str())
        .unwrap_or_default();
    ensure!(
        decoded.len() == TOKEN_BYTES && decoded.get(..32) == Some(sid.as_slice()),
        "the session id of {raw:?} is not its first 32 bytes"
    );
    let digest = ring::digest::digest(&ring::digest::SHA256, raw.as_bytes());
    ensure!(
        token.hash() == URL_SAFE_NO_PAD.encode(digest),
        "the stored hash of a token is not its SHA-256"
    );
    ensure!(
        format!("{token:?}") == "RefreshToken(..)",
        "Debug shows a refresh token"
    );
    let key = ChainKey::derive(&SecretSlice::from(b"fuzz pepper".to_vec()));
    let next = token.successor(&key);
    let Ok(reparsed) = RefreshToken::parse(next.expose()) else {
        return Err(Breach("a successor does not parse".into()));
    };
    ensure!(
        reparsed.session_id() == token.session_id() && next.expose() != raw,
        "a successor left its session or repeated its token"
    );
    Ok(())
}

/// Every endpoint's reading of one request, as its handler does it before any AWS call,
/// with the contract's answer for each outcome.
fn edge(req: &Request) -> Result<(), Breach> {
    let post = req.method() == Method::POST;
    let body_fits = match req.body() {
        Body::Text(t) => t.len() <= MAX_BODY_BYTES,
        Body::Binary(b) => b.len() <= MAX_BODY_BYTES,
        _ => true,
    };
    let endpoint = |name: &str, outcome: Result<(), AuthError>, fields: &[&str]| match outcome {
        Ok(()) => {
            ensure!(
                post && body_fits,
                "{name}: accepted a non-POST or oversized request"
            );
            Ok(())
        }
        Err(AuthError::MethodNotAllowed { allow }) => {
            ensure!(!post && allow == "POST", "{name}: 405 for a POST");
            check_response(
                &AuthError::MethodNotAllowed { allow },
                StatusCode::METHOD_NOT_ALLOWED,
            )
        }
        Err(err) => check_bad_request(&err, fields),
    };
    endpoint(
        "otp-send",
        send_edge(req).map(|_| ()),
        &["body:", "phone:", "Idempotency-Key:"],
    )?;
    endpoint(
        "otp-verify",
        verify_edge(req).map(|_| ()),
        &["body:", "phone:", "code:"],
    )?;
    for (name, unknown, status) in [
        (
            "token-refresh",
            AuthError::InvalidRefreshToken,
            StatusCode::UNAUTHORIZED,
        ),
        ("logout", AuthError::InvalidToken, StatusCode::BAD_REQUEST),
    ] {
        match refresh_edge(req) {
            Ok(Err(_unknown)) => check_response(&unknown, status)?,
            other => endpoint(name, other.map(|_| ()), &["body:", "refreshToken:"])?,
        }
    }
    // Read by the handlers too; none of them may fail a request.
    if let Some(ip) = source_ip(req) {
        let ip = ip.as_str();
        ensure!(
            ip.parse::<std::net::Ipv4Addr>().is_ok() || ip.ends_with("::/64"),
            "source IP {ip:?} is neither IPv4 nor an IPv6 /64"
        );
    }
    let _ = request_id(req);
    let messages = sms_messages()?;
    let text = messages
        .for_accept_language(header_str(req, "accept-language"))
        .render("123456");
    ensure!(
        ["kk 123456", "ru 123456", "en 123456", "default 123456"].contains(&text.as_str()),
        "Accept-Language chose {text:?}"
    );
    ensure!(
        req.uri().path().starts_with('/'),
        "path {:?} is not absolute",
        req.uri().path()
    );
    Ok(())
}

/// POST /otp/send before any AWS call, in the handler's order (the phone prefix check
/// needs configuration and comes between the phone and the key).
fn send_edge(req: &Request) -> Result<(PhoneNumber, Option<String>), AuthError> {
    require_post(req)?;
    let body = json_object(req)?;
    let phone = phone_field(&body)?;
    let key = idempotency_key_hash(req)?;
    Ok((phone, key))
}

/// POST /otp/verify before any AWS call.
fn verify_edge(req: &Request) -> Result<(PhoneNumber, OtpCode), AuthError> {
    require_post(req)?;
    let body = json_object(req)?;
    Ok((phone_field(&body)?, code_field(&body)?))
}

/// POST /token/refresh and /logout before any AWS call: the inner error is a token that
/// is not ours in shape (401 `INVALID_REFRESH_TOKEN`, 400 `INVALID_TOKEN`).
fn refresh_edge(
    req: &Request,
) -> Result<Result<RefreshToken, crate::domain::session::UnknownToken>, AuthError> {
    require_post(req)?;
    let body = json_object(req)?;
    Ok(RefreshToken::parse(refresh_token_field(&body)?))
}

/// The fields a JSON body carries, read one by one: a field is taken iff it is a
/// string of the contract's shape, and every refusal names it; what is taken
/// round-trips through a body of its own.
fn check_body_fields(bytes: &[u8]) -> Result<(), Breach> {
    let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(bytes) else {
        return Ok(());
    };
    let phone_shape = |s: &str| {
        s.len() == 12
            && s.bytes().enumerate().all(|(i, b)| match i {
                0 => b == b'+',
                1 => b == b'7',
                _ => b.is_ascii_digit(),
            })
    };
    let code_shape = |s: &str| s.len() == 6 && s.bytes().all(|b| b.is_ascii_digit());
    let as_text = |field: &str| body.get(field).and_then(Value::as_str);
    match phone_field(&body) {
        Ok(phone) => {
            ensure!(
                as_text("phone") == Some(phone.e164()) && phone_shape(phone.e164()),
                "phone {:?} taken",
                body.get("phone")
            );
            let again =
                serde_json::from_value::<Map<String, Value>>(json!({"phone": phone.e164()}))
                    .map_err(|e| Breach(e.to_string()))?;
            ensure!(
                phone_field(&again).is_ok_and(|p| p == phone),
                "a phone does not round-trip"
            );
        }
        Err(err) => {
            ensure!(
                !as_text("phone").is_some_and(phone_shape),
                "phone {:?} refused",
                body.get("phone")
            );
            check_bad_request(&err, &["phone:"])?;
        }
    }
    match code_field(&body) {
        Ok(code) => ensure!(
            as_text("code") == Some(code.expose()) && code_shape(code.expose()),
            "code {:?} taken",
            body.get("code")
        ),
        Err(err) => {
            ensure!(
                !as_text("code").is_some_and(code_shape),
                "code {:?} refused",
                body.get("code")
            );
            check_bad_request(&err, &["code:"])?;
        }
    }
    match refresh_token_field(&body) {
        Ok(token) => ensure!(
            as_text("refreshToken") == Some(token)
                && !token.is_empty()
                && token.len() <= MAX_REFRESH_TOKEN_BYTES,
            "refreshToken taken"
        ),
        Err(err) => check_bad_request(&err, &["refreshToken:"])?,
    }
    Ok(())
}

/// A refusal at the edge: a 400 `BAD_REQUEST` whose message names one of `fields`,
/// with exactly the contract's keys and headers.
fn check_bad_request(err: &AuthError, fields: &[&str]) -> Result<(), Breach> {
    let AuthError::BadRequest(message) = err else {
        return Err(Breach(format!("malformed input answered {err:?}")));
    };
    ensure!(
        fields.iter().any(|f| message.starts_with(f)),
        "message {message:?} names none of {fields:?}"
    );
    check_response(err, StatusCode::BAD_REQUEST)
}

/// The response of an error: its status, JSON with only `code` and `message`, no-store.
fn check_response(err: &AuthError, status: StatusCode) -> Result<(), Breach> {
    let resp = error_response(err, None);
    ensure!(
        resp.status() == status,
        "{err:?} answered {}",
        resp.status()
    );
    let headers = resp.headers();
    ensure!(
        headers.get(header::CONTENT_TYPE) == Some(&HeaderValue::from_static("application/json"))
            && headers.get(header::CACHE_CONTROL) == Some(&HeaderValue::from_static("no-store")),
        "{err:?}: wrong Content-Type or Cache-Control"
    );
    ensure!(
        (status == StatusCode::UNAUTHORIZED) == headers.contains_key(header::WWW_AUTHENTICATE),
        "{err:?}: WWW-Authenticate on a {status}"
    );
    let text = match resp.body() {
        Body::Text(t) => t.as_str(),
        _ => "",
    };
    let Ok(Value::Object(body)) = serde_json::from_str::<Value>(text) else {
        return Err(Breach(format!(
            "{err:?}: body {text:?} is not a JSON object"
        )));
    };
    let mut keys: Vec<&str> = body.keys().map(String::as_str).collect();
    keys.sort_unstable();
    ensure!(
        keys == ["code", "message"] && body.get("code").is_some_and(Value::is_string),
        "{err:?}: body keys {keys:?}"
    );
    if let AuthError::BadRequest(message) = err {
        ensure!(
            body.get("code") == Some(&json!("BAD_REQUEST"))
                && body.get("message") == Some(&json!(message)),
            "{err:?}: body {text}"
        );
    }
    Ok(())
}

/// After sanitizing and conversion, the body is what the event carried (decoded if
/// flagged base64), or none if it was flagged base64 and is not, and a well-formed
/// `Idempotency-Key` is still there.
fn check_conversion(fields: &Fields, req: &Request) -> Result<(), Breach> {
    let key = fields.idempotency_key.as_str();
    let visible = (1..=255).contains(&key.len()) && key.bytes().all(|b| (0x21..=0x7e).contains(&b));
    if visible && fields.extra_name != "idempotency-key" {
        ensure!(
            header_str(req, "idempotency-key") == Some(key),
            "Idempotency-Key {key:?} lost in the conversion"
        );
    }
    let got: &[u8] = match req.body() {
        Body::Text(t) => t.as_bytes(),
        Body::Binary(b) => b,
        _ => &[],
    };
    let Some(sent) = &fields.body else {
        ensure!(got.is_empty(), "a body from nowhere");
        return Ok(());
    };
    if fields.is_base64 {
        match STANDARD.decode(sent) {
            Ok(decoded) => ensure!(got == decoded.as_slice(), "a base64 body changed"),
            Err(_) => ensure!(got.is_empty(), "an undecodable base64 body was kept"),
        }
    } else {
        ensure!(got == sent.as_bytes(), "a text body changed");
    }
    Ok(())
}

fn sms_messages() -> Result<SmsMessages, Breach> {
    let env = |name: &str| -> Option<String> {
        match name {
            "SMS_MESSAGE" => Some("default {code}".into()),
            "SMS_MESSAGE_KK" => Some("kk {code}".into()),
            "SMS_MESSAGE_RU" => Some("ru {code}".into()),
            "SMS_MESSAGE_EN" => Some("en {code}".into()),
            _ => None,
        }
    };
    SmsMessages::load(&env).map_err(|e| Breach(e.to_string()))
}

/// A POST with a JSON text body.
fn post(body: &str) -> Request {
    let mut req = Request::new(Body::Text(body.to_owned()));
    *req.method_mut() = Method::POST;
    req
}

fn split_nul(bytes: &[u8]) -> (&[u8], &[u8]) {
    match bytes.iter().position(|b| *b == 0) {
        Some(at) => (
            bytes.get(..at).unwrap_or_default(),
            bytes.get(at + 1..).unwrap_or_default(),
        ),
        None => (bytes, &[]),
    }
}

/// The event kinds a template can be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    HttpApiV2,
    RestApiV1,
    Alb,
}

/// One event template's fields. The first input byte: kind (`% 3`: HTTP API v2, REST
/// API v1, ALB), then bits 2 base64 body, 3 a GET instead of a POST, 4 no body at all,
/// 5 ALB headers as `multiValueHeaders` only, 6 a query string (the extra value).
/// The rest, split at NUL bytes (lossy UTF-8): path, `Host`, `X-Forwarded-Proto`,
/// stage, domain name, source IP (`X-Forwarded-For` on ALB), `Idempotency-Key`,
/// `Accept-Language`, body, and one more header's name and value.
#[derive(Debug, Clone)]
struct Fields {
    kind: Kind,
    is_base64: bool,
    method: &'static str,
    multi_value_only: bool,
    query: bool,
    path: String,
    host: String,
    proto: String,
    stage: String,
    domain_name: String,
    source_ip: String,
    idempotency_key: String,
    accept_language: String,
    body: Option<String>,
    extra_name: String,
    extra_value: String,
}

impl Fields {
    fn cut(data: &[u8]) -> Self {
        let (flags, rest) = data.split_first().unwrap_or((&0, &[]));
        let mut parts = rest
            .split(|b| *b == 0)
            .map(|p| String::from_utf8_lossy(p).into_owned());
        let mut next = || parts.next().unwrap_or_default();
        let kind = match flags % 3 {
            0 => Kind::HttpApiV2,
            1 => Kind::RestApiV1,
            _ => Kind::Alb,
        };
        let path = next();
        let host = next();
        let proto = next();
        let stage = next();
        let domain_name = next();
        let source_ip = next();
        let idempotency_key = next();
        let accept_language = next();
        let body = next();
        Self {
            kind,
            is_base64: flags & 4 != 0,
            method: if flags & 8 != 0 { "GET" } else { "POST" },
            multi_value_only: flags & 32 != 0,
            query: flags & 64 != 0,
            path,
            host,
            proto,
            stage,
            domain_name,
            source_ip,
            idempotency_key,
            accept_language,
            body: (flags & 16 == 0).then_some(body),
            extra_name: next().to_ascii_lowercase(),
            extra_value: next(),
        }
    }

    /// The event as the gateway would send it.
    fn event(&self) -> Value {
        let mut headers = Map::new();
        for (name, value) in [
            ("host", &self.host),
            ("x-forwarded-proto", &self.proto),
            ("idempotency-key", &self.idempotency_key),
            ("accept-language", &self.accept_language),
            ("content-type", &"application/json".to_owned()),
        ] {
            if !value.is_empty() {
                headers.insert(name.into(), json!(value));
            }
        }
        if self.kind == Kind::Alb && !self.source_ip.is_empty() {
            headers.insert("x-forwarded-for".into(), json!(self.source_ip));
        }
        if !self.extra_name.is_empty() {
            headers.insert(self.extra_name.clone(), json!(self.extra_value));
        }
        let multi: Map<String, Value> = headers
            .iter()
            .map(|(k, v)| (k.clone(), json!([v])))
            .collect();
        let body = self.body.as_ref().map_or(Value::Null, |b| json!(b));
        let (raw_query, query, multi_query) = if self.query {
            let v = &self.extra_value;
            (json!(v), json!({ "q": v }), json!({ "q": [v] }))
        } else {
            (json!(""), json!({}), json!({}))
        };
        match self.kind {
            Kind::HttpApiV2 => json!({
                "version": "2.0",
                "routeKey": "$default",
                "rawPath": self.path,
                "rawQueryString": raw_query,
                "queryStringParameters": query,
                "headers": headers,
                "requestContext": {
                    "accountId": "123456789012",
                    "apiId": "api-id",
                    "domainName": self.domain_name,
                    "http": {
                        "method": self.method,
                        "path": self.path,
                        "protocol": "HTTP/1.1",
                        "sourceIp": self.source_ip,
                        "userAgent": "fuzz",
                    },
                    "requestId": "id",
                    "routeKey": "$default",
                    "stage": self.stage,
                    "time": "01/Jan/2026:00:00:00 +0000",
                    "timeEpoch": 0,
                },
                "body": body,
                "isBase64Encoded": self.is_base64,
            }),
            Kind::RestApiV1 => json!({
                "resource": "/{proxy+}",
                "path": self.path,
                "httpMethod": self.method,
                "headers": headers,
                "multiValueHeaders": multi,
                "queryStringParameters": query,
                "multiValueQueryStringParameters": multi_query,
                "pathParameters": null,
                "stageVariables": null,
                "requestContext": {
                    "accountId": "123456789012",
                    "resourceId": "r",
                    "stage": self.stage,
                    "domainName": self.domain_name,
                    "requestId": "id",
                    "identity": { "sourceIp": self.source_ip },
                    "resourcePath": "/{proxy+}",
                    "httpMethod": self.method,
                    "apiId": "api-id",
                    "protocol": "HTTP/1.1",
                    "path": self.path,
                },
                "body": body,
                "isBase64Encoded": self.is_base64,
            }),
            Kind::Alb => {
                let mut event = json!({
                    "requestContext": {
                        "elb": { "targetGroupArn": "arn:aws:elasticloadbalancing:eu-central-1:123456789012:targetgroup/t/0" },
                    },
                    "httpMethod": self.method,
                    "path": self.path,
                    "body": body,
                    "isBase64Encoded": self.is_base64,
                });
                let (headers_key, query_key, headers, query) = if self.multi_value_only {
                    (
                        "multiValueHeaders",
                        "multiValueQueryStringParameters",
                        json!(multi),
                        multi_query,
                    )
                } else {
                    ("headers", "queryStringParameters", json!(headers), query)
                };
                if let Value::Object(map) = &mut event {
                    map.insert(headers_key.into(), headers);
                    map.insert(query_key.into(), query);
                }
                event
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use lambda_http::http;

    fn request(method: &str, body: &str, key: Option<&str>) -> Request {
        let mut builder = http::Request::builder().method(method).uri("/");
        if let Some(key) = key {
            builder = builder.header("idempotency-key", key);
        }
        builder.body(Body::Text(body.to_owned())).unwrap()
    }

    #[test]
    fn every_endpoint_edge_refuses_malformed_input_naming_the_field() {
        let req = request("POST", r#"{"phone":"+7700123456","code":"12345"}"#, None);
        let send = send_edge(&req).unwrap_err();
        assert!(matches!(&send, AuthError::BadRequest(m) if m.starts_with("phone:")));
        let req = request("POST", r#"{"phone":"+77001234567","code":1}"#, None);
        let verify = verify_edge(&req).unwrap_err();
        assert!(matches!(&verify, AuthError::BadRequest(m) if m.starts_with("code:")));
        let req = request("POST", r#"{"phone":"+77001234567"}"#, Some(""));
        assert!(matches!(send_edge(&req).unwrap_err(),
            AuthError::BadRequest(m) if m.starts_with("Idempotency-Key:")));
        assert!(edge(&req).is_ok());
    }

    #[test]
    fn a_breach_is_reported_not_panicked() {
        let err = AuthError::internal("x", "y");
        assert!(check_bad_request(&err, &["body:"]).is_err());
        let named_elsewhere = AuthError::bad_request("phone: no");
        assert!(check_bad_request(&named_elsewhere, &["code:"]).is_err());
    }

    #[test]
    fn templates_of_every_kind_reach_the_handlers_edge() {
        // HTTP API v2, REST v1, ALB; with a query string; ALB with multi-value headers.
        for flags in [0u8, 1, 2, 64, 65, 66, 98] {
            let mut data = vec![flags];
            for part in [
                "/Prod/api/v1/auth/otp/verify",
                "example.com",
                "https",
                "Prod",
                "example.com",
                "192.168.0.1",
                "key-1",
                "ru;q=0.5, kk",
                r#"{"phone":"+77001234567","code":"123456"}"#,
            ] {
                data.extend_from_slice(part.as_bytes());
                data.push(0);
            }
            let fields = Fields::cut(&data);
            let req = super::super::event::request_from_json(&fields.event().to_string()).unwrap();
            assert_eq!(req.method(), Method::POST);
            let (phone, code) = verify_edge(&req).unwrap();
            assert_eq!((phone.e164(), code.expose()), ("+77001234567", "123456"));
            assert!(send_edge(&req).unwrap().1.is_some());
            assert_eq!(source_ip(&req).unwrap().as_str(), "192.168.0.1");
            event_template(&data).unwrap();
        }
    }

    #[test]
    fn a_token_in_the_issued_shape_parses_back() {
        refresh_token(&[7u8; 64]).unwrap();
        refresh_token(b"").unwrap();
        refresh_token(&[b'A'; 600]).unwrap();
    }
}

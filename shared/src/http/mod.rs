//! The HTTP edge: read a gateway request into a JSON object, and the one place where an
//! [`AuthError`] becomes a status, headers and body (CONTRACT §1 "Every response").

pub mod event;
pub mod probe;

use lambda_http::http::{HeaderValue, StatusCode, header};
use lambda_http::{Body, Request, RequestExt, Response};
use serde_json::{Map, Value, json};

use crate::domain::{AuthError, OtpCode, PhoneNumber, SourceIp};

/// Largest accepted body, after base64 decoding (CONTRACT §1).
pub const MAX_BODY_BYTES: usize = 4096;
/// Longest refresh token accepted for a look-up, in UTF-8 bytes (CONTRACT §1).
pub const MAX_REFRESH_TOKEN_BYTES: usize = 512;
/// How long a 503 asks the client to wait.
pub const UNAVAILABLE_RETRY_SECONDS: u64 = 2;

/// Caching of a response (RFC 6749 §5.1 for anything carrying tokens).
#[derive(Debug, Clone, Copy)]
pub enum CachePolicy {
    NoStore,
    Public { max_age: u32 },
}

pub fn require_post(req: &Request) -> Result<(), AuthError> {
    if req.method() == lambda_http::http::Method::POST {
        Ok(())
    } else {
        Err(AuthError::MethodNotAllowed { allow: "POST" })
    }
}

/// The body as a JSON object, whatever the Content-Type says; gateway base64 is already
/// decoded by `lambda_http` into `Body::Binary`.
pub fn json_object(req: &Request) -> Result<Map<String, Value>, AuthError> {
    let bytes: &[u8] = match req.body() {
        Body::Empty => &[],
        Body::Text(text) => text.as_bytes(),
        Body::Binary(bytes) => bytes,
        _ => &[],
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(AuthError::bad_request("body: a JSON object is required"));
    }
    if bytes.len() > MAX_BODY_BYTES {
        return Err(AuthError::bad_request("body: must be at most 4 KiB"));
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(AuthError::bad_request("body: must be a JSON object")),
        Err(_) => Err(AuthError::bad_request("body: not valid JSON")),
    }
}

/// A required string field; the error names it.
pub fn string_field<'a>(
    body: &'a Map<String, Value>,
    field: &'static str,
) -> Result<&'a str, AuthError> {
    match body.get(field) {
        None | Some(Value::Null) => Err(AuthError::bad_request(format!("{field}: is required"))),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(AuthError::bad_request(format!("{field}: must be a string"))),
    }
}

/// The `phone` field as a [`PhoneNumber`]; the error names the field.
pub fn phone_field(body: &Map<String, Value>) -> Result<PhoneNumber, AuthError> {
    PhoneNumber::parse(string_field(body, "phone")?)
        .map_err(|_| AuthError::bad_request("phone: must be +7 followed by 10 digits"))
}

/// The `code` field as an [`OtpCode`]; the error names the field.
pub fn code_field(body: &Map<String, Value>) -> Result<OtpCode, AuthError> {
    OtpCode::parse(string_field(body, "code")?)
        .map_err(|_| AuthError::bad_request("code: must be exactly 6 digits"))
}

/// The `refreshToken` field, checked for emptiness and size only: any other shape is an
/// unknown token, not a malformed request (CONTRACT §1).
pub fn refresh_token_field(body: &Map<String, Value>) -> Result<&str, AuthError> {
    let token = string_field(body, "refreshToken")?;
    if token.is_empty() {
        return Err(AuthError::bad_request("refreshToken: must not be empty"));
    }
    if token.len() > MAX_REFRESH_TOKEN_BYTES {
        return Err(AuthError::bad_request(
            "refreshToken: must be at most 512 bytes",
        ));
    }
    Ok(token)
}

/// Which sessions a logout ends (CONTRACT §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogoutScope {
    /// The token's session (the default, §4).
    Session,
    /// Every other live session of the token's account; the token's stays live.
    Others,
    /// Every session of the account.
    All,
}

/// The optional `scope` of a logout: absent is `session`; any other value, a
/// non-string or null is a 400 naming the field.
pub fn logout_scope_field(body: &Map<String, Value>) -> Result<LogoutScope, AuthError> {
    match body.get("scope") {
        None => Ok(LogoutScope::Session),
        Some(Value::String(s)) if s == "session" => Ok(LogoutScope::Session),
        Some(Value::String(s)) if s == "others" => Ok(LogoutScope::Others),
        Some(Value::String(s)) if s == "all" => Ok(LogoutScope::All),
        Some(_) => Err(AuthError::bad_request(
            "scope: must be \"session\", \"others\" or \"all\"",
        )),
    }
}

pub fn json_response(status: StatusCode, body: &Value, cache: CachePolicy) -> Response<Body> {
    let mut response = Response::new(Body::Text(body.to_string()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let cache_value = match cache {
        CachePolicy::NoStore => HeaderValue::from_static("no-store"),
        CachePolicy::Public { max_age } => {
            HeaderValue::from_str(&format!("public, max-age={max_age}"))
                .unwrap_or_else(|_| HeaderValue::from_static("no-store"))
        }
    };
    headers.insert(header::CACHE_CONTROL, cache_value);
    response
}

/// The request's id as API Gateway logs it: `requestContext.requestId` of an HTTP API,
/// REST API or function URL event, which is `$context.requestId` in the access log. So
/// the one id in an error body (CONTRACT §1 `requestId`) finds the access-log line and
/// the audit lines of that request. Lambda's own id stays in the platform's
/// START/END/REPORT lines; it is used here only for an event without a gateway id (ALB).
/// An id that is not a short token of URL-safe or base64 characters is not taken.
pub fn request_id(req: &Request) -> Option<String> {
    use lambda_http::request::RequestContext;
    let gateway = match req.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(ctx)) => ctx.request_id.clone(),
        Some(RequestContext::ApiGatewayV1(ctx)) => ctx.request_id.clone(),
        _ => None,
    };
    let lambda = || req.lambda_context_ref().map(|ctx| ctx.request_id.clone());
    gateway
        .filter(|id| is_request_id(id))
        .or_else(lambda)
        .filter(|id| is_request_id(id))
}

fn is_request_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_=+/.".contains(&b))
}

/// The caller's address (CONTRACT §3b): the request context's `sourceIp` (HTTP API,
/// REST API, function URL), or the last `X-Forwarded-For` address (ALB). `None` when
/// there is none that parses: the IP budget then does not apply.
pub fn source_ip(req: &Request) -> Option<SourceIp> {
    use lambda_http::request::RequestContext;
    match req.request_context_ref()? {
        RequestContext::ApiGatewayV2(ctx) => {
            ctx.http.source_ip.as_deref().and_then(SourceIp::parse)
        }
        RequestContext::ApiGatewayV1(ctx) => {
            ctx.identity.source_ip.as_deref().and_then(SourceIp::parse)
        }
        RequestContext::Alb(_) => {
            header_str(req, "x-forwarded-for").and_then(SourceIp::from_forwarded_for)
        }
        #[allow(unreachable_patterns)]
        _ => None,
    }
}

/// A request header as text, if present and visible ASCII.
pub fn header_str<'a>(req: &'a Request, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

/// The `Idempotency-Key` header of a send (CONTRACT §3b), as the SHA-256 that is
/// stored: 1–255 visible ASCII characters, else a 400 naming the header.
pub fn idempotency_key_hash(req: &Request) -> Result<Option<String>, AuthError> {
    use base64::Engine;
    let Some(value) = req.headers().get("idempotency-key") else {
        return Ok(None);
    };
    let bytes = value.as_bytes();
    if bytes.is_empty() || bytes.len() > 255 || !bytes.iter().all(|b| (0x21..=0x7e).contains(b)) {
        return Err(AuthError::bad_request(
            "Idempotency-Key: must be 1 to 255 visible ASCII characters",
        ));
    }
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    Ok(Some(
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest),
    ))
}

/// Status, `code` and caller-facing message of an error. 5xx messages are opaque.
fn describe(err: &AuthError) -> (StatusCode, &'static str, String) {
    match err {
        AuthError::BadRequest(msg) => (StatusCode::BAD_REQUEST, "BAD_REQUEST", msg.clone()),
        AuthError::NotFound => (
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "no such resource".into(),
        ),
        AuthError::MethodNotAllowed { .. } => (
            StatusCode::METHOD_NOT_ALLOWED,
            "METHOD_NOT_ALLOWED",
            "method not allowed on this endpoint".into(),
        ),
        AuthError::RateLimited { .. } => (
            StatusCode::TOO_MANY_REQUESTS,
            "RATE_LIMIT",
            "too many attempts; wait retryAfterSeconds before trying again".into(),
        ),
        AuthError::InvalidCode { .. } => (
            StatusCode::BAD_REQUEST,
            "INVALID_CODE",
            "the code is wrong".into(),
        ),
        AuthError::ExpiredCode => (
            StatusCode::UNAUTHORIZED,
            "EXPIRED_CODE",
            "no active code for this phone; send a new one".into(),
        ),
        AuthError::InvalidRefreshToken => (
            StatusCode::UNAUTHORIZED,
            "INVALID_REFRESH_TOKEN",
            "refresh token is not valid; sign in again".into(),
        ),
        AuthError::InvalidToken => (
            StatusCode::BAD_REQUEST,
            "INVALID_TOKEN",
            "supply a valid refresh token".into(),
        ),
        AuthError::InvalidAccessToken(_) => (
            StatusCode::UNAUTHORIZED,
            "INVALID_ACCESS_TOKEN",
            "the access token is not valid; refresh it or sign in again".into(),
        ),
        AuthError::ReauthRequired { .. } => (
            StatusCode::UNAUTHORIZED,
            "REAUTH_REQUIRED",
            "sign in again with a new code, then retry with the new access token".into(),
        ),
        AuthError::PhoneBlocked => (
            StatusCode::FORBIDDEN,
            "PHONE_BLOCKED",
            "this phone number cannot sign in; contact support".into(),
        ),
        AuthError::SessionNotFound => (
            StatusCode::NOT_FOUND,
            "SESSION_NOT_FOUND",
            "no live session of this account has that id".into(),
        ),
        AuthError::Unavailable { .. } => (
            StatusCode::SERVICE_UNAVAILABLE,
            "SERVICE_UNAVAILABLE",
            "the service is temporarily unavailable; try again shortly".into(),
        ),
        AuthError::Internal { .. } => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL_ERROR",
            "internal error".into(),
        ),
    }
}

/// The one error → response mapping. Logs 5xx causes (chain, no secrets); never puts
/// internal text in the body.
pub fn error_response(err: &AuthError, request_id: Option<&str>) -> Response<Body> {
    let (status, code, message) = describe(err);
    let mut body = Map::new();
    body.insert("code".into(), json!(code));
    body.insert("message".into(), json!(message));
    let mut retry_after = None;
    match err {
        AuthError::RateLimited { retry_after_secs } => retry_after = Some(*retry_after_secs),
        AuthError::Unavailable { .. } => retry_after = Some(UNAVAILABLE_RETRY_SECONDS),
        AuthError::InvalidCode { attempts_left } => {
            body.insert("attemptsLeft".into(), json!(attempts_left));
        }
        _ => {}
    }
    if let Some(secs) = retry_after {
        body.insert("retryAfterSeconds".into(), json!(secs));
    }
    if let Some(id) = request_id {
        body.insert("requestId".into(), json!(id));
    }
    if status.is_server_error() {
        tracing::error!(code, error = %crate::telemetry::chain(err), "request failed");
    }
    let mut response = json_response(status, &Value::Object(body), CachePolicy::NoStore);
    let headers = response.headers_mut();
    if let Some(secs) = retry_after {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    match err {
        // RFC 6750 §3.1.
        AuthError::InvalidAccessToken(_) => {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer error=\"invalid_token\""),
            );
        }
        // RFC 9470 §3.
        AuthError::ReauthRequired { max_age } => {
            let challenge =
                format!("Bearer error=\"insufficient_user_authentication\", max_age={max_age}");
            if let Ok(value) = HeaderValue::from_str(&challenge) {
                headers.insert(header::WWW_AUTHENTICATE, value);
            }
        }
        _ if status == StatusCode::UNAUTHORIZED => {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        _ => {}
    }
    if let AuthError::MethodNotAllowed { allow } = err {
        headers.insert(header::ALLOW, HeaderValue::from_static(allow));
    }
    response
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    fn body_of(resp: &Response<Body>) -> Value {
        match resp.body() {
            Body::Text(t) => serde_json::from_str(t).unwrap(),
            _ => panic!("expected a text body"),
        }
    }

    #[test]
    fn access_token_errors_carry_their_bearer_challenge() {
        let resp = error_response(&AuthError::InvalidAccessToken("expired"), None);
        assert_eq!(resp.status(), 401);
        assert_eq!(
            resp.headers()["www-authenticate"],
            "Bearer error=\"invalid_token\""
        );
        let body = body_of(&resp);
        assert_eq!(body["code"], "INVALID_ACCESS_TOKEN");
        assert!(!body.to_string().contains("expired"));
        let resp = error_response(&AuthError::ReauthRequired { max_age: 300 }, None);
        assert_eq!(resp.status(), 401);
        assert_eq!(
            resp.headers()["www-authenticate"],
            "Bearer error=\"insufficient_user_authentication\", max_age=300"
        );
        assert_eq!(body_of(&resp)["code"], "REAUTH_REQUIRED");
        let resp = error_response(&AuthError::SessionNotFound, None);
        assert_eq!(resp.status(), 404);
        assert_eq!(body_of(&resp)["code"], "SESSION_NOT_FOUND");
        assert!(resp.headers().get("www-authenticate").is_none());
    }

    #[test]
    fn rate_limit_carries_retry_after_in_body_and_header() {
        let resp = error_response(
            &AuthError::RateLimited {
                retry_after_secs: 42,
            },
            None,
        );
        assert_eq!(resp.status(), 429);
        assert_eq!(resp.headers()["retry-after"], "42");
        assert_eq!(resp.headers()["cache-control"], "no-store");
        let body = body_of(&resp);
        assert_eq!(
            body,
            json!({"code":"RATE_LIMIT","message":body["message"].clone(),"retryAfterSeconds":42})
        );
    }

    #[test]
    fn internal_errors_keep_their_cause_out_of_the_body() {
        let err = AuthError::internal("signing", "secret detail: -----BEGIN PRIVATE KEY-----");
        let resp = error_response(&err, Some("req-1"));
        assert_eq!(resp.status(), 500);
        let text = match resp.body() {
            Body::Text(t) => t.clone(),
            _ => String::new(),
        };
        assert!(!text.contains("BEGIN"), "{text}");
        assert_eq!(body_of(&resp)["requestId"], "req-1");
    }

    #[test]
    fn unauthorized_answers_carry_www_authenticate() {
        let resp = error_response(&AuthError::ExpiredCode, None);
        assert_eq!(resp.status(), 401);
        assert_eq!(resp.headers()["www-authenticate"], "Bearer");
    }
}

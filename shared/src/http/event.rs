//! Make a gateway event safe for `lambda_http`'s conversion to an `http::Request`, which
//! panics (`expect`/`unwrap`) on a body flagged base64 that is not base64, and on a URI it
//! cannot build from a strange path, host, scheme or query string. API Gateway never sends
//! those, but a function must not crash on any input: a body that is not base64 becomes
//! no body (so the answer is a 400 naming the body), and the parts no endpoint reads
//! (query strings, odd hosts and schemes) are dropped.

use std::str::FromStr;

use base64::Engine;
use lambda_http::aws_lambda_events::query_map::QueryMap;
use lambda_http::http::HeaderMap;
use lambda_http::http::uri::Authority;
use lambda_http::request::LambdaRequest;

pub fn sanitize(request: &mut LambdaRequest) {
    match request {
        LambdaRequest::ApiGatewayV2(r) => {
            fix_message(
                &mut r.is_base64_encoded,
                &mut r.body,
                &mut r.raw_path,
                [&mut r.headers],
            );
            r.raw_query_string = None;
            r.query_string_parameters = QueryMap::default();
            let context = &mut r.request_context;
            fix_gateway_context(&mut context.stage, &mut context.domain_name);
        }
        LambdaRequest::ApiGatewayV1(r) => {
            let headers = [&mut r.headers, &mut r.multi_value_headers];
            fix_message(&mut r.is_base64_encoded, &mut r.body, &mut r.path, headers);
            r.query_string_parameters = QueryMap::default();
            r.multi_value_query_string_parameters = QueryMap::default();
            let context = &mut r.request_context;
            fix_gateway_context(&mut context.stage, &mut context.domain_name);
        }
        LambdaRequest::Alb(r) => {
            let headers = [&mut r.headers, &mut r.multi_value_headers];
            fix_message(&mut r.is_base64_encoded, &mut r.body, &mut r.path, headers);
            r.query_string_parameters = QueryMap::default();
            r.multi_value_query_string_parameters = QueryMap::default();
        }
        _ => {}
    }
}

/// Body, path and headers, as every event kind carries them.
fn fix_message<const N: usize>(
    is_base64: &mut bool,
    body: &mut Option<String>,
    path: &mut Option<String>,
    headers: [&mut HeaderMap; N],
) {
    fix_body(is_base64, body);
    *path = path.take().map(|p| safe_path(&p));
    for h in headers {
        fix_headers(h);
    }
}

/// API Gateway's stage (prefixed to the path) and domain name (the host fallback).
fn fix_gateway_context(stage: &mut Option<String>, domain_name: &mut Option<String>) {
    *stage = stage.take().map(|s| encode_path_bytes(&s));
    *domain_name = domain_name.take().filter(|h| plain_host(h));
}

/// Parse a gateway event from JSON into a request, sanitized as Lambda runs it.
pub fn request_from_json(json: &str) -> Result<lambda_http::Request, serde_json::Error> {
    let mut payload: LambdaRequest = serde_json::from_str(json)?;
    sanitize(&mut payload);
    Ok(lambda_http::Request::from(payload))
}

fn fix_body(is_base64: &mut bool, body: &mut Option<String>) {
    let undecodable = body
        .as_deref()
        .is_some_and(|b| base64::engine::general_purpose::STANDARD.decode(b).is_err());
    if *is_base64 && undecodable {
        *is_base64 = false;
        *body = None;
    }
}

/// A host the URI builder accepts: letters, digits, dots, dashes, an optional port, and
/// what both `http` and `url` parse (`lambda_http` unwraps `url`'s parse of
/// `scheme://host/path`, which refuses a port that is not a number below 65536 and a
/// host ending in a number that is not an IPv4 address, such as `a.999`).
fn plain_host(host: &str) -> bool {
    !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':'))
        && Authority::from_str(host).is_ok()
        && url::Url::parse(&format!("https://{host}/")).is_ok()
}

fn fix_headers(headers: &mut HeaderMap) {
    let bad_host = headers
        .get_all("host")
        .iter()
        .any(|v| v.to_str().map_or(true, |h| !plain_host(h)));
    if bad_host {
        headers.remove("host");
    }
    let bad_proto = headers
        .get_all("x-forwarded-proto")
        .iter()
        .any(|v| !matches!(v.to_str(), Ok("http" | "https")));
    if bad_proto {
        headers.remove("x-forwarded-proto");
    }
}

/// Percent-encode every byte outside the URI path characters of RFC 3986 §3.3.
fn encode_path_bytes(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for b in raw.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn safe_path(raw: &str) -> String {
    let encoded = encode_path_bytes(raw);
    if encoded.starts_with('/') {
        encoded
    } else {
        format!("/{encoded}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lambda_http::{Body, Request};
    use serde_json::json;

    fn convert(event: serde_json::Value) -> Request {
        let mut payload: LambdaRequest = serde_json::from_value(event).unwrap();
        sanitize(&mut payload);
        Request::from(payload)
    }

    fn v2(path: &str, headers: serde_json::Value, body: &str, base64: bool) -> serde_json::Value {
        json!({
            "version": "2.0", "routeKey": "$default", "rawPath": path, "rawQueryString": "a=b c|\"d\"",
            "headers": headers,
            "requestContext": {"http": {"method": "POST", "path": path, "sourceIp": "not an ip"},
                               "stage": "Pr od", "domainName": "bad host!", "timeEpoch": 0},
            "body": body, "isBase64Encoded": base64
        })
    }

    #[test]
    fn a_body_flagged_base64_that_is_not_becomes_no_body() {
        let req = convert(v2("/api/v1/auth/otp/send", json!({}), "{not base64}", true));
        assert!(matches!(req.body(), Body::Empty));
        let ok = convert(v2("/x", json!({}), "eyJwaG9uZSI6IisifQ==", true));
        assert_eq!(ok.body().as_ref(), br#"{"phone":"+"}"#);
    }

    #[test]
    fn odd_paths_hosts_schemes_and_queries_do_not_panic() {
        let headers = json!({"host": "exa mple|com", "x-forwarded-proto": "ht tp"});
        for host in [
            "api.foods:ave.kz",
            "a:99999",
            "a.999",
            "256.0.0.1",
            "[::1]",
            "a:80",
        ] {
            let hosted = json!({"host": host, "x-forwarded-proto": "https"});
            let req = convert(v2("/x", hosted, "{}", false));
            assert!(req.uri().path().ends_with("/x"), "{host}");
        }
        for path in [
            "/api/v1/auth/otp/send",
            "/a b/{c}|d^e`f",
            "no-slash",
            "",
            "/%zz/%",
            "/😀",
        ] {
            let req = convert(v2(path, headers.clone(), "{}", false));
            assert!(req.uri().path().starts_with('/'), "{path}");
        }
        let sample = |name: &str| -> serde_json::Value {
            let path = format!("{}/../events/{name}.json", env!("CARGO_MANIFEST_DIR"));
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
        };
        let mut v1 = sample("otp-send-rest-api");
        v1["path"] = json!("/a b|c");
        v1["headers"] = json!({"Host": "a b", "X-Forwarded-Proto": "gopher"});
        v1["multiValueHeaders"] = json!({"Host": ["a b"]});
        v1["queryStringParameters"] = json!({"q": "a b|c"});
        v1["multiValueQueryStringParameters"] = json!({"q": ["a b|c"]});
        v1["requestContext"]["stage"] = json!("St age");
        v1["requestContext"]["domainName"] = json!("x y");
        v1["body"] = json!("%%%");
        v1["isBase64Encoded"] = json!(true);
        assert!(matches!(convert(v1).body(), Body::Empty));
        let mut alb = sample("logout-alb");
        alb["path"] = json!("/a b|c");
        alb["queryStringParameters"] = json!({"q": "%zz"});
        alb["headers"]["host"] = json!("h|h");
        alb["body"] = json!("{}");
        assert_eq!(convert(alb).body().as_ref(), b"{}");
    }
}

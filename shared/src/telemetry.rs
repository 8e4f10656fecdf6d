//! Logging: JSON lines when Lambda's advanced logging controls ask for it
//! (`AWS_LAMBDA_LOG_FORMAT=JSON`), plain text otherwise; level from
//! `AWS_LAMBDA_LOG_LEVEL` or `RUST_LOG`. Nothing here ever logs a code, token, key,
//! pepper or full phone number: callers log masked values only.

use std::error::Error;

use tracing_subscriber::EnvFilter;

pub fn init() {
    let filter = EnvFilter::try_from_env("AWS_LAMBDA_LOG_LEVEL")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("AWS_LAMBDA_LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(false);
    // A second init (tests, the local gateway) keeps the first subscriber.
    let _ = if json {
        builder
            .json()
            .with_current_span(false)
            .flatten_event(true)
            .try_init()
    } else {
        builder.try_init()
    };
}

/// An error and its sources on one line: `outer: inner: root`.
pub fn chain(err: &(dyn Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

//! Logging: JSON lines when Lambda's advanced logging controls ask for it
//! (`AWS_LAMBDA_LOG_FORMAT=JSON`), plain text otherwise.
//!
//! # Logs are safe at any level
//!
//! Our own code never logs a code, token, key, pepper or full phone number: callers log
//! masked values only, at INFO and above. Dependencies make no such promise below WARN:
//! at TRACE `lambda_runtime` prints every raw event (request bodies with phones and
//! codes), and the AWS SDK (`aws_smithy_runtime`, `aws_smithy_http_client`, `aws_sigv4`,
//! `aws_config`, `hyper_util`, `h2`, …) prints requests and responses at DEBUG/TRACE:
//! the SNS Publish body with the SMS text and phone, DynamoDB items, the Secrets
//! Manager answer with the pepper and private keys. So:
//!
//! - The level asked for (`AWS_LAMBDA_LOG_LEVEL`, else `RUST_LOG`, else INFO) applies to
//!   our own crates only: [`OWN_CRATES`], the library and the binaries.
//! - Every other target is capped, and a cap only ever lowers the level asked for:
//!   `lambda_runtime` and `lambda_http` at INFO (at INFO and above they log only the
//!   request span — request id, X-Ray trace id — and runtime errors; the raw event is
//!   TRACE), everything else at WARN: the AWS SDK crates, `hyper`, `hyper_util`, `h2`,
//!   `rustls`, `tower`, and any dependency added later (their warnings and errors name
//!   settings and failures, never a body).
//! - The variable is read as one level: `TRACE`, `DEBUG`, `INFO`, `WARN`, `ERROR`,
//!   `FATAL` (= `ERROR`) or `OFF`, any case. In a `RUST_LOG` directive list only bare
//!   levels and levels given to our own crates count (the most verbose one wins);
//!   directives for any other target, and span or field filters, are ignored, so
//!   `RUST_LOG=aws_smithy_runtime=trace` cannot lift a cap.
//! - A target belongs to a crate by its first path segment, exactly: `jwks_client` is
//!   not `jwks`, `lambda_runtime_api_client` is not `lambda_runtime`.
//!
//! Raising a cap, or adding a crate to [`OWN_CRATES`], needs that crate's logging read
//! at every level it would then print.

use std::cmp::min;
use std::error::Error;

use tracing::level_filters::LevelFilter;
use tracing::subscriber::Interest;
use tracing::{Metadata, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{Env, ProcessEnv};

/// The crates that log at the level asked for: this library, the function binaries and
/// the local gateway. Everything else is capped (see the module docs).
pub const OWN_CRATES: [&str; 8] = [
    "foodsave_auth",
    "otp_send",
    "otp_verify",
    "token_refresh",
    "logout",
    "jwks",
    "key_rotation",
    "local_api",
];

/// Third-party crates capped above the default cap: both log nothing secret at INFO,
/// and their INFO request span puts the request id on every line.
const CAPS: [(&str, LevelFilter); 2] = [
    ("lambda_runtime", LevelFilter::INFO),
    ("lambda_http", LevelFilter::INFO),
];

/// The cap on every other target.
const DEFAULT_CAP: LevelFilter = LevelFilter::WARN;

/// The level when neither variable holds one.
const DEFAULT_LEVEL: LevelFilter = LevelFilter::INFO;

/// The log filter: the level asked for on our own crates, capped levels on the rest.
/// Used as a subscriber layer, it filters every other layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogLevels {
    requested: LevelFilter,
}

impl LogLevels {
    /// The level from `AWS_LAMBDA_LOG_LEVEL`, else `RUST_LOG`, else INFO; a variable
    /// that holds no level is passed over.
    pub fn from_env(env: &dyn Env) -> Self {
        let requested = ["AWS_LAMBDA_LOG_LEVEL", "RUST_LOG"]
            .into_iter()
            .find_map(|var| env.get(var).and_then(|value| requested_level(&value)))
            .unwrap_or(DEFAULT_LEVEL);
        Self { requested }
    }

    /// The level asked for: the one our own crates log at.
    pub fn requested(self) -> LevelFilter {
        self.requested
    }

    /// The most verbose level that `target` (a `tracing` target, normally a module
    /// path) may log at.
    pub fn level_for(self, target: &str) -> LevelFilter {
        let krate = crate_of(target);
        if OWN_CRATES.contains(&krate) {
            return self.requested;
        }
        let cap = CAPS
            .iter()
            .find(|(name, _)| *name == krate)
            .map_or(DEFAULT_CAP, |(_, cap)| *cap);
        min(self.requested, cap)
    }

    fn enables(self, metadata: &Metadata<'_>) -> bool {
        *metadata.level() <= self.level_for(metadata.target())
    }
}

impl<S: Subscriber> Layer<S> for LogLevels {
    fn register_callsite(&self, metadata: &'static Metadata<'static>) -> Interest {
        // Target and level are fixed per callsite, so the answer is too.
        if self.enables(metadata) {
            Interest::always()
        } else {
            Interest::never()
        }
    }

    fn enabled(&self, metadata: &Metadata<'_>, _ctx: Context<'_, S>) -> bool {
        self.enables(metadata)
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        // Caps only lower the level asked for.
        Some(self.requested)
    }
}

/// The crate a target belongs to: its first path segment.
fn crate_of(target: &str) -> &str {
    target.split("::").next().unwrap_or(target)
}

/// The level in a variable's value: a bare level, or in a `RUST_LOG` directive list the
/// most verbose of its bare levels and of the levels given to our own crates.
fn requested_level(value: &str) -> Option<LevelFilter> {
    value
        .split(',')
        .filter_map(|directive| match directive.trim().split_once('=') {
            None => level_named(directive.trim()),
            Some((target, level)) => {
                let module_path = target
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':');
                if module_path && OWN_CRATES.contains(&crate_of(target)) {
                    level_named(level.trim())
                } else {
                    None
                }
            }
        })
        .max()
}

fn level_named(name: &str) -> Option<LevelFilter> {
    [
        ("trace", LevelFilter::TRACE),
        ("debug", LevelFilter::DEBUG),
        ("info", LevelFilter::INFO),
        ("warn", LevelFilter::WARN),
        ("error", LevelFilter::ERROR),
        // Lambda's advanced logging controls offer FATAL; `tracing` has no such level.
        ("fatal", LevelFilter::ERROR),
        ("off", LevelFilter::OFF),
    ]
    .into_iter()
    .find(|(known, _)| name.eq_ignore_ascii_case(known))
    .map(|(_, level)| level)
}

/// Install the subscriber: [`LogLevels`] from the environment, JSON or plain lines.
pub fn init() {
    let levels = LogLevels::from_env(&ProcessEnv);
    let json = std::env::var("AWS_LAMBDA_LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let lines = tracing_subscriber::fmt::layer()
        .with_target(false)
        .with_ansi(false);
    let registry = tracing_subscriber::registry().with(levels);
    // A second init (tests, the local gateway) keeps the first subscriber.
    let _ = if json {
        registry
            .with(lines.json().with_current_span(false).flatten_event(true))
            .try_init()
    } else {
        registry.with(lines).try_init()
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

//! Every outcome a request can end in other than success. The HTTP boundary
//! (`http::error_response`) is the one place these become status codes and bodies.

use thiserror::Error;

pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

#[derive(Debug, Error)]
pub enum AuthError {
    /// Malformed input; the message names the field and is shown to the caller.
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("method not allowed")]
    MethodNotAllowed { allow: &'static str },
    #[error("no such resource")]
    NotFound,
    #[error("send rate limit reached; retry in {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
    #[error("wrong code; {attempts_left} attempts left")]
    InvalidCode { attempts_left: u32 },
    #[error("no active code")]
    ExpiredCode,
    #[error("refresh token not accepted")]
    InvalidRefreshToken,
    #[error("token not accepted for logout")]
    InvalidToken,
    /// No valid access token for an access-token endpoint (CONTRACT §7); why is logged
    /// only, never answered.
    #[error("access token not accepted: {0}")]
    InvalidAccessToken(&'static str),
    /// The token's OTP verify is older than `max_age` seconds (RFC 9470).
    #[error("re-authentication required")]
    ReauthRequired { max_age: u64 },
    /// An operator blocked the phone (CONTRACT §7).
    #[error("phone blocked")]
    PhoneBlocked,
    /// No live session of the caller's account has this id.
    #[error("no such session")]
    SessionNotFound,
    /// A dependency (DynamoDB, SNS, Secrets Manager) is unavailable, throttled or refused.
    #[error("dependency unavailable: {context}")]
    Unavailable {
        context: &'static str,
        #[source]
        source: BoxError,
    },
    /// Anything else unexpected; the body stays opaque, the chain is logged.
    #[error("internal error: {context}")]
    Internal {
        context: &'static str,
        #[source]
        source: BoxError,
    },
}

impl AuthError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::BadRequest(message.into())
    }

    pub fn unavailable(context: &'static str, source: impl Into<BoxError>) -> Self {
        Self::Unavailable {
            context,
            source: source.into(),
        }
    }

    pub fn internal(context: &'static str, source: impl Into<BoxError>) -> Self {
        Self::Internal {
            context,
            source: source.into(),
        }
    }
}

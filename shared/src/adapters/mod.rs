//! AWS implementations of the ports, and the AWS configuration they share.

pub mod dynamodb;
pub mod jwt;
pub mod secrets;
pub mod sns;

use std::time::Duration;

use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, SdkConfig};

pub use dynamodb::DynamoDbStore;
pub use jwt::JwtIssuer;
pub use secrets::{AuthSecret, SecretCache};
pub use sns::SnsSmsSender;

/// One SDK configuration per container, from the standard environment (`AWS_REGION`,
/// `AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_<SERVICE>`, credentials), with [`sdk_timeouts`].
pub async fn load_sdk_config() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .timeout_config(sdk_timeouts())
        .load()
        .await
}

/// Inside one region a connection takes milliseconds and DynamoDB answers in a few: a
/// stuck connect or attempt is cut early and retried (the SDK's standard retries, three
/// attempts with jittered back-off) while the invocation still has time. Every call is
/// also cut at the invocation's deadline (`budget::Budget`), so whatever stalls, the
/// answer is a contract 503 inside the function's 10 s timeout: at most 1 s waiting on
/// a due secret refresh, then at most 4 s per store call and 3 s for the SMS publish.
pub fn sdk_timeouts() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(1))
        .operation_attempt_timeout(Duration::from_secs(2))
        .operation_timeout(Duration::from_secs(4))
        .build()
}

/// One SMS publish attempt (it is never retried once sent; see `sns`). SNS usually
/// answers a publish within a few hundred milliseconds.
pub const SMS_PUBLISH_TIMEOUT: Duration = Duration::from_secs(3);

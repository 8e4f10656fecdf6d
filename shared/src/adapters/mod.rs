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
/// `AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_<SERVICE>`, credentials). Timeouts are short so
/// a stuck dependency becomes a 503 well inside the Lambda timeout, never a hang.
pub async fn load_sdk_config() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(2))
                .operation_attempt_timeout(Duration::from_secs(3))
                .operation_timeout(Duration::from_secs(6))
                .build(),
        )
        .load()
        .await
}

/// Whether an SDK failure means "the service is unavailable or throttling us" (503) rather
/// than "we sent something wrong" (500).
pub(crate) fn is_transient<E, R>(err: &aws_sdk_dynamodb::error::SdkError<E, R>) -> bool
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata,
{
    use aws_sdk_dynamodb::error::SdkError;
    match err {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            true
        }
        SdkError::ServiceError(service) => matches!(
            service.err().code(),
            Some(
                "ThrottlingException"
                    | "Throttling"
                    | "ProvisionedThroughputExceededException"
                    | "RequestLimitExceeded"
                    | "InternalServerError"
                    | "InternalFailure"
                    | "InternalErrorException"
                    | "ServiceUnavailable"
                    | "TransactionConflictException"
                    | "KMSThrottlingException"
            )
        ),
        _ => false,
    }
}

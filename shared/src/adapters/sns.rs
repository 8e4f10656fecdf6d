//! SMS through SNS `Publish` to a phone number (CONTRACT §3, §3b).
//!
//! A publish is sent at most once per call: the client's own retries are off, because
//! a publish whose answer was lost may already be on its way, and a second one would be
//! a second SMS (money, and the send limit no longer exact). What failed is reported so
//! that the caller can tell a definite refusal (safe to take back, and to retry when
//! throttled or never connected) from a publish that got no answer.

use aws_sdk_sns::Client;
use std::time::Duration;

use aws_sdk_sns::config::retry::RetryConfig;
use aws_sdk_sns::config::timeout::TimeoutConfig;
use aws_sdk_sns::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_sns::types::MessageAttributeValue;

use crate::domain::PhoneNumber;
use crate::ports::{SmsError, SmsSender};

/// SNS error codes that mean "throttled before accepting the message".
const THROTTLED_CODES: [&str; 5] = [
    "Throttled",
    "ThrottledException",
    "Throttling",
    "ThrottlingException",
    "KMSThrottling",
];

pub struct SnsSmsSender {
    client: Client,
    sender_id: Option<String>,
    max_price_usd: Option<String>,
}

impl SnsSmsSender {
    /// Wraps `client` with its retries turned off (see the module docs); a client
    /// whose retries are already off, as [`Self::client`]'s, is used as it is (building
    /// a client is ~1 M instructions of a cold start: its endpoint rules and partitions).
    pub fn new(client: &Client, sender_id: Option<String>) -> Self {
        let retries_off = client
            .config()
            .retry_config()
            .is_some_and(|retry| retry.max_attempts() <= 1);
        let client = if retries_off {
            client.clone()
        } else {
            Client::from_conf(
                client
                    .config()
                    .to_builder()
                    .retry_config(RetryConfig::disabled())
                    .build(),
            )
        };
        Self {
            client,
            sender_id,
            max_price_usd: None,
        }
    }

    /// The SNS client of the functions: `aws` with the publish timeouts (connect 1 s,
    /// one attempt of [`super::SMS_PUBLISH_TIMEOUT`]) and no retries (see the module
    /// docs).
    pub fn client(aws: &aws_config::SdkConfig) -> Client {
        Client::from_conf(
            aws_sdk_sns::config::Builder::from(aws)
                .timeout_config(
                    TimeoutConfig::builder()
                        .connect_timeout(Duration::from_secs(1))
                        .operation_attempt_timeout(super::SMS_PUBLISH_TIMEOUT)
                        .operation_timeout(super::SMS_PUBLISH_TIMEOUT)
                        .build(),
                )
                .retry_config(RetryConfig::disabled())
                .build(),
        )
    }

    /// Refuse any message that would cost more than this (`AWS.SNS.SMS.MaxPrice`, USD),
    /// so a premium-rate destination is not paid for.
    pub fn with_max_price(mut self, usd: Option<String>) -> Self {
        self.max_price_usd = usd;
        self
    }
}

fn string_attribute(value: &str) -> Result<MessageAttributeValue, SmsError> {
    MessageAttributeValue::builder()
        .data_type("String")
        .string_value(value)
        .build()
        .map_err(|e| SmsError::Refused {
            retryable: false,
            source: e.into(),
        })
}

fn number_attribute(value: &str) -> Result<MessageAttributeValue, SmsError> {
    MessageAttributeValue::builder()
        .data_type("Number")
        .string_value(value)
        .build()
        .map_err(|e| SmsError::Refused {
            retryable: false,
            source: e.into(),
        })
}

/// Whether a dispatch failure happened before any connection to SNS existed (the
/// connect itself failed or timed out), so no byte of the request can have reached it.
fn never_connected(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionRefused
                    | std::io::ErrorKind::AddrNotAvailable
                    | std::io::ErrorKind::NetworkUnreachable
                    | std::io::ErrorKind::HostUnreachable
            )
        {
            return true;
        }
        let text = e.to_string();
        // hyper-util's connect errors and the SDK's connect timeout.
        if text.contains("client error (Connect)") || text.starts_with("HTTP connect timeout") {
            return true;
        }
        next = e.source();
    }
    false
}

/// Classify a failed publish (CONTRACT §3).
fn classify<E, R>(err: &SdkError<E, R>) -> SmsError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match err {
        // An error answer: SNS did not take the message. A service error's message may
        // quote the phone number: keep only its code.
        SdkError::ServiceError(service) => {
            let code = service.err().code().unwrap_or("unknown");
            SmsError::Refused {
                retryable: THROTTLED_CODES.contains(&code),
                source: format!("SNS error {code}").into(),
            }
        }
        SdkError::DispatchFailure(failure)
            if failure
                .as_connector_error()
                .is_some_and(|c| never_connected(c)) =>
        {
            SmsError::Refused {
                retryable: true,
                source: DisplayErrorContext(err).to_string().into(),
            }
        }
        SdkError::ConstructionFailure(_) => SmsError::Refused {
            retryable: false,
            source: DisplayErrorContext(err).to_string().into(),
        },
        // Timed out, cut off after the request went out, or an answer we could not read:
        // SNS may have accepted it.
        _ => SmsError::Unanswered(DisplayErrorContext(err).to_string().into()),
    }
}

impl SmsSender for SnsSmsSender {
    async fn send(&self, phone: &PhoneNumber, text: &str) -> Result<(), SmsError> {
        let mut publish = self
            .client
            .publish()
            .phone_number(phone.e164())
            .message(text)
            .message_attributes("AWS.SNS.SMS.SMSType", string_attribute("Transactional")?);
        if let Some(id) = &self.sender_id {
            publish = publish.message_attributes("AWS.SNS.SMS.SenderID", string_attribute(id)?);
        }
        if let Some(price) = &self.max_price_usd {
            publish = publish.message_attributes("AWS.SNS.SMS.MaxPrice", number_attribute(price)?);
        }
        match publish.send().await {
            Ok(_) => Ok(()),
            Err(err) => Err(classify(&err)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_sns::config::{BehaviorVersion, Region};

    fn aws() -> aws_config::SdkConfig {
        aws_config::SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .retry_config(RetryConfig::standard())
            .build()
    }

    fn attempts(client: &Client) -> Option<u32> {
        client
            .config()
            .retry_config()
            .map(RetryConfig::max_attempts)
    }

    #[tokio::test]
    async fn a_publish_is_attempted_once_whichever_client_the_sender_is_given() {
        let aws = aws();
        assert_eq!(attempts(&SnsSmsSender::client(&aws)), Some(1));
        let from_functions = SnsSmsSender::new(&SnsSmsSender::client(&aws), None);
        assert_eq!(attempts(&from_functions.client), Some(1));
        let retrying = Client::new(&aws);
        assert_eq!(attempts(&retrying), Some(3));
        assert_eq!(
            attempts(&SnsSmsSender::new(&retrying, None).client),
            Some(1)
        );
    }
}

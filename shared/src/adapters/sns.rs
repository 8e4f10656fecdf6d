//! SMS through SNS `Publish` to a phone number, as a transactional message.

use aws_sdk_sns::Client;
use aws_sdk_sns::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_sns::types::MessageAttributeValue;

use crate::domain::PhoneNumber;
use crate::ports::{SmsError, SmsSender};

pub struct SnsSmsSender {
    client: Client,
    sender_id: Option<String>,
}

impl SnsSmsSender {
    pub fn new(client: Client, sender_id: Option<String>) -> Self {
        Self { client, sender_id }
    }
}

fn string_attribute(value: &str) -> Result<MessageAttributeValue, SmsError> {
    MessageAttributeValue::builder()
        .data_type("String")
        .string_value(value)
        .build()
        .map_err(|e| SmsError::Refused(e.into()))
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
        match publish.send().await {
            Ok(_) => Ok(()),
            Err(err) => {
                let transient = matches!(
                    err,
                    SdkError::TimeoutError(_)
                        | SdkError::DispatchFailure(_)
                        | SdkError::ResponseError(_)
                );
                // A service error's message may quote the phone number: keep only its code.
                let detail = match &err {
                    SdkError::ServiceError(service) => {
                        format!("SNS error {}", service.err().code().unwrap_or("unknown"))
                    }
                    other => DisplayErrorContext(other).to_string(),
                };
                Err(if transient {
                    SmsError::Unavailable(detail.into())
                } else {
                    SmsError::Refused(detail.into())
                })
            }
        }
    }
}

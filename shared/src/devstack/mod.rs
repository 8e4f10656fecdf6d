//! The local AWS stack, as tests and `make dev` use it: the table created from
//! `template.yaml` (its only definition), the auth secrets, and the SMS that moto
//! "delivered" read back from `GET /moto-api/data.json`.
//!
//! Compiled only with the `devstack` feature; no Lambda binary contains it.

use std::path::{Path, PathBuf};

use aws_config::SdkConfig;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
    TimeToLiveSpecification,
};
use serde::Deserialize;
use serde_yaml::Value as Yaml;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::domain::error::BoxError;

pub mod fault_proxy;
pub mod lambda_runtime;
pub mod seed;

/// The workspace root (where `template.yaml`, `events/` and `target/` are).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `template.yaml` at the workspace root.
pub fn template_path() -> PathBuf {
    workspace_root().join("template.yaml")
}

/// What the template says about the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableDefinition {
    pub attributes: Vec<(String, String)>,
    pub key_schema: Vec<(String, String)>,
    pub ttl_attribute: Option<String>,
}

fn str_at<'a>(value: &'a Yaml, key: &str) -> Result<&'a str, BoxError> {
    value
        .get(key)
        .and_then(Yaml::as_str)
        .ok_or_else(|| format!("template: table property {key} missing or not a string").into())
}

/// Read the one `AWS::DynamoDB::Table` of the template.
pub fn table_definition(template: &Path) -> Result<TableDefinition, BoxError> {
    let text = std::fs::read_to_string(template)?;
    let doc: Yaml = serde_yaml::from_str(&text)?;
    let resources = doc
        .get("Resources")
        .and_then(Yaml::as_mapping)
        .ok_or("template: no Resources")?;
    let mut tables = resources
        .values()
        .filter(|r| r.get("Type").and_then(Yaml::as_str) == Some("AWS::DynamoDB::Table"));
    let table = tables.next().ok_or("template: no AWS::DynamoDB::Table")?;
    if tables.next().is_some() {
        return Err("template: more than one table; the service uses exactly one".into());
    }
    let props = table
        .get("Properties")
        .ok_or("template: table has no Properties")?;
    let list = |key: &str| -> Result<Vec<&Yaml>, BoxError> {
        Ok(props
            .get(key)
            .and_then(Yaml::as_sequence)
            .ok_or_else(|| format!("template: table has no {key}"))?
            .iter()
            .collect())
    };
    let attributes = list("AttributeDefinitions")?
        .into_iter()
        .map(|a| {
            Ok((
                str_at(a, "AttributeName")?.to_owned(),
                str_at(a, "AttributeType")?.to_owned(),
            ))
        })
        .collect::<Result<Vec<_>, BoxError>>()?;
    let key_schema = list("KeySchema")?
        .into_iter()
        .map(|k| {
            Ok((
                str_at(k, "AttributeName")?.to_owned(),
                str_at(k, "KeyType")?.to_owned(),
            ))
        })
        .collect::<Result<Vec<_>, BoxError>>()?;
    let ttl_attribute = props
        .get("TimeToLiveSpecification")
        .and_then(|t| t.get("AttributeName"))
        .and_then(Yaml::as_str)
        .map(str::to_owned);
    Ok(TableDefinition {
        attributes,
        key_schema,
        ttl_attribute,
    })
}

/// SDK configuration from the standard environment (`AWS_ENDPOINT_URL` pointing at
/// moto), for setting up and driving tests. Its timeouts are generous: moto serves one
/// request at a time, and under a test suite's load an answer can take seconds that AWS
/// would never take. Tests of the functions' own timeouts go through
/// `fault_proxy::FaultProxy::sdk_config`, which uses them.
pub async fn sdk_config() -> SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .connect_timeout(std::time::Duration::from_secs(5))
                .operation_attempt_timeout(std::time::Duration::from_secs(30))
                .operation_timeout(std::time::Duration::from_secs(60))
                .build(),
        )
        .http_client(crate::adapters::https_client())
        .load()
        .await
}

/// Create the template's table under `name`, with its TTL.
pub async fn create_table(client: &aws_sdk_dynamodb::Client, name: &str) -> Result<(), BoxError> {
    let def = table_definition(&template_path())?;
    let mut create = client
        .create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest);
    for (attr, kind) in &def.attributes {
        create = create.attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name(attr)
                .attribute_type(ScalarAttributeType::from(kind.as_str()))
                .build()?,
        );
    }
    for (attr, kind) in &def.key_schema {
        create = create.key_schema(
            KeySchemaElement::builder()
                .attribute_name(attr)
                .key_type(KeyType::from(kind.as_str()))
                .build()?,
        );
    }
    create
        .send()
        .await
        .map_err(|e| aws_sdk_dynamodb::error::DisplayErrorContext(e).to_string())?;
    if let Some(ttl) = def.ttl_attribute {
        client
            .update_time_to_live()
            .table_name(name)
            .time_to_live_specification(
                TimeToLiveSpecification::builder()
                    .attribute_name(ttl)
                    .enabled(true)
                    .build()?,
            )
            .send()
            .await
            .map_err(|e| aws_sdk_dynamodb::error::DisplayErrorContext(e).to_string())?;
    }
    Ok(())
}

/// One SMS that moto accepted.
#[derive(Debug, Clone, Deserialize)]
pub struct SentSms {
    pub phone_number: String,
    pub message: String,
    pub message_id: String,
}

/// Every SMS moto has accepted so far, oldest first.
pub async fn sent_sms(endpoint_url: &str) -> Result<Vec<SentSms>, BoxError> {
    let body = http_get(endpoint_url, "/moto-api/data.json").await?;
    #[derive(Deserialize)]
    struct Data {
        sns: Option<Sns>,
    }
    #[derive(Deserialize)]
    struct Sns {
        #[serde(rename = "SMS", default)]
        sms: Vec<SentSms>,
    }
    let data: Data = serde_json::from_slice(&body)?;
    Ok(data.sns.map(|s| s.sms).unwrap_or_default())
}

/// A minimal HTTP/1.0 GET against the loopback moto server.
async fn http_get(endpoint_url: &str, path: &str) -> Result<Vec<u8>, BoxError> {
    let authority = endpoint_url
        .strip_prefix("http://")
        .ok_or("devstack: AWS_ENDPOINT_URL must be http://host:port")?
        .trim_end_matches('/');
    let mut stream = tokio::net::TcpStream::connect(authority).await?;
    stream
        .write_all(
            format!("GET {path} HTTP/1.0\r\nHost: {authority}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("devstack: malformed HTTP response")?;
    let head = String::from_utf8_lossy(response.get(..split).unwrap_or_default()).to_string();
    if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
        return Err(format!(
            "devstack: GET {path}: {}",
            head.lines().next().unwrap_or_default()
        )
        .into());
    }
    Ok(response.get(split + 4..).unwrap_or_default().to_vec())
}

/// The endpoint the SDK is pointed at.
pub fn endpoint_url() -> Result<String, BoxError> {
    std::env::var("AWS_ENDPOINT_URL").map_err(|_| {
        "AWS_ENDPOINT_URL is not set: run under local/with-stack.sh (make test / make dev)".into()
    })
}

/// Create the auth secret `auth_name` empty and the public JWKS secret `jwks_name` with
/// an empty set, then run the four rotation steps on the auth secret, as Secrets Manager
/// does right after the first deploy (`RotateImmediatelyOnUpdate`): a pepper and a first
/// key, active at once, published in the JWKS secret.
pub async fn create_secrets(
    client: &aws_sdk_secretsmanager::Client,
    auth_name: &str,
    jwks_name: &str,
    clock: std::sync::Arc<dyn crate::ports::Clock>,
) -> Result<crate::rotation::KeyRotation, BoxError> {
    let sm = |e| aws_sdk_secretsmanager::error::DisplayErrorContext(e).to_string();
    client
        .create_secret()
        .name(jwks_name)
        .secret_string(r#"{"keys":[]}"#)
        .send()
        .await
        .map_err(sm)?;
    client
        .create_secret()
        .name(auth_name)
        .send()
        .await
        .map_err(|e| aws_sdk_secretsmanager::error::DisplayErrorContext(e).to_string())?;
    let rotation = crate::rotation::KeyRotation::new(
        client.clone(),
        Some(auth_name.to_owned()),
        jwks_name.to_owned(),
        3600,
        clock,
    );
    rotation.rotate_now(auth_name).await?;
    Ok(rotation)
}

/// A local EventBridge bus `name` and a queue subscribed to everything `foodsave.auth`
/// puts on it, as another FoodSave service would subscribe (an EventBridge rule with
/// an SQS target): answers the queue's URL, for [`tapped_events`]. Making them again is
/// harmless.
pub async fn create_event_tap(aws: &SdkConfig, name: &str) -> Result<String, BoxError> {
    let events = aws_sdk_eventbridge::Client::new(aws);
    let sqs = aws_sdk_sqs::Client::new(aws);
    let exists = events.describe_event_bus().name(name).send().await.is_ok();
    if !exists {
        events.create_event_bus().name(name).send().await?;
    }
    let queue_url = sqs
        .create_queue()
        .queue_name(format!("{name}-tap"))
        .send()
        .await?
        .queue_url
        .ok_or("CreateQueue answered no URL")?;
    let queue_arn = sqs
        .get_queue_attributes()
        .queue_url(&queue_url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await?
        .attributes
        .and_then(|mut a| a.remove(&aws_sdk_sqs::types::QueueAttributeName::QueueArn))
        .ok_or("GetQueueAttributes answered no ARN")?;
    let pattern = serde_json::json!({ "source": [crate::domain::events::SOURCE] }).to_string();
    events
        .put_rule()
        .name("tap")
        .event_bus_name(name)
        .event_pattern(pattern)
        .send()
        .await?;
    events
        .put_targets()
        .rule("tap")
        .event_bus_name(name)
        .targets(
            aws_sdk_eventbridge::types::Target::builder()
                .id("queue")
                .arn(queue_arn)
                .build()?,
        )
        .send()
        .await?;
    Ok(queue_url)
}

/// Every event the tap queue of [`create_event_tap`] holds, oldest first, taken off
/// the queue: each as the bus delivered it (`id`, `source`, `detail-type`, `time`,
/// `detail`, …).
pub async fn tapped_events(
    aws: &SdkConfig,
    queue_url: &str,
) -> Result<Vec<serde_json::Value>, BoxError> {
    let sqs = aws_sdk_sqs::Client::new(aws);
    let mut events = Vec::new();
    loop {
        let out = sqs
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages(10)
            .send()
            .await?;
        let messages = out.messages.unwrap_or_default();
        if messages.is_empty() {
            return Ok(events);
        }
        for message in messages {
            if let Some(body) = message.body() {
                events.push(serde_json::from_str(body)?);
            }
            if let Some(handle) = message.receipt_handle() {
                sqs.delete_message()
                    .queue_url(queue_url)
                    .receipt_handle(handle)
                    .send()
                    .await?;
            }
        }
    }
}

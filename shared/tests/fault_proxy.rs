//! The fault proxy in front of the local AWS stack: what it forwards reaches moto, and
//! what it injects reaches the SDK as the real service's error would.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::time::Duration;

use aws_config::SdkConfig;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem};
use foodsave_auth::devstack::{self, fault_proxy::Fault, fault_proxy::FaultProxy};
use ring::rand::SecureRandom;

fn random_suffix() -> String {
    let mut bytes = [0u8; 8];
    ring::rand::SystemRandom::new().fill(&mut bytes).unwrap();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn random_phone() -> String {
    let mut bytes = [0u8; 8];
    ring::rand::SystemRandom::new().fill(&mut bytes).unwrap();
    format!("+77{:09}", u64::from_le_bytes(bytes) % 1_000_000_000)
}

async fn start() -> (SdkConfig, FaultProxy) {
    let endpoint = devstack::endpoint_url().expect("run under local/with-stack.sh");
    let proxy = FaultProxy::start(&endpoint).await.unwrap();
    (devstack::sdk_config().await, proxy)
}

/// One attempt per call, so one rule is one answer; `attempt` bounds each attempt.
fn ddb(aws: &SdkConfig, proxy: &FaultProxy, attempt: Duration) -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(aws)
            .endpoint_url(proxy.url())
            .retry_config(RetryConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .operation_attempt_timeout(attempt)
                    .build(),
            )
            .build(),
    )
}

fn sns(aws: &SdkConfig, proxy: &FaultProxy, attempt: Duration) -> aws_sdk_sns::Client {
    aws_sdk_sns::Client::from_conf(
        aws_sdk_sns::config::Builder::from(aws)
            .endpoint_url(proxy.url())
            .retry_config(RetryConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .operation_attempt_timeout(attempt)
                    .build(),
            )
            .build(),
    )
}

const PATIENT: Duration = Duration::from_secs(5);

fn put(table: &str, pk: &str) -> TransactWriteItem {
    TransactWriteItem::builder()
        .put(
            Put::builder()
                .table_name(table)
                .item("pk", AttributeValue::S(pk.to_owned()))
                .item("sk", AttributeValue::S("item".to_owned()))
                .build()
                .unwrap(),
        )
        .build()
}

#[tokio::test]
async fn requests_without_a_rule_reach_moto_unchanged() {
    let (aws, proxy) = start().await;
    let client = ddb(&aws, &proxy, PATIENT);
    let table = format!("fault-proxy-{}", random_suffix());
    devstack::create_table(&client, &table).await.unwrap();
    let tables = client.list_tables().send().await.unwrap();
    assert!(tables.table_names().contains(&table), "{tables:?}");
    assert_eq!(proxy.count("ListTables"), 1);
    assert_eq!(proxy.count("CreateTable"), 1);
    assert_eq!(proxy.count("UpdateTimeToLive"), 1);
}

#[tokio::test]
async fn an_injected_cancellation_reaches_the_sdk_with_its_reasons() {
    let (aws, proxy) = start().await;
    let client = ddb(&aws, &proxy, PATIENT);
    let table = format!("fault-proxy-{}", random_suffix());
    devstack::create_table(&client, &table).await.unwrap();
    proxy.once(
        "TransactWriteItems",
        Fault::transaction_canceled(["None", "TransactionConflict"]),
    );
    let transaction = || {
        client
            .transact_write_items()
            .transact_items(put(&table, "a"))
            .transact_items(put(&table, "b"))
    };

    let err = transaction().send().await.unwrap_err();
    let TransactWriteItemsError::TransactionCanceledException(cancelled) = err.into_service_error()
    else {
        panic!("not a cancelled transaction");
    };
    let codes: Vec<_> = cancelled
        .cancellation_reasons()
        .iter()
        .map(|r| r.code().unwrap_or_default())
        .collect();
    assert_eq!(codes, ["None", "TransactionConflict"]);
    let stored = client
        .get_item()
        .table_name(&table)
        .key("pk", AttributeValue::S("a".into()))
        .key("sk", AttributeValue::S("item".into()))
        .send()
        .await
        .unwrap();
    assert!(stored.item().is_none(), "the cancelled write reached moto");

    // The rule was for one request: the next one is forwarded and takes effect.
    transaction().send().await.unwrap();
    assert_eq!(proxy.count("TransactWriteItems"), 2);
}

#[tokio::test]
async fn a_throttled_put_item_is_a_throttling_exception() {
    let (aws, proxy) = start().await;
    let client = ddb(&aws, &proxy, PATIENT);
    proxy.once("PutItem", Fault::Throttle);
    let err = client
        .put_item()
        .table_name("no-such-table")
        .item("pk", AttributeValue::S("a".into()))
        .send()
        .await
        .unwrap_err();
    let service = err.into_service_error();
    assert_eq!(service.code(), Some("ThrottlingException"));
    assert!(
        matches!(service, PutItemError::ThrottlingException(_)),
        "{service:?}"
    );
    assert_eq!(proxy.count("PutItem"), 1);
}

#[tokio::test]
async fn a_throttled_publish_carries_the_sns_throttling_code() {
    let (aws, proxy) = start().await;
    let endpoint = devstack::endpoint_url().unwrap();
    let client = sns(&aws, &proxy, PATIENT);
    let phone = random_phone();
    proxy.once("Publish", Fault::Throttle);
    let err = client
        .publish()
        .phone_number(&phone)
        .message("never sent")
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("Throttling"), "{err:?}");
    assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(400));
    let sent = devstack::sent_sms(&endpoint).await.unwrap();
    assert!(sent.iter().all(|s| s.phone_number != phone));
    assert_eq!(proxy.count("Publish"), 1);
}

#[tokio::test]
async fn a_server_error_carries_the_status_and_the_services_code() {
    let (aws, proxy) = start().await;
    let client = aws_sdk_secretsmanager::Client::from_conf(
        aws_sdk_secretsmanager::config::Builder::from(&aws)
            .endpoint_url(proxy.url())
            .retry_config(RetryConfig::disabled())
            .build(),
    );
    proxy.once("GetSecretValue", Fault::ServerError(503));
    let err = client
        .get_secret_value()
        .secret_id("any")
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(503));
    assert_eq!(err.code(), Some("InternalServiceError"), "{err:?}");
}

#[tokio::test]
async fn a_stalled_request_times_the_attempt_out() {
    let (aws, proxy) = start().await;
    let client = ddb(&aws, &proxy, Duration::from_millis(300));
    proxy.once("ListTables", Fault::Stall(Duration::from_secs(3)));
    let err = client.list_tables().send().await.unwrap_err();
    assert!(matches!(err, SdkError::TimeoutError(_)), "{err:?}");
}

#[tokio::test]
async fn a_slow_answer_times_out_though_the_sms_was_published() {
    let (aws, proxy) = start().await;
    let endpoint = devstack::endpoint_url().unwrap();
    let client = sns(&aws, &proxy, Duration::from_millis(300));
    let phone = random_phone();
    proxy.once("Publish", Fault::SlowAnswer(Duration::from_secs(2)));
    let err = client
        .publish()
        .phone_number(&phone)
        .message("late")
        .send()
        .await
        .unwrap_err();
    assert!(matches!(err, SdkError::TimeoutError(_)), "{err:?}");
    // The publish was forwarded before the answer was held back.
    let mut published = false;
    for _ in 0..50 {
        let sent = devstack::sent_sms(&endpoint).await.unwrap();
        if sent.iter().any(|s| s.phone_number == phone) {
            published = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(published, "the slow publish never reached moto");
}

#[tokio::test]
async fn a_refused_request_fails_without_an_answer_and_the_next_one_goes_through() {
    let (aws, proxy) = start().await;
    let client = ddb(&aws, &proxy, PATIENT);
    proxy.once("ListTables", Fault::Refuse);
    let err = client.list_tables().send().await.unwrap_err();
    assert!(
        matches!(
            err,
            SdkError::DispatchFailure(_) | SdkError::ResponseError(_)
        ),
        "{err:?}"
    );
    client.list_tables().send().await.unwrap();
    assert_eq!(proxy.count("ListTables"), 2);
}

#[tokio::test]
async fn concurrent_requests_each_get_one_answer_and_rules_are_counted_down() {
    let (aws, proxy) = start().await;
    let client = ddb(&aws, &proxy, PATIENT);
    proxy.inject(
        "ListTables",
        Fault::Throttle,
        devstack::fault_proxy::Times::Next(10),
    );
    let calls = (0..40).map(|_| {
        let client = client.clone();
        tokio::spawn(async move { client.list_tables().send().await })
    });
    let mut throttled = 0;
    let mut answered = 0;
    for call in calls.collect::<Vec<_>>() {
        match call.await.unwrap() {
            Ok(_) => answered += 1,
            Err(err) => {
                assert_eq!(err.code(), Some("ThrottlingException"), "{err:?}");
                throttled += 1;
            }
        }
    }
    assert_eq!((throttled, answered), (10, 30));
    assert_eq!(proxy.counts().get("ListTables"), Some(&40));

    proxy.always("ListTables", Fault::Throttle);
    proxy.clear();
    client.list_tables().send().await.unwrap();
}

#[tokio::test]
async fn a_dropped_proxy_stops_listening() {
    let (_aws, proxy) = start().await;
    let addr = proxy.url().trim_start_matches("http://").to_owned();
    tokio::net::TcpStream::connect(&addr).await.unwrap();
    drop(proxy);
    let mut refused = false;
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(&addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(refused, "{addr} still accepts connections");
}

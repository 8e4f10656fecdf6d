//! AWS implementations of the ports, and the AWS configuration they share.

pub mod access_token;
pub mod dynamodb;
pub mod eventbridge;
pub mod jwt;
pub mod secrets;
pub mod sns;

use std::time::Duration;

use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, SdkConfig};

pub use dynamodb::DynamoDbStore;
pub use eventbridge::EventBus;
pub use jwt::JwtIssuer;
pub use secrets::{AuthSecret, SecretCache};
pub use sns::SnsSmsSender;

/// One SDK configuration per container, from the standard environment (`AWS_REGION`,
/// `AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_<SERVICE>`, credentials), with [`sdk_timeouts`]
/// and [`https_client`].
///
/// Lambda hands a function its role's credentials in the environment
/// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`): when they are
/// there they are used as they are, without building the SDK's default chain, whose
/// web-identity provider builds an STS client (and its HTTPS connector) at every cold
/// start for nothing. Without them, the default chain (profiles, SSO, containers, IMDS).
pub async fn load_sdk_config() -> SdkConfig {
    let loader = aws_config::defaults(BehaviorVersion::latest())
        .timeout_config(sdk_timeouts())
        .http_client(https_client());
    let loader = if std::env::var_os("AWS_ACCESS_KEY_ID").is_some_and(|id| !id.is_empty()) {
        loader.credentials_provider(
            aws_config::environment::EnvironmentVariableCredentialsProvider::new(),
        )
    } else {
        loader
    };
    loader.load().await
}

/// The roots that AWS service endpoints chain to: Amazon Trust Services' four roots, and
/// Starfield Services Root CA G2, which cross-signs them (AWS: "all AWS services use
/// certificates from Amazon Trust Services"). PEM, as shipped by Mozilla's root program
/// (Debian `ca-certificates`).
pub const AWS_ROOT_CAS: [&[u8]; 5] = [
    include_bytes!("tls/amazon-root-ca-1.pem"),
    include_bytes!("tls/amazon-root-ca-2.pem"),
    include_bytes!("tls/amazon-root-ca-3.pem"),
    include_bytes!("tls/amazon-root-ca-4.pem"),
    include_bytes!("tls/starfield-services-root-ca-g2.pem"),
];

/// The SDK's HTTPS client (hyper, rustls on ring: see the workspace's Cargo.toml) trusting
/// [`AWS_ROOT_CAS`] only: the functions talk to AWS endpoints and nothing else. The
/// default loads the system's whole root store from disk when the first client of a
/// container is built (`rustls-native-certs`: the bundle, and on Debian the hashed
/// directory too, ~290 PEM certificates), which was 80 % of a cold start's own
/// instructions; five embedded roots cost nothing to load. A deployment that must reach
/// an endpoint with a certificate of its own (a TLS-inspecting proxy) adds its root here.
pub fn https_client() -> aws_sdk_secretsmanager::config::SharedHttpClient {
    use aws_smithy_http_client::tls::{self, TlsContext, TrustStore};
    let trust = AWS_ROOT_CAS.iter().fold(TrustStore::empty(), |store, pem| {
        store.with_pem_certificate(*pem)
    });
    let builder = aws_smithy_http_client::Builder::new().tls_provider(tls::Provider::Rustls(
        tls::rustls_provider::CryptoMode::Ring,
    ));
    // Building a context only stores its parts; it cannot fail.
    match TlsContext::builder().with_trust_store(trust).build() {
        Ok(context) => builder.tls_context(context).build_https(),
        Err(_) => builder.build_https(),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_aws_root_is_one_pem_certificate() {
        for pem in AWS_ROOT_CAS {
            let parsed = pem::parse_many(pem).unwrap();
            assert_eq!(parsed.len(), 1);
            assert_eq!(parsed[0].tag(), "CERTIFICATE");
        }
    }
}

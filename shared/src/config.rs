//! Configuration per CONTRACT §5, read once at init into typed settings.
//!
//! Each function loads only the groups it uses (`logout` needs only `TABLE_NAME`), so a
//! variable another function needs never fails this one's init. AWS endpoints, region and
//! credentials come from the SDK's standard environment, never from here.

use std::fmt;
use std::num::NonZeroU32;

use thiserror::Error;

/// A missing or unusable variable; the message names it.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("configuration: {0} is required but not set")]
    Missing(&'static str),
    #[error("configuration: {name} is invalid: {reason}")]
    Invalid { name: &'static str, reason: String },
}

/// Where variables come from: the process environment in production, a map in tests.
pub trait Env: Sync {
    fn get(&self, name: &str) -> Option<String>;
}

/// The process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl<F: Fn(&str) -> Option<String> + Sync> Env for F {
    fn get(&self, name: &str) -> Option<String> {
        self(name)
    }
}

fn non_empty(env: &dyn Env, name: &'static str) -> Option<String> {
    env.get(name).filter(|v| !v.trim().is_empty())
}

fn required(env: &dyn Env, name: &'static str) -> Result<String, ConfigError> {
    non_empty(env, name).ok_or(ConfigError::Missing(name))
}

fn positive(env: &dyn Env, name: &'static str, default: u32) -> Result<NonZeroU32, ConfigError> {
    match non_empty(env, name) {
        None => NonZeroU32::new(default).ok_or(ConfigError::Invalid {
            name,
            reason: "default must be positive".into(),
        }),
        Some(raw) => raw
            .trim()
            .parse::<NonZeroU32>()
            .map_err(|_| ConfigError::Invalid {
                name,
                reason: format!("expected a positive integer, got {raw:?}"),
            }),
    }
}

fn non_negative(env: &dyn Env, name: &'static str, default: u32) -> Result<u32, ConfigError> {
    match non_empty(env, name) {
        None => Ok(default),
        Some(raw) => raw.trim().parse::<u32>().map_err(|_| ConfigError::Invalid {
            name,
            reason: format!("expected a non-negative integer, got {raw:?}"),
        }),
    }
}

/// `TABLE_NAME`: every function that touches DynamoDB.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub table_name: String,
}

impl StoreConfig {
    pub fn load(env: &dyn Env) -> Result<Self, ConfigError> {
        Ok(Self {
            table_name: required(env, "TABLE_NAME")?,
        })
    }
}

/// `EVENT_BUS_NAME` (CONTRACT §7 "Events"): the EventBridge bus (name or ARN) that
/// account and session events go to; absent or empty, no events.
pub fn event_bus_name(env: &dyn Env) -> Result<Option<String>, ConfigError> {
    let Some(name) = non_empty(env, "EVENT_BUS_NAME") else {
        return Ok(None);
    };
    // EventBridge's own rule for a bus name ([/.\-_A-Za-z0-9]+, at most 256), or an ARN.
    let valid = name.len() <= 1600
        && (name.starts_with("arn:")
            || (name.len() <= 256
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "/._-".contains(c))));
    if valid && name.trim() == name {
        Ok(Some(name))
    } else {
        Err(ConfigError::Invalid {
            name: "EVENT_BUS_NAME",
            reason: "not an EventBridge bus name or ARN".into(),
        })
    }
}

/// `AUTH_SECRET_ID`: the secret holding the OTP pepper and the signing keys.
#[derive(Debug, Clone)]
pub struct SecretConfig {
    pub auth_secret_id: String,
}

impl SecretConfig {
    pub fn load(env: &dyn Env) -> Result<Self, ConfigError> {
        Ok(Self {
            auth_secret_id: required(env, "AUTH_SECRET_ID")?,
        })
    }
}

/// One-time codes and the send window (CONTRACT §2, §3).
#[derive(Clone)]
pub struct OtpConfig {
    pub ttl_seconds: NonZeroU32,
    pub max_attempts: NonZeroU32,
    pub send_limit: NonZeroU32,
    pub send_window_seconds: NonZeroU32,
    pub allowed_phone_prefixes: Vec<String>,
    pub sms_sender_id: Option<String>,
    pub sms_message: SmsMessages,
    /// `SMS_MAX_PRICE_USD`, as SNS takes it (`AWS.SNS.SMS.MaxPrice`): a positive decimal.
    pub sms_max_price_usd: Option<String>,
    /// The wrong-guess budget per phone (`OTP_MAX_WRONG_PER_DAY`).
    pub guesses: crate::domain::otp::GuessPolicy,
    /// The IP and global budgets, their mode, and the test numbers.
    pub abuse: AbuseConfig,
}

impl fmt::Debug for OtpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OtpConfig")
            .field("ttl_seconds", &self.ttl_seconds)
            .field("max_attempts", &self.max_attempts)
            .field("send_limit", &self.send_limit)
            .field("send_window_seconds", &self.send_window_seconds)
            .field("allowed_phone_prefixes", &self.allowed_phone_prefixes)
            .field("sms_sender_id", &self.sms_sender_id)
            .field("sms_max_price_usd", &self.sms_max_price_usd)
            .field("guesses", &self.guesses)
            .field("abuse", &self.abuse)
            .finish_non_exhaustive()
    }
}

impl OtpConfig {
    pub fn load(env: &dyn Env) -> Result<Self, ConfigError> {
        let prefixes = non_empty(env, "ALLOWED_PHONE_PREFIXES").unwrap_or_else(|| "+7".into());
        let allowed_phone_prefixes: Vec<String> = prefixes
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect();
        let prefix_ok = |p: &String| {
            p.strip_prefix('+').is_some_and(|digits| {
                !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
            })
        };
        if allowed_phone_prefixes.is_empty() || !allowed_phone_prefixes.iter().all(prefix_ok) {
            return Err(ConfigError::Invalid {
                name: "ALLOWED_PHONE_PREFIXES",
                reason: format!("expected comma-separated prefixes like +7,+77, got {prefixes:?}"),
            });
        }
        let sms_message = SmsMessages::load(env)?;
        let sms_sender_id = non_empty(env, "SMS_SENDER_ID");
        if let Some(id) = &sms_sender_id {
            // SNS sender IDs: 1–11 alphanumeric characters, at least one letter.
            let valid = (1..=11).contains(&id.len())
                && id.bytes().all(|b| b.is_ascii_alphanumeric())
                && id.bytes().any(|b| b.is_ascii_alphabetic());
            if !valid {
                return Err(ConfigError::Invalid {
                    name: "SMS_SENDER_ID",
                    reason: "expected 1–11 letters or digits with at least one letter".into(),
                });
            }
        }
        let sms_max_price_usd = non_empty(env, "SMS_MAX_PRICE_USD");
        if let Some(price) = &sms_max_price_usd {
            let (whole, fraction) = price.split_once('.').unwrap_or((price, ""));
            let digits = |d: &str| d.bytes().all(|b| b.is_ascii_digit());
            let valid = !whole.is_empty()
                && digits(whole)
                && digits(fraction)
                && fraction.len() <= 5
                && price.bytes().any(|b| (b'1'..=b'9').contains(&b));
            if !valid {
                return Err(ConfigError::Invalid {
                    name: "SMS_MAX_PRICE_USD",
                    reason: "expected a positive amount in USD such as 0.05".into(),
                });
            }
        }
        Ok(Self {
            sms_max_price_usd,
            guesses: AbuseConfig::guesses(env)?,
            abuse: AbuseConfig::load(env)?,
            ttl_seconds: positive(env, "OTP_TTL_SECONDS", 300)?,
            max_attempts: positive(env, "OTP_MAX_ATTEMPTS", 5)?,
            send_limit: positive(env, "OTP_SEND_LIMIT", 3)?,
            send_window_seconds: positive(env, "OTP_SEND_WINDOW_SECONDS", 300)?,
            allowed_phone_prefixes,
            sms_sender_id,
            sms_message,
        })
    }
}

impl OtpConfig {
    /// `OTP_MAX_ATTEMPTS` alone.
    pub fn max_attempts(env: &dyn Env) -> Result<NonZeroU32, ConfigError> {
        positive(env, "OTP_MAX_ATTEMPTS", 5)
    }

    /// What verification needs of the OTP settings.
    pub fn verify_policy(env: &dyn Env) -> Result<crate::domain::otp::VerifyPolicy, ConfigError> {
        Ok(crate::domain::otp::VerifyPolicy {
            max_attempts: positive(env, "OTP_MAX_ATTEMPTS", 5)?.get(),
            guesses: AbuseConfig::guesses(env)?,
            send_window_secs: u64::from(positive(env, "OTP_SEND_WINDOW_SECONDS", 300)?.get()),
        })
    }
}

/// Longest SMS template accepted: SNS splits longer texts into several billed parts, and
/// Android's SMS Retriever reads only messages of at most 140 bytes.
const MAX_SMS_TEMPLATE_BYTES: usize = 320;

/// The SMS text, with every `{code}` replaced by the code.
#[derive(Clone)]
pub struct SmsTemplate(String);

impl SmsTemplate {
    pub fn parse(raw: String) -> Result<Self, ConfigError> {
        Self::parse_named(raw, "SMS_MESSAGE")
    }

    fn parse_named(raw: String, name: &'static str) -> Result<Self, ConfigError> {
        // At least once; twice is the WebOTP form (`... {code}\n\n@foodsave.kz #{code}`).
        if !raw.contains("{code}") || raw.len() > MAX_SMS_TEMPLATE_BYTES {
            return Err(ConfigError::Invalid {
                name,
                reason: format!(
                    "must contain {{code}} and be at most {MAX_SMS_TEMPLATE_BYTES} bytes"
                ),
            });
        }
        Ok(Self(raw))
    }

    pub fn render(&self, code: &str) -> String {
        self.0.replace("{code}", code)
    }

    /// The text with a code in it is one SMS segment (CONTRACT §5 `SMS_ALLOW_MULTIPART`):
    /// every extra segment is billed, and Android's SMS Retriever reads only one.
    fn one_segment(&self, name: &'static str) -> Result<(), ConfigError> {
        let shape = crate::domain::sms::shape(&self.render("000000"));
        if shape.segments == 1 {
            return Ok(());
        }
        let (single, unit) = match shape.encoding {
            crate::domain::sms::Encoding::Gsm7 => (160, "septets"),
            crate::domain::sms::Encoding::Ucs2 => (70, "characters"),
        };
        Err(ConfigError::Invalid {
            name,
            reason: format!(
                "with its code the text is {} {unit} of {}, {} SMS segments (one holds {single}); \
                 shorten it, or set SMS_ALLOW_MULTIPART=true to send it in parts",
                shape.units,
                shape.encoding.as_str(),
                shape.segments,
            ),
        })
    }
}

/// `SMS_ALLOW_MULTIPART` (CONTRACT §5): `true` or `false` (the default).
fn allow_multipart(env: &dyn Env) -> Result<bool, ConfigError> {
    match non_empty(env, "SMS_ALLOW_MULTIPART")
        .map(|v| v.trim().to_ascii_lowercase())
        .as_deref()
    {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(_) => Err(ConfigError::Invalid {
            name: "SMS_ALLOW_MULTIPART",
            reason: "must be true or false".into(),
        }),
    }
}

/// The SMS text per language (CONTRACT §3b): `SMS_MESSAGE_KK`, `SMS_MESSAGE_RU`,
/// `SMS_MESSAGE_EN`, chosen by the request's `Accept-Language`, else `SMS_MESSAGE`.
#[derive(Clone)]
pub struct SmsMessages {
    default: SmsTemplate,
    /// (primary language subtag, text), in the order above.
    by_language: Vec<(&'static str, SmsTemplate)>,
}

impl SmsMessages {
    pub fn load(env: &dyn Env) -> Result<Self, ConfigError> {
        let multipart = allow_multipart(env)?;
        let default = SmsTemplate::parse(
            non_empty(env, "SMS_MESSAGE").unwrap_or_else(|| "FoodSave code: {code}".into()),
        )?;
        if !multipart {
            default.one_segment("SMS_MESSAGE")?;
        }
        let mut by_language = Vec::new();
        for (language, name) in [
            ("kk", "SMS_MESSAGE_KK"),
            ("ru", "SMS_MESSAGE_RU"),
            ("en", "SMS_MESSAGE_EN"),
        ] {
            if let Some(raw) = non_empty(env, name) {
                let template = SmsTemplate::parse_named(raw, name)?;
                if !multipart {
                    template.one_segment(name)?;
                }
                by_language.push((language, template));
            }
        }
        Ok(Self {
            default,
            by_language,
        })
    }

    /// The text for an `Accept-Language` header (RFC 9110 §12.5.4): the configured
    /// language with the highest q-value (ties: the header's order; `q=0` never), by
    /// primary subtag (`ru-RU` is `ru`); `*` means any configured one; otherwise the
    /// default text. A malformed header is ignored, never an error.
    pub fn for_accept_language(&self, header: Option<&str>) -> &SmsTemplate {
        let Some(header) = header else {
            return &self.default;
        };
        let mut best: Option<(u16, &SmsTemplate)> = None;
        for range in header.split(',') {
            let mut parts = range.split(';');
            let tag = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let quality = parts
                .find_map(|p| {
                    p.trim()
                        .strip_prefix("q=")
                        .or_else(|| p.trim().strip_prefix("Q="))
                })
                .map_or(Some(1000), parse_quality);
            let Some(quality) = quality.filter(|q| *q > 0) else {
                continue;
            };
            let primary = tag.split('-').next().unwrap_or("");
            let template = if primary == "*" {
                self.by_language.first().map(|(_, t)| t)
            } else {
                self.by_language
                    .iter()
                    .find(|(language, _)| *language == primary)
                    .map(|(_, t)| t)
            };
            if let Some(template) = template
                && best.is_none_or(|(q, _)| quality > q)
            {
                best = Some((quality, template));
            }
        }
        best.map_or(&self.default, |(_, t)| t)
    }
}

/// A q-value (`0`, `0.8`, `1.000`) in thousandths; `None` if malformed.
fn parse_quality(raw: &str) -> Option<u16> {
    let (whole, fraction) = raw.trim().split_once('.').unwrap_or((raw.trim(), ""));
    if fraction.len() > 3 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let thousandths: u16 = format!("{fraction:0<3}").parse().ok()?;
    match whole {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

/// Whether a send refused by the IP or global budget is refused, or only recorded
/// (`ABUSE_MODE`, CONTRACT §3b).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AbuseMode {
    Enforce,
    RecordOnly,
}

/// The abuse budgets of CONTRACT §3b. Each is off at 0.
#[derive(Clone)]
pub struct AbuseConfig {
    /// `OTP_IP_SEND_LIMIT` sends per source IP (IPv6: per /64) per
    /// `OTP_IP_SEND_WINDOW_SECONDS` (3600).
    pub ip_send_limit: u32,
    pub ip_send_window_seconds: NonZeroU32,
    /// `OTP_GLOBAL_SEND_LIMIT_PER_HOUR`: SMS in any sliding hour, all phones.
    pub global_send_limit_per_hour: u32,
    pub mode: AbuseMode,
    /// `OTP_TEST_NUMBERS`: phones that get no SMS and a fixed code.
    pub test_numbers: Vec<(String, crate::domain::OtpCode)>,
}

impl fmt::Debug for AbuseConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AbuseConfig")
            .field("ip_send_limit", &self.ip_send_limit)
            .field("ip_send_window_seconds", &self.ip_send_window_seconds)
            .field(
                "global_send_limit_per_hour",
                &self.global_send_limit_per_hour,
            )
            .field("mode", &self.mode)
            .field("test_numbers", &self.test_numbers.len())
            .finish()
    }
}

impl AbuseConfig {
    pub fn load(env: &dyn Env) -> Result<Self, ConfigError> {
        let mode = match non_empty(env, "ABUSE_MODE").as_deref().map(str::trim) {
            None | Some("enforce") => AbuseMode::Enforce,
            Some("record-only") => AbuseMode::RecordOnly,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    name: "ABUSE_MODE",
                    reason: format!("expected enforce or record-only, got {other:?}"),
                });
            }
        };
        Ok(Self {
            ip_send_limit: non_negative(env, "OTP_IP_SEND_LIMIT", 0)?,
            ip_send_window_seconds: positive(env, "OTP_IP_SEND_WINDOW_SECONDS", 3600)?,
            global_send_limit_per_hour: non_negative(env, "OTP_GLOBAL_SEND_LIMIT_PER_HOUR", 0)?,
            mode,
            test_numbers: test_numbers(env)?,
        })
    }

    /// `OTP_MAX_WRONG_PER_DAY` (default 20; 0: off): what verification needs.
    pub fn guesses(env: &dyn Env) -> Result<crate::domain::otp::GuessPolicy, ConfigError> {
        Ok(crate::domain::otp::GuessPolicy {
            limit: non_negative(env, "OTP_MAX_WRONG_PER_DAY", 20)?,
        })
    }

    /// The fixed code of a test number.
    pub fn test_code(&self, phone: &crate::domain::PhoneNumber) -> Option<&crate::domain::OtpCode> {
        self.test_numbers
            .iter()
            .find(|(number, _)| number == phone.e164())
            .map(|(_, code)| code)
    }
}

/// `OTP_TEST_NUMBERS`: `+77000000001=123456,+77000000002=654321`.
fn test_numbers(env: &dyn Env) -> Result<Vec<(String, crate::domain::OtpCode)>, ConfigError> {
    let Some(raw) = non_empty(env, "OTP_TEST_NUMBERS") else {
        return Ok(Vec::new());
    };
    raw.split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .map(|entry| {
            let invalid = || ConfigError::Invalid {
                name: "OTP_TEST_NUMBERS",
                reason: "expected +7XXXXXXXXXX=NNNNNN pairs separated by commas".into(),
            };
            let (phone, code) = entry.split_once('=').ok_or_else(invalid)?;
            let phone = crate::domain::PhoneNumber::parse(phone.trim()).map_err(|_| invalid())?;
            let code = crate::domain::OtpCode::parse(code.trim()).map_err(|_| invalid())?;
            Ok((phone.e164().to_owned(), code))
        })
        .collect()
}

/// Access and refresh tokens (CONTRACT §4).
#[derive(Debug, Clone)]
pub struct TokenConfig {
    pub issuer: String,
    pub audience: String,
    pub client_id: String,
    pub access_ttl_seconds: NonZeroU32,
    pub refresh_ttl_seconds: NonZeroU32,
    pub session_max_seconds: NonZeroU32,
    /// 0 means no grace: a spent token is always reuse.
    pub refresh_reuse_grace_seconds: u32,
}

impl TokenConfig {
    pub fn load(env: &dyn Env) -> Result<Self, ConfigError> {
        Ok(Self {
            issuer: issuer(env)?,
            audience: non_empty(env, "JWT_AUDIENCE").unwrap_or_else(|| "foodsave".into()),
            client_id: non_empty(env, "JWT_CLIENT_ID").unwrap_or_else(|| "foodsave-app".into()),
            access_ttl_seconds: positive(env, "ACCESS_TOKEN_TTL_SECONDS", 3600)?,
            refresh_ttl_seconds: positive(env, "REFRESH_TOKEN_TTL_SECONDS", 2_592_000)?,
            session_max_seconds: positive(env, "SESSION_MAX_SECONDS", 31_536_000)?,
            refresh_reuse_grace_seconds: non_negative(env, "REFRESH_REUSE_GRACE_SECONDS", 10)?,
        })
    }
}

/// Accounts and sessions (CONTRACT §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccountConfig {
    /// How recent the OTP verify behind a token must be for an account deletion.
    pub reauth_max_age_seconds: NonZeroU32,
    /// The most live sessions an account has; a login past it revokes the least
    /// recently used.
    pub max_sessions_per_account: NonZeroU32,
}

/// The most `MAX_SESSIONS_PER_ACCOUNT` may be: a deletion ends every live session in one
/// transaction of at most 100 items, three of which are the account's own.
pub const MAX_SESSIONS_LIMIT: u32 = 90;

impl AccountConfig {
    pub fn load(env: &dyn Env) -> Result<Self, ConfigError> {
        let max_sessions_per_account = positive(env, "MAX_SESSIONS_PER_ACCOUNT", 20)?;
        if max_sessions_per_account.get() > MAX_SESSIONS_LIMIT {
            return Err(ConfigError::Invalid {
                name: "MAX_SESSIONS_PER_ACCOUNT",
                reason: format!("at most {MAX_SESSIONS_LIMIT}"),
            });
        }
        Ok(Self {
            reauth_max_age_seconds: positive(env, "REAUTH_MAX_AGE_SECONDS", 300)?,
            max_sessions_per_account,
        })
    }
}

impl TokenConfig {
    /// `ACCESS_TOKEN_TTL_SECONDS` alone, for the key rotation's retention rule.
    pub fn access_ttl(env: &dyn Env) -> Result<u64, ConfigError> {
        positive(env, "ACCESS_TOKEN_TTL_SECONDS", 3600).map(|v| u64::from(v.get()))
    }
}

/// `JWKS_SECRET_ID`: the public JWK Set (the `jwks` and `key-rotation` functions).
pub fn jwks_secret_id(env: &dyn Env) -> Result<String, ConfigError> {
    required(env, "JWKS_SECRET_ID")
}

/// `JWT_ISSUER`: an absolute http(s) URL without a trailing slash (CONTRACT §5), so that
/// `jwks_uri` = issuer + `/.well-known/jwks.json` has exactly one slash and `iss` is exactly
/// the string verifiers are configured with. A trailing slash is refused, not dropped:
/// verifiers compare `iss` as a string, and a silently edited issuer would not match theirs.
pub fn issuer(env: &dyn Env) -> Result<String, ConfigError> {
    let raw = required(env, "JWT_ISSUER")?;
    let issuer = raw.trim();
    let scheme_ok = issuer.starts_with("https://") || issuer.starts_with("http://");
    if !scheme_ok || issuer.contains(char::is_whitespace) {
        return Err(ConfigError::Invalid {
            name: "JWT_ISSUER",
            reason: format!("expected an absolute http(s) URL, got {raw:?}"),
        });
    }
    if issuer.ends_with('/') {
        return Err(ConfigError::Invalid {
            name: "JWT_ISSUER",
            reason: format!("must not end with '/', got {raw:?}"),
        });
    }
    Ok(issuer.to_owned())
}

/// Decode the pepper's base64: standard, and for robustness also without padding or in
/// the URL-safe alphabet.
#[cfg(feature = "aws")]
pub(crate) fn decode_base64(raw: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let raw = raw.trim();
    [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
        .iter()
        .find_map(|engine| engine.decode(raw).ok())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect();
        move |k: &str| map.get(k).cloned()
    }

    #[test]
    fn the_sms_price_cap_is_off_by_default_and_a_positive_amount_when_set() {
        assert_eq!(OtpConfig::load(&env(&[])).unwrap().sms_max_price_usd, None);
        for ok in ["0.05", "1", "0.00645"] {
            let otp = OtpConfig::load(&env(&[("SMS_MAX_PRICE_USD", ok)])).unwrap();
            assert_eq!(otp.sms_max_price_usd.as_deref(), Some(ok));
        }
        for bad in ["0", "0.00", "-1", "1e3", ".5", "0.5.1", "0.123456", "five"] {
            let err = OtpConfig::load(&env(&[("SMS_MAX_PRICE_USD", bad)])).unwrap_err();
            assert!(
                err.to_string().contains("SMS_MAX_PRICE_USD"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn the_sms_text_follows_accept_language_with_q_values() {
        let otp = OtpConfig::load(&env(&[
            ("SMS_MESSAGE", "Code {code}"),
            ("SMS_MESSAGE_KK", "Код {code} (kk)"),
            ("SMS_MESSAGE_RU", "Код {code}"),
            ("SMS_MESSAGE_EN", "Your code {code}"),
        ]))
        .unwrap();
        let text = |header: Option<&str>| otp.sms_message.for_accept_language(header).render("1");
        assert_eq!(text(None), "Code 1");
        assert_eq!(text(Some("ru-RU,ru;q=0.9,en;q=0.8")), "Код 1");
        assert_eq!(text(Some("en;q=0.5, kk-KZ;q=0.9")), "Код 1 (kk)");
        assert_eq!(text(Some("de-DE, en-US;q=0.3")), "Your code 1");
        assert_eq!(text(Some("kk;q=0, ru;q=0.1")), "Код 1");
        assert_eq!(text(Some("fr")), "Code 1");
        assert_eq!(text(Some("*")), "Код 1 (kk)");
        assert_eq!(text(Some(";;;,q=,en;q=2")), "Code 1");
        // Only the languages configured take part.
        let only_default = OtpConfig::load(&env(&[])).unwrap();
        assert_eq!(
            only_default
                .sms_message
                .for_accept_language(Some("ru"))
                .render("1"),
            "FoodSave code: 1"
        );
        let err = OtpConfig::load(&env(&[("SMS_MESSAGE_RU", "no code")])).unwrap_err();
        assert!(err.to_string().contains("SMS_MESSAGE_RU"), "{err}");
        // The WebOTP form names the code twice.
        let web = OtpConfig::load(&env(&[(
            "SMS_MESSAGE",
            "FoodSave code: {code}\n\n@foodsave.kz #{code}",
        )]))
        .unwrap();
        assert_eq!(
            web.sms_message.for_accept_language(None).render("123456"),
            "FoodSave code: 123456\n\n@foodsave.kz #123456"
        );
    }

    #[test]
    fn the_abuse_settings_parse_and_name_themselves_when_wrong() {
        let otp = OtpConfig::load(&env(&[
            ("OTP_IP_SEND_LIMIT", "30"),
            ("OTP_GLOBAL_SEND_LIMIT_PER_HOUR", "2000"),
            ("OTP_MAX_WRONG_PER_DAY", "0"),
            ("ABUSE_MODE", "record-only"),
            (
                "OTP_TEST_NUMBERS",
                "+77000000001=123456, +77000000002=654321",
            ),
        ]))
        .unwrap();
        assert_eq!(otp.abuse.ip_send_limit, 30);
        assert_eq!(otp.abuse.ip_send_window_seconds.get(), 3600);
        assert_eq!(otp.abuse.global_send_limit_per_hour, 2000);
        assert_eq!(otp.guesses.limit, 0);
        assert_eq!(otp.abuse.mode, AbuseMode::RecordOnly);
        let test = crate::domain::PhoneNumber::parse("+77000000002").unwrap();
        assert_eq!(
            otp.abuse.test_code(&test).map(|c| c.expose()),
            Some("654321")
        );
        let debug = format!("{otp:?}");
        assert!(!debug.contains("654321"), "{debug}");
        for (name, bad) in [
            ("ABUSE_MODE", "off"),
            ("OTP_IP_SEND_LIMIT", "-1"),
            ("OTP_IP_SEND_WINDOW_SECONDS", "0"),
            ("OTP_TEST_NUMBERS", "+77000000001"),
            ("OTP_TEST_NUMBERS", "+77000000001=12345"),
            ("OTP_MAX_WRONG_PER_DAY", "many"),
        ] {
            let err = OtpConfig::load(&env(&[(name, bad)])).unwrap_err();
            assert!(err.to_string().contains(name), "{name}={bad}: {err}");
        }
    }

    #[test]
    fn defaults_follow_the_contract() {
        let otp = OtpConfig::load(&env(&[])).unwrap();
        assert_eq!(otp.ttl_seconds.get(), 300);
        assert_eq!(otp.max_attempts.get(), 5);
        assert_eq!(otp.send_limit.get(), 3);
        assert_eq!(otp.send_window_seconds.get(), 300);
        assert_eq!(otp.allowed_phone_prefixes, vec!["+7".to_owned()]);
        assert_eq!(
            otp.sms_message.for_accept_language(None).render("123456"),
            "FoodSave code: 123456"
        );
        assert_eq!(otp.guesses.limit, 20);
        assert_eq!(otp.abuse.ip_send_limit, 0);
        assert_eq!(otp.abuse.global_send_limit_per_hour, 0);
        assert_eq!(otp.abuse.mode, AbuseMode::Enforce);
        assert!(otp.abuse.test_numbers.is_empty());
        // A trailing slash is refused, not dropped (CONTRACT §5).
        let err = TokenConfig::load(&env(&[("JWT_ISSUER", "https://a.example/api/v1/auth/")]))
            .unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::Invalid {
                    name: "JWT_ISSUER",
                    ..
                }
            ),
            "{err}"
        );
        let tokens =
            TokenConfig::load(&env(&[("JWT_ISSUER", "https://a.example/api/v1/auth")])).unwrap();
        assert_eq!(tokens.issuer, "https://a.example/api/v1/auth");
        assert_eq!(tokens.audience, "foodsave");
        assert_eq!(tokens.client_id, "foodsave-app");
        assert_eq!(tokens.access_ttl_seconds.get(), 3600);
        assert_eq!(tokens.refresh_reuse_grace_seconds, 10);
    }

    #[test]
    fn missing_and_invalid_variables_are_named() {
        assert_eq!(
            StoreConfig::load(&env(&[])).unwrap_err(),
            ConfigError::Missing("TABLE_NAME")
        );
        let err = OtpConfig::load(&env(&[("OTP_TTL_SECONDS", "0")])).unwrap_err();
        assert!(err.to_string().contains("OTP_TTL_SECONDS"), "{err}");
        let err = OtpConfig::load(&env(&[("OTP_SEND_LIMIT", "three")])).unwrap_err();
        assert!(err.to_string().contains("OTP_SEND_LIMIT"), "{err}");
        let err = OtpConfig::load(&env(&[("SMS_MESSAGE", "no placeholder")])).unwrap_err();
        assert!(err.to_string().contains("SMS_MESSAGE"), "{err}");
        let err = OtpConfig::load(&env(&[("ALLOWED_PHONE_PREFIXES", "7,+77")])).unwrap_err();
        assert!(err.to_string().contains("ALLOWED_PHONE_PREFIXES"), "{err}");
        let err = TokenConfig::load(&env(&[("JWT_ISSUER", "api.foodsave.kz")])).unwrap_err();
        assert!(err.to_string().contains("JWT_ISSUER"), "{err}");
        let err = TokenConfig::load(&env(&[
            ("JWT_ISSUER", "https://x"),
            ("REFRESH_REUSE_GRACE_SECONDS", "-1"),
        ]))
        .unwrap_err();
        assert!(
            err.to_string().contains("REFRESH_REUSE_GRACE_SECONDS"),
            "{err}"
        );
    }

    #[test]
    fn an_issuer_with_a_trailing_slash_fails_init_naming_the_variable() {
        for raw in [
            "https://api.foodsave.kz/api/v1/auth/",
            "https://api.foodsave.kz/",
            "https://api.foodsave.kz//",
            " https://api.foodsave.kz/api/v1/auth/ ",
        ] {
            let err = issuer(&env(&[("JWT_ISSUER", raw)])).unwrap_err();
            let message = err.to_string();
            assert!(
                message.contains("JWT_ISSUER") && message.contains("must not end with '/'"),
                "{raw:?}: {message}"
            );
            assert!(TokenConfig::load(&env(&[("JWT_ISSUER", raw)])).is_err());
        }
        assert_eq!(
            issuer(&env(&[(
                "JWT_ISSUER",
                " https://api.foodsave.kz/api/v1/auth "
            )]))
            .unwrap(),
            "https://api.foodsave.kz/api/v1/auth"
        );
    }

    #[test]
    fn account_settings_default_to_the_contract_and_stay_within_a_transaction() {
        assert_eq!(
            AccountConfig::load(&env(&[])).unwrap(),
            AccountConfig {
                reauth_max_age_seconds: NonZeroU32::new(300).unwrap(),
                max_sessions_per_account: NonZeroU32::new(20).unwrap(),
            }
        );
        for (name, value) in [
            ("MAX_SESSIONS_PER_ACCOUNT", "0"),
            ("MAX_SESSIONS_PER_ACCOUNT", "91"),
            ("REAUTH_MAX_AGE_SECONDS", "0"),
            ("REAUTH_MAX_AGE_SECONDS", "soon"),
        ] {
            let err = AccountConfig::load(&env(&[(name, value)])).unwrap_err();
            assert!(err.to_string().contains(name), "{err}");
        }
        assert_eq!(
            AccountConfig::load(&env(&[("MAX_SESSIONS_PER_ACCOUNT", "90")]))
                .unwrap()
                .max_sessions_per_account
                .get(),
            90
        );
    }

    #[test]
    fn grace_may_be_zero_but_durations_may_not() {
        let t = TokenConfig::load(&env(&[
            ("JWT_ISSUER", "https://x"),
            ("REFRESH_REUSE_GRACE_SECONDS", "0"),
        ]))
        .unwrap();
        assert_eq!(t.refresh_reuse_grace_seconds, 0);
        assert!(
            TokenConfig::load(&env(&[
                ("JWT_ISSUER", "https://x"),
                ("ACCESS_TOKEN_TTL_SECONDS", "0"),
            ]))
            .is_err()
        );
    }
}

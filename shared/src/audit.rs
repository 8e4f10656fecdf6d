//! The audit trail: one JSON line on stdout per security decision, which is at the same
//! time a CloudWatch embedded metric format (EMF) record.
//!
//! Lambda ships stdout to CloudWatch Logs; CloudWatch Logs turns every line carrying an
//! `_aws` member into metric data points (EMF specification: a JSON object, `_aws` with
//! `Timestamp` in epoch milliseconds and `CloudWatchMetrics`, a list of directives naming
//! a `Namespace`, the `Dimensions` sets and the `Metrics`, whose values are members of the
//! object itself). So one write is both the audit record, searchable with Logs Insights,
//! and a count for dashboards and alarms, with no `PutMetricData` call on the request path.
//!
//! # The line
//!
//! ```json
//! {"audit":"otp_send_refused","function":"otp-send","requestId":"…","phone":"+770******67",
//!  "sourceIp":"203.0.113.7","sub":"…","sid":"…","reason":"ip","recordOnly":false,
//!  "retryAfterSeconds":60,
//!  "Event":"otp_send_refused","Function":"otp-send","Reason":"ip","Events":1,
//!  "_aws":{"Timestamp":1700000000000,"CloudWatchMetrics":[{"Namespace":"FoodSave/Auth",
//!   "Dimensions":[["Event"],["Event","Reason"],["Function","Event"]],
//!   "Metrics":[{"Name":"Events","Unit":"Count"}]}]}}
//! ```
//!
//! - The lower-case members are the audit trail; their keys are a contract (queries and
//!   alarms are written against them). Optional ones (`requestId`, `phone`, `sourceIp`,
//!   `sub`, `sid`, `actor` (the operator of a command-line action), `reason`) are left
//!   out when absent; `recordOnly` is always there, true
//!   when `ABUSE_MODE=record-only` let a refused request through. Counts
//!   ([`Audit::count`], e.g. `attemptsLeft`, `retryAfterSeconds`) are plain numeric
//!   members, not metrics.
//! - The capitalised members are the metric: `Events` = 1, dimensioned by `Event` (the
//!   event name), `Function` (the function that decided) and, when there is one, `Reason`
//!   (which budget refused, why a session ended). Without a reason the `Reason` member
//!   and every dimension set naming it are left out, since EMF rejects a set that names a
//!   missing member.
//! - Every line carries the `[Event]` set, so one query sees every event:
//!
//!   ```text
//!   SELECT SUM(Events) FROM SCHEMA("FoodSave/Auth", Event) GROUP BY Event
//!   ```
//!
//!   (CloudWatch Metrics Insights; `SCHEMA` with exactly these keys matches each event
//!   once). By reason: `SELECT SUM(Events) FROM SCHEMA("FoodSave/Auth", Event, Reason)
//!   GROUP BY Event, Reason`; by function: `SELECT SUM(Events) FROM
//!   SCHEMA("FoodSave/Auth", Event, Function) GROUP BY Function, Event`. The alarms in
//!   `template.yaml` use the `[Event]` set (`Dimensions: [{Name: Event, Value: …}]`).
//!   Refusals recorded under `ABUSE_MODE=record-only` count like enforced ones; Logs
//!   Insights tells them apart by `recordOnly`.
//! - Dimension values come only from `&'static str` (the event, the function, the reason),
//!   so the number of metrics is fixed by the code and no request can mint new ones.
//!
//! # What never appears
//!
//! No code, token, key, pepper or full phone number: the builder takes the phone as a
//! [`PhoneNumber`] and writes only its `Display`, which masks it (`+770******67`); the
//! session id (`sid`, also in every access token) and the user id (`sub`) are random ids
//! that reveal nothing. The remaining strings (request id, source IP) are serialised as
//! JSON strings, so no value can break the line or forge another.
//!
//! # Delivery
//!
//! The functions log JSON (`LoggingConfig.LogFormat: JSON`). An audit line carries no
//! `level` member, so Lambda files it at INFO: an `ApplicationLogLevel` above INFO would
//! drop the audit trail and its metrics with it. A line lost to a failed stdout write is
//! not retried and never fails the request.

use std::io::{self, Write};

use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};
use serde_json::Value;

use crate::domain::{PhoneNumber, UnixMillis};

/// The CloudWatch namespace of the audit metrics.
pub const NAMESPACE: &str = "FoodSave/Auth";

/// The one metric: every audit line counts 1 of it.
pub const METRIC: &str = "Events";

/// The members an [`Audit::count`] may not take: the audit trail's own and the metric's.
const RESERVED: [&str; 15] = [
    "audit",
    "function",
    "requestId",
    "phone",
    "sourceIp",
    "sub",
    "sid",
    "actor",
    "reason",
    "recordOnly",
    "Event",
    "Function",
    "Reason",
    METRIC,
    "_aws",
];

/// What was decided. `as_str()` gives the event name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuditEvent {
    /// A code was sent by SMS.
    OtpSent,
    /// A send was refused by a budget (per phone, per source IP, global, guess lock).
    OtpSendRefused,
    /// A wrong code was entered.
    OtpVerifyFailed,
    /// A code was burned: its last try (`OTP_MAX_ATTEMPTS`) was wrong.
    OtpBurned,
    /// A phone ran out of wrong guesses (`OTP_MAX_WRONG_PER_DAY`): it is locked out.
    GuessBudgetExhausted,
    /// A code was accepted and a session issued.
    LoginSucceeded,
    /// A refresh token was exchanged for its successor.
    RefreshRotated,
    /// A retry inside the grace was answered with the successor already issued.
    RefreshRetried,
    /// A superseded refresh token was presented after the grace: the session is revoked.
    RefreshReuseDetected,
    /// A session was revoked (logout, reuse, the session limit, by its user).
    SessionRevoked,
    /// An account was deleted (CONTRACT §7).
    AccountDeleted,
    /// An operator blocked a phone (CONTRACT §7).
    PhoneBlocked,
    /// An operator lifted a phone's block.
    PhoneUnblocked,
    /// An operator cleared a phone's guess count and send window.
    PhoneUnlocked,
}

impl AuditEvent {
    /// Every event, in declaration order.
    pub const ALL: [Self; 14] = [
        Self::OtpSent,
        Self::OtpSendRefused,
        Self::OtpVerifyFailed,
        Self::OtpBurned,
        Self::GuessBudgetExhausted,
        Self::LoginSucceeded,
        Self::RefreshRotated,
        Self::RefreshRetried,
        Self::RefreshReuseDetected,
        Self::SessionRevoked,
        Self::AccountDeleted,
        Self::PhoneBlocked,
        Self::PhoneUnblocked,
        Self::PhoneUnlocked,
    ];

    /// The events only the operator's command line writes.
    pub const OPERATOR: [Self; 3] = [
        Self::PhoneBlocked,
        Self::PhoneUnblocked,
        Self::PhoneUnlocked,
    ];

    /// The event name: the `audit` member and the `Event` dimension.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::OtpSent => "otp_sent",
            Self::OtpSendRefused => "otp_send_refused",
            Self::OtpVerifyFailed => "otp_verify_failed",
            Self::OtpBurned => "otp_burned",
            Self::GuessBudgetExhausted => "guess_budget_exhausted",
            Self::LoginSucceeded => "login_succeeded",
            Self::RefreshRotated => "refresh_rotated",
            Self::RefreshRetried => "refresh_retried",
            Self::RefreshReuseDetected => "refresh_reuse_detected",
            Self::SessionRevoked => "session_revoked",
            Self::AccountDeleted => "account_deleted",
            Self::PhoneBlocked => "phone_blocked",
            Self::PhoneUnblocked => "phone_unblocked",
            Self::PhoneUnlocked => "phone_unlocked",
        }
    }
}

impl std::fmt::Display for AuditEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One audit record, built up and then written with [`Audit::emit`].
#[derive(Debug, Clone)]
#[must_use = "an audit record is written only by emit()"]
pub struct Audit<'a> {
    event: AuditEvent,
    function: &'static str,
    request_id: Option<&'a str>,
    phone: Option<&'a PhoneNumber>,
    source_ip: Option<&'a str>,
    sub: Option<&'a str>,
    sid: Option<&'a str>,
    actor: Option<&'a str>,
    reason: Option<&'static str>,
    counts: Vec<(&'static str, u64)>,
    record_only: bool,
}

impl<'a> Audit<'a> {
    /// `function` is the deciding function's name (`otp-send`): the `Function` dimension.
    pub fn new(event: AuditEvent, function: &'static str) -> Self {
        Self {
            event,
            function,
            request_id: None,
            phone: None,
            source_ip: None,
            sub: None,
            sid: None,
            actor: None,
            reason: None,
            counts: Vec::new(),
            record_only: false,
        }
    }

    /// The API Gateway request id, to join the line with the access log.
    pub fn request_id(mut self, id: Option<&'a str>) -> Self {
        self.request_id = id;
        self
    }

    /// Written masked (`+770******67`), never in full.
    pub fn phone(mut self, phone: &'a PhoneNumber) -> Self {
        self.phone = Some(phone);
        self
    }

    pub fn source_ip(mut self, ip: Option<&'a str>) -> Self {
        self.source_ip = ip;
        self
    }

    /// The user id (`sub`).
    pub fn user(mut self, sub: &'a str) -> Self {
        self.sub = Some(sub);
        self
    }

    /// The session id (`sid`).
    pub fn session(mut self, sid: &'a str) -> Self {
        self.sid = Some(sid);
        self
    }

    /// Who acted: the operator of a command-line action (CONTRACT §7).
    pub fn actor(mut self, actor: &'a str) -> Self {
        self.actor = Some(actor);
        self
    }

    /// Why: which budget refused (`phone_window`, `ip`, `global`, `guess_lock`), why a
    /// session ended (`reuse`, `logout`). Also the `Reason` dimension.
    pub fn reason(mut self, reason: &'static str) -> Self {
        self.reason = Some(reason);
        self
    }

    /// An extra numeric member (`attemptsLeft`, `retryAfterSeconds`); not a metric. The
    /// same key again replaces the value; a key of the line's own members is ignored.
    pub fn count(mut self, key: &'static str, value: u64) -> Self {
        if RESERVED.contains(&key) {
            return self;
        }
        match self.counts.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.counts.push((key, value)),
        }
        self
    }

    /// The refusal was only recorded (`ABUSE_MODE=record-only`), the request went on.
    pub fn record_only(mut self, yes: bool) -> Self {
        self.record_only = yes;
        self
    }

    /// The line as JSON (see the module docs for its shape).
    pub fn to_json(&self, now: UnixMillis) -> Value {
        // Infallible: every key is a string and every value plain data.
        serde_json::to_value(self.line(now)).unwrap_or_default()
    }

    /// Writes the line to stdout, where Lambda hands it to CloudWatch Logs. A failed
    /// write is ignored: the audit trail never fails a request.
    pub fn emit(self, now: UnixMillis) {
        let _ = self.write_line(&mut io::stdout().lock(), now);
    }

    /// Writes the line to stderr: the operator's command line keeps stdout for results.
    pub fn emit_to_stderr(self, now: UnixMillis) {
        let _ = self.write_line(&mut io::stderr().lock(), now);
    }

    /// Writes the line, members in the documented order, and a newline.
    fn write_line(&self, out: &mut impl Write, now: UnixMillis) -> io::Result<()> {
        let line = serde_json::to_string(&self.line(now)).map_err(io::Error::other)?;
        writeln!(out, "{line}")
    }

    /// The members in the order they are written: audit trail, counts, metric, `_aws`.
    fn line(&self, now: UnixMillis) -> Line {
        let event = self.event.as_str();
        let mut members: Vec<(&'static str, Value)> =
            vec![("audit", event.into()), ("function", self.function.into())];
        let optional = [
            ("requestId", self.request_id.map(str::to_owned)),
            ("phone", self.phone.map(PhoneNumber::to_string)),
            ("sourceIp", self.source_ip.map(str::to_owned)),
            ("sub", self.sub.map(str::to_owned)),
            ("sid", self.sid.map(str::to_owned)),
            ("actor", self.actor.map(str::to_owned)),
            ("reason", self.reason.map(str::to_owned)),
        ];
        members.extend(
            optional
                .into_iter()
                .filter_map(|(key, value)| value.map(|v| (key, Value::String(v)))),
        );
        members.push(("recordOnly", self.record_only.into()));
        members.extend(self.counts.iter().map(|&(key, value)| (key, value.into())));

        members.push(("Event", event.into()));
        members.push(("Function", self.function.into()));
        let mut dimensions = vec![BY_EVENT];
        if let Some(reason) = self.reason {
            members.push(("Reason", reason.into()));
            dimensions.push(BY_EVENT_REASON);
        }
        dimensions.push(BY_FUNCTION_EVENT);
        members.push((METRIC, 1.into()));
        Line {
            members,
            aws: Metadata {
                timestamp: now.as_millis(),
                cloud_watch_metrics: [MetricDirective {
                    namespace: NAMESPACE,
                    dimensions,
                    metrics: [MetricDefinition {
                        name: METRIC,
                        unit: "Count",
                    }],
                }],
            },
        }
    }
}

/// The dimension sets: every line is counted under `[Event]`, so one query sees all.
const BY_EVENT: &[&str] = &["Event"];
const BY_EVENT_REASON: &[&str] = &["Event", "Reason"];
const BY_FUNCTION_EVENT: &[&str] = &["Function", "Event"];

/// One audit line: its members in order, then `_aws`. Serialised by hand because
/// `serde_json::Map` sorts its keys.
struct Line {
    members: Vec<(&'static str, Value)>,
    aws: Metadata,
}

impl Serialize for Line {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.members.len().saturating_add(1)))?;
        for (key, value) in &self.members {
            map.serialize_entry(key, value)?;
        }
        map.serialize_entry("_aws", &self.aws)?;
        map.end()
    }
}

/// The EMF metadata object (`_aws`).
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Metadata {
    /// Epoch milliseconds.
    timestamp: u64,
    cloud_watch_metrics: [MetricDirective; 1],
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct MetricDirective {
    namespace: &'static str,
    dimensions: Vec<&'static [&'static str]>,
    metrics: [MetricDefinition; 1],
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct MetricDefinition {
    name: &'static str,
    unit: &'static str,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const NOW: UnixMillis = UnixMillis(1_700_000_000_123);

    fn phone() -> PhoneNumber {
        PhoneNumber::parse("+77019876543").unwrap()
    }

    fn refused(phone: &PhoneNumber) -> Audit<'_> {
        Audit::new(AuditEvent::OtpSendRefused, "otp-send")
            .request_id(Some("req-1"))
            .phone(phone)
            .source_ip(Some("203.0.113.7"))
            .user("user-sub")
            .session("session-sid")
            .reason("ip")
            .count("retryAfterSeconds", 60)
            .record_only(false)
    }

    fn written(audit: &Audit<'_>) -> String {
        let mut out = Vec::new();
        audit.write_line(&mut out, NOW).unwrap();
        String::from_utf8(out).unwrap()
    }

    /// Checks `line` against the EMF specification and returns its dimension sets.
    fn assert_valid_emf(line: &Value) -> Vec<Vec<String>> {
        let root = line.as_object().unwrap();
        let aws = root["_aws"].as_object().unwrap();
        assert_eq!(aws.len(), 2, "{aws:?}");
        assert_eq!(aws["Timestamp"].as_u64(), Some(NOW.as_millis()));
        let directives = aws["CloudWatchMetrics"].as_array().unwrap();
        assert_eq!(directives.len(), 1);
        let directive = directives[0].as_object().unwrap();
        assert_eq!(directive.len(), 3, "{directive:?}");
        assert_eq!(directive["Namespace"], NAMESPACE);

        let metrics = directive["Metrics"].as_array().unwrap();
        assert_eq!(metrics, &vec![json!({"Name": "Events", "Unit": "Count"})]);
        for metric in metrics {
            let name = metric["Name"].as_str().unwrap();
            assert_eq!(root[name].as_u64(), Some(1), "metric {name} counts 1");
        }

        let sets: Vec<Vec<String>> = directive["Dimensions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|set| {
                set.as_array()
                    .unwrap()
                    .iter()
                    .map(|d| d.as_str().unwrap().to_owned())
                    .collect()
            })
            .collect();
        for set in &sets {
            assert!(!set.is_empty() && set.len() <= 30, "{set:?}");
            for name in set {
                let value = root.get(name).and_then(Value::as_str);
                assert!(
                    value.is_some_and(|v| !v.is_empty()),
                    "dimension {name} must be a non-empty top-level string member"
                );
            }
        }
        sets
    }

    #[test]
    fn event_names_are_the_contract_names() {
        let names: Vec<&str> = AuditEvent::ALL.iter().map(|e| e.as_str()).collect();
        assert_eq!(
            names,
            [
                "otp_sent",
                "otp_send_refused",
                "otp_verify_failed",
                "otp_burned",
                "guess_budget_exhausted",
                "login_succeeded",
                "refresh_rotated",
                "refresh_retried",
                "refresh_reuse_detected",
                "session_revoked",
                "account_deleted",
                "phone_blocked",
                "phone_unblocked",
                "phone_unlocked",
            ]
        );
        assert_eq!(AuditEvent::RefreshRetried.to_string(), "refresh_retried");
    }

    #[test]
    fn a_full_line_has_the_documented_members() {
        let phone = phone();
        let line = refused(&phone).to_json(NOW);
        let expected = json!({
            "audit": "otp_send_refused",
            "function": "otp-send",
            "requestId": "req-1",
            "phone": "+770******43",
            "sourceIp": "203.0.113.7",
            "sub": "user-sub",
            "sid": "session-sid",
            "reason": "ip",
            "recordOnly": false,
            "retryAfterSeconds": 60,
            "Event": "otp_send_refused",
            "Function": "otp-send",
            "Reason": "ip",
            "Events": 1,
            "_aws": {
                "Timestamp": 1_700_000_000_123_u64,
                "CloudWatchMetrics": [{
                    "Namespace": "FoodSave/Auth",
                    "Dimensions": [["Event"], ["Event", "Reason"], ["Function", "Event"]],
                    "Metrics": [{"Name": "Events", "Unit": "Count"}],
                }],
            },
        });
        assert_eq!(line, expected);
    }

    #[test]
    fn a_line_is_valid_emf_with_a_reason() {
        let phone = phone();
        let sets = assert_valid_emf(&refused(&phone).to_json(NOW));
        assert_eq!(
            sets,
            [
                vec!["Event"],
                vec!["Event", "Reason"],
                vec!["Function", "Event"]
            ]
        );
    }

    #[test]
    fn without_a_reason_no_member_or_dimension_set_names_reason() {
        let line = Audit::new(AuditEvent::LoginSucceeded, "otp-verify").to_json(NOW);
        let sets = assert_valid_emf(&line);
        assert_eq!(sets, [vec!["Event"], vec!["Function", "Event"]]);
        let root = line.as_object().unwrap();
        assert!(!root.contains_key("Reason"));
        assert!(!root.contains_key("reason"));
    }

    #[test]
    fn absent_optional_members_are_left_out() {
        let line = Audit::new(AuditEvent::OtpSent, "otp-send")
            .request_id(None)
            .source_ip(None)
            .to_json(NOW);
        let mut keys: Vec<&str> = line
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "Event",
                "Events",
                "Function",
                "_aws",
                "audit",
                "function",
                "recordOnly"
            ]
        );
        assert_eq!(line["recordOnly"], false);
    }

    #[test]
    fn every_event_is_counted_under_the_event_only_dimension_set() {
        for event in AuditEvent::ALL {
            for reason in [None, Some("global")] {
                let mut audit = Audit::new(event, "token-refresh");
                if let Some(reason) = reason {
                    audit = audit.reason(reason);
                }
                let line = audit.to_json(NOW);
                let sets = assert_valid_emf(&line);
                assert_eq!(sets.first(), Some(&vec!["Event".to_owned()]), "{event}");
                assert_eq!(line["Event"], event.as_str());
                assert_eq!(line["audit"], event.as_str());
            }
        }
    }

    #[test]
    fn the_full_phone_number_never_appears() {
        let phone = phone();
        let text = written(&refused(&phone));
        let json = refused(&phone).to_json(NOW).to_string();
        let digits = phone.e164().strip_prefix('+').unwrap();
        for haystack in [&text, &json] {
            assert!(!haystack.contains(phone.e164()), "{haystack}");
            assert!(!haystack.contains(digits), "{haystack}");
            // No six consecutive digits of the number, in particular not the hidden middle.
            for window in digits.as_bytes().windows(6) {
                let window = std::str::from_utf8(window).unwrap();
                assert!(!haystack.contains(window), "{window} in {haystack}");
            }
            assert!(
                haystack.contains("\"phone\":\"+770******43\""),
                "{haystack}"
            );
        }
    }

    #[test]
    fn counts_are_plain_members_not_metrics() {
        let line = Audit::new(AuditEvent::OtpVerifyFailed, "otp-verify")
            .count("attemptsLeft", 3)
            .count("attemptsLeft", 2)
            .count("retryAfterSeconds", 30)
            .to_json(NOW);
        assert_eq!(line["attemptsLeft"], 2);
        assert_eq!(line["retryAfterSeconds"], 30);
        let metrics = &line["_aws"]["CloudWatchMetrics"][0]["Metrics"];
        assert_eq!(metrics, &json!([{"Name": "Events", "Unit": "Count"}]));
    }

    #[test]
    fn a_count_cannot_overwrite_the_lines_own_members() {
        let line = Audit::new(AuditEvent::OtpBurned, "otp-verify")
            .count("Events", 1000)
            .count("recordOnly", 1)
            .count("_aws", 0)
            .count("Event", 7)
            .to_json(NOW);
        assert_eq!(line["Events"], 1);
        assert_eq!(line["recordOnly"], false);
        assert_eq!(line["Event"], "otp_burned");
        assert_valid_emf(&line);
    }

    #[test]
    fn record_only_is_written_when_set() {
        let line = Audit::new(AuditEvent::OtpSendRefused, "otp-send")
            .reason("phone_window")
            .record_only(true)
            .to_json(NOW);
        assert_eq!(line["recordOnly"], true);
        assert_eq!(line["Reason"], "phone_window");
    }

    #[test]
    fn the_written_line_is_one_line_in_documented_order() {
        let phone = phone();
        let crafted = "req\n{\"audit\":\"login_succeeded\"}";
        let audit = refused(&phone).request_id(Some(crafted));
        let text = written(&audit);
        let line = text.strip_suffix('\n').unwrap();
        assert!(!line.contains('\n') && !line.contains('\r'), "{text}");
        assert!(line.starts_with("{\"audit\":\"otp_send_refused\",\"function\":\"otp-send\","));
        assert!(
            line.ends_with(
                r#""Events":1,"_aws":{"Timestamp":1700000000123,"CloudWatchMetrics":[{"Namespace":"FoodSave/Auth","Dimensions":[["Event"],["Event","Reason"],["Function","Event"]],"Metrics":[{"Name":"Events","Unit":"Count"}]}]}}"#
            ),
            "{line}"
        );
        let parsed: Value = serde_json::from_str(line).unwrap();
        assert_eq!(parsed, audit.to_json(NOW));
        assert_eq!(parsed["requestId"], crafted);
    }
}

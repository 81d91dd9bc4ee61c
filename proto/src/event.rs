//! The event model: closed Rust types named after the Elastic Common Schema (ECS).
//!
//! One [`Event`] type covers every kind Vigie produces. Each ECS section is an
//! optional struct, so the canonical JSON form (`serde_json`) is the nested ECS
//! document users know from Elastic and Wazuh, and the binary form (`bincode`)
//! is compact. Fields that have no place in the closed types go to the bounded
//! `labels` map.
//!
//! [`Event::visit_fields`] walks every set field with its dotted ECS path; the
//! collector's index, the query engine and the rule engine all read events
//! through it, so a field added here becomes searchable everywhere at once.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use bincode::{Decode, Encode};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Most labels one event may carry.
pub const MAX_LABELS: usize = 64;
/// Longest label key or value, in bytes.
pub const MAX_LABEL_LEN: usize = 1024;
/// Longest message kept, in bytes; longer messages are cut at a char boundary
/// and `event.truncated` is set.
pub const MAX_MESSAGE_LEN: usize = 64 * 1024;

/// A point in time: nanoseconds since the Unix epoch, UTC.
///
/// JSON form: RFC 3339 with nanoseconds and a `Z` suffix.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Encode, Decode)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub const fn from_nanos(n: i64) -> Self {
        Timestamp(n)
    }
    pub fn from_secs(s: i64) -> Self {
        Timestamp(s.saturating_mul(1_000_000_000))
    }
    pub fn from_millis(ms: i64) -> Self {
        Timestamp(ms.saturating_mul(1_000_000))
    }
    pub const fn nanos(self) -> i64 {
        self.0
    }
    pub fn millis(self) -> i64 {
        self.0.div_euclid(1_000_000)
    }
    pub fn secs(self) -> i64 {
        self.0.div_euclid(1_000_000_000)
    }
    /// RFC 3339 text, always UTC, with nanoseconds.
    pub fn to_rfc3339(self) -> String {
        let dt = chrono::DateTime::from_timestamp_nanos(self.0);
        dt.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
    }
    /// Parses RFC 3339 (any offset) into UTC.
    pub fn parse_rfc3339(s: &str) -> Result<Self, String> {
        let dt = chrono::DateTime::parse_from_rfc3339(s).map_err(|e| {
            format!("invalid timestamp {s:?}: {e}; expected RFC 3339 such as 2026-01-31T12:00:00Z")
        })?;
        dt.timestamp_nanos_opt()
            .map(Timestamp)
            .ok_or_else(|| format!("timestamp {s:?} is out of range"))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_rfc3339())
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Timestamp::parse_rfc3339(&s).map_err(serde::de::Error::custom)
    }
}

/// What produced an event: Vigie's closed list of event kinds.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Encode,
    Decode,
    Serialize,
    Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A line of text from journald, a file or syslog.
    #[default]
    Log,
    ProcessExec,
    ProcessExit,
    NetworkConnect,
    NetworkAccept,
    FileChange,
    Authentication,
    PrivilegeChange,
    HostMetrics,
    PackageInventory,
    ScaResult,
    CommandResult,
    AgentHealth,
}

impl Kind {
    pub const ALL: [Kind; 13] = [
        Kind::Log,
        Kind::ProcessExec,
        Kind::ProcessExit,
        Kind::NetworkConnect,
        Kind::NetworkAccept,
        Kind::FileChange,
        Kind::Authentication,
        Kind::PrivilegeChange,
        Kind::HostMetrics,
        Kind::PackageInventory,
        Kind::ScaResult,
        Kind::CommandResult,
        Kind::AgentHealth,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Log => "log",
            Kind::ProcessExec => "process_exec",
            Kind::ProcessExit => "process_exit",
            Kind::NetworkConnect => "network_connect",
            Kind::NetworkAccept => "network_accept",
            Kind::FileChange => "file_change",
            Kind::Authentication => "authentication",
            Kind::PrivilegeChange => "privilege_change",
            Kind::HostMetrics => "host_metrics",
            Kind::PackageInventory => "package_inventory",
            Kind::ScaResult => "sca_result",
            Kind::CommandResult => "command_result",
            Kind::AgentHealth => "agent_health",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Stable small number used in storage keys and counters. Do not change.
    pub fn code(self) -> u8 {
        self as u8
    }

    pub fn from_code(c: u8) -> Option<Kind> {
        Kind::ALL.get(c as usize).copied()
    }

    /// ECS `event.kind`.
    pub fn ecs_kind(self) -> &'static str {
        match self {
            Kind::HostMetrics => "metric",
            Kind::PackageInventory | Kind::ScaResult => "state",
            _ => "event",
        }
    }

    /// ECS `event.category` values.
    pub fn ecs_category(self) -> &'static [&'static str] {
        match self {
            Kind::Log => &[],
            Kind::ProcessExec | Kind::ProcessExit => &["process"],
            Kind::NetworkConnect | Kind::NetworkAccept => &["network"],
            Kind::FileChange => &["file"],
            Kind::Authentication => &["authentication"],
            Kind::PrivilegeChange => &["iam"],
            Kind::HostMetrics => &["host"],
            Kind::PackageInventory => &["package"],
            Kind::ScaResult => &["configuration"],
            Kind::CommandResult => &["process"],
            Kind::AgentHealth => &["host"],
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// ECS `event.outcome`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Success,
    Failure,
    Unknown,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
            Outcome::Unknown => "unknown",
        }
    }
}

/// Syslog severities (RFC 5424), used for every event's `log.level`.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Encode,
    Decode,
    Serialize,
    Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Emergency = 0,
    Alert = 1,
    Critical = 2,
    Error = 3,
    Warning = 4,
    Notice = 5,
    #[default]
    Info = 6,
    Debug = 7,
}

impl Severity {
    pub const ALL: [Severity; 8] = [
        Severity::Emergency,
        Severity::Alert,
        Severity::Critical,
        Severity::Error,
        Severity::Warning,
        Severity::Notice,
        Severity::Info,
        Severity::Debug,
    ];
    pub fn from_code(c: u8) -> Option<Severity> {
        Severity::ALL.get(c as usize).copied()
    }
    pub fn code(self) -> u8 {
        self as u8
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Emergency => "emergency",
            Severity::Alert => "alert",
            Severity::Critical => "critical",
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Notice => "notice",
            Severity::Info => "info",
            Severity::Debug => "debug",
        }
    }
    pub fn parse(s: &str) -> Option<Severity> {
        let s = s.to_ascii_lowercase();
        Severity::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .or(match s.as_str() {
                "emerg" | "panic" => Some(Severity::Emergency),
                "crit" => Some(Severity::Critical),
                "err" => Some(Severity::Error),
                "warn" => Some(Severity::Warning),
                _ => None,
            })
    }
}

/// ECS `event.*`.
#[derive(Clone, Debug, Default, PartialEq, Encode, Decode, Serialize, Deserialize)]
pub struct EventMeta {
    /// Vigie's kind; ECS `event.dataset` carries it in JSON.
    #[serde(rename = "dataset")]
    pub kind: Kind,
    /// What happened, e.g. `ssh_login`, `exec`, `connect`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    /// Which source produced the event: `journald`, `file`, `syslog`, `ebpf`, `proc`, `metrics`, `agent`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub module: String,
    /// Stable identity of the event: `{agent}-{epoch}-{seq}`, set when the event enters the agent's spool.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    /// When the collector stored it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingested: Option<Timestamp>,
    /// The message was cut to [`MAX_MESSAGE_LEN`].
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

/// ECS `host.*`.
#[derive(Clone, Debug, Default, PartialEq, Encode, Decode, Serialize, Deserialize)]
pub struct Host {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// `/etc/machine-id`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip: Vec<IpAddr>,
}

/// ECS `agent.*`.
#[derive(Clone, Debug, Default, PartialEq, Encode, Decode, Serialize, Deserialize)]
pub struct AgentInfo {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub version: String,
}

/// ECS `log.*`.
#[derive(Clone, Debug, Default, PartialEq, Encode, Decode, Serialize, Deserialize)]
pub struct Log {
    /// Severity, as ECS `log.level`.
    pub level: Severity,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<LogFile>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub syslog: Option<Syslog>,
    /// Logger name: syslog identifier / journald `SYSLOG_IDENTIFIER`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub logger: String,
}

#[derive(Clone, Debug, Default, PartialEq, Encode, Decode, Serialize, Deserialize)]
pub struct LogFile {
    pub path: String,
    /// Byte offset of the line in the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
}

/// ECS `log.syslog.*`.
#[derive(Clone, Debug, Default, PartialEq, Encode, Decode, Serialize, Deserialize)]
pub struct Syslog {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub facility: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u8>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub hostname: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub appname: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub procid: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub msgid: String,
    /// `rfc3164` or `rfc5424`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub version: String,
}

/// ECS `process.*` (and `process.parent.*` through `parent`).
#[derive(Clone, Debug, Default, PartialEq, Encode, Decode, Serialize, Deserialize)]
pub struct Process {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub executable: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub command_line: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub working_directory: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tty: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<UserRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<ParentProcess>,
}

/// ECS `process.parent.*`.
#[derive(Clone, Debug, Default, PartialEq, Encode, Decode, Serialize, Deserialize)]
pub struct ParentProcess {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub executable: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub command_line: String,
}

/// A user reference (`user.*`, `user.target.*`, `user.effective.*`, `process.user.*`).
#[derive(Clone, Debug, Default, PartialEq, Encode, Decode, Serialize, Deserialize)]
pub struct UserRef {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u32>,
}

/// ECS `user.*`.
#[derive(Clone, Debug, Default, PartialEq, Encode, Decode, Serialize, Deserialize)]
pub struct User {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<UserRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effective: Option<UserRef>,
}

/// ECS `source.*` / `destination.*`.
#[derive(Clone, Debug, Default, PartialEq, Encode, Decode, Serialize, Deserialize)]
pub struct Endpoint {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Host name or unparsed address as the source gave it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub address: String,
}

/// ECS `network.*`.
#[derive(Clone, Debug, Default, PartialEq, Encode, Decode, Serialize, Deserialize)]
pub struct Network {
    /// `tcp`, `udp`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub transport: String,
    /// `ipv4`, `ipv6`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub r#type: String,
    /// `ingress`, `egress`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub direction: String,
    /// Application protocol, e.g. `ssh`, `dns`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub protocol: String,
}

/// ECS `file.*`.
#[derive(Clone, Debug, Default, PartialEq, Encode, Decode, Serialize, Deserialize)]
pub struct File {
    pub path: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub target_path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

/// Host metrics (Metricbeat's `system.*` names, flattened to the ones Vigie collects).
#[derive(Clone, Debug, Default, PartialEq, Encode, Decode, Serialize, Deserialize)]
pub struct SystemMetrics {
    /// CPU use over the sampling period, 0..=1 of all cores.
    pub cpu_pct: f64,
    pub memory_used_bytes: u64,
    pub memory_total_bytes: u64,
    pub swap_used_bytes: u64,
    pub load_1: f64,
    pub load_5: f64,
    pub load_15: f64,
    pub disk_used_bytes: u64,
    pub disk_total_bytes: u64,
    pub network_in_bytes: u64,
    pub network_out_bytes: u64,
    pub uptime_secs: u64,
    pub processes: u32,
}

/// ECS `package.*`.
#[derive(Clone, Debug, Default, PartialEq, Encode, Decode, Serialize, Deserialize)]
pub struct Package {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub version: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub architecture: String,
}

/// The agent's own health: counters that make every loss visible.
#[derive(Clone, Debug, Default, PartialEq, Encode, Decode, Serialize, Deserialize)]
pub struct AgentHealth {
    /// Events a source could not hand to the spool (the source cannot pause), since the agent started.
    pub dropped_events: u64,
    /// Spool records found corrupt and skipped.
    pub corrupt_records: u64,
    /// Bytes waiting in the spool.
    pub spool_bytes: u64,
    /// Events waiting in the spool.
    pub spool_events: u64,
    /// Per-source drop counters, `source name -> count`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub drops_by_source: BTreeMap<String, u64>,
    /// Set when the agent started a new epoch, with the reason.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub new_epoch_reason: String,
}

/// Result of a command run on the agent.
#[derive(Clone, Debug, Default, PartialEq, Encode, Decode, Serialize, Deserialize)]
pub struct CommandOutcome {
    pub command_id: String,
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub output: String,
}

/// Vigie-specific sections (`vigie.*`).
#[derive(Clone, Debug, Default, PartialEq, Encode, Decode, Serialize, Deserialize)]
pub struct VigieExt {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<AgentHealth>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<CommandOutcome>,
}

/// One event. See the module documentation.
#[derive(Clone, Debug, Default, PartialEq, Encode, Decode, Serialize, Deserialize)]
pub struct Event {
    #[serde(rename = "@timestamp")]
    pub timestamp: Timestamp,
    pub event: EventMeta,
    #[serde(default)]
    pub host: Host,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<AgentInfo>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<Log>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<Process>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<User>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Endpoint>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<Endpoint>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<Network>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<File>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<SystemMetrics>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package: Option<Package>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vigie: Option<VigieExt>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// A borrowed field value, as the index, the query engine and the rules see it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum FieldValue<'a> {
    Str(&'a str),
    Int(i64),
    Float(f64),
    Ip(IpAddr),
    Bool(bool),
}

impl FieldValue<'_> {
    /// The value as text, as it appears in JSON (without quotes).
    pub fn to_text(&self) -> std::borrow::Cow<'_, str> {
        match self {
            FieldValue::Str(s) => std::borrow::Cow::Borrowed(s),
            FieldValue::Int(i) => std::borrow::Cow::Owned(i.to_string()),
            FieldValue::Float(f) => std::borrow::Cow::Owned(f.to_string()),
            FieldValue::Ip(ip) => std::borrow::Cow::Owned(ip.to_string()),
            FieldValue::Bool(b) => std::borrow::Cow::Borrowed(if *b { "true" } else { "false" }),
        }
    }
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            FieldValue::Int(i) => Some(*i as f64),
            FieldValue::Float(f) => Some(*f),
            FieldValue::Str(s) => s.parse().ok(),
            _ => None,
        }
    }
}

impl Event {
    /// A new event of `kind` at `timestamp`; everything else empty.
    pub fn new(kind: Kind, timestamp: Timestamp) -> Self {
        Event {
            timestamp,
            event: EventMeta {
                kind,
                ..Default::default()
            },
            ..Default::default()
        }
    }

    pub fn kind(&self) -> Kind {
        self.event.kind
    }

    pub fn severity(&self) -> Severity {
        self.log.as_ref().map(|l| l.level).unwrap_or_default()
    }

    /// Sets the message, cutting it to [`MAX_MESSAGE_LEN`] at a char boundary.
    pub fn set_message(&mut self, msg: impl Into<String>) {
        let mut msg = msg.into();
        if msg.len() > MAX_MESSAGE_LEN {
            let mut cut = MAX_MESSAGE_LEN;
            while !msg.is_char_boundary(cut) {
                cut -= 1;
            }
            msg.truncate(cut);
            self.event.truncated = true;
        }
        self.message = msg;
    }

    /// Adds a label, keeping the map within [`MAX_LABELS`] and [`MAX_LABEL_LEN`].
    /// Returns false when the label was refused.
    pub fn add_label(&mut self, key: &str, value: &str) -> bool {
        if key.len() > MAX_LABEL_LEN || value.len() > MAX_LABEL_LEN {
            return false;
        }
        if self.labels.len() >= MAX_LABELS && !self.labels.contains_key(key) {
            return false;
        }
        self.labels.insert(key.to_string(), value.to_string());
        true
    }

    /// Checks the bounds a decoded event must respect (labels, message size).
    pub fn check_bounds(&self) -> Result<(), String> {
        if self.labels.len() > MAX_LABELS {
            return Err(format!(
                "event has {} labels; at most {MAX_LABELS} are allowed",
                self.labels.len()
            ));
        }
        if let Some((k, _)) = self
            .labels
            .iter()
            .find(|(k, v)| k.len() > MAX_LABEL_LEN || v.len() > MAX_LABEL_LEN)
        {
            return Err(format!(
                "label {:?} is longer than {MAX_LABEL_LEN} bytes",
                truncate_for_log(k)
            ));
        }
        if self.message.len() > MAX_MESSAGE_LEN {
            return Err(format!(
                "message is {} bytes; at most {MAX_MESSAGE_LEN} are allowed",
                self.message.len()
            ));
        }
        Ok(())
    }

    /// Canonical JSON (one line).
    pub fn to_json(&self) -> String {
        // Serializing these closed types cannot fail: every map key is a string.
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// Parses the canonical JSON form.
    pub fn from_json(s: &str) -> Result<Event, String> {
        let ev: Event = serde_json::from_str(s).map_err(|e| format!("invalid event JSON: {e}"))?;
        ev.check_bounds()?;
        Ok(ev)
    }

    /// Looks up one field by its dotted ECS path.
    pub fn field(&self, path: &str) -> Option<FieldValue<'_>> {
        let mut found = None;
        self.visit_fields(&mut |p, v| {
            if found.is_none() && p == path {
                found = Some(v);
            }
        });
        found
    }

    /// Calls `f` with every set field and its dotted ECS path. Lists yield one call per item.
    pub fn visit_fields<'a>(&'a self, f: &mut dyn FnMut(&str, FieldValue<'a>)) {
        use FieldValue::*;
        let s = |f: &mut dyn FnMut(&str, FieldValue<'a>), p: &str, v: &'a str| {
            if !v.is_empty() {
                f(p, Str(v))
            }
        };
        f("@timestamp", Int(self.timestamp.millis()));
        f("event.dataset", Str(self.event.kind.as_str()));
        f("event.kind", Str(self.event.kind.ecs_kind()));
        for c in self.event.kind.ecs_category() {
            f("event.category", Str(c));
        }
        s(f, "event.action", &self.event.action);
        if let Some(o) = self.event.outcome {
            f("event.outcome", Str(o.as_str()));
        }
        s(f, "event.module", &self.event.module);
        s(f, "event.id", &self.event.id);
        s(f, "host.name", &self.host.name);
        s(f, "host.id", &self.host.id);
        for ip in &self.host.ip {
            f("host.ip", Ip(*ip));
        }
        if let Some(a) = &self.agent {
            s(f, "agent.id", &a.id);
            s(f, "agent.version", &a.version);
        }
        s(f, "message", &self.message);
        if let Some(l) = &self.log {
            f("log.level", Str(l.level.as_str()));
            s(f, "log.logger", &l.logger);
            if let Some(file) = &l.file {
                s(f, "log.file.path", &file.path);
            }
            if let Some(sl) = &l.syslog {
                if let Some(v) = sl.facility {
                    f("log.syslog.facility.code", Int(v.into()));
                }
                if let Some(v) = sl.priority {
                    f("log.syslog.priority", Int(v.into()));
                }
                s(f, "log.syslog.hostname", &sl.hostname);
                s(f, "log.syslog.appname", &sl.appname);
                s(f, "log.syslog.procid", &sl.procid);
                s(f, "log.syslog.msgid", &sl.msgid);
            }
        }
        if let Some(p) = &self.process {
            if let Some(pid) = p.pid {
                f("process.pid", Int(pid.into()));
            }
            s(f, "process.name", &p.name);
            s(f, "process.executable", &p.executable);
            s(f, "process.command_line", &p.command_line);
            for a in &p.args {
                f("process.args", Str(a));
            }
            s(f, "process.working_directory", &p.working_directory);
            if let Some(c) = p.exit_code {
                f("process.exit_code", Int(c.into()));
            }
            if let Some(t) = &p.tty {
                s(f, "process.tty", t);
            }
            if let Some(u) = &p.user {
                s(f, "process.user.name", &u.name);
                if let Some(id) = u.id {
                    f("process.user.id", Int(id.into()));
                }
            }
            if let Some(pp) = &p.parent {
                if let Some(pid) = pp.pid {
                    f("process.parent.pid", Int(pid.into()));
                }
                s(f, "process.parent.name", &pp.name);
                s(f, "process.parent.executable", &pp.executable);
                s(f, "process.parent.command_line", &pp.command_line);
            }
        }
        if let Some(u) = &self.user {
            s(f, "user.name", &u.name);
            if let Some(id) = u.id {
                f("user.id", Int(id.into()));
            }
            if let Some(t) = &u.target {
                s(f, "user.target.name", &t.name);
                if let Some(id) = t.id {
                    f("user.target.id", Int(id.into()));
                }
            }
            if let Some(t) = &u.effective {
                s(f, "user.effective.name", &t.name);
                if let Some(id) = t.id {
                    f("user.effective.id", Int(id.into()));
                }
            }
        }
        for (prefix, ep) in [("source", &self.source), ("destination", &self.destination)] {
            if let Some(ep) = ep {
                if let Some(ip) = ep.ip {
                    f(
                        if prefix == "source" {
                            "source.ip"
                        } else {
                            "destination.ip"
                        },
                        Ip(ip),
                    );
                }
                if let Some(port) = ep.port {
                    f(
                        if prefix == "source" {
                            "source.port"
                        } else {
                            "destination.port"
                        },
                        Int(port.into()),
                    );
                }
                s(
                    f,
                    if prefix == "source" {
                        "source.address"
                    } else {
                        "destination.address"
                    },
                    &ep.address,
                );
            }
        }
        if let Some(n) = &self.network {
            s(f, "network.transport", &n.transport);
            s(f, "network.type", &n.r#type);
            s(f, "network.direction", &n.direction);
            s(f, "network.protocol", &n.protocol);
        }
        if let Some(file) = &self.file {
            s(f, "file.path", &file.path);
            s(f, "file.target_path", &file.target_path);
            if let Some(v) = file.size {
                f("file.size", Int(v as i64));
            }
            if let Some(v) = &file.mode {
                s(f, "file.mode", v);
            }
            if let Some(v) = &file.sha256 {
                s(f, "file.hash.sha256", v);
            }
        }
        if let Some(m) = &self.system {
            f("system.cpu.pct", Float(m.cpu_pct));
            f("system.memory.used.bytes", Int(m.memory_used_bytes as i64));
            f(
                "system.memory.total.bytes",
                Int(m.memory_total_bytes as i64),
            );
            f("system.load.1", Float(m.load_1));
            f("system.load.5", Float(m.load_5));
            f("system.load.15", Float(m.load_15));
            f("system.disk.used.bytes", Int(m.disk_used_bytes as i64));
            f("system.disk.total.bytes", Int(m.disk_total_bytes as i64));
            f("system.network.in.bytes", Int(m.network_in_bytes as i64));
            f("system.network.out.bytes", Int(m.network_out_bytes as i64));
            f("system.uptime", Int(m.uptime_secs as i64));
            f("system.processes", Int(m.processes.into()));
        }
        if let Some(p) = &self.package {
            s(f, "package.name", &p.name);
            s(f, "package.version", &p.version);
            s(f, "package.architecture", &p.architecture);
        }
        if let Some(v) = &self.vigie {
            if let Some(h) = &v.health {
                f("vigie.health.dropped_events", Int(h.dropped_events as i64));
                f(
                    "vigie.health.corrupt_records",
                    Int(h.corrupt_records as i64),
                );
                f("vigie.health.spool_bytes", Int(h.spool_bytes as i64));
                f("vigie.health.spool_events", Int(h.spool_events as i64));
                s(f, "vigie.health.new_epoch_reason", &h.new_epoch_reason);
            }
            if let Some(c) = &v.command {
                s(f, "vigie.command.id", &c.command_id);
                s(f, "vigie.command.state", &c.state);
                if let Some(code) = c.exit_code {
                    f("vigie.command.exit_code", Int(code.into()));
                }
            }
        }
        for (k, v) in &self.labels {
            // Label paths are built on the fly; pass a temporary path.
            let path = format!("labels.{k}");
            f(&path, Str(v));
        }
    }
}

/// Cuts attacker-controlled text before it reaches a log line.
pub fn truncate_for_log(s: &str) -> &str {
    const MAX: usize = 128;
    if s.len() <= MAX {
        return s;
    }
    let mut cut = MAX;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    &s[..cut]
}

/// Every field path [`Event::visit_fields`] can produce (labels aside), for autocompletion and docs.
pub const FIELD_PATHS: &[&str] = &[
    "@timestamp",
    "event.dataset",
    "event.kind",
    "event.category",
    "event.action",
    "event.outcome",
    "event.module",
    "event.id",
    "host.name",
    "host.id",
    "host.ip",
    "agent.id",
    "agent.version",
    "message",
    "log.level",
    "log.logger",
    "log.file.path",
    "log.syslog.facility.code",
    "log.syslog.priority",
    "log.syslog.hostname",
    "log.syslog.appname",
    "log.syslog.procid",
    "log.syslog.msgid",
    "process.pid",
    "process.name",
    "process.executable",
    "process.command_line",
    "process.args",
    "process.working_directory",
    "process.exit_code",
    "process.tty",
    "process.user.name",
    "process.user.id",
    "process.parent.pid",
    "process.parent.name",
    "process.parent.executable",
    "process.parent.command_line",
    "user.name",
    "user.id",
    "user.target.name",
    "user.target.id",
    "user.effective.name",
    "user.effective.id",
    "source.ip",
    "source.port",
    "source.address",
    "destination.ip",
    "destination.port",
    "destination.address",
    "network.transport",
    "network.type",
    "network.direction",
    "network.protocol",
    "file.path",
    "file.target_path",
    "file.size",
    "file.mode",
    "file.hash.sha256",
    "system.cpu.pct",
    "system.memory.used.bytes",
    "system.memory.total.bytes",
    "system.load.1",
    "system.load.5",
    "system.load.15",
    "system.disk.used.bytes",
    "system.disk.total.bytes",
    "system.network.in.bytes",
    "system.network.out.bytes",
    "system.uptime",
    "system.processes",
    "package.name",
    "package.version",
    "package.architecture",
    "vigie.health.dropped_events",
    "vigie.health.corrupt_records",
    "vigie.health.spool_bytes",
    "vigie.health.spool_events",
    "vigie.health.new_epoch_reason",
    "vigie.command.id",
    "vigie.command.state",
    "vigie.command.exit_code",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Event {
        let mut e = Event::new(
            Kind::Authentication,
            Timestamp::parse_rfc3339("2026-03-01T10:00:00.123456789Z").expect("ts"),
        );
        e.event.action = "ssh_login".into();
        e.event.outcome = Some(Outcome::Failure);
        e.event.module = "journald".into();
        e.host.name = "web1".into();
        e.set_message("Failed password for root from 10.0.0.5 port 2222 ssh2");
        e.user = Some(User {
            name: "root".into(),
            ..Default::default()
        });
        e.source = Some(Endpoint {
            ip: Some("10.0.0.5".parse().expect("ip")),
            port: Some(2222),
            address: String::new(),
        });
        e.log = Some(Log {
            level: Severity::Warning,
            logger: "sshd".into(),
            ..Default::default()
        });
        e.add_label("env", "prod");
        e
    }

    #[test]
    fn json_round_trip_is_nested_ecs() {
        let e = sample();
        let j = e.to_json();
        assert!(j.starts_with(r#"{"@timestamp":"2026-03-01T10:00:00.123456789Z","event":{"dataset":"authentication","action":"ssh_login","outcome":"failure""#), "{j}");
        assert!(
            j.contains(r#""source":{"ip":"10.0.0.5","port":2222}"#),
            "{j}"
        );
        let back = Event::from_json(&j).expect("parse");
        assert_eq!(back, e);
    }

    #[test]
    fn bincode_round_trip() {
        let e = sample();
        let bytes = bincode::encode_to_vec(&e, bincode::config::standard()).expect("encode");
        let (back, n): (Event, usize) =
            bincode::decode_from_slice(&bytes, bincode::config::standard()).expect("decode");
        assert_eq!(n, bytes.len());
        assert_eq!(back, e);
    }

    #[test]
    fn fields_are_visited_with_ecs_paths() {
        let e = sample();
        assert_eq!(e.field("user.name"), Some(FieldValue::Str("root")));
        assert_eq!(e.field("source.port"), Some(FieldValue::Int(2222)));
        assert_eq!(e.field("event.outcome"), Some(FieldValue::Str("failure")));
        assert_eq!(e.field("labels.env"), Some(FieldValue::Str("prod")));
        assert_eq!(e.field("process.pid"), None);
        let mut paths = Vec::new();
        e.visit_fields(&mut |p, _| paths.push(p.to_string()));
        for p in paths.iter().filter(|p| !p.starts_with("labels.")) {
            assert!(
                FIELD_PATHS.contains(&p.as_str()),
                "{p} missing from FIELD_PATHS"
            );
        }
    }

    #[test]
    fn message_is_capped() {
        let mut e = Event::new(Kind::Log, Timestamp(0));
        e.set_message("é".repeat(MAX_MESSAGE_LEN));
        assert!(e.message.len() <= MAX_MESSAGE_LEN);
        assert!(e.event.truncated);
    }

    #[test]
    fn kind_codes_are_stable() {
        // Do not change: stored keys and counters use these codes.
        assert_eq!(Kind::Log.code(), 0);
        assert_eq!(Kind::Authentication.code(), 6);
        assert_eq!(Kind::AgentHealth.code(), 12);
        for k in Kind::ALL {
            assert_eq!(Kind::from_code(k.code()), Some(k));
            assert_eq!(Kind::parse(k.as_str()), Some(k));
        }
    }
}

//! The store's public request, response and record types.

use std::collections::BTreeMap;
use std::path::PathBuf;

use bincode::{Decode, Encode};
use thiserror::Error;
use vigie_proto::event::Event;
use vigie_proto::{AgentId, Epoch, Kind, Seq, Timestamp};

use crate::query::Query;

/// Tuning of a store. The defaults suit a collector; tests shrink the seal thresholds.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// fsync the WAL on every commit (invariant 7: "acknowledged" means durable). Default true.
    pub sync: bool,
    /// Seal the recent events into a block once this many are waiting. Default 32,768.
    pub seal_events: usize,
    /// … or once their encoded size reaches this many bytes. Default 8 MiB.
    pub seal_bytes: usize,
    /// Target raw size of one compressed page of events. Default 128 KiB.
    pub page_bytes: usize,
    /// zstd level of pages and columns. Default 3.
    pub zstd_level: i32,
    /// Seal inside `commit` when a threshold is crossed (default true). When false, the
    /// owner calls [`crate::Store::seal_pending`] from another blocking thread.
    pub inline_seal: bool,
    /// RocksDB block cache shared by all column families. Default 64 MiB.
    pub block_cache_bytes: usize,
    /// Decoded block columns kept in memory between queries. Default 64 blocks.
    pub cols_cache_blocks: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            sync: true,
            seal_events: 32_768,
            seal_bytes: 8 * 1024 * 1024,
            page_bytes: 128 * 1024,
            zstd_level: 3,
            inline_seal: true,
            block_cache_bytes: 64 * 1024 * 1024,
            cols_cache_blocks: 64,
        }
    }
}

/// Errors of the store.
#[derive(Debug, Error)]
pub enum StoreError {
    #[error("rocksdb failed: {0}")]
    Db(#[from] rocksdb::Error),
    #[error(
        "the store in {dir} has format version {found}; this build reads version {expected}: open it with a matching build or restore a backup"
    )]
    Version {
        dir: PathBuf,
        found: u32,
        expected: u32,
    },
    #[error("corrupt {what}: {detail}")]
    Corrupt { what: String, detail: String },
    #[error("could not encode {what}: {detail}")]
    Encode { what: &'static str, detail: String },
    #[error(
        "invalid event id {0:?}: expected <agent: 32 hex digits>-<epoch: 16 hex digits>-<seq: decimal>"
    )]
    BadEventId(String),
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("a store lock was poisoned by a panic in another thread; restart the process")]
    Poisoned,
    #[error("column family {0} is missing from the store")]
    MissingCf(&'static str),
}

impl StoreError {
    pub(crate) fn corrupt(what: impl Into<String>, detail: impl Into<String>) -> StoreError {
        StoreError::Corrupt {
            what: what.into(),
            detail: detail.into(),
        }
    }
}

/// Why an enrollment token was refused.
#[derive(Debug, Error)]
pub enum TokenError {
    #[error("unknown enrollment token: create one with `vigie enroll create`")]
    Unknown,
    #[error("enrollment token has expired: create a new one with `vigie enroll create`")]
    Expired,
    #[error("enrollment token was already used: tokens are single use, create a new one")]
    AlreadyUsed,
    #[error("enrollment token secret does not match")]
    WrongSecret,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How far one `(agent, epoch)` stream is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Encode, Decode)]
pub struct StreamState {
    /// One past the last stored sequence number (the high-water mark).
    pub stored_end: Seq,
    /// Hash of the last stored batch of the stream.
    pub last_hash: [u8; 32],
}

/// One verified batch handed to [`crate::Store::commit`].
#[derive(Clone, Debug)]
pub struct CommitBatch {
    pub agent: AgentId,
    pub epoch: Epoch,
    pub first_seq: Seq,
    pub prev_hash: [u8; 32],
    pub hash: [u8; 32],
    pub events: Vec<Event>,
}

/// What [`crate::Store::commit`] did with one batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommitOutcome {
    /// Written durably; the stream now ends at `stored_end`.
    Stored { stored_end: Seq },
    /// Already stored (`first_seq + len <= stored_end`): nothing written; ack it.
    Duplicate { stored_end: Seq },
    /// Starts past (or straddles) the high-water mark: nothing written; ask for a resend from `expected`.
    Gap { expected: Seq },
    /// Starts at the high-water mark but does not chain onto the last stored batch.
    ChainBroken { expected_prev: [u8; 32] },
}

/// An enrolled agent.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct AgentRecord {
    pub id: AgentId,
    pub hostname: String,
    pub machine_id: String,
    pub identity_key: [u8; 32],
    pub tls_spki_sha256: [u8; 32],
    pub enrolled_at: Timestamp,
    pub last_seen: Option<Timestamp>,
    pub revoked: bool,
    pub current_epoch: Option<Epoch>,
    pub version: String,
}

/// A single-use enrollment token (only the hash of its secret is kept).
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct TokenRecord {
    pub id: [u8; 16],
    pub secret_hash: [u8; 32],
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    pub used: bool,
    pub comment: String,
}

/// A position in newest-first paging: results continue strictly below it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cursor {
    pub ts: Timestamp,
    pub agent: AgentId,
    pub epoch: Epoch,
    pub seq: Seq,
}

impl Cursor {
    /// Text form for URLs: `{ts nanos}-{agent hex}-{epoch hex}-{seq}`.
    pub fn to_token(&self) -> String {
        format!(
            "{}-{}-{}-{}",
            self.ts.nanos(),
            self.agent,
            self.epoch,
            self.seq
        )
    }

    pub fn parse_token(s: &str) -> Result<Cursor, StoreError> {
        let bad = || {
            StoreError::InvalidRequest(format!(
                "invalid cursor {:?}: expected <nanos>-<agent hex>-<epoch hex>-<seq> as returned by a search",
                vigie_proto::event::truncate_for_log(s)
            ))
        };
        let (ts, rest) = match s.strip_prefix('-') {
            Some(r) => {
                let (a, b) = r.split_once('-').ok_or_else(bad)?;
                (format!("-{a}"), b)
            }
            None => {
                let (a, b) = s.split_once('-').ok_or_else(bad)?;
                (a.to_string(), b)
            }
        };
        let mut parts = rest.split('-');
        let (Some(agent), Some(epoch), Some(seq), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        Ok(Cursor {
            ts: Timestamp(ts.parse().map_err(|_| bad())?),
            agent: AgentId::parse(agent).map_err(|_| bad())?,
            epoch: Epoch(u64::from_str_radix(epoch, 16).map_err(|_| bad())?),
            seq: Seq(seq.parse().map_err(|_| bad())?),
        })
    }
}

/// A search over `[from, to)`.
#[derive(Clone, Debug)]
pub struct SearchRequest {
    pub query: Query,
    pub from: Timestamp,
    pub to: Timestamp,
    /// Most events returned.
    pub limit: usize,
    /// Continue below this position (from a previous response's `next`).
    pub before: Option<Cursor>,
    /// Count every match in the range.
    pub count: bool,
}

/// What a search did, for the UI and the benchmarks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueryStats {
    /// Blocks and in-memory tiers whose index was read.
    pub blocks_scanned: u64,
    /// Blocks ruled out by time range, early termination or corruption.
    pub blocks_skipped: u64,
    /// Corrupt blocks met (skipped).
    pub blocks_corrupt: u64,
    /// Events decoded to confirm a match or to return them.
    pub events_decoded: u64,
    pub elapsed_us: u64,
}

#[derive(Clone, Debug)]
pub struct SearchResponse {
    /// Newest first.
    pub events: Vec<Event>,
    /// Exact number of matches in the range when asked for.
    pub total: Option<u64>,
    /// Where the next page starts, when this page is full.
    pub next: Option<Cursor>,
    pub stats: QueryStats,
}

/// One histogram bucket `[start, start + bucket)`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Bucket {
    pub start: Timestamp,
    pub count: u64,
    /// Indexed by severity code; events without a log level count as info.
    pub by_severity: [u64; 8],
    pub by_kind: BTreeMap<Kind, u64>,
}

/// What [`crate::Store::retention`] removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RetentionReport {
    pub blocks_removed: u64,
    pub events_removed: u64,
    /// Stored size of the removed blocks (their space returns after compaction).
    pub bytes_removed: u64,
    /// Oldest event time still stored in a block.
    pub oldest_kept: Option<Timestamp>,
}

/// Counts for `/metrics` and the disk-usage view.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// All stored events (sealed and recent).
    pub events: u64,
    pub sealed_events: u64,
    pub recent_events: u64,
    pub blocks: u64,
    /// Stored size of the sealed blocks (pages, columns, postings).
    pub block_bytes: u64,
    /// Message bytes of the stored events, before compression.
    pub raw_message_bytes: u64,
    /// Corrupt blocks found so far (skipped by reads).
    pub corrupt_blocks: u64,
    /// Corrupt recent rows skipped when opening.
    pub corrupt_rows: u64,
}

/// Severity of an alert, from the Sigma `level` of the rule that raised it.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Encode, Decode, serde::Serialize,
)]
#[serde(rename_all = "snake_case")]
pub enum AlertSeverity {
    Informational,
    Low,
    Medium,
    High,
    Critical,
}

impl AlertSeverity {
    pub const ALL: [AlertSeverity; 5] = [
        AlertSeverity::Informational,
        AlertSeverity::Low,
        AlertSeverity::Medium,
        AlertSeverity::High,
        AlertSeverity::Critical,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            AlertSeverity::Informational => "informational",
            AlertSeverity::Low => "low",
            AlertSeverity::Medium => "medium",
            AlertSeverity::High => "high",
            AlertSeverity::Critical => "critical",
        }
    }
    pub fn parse(s: &str) -> Option<AlertSeverity> {
        AlertSeverity::ALL
            .into_iter()
            .find(|v| v.as_str() == s.trim().to_ascii_lowercase())
    }
}

/// Where an alert stands: new → acknowledged → resolved (or new → resolved).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Encode, Decode, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    New,
    Acknowledged,
    Resolved,
}

impl AlertState {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::New => "new",
            AlertState::Acknowledged => "acknowledged",
            AlertState::Resolved => "resolved",
        }
    }
    pub fn parse(s: &str) -> Option<AlertState> {
        [
            AlertState::New,
            AlertState::Acknowledged,
            AlertState::Resolved,
        ]
        .into_iter()
        .find(|v| v.as_str() == s.trim().to_ascii_lowercase())
    }
}

/// One change of an alert's state: who, when, why.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode, serde::Serialize)]
pub struct AlertTransition {
    pub state: AlertState,
    pub by: String,
    pub at: Timestamp,
    pub comment: String,
}

/// An alert: the detections of one rule for one group (host, correlation
/// group-by values) within the deduplication window, aggregated.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode, serde::Serialize)]
pub struct AlertRecord {
    pub id: u64,
    /// The rule's id (its title when it has none).
    pub rule_id: String,
    pub rule_title: String,
    pub severity: AlertSeverity,
    pub tags: Vec<String>,
    /// Raised by a rule that is not live yet (Sigma status `test` or `experimental`).
    pub test: bool,
    /// Raised by a correlation rule.
    pub correlation: bool,
    /// `host.name` of the events (empty when they came from several hosts).
    pub host: String,
    /// Correlation `group-by` values, `(field, value)`.
    pub group: Vec<(String, String)>,
    /// Event time of the first and last contributing event.
    pub first_seen: Timestamp,
    pub last_seen: Timestamp,
    /// Collector time of creation and of the last change.
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// Detections aggregated (rule matches, or correlation firings).
    pub count: u64,
    /// Events that contributed, including those past the `event_ids` cap.
    pub event_count: u64,
    /// `event.id` of the contributing events, oldest first, capped by the collector.
    pub event_ids: Vec<String>,
    pub state: AlertState,
    /// State changes, oldest first (capped by the collector).
    pub history: Vec<AlertTransition>,
}

/// Suppresses new detections that match it until it expires.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode, serde::Serialize)]
pub struct SilenceRecord {
    pub id: u64,
    /// Only this rule (any rule when `None`).
    pub rule_id: Option<String>,
    /// Only this host (any host when `None`).
    pub host: Option<String>,
    pub created_by: String,
    pub comment: String,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
}

/// What happened to one notification.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Encode, Decode, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryOutcome {
    Delivered,
    /// Every attempt failed (or the channel refused it for good).
    Failed,
    /// Not sent: the channel's rate limit was reached.
    RateLimited,
    /// Not sent: the notification queue was full.
    Dropped,
}

/// One entry of the notification delivery log.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode, serde::Serialize)]
pub struct DeliveryRecord {
    pub id: u64,
    pub at: Timestamp,
    pub channel: String,
    /// `None` for test notifications.
    pub alert_id: Option<u64>,
    pub test: bool,
    pub outcome: DeliveryOutcome,
    pub attempts: u32,
    /// The last error, or what the channel answered.
    pub detail: String,
}

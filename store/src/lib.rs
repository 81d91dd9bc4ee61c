//! The collector's event store on RocksDB, and its query engine.
//!
//! **Owns:** the exactly-once commit of verified batches (events, per-stream
//! high-water marks and last hashes in one synced write batch), the on-disk
//! layout of events, their index and per-minute counters, the query language
//! ([`query`]), searches, histograms, top values, event context, retention,
//! checkpoints, and the small registries of enrolled agents and enrollment tokens,
//! alerts, silences and notification deliveries (the collector decides their content).
//!
//! **Never does:** network IO; deciding what to acknowledge (it reports
//! [`CommitOutcome`]s, the collector acks); reading the clock for decisions
//! (time is an argument; only query timings use `Instant`); running on an async
//! executor (every call blocks: use `spawn_blocking` or a dedicated thread).
//! Only the collector opens it (invariant 2).
//!
//! # Threads
//!
//! [`Store`] is `Send + Sync` and cheap to clone. [`Store::commit`] is meant for
//! one writer thread and is serialized by a mutex; reads run concurrently with
//! it and with each other. Sealing runs inside `commit` by default
//! ([`StoreConfig::inline_seal`]) or on a thread of the owner's choosing through
//! [`Store::seal_pending`].
//!
//! # On-disk layout, format version 1
//!
//! Integers in keys are big-endian so that byte order is numeric order; signed
//! times are sign-flipped (`i64 ^ 1<<63`, big-endian). Values encoded with
//! bincode 2 use `bincode::config::standard()`. Every value read back is
//! length-checked and decoded into closed types; a corrupt block is skipped,
//! counted ([`StoreStats::corrupt_blocks`]) and logged once, never a panic.
//!
//! | column family | key | value |
//! | --- | --- | --- |
//! | `default` | `format` | `u32` LE = 1 ([`store::FORMAT_VERSION`], do not change) |
//! | `default` | `next_block` | `u64` LE, next block id |
//! | `streams` | agent (16) · epoch (8) | bincode [`StreamState`]: high-water mark and last batch hash |
//! | `recent` | row number (`u64`) | one committed batch, not yet sealed: agent (16) · epoch (`u64` LE) · first seq (`u64` LE) · varint n · n × (varint length, bincode event) |
//! | `blocks` | block id (`u64`) | bincode `BlockMeta` (version 1, checked on load): event count, time range, stream seq ranges, page directory, fields present, numeric min/max, sizes |
//! | `cols` | block id | per-event columns in four separately zstd-compressed sections (time; stream and seq; kind and severity; host id), so a reader decodes only what it needs |
//! | `pages` | block id · page (`u32`) | zstd of a page: event count, event lengths, bincode events |
//! | `postings` | block id · first term of the chunk | ~16 KiB chunk of the block's terms in order: varint count, then per term varint shared-prefix length, varint suffix length, suffix, varint list length, posting list (`0` · count · varint deltas, or `1` · count · bitmap) |
//! | `counters` | `G` · minute · kind · severity | `u64` LE count |
//! | `counters` | `H` · host id (`u32`) · minute · kind · severity | `u64` LE count |
//! | `hosts` | host id (`u32`) | host name (UTF-8); ids are dense from 0 |
//! | `agents` | agent id (16) | bincode [`AgentRecord`] |
//! | `tokens` | token id (16) | bincode [`TokenRecord`] |
//! | `alerts` | alert id (`u64`) | bincode [`AlertRecord`] |
//! | `silences` | silence id (`u64`) | bincode [`SilenceRecord`] |
//! | `deliveries` | delivery id (`u64`) | bincode [`DeliveryRecord`]: the notification delivery log, trimmed to its newest entries |
//!
//! Stored events have `event.id` and `agent.id` cleared: both are rebuilt from
//! the stream and seq columns on read. Severity code 8 in columns and counters
//! means "no `log` section". Kind codes are [`vigie_proto::Kind::code`].
//!
//! **Terms** (do not change): a message token is `0x01` + the lowercased token;
//! two adjacent message tokens without digits are also indexed as a pair,
//! `0x02` + first + ` ` + second (so a two-word phrase is one exact lookup); a
//! keyword value is the field path + `0x00` + the lowercased value (integers in
//! decimal, IPs in their canonical text). Tokens and values longer than 64 bytes
//! are cut at a char boundary and followed by `0x01`; their matches are confirmed.
//! Host name, `event.dataset` and `log.level` are both terms (for filters) and
//! columns (for counters, histograms and top values); `event.kind` and
//! `event.category` use the `event.dataset` terms of the kinds they accept; time,
//! agent id and event id are answered from the columns; floats and metric counters (`system.*`, `vigie.health.*`, `file.size`)
//! only through block min/max. Ranges, CIDRs and inner wildcards on indexed fields
//! read the field's terms in the block and judge each with the query leaf itself.
//!
//! # Write path
//!
//! `commit` checks each batch against its stream state, then writes in one
//! batch: a `recent` row per accepted batch, the new stream states, new host
//! names and the updated per-minute counters (read-modify-write, safe under
//! the writer lock, with an in-memory cache). The recent events are also
//! indexed in memory (their encoded bytes, columns and postings). Once
//! `seal_events` events or `seal_bytes` bytes wait, they are frozen and sealed:
//! sorted by (time, agent, epoch, seq), cut into ~128 KiB zstd pages (the
//! encoded bytes are reused as they are), with their columns and posting chunks,
//! written with the deletion of their `recent` rows in one write batch. That
//! batch is not fsynced: until it is durable the `recent` rows still hold the
//! events, and the WAL orders it before any later synced commit.
//!
//! Tuning choices: pages and columns are zstd-compressed by the store (level 3),
//! so their column families use no RocksDB compression; posting chunks, counters
//! and registries use RocksDB's zstd/LZ4; one LRU block cache (64 MiB default) is
//! shared; auto compactions stay on (retention deletes whole key ranges and
//! compacts them right away).
//!
//! # Read path
//!
//! See the `exec` module: per block, postings and columns give a candidate set
//! that is exact or confirmed with [`Query::matches`]; counting an exact term
//! never decodes an event, newest-first paging decodes only the pages it returns.

mod alerts;
mod codec;
mod exec;
pub mod query;
mod read;
pub mod store;
mod tier;
mod types;

pub use query::{FieldType, Query, QueryError, field_type};
pub use read::{CONTEXT_SCAN_LIMIT, MAX_BUCKETS, TOP_VALUES_SCAN_LIMIT};
pub use store::Store;
pub use types::{
    AgentRecord, AlertRecord, AlertSeverity, AlertState, AlertTransition, Bucket, CommitBatch,
    CommitOutcome, Cursor, DeliveryOutcome, DeliveryRecord, QueryStats, RetentionReport,
    SearchRequest, SearchResponse, SilenceRecord, StoreConfig, StoreError, StoreStats, StreamState,
    TokenError, TokenRecord,
};

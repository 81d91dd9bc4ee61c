//! Log sources and host metrics: each runs as one task, reads its input, turns it into
//! [`Event`]s and hands them to the pipeline through a [`SourceCtx`].
//!
//! Two kinds of sources:
//! - **pausable** ([`file`], [`journald`], [`syslog`] over TCP) wait when the pipeline is
//!   full ([`SourceCtx::send`]): their input keeps the data (a file, the journal, the TCP
//!   sender's buffer), so nothing is lost;
//! - **non-pausable** ([`syslog`] over UDP, [`metrics`]) never wait ([`SourceCtx::try_send`]):
//!   what does not fit is discarded and counted exactly in the source's drop counter, which
//!   the agent's health events report.
//!
//! Checkpoints: a pausable source attaches its position (file offset, journald cursor) to
//! the [`Emit`] that carries the events read up to it. The pipeline makes the position
//! durable only together with those events, so after a restart a source resumes exactly
//! where the durable events end: no loss, no duplicate. Checkpoint keys are global to the
//! agent; every source builds them from its own name ([`SourceCtx::name`]). An empty value
//! means "forget this key" (a file that is gone).
//!
//! Never does: block an async worker thread on file IO (file reads and `/proc` sampling run
//! on the blocking pool), log attacker-controlled bytes untruncated, or advance a checkpoint
//! past an event that was not handed over in the same [`Emit`].

pub mod file;
pub mod journald;
pub mod metrics;
pub mod syslog;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use tokio::sync::{mpsc, watch};
use vigie_proto::Event;

/// What a source hands to the pipeline: events, and optionally a checkpoint that becomes
/// durable only after these events are durable in the spool (the pipeline persists it then).
#[derive(Debug)]
pub struct Emit {
    pub source: Arc<str>,
    pub events: Vec<Event>,
    pub checkpoint: Option<Checkpoint>,
}

/// A source position: `key` is unique in the agent (prefixed with the source's name);
/// an empty `value` means the position is no longer needed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    pub key: String,
    pub value: String,
}

/// Handle given to each source.
#[derive(Clone)]
pub struct SourceCtx {
    pub name: Arc<str>,
    tx: mpsc::Sender<Emit>,
    drops: Arc<AtomicU64>,
    /// Every checkpoint the agent had when it started (all sources; keys carry the source name).
    pub checkpoints: Arc<BTreeMap<String, String>>,
    /// Becomes `true` (or its sender is dropped) when the source must stop.
    pub shutdown: watch::Receiver<bool>,
}

impl std::fmt::Debug for SourceCtx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SourceCtx({})", self.name)
    }
}

impl SourceCtx {
    /// A context for the source `name`; also returns its drop counter (for health events).
    pub fn new(
        name: Arc<str>,
        tx: mpsc::Sender<Emit>,
        checkpoints: Arc<BTreeMap<String, String>>,
        shutdown: watch::Receiver<bool>,
    ) -> (Self, Arc<AtomicU64>) {
        let drops = Arc::new(AtomicU64::new(0));
        (
            SourceCtx {
                name,
                tx,
                drops: drops.clone(),
                checkpoints,
                shutdown,
            },
            drops,
        )
    }

    /// For pausable sources: waits while the pipeline is full (back-pressure). Returns false
    /// when the pipeline is gone or the agent is shutting down (then the emit is not handed
    /// over, and its checkpoint is not persisted).
    pub async fn send(&self, emit: Emit) -> bool {
        let mut shutdown = self.shutdown.clone();
        tokio::select! {
            biased;
            r = self.tx.send(emit) => r.is_ok(),
            _ = shutdown.wait_for(|v| *v) => false,
        }
    }

    /// For non-pausable sources: never waits. When the pipeline is full the events are
    /// discarded and counted in the drop counter. Returns false when the pipeline is gone.
    pub fn try_send(&self, emit: Emit) -> bool {
        match self.tx.try_send(emit) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(e)) => {
                self.drops
                    .fetch_add(e.events.len() as u64, Ordering::Relaxed);
                true
            }
            Err(mpsc::error::TrySendError::Closed(e)) => {
                self.drops
                    .fetch_add(e.events.len() as u64, Ordering::Relaxed);
                false
            }
        }
    }

    /// The checkpoint stored under `key` when the agent started.
    pub fn checkpoint(&self, key: &str) -> Option<&str> {
        self.checkpoints.get(key).map(String::as_str)
    }

    /// Events this source discarded so far.
    pub fn dropped(&self) -> u64 {
        self.drops.load(Ordering::Relaxed)
    }

    /// An [`Emit`] from this source.
    pub fn emit(&self, events: Vec<Event>, checkpoint: Option<Checkpoint>) -> Emit {
        Emit {
            source: self.name.clone(),
            events,
            checkpoint,
        }
    }

    pub fn is_shutdown(&self) -> bool {
        *self.shutdown.borrow() || self.shutdown.has_changed().is_err()
    }

    /// Resolves when the source must stop.
    pub async fn wait_shutdown(&self) {
        let mut rx = self.shutdown.clone();
        // An error means the sender is gone: stop as well.
        let _ = rx.wait_for(|v| *v).await;
    }

    /// Sleeps for `d`; returns false if shutdown came first.
    pub async fn sleep(&self, d: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(d) => !self.is_shutdown(),
            _ = self.wait_shutdown() => false,
        }
    }
}

/// Serde helper for durations written as `250ms`, `5s`, `1m`.
pub(crate) fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s).map_err(|e| {
        serde::de::Error::custom(format!(
            "invalid duration {s:?} ({e}); write it like 250ms, 5s or 1m"
        ))
    })
}

/// Serde helper for sizes written as a number of bytes or `64KiB`, `1MiB`.
pub(crate) fn de_size<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum V {
        N(u64),
        S(String),
    }
    let n = match V::deserialize(d)? {
        V::N(n) => n,
        V::S(s) => parse_size(&s).map_err(serde::de::Error::custom)?,
    };
    usize::try_from(n).map_err(|_| serde::de::Error::custom(format!("size {n} is too large")))
}

fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| {
        format!("invalid size {s:?}: expected a whole number with an optional unit, e.g. 64KiB")
    })?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "kib" => 1 << 10,
        "mb" => 1_000_000,
        "mib" => 1 << 20,
        u => {
            return Err(format!(
                "invalid size unit {u:?} in {s:?}: use B, KB, KiB, MB or MiB"
            ));
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("size {s:?} is too large"))
}

/// The current time as an event timestamp.
pub(crate) fn now() -> vigie_proto::Timestamp {
    vigie_proto::Timestamp::from_nanos(chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0))
}

#[cfg(test)]
pub(crate) mod testutil {
    //! Helpers shared by the source tests.
    use super::*;

    /// A context wired to a channel the test reads, with the given starting checkpoints.
    pub fn ctx(
        name: &str,
        cap: usize,
        checkpoints: BTreeMap<String, String>,
    ) -> (
        SourceCtx,
        mpsc::Receiver<Emit>,
        watch::Sender<bool>,
        Arc<AtomicU64>,
    ) {
        let (tx, rx) = mpsc::channel(cap);
        let (stx, srx) = watch::channel(false);
        let (c, drops) = SourceCtx::new(name.into(), tx, Arc::new(checkpoints), srx);
        (c, rx, stx, drops)
    }

    /// Receives emits until `pred` holds on everything received so far, applying checkpoints
    /// to `store` like the pipeline does; panics after `timeout`.
    pub async fn collect_until(
        rx: &mut mpsc::Receiver<Emit>,
        store: &mut BTreeMap<String, String>,
        events: &mut Vec<Event>,
        timeout: Duration,
        mut pred: impl FnMut(&[Event], &BTreeMap<String, String>) -> bool,
    ) {
        let deadline = tokio::time::Instant::now() + timeout;
        while !pred(events, store) {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(e)) => {
                    events.extend(e.events);
                    if let Some(c) = e.checkpoint {
                        store.insert(c.key, c.value);
                    }
                }
                Ok(None) => panic!("source channel closed; {} events so far", events.len()),
                Err(_) => panic!(
                    "timed out after {timeout:?}; {} events so far: {:?}",
                    events.len(),
                    events
                        .iter()
                        .map(|e| e.message.as_str())
                        .collect::<Vec<_>>()
                ),
            }
        }
    }

    #[tokio::test]
    async fn try_send_counts_drops_exactly() {
        let (c, mut rx, _stop, drops) = ctx("t", 1, BTreeMap::new());
        let ev = || Event::new(vigie_proto::Kind::Log, vigie_proto::Timestamp(0));
        assert!(c.try_send(c.emit(vec![ev()], None)));
        assert!(c.try_send(c.emit(vec![ev(), ev(), ev()], None)));
        assert_eq!(drops.load(Ordering::Relaxed), 3);
        assert_eq!(rx.recv().await.map(|e| e.events.len()), Some(1));
        drop(rx);
        assert!(!c.try_send(c.emit(vec![ev(), ev()], None)));
        assert_eq!(c.dropped(), 5);
    }

    #[tokio::test]
    async fn send_stops_waiting_on_shutdown() {
        let (c, _rx, stop, _) = ctx("t", 1, BTreeMap::new());
        assert!(c.send(c.emit(vec![], None)).await);
        let pending = tokio::spawn({
            let c = c.clone();
            async move { c.send(c.emit(vec![], None)).await }
        });
        stop.send(true).expect("stop");
        let sent = tokio::time::timeout(Duration::from_secs(5), pending)
            .await
            .expect("send returned")
            .expect("join");
        assert!(!sent);
        assert!(c.is_shutdown());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64KiB"), Ok(65536));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("100"), Ok(100));
        assert!(parse_size("1 parsec").is_err());
    }
}

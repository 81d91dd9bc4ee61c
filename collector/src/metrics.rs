//! The collector's own counters, exposed in Prometheus text format on `/metrics`.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Upper bounds (seconds) of the commit latency histogram.
const COMMIT_BUCKETS: [f64; 10] = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0];

#[derive(Debug, Default)]
pub struct Metrics {
    pub connections_total: AtomicU64,
    pub connections_refused: AtomicU64,
    pub enrollments_total: AtomicU64,
    pub enrollments_refused: AtomicU64,
    pub batches_stored: AtomicU64,
    pub batches_duplicate: AtomicU64,
    pub batches_gap: AtomicU64,
    pub batches_refused: AtomicU64,
    pub batches_unavailable: AtomicU64,
    pub events_stored: AtomicU64,
    pub bytes_received: AtomicU64,
    /// Events verified and decoded, then discarded, in verify-only benchmark mode.
    pub events_verified: AtomicU64,
    pub commits: AtomicU64,
    commit_hist: [AtomicU64; COMMIT_BUCKETS.len() + 1],
    commit_sum_us: AtomicU64,
    pub disk_free_bytes: AtomicU64,
    pub disk_full: AtomicU64,
    pub store_bytes: AtomicU64,
    pub retention_deleted_events: AtomicU64,
}

impl Metrics {
    pub fn observe_commit(&self, secs: f64) {
        self.commits.fetch_add(1, Relaxed);
        self.commit_sum_us.fetch_add((secs * 1e6) as u64, Relaxed);
        let i = COMMIT_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(COMMIT_BUCKETS.len());
        self.commit_hist[i].fetch_add(1, Relaxed);
    }

    pub fn render(&self) -> String {
        let mut s = String::new();
        let mut counter = |name: &str, help: &str, v: &AtomicU64| {
            let _ = writeln!(
                s,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                v.load(Relaxed)
            );
        };
        counter(
            "vigie_connections_total",
            "QUIC connections accepted.",
            &self.connections_total,
        );
        counter(
            "vigie_connections_refused_total",
            "Connections refused after the handshake (unknown, revoked or mismatched agent).",
            &self.connections_refused,
        );
        counter(
            "vigie_enrollments_total",
            "Agents enrolled.",
            &self.enrollments_total,
        );
        counter(
            "vigie_enrollments_refused_total",
            "Enrollment attempts refused.",
            &self.enrollments_refused,
        );
        counter(
            "vigie_events_stored_total",
            "Events stored.",
            &self.events_stored,
        );
        counter(
            "vigie_received_bytes_total",
            "Batch bytes received.",
            &self.bytes_received,
        );
        counter(
            "vigie_events_verified_total",
            "Events verified and decoded, then discarded (verify-only benchmark mode).",
            &self.events_verified,
        );
        counter(
            "vigie_retention_deleted_events_total",
            "Events removed by retention.",
            &self.retention_deleted_events,
        );
        let _ = writeln!(
            s,
            "# HELP vigie_batches_total Batches by outcome.\n# TYPE vigie_batches_total counter"
        );
        for (o, v) in [
            ("stored", &self.batches_stored),
            ("duplicate", &self.batches_duplicate),
            ("gap", &self.batches_gap),
            ("refused", &self.batches_refused),
            ("unavailable", &self.batches_unavailable),
        ] {
            let _ = writeln!(
                s,
                "vigie_batches_total{{outcome=\"{o}\"}} {}",
                v.load(Relaxed)
            );
        }
        let _ = writeln!(
            s,
            "# HELP vigie_commit_seconds Group commit latency.\n# TYPE vigie_commit_seconds histogram"
        );
        let mut cum = 0;
        for (i, b) in COMMIT_BUCKETS.iter().enumerate() {
            cum += self.commit_hist[i].load(Relaxed);
            let _ = writeln!(s, "vigie_commit_seconds_bucket{{le=\"{b}\"}} {cum}");
        }
        cum += self.commit_hist[COMMIT_BUCKETS.len()].load(Relaxed);
        let _ = writeln!(s, "vigie_commit_seconds_bucket{{le=\"+Inf\"}} {cum}");
        let _ = writeln!(
            s,
            "vigie_commit_seconds_sum {}",
            self.commit_sum_us.load(Relaxed) as f64 / 1e6
        );
        let _ = writeln!(
            s,
            "vigie_commit_seconds_count {}",
            self.commits.load(Relaxed)
        );
        for (name, help, v) in [
            (
                "vigie_disk_free_bytes",
                "Free bytes on the store's file system.",
                &self.disk_free_bytes,
            ),
            (
                "vigie_disk_full",
                "1 while the collector refuses to store because free space is below the reserve.",
                &self.disk_full,
            ),
            (
                "vigie_store_bytes",
                "Bytes used by the event store.",
                &self.store_bytes,
            ),
        ] {
            let _ = writeln!(
                s,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {}",
                v.load(Relaxed)
            );
        }
        s
    }
}

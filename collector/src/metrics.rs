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
    /// Events evaluated by the detection thread.
    pub detection_events: AtomicU64,
    /// Events stored but not evaluated: the detection queue stayed full.
    pub detection_dropped_events: AtomicU64,
    /// Events waiting for detection (gauge).
    pub detection_queue_events: AtomicU64,
    /// Collector time minus ingest time of the last evaluated event, ms (gauge).
    pub detection_lag_ms: AtomicU64,
    /// Rules (and correlations) loaded / rejected by the last load (gauges).
    pub rules_loaded: AtomicU64,
    pub rules_failed: AtomicU64,
    pub rules_reloads: AtomicU64,
    /// Alerts opened, by severity (index: `AlertSeverity as usize`).
    pub alerts_raised: [AtomicU64; 5],
    /// Detections aggregated into an open alert.
    pub alerts_updated: AtomicU64,
    pub alerts_silenced: AtomicU64,
    pub alerts_excepted: AtomicU64,
    /// Detections that could not be stored.
    pub alerts_lost: AtomicU64,
    /// Correlation state dropped to stay within bounds (groups and events).
    pub correlation_evictions: AtomicU64,
    pub notifications_delivered: AtomicU64,
    pub notifications_failed: AtomicU64,
    pub notifications_rate_limited: AtomicU64,
    pub notifications_dropped: AtomicU64,
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
        let _ = writeln!(
            s,
            "# HELP vigie_alerts_raised_total Alerts opened, by severity.\n# TYPE vigie_alerts_raised_total counter"
        );
        for sev in vigie_store::AlertSeverity::ALL {
            let _ = writeln!(
                s,
                "vigie_alerts_raised_total{{severity=\"{}\"}} {}",
                sev.as_str(),
                self.alerts_raised[sev as usize].load(Relaxed)
            );
        }
        let _ = writeln!(
            s,
            "# HELP vigie_alerts_suppressed_total Detections suppressed before becoming alerts.\n# TYPE vigie_alerts_suppressed_total counter"
        );
        for (r, v) in [
            ("silence", &self.alerts_silenced),
            ("exception", &self.alerts_excepted),
        ] {
            let _ = writeln!(
                s,
                "vigie_alerts_suppressed_total{{reason=\"{r}\"}} {}",
                v.load(Relaxed)
            );
        }
        let _ = writeln!(
            s,
            "# HELP vigie_notifications_total Notifications by outcome.\n# TYPE vigie_notifications_total counter"
        );
        for (o, v) in [
            ("delivered", &self.notifications_delivered),
            ("failed", &self.notifications_failed),
            ("rate_limited", &self.notifications_rate_limited),
            ("dropped", &self.notifications_dropped),
        ] {
            let _ = writeln!(
                s,
                "vigie_notifications_total{{outcome=\"{o}\"}} {}",
                v.load(Relaxed)
            );
        }
        for (name, help, v) in [
            (
                "vigie_detection_events_total",
                "Events evaluated by the detection rules.",
                &self.detection_events,
            ),
            (
                "vigie_detection_dropped_events_total",
                "Events stored but not evaluated because the detection queue stayed full.",
                &self.detection_dropped_events,
            ),
            (
                "vigie_rules_reloads_total",
                "Times the rule set was (re)loaded.",
                &self.rules_reloads,
            ),
            (
                "vigie_alerts_updated_total",
                "Detections aggregated into an open alert.",
                &self.alerts_updated,
            ),
            (
                "vigie_alerts_lost_total",
                "Detections lost because alerts could not be stored.",
                &self.alerts_lost,
            ),
            (
                "vigie_correlation_evictions_total",
                "Correlation groups and events dropped to stay within memory bounds.",
                &self.correlation_evictions,
            ),
        ] {
            let _ = writeln!(
                s,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                v.load(Relaxed)
            );
        }
        let _ = writeln!(
            s,
            "# HELP vigie_detection_lag_seconds Time from ingest to evaluation of the last evaluated event.\n# TYPE vigie_detection_lag_seconds gauge\nvigie_detection_lag_seconds {}",
            self.detection_lag_ms.load(Relaxed) as f64 / 1e3
        );
        for (name, help, v) in [
            (
                "vigie_detection_queue_events",
                "Stored events waiting for detection.",
                &self.detection_queue_events,
            ),
            (
                "vigie_rules_loaded",
                "Detection and correlation rules loaded.",
                &self.rules_loaded,
            ),
            (
                "vigie_rules_failed",
                "Rules (or rule files) that did not load.",
                &self.rules_failed,
            ),
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

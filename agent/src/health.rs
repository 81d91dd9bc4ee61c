//! Periodic health reports: drop counters, corrupt records and spool backlog,
//! as `agent_health` events, so every loss is visible where the events are.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use vigie_proto::event::{AgentHealth, VigieExt};
use vigie_proto::{Event, Kind, Timestamp};

use crate::durable::Durable;
use crate::pipeline::PipelineStats;
use crate::sources::Emit;

pub struct Reporter {
    pub durable: Arc<Mutex<Durable>>,
    pub drops: Vec<(String, Arc<AtomicU64>)>,
    pub events: mpsc::Sender<Emit>,
    pub interval: Duration,
    pub startup_corrupt: u64,
    pub pipeline: Arc<PipelineStats>,
}

impl Reporter {
    /// Builds one health event from the current counters.
    pub fn snapshot(&self) -> Event {
        let mut h = AgentHealth::default();
        let mut by = BTreeMap::new();
        for (name, d) in &self.drops {
            let n = d.load(Relaxed);
            h.dropped_events += n;
            if n > 0 {
                by.insert(name.clone(), n);
            }
        }
        h.dropped_events += self.pipeline.encode_errors.load(Relaxed);
        h.drops_by_source = by;
        if let Ok(d) = self.durable.lock() {
            let s = d.spool.stats();
            h.spool_bytes = s.bytes;
            h.spool_events = s.pending;
            h.corrupt_records = s.corrupt_records.max(self.startup_corrupt);
        }
        let mut e = Event::new(
            Kind::AgentHealth,
            Timestamp(chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0)),
        );
        e.event.module = "agent".into();
        e.event.action = "health".into();
        e.set_message(format!(
            "agent health: {} events dropped, {} corrupt spool records, {} events ({} bytes) waiting in the spool",
            h.dropped_events, h.corrupt_records, h.spool_events, h.spool_bytes
        ));
        e.vigie = Some(VigieExt {
            health: Some(h),
            command: None,
        });
        e
    }

    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let this = Arc::new(self);
        // A first report soon after start, then on the interval.
        let mut tick = tokio::time::interval_at(
            tokio::time::Instant::now() + Duration::from_secs(2),
            this.interval,
        );
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    // The spool lock may be held across an fsync: read it off the async workers.
                    let r = this.clone();
                    let Ok(e) = tokio::task::spawn_blocking(move || r.snapshot()).await else { continue };
                    let _ = this.events.send(Emit { source: "agent".into(), events: vec![e], checkpoint: None }).await;
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}

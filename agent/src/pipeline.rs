//! From sources to the spool.
//!
//! One task drains the sources' channel, stamps each event with this host's
//! identity, encodes it once (the spool holds the exact bytes that will be
//! shipped), and appends whole groups to the spool with the checkpoints they
//! advance ([`crate::durable`]). When the spool is full the task waits and
//! retries: the channel fills up, pausable sources block, and the others count
//! their drops exactly.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use vigie_proto::Event;
use vigie_proto::batch::encode_event;

use crate::durable::{Appended, Durable};
use crate::sources::Emit;

/// Most events appended in one spool write.
const MAX_GROUP_EVENTS: usize = 20_000;

/// Identity stamped on every event.
#[derive(Clone, Debug)]
pub struct HostStamp {
    pub hostname: String,
    pub machine_id: String,
    pub version: String,
    /// Configured labels added to every event.
    pub labels: Vec<(String, String)>,
}

impl HostStamp {
    pub fn apply(&self, e: &mut Event) {
        for (k, v) in &self.labels {
            if !e.labels.contains_key(k) {
                e.add_label(k, v);
            }
        }
        if e.host.name.is_empty() {
            e.host.name = self.hostname.clone();
        }
        if e.host.id.is_empty() {
            e.host.id = self.machine_id.clone();
        }
        let a = e.agent.get_or_insert_with(Default::default);
        if a.version.is_empty() {
            a.version = self.version.clone();
        }
    }
}

/// Counters the pipeline keeps for health reports.
#[derive(Debug, Default)]
pub struct PipelineStats {
    pub appended_events: std::sync::atomic::AtomicU64,
    pub spool_full_waits: std::sync::atomic::AtomicU64,
    pub encode_errors: std::sync::atomic::AtomicU64,
}

/// Runs until every sender of `rx` is gone. `appended` carries the spool's next sequence after each append.
pub async fn run(
    mut rx: mpsc::Receiver<Emit>,
    durable: Arc<Mutex<Durable>>,
    stamp: HostStamp,
    appended: watch::Sender<u64>,
    stats: Arc<PipelineStats>,
) {
    use std::sync::atomic::Ordering::Relaxed;
    while let Some(first) = rx.recv().await {
        let mut group = vec![first];
        let mut n = group[0].events.len();
        while n < MAX_GROUP_EVENTS {
            match rx.try_recv() {
                Ok(e) => {
                    n += e.events.len();
                    group.push(e);
                }
                Err(_) => break,
            }
        }
        let mut records = Vec::with_capacity(n);
        let mut positions = BTreeMap::new();
        for emit in group {
            for mut e in emit.events {
                stamp.apply(&mut e);
                match encode_event(&e) {
                    Ok(b) => records.push(b),
                    Err(err) => {
                        stats.encode_errors.fetch_add(1, Relaxed);
                        tracing::error!(error = %err, "event could not be encoded; dropped");
                    }
                }
            }
            if let Some(c) = emit.checkpoint {
                positions.insert(c.key, c.value);
            }
        }
        let records = Arc::new(records);
        let mut wait = Duration::from_millis(50);
        loop {
            let d = durable.clone();
            let recs = records.clone();
            let pos = positions.clone();
            let res = tokio::task::spawn_blocking(move || {
                let refs: Vec<&[u8]> = recs.iter().map(|r| r.as_slice()).collect();
                let mut g = d
                    .lock()
                    .map_err(|_| anyhow::anyhow!("spool lock poisoned"))?;
                let r = g.append(&refs, pos)?;
                Ok::<_, anyhow::Error>((r, g.spool.next_seq().0))
            })
            .await;
            match res {
                Ok(Ok((Appended::Ok { .. }, next))) => {
                    stats
                        .appended_events
                        .fetch_add(records.len() as u64, Relaxed);
                    let _ = appended.send(next);
                    break;
                }
                Ok(Ok((Appended::Full, _))) => {
                    if stats
                        .spool_full_waits
                        .fetch_add(1, Relaxed)
                        .is_multiple_of(100)
                    {
                        tracing::warn!(
                            events = records.len(),
                            "spool full: waiting for the collector to acknowledge; sources that can pause are paused"
                        );
                    }
                }
                Ok(Err(e)) => tracing::error!(error = %e, "spool append failed; retrying"),
                Err(e) => tracing::error!(error = %e, "spool task failed; retrying"),
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(2));
        }
    }
}

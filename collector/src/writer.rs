//! The single writer thread: group commit.
//!
//! Connection tasks hand verified, decoded batches to this thread. It drains
//! every request waiting, commits them in one synced RocksDB write (events and
//! high-water marks together, so an ack always means durable), then answers
//! each request, then hands the stored events, in order, to the detection
//! thread's bounded queue ([`crate::detect`]). While the disk is below its reserve it stores nothing and
//! answers "unavailable", so agents keep their events spooled and retry.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc;
use std::time::Instant;

use tokio::sync::{broadcast, oneshot};
use vigie_proto::Event;
use vigie_store::{CommitBatch, CommitOutcome, Store};

use crate::detect::DetectQueue;
use crate::metrics::Metrics;

/// Most events committed in one write.
const MAX_GROUP_EVENTS: usize = 200_000;
/// Most batches committed in one write.
const MAX_GROUP_BATCHES: usize = 256;

#[derive(Debug)]
pub enum WriteError {
    /// Disk below its reserve, or the store failed: retry later.
    Unavailable(String),
}

pub struct CommitReq {
    pub batch: CommitBatch,
    pub reply: oneshot::Sender<Result<CommitOutcome, WriteError>>,
}

/// Shared switch set by the disk watcher.
#[derive(Debug, Default)]
pub struct WriteGate {
    pub refuse: std::sync::atomic::AtomicBool,
}

pub fn spawn(
    store: Store,
    rx: mpsc::Receiver<CommitReq>,
    live: broadcast::Sender<Arc<Event>>,
    metrics: Arc<Metrics>,
    gate: Arc<WriteGate>,
    detect: Option<Arc<DetectQueue>>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("vigie-writer".into())
        .spawn(move || run(store, rx, live, metrics, gate, detect))
}

fn run(
    store: Store,
    rx: mpsc::Receiver<CommitReq>,
    live: broadcast::Sender<Arc<Event>>,
    metrics: Arc<Metrics>,
    gate: Arc<WriteGate>,
    detect: Option<Arc<DetectQueue>>,
) {
    while let Ok(first) = rx.recv() {
        let mut group = vec![first];
        let mut events = group[0].batch.events.len();
        while events < MAX_GROUP_EVENTS && group.len() < MAX_GROUP_BATCHES {
            match rx.try_recv() {
                Ok(r) => {
                    events += r.batch.events.len();
                    group.push(r);
                }
                Err(_) => break,
            }
        }
        if gate.refuse.load(Relaxed) {
            for r in group {
                metrics.batches_unavailable.fetch_add(1, Relaxed);
                let _ = r.reply.send(Err(WriteError::Unavailable(
                    "the collector's disk is below its free-space reserve".into(),
                )));
            }
            continue;
        }
        let (batches, replies): (Vec<CommitBatch>, Vec<_>) =
            group.into_iter().map(|r| (r.batch, r.reply)).unzip();
        // Keep copies for live subscribers and detection only when someone listens.
        let detect = detect.as_ref().filter(|d| d.active());
        let mut copies: Option<Vec<Vec<Event>>> = (live.receiver_count() > 0 || detect.is_some())
            .then(|| batches.iter().map(|b| b.events.clone()).collect());
        let mut to_detect: Vec<Vec<Event>> = Vec::new();
        let counts: Vec<u64> = batches.iter().map(|b| b.events.len() as u64).collect();
        let started = Instant::now();
        match store.commit(batches) {
            Ok(outcomes) => {
                metrics.observe_commit(started.elapsed().as_secs_f64());
                for (i, (outcome, reply)) in outcomes.into_iter().zip(replies).enumerate() {
                    match &outcome {
                        CommitOutcome::Stored { .. } => {
                            metrics.batches_stored.fetch_add(1, Relaxed);
                            metrics.events_stored.fetch_add(counts[i], Relaxed);
                            if let Some(c) = &mut copies {
                                if live.receiver_count() > 0 {
                                    for e in &c[i] {
                                        let _ = live.send(Arc::new(e.clone()));
                                    }
                                }
                                if detect.is_some() {
                                    to_detect.push(std::mem::take(&mut c[i]));
                                }
                            }
                        }
                        CommitOutcome::Duplicate { .. } => {
                            metrics.batches_duplicate.fetch_add(1, Relaxed);
                        }
                        CommitOutcome::Gap { .. } => {
                            metrics.batches_gap.fetch_add(1, Relaxed);
                        }
                        CommitOutcome::ChainBroken { .. } => {
                            metrics.batches_refused.fetch_add(1, Relaxed);
                        }
                    }
                    let _ = reply.send(Ok(outcome));
                }
                // After the acks: detection never delays them, and a full
                // detection queue slows the next commit (bounded wait).
                if let Some(d) = detect {
                    for events in to_detect {
                        d.hand_over(events);
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "commit failed; answering unavailable so agents retry");
                for reply in replies {
                    metrics.batches_unavailable.fetch_add(1, Relaxed);
                    let _ = reply.send(Err(WriteError::Unavailable(e.to_string())));
                }
            }
        }
    }
}

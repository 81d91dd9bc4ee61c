//! From the spool to the collector.
//!
//! Connects (mutual TLS, pinned CA), says hello with the spool's epoch and next
//! sequence, and learns what the collector already stored. If the collector holds
//! sequences this spool has not produced, the machine was rolled back or cloned:
//! the spool starts a new epoch and a health event says why. Then batches are
//! read from the spool, signed, chained to the previous batch's hash, and sent
//! with a window of several in flight. Acks release the spool. Sealed frames stay
//! cached until acknowledged, so a retry after a reconnect sends identical bytes.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use tokio::sync::{mpsc, watch};
use vigie_proto::batch::{Hash, encode_event, raw_payload, seal_raw};
use vigie_proto::event::{AgentHealth, VigieExt};
use vigie_proto::session::{Backoff, Decision, ShipWindow, detect_rollback};
use vigie_proto::wire::{self, Hello, MsgType, RefuseCode, Reply};
use vigie_proto::{Epoch, Event, Kind, Seq, Timestamp};

use crate::durable::Durable;
use crate::sources::Emit;
use crate::state::Identity;

#[derive(Clone, Debug)]
pub struct ShipperConfig {
    pub batch_max_events: usize,
    pub batch_max_bytes: usize,
    pub max_in_flight: usize,
    pub zstd_level: i32,
    pub request_timeout: Duration,
    /// Collector addresses (`host:port`), tried in order.
    pub collectors: Vec<String>,
    pub server_name: String,
}

impl Default for ShipperConfig {
    fn default() -> Self {
        ShipperConfig {
            batch_max_events: 5_000,
            batch_max_bytes: 2 * 1024 * 1024,
            max_in_flight: 4,
            zstd_level: 1,
            request_timeout: Duration::from_secs(30),
            collectors: Vec::new(),
            server_name: vigie_net::DEFAULT_SERVER_NAME.to_string(),
        }
    }
}

#[derive(Debug, Default)]
pub struct ShipperStats {
    pub batches_sent: AtomicU64,
    pub events_acked: AtomicU64,
    pub reconnects: AtomicU64,
    pub new_epochs: AtomicU64,
    pub lost_records: AtomicU64,
    /// Highest sequence acknowledged by the collector in the current epoch.
    pub acked_end: AtomicU64,
    pub connected: AtomicU64,
}

#[derive(Clone)]
struct Sealed {
    epoch: Epoch,
    first: Seq,
    end: Seq,
    prev_hash: Hash,
    hash: Hash,
    frame: Arc<Vec<u8>>,
}

pub struct Shipper {
    pub durable: Arc<Mutex<Durable>>,
    pub ident: Arc<Identity>,
    pub cfg: ShipperConfig,
    pub appended: watch::Receiver<u64>,
    /// For health events the shipper raises (new epoch, lost records).
    pub events: mpsc::Sender<Emit>,
    pub stats: Arc<ShipperStats>,
    pub hostname: String,
    pub machine_id: String,
    pub version: String,
}

fn now() -> Timestamp {
    Timestamp(chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0))
}

async fn blocking<T: Send + 'static>(
    d: &Arc<Mutex<Durable>>,
    f: impl FnOnce(&mut Durable) -> Result<T> + Send + 'static,
) -> Result<T> {
    let d = d.clone();
    tokio::task::spawn_blocking(move || {
        let mut g = d.lock().map_err(|_| anyhow!("spool lock poisoned"))?;
        f(&mut g)
    })
    .await?
}

struct CloseOnDrop(quinn::Connection);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close(0u32.into(), b"session ended");
    }
}

enum SessionEnd {
    Shutdown,
    Reconnect,
}

impl Shipper {
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
        let mut cache: VecDeque<Sealed> = VecDeque::new();
        let mut failures = 0u32;
        loop {
            if *shutdown.borrow() {
                return;
            }
            match self.session(&mut cache, &mut shutdown, &mut backoff).await {
                Ok(SessionEnd::Shutdown) => return,
                Ok(SessionEnd::Reconnect) => {
                    failures = 0;
                    continue;
                }
                Err(e) => {
                    self.stats.connected.store(0, Relaxed);
                    failures += 1;
                    if failures == 1 || failures.is_power_of_two() {
                        tracing::warn!(error = %format!("{e:#}"), attempts = failures, "shipping interrupted; retrying with backoff (events stay in the spool)");
                    }
                }
            }
            let delay = backoff.next_delay(rand::random::<f64>());
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    async fn connect(&self) -> Result<(quinn::Endpoint, quinn::Connection)> {
        let mut last = None;
        for addr in &self.cfg.collectors {
            let res = async {
                let remote = *crate::enroll::resolve(addr)
                    .await?
                    .first()
                    .context("no address")?;
                let ep = vigie_net::client_endpoint(remote)?;
                let cfg = vigie_net::client_config(
                    &self.ident.ca_der,
                    Some((self.ident.tls_cert.clone(), self.ident.tls_key.clone())),
                )?;
                let conn = tokio::time::timeout(
                    Duration::from_secs(10),
                    ep.connect_with(cfg, remote, &self.cfg.server_name)?,
                )
                .await
                .map_err(|_| anyhow!("timed out connecting to {addr}"))??;
                Ok::<_, anyhow::Error>((ep, conn))
            }
            .await;
            match res {
                Ok(c) => return Ok(c),
                Err(e) => last = Some(e.context(format!("collector {addr}"))),
            }
        }
        Err(last.unwrap_or_else(|| anyhow!("no collector address configured")))
    }

    async fn raise(&self, message: String, reason: &str, lost: u64) {
        let mut e = Event::new(Kind::AgentHealth, now());
        e.event.module = "agent".into();
        e.event.action = if reason.is_empty() {
            "records_lost".into()
        } else {
            "new_epoch".into()
        };
        e.set_message(message);
        e.vigie = Some(VigieExt {
            health: Some(AgentHealth {
                corrupt_records: lost,
                new_epoch_reason: reason.to_string(),
                ..Default::default()
            }),
            command: None,
        });
        let _ = self
            .events
            .send(Emit {
                source: "agent".into(),
                events: vec![e],
                checkpoint: None,
            })
            .await;
    }

    async fn hello(&self, conn: &quinn::Connection) -> Result<(Epoch, Seq, Seq, Hash)> {
        let (epoch, next) =
            blocking(&self.durable, |d| Ok((d.spool.epoch(), d.spool.next_seq()))).await?;
        let hello = Hello {
            epoch,
            next_seq: next,
            agent_version: self.version.clone(),
            hostname: self.hostname.clone(),
            machine_id: self.machine_id.clone(),
        };
        let (ty, body) = vigie_net::request(
            conn,
            &wire::encode_msg(MsgType::Hello, &hello)?,
            self.cfg.request_timeout,
        )
        .await?;
        match wire::decode_body::<Reply>(ty, &body)? {
            Reply::Welcome {
                stored_end,
                last_hash,
            } => Ok((epoch, stored_end, next, last_hash)),
            Reply::Refused { code, message } => {
                bail!("collector refused hello ({code:?}): {message}")
            }
            other => bail!("unexpected reply to hello: {other:?}"),
        }
    }

    async fn session(
        &mut self,
        cache: &mut VecDeque<Sealed>,
        shutdown: &mut watch::Receiver<bool>,
        backoff: &mut Backoff,
    ) -> Result<SessionEnd> {
        let (ep, conn) = self.connect().await?;
        // Whatever ends the session closes the connection, so that requests still in
        // flight fail at once instead of waiting for the idle timeout.
        let _close = CloseOnDrop(conn.clone());
        self.stats.reconnects.fetch_add(1, Relaxed);
        // Hello; start a new epoch as often as the collector proves we must.
        let (epoch, stored_end, last_hash) = loop {
            let (epoch, stored_end, _next, last_hash) = self.hello(&conn).await?;
            // Not the current end: records appended since the spool opened (lines re-read
            // from restored positions) may reuse sequences the collector holds.
            let (acked, limit) = blocking(&self.durable, |d| {
                Ok((d.spool.acked_end(), d.rollback_limit()))
            })
            .await?;
            let reason = if detect_rollback(stored_end, limit) {
                Some(format!(
                    "the collector stored sequences up to {} of epoch {epoch} but this spool only reached {}: the machine was restored from a snapshot or cloned",
                    stored_end.0, limit.0
                ))
            } else if stored_end < acked {
                Some(format!(
                    "the collector holds epoch {epoch} only up to {} but acknowledged up to {}: its store was restored from an older backup",
                    stored_end.0, acked.0
                ))
            } else {
                None
            };
            match reason {
                Some(r) => {
                    let new = blocking(&self.durable, |d| d.new_epoch()).await?;
                    cache.clear();
                    self.stats.new_epochs.fetch_add(1, Relaxed);
                    tracing::warn!(old = %epoch, new = %new, reason = %r, "started a new spool epoch");
                    self.raise(format!("new epoch {new}: {r}"), &r, 0).await;
                }
                None => {
                    blocking(&self.durable, |d| {
                        d.confirm_epoch();
                        Ok(())
                    })
                    .await?;
                    break (epoch, stored_end, last_hash);
                }
            }
        };
        backoff.reset();
        let mut release_failing = false;
        let mut to_release: Option<Seq> = None;
        if stored_end > Seq(0) && !self.release(stored_end, &mut release_failing).await {
            to_release = Some(stored_end);
        }
        self.stats.connected.store(1, Relaxed);
        self.stats.acked_end.store(stored_end.0, Relaxed);

        // Keep cached frames only if they continue exactly where the collector stands.
        cache.retain(|s| s.epoch == epoch && s.end > stored_end);
        if cache
            .front()
            .is_some_and(|s| s.first != stored_end || s.prev_hash != last_hash)
        {
            cache.clear();
        }
        let mut tip = cache.back().map(|s| s.hash).unwrap_or(last_hash);
        let mut window = ShipWindow::new(epoch, stored_end, self.cfg.max_in_flight.max(1));
        let (tx, mut rx) = mpsc::channel::<(Seq, Result<Reply>)>(64);
        let mut release_tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            while window.can_send() {
                let next = window.next_to_send();
                let sealed = match cache.iter().find(|s| s.first == next) {
                    Some(s) => s.clone(),
                    None => match self.seal_next(epoch, next, tip).await? {
                        Some(s) => {
                            tip = s.hash;
                            cache.push_back(s.clone());
                            s
                        }
                        None => break,
                    },
                };
                window.sent(sealed.first, sealed.end);
                self.stats.batches_sent.fetch_add(1, Relaxed);
                let (conn, tx, timeout) = (conn.clone(), tx.clone(), self.cfg.request_timeout);
                let frame = wire::frame(MsgType::Batch, &sealed.frame);
                tokio::spawn(async move {
                    let r = async {
                        let (ty, body) = vigie_net::request(&conn, &frame, timeout).await?;
                        Ok(wire::decode_body::<Reply>(ty, &body)?)
                    }
                    .await;
                    let _ = tx.send((sealed.first, r)).await;
                });
            }
            tokio::select! {
                Some((_first, res)) = rx.recv() => {
                    match res? {
                        Reply::Ack { epoch: e, stored_end } => {
                            if let Decision::Release { stored_end } = window.on_ack(e, stored_end) {
                                let before = self.stats.acked_end.swap(stored_end.0, Relaxed);
                                self.stats.events_acked.fetch_add(stored_end.0.saturating_sub(before), Relaxed);
                                cache.retain(|s| s.end > stored_end);
                                to_release = Some(stored_end);
                            }
                        }
                        Reply::Resend { from, .. } => {
                            tracing::info!(from = from.0, "collector asked to resend; reconnecting to resynchronise");
                            conn.close(0u32.into(), b"resync");
                            ep.wait_idle().await;
                            return Ok(SessionEnd::Reconnect);
                        }
                        Reply::Refused { code: RefuseCode::Unavailable, message } => bail!("collector cannot store right now: {message}"),
                        Reply::Refused { code, message } => {
                            cache.clear();
                            bail!("collector refused a batch ({code:?}): {message}")
                        }
                        other => bail!("unexpected reply to a batch: {other:?}"),
                    }
                }
                _ = release_tick.tick() => {
                    if let Some(end) = to_release
                        && self.release(end, &mut release_failing).await
                    {
                        to_release = None;
                    }
                }
                r = self.appended.changed() => {
                    if r.is_err() {
                        // The pipeline is gone: drain what is in flight, then stop.
                        if window.in_flight() == 0 {
                            return Ok(SessionEnd::Shutdown);
                        }
                    }
                }
                _ = shutdown.changed() => {
                    if let Some(end) = to_release.take() {
                        let _ = blocking(&self.durable, move |d| Ok(d.spool.release(end)?)).await;
                    }
                    conn.close(0u32.into(), b"shutdown");
                    return Ok(SessionEnd::Shutdown);
                }
                e = conn.closed() => bail!("connection closed: {e}"),
            }
        }
    }

    /// Releases the spool up to `end` (acknowledged). A failure — typically a full disk
    /// refusing the spool's metadata — is not fatal: the acknowledged records stay on disk
    /// until a later attempt succeeds, and shipping goes on. (Ending the session instead
    /// made every reconnect fail the same way, the backoff grow to its cap, and the agent
    /// resume up to 30 s after the disk had room again.) Returns whether it succeeded.
    async fn release(&self, end: Seq, failing: &mut bool) -> bool {
        match blocking(&self.durable, move |d| Ok(d.spool.release(end)?)).await {
            Ok(()) => {
                if std::mem::take(failing) {
                    tracing::info!(end = end.0, "spool released again");
                }
                true
            }
            Err(e) => {
                if !std::mem::replace(failing, true) {
                    tracing::warn!(error = %format!("{e:#}"), end = end.0, "cannot release acknowledged records from the spool; they stay on disk, retrying");
                }
                false
            }
        }
    }

    /// Reads the next records from the spool and seals them into a batch chained to `prev`.
    async fn seal_next(&self, epoch: Epoch, from: Seq, prev: Hash) -> Result<Option<Sealed>> {
        let (max_n, max_b, level) = (
            self.cfg.batch_max_events,
            self.cfg.batch_max_bytes,
            self.cfg.zstd_level,
        );
        let read = blocking(&self.durable, move |d| {
            if d.spool.epoch() != epoch {
                bail!("spool epoch changed under the shipper");
            }
            Ok(d.spool.read(from, max_n, max_b)?)
        })
        .await?;
        // Build a contiguous run from `from`; records lost to corruption become placeholders, so the
        // collector's exactly-once check still sees every sequence and the loss is counted.
        let mut recs: Vec<Vec<u8>> = Vec::new();
        let mut lost = 0u64;
        let mut seq = from.0;
        let mut it = read.records.into_iter().peekable();
        while recs.len() < max_n {
            if let Some((s, _)) = it.peek()
                && s.0 == seq
            {
                let (_, r) = it.next().context("peeked")?;
                recs.push(r);
                seq += 1;
                continue;
            }
            if read.skipped.iter().any(|(a, b)| a.0 <= seq && seq < b.0) {
                let mut e = Event::new(Kind::AgentHealth, now());
                e.event.module = "agent".into();
                e.event.action = "record_lost".into();
                e.set_message(format!(
                    "spool record {seq} of epoch {epoch} was corrupt and is lost"
                ));
                e.vigie = Some(VigieExt {
                    health: Some(AgentHealth {
                        corrupt_records: 1,
                        ..Default::default()
                    }),
                    command: None,
                });
                e.host.name = self.hostname.clone();
                recs.push(encode_event(&e)?);
                lost += 1;
                seq += 1;
                continue;
            }
            break;
        }
        if recs.is_empty() {
            return Ok(None);
        }
        if lost > 0 {
            self.stats.lost_records.fetch_add(lost, Relaxed);
            tracing::error!(lost, epoch = %epoch, "spool records lost to corruption; placeholders sent in their place");
        }
        let key = self.ident.signing.clone();
        let agent = self.ident.agent;
        let count = recs.len() as u32;
        let (frame, hash) = tokio::task::spawn_blocking(move || {
            let refs: Vec<&[u8]> = recs.iter().map(|r| r.as_slice()).collect();
            let raw = raw_payload(&refs)?;
            seal_raw(&key, agent, epoch, from, count, now(), prev, &raw, level)
        })
        .await??;
        Ok(Some(Sealed {
            epoch,
            first: from,
            end: Seq(from.0 + u64::from(count)),
            prev_hash: prev,
            hash,
            frame: Arc::new(frame),
        }))
    }
}

//! The Vigie collector.
//!
//! Owns: the QUIC listener agents ship to ([`ingest`]), enrollment, the
//! single writer thread that commits verified batches exactly once ([`writer`]),
//! the event store (through `vigie-store`, which only this crate opens), retention,
//! the disk-full guard, the live stream of new events, detection of every stored
//! event on its own thread ([`detect`]), alerts ([`alerts`]), notifications
//! ([`notify`]) and the management HTTP API ([`api`]) with Prometheus `/metrics`.
//!
//! Never does: decode a batch before its signature verifies; acknowledge a batch
//! before its events and high-water mark are durable in one synced write; run
//! RocksDB, signature checks, decompression or rule evaluation on async worker
//! threads; serve anything but enrollment to a connection without a client
//! certificate; let a broken rule or a slow notification channel stall ingestion.

pub mod alerts;
pub mod api;
pub mod detect;
pub mod disk;
pub mod ingest;
pub mod keys;
pub mod metrics;
pub mod notify;
pub mod writer;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Deserialize;
use tokio::sync::broadcast;
use vigie_proto::Event;
use vigie_store::{Store, StoreConfig};

use crate::keys::Keys;
use crate::metrics::Metrics;

/// Collector configuration (TOML). Every field has a default.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CollectorConfig {
    /// Holds `store/` and the keys.
    pub data_dir: PathBuf,
    /// QUIC listener for agents.
    pub ingest_listen: SocketAddr,
    /// Addresses agents are told to use (in enrollment tokens); default: this host's name and the listen port.
    pub advertise: Vec<String>,
    /// Names and addresses the collector certificate covers.
    pub server_names: Vec<String>,
    /// Management API listener (keep it on loopback unless behind a proxy).
    pub api_listen: SocketAddr,
    /// Drop events older than this (e.g. "30d"); none by default.
    #[serde(with = "opt_duration")]
    pub retention_max_age: Option<Duration>,
    /// Keep the store under this size (e.g. "50GiB"); none by default.
    #[serde(with = "opt_size")]
    pub retention_max_bytes: Option<u64>,
    /// Stop storing (and acknowledging) below this much free disk; warn below twice this.
    #[serde(with = "size")]
    pub min_free_bytes: u64,
    /// fsync every commit (the durability guarantee). Only benchmarks turn it off.
    pub sync: bool,
    /// Benchmark mode: verify and decode batches, then discard them.
    pub verify_only: bool,
    /// Sigma rules directory (every `.yml`/`.yaml` under it; `exceptions.yml` holds
    /// exceptions). Default: `<data_dir>/rules`, created on first start.
    pub rules_dir: Option<PathBuf>,
    /// How often the rules directory is checked for changes (e.g. "3s").
    #[serde(with = "duration")]
    pub rules_reload_interval: Duration,
    /// Detections of the same rule and group within this window aggregate into one alert (e.g. "1h").
    #[serde(with = "duration")]
    pub alert_dedup_window: Duration,
    /// Stored events waiting for detection at most; past this the writer waits up
    /// to `detection_max_wait`, then leaves events unevaluated (counted, health alert).
    pub detection_queue_events: usize,
    #[serde(with = "duration")]
    pub detection_max_wait: Duration,
    /// Notification channels (`[[notify]]` tables), see docs/notifications.md.
    pub notify: Vec<notify::NotifyConfig>,
}

impl Default for CollectorConfig {
    fn default() -> Self {
        CollectorConfig {
            data_dir: PathBuf::from("vigie-data/collector"),
            ingest_listen: SocketAddr::from(([0, 0, 0, 0], 7702)),
            advertise: Vec::new(),
            server_names: Vec::new(),
            api_listen: SocketAddr::from(([127, 0, 0, 1], 7701)),
            retention_max_age: None,
            retention_max_bytes: None,
            min_free_bytes: 256 * 1024 * 1024,
            sync: true,
            verify_only: false,
            rules_dir: None,
            rules_reload_interval: Duration::from_secs(3),
            alert_dedup_window: Duration::from_secs(3600),
            detection_queue_events: 200_000,
            detection_max_wait: Duration::from_secs(2),
            notify: Vec::new(),
        }
    }
}

/// Parses sizes such as `512MiB`, `10GB`, `1000`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| {
        format!("invalid size {s:?}: expected a number with an optional unit, e.g. 512MiB or 10GB")
    })?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "kib" => 1024.0,
        "m" | "mb" => 1e6,
        "mib" => 1024.0 * 1024.0,
        "g" | "gb" => 1e9,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tb" => 1e12,
        "tib" => 1024f64.powi(4),
        u => {
            return Err(format!(
                "invalid size unit {u:?} in {s:?}: use B, KB, KiB, MB, MiB, GB, GiB, TB or TiB"
            ));
        }
    };
    Ok((n * mult) as u64)
}

mod size {
    use serde::{Deserialize, Deserializer};
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum V {
            N(u64),
            S(String),
        }
        match V::deserialize(d)? {
            V::N(n) => Ok(n),
            V::S(s) => super::parse_size(&s).map_err(serde::de::Error::custom),
        }
    }
}

mod opt_size {
    use serde::Deserializer;
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        super::size::deserialize(d).map(Some)
    }
}

mod duration {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(|e| {
            serde::de::Error::custom(format!(
                "invalid duration {s:?} ({e}); use for example 3s, 5m or 1h"
            ))
        })
    }
}

mod opt_duration {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map(Some).map_err(|e| {
            serde::de::Error::custom(format!(
                "invalid duration {s:?} ({e}); use for example 30d or 12h"
            ))
        })
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

/// A running collector.
pub struct Collector {
    pub ingest_addr: SocketAddr,
    pub api_addr: SocketAddr,
    pub store: Store,
    pub api_token: String,
    pub metrics: Arc<Metrics>,
    pub live: broadcast::Sender<Arc<Event>>,
    pub api_state: Arc<api::ApiState>,
    endpoint: quinn::Endpoint,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    writer: Option<std::thread::JoinHandle<()>>,
    detector: Option<detect::Detector>,
    sealer: Option<(
        Arc<std::sync::atomic::AtomicBool>,
        std::thread::JoinHandle<()>,
    )>,
}

impl std::fmt::Debug for Collector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Collector")
            .field("ingest", &self.ingest_addr)
            .field("api", &self.api_addr)
            .finish()
    }
}

impl Collector {
    /// Opens the store, loads or creates keys, and starts every task. Must be called inside a tokio runtime.
    pub async fn start(cfg: CollectorConfig) -> Result<Collector> {
        let dir = cfg.data_dir.clone();
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create collector data directory {}", dir.display()))?;
        let host = hostname();
        let mut names = cfg.server_names.clone();
        for n in [
            host.clone(),
            "localhost".to_string(),
            "127.0.0.1".to_string(),
            "::1".to_string(),
            vigie_net::DEFAULT_SERVER_NAME.to_string(),
        ] {
            if !names.contains(&n) {
                names.push(n);
            }
        }
        let keys = {
            let dir = dir.clone();
            tokio::task::spawn_blocking(move || Keys::load_or_create(&dir, &names)).await??
        };
        let store_dir = dir.join("store");
        let sync = cfg.sync;
        let store = tokio::task::spawn_blocking(move || {
            Store::open(
                &store_dir,
                StoreConfig {
                    sync,
                    // Sealing runs on its own thread so that commits (and acks) never wait for it.
                    inline_seal: false,
                    ..Default::default()
                },
            )
        })
        .await?
        .with_context(|| {
            format!(
                "cannot open the event store in {}",
                dir.join("store").display()
            )
        })?;

        let metrics = Arc::new(Metrics::default());
        let (live, _) = broadcast::channel(4096);
        let gate = Arc::new(writer::WriteGate::default());
        let (wtx, wrx) = std::sync::mpsc::sync_channel(1024);

        // Detection: alerts, notification channels, then the rules (loaded before
        // the first event can be stored) and the detection thread.
        let (ntx, nrx) = tokio::sync::mpsc::channel(1024);
        let (alerts, notifier, detector) = {
            let (store, metrics, cfg, host) =
                (store.clone(), metrics.clone(), cfg.clone(), host.clone());
            let rules_dir = cfg.rules_dir.clone().unwrap_or_else(|| dir.join("rules"));
            tokio::task::spawn_blocking(move || -> Result<_> {
                let alerts = Arc::new(
                    alerts::Alerts::open(
                        store.clone(),
                        alerts::AlertsConfig {
                            dedup_window: cfg.alert_dedup_window,
                            ..Default::default()
                        },
                        metrics.clone(),
                    )
                    .context("cannot open the alert registry")?,
                );
                let notifier = Arc::new(notify::Notifier::new(
                    &cfg.notify,
                    store,
                    metrics.clone(),
                    host.clone(),
                )?);
                let detector = detect::Detector::start(
                    detect::DetectConfig {
                        rules_dir,
                        reload_interval: cfg.rules_reload_interval,
                        queue_events: cfg.detection_queue_events,
                        max_wait: cfg.detection_max_wait,
                        hostname: host,
                    },
                    alerts.clone(),
                    metrics,
                    ntx,
                )?;
                Ok((alerts, notifier, detector))
            })
            .await??
        };
        let detect_shared = detector.shared.clone();

        let sealer = spawn_sealer(store.clone())?;
        let writer = writer::spawn(
            store.clone(),
            wrx,
            live.clone(),
            metrics.clone(),
            gate.clone(),
            Some(detect_shared.queue.clone()),
        )?;

        let server_cfg = vigie_net::server_config(
            keys.ca.cert_der(),
            keys.server_cert.clone(),
            keys.server_key.clone(),
        )?;
        let listen_err = || {
            format!(
                "cannot listen for agents on UDP {}; is another collector running? set ingest_listen",
                cfg.ingest_listen
            )
        };
        let socket = std::net::UdpSocket::bind(cfg.ingest_listen).with_context(listen_err)?;
        let runtime = quinn::default_runtime().context("no async runtime for the QUIC listener")?;
        let endpoint =
            quinn::Endpoint::new(keys.endpoint_config()?, Some(server_cfg), socket, runtime)
                .with_context(listen_err)?;
        let ingest_addr = endpoint.local_addr()?;
        let advertise = if cfg.advertise.is_empty() {
            let port = ingest_addr.port();
            if ingest_addr.ip().is_loopback() {
                vec![format!("127.0.0.1:{port}")]
            } else {
                vec![format!("{host}:{port}"), format!("127.0.0.1:{port}")]
            }
        } else {
            cfg.advertise.clone()
        };
        let ca_der = keys.ca.cert_der().to_vec();
        let ing = Arc::new(ingest::Ingest {
            store: store.clone(),
            ca: Arc::new(keys.ca),
            command_key: keys.command_key.verifying_key().to_bytes(),
            writer: wtx,
            metrics: metrics.clone(),
            log_limit: ingest::LogLimiter::new(20),
            verify_only: cfg.verify_only,
        });
        let mut tasks = vec![
            tokio::spawn(ingest::serve(endpoint.clone(), ing)),
            tokio::spawn(notifier.clone().run(nrx)),
        ];

        let api_state = Arc::new(api::ApiState {
            store: store.clone(),
            token: keys.api_token.clone(),
            metrics: metrics.clone(),
            live: live.clone(),
            ingest_addrs: advertise,
            server_name: vigie_net::DEFAULT_SERVER_NAME.to_string(),
            ca_der,
            detect: detect_shared,
            alerts,
            notifier,
            metrics_open: cfg.api_listen.ip().is_loopback(),
        });
        let listener = tokio::net::TcpListener::bind(cfg.api_listen)
            .await
            .with_context(|| format!("cannot listen for the management API on TCP {}; is another collector running? set api_listen", cfg.api_listen))?;
        let api_addr = listener.local_addr()?;
        let app = api::router(api_state.clone());
        tasks.push(tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "management API stopped");
            }
        }));
        tasks.push(tokio::spawn(housekeeping(
            cfg.clone(),
            store.clone(),
            metrics.clone(),
            gate,
        )));
        tracing::info!(%ingest_addr, %api_addr, data_dir = %cfg.data_dir.display(), "collector started");
        Ok(Collector {
            ingest_addr,
            api_addr,
            store,
            api_token: keys.api_token,
            metrics,
            live,
            api_state,
            endpoint,
            tasks,
            writer: Some(writer),
            detector: Some(detector),
            sealer: Some(sealer),
        })
    }

    /// Stops accepting, lets the writer finish what it holds, and returns.
    pub async fn shutdown(mut self) {
        self.endpoint.close(0u32.into(), b"shutdown");
        for t in self.tasks.drain(..) {
            t.abort();
        }
        // The writer ends when the last sender (held by ingest tasks) is gone.
        if let Some((stop, t)) = self.sealer.take() {
            stop.store(true, Relaxed);
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
        if let Some(w) = self.writer.take() {
            let _ = tokio::task::spawn_blocking(move || w.join()).await;
        }
        // The writer has handed over its last events: detection finishes them.
        if let Some(d) = self.detector.take() {
            let _ = tokio::task::spawn_blocking(move || d.stop()).await;
        }
        let store = self.store.clone();
        let _ = tokio::task::spawn_blocking(move || store.flush()).await;
    }
}

/// Moves committed events into sealed, indexed blocks, off the writer thread.
fn spawn_sealer(
    store: Store,
) -> std::io::Result<(
    Arc<std::sync::atomic::AtomicBool>,
    std::thread::JoinHandle<()>,
)> {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    let t = std::thread::Builder::new().name("vigie-sealer".into()).spawn(move || {
        while !flag.load(Relaxed) {
            if let Err(e) = store.seal_pending() {
                tracing::error!(error = %e, "sealing failed; events stay searchable in the recent tier");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    })?;
    Ok((stop, t))
}

/// Every few seconds: disk guard; every minute: retention.
async fn housekeeping(
    cfg: CollectorConfig,
    store: Store,
    metrics: Arc<Metrics>,
    gate: Arc<writer::WriteGate>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    let mut n: u64 = 0;
    let mut last_state = disk::DiskState::Ok;
    loop {
        tick.tick().await;
        n += 1;
        let dir = cfg.data_dir.clone();
        let free = match tokio::task::spawn_blocking(move || disk::free_bytes(&dir)).await {
            Ok(Ok(f)) => f,
            _ => continue,
        };
        metrics.disk_free_bytes.store(free, Relaxed);
        let state = disk::classify(free, cfg.min_free_bytes);
        if state != last_state {
            match state {
                disk::DiskState::Full => tracing::error!(
                    free,
                    reserve = cfg.min_free_bytes,
                    "disk full: the collector stops storing and acknowledging; agents keep their events spooled. Free space or lower retention"
                ),
                disk::DiskState::Low => tracing::warn!(
                    free,
                    reserve = cfg.min_free_bytes,
                    "disk space low: storing stops below the reserve"
                ),
                disk::DiskState::Ok => {
                    tracing::info!(free, "disk space back above the reserve; storing resumes")
                }
            }
            last_state = state;
        }
        gate.refuse.store(state == disk::DiskState::Full, Relaxed);
        metrics
            .disk_full
            .store(u64::from(state == disk::DiskState::Full), Relaxed);
        if n % 30 == 1 {
            let s = store.clone();
            let (age, bytes) = (cfg.retention_max_age, cfg.retention_max_bytes);
            let res = tokio::task::spawn_blocking(move || {
                let usage = s.disk_usage().unwrap_or(0);
                let report = if age.is_some() || bytes.is_some() {
                    Some(s.retention(ingest::now(), age, bytes))
                } else {
                    None
                };
                (usage, report)
            })
            .await;
            if let Ok((usage, report)) = res {
                metrics.store_bytes.store(usage, Relaxed);
                match report {
                    Some(Ok(r)) if r.events_removed > 0 => {
                        metrics
                            .retention_deleted_events
                            .fetch_add(r.events_removed, Relaxed);
                        tracing::info!(
                            events = r.events_removed,
                            blocks = r.blocks_removed,
                            "retention removed old events"
                        );
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => tracing::error!(error = %e, "retention failed"),
                    None => {}
                }
            }
        }
    }
}

/// Reads a collector configuration file, with errors that name the key and the fix.
pub fn load_config(path: &Path) -> Result<CollectorConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read collector configuration {}", path.display()))?;
    toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

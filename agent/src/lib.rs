//! The Vigie agent.
//!
//! Owns: log sources (journald, files, syslog listener) and host metrics
//! ([`sources`]), parsers that turn sshd/sudo/su/PAM lines into authentication
//! events ([`parse`]), the crash-safe spool with source checkpoints committed
//! alongside ([`durable`]), the pipeline into it ([`pipeline`]), signed shipping
//! over QUIC ([`shipper`]), enrollment ([`enroll`]) and health reports ([`health`]).
//!
//! Never does: link RocksDB (checked in CI), lose an event silently (every drop is
//! counted and reported), advance a source position before the events it covers
//! are durable, take secrets from its command line, or accept an unsigned command.

pub mod config;
pub mod durable;
pub mod enroll;
pub mod health;
pub mod parse;
pub mod pipeline;
pub mod shipper;
pub mod sources;
pub mod state;

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::sync::{mpsc, watch};
use vigie_spool::SpoolConfig;

use crate::config::AgentConfig;
use crate::durable::Durable;
use crate::pipeline::{HostStamp, PipelineStats};
use crate::shipper::{Shipper, ShipperConfig, ShipperStats};
use crate::sources::SourceCtx;
use crate::state::Paths;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// A running agent.
pub struct Agent {
    pub agent_id: vigie_proto::AgentId,
    pub durable: Arc<Mutex<Durable>>,
    pub shipper_stats: Arc<ShipperStats>,
    pub pipeline_stats: Arc<PipelineStats>,
    pub drops: Vec<(String, Arc<AtomicU64>)>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Agent({})", self.agent_id)
    }
}

fn now_ns() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0)
}

/// Reads an enrollment token from a file, or stdin for `-` (never from the command line).
pub fn read_token(path: &std::path::Path) -> Result<String> {
    use std::io::Read;
    let max = vigie_proto::enroll::MAX_BUNDLE_LEN as u64;
    let mut s = String::new();
    if path.as_os_str() == "-" {
        std::io::stdin()
            .lock()
            .take(max + 1)
            .read_to_string(&mut s)
            .context("cannot read the enrollment token from stdin")?;
    } else {
        std::fs::File::open(path)
            .and_then(|f| f.take(max + 1).read_to_string(&mut s))
            .with_context(|| format!("cannot read enrollment token file {}", path.display()))?;
    }
    if s.len() as u64 > max {
        bail!(
            "{} holds more than {max} bytes: not an enrollment token",
            path.display()
        );
    }
    Ok(s)
}

impl Agent {
    /// Enrolls if needed and possible, opens the spool and starts every task.
    pub async fn start(cfg: AgentConfig) -> Result<Agent> {
        cfg.validate()?;
        let paths = Paths::new(&cfg.data_dir);
        if !paths.is_enrolled() {
            match &cfg.enroll_token_file {
                Some(f) => {
                    let token = read_token(f)?;
                    let e = enroll::enroll(&paths, &token, now_ns()).await?;
                    tracing::info!(agent = %e.agent_id, "enrolled");
                    if f.as_os_str() != "-"
                        && let Err(err) = std::fs::remove_file(f)
                    {
                        tracing::warn!(path = %f.display(), error = %err, "enrolled, but the used token file could not be deleted");
                    }
                }
                None => bail!(
                    "this agent is not enrolled: create a token with `vigie enroll create` and run `vigie-agent enroll --token-file FILE`, or set enroll_token_file"
                ),
            }
        }
        let ident = Arc::new(paths.load_identity()?);
        let spool_cfg = SpoolConfig {
            dir: paths.spool(),
            max_bytes: cfg.spool.max_bytes,
            segment_bytes: cfg.spool.segment_bytes,
            sync: true,
        };
        let ck = paths.checkpoints();
        let (durable, report) =
            tokio::task::spawn_blocking(move || Durable::open(spool_cfg, ck)).await??;
        if report.corrupt_records > 0 || report.truncated_tail_bytes > 0 {
            tracing::warn!(corrupt = report.corrupt_records, truncated_tail_bytes = report.truncated_tail_bytes, gaps = ?report.gaps, "spool had damage; it was skipped and is reported");
        }
        let checkpoints = Arc::new(durable.checkpoints().clone());
        let next = durable.spool.next_seq().0;
        let durable = Arc::new(Mutex::new(durable));
        let hostname = if cfg.hostname.is_empty() {
            state::hostname()
        } else {
            cfg.hostname.clone()
        };
        let machine_id = state::machine_id();
        let stamp = HostStamp {
            hostname: hostname.clone(),
            machine_id: machine_id.clone(),
            version: VERSION.to_string(),
            labels: cfg
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        };

        let (shutdown, shutdown_rx) = watch::channel(false);
        // Bounded in emits (a file emit holds up to 500 events): back-pressure comes early,
        // memory stays small.
        let (tx, rx) = mpsc::channel(32);
        let (appended_tx, appended_rx) = watch::channel(next);
        let pipeline_stats = Arc::new(PipelineStats::default());
        let mut tasks = vec![tokio::spawn(pipeline::run(
            rx,
            durable.clone(),
            stamp,
            appended_tx,
            pipeline_stats.clone(),
        ))];

        let mut drops = Vec::new();
        macro_rules! start_source {
            ($name:expr, $fut:expr) => {{
                let name: String = $name;
                let (ctx, d) = SourceCtx::new(name.as_str().into(), tx.clone(), checkpoints.clone(), shutdown_rx.clone());
                drops.push((name.clone(), d));
                let fut = $fut(ctx);
                tasks.push(tokio::spawn(async move {
                    if let Err(e) = fut.await {
                        tracing::error!(source = %name, error = %format!("{e:#}"), "source stopped");
                    }
                }));
            }};
        }
        if let Some(j) = cfg.journald.clone() {
            start_source!("journald".to_string(), |ctx| sources::journald::run(j, ctx));
        }
        for f in cfg.file.clone() {
            start_source!(format!("file:{}", f.name), |ctx| sources::file::run(f, ctx));
        }
        if let Some(s) = cfg.syslog.clone() {
            start_source!("syslog".to_string(), |ctx| sources::syslog::run(s, ctx));
        }
        if let Some(m) = cfg.metrics.clone() {
            start_source!("metrics".to_string(), |ctx| sources::metrics::run(m, ctx));
        }

        let shipper_stats = Arc::new(ShipperStats::default());
        let collectors = if cfg.collectors.is_empty() {
            ident.enrollment.collectors.clone()
        } else {
            cfg.collectors.clone()
        };
        let shipper = Shipper {
            durable: durable.clone(),
            ident: ident.clone(),
            cfg: ShipperConfig {
                batch_max_events: cfg.shipper.batch_max_events,
                batch_max_bytes: cfg.shipper.batch_max_bytes as usize,
                max_in_flight: cfg.shipper.max_in_flight,
                zstd_level: cfg.shipper.zstd_level,
                collectors,
                server_name: ident.enrollment.server_name.clone(),
                ..Default::default()
            },
            appended: appended_rx,
            events: tx.clone(),
            stats: shipper_stats.clone(),
            hostname,
            machine_id,
            version: VERSION.to_string(),
        };
        tasks.push(tokio::spawn(shipper.run(shutdown_rx.clone())));
        let reporter = health::Reporter {
            durable: durable.clone(),
            drops: drops.clone(),
            events: tx.clone(),
            interval: cfg.health.interval,
            startup_corrupt: report.corrupt_records,
            pipeline: pipeline_stats.clone(),
        };
        tasks.push(tokio::spawn(reporter.run(shutdown_rx.clone())));
        drop(tx);
        tracing::info!(agent = %ident.agent, data_dir = %cfg.data_dir.display(), "agent started");
        Ok(Agent {
            agent_id: ident.agent,
            durable,
            shipper_stats,
            pipeline_stats,
            drops,
            shutdown,
            tasks,
        })
    }

    /// Total events dropped by sources that cannot pause.
    pub fn dropped(&self) -> u64 {
        self.drops
            .iter()
            .map(|(_, d)| d.load(std::sync::atomic::Ordering::Relaxed))
            .sum()
    }

    /// Stops sources and tasks; the spool keeps whatever was not acknowledged.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let abort = t.abort_handle();
            if tokio::time::timeout(Duration::from_secs(5), t)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }
}

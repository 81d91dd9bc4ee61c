//! An in-process collector on loopback (real QUIC, real RocksDB in a temporary
//! directory) and real agents (the `vigie` binary, as separate processes) enrolled
//! with it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use vigie_collector::metrics::Metrics;
use vigie_collector::{Collector, CollectorConfig};
use vigie_store::{Query, SearchRequest};

use crate::child::Proc;

/// A collector running on its own tokio runtime inside this process.
pub struct BenchCollector {
    rt: tokio::runtime::Runtime,
    c: Option<Collector>,
    pub data_dir: PathBuf,
}

impl std::fmt::Debug for BenchCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BenchCollector({})", self.data_dir.display())
    }
}

/// How to run the in-process collector.
#[derive(Clone, Debug)]
pub struct CollectorOpts {
    pub verify_only: bool,
    pub sync: bool,
    /// Tokio worker threads (the blocking pool, the writer thread and RocksDB's own threads come on top).
    pub worker_threads: usize,
    /// Name of the runtime's threads (worker and blocking), for per-thread CPU accounting.
    pub thread_name: &'static str,
}

impl Default for CollectorOpts {
    fn default() -> Self {
        CollectorOpts {
            verify_only: false,
            sync: true,
            worker_threads: 2,
            thread_name: "collector",
        }
    }
}

impl BenchCollector {
    /// Starts a collector with its data under `data_dir`, listening on 127.0.0.1 ephemeral ports.
    pub fn start(data_dir: &Path, opts: &CollectorOpts) -> Result<BenchCollector> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(opts.worker_threads.max(1))
            .thread_name(opts.thread_name)
            // Blocking threads stay alive while measuring, so their CPU time stays visible per thread.
            .thread_keep_alive(Duration::from_secs(3600))
            .enable_all()
            .build()?;
        let cfg = CollectorConfig {
            data_dir: data_dir.to_path_buf(),
            ingest_listen: "127.0.0.1:0".parse()?,
            api_listen: "127.0.0.1:0".parse()?,
            min_free_bytes: 0,
            sync: opts.sync,
            verify_only: opts.verify_only,
            ..Default::default()
        };
        let c = rt.block_on(Collector::start(cfg))?;
        Ok(BenchCollector {
            rt,
            c: Some(c),
            data_dir: data_dir.to_path_buf(),
        })
    }

    fn c(&self) -> Result<&Collector> {
        self.c.as_ref().context("collector already stopped")
    }

    pub fn runtime(&self) -> &tokio::runtime::Runtime {
        &self.rt
    }

    pub fn ingest_addr(&self) -> Result<std::net::SocketAddr> {
        Ok(self.c()?.ingest_addr)
    }

    pub fn ca_der(&self) -> Result<Vec<u8>> {
        Ok(self.c()?.api_state.ca_der.clone())
    }

    pub fn metrics(&self) -> Result<Arc<Metrics>> {
        Ok(self.c()?.metrics.clone())
    }

    /// The Prometheus text `/metrics` serves.
    pub fn metrics_text(&self) -> Result<String> {
        Ok(self.c()?.metrics.render())
    }

    /// Events verified then discarded (verify-only mode).
    pub fn events_verified(&self) -> Result<u64> {
        Ok(self.c()?.metrics.events_verified.load(Relaxed))
    }

    /// Events stored (all kinds, including agent health and metrics).
    pub fn events_stored(&self) -> Result<u64> {
        Ok(self.c()?.metrics.events_stored.load(Relaxed))
    }

    /// Every event in the store, counted by the store itself.
    pub fn store_events(&self) -> Result<u64> {
        Ok(self.c()?.store.stats().events)
    }

    /// Number of stored events matching `query` (the `vigie search` language), any time.
    pub fn count(&self, query: &str) -> Result<u64> {
        let store = self.c()?.store.clone();
        let req = SearchRequest {
            query: Query::parse(query).map_err(|e| anyhow::anyhow!("query {query:?}: {e:?}"))?,
            from: vigie_proto::Timestamp(0),
            to: vigie_proto::Timestamp(i64::MAX),
            limit: 0,
            before: None,
            count: true,
        };
        let res = self.rt.block_on(async move {
            tokio::task::spawn_blocking(move || store.search(&req)).await
        })??;
        res.total.context("the store did not count")
    }

    /// The newest stored event matching `query`, as JSON.
    pub fn newest(&self, query: &str) -> Result<Option<serde_json::Value>> {
        let store = self.c()?.store.clone();
        let req = SearchRequest {
            query: Query::parse(query).map_err(|e| anyhow::anyhow!("query {query:?}: {e:?}"))?,
            from: vigie_proto::Timestamp(0),
            to: vigie_proto::Timestamp(i64::MAX),
            limit: 1,
            before: None,
            count: false,
        };
        let res = self.rt.block_on(async move {
            tokio::task::spawn_blocking(move || store.search(&req)).await
        })??;
        Ok(res
            .events
            .first()
            .and_then(|e| serde_json::from_str(&e.to_json()).ok()))
    }

    /// A single-use enrollment token naming this collector's loopback address.
    pub fn token(&self) -> Result<String> {
        let c = self.c()?;
        let st = c.api_state.clone();
        let store = c.store.clone();
        let addrs = vec![format!("127.0.0.1:{}", c.ingest_addr.port())];
        let b = self
            .rt
            .block_on(vigie_collector::api::create_token(
                &store,
                &addrs,
                &st.server_name,
                &st.ca_der,
                Duration::from_secs(600),
                "benchmark".into(),
            ))
            .map_err(|_| anyhow::anyhow!("cannot create an enrollment token"))?;
        Ok(b.encode())
    }

    /// Stops the collector (the writer finishes what it holds).
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(c) = self.c.take() {
            self.rt.block_on(c.shutdown());
        }
    }
}

impl Drop for BenchCollector {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The `vigie` binary next to this benchmark binary (both built by
/// `cargo build --release -p vigie-bench -p vigie`), unless `explicit` is given.
pub fn vigie_binary(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    let exe = std::env::current_exe()?;
    let p = exe
        .parent()
        .context("benchmark binary has no directory")?
        .join("vigie");
    if !p.exists() {
        bail!(
            "{} not found: build it with `cargo build --release -p vigie-bench -p vigie`, or pass --vigie",
            p.display()
        );
    }
    Ok(p)
}

/// What an agent under test watches and how.
#[derive(Clone, Debug)]
pub struct AgentSpec {
    pub dir: PathBuf,
    pub collector_port: u16,
    pub file: PathBuf,
    pub read_from_beginning: bool,
    pub metrics: bool,
    pub health_interval: String,
    /// Extra TOML appended to the configuration (e.g. a `[shipper]` section).
    pub extra: String,
}

impl AgentSpec {
    /// Writes the agent's configuration file and returns its path.
    pub fn write_config(&self) -> Result<PathBuf> {
        std::fs::create_dir_all(&self.dir)?;
        let q = |p: &Path| toml_str(&p.display().to_string());
        let mut t = format!(
            "data_dir = {}\nhostname = \"bench-agent\"\ncollectors = [\"127.0.0.1:{}\"]\n\n[health]\ninterval = {}\n\n",
            q(&self.dir.join("data")),
            self.collector_port,
            toml_str(&self.health_interval)
        );
        t.push_str(&format!(
            "[[file]]\nname = \"bench\"\npaths = [{}]\nread_from = \"{}\"\ntimezone = \"UTC\"\n\n",
            q(&self.file),
            if self.read_from_beginning {
                "beginning"
            } else {
                "end"
            }
        ));
        if self.metrics {
            t.push_str("[metrics]\ninterval = \"10s\"\n\n");
        }
        t.push_str(&self.extra);
        let path = self.dir.join("agent.toml");
        std::fs::write(&path, t)?;
        Ok(path)
    }
}

fn toml_str(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Writes the configuration, enrolls the agent with `collector` (`vigie agent enroll`,
/// token from a file) and returns the configuration path.
pub fn enroll_agent(vigie: &Path, spec: &AgentSpec, collector: &BenchCollector) -> Result<PathBuf> {
    let config = spec.write_config()?;
    let token = spec.dir.join("token");
    std::fs::write(&token, collector.token()?)?;
    let args = [
        "agent".to_string(),
        "enroll".to_string(),
        "--token-file".to_string(),
        token.display().to_string(),
        "--config".to_string(),
        config.display().to_string(),
    ];
    Proc::spawn(
        "vigie agent enroll",
        vigie,
        &args,
        &spec.dir.join("enroll.log"),
    )?
    .wait_success(Duration::from_secs(30))?;
    Ok(config)
}

/// Starts `vigie agent run --config CONFIG` (call from the main thread).
pub fn spawn_agent(vigie: &Path, config: &Path, log: &Path) -> Result<Proc> {
    let args = [
        "agent".to_string(),
        "run".to_string(),
        "--config".to_string(),
        config.display().to_string(),
    ];
    Proc::spawn("vigie agent run", vigie, &args, log)
}

/// Polls `f` every `every` until it returns `Some`, failing after `timeout`.
pub fn wait_until<T>(
    timeout: Duration,
    every: Duration,
    mut f: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f()? {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?}");
        }
        std::thread::sleep(every);
    }
}

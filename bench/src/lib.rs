//! `vigie-bench`: the benchmark harness of the performance targets
//! (`/work/shared/design/targets.md`) and the full-count reliability runs.
//!
//! Owns: the benchmark binaries in `src/bin/` — `p1-ingest` (collector ingest,
//! real QUIC + RocksDB, simulated agents sending pre-sealed batches), `p5-ship`
//! (agent shipping throughput into a verify-only collector, beside rsyslog),
//! `p4-footprint` (agent CPU and RSS at 1,000 lines/s, beside rsyslog) and
//! `p6-burst` (burst absorption at 50,000 lines/s) — and what they share: `/proc`
//! sampling ([`procfs`]), medians and percentiles ([`stats`]), child processes
//! killed on drop ([`child`]), the loghub corpus and rate-limited writers
//! ([`corpus`]), an in-process collector and agent set-up ([`harness`]), the
//! rsyslog peer and its TCP sink ([`peer`]) and result blocks appended to
//! `bench/RESULTS.md` ([`report`]). Everything runs on loopback.
//!
//! Never does: run in CI (benchmarks are binaries run by hand, never timed tests;
//! the few unit tests here are fast and check only parsing and arithmetic), send
//! traffic anywhere but loopback, leave a process it started running, or touch the
//! system's rsyslog service (the peer runs with its own configuration and work
//! directory).

pub mod child;
pub mod corpus;
pub mod harness;
pub mod peer;
pub mod procfs;
pub mod report;
pub mod stats;

use std::path::PathBuf;

/// Options every benchmark binary takes.
#[derive(Clone, Debug, clap::Args)]
pub struct Common {
    /// Append the result block to this file.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/RESULTS.md"))]
    pub results: PathBuf,
    /// Print the result block only; do not append it to the results file.
    #[arg(long)]
    pub no_record: bool,
    /// Where temporary data (stores, spools, corpora) goes; a `vigie-bench-*` directory is created inside.
    #[arg(long, env = "VIGIE_BENCH_WORKDIR")]
    pub workdir: Option<PathBuf>,
    /// Directory of loghub `*.log` files the corpora are built from.
    #[arg(long, env = "VIGIE_LOGHUB", default_value = "/work/shared/data/loghub")]
    pub loghub: PathBuf,
    /// A note added to the result block (e.g. "reduced size").
    #[arg(long, default_value = "")]
    pub note: String,
}

impl Common {
    /// The base directory for temporary data.
    pub fn base_dir(&self) -> PathBuf {
        self.workdir.clone().unwrap_or_else(std::env::temp_dir)
    }

    /// A fresh temporary directory (removed on drop) under [`Common::base_dir`].
    pub fn tempdir(&self) -> anyhow::Result<tempfile::TempDir> {
        let base = self.base_dir();
        std::fs::create_dir_all(&base)?;
        Ok(tempfile::Builder::new()
            .prefix("vigie-bench-")
            .tempdir_in(base)?)
    }

    /// Where the results go, if they are recorded.
    pub fn results_path(&self) -> Option<&std::path::Path> {
        (!self.no_record).then_some(self.results.as_path())
    }
}

/// Quiet logs from the in-process collector unless `RUST_LOG` says otherwise.
pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,quinn=error".into()),
        )
        .with_writer(std::io::stderr)
        .try_init();
}

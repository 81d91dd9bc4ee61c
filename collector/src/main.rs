//! `vigie-collector`: runs the collector alone (the `vigie up` launcher runs it in-process).

use std::path::PathBuf;

use anyhow::Result;
use clap::Parser;
use vigie_collector::{Collector, CollectorConfig, load_config};

#[derive(Parser)]
#[command(
    name = "vigie-collector",
    version,
    about = "Vigie collector: receives, verifies and stores agent events"
)]
struct Args {
    /// Configuration file (TOML).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Data directory (overrides the configuration).
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let mut cfg = match &args.config {
        Some(p) => load_config(p)?,
        None => CollectorConfig::default(),
    };
    if let Some(d) = args.data_dir {
        cfg.data_dir = d;
    }
    let c = Collector::start(cfg).await?;
    println!(
        "collector: agents connect to UDP {}, management API on http://{}",
        c.ingest_addr, c.api_addr
    );
    tokio::signal::ctrl_c().await?;
    c.shutdown().await;
    Ok(())
}

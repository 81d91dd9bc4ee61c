//! `vigie-agent`: run, enroll, validate.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};
use vigie_agent::config::AgentConfig;

#[derive(Parser)]
#[command(
    name = "vigie-agent",
    version,
    about = "Vigie agent: collects this machine's events and ships them, signed, to the collector"
)]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the agent.
    Run {
        #[arg(long, short, default_value = "/etc/vigie/agent.toml")]
        config: PathBuf,
    },
    /// Enroll with a collector using a single-use token (from a file, or `-` for stdin).
    Enroll {
        #[arg(long)]
        token_file: PathBuf,
        #[arg(long, short, default_value = "/etc/vigie/agent.toml")]
        config: PathBuf,
    },
    /// Check a configuration file and print the effective configuration.
    Validate { config: PathBuf },
}

fn main() -> Result<()> {
    let args = Args::parse();
    match args.cmd {
        Cmd::Validate { config } => {
            let cfg = AgentConfig::load(&config)?;
            println!("{} is valid.\n{cfg:#?}", config.display());
            Ok(())
        }
        Cmd::Enroll { token_file, config } => {
            let cfg = if config.exists() {
                AgentConfig::load(&config)?
            } else {
                let mut c = AgentConfig::default();
                c.apply_env();
                c
            };
            let token = vigie_agent::read_token(&token_file)?;
            let rt = tokio::runtime::Runtime::new()?;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as i64)
                .unwrap_or(0);
            let e = rt.block_on(vigie_agent::enroll::enroll(
                &vigie_agent::state::Paths::new(&cfg.data_dir),
                &token,
                now,
            ))?;
            println!(
                "enrolled as agent {} with collector {}",
                e.agent_id,
                e.collectors.join(", ")
            );
            Ok(())
        }
        Cmd::Run { config } => {
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| "info,quinn=warn".into()),
                )
                .init();
            let cfg = AgentConfig::load(&config)?;
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(async {
                let agent = vigie_agent::Agent::start(cfg).await?;
                let mut term =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
                agent.shutdown().await;
                Ok(())
            })
        }
    }
}

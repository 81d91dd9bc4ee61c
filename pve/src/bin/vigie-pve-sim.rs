//! `vigie-pve-sim`: runs the Proxmox VE simulator until interrupted.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use vigie_pve::sim::{
    DEFAULT_PASSWORD, DEFAULT_TOKEN_ID, DEFAULT_TOKEN_SECRET, PveMode, Sim, SimConfig,
};

/// A simulated Proxmox VE cluster for tests and `vigie up --lab`.
#[derive(Debug, Parser)]
#[command(name = "vigie-pve-sim", version)]
struct Args {
    /// Address to listen on (the /_sim admin endpoints are unauthenticated: keep it on loopback).
    #[arg(long, default_value = "127.0.0.1:8006")]
    listen: SocketAddr,
    /// Number of cluster nodes (1 to 3).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(1..=3))]
    nodes: u8,
    /// Proxmox release to imitate: 8 or 9.
    #[arg(long, default_value_t = 9, value_parser = clap::value_parser!(u8).range(8..=9))]
    pve: u8,
    /// How long each task runs, in milliseconds.
    #[arg(long, default_value_t = 800)]
    task_ms: u64,
    /// Serve HTTPS with a self-signed certificate (its fingerprint is printed).
    #[arg(long)]
    tls: bool,
    /// Password of root@pam.
    #[arg(long, env = "VIGIE_PVE_SIM_PASSWORD", default_value = DEFAULT_PASSWORD)]
    password: String,
    /// API token as USER@REALM!TOKENID=SECRET (replaces the default token).
    #[arg(long, env = "VIGIE_PVE_SIM_TOKEN")]
    token: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let token = match &args.token {
        Some(t) => {
            let t: vigie_pve::ApiToken = t.parse().context("--token")?;
            (t.full_id(), t.secret.clone())
        }
        None => (
            DEFAULT_TOKEN_ID.to_string(),
            DEFAULT_TOKEN_SECRET.to_string(),
        ),
    };
    let cfg = SimConfig {
        listen: args.listen,
        nodes: usize::from(args.nodes),
        mode: if args.pve == 8 {
            PveMode::Pve8
        } else {
            PveMode::Pve9
        },
        task_duration: Duration::from_millis(args.task_ms),
        users: vec![("root@pam".to_string(), args.password.clone())],
        tokens: vec![token.clone()],
        tls: args.tls,
        ..SimConfig::default()
    };
    let sim = Sim::start(cfg).await.context("starting the simulator")?;
    println!("proxmox simulator: {}", sim.base_url());
    println!("  login:  root@pam / (password from --password)");
    println!(
        "  token:  {}=<secret from --token or the built-in default>",
        token.0
    );
    if let Some(fp) = sim.fingerprint() {
        println!("  tls fingerprint (sha-256): {fp}");
    }
    println!(
        "  admin:  GET/DELETE /_sim/requests, GET/POST /_sim/faults, GET /_sim/vms/VMID/agent"
    );
    tokio::signal::ctrl_c()
        .await
        .context("waiting for ctrl-c")?;
    sim.shutdown();
    Ok(())
}

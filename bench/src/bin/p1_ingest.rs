//! P1: collector ingest. An in-process collector (real QUIC + mutual TLS, real RocksDB in a
//! temporary directory, `sync = true`) and K simulated agents, enrolled through the real
//! QUIC path, sending pre-sealed batches of realistic events (loghub lines parsed by the
//! agent's own parsers, one host per agent, timestamps 1 ms apart) with several in flight.
//! Measures events/s end to end (verify + decompress + decode + commit + index), the
//! commit latency (the collector's `vigie_commit_seconds` histogram) and the ack latency
//! seen by the agents, CPU-seconds per thread group, and checks zero loss (store count ==
//! sent). `--verify-only` runs the collector in its verify-and-discard mode to separate
//! network + crypto + decode from storage.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use ed25519_dalek::SigningKey;
use tokio::sync::Semaphore;
use vigie_bench::harness::{BenchCollector, CollectorOpts};
use vigie_bench::procfs::{self, Cpu};
use vigie_bench::report::{Report, f, verdict};
use vigie_bench::stats::{self, median, percentile};
use vigie_bench::{Common, corpus};
use vigie_proto::batch::seal;
use vigie_proto::enroll::Bundle;
use vigie_proto::event::AgentInfo;
use vigie_proto::wire::{self, EnrollRequest, Hello, MsgType, Reply};
use vigie_proto::{AgentId, Epoch, Event, Seq, Timestamp};

#[derive(Parser)]
#[command(about = "P1: collector ingest throughput, commit latency and zero loss")]
struct Args {
    /// Simulated agents (one QUIC connection each).
    #[arg(long, default_value_t = 4)]
    agents: usize,
    /// Events per run, over all agents.
    #[arg(long, default_value_t = 2_000_000)]
    events: u64,
    /// Events per batch.
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Batches in flight per agent.
    #[arg(long, default_value_t = 4)]
    in_flight: usize,
    /// Runs (the median is reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Collector in verify-only mode: verify, decompress and decode, then discard.
    #[arg(long)]
    verify_only: bool,
    /// Turn off the fsync of every commit (the durability guarantee; only for comparison).
    #[arg(long)]
    no_sync: bool,
    /// Tokio worker threads of the collector.
    #[arg(long, default_value_t = 2)]
    collector_threads: usize,
    /// Tokio worker threads of the load generator.
    #[arg(long, default_value_t = 1)]
    loadgen_threads: usize,
    #[command(flatten)]
    common: Common,
}

struct SimAgent {
    id: AgentId,
    key: SigningKey,
    cert: Vec<u8>,
    tls_key: Vec<u8>,
    host: String,
}

struct Frame {
    bytes: Vec<u8>,
    end: u64,
}

fn now() -> Timestamp {
    Timestamp(chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0))
}

async fn connect(
    addr: std::net::SocketAddr,
    ca: &[u8],
    ident: Option<(Vec<u8>, Vec<u8>)>,
) -> Result<(quinn::Endpoint, quinn::Connection)> {
    let ep = vigie_net::client_endpoint(addr)?;
    let conn = ep
        .connect_with(
            vigie_net::client_config(ca, ident)?,
            addr,
            vigie_net::DEFAULT_SERVER_NAME,
        )?
        .await?;
    Ok((ep, conn))
}

async fn call(conn: &quinn::Connection, frame: &[u8]) -> Result<Reply> {
    let (ty, body) = vigie_net::request(conn, frame, Duration::from_secs(60)).await?;
    Ok(wire::decode_body::<Reply>(ty, &body)?)
}

/// Enrolls one simulated agent through the collector's unauthenticated QUIC path.
async fn enroll(
    addr: std::net::SocketAddr,
    ca: &[u8],
    bundle: &Bundle,
    host: String,
) -> Result<SimAgent> {
    let key = SigningKey::from_bytes(&rand::random::<[u8; 32]>());
    let (tls_key, spki) = vigie_net::generate_tls_key()?;
    let (_ep, conn) = connect(addr, ca, None).await?;
    let req = EnrollRequest {
        token_id: bundle.token_id,
        token_secret: bundle.secret,
        tls_public_key: spki,
        identity_key: key.verifying_key().to_bytes(),
        hostname: host.clone(),
        machine_id: format!("machine-{host}"),
    };
    match call(&conn, &wire::encode_msg(MsgType::Enroll, &req)?).await? {
        Reply::Enrolled {
            agent_id,
            client_cert_der,
            ..
        } => Ok(SimAgent {
            id: agent_id,
            key,
            cert: client_cert_der,
            tls_key,
            host,
        }),
        other => bail!("enrollment refused: {other:?}"),
    }
}

/// Seals `n` events for one agent, in batches chained from the zero hash, epoch 1.
fn seal_agent(
    a: &SimAgent,
    templates: &[Event],
    start: usize,
    n: u64,
    batch: usize,
) -> Result<Vec<Frame>> {
    let base = now().0 - n as i64 * 1_000_000;
    let (mut prev, mut seq, mut k) = ([0u8; 32], 0u64, start);
    let mut out = Vec::with_capacity((n as usize).div_ceil(batch));
    while seq < n {
        let m = (batch as u64).min(n - seq);
        let evs: Vec<Event> = (0..m)
            .map(|j| {
                let mut e = templates[k % templates.len()].clone();
                k += 1;
                e.timestamp = Timestamp(base + (seq + j) as i64 * 1_000_000);
                e.host.name = a.host.clone();
                e.host.id = format!("machine-{}", a.host);
                e.agent = Some(AgentInfo {
                    id: String::new(),
                    version: "bench".into(),
                });
                e
            })
            .collect();
        let (frame, hash) = seal(&a.key, a.id, Epoch(1), Seq(seq), now(), prev, &evs, 1)?;
        out.push(Frame {
            bytes: wire::frame(MsgType::Batch, &frame),
            end: seq + m,
        });
        prev = hash;
        seq += m;
    }
    Ok(out)
}

/// Sends one batch until it is acknowledged; returns the latency and how many times the
/// collector answered `Resend` (the batch overtook its predecessor).
async fn send_one(conn: &quinn::Connection, fr: &Frame) -> Result<(f64, u64)> {
    let t = Instant::now();
    let mut resends = 0u64;
    loop {
        match call(conn, &fr.bytes).await? {
            Reply::Ack { stored_end, .. } if stored_end.0 >= fr.end => {
                return Ok((t.elapsed().as_secs_f64(), resends));
            }
            Reply::Resend { .. } => {
                resends += 1;
                if resends > 100_000 {
                    bail!("batch ending at {} never accepted", fr.end);
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            other => bail!("unexpected reply to batch ending at {}: {other:?}", fr.end),
        }
    }
}

async fn send_all(
    conn: quinn::Connection,
    frames: Vec<Frame>,
    in_flight: usize,
) -> Result<(Vec<f64>, u64)> {
    let sem = Arc::new(Semaphore::new(in_flight.max(1)));
    let mut set = tokio::task::JoinSet::new();
    for fr in frames {
        let permit = sem.clone().acquire_owned().await?;
        let conn = conn.clone();
        set.spawn(async move {
            let r = send_one(&conn, &fr).await;
            drop(permit);
            r
        });
    }
    let (mut lat, mut resends) = (Vec::new(), 0);
    while let Some(r) = set.join_next().await {
        let (l, n) = r??;
        lat.push(l);
        resends += n;
    }
    Ok((lat, resends))
}

fn group(comm: &str) -> &'static str {
    if comm.starts_with("collector") {
        "collector-rt"
    } else if comm.starts_with("vigie-writer") {
        "writer"
    } else if comm.starts_with("vigie-sealer") {
        "sealer"
    } else if comm.starts_with("rocksdb") {
        "rocksdb"
    } else if comm.starts_with("loadgen") {
        "loadgen"
    } else {
        "other"
    }
}

struct RunResult {
    events: u64,
    wall: f64,
    eps: f64,
    proc_cpu: Cpu,
    groups: std::collections::BTreeMap<String, Cpu>,
    commit_p50: Option<f64>,
    commit_p99: Option<f64>,
    commits: f64,
    ack_p50: f64,
    ack_p99: f64,
    resends: u64,
    wire_bytes: f64,
    counted: u64,
}

fn run_once(args: &Args, templates: &[Event], run: usize) -> Result<RunResult> {
    let tmp = args.common.tempdir()?;
    let col = BenchCollector::start(
        &tmp.path().join("collector"),
        &CollectorOpts {
            verify_only: args.verify_only,
            sync: !args.no_sync,
            worker_threads: args.collector_threads,
            thread_name: "collector",
        },
    )?;
    let lg = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.loadgen_threads.max(1))
        .thread_name("loadgen")
        .thread_keep_alive(Duration::from_secs(3600))
        .enable_all()
        .build()?;
    let addr = col.ingest_addr()?;
    let ca = col.ca_der()?;
    let k = args.agents.max(1);
    let mut bundles = Vec::with_capacity(k);
    for _ in 0..k {
        bundles.push(Bundle::decode(&col.token()?).map_err(|e| anyhow::anyhow!(e))?);
    }
    let agents: Vec<SimAgent> = lg.block_on(async {
        let mut v = Vec::new();
        for (i, b) in bundles.iter().enumerate() {
            v.push(enroll(addr, &ca, b, format!("node-{run}-{i:03}")).await?);
        }
        Ok::<_, anyhow::Error>(v)
    })?;

    // Seal everything before the clock starts (the agents' CPU is not the subject here).
    let per = args.events / k as u64;
    let counts: Vec<u64> = (0..k)
        .map(|i| per + u64::from(i == 0) * (args.events - per * k as u64))
        .collect();
    let frames: Vec<Vec<Frame>> = std::thread::scope(|s| {
        let hs: Vec<_> = agents
            .iter()
            .zip(&counts)
            .enumerate()
            .map(|(i, (a, &n))| s.spawn(move || seal_agent(a, templates, i * 7919, n, args.batch)))
            .collect();
        hs.into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| anyhow::anyhow!("sealing thread panicked"))?
            })
            .collect::<Result<Vec<_>>>()
    })?;
    let sent: u64 = counts.iter().sum();

    // Connect with the agents' certificates and say hello.
    let conns: Vec<(quinn::Endpoint, quinn::Connection)> = lg.block_on(async {
        let mut v = Vec::new();
        for (a, &n) in agents.iter().zip(&counts) {
            let (ep, conn) = connect(addr, &ca, Some((a.cert.clone(), a.tls_key.clone()))).await?;
            let hello = Hello {
                epoch: Epoch(1),
                next_seq: Seq(n),
                agent_version: "bench".into(),
                hostname: a.host.clone(),
                machine_id: format!("machine-{}", a.host),
            };
            match call(&conn, &wire::encode_msg(MsgType::Hello, &hello)?).await? {
                Reply::Welcome { stored_end, .. } if stored_end.0 == 0 => {}
                other => bail!("unexpected answer to hello: {other:?}"),
            }
            v.push((ep, conn));
        }
        Ok::<_, anyhow::Error>(v)
    })?;

    let m0 = col.metrics_text()?;
    let cpu0 = procfs::cpu(None)?;
    let g0 = procfs::thread_cpu_by_group(group)?;
    let t0 = Instant::now();
    let results = lg.block_on(async {
        let mut set = tokio::task::JoinSet::new();
        for ((_, conn), fr) in conns.iter().zip(frames) {
            set.spawn(send_all(conn.clone(), fr, args.in_flight));
        }
        let mut all = Vec::new();
        while let Some(r) = set.join_next().await {
            all.push(r??);
        }
        Ok::<_, anyhow::Error>(all)
    })?;
    let wall = t0.elapsed().as_secs_f64();
    let cpu1 = procfs::cpu(None)?;
    let g1 = procfs::thread_cpu_by_group(group)?;
    let m1 = col.metrics_text()?;

    let lat: Vec<f64> = results
        .iter()
        .flat_map(|(l, _)| l.iter().copied())
        .collect();
    let resends = results.iter().map(|(_, r)| r).sum();
    let counted = if args.verify_only {
        col.events_verified()?
    } else {
        col.store_events()?
    };
    let h0 = stats::parse_histogram(&m0, "vigie_commit_seconds");
    let h1 = stats::parse_histogram(&m1, "vigie_commit_seconds");
    let metric = |t: &str, n: &str| stats::parse_metric(t, n).unwrap_or(0.0);
    lg.block_on(async {
        for (ep, conn) in &conns {
            conn.close(0u32.into(), b"done");
            ep.wait_idle().await;
        }
    });
    drop(conns);
    col.shutdown();
    drop(lg);
    Ok(RunResult {
        events: sent,
        wall,
        eps: sent as f64 / wall,
        proc_cpu: cpu1.since(&cpu0),
        groups: procfs::group_delta(&g1, &g0),
        commit_p50: stats::histogram_percentile(&h1, &h0, 50.0),
        commit_p99: stats::histogram_percentile(&h1, &h0, 99.0),
        commits: metric(&m1, "vigie_commit_seconds_count")
            - metric(&m0, "vigie_commit_seconds_count"),
        ack_p50: percentile(&lat, 50.0),
        ack_p99: percentile(&lat, 99.0),
        resends,
        wire_bytes: metric(&m1, "vigie_received_bytes_total")
            - metric(&m0, "vigie_received_bytes_total"),
        counted,
    })
}

fn main() -> Result<()> {
    vigie_bench::init_logs();
    let args = Args::parse();
    if args.batch == 0 || args.events == 0 || args.runs == 0 {
        bail!("--batch, --events and --runs must be positive");
    }
    let lines = corpus::load_lines(&args.common.loghub)?;
    let templates = corpus::event_templates(&lines);
    let mode = if args.verify_only {
        "verify-only (verify + decompress + decode, then discard)"
    } else if args.no_sync {
        "store, sync OFF"
    } else {
        "store, sync on (fsync per group commit)"
    };
    eprintln!(
        "P1: {} events per run, {} agents, batches of {}, {} in flight each, {mode}",
        args.events, args.agents, args.batch, args.in_flight
    );
    let mut report = Report::new(&format!(
        "P1 collector ingest{}",
        if args.verify_only {
            " (--verify-only)"
        } else {
            ""
        }
    ));
    report.line(format!(
        "- setup: in-process collector ({mode}, {} tokio workers), {} simulated agents enrolled over QUIC, {} events per run in pre-sealed batches of {} (zstd 1, ed25519), {} in flight per agent; events from {} loghub lines parsed like the file source; no detection rules yet",
        args.collector_threads,
        args.agents,
        args.events,
        args.batch,
        args.in_flight,
        lines.len()
    ));
    report.line("");
    report.line("| run | events | wall s | events/s | process CPU s | collector CPU s (runtime / writer / sealer / rocksdb) | loadgen CPU s | commits | commit p50 / p99 ms (histogram bucket) | ack p50 / p99 ms | resends | counted == sent |");
    report.line("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    let mut eps = Vec::new();
    let mut p99s = Vec::new();
    let mut ack99 = Vec::new();
    let mut col_cpu_per_m = Vec::new();
    let mut all_ok = true;
    let mut wire = String::new();
    for run in 0..args.runs {
        let r = run_once(&args, &templates, run)?;
        let g = |k: &str| r.groups.get(k).map(|c| c.total()).unwrap_or(0.0);
        let col_cpu = g("collector-rt") + g("writer") + g("sealer") + g("rocksdb");
        let ok = r.counted == r.events;
        all_ok &= ok;
        let ms = |x: Option<f64>| {
            x.map(|v| {
                if v.is_infinite() {
                    ">1000".to_string()
                } else {
                    f(v * 1e3, 0)
                }
            })
            .unwrap_or_else(|| "-".into())
        };
        let row = format!(
            "| {} | {} | {} | {} | {} | {} ({} / {} / {} / {}) | {} | {} | {} / {} | {} / {} | {} | {} ({}) |",
            run + 1,
            r.events,
            f(r.wall, 2),
            f(r.eps, 0),
            f(r.proc_cpu.total(), 2),
            f(col_cpu, 2),
            f(g("collector-rt"), 2),
            f(g("writer"), 2),
            f(g("sealer"), 2),
            f(g("rocksdb"), 2),
            f(g("loadgen"), 2),
            r.commits,
            ms(r.commit_p50),
            ms(r.commit_p99),
            f(r.ack_p50 * 1e3, 1),
            f(r.ack_p99 * 1e3, 1),
            r.resends,
            if ok { "yes" } else { "NO" },
            r.counted
        );
        eprintln!("{row}");
        report.line(row);
        eps.push(r.eps);
        if let Some(p) = r.commit_p99 {
            p99s.push(p);
        }
        ack99.push(r.ack_p99);
        col_cpu_per_m.push(col_cpu / (r.events as f64 / 1e6));
        if run == 0 {
            wire = format!(
                "- wire: {} MiB per run, {} bytes per event (compressed, signed, framed)",
                f(r.wire_bytes / 1048576.0, 1),
                f(r.wire_bytes / r.events as f64, 1)
            );
        }
    }
    report.line("");
    report.line(wire);
    let med = median(&eps);
    let mem = procfs::mem(None).context("memory")?;
    report.line(format!(
        "- **median {} events/s** over {} runs; goal ≥ 200,000 events/s on 2 cores: {}{}",
        f(med, 0),
        args.runs,
        verdict(med >= 200_000.0),
        if args.verify_only {
            " (verify-only: no storage)"
        } else {
            ""
        }
    ));
    if !args.verify_only {
        let p = median(&p99s);
        report.line(format!(
            "- commit p99 (median of runs, upper bound of the histogram bucket): {} ms; goal ≤ 50 ms: {}",
            if p.is_infinite() {
                ">1000".into()
            } else {
                f(p * 1e3, 0)
            },
            verdict(p <= 0.05)
        ));
    }
    report.line(format!(
        "- ack latency p99 seen by the agents (median of runs, includes queueing behind {} in flight per agent): {} ms",
        args.in_flight,
        f(median(&ack99) * 1e3, 1)
    ));
    report.line(format!(
        "- collector CPU-seconds per million events (median): {}",
        f(median(&col_cpu_per_m), 2)
    ));
    report.line(format!(
        "- zero loss (count == sent in every run): {}",
        if all_ok { "yes" } else { "NO" }
    ));
    report.line(format!(
        "- benchmark process RSS: max {} MiB (collector + load generator + pre-sealed batches)",
        f(mem.hwm_mib(), 0)
    ));
    report.finish(args.common.results_path(), &args.common.note)?;
    if !all_ok {
        bail!("events were lost: the count differs from what was sent");
    }
    Ok(())
}

//! P5: agent shipping throughput. A collector in verify-only mode runs in this process;
//! the real agent (`vigie agent run`, a separate process so its CPU can be measured)
//! tails a pre-written file of real log lines from its beginning (tail → parse → spool →
//! batch → zstd → sign → QUIC). Measured: MiB/s of raw lines from the agent's start until
//! the collector has verified every line (`vigie_events_verified_total`). Peer, run
//! alternately on the same file: rsyslog (`imfile` → `omfwd` TCP, standard forwarding
//! format) into a TCP sink in this process, until the sink has every line.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use clap::Parser;
use vigie_bench::child::Proc;
use vigie_bench::harness::{self, AgentSpec, BenchCollector, CollectorOpts};
use vigie_bench::peer::{self, TcpSink};
use vigie_bench::procfs::{self, Mem};
use vigie_bench::report::{Report, f, verdict};
use vigie_bench::stats::median;
use vigie_bench::{Common, corpus};

#[derive(Parser)]
#[command(about = "P5: agent shipping throughput into a verify-only collector, beside rsyslog")]
struct Args {
    /// Size of the pre-written file, MiB.
    #[arg(long, default_value_t = 1024)]
    size_mib: u64,
    /// Runs per tool (alternating; the median is reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// The `vigie` binary (default: next to this one).
    #[arg(long)]
    vigie: Option<PathBuf>,
    /// The `rsyslogd` binary (default: /usr/sbin/rsyslogd).
    #[arg(long)]
    rsyslogd: Option<PathBuf>,
    /// Skip the rsyslog peer.
    #[arg(long)]
    no_peer: bool,
    /// Give up on a run after this many seconds.
    #[arg(long, default_value_t = 900)]
    timeout_secs: u64,
    /// Extra TOML for the agent's configuration, e.g. "[shipper]\nmax_in_flight = 8".
    #[arg(long, default_value = "")]
    agent_toml: String,
    #[command(flatten)]
    common: Common,
}

struct Run {
    wall: f64,
    mibps: f64,
    cpu: f64,
    mem: Mem,
    other_cpu: f64,
}

fn run_vigie(args: &Args, vigie: &std::path::Path, c: &corpus::Corpus) -> Result<Run> {
    let tmp = args.common.tempdir()?;
    let col = BenchCollector::start(
        &tmp.path().join("collector"),
        &CollectorOpts {
            verify_only: true,
            sync: false,
            ..Default::default()
        },
    )?;
    let spec = AgentSpec {
        dir: tmp.path().join("agent"),
        collector_port: col.ingest_addr()?.port(),
        file: c.path.clone(),
        read_from_beginning: true,
        metrics: false,
        // One health report ~2 s after start, then none during the run.
        health_interval: "24h".into(),
        extra: args.agent_toml.replace("\\n", "\n"),
    };
    let config = harness::enroll_agent(vigie, &spec, &col)?;
    let v0 = col.events_verified()?;
    let cpu0 = procfs::cpu(None)?;
    let t0 = Instant::now();
    let mut agent = harness::spawn_agent(vigie, &config, &spec.dir.join("agent.log"))?;
    let deadline = t0 + Duration::from_secs(args.timeout_secs);
    let mut last_report = Instant::now();
    let (wall, cpu, mem) = loop {
        let n = col.events_verified()? - v0;
        if n >= c.lines {
            let wall = t0.elapsed().as_secs_f64();
            break (wall, agent.cpu()?.total(), agent.mem()?);
        }
        agent.check_alive()?;
        if Instant::now() > deadline {
            bail!(
                "agent run timed out: {n} of {} lines verified after {}s",
                c.lines,
                args.timeout_secs
            );
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            eprintln!(
                "  vigie: {n} / {} lines after {:.0}s",
                c.lines,
                t0.elapsed().as_secs_f64()
            );
            last_report = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let other_cpu = procfs::cpu(None)?.since(&cpu0).total();
    drop(agent);
    col.shutdown();
    Ok(Run {
        wall,
        mibps: c.bytes as f64 / 1048576.0 / wall,
        cpu,
        mem,
        other_cpu,
    })
}

fn run_rsyslog(args: &Args, rsyslogd: &std::path::Path, c: &corpus::Corpus) -> Result<Run> {
    let tmp = args.common.tempdir()?;
    let sink = TcpSink::start()?;
    let cpu0 = procfs::cpu(None)?;
    let t0 = Instant::now();
    let mut rs = peer::spawn_rsyslog(rsyslogd, tmp.path(), &c.path, sink.addr)?;
    let deadline = t0 + Duration::from_secs(args.timeout_secs);
    let mut last_report = Instant::now();
    let (wall, cpu, mem) = loop {
        if sink.lines() >= c.lines {
            let wall = t0.elapsed().as_secs_f64();
            break (wall, rs.cpu()?.total(), rs.mem()?);
        }
        rs.check_alive()?;
        if Instant::now() > deadline {
            bail!(
                "rsyslog run timed out: {} of {} lines received after {}s",
                sink.lines(),
                c.lines,
                args.timeout_secs
            );
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            eprintln!(
                "  rsyslog: {} / {} lines after {:.0}s",
                sink.lines(),
                c.lines,
                t0.elapsed().as_secs_f64()
            );
            last_report = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let other_cpu = procfs::cpu(None)?.since(&cpu0).total();
    drop::<Proc>(rs);
    Ok(Run {
        wall,
        mibps: c.bytes as f64 / 1048576.0 / wall,
        cpu,
        mem,
        other_cpu,
    })
}

fn main() -> Result<()> {
    vigie_bench::init_logs();
    let args = Args::parse();
    if args.runs == 0 || args.size_mib == 0 {
        bail!("--runs and --size-mib must be positive");
    }
    let vigie = harness::vigie_binary(args.vigie.as_deref())?;
    let rsyslogd = if args.no_peer {
        None
    } else {
        Some(peer::rsyslogd(args.rsyslogd.as_deref())?)
    };
    let lines = corpus::load_lines(&args.common.loghub)?;
    let corpus_dir = args.common.base_dir().join("vigie-bench-corpus");
    eprintln!(
        "P5: building or reusing a {} MiB corpus in {}",
        args.size_mib,
        corpus_dir.display()
    );
    let c = corpus::build_corpus(&corpus_dir, &lines, args.size_mib << 20)?;
    // Read it once so both tools start from the page cache.
    let _ = std::io::copy(&mut std::fs::File::open(&c.path)?, &mut std::io::sink())?;

    let mut report = Report::new("P5 agent shipping throughput");
    report.line(format!(
        "- setup: {} MiB file ({} lines of loghub, {} distinct, repeated in shuffled order), read from its beginning. vigie: `vigie agent run` (separate process: file source, syslog parsing, spool with fsync, batches of up to 5,000 events / 2 MiB, zstd 1, ed25519, QUIC, 4 in flight) into an in-process collector in verify-only mode; timed from the agent's start until the collector has verified every line. Peer: {} with its own config (imfile inotify → omfwd TCP, RSYSLOG_ForwardFormat) into a TCP sink in this process; timed from its start until the sink has every line. Runs alternate.",
        args.size_mib,
        c.lines,
        lines.len(),
        rsyslogd
            .as_deref()
            .map(peer::rsyslog_version)
            .unwrap_or_else(|| "not run".into())
    ));
    if !args.agent_toml.is_empty() {
        report.line(format!(
            "- agent extra configuration: `{}`",
            args.agent_toml
        ));
    }
    report.line("");
    report.line("| run | tool | wall s | MiB/s | CPU s | CPU s per GiB | max RSS MiB | receiver CPU s (collector / sink) |");
    report.line("| --- | --- | --- | --- | --- | --- | --- | --- |");
    let gib = c.bytes as f64 / 1073741824.0;
    let (mut v_rates, mut r_rates, mut v_cpu, mut r_cpu, mut v_rss, mut r_rss) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    let row = |run: usize, tool: &str, r: &Run| {
        format!(
            "| {} | {tool} | {} | {} | {} | {} | {} | {} |",
            run + 1,
            f(r.wall, 2),
            f(r.mibps, 1),
            f(r.cpu, 2),
            f(r.cpu / gib, 2),
            f(r.mem.hwm_mib(), 1),
            f(r.other_cpu, 2)
        )
    };
    for run in 0..args.runs {
        eprintln!("run {}: vigie", run + 1);
        let v = run_vigie(&args, &vigie, &c)?;
        let l = row(run, "vigie agent", &v);
        eprintln!("{l}");
        report.line(l);
        v_rates.push(v.mibps);
        v_cpu.push(v.cpu / gib);
        v_rss.push(v.mem.hwm_mib());
        if let Some(rs) = &rsyslogd {
            eprintln!("run {}: rsyslog", run + 1);
            let r = run_rsyslog(&args, rs, &c)?;
            let l = row(run, "rsyslog", &r);
            eprintln!("{l}");
            report.line(l);
            r_rates.push(r.mibps);
            r_cpu.push(r.cpu / gib);
            r_rss.push(r.mem.hwm_mib());
        }
    }
    report.line("");
    let vm = median(&v_rates);
    report.line(format!(
        "- **vigie agent: median {} MiB/s**, {} CPU-seconds per GiB, max RSS {} MiB; goal ≥ 150 MiB/s on 2 cores: {}",
        f(vm, 1),
        f(median(&v_cpu), 2),
        f(median(&v_rss), 1),
        verdict(vm >= 150.0)
    ));
    if rsyslogd.is_some() {
        let rm = median(&r_rates);
        report.line(format!(
            "- rsyslog: median {} MiB/s, {} CPU-seconds per GiB, max RSS {} MiB",
            f(rm, 1),
            f(median(&r_cpu), 2),
            f(median(&r_rss), 1)
        ));
        report.line(format!(
            "- **ratio vigie / rsyslog: {}x** (medians); goal ≥ 2x: {}; CPU per GiB ratio vigie / rsyslog: {}",
            f(vm / rm, 2),
            verdict(vm / rm >= 2.0),
            f(median(&v_cpu) / median(&r_cpu), 2)
        ));
    }
    report.finish(args.common.results_path(), &args.common.note)
}

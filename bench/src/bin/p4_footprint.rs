//! P4: agent footprint at a steady 1,000 lines/s. A writer in this process appends real
//! log lines to a file at a fixed rate; the real agent (`vigie agent run`, a separate
//! process, with the host-metrics source on by default) tails it and ships to an
//! in-process collector in its normal mode (stored, synced). rsyslog tails the same file
//! at the same time and forwards it over TCP to a sink in this process. Measured over the
//! writer's window (after a warm-up): CPU-seconds of each process / wall seconds (as % of
//! one core), their max RSS (VmHWM), and that every line arrived.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use clap::Parser;
use vigie_bench::child::Proc;
use vigie_bench::harness::{self, AgentSpec, BenchCollector, CollectorOpts};
use vigie_bench::peer::{self, TcpSink};
use vigie_bench::procfs::{Cpu, Mem};
use vigie_bench::report::{Report, f, verdict};
use vigie_bench::stats::median;
use vigie_bench::{Common, corpus};

#[derive(Parser)]
#[command(about = "P4: agent CPU and RSS at a steady line rate, beside rsyslog")]
struct Args {
    /// Lines per second appended to the watched file.
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Seconds of writing (the measurement window) per run.
    #[arg(long, default_value_t = 60)]
    duration_secs: u64,
    /// Seconds between the start of the processes and the start of the window.
    #[arg(long, default_value_t = 5)]
    warmup_secs: u64,
    /// Runs (the median is reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Turn off the agent's host-metrics source (on by default: a real agent runs it).
    #[arg(long)]
    no_metrics: bool,
    #[arg(long)]
    vigie: Option<PathBuf>,
    #[arg(long)]
    rsyslogd: Option<PathBuf>,
    /// Skip the rsyslog peer.
    #[arg(long)]
    no_peer: bool,
    #[command(flatten)]
    common: Common,
}

struct Side {
    cpu: Cpu,
    mem: Mem,
    delivered: u64,
}

struct Run {
    wall: f64,
    written: u64,
    agent: Side,
    rsyslog: Option<Side>,
}

fn run_once(
    args: &Args,
    vigie: &std::path::Path,
    rsyslogd: Option<&std::path::Path>,
    lines: &Arc<Vec<corpus::Line>>,
) -> Result<Run> {
    let tmp = args.common.tempdir()?;
    let col = BenchCollector::start(&tmp.path().join("collector"), &CollectorOpts::default())?;
    let file = tmp.path().join("app.log");
    std::fs::write(&file, b"")?;
    let spec = AgentSpec {
        dir: tmp.path().join("agent"),
        collector_port: col.ingest_addr()?.port(),
        file: file.clone(),
        read_from_beginning: true,
        metrics: !args.no_metrics,
        health_interval: "60s".into(),
        extra: String::new(),
    };
    let config = harness::enroll_agent(vigie, &spec, &col)?;
    let mut agent = harness::spawn_agent(vigie, &config, &spec.dir.join("agent.log"))?;
    let sink = TcpSink::start()?;
    let mut rs: Option<Proc> = match rsyslogd {
        Some(r) => {
            let w = tmp.path().join("rsyslog");
            std::fs::create_dir_all(&w)?;
            Some(peer::spawn_rsyslog(r, &w, &file, sink.addr)?)
        }
        None => None,
    };
    std::thread::sleep(Duration::from_secs(args.warmup_secs));
    agent.check_alive()?;
    if let Some(r) = rs.as_mut() {
        r.check_alive()?;
    }
    let a0 = agent.cpu()?;
    let r0 = rs.as_ref().map(|r| r.cpu()).transpose()?;
    let writer = corpus::RateWriter::start(
        &file,
        lines.clone(),
        args.rate,
        Duration::from_secs(args.duration_secs),
    )?;
    let t0 = Instant::now();
    while !writer.is_finished() {
        std::thread::sleep(Duration::from_millis(200));
        agent.check_alive()?;
    }
    let w = writer.join()?;
    let wall = t0.elapsed().as_secs_f64();
    let a1 = agent.cpu()?;
    let r1 = rs.as_ref().map(|r| r.cpu()).transpose()?;
    let amem = agent.mem()?;
    let rmem = rs.as_ref().map(|r| r.mem()).transpose()?;

    // Everything must arrive (not part of the window).
    let delivered =
        harness::wait_until(Duration::from_secs(60), Duration::from_millis(250), || {
            let n = col.count("event.module:file")?;
            Ok((n >= w.lines).then_some(n))
        })
        .unwrap_or_else(|_| col.count("event.module:file").unwrap_or(0));
    let rs_delivered = if rs.is_some() {
        harness::wait_until(Duration::from_secs(60), Duration::from_millis(100), || {
            Ok((sink.lines() >= w.lines).then_some(sink.lines()))
        })
        .unwrap_or_else(|_| sink.lines())
    } else {
        0
    };
    drop(agent);
    drop(rs.take());
    col.shutdown();
    Ok(Run {
        wall,
        written: w.lines,
        agent: Side {
            cpu: a1.since(&a0),
            mem: amem,
            delivered,
        },
        rsyslog: match (r0, r1, rmem) {
            (Some(r0), Some(r1), Some(m)) => Some(Side {
                cpu: r1.since(&r0),
                mem: m,
                delivered: rs_delivered,
            }),
            _ => None,
        },
    })
}

fn main() -> Result<()> {
    vigie_bench::init_logs();
    let args = Args::parse();
    if args.runs == 0 || args.rate == 0 || args.duration_secs == 0 {
        bail!("--runs, --rate and --duration-secs must be positive");
    }
    let vigie = harness::vigie_binary(args.vigie.as_deref())?;
    let rsyslogd = if args.no_peer {
        None
    } else {
        Some(peer::rsyslogd(args.rsyslogd.as_deref())?)
    };
    let lines = Arc::new(corpus::load_lines(&args.common.loghub)?);
    let mut report = Report::new("P4 agent footprint");
    report.line(format!(
        "- setup: {} lines/s of loghub lines appended to one file for {} s per run (after {} s warm-up). vigie: `vigie agent run` (file source, default 250 ms poll; host metrics every 10 s: {}) shipping to an in-process collector (stored, synced). Peer on the same file at the same time: {} (imfile inotify → omfwd TCP) into a TCP sink. CPU over the writing window from /proc/PID/stat; max RSS = VmHWM.",
        args.rate,
        args.duration_secs,
        args.warmup_secs,
        if args.no_metrics { "off" } else { "on" },
        rsyslogd
            .as_deref()
            .map(peer::rsyslog_version)
            .unwrap_or_else(|| "not run".into())
    ));
    report.line("");
    report.line("| run | wall s | lines | vigie CPU s (user/sys) | vigie % of a core | vigie max RSS MiB | vigie delivered | rsyslog CPU s (user/sys) | rsyslog % of a core | rsyslog max RSS MiB | rsyslog delivered | CPU ratio vigie / rsyslog |");
    report.line("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    let (mut vp, mut vr, mut rp, mut rr, mut ratio) = (vec![], vec![], vec![], vec![], vec![]);
    let mut all_delivered = true;
    for run in 0..args.runs {
        eprintln!(
            "run {} ({} s)",
            run + 1,
            args.warmup_secs + args.duration_secs
        );
        let r = run_once(&args, &vigie, rsyslogd.as_deref(), &lines)?;
        let vpct = r.agent.cpu.total() / r.wall * 100.0;
        vp.push(vpct);
        vr.push(r.agent.mem.hwm_mib());
        all_delivered &= r.agent.delivered == r.written;
        let mut row = format!(
            "| {} | {} | {} | {} ({}/{}) | {} | {} | {} |",
            run + 1,
            f(r.wall, 1),
            r.written,
            f(r.agent.cpu.total(), 2),
            f(r.agent.cpu.user, 2),
            f(r.agent.cpu.system, 2),
            f(vpct, 2),
            f(r.agent.mem.hwm_mib(), 1),
            r.agent.delivered
        );
        match &r.rsyslog {
            Some(s) => {
                let rpct = s.cpu.total() / r.wall * 100.0;
                rp.push(rpct);
                rr.push(s.mem.hwm_mib());
                ratio.push(r.agent.cpu.total() / s.cpu.total());
                all_delivered &= s.delivered == r.written;
                row.push_str(&format!(
                    " {} ({}/{}) | {} | {} | {} | {} |",
                    f(s.cpu.total(), 2),
                    f(s.cpu.user, 2),
                    f(s.cpu.system, 2),
                    f(rpct, 2),
                    f(s.mem.hwm_mib(), 1),
                    s.delivered,
                    f(r.agent.cpu.total() / s.cpu.total(), 2)
                ));
            }
            None => row.push_str(" - | - | - | - | - |"),
        }
        eprintln!("{row}");
        report.line(row);
    }
    report.line("");
    let (v, m) = (median(&vp), median(&vr));
    report.line(format!(
        "- **vigie agent: {} % of one core, max RSS {} MiB ({} MB)** (medians); goals ≤ 1 %: {}, ≤ 25 MB RSS: {}",
        f(v, 2),
        f(m, 1),
        f(m * 1.048576, 1),
        verdict(v <= 1.0),
        verdict(m * 1048576.0 <= 25e6)
    ));
    if rsyslogd.is_some() {
        let q = median(&ratio);
        report.line(format!(
            "- rsyslog: {} % of one core, max RSS {} MiB (medians); **CPU ratio vigie / rsyslog {}** (median of per-run ratios); goal ≤ 1/3: {}",
            f(median(&rp), 2),
            f(median(&rr), 1),
            f(q, 2),
            verdict(q <= 1.0 / 3.0)
        ));
    }
    report.line(format!(
        "- every line delivered by every tool in every run: {}",
        if all_delivered { "yes" } else { "NO" }
    ));
    report.finish(args.common.results_path(), &args.common.note)
}

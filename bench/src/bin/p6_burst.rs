//! P6: burst absorption. A writer in this process appends real log lines at 50,000
//! lines/s for 60 s (configurable) to a file the real agent (`vigie agent run`, a separate
//! process) tails, shipping to an in-process collector in its normal mode (stored,
//! synced). Measured: whether anything was dropped (the agent's own health report, and the
//! stored count of file events == lines written), the agent's max RSS (VmHWM), its
//! CPU-seconds, the largest backlog, and how long after the burst the backlog drained.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use clap::Parser;
use vigie_bench::harness::{self, AgentSpec, BenchCollector, CollectorOpts};
use vigie_bench::procfs::Mem;
use vigie_bench::report::{Report, f, verdict};
use vigie_bench::stats::median;
use vigie_bench::{Common, corpus};

#[derive(Parser)]
#[command(about = "P6: burst absorption: no drop, bounded RSS, drain time")]
struct Args {
    /// Lines per second during the burst.
    #[arg(long, default_value_t = 50_000)]
    rate: u64,
    /// Seconds of burst.
    #[arg(long, default_value_t = 60)]
    duration_secs: u64,
    /// Runs (the median is reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Give up waiting for the backlog after this many seconds.
    #[arg(long, default_value_t = 900)]
    drain_timeout_secs: u64,
    /// Extra TOML for the agent's configuration, e.g. "[spool]\nmax_bytes = \"256MiB\"".
    #[arg(long, default_value = "")]
    agent_toml: String,
    #[arg(long)]
    vigie: Option<PathBuf>,
    #[command(flatten)]
    common: Common,
}

struct Run {
    written: u64,
    burst_wall: f64,
    writer_behind: u64,
    stored: u64,
    drain: Option<f64>,
    max_backlog: u64,
    mem: Mem,
    cpu: f64,
    dropped: Option<u64>,
}

fn run_once(args: &Args, vigie: &std::path::Path, lines: &Arc<Vec<corpus::Line>>) -> Result<Run> {
    let tmp = args.common.tempdir()?;
    let col = BenchCollector::start(&tmp.path().join("collector"), &CollectorOpts::default())?;
    let file = tmp.path().join("burst.log");
    std::fs::write(&file, b"")?;
    let spec = AgentSpec {
        dir: tmp.path().join("agent"),
        collector_port: col.ingest_addr()?.port(),
        file: file.clone(),
        read_from_beginning: true,
        metrics: false,
        health_interval: "5s".into(),
        extra: args.agent_toml.replace("\\n", "\n"),
    };
    let config = harness::enroll_agent(vigie, &spec, &col)?;
    let mut agent = harness::spawn_agent(vigie, &config, &spec.dir.join("agent.log"))?;
    std::thread::sleep(Duration::from_secs(3));
    agent.check_alive()?;
    let stored0 = col.events_stored()?;
    let writer = corpus::RateWriter::start(
        &file,
        lines.clone(),
        args.rate,
        Duration::from_secs(args.duration_secs),
    )?;
    // Backlog = lines written - events stored (the latter also counts a few health events).
    let mut max_backlog = 0u64;
    while !writer.is_finished() {
        std::thread::sleep(Duration::from_millis(250));
        agent.check_alive()?;
        let stored = col.events_stored()?.saturating_sub(stored0);
        max_backlog = max_backlog.max(writer.written().saturating_sub(stored));
    }
    let w = writer.join()?;
    let burst_wall = (w.ended - w.started).as_secs_f64();
    eprintln!(
        "  burst done: {} lines in {:.1} s; waiting for the backlog",
        w.lines, burst_wall
    );
    let deadline = w.ended + Duration::from_secs(args.drain_timeout_secs);
    let mut last_report = Instant::now();
    let (drain, stored) = loop {
        let cheap = col.events_stored()?.saturating_sub(stored0);
        max_backlog = max_backlog.max(w.lines.saturating_sub(cheap));
        if cheap >= w.lines {
            let n = col.count("event.module:file")?;
            if n >= w.lines {
                break (Some(w.ended.elapsed().as_secs_f64()), n);
            }
        }
        if Instant::now() > deadline {
            break (None, col.count("event.module:file")?);
        }
        if agent.check_alive().is_err() {
            break (None, col.count("event.module:file")?);
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            eprintln!(
                "  backlog: {} lines after {:.0} s",
                w.lines.saturating_sub(cheap),
                w.ended.elapsed().as_secs_f64()
            );
            last_report = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mem = agent.mem()?;
    let cpu = agent.cpu()?.total();
    // The agent's own account of drops: a health report sent after the backlog drained.
    let after = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0);
    let dropped = harness::wait_until(Duration::from_secs(15), Duration::from_millis(500), || {
        let Some(e) = col.newest("event.module:agent AND event.action:health")? else {
            return Ok(None);
        };
        let ts = e["@timestamp"]
            .as_str()
            .and_then(|s| vigie_proto::Timestamp::parse_rfc3339(s).ok())
            .map(|t| t.0)
            .unwrap_or(0);
        Ok((ts >= after).then(|| e["vigie"]["health"]["dropped_events"].as_u64().unwrap_or(0)))
    })
    .ok();
    drop(agent);
    col.shutdown();
    Ok(Run {
        written: w.lines,
        burst_wall,
        writer_behind: w.max_behind,
        stored,
        drain,
        max_backlog,
        mem,
        cpu,
        dropped,
    })
}

fn main() -> Result<()> {
    vigie_bench::init_logs();
    let args = Args::parse();
    if args.runs == 0 || args.rate == 0 || args.duration_secs == 0 {
        bail!("--runs, --rate and --duration-secs must be positive");
    }
    let vigie = harness::vigie_binary(args.vigie.as_deref())?;
    let lines = Arc::new(corpus::load_lines(&args.common.loghub)?);
    let mut report = Report::new("P6 burst absorption");
    report.line(format!(
        "- setup: {} lines/s of loghub lines appended to one file for {} s per run; `vigie agent run` (file source, spool defaults) ships to an in-process collector (stored, synced). Drain = time from the end of the burst until the store holds every line; backlog = lines written − events stored, sampled every 250 ms.",
        args.rate, args.duration_secs
    ));
    if !args.agent_toml.is_empty() {
        report.line(format!(
            "- agent extra configuration: `{}`",
            args.agent_toml
        ));
    }
    report.line("");
    report.line("| run | lines written | burst s | writer max behind (lines) | stored file events | dropped (agent health) | max backlog (lines) | drain s | agent max RSS MiB | agent CPU s |");
    report.line("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    let (mut rss, mut drains) = (vec![], vec![]);
    let mut no_drop = true;
    for run in 0..args.runs {
        eprintln!("run {} ({} s burst)", run + 1, args.duration_secs);
        let r = run_once(&args, &vigie, &lines)?;
        let exact = r.stored == r.written;
        no_drop &= exact && r.dropped == Some(0);
        rss.push(r.mem.hwm_mib());
        drains.push(r.drain.unwrap_or(f64::NAN));
        let row = format!(
            "| {} | {} | {} | {} | {} ({}) | {} | {} | {} | {} | {} |",
            run + 1,
            r.written,
            f(r.burst_wall, 1),
            r.writer_behind,
            r.stored,
            if exact { "exact" } else { "DIFFERS" },
            r.dropped
                .map(|d| d.to_string())
                .unwrap_or_else(|| "no report".into()),
            r.max_backlog,
            r.drain
                .map(|d| f(d, 1))
                .unwrap_or_else(|| "not drained".into()),
            f(r.mem.hwm_mib(), 1),
            f(r.cpu, 1)
        );
        eprintln!("{row}");
        report.line(row);
    }
    report.line("");
    let m = median(&rss);
    report.line(format!(
        "- **no drop, exact count in every run: {}**; **agent max RSS {} MiB ({} MB)** (median); goal ≤ 64 MB: {}",
        if no_drop { "yes" } else { "NO" },
        f(m, 1),
        f(m * 1.048576, 1),
        verdict(m * 1048576.0 <= 64e6)
    ));
    report.line(format!(
        "- backlog drained {} s after the burst (median; NaN = a run did not drain)",
        f(median(&drains), 1)
    ));
    report.finish(args.common.results_path(), &args.common.note)
}

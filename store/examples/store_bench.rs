//! Store benchmark: ingest N events built from loghub lines through `commit` in
//! batches of 1,000, then time searches and histograms and report the bytes on
//! disk per raw message byte (targets P1 store share, P8, P9).
//!
//! ```text
//! cargo run --release -p vigie-store --example store_bench -- [N] [sync] [options]
//! ```
//!
//! N defaults to 1,000,000. With `sync`, every commit fsyncs the WAL (as the
//! collector does; it groups several agent batches per commit). Environment:
//! `INGEST_ONLY=1` stops after ingest, `NOSEAL=1` turns inline sealing off (the
//! final flush seals), `SLOW=1` prints the slowest commits.
//!
//! Options, for running a peer engine on the same events and queries
//! (`bench/peers/README.md`):
//!
//! - `--dump FILE` also writes every generated event, in ingest order, to FILE as
//!   NDJSON (one `Event::to_json()` per line). Serializing and writing happen in
//!   the event-building time, which the store's ingest rate leaves out (the
//!   process CPU figure includes them).
//! - `--print-queries` prints the query list and time ranges as tab-separated
//!   text (the format of `bench/peers/queries.tsv`) and exits.
//! - `--per-query` adds, after each group's line, one `per-query` line per query:
//!   tab-separated group, bucket seconds (0 for searches), median ms, p95 ms,
//!   runs, count (searches: exact total; histograms: sum of bucket counts),
//!   events returned (searches) or buckets (histograms), then the query. It also
//!   prints the size of every file in the store's directory after ingest (the
//!   `storage:` line counts live SST files and the WAL).
//! - `--runs R` runs each query R times (default 5), round-robin over its group.
//!
//! Events are built as the agent's parsers would: fields (pid, user, source IP
//! and port) come from the line itself; 50 hosts; timestamps spread over 24 h.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use vigie_proto::event::{Endpoint, Event, Log, LogFile, Process, User};
use vigie_proto::{AgentId, Epoch, Kind, Seq, Severity, Timestamp};
use vigie_store::{CommitBatch, Query, SearchRequest, Store, StoreConfig};

const DAY_NS: i64 = 86_400_000_000_000;
const T0: i64 = 1_772_323_200_000_000_000; // 2026-03-01T00:00:00Z

/// Searches (count + newest 100) by group, in the order they run.
const SEARCHES: &[(&str, &[&str])] = &[
    (
        "term",
        &[
            "failed",
            "session",
            "error",
            "invalid",
            "connection",
            "root",
            "closed",
            "kernel",
        ],
    ),
    (
        "phrase",
        &[
            "\"authentication failure\"",
            "\"failed password\"",
            "\"session opened\"",
            "\"invalid user\"",
            "\"mod_jk child\"",
        ],
    ),
    (
        "field",
        &[
            "host.name:host-7",
            "user.name:root",
            "log.level:error",
            "source.port>30000",
            "process.name:sshd AND user.name:admin",
        ],
    ),
    ("wildcard", &["fail*", "host.name:host-1*", "user.name:ro*"]),
];

/// 24 h histograms by group: bucket seconds and queries.
const HISTOGRAMS: &[(&str, u64, &[&str])] = &[
    (
        "counters",
        60,
        &[
            "",
            "host.name:host-3",
            "log.level:error",
            "event.dataset:authentication AND NOT host.name:host-1",
        ],
    ),
    ("index", 300, &["failed", "\"invalid user\""]),
];

/// Searches cover `[T0 - 1 day, T0 + 2 days)`; histograms `[T0, T0 + 1 day)`.
const SEARCH_RANGE: (i64, i64) = (T0 - DAY_NS, T0 + 2 * DAY_NS);
const HIST_RANGE: (i64, i64) = (T0, T0 + DAY_NS);

/// The query list in the format of `bench/peers/queries.tsv`.
fn print_queries() {
    println!(
        "# Written by `store_bench --print-queries`; the queries are in Vigie's query language."
    );
    println!(
        "# search_range_ns\t{}\t{}\n# histogram_range_ns\t{}\t{}",
        SEARCH_RANGE.0, SEARCH_RANGE.1, HIST_RANGE.0, HIST_RANGE.1
    );
    println!("# group\tbucket_secs (0: count + newest 100)\tquery");
    for (group, queries) in SEARCHES {
        for q in *queries {
            println!("{group}\t0\t{q}");
        }
    }
    for (group, secs, queries) in HISTOGRAMS {
        for q in *queries {
            println!("{group}\t{secs}\t{q}");
        }
    }
}

/// Bytes of every file under `dir`.
fn dir_bytes(dir: &Path) -> std::io::Result<u64> {
    let mut total = 0;
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let m = e.metadata()?;
        total += if m.is_dir() {
            dir_bytes(&e.path())?
        } else {
            m.len()
        };
    }
    Ok(total)
}

/// One `--per-query` line.
fn per_query_line(group: &str, secs: u64, q: &str, ms: &mut [f64], count: u64, returned: usize) {
    let runs = ms.len();
    println!(
        "per-query\t{group}\t{secs}\t{:.3}\t{:.3}\t{runs}\t{count}\t{returned}\t{q}",
        pct(&mut ms.to_vec(), 0.5),
        pct(ms, 0.95)
    );
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn cpu_secs() -> f64 {
    // utime + stime from /proc/self/stat, in clock ticks (100 per second on Linux).
    let s = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = s.rsplit_once(')').map(|x| x.1).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let t = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (t(11) + t(12)) / 100.0
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return 0.0;
    }
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn lines() -> Vec<(String, String)> {
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/loghub");
    let mut out = Vec::new();
    for f in ["Linux_2k.log", "OpenSSH_2k.log", "Apache_2k.log"] {
        let text = std::fs::read_to_string(base.join(f)).unwrap_or_default();
        out.extend(
            text.lines()
                .filter(|l| !l.is_empty())
                .map(|l| (f.to_string(), l.to_string())),
        );
    }
    out
}

/// The word after `marker` in `line`.
fn after<'a>(line: &'a str, marker: &str) -> Option<&'a str> {
    let rest = &line[line.find(marker)? + marker.len()..];
    let end = rest
        .find(|c: char| c.is_whitespace() || c == ']' || c == ';')
        .unwrap_or(rest.len());
    Some(&rest[..end]).filter(|w| !w.is_empty())
}

/// An event as the agent's parsers would produce it from `line` (fields taken from the line).
fn event(file: &str, line: &str, ts: i64, host: usize, rng: &mut Rng) -> Event {
    let kind = if line.contains("sshd") {
        Kind::Authentication
    } else {
        Kind::Log
    };
    let mut e = Event::new(kind, Timestamp(ts));
    e.set_message(line);
    e.event.module = "file".into();
    e.host.name = format!("host-{host}");
    let level = if line.contains("error") || line.contains("failure") || line.contains("Failed") {
        Severity::Error
    } else {
        [Severity::Info, Severity::Notice, Severity::Warning][rng.below(3)]
    };
    e.log = Some(Log {
        level,
        logger: if kind == Kind::Authentication {
            "sshd".into()
        } else {
            String::new()
        },
        file: Some(LogFile {
            path: format!("/var/log/{file}"),
            offset: None,
        }),
        ..Default::default()
    });
    let pid = line
        .find('[')
        .and_then(|i| line[i + 1..].split(']').next())
        .and_then(|p| p.parse::<u32>().ok());
    if let Some(pid) = pid {
        let name = line[..line.find('[').unwrap_or(0)]
            .rsplit(' ')
            .next()
            .unwrap_or("")
            .to_string();
        e.process = Some(Process {
            pid: Some(pid),
            name,
            ..Default::default()
        });
    }
    if let Some(u) = after(line, "user ").or_else(|| after(line, "for ")) {
        e.user = Some(User {
            name: u.to_string(),
            ..Default::default()
        });
    }
    let ip = after(line, "from ")
        .or_else(|| after(line, "rhost="))
        .and_then(|w| w.parse().ok());
    if ip.is_some() {
        e.source = Some(Endpoint {
            ip,
            port: after(line, "port ").and_then(|p| p.parse().ok()),
            address: String::new(),
        });
    }
    e
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args
        .get(1)
        .and_then(|a| a.replace('_', "").parse().ok())
        .unwrap_or(1_000_000);
    let sync = args.iter().any(|a| a == "sync");
    let value_of = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
    };
    if args.iter().any(|a| a == "--print-queries") {
        print_queries();
        return Ok(());
    }
    let per_query = args.iter().any(|a| a == "--per-query");
    let rounds: usize = match value_of("--runs") {
        Some(r) => r
            .parse()
            .map_err(|_| format!("--runs takes a number, got {r:?}"))?,
        None => 5,
    };
    let mut dump = match value_of("--dump") {
        Some(p) => Some(std::io::BufWriter::with_capacity(
            1 << 20,
            std::fs::File::create(PathBuf::from(p))?,
        )),
        None => None,
    };
    let dir = tempfile::tempdir()?;
    let cfg = StoreConfig {
        sync,
        inline_seal: std::env::var_os("NOSEAL").is_none(),
        ..Default::default()
    };
    let store = Store::open(dir.path(), cfg)?;
    let src = lines();
    let hosts = 50;
    let agents: Vec<(AgentId, Epoch)> = (0..hosts)
        .map(|h| (AgentId([h as u8 + 1; 16]), Epoch(h as u64 + 7)))
        .collect();
    let mut next = vec![(0u64, [0u8; 32]); hosts];
    let mut rng = Rng(0x5eed_1234);
    let step = DAY_NS / n as i64;
    println!(
        "ingesting {n} events from {} loghub lines, 50 hosts, batches of 1,000, sync={sync}",
        src.len()
    );

    // --- ingest ------------------------------------------------------------
    let mut raw_bytes = 0u64;
    let mut commit_ms = Vec::new();
    let mut build_time = Duration::ZERO;
    let (t_ingest, c_ingest) = (Instant::now(), cpu_secs());
    let mut i = 0usize;
    let mut batch_no = 0u64;
    while i < n {
        let tb = Instant::now();
        let h = (batch_no as usize) % hosts;
        let count = 1000.min(n - i);
        let events: Vec<Event> = (0..count)
            .map(|k| {
                let (f, l) = &src[(i + k) % src.len()];
                raw_bytes += l.len() as u64;
                event(f, l, T0 + (i + k) as i64 * step, h, &mut rng)
            })
            .collect();
        if let Some(w) = dump.as_mut() {
            for e in &events {
                w.write_all(e.to_json().as_bytes())?;
                w.write_all(b"\n")?;
            }
        }
        let (first, prev) = next[h];
        let mut hash = [0u8; 32];
        hash[..8].copy_from_slice(&(batch_no + 1).to_le_bytes());
        let b = CommitBatch {
            agent: agents[h].0,
            epoch: agents[h].1,
            first_seq: Seq(first),
            prev_hash: prev,
            hash,
            events,
        };
        build_time += tb.elapsed();
        let t = Instant::now();
        store.commit(vec![b])?;
        commit_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        next[h] = (first + count as u64, hash);
        i += count;
        batch_no += 1;
    }
    if std::env::var_os("SLOW").is_some() {
        let mut idx: Vec<(usize, f64)> = commit_ms.iter().copied().enumerate().collect();
        idx.sort_by(|a, b| b.1.total_cmp(&a.1));
        println!("slowest commits: {:?}", &idx[..8.min(idx.len())]);
    }
    if let Some(mut w) = dump.take() {
        let tb = Instant::now();
        w.flush()?;
        build_time += tb.elapsed();
    }
    let t = Instant::now();
    store.flush()?;
    let flush_s = t.elapsed().as_secs_f64();
    let wall = t_ingest.elapsed().as_secs_f64() - build_time.as_secs_f64();
    let cpu = cpu_secs() - c_ingest;
    println!(
        "ingest: {:.0} events/s wall (store only, incl. final flush {:.2}s), {:.2} us/event; process CPU {:.1}s incl. event building ({:.1}s wall)",
        n as f64 / wall,
        flush_s,
        wall * 1e6 / n as f64,
        cpu,
        build_time.as_secs_f64()
    );
    println!(
        "commit latency per 1,000-event batch: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        pct(&mut commit_ms.clone(), 0.5),
        pct(&mut commit_ms.clone(), 0.99),
        pct(&mut commit_ms, 1.0)
    );
    let st = store.stats();
    let disk = store.disk_usage()?;
    let detail: Vec<String> = store
        .disk_usage_detail()?
        .into_iter()
        .filter(|(_, v)| *v > 0)
        .map(|(k, v)| format!("{k} {:.1}", v as f64 / 1048576.0))
        .collect();
    println!("disk by column family (MiB): {}", detail.join(", "));
    println!(
        "storage: {} events in {} blocks; raw messages {:.1} MiB; disk {:.1} MiB = {:.3} bytes per raw byte (blocks {:.1} MiB)",
        st.events,
        st.blocks,
        raw_bytes as f64 / 1048576.0,
        disk as f64 / 1048576.0,
        disk as f64 / raw_bytes as f64,
        st.block_bytes as f64 / 1048576.0
    );

    if per_query {
        let all = dir_bytes(dir.path())?;
        println!(
            "store directory: every file {:.1} MiB = {:.3} bytes per raw byte",
            all as f64 / 1048576.0,
            all as f64 / raw_bytes as f64
        );
    }

    if std::env::var_os("INGEST_ONLY").is_some() {
        return Ok(());
    }

    // --- queries -----------------------------------------------------------
    let (from, to) = (Timestamp(SEARCH_RANGE.0), Timestamp(SEARCH_RANGE.1));
    let run = |name: &str, queries: &[&str]| -> Result<(), Box<dyn std::error::Error>> {
        let mut ms = Vec::new();
        let mut per = vec![(Vec::new(), 0u64, 0usize); queries.len()];
        let mut totals = Vec::new();
        let mut decoded = 0;
        for round in 0..rounds {
            for (qi, q) in queries.iter().enumerate() {
                let query = Query::parse(q)?;
                let t = Instant::now();
                let r = store.search(&SearchRequest {
                    query,
                    from,
                    to,
                    limit: 100,
                    before: None,
                    count: true,
                })?;
                let elapsed = t.elapsed().as_secs_f64() * 1000.0;
                ms.push(elapsed);
                per[qi].0.push(elapsed);
                decoded += r.stats.events_decoded;
                if round == 0 {
                    totals.push(format!("{q}={}", r.total.unwrap_or(0)));
                    per[qi].1 = r.total.unwrap_or(0);
                    per[qi].2 = r.events.len();
                }
            }
        }
        println!(
            "{name:<9} count + newest 100: median {:.1} ms, p95 {:.1} ms ({} runs, {:.0} events decoded/run) [{}]",
            pct(&mut ms.clone(), 0.5),
            pct(&mut ms, 0.95),
            queries.len() * rounds,
            decoded as f64 / (queries.len() * rounds) as f64,
            totals.join(", ")
        );
        if per_query {
            for (q, (mut ms, total, returned)) in queries.iter().zip(per) {
                per_query_line(name, 0, q, &mut ms, total, returned);
            }
        }
        Ok(())
    };
    for (name, queries) in SEARCHES {
        run(name, queries)?;
    }

    let hist = |name: &str,
                queries: &[&str],
                bucket: Duration|
     -> Result<(), Box<dyn std::error::Error>> {
        let mut ms = Vec::new();
        let mut per = vec![(Vec::new(), 0u64, 0usize); queries.len()];
        for round in 0..rounds {
            for (qi, q) in queries.iter().enumerate() {
                let query = Query::parse(q)?;
                let t = Instant::now();
                let h = store.histogram(
                    &query,
                    Timestamp(HIST_RANGE.0),
                    Timestamp(HIST_RANGE.1),
                    bucket,
                )?;
                let elapsed = t.elapsed().as_secs_f64() * 1000.0;
                ms.push(elapsed);
                per[qi].0.push(elapsed);
                if round == 0 {
                    per[qi].1 = h.iter().map(|b| b.count).sum();
                    per[qi].2 = h.len();
                }
                std::hint::black_box(h);
            }
        }
        println!(
            "{name:<9} 24 h histogram: median {:.1} ms, p95 {:.1} ms ({} runs)",
            pct(&mut ms.clone(), 0.5),
            pct(&mut ms, 0.95),
            queries.len() * rounds
        );
        if per_query {
            for (q, (mut ms, total, buckets)) in queries.iter().zip(per) {
                per_query_line(name, bucket.as_secs(), q, &mut ms, total, buckets);
            }
        }
        Ok(())
    };
    for (name, secs, queries) in HISTOGRAMS {
        hist(name, queries, Duration::from_secs(*secs))?;
    }
    Ok(())
}

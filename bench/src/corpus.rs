//! Real log lines: the loghub samples (read at run time), corpora built by repeating
//! them, realistic events made from them with the agent's own parsers, and a writer
//! that appends lines to a file at a fixed rate.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use vigie_agent::parse::auth::enrich_auth;
use vigie_agent::parse::syslog::{TimeCtx, parse_file_line};
use vigie_agent::parse::time::SourceTz;
use vigie_proto::event::{Event, Kind, Log, LogFile, Timestamp};

/// One line of a loghub file and the file it came from (its stem, e.g. `OpenSSH_2k`).
#[derive(Clone, Debug)]
pub struct Line {
    pub source: String,
    pub text: String,
}

/// Every non-empty line of every `*.log` file in `dir`, in file then line order.
pub fn load_lines(dir: &Path) -> Result<Vec<Line>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read the loghub directory {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read(&f).with_context(|| format!("cannot read {}", f.display()))?;
        let text = String::from_utf8_lossy(&text);
        let source = f
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        for l in text.lines() {
            let l = l.trim_end_matches('\r');
            if !l.trim().is_empty() {
                out.push(Line {
                    source: source.clone(),
                    text: l.to_string(),
                });
            }
        }
    }
    if out.is_empty() {
        bail!("no log lines found in {}/*.log", dir.display());
    }
    Ok(out)
}

/// A corpus file: its path, size and number of lines.
#[derive(Clone, Debug)]
pub struct Corpus {
    pub path: PathBuf,
    pub bytes: u64,
    pub lines: u64,
}

/// Writes (or reuses, if already built with the same size) a file of at least
/// `target_bytes` made of the loghub lines repeated, each repetition in a different
/// (seeded) order so the file has no short period.
pub fn build_corpus(dir: &Path, lines: &[Line], target_bytes: u64) -> Result<Corpus> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("corpus-{target_bytes}.log"));
    let meta = dir.join(format!("corpus-{target_bytes}.lines"));
    if let (Ok(m), Ok(n)) = (std::fs::metadata(&path), std::fs::read_to_string(&meta))
        && let Ok(n) = n.trim().parse::<u64>()
        && m.len() >= target_bytes
    {
        return Ok(Corpus {
            path,
            bytes: m.len(),
            lines: n,
        });
    }
    let mut w = BufWriter::with_capacity(1 << 20, File::create(&path)?);
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
    let mut order: Vec<usize> = (0..lines.len()).collect();
    let (mut bytes, mut n) = (0u64, 0u64);
    while bytes < target_bytes {
        order.shuffle(&mut rng);
        for &i in &order {
            let t = &lines[i].text;
            w.write_all(t.as_bytes())?;
            w.write_all(b"\n")?;
            bytes += t.len() as u64 + 1;
            n += 1;
            if bytes >= target_bytes {
                break;
            }
        }
    }
    w.flush()?;
    drop(w);
    std::fs::write(&meta, n.to_string())?;
    Ok(Corpus {
        path,
        bytes,
        lines: n,
    })
}

/// One event per line, made exactly as the agent's file source makes them (syslog
/// layout parsed, authentication lines enriched), with `log.file.path`
/// `/var/log/{source}.log`. Timestamps and hosts are set by the caller.
pub fn event_templates(lines: &[Line]) -> Vec<Event> {
    let tc = TimeCtx {
        now: chrono::Utc::now(),
        tz: SourceTz::UTC,
    };
    let mut offsets: std::collections::HashMap<&str, u64> = Default::default();
    lines
        .iter()
        .map(|l| {
            let off = offsets.entry(l.source.as_str()).or_insert(0);
            let mut ev = Event::new(Kind::Log, Timestamp(0));
            ev.event.module = "file".into();
            ev.log = Some(Log {
                file: Some(LogFile {
                    path: format!("/var/log/{}.log", l.source),
                    offset: Some(*off),
                }),
                ..Default::default()
            });
            *off += l.text.len() as u64 + 1;
            if let Some(m) = parse_file_line(&l.text, &tc) {
                m.apply_to(&mut ev);
            }
            ev.set_message(l.text.clone());
            enrich_auth(&mut ev);
            ev
        })
        .collect()
}

/// What a [`RateWriter`] wrote.
#[derive(Clone, Copy, Debug)]
pub struct Written {
    pub lines: u64,
    pub bytes: u64,
    pub started: Instant,
    pub ended: Instant,
    /// Largest shortfall behind the schedule seen at a tick, in lines.
    pub max_behind: u64,
}

/// Appends lines to a file at a fixed rate from its own thread, in 10 ms ticks (one
/// `write` per tick), for a fixed duration.
pub struct RateWriter {
    handle: Option<std::thread::JoinHandle<Result<Written>>>,
    stop: Arc<AtomicBool>,
    written: Arc<AtomicU64>,
}

impl std::fmt::Debug for RateWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RateWriter({} lines)", self.written.load(Relaxed))
    }
}

impl RateWriter {
    pub fn start(
        path: &Path,
        lines: Arc<Vec<Line>>,
        rate: u64,
        duration: Duration,
    ) -> Result<RateWriter> {
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        let stop = Arc::new(AtomicBool::new(false));
        let written = Arc::new(AtomicU64::new(0));
        let (stop2, written2) = (stop.clone(), written.clone());
        let total = (rate as f64 * duration.as_secs_f64()).round() as u64;
        let handle = std::thread::Builder::new()
            .name("bench-writer".into())
            .spawn(move || -> Result<Written> {
                let tick = Duration::from_millis(10);
                let started = Instant::now();
                let (mut n, mut bytes, mut max_behind) = (0u64, 0u64, 0u64);
                let mut buf = Vec::with_capacity(1 << 20);
                let mut next = started;
                while n < total && !stop2.load(Relaxed) {
                    let due = ((started.elapsed().as_secs_f64() * rate as f64) as u64).min(total);
                    if due > n {
                        max_behind = max_behind.max(due - n);
                        buf.clear();
                        while n < due {
                            let l = &lines[(n % lines.len() as u64) as usize];
                            buf.extend_from_slice(l.text.as_bytes());
                            buf.push(b'\n');
                            n += 1;
                        }
                        f.write_all(&buf)?;
                        bytes += buf.len() as u64;
                        written2.store(n, Relaxed);
                    }
                    next += tick;
                    let now = Instant::now();
                    if next > now {
                        std::thread::sleep(next - now);
                    } else {
                        next = now;
                    }
                }
                Ok(Written {
                    lines: n,
                    bytes,
                    started,
                    ended: Instant::now(),
                    max_behind,
                })
            })?;
        Ok(RateWriter {
            handle: Some(handle),
            stop,
            written,
        })
    }

    /// Lines written so far.
    pub fn written(&self) -> u64 {
        self.written.load(Relaxed)
    }

    pub fn is_finished(&self) -> bool {
        self.handle.as_ref().is_none_or(|h| h.is_finished())
    }

    /// Waits for the writer to finish its schedule.
    pub fn join(mut self) -> Result<Written> {
        match self.handle.take() {
            Some(h) => h
                .join()
                .map_err(|_| anyhow::anyhow!("the writer thread panicked"))?,
            None => bail!("writer already joined"),
        }
    }
}

impl Drop for RateWriter {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

//! Tails text log files.
//!
//! Files are found by globs (`paths`, minus `exclude`), re-expanded every `glob_interval`,
//! and polled every `poll_interval`. A file is identified by `(dev, inode)` plus a
//! fingerprint of its first bytes (up to 1 KiB), which guards against inode reuse across
//! restarts. Every file keeps its own open handle until it is closed, so:
//!
//! - **rotation by rename**: the renamed file is no longer matched (or is matched under its
//!   new name); it is read to its end, then kept open until it has been idle for
//!   `close_inactive` (writers finish with it), then closed. The new file at the path is a
//!   new identity, read from its beginning. Within a poll the older file is read first.
//! - **copytruncate / truncation**: a size below the read position, or a first-bytes
//!   fingerprint that changed, restarts the file at offset 0 (logged).
//! - **deleted files**: read to their end through the open handle, then closed.
//! - **partial last lines** wait for their newline; after `partial_line_timeout` without
//!   growth (or when a rotated file is closed) they are emitted with `labels.log.partial`.
//! - **long lines**: the first `max_line_bytes` are emitted with `event.truncated`, the rest
//!   is skipped up to the next newline; memory per file stays bounded.
//! - bytes that are not UTF-8 are replaced (lossy).
//!
//! Each line becomes a `Kind::Log` event, module `file`, with `log.file.path`,
//! `log.file.offset` (of the line's first byte) and the line as `message`. Lines in the
//! rsyslog file layouts (`Mar  1 10:00:00 host prog[pid]: msg`, or an RFC 3339 timestamp)
//! get their timestamp (zone-less ones in `timezone`), `log.syslog.*`, `log.logger` and
//! `process.pid`; other lines are stamped with the read time. Authentication lines become
//! `Kind::Authentication` ([`crate::parse::auth`]).
//!
//! Checkpoints, one per file: key `{source}:{dev}:{ino}`, value JSON
//! `{"path":…,"dev":…,"ino":…,"fingerprint":"len:hash","offset":…}` (plus `"skipping":true`
//! inside an over-long line). The offset sits after the last line handed over in the same
//! emit, so a restart resumes exactly there. At start, a checkpointed file is found again by
//! `(dev, ino)` among the glob matches, or — if it was rotated away while the agent was
//! stopped — in its old directory, and read to its end. A file seen at the first scan with
//! no checkpoint starts at `read_from`; files that appear later, or whose fingerprint no
//! longer matches, start at 0. Closed files get an empty checkpoint value (forget the key).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::os::unix::fs::{DirEntryExt, FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use vigie_proto::event::{Event, Kind, Log, LogFile, Timestamp, truncate_for_log};

use super::{Checkpoint, Emit, SourceCtx, de_duration, de_size};
use crate::parse::auth::enrich_auth;
use crate::parse::syslog::{TimeCtx, parse_file_line};
use crate::parse::time::SourceTz;

/// Where to start in a file seen at the first scan that has no checkpoint.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadFrom {
    Beginning,
    #[default]
    End,
}

/// `[[file]]` input.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileConfig {
    /// Name of the input, unique among file inputs; checkpoints are kept under it. Default `files`.
    pub name: String,
    /// Paths or globs (`/var/log/*.log`).
    pub paths: Vec<String>,
    /// Globs of paths to leave out (`/var/log/*.gz`).
    pub exclude: Vec<String>,
    /// For files present at the first scan without a checkpoint: `"end"` (default) or
    /// `"beginning"`. Files that appear later are always read from their beginning.
    pub read_from: ReadFrom,
    /// How often files are checked for new data. Default `250ms`.
    #[serde(deserialize_with = "de_duration")]
    pub poll_interval: Duration,
    /// How often the globs are expanded again to find new files. Default `2s`.
    #[serde(deserialize_with = "de_duration")]
    pub glob_interval: Duration,
    /// An unterminated last line is emitted after this long without growth. Default `5s`.
    #[serde(deserialize_with = "de_duration")]
    pub partial_line_timeout: Duration,
    /// A rotated or deleted file is closed after this long without growth. Default `5s`.
    #[serde(deserialize_with = "de_duration")]
    pub close_inactive: Duration,
    /// Longest line kept; the rest is dropped and the event flagged `truncated`. Default `64KiB`.
    #[serde(deserialize_with = "de_size")]
    pub max_line_bytes: usize,
    /// Most files followed at once. Default 1024.
    pub max_files: usize,
    /// Zone of timestamps without one (`Mar  1 10:00:00`): `local` (default), `UTC`,
    /// `+02:00`, `Europe/Paris`.
    pub timezone: SourceTz,
    /// Parse lines in the syslog file layouts. Default true.
    pub syslog_format: bool,
    /// Turn sshd/sudo/su/login/PAM lines into authentication events. Default true.
    pub auth: bool,
}

impl Default for FileConfig {
    fn default() -> Self {
        FileConfig {
            name: "files".into(),
            paths: Vec::new(),
            exclude: Vec::new(),
            read_from: ReadFrom::End,
            poll_interval: Duration::from_millis(250),
            glob_interval: Duration::from_secs(2),
            partial_line_timeout: Duration::from_secs(5),
            close_inactive: Duration::from_secs(5),
            max_line_bytes: 64 << 10,
            max_files: 1024,
            timezone: SourceTz::Local,
            syslog_format: true,
            auth: true,
        }
    }
}

impl FileConfig {
    /// Checks the values; errors name the field and the fix.
    pub fn validate(&self) -> anyhow::Result<()> {
        let n = &self.name;
        if n.is_empty() {
            bail!("file input has an empty name; set name = \"…\" (checkpoints are kept under it)");
        }
        if self.paths.is_empty() {
            bail!(
                "file input {n:?}: paths is empty; list at least one path or glob, e.g. [\"/var/log/*.log\"]"
            );
        }
        for p in self.paths.iter().chain(&self.exclude) {
            glob::Pattern::new(p)
                .map_err(|e| anyhow::anyhow!("file input {n:?}: invalid glob {p:?}: {e}"))?;
            if !p.starts_with('/') {
                bail!(
                    "file input {n:?}: {p:?} is relative; write an absolute path such as /var/log/*.log"
                );
            }
        }
        if !(Duration::from_millis(10)..=Duration::from_secs(60)).contains(&self.poll_interval) {
            bail!("file input {n:?}: poll_interval must be between 10ms and 60s");
        }
        if self.glob_interval < self.poll_interval {
            bail!("file input {n:?}: glob_interval must be at least poll_interval");
        }
        if !(256..=(1 << 20)).contains(&self.max_line_bytes) {
            bail!("file input {n:?}: max_line_bytes must be between 256 and 1MiB");
        }
        if !(1..=65536).contains(&self.max_files) {
            bail!("file input {n:?}: max_files must be between 1 and 65536");
        }
        Ok(())
    }
}

/// Runs the input until shutdown.
pub async fn run(cfg: FileConfig, ctx: SourceCtx) -> anyhow::Result<()> {
    cfg.validate()?;
    let poll = cfg.poll_interval;
    let mut tailer = Tailer::new(cfg, &ctx)?;
    loop {
        if ctx.is_shutdown() {
            return Ok(());
        }
        let (t, out) = tokio::task::spawn_blocking(move || {
            let out = tailer.poll(Instant::now(), chrono::Utc::now());
            (tailer, out)
        })
        .await
        .context("file tailer task failed")?;
        tailer = t;
        for emit in out.emits {
            if !ctx.send(emit).await {
                return Ok(());
            }
        }
        if !out.more && !ctx.sleep(poll).await {
            return Ok(());
        }
    }
}

/// Bytes read from one file per poll, so that one busy file cannot starve the others.
const READ_BUDGET: u64 = 1 << 20;
const CHUNK: usize = 64 << 10;
/// An emit is cut after this many events or bytes of messages.
const EMIT_EVENTS: usize = 500;
const EMIT_BYTES: usize = 1 << 20;
/// Fingerprint length: the first bytes of a file.
const FP_MAX: u64 = 1024;
/// Entries looked at when searching a rotated file's old directory at start.
const MAX_DIR_SCAN: usize = 10_000;

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, PartialOrd, Ord)]
struct FileId {
    dev: u64,
    ino: u64,
}

impl FileId {
    fn of(m: &std::fs::Metadata) -> FileId {
        FileId {
            dev: m.dev(),
            ino: m.ino(),
        }
    }
}

/// Hash of the first `len` bytes of a file (FNV-1a, 64 bits). Text form `len:hash`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Fingerprint {
    len: u64,
    hash: u64,
}

impl Fingerprint {
    fn read(file: &File, len: u64) -> std::io::Result<Fingerprint> {
        let mut buf = vec![0u8; len as usize];
        let mut got = 0;
        while got < buf.len() {
            match file.read_at(&mut buf[got..], got as u64)? {
                0 => break,
                n => got += n,
            }
        }
        buf.truncate(got);
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for b in &buf {
            hash ^= u64::from(*b);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        Ok(Fingerprint {
            len: got as u64,
            hash,
        })
    }

    fn to_text(self) -> String {
        format!("{}:{:016x}", self.len, self.hash)
    }

    fn parse(s: &str) -> Option<Fingerprint> {
        let (len, hash) = s.split_once(':')?;
        Some(Fingerprint {
            len: len.parse().ok()?,
            hash: u64::from_str_radix(hash, 16).ok()?,
        })
    }

    /// Does `file` still start with the bytes this fingerprint was taken from?
    fn matches(self, file: &File, size: u64) -> std::io::Result<bool> {
        if size < self.len {
            return Ok(false);
        }
        Ok(Fingerprint::read(file, self.len)? == self)
    }
}

/// Checkpoint value of one file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Saved {
    path: String,
    dev: u64,
    ino: u64,
    fingerprint: String,
    offset: u64,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    skipping: bool,
}

struct Tracked {
    id: FileId,
    path: PathBuf,
    file: File,
    key: String,
    fp: Fingerprint,
    /// Next byte to read.
    read_pos: u64,
    /// Offset after the last line handed over; `buf` holds `[committed, read_pos)`.
    committed: u64,
    buf: Vec<u8>,
    /// Inside an over-long line whose head was emitted: drop bytes up to the next newline.
    skipping: bool,
    size_seen: u64,
    last_change: Instant,
    /// Since when no glob matches this file (rotated away or deleted).
    orphan_since: Option<Instant>,
    last_ckpt: Option<String>,
}

impl Tracked {
    fn saved(&self) -> Saved {
        Saved {
            path: self.path.to_string_lossy().into_owned(),
            dev: self.id.dev,
            ino: self.id.ino,
            fingerprint: self.fp.to_text(),
            offset: self.committed,
            skipping: self.skipping,
        }
    }
}

/// What one poll produced.
struct PollOut {
    emits: Vec<Emit>,
    /// Some file has more to read right away.
    more: bool,
}

/// Per-poll settings for building events.
struct Maker {
    tc: TimeCtx,
    read_time: Timestamp,
    syslog_format: bool,
    auth: bool,
    max_line: usize,
}

/// Lines and checkpoints of one file, cut into emits.
struct Batch<'a> {
    source: &'a Arc<str>,
    events: Vec<Event>,
    bytes: usize,
    emits: &'a mut Vec<Emit>,
}

impl Batch<'_> {
    fn push(&mut self, t: &mut Tracked, ev: Event) {
        self.bytes += ev.message.len();
        self.events.push(ev);
        if self.events.len() >= EMIT_EVENTS || self.bytes >= EMIT_BYTES {
            self.flush(t);
        }
    }

    /// Hands over the pending events with the file's position after them (if it moved).
    fn flush(&mut self, t: &mut Tracked) {
        // Cannot fail (plain strings and numbers); without a value the events still go,
        // and the position simply does not advance.
        let value = serde_json::to_string(&t.saved()).ok();
        let changed = value.is_some() && t.last_ckpt != value;
        if self.events.is_empty() && !changed {
            return;
        }
        let checkpoint = value.filter(|_| changed).map(|value| {
            t.last_ckpt = Some(value.clone());
            Checkpoint {
                key: t.key.clone(),
                value,
            }
        });
        self.emits.push(Emit {
            source: self.source.clone(),
            events: std::mem::take(&mut self.events),
            checkpoint,
        });
        self.bytes = 0;
    }
}

struct Tailer {
    cfg: FileConfig,
    source: Arc<str>,
    exclude: Vec<glob::Pattern>,
    files: Vec<Tracked>,
    /// Checkpoints from the start, by file identity, until used.
    resume: HashMap<FileId, (String, Saved)>,
    first_scan_done: bool,
    last_glob: Option<Instant>,
    /// Paths already warned about (cannot open, too many files), bounded.
    warned: HashSet<PathBuf>,
    /// Emits produced outside a file's poll (forgotten checkpoints).
    extra: Vec<Emit>,
}

impl Tailer {
    fn new(cfg: FileConfig, ctx: &SourceCtx) -> anyhow::Result<Tailer> {
        let exclude = cfg
            .exclude
            .iter()
            .map(|p| {
                glob::Pattern::new(p).with_context(|| {
                    format!("file input {:?}: invalid exclude glob {p:?}", cfg.name)
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let prefix = format!("{}:", ctx.name);
        let mut resume = HashMap::new();
        for (key, value) in ctx.checkpoints.range(prefix.clone()..) {
            let Some(id) = key.strip_prefix(&prefix) else {
                break;
            };
            // Exactly `{dev}:{ino}` after the prefix: another input whose name extends this
            // one (`x` and `x:1`) has keys under the same prefix.
            let ours = id.split_once(':').is_some_and(|(d, i)| {
                !d.is_empty()
                    && !i.is_empty()
                    && (d.bytes().chain(i.bytes())).all(|b| b.is_ascii_digit())
            });
            if !ours {
                continue;
            }
            match serde_json::from_str::<Saved>(value) {
                Ok(s) => {
                    resume.insert(
                        FileId {
                            dev: s.dev,
                            ino: s.ino,
                        },
                        (key.clone(), s),
                    );
                }
                Err(_) if value.is_empty() => {}
                Err(e) => {
                    tracing::warn!(source = %ctx.name, key = %truncate_for_log(key), error = %e, "unreadable file checkpoint ignored")
                }
            }
        }
        Ok(Tailer {
            cfg,
            source: ctx.name.clone(),
            exclude,
            files: Vec::new(),
            resume,
            first_scan_done: false,
            last_glob: None,
            warned: HashSet::new(),
            extra: Vec::new(),
        })
    }

    fn key(&self, id: FileId) -> String {
        format!("{}:{}:{}", self.source, id.dev, id.ino)
    }

    fn warn_once(&mut self, path: &Path) -> bool {
        if self.warned.len() >= 1024 {
            return false;
        }
        self.warned.insert(path.to_path_buf())
    }

    /// One round: rescan globs when due, read every file, close finished orphans.
    fn poll(&mut self, now: Instant, wall: chrono::DateTime<chrono::Utc>) -> PollOut {
        if self
            .last_glob
            .is_none_or(|t| now.duration_since(t) >= self.cfg.glob_interval)
        {
            self.scan(now);
            self.last_glob = Some(now);
        }
        let maker = Maker {
            tc: TimeCtx {
                now: wall,
                tz: self.cfg.timezone,
            },
            read_time: Timestamp::from_nanos(wall.timestamp_nanos_opt().unwrap_or(0)),
            syslog_format: self.cfg.syslog_format,
            auth: self.cfg.auth,
            max_line: self.cfg.max_line_bytes,
        };
        let mut emits = std::mem::take(&mut self.extra);
        let mut more = false;
        let mut closed = Vec::new();
        let mut failed = Vec::new();
        // Orphans (rotated files) first: their lines are older than the new file's.
        let mut order: Vec<usize> = (0..self.files.len()).collect();
        order.sort_by_key(|&i| self.files[i].orphan_since.is_none());
        for i in order {
            let source = self.source.clone();
            let t = &mut self.files[i];
            let mut batch = Batch {
                source: &source,
                events: Vec::new(),
                bytes: 0,
                emits: &mut emits,
            };
            match poll_file(t, &self.cfg, &maker, now, &mut batch) {
                Ok(has_more) => more |= has_more,
                Err(e) => {
                    // Close it but keep its position: if it can be read again, it resumes there.
                    if self.warned.len() < 1024 && self.warned.insert(t.path.clone()) {
                        tracing::warn!(path = %t.path.display(), error = %e, "cannot read file; closing it");
                    }
                    batch.flush(t);
                    failed.push((t.id, t.key.clone(), t.saved()));
                    continue;
                }
            }
            let finished = t.orphan_since.is_some_and(|o| {
                now.duration_since(o) >= self.cfg.close_inactive
                    && now.duration_since(t.last_change) >= self.cfg.close_inactive
            }) && t.read_pos >= t.size_seen;
            if finished {
                flush_partial(t, &maker, &mut batch);
                batch.flush(t);
                tracing::debug!(path = %t.path.display(), offset = t.committed, "closing rotated or deleted file");
                // Forget the position: the file is done.
                batch.emits.push(Emit {
                    source: source.clone(),
                    events: Vec::new(),
                    checkpoint: Some(Checkpoint {
                        key: t.key.clone(),
                        value: String::new(),
                    }),
                });
                closed.push(t.id);
            } else {
                batch.flush(t);
            }
        }
        for (id, key, saved) in failed {
            closed.push(id);
            self.resume.insert(id, (key, saved));
        }
        if !closed.is_empty() {
            self.files.retain(|t| !closed.contains(&t.id));
        }
        PollOut { emits, more }
    }

    /// Expands the globs and reconciles them with the followed files.
    fn scan(&mut self, now: Instant) {
        let mut found: BTreeMap<FileId, PathBuf> = BTreeMap::new();
        for pattern in &self.cfg.paths {
            let entries = match glob::glob(pattern) {
                Ok(e) => e,
                Err(e) => {
                    tracing::warn!(pattern = %pattern, error = %e, "invalid glob");
                    continue;
                }
            };
            for entry in entries {
                let Ok(path) = entry else { continue };
                if self.exclude.iter().any(|x| x.matches_path(&path)) {
                    continue;
                }
                let Ok(meta) = std::fs::metadata(&path) else {
                    continue;
                };
                if !meta.is_file() {
                    continue;
                }
                found.entry(FileId::of(&meta)).or_insert(path);
            }
        }
        for t in &mut self.files {
            match found.remove(&t.id) {
                Some(path) => {
                    if path != t.path {
                        tracing::debug!(from = %t.path.display(), to = %path.display(), "followed file was renamed");
                        t.path = path;
                    }
                    t.orphan_since = None;
                }
                None => {
                    if t.orphan_since.is_none() {
                        tracing::debug!(path = %t.path.display(), "file no longer matched (rotated or deleted); reading it to its end");
                        t.orphan_since = Some(now);
                    }
                }
            }
        }
        // New files, in path order (deterministic).
        let mut new: Vec<(FileId, PathBuf)> = found.into_iter().collect();
        new.sort_by(|a, b| a.1.cmp(&b.1));
        for (id, path) in new {
            self.open(id, &path, now, false);
        }
        if !self.first_scan_done {
            self.first_scan_done = true;
            self.resume_rotated(now);
        }
    }

    /// Starts following a file. `orphan`: it was found outside the globs (rotated while
    /// stopped). `None`: not opened; `Some(resumed)`: followed, from its checkpoint or not.
    fn open(&mut self, id: FileId, path: &Path, now: Instant, orphan: bool) -> Option<bool> {
        if self.files.len() >= self.cfg.max_files {
            if self.warn_once(path) {
                tracing::warn!(path = %path.display(), max_files = self.cfg.max_files, "too many files followed; this one is skipped (raise max_files)");
            }
            return None;
        }
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) => {
                if self.warn_once(path) {
                    tracing::warn!(path = %path.display(), error = %e, "cannot open file");
                }
                return None;
            }
        };
        let meta = file.metadata().ok()?;
        if FileId::of(&meta) != id {
            // Replaced between stat and open: the next scan sees the new one.
            return None;
        }
        let size = meta.len();
        let (mut offset, mut skipping, mut fp) = (0, false, None);
        let resumed = self.resume.remove(&id);
        let mut resumed_ok = false;
        if let Some((_, saved)) = &resumed {
            if let Some(sfp) = Fingerprint::parse(&saved.fingerprint)
                && sfp.matches(&file, size).unwrap_or(false)
            {
                if saved.offset <= size {
                    (offset, skipping, fp) = (saved.offset, saved.skipping, Some(sfp));
                    resumed_ok = true;
                } else {
                    tracing::info!(path = %path.display(), offset = saved.offset, size, "file is shorter than its checkpoint (truncated while stopped); reading it from the start");
                }
            } else {
                tracing::info!(path = %path.display(), "file at a checkpointed inode has other content (inode reused); reading it from the start");
            }
        }
        // read_from = end applies to files present at the first scan that have no position,
        // unless a position exists for another file at this path: then this one replaced it
        // (rotated while the agent was stopped) and is read whole.
        let replaced = || {
            self.resume
                .values()
                .any(|(_, s)| Path::new(&s.path) == path)
        };
        if !resumed_ok
            && !self.first_scan_done
            && resumed.is_none()
            && self.cfg.read_from == ReadFrom::End
            && !replaced()
        {
            offset = size;
        }
        let fp = match fp {
            Some(f) => f,
            None => match Fingerprint::read(&file, size.min(FP_MAX)) {
                Ok(f) => f,
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot read file");
                    return None;
                }
            },
        };
        tracing::debug!(path = %path.display(), offset, resumed = resumed_ok, "following file");
        self.files.push(Tracked {
            id,
            path: path.to_path_buf(),
            file,
            key: self.key(id),
            fp,
            read_pos: offset,
            committed: offset,
            buf: Vec::new(),
            skipping,
            size_seen: size,
            last_change: now,
            orphan_since: orphan.then_some(now),
            // The old key's value is what is stored; the first poll re-emits it if it differs.
            last_ckpt: resumed
                .filter(|_| resumed_ok)
                .and_then(|(_, s)| serde_json::to_string(&s).ok()),
        });
        Some(resumed_ok)
    }

    /// After the first scan: checkpointed files that no glob matched any more may have been
    /// rotated while the agent was stopped; look for them in their old directory and finish
    /// them. Positions of files that are gone are forgotten.
    fn resume_rotated(&mut self, now: Instant) {
        let left: Vec<(FileId, (String, Saved))> = self.resume.drain().collect();
        for (id, (key, saved)) in left {
            let dir = Path::new(&saved.path).parent().map(Path::to_path_buf);
            let found = dir.and_then(|d| find_in_dir(&d, id));
            let mut reopened = false;
            if let Some(path) = found {
                self.resume.insert(id, (key.clone(), saved.clone()));
                match self.open(id, &path, now, true) {
                    Some(true) => reopened = true,
                    // Other content at that inode: not our file.
                    Some(false) => self.files.retain(|t| t.id != id),
                    None => {}
                }
                self.resume.remove(&id);
            }
            if reopened {
                tracing::info!(path = %saved.path, "finishing a file rotated while the agent was stopped");
            } else {
                self.extra.push(Emit {
                    source: self.source.clone(),
                    events: Vec::new(),
                    checkpoint: Some(Checkpoint {
                        key,
                        value: String::new(),
                    }),
                });
            }
        }
    }
}

/// The path of the file with identity `id` directly in `dir`.
fn find_in_dir(dir: &Path, id: FileId) -> Option<PathBuf> {
    let entries = std::fs::read_dir(dir).ok()?;
    for entry in entries.take(MAX_DIR_SCAN).flatten() {
        if entry.ino() != id.ino {
            continue;
        }
        let path = entry.path();
        if let Ok(m) = std::fs::metadata(&path)
            && FileId::of(&m) == id
            && m.is_file()
        {
            return Some(path);
        }
    }
    None
}

/// Reads what is new in one file. Returns true when the read budget ran out first.
fn poll_file(
    t: &mut Tracked,
    cfg: &FileConfig,
    mk: &Maker,
    now: Instant,
    batch: &mut Batch<'_>,
) -> std::io::Result<bool> {
    let size = t.file.metadata()?.len();
    if size != t.size_seen {
        t.last_change = now;
        let rewritten = size >= t.fp.len && !t.fp.matches(&t.file, size)?;
        if size < t.read_pos || size < t.fp.len || rewritten {
            tracing::info!(path = %t.path.display(), offset = t.read_pos, size, "file was truncated (copytruncate?); reading it from the start");
            t.read_pos = 0;
            t.committed = 0;
            t.buf.clear();
            t.skipping = false;
            t.fp = Fingerprint::read(&t.file, size.min(FP_MAX))?;
        } else if t.fp.len < FP_MAX && size > t.fp.len {
            t.fp = Fingerprint::read(&t.file, size.min(FP_MAX))?;
        }
        t.size_seen = size;
    }
    let mut budget = READ_BUDGET;
    let mut chunk = Vec::new();
    while t.read_pos < size && budget > 0 {
        if chunk.is_empty() {
            chunk = vec![0u8; CHUNK];
        }
        let want = (CHUNK as u64).min(size - t.read_pos).min(budget) as usize;
        let n = t.file.read_at(&mut chunk[..want], t.read_pos)?;
        if n == 0 {
            break;
        }
        t.read_pos += n as u64;
        budget -= n as u64;
        feed(t, &chunk[..n], mk, batch);
    }
    if !t.buf.is_empty()
        && t.read_pos >= size
        && now.duration_since(t.last_change) >= cfg.partial_line_timeout
    {
        flush_partial(t, mk, batch);
    }
    Ok(t.read_pos < size)
}

/// Splits new bytes into lines.
fn feed(t: &mut Tracked, data: &[u8], mk: &Maker, batch: &mut Batch<'_>) {
    let mut rest = data;
    while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
        let seg = &rest[..nl];
        rest = &rest[nl + 1..];
        if t.skipping {
            t.skipping = false;
            t.committed += nl as u64 + 1;
            continue;
        }
        let start = t.committed;
        let consumed = (t.buf.len() + nl + 1) as u64;
        let ev = if t.buf.is_empty() {
            line_event(t, start, seg, mk, false)
        } else {
            let mut line = std::mem::take(&mut t.buf);
            line.extend_from_slice(seg);
            line_event(t, start, &line, mk, false)
        };
        t.committed += consumed;
        batch.push(t, ev);
    }
    if t.skipping {
        t.committed += rest.len() as u64;
        return;
    }
    t.buf.extend_from_slice(rest);
    if t.buf.len() > mk.max_line {
        // Emit the head of the over-long line, skip the rest up to its newline.
        let line = std::mem::take(&mut t.buf);
        let start = t.committed;
        let ev = line_event(t, start, &line, mk, false);
        t.committed += line.len() as u64;
        t.skipping = true;
        batch.push(t, ev);
    }
}

/// Emits the unterminated tail of a file as a line.
fn flush_partial(t: &mut Tracked, mk: &Maker, batch: &mut Batch<'_>) {
    if t.buf.is_empty() || t.skipping {
        return;
    }
    let line = std::mem::take(&mut t.buf);
    let start = t.committed;
    let ev = line_event(t, start, &line, mk, true);
    t.committed += line.len() as u64;
    batch.push(t, ev);
}

fn line_event(t: &Tracked, offset: u64, raw: &[u8], mk: &Maker, partial: bool) -> Event {
    let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
    let truncated = raw.len() > mk.max_line;
    let raw = &raw[..raw.len().min(mk.max_line)];
    let text = String::from_utf8_lossy(raw);
    let mut ev = Event::new(Kind::Log, mk.read_time);
    ev.event.module = "file".into();
    ev.log = Some(Log {
        file: Some(LogFile {
            path: t.path.to_string_lossy().into_owned(),
            offset: Some(offset),
        }),
        ..Default::default()
    });
    if mk.syslog_format
        && let Some(m) = parse_file_line(&text, &mk.tc)
    {
        m.apply_to(&mut ev);
    }
    ev.set_message(text.into_owned());
    if truncated {
        ev.event.truncated = true;
    }
    if partial {
        ev.add_label("log.partial", "true");
    }
    if mk.auth {
        enrich_auth(&mut ev);
    }
    ev
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{collect_until, ctx};
    use super::*;
    use std::io::Write;

    const WAIT: Duration = Duration::from_secs(10);

    fn cfg(dir: &Path, globs: &[&str]) -> FileConfig {
        FileConfig {
            name: "t".into(),
            paths: globs
                .iter()
                .map(|g| format!("{}/{g}", dir.display()))
                .collect(),
            read_from: ReadFrom::Beginning,
            poll_interval: Duration::from_millis(10),
            glob_interval: Duration::from_millis(30),
            partial_line_timeout: Duration::from_millis(300),
            close_inactive: Duration::from_millis(150),
            timezone: SourceTz::UTC,
            ..Default::default()
        }
    }

    fn append(path: &Path, text: &str) {
        append_bytes(path, text.as_bytes());
    }

    fn append_bytes(path: &Path, bytes: &[u8]) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("open for append");
        f.write_all(bytes).expect("append");
    }

    fn lines(prefix: &str, range: std::ops::Range<usize>) -> String {
        range.map(|i| format!("{prefix} {i}\n")).collect()
    }

    fn messages(events: &[Event]) -> Vec<String> {
        events.iter().map(|e| e.message.clone()).collect()
    }

    fn has(n: usize) -> impl FnMut(&[Event], &BTreeMap<String, String>) -> bool {
        move |e, _| e.len() >= n
    }

    /// A running source with the test's end of the channel.
    struct Running {
        rx: tokio::sync::mpsc::Receiver<Emit>,
        stop: tokio::sync::watch::Sender<bool>,
        task: tokio::task::JoinHandle<anyhow::Result<()>>,
        store: BTreeMap<String, String>,
        events: Vec<Event>,
    }

    impl Running {
        fn start(cfg: FileConfig, store: BTreeMap<String, String>, cap: usize) -> Running {
            let (c, rx, stop, _) = ctx("file:t", cap, store.clone());
            let task = tokio::spawn(run(cfg, c));
            Running {
                rx,
                stop,
                task,
                store,
                events: Vec::new(),
            }
        }

        async fn until(&mut self, pred: impl FnMut(&[Event], &BTreeMap<String, String>) -> bool) {
            collect_until(&mut self.rx, &mut self.store, &mut self.events, WAIT, pred).await;
        }

        /// No more events arrive within `d` (checkpoint-only emits are applied).
        async fn quiet(&mut self, d: Duration) {
            let deadline = tokio::time::Instant::now() + d;
            while let Ok(Some(e)) = tokio::time::timeout_at(deadline, self.rx.recv()).await {
                assert!(
                    e.events.is_empty(),
                    "unexpected events: {:?}",
                    messages(&e.events)
                );
                if let Some(c) = e.checkpoint {
                    self.store.insert(c.key, c.value);
                }
            }
        }

        async fn stop(self) -> (BTreeMap<String, String>, Vec<Event>) {
            let _ = self.stop.send(true);
            tokio::time::timeout(WAIT, self.task)
                .await
                .expect("source stops")
                .expect("join")
                .expect("source ok");
            (self.store, self.events)
        }
    }

    #[tokio::test]
    async fn reads_lines_with_offsets_and_parses_syslog() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("auth.log");
        let first =
            "Mar  1 10:00:00 web1 sshd[42]: Failed password for root from 1.2.3.4 port 2222 ssh2\n";
        append(&p, first);
        append_bytes(&p, b"plain line\r\n\xff bytes\n");
        let mut r = Running::start(cfg(dir.path(), &["*.log"]), BTreeMap::new(), 16);
        r.until(has(3)).await;
        let e = &r.events;
        assert_eq!(e[0].kind(), Kind::Authentication);
        assert_eq!(e[0].event.module, "file");
        assert_eq!(e[0].event.action, "ssh_login");
        assert_eq!(
            e[0].timestamp.to_rfc3339().get(5..19),
            Some("03-01T10:00:00")
        );
        let log = e[0].log.as_ref().expect("log");
        assert_eq!(log.logger, "sshd");
        assert_eq!(
            log.file.as_ref().map(|f| (f.path.as_str(), f.offset)),
            Some((p.to_str().expect("utf8"), Some(0)))
        );
        assert_eq!(e[0].process.as_ref().and_then(|p| p.pid), Some(42));
        assert_eq!(e[1].message, "plain line");
        assert_eq!(
            e[1].log
                .as_ref()
                .and_then(|l| l.file.as_ref())
                .and_then(|f| f.offset),
            Some(first.len() as u64)
        );
        assert!(e[1].log.as_ref().is_some_and(|l| l.syslog.is_none()));
        assert_eq!(e[2].message, "\u{fffd} bytes");
        let (store, _) = r.stop().await;
        let saved: Saved =
            serde_json::from_str(store.values().next().expect("a checkpoint")).expect("json");
        assert_eq!(saved.offset, std::fs::metadata(&p).expect("stat").len());
        assert_eq!(saved.path, p.to_string_lossy());
    }

    #[tokio::test]
    async fn restart_resumes_at_checkpoint_without_loss_or_duplicate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("app.log");
        append(&p, &lines("line", 0..3000));
        let mut all = Vec::new();
        let mut store = BTreeMap::new();
        // Stop the source several times while it is blocked on a full channel (capacity 1):
        // whatever was not received must come back after the restart, once.
        for round in 0..4 {
            let mut r = Running::start(cfg(dir.path(), &["app.log"]), store, 1);
            r.until(has(1)).await;
            if round == 1 {
                append(&p, &lines("more", 0..500));
            }
            let (s, ev) = r.stop().await;
            store = s;
            all.extend(ev);
        }
        let mut r = Running::start(cfg(dir.path(), &["app.log"]), store, 64);
        let before = all.len();
        r.until(move |e, _| before + e.len() >= 3500).await;
        r.quiet(Duration::from_millis(200)).await;
        let (_, ev) = r.stop().await;
        all.extend(ev);
        let got = messages(&all);
        let want: Vec<String> = lines("line", 0..3000)
            .lines()
            .chain(lines("more", 0..500).lines())
            .map(str::to_string)
            .collect();
        assert_eq!(got, want);
    }

    #[tokio::test]
    async fn rotation_by_rename_loses_and_duplicates_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("app.log");
        let rotated = dir.path().join("app.log.1");
        append(&p, &lines("old", 0..100));
        let mut r = Running::start(cfg(dir.path(), &["app.log"]), BTreeMap::new(), 64);
        r.until(has(100)).await;
        append(&p, &lines("old", 100..150));
        std::fs::rename(&p, &rotated).expect("rotate");
        // The writer still appends to the renamed file before it reopens...
        append(&rotated, &lines("old", 150..160));
        // ...with an unterminated last line, emitted when the rotated file is closed.
        append(&rotated, "old tail");
        append(&p, &lines("new", 0..50));
        r.until(has(211)).await;
        r.quiet(Duration::from_millis(300)).await;
        // The closed file's position is forgotten.
        r.until(|_, s| s.values().filter(|v| v.is_empty()).count() == 1)
            .await;
        let (_, events) = r.stop().await;
        let got = messages(&events);
        let mut want: Vec<String> = lines("old", 0..160).lines().map(str::to_string).collect();
        want.push("old tail".into());
        want.extend(lines("new", 0..50).lines().map(str::to_string));
        let mut sorted_got = got.clone();
        sorted_got.sort();
        let mut sorted_want = want.clone();
        sorted_want.sort();
        assert_eq!(sorted_got, sorted_want);
        // Per-file order is kept.
        let old: Vec<&String> = got.iter().filter(|m| m.starts_with("old")).collect();
        assert_eq!(
            old,
            want.iter()
                .filter(|m| m.starts_with("old"))
                .collect::<Vec<_>>()
        );
        let tail = events
            .iter()
            .find(|e| e.message == "old tail")
            .expect("tail");
        assert_eq!(
            tail.labels.get("log.partial").map(String::as_str),
            Some("true")
        );
    }

    #[tokio::test]
    async fn copytruncate_restarts_at_zero() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("app.log");
        append(&p, &lines("first", 0..20));
        let mut r = Running::start(cfg(dir.path(), &["app.log"]), BTreeMap::new(), 64);
        r.until(has(20)).await;
        // copytruncate: copy away, truncate in place, the writer continues at 0.
        std::fs::copy(&p, dir.path().join("app.log.1")).expect("copy");
        std::fs::OpenOptions::new()
            .write(true)
            .open(&p)
            .expect("open")
            .set_len(0)
            .expect("truncate");
        append(&p, &lines("second", 0..3));
        r.until(has(23)).await;
        assert_eq!(
            messages(&r.events[20..]),
            vec!["second 0", "second 1", "second 2"]
        );
        assert_eq!(
            r.events[20]
                .log
                .as_ref()
                .and_then(|l| l.file.as_ref())
                .and_then(|f| f.offset),
            Some(0)
        );
        // Truncated and rewritten past the old offset before the next poll: the first bytes
        // changed, so it is detected too.
        std::fs::write(&p, lines("third", 0..40)).expect("rewrite");
        r.until(has(63)).await;
        assert_eq!(
            messages(&r.events[23..]),
            lines("third", 0..40)
                .lines()
                .map(str::to_string)
                .collect::<Vec<_>>()
        );
        r.stop().await;
    }

    #[tokio::test]
    async fn partial_lines_wait_for_newline_or_timeout() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("app.log");
        append(&p, "abc");
        let mut c = cfg(dir.path(), &["app.log"]);
        c.partial_line_timeout = Duration::from_millis(500);
        let mut r = Running::start(c, BTreeMap::new(), 64);
        // Completed before the timeout: one line.
        tokio::time::sleep(Duration::from_millis(100)).await;
        append(&p, "def\nxyz");
        r.until(has(1)).await;
        assert_eq!(r.events[0].message, "abcdef");
        assert!(r.events[0].labels.is_empty());
        // Never completed: emitted after partial_line_timeout, flagged.
        let t0 = Instant::now();
        r.until(has(2)).await;
        assert!(
            t0.elapsed() >= Duration::from_millis(250),
            "emitted too early"
        );
        assert_eq!(r.events[1].message, "xyz");
        assert_eq!(
            r.events[1].labels.get("log.partial").map(String::as_str),
            Some("true")
        );
        // The continuation is a line of its own, and the checkpoint covers everything.
        append(&p, "more\n");
        r.until(has(3)).await;
        assert_eq!(r.events[2].message, "more");
        let (store, _) = r.stop().await;
        let saved: Saved =
            serde_json::from_str(store.values().next().expect("ckpt")).expect("json");
        assert_eq!(saved.offset, 15);
    }

    #[tokio::test]
    async fn long_lines_are_cut_and_flagged() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("app.log");
        let mut c = cfg(dir.path(), &["app.log"]);
        c.max_line_bytes = 1000;
        append(
            &p,
            &format!("{}\nnext\n{}", "a".repeat(5000), "b".repeat(200_000)),
        );
        let mut r = Running::start(c.clone(), BTreeMap::new(), 64);
        r.until(has(3)).await;
        assert_eq!(r.events[0].message, "a".repeat(1000));
        assert!(r.events[0].event.truncated);
        assert_eq!(r.events[1].message, "next");
        assert!(!r.events[1].event.truncated);
        assert_eq!(
            r.events[1]
                .log
                .as_ref()
                .and_then(|l| l.file.as_ref())
                .and_then(|f| f.offset),
            Some(5001)
        );
        assert_eq!(r.events[2].message, "b".repeat(1000));
        let (store, _) = r.stop().await;
        // Restart in the middle of the skipped line: the skip survives, nothing is re-emitted.
        let saved: Saved =
            serde_json::from_str(store.values().next().expect("ckpt")).expect("json");
        assert!(saved.skipping);
        append(&p, &format!("{}\nafter\n", "b".repeat(10)));
        let mut r = Running::start(c, store, 64);
        r.until(has(1)).await;
        assert_eq!(r.events[0].message, "after");
        r.stop().await;
    }

    #[tokio::test]
    async fn globs_pick_up_new_files_and_honour_read_from() {
        let dir = tempfile::tempdir().expect("tempdir");
        append(&dir.path().join("a.log"), "old a\n");
        let mut c = cfg(dir.path(), &["*.log"]);
        c.read_from = ReadFrom::End;
        c.exclude = vec![format!("{}/skip*.log", dir.path().display())];
        let mut r = Running::start(c.clone(), BTreeMap::new(), 64);
        // The position at the end of a.log is recorded even though no line came.
        r.until(|_, s| s.len() == 1).await;
        append(&dir.path().join("a.log"), "new a\n");
        append(&dir.path().join("skip-me.log"), "excluded\n");
        append(&dir.path().join("b.log"), "b from its start\n");
        r.until(has(2)).await;
        r.quiet(Duration::from_millis(200)).await;
        let mut got = messages(&r.events);
        got.sort();
        assert_eq!(got, vec!["b from its start", "new a"]);
        let (store, _) = r.stop().await;
        // After a restart read_from = end does not skip what was written meanwhile.
        append(&dir.path().join("a.log"), "while stopped\n");
        let mut r = Running::start(c, store, 64);
        r.until(has(1)).await;
        assert_eq!(r.events[0].message, "while stopped");
        r.quiet(Duration::from_millis(200)).await;
        r.stop().await;
    }

    #[tokio::test]
    async fn rotated_while_stopped_is_finished_after_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("app.log");
        append(&p, &lines("old", 0..10));
        let mut c = cfg(dir.path(), &["app.log"]);
        c.read_from = ReadFrom::Beginning;
        let mut r = Running::start(c.clone(), BTreeMap::new(), 64);
        r.until(has(10)).await;
        let (store, _) = r.stop().await;
        append(&p, &lines("old", 10..15));
        std::fs::rename(&p, dir.path().join("app.log.1")).expect("rotate");
        append(&p, &lines("new", 0..5));
        // read_from = end must not skip the file that replaced a checkpointed one.
        c.read_from = ReadFrom::End;
        let mut r = Running::start(c, store, 64);
        r.until(has(10)).await;
        r.until(|_, s| s.values().any(String::is_empty)).await;
        let (_, events) = r.stop().await;
        let got = messages(&events);
        let want: Vec<String> = lines("old", 10..15)
            .lines()
            .chain(lines("new", 0..5).lines())
            .map(str::to_string)
            .collect();
        assert_eq!(
            got, want,
            "the rotated file's rest first, then the new file"
        );
    }

    #[tokio::test]
    async fn inode_reuse_is_detected_by_fingerprint() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("app.log");
        append(&p, &lines("x", 0..5));
        let meta = std::fs::metadata(&p).expect("stat");
        // A checkpoint for this very inode, but taken from other content.
        let saved = Saved {
            path: p.to_string_lossy().into_owned(),
            dev: meta.dev(),
            ino: meta.ino(),
            fingerprint: "4:0123456789abcdef".into(),
            offset: 20,
            skipping: false,
        };
        let mut store = BTreeMap::new();
        store.insert(
            format!("file:t:{}:{}", meta.dev(), meta.ino()),
            serde_json::to_string(&saved).expect("json"),
        );
        let mut c = cfg(dir.path(), &["app.log"]);
        c.read_from = ReadFrom::End;
        let mut r = Running::start(c, store, 64);
        r.until(has(5)).await;
        assert_eq!(
            messages(&r.events),
            lines("x", 0..5).lines().collect::<Vec<_>>()
        );
        r.stop().await;
    }

    #[tokio::test]
    async fn deleted_file_is_read_to_its_end_then_forgotten() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("app.log");
        append(&p, &lines("x", 0..3));
        let mut r = Running::start(cfg(dir.path(), &["app.log"]), BTreeMap::new(), 64);
        r.until(has(3)).await;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&p)
            .expect("open");
        std::fs::remove_file(&p).expect("delete");
        f.write_all(b"after delete\n").expect("write");
        r.until(has(4)).await;
        assert_eq!(r.events[3].message, "after delete");
        r.until(|_, s| s.values().all(String::is_empty)).await;
        r.stop().await;
    }

    #[test]
    fn checkpoints_of_other_inputs_are_left_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let saved = |ino: u64| {
            let s = Saved {
                path: "/nonexistent/a.log".into(),
                dev: 1,
                ino,
                fingerprint: "0:cbf29ce484222325".into(),
                offset: 0,
                skipping: false,
            };
            serde_json::to_string(&s).expect("json")
        };
        let mut store = BTreeMap::new();
        store.insert("file:x:1:2".to_string(), saved(2));
        store.insert("file:x:1:3:4".to_string(), saved(4)); // input "x:1"
        store.insert("file:xy:1:5".to_string(), saved(5)); // input "xy"
        store.insert("file:x:1:6".to_string(), String::new()); // forgotten
        let (c, _rx, _stop, _) = ctx("file:x", 4, store);
        let mut t = Tailer::new(cfg(dir.path(), &["*.log"]), &c).expect("tailer");
        let keys: Vec<&str> = t.resume.values().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, vec!["file:x:1:2"]);
        // The first scan forgets x's missing file, and only it.
        let out = t.poll(Instant::now(), chrono::Utc::now());
        let forgotten: Vec<(String, String)> = out
            .emits
            .into_iter()
            .filter_map(|e| e.checkpoint)
            .map(|c| (c.key, c.value))
            .collect();
        assert_eq!(forgotten, vec![("file:x:1:2".to_string(), String::new())]);
    }

    #[test]
    fn config_defaults_and_errors() {
        let c: FileConfig =
            toml::from_str("name = \"x\"\npaths = [\"/var/log/*.log\"]").expect("toml");
        assert_eq!(c.read_from, ReadFrom::End);
        assert_eq!(c.poll_interval, Duration::from_millis(250));
        assert_eq!(c.max_line_bytes, 65536);
        c.validate().expect("valid");
        let c: FileConfig = toml::from_str("paths = [\"/a\"]\nread_from = \"beginning\"\ntimezone = \"Europe/Paris\"\nmax_line_bytes = \"4KiB\"\npoll_interval = \"1s\"").expect("toml");
        assert_eq!((c.read_from, c.max_line_bytes), (ReadFrom::Beginning, 4096));
        let err = toml::from_str::<FileConfig>("paths = [\"/a\"]\nfollow = true")
            .expect_err("unknown field");
        assert!(err.to_string().contains("follow"), "{err}");
        let err = toml::from_str::<FileConfig>("paths = [\"/a\"]\npoll_interval = \"fast\"")
            .expect_err("bad duration");
        assert!(err.to_string().contains("250ms"), "{err}");
        let bad = FileConfig {
            paths: vec!["var/log/*.log".into()],
            ..Default::default()
        };
        assert!(
            bad.validate()
                .expect_err("relative")
                .to_string()
                .contains("absolute")
        );
        let bad = FileConfig {
            paths: vec!["/var/log/[.log".into()],
            ..Default::default()
        };
        assert!(
            bad.validate()
                .expect_err("glob")
                .to_string()
                .contains("invalid glob")
        );
    }
}

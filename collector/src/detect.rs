//! The detection runtime: every stored event, in commit order, through the
//! live rule set, on a dedicated thread.
//!
//! The writer thread hands each committed batch to a bounded [`DetectQueue`]
//! (counted in events). When the queue is full the writer waits (back-pressure
//! on ingestion, bounded by [`DetectConfig::max_wait`]); past that wait the
//! batch is not evaluated, counted in `vigie_detection_dropped_events_total`,
//! and a health alert says so. Nothing is dropped silently.
//!
//! The detection thread evaluates each event with [`vigie_rules::Engine`],
//! drops matches covered by an exception, feeds the rest to the
//! [`vigie_rules::Correlator`] (event time passed in), and turns the standalone
//! matches and fired correlations into [`Detection`]s — data — that
//! [`crate::alerts::Alerts`] deduplicates and stores. New alerts go to the
//! notifier (tokio tasks) through a bounded channel; the detection thread never
//! does network IO.
//!
//! Rules come from the rules directory (`<data_dir>/rules/` unless `rules_dir`
//! says otherwise): every `.yml`/`.yaml` file under it, recursively, except
//! `exceptions.yml`. A rule that does not load is reported (log, API) and the
//! others run. The directory is polled every few seconds (paths, sizes and
//! modification times); on a change the rule set is compiled again and swapped
//! in one step. Correlation state is reset when the rules change (logged, and
//! shown by `GET /api/v1/rules`); a change of `exceptions.yml` alone keeps it.
//!
//! Lifecycle, from each rule's Sigma `status`: `stable` (or none) is live;
//! `test` and `experimental` run but their alerts are marked `test` (not
//! notified unless a channel opts in); `deprecated` and `unsupported` are
//! loaded but raise nothing.
//!
//! # `exceptions.yml`
//!
//! Exceptions are data: a list of `(rule, query)` pairs in
//! `<rules_dir>/exceptions.yml`. A match of `rule` (its id, or its title when it
//! has none; `*` for every rule) on an event that matches `query` (the search
//! query language, `docs/query-language.md`) is dropped before alerting and
//! before correlation. For a correlation rule, the query is checked against the
//! event that completed the correlation.
//!
//! ```yaml
//! exceptions:
//!   - rule: 5b9a4d4e-0000-4000-8000-000000000001
//!     query: 'source.ip:10.0.0.0/8 AND user.name:backup'
//!     comment: nightly backup job logs in with a wrong key first
//!     expires: 2026-12-31T00:00:00Z   # optional
//! ```

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde::Serialize;
use vigie_proto::{Event, Timestamp};
use vigie_rules::{Engine, Level, RuleMatch, Scratch, Status};
use vigie_store::{AlertSeverity, Query};

use crate::alerts::Alerts;
use crate::ingest::now;
use crate::metrics::Metrics;

/// Name of the exceptions file inside the rules directory.
pub const EXCEPTIONS_FILE: &str = "exceptions.yml";
/// Rule files larger than this are rejected (reported like any broken rule).
pub const MAX_RULE_FILE_BYTES: u64 = 1024 * 1024;
/// At most this many rule files are read from the rules directory.
pub const MAX_RULE_FILES: usize = 20_000;

/// How the runtime runs.
#[derive(Clone, Debug)]
pub struct DetectConfig {
    pub rules_dir: PathBuf,
    /// How often the rules directory is checked for changes.
    pub reload_interval: Duration,
    /// Events waiting for detection at most.
    pub queue_events: usize,
    /// How long the writer waits for room in a full queue before dropping a batch from detection.
    pub max_wait: Duration,
    /// Name of this collector, for its own health alerts.
    pub hostname: String,
}

// --- the queue between the writer and the detection thread -----------------

/// A bounded FIFO of committed batches, bounded in events.
#[derive(Debug)]
pub struct DetectQueue {
    inner: Mutex<QueueInner>,
    not_empty: Condvar,
    not_full: Condvar,
    cap_events: usize,
    max_wait: Duration,
    metrics: Arc<Metrics>,
    /// True while a rule set is loaded: with no rules, nothing is queued.
    active: AtomicBool,
}

#[derive(Debug, Default)]
struct QueueInner {
    items: std::collections::VecDeque<Arc<Vec<Event>>>,
    events: usize,
    closed: bool,
}

/// What [`DetectQueue::pop`] returns.
#[derive(Debug)]
pub enum Pop {
    Batch(Arc<Vec<Event>>),
    Timeout,
    Closed,
}

impl DetectQueue {
    pub fn new(cap_events: usize, max_wait: Duration, metrics: Arc<Metrics>) -> DetectQueue {
        DetectQueue {
            inner: Mutex::new(QueueInner::default()),
            not_empty: Condvar::new(),
            not_full: Condvar::new(),
            cap_events: cap_events.max(1),
            max_wait,
            metrics,
            active: AtomicBool::new(false),
        }
    }

    /// Whether committed events should be handed over at all (some rule is loaded).
    pub fn active(&self) -> bool {
        self.active.load(Relaxed)
    }

    /// Queues a committed batch, waiting up to `wait` for room. Returns false
    /// (nothing queued; the caller counts the loss) when there is still no room.
    /// A batch larger than the whole queue is accepted when the queue is empty.
    pub fn push(&self, batch: Arc<Vec<Event>>, wait: Duration) -> bool {
        let n = batch.len();
        if n == 0 {
            return true;
        }
        let deadline = Instant::now() + wait;
        let Ok(mut q) = self.inner.lock() else {
            return false;
        };
        while !q.closed && q.events > 0 && q.events + n > self.cap_events {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            q = match self.not_full.wait_timeout(q, left) {
                Ok((g, _)) => g,
                Err(_) => return false,
            };
        }
        if q.closed {
            return false;
        }
        q.events += n;
        q.items.push_back(batch);
        self.metrics
            .detection_queue_events
            .store(q.events as u64, Relaxed);
        drop(q);
        self.not_empty.notify_one();
        true
    }

    /// The oldest batch, waiting up to `timeout`.
    pub fn pop(&self, timeout: Duration) -> Pop {
        let Ok(mut q) = self.inner.lock() else {
            return Pop::Closed;
        };
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(b) = q.items.pop_front() {
                q.events -= b.len();
                self.metrics
                    .detection_queue_events
                    .store(q.events as u64, Relaxed);
                drop(q);
                self.not_full.notify_all();
                return Pop::Batch(b);
            }
            if q.closed {
                return Pop::Closed;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Pop::Timeout;
            }
            q = match self.not_empty.wait_timeout(q, left) {
                Ok((g, _)) => g,
                Err(_) => return Pop::Closed,
            };
        }
    }

    /// The writer's hand-over: queues a committed batch, waiting up to
    /// `max_wait` for room; when there is none, counts the events as dropped
    /// from detection (the detection thread then raises a health alert).
    pub fn hand_over(&self, events: Vec<Event>) {
        let n = events.len() as u64;
        if !self.push(Arc::new(events), self.max_wait) {
            let before = self.metrics.detection_dropped_events.fetch_add(n, Relaxed);
            if before == 0 || before / 10_000 != (before + n) / 10_000 {
                tracing::error!(
                    events = n,
                    dropped_total = before + n,
                    "detection is behind: events stored but not evaluated by the rules (see vigie_detection_dropped_events_total and the health alert)"
                );
            }
        }
    }

    /// Lets the detection thread finish what is queued, then stop.
    pub fn close(&self) {
        if let Ok(mut q) = self.inner.lock() {
            q.closed = true;
        }
        self.not_empty.notify_all();
        self.not_full.notify_all();
    }
}

// --- rule files ------------------------------------------------------------

/// One rule file that could not be read (reported like a rule that does not load).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileError {
    pub path: String,
    pub reason: String,
}

/// Reads every `.yml`/`.yaml` file under `dir` (recursively, sorted, without
/// `exceptions.yml` at the top), as `(path relative to dir, text)` pairs.
/// Unreadable, oversized or non-UTF-8 files are errors, never a stop.
pub fn read_rule_files(dir: &Path) -> (Vec<(String, String)>, Vec<FileError>) {
    let mut paths = Vec::new();
    let mut errors = Vec::new();
    walk(dir, dir, &mut paths, &mut errors);
    paths.sort();
    let mut files = Vec::new();
    for p in paths {
        let rel = rel_path(dir, &p);
        if rel == EXCEPTIONS_FILE {
            continue;
        }
        if files.len() >= MAX_RULE_FILES {
            errors.push(FileError {
                path: rel,
                reason: format!(
                    "more than {MAX_RULE_FILES} rule files in the directory; this one and the rest were not read"
                ),
            });
            break;
        }
        match std::fs::metadata(&p) {
            Ok(m) if m.len() > MAX_RULE_FILE_BYTES => errors.push(FileError {
                path: rel,
                reason: format!(
                    "file is {} bytes; rule files are limited to {MAX_RULE_FILE_BYTES} bytes: split it",
                    m.len()
                ),
            }),
            Ok(_) => match std::fs::read(&p) {
                Ok(bytes) => match String::from_utf8(bytes) {
                    Ok(text) => files.push((rel, text)),
                    Err(_) => errors.push(FileError {
                        path: rel,
                        reason: "file is not valid UTF-8; save it as UTF-8".into(),
                    }),
                },
                Err(e) => errors.push(FileError {
                    path: rel,
                    reason: format!("cannot read the file: {e}"),
                }),
            },
            Err(e) => errors.push(FileError {
                path: rel,
                reason: format!("cannot read the file: {e}"),
            }),
        }
    }
    (files, errors)
}

fn rel_path(root: &Path, p: &Path) -> String {
    p.strip_prefix(root)
        .unwrap_or(p)
        .to_string_lossy()
        .into_owned()
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<PathBuf>, errors: &mut Vec<FileError>) {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) => {
            errors.push(FileError {
                path: rel_path(root, dir),
                reason: format!("cannot list the directory: {e}"),
            });
            return;
        }
    };
    for entry in rd.flatten() {
        let p = entry.path();
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        match entry.file_type() {
            Ok(t) if t.is_dir() && out.len() <= MAX_RULE_FILES => walk(root, &p, out, errors),
            Ok(t) if t.is_dir() => {}
            Ok(_) if p.extension().is_some_and(|e| e == "yml" || e == "yaml") => out.push(p),
            _ => {}
        }
    }
}

/// What identifies the state of the rules directory: paths, sizes, mtimes.
fn fingerprint(dir: &Path) -> Vec<(PathBuf, u64, i128)> {
    let mut paths = Vec::new();
    walk(dir, dir, &mut paths, &mut Vec::new());
    let mut out: Vec<(PathBuf, u64, i128)> = paths
        .into_iter()
        .map(|p| {
            let (len, mtime) = std::fs::metadata(&p)
                .map(|m| {
                    let t = m
                        .modified()
                        .ok()
                        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                        .map(|d| d.as_nanos() as i128)
                        .unwrap_or(0);
                    (m.len(), t)
                })
                .unwrap_or((0, 0));
            (p, len, mtime)
        })
        .collect();
    out.sort();
    out
}

// --- exceptions --------------------------------------------------------------

/// One exception: matches of `rule` on events matching `query` are dropped.
#[derive(Clone, Debug)]
pub struct Exception {
    /// A rule id (or title), or `*`.
    pub rule: String,
    pub query_text: String,
    pub query: Query,
    pub comment: String,
    pub expires: Option<Timestamp>,
}

impl Exception {
    fn applies(&self, rule_key: &str, ev: &Event, now: Timestamp) -> bool {
        (self.rule == "*" || self.rule == rule_key)
            && self.expires.is_none_or(|t| now < t)
            && self.query.matches(ev)
    }
}

/// Parses `exceptions.yml`. Bad entries are errors (data); the others apply.
pub fn parse_exceptions(text: &str) -> (Vec<Exception>, Vec<String>) {
    use yaml_rust2::{Yaml, YamlLoader};
    let mut out = Vec::new();
    let mut errors = Vec::new();
    let docs = match YamlLoader::load_from_str(text) {
        Ok(d) => d,
        Err(e) => {
            return (out, vec![format!("{EXCEPTIONS_FILE}: invalid yaml: {e}")]);
        }
    };
    let Some(doc) = docs.into_iter().next() else {
        return (out, errors);
    };
    let key = |k: &str| Yaml::String(k.to_string());
    let list = match doc {
        Yaml::Null => return (out, errors),
        Yaml::Array(a) => a,
        Yaml::Hash(mut h) => match h.remove(&key("exceptions")) {
            Some(Yaml::Array(a)) => a,
            Some(Yaml::Null) | None if h.is_empty() => Vec::new(),
            _ => {
                return (
                    out,
                    vec![format!(
                        "{EXCEPTIONS_FILE}: expected `exceptions:` followed by a list of {{rule, query}} entries"
                    )],
                );
            }
        },
        _ => {
            return (
                out,
                vec![format!(
                    "{EXCEPTIONS_FILE}: expected a list of {{rule, query}} entries"
                )],
            );
        }
    };
    for (i, item) in list.into_iter().enumerate() {
        let n = i + 1;
        let Yaml::Hash(h) = item else {
            errors.push(format!(
                "{EXCEPTIONS_FILE} entry {n}: expected a mapping with `rule` and `query`"
            ));
            continue;
        };
        let text_of = |k: &str| -> Option<String> {
            match h.get(&key(k)) {
                Some(Yaml::String(s)) => Some(s.clone()),
                Some(Yaml::Integer(i)) => Some(i.to_string()),
                Some(Yaml::Real(r)) => Some(r.clone()),
                _ => None,
            }
        };
        if let Some(k) = h.keys().find_map(|k| match k {
            Yaml::String(s) if !["rule", "query", "comment", "expires"].contains(&s.as_str()) => {
                Some(s.clone())
            }
            _ => None,
        }) {
            errors.push(format!(
                "{EXCEPTIONS_FILE} entry {n}: unknown key `{k}`; expected rule, query, comment, expires"
            ));
            continue;
        }
        let Some(rule) = text_of("rule").filter(|s| !s.trim().is_empty()) else {
            errors.push(format!(
                "{EXCEPTIONS_FILE} entry {n}: missing `rule` (a rule id, or * for every rule)"
            ));
            continue;
        };
        let Some(qt) = text_of("query").filter(|s| !s.trim().is_empty()) else {
            errors.push(format!(
                "{EXCEPTIONS_FILE} entry {n}: missing `query` (in the search query language, e.g. 'source.ip:10.0.0.0/8')"
            ));
            continue;
        };
        let query = match Query::parse(&qt) {
            Ok(q) => q,
            Err(e) => {
                errors.push(format!(
                    "{EXCEPTIONS_FILE} entry {n} (rule {rule}): query {qt:?}: {e}"
                ));
                continue;
            }
        };
        let expires = match text_of("expires") {
            None => None,
            Some(t) => match Timestamp::parse_rfc3339(&t) {
                Ok(t) => Some(t),
                Err(e) => {
                    errors.push(format!("{EXCEPTIONS_FILE} entry {n} (rule {rule}): {e}"));
                    continue;
                }
            },
        };
        out.push(Exception {
            rule: rule.trim().to_string(),
            query_text: qt,
            query,
            comment: text_of("comment").unwrap_or_default(),
            expires,
        });
    }
    (out, errors)
}

// --- the loaded rule set -------------------------------------------------------

/// A rule's place in the lifecycle, from its Sigma `status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Lifecycle {
    /// `stable` or no status: alerts are real.
    Live,
    /// `test` or `experimental`: evaluated, alerts marked `test`.
    Test,
    /// `deprecated` or `unsupported`: loaded, raises nothing.
    Disabled,
}

impl Lifecycle {
    pub fn of(status: Option<Status>) -> Lifecycle {
        match status {
            None | Some(Status::Stable) => Lifecycle::Live,
            Some(Status::Test) | Some(Status::Experimental) => Lifecycle::Test,
            Some(Status::Deprecated) | Some(Status::Unsupported) => Lifecycle::Disabled,
        }
    }
}

fn status_str(s: Option<Status>) -> Option<&'static str> {
    s.map(|s| match s {
        Status::Stable => "stable",
        Status::Test => "test",
        Status::Experimental => "experimental",
        Status::Deprecated => "deprecated",
        Status::Unsupported => "unsupported",
    })
}

/// Alert severity of a Sigma level (`medium` when the rule has none).
pub fn severity_of(level: Option<Level>) -> AlertSeverity {
    match level {
        Some(Level::Informational) => AlertSeverity::Informational,
        Some(Level::Low) => AlertSeverity::Low,
        None | Some(Level::Medium) => AlertSeverity::Medium,
        Some(Level::High) => AlertSeverity::High,
        Some(Level::Critical) => AlertSeverity::Critical,
    }
}

/// One rule as the API shows it.
#[derive(Clone, Debug, Serialize)]
pub struct RuleInfo {
    /// The rule id (its title when it has none); empty for a file that did not parse.
    pub id: String,
    pub title: String,
    pub level: Option<&'static str>,
    pub tags: Vec<String>,
    pub status: Option<&'static str>,
    pub lifecycle: Option<Lifecycle>,
    /// `detection` or `correlation`.
    pub kind: &'static str,
    /// File (and document) the rule came from.
    pub source: String,
    pub loaded: bool,
    /// Why the rule did not load (empty when it did).
    pub errors: Vec<String>,
}

/// One exception as the API shows it.
#[derive(Clone, Debug, Serialize)]
pub struct ExceptionInfo {
    pub rule: String,
    pub query: String,
    pub comment: String,
    pub expires: Option<Timestamp>,
}

/// What the API shows about the live rule set.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RulesSnapshot {
    pub dir: String,
    pub loaded_at: Option<Timestamp>,
    pub rules_loaded: usize,
    pub rules_failed: usize,
    pub rules: Vec<RuleInfo>,
    pub exceptions: Vec<ExceptionInfo>,
    pub exception_errors: Vec<String>,
    /// When correlation state was last reset by a rule change.
    pub correlation_state_reset_at: Option<Timestamp>,
}

/// State shared between the detection thread, the writer and the API.
#[derive(Debug)]
pub struct DetectShared {
    pub queue: Arc<DetectQueue>,
    snapshot: RwLock<Arc<RulesSnapshot>>,
}

impl DetectShared {
    pub fn snapshot(&self) -> Arc<RulesSnapshot> {
        self.snapshot
            .read()
            .map(|s| s.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    fn set_snapshot(&self, s: RulesSnapshot) {
        match self.snapshot.write() {
            Ok(mut g) => *g = Arc::new(s),
            Err(p) => *p.into_inner() = Arc::new(s),
        }
    }
}

/// Per-rule facts the hot path needs, by engine rule index.
#[derive(Debug)]
struct RuleRt {
    key: String,
    lifecycle: Lifecycle,
    /// Exceptions that name this rule (or `*`).
    exceptions: Vec<usize>,
}

/// A compiled rule set with everything the detection thread needs.
struct Loaded {
    engine: Engine,
    rules: Vec<RuleRt>,
    corrs: Vec<RuleRt>,
    exceptions: Vec<Exception>,
}

impl Loaded {
    fn compile(
        files: &[(String, String)],
        exceptions: Vec<Exception>,
    ) -> (Loaded, Vec<vigie_rules::RuleError>) {
        let (set, errors) = vigie_rules::load_sources(files);
        let engine = Engine::new(set);
        let mut l = Loaded {
            rules: engine.rules().iter().map(|r| rt(&r.meta)).collect(),
            corrs: engine
                .rule_set()
                .correlations
                .iter()
                .map(|c| rt(&c.meta))
                .collect(),
            engine,
            exceptions,
        };
        l.reindex();
        (l, errors)
    }

    fn set_exceptions(&mut self, exceptions: Vec<Exception>) {
        self.exceptions = exceptions;
        self.reindex();
    }

    fn reindex(&mut self) {
        let ex = &self.exceptions;
        for r in self.rules.iter_mut().chain(self.corrs.iter_mut()) {
            r.exceptions = ex
                .iter()
                .enumerate()
                .filter(|(_, e)| e.rule == "*" || e.rule == r.key)
                .map(|(i, _)| i)
                .collect();
        }
    }

    fn excepted(&self, rt: &RuleRt, ev: &Event, now: Timestamp) -> bool {
        rt.exceptions
            .iter()
            .any(|i| self.exceptions[*i].applies(&rt.key, ev, now))
    }

    fn is_empty(&self) -> bool {
        self.engine.rules().is_empty()
    }
}

fn rule_key(meta: &vigie_rules::RuleMeta) -> String {
    meta.id.clone().unwrap_or_else(|| meta.title.clone())
}

fn rt(meta: &vigie_rules::RuleMeta) -> RuleRt {
    RuleRt {
        key: rule_key(meta),
        lifecycle: Lifecycle::of(meta.status),
        exceptions: Vec::new(),
    }
}

fn info(meta: &vigie_rules::RuleMeta, kind: &'static str) -> RuleInfo {
    RuleInfo {
        id: rule_key(meta),
        title: meta.title.clone(),
        level: meta.level.map(Level::as_str),
        tags: meta.tags.clone(),
        status: status_str(meta.status),
        lifecycle: Some(Lifecycle::of(meta.status)),
        kind,
        source: meta.source.clone(),
        loaded: true,
        errors: Vec::new(),
    }
}

fn snapshot_of(
    dir: &Path,
    l: &Loaded,
    rule_errors: &[vigie_rules::RuleError],
    file_errors: &[FileError],
    exception_errors: &[String],
    reset_at: Option<Timestamp>,
) -> RulesSnapshot {
    let mut rules: Vec<RuleInfo> = l
        .engine
        .rules()
        .iter()
        .map(|r| info(&r.meta, "detection"))
        .chain(
            l.engine
                .rule_set()
                .correlations
                .iter()
                .map(|c| info(&c.meta, "correlation")),
        )
        .collect();
    let loaded = rules.len();
    for e in rule_errors {
        // `path#doc (id)`: keep the id when the location has one.
        let id = e
            .rule
            .split_once(" (")
            .map(|(_, id)| id.trim_end_matches(')').to_string())
            .unwrap_or_default();
        rules.push(RuleInfo {
            id,
            title: String::new(),
            level: None,
            tags: Vec::new(),
            status: None,
            lifecycle: None,
            kind: "detection",
            source: e.rule.clone(),
            loaded: false,
            errors: vec![e.reason.to_string()],
        });
    }
    for e in file_errors {
        rules.push(RuleInfo {
            id: String::new(),
            title: String::new(),
            level: None,
            tags: Vec::new(),
            status: None,
            lifecycle: None,
            kind: "detection",
            source: e.path.clone(),
            loaded: false,
            errors: vec![e.reason.clone()],
        });
    }
    RulesSnapshot {
        dir: dir.display().to_string(),
        loaded_at: Some(now()),
        rules_loaded: loaded,
        rules_failed: rule_errors.len() + file_errors.len(),
        rules,
        exceptions: l
            .exceptions
            .iter()
            .map(|e| ExceptionInfo {
                rule: e.rule.clone(),
                query: e.query_text.clone(),
                comment: e.comment.clone(),
                expires: e.expires,
            })
            .collect(),
        exception_errors: exception_errors.to_vec(),
        correlation_state_reset_at: reset_at,
    }
}

fn read_exceptions(dir: &Path) -> (Vec<Exception>, Vec<String>) {
    let p = dir.join(EXCEPTIONS_FILE);
    match std::fs::metadata(&p) {
        Err(_) => (Vec::new(), Vec::new()),
        Ok(m) if m.len() > MAX_RULE_FILE_BYTES => (
            Vec::new(),
            vec![format!(
                "{EXCEPTIONS_FILE} is {} bytes; it is limited to {MAX_RULE_FILE_BYTES} bytes",
                m.len()
            )],
        ),
        Ok(_) => match std::fs::read_to_string(&p) {
            Ok(t) => parse_exceptions(&t),
            Err(e) => (
                Vec::new(),
                vec![format!("cannot read {}: {e}", p.display())],
            ),
        },
    }
}

// --- detections --------------------------------------------------------------

/// What detection decided, before deduplication: one rule match or one fired
/// correlation.
#[derive(Clone, Debug, PartialEq)]
pub struct Detection {
    pub rule_id: String,
    pub title: String,
    pub severity: AlertSeverity,
    pub tags: Vec<String>,
    pub test: bool,
    pub correlation: bool,
    pub host: String,
    pub group: Vec<(String, String)>,
    pub event_ids: Vec<String>,
    pub first: Timestamp,
    pub last: Timestamp,
}

impl Detection {
    fn of_match(m: &RuleMatch, rt: &RuleRt, ev: &Event) -> Detection {
        Detection {
            rule_id: rt.key.clone(),
            title: m.title().to_string(),
            severity: severity_of(m.level()),
            tags: m.tags().to_vec(),
            test: rt.lifecycle == Lifecycle::Test,
            correlation: false,
            host: ev.host.name.clone(),
            group: Vec::new(),
            event_ids: vec![ev.event.id.clone()],
            first: ev.timestamp,
            last: ev.timestamp,
        }
    }

    fn of_correlation(c: &vigie_rules::CorrelationMatch, rt: &RuleRt, ev: &Event) -> Detection {
        Detection {
            rule_id: rt.key.clone(),
            title: c.meta.title.clone(),
            severity: severity_of(c.meta.level),
            tags: c.meta.tags.clone(),
            test: rt.lifecycle == Lifecycle::Test,
            correlation: true,
            host: ev.host.name.clone(),
            group: c.group.clone(),
            event_ids: c.event_ids.clone(),
            first: c.first,
            last: c.last,
        }
    }
}

/// The detection thread's evaluator: the loaded rules and correlation state.
pub struct Evaluator {
    loaded: Loaded,
    correlator: vigie_rules::Correlator,
    scratch: Scratch,
    matches: Vec<RuleMatch>,
    evictions_seen: u64,
}

/// Counts from one evaluation, for metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct EvalCounts {
    pub excepted: u64,
}

impl Evaluator {
    fn new(loaded: Loaded) -> Evaluator {
        let correlator = vigie_rules::Correlator::new(loaded.engine.rule_set());
        Evaluator {
            loaded,
            correlator,
            scratch: Scratch::default(),
            matches: Vec::new(),
            evictions_seen: 0,
        }
    }

    /// Evaluates one event; detections are appended to `out`.
    pub fn evaluate(&mut self, ev: &Event, now: Timestamp, out: &mut Vec<Detection>) -> EvalCounts {
        let mut counts = EvalCounts::default();
        self.matches.clear();
        self.loaded
            .engine
            .evaluate_with(ev, &mut self.scratch, &mut self.matches);
        if self.matches.is_empty() {
            return counts;
        }
        let loaded = &self.loaded;
        self.matches.retain(|m| {
            let keep = !loaded.excepted(&loaded.rules[m.rule], ev, now);
            if !keep {
                counts.excepted += 1;
            }
            keep
        });
        for m in &self.matches {
            let rt = &loaded.rules[m.rule];
            if m.standalone && rt.lifecycle != Lifecycle::Disabled {
                out.push(Detection::of_match(m, rt, ev));
            }
        }
        for c in self.correlator.observe(ev, &self.matches) {
            let rt = &loaded.corrs[c.correlation];
            if rt.lifecycle == Lifecycle::Disabled {
                continue;
            }
            if loaded.excepted(rt, ev, now) {
                counts.excepted += 1;
                continue;
            }
            out.push(Detection::of_correlation(&c, rt, ev));
        }
        counts
    }

    /// Correlation state dropped to stay within bounds since the last call.
    fn new_evictions(&mut self) -> u64 {
        let total: u64 = self
            .correlator
            .stats()
            .iter()
            .map(|s| s.groups_evicted + s.events_evicted)
            .sum();
        let d = total.saturating_sub(self.evictions_seen);
        self.evictions_seen = total;
        d
    }
}

/// Loads the rules directory into an evaluator, for tests and the runtime.
pub fn load_dir(dir: &Path) -> (Evaluator, RulesSnapshot) {
    let (files, file_errors) = read_rule_files(dir);
    let (exceptions, exception_errors) = read_exceptions(dir);
    let (loaded, rule_errors) = Loaded::compile(&files, exceptions);
    let snap = snapshot_of(
        dir,
        &loaded,
        &rule_errors,
        &file_errors,
        &exception_errors,
        None,
    );
    (Evaluator::new(loaded), snap)
}

// --- the runtime ----------------------------------------------------------------

/// The running detection thread.
#[derive(Debug)]
pub struct Detector {
    pub shared: Arc<DetectShared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Detector {
    /// Loads the rules (blocking: call from a blocking thread) and starts the detection thread.
    pub fn start(
        cfg: DetectConfig,
        alerts: Arc<Alerts>,
        metrics: Arc<Metrics>,
        notify: tokio::sync::mpsc::Sender<vigie_store::AlertRecord>,
    ) -> std::io::Result<Detector> {
        std::fs::create_dir_all(&cfg.rules_dir).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!(
                    "cannot create the rules directory {}: {e}; set rules_dir to a writable directory",
                    cfg.rules_dir.display()
                ),
            )
        })?;
        let queue = Arc::new(DetectQueue::new(
            cfg.queue_events,
            cfg.max_wait,
            metrics.clone(),
        ));
        let shared = Arc::new(DetectShared {
            queue: queue.clone(),
            snapshot: RwLock::new(Arc::new(RulesSnapshot::default())),
        });
        let mut rt = Runtime {
            fingerprint: fingerprint(&cfg.rules_dir),
            evaluator: None,
            cfg,
            shared: shared.clone(),
            alerts,
            metrics,
            notify,
            dropped_seen: 0,
            rule_errors: Vec::new(),
            file_errors: Vec::new(),
        };
        rt.load_all();
        let thread = std::thread::Builder::new()
            .name("vigie-detect".into())
            .spawn(move || rt.run())?;
        Ok(Detector {
            shared,
            thread: Some(thread),
        })
    }

    /// Finishes the queued events and stops (blocking).
    pub fn stop(mut self) {
        self.shared.queue.close();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Runtime {
    cfg: DetectConfig,
    shared: Arc<DetectShared>,
    alerts: Arc<Alerts>,
    metrics: Arc<Metrics>,
    notify: tokio::sync::mpsc::Sender<vigie_store::AlertRecord>,
    fingerprint: Vec<(PathBuf, u64, i128)>,
    evaluator: Option<Evaluator>,
    dropped_seen: u64,
    rule_errors: Vec<vigie_rules::RuleError>,
    file_errors: Vec<FileError>,
}

impl Runtime {
    fn run(mut self) {
        let mut last_poll = Instant::now();
        loop {
            match self.shared.queue.pop(Duration::from_millis(500)) {
                Pop::Batch(b) => self.process(&b),
                Pop::Timeout => {}
                Pop::Closed => break,
            }
            self.check_drops();
            if last_poll.elapsed() >= self.cfg.reload_interval {
                last_poll = Instant::now();
                self.poll_rules();
            }
        }
        tracing::debug!("detection thread stopped");
    }

    fn process(&mut self, batch: &[Event]) {
        let Some(ev) = self.evaluator.as_mut() else {
            return;
        };
        let now = now();
        let mut detections = Vec::new();
        let mut excepted = 0;
        for e in batch {
            excepted += ev.evaluate(e, now, &mut detections).excepted;
        }
        let m = &self.metrics;
        m.detection_events.fetch_add(batch.len() as u64, Relaxed);
        m.alerts_excepted.fetch_add(excepted, Relaxed);
        m.correlation_evictions
            .fetch_add(ev.new_evictions(), Relaxed);
        if let Some(ingested) = batch.last().and_then(|e| e.event.ingested) {
            let lag = now.0.saturating_sub(ingested.0).max(0) / 1_000_000;
            m.detection_lag_ms.store(lag as u64, Relaxed);
        }
        self.raise(detections, now);
    }

    fn raise(&self, detections: Vec<Detection>, now: Timestamp) {
        if detections.is_empty() {
            return;
        }
        match self.alerts.record(&detections, now) {
            Ok(new_alerts) => {
                for a in new_alerts {
                    if let Err(e) = self.notify.try_send(a) {
                        let m = &self.metrics;
                        m.notifications_dropped.fetch_add(1, Relaxed);
                        tracing::warn!(error = %e, "notification queue full or closed: notification dropped (counted in vigie_notifications_total{{outcome=\"dropped\"}})");
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, detections = detections.len(), "cannot store alerts; these detections are lost (see vigie_alerts_lost_total)");
                self.metrics
                    .alerts_lost
                    .fetch_add(detections.len() as u64, Relaxed);
            }
        }
    }

    /// Raises a health alert when the writer had to drop events from detection.
    fn check_drops(&mut self) {
        let dropped = self.metrics.detection_dropped_events.load(Relaxed);
        if dropped == self.dropped_seen {
            return;
        }
        let n = dropped - self.dropped_seen;
        self.dropped_seen = dropped;
        let now = now();
        let d = Detection {
            rule_id: "vigie-detection-overflow".into(),
            title: format!(
                "Detection queue overflow: {n} stored events were not evaluated by the rules"
            ),
            severity: AlertSeverity::High,
            tags: vec!["vigie.health".into()],
            test: false,
            correlation: false,
            host: self.cfg.hostname.clone(),
            group: Vec::new(),
            event_ids: Vec::new(),
            first: now,
            last: now,
        };
        self.raise(vec![d], now);
    }

    fn poll_rules(&mut self) {
        let fp = fingerprint(&self.cfg.rules_dir);
        if fp == self.fingerprint {
            return;
        }
        let only_exceptions = {
            let strip = |v: &[(PathBuf, u64, i128)]| -> Vec<(PathBuf, u64, i128)> {
                v.iter()
                    .filter(|(p, _, _)| {
                        !p.ends_with(EXCEPTIONS_FILE) || p.parent() != Some(&self.cfg.rules_dir)
                    })
                    .cloned()
                    .collect()
            };
            strip(&fp) == strip(&self.fingerprint)
        };
        self.fingerprint = fp;
        if only_exceptions && let Some(ev) = self.evaluator.as_mut() {
            let (exceptions, errors) = read_exceptions(&self.cfg.rules_dir);
            for e in &errors {
                tracing::warn!(error = %e, "exception not applied");
            }
            ev.loaded.set_exceptions(exceptions);
            let prev = self.shared.snapshot().correlation_state_reset_at;
            let snap = snapshot_of(
                &self.cfg.rules_dir,
                &ev.loaded,
                &self.rule_errors,
                &self.file_errors,
                &errors,
                prev,
            );
            tracing::info!(exceptions = snap.exceptions.len(), "exceptions reloaded");
            self.shared.set_snapshot(snap);
            return;
        }
        let had_correlations = self
            .evaluator
            .as_ref()
            .is_some_and(|e| !e.loaded.engine.rule_set().correlations.is_empty());
        self.load_all();
        if had_correlations {
            tracing::info!(
                "rules changed: correlation state was reset (open correlation windows start afresh)"
            );
        }
    }

    /// Reads and compiles the whole directory, then swaps the evaluator in.
    fn load_all(&mut self) {
        let started = Instant::now();
        let dir = self.cfg.rules_dir.clone();
        let (files, file_errors) = read_rule_files(&dir);
        let (exceptions, exception_errors) = read_exceptions(&dir);
        let (loaded, rule_errors) = Loaded::compile(&files, exceptions);
        for e in &file_errors {
            tracing::warn!(file = %e.path, reason = %e.reason, "rule file not loaded");
        }
        for e in &rule_errors {
            tracing::warn!(rule = %e.rule, reason = %e.reason, "rule not loaded");
        }
        for e in &exception_errors {
            tracing::warn!(error = %e, "exception not applied");
        }
        let reset_at = self.evaluator.is_some().then(now);
        let snap = snapshot_of(
            &dir,
            &loaded,
            &rule_errors,
            &file_errors,
            &exception_errors,
            reset_at.or(self.shared.snapshot().correlation_state_reset_at),
        );
        tracing::info!(
            dir = %dir.display(),
            loaded = snap.rules_loaded,
            failed = snap.rules_failed,
            exceptions = snap.exceptions.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "rules loaded"
        );
        self.metrics
            .rules_loaded
            .store(snap.rules_loaded as u64, Relaxed);
        self.metrics
            .rules_failed
            .store(snap.rules_failed as u64, Relaxed);
        self.metrics.rules_reloads.fetch_add(1, Relaxed);
        self.shared.queue.active.store(!loaded.is_empty(), Relaxed);
        self.shared.set_snapshot(snap);
        self.rule_errors = rule_errors;
        self.file_errors = file_errors;
        self.evaluator = Some(Evaluator::new(loaded));
    }
}

/// For tests: detections of a rule set over events.
pub fn evaluate_all(ev: &mut Evaluator, events: &[Event], now: Timestamp) -> Vec<Detection> {
    let mut out = Vec::new();
    for e in events {
        ev.evaluate(e, now, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigie_proto::Outcome;
    use vigie_proto::event::{Endpoint, Kind, Log};

    const NC: &str = "title: Netcat listener\nid: nc-1\nstatus: stable\nlevel: high\ntags: [attack.t1059]\nlogsource: {product: linux, category: process_creation}\ndetection:\n  sel:\n    Image|endswith: /nc\n    CommandLine|contains: ' -l'\n  condition: sel\n";

    const SSH: &str = "title: SSH failure\nid: ssh-fail\nname: ssh_fail\nstatus: test\nlogsource: {product: linux, service: sshd}\ndetection:\n  sel:\n    event.outcome: failure\n  condition: sel\n---\ntitle: SSH brute force\nid: ssh-brute\nstatus: stable\nlevel: critical\ncorrelation:\n  type: event_count\n  rules: [ssh_fail]\n  group-by: [SourceIp]\n  timespan: 1m\n  condition: {gte: 3}\n";

    fn exec(t: i64, image: &str, cmd: &str, id: &str) -> Event {
        let mut e = Event::new(Kind::ProcessExec, Timestamp::from_secs(t));
        e.event.id = id.into();
        e.host.name = "web1".into();
        let p = e.process.get_or_insert_with(Default::default);
        p.executable = image.into();
        p.command_line = cmd.into();
        e
    }

    fn ssh_fail(t: i64, ip: &str, id: &str) -> Event {
        let mut e = Event::new(Kind::Authentication, Timestamp::from_secs(t));
        e.event.id = id.into();
        e.event.outcome = Some(Outcome::Failure);
        e.host.name = "web1".into();
        e.log = Some(Log {
            logger: "sshd".into(),
            ..Default::default()
        });
        e.source = Some(Endpoint {
            ip: ip.parse().ok(),
            ..Default::default()
        });
        e
    }

    fn write(dir: &Path, name: &str, text: &str) {
        let p = dir.join(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(p, text).expect("write");
    }

    #[test]
    fn rules_dir_loads_every_yaml_file_and_reports_the_rest() {
        let tmp = tempfile::tempdir().expect("tmp");
        let d = tmp.path();
        write(d, "nc.yml", NC);
        write(d, "linux/ssh.yaml", SSH);
        write(d, "broken.yml", "title: [unclosed");
        write(d, "notes.txt", "not a rule");
        write(d, ".hidden.yml", "title: [ignored");
        write(
            d,
            EXCEPTIONS_FILE,
            "exceptions:\n  - rule: nc-1\n    query: 'host.name:build*'\n    comment: CI runners\n  - rule: x\n    query: 'user.nme:root'\n",
        );
        std::fs::write(
            d.join("big.yml"),
            vec![b'#'; MAX_RULE_FILE_BYTES as usize + 1],
        )
        .expect("big");
        let (_, snap) = load_dir(d);
        assert_eq!(snap.rules_loaded, 3, "{:#?}", snap.rules);
        assert_eq!(snap.rules_failed, 2, "{:#?}", snap.rules);
        let by_id = |id: &str| snap.rules.iter().find(|r| r.id == id).expect(id);
        let nc = by_id("nc-1");
        assert_eq!(
            (nc.title.as_str(), nc.level, nc.status, nc.lifecycle),
            (
                "Netcat listener",
                Some("high"),
                Some("stable"),
                Some(Lifecycle::Live)
            )
        );
        assert_eq!(nc.tags, ["attack.t1059"]);
        assert_eq!(by_id("ssh-fail").lifecycle, Some(Lifecycle::Test));
        assert_eq!(by_id("ssh-brute").kind, "correlation");
        let failed: Vec<(&str, &str)> = snap
            .rules
            .iter()
            .filter(|r| !r.loaded)
            .map(|r| (r.source.as_str(), r.errors[0].as_str()))
            .collect();
        assert!(
            failed
                .iter()
                .any(|(s, e)| *s == "broken.yml" && e.starts_with("invalid yaml")),
            "{failed:?}"
        );
        assert!(
            failed
                .iter()
                .any(|(s, e)| *s == "big.yml" && e.contains("limited to")),
            "{failed:?}"
        );
        assert_eq!(snap.exceptions.len(), 1);
        assert_eq!(snap.exceptions[0].comment, "CI runners");
        assert_eq!(snap.exception_errors.len(), 1);
        assert!(
            snap.exception_errors[0].contains("entry 2 (rule x)")
                && snap.exception_errors[0].contains("user.name"),
            "{:?}",
            snap.exception_errors
        );
    }

    #[test]
    fn exceptions_file_errors_say_what_to_write() {
        assert!(parse_exceptions("").0.is_empty());
        assert!(parse_exceptions("exceptions: []").1.is_empty());
        let (ok, errs) = parse_exceptions(
            "- rule: '*'\n  query: 'user.name:backup'\n- {query: x}\n- {rule: r}\n- {rule: r, query: x, expire: 1}\n- {rule: r, query: x, expires: tomorrow}\n- 42\n",
        );
        assert_eq!(ok.len(), 1);
        assert_eq!(ok[0].rule, "*");
        assert_eq!(errs.len(), 5, "{errs:?}");
        assert!(errs[0].contains("entry 2: missing `rule`"));
        assert!(errs[1].contains("entry 3: missing `query`"));
        assert!(errs[2].contains("unknown key `expire`"));
        assert!(errs[3].contains("RFC 3339"));
        assert!(errs[4].contains("entry 6: expected a mapping"));
        assert!(parse_exceptions("exceptions: {a: 1}").1[0].contains("expected `exceptions:`"));
    }

    #[test]
    fn evaluation_applies_exceptions_lifecycle_and_correlations() {
        let tmp = tempfile::tempdir().expect("tmp");
        let d = tmp.path();
        write(d, "nc.yml", NC);
        write(d, "ssh.yml", SSH);
        write(
            d,
            "old.yml",
            "title: Old\nid: old-1\nstatus: deprecated\nlogsource: {product: linux, category: process_creation}\ndetection: {sel: {Image|endswith: /nc}, condition: sel}\n",
        );
        write(
            d,
            EXCEPTIONS_FILE,
            "- rule: ssh-fail\n  query: 'source.ip:10.0.0.0/8'\n",
        );
        let (mut ev, _) = load_dir(d);
        let now = Timestamp::from_secs(1_000);
        let mut events = vec![
            exec(100, "/usr/bin/nc", "nc -lvp 4444", "e0"),
            exec(101, "/usr/bin/nc", "nc example.org 80", "e1"),
        ];
        for i in 0..4 {
            events.push(ssh_fail(110 + i, "203.0.113.9", &format!("s{i}")));
            events.push(ssh_fail(110 + i, "10.1.2.3", &format!("x{i}")));
        }
        let dets = evaluate_all(&mut ev, &events, now);
        let ids: Vec<(&str, bool)> = dets.iter().map(|d| (d.rule_id.as_str(), d.test)).collect();
        // nc once (the deprecated twin raises nothing); the ssh base rule does not
        // generate alone (generate: false); the correlation fires at the third failure
        // from 203.0.113.9, and never for 10.1.2.3 (exception).
        assert_eq!(ids, [("nc-1", false), ("ssh-brute", false)], "{dets:#?}");
        let c = &dets[1];
        assert!(c.correlation);
        assert_eq!(
            c.group,
            [("SourceIp".to_string(), "203.0.113.9".to_string())]
        );
        assert_eq!(c.event_ids, ["s0", "s1", "s2"]);
        assert_eq!(c.severity, AlertSeverity::Critical);
        assert_eq!(dets[0].severity, AlertSeverity::High);
        assert_eq!(dets[0].event_ids, ["e0"]);
    }

    #[test]
    fn queue_applies_back_pressure_then_counts_drops() {
        let m = Arc::new(Metrics::default());
        let q = DetectQueue::new(3, Duration::from_millis(20), m.clone());
        let batch = |n: usize| (0..n).map(|_| Event::default()).collect::<Vec<_>>();
        assert!(q.push(Arc::new(batch(2)), Duration::ZERO));
        assert!(
            !q.push(Arc::new(batch(2)), Duration::from_millis(10)),
            "full"
        );
        q.hand_over(batch(2));
        assert_eq!(m.detection_dropped_events.load(Relaxed), 2);
        assert_eq!(m.detection_queue_events.load(Relaxed), 2);
        // A waiting writer gets in as soon as the detection thread takes a batch.
        std::thread::scope(|s| {
            s.spawn(|| {
                std::thread::sleep(Duration::from_millis(30));
                assert!(matches!(q.pop(Duration::from_secs(1)), Pop::Batch(b) if b.len() == 2));
            });
            assert!(q.push(Arc::new(batch(3)), Duration::from_secs(5)));
        });
        assert!(matches!(q.pop(Duration::ZERO), Pop::Batch(b) if b.len() == 3));
        assert!(matches!(q.pop(Duration::from_millis(5)), Pop::Timeout));
        // Larger than the whole queue: accepted when empty.
        assert!(q.push(Arc::new(batch(10)), Duration::ZERO));
        q.close();
        assert!(
            matches!(q.pop(Duration::ZERO), Pop::Batch(_)),
            "drains after close"
        );
        assert!(matches!(q.pop(Duration::ZERO), Pop::Closed));
        assert!(!q.push(Arc::new(batch(1)), Duration::ZERO));
    }

    #[test]
    fn runtime_raises_alerts_and_hot_reloads() {
        let tmp = tempfile::tempdir().expect("tmp");
        let rules = tmp.path().join("rules");
        let store =
            vigie_store::Store::open(&tmp.path().join("store"), Default::default()).expect("store");
        let metrics = Arc::new(Metrics::default());
        let alerts = Arc::new(
            Alerts::open(store.clone(), Default::default(), metrics.clone()).expect("alerts"),
        );
        let (tx, mut rx) = tokio::sync::mpsc::channel(16);
        let det = Detector::start(
            DetectConfig {
                rules_dir: rules.clone(),
                reload_interval: Duration::from_millis(20),
                queue_events: 1000,
                max_wait: Duration::from_secs(1),
                hostname: "collector1".into(),
            },
            alerts.clone(),
            metrics.clone(),
            tx,
        )
        .expect("start");
        assert!(rules.is_dir(), "rules directory created on first start");
        assert!(!det.shared.queue.active(), "no rules: nothing is queued");
        write(&rules, "nc.yml", NC);
        let wait = |what: &str, f: &dyn Fn() -> bool| {
            let t = Instant::now();
            while !f() {
                assert!(
                    t.elapsed() < Duration::from_secs(10),
                    "timed out waiting for {what}"
                );
                std::thread::sleep(Duration::from_millis(10));
            }
        };
        wait("reload", &|| det.shared.queue.active());
        assert_eq!(det.shared.snapshot().rules_loaded, 1);
        det.shared.queue.hand_over(vec![
            exec(100, "/bin/nc", "nc -l 1", "a"),
            exec(101, "/bin/nc", "nc -l 2", "b"),
        ]);
        wait("alert", &|| metrics.detection_events.load(Relaxed) == 2);
        let a = rx.try_recv().expect("new alert handed to the notifier");
        assert_eq!((a.rule_id.as_str(), a.count, a.event_count), ("nc-1", 2, 2));
        assert_eq!(
            store
                .get_alert(a.id)
                .expect("get")
                .expect("stored")
                .event_ids,
            ["a", "b"]
        );
        // A broken edit: reported, the runtime goes on with what loads.
        write(&rules, "nc.yml", "title: [broken");
        wait("broken reload", &|| det.shared.snapshot().rules_failed == 1);
        assert!(!det.shared.queue.active());
        det.stop();
        assert_eq!(metrics.rules_loaded.load(Relaxed), 0);
        assert_eq!(metrics.rules_failed.load(Relaxed), 1);
    }
}

//! Process-level reliability tests (R1, R2, R3, R5, R7 of `shared/design/targets.md`).
//!
//! The real `vigie` binary runs as separate processes (collector, agent), so `kill -9`
//! is real. A writer thread appends numbered lines (`seq=000123 payload…`) to a file the
//! agent tails, at a steady rate, while the scenario hurts the system: SIGKILL of the
//! collector (R1) or of the agent (R2), a network partition through a network namespace
//! whose veth link goes down (R3), a full disk under the agent's spool or under the
//! collector's store (R5), a restored old copy of the agent's data directory (R7).
//! Then every stored event is read back through the management API and the conservation
//! rule is checked: every produced line stored exactly once (no loss, no duplicate).
//!
//! Counts: reduced by default (CI); `VIGIE_FULL=1` for the full counts of the targets
//! (`bench/reliability.sh`). `VIGIE_SEED=N` replays a run's random kill moments. Each
//! scenario prints one summary line starting with `RELIABILITY `. Scenarios run one at a
//! time (a lock), so their timings do not disturb each other. On failure, the last lines
//! of each process's log are printed and the scratch directory is kept (`VIGIE_KEEP=1`
//! keeps it always).
//!
//! Needs root (tmpfs mounts, network namespaces); it fails — never skips — without them.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_vigie");
/// Every line the writer produces matches this query.
const FILE_Q: &str = "event.module:file";
const FROM: &str = "2000-01-01T00:00:00Z";

fn full() -> bool {
    std::env::var("VIGIE_FULL").is_ok_and(|v| v == "1")
}

fn mode() -> &'static str {
    if full() { "full" } else { "ci" }
}

/// One scenario at a time: they are timing-sensitive and the machine has two cores.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn sleep(d: Duration) {
    std::thread::sleep(d);
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

// ---------------------------------------------------------------------------------------
// Seeded randomness (SplitMix64): the seed is printed so a run can be replayed.

struct Rng(u64);

impl Rng {
    fn from_env(scenario: &str) -> (Rng, u64) {
        let seed = std::env::var("VIGIE_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
            });
        println!("{scenario}: seed {seed} (replay with VIGIE_SEED={seed})");
        (Rng(seed), seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[lo, hi)`.
    fn range(&mut self, lo: f64, hi: f64) -> f64 {
        let u = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        lo + (hi - lo) * u
    }
}

// ---------------------------------------------------------------------------------------
// Scratch directory, logs, child processes.

/// A scratch directory; removed at the end, kept (with log tails printed) on failure.
struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    fn new(scenario: &str) -> Scratch {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir = std::env::temp_dir().join(format!(
            "vigie-rel-{scenario}-{}-{nanos}",
            std::process::id()
        ));
        fs::create_dir_all(dir.join("logs")).expect("create the scratch directory");
        Scratch { dir }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.join(p)
    }

    fn log(&self, name: &str) -> PathBuf {
        self.dir.join("logs").join(format!("{name}.log"))
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Ok(rd) = fs::read_dir(self.dir.join("logs")) {
                let mut paths: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
                paths.sort();
                for p in paths {
                    eprintln!(
                        "----- last lines of {} -----\n{}",
                        p.display(),
                        tail(&p, 60)
                    );
                }
            }
            eprintln!(
                "scratch directory kept for inspection: {}",
                self.dir.display()
            );
        } else if std::env::var_os("VIGIE_KEEP").is_some() {
            println!(
                "scratch directory kept (VIGIE_KEEP): {}",
                self.dir.display()
            );
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// Appends a marker line to a process log (the process appends to the same file).
fn mark(log: &Path, what: &str) {
    if let Ok(mut f) = fs::OpenOptions::new().create(true).append(true).open(log) {
        let _ = writeln!(f, "===== test: {what} =====");
    }
}

/// A child process, killed (SIGKILL) and reaped on drop.
struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn spawn(name: &str, mut cmd: Command, log: &Path) -> Proc {
        let f = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("open the process log");
        cmd.stdin(Stdio::null())
            .stdout(f.try_clone().expect("clone the log handle"))
            .stderr(f)
            .env("RUST_LOG", "info,quinn=warn");
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Proc {
            name: name.to_string(),
            child,
            log: log.to_path_buf(),
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Panics (with the log's tail) if the process has exited.
    fn check_alive(&mut self) {
        if let Ok(Some(st)) = self.child.try_wait() {
            panic!(
                "{} exited unexpectedly ({st}); last log lines:\n{}",
                self.name,
                tail(&self.log, 40)
            );
        }
    }

    /// SIGKILL (what `Child::kill` sends), then reap.
    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait for a clean exit.
    fn term(&mut self, within: Duration) -> ExitStatus {
        let st = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("run kill -TERM");
        assert!(st.success(), "kill -TERM {} failed", self.pid());
        let start = Instant::now();
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st;
            }
            if start.elapsed() > within {
                panic!(
                    "{} did not stop within {within:?} of SIGTERM; last log lines:\n{}",
                    self.name,
                    tail(&self.log, 40)
                );
            }
            sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let t =
        std::net::TcpListener::bind(s.local_addr().expect("addr")).expect("tcp on the same port");
    let p = t.local_addr().expect("addr").port();
    drop((s, t));
    p
}

/// Runs a command to completion; Err carries its stderr.
fn run(prog: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(prog)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run {prog}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "`{prog} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Polls `f` every `every` until it returns Some, or panics after `within` with `what()`.
fn poll<T>(
    within: Duration,
    every: Duration,
    what: impl Fn() -> String,
    mut f: impl FnMut() -> Option<T>,
) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        if start.elapsed() > within {
            panic!("timed out after {within:?}: {}", what());
        }
        sleep(every);
    }
}

// ---------------------------------------------------------------------------------------
// The collector's management API.

#[derive(Clone)]
struct Api {
    base: String,
    token: String,
    http: ureq::Agent,
}

impl Api {
    fn get(&self, path: &str, params: &[(&str, &str)]) -> Result<Value, String> {
        let mut req = self
            .http
            .get(&format!("{}{path}", self.base))
            .set("Authorization", &format!("Bearer {}", self.token));
        for (k, v) in params {
            req = req.query(k, v);
        }
        match req.call() {
            Ok(r) => r.into_json().map_err(|e| format!("{path}: bad JSON: {e}")),
            Err(ureq::Error::Status(code, r)) => Err(format!(
                "{path}: HTTP {code}: {}",
                r.into_string().unwrap_or_default()
            )),
            Err(e) => Err(format!("{path}: {e}")),
        }
    }

    /// Exact number of stored events matching `q`.
    fn count(&self, q: &str) -> Result<u64, String> {
        let v = self.get(
            "/api/v1/search",
            &[("q", q), ("from", FROM), ("limit", "1"), ("count", "true")],
        )?;
        v["total"]
            .as_u64()
            .ok_or_else(|| format!("search without a total: {v}"))
    }

    /// Calls `f` on every stored event matching `q`, page by page (newest first).
    fn scan(&self, q: &str, mut f: impl FnMut(&Value)) -> Result<u64, String> {
        let mut before: Option<String> = None;
        let mut n = 0;
        loop {
            let mut params = vec![
                ("q", q),
                ("from", FROM),
                ("limit", "10000"),
                ("count", "false"),
            ];
            if let Some(b) = &before {
                params.push(("before", b.as_str()));
            }
            let v = self.get("/api/v1/search", &params)?;
            let events = v["events"].as_array().cloned().unwrap_or_default();
            for e in &events {
                f(e);
            }
            n += events.len() as u64;
            match v["next"].as_str() {
                Some(next) if !events.is_empty() => before = Some(next.to_string()),
                _ => return Ok(n),
            }
        }
    }

    fn health(&self) -> Result<Value, String> {
        self.get("/api/v1/health", &[])
    }

    /// Events in the store (all kinds), from `/api/v1/health`: cheap.
    fn store_events(&self) -> Result<u64, String> {
        self.health()?["store"]["events"]
            .as_u64()
            .ok_or_else(|| "health without store.events".into())
    }

    /// One sample of `/metrics` (`name` with its labels, e.g. `vigie_batches_total{outcome="stored"}`).
    fn metric(&self, name: &str) -> Result<u64, String> {
        let text = self
            .http
            .get(&format!("{}/metrics", self.base))
            .call()
            .map_err(|e| format!("/metrics: {e}"))?
            .into_string()
            .map_err(|e| format!("/metrics: {e}"))?;
        text.lines()
            .find_map(|l| {
                l.strip_prefix(name)
                    .and_then(|rest| rest.strip_prefix(' '))
                    .and_then(|v| v.trim().parse::<f64>().ok())
            })
            .map(|v| v as u64)
            .ok_or_else(|| format!("/metrics has no {name}"))
    }
}

// ---------------------------------------------------------------------------------------
// Collector and agent processes.

struct Collector {
    /// `--data-dir`: the collector keeps its data in `root/collector`.
    root: PathBuf,
    ingest: SocketAddr,
    api_addr: SocketAddr,
    config: Option<PathBuf>,
    log: PathBuf,
    proc: Option<Proc>,
    api: Option<Api>,
    starts: u32,
}

impl Collector {
    /// On loopback, configured by command-line flags.
    fn loopback(s: &Scratch) -> Collector {
        Collector {
            root: s.path("data"),
            ingest: SocketAddr::from(([127, 0, 0, 1], free_port())),
            api_addr: SocketAddr::from(([127, 0, 0, 1], free_port())),
            config: None,
            log: s.log("collector"),
            proc: None,
            api: None,
            starts: 0,
        }
    }

    /// Configured by a TOML file (`extra` is appended to it).
    fn with_config(
        s: &Scratch,
        root: PathBuf,
        ingest: SocketAddr,
        advertise: &str,
        extra: &str,
    ) -> Collector {
        let api_addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let cfg = s.path("collector.toml");
        fs::write(
            &cfg,
            format!(
                "data_dir = \"{}\"\ningest_listen = \"{ingest}\"\nadvertise = [\"{advertise}\"]\napi_listen = \"{api_addr}\"\n{extra}\n",
                root.join("collector").display()
            ),
        )
        .expect("write collector.toml");
        Collector {
            root,
            ingest,
            api_addr,
            config: Some(cfg),
            log: s.log("collector"),
            proc: None,
            api: None,
            starts: 0,
        }
    }

    /// Starts the collector and waits until its API answers; returns when it did.
    fn start(&mut self) -> Instant {
        assert!(self.proc.is_none(), "collector already running");
        self.starts += 1;
        mark(&self.log, &format!("collector start #{}", self.starts));
        let mut cmd = Command::new(BIN);
        cmd.arg("--data-dir").arg(&self.root).arg("collector");
        match &self.config {
            Some(c) => {
                cmd.arg("--config").arg(c);
            }
            None => {
                cmd.args([
                    "--ingest",
                    &self.ingest.to_string(),
                    "--api-listen",
                    &self.api_addr.to_string(),
                ]);
            }
        }
        self.proc = Some(Proc::spawn("collector", cmd, &self.log));
        let http = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(2))
            .timeout(Duration::from_secs(120))
            .build();
        let url = format!("http://{}/healthz", self.api_addr);
        let started = Instant::now();
        loop {
            if http.get(&url).call().is_ok() {
                break;
            }
            if let Some(p) = self.proc.as_mut() {
                p.check_alive();
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "collector API not up within 60 s; last log lines:\n{}",
                tail(&self.log, 40)
            );
            sleep(Duration::from_millis(20));
        }
        let ready = Instant::now();
        // `vigie collector` writes api.url (read by `vigie enroll create`) just after its API
        // starts answering.
        let want = format!("http://{}", self.api_addr);
        let url_file = self.root.join("collector/api.url");
        poll(
            Duration::from_secs(30),
            Duration::from_millis(10),
            || format!("{} never named {want}", url_file.display()),
            || (fs::read_to_string(&url_file).is_ok_and(|u| u.trim() == want)).then_some(()),
        );
        let token = fs::read_to_string(self.root.join("collector/api.token"))
            .expect("collector/api.token")
            .trim()
            .to_string();
        self.api = Some(Api {
            base: format!("http://{}", self.api_addr),
            token,
            http,
        });
        ready
    }

    fn api(&self) -> Api {
        self.api.clone().expect("collector started once")
    }

    fn kill9(&mut self) {
        mark(&self.log, "collector kill -9");
        if let Some(mut p) = self.proc.take() {
            p.kill9();
        }
    }

    fn check_alive(&mut self) {
        if let Some(p) = self.proc.as_mut() {
            p.check_alive();
        }
    }

    fn term(&mut self) {
        mark(&self.log, "collector SIGTERM");
        if let Some(mut p) = self.proc.take() {
            let st = p.term(Duration::from_secs(30));
            assert!(st.success(), "collector exited with {st} after SIGTERM");
        }
    }

    /// A single-use enrollment token through `vigie enroll create`, in a file.
    fn token_file(&self, s: &Scratch) -> PathBuf {
        let out = Command::new(BIN)
            .arg("--data-dir")
            .arg(&self.root)
            .args(["enroll", "create", "--expires", "10m"])
            .output()
            .expect("run vigie enroll create");
        assert!(
            out.status.success(),
            "vigie enroll create failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert!(!token.is_empty(), "vigie enroll create printed no token");
        let f = s.path("token");
        fs::write(&f, token).expect("write the token file");
        f
    }
}

struct Agent {
    config: PathBuf,
    data: PathBuf,
    log: PathBuf,
    netns: Option<String>,
    proc: Option<Proc>,
    starts: u32,
}

impl Agent {
    /// Writes the agent's configuration: one file input on `watched`, shipping to `collector`.
    fn new(
        s: &Scratch,
        data: PathBuf,
        collector: &str,
        watched: &Path,
        spool: &str,
        health_interval: &str,
        netns: Option<String>,
    ) -> Agent {
        let config = s.path("agent.toml");
        fs::write(
            &config,
            format!(
                r#"data_dir = "{}"
collectors = ["{collector}"]

[spool]
{spool}

[health]
interval = "{health_interval}"

[[file]]
name = "src"
paths = ["{}"]
read_from = "beginning"
poll_interval = "50ms"
"#,
                data.display(),
                watched.display()
            ),
        )
        .expect("write agent.toml");
        Agent {
            config,
            data,
            log: s.log("agent"),
            netns,
            proc: None,
            starts: 0,
        }
    }

    fn command(&self) -> Command {
        match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, BIN]);
                c
            }
            None => Command::new(BIN),
        }
    }

    fn enroll(&self, token_file: &Path) {
        mark(&self.log, "agent enroll");
        let out = self
            .command()
            .args(["agent", "enroll", "--token-file"])
            .arg(token_file)
            .arg("--config")
            .arg(&self.config)
            .output()
            .expect("run vigie agent enroll");
        assert!(
            out.status.success(),
            "vigie agent enroll failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn start(&mut self) -> Instant {
        assert!(self.proc.is_none(), "agent already running");
        self.starts += 1;
        mark(&self.log, &format!("agent start #{}", self.starts));
        let mut cmd = self.command();
        cmd.args(["agent", "run", "--config"]).arg(&self.config);
        self.proc = Some(Proc::spawn("agent", cmd, &self.log));
        Instant::now()
    }

    fn kill9(&mut self) {
        mark(&self.log, "agent kill -9");
        if let Some(mut p) = self.proc.take() {
            p.kill9();
        }
    }

    fn term(&mut self) {
        mark(&self.log, "agent SIGTERM");
        if let Some(mut p) = self.proc.take() {
            let st = p.term(Duration::from_secs(30));
            assert!(st.success(), "agent exited with {st} after SIGTERM");
        }
    }

    fn check_alive(&mut self) {
        if let Some(p) = self.proc.as_mut() {
            p.check_alive();
        }
    }
}

/// Collector on loopback, an enrolled agent tailing `in.log`.
fn loopback_pair(s: &Scratch, spool: &str) -> (Collector, Agent) {
    let mut c = Collector::loopback(s);
    c.start();
    let watched = s.path("in.log");
    fs::write(&watched, "").expect("create in.log");
    let a = Agent::new(
        s,
        s.path("agent"),
        &c.ingest.to_string(),
        &watched,
        spool,
        "1h",
        None,
    );
    a.enroll(&c.token_file(s));
    (c, a)
}

// ---------------------------------------------------------------------------------------
// The writer: numbered lines at a steady rate.

struct Writer {
    produced: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    paused: Arc<AtomicBool>,
    /// Set by the thread once it honours `paused` (no write in progress).
    holding: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
    max: u64,
    started: Instant,
}

impl Writer {
    /// Appends lines `seq=000000 …` to `path`, `rate` per second, until `max` or `stop()`.
    fn start(path: &Path, rate: f64, max: u64) -> Writer {
        let produced = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(path)
            .expect("open the watched file");
        let paused = Arc::new(AtomicBool::new(false));
        let holding = Arc::new(AtomicBool::new(false));
        let (p, st, pa, ho) = (
            produced.clone(),
            stop.clone(),
            paused.clone(),
            holding.clone(),
        );
        let started = Instant::now();
        let handle = std::thread::spawn(move || {
            let mut i = 0u64;
            let mut buf = String::new();
            // Time spent writing, pauses excluded: no burst after a pause.
            let (mut active, mut last) = (Duration::ZERO, Instant::now());
            while i < max && !st.load(SeqCst) {
                let now = Instant::now();
                if pa.load(SeqCst) {
                    ho.store(true, SeqCst);
                    last = now;
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                }
                ho.store(false, SeqCst);
                active += now - last;
                last = now;
                let due = ((active.as_secs_f64() * rate) as u64).min(max);
                if due > i {
                    buf.clear();
                    for n in i..due {
                        buf.push_str(&format!(
                            "seq={n:06} payload of a numbered test line, steady rate {:08x}\n",
                            n.wrapping_mul(0x9E37_79B9) as u32
                        ));
                    }
                    f.write_all(buf.as_bytes())
                        .expect("append to the watched file");
                    i = due;
                    p.store(i, SeqCst);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        Writer {
            produced,
            stop,
            paused,
            holding,
            handle: Some(handle),
            max,
            started,
        }
    }

    fn produced(&self) -> u64 {
        self.produced.load(SeqCst)
    }

    /// Holds the stream (no line is written until `resume`); returns the lines written.
    fn pause(&self) -> u64 {
        self.paused.store(true, SeqCst);
        poll(
            Duration::from_secs(30),
            Duration::from_millis(5),
            || "the writer did not pause".into(),
            || (self.holding.load(SeqCst) || self.finished()).then_some(()),
        );
        self.produced()
    }

    fn resume(&self) {
        self.paused.store(false, SeqCst);
        self.holding.store(false, SeqCst);
    }

    fn finished(&self) -> bool {
        self.handle.as_ref().is_none_or(|h| h.is_finished())
    }

    /// Stops now; returns how many lines were written.
    fn stop(&mut self) -> u64 {
        self.stop.store(true, SeqCst);
        if let Some(h) = self.handle.take() {
            h.join().expect("writer thread");
        }
        self.produced()
    }

    /// Waits until all `max` lines are written.
    fn finish(&mut self) -> u64 {
        let expected = Duration::from_secs_f64(
            (self.max as f64 / (self.produced().max(1) as f64 / secs(self.started.elapsed())))
                .min(3600.0),
        );
        let within = expected + Duration::from_secs(60);
        poll(
            within,
            Duration::from_millis(20),
            || format!("the writer wrote only {} lines", self.produced()),
            || self.finished().then_some(()),
        );
        self.stop()
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

// ---------------------------------------------------------------------------------------
// Reading everything back.

fn seq_of(message: &str) -> Option<u64> {
    let rest = message.strip_prefix("seq=")?;
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// Everything the collector holds, against what was produced.
#[derive(Default)]
struct Census {
    produced: u64,
    /// Stored copies of each produced line.
    copies: Vec<u32>,
    /// Epoch (index into `epochs`) of each line's first stored copy.
    first_epoch: Vec<u32>,
    epochs: HashMap<String, u32>,
    file_events: u64,
    foreign_lines: u64,
    events: u64,
    ids: HashSet<String>,
    dup_ids: Vec<String>,
    malformed_ids: u64,
    /// Duplicated lines whose copies share an epoch (must be 0 even in R7).
    same_epoch_dups: u64,
    health_events: u64,
    max_dropped: u64,
    new_epoch_reasons: Vec<String>,
}

impl Census {
    fn take(api: &Api, produced: u64) -> Result<Census, String> {
        let mut c = Census {
            produced,
            copies: vec![0; produced as usize],
            first_epoch: vec![u32::MAX; produced as usize],
            ..Default::default()
        };
        api.scan("", |e| c.add(e))?;
        Ok(c)
    }

    fn add(&mut self, e: &Value) {
        self.events += 1;
        let id = e["event"]["id"].as_str().unwrap_or("").to_string();
        // `{agent}-{epoch}-{seq}`
        let parts: Vec<&str> = id.rsplitn(3, '-').collect();
        let epoch = if parts.len() == 3 {
            parts[1].to_string()
        } else {
            self.malformed_ids += 1;
            String::new()
        };
        let next = self.epochs.len() as u32;
        let ep = *self.epochs.entry(epoch).or_insert(next);
        if !self.ids.insert(id.clone()) && self.dup_ids.len() < 20 {
            self.dup_ids.push(id);
        }
        if e["event"]["module"] == "file" {
            self.file_events += 1;
            match e["message"].as_str().and_then(seq_of) {
                Some(n) if n < self.produced => {
                    let i = n as usize;
                    self.copies[i] += 1;
                    if self.first_epoch[i] == u32::MAX {
                        self.first_epoch[i] = ep;
                    } else if self.first_epoch[i] == ep {
                        self.same_epoch_dups += 1;
                    }
                }
                _ => self.foreign_lines += 1,
            }
        }
        if e["event"]["dataset"] == "agent_health" {
            self.health_events += 1;
            let h = &e["vigie"]["health"];
            self.max_dropped = self
                .max_dropped
                .max(h["dropped_events"].as_u64().unwrap_or(0));
            if let Some(r) = h["new_epoch_reason"].as_str()
                && !r.is_empty()
            {
                self.new_epoch_reasons.push(r.to_string());
            }
        }
    }

    fn lost(&self) -> u64 {
        self.copies.iter().filter(|&&c| c == 0).count() as u64
    }

    /// Extra stored copies of produced lines.
    fn duplicates(&self) -> u64 {
        self.copies
            .iter()
            .map(|&c| u64::from(c.saturating_sub(1)))
            .sum()
    }

    fn sample(&self, pred: impl Fn(u32) -> bool) -> Vec<usize> {
        self.copies
            .iter()
            .enumerate()
            .filter(|(_, c)| pred(**c))
            .map(|(i, _)| i)
            .take(20)
            .collect()
    }

    fn describe(&self) -> String {
        format!(
            "produced {} lines; stored {} file events ({} lines outside 0..{}); lost {} (first: {:?}); duplicated {} (first: {:?}); {} events in all, {} duplicate ids (first: {:?}), {} malformed ids, {} epochs",
            self.produced,
            self.file_events,
            self.foreign_lines,
            self.produced,
            self.lost(),
            self.sample(|c| c == 0),
            self.duplicates(),
            self.sample(|c| c > 1),
            self.events,
            self.dup_ids.len(),
            self.dup_ids,
            self.malformed_ids,
            self.epochs.len()
        )
    }

    /// The conservation rule: every produced line stored exactly once, every id unique.
    fn assert_exactly_once(&self, scenario: &str) {
        assert!(
            self.lost() == 0
                && self.duplicates() == 0
                && self.foreign_lines == 0
                && self.dup_ids.is_empty()
                && self.malformed_ids == 0,
            "{scenario}: conservation violated: {}",
            self.describe()
        );
    }
}

/// Waits until every produced line is stored (at least once), then takes the census.
fn wait_all_stored(api: &Api, produced: u64, within: Duration, scenario: &str) -> Census {
    let start = Instant::now();
    let mut last_count = 0;
    loop {
        match api.count(FILE_Q) {
            Ok(n) => {
                last_count = n;
                if n >= produced {
                    let c = Census::take(api, produced).expect("read every event back");
                    if c.lost() == 0 || start.elapsed() > within {
                        return c;
                    }
                }
            }
            Err(e) => eprintln!("{scenario}: count failed (retrying): {e}"),
        }
        if start.elapsed() > within {
            let c = Census::take(api, produced).expect("read every event back");
            panic!(
                "{scenario}: not every line arrived within {within:?} (last count {last_count}): {}",
                c.describe()
            );
        }
        sleep(Duration::from_millis(250));
    }
}

/// A scenario's one-line result, for humans and for bench/reliability.sh.
fn summary(scenario: &str, seed: Option<u64>, c: &Census, wall: Duration, extra: &str) {
    println!(
        "RELIABILITY {scenario} mode={} seed={} produced={} stored={} duplicates={} lost={} ids_unique={} {extra} wall_s={:.1}",
        mode(),
        seed.map(|s| s.to_string()).unwrap_or_else(|| "-".into()),
        c.produced,
        c.file_events,
        c.duplicates(),
        c.lost(),
        c.dup_ids.is_empty(),
        secs(wall)
    );
}

fn fmt_max(v: &[f64]) -> String {
    v.iter()
        .cloned()
        .fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))))
        .map(|m| format!("{m:.2}"))
        .unwrap_or_else(|| "-".into())
}

fn fmt_median(v: &[f64]) -> String {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s.get(s.len() / 2)
        .map(|m| format!("{m:.2}"))
        .unwrap_or_else(|| "-".into())
}

fn fmt_list(v: &[f64]) -> String {
    let s: Vec<String> = v.iter().map(|x| format!("{x:.2}")).collect();
    format!("[{}]", s.join(","))
}

/// Random moments in `[0.05, 0.9]` of a stream of `dur`, sorted.
fn kill_schedule(rng: &mut Rng, kills: usize, dur: f64) -> Vec<Duration> {
    let mut t: Vec<f64> = (0..kills).map(|_| rng.range(0.05, 0.9) * dur).collect();
    t.sort_by(f64::total_cmp);
    t.into_iter().map(Duration::from_secs_f64).collect()
}

fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        sleep(t - now);
    }
}

// ---------------------------------------------------------------------------------------
// R1: kill -9 the collector during the stream.

#[test]
fn r1_collector_kill9_loses_and_duplicates_nothing() {
    let _serial = serial();
    let wall = Instant::now();
    let (n, rate, kills) = if full() {
        (1_000_000u64, 5_000.0, 50)
    } else {
        (20_000u64, 2_000.0, 5)
    };
    let (mut rng, seed) = Rng::from_env("R1");
    let s = Scratch::new("r1");
    let (mut c, mut a) = loopback_pair(&s, "");
    a.start();
    let api = c.api();
    let mut w = Writer::start(&s.path("in.log"), rate, n);
    let schedule = kill_schedule(&mut rng, kills, n as f64 / rate);
    let mut resumes = Vec::new();
    let mut downtime = Vec::new();
    for (i, at) in schedule.iter().enumerate() {
        sleep_until(w.started + *at);
        a.check_alive();
        c.check_alive();
        let killed = Instant::now();
        c.kill9();
        let ready = c.start();
        downtime.push(secs(ready - killed));
        // Resumed: the restarted process stores its first event (its counter starts at 0),
        // unless there was nothing left to send.
        let resumed = poll(
            Duration::from_secs(90),
            Duration::from_millis(50),
            || {
                format!(
                    "R1 kill {}: the agent did not ship to the restarted collector (writer at {})",
                    i + 1,
                    w.produced()
                )
            },
            || {
                if api.metric("vigie_events_stored_total").is_ok_and(|v| v > 0) {
                    return Some(Some(secs(ready.elapsed())));
                }
                if w.finished() && api.count(FILE_Q).is_ok_and(|v| v >= w.produced()) {
                    return Some(None);
                }
                None
            },
        );
        println!(
            "R1 kill {}/{kills} at {:.2}s: collector back after {:.2}s, agent resumed {}",
            i + 1,
            secs(*at),
            secs(ready - killed),
            resumed
                .map(|r| format!("{r:.2}s after"))
                .unwrap_or_else(|| "(nothing left to send)".into())
        );
        resumes.extend(resumed);
    }
    let produced = w.finish();
    let census = wait_all_stored(&api, produced, Duration::from_secs(120), "R1");
    a.check_alive();
    let m = |o: &str| {
        api.metric(&format!("vigie_batches_total{{outcome=\"{o}\"}}"))
            .unwrap_or(0)
    };
    let metrics = format!(
        "last_process_batches(stored={} duplicate={} gap={} unavailable={})",
        m("stored"),
        m("duplicate"),
        m("gap"),
        m("unavailable")
    );
    summary(
        "R1-collector-kill9",
        Some(seed),
        &census,
        wall.elapsed(),
        &format!(
            "kills={kills} max_resume_s={} median_resume_s={} max_collector_restart_s={} {metrics}",
            fmt_max(&resumes),
            fmt_median(&resumes),
            fmt_max(&downtime)
        ),
    );
    census.assert_exactly_once("R1");
    // The goal is 5 s (asserted in full mode). CI keeps a looser bound that still catches a
    // return to waiting out the 30 s QUIC idle timeout: the restarted collector must answer
    // its predecessor's connections with a valid stateless reset (collector/src/keys.rs).
    let bound = if full() { 5.0 } else { 15.0 };
    let slow: Vec<&f64> = resumes.iter().filter(|r| **r > bound).collect();
    assert!(
        slow.is_empty(),
        "R1: the agent resumed later than {bound} s after a collector restart: {slow:?}"
    );
}

// ---------------------------------------------------------------------------------------
// R2: kill -9 the agent during the stream.

#[test]
fn r2_agent_kill9_loses_and_duplicates_nothing() {
    let _serial = serial();
    let wall = Instant::now();
    let (n, rate, kills) = if full() {
        (1_000_000u64, 5_000.0, 50)
    } else {
        (20_000u64, 2_000.0, 5)
    };
    let (mut rng, seed) = Rng::from_env("R2");
    let s = Scratch::new("r2");
    let (mut c, mut a) = loopback_pair(&s, "");
    a.start();
    let api = c.api();
    let mut w = Writer::start(&s.path("in.log"), rate, n);
    let schedule = kill_schedule(&mut rng, kills, n as f64 / rate);
    let mut resumes = Vec::new();
    for (i, at) in schedule.iter().enumerate() {
        sleep_until(w.started + *at);
        c.check_alive();
        a.check_alive();
        a.kill9();
        // Resumed: the restarted agent connected, then a batch of its was stored (batches
        // the killed agent had in flight may still land just after the kill: not counted).
        let conns = api
            .metric("vigie_connections_total")
            .expect("collector metrics");
        let started = a.start();
        let mut base: Option<u64> = None;
        let resumed = poll(
            Duration::from_secs(90),
            Duration::from_millis(50),
            || {
                format!(
                    "R2 kill {}: the restarted agent stored nothing (writer at {})",
                    i + 1,
                    w.produced()
                )
            },
            || {
                match base {
                    None => {
                        if api
                            .metric("vigie_connections_total")
                            .is_ok_and(|v| v > conns)
                        {
                            base = api.metric("vigie_events_stored_total").ok();
                        }
                    }
                    Some(b) => {
                        if api.metric("vigie_events_stored_total").is_ok_and(|v| v > b) {
                            return Some(Some(secs(started.elapsed())));
                        }
                    }
                }
                if w.finished() && api.count(FILE_Q).is_ok_and(|v| v >= w.produced()) {
                    return Some(None);
                }
                None
            },
        );
        println!(
            "R2 kill {}/{kills} at {:.2}s: agent restarted, shipping again {}",
            i + 1,
            secs(*at),
            resumed
                .map(|r| format!("{r:.2}s after"))
                .unwrap_or_else(|| "(nothing left to send)".into())
        );
        resumes.extend(resumed);
    }
    let produced = w.finish();
    let census = wait_all_stored(&api, produced, Duration::from_secs(120), "R2");
    a.check_alive();
    summary(
        "R2-agent-kill9",
        Some(seed),
        &census,
        wall.elapsed(),
        &format!(
            "kills={kills} max_resume_s={} median_resume_s={} agent_dropped_events={} health_events={}",
            fmt_max(&resumes),
            fmt_median(&resumes),
            census.max_dropped,
            census.health_events
        ),
    );
    census.assert_exactly_once("R2");
    assert_eq!(
        census.max_dropped, 0,
        "R2: the agent reported dropped events (a file source must pause, never drop)"
    );
}

// ---------------------------------------------------------------------------------------
// R3: partition through a network namespace.

/// A network namespace joined to the host by a veth pair; deleted on drop.
struct Netns {
    name: String,
    host_if: String,
    host_ip: String,
}

impl Netns {
    fn create() -> Netns {
        let pid = std::process::id();
        let x = pid % 250 + 1;
        let ns = Netns {
            name: format!("vigie-r3-{pid}"),
            host_if: format!("vgh{}", pid % 1_000_000),
            host_ip: format!("10.213.{x}.1"),
        };
        let ns_if = format!("vgn{}", pid % 1_000_000);
        let ns_ip = format!("10.213.{x}.2");
        if let Err(e) = run("ip", &["netns", "add", &ns.name]) {
            panic!(
                "R3 needs network namespaces and cannot create one ({e}). Run this test as root on a kernel with network namespaces; it does not skip."
            );
        }
        let setup = [
            vec![
                "link",
                "add",
                &ns.host_if,
                "type",
                "veth",
                "peer",
                "name",
                &ns_if,
            ],
            vec!["link", "set", &ns_if, "netns", &ns.name],
            vec![
                "addr",
                "add",
                &format!("{}/30", ns.host_ip),
                "dev",
                &ns.host_if,
            ],
            vec!["link", "set", "dev", &ns.host_if, "up"],
            vec![
                "netns",
                "exec",
                &ns.name,
                "ip",
                "addr",
                "add",
                &format!("{ns_ip}/30"),
                "dev",
                &ns_if,
            ],
            vec![
                "netns", "exec", &ns.name, "ip", "link", "set", "dev", &ns_if, "up",
            ],
            vec![
                "netns", "exec", &ns.name, "ip", "link", "set", "dev", "lo", "up",
            ],
        ]
        .iter()
        .map(|args| args.iter().map(|s| s.to_string()).collect::<Vec<String>>())
        .collect::<Vec<_>>();
        for args in &setup {
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            if let Err(e) = run("ip", &refs) {
                panic!("R3: setting up the network namespace failed: {e}");
            }
        }
        ns
    }

    fn link(&self, up: bool) {
        run(
            "ip",
            &[
                "link",
                "set",
                "dev",
                &self.host_if,
                if up { "up" } else { "down" },
            ],
        )
        .expect("ip link set");
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = run("ip", &["link", "del", &self.host_if]);
        let _ = run("ip", &["netns", "del", &self.name]);
    }
}

#[test]
fn r3_partition_drains_backlog_without_loss() {
    let _serial = serial();
    let wall = Instant::now();
    let (rate, outages, outage, gap) = if full() {
        (
            2_000.0,
            10,
            Duration::from_secs(60),
            Duration::from_secs(10),
        )
    } else {
        (1_000.0, 2, Duration::from_secs(5), Duration::from_secs(2))
    };
    let s = Scratch::new("r3");
    let ns = Netns::create();
    let port = free_port();
    let ingest: SocketAddr = format!("{}:{port}", ns.host_ip).parse().expect("addr");
    let mut c = Collector::with_config(
        &s,
        s.path("data"),
        ingest,
        &ingest.to_string(),
        "min_free_bytes = 0",
    );
    c.start();
    let api = c.api();
    let watched = s.path("in.log");
    fs::write(&watched, "").expect("create in.log");
    let mut a = Agent::new(
        &s,
        s.path("agent"),
        &ingest.to_string(),
        &watched,
        "",
        "1h",
        Some(ns.name.clone()),
    );
    a.enroll(&c.token_file(&s));
    a.start();
    let mut w = Writer::start(&watched, rate, u64::MAX);
    let mut drains = Vec::new();
    let mut backlogs = Vec::new();
    for i in 0..outages {
        // Lines flow normally for a while.
        let before = api.count(FILE_Q).expect("count");
        poll(
            gap + Duration::from_secs(60),
            Duration::from_millis(100),
            || format!("R3: nothing stored before outage {}", i + 1),
            || (api.count(FILE_Q).is_ok_and(|n| n > before)).then_some(()),
        );
        sleep(gap);
        a.check_alive();
        c.check_alive();
        ns.link(false);
        let down = Instant::now();
        let stored_at_down = api.count(FILE_Q).expect("count");
        sleep(outage);
        let stored_at_up = api.count(FILE_Q).expect("count");
        let backlog_target = w.produced();
        ns.link(true);
        let up = Instant::now();
        let backlog = backlog_target.saturating_sub(stored_at_up);
        // The cut was real: the lines written meanwhile waited.
        assert!(
            backlog as f64 >= rate * secs(outage) * 0.5,
            "R3 outage {}: only {backlog} lines waiting after {outage:?} with the link down (stored {stored_at_down} → {stored_at_up}): was the link really cut?",
            i + 1
        );
        let drained = poll(
            outage * 3 + Duration::from_secs(120),
            Duration::from_millis(100),
            || {
                format!(
                    "R3 outage {}: backlog not drained ({} of {backlog_target} stored)",
                    i + 1,
                    api.count(FILE_Q).unwrap_or(0)
                )
            },
            || {
                api.count(FILE_Q)
                    .is_ok_and(|n| n >= backlog_target)
                    .then(|| secs(up.elapsed()))
            },
        );
        println!(
            "R3 outage {}/{outages}: link down {:.1}s, stored {stored_at_down} → {stored_at_up} meanwhile, backlog {backlog} lines drained {drained:.2}s after the link came back",
            i + 1,
            secs(up - down)
        );
        drains.push(drained);
        backlogs.push(backlog.to_string());
    }
    sleep(gap);
    let produced = w.stop();
    let census = wait_all_stored(&api, produced, Duration::from_secs(120), "R3");
    a.check_alive();
    summary(
        "R3-partition",
        None,
        &census,
        wall.elapsed(),
        &format!(
            "outages={outages}x{}s max_drain_s={} drain_s={} backlogs=[{}]",
            outage.as_secs(),
            fmt_max(&drains),
            fmt_list(&drains),
            backlogs.join(",")
        ),
    );
    census.assert_exactly_once("R3");
    for (i, d) in drains.iter().enumerate() {
        assert!(
            *d <= 3.0 * secs(outage),
            "R3 outage {}: backlog drained in {d:.2}s, more than 3× the {outage:?} outage",
            i + 1
        );
    }
}

// ---------------------------------------------------------------------------------------
// R5: disk full, agent side then collector side.

/// A tmpfs mounted on `dir`; unmounted on drop.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(dir: PathBuf, size: &str) -> Tmpfs {
        fs::create_dir_all(&dir).expect("create the mount point");
        let d = dir.to_string_lossy().into_owned();
        if let Err(e) = run(
            "mount",
            &["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs", &d],
        ) {
            panic!("R5 needs to mount a tmpfs ({e}). Run this test as root; it does not skip.");
        }
        Tmpfs { dir }
    }

    fn free(&self) -> u64 {
        let out = run(
            "df",
            &["--output=avail", "-B1", &self.dir.to_string_lossy()],
        )
        .expect("df");
        out.lines()
            .nth(1)
            .and_then(|l| l.trim().parse().ok())
            .expect("df output")
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let d = self.dir.to_string_lossy().into_owned();
        if run("umount", &[&d]).is_err() {
            let _ = run("umount", &["-l", &d]);
        }
    }
}

/// Keeps a file system full: a thread appends to `path` whenever space appears.
struct Ballast {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    full: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Ballast {
    fn hold_full(path: PathBuf) -> Ballast {
        let stop = Arc::new(AtomicBool::new(false));
        let full = Arc::new(AtomicBool::new(false));
        let (st, fl, p) = (stop.clone(), full.clone(), path.clone());
        let handle = std::thread::spawn(move || {
            let mut f = fs::File::create(&p).expect("create the ballast file");
            let chunk = vec![0x5au8; 64 << 10];
            let small = vec![0x5au8; 4 << 10];
            while !st.load(SeqCst) {
                // Big chunks, then pages, until nothing fits.
                let mut wrote = false;
                while f.write_all(&chunk).is_ok() {
                    wrote = true;
                }
                while f.write_all(&small).is_ok() {
                    wrote = true;
                }
                if !wrote {
                    fl.store(true, SeqCst);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Ballast {
            path,
            stop,
            full,
            handle: Some(handle),
        }
    }

    fn remove(&mut self) {
        self.stop.store(true, SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        let _ = fs::remove_file(&self.path);
    }
}

impl Drop for Ballast {
    fn drop(&mut self) {
        self.remove();
    }
}

#[test]
fn r5_agent_disk_full_recovers_without_loss() {
    let _serial = serial();
    let wall = Instant::now();
    let (n, rate, hold) = if full() {
        (300_000u64, 5_000.0, Duration::from_secs(30))
    } else {
        (20_000u64, 2_000.0, Duration::from_secs(3))
    };
    let s = Scratch::new("r5a");
    let fs_ = Tmpfs::mount(s.path("agentfs"), "16m");
    let mut c = Collector::loopback(&s);
    c.start();
    let api = c.api();
    let watched = s.path("in.log");
    fs::write(&watched, "").expect("create in.log");
    let mut a = Agent::new(
        &s,
        fs_.dir.join("agent"),
        &c.ingest.to_string(),
        &watched,
        "max_bytes = \"64MiB\"\nsegment_bytes = \"256KiB\"",
        "2s",
        None,
    );
    a.enroll(&c.token_file(&s));
    a.start();
    let mut w = Writer::start(&watched, rate, n);
    // Let the stream establish, then fill the agent's disk.
    poll(
        Duration::from_secs(60),
        Duration::from_millis(100),
        || "R5 agent: nothing stored before the disk filled up".into(),
        || (api.count(FILE_Q).is_ok_and(|n| n as f64 > rate)).then_some(()),
    );
    let mut ballast = Ballast::hold_full(fs_.dir.join("ballast"));
    let filled = Instant::now();
    poll(
        Duration::from_secs(30),
        Duration::from_millis(50),
        || "R5 agent: the ballast did not fill the tmpfs".into(),
        || ballast.full.load(SeqCst).then_some(()),
    );
    // The agent must notice: its spool appends fail (logged) while lines keep coming.
    poll(
        Duration::from_secs(60),
        Duration::from_millis(100),
        || {
            format!(
                "R5 agent: no failed spool append logged with the disk full (free {} bytes)",
                fs_.free()
            )
        },
        || {
            fs::read_to_string(&a.log)
                .is_ok_and(|t| t.contains("spool append failed"))
                .then_some(())
        },
    );
    let noticed = secs(filled.elapsed());
    let at_hold = api.count(FILE_Q).expect("count");
    sleep(hold);
    a.check_alive();
    let at_release = api.count(FILE_Q).expect("count");
    let produced_at_release = w.produced();
    ballast.remove();
    let released = Instant::now();
    let recovered = poll(
        Duration::from_secs(60),
        Duration::from_millis(50),
        || "R5 agent: nothing stored after the disk was freed".into(),
        || {
            api.count(FILE_Q)
                .is_ok_and(|n| n > at_release)
                .then(|| secs(released.elapsed()))
        },
    );
    println!(
        "R5 agent: disk full {:.1}s (failure noticed after {noticed:.2}s), stored {at_hold} → {at_release} while full, {produced_at_release} produced; storing again {recovered:.2}s after the space came back",
        secs(released - filled)
    );
    let produced = w.finish();
    let census = wait_all_stored(&api, produced, Duration::from_secs(120), "R5 agent");
    a.check_alive();
    let failures = fs::read_to_string(&a.log)
        .unwrap_or_default()
        .matches("spool append failed")
        .count();
    summary(
        "R5-agent-disk-full",
        None,
        &census,
        wall.elapsed(),
        &format!(
            "full_s={:.1} recover_s={recovered:.2} failed_appends_logged={failures} agent_dropped_events={} health_events={}",
            secs(released - filled),
            census.max_dropped,
            census.health_events
        ),
    );
    census.assert_exactly_once("R5 agent");
    assert_eq!(
        census.max_dropped, 0,
        "R5 agent: dropped events reported (a file source must pause, never drop)"
    );
    drop(a);
}

#[test]
fn r5_collector_disk_full_stops_acking_then_recovers() {
    let _serial = serial();
    let wall = Instant::now();
    let (n, rate, hold) = if full() {
        (300_000u64, 5_000.0, Duration::from_secs(30))
    } else {
        (20_000u64, 2_000.0, Duration::from_secs(4))
    };
    let s = Scratch::new("r5c");
    // RocksDB preallocates its WAL (~70 MB here): room for it, the events and the ballast.
    let fs_ = Tmpfs::mount(s.path("colfs"), if full() { "1g" } else { "256m" });
    let reserve: u64 = 48 << 20;
    let ingest = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut c = Collector::with_config(
        &s,
        fs_.dir.clone(),
        ingest,
        &ingest.to_string(),
        "min_free_bytes = \"48MiB\"",
    );
    c.start();
    let api = c.api();
    let watched = s.path("in.log");
    fs::write(&watched, "").expect("create in.log");
    let mut a = Agent::new(
        &s,
        s.path("agent"),
        &ingest.to_string(),
        &watched,
        "",
        "1h",
        None,
    );
    a.enroll(&c.token_file(&s));
    a.start();
    let mut w = Writer::start(&watched, rate, n);
    poll(
        Duration::from_secs(60),
        Duration::from_millis(100),
        || "R5 collector: nothing stored before the disk filled up".into(),
        || (api.count(FILE_Q).is_ok_and(|n| n as f64 > rate)).then_some(()),
    );
    // Ballast: leave half the reserve free.
    let ballast_path = fs_.dir.join("ballast");
    let size = fs_.free().saturating_sub(reserve / 2);
    {
        let mut f = fs::File::create(&ballast_path).expect("create the ballast");
        let chunk = vec![0x5au8; 1 << 20];
        let mut left = size;
        while left > 0 {
            let k = left.min(chunk.len() as u64) as usize;
            f.write_all(&chunk[..k]).expect("write the ballast");
            left -= k as u64;
        }
        f.sync_all().expect("sync the ballast");
    }
    let filled = Instant::now();
    let unavailable0 = api
        .metric("vigie_batches_total{outcome=\"unavailable\"}")
        .expect("metrics");
    poll(
        Duration::from_secs(30),
        Duration::from_millis(100),
        || {
            format!(
                "R5 collector: /api/v1/health never said disk_full with {} bytes free under a {reserve}-byte reserve",
                fs_.free()
            )
        },
        || {
            api.health()
                .is_ok_and(|h| h["disk_full"] == true)
                .then_some(())
        },
    );
    let noticed = secs(filled.elapsed());
    // A commit that passed the gate just before it closed may still land: let it.
    sleep(Duration::from_secs(1));
    let at_hold = api.count(FILE_Q).expect("count");
    let produced_at_hold = w.produced();
    sleep(hold);
    c.check_alive();
    a.check_alive();
    let at_release = api.count(FILE_Q).expect("count");
    let produced_at_release = w.produced();
    let refused = api
        .metric("vigie_batches_total{outcome=\"unavailable\"}")
        .expect("metrics")
        - unavailable0;
    assert_eq!(
        at_release, at_hold,
        "R5 collector: events were stored while the disk was below the reserve ({at_hold} → {at_release})"
    );
    assert!(
        produced_at_release > produced_at_hold,
        "R5 collector: the writer stalled during the hold"
    );
    assert!(
        refused > 0,
        "R5 collector: no batch was answered `unavailable` while the disk was full: did the agent stop sending?"
    );
    fs::remove_file(&ballast_path).expect("remove the ballast");
    let released = Instant::now();
    let recovered = poll(
        Duration::from_secs(60),
        Duration::from_millis(50),
        || "R5 collector: nothing stored after the disk was freed".into(),
        || {
            api.count(FILE_Q)
                .is_ok_and(|n| n > at_release)
                .then(|| secs(released.elapsed()))
        },
    );
    let disk_ok = api.health().expect("health")["disk_full"] == false;
    println!(
        "R5 collector: disk_full seen {noticed:.2}s after the ballast; stored count frozen at {at_hold} for {:.1}s while {} lines were produced, {refused} batches answered unavailable; storing again {recovered:.2}s after the space came back (disk_full now {})",
        secs(hold),
        produced_at_release - produced_at_hold,
        !disk_ok
    );
    let produced = w.finish();
    let census = wait_all_stored(&api, produced, Duration::from_secs(120), "R5 collector");
    summary(
        "R5-collector-disk-full",
        None,
        &census,
        wall.elapsed(),
        &format!(
            "full_s={:.1} batches_unavailable={refused} recover_s={recovered:.2} agent_dropped_events={}",
            secs(released - filled),
            census.max_dropped
        ),
    );
    census.assert_exactly_once("R5 collector");
    assert_eq!(census.max_dropped, 0, "R5 collector: agent dropped events");
    drop(a);
    drop(c);
}

// ---------------------------------------------------------------------------------------
// R7: an old copy of the agent's data directory restored.

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("create the copy");
    for e in fs::read_dir(from).expect("read_dir") {
        let e = e.expect("dir entry");
        let ty = e.file_type().expect("file type");
        let dst = to.join(e.file_name());
        if ty.is_dir() {
            copy_dir(&e.path(), &dst);
        } else if ty.is_file() {
            fs::copy(e.path(), &dst).expect("copy a file");
        }
    }
}

/// The watched file's durable read position, from the agent's checkpoint file.
fn file_offset(agent_data: &Path) -> u64 {
    let Ok(text) = fs::read(agent_data.join("checkpoints.json")) else {
        return 0;
    };
    let v: Value = serde_json::from_slice(&text).unwrap_or(Value::Null);
    v["committed"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(_, pos)| serde_json::from_str::<Value>(pos.as_str()?).ok())
        .filter_map(|pos| pos["offset"].as_u64())
        .max()
        .unwrap_or(0)
}

#[test]
fn r7_restored_spool_starts_a_new_epoch() {
    let _serial = serial();
    let wall = Instant::now();
    let (n, rate, rollbacks) = if full() {
        (200_000u64, 5_000.0, 4)
    } else {
        (15_000u64, 1_500.0, 2)
    };
    // Lines written while the agent is down before a "near" restore: far more than the
    // collector's lead, so that the restored agent re-reads and appends them — under the
    // sequence numbers the collector already holds — before its first hello.
    let reread = (rate as u64).max(2_000);
    let s = Scratch::new("r7");
    let (mut c, mut a) = loopback_pair(&s, "");
    a.start();
    let api = c.api();
    let mut w = Writer::start(&s.path("in.log"), rate, n);
    let snap = s.path("snapshot");
    for r in 0..rollbacks {
        // Even rollbacks: the collector only just ahead of the snapshot, and unreachable while
        // the restored agent re-reads far more than that lead; odd ones: the collector far
        // ahead.
        let near = r % 2 == 0;
        let at = (r as u64 * 3 + 1) * n / (rollbacks as u64 * 3 + 1);
        poll(
            Duration::from_secs(120),
            Duration::from_millis(20),
            || "R7: the writer stalled".into(),
            || (w.produced() >= at).then_some(()),
        );
        // The snapshot: a stopped agent's whole data directory, taken once the collector
        // holds every line written so far (the stream holds meanwhile), so that the
        // snapshot's spool ends where the collector's store does, give or take a health
        // event.
        let held = w.pause();
        poll(
            Duration::from_secs(120),
            Duration::from_millis(250),
            || {
                format!(
                    "R7 rollback {}: the agent did not catch up with line {held}",
                    r + 1
                )
            },
            || {
                Census::take(&api, held)
                    .is_ok_and(|c| c.lost() == 0)
                    .then_some(())
            },
        );
        a.term();
        let at_snapshot = api.store_events().expect("health");
        let _ = fs::remove_dir_all(&snap);
        copy_dir(&a.data, &snap);
        w.resume();
        a.start();
        // Run on until the collector holds more than the snapshot's spool ever reached.
        let lead = if near { 20 } else { reread };
        poll(
            Duration::from_secs(120),
            Duration::from_millis(20),
            || {
                format!(
                    "R7 rollback {}: the agent did not ship past the snapshot",
                    r + 1
                )
            },
            || (api.store_events().is_ok_and(|k| k >= at_snapshot + lead)).then_some(()),
        );
        a.term();
        let ahead = api.store_events().expect("health") - at_snapshot;
        let stopped_at = w.produced();
        fs::remove_dir_all(&a.data).expect("remove the data directory");
        copy_dir(&snap, &a.data);
        if near {
            // The restored machine comes up before the collector is reachable: it re-reads
            // from its restored positions and appends, under sequence numbers the collector
            // already holds, before it can say hello.
            poll(
                Duration::from_secs(120),
                Duration::from_millis(20),
                || "R7: the writer stalled".into(),
                || (w.produced() >= stopped_at + reread || w.finished()).then_some(()),
            );
            c.term();
            let size = fs::metadata(s.path("in.log")).expect("in.log").len();
            a.start();
            poll(
                Duration::from_secs(60),
                Duration::from_millis(20),
                || {
                    format!(
                        "R7 rollback {}: the restored agent did not re-read up to byte {size}",
                        r + 1
                    )
                },
                || (file_offset(&a.data) >= size).then_some(()),
            );
            c.start();
        } else {
            a.start();
        }
        poll(
            Duration::from_secs(60),
            Duration::from_millis(100),
            || {
                format!(
                    "R7 rollback {}: no new_epoch health event: the restored agent did not detect that the collector holds {ahead} events more than its snapshot",
                    r + 1
                )
            },
            || {
                api.count("event.dataset:agent_health AND event.action:new_epoch")
                    .is_ok_and(|k| k > r as u64)
                    .then_some(())
            },
        );
        println!(
            "R7 rollback {}/{rollbacks} ({}): snapshot at line {held}, restored when the collector held {ahead} events more, {} lines written since the snapshot; new epoch detected",
            r + 1,
            if near {
                "collector just ahead and unreachable while the agent re-reads"
            } else {
                "collector far ahead"
            },
            w.produced() - held
        );
    }
    let produced = w.finish();
    let census = wait_all_stored(&api, produced, Duration::from_secs(120), "R7");
    a.check_alive();
    summary(
        "R7-restored-spool",
        None,
        &census,
        wall.elapsed(),
        &format!(
            "rollbacks={rollbacks} new_epochs={} epochs={} duplicated_lines={} same_epoch_duplicates={}",
            census.new_epoch_reasons.len(),
            census.epochs.len(),
            census.duplicates(),
            census.same_epoch_dups
        ),
    );
    for r in &census.new_epoch_reasons {
        println!("R7 new_epoch_reason: {r}");
    }
    // Duplicated lines are expected here: the restored spool and file offsets re-read
    // lines the collector already holds, and they travel under the new epoch. What must
    // never happen is an (epoch, seq) reused: every event id is unique.
    assert!(
        census.dup_ids.is_empty() && census.malformed_ids == 0,
        "R7: an event id was stored twice (sequence reuse): {}",
        census.describe()
    );
    assert_eq!(census.lost(), 0, "R7: lines lost: {}", census.describe());
    assert_eq!(
        census.same_epoch_dups,
        0,
        "R7: a line was stored twice within one epoch: {}",
        census.describe()
    );
    assert!(
        census.new_epoch_reasons.len() >= rollbacks,
        "R7: {} rollbacks but {} health events with new_epoch_reason",
        rollbacks,
        census.new_epoch_reasons.len()
    );
    assert!(
        census.epochs.len() > rollbacks,
        "R7: {} epochs for {rollbacks} rollbacks",
        census.epochs.len()
    );
}

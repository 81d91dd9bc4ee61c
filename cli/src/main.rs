//! `vigie`: the command line and the one-machine launcher.
//!
//! Owns: `vigie up` (collector, a status page on the dashboard port and a local
//! agent in one process, under one data directory), thin clients of the
//! collector's management API (`search`, `enroll create`, `agents`), and the
//! analyst's rule tools (`rules check`, `rules test`, `rules backtest`), which
//! evaluate rules locally with `vigie-rules`.
//!
//! Never does: open the event store itself (it asks the collector), or take an
//! enrollment secret from its own command line.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use serde_json::Value;

#[derive(Parser)]
#[command(
    name = "vigie",
    version,
    about = "Vigie: watch, secure and repair the machines of a Proxmox estate"
)]
struct Cli {
    /// Data directory holding the collector store, keys and the local agent's spool.
    #[arg(long, global = true, env = "VIGIE_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Management API of the collector (default: read from the data directory's running collector, else http://127.0.0.1:7701).
    #[arg(long, global = true, env = "VIGIE_API")]
    api: Option<String>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start the collector, the status page and a local agent watching this machine.
    Up {
        /// Do not start the local agent.
        #[arg(long)]
        no_agent: bool,
        /// Also start the Proxmox simulator (a lab cluster to try Vigie without a Proxmox host).
        #[arg(long)]
        lab: bool,
        /// UDP address agents ship to.
        #[arg(long, default_value = "0.0.0.0:7702")]
        ingest: SocketAddr,
        /// Management API address (keep it on loopback).
        #[arg(long, default_value = "127.0.0.1:7701")]
        api_listen: SocketAddr,
        /// Dashboard address.
        #[arg(long, default_value = "127.0.0.1:7700")]
        dashboard: SocketAddr,
        /// Syslog listener of the local agent (UDP and TCP).
        #[arg(long, default_value = "127.0.0.1:5514")]
        syslog: String,
    },
    /// Search stored events, newest first.
    Search {
        /// Query, e.g. `sshd AND event.outcome:failure` (see docs/query-language.md). Empty: everything.
        query: Option<String>,
        /// How far back to look, e.g. 15m, 24h, 7d.
        #[arg(long, conflicts_with_all = ["from", "to"])]
        since: Option<String>,
        /// Start of the range (RFC 3339).
        #[arg(long)]
        from: Option<String>,
        /// End of the range (RFC 3339).
        #[arg(long)]
        to: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Print each event as its canonical JSON, one per line.
        #[arg(long)]
        json: bool,
    },
    /// Enrollment tokens.
    Enroll {
        #[command(subcommand)]
        cmd: EnrollCmd,
    },
    /// List enrolled agents.
    Agents,
    /// Run only the collector (what `vigie up` runs, without the local agent and status page).
    Collector {
        /// Collector configuration (TOML); `--data-dir` puts its data under DATA_DIR/collector.
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long, default_value = "0.0.0.0:7702")]
        ingest: SocketAddr,
        #[arg(long, default_value = "127.0.0.1:7701")]
        api_listen: SocketAddr,
    },
    /// Proxmox host bootstrap.
    Bootstrap {
        #[command(subcommand)]
        cmd: BootstrapCmd,
    },
    /// Run or enroll an agent (the same as the `vigie-agent` binary).
    Agent {
        #[command(subcommand)]
        cmd: AgentCmd,
    },
    /// Check, test and backtest Sigma rules (see docs/rules.md).
    Rules {
        #[command(subcommand)]
        cmd: RulesCmd,
    },
}

#[derive(Subcommand)]
enum RulesCmd {
    /// Load every .yml/.yaml rule under DIR; print each rejected rule with its reason. Exit code 1 if any is rejected.
    Check { dir: PathBuf },
    /// Run a rule file (or a directory of rules) over events in canonical JSON, one per line
    /// (as `vigie search --json` prints them); print the matches and correlation matches.
    Test {
        rule: PathBuf,
        /// Events file (JSON lines).
        #[arg(long)]
        events: PathBuf,
    },
    /// Run a rule file (or a directory of rules) over stored events, fetched through the
    /// collector's search API, oldest first; print the matches.
    Backtest {
        rule: PathBuf,
        /// How far back, e.g. 1h, 24h, 7d.
        #[arg(long, default_value = "24h")]
        since: String,
        /// Stop after reading this many events.
        #[arg(long, default_value_t = 1_000_000)]
        max_events: usize,
    },
}

#[derive(Subcommand)]
enum BootstrapCmd {
    /// Check an answer.toml for the Proxmox automated installer with the installer's rules.
    Validate {
        /// The answer file.
        file: PathBuf,
    },
}

#[derive(Subcommand)]
enum AgentCmd {
    /// Run the agent with a configuration file.
    Run {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Enroll with a single-use token read from a file (`-` for stdin).
    Enroll {
        #[arg(long)]
        token_file: PathBuf,
        #[arg(long, short)]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum EnrollCmd {
    /// Print a single-use enrollment token for a new agent.
    Create {
        /// How long the token stays valid.
        #[arg(long, default_value = "1h")]
        expires: String,
        #[arg(long, default_value = "")]
        comment: String,
    },
}

fn default_data_dir() -> PathBuf {
    let root = std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false);
    if root {
        PathBuf::from("/var/lib/vigie")
    } else {
        let home = std::env::var("HOME").unwrap_or_else(|_| ".".into());
        PathBuf::from(home).join(".local/share/vigie")
    }
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let data_dir = cli.data_dir.clone().unwrap_or_else(default_data_dir);
    match cli.cmd {
        Cmd::Up {
            no_agent,
            lab,
            ingest,
            api_listen,
            dashboard,
            syslog,
        } => {
            init_logs();
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            rt.block_on(up(
                data_dir, no_agent, lab, ingest, api_listen, dashboard, syslog,
            ))
        }
        Cmd::Search {
            query,
            since,
            from,
            to,
            limit,
            json,
        } => {
            let api = Api::new(&data_dir, cli.api.as_deref())?;
            let mut params = vec![("limit", limit.to_string()), ("count", "true".into())];
            if let Some(q) = query {
                params.push(("q", q));
            }
            match (since, from) {
                (Some(s), _) => params.push(("since", s)),
                (None, Some(f)) => params.push(("from", f)),
                (None, None) => params.push(("since", "24h".into())),
            }
            if let Some(t) = to {
                params.push(("to", t));
            }
            let v = api.get("/api/v1/search", &params)?;
            let events = v["events"].as_array().cloned().unwrap_or_default();
            let mut out = std::io::stdout().lock();
            for e in &events {
                if json {
                    writeln!(out, "{}", serde_json::to_string(e)?)?;
                } else {
                    writeln!(out, "{}", human_line(e))?;
                }
            }
            if !json {
                eprintln!(
                    "{} shown of {} matching",
                    events.len(),
                    v["total"]
                        .as_u64()
                        .map(|n| n.to_string())
                        .unwrap_or_else(|| "?".into())
                );
            }
            Ok(())
        }
        Cmd::Enroll {
            cmd: EnrollCmd::Create { expires, comment },
        } => {
            let api = Api::new(&data_dir, cli.api.as_deref())?;
            let d = humantime::parse_duration(&expires).with_context(|| {
                format!("invalid --expires {expires:?}: use for example 30m, 1h or 7d")
            })?;
            let v = api.post(
                "/api/v1/enroll",
                serde_json::json!({ "expires_secs": d.as_secs().max(1), "comment": comment }),
            )?;
            println!("{}", v["token"].as_str().unwrap_or_default());
            eprintln!(
                "single use, expires at {}. On the new machine: save it to a file and run `vigie-agent enroll --token-file FILE` (or pipe it to `--token-file -`).",
                v["expires_at"].as_str().unwrap_or("?")
            );
            Ok(())
        }
        Cmd::Collector {
            config,
            ingest,
            api_listen,
        } => {
            init_logs();
            let mut cfg = match &config {
                Some(p) => vigie_collector::load_config(p)?,
                None => vigie_collector::CollectorConfig {
                    ingest_listen: ingest,
                    api_listen,
                    ..Default::default()
                },
            };
            if config.is_none() || cli.data_dir.is_some() {
                cfg.data_dir = data_dir.join("collector");
            }
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            rt.block_on(async {
                let c = vigie_collector::Collector::start(cfg.clone()).await?;
                vigie_agent::state::write_atomic(
                    &cfg.data_dir.join("api.url"),
                    format!("http://{}", c.api_addr).as_bytes(),
                    0o644,
                )?;
                println!(
                    "collector: agents connect to UDP {}, management API on http://{}",
                    c.ingest_addr, c.api_addr
                );
                wait_for_stop().await?;
                c.shutdown().await;
                Ok(())
            })
        }
        Cmd::Agent {
            cmd: AgentCmd::Enroll { token_file, config },
        } => {
            let cfg = vigie_agent::config::AgentConfig::load(&config)?;
            let token = vigie_agent::read_token(&token_file)?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            let e = rt.block_on(vigie_agent::enroll::enroll(
                &vigie_agent::state::Paths::new(&cfg.data_dir),
                &token,
                chrono_now(),
            ))?;
            println!(
                "enrolled as agent {} with collector {}",
                e.agent_id,
                e.collectors.join(", ")
            );
            Ok(())
        }
        Cmd::Agent {
            cmd: AgentCmd::Run { config },
        } => {
            init_logs();
            let cfg = vigie_agent::config::AgentConfig::load(&config)?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            rt.block_on(async {
                let a = vigie_agent::Agent::start(cfg).await?;
                wait_for_stop().await?;
                a.shutdown().await;
                Ok(())
            })
        }
        Cmd::Rules { cmd } => {
            let failed = match cmd {
                RulesCmd::Check { dir } => rules_check(&dir)?,
                RulesCmd::Test { rule, events } => rules_test(&rule, &events)?,
                RulesCmd::Backtest {
                    rule,
                    since,
                    max_events,
                } => {
                    let api = Api::new(&data_dir, cli.api.as_deref())?;
                    rules_backtest(&api, &rule, &since, max_events)?
                }
            };
            if failed {
                std::process::exit(1);
            }
            Ok(())
        }
        Cmd::Bootstrap {
            cmd: BootstrapCmd::Validate { file },
        } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read answer file {}", file.display()))?;
            match vigie_bootstrap::validate_answer(&text) {
                Ok(_) => {
                    println!("{} is a valid answer file", file.display());
                    Ok(())
                }
                Err(errors) => {
                    for e in &errors {
                        eprintln!("{}: {e}", file.display());
                    }
                    bail!("{} has {} error(s)", file.display(), errors.len())
                }
            }
        }
        Cmd::Agents => {
            let api = Api::new(&data_dir, cli.api.as_deref())?;
            let v = api.get("/api/v1/agents", &[])?;
            for a in v["agents"].as_array().cloned().unwrap_or_default() {
                println!(
                    "{}  {:<24} last seen {:<32} {}",
                    a["id"].as_str().unwrap_or(""),
                    a["hostname"].as_str().unwrap_or(""),
                    a["last_seen"].as_str().unwrap_or("never"),
                    if a["revoked"].as_bool() == Some(true) {
                        "revoked"
                    } else {
                        ""
                    }
                );
            }
            Ok(())
        }
    }
}

/// Rule files as `(path, text)` pairs, and the files that could not be read.
type RuleFiles = (Vec<(String, String)>, Vec<String>);

/// Reads the rules of a file or a directory.
fn read_rules(path: &Path) -> Result<RuleFiles> {
    let meta = std::fs::metadata(path).with_context(|| {
        format!(
            "cannot read {}: give a rule file (.yml) or a directory of rules",
            path.display()
        )
    })?;
    if meta.is_dir() {
        let (files, errors) = vigie_collector::detect::read_rule_files(path);
        let errors = errors
            .into_iter()
            .map(|e| format!("{}: {}", path.join(&e.path).display(), e.reason))
            .collect();
        Ok((files, errors))
    } else {
        let text = std::fs::read_to_string(path).with_context(|| {
            format!(
                "cannot read the rule file {} (it must be UTF-8 YAML)",
                path.display()
            )
        })?;
        Ok((vec![(path.display().to_string(), text)], Vec::new()))
    }
}

/// Loads rules, printing every rejected one; the bool says whether any was.
fn load_rules(path: &Path, base: Option<&Path>) -> Result<(vigie_rules::Engine, bool)> {
    let (files, file_errors) = read_rules(path)?;
    let (set, errors) = vigie_rules::load_sources(&files);
    for e in &file_errors {
        println!("rejected: {e}");
    }
    for e in &errors {
        let shown = match base {
            Some(b) => b.join(&e.rule).display().to_string(),
            None => e.rule.clone(),
        };
        println!("rejected: {shown}: {}", e.reason);
    }
    let rejected = !errors.is_empty() || !file_errors.is_empty();
    Ok((vigie_rules::Engine::new(set), rejected))
}

fn rules_check(dir: &Path) -> Result<bool> {
    if !dir.is_dir() {
        bail!(
            "{} is not a directory: `vigie rules check` takes the directory holding the rules (use `vigie rules test` for one file)",
            dir.display()
        );
    }
    let (files, file_errors) = vigie_collector::detect::read_rule_files(dir);
    let (set, errors) = vigie_rules::load_sources(&files);
    for e in &file_errors {
        println!("rejected: {}: {}", dir.join(&e.path).display(), e.reason);
    }
    for e in &errors {
        println!("rejected: {}: {}", dir.join(&e.rule).display(), e.reason);
    }
    let bad_files: std::collections::BTreeSet<&str> = errors
        .iter()
        .map(|e| e.path())
        .chain(file_errors.iter().map(|e| e.path.as_str()))
        .collect();
    println!(
        "{} files: {} rules loaded ({} detection, {} correlation), {} rejected in {} files",
        files.len() + file_errors.len(),
        set.rules.len() + set.correlations.len(),
        set.rules.len(),
        set.correlations.len(),
        errors.len() + file_errors.len(),
        bad_files.len(),
    );
    let exceptions = dir.join(vigie_collector::detect::EXCEPTIONS_FILE);
    let mut bad_exceptions = false;
    if let Ok(text) = std::fs::read_to_string(&exceptions) {
        let (ok, errs) = vigie_collector::detect::parse_exceptions(&text);
        for e in &errs {
            println!("rejected: {e}");
        }
        println!(
            "{}: {} exceptions, {} rejected",
            exceptions.display(),
            ok.len(),
            errs.len()
        );
        bad_exceptions = !errs.is_empty();
    }
    Ok(!errors.is_empty() || !file_errors.is_empty() || bad_exceptions)
}

fn describe(meta: &vigie_rules::RuleMeta) -> String {
    format!(
        "{} ({}) [{}]",
        meta.title,
        meta.id.as_deref().unwrap_or("no id"),
        meta.level.map(|l| l.as_str()).unwrap_or("medium")
    )
}

fn print_correlation(c: &vigie_rules::CorrelationMatch) {
    let group: Vec<String> = c.group.iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!(
        "  correlation {} group {{{}}}: {} = {} from {} to {}, events {}",
        describe(&c.meta),
        group.join(", "),
        match c.ty {
            vigie_rules::CorrelationType::EventCount => "count",
            vigie_rules::CorrelationType::ValueCount => "distinct values",
            vigie_rules::CorrelationType::ValueSum => "sum",
            vigie_rules::CorrelationType::ValueAvg => "average",
            vigie_rules::CorrelationType::ValuePercentile => "percentage",
            _ => "rules seen",
        },
        c.value,
        c.first,
        c.last,
        c.event_ids.join(", ")
    );
}

fn rules_test(rule: &Path, events: &Path) -> Result<bool> {
    let (engine, rejected) = load_rules(rule, rule.is_dir().then_some(rule))?;
    if engine.rules().is_empty() {
        bail!(
            "no rule of {} loads; fix the errors above first",
            rule.display()
        );
    }
    let file = std::fs::File::open(events)
        .with_context(|| format!("cannot read the events file {}", events.display()))?;
    let mut corr = vigie_rules::Correlator::new(engine.rule_set());
    let mut scratch = vigie_rules::Scratch::default();
    let (mut n, mut matched, mut fired) = (0u64, 0u64, 0u64);
    for (i, line) in std::io::BufRead::lines(std::io::BufReader::new(file)).enumerate() {
        let line = line.with_context(|| format!("cannot read {}", events.display()))?;
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let mut ev = vigie_proto::Event::from_json(t).map_err(|e| {
            anyhow::anyhow!(
                "{}:{}: {e}; each line must be one event in canonical JSON, as `vigie search --json` prints it",
                events.display(),
                i + 1
            )
        })?;
        if ev.event.id.is_empty() {
            ev.event.id = format!("line-{}", i + 1);
        }
        n += 1;
        let mut matches = Vec::new();
        engine.evaluate_with(&ev, &mut scratch, &mut matches);
        if !matches.is_empty() {
            matched += 1;
        }
        for m in &matches {
            println!(
                "line {}: {}{}",
                i + 1,
                describe(&m.meta),
                if m.standalone {
                    ""
                } else {
                    " (feeds correlations only)"
                }
            );
        }
        for c in corr.observe(&ev, &matches) {
            fired += 1;
            print_correlation(&c);
        }
    }
    println!("{n} events: {matched} matched, {fired} correlation matches");
    Ok(rejected)
}

fn rules_backtest(api: &Api, rule: &Path, since: &str, max_events: usize) -> Result<bool> {
    let (engine, rejected) = load_rules(rule, rule.is_dir().then_some(rule))?;
    if engine.rules().is_empty() {
        bail!(
            "no rule of {} loads; fix the errors above first",
            rule.display()
        );
    }
    humantime::parse_duration(since)
        .with_context(|| format!("invalid --since {since:?}: use for example 1h, 24h or 7d"))?;
    // Only the kinds the rules apply to.
    let mut kinds: Vec<&str> = engine
        .rules()
        .iter()
        .flat_map(|r| r.route.kinds.iter().map(|k| k.as_str()))
        .collect();
    kinds.sort();
    kinds.dedup();
    let q = kinds
        .iter()
        .map(|k| format!("event.dataset:{k}"))
        .collect::<Vec<_>>()
        .join(" OR ");
    let mut scratch = vigie_rules::Scratch::default();
    let mut hits: Vec<(vigie_proto::Event, Vec<vigie_rules::RuleMatch>)> = Vec::new();
    let (mut read, mut before) = (0usize, None::<String>);
    loop {
        let mut params = vec![
            ("q", q.clone()),
            ("since", since.to_string()),
            ("limit", "1000".to_string()),
            ("count", "false".to_string()),
        ];
        if let Some(b) = &before {
            params.push(("before", b.clone()));
        }
        let v = api.get("/api/v1/search", &params)?;
        let events = v["events"].as_array().cloned().unwrap_or_default();
        for e in &events {
            let ev = vigie_proto::Event::from_json(&e.to_string()).map_err(|err| {
                anyhow::anyhow!("the collector sent an event this build cannot read: {err}")
            })?;
            let mut matches = Vec::new();
            engine.evaluate_with(&ev, &mut scratch, &mut matches);
            if !matches.is_empty() {
                hits.push((ev, matches));
            }
        }
        read += events.len();
        before = v["next"].as_str().map(str::to_string);
        if before.is_none() || events.is_empty() {
            break;
        }
        if read >= max_events {
            eprintln!("stopped after {read} events (--max-events); older events were not read");
            break;
        }
    }
    // Oldest first, as detection sees them, so that correlations work.
    hits.reverse();
    let mut corr = vigie_rules::Correlator::new(engine.rule_set());
    let mut fired = 0u64;
    for (ev, matches) in &hits {
        for m in matches {
            println!(
                "{} {} {} {}{}",
                ev.timestamp,
                if ev.host.name.is_empty() {
                    "-"
                } else {
                    &ev.host.name
                },
                ev.event.id,
                describe(&m.meta),
                if m.standalone {
                    ""
                } else {
                    " (feeds correlations only)"
                }
            );
        }
        for c in corr.observe(ev, matches) {
            fired += 1;
            print_correlation(&c);
        }
    }
    println!(
        "{read} events read over the last {since}: {} matched, {fired} correlation matches",
        hits.len()
    );
    Ok(rejected)
}

fn init_logs() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,quinn=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
}

/// Waits for Ctrl-C or SIGTERM.
async fn wait_for_stop() -> Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    Ok(())
}

fn human_line(e: &Value) -> String {
    let ts = e["@timestamp"].as_str().unwrap_or("");
    let host = e["host"]["name"].as_str().unwrap_or("-");
    let kind = e["event"]["dataset"].as_str().unwrap_or("");
    let gib = |v: &Value| v.as_f64().unwrap_or(0.0) / (1u64 << 30) as f64;
    let msg = match (e["message"].as_str(), e.get("system")) {
        (Some(m), _) => m.to_string(),
        (None, Some(m)) => format!(
            "cpu {:.1}% mem {:.1}/{:.1} GiB load {} {} {} disk {:.0}/{:.0} GiB",
            m["cpu_pct"].as_f64().unwrap_or(0.0) * 100.0,
            gib(&m["memory_used_bytes"]),
            gib(&m["memory_total_bytes"]),
            m["load_1"],
            m["load_5"],
            m["load_15"],
            gib(&m["disk_used_bytes"]),
            gib(&m["disk_total_bytes"]),
        ),
        (None, None) => {
            let mut m = serde_json::Map::new();
            for k in ["process", "user", "source", "destination", "file", "vigie"] {
                if let Some(v) = e.get(k) {
                    m.insert(k.to_string(), v.clone());
                }
            }
            Value::Object(m).to_string()
        }
    };
    format!("{ts} {host} {kind} {msg}")
}

/// A client of the collector's management API.
struct Api {
    base: String,
    token: String,
}

impl Api {
    fn new(data_dir: &Path, api: Option<&str>) -> Result<Api> {
        let tok_path = data_dir.join("collector/api.token");
        let token = std::fs::read_to_string(&tok_path)
            .with_context(|| format!("cannot read the service token {}: is `vigie up` running with this data directory? (set --data-dir or VIGIE_DATA_DIR)", tok_path.display()))?
            .trim()
            .to_string();
        let base = match api {
            Some(a) => a.trim_end_matches('/').to_string(),
            None => std::fs::read_to_string(data_dir.join("collector/api.url"))
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|_| "http://127.0.0.1:7701".into()),
        };
        Ok(Api { base, token })
    }

    fn handle(&self, r: Result<ureq::Response, ureq::Error>) -> Result<Value> {
        match r {
            Ok(resp) => Ok(resp.into_json()?),
            Err(ureq::Error::Status(code, resp)) => {
                let v: Value = resp.into_json().unwrap_or(Value::Null);
                bail!(
                    "{} (HTTP {code})",
                    v["error"].as_str().unwrap_or("request failed")
                )
            }
            Err(e) => bail!(
                "cannot reach the collector at {}: {e}; is `vigie up` running?",
                self.base
            ),
        }
    }

    fn get(&self, path: &str, params: &[(&str, String)]) -> Result<Value> {
        let mut req = ureq::get(&format!("{}{path}", self.base))
            .set("Authorization", &format!("Bearer {}", self.token))
            .timeout(Duration::from_secs(60));
        for (k, v) in params {
            req = req.query(k, v);
        }
        self.handle(req.call())
    }

    fn post(&self, path: &str, body: Value) -> Result<Value> {
        let req = ureq::post(&format!("{}{path}", self.base))
            .set("Authorization", &format!("Bearer {}", self.token))
            .timeout(Duration::from_secs(60));
        self.handle(req.send_json(body))
    }
}

async fn up(
    data_dir: PathBuf,
    no_agent: bool,
    lab: bool,
    ingest: SocketAddr,
    api_listen: SocketAddr,
    dashboard: SocketAddr,
    syslog: String,
) -> Result<()> {
    std::fs::create_dir_all(&data_dir).with_context(|| {
        format!(
            "cannot create the data directory {}; choose another with --data-dir",
            data_dir.display()
        )
    })?;
    let data_dir = data_dir.canonicalize()?;
    let cfg = vigie_collector::CollectorConfig {
        data_dir: data_dir.join("collector"),
        ingest_listen: ingest,
        api_listen,
        ..Default::default()
    };
    let collector = vigie_collector::Collector::start(cfg).await?;
    let api_url = format!("http://{}", collector.api_addr);
    vigie_agent::state::write_atomic(
        &data_dir.join("collector/api.url"),
        api_url.as_bytes(),
        0o644,
    )?;

    let mut agent = None;
    if !no_agent {
        let agent_dir = data_dir.join("agent");
        let paths = vigie_agent::state::Paths::new(&agent_dir);
        if !paths.is_enrolled() {
            let st = &collector.api_state;
            let addrs = vec![format!("127.0.0.1:{}", collector.ingest_addr.port())];
            let bundle = vigie_collector::api::create_token(
                &collector.store,
                &addrs,
                &st.server_name,
                &st.ca_der,
                Duration::from_secs(300),
                "local agent of vigie up".into(),
            )
            .await
            .map_err(|_| anyhow::anyhow!("cannot create the local agent's enrollment token"))?;
            let now = chrono_now();
            vigie_agent::enroll::enroll(&paths, &bundle.encode(), now)
                .await
                .context("cannot enroll the local agent")?;
        }
        let mut acfg = vigie_agent::config::AgentConfig::local_default(&agent_dir, &syslog);
        acfg.collectors = vec![format!("127.0.0.1:{}", collector.ingest_addr.port())];
        agent = Some(
            vigie_agent::Agent::start(acfg)
                .await
                .context("cannot start the local agent")?,
        );
    }

    let status = Arc::new(StatusPage {
        data_dir: data_dir.clone(),
        ingest: collector.ingest_addr,
        api: collector.api_addr,
        agent: !no_agent,
        syslog: syslog.clone(),
    });
    let listener = tokio::net::TcpListener::bind(dashboard)
        .await
        .with_context(|| format!("cannot listen on {dashboard} for the dashboard; is another vigie running? choose another with --dashboard"))?;
    let dash_addr = listener.local_addr()?;
    let store = collector.store.clone();
    let app = axum::Router::new().route(
        "/",
        axum::routing::get(move || {
            let status = status.clone();
            let store = store.clone();
            async move { axum::response::Html(status.render(store.stats().events)) }
        }),
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });

    let sim = if lab {
        let cfg = vigie_pve::sim::SimConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8006)),
            ..Default::default()
        };
        Some(
            vigie_pve::sim::Sim::start(cfg)
                .await
                .context("cannot start the Proxmox simulator for --lab")?,
        )
    } else {
        None
    };

    println!();
    println!("Vigie is running.");
    println!("  dashboard (status page)  http://{dash_addr}/");
    println!(
        "  agents ship to           UDP {}  (QUIC, mutual TLS)",
        collector.ingest_addr
    );
    println!(
        "  management API           {api_url}  (token in {})",
        data_dir.join("collector/api.token").display()
    );
    println!("  data directory           {}", data_dir.display());
    println!(
        "  detection rules          {}  (Sigma, hot-reloaded; see docs/rules.md)",
        data_dir.join("collector/rules").display()
    );
    if !no_agent {
        println!(
            "  local agent              journald, /var/log files, syslog on {syslog} (UDP+TCP), host metrics"
        );
    }
    if let Some(sim) = &sim {
        println!(
            "  Proxmox simulator (lab)  {}  (user root@pam, password {}; token {}={})",
            sim.base_url(),
            vigie_pve::sim::DEFAULT_PASSWORD,
            vigie_pve::sim::DEFAULT_TOKEN_ID,
            vigie_pve::sim::DEFAULT_TOKEN_SECRET
        );
    }
    println!();
    println!(
        "Try:  vigie search --data-dir {} --since 15m",
        data_dir.display()
    );
    println!(
        "      vigie enroll create --data-dir {}   (a token for another machine's agent)",
        data_dir.display()
    );
    println!("Stop with Ctrl-C.");
    let _ = std::io::stdout().flush();

    wait_for_stop().await?;
    eprintln!("stopping…");
    if let Some(a) = agent {
        a.shutdown().await;
    }
    collector.shutdown().await;
    Ok(())
}

fn chrono_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

struct StatusPage {
    data_dir: PathBuf,
    ingest: SocketAddr,
    api: SocketAddr,
    agent: bool,
    syslog: String,
}

impl StatusPage {
    fn render(&self, events: u64) -> String {
        let esc = |s: &str| {
            s.replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;")
        };
        format!(
            "<!doctype html><html lang=en><meta charset=utf-8><title>Vigie</title>\
<style>body{{font-family:system-ui,sans-serif;max-width:48rem;margin:2rem auto;padding:0 1rem}}td{{padding:.2rem 1rem .2rem 0}}code{{background:#eee;padding:.1rem .3rem}}@media(prefers-color-scheme:dark){{body{{background:#111;color:#ddd}}code{{background:#333}}}}</style>\
<h1>Vigie is running</h1><p>The full dashboard is on its way; this page says what runs and where.</p>\
<table><tr><td>Agents ship to</td><td><code>UDP {}</code> (QUIC, mutual TLS)</td></tr>\
<tr><td>Management API</td><td><code>http://{}</code></td></tr>\
<tr><td>Data directory</td><td><code>{}</code></td></tr>\
<tr><td>Local agent</td><td>{}</td></tr>\
<tr><td>Events stored</td><td>{}</td></tr></table>\
<h2>Search</h2><p><code>vigie search --data-dir {} --since 15m 'sshd AND event.outcome:failure'</code></p>\
<h2>Add a machine</h2><p><code>vigie enroll create --data-dir {}</code>, then on the machine <code>vigie-agent enroll --token-file FILE</code>.</p></html>",
            self.ingest,
            self.api,
            esc(&self.data_dir.display().to_string()),
            if self.agent {
                format!(
                    "watching this machine (journald, /var/log, syslog on {})",
                    esc(&self.syslog)
                )
            } else {
                "not started".into()
            },
            events,
            esc(&self.data_dir.display().to_string()),
            esc(&self.data_dir.display().to_string()),
        )
    }
}

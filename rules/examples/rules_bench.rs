//! Single-threaded Sigma evaluation throughput (targets.md P2).
//!
//! `cargo run --release -p vigie-rules --example rules_bench [CORPUS_DIR] [EVENTS]`
//!
//! Loads the SigmaHQ Linux corpus, generates realistic process, auth and log
//! events (about 5 % of them built to match a rule), and reports events/s with
//! every loaded rule, with 100 rules and with 1,000 rules (the corpus replicated
//! with varied literals), prefilter on and off; the median of 5 runs each.

use std::path::{Path, PathBuf};
use std::time::Instant;

use vigie_proto::event::{Event, Kind, Timestamp};
use vigie_rules::{Engine, RuleMatch, RuleSet, Scratch, load_sources, synth};
use yaml_rust2::{Yaml, YamlEmitter, YamlLoader};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[(self.next() % v.len() as u64) as usize]
    }
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let mut v: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
    v.sort();
    for p in v {
        if p.is_dir() {
            walk(&p, out);
        } else if p.extension().is_some_and(|e| e == "yml" || e == "yaml") {
            out.push(p);
        }
    }
}

/// Appends `suffix` to every string value under `detection` (not to keys, not
/// to the condition, not to CIDR networks), so replicas need other literals.
fn vary(y: &mut Yaml, suffix: &str, skip: bool) {
    match y {
        Yaml::String(s) if !skip => s.push_str(suffix),
        Yaml::Array(a) => a.iter_mut().for_each(|v| vary(v, suffix, skip)),
        Yaml::Hash(h) => {
            for (k, v) in h.iter_mut() {
                let key = k.as_str().unwrap_or_default();
                let skip = skip || key == "condition" || key.contains("cidr");
                vary(v, suffix, skip);
            }
        }
        _ => {}
    }
}

fn replicate(files: &[(String, String)], n: usize) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut k = 0;
    while out.len() < n {
        k += 1;
        for (path, text) in files {
            if out.len() >= n {
                break;
            }
            let Ok(docs) = YamlLoader::load_from_str(text) else {
                continue;
            };
            let Some(Yaml::Hash(mut h)) = docs.into_iter().next() else {
                continue;
            };
            let suffix = format!("v{k}");
            if let Some(d) = h.get_mut(&Yaml::String("detection".into())) {
                vary(d, &suffix, false);
            }
            h.insert(
                Yaml::String("id".into()),
                Yaml::String(format!("replica-{k}-{path}")),
            );
            let mut s = String::new();
            if YamlEmitter::new(&mut s).dump(&Yaml::Hash(h)).is_ok() {
                out.push((format!("{path}#{k}"), s));
            }
        }
    }
    out
}

fn events(set: &RuleSet, n: usize, rng: &mut Rng) -> Vec<Event> {
    let fields = set.fields().to_vec();
    let examples: Vec<Event> = set
        .rules
        .iter()
        .filter_map(|r| synth::example(r, &fields).ok().map(|e| e.matching))
        .collect();
    let procs: &[(&str, &str)] = &[
        ("/usr/bin/ls", "ls -la /var/log"),
        ("/usr/bin/bash", "bash -c /usr/local/bin/backup.sh"),
        (
            "/usr/bin/python3",
            "python3 /opt/app/worker.py --queue default",
        ),
        ("/usr/bin/systemctl", "systemctl status pveproxy"),
        ("/usr/sbin/qm", "qm list"),
        (
            "/usr/bin/pvesh",
            "pvesh get /nodes/pve1/status --output-format json",
        ),
        ("/usr/bin/grep", "grep -r ERROR /var/log/pve/tasks"),
        ("/usr/bin/cat", "cat /proc/meminfo"),
        ("/usr/bin/ps", "ps aux"),
        ("/usr/bin/git", "git pull --ff-only"),
        ("/usr/bin/rsync", "rsync -a /srv/data/ /mnt/backup/data/"),
        ("/usr/bin/apt-get", "apt-get update"),
        ("/usr/sbin/cron", "/usr/sbin/CRON -f -P"),
        ("/usr/bin/sleep", "sleep 30"),
        ("/usr/bin/find", "find /tmp -mtime +7 -delete"),
        ("/usr/bin/tar", "tar -czf /mnt/backup/etc.tgz /etc"),
    ];
    let users = ["root", "alice", "bob", "backup", "www-data"];
    let ips = ["10.0.0.5", "192.168.1.20", "203.0.113.9", "198.51.100.4"];
    let logs: &[(&str, &str)] = &[
        ("systemd", "Started Session 42 of user root."),
        ("cron", "(root) CMD (/usr/local/bin/backup.sh)"),
        ("pveproxy", "worker 12345 finished"),
        ("kernel", "vmbr0: port 2(tap100i0) entered forwarding state"),
        (
            "pvedaemon",
            "<root@pam> starting task UPID:pve1:0001:qmstart:100:root@pam:",
        ),
        ("rsyslogd", "rsyslogd was HUPed"),
    ];
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let t = Timestamp::from_millis(1_718_000_000_000 + i as i64);
        let roll = rng.next() % 100;
        let mut ev = if roll < 5 && !examples.is_empty() {
            let mut e = rng.pick(&examples).clone();
            e.timestamp = t;
            e
        } else if roll < 65 {
            let (exe, cmd) = rng.pick(procs);
            let mut e = Event::new(Kind::ProcessExec, t);
            let p = e.process.get_or_insert_with(Default::default);
            p.executable = exe.to_string();
            p.command_line = format!("{cmd} {}", rng.next() % 1000);
            p.pid = Some((rng.next() % 60000) as u32);
            p.working_directory = "/root".into();
            let parent = p.parent.get_or_insert_with(Default::default);
            parent.executable = "/usr/bin/bash".into();
            parent.command_line = "-bash".into();
            e.user.get_or_insert_with(Default::default).name = rng.pick(&users).to_string();
            e
        } else if roll < 85 {
            let mut e = Event::new(Kind::Authentication, t);
            let user = rng.pick(&users);
            let ip = rng.pick(&ips);
            e.message = if rng.next().is_multiple_of(2) {
                format!(
                    "Accepted publickey for {user} from {ip} port 52044 ssh2: ED25519 SHA256:abc"
                )
            } else {
                format!("Failed password for invalid user {user} from {ip} port 40022 ssh2")
            };
            e.log.get_or_insert_with(Default::default).logger = "sshd".into();
            e.user.get_or_insert_with(Default::default).name = user.to_string();
            e
        } else {
            let (logger, msg) = rng.pick(logs);
            let mut e = Event::new(Kind::Log, t);
            e.message = msg.to_string();
            e.log.get_or_insert_with(Default::default).logger = logger.to_string();
            e
        };
        ev.host.name = "pve1".into();
        out.push(ev);
    }
    out
}

fn measure(engine: &Engine, evs: &[Event]) -> (f64, usize) {
    let mut sc = Scratch::default();
    let mut out: Vec<RuleMatch> = Vec::new();
    let mut rates = Vec::new();
    let mut matches = 0;
    for run in 0..6 {
        let start = Instant::now();
        let mut n = 0;
        for ev in evs {
            out.clear();
            engine.evaluate_with(ev, &mut sc, &mut out);
            n += out.len();
        }
        let secs = start.elapsed().as_secs_f64();
        if run > 0 {
            rates.push(evs.len() as f64 / secs);
        }
        matches = n;
    }
    rates.sort_by(|a, b| a.total_cmp(b));
    (rates[rates.len() / 2], matches)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = args.get(1).map(PathBuf::from).unwrap_or_else(|| {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/sigma-linux")
    });
    let n: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let mut paths = Vec::new();
    walk(&dir, &mut paths);
    let files: Vec<(String, String)> = paths
        .iter()
        .filter_map(|p| Some((p.display().to_string(), std::fs::read_to_string(p).ok()?)))
        .collect();
    let (all, errors) = load_sources(&files);
    println!(
        "corpus: {} files, {} rules loaded, {} rejected",
        files.len(),
        all.len(),
        errors.len()
    );

    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut hundred = all.clone();
    hundred.rules.truncate(100);
    let (mut thousand, terr) = load_sources(&replicate(&files, 1_010));
    thousand.rules.truncate(1_000);
    println!(
        "replicated: {} rules loaded ({} rejected)",
        thousand.len(),
        terr.len()
    );

    for (label, set) in [("all", all), ("100", hundred), ("1000", thousand)] {
        let evs = events(&set, n, &mut rng);
        let rules = set.len();
        let engine = Engine::new(set);
        let t = Instant::now();
        let (rate, matches) = measure(&engine, &evs);
        let plain = Engine::new(engine.rule_set().clone()).with_prefilter(false);
        let (rate_plain, matches_plain) = measure(&plain, &evs);
        assert_eq!(
            matches, matches_plain,
            "prefilter changed the number of matches"
        );
        println!(
            "{label:>5} rules ({rules:>4}, {} prefiltered): {:>9.0} events/s with prefilter, {:>9.0} without; {} matches over {} events ({:.1}s)",
            engine.prefiltered_rules(),
            rate,
            rate_plain,
            matches,
            evs.len(),
            t.elapsed().as_secs_f64()
        );
    }
}

//! End to end on loopback: a real collector and a real agent, lines appended to a
//! watched file, entries of a real journal file and syslog messages (RFC 3164 and
//! 5424, UDP and TCP) all arrive, sshd failures become authentication events, and
//! the `vigie search` binary finds them with the right fields and timestamps.

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use vigie_agent::config::AgentConfig;
use vigie_agent::sources::{file, journald, syslog};

fn free_port() -> u16 {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let t =
        std::net::TcpListener::bind(s.local_addr().expect("addr")).expect("tcp on the same port");
    let p = t.local_addr().expect("addr").port();
    drop((s, t));
    p
}

fn write_journal(dir: &Path, name: &str, entries: &[(&str, &str, u64)]) {
    let mut text = String::new();
    for (ident, msg, ts_us) in entries {
        text.push_str(&format!(
            "__REALTIME_TIMESTAMP={ts_us}\n__MONOTONIC_TIMESTAMP=1\n_BOOT_ID=0123456789abcdef0123456789abcdef\nMESSAGE={msg}\nSYSLOG_IDENTIFIER={ident}\nPRIORITY=5\n_PID=4242\n_HOSTNAME=journalhost\n\n"
        ));
    }
    let mut child = Command::new("/lib/systemd/systemd-journal-remote")
        .arg("-o")
        .arg(dir.join(name))
        .arg("-")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("systemd-journal-remote (apt package systemd-journal-remote)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write");
    assert!(child.wait().expect("wait").success());
}

fn search(data_dir: &Path, query: &str) -> Vec<Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_vigie"))
        .args(["--data-dir"])
        .arg(data_dir)
        .args([
            "search",
            query,
            "--from",
            "2000-01-01T00:00:00Z",
            "--json",
            "--limit",
            "1000",
        ])
        .output()
        .expect("run vigie search");
    assert!(
        out.status.success(),
        "vigie search failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON event per line"))
        .collect()
}

fn wait_for(data_dir: &Path, query: &str, n: usize) -> Vec<Value> {
    let start = Instant::now();
    loop {
        let r = search(data_dir, query);
        if r.len() >= n {
            return r;
        }
        if start.elapsed() > Duration::from_secs(60) {
            let all: Vec<String> = search(data_dir, "").iter().map(|e| e.to_string()).collect();
            panic!(
                "only {} of {n} events for {query:?} after 60 s; stored:\n{}",
                r.len(),
                all.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn file_journal_and_syslog_reach_search() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("info,quinn=warn")
        .try_init();
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("data");
    let logs = tmp.path().join("logs");
    let jdir = tmp.path().join("journal");
    std::fs::create_dir_all(&logs).expect("mkdir");
    std::fs::create_dir_all(&jdir).expect("mkdir");
    let auth_log = logs.join("auth.log");
    std::fs::write(&auth_log, "").expect("create");
    let t0_us = (chrono::Utc::now().timestamp_micros() - 120_000_000) as u64;
    write_journal(
        &jdir,
        "one.journal",
        &[
            (
                "sshd",
                "Failed password for invalid user admin from 198.51.100.23 port 40022 ssh2",
                t0_us,
            ),
            ("cron", "journal entry number one", t0_us + 1),
        ],
    );
    let syslog_port = free_port();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("rt");
    let (collector, agent) = rt.block_on(async {
        let c = vigie_collector::Collector::start(vigie_collector::CollectorConfig {
            data_dir: data.join("collector"),
            ingest_listen: "127.0.0.1:0".parse().expect("addr"),
            api_listen: "127.0.0.1:0".parse().expect("addr"),
            min_free_bytes: 0,
            ..Default::default()
        })
        .await
        .expect("collector");
        std::fs::write(
            data.join("collector/api.url"),
            format!("http://{}", c.api_addr),
        )
        .expect("api.url");
        let st = &c.api_state;
        let bundle = vigie_collector::api::create_token(
            &c.store,
            &st.ingest_addrs,
            &st.server_name,
            &st.ca_der,
            Duration::from_secs(60),
            String::new(),
        )
        .await
        .map_err(|_| "token")
        .expect("token");
        let token_file = tmp.path().join("token");
        std::fs::write(&token_file, bundle.encode()).expect("token file");

        let mut cfg = AgentConfig {
            data_dir: data.join("agent"),
            enroll_token_file: Some(token_file),
            ..Default::default()
        };
        cfg.file = vec![file::FileConfig {
            name: "logs".into(),
            paths: vec![format!("{}/*.log", logs.display())],
            read_from: file::ReadFrom::Beginning,
            poll_interval: Duration::from_millis(50),
            ..Default::default()
        }];
        cfg.journald = Some(journald::JournaldConfig {
            directory: Some(jdir.clone()),
            read_from: journald::JournalStart::Head,
            ..Default::default()
        });
        cfg.syslog = Some(syslog::SyslogConfig {
            udp: Some(format!("127.0.0.1:{syslog_port}")),
            tcp: Some(format!("127.0.0.1:{syslog_port}")),
            timezone: "UTC".parse().expect("tz"),
            ..Default::default()
        });
        let a = vigie_agent::Agent::start(cfg).await.expect("agent");
        (c, a)
    });

    // File lines, in the auth.log format Debian's rsyslog writes.
    {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&auth_log)
            .expect("open");
        writeln!(f, "2026-03-01T10:15:00.000000+00:00 web1 sshd[811]: Failed password for root from 203.0.113.7 port 50122 ssh2").expect("write");
        writeln!(f, "2026-03-01T10:15:05.000000+00:00 web1 sshd[811]: Accepted publickey for alice from 203.0.113.8 port 50200 ssh2: ED25519 SHA256:abc").expect("write");
        writeln!(f, "a plain line without any syslog header").expect("write");
    }
    // Syslog: RFC 3164 over UDP, RFC 5424 over TCP (octet counting).
    let msg5424 = "<165>1 2026-03-02T08:30:00.123Z pve1 pvedaemon 1234 ID47 [origin ip=\"192.0.2.1\"] <root@pam> starting task UPID:pve1";
    // The listener starts with the agent, asynchronously: retry until it accepts.
    let start = Instant::now();
    let mut tcp = loop {
        match std::net::TcpStream::connect(("127.0.0.1", syslog_port)) {
            Ok(s) => break s,
            Err(e) => {
                assert!(
                    start.elapsed() < Duration::from_secs(10),
                    "syslog TCP listener never came up: {e}"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    };
    write!(tcp, "{} {msg5424}", msg5424.len()).expect("tcp write");
    tcp.flush().expect("flush");
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
    udp.send_to(b"<38>Mar  2 08:00:00 gw1 sshd[99]: Failed password for invalid user guest from 192.0.2.44 port 2222 ssh2", ("127.0.0.1", syslog_port)).expect("send");

    // File.
    let r = wait_for(
        &data,
        "log.file.path:*auth.log AND event.outcome:failure",
        1,
    );
    let e = &r[0];
    assert_eq!(e["event"]["dataset"], "authentication");
    assert_eq!(e["event"]["action"], "ssh_login");
    assert_eq!(e["user"]["name"], "root");
    assert_eq!(e["source"]["ip"], "203.0.113.7");
    assert_eq!(e["source"]["port"], 50122);
    assert_eq!(e["@timestamp"], "2026-03-01T10:15:00Z");
    assert_eq!(e["log"]["syslog"]["hostname"], "web1");
    assert!(
        e["message"]
            .as_str()
            .expect("message")
            .contains("Failed password for root")
    );
    let r = wait_for(&data, "event.outcome:success AND user.name:alice", 1);
    assert_eq!(r[0]["source"]["ip"], "203.0.113.8");
    wait_for(&data, "\"plain line without\"", 1);

    // Journal.
    let r = wait_for(
        &data,
        "event.module:journald AND log.logger:sshd AND failed",
        1,
    );
    let e = &r[0];
    assert_eq!(e["event"]["dataset"], "authentication");
    assert_eq!(e["user"]["name"], "admin");
    assert_eq!(e["source"]["ip"], "198.51.100.23");
    assert_eq!(e["process"]["pid"], 4242);
    let ts = vigie_proto::Timestamp::parse_rfc3339(e["@timestamp"].as_str().expect("ts"))
        .expect("rfc3339");
    assert_eq!(ts.nanos() / 1000, t0_us as i64);
    wait_for(&data, "\"journal entry number one\"", 1);
    // The journal keeps growing: a second file, followed from the cursor.
    write_journal(
        &jdir,
        "two.journal",
        &[("cron", "journal entry number two", t0_us + 5_000_000)],
    );
    wait_for(&data, "\"journal entry number two\"", 1);
    assert_eq!(
        search(&data, "\"journal entry number one\"").len(),
        1,
        "journal entry shipped twice"
    );

    // Syslog.
    let r = wait_for(&data, "event.module:syslog AND user.name:guest", 1);
    let e = &r[0];
    assert_eq!(e["event"]["outcome"], "failure");
    assert_eq!(e["source"]["ip"], "192.0.2.44");
    assert_eq!(e["log"]["syslog"]["hostname"], "gw1");
    assert_eq!(e["log"]["level"], "info");
    let r = wait_for(&data, "log.syslog.appname:pvedaemon", 1);
    let e = &r[0];
    assert_eq!(e["@timestamp"], "2026-03-02T08:30:00.123Z");
    assert_eq!(e["log"]["syslog"]["msgid"], "ID47");
    assert_eq!(e["log"]["level"], "notice");
    assert_eq!(e["labels"]["sd.origin.ip"], "192.0.2.1");

    // Every event is stored once, and an empty query returns all of them.
    let all = search(&data, "");
    for needle in [
        "Failed password for root",
        "Accepted publickey for alice",
        "plain line",
        "journal entry number one",
        "journal entry number two",
        "invalid user guest",
        "starting task",
    ] {
        assert!(
            all.iter()
                .any(|e| e["message"].as_str().unwrap_or("").contains(needle)),
            "{needle:?} missing from an unfiltered search:\n{}",
            all.iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    let mut ids: Vec<&str> = all
        .iter()
        .filter_map(|e| e["event"]["id"].as_str())
        .collect();
    let n = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), n, "duplicate event ids");

    rt.block_on(async {
        agent.shutdown().await;
        collector.shutdown().await;
    });
}

fn vigie(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_vigie"))
        .args(args)
        .output()
        .expect("run vigie");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    (out.status.code().unwrap_or(-1), text)
}

/// `vigie rules check` on the SigmaHQ Linux corpus, `vigie rules test` on an
/// events file, and `vigie rules backtest` over events a real agent shipped
/// (sshd failures parsed from a log file) through a real collector.
#[test]
fn rules_check_test_and_backtest() {
    // check: exactly one rejected file today, with its precise reason; exit code 1.
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/sigma-linux");
    let (code, out) = vigie(&["rules", "check", corpus.to_str().expect("utf-8 path")]);
    assert_eq!(code, 1, "{out}");
    let rejected: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("rejected: "))
        .collect();
    assert_eq!(rejected.len(), 1, "{out}");
    assert!(
        rejected[0].contains("process_creation/proc_creation_lnx_omigod_scx_runasprovider_executescript.yml")
            && rejected[0].ends_with("field `LogonId` has no vigie equivalent for logsource {product: linux, category: process_creation}; map it in the pipeline or use an ecs field path"),
        "{out}"
    );
    assert!(
        out.contains(
            "143 files: 142 rules loaded (142 detection, 0 correlation), 1 rejected in 1 files"
        ),
        "{out}"
    );
    let tmp = tempfile::tempdir().expect("tmp");
    let good = tmp.path().join("good");
    std::fs::create_dir_all(&good).expect("mkdir");
    let rule = good.join("ssh_brute_force.yml");
    std::fs::write(
        &rule,
        "title: SSH authentication failure\nid: ssh-fail\nname: ssh_fail\nlogsource: {product: linux, service: sshd}\ndetection:\n  selection:\n    event.outcome: failure\n  condition: selection\n---\ntitle: SSH brute force\nid: ssh-brute\nlevel: high\ncorrelation:\n  type: event_count\n  rules: [ssh_fail]\n  group-by: [SourceIp]\n  timespan: 5m\n  condition: {gte: 5}\n",
    )
    .expect("rule");
    let (code, out) = vigie(&["rules", "check", good.to_str().expect("path")]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("1 files: 2 rules loaded (1 detection, 1 correlation), 0 rejected"),
        "{out}"
    );

    // test: events in canonical JSON, one per line.
    let events = tmp.path().join("events.jsonl");
    let mut lines = String::new();
    for i in 0..6 {
        let ip = if i == 5 { "192.0.2.1" } else { "203.0.113.7" };
        lines.push_str(&format!(
            "{{\"@timestamp\":\"2026-03-01T10:15:0{i}Z\",\"event\":{{\"dataset\":\"authentication\",\"outcome\":\"failure\"}},\"log\":{{\"level\":\"info\",\"logger\":\"sshd\"}},\"source\":{{\"ip\":\"{ip}\"}}}}\n"
        ));
    }
    std::fs::write(&events, lines).expect("events");
    let (code, out) = vigie(&[
        "rules",
        "test",
        rule.to_str().expect("path"),
        "--events",
        events.to_str().expect("path"),
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(
            "correlation SSH brute force (ssh-brute) [high] group {SourceIp=203.0.113.7}: count = 5"
        ),
        "{out}"
    );
    assert!(
        out.contains("events line-1, line-2, line-3, line-4, line-5"),
        "{out}"
    );
    assert!(
        out.contains("6 events: 6 matched, 1 correlation matches"),
        "{out}"
    );

    // backtest: a real agent ships sshd failures from a log file to a real collector.
    let data = tmp.path().join("data");
    let logs = tmp.path().join("logs");
    std::fs::create_dir_all(&logs).expect("mkdir");
    let auth_log = logs.join("auth.log");
    let mut text = String::new();
    for i in 0..5 {
        let t = chrono::Utc::now() - chrono::Duration::seconds(60 - i);
        text.push_str(&format!(
            "{} web1 sshd[811]: Failed password for root from 203.0.113.7 port {} ssh2\n",
            t.format("%Y-%m-%dT%H:%M:%S%.6f+00:00"),
            50000 + i
        ));
    }
    std::fs::write(&auth_log, text).expect("log");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("rt");
    let (collector, agent) = rt.block_on(async {
        let c = vigie_collector::Collector::start(vigie_collector::CollectorConfig {
            data_dir: data.join("collector"),
            ingest_listen: "127.0.0.1:0".parse().expect("addr"),
            api_listen: "127.0.0.1:0".parse().expect("addr"),
            min_free_bytes: 0,
            ..Default::default()
        })
        .await
        .expect("collector");
        std::fs::write(
            data.join("collector/api.url"),
            format!("http://{}", c.api_addr),
        )
        .expect("api.url");
        let st = &c.api_state;
        let bundle = vigie_collector::api::create_token(
            &c.store,
            &st.ingest_addrs,
            &st.server_name,
            &st.ca_der,
            Duration::from_secs(60),
            String::new(),
        )
        .await
        .map_err(|_| "token")
        .expect("token");
        let token_file = tmp.path().join("token");
        std::fs::write(&token_file, bundle.encode()).expect("token file");
        let mut cfg = AgentConfig {
            data_dir: data.join("agent"),
            enroll_token_file: Some(token_file),
            ..Default::default()
        };
        cfg.file = vec![file::FileConfig {
            name: "logs".into(),
            paths: vec![format!("{}/*.log", logs.display())],
            read_from: file::ReadFrom::Beginning,
            poll_interval: Duration::from_millis(50),
            ..Default::default()
        }];
        let a = vigie_agent::Agent::start(cfg).await.expect("agent");
        (c, a)
    });
    wait_for(
        &data,
        "event.dataset:authentication AND event.outcome:failure",
        5,
    );
    let (code, out) = vigie(&[
        "--data-dir",
        data.to_str().expect("path"),
        "rules",
        "backtest",
        rule.to_str().expect("path"),
        "--since",
        "1h",
    ]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        out.lines()
            .filter(|l| l.contains("SSH authentication failure (ssh-fail)"))
            .count(),
        5,
        "{out}"
    );
    assert!(
        out.contains(
            "correlation SSH brute force (ssh-brute) [high] group {SourceIp=203.0.113.7}: count = 5"
        ),
        "{out}"
    );
    assert!(out.contains("5 matched, 1 correlation matches"), "{out}");
    rt.block_on(async {
        agent.shutdown().await;
        collector.shutdown().await;
    });
}

#[test]
fn bootstrap_validate_reports_the_key_and_the_fix() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../bootstrap/tests/answers");
    let good = std::fs::read_dir(dir.join("good"))
        .expect("good answers")
        .map(|e| e.expect("entry").path())
        .find(|p| p.extension().is_some_and(|x| x == "toml"))
        .expect("a good answer file");
    let out = Command::new(env!("CARGO_BIN_EXE_vigie"))
        .args(["bootstrap", "validate"])
        .arg(&good)
        .output()
        .expect("run vigie");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bad = std::fs::read_dir(dir.join("bad"))
        .expect("bad answers")
        .map(|e| e.expect("entry").path())
        .find(|p| p.extension().is_some_and(|x| x == "toml"))
        .expect("a bad answer file");
    let expected =
        std::fs::read_to_string(bad.with_extension("expected")).expect("expected errors");
    let out = Command::new(env!("CARGO_BIN_EXE_vigie"))
        .args(["bootstrap", "validate"])
        .arg(&bad)
        .output()
        .expect("run vigie");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    for line in expected.lines().filter(|l| !l.trim().is_empty()) {
        assert!(
            stderr.contains(line.trim()),
            "missing {line:?} in:\n{stderr}"
        );
    }
}

//! Detection end to end against a real collector: Sigma rules in the rules
//! directory, events shipped over the real QUIC path, alerts in the API with
//! deduplication, acknowledge/resolve, silences, hot reload of a broken rule,
//! and notifications received by a real SMTP server (Python's aiosmtpd, plain
//! and STARTTLS) and by a webhook receiver that checks the HMAC signature.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;

mod support;
use ed25519_dalek::SigningKey;
use serde_json::{Value, json};
use vigie_collector::Collector;
use vigie_net::request;
use vigie_proto::batch::seal;
use vigie_proto::event::{Endpoint, Log, User};
use vigie_proto::wire::{self, MsgType, Reply};
use vigie_proto::{AgentId, Epoch, Event, Kind, Outcome, Seq, Timestamp};

const SSH_RULES: &str = r#"title: SSH authentication failure
id: 7c1f0e62-0000-4000-8000-55a1f0000001
name: ssh_auth_failure
status: stable
level: low
logsource:
  product: linux
  service: sshd
detection:
  selection:
    event.outcome: failure
  condition: selection
---
title: SSH brute force from one address
id: 2f9b4c2e-0000-4000-8000-55a1f0000002
status: stable
level: high
tags:
  - attack.credential_access
  - attack.t1110.001
correlation:
  type: event_count
  rules:
    - ssh_auth_failure
  group-by:
    - SourceIp
  timespan: 1m
  condition:
    gte: 5
"#;

const NC_RULE: &str = r#"title: Netcat listener started
id: 9d2c6a1e-0000-4000-8000-0000000000nc
status: stable
level: critical
tags: [attack.execution, attack.t1059.004]
logsource:
  product: linux
  category: process_creation
detection:
  selection:
    Image|endswith: ['/nc', '/ncat', '/netcat']
    CommandLine|contains: ' -l'
  condition: selection
"#;

const BRUTE_ID: &str = "2f9b4c2e-0000-4000-8000-55a1f0000002";
const NC_ID: &str = "9d2c6a1e-0000-4000-8000-0000000000nc";
const HOOK_SECRET: &str = "test-webhook-secret-0123456789abcdef";

/// A child process killed when the test ends, even on panic.
struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A real SMTP server (aiosmtpd) printing every message it receives.
fn smtp_server(
    port: u16,
    tls: Option<(&std::path::Path, &std::path::Path)>,
) -> (Kill, Arc<Mutex<String>>) {
    let mut cmd = Command::new("python3");
    cmd.args(["-u", "-m", "aiosmtpd", "-n", "-l"])
        .arg(format!("127.0.0.1:{port}"));
    if let Some((cert, key)) = tls {
        cmd.arg("--tlscert").arg(cert).arg("--tlskey").arg(key);
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 -m aiosmtpd (scripts/prereqs.sh installs it: pip install aiosmtpd)");
    let out = Arc::new(Mutex::new(String::new()));
    let stdout = child.stdout.take().expect("stdout");
    let sink = out.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let mut s = sink.lock().expect("lock");
            s.push_str(&line);
            s.push('\n');
        }
    });
    let guard = Kill(child);
    wait_until("the SMTP server to listen", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    (guard, out)
}

/// One webhook request as received.
#[derive(Debug, Clone)]
struct Hook {
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Hook {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A tiny HTTP/1.1 server that records POSTs and answers 200.
fn webhook_server() -> (u16, Arc<Mutex<Vec<Hook>>>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    let got = Arc::new(Mutex::new(Vec::new()));
    let sink = got.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let mut r = BufReader::new(s.try_clone().expect("clone"));
            let mut headers = Vec::new();
            let mut line = String::new();
            if r.read_line(&mut line).is_err() {
                continue;
            }
            loop {
                line.clear();
                if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some((k, v)) = line.trim_end().split_once(':') {
                    headers.push((k.trim().to_string(), v.trim().to_string()));
                }
            }
            let len: usize = headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.parse().ok())
                .unwrap_or(0);
            let mut body = vec![0; len];
            if r.read_exact(&mut body).is_err() {
                continue;
            }
            sink.lock().expect("lock").push(Hook { headers, body });
            let _ =
                s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    (port, got)
}

struct Api {
    base: String,
    token: String,
}

fn answer(r: Result<ureq::Response, ureq::Error>) -> (u16, Value) {
    match r {
        Ok(resp) => (resp.status(), resp.into_json().unwrap_or(Value::Null)),
        Err(ureq::Error::Status(code, resp)) => (code, resp.into_json().unwrap_or(Value::Null)),
        Err(e) => panic!("request failed: {e}"),
    }
}

impl Api {
    fn get(&self, path: &str) -> (u16, Value) {
        answer(
            ureq::get(&format!("{}{path}", self.base))
                .set("Authorization", &format!("Bearer {}", self.token))
                .call(),
        )
    }
    fn post(&self, path: &str, body: Value) -> (u16, Value) {
        answer(
            ureq::post(&format!("{}{path}", self.base))
                .set("Authorization", &format!("Bearer {}", self.token))
                .send_json(body),
        )
    }
    fn delete(&self, path: &str) -> (u16, Value) {
        answer(
            ureq::delete(&format!("{}{path}", self.base))
                .set("Authorization", &format!("Bearer {}", self.token))
                .call(),
        )
    }
    fn metrics(&self) -> String {
        ureq::get(&format!("{}/metrics", self.base))
            .call()
            .expect("metrics")
            .into_string()
            .expect("text")
    }
    fn alerts(&self) -> Vec<Value> {
        let (code, v) = self.get("/api/v1/alerts");
        assert_eq!(code, 200, "{v}");
        v["alerts"].as_array().cloned().unwrap_or_default()
    }
    fn alert_of(&self, rule: &str) -> Option<Value> {
        self.alerts().into_iter().find(|a| a["rule_id"] == rule)
    }
    fn evaluated(&self) -> u64 {
        self.metrics()
            .lines()
            .find_map(|l| l.strip_prefix("vigie_detection_events_total "))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }
}

/// An enrolled test agent shipping batches over QUIC.
struct TestAgent {
    conn: quinn::Connection,
    _ep: quinn::Endpoint,
    key: SigningKey,
    id: AgentId,
    next: u64,
    prev: [u8; 32],
}

impl TestAgent {
    async fn enroll(c: &Collector) -> TestAgent {
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
        let key = SigningKey::from_bytes(&[7; 32]);
        let support::Enrolled {
            id: agent_id,
            conn,
            endpoint: ep,
        } = support::enroll(c.ingest_addr, &bundle, &key, "web1").await;
        TestAgent {
            conn,
            _ep: ep,
            key,
            id: agent_id,
            next: 0,
            prev: [0; 32],
        }
    }

    async fn ship(&mut self, events: &[Event]) {
        let (frame, hash) = seal(
            &self.key,
            self.id,
            Epoch(1),
            Seq(self.next),
            Timestamp(0),
            self.prev,
            events,
            1,
        )
        .expect("seal");
        let (ty, body) = request(
            &self.conn,
            &wire::frame(MsgType::Batch, &frame),
            Duration::from_secs(10),
        )
        .await
        .expect("batch");
        self.next += events.len() as u64;
        self.prev = hash;
        assert_eq!(
            wire::decode_body::<Reply>(ty, &body).expect("reply"),
            Reply::Ack {
                epoch: Epoch(1),
                stored_end: Seq(self.next)
            }
        );
    }
}

fn ssh_failure(t: Timestamp, ip: &str, port: u16) -> Event {
    let mut e = Event::new(Kind::Authentication, t);
    e.host.name = "web1".into();
    e.event.action = "ssh_login".into();
    e.event.outcome = Some(Outcome::Failure);
    e.set_message(format!(
        "Failed password for root from {ip} port {port} ssh2"
    ));
    e.log = Some(Log {
        logger: "sshd".into(),
        ..Default::default()
    });
    e.user = Some(User {
        name: "root".into(),
        ..Default::default()
    });
    e.source = Some(Endpoint {
        ip: ip.parse().ok(),
        port: Some(port),
        ..Default::default()
    });
    e
}

fn exec(t: Timestamp, image: &str, cmd: &str) -> Event {
    let mut e = Event::new(Kind::ProcessExec, t);
    e.host.name = "web1".into();
    e.event.action = "exec".into();
    let p = e.process.get_or_insert_with(Default::default);
    p.executable = image.into();
    p.command_line = cmd.into();
    p.pid = Some(4242);
    e
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut s = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        s.push_str(std::str::from_utf8(chunk).expect("ascii"));
        s.push('\n');
    }
    s.push_str(&format!("-----END {label}-----\n"));
    s
}

fn check_signature(h: &Hook) {
    let ts = h.header("X-Vigie-Timestamp").expect("timestamp header");
    let sig = h.header("X-Vigie-Signature").expect("signature header");
    let t: i64 = ts.parse().expect("unix seconds");
    let now = vigie_collector::ingest::now().secs();
    assert!((now - t).abs() < 300, "stale timestamp {t} (now {now})");
    let hex_mac = sig.strip_prefix("sha256=").expect("sha256= prefix");
    let mac = hex::decode(hex_mac).expect("hex");
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, HOOK_SECRET.as_bytes());
    let mut signed = format!("{ts}.").into_bytes();
    signed.extend_from_slice(&h.body);
    ring::hmac::verify(&key, &signed, &mac).expect("valid HMAC-SHA256 signature");
    // A replayed body under another timestamp does not verify.
    let mut forged = format!("{}.", t + 1).into_bytes();
    forged.extend_from_slice(&h.body);
    assert!(ring::hmac::verify(&key, &forged, &mac).is_err());
}

#[test]
fn rules_alerts_silences_and_notifications_end_to_end() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("info,quinn=warn")
        .try_init();
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("c");
    let rules = data.join("rules");
    std::fs::create_dir_all(rules.join("linux")).expect("mkdir");
    std::fs::write(rules.join("linux/ssh_brute_force.yml"), SSH_RULES).expect("rule");
    std::fs::write(rules.join("nc_listener.yml"), NC_RULE).expect("rule");

    // A real SMTP server (plain, a local relay), another with STARTTLS and a
    // certificate from a private CA, and a webhook receiver.
    let smtp_port = free_port();
    let (_smtp, mails) = smtp_server(smtp_port, None);
    let ca = vigie_net::Ca::generate().expect("ca");
    let (cert, key) = ca
        .issue_server(&["localhost".to_string()])
        .expect("server cert");
    let (cert_pem, key_pem, ca_pem) = (
        tmp.path().join("smtp.crt"),
        tmp.path().join("smtp.key"),
        tmp.path().join("ca.crt"),
    );
    std::fs::write(&cert_pem, pem("CERTIFICATE", &cert)).expect("pem");
    std::fs::write(&key_pem, pem("PRIVATE KEY", &key)).expect("pem");
    std::fs::write(&ca_pem, pem("CERTIFICATE", ca.cert_der())).expect("pem");
    let tls_port = free_port();
    let (_smtp_tls, tls_mails) = smtp_server(tls_port, Some((&cert_pem, &key_pem)));
    let (hook_port, hooks) = webhook_server();

    let config = format!(
        r#"
data_dir = "{data}"
ingest_listen = "127.0.0.1:0"
api_listen = "127.0.0.1:0"
min_free_bytes = 0
rules_reload_interval = "100ms"
alert_dedup_window = "1h"

[[notify]]
name = "mail"
type = "email"
smtp_host = "127.0.0.1"
smtp_port = {smtp_port}
tls = "none"
from = "Vigie <vigie@example.org>"
to = ["ops@example.org"]
min_severity = "high"
retry_backoff = "200ms"

[[notify]]
name = "hook"
type = "webhook"
url = "http://127.0.0.1:{hook_port}/vigie"
secret = "{HOOK_SECRET}"
min_severity = "high"
tags = ["attack.t1110.001", "attack.t1059.004"]

[[notify]]
name = "mail-tls"
type = "email"
smtp_host = "localhost"
smtp_port = {tls_port}
tls = "starttls"
ca_file = "{ca}"
from = "vigie@example.org"
to = ["secops@example.org"]
rules = ["only-test-notifications"]
"#,
        data = data.display(),
        ca = ca_pem.display(),
    );
    let cfg_path = tmp.path().join("collector.toml");
    std::fs::write(&cfg_path, config).expect("config");
    let cfg = vigie_collector::load_config(&cfg_path).expect("config parses");

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let c = rt.block_on(Collector::start(cfg)).expect("collector");
    let api = Api {
        base: format!("http://{}", c.api_addr),
        token: c.api_token.clone(),
    };
    let mut agent = rt.block_on(TestAgent::enroll(&c));

    // The loaded rules, with their lifecycle; the base rule only feeds the correlation.
    let (code, r) = api.get("/api/v1/rules");
    assert_eq!(code, 200);
    assert_eq!(
        (r["rules_loaded"].as_u64(), r["rules_failed"].as_u64()),
        (Some(3), Some(0)),
        "{r}"
    );
    let brute = r["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .find(|x| x["id"] == BRUTE_ID)
        .expect("correlation listed")
        .clone();
    assert_eq!(brute["kind"], "correlation");
    assert_eq!(brute["level"], "high");
    assert_eq!(brute["lifecycle"], "live");
    assert_eq!(brute["tags"][1], "attack.t1110.001");

    // 1. A shell command matching the process_creation rule.
    let now = vigie_collector::ingest::now();
    rt.block_on(agent.ship(&[
        exec(now, "/usr/bin/ls", "ls -la"),
        exec(now, "/usr/bin/nc", "nc -lvp 4444"),
    ]));
    wait_until("the netcat alert", || api.alert_of(NC_ID).is_some());
    let nc = api.alert_of(NC_ID).expect("alert");
    assert_eq!(nc["severity"], "critical");
    assert_eq!(nc["state"], "new");
    assert_eq!(nc["host"], "web1");
    assert_eq!(nc["count"], 1);
    let nc_event = nc["event_ids"][0].as_str().expect("event id").to_string();
    assert!(nc_event.starts_with(&agent.id.to_hex()), "{nc_event}");
    // The alert links to the stored event.
    let (code, e) = api.get(&format!("/api/v1/events/{nc_event}"));
    assert_eq!(code, 200, "{e}");
    assert_eq!(e["process"]["command_line"], "nc -lvp 4444");

    // 2. A burst of failed SSH logins: 5 from one address within a minute (and
    // 4 from another, below the threshold) → one event_count correlation alert.
    let t0 = now.0 - 30_000_000_000;
    let burst: Vec<Event> = (0..9)
        .map(|i| {
            let ip = if i % 2 == 0 {
                "203.0.113.9"
            } else {
                "198.51.100.7"
            };
            ssh_failure(Timestamp(t0 + i * 1_000_000_000), ip, 40000 + i as u16)
        })
        .collect();
    rt.block_on(agent.ship(&burst));
    wait_until("the brute-force alert", || api.alert_of(BRUTE_ID).is_some());
    let a = api.alert_of(BRUTE_ID).expect("alert");
    let id = a["id"].as_u64().expect("id");
    assert_eq!(a["severity"], "high");
    assert_eq!(a["correlation"], true);
    assert_eq!(a["group"], json!([["SourceIp", "203.0.113.9"]]));
    assert_eq!(
        (a["count"].as_u64(), a["event_count"].as_u64()),
        (Some(1), Some(5)),
        "{a}"
    );
    assert_eq!(a["event_ids"].as_array().expect("ids").len(), 5);
    assert_eq!(
        api.alerts().len(),
        2,
        "no alert for the base rule nor for 198.51.100.7"
    );

    // 3. Dedup: five more failures from the same address → the same alert grows.
    let more: Vec<Event> = (0..5)
        .map(|i| {
            ssh_failure(
                Timestamp(now.0 + i * 1_000_000_000),
                "203.0.113.9",
                41000 + i as u16,
            )
        })
        .collect();
    rt.block_on(agent.ship(&more));
    wait_until("the alert to grow", || {
        api.alert_of(BRUTE_ID).is_some_and(|a| a["count"] == 2)
    });
    let a = api.alert_of(BRUTE_ID).expect("alert");
    assert_eq!(
        (a["id"].as_u64(), a["event_count"].as_u64()),
        (Some(id), Some(10))
    );
    assert_eq!(api.alerts().len(), 2);
    let (code, one) = api.get(&format!("/api/v1/alerts/{id}"));
    assert_eq!(code, 200);
    assert_eq!(one["event_ids"].as_array().expect("ids").len(), 10);

    // 4. Notifications: two emails and two signed webhook calls (one per new alert, none for the update).
    wait_until("two emails", || {
        mails.lock().expect("lock").matches("END MESSAGE").count() >= 2
    });
    wait_until("two webhook calls", || {
        hooks.lock().expect("lock").len() >= 2
    });
    // Unfold folded header lines (RFC 5322).
    let m = mails.lock().expect("lock").replace("\n ", " ");
    assert!(m.contains("Content-Transfer-Encoding: 7bit"), "{m}");
    assert!(
        m.contains("Subject: [Vigie] CRITICAL: Netcat listener started on web1"),
        "{m}"
    );
    assert!(
        m.contains(
            "Subject: [Vigie] HIGH: SSH brute force from one address on web1 (SourceIp=203.0.113.9)"
        ),
        "{m}"
    );
    assert!(m.contains("ops@example.org"), "{m}");
    assert!(m.contains("Detections    1 (5 events)"), "{m}");
    let got = hooks.lock().expect("lock").clone();
    assert_eq!(got.len(), 2, "{got:?}");
    let mut rules_notified = Vec::new();
    for h in &got {
        check_signature(h);
        assert!(h.header("X-Vigie-Delivery").is_some());
        let body: Value = serde_json::from_slice(&h.body).expect("JSON body");
        rules_notified.push(body["rule_id"].as_str().expect("rule_id").to_string());
        assert_eq!(body["state"], "new");
    }
    rules_notified.sort();
    assert_eq!(rules_notified, [BRUTE_ID, NC_ID]);

    // 5. Acknowledge, then resolve, with who and why; bad transitions are refused.
    let (code, v) = api.post(&format!("/api/v1/alerts/{id}/ack"), json!({"comment": "x"}));
    assert_eq!(code, 400, "`by` is required: {v}");
    let e = v["error"].as_str().expect("error");
    assert!(
        e.contains("missing field `by`") && e.contains(r#"{"by": "alice""#),
        "{e}"
    );
    let (code, v) = api.post(
        &format!("/api/v1/alerts/{id}/ack"),
        json!({"by": "alice", "comment": "blocking the address"}),
    );
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["state"], "acknowledged");
    assert_eq!(v["history"][0]["by"], "alice");
    let (code, v) = api.post(
        &format!("/api/v1/alerts/{id}/resolve"),
        json!({"by": "bob", "comment": "address blocked at the firewall"}),
    );
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["state"], "resolved");
    assert_eq!(
        v["history"][1]["comment"],
        "address blocked at the firewall"
    );
    let (code, v) = api.post(&format!("/api/v1/alerts/{id}/ack"), json!({"by": "carol"}));
    assert_eq!(code, 409, "{v}");
    assert!(
        v["error"].as_str().expect("error").contains("is resolved"),
        "{v}"
    );
    let (code, _) = api.post("/api/v1/alerts/9999/ack", json!({"by": "carol"}));
    assert_eq!(code, 404);
    let (_, v) = api.get("/api/v1/alerts?state=resolved");
    assert_eq!(v["alerts"].as_array().expect("alerts").len(), 1);
    let (code, v) = api.get("/api/v1/alerts?state=open");
    assert_eq!(code, 400);
    assert!(
        v["error"].as_str().expect("error").contains("acknowledged"),
        "{v}"
    );

    // 6. A silence on the netcat rule for web1 suppresses the next detection.
    let (code, v) = api.post("/api/v1/silences", json!({"by": "alice", "duration": "1h"}));
    assert_eq!(code, 400, "a silence needs a matcher: {v}");
    let (code, s) = api.post(
        "/api/v1/silences",
        json!({"rule_id": NC_ID, "host": "web1", "duration": "1h", "by": "alice", "comment": "pentest this afternoon"}),
    );
    assert_eq!(code, 200, "{s}");
    let (_, list) = api.get("/api/v1/silences");
    assert_eq!(list["silences"][0]["active"], true);
    let before = api.evaluated();
    let t = vigie_collector::ingest::now();
    rt.block_on(agent.ship(&[exec(t, "/bin/nc", "nc -l 9001")]));
    wait_until("detection of the silenced event", || {
        api.evaluated() > before
    });
    assert_eq!(api.alert_of(NC_ID).expect("alert")["count"], 1, "silenced");
    assert!(
        api.metrics()
            .contains("vigie_alerts_suppressed_total{reason=\"silence\"} 1"),
        "{}",
        api.metrics()
    );
    // Once the silence is gone, the same detection joins the open alert.
    let (code, _) = api.delete(&format!("/api/v1/silences/{}", s["id"]));
    assert_eq!(code, 200);
    let (code, _) = api.delete(&format!("/api/v1/silences/{}", s["id"]));
    assert_eq!(code, 404);
    rt.block_on(agent.ship(&[exec(t, "/bin/nc", "nc -l 9002")]));
    wait_until("the netcat alert to grow", || {
        api.alert_of(NC_ID).is_some_and(|a| a["count"] == 2)
    });

    // 7. A broken rule dropped in the directory is reported; detection goes on.
    std::fs::write(rules.join("broken.yml"), "title: broken\nlogsource: {product: windows, category: process_creation}\ndetection: {sel: {Image: x}, condition: sel}\n").expect("write");
    wait_until("the broken rule to be reported", || {
        api.get("/api/v1/rules").1["rules_failed"] == 1
    });
    let (_, r) = api.get("/api/v1/rules");
    let failed = r["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .find(|x| x["loaded"] == false)
        .expect("failed rule")
        .clone();
    assert_eq!(failed["source"], "broken.yml");
    assert!(
        failed["errors"][0]
            .as_str()
            .expect("reason")
            .contains("not produced by vigie"),
        "{failed}"
    );
    let before = api.evaluated();
    rt.block_on(agent.ship(&[exec(t, "/bin/nc", "nc -l 9003")]));
    wait_until("detection after the reload", || api.evaluated() > before);

    // 8. Test notifications: plain SMTP and STARTTLS with a private CA; unknown channels are 404.
    let (code, v) = api.post("/api/v1/notify/mail/test", json!({}));
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["outcome"], "delivered");
    let (code, v) = api.post("/api/v1/notify/mail-tls/test", json!({}));
    assert_eq!(code, 200, "STARTTLS delivery: {v}");
    let (code, v) = api.post("/api/v1/notify/pager/test", json!({}));
    assert_eq!(code, 404);
    assert!(v["error"].as_str().expect("error").contains("pager"));
    wait_until("the test email", || {
        mails
            .lock()
            .expect("lock")
            .contains("[Vigie] [TEST] INFORMATIONAL: Vigie test notification")
    });
    wait_until("the STARTTLS test email", || {
        tls_mails
            .lock()
            .expect("lock")
            .contains("secops@example.org")
    });

    // 9. The delivery log and the metrics tell what happened.
    let (_, log) = api.get("/api/v1/notifications/log");
    let log = log["deliveries"].as_array().expect("log").clone();
    let delivered = |ch: &str| {
        log.iter()
            .filter(|d| d["channel"] == ch && d["outcome"] == "delivered")
            .count()
    };
    assert_eq!(
        (delivered("mail"), delivered("hook"), delivered("mail-tls")),
        (3, 2, 1),
        "{log:?}"
    );
    let m = api.metrics();
    for line in [
        "vigie_alerts_raised_total{severity=\"critical\"} 1",
        "vigie_alerts_raised_total{severity=\"high\"} 1",
        "vigie_alerts_raised_total{severity=\"low\"} 0",
        "vigie_notifications_total{outcome=\"delivered\"} 6",
        "vigie_detection_dropped_events_total 0",
        "vigie_rules_loaded 3",
        "vigie_rules_failed 1",
        "vigie_detection_queue_events 0",
    ] {
        assert!(m.contains(line), "missing {line:?} in\n{m}");
    }
    assert!(m.contains("vigie_detection_lag_seconds "), "{m}");

    drop(agent);
    rt.block_on(c.shutdown());
}

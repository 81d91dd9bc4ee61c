//! The management API against a real collector: authentication, search with
//! paging and counts, histogram, top values, context, the live tail, enrollment
//! tokens, agents, health and metrics.

use std::io::{BufRead, BufReader};
use std::time::Duration;

use ed25519_dalek::SigningKey;
use serde_json::Value;

mod support;
use vigie_collector::{Collector, CollectorConfig};
use vigie_net::request;
use vigie_proto::batch::seal;
use vigie_proto::enroll::Bundle;
use vigie_proto::event::Log;
use vigie_proto::wire::{self, MsgType, Reply};
use vigie_proto::{AgentId, Epoch, Event, Kind, Outcome, Seq, Severity, Timestamp};

fn get(base: &str, token: &str, path: &str) -> (u16, Value) {
    let mut s = std::net::TcpStream::connect(base).expect("connect");
    use std::io::{Read, Write};
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n").expect("write");
    let mut buf = String::new();
    s.read_to_string(&mut buf).expect("read");
    let code: u16 = buf[9..12].parse().expect("status");
    let body = buf.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    // Chunked or not, the JSON body is the one line starting with '{'.
    let json = body.lines().find(|l| l.starts_with('{')).unwrap_or("null");
    (code, serde_json::from_str(json).unwrap_or(Value::Null))
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn ship(c: &Collector, bundle: &Bundle, events: Vec<Event>) -> AgentId {
    let key = SigningKey::from_bytes(&[42; 32]);
    let support::Enrolled {
        id: agent_id,
        conn,
        endpoint: _ep,
    } = support::enroll(c.ingest_addr, bundle, &key, "web1").await;
    let (frame, _) = seal(
        &key,
        agent_id,
        Epoch(1),
        Seq(0),
        Timestamp(0),
        [0; 32],
        &events,
        1,
    )
    .expect("seal");
    let (ty, body) = request(
        &conn,
        &wire::frame(MsgType::Batch, &frame),
        Duration::from_secs(10),
    )
    .await
    .expect("batch");
    assert_eq!(
        wire::decode_body::<Reply>(ty, &body).expect("reply"),
        Reply::Ack {
            epoch: Epoch(1),
            stored_end: Seq(events.len() as u64)
        }
    );
    agent_id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn management_api() {
    let dir = tempfile::tempdir().expect("tmp");
    let c = Collector::start(CollectorConfig {
        data_dir: dir.path().join("c"),
        ingest_listen: "127.0.0.1:0".parse().expect("a"),
        api_listen: "127.0.0.1:0".parse().expect("a"),
        min_free_bytes: 0,
        ..Default::default()
    })
    .await
    .expect("start");
    let base = c.api_addr.to_string();
    let token = c.api_token.clone();

    // Enrollment token through the API, then an agent ships 300 events over the last 3 hours.
    let b = base.clone();
    let t = token.clone();
    let bundle = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(&b).expect("connect");
        use std::io::{Read, Write};
        let body = r#"{"expires_secs":600,"comment":"test"}"#;
        write!(s, "POST /api/v1/enroll HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {t}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).expect("write");
        let mut buf = String::new();
        s.read_to_string(&mut buf).expect("read");
        let json = buf.split_once("\r\n\r\n").expect("body").1.lines().find(|l| l.starts_with('{')).expect("json").to_string();
        let v: Value = serde_json::from_str(&json).expect("json");
        Bundle::decode(v["token"].as_str().expect("token")).expect("bundle")
    })
    .await
    .expect("join");
    let now = chrono::Utc::now().timestamp_nanos_opt().expect("now");
    let events: Vec<Event> = (0..300)
        .map(|i| {
            let mut e = Event::new(
                if i % 3 == 0 {
                    Kind::Authentication
                } else {
                    Kind::Log
                },
                Timestamp(now - (300 - i) * 36_000_000_000),
            );
            e.set_message(format!(
                "line {i} {}",
                if i % 3 == 0 {
                    "Failed password for root"
                } else {
                    "cron job ran"
                }
            ));
            e.log = Some(Log {
                level: if i % 10 == 0 {
                    Severity::Error
                } else {
                    Severity::Info
                },
                logger: if i % 3 == 0 {
                    "sshd".into()
                } else {
                    "cron".into()
                },
                ..Default::default()
            });
            if i % 3 == 0 {
                e.event.outcome = Some(Outcome::Failure);
                e.user = Some(vigie_proto::event::User {
                    name: if i % 2 == 0 {
                        "root".into()
                    } else {
                        "admin".into()
                    },
                    ..Default::default()
                });
            }
            e
        })
        .collect();

    // Live tail, subscribed before the events arrive.
    let tail_base = base.clone();
    let tail_token = token.clone();
    let tail = std::thread::spawn(move || {
        let mut s = std::net::TcpStream::connect(&tail_base).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        use std::io::Write;
        write!(s, "GET /api/v1/tail?q={} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {tail_token}\r\n\r\n", enc("user.name:admin")).expect("write");
        let mut got = Vec::new();
        for line in BufReader::new(s).lines() {
            let Ok(line) = line else { break };
            if line.starts_with('{') {
                got.push(serde_json::from_str::<Value>(&line).expect("ndjson"));
                if got.len() == 50 {
                    break;
                }
            }
        }
        got
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let agent = ship(&c, &bundle, events).await;

    let t = token.clone();
    let b = base.clone();
    tokio::task::spawn_blocking(move || {
        // Without the token: refused with a message that says what to send.
        let (code, v) = get(&b, "wrong", "/api/v1/search");
        assert_eq!(code, 401);
        assert!(v["error"].as_str().expect("error").contains("Bearer"));
        let (code, _) = get(&b, "wrong", "/healthz");
        assert_eq!(code, 200);

        // Search: newest first, exact count, paging with the cursor.
        let (code, v) = get(
            &b,
            &t,
            &format!(
                "/api/v1/search?q={}&since=4h&limit=40",
                enc("\"failed password\"")
            ),
        );
        assert_eq!(code, 200, "{v}");
        assert_eq!(v["total"], 100);
        let first: Vec<i64> = v["events"]
            .as_array()
            .expect("events")
            .iter()
            .map(|e| {
                Timestamp::parse_rfc3339(e["@timestamp"].as_str().expect("ts"))
                    .expect("ts")
                    .nanos()
            })
            .collect();
        assert_eq!(first.len(), 40);
        assert!(first.windows(2).all(|w| w[0] >= w[1]), "not newest first");
        let mut seen = first.len();
        let mut next = v["next"].as_str().map(str::to_string);
        while let Some(cur) = next {
            let (_, v) = get(
                &b,
                &t,
                &format!(
                    "/api/v1/search?q={}&since=4h&limit=40&before={}",
                    enc("\"failed password\""),
                    enc(&cur)
                ),
            );
            seen += v["events"].as_array().expect("events").len();
            next = v["next"].as_str().map(str::to_string);
        }
        assert_eq!(seen, 100);
        let (_, v) = get(
            &b,
            &t,
            &format!(
                "/api/v1/search?q={}&since=4h&limit=5",
                enc("user.name:root AND event.outcome:failure")
            ),
        );
        assert_eq!(v["total"], 50);
        assert_eq!(v["events"][0]["agent"]["id"], agent.to_hex());

        // Bad input gets a clear error.
        let (code, v) = get(
            &b,
            &t,
            &format!("/api/v1/search?q={}", enc("user.nme:root")),
        );
        assert_eq!(code, 400);
        assert!(
            v["error"].as_str().expect("error").contains("user.name"),
            "{v}"
        );
        let (code, v) = get(&b, &t, "/api/v1/search?since=yesterday");
        assert_eq!(code, 400);
        assert!(v["error"].as_str().expect("error").contains("15m"), "{v}");

        // Histogram: 300 events in 3 hours, counted by severity and kind.
        let (_, v) = get(&b, &t, "/api/v1/histogram?since=4h&buckets=4");
        let buckets = v["buckets"].as_array().expect("buckets");
        let total: u64 = buckets
            .iter()
            .map(|x| x["count"].as_u64().expect("count"))
            .sum();
        assert_eq!(total, 300);
        let errors: u64 = buckets
            .iter()
            .map(|x| x["by_severity"]["error"].as_u64().expect("error"))
            .sum();
        assert_eq!(errors, 30);
        let auth: u64 = buckets
            .iter()
            .map(|x| x["by_kind"]["authentication"].as_u64().unwrap_or(0))
            .sum();
        assert_eq!(auth, 100);

        // Top values.
        let (_, v) = get(&b, &t, "/api/v1/top?since=4h&field=log.logger&k=5");
        assert_eq!(v["values"][0]["value"], "cron");
        assert_eq!(v["values"][0]["count"], 200);
        assert_eq!(v["values"][1]["count"], 100);

        // One event and its context.
        let (_, v) = get(
            &b,
            &t,
            &format!("/api/v1/search?q={}&since=4h", enc("\"line 150\"")),
        );
        let id = v["events"][0]["event"]["id"]
            .as_str()
            .expect("id")
            .to_string();
        let (code, e) = get(&b, &t, &format!("/api/v1/events/{id}"));
        assert_eq!(code, 200);
        assert!(e["message"].as_str().expect("msg").starts_with("line 150 "));
        let (_, v) = get(
            &b,
            &t,
            &format!("/api/v1/events/{id}/context?before=2&after=2"),
        );
        let msgs: Vec<String> = v["events"]
            .as_array()
            .expect("events")
            .iter()
            .map(|e| {
                e["message"]
                    .as_str()
                    .expect("m")
                    .split(' ')
                    .take(2)
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        assert_eq!(
            msgs,
            ["line 148", "line 149", "line 150", "line 151", "line 152"]
        );

        // Agents, health, metrics.
        let (_, v) = get(&b, &t, "/api/v1/agents");
        assert_eq!(v["agents"][0]["id"], agent.to_hex());
        assert_eq!(v["agents"][0]["hostname"], "web1");
        let (_, v) = get(&b, &t, "/api/v1/health");
        assert_eq!(v["events_stored_total"], 300);
        let mut s = std::net::TcpStream::connect(&b).expect("connect");
        use std::io::{Read, Write};
        write!(
            s,
            "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .expect("write");
        let mut m = String::new();
        s.read_to_string(&mut m).expect("read");
        assert!(m.contains("vigie_events_stored_total 300"), "{m}");
        assert!(
            m.contains("vigie_batches_total{outcome=\"stored\"} 1"),
            "{m}"
        );
    })
    .await
    .expect("checks");

    let got = tail.join().expect("tail");
    assert_eq!(
        got.len(),
        50,
        "live tail delivered {} of 50 matching events",
        got.len()
    );
    assert!(got.iter().all(|e| e["user"]["name"] == "admin"));
    c.shutdown().await;
}

//! Integration tests of the store against a real RocksDB in temporary directories,
//! with real log lines from loghub.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use vigie_proto::event::{AgentInfo, Endpoint, Event, Log, LogFile, Process, User};
use vigie_proto::ids::event_id;
use vigie_proto::{AgentId, Epoch, Kind, Seq, Severity, Timestamp};
use vigie_store::*;

// ---------------------------------------------------------------------------
// helpers

fn loghub(name: &str) -> Vec<String> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/data/loghub")
        .join(name);
    let text =
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}

fn all_lines() -> Vec<(&'static str, String)> {
    let mut v = Vec::new();
    for f in ["Linux_2k.log", "OpenSSH_2k.log", "Apache_2k.log"] {
        for l in loghub(f) {
            v.push((f, l));
        }
    }
    v
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
    fn chance(&mut self, pct: u64) -> bool {
        self.next() % 100 < pct
    }
    fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len())]
    }
}

const T0: i64 = 1_772_359_200_000_000_000; // 2026-03-01T10:00:00Z

fn cfg() -> StoreConfig {
    StoreConfig {
        sync: false,
        seal_events: 300,
        seal_bytes: 1 << 30,
        page_bytes: 8 * 1024,
        cols_cache_blocks: 4,
        ..Default::default()
    }
}

const HOSTS: [&str; 4] = ["web1", "web2", "db1", "Proxmox-Node"];
const USERS: [&str; 4] = ["root", "Admin", "guest", "deploy"];

/// An event built from a real log line, with fields that vary with `rng`.
fn event_from(file: &str, line: &str, ts: i64, rng: &mut Rng) -> Event {
    let kind = if line.contains("sshd") && rng.chance(50) {
        Kind::Authentication
    } else {
        *rng.pick(&[
            Kind::Log,
            Kind::Log,
            Kind::ProcessExec,
            Kind::NetworkConnect,
        ])
    };
    let mut e = Event::new(kind, Timestamp(ts));
    e.set_message(line);
    e.event.module = "file".into();
    e.host.name = rng.pick(&HOSTS).to_string();
    if rng.chance(85) {
        e.log = Some(Log {
            level: *rng.pick(&Severity::ALL),
            logger: if line.contains("sshd") {
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
    }
    if rng.chance(40) {
        e.user = Some(User {
            name: rng.pick(&USERS).to_string(),
            ..Default::default()
        });
    }
    if rng.chance(40) {
        let ip = format!(
            "{}.{}.0.{}",
            rng.pick(&[10, 192, 172, 8]),
            rng.below(3),
            rng.below(20)
        );
        e.source = Some(Endpoint {
            ip: ip.parse().ok(),
            port: Some(rng.pick(&[22u16, 80, 443, 2222]).to_owned()),
            address: String::new(),
        });
    }
    if rng.chance(50) {
        e.process = Some(Process {
            pid: Some(rng.below(5000) as u32),
            name: rng.pick(&["sshd", "httpd", "cron", "su"]).to_string(),
            ..Default::default()
        });
    }
    if rng.chance(20) {
        let v = if rng.chance(50) { "prod" } else { "staging" };
        e.add_label("env", v);
    }
    if rng.chance(10) {
        e.agent = Some(AgentInfo {
            id: String::new(),
            version: "0.1.0".into(),
        });
    }
    e
}

/// What the store must return for an event committed at (agent, epoch, seq).
fn stored_form(mut e: Event, agent: AgentId, epoch: Epoch, seq: u64) -> Event {
    e.event.id = event_id(agent, epoch, Seq(seq));
    let version = e
        .agent
        .as_ref()
        .map(|a| a.version.clone())
        .unwrap_or_default();
    e.agent = Some(AgentInfo {
        id: agent.to_hex(),
        version,
    });
    e
}

fn agent(n: u8) -> AgentId {
    AgentId([n; 16])
}

fn hash(n: u64) -> [u8; 32] {
    let mut h = [0u8; 32];
    h[..8].copy_from_slice(&n.to_le_bytes());
    h[31] = 1;
    h
}

/// Commits events of several streams in batches; keeps the expected stored events.
struct Feeder {
    streams: Vec<(AgentId, Epoch, u64, [u8; 32])>,
    expected: Vec<Event>,
}

impl Feeder {
    fn new(streams: &[(AgentId, Epoch)]) -> Feeder {
        Feeder {
            streams: streams.iter().map(|(a, e)| (*a, *e, 0, [0; 32])).collect(),
            expected: Vec::new(),
        }
    }

    fn feed(&mut self, store: &Store, stream: usize, events: Vec<Event>) {
        let (a, ep, next, prev) = self.streams[stream];
        let h = hash(next + 1 + (stream as u64) * 1_000_000);
        let n = events.len() as u64;
        for (i, e) in events.iter().enumerate() {
            self.expected
                .push(stored_form(e.clone(), a, ep, next + i as u64));
        }
        let out = store
            .commit(vec![CommitBatch {
                agent: a,
                epoch: ep,
                first_seq: Seq(next),
                prev_hash: prev,
                hash: h,
                events,
            }])
            .expect("commit");
        assert_eq!(
            out,
            vec![CommitOutcome::Stored {
                stored_end: Seq(next + n)
            }]
        );
        self.streams[stream] = (a, ep, next + n, h);
    }
}

fn key(e: &Event) -> (i64, String) {
    // event.id sorts like (agent, epoch) within a timestamp only when seqs have equal length;
    // compare through the parsed parts instead.
    let id = &e.event.id;
    let mut p = id.split('-');
    let (a, ep, s) = (
        p.next().unwrap_or(""),
        p.next().unwrap_or(""),
        p.next().unwrap_or("0"),
    );
    (
        e.timestamp.nanos(),
        format!("{a}-{ep}-{:020}", s.parse::<u64>().unwrap_or(0)),
    )
}

fn newest_first(mut v: Vec<Event>) -> Vec<Event> {
    v.sort_by_key(|e| std::cmp::Reverse(key(e)));
    v
}

fn search(store: &Store, q: &str, from: i64, to: i64, limit: usize) -> SearchResponse {
    let query = Query::parse(q).unwrap_or_else(|e| panic!("{q}: {e}"));
    store
        .search(&SearchRequest {
            query,
            from: Timestamp(from),
            to: Timestamp(to),
            limit,
            before: None,
            count: true,
        })
        .expect("search")
}

fn ids(v: &[Event]) -> Vec<String> {
    v.iter().map(|e| e.event.id.clone()).collect()
}

fn open(dir: &Path) -> Store {
    Store::open(dir, cfg()).expect("open")
}

// ---------------------------------------------------------------------------
// exactly-once

#[test]
fn exactly_once_commit_outcomes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lines = loghub("OpenSSH_2k.log");
    let mut rng = Rng(7);
    let mk = |n: usize, start: usize, rng: &mut Rng| -> Vec<Event> {
        (0..n)
            .map(|i| {
                event_from(
                    "OpenSSH_2k.log",
                    &lines[start + i],
                    T0 + (start + i) as i64 * 1_000_000,
                    rng,
                )
            })
            .collect()
    };
    let (a, ep) = (agent(1), Epoch(42));
    let batch = |first: u64, prev: [u8; 32], h: [u8; 32], events: Vec<Event>| CommitBatch {
        agent: a,
        epoch: ep,
        first_seq: Seq(first),
        prev_hash: prev,
        hash: h,
        events,
    };
    {
        let store = open(dir.path());
        assert_eq!(store.stream_state(a, ep).expect("state"), None);
        let e0 = mk(10, 0, &mut rng);
        assert_eq!(
            store
                .commit(vec![batch(0, [0; 32], hash(1), e0.clone())])
                .expect("c"),
            vec![CommitOutcome::Stored {
                stored_end: Seq(10)
            }]
        );
        // A retry of the same batch.
        assert_eq!(
            store
                .commit(vec![batch(0, [0; 32], hash(1), e0)])
                .expect("c"),
            vec![CommitOutcome::Duplicate {
                stored_end: Seq(10)
            }]
        );
        // A gap.
        assert_eq!(
            store
                .commit(vec![batch(20, hash(2), hash(3), mk(10, 20, &mut rng))])
                .expect("c"),
            vec![CommitOutcome::Gap { expected: Seq(10) }]
        );
        // A broken chain.
        assert_eq!(
            store
                .commit(vec![batch(10, hash(9), hash(2), mk(10, 10, &mut rng))])
                .expect("c"),
            vec![CommitOutcome::ChainBroken {
                expected_prev: hash(1)
            }]
        );
        assert_eq!(store.stats().events, 10, "refused batches write nothing");
        // The right one.
        assert_eq!(
            store
                .commit(vec![batch(10, hash(1), hash(2), mk(10, 10, &mut rng))])
                .expect("c"),
            vec![CommitOutcome::Stored {
                stored_end: Seq(20)
            }]
        );
        // Partial overlap: not stored.
        assert_eq!(
            store
                .commit(vec![batch(15, hash(2), hash(3), mk(10, 15, &mut rng))])
                .expect("c"),
            vec![CommitOutcome::Gap { expected: Seq(20) }]
        );
        // Empty batch at the mark.
        assert_eq!(
            store
                .commit(vec![batch(20, hash(2), hash(3), vec![])])
                .expect("c"),
            vec![CommitOutcome::Duplicate {
                stored_end: Seq(20)
            }]
        );

        // Several streams in one commit, chaining in order.
        let (b, c) = ((agent(2), Epoch(1)), (agent(3), Epoch(9)));
        let out = store
            .commit(vec![
                CommitBatch {
                    agent: b.0,
                    epoch: b.1,
                    first_seq: Seq(0),
                    prev_hash: [0; 32],
                    hash: hash(11),
                    events: mk(5, 40, &mut rng),
                },
                CommitBatch {
                    agent: b.0,
                    epoch: b.1,
                    first_seq: Seq(5),
                    prev_hash: hash(11),
                    hash: hash(12),
                    events: mk(5, 45, &mut rng),
                },
                CommitBatch {
                    agent: c.0,
                    epoch: c.1,
                    first_seq: Seq(0),
                    prev_hash: [7; 32],
                    hash: hash(21),
                    events: mk(3, 50, &mut rng),
                },
                CommitBatch {
                    agent: b.0,
                    epoch: b.1,
                    first_seq: Seq(10),
                    prev_hash: hash(11),
                    hash: hash(13),
                    events: mk(2, 53, &mut rng),
                },
                CommitBatch {
                    agent: b.0,
                    epoch: b.1,
                    first_seq: Seq(5),
                    prev_hash: hash(11),
                    hash: hash(12),
                    events: mk(5, 45, &mut rng),
                },
            ])
            .expect("commit");
        assert_eq!(
            out,
            vec![
                CommitOutcome::Stored { stored_end: Seq(5) },
                CommitOutcome::Stored {
                    stored_end: Seq(10)
                },
                CommitOutcome::Stored { stored_end: Seq(3) },
                CommitOutcome::ChainBroken {
                    expected_prev: hash(12)
                },
                CommitOutcome::Duplicate {
                    stored_end: Seq(10)
                },
            ]
        );
        assert_eq!(
            store.stream_state(b.0, b.1).expect("s"),
            Some(StreamState {
                stored_end: Seq(10),
                last_hash: hash(12)
            })
        );
        assert_eq!(store.stats().events, 33);
        let r = search(&store, "", 0, i64::MAX, 100);
        assert_eq!(r.total, Some(33));
        // Ids are set on every event.
        let e = store
            .get_event(&event_id(a, ep, Seq(3)))
            .expect("get")
            .expect("found");
        assert_eq!(e.event.id, event_id(a, ep, Seq(3)));
        assert_eq!(e.agent.as_ref().map(|x| x.id.clone()), Some(a.to_hex()));
        assert_eq!(e.message, lines[3]);
    }
    // Reopen with events still unsealed: state and events survive.
    {
        let store = open(dir.path());
        assert_eq!(
            store.stream_state(a, ep).expect("s"),
            Some(StreamState {
                stored_end: Seq(20),
                last_hash: hash(2)
            })
        );
        assert_eq!(store.stats().recent_events, 33);
        assert_eq!(search(&store, "", 0, i64::MAX, 5).total, Some(33));
        assert_eq!(
            search(&store, "invalid", 0, i64::MAX, 100).total,
            search(&store, "", 0, i64::MAX, 100)
                .events
                .iter()
                .filter(|e| e
                    .message
                    .to_lowercase()
                    .split(|c: char| !c.is_alphanumeric() && c != '_')
                    .any(|t| t == "invalid"))
                .count()
                .try_into()
                .ok()
        );
        assert_eq!(
            store
                .commit(vec![batch(20, hash(2), hash(3), mk(10, 20, &mut rng))])
                .expect("c"),
            vec![CommitOutcome::Stored {
                stored_end: Seq(30)
            }]
        );
        let before = search(&store, "user", 0, i64::MAX, 1000);
        store.flush().expect("flush");
        assert_eq!(store.stats().recent_events, 0);
        assert!(store.stats().blocks >= 1);
        let after = search(&store, "user", 0, i64::MAX, 1000);
        assert_eq!(ids(&before.events), ids(&after.events));
        assert_eq!(before.total, after.total);
    }
    {
        let store = open(dir.path());
        assert_eq!(
            store.stream_state(a, ep).expect("s"),
            Some(StreamState {
                stored_end: Seq(30),
                last_hash: hash(3)
            })
        );
        assert_eq!(search(&store, "", 0, i64::MAX, 5).total, Some(43));
        let e = store
            .get_event(&event_id(a, ep, Seq(25)))
            .expect("get")
            .expect("found");
        assert_eq!(e.message, lines[25]);
        assert_eq!(
            store.get_event(&event_id(a, ep, Seq(99))).expect("get"),
            None
        );
        assert!(matches!(
            store.get_event("nonsense"),
            Err(StoreError::BadEventId(_))
        ));
    }
}

// ---------------------------------------------------------------------------
// query language

fn sample() -> Event {
    let mut e = Event::new(Kind::Authentication, Timestamp(T0));
    e.set_message("Failed password for invalid user admin from 10.0.0.5 port 2222 ssh2");
    e.event.module = "journald".into();
    e.event.id = event_id(agent(5), Epoch(1), Seq(77));
    e.agent = Some(AgentInfo {
        id: agent(5).to_hex(),
        version: "0.1.0".into(),
    });
    e.host.name = "web1".into();
    e.user = Some(User {
        name: "Root".into(),
        ..Default::default()
    });
    e.source = Some(Endpoint {
        ip: "10.0.0.5".parse().ok(),
        port: Some(2222),
        address: String::new(),
    });
    e.process = Some(Process {
        pid: Some(4242),
        name: "sshd".into(),
        args: vec!["-D".into(), "-p22".into()],
        ..Default::default()
    });
    e.log = Some(Log {
        level: Severity::Warning,
        logger: "sshd".into(),
        ..Default::default()
    });
    e.add_label("env", "prod");
    e
}

#[test]
fn query_semantics_of_every_operator() {
    let e = sample();
    let cases: &[(&str, bool)] = &[
        ("", true),
        ("*", true),
        ("failed", true),
        ("FAILED", true),
        ("fail", false),
        ("fail*", true),
        ("*ssw*", true),
        ("*word", true),
        ("f*d", true),
        ("\"failed password\"", true),
        ("\"password failed\"", false),
        ("\"invalid  USER admin\"", true),
        ("10.0.0.5", true),
        ("10.0.0.6", false),
        ("10.0.*", true),
        ("message:password", true),
        ("message:\"user admin\"", true),
        ("message:pass*", true),
        ("user.name:root", true),
        ("user.name:roo", false),
        ("user.name:ro*", true),
        ("user.name:*oo*", true),
        ("user.name:\"ROOT\"", true),
        ("source.ip:10.0.0.5", true),
        ("source.ip:10.0.0.0/8", true),
        ("source.ip:192.168.0.0/16", false),
        ("source.ip:10.0.*", true),
        ("source.port:2222", true),
        ("source.port:2222.0", true),
        ("source.port:22", false),
        ("source.port>2000", true),
        ("source.port>=2222", true),
        ("source.port<2222", false),
        ("source.port<=2222", true),
        ("source.port:>2221", true),
        ("source.port:[2000 TO 3000]", true),
        ("source.port:{2222 TO 3000]", false),
        ("source.port:[* TO 2222]", true),
        ("source.port:[2223 TO *]", false),
        ("process.pid:42*", true),
        ("process.args:-d", true),
        ("_exists_:user.name", true),
        ("user.name:*", true),
        ("_exists_:file.path", false),
        ("file.path:*", false),
        ("failed AND host.name:web1", true),
        ("failed host.name:web2", false),
        ("failed && host.name:WEB1", true),
        ("failed OR host.name:web2", true),
        ("accepted || host.name:web2", false),
        ("NOT failed", false),
        ("-failed", false),
        ("!failed", false),
        ("NOT (failed AND accepted)", true),
        ("accepted OR failed AND root", false),
        ("accepted OR failed AND user.name:root", true),
        ("(accepted OR failed) AND NOT user.name:root", false),
        ("NOT failed OR password", true),
        ("NOT failed AND password", false),
        ("NOT NOT failed", true),
        ("log.level:warn", true),
        ("log.level:WARNING", true),
        ("log.level:error", false),
        ("event.dataset:authentication", true),
        ("event.category:authentication", true),
        ("event.kind:event", true),
        ("event.module:journald", true),
        ("labels.env:PROD", true),
        ("labels.other:x", false),
        ("_exists_:labels.env", true),
        ("host.name:web1 AND event.id:*-77", true),
        (&format!("agent.id:{}", agent(5).to_hex()), true),
        ("agent.version:0.1.0", true),
        ("@timestamp>=2026-03-01T10:00:00Z", true),
        ("@timestamp<2026-03-01T10:00:00Z", false),
        (
            "@timestamp:[2026-03-01T00:00:00Z TO 2026-03-02T00:00:00Z]",
            true,
        ),
        ("@timestamp:1772359200000", true),
        ("user.name:root\\*", false),
        ("sshd\\(x", false),
    ];
    for (q, want) in cases {
        let query = Query::parse(q).unwrap_or_else(|err| panic!("{q:?} should parse: {err}"));
        assert_eq!(query.matches(&e), *want, "query {q:?}");
    }
}

#[test]
fn query_errors_say_where_and_what() {
    let cases: &[(&str, &str)] = &[
        ("user.name:", "expected a value after \"user.name:\" at 10"),
        (
            "user.name: root",
            "expected a value after \"user.name:\" at 10",
        ),
        (
            "usr.name:root",
            "unknown field \"usr.name\" at 0 (did you mean \"user.name\"?)",
        ),
        ("(failed", "expected \")\" at 7 (to close the \"(\" at 0)"),
        (
            "failed)",
            "unexpected \")\" at 6 (remove it or add the matching \"(\")",
        ),
        (
            "a AND",
            "expected a search term after \"AND\" at 5 (\"AND\" is at 2)",
        ),
        (
            "a OR",
            "expected a search term after \"OR\" at 4 (\"OR\" is at 2)",
        ),
        ("OR b", "expected a search term before \"OR\" at 0"),
        ("NOT", "expected a search term after \"NOT\" at 3"),
        (
            "\"unterminated",
            "expected a closing quote for the phrase starting at 0",
        ),
        (
            "source.port:abc",
            "expected a number for \"source.port\", found \"abc\" at 12",
        ),
        (
            "source.ip:300.1.1.1",
            "expected an IP address or a CIDR such as 10.0.0.0/8 for \"source.ip\", found \"300.1.1.1\" at 10",
        ),
        (
            "source.ip:10.0.0.0/33",
            "expected an IP address or a CIDR such as 10.0.0.0/8 for \"source.ip\", found \"10.0.0.0/33\" at 10",
        ),
        (
            "process.pid:[1 2]",
            "expected \"TO\" in the range at 15 (write field:[low TO high])",
        ),
        (
            "process.pid:[1 TO 2",
            "expected \"]\" or \"}\" to close the range at 19",
        ),
        (
            "\"\"",
            "search term \"\" has no letters or digits to search for at 0",
        ),
        ("()", "expected a search term inside \"( )\" at 1"),
        (
            "@timestamp>yesterday",
            "expected an RFC 3339 time such as 2026-01-31T12:00:00Z or epoch milliseconds for \"@timestamp\", found \"yesterday\" at 11",
        ),
        (
            "_exists_:host.nam",
            "unknown field \"host.nam\" at 9 (did you mean \"host.name\"?)",
        ),
        (
            "nope:x",
            "unknown field \"nope\" at 0 (field names are ECS paths such as host.name or user.name; labels.<key> for labels; quote text to search for it)",
        ),
        (
            "a AND OR b",
            "expected a search term after \"AND\", found \"OR\" at 6",
        ),
    ];
    for (q, want) in cases {
        match Query::parse(q) {
            Ok(_) => panic!("{q:?} should not parse"),
            Err(e) => assert_eq!(e.to_string(), *want, "query {q:?}"),
        }
    }
}

// ---------------------------------------------------------------------------
// index vs brute force

/// Random query text built from the stored events' values.
fn random_query(rng: &mut Rng, events: &[Event], depth: u32) -> String {
    let e = rng.pick(events);
    let toks: Vec<String> = e
        .message
        .split(|c: char| !c.is_alphanumeric() && c != '_')
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect();
    let leaf = |rng: &mut Rng| -> String {
        match rng.below(22) {
            0..=2 => rng.pick(&toks).to_lowercase(),
            3 => {
                let i = rng.below(toks.len().saturating_sub(1).max(1));
                format!("\"{}\"", toks[i..(i + 2).min(toks.len())].join(" "))
            }
            4 => {
                let t = rng.pick(&toks);
                format!("{}*", &t[..t.len().min(3)])
            }
            5 => {
                let t = rng.pick(&toks);
                format!("*{}*", &t[t.len() / 2..])
            }
            6 => format!("host.name:{}", rng.pick(&HOSTS).to_lowercase()),
            7 => format!("user.name:{}", rng.pick(&USERS)),
            8 => format!(
                "source.ip:{}",
                rng.pick(&["10.0.0.0/8", "192.1.0.0/16", "172.2.0.5", "8.0.0.1"])
            ),
            9 => format!(
                "source.port:{}",
                rng.pick(&["22", "[80 TO 443]", ">=443", "<80"])
            ),
            10 => format!("process.pid>{}", rng.below(5000)),
            11 => format!("log.level:{}", rng.pick(&Severity::ALL).as_str()),
            12 => format!(
                "event.dataset:{}",
                rng.pick(&["log", "authentication", "process_exec"])
            ),
            13 => format!(
                "_exists_:{}",
                rng.pick(&[
                    "user.name",
                    "source.ip",
                    "process.pid",
                    "labels.env",
                    "log.level"
                ])
            ),
            14 => format!("labels.env:{}", rng.pick(&["prod", "staging"])),
            15 => format!("process.name:{}", rng.pick(&["sshd", "ht*", "*ro*"])),
            16 => format!(
                "@timestamp>={}",
                Timestamp(T0 + rng.below(4000) as i64 * 1_000_000_000).to_rfc3339()
            ),
            17 => format!("agent.id:{}", agent(1 + rng.below(2) as u8).to_hex()),
            18 => format!("event.id:{}", e.event.id),
            19 => format!(
                "log.file.path:\"/var/log/{}\"",
                rng.pick(&["Linux_2k.log", "OpenSSH_2k.log", "Apache_2k.log"])
            ),
            20 => format!(
                "event.category:{}",
                rng.pick(&["process", "authentication", "network"])
            ),
            _ => format!("{}.*", rng.pick(&["173", "10", "218"])),
        }
    };
    if depth == 0 || rng.chance(35) {
        let l = leaf(rng);
        return if rng.chance(15) {
            format!("NOT {l}")
        } else {
            l
        };
    }
    let a = random_query(rng, events, depth - 1);
    let b = random_query(rng, events, depth - 1);
    match rng.below(4) {
        0 => format!("{a} {b}"),
        1 => format!("({a}) OR ({b})"),
        2 => format!("{a} AND NOT ({b})"),
        _ => format!("({a} OR {b}) {}", leaf(rng)),
    }
}

#[test]
fn index_matches_brute_force() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let lines = all_lines();
    let mut rng = Rng(0x5eed);
    let streams = [
        (agent(1), Epoch(1)),
        (agent(1), Epoch(2)),
        (agent(2), Epoch(7)),
    ];
    let mut f = Feeder::new(&streams);
    // ~3,000 events: ~9 sealed blocks and a recent tier; times go mostly forward with
    // jitter, so blocks overlap in time.
    let mut ts = T0;
    for i in 0..60 {
        let n = 20 + rng.below(60);
        let s = rng.below(streams.len());
        let events: Vec<Event> = (0..n)
            .map(|_| {
                ts += rng.below(2_000_000_000) as i64;
                let (file, line) = rng.pick(&lines);
                let jitter = rng.below(30_000_000_000) as i64 - 15_000_000_000;
                event_from(file, line, ts + jitter, &mut rng)
            })
            .collect();
        f.feed(&store, s, events);
        if i == 30 {
            // Duplicate timestamps across streams.
            let e = event_from("x", "same time event", ts, &mut rng);
            f.feed(&store, 0, vec![e.clone()]);
            f.feed(&store, 2, vec![e]);
        }
    }
    let stats = store.stats();
    assert!(stats.blocks >= 5, "{stats:?}");
    assert!(stats.recent_events > 0, "{stats:?}");
    let all = f.expected.clone();
    let t_end = all.iter().map(|e| e.timestamp.nanos()).max().unwrap_or(T0) + 1;
    let started = std::time::Instant::now();
    let mut checked = 0;
    let mut nonempty = 0;
    while checked < 250 && started.elapsed() < Duration::from_secs(8) {
        let q = random_query(&mut rng, &all, 2);
        let query = Query::parse(&q).unwrap_or_else(|e| panic!("{q}: {e}"));
        let (from, to) = if rng.chance(30) {
            let a = T0 + rng.below((t_end - T0) as usize) as i64;
            (a, a + rng.below(2_000_000_000_000) as i64)
        } else {
            (0, i64::MAX)
        };
        let want = newest_first(
            all.iter()
                .filter(|e| {
                    e.timestamp.nanos() >= from && e.timestamp.nanos() < to && query.matches(e)
                })
                .cloned()
                .collect(),
        );
        let limit = 1 + rng.below(40);
        let req = SearchRequest {
            query: query.clone(),
            from: Timestamp(from),
            to: Timestamp(to),
            limit,
            before: None,
            count: true,
        };
        let got = store.search(&req).expect("search");
        assert_eq!(
            got.total,
            Some(want.len() as u64),
            "count of {q:?} in [{from}, {to})"
        );
        nonempty += usize::from(!want.is_empty());
        assert_eq!(
            ids(&got.events),
            ids(&want[..want.len().min(limit)]),
            "events of {q:?}"
        );
        assert_eq!(
            got.events,
            want[..want.len().min(limit)].to_vec(),
            "event contents of {q:?}"
        );
        // The next page continues exactly where this one stopped.
        if let Some(c) = got.next {
            let page2 = store
                .search(&SearchRequest {
                    before: Some(c),
                    count: false,
                    ..req.clone()
                })
                .expect("search");
            let end = (2 * limit).min(want.len());
            assert_eq!(
                ids(&page2.events),
                ids(&want[limit.min(want.len())..end]),
                "page 2 of {q:?}"
            );
            assert_eq!(page2.total, None);
        } else {
            assert!(want.len() <= limit, "{q:?}: no cursor but more results");
        }
        // Histogram through the index (odd bucket) and, when eligible, counters.
        if checked % 5 == 0 {
            let bucket = Duration::from_secs(*rng.pick(&[7u64, 60, 300]));
            let (hf, ht) = (T0 - 100_000_000_000, t_end + 100_000_000_000);
            let h = store
                .histogram(&query, Timestamp(hf), Timestamp(ht), bucket)
                .expect("histogram");
            let total: u64 = h.iter().map(|b| b.count).sum();
            let want_n = all
                .iter()
                .filter(|e| {
                    e.timestamp.nanos() >= hf && e.timestamp.nanos() < ht && query.matches(e)
                })
                .count() as u64;
            assert_eq!(total, want_n, "histogram total of {q:?}");
        }
        checked += 1;
    }
    eprintln!(
        "checked {checked} random queries ({nonempty} with matches) in {:?}",
        started.elapsed()
    );
    assert!(checked >= 50, "only {checked} queries checked in time");
    assert!(
        nonempty * 4 >= checked,
        "too few queries had matches: {nonempty} of {checked}"
    );
}

// ---------------------------------------------------------------------------
// histogram, top values, context

fn brute_histogram(all: &[Event], q: &Query, from: i64, to: i64, bucket: i64) -> Vec<Bucket> {
    let first = from.div_euclid(bucket) * bucket;
    let n = (to - first + bucket - 1) / bucket;
    let mut out: Vec<Bucket> = (0..n)
        .map(|i| Bucket {
            start: Timestamp(first + i * bucket),
            ..Default::default()
        })
        .collect();
    for e in all
        .iter()
        .filter(|e| e.timestamp.nanos() >= from && e.timestamp.nanos() < to && q.matches(e))
    {
        let b = &mut out[((e.timestamp.nanos() - first) / bucket) as usize];
        b.count += 1;
        b.by_severity[e.severity().code() as usize] += 1;
        *b.by_kind.entry(e.kind()).or_default() += 1;
    }
    out
}

fn fill(store: &Store, n_batches: usize, seed: u64) -> Feeder {
    let lines = all_lines();
    let mut rng = Rng(seed);
    let streams = [(agent(1), Epoch(1)), (agent(2), Epoch(2))];
    let mut f = Feeder::new(&streams);
    let mut ts = T0;
    for _ in 0..n_batches {
        let n = 10 + rng.below(50);
        let events: Vec<Event> = (0..n)
            .map(|_| {
                ts += rng.below(3_000_000_000) as i64;
                let (file, line) = rng.pick(&lines);
                event_from(file, line, ts, &mut rng)
            })
            .collect();
        let s = rng.below(2);
        f.feed(store, s, events);
    }
    f
}

#[test]
fn histogram_from_counters_equals_brute_force() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let f = fill(&store, 50, 99);
    let all = &f.expected;
    let t_end = all.iter().map(|e| e.timestamp.nanos()).max().unwrap_or(T0);
    for q in [
        "",
        "host.name:web1",
        "host.name:web* AND NOT log.level:info",
        "event.dataset:authentication OR log.level:error",
        "NOT host.name:db1",
        "event.category:process",
        "_exists_:log.level",
        "failed",
        "user.name:root",
    ] {
        let query = Query::parse(q).expect("parse");
        for (from, to, bucket) in [
            (T0 - 3_600_000_000_000, t_end + 3_600_000_000_000, 60i64),
            (T0 + 17_000_000_000, t_end - 29_000_000_000, 300),
            (T0 + 17_000_000_000, T0 + 42_000_000_000, 60),
            (T0, t_end + 1, 13),
        ] {
            let got = store
                .histogram(
                    &query,
                    Timestamp(from),
                    Timestamp(to),
                    Duration::from_secs(bucket as u64),
                )
                .expect("histogram");
            let want = brute_histogram(all, &query, from, to, bucket * 1_000_000_000);
            assert_eq!(
                got, want,
                "histogram of {q:?} over [{from}, {to}) by {bucket}s"
            );
        }
    }
    assert!(matches!(
        store.histogram(
            &Query::all(),
            Timestamp(0),
            Timestamp(i64::MAX),
            Duration::from_secs(1)
        ),
        Err(StoreError::InvalidRequest(_))
    ));
}

#[test]
fn top_values_and_context() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let f = fill(&store, 30, 5);
    let all = &f.expected;
    for (q, field) in [
        ("", "host.name"),
        ("sshd", "user.name"),
        ("", "log.level"),
        ("NOT host.name:web1", "source.port"),
        ("", "event.category"),
        ("failed OR invalid", "process.name"),
    ] {
        let query = Query::parse(q).expect("parse");
        let got = store
            .top_values(&query, Timestamp(0), Timestamp(i64::MAX), field, 3)
            .expect("top");
        let mut counts: HashMap<String, u64> = HashMap::new();
        for e in all.iter().filter(|e| query.matches(e)) {
            e.visit_fields(&mut |p, v| {
                if p == field {
                    *counts.entry(v.to_text().into_owned()).or_default() += 1;
                }
            });
        }
        let mut want: Vec<(String, u64)> = counts.into_iter().collect();
        want.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        want.truncate(3);
        assert_eq!(got, want, "top {field} of {q:?}");
    }
    assert!(
        store
            .top_values(&Query::all(), Timestamp(0), Timestamp(1), "nope", 3)
            .is_err()
    );

    // Context: a stream interleaving two files.
    let (a, ep) = (agent(9), Epoch(3));
    let lines = loghub("Linux_2k.log");
    let mut rng = Rng(3);
    let events: Vec<Event> = (0..200)
        .map(|i| {
            let mut e = event_from(
                if i % 3 == 0 {
                    "other.log"
                } else {
                    "Linux_2k.log"
                },
                &lines[i],
                T0 + i as i64 * 1_000_000_000,
                &mut rng,
            );
            e.log = Some(Log {
                file: Some(LogFile {
                    path: if i % 3 == 0 {
                        "/var/log/other.log".into()
                    } else {
                        "/var/log/syslog".into()
                    },
                    offset: None,
                }),
                ..Default::default()
            });
            e
        })
        .collect();
    store
        .commit(vec![CommitBatch {
            agent: a,
            epoch: ep,
            first_seq: Seq(0),
            prev_hash: [0; 32],
            hash: hash(1),
            events: events[..120].to_vec(),
        }])
        .expect("commit");
    store.flush().expect("flush");
    store
        .commit(vec![CommitBatch {
            agent: a,
            epoch: ep,
            first_seq: Seq(120),
            prev_hash: hash(1),
            hash: hash(2),
            events: events[120..].to_vec(),
        }])
        .expect("commit");
    // Around seq 119 (sealed) the context crosses into the recent tier.
    let ctx = store
        .context(&event_id(a, ep, Seq(119)), 4, 4)
        .expect("context");
    let got: Vec<u64> = ctx
        .iter()
        .map(|e| {
            e.event
                .id
                .rsplit('-')
                .next()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0)
        })
        .collect();
    assert_eq!(got, vec![113, 115, 116, 118, 119, 121, 122, 124, 125]);
    assert_eq!(
        ctx.iter()
            .filter(|e| e.event.id == event_id(a, ep, Seq(119)))
            .count(),
        1
    );
    assert!(ctx.windows(2).all(|w| w[0].timestamp <= w[1].timestamp));
    // Start of a stream: fewer before.
    let ctx = store
        .context(&event_id(a, ep, Seq(1)), 5, 1)
        .expect("context");
    assert_eq!(
        ctx.iter().map(|e| e.message.clone()).collect::<Vec<_>>(),
        vec![lines[1].clone(), lines[2].clone()]
    );
    assert!(
        store
            .context(&event_id(a, ep, Seq(5000)), 2, 2)
            .expect("context")
            .is_empty()
    );
}

// ---------------------------------------------------------------------------
// retention, corruption, registries, checkpoints

#[test]
fn retention_by_age_and_by_size() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let lines = loghub("Apache_2k.log");
    let (a, ep) = (agent(4), Epoch(4));
    let day = 86_400_000_000_000i64;
    let mut rng = Rng(11);
    let mut prev = [0u8; 32];
    // Five days, one sealed block each.
    for d in 0..5i64 {
        let events: Vec<Event> = (0..200)
            .map(|i| {
                event_from(
                    "Apache_2k.log",
                    &lines[(d as usize * 200 + i) % lines.len()],
                    T0 + d * day + i as i64 * 1_000_000_000,
                    &mut rng,
                )
            })
            .collect();
        let h = hash(d as u64 + 100);
        store
            .commit(vec![CommitBatch {
                agent: a,
                epoch: ep,
                first_seq: Seq(d as u64 * 200),
                prev_hash: prev,
                hash: h,
                events,
            }])
            .expect("commit");
        prev = h;
        store.flush().expect("flush");
    }
    assert_eq!(store.stats().blocks, 5);
    let state = store.stream_state(a, ep).expect("state");
    let now = Timestamp(T0 + 5 * day);
    let r = store
        .retention(now, Some(Duration::from_secs(3 * 86_400)), None)
        .expect("retention");
    assert_eq!(r.blocks_removed, 2);
    assert_eq!(r.events_removed, 400);
    assert_eq!(r.oldest_kept, Some(Timestamp(T0 + 2 * day)));
    assert_eq!(
        store.stream_state(a, ep).expect("state"),
        state,
        "retention never touches stream state"
    );
    assert_eq!(search(&store, "", 0, i64::MAX, 1).total, Some(600));
    assert_eq!(search(&store, "", 0, T0 + 2 * day, 10).total, Some(0));
    // Counters went with the blocks.
    let h = store
        .histogram(
            &Query::all(),
            Timestamp(T0 - day),
            Timestamp(T0 + 6 * day),
            Duration::from_secs(86_400),
        )
        .expect("histogram");
    assert_eq!(
        h.iter().map(|b| b.count).collect::<Vec<_>>(),
        vec![0, 0, 0, 200, 200, 200, 0, 0]
    );
    assert!(
        store
            .get_event(&event_id(a, ep, Seq(10)))
            .expect("get")
            .is_none()
    );
    assert!(
        store
            .get_event(&event_id(a, ep, Seq(410)))
            .expect("get")
            .is_some()
    );
    // By size: a budget below the current usage drops the oldest first.
    let usage = store.disk_usage().expect("usage");
    assert!(usage > 0);
    let r = store
        .retention(now, None, Some(usage.saturating_sub(1)))
        .expect("retention");
    assert!(r.blocks_removed >= 1, "{r:?}");
    assert_eq!(
        search(&store, "", T0 + 2 * day, T0 + 3 * day, 1).total,
        Some(0),
        "oldest day went first"
    );
    assert_eq!(
        search(&store, "", T0 + 4 * day, T0 + 5 * day, 1).total,
        Some(200),
        "newest day kept"
    );
    let r = store.retention(now, None, Some(0)).expect("retention");
    assert_eq!(store.stats().blocks, 0, "{r:?}");
    assert_eq!(store.stream_state(a, ep).expect("state"), state);
    // Still accepts the next batch of the stream.
    let e = event_from("Apache_2k.log", &lines[0], T0 + 5 * day, &mut rng);
    assert_eq!(
        store
            .commit(vec![CommitBatch {
                agent: a,
                epoch: ep,
                first_seq: Seq(1000),
                prev_hash: prev,
                hash: hash(1),
                events: vec![e]
            }])
            .expect("commit"),
        vec![CommitOutcome::Stored {
            stored_end: Seq(1001)
        }]
    );
}

fn overwrite(dir: &Path, cf: &str, key: &[u8], value: &[u8]) {
    let mut opts = rocksdb::Options::default();
    opts.create_if_missing(false);
    let cfs = rocksdb::DB::list_cf(&opts, dir).expect("list cf");
    let db = rocksdb::DB::open_cf(&opts, dir, &cfs).expect("open raw");
    let h = db.cf_handle(cf).expect("cf");
    db.put_cf(h, key, value).expect("put");
    db.flush_cf(h).expect("flush");
}

#[test]
fn corrupt_blocks_are_skipped_and_counted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let total;
    {
        let store = open(dir.path());
        let f = fill(&store, 30, 77);
        store.flush().expect("flush");
        total = f.expected.len() as u64;
        assert!(store.stats().blocks >= 3);
    }
    // Garbage in block 0's columns and first page.
    overwrite(
        dir.path(),
        "cols",
        &0u64.to_be_bytes(),
        b"\x28\xb5\x2f\xfd garbage",
    );
    let mut pk = 0u64.to_be_bytes().to_vec();
    pk.extend_from_slice(&0u32.to_be_bytes());
    overwrite(dir.path(), "pages", &pk, &[0xff; 100]);
    let store = open(dir.path());
    let r = search(&store, "", 0, i64::MAX, 10_000);
    assert!(r.stats.blocks_corrupt >= 1, "{:?}", r.stats);
    let stats = store.stats();
    assert_eq!(stats.corrupt_blocks, 1);
    // Once known, the block stays out of every read.
    let r = search(&store, "", 0, i64::MAX, 10_000);
    let left = r.total.unwrap_or(0);
    assert!(
        (300..360).contains(&(total - left)),
        "{total} {left}: block 0 held 300 to 359 events"
    );
    assert_eq!(r.events.len() as u64, left);
    let _ = store
        .histogram(
            &Query::parse("failed").expect("q"),
            Timestamp(T0 - 86_400_000_000_000),
            Timestamp(T0 + 86_400_000_000_000),
            Duration::from_secs(3600),
        )
        .expect("histogram");
    let _ = store
        .top_values(
            &Query::all(),
            Timestamp(0),
            Timestamp(i64::MAX),
            "user.name",
            5,
        )
        .expect("top");
    // A corrupt directory entry is skipped at open.
    drop(store);
    overwrite(dir.path(), "blocks", &1u64.to_be_bytes(), b"nonsense");
    let store = open(dir.path());
    assert_eq!(store.stats().corrupt_blocks, 1);
    assert!(search(&store, "", 0, i64::MAX, 10).total.is_some());
}

#[test]
fn registries_tokens_and_checkpoint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let rec = AgentRecord {
        id: agent(8),
        hostname: "web1".into(),
        machine_id: "abc".into(),
        identity_key: [1; 32],
        tls_spki_sha256: [2; 32],
        enrolled_at: Timestamp(T0),
        last_seen: None,
        revoked: false,
        current_epoch: Some(Epoch(5)),
        version: "0.1.0".into(),
    };
    store.put_agent(&rec).expect("put");
    assert_eq!(store.get_agent(agent(8)).expect("get"), Some(rec.clone()));
    assert_eq!(store.get_agent(agent(9)).expect("get"), None);
    assert_eq!(store.list_agents().expect("list"), vec![rec]);

    let tok = TokenRecord {
        id: [3; 16],
        secret_hash: [4; 32],
        created_at: Timestamp(T0),
        expires_at: Timestamp(T0 + 1000),
        used: false,
        comment: "lab".into(),
    };
    store.put_token(&tok).expect("put");
    store
        .put_token(&TokenRecord {
            id: [5; 16],
            expires_at: Timestamp(T0),
            ..tok.clone()
        })
        .expect("put");
    assert!(matches!(
        store.consume_token([9; 16], [4; 32], Timestamp(T0)),
        Err(TokenError::Unknown)
    ));
    assert!(matches!(
        store.consume_token([3; 16], [5; 32], Timestamp(T0)),
        Err(TokenError::WrongSecret)
    ));
    assert!(matches!(
        store.consume_token([5; 16], [4; 32], Timestamp(T0)),
        Err(TokenError::Expired)
    ));
    let used = store
        .consume_token([3; 16], [4; 32], Timestamp(T0 + 1))
        .expect("consume");
    assert!(used.used);
    assert!(matches!(
        store.consume_token([3; 16], [4; 32], Timestamp(T0 + 2)),
        Err(TokenError::AlreadyUsed)
    ));
    assert_eq!(store.list_tokens().expect("list").len(), 2);
    // Single use holds under concurrency.
    store
        .put_token(&TokenRecord {
            id: [6; 16],
            ..tok.clone()
        })
        .expect("put");
    let wins: usize = std::thread::scope(|s| {
        let hs: Vec<_> = (0..8)
            .map(|_| s.spawn(|| store.consume_token([6; 16], [4; 32], Timestamp(T0)).is_ok()))
            .collect();
        hs.into_iter()
            .map(|h| usize::from(h.join().unwrap_or(false)))
            .sum()
    });
    assert_eq!(wins, 1);

    let f = fill(&store, 10, 1);
    let cp: PathBuf = dir.path().join("backup");
    store.checkpoint(&cp).expect("checkpoint");
    let restored = Store::open(&cp, cfg()).expect("open checkpoint");
    assert_eq!(
        search(&restored, "", 0, i64::MAX, 3).total,
        Some(f.expected.len() as u64)
    );
    assert_eq!(restored.list_tokens().expect("list").len(), 3);
    assert_eq!(
        ids(&search(&restored, "sshd", 0, i64::MAX, 50).events),
        ids(&search(&store, "sshd", 0, i64::MAX, 50).events)
    );
}

#[test]
fn store_is_send_sync_and_readers_run_beside_the_writer() {
    fn assert_send_sync<T: Send + Sync + Clone>() {}
    assert_send_sync::<Store>();
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    std::thread::scope(|s| {
        let reader = store.clone();
        let r = s.spawn(move || {
            let mut last = 0;
            for _ in 0..50 {
                let n = search(&reader, "", 0, i64::MAX, 5).total.unwrap_or(0);
                assert!(n >= last, "counts never go back");
                last = n;
            }
        });
        let f = fill(&store, 40, 12);
        r.join().expect("reader");
        assert_eq!(
            search(&store, "", 0, i64::MAX, 1).total,
            Some(f.expected.len() as u64)
        );
    });
}

#[test]
fn out_of_bounds_events_are_stored_within_bounds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let mut e = Event::new(Kind::Log, Timestamp(T0));
    // Built by hand, past the bounds `set_message` and `add_label` keep.
    e.message = format!(
        "oversized {}",
        "x".repeat(vigie_proto::event::MAX_MESSAGE_LEN)
    );
    for i in 0..100 {
        e.labels.insert(format!("k{i:03}"), "v".into());
    }
    e.labels.insert("big".into(), "y".repeat(5000));
    let (a, ep) = (agent(6), Epoch(6));
    store
        .commit(vec![CommitBatch {
            agent: a,
            epoch: ep,
            first_seq: Seq(0),
            prev_hash: [0; 32],
            hash: hash(1),
            events: vec![e],
        }])
        .expect("commit");
    store.flush().expect("flush");
    let r = search(&store, "oversized", 0, i64::MAX, 10);
    assert_eq!(r.total, Some(1));
    let got = &r.events[0];
    assert!(got.event.truncated);
    assert!(got.message.len() <= vigie_proto::event::MAX_MESSAGE_LEN);
    assert_eq!(got.labels.len(), vigie_proto::event::MAX_LABELS);
    assert!(got.check_bounds().is_ok());
}

#[test]
fn sealing_on_a_thread_of_the_owner() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(
        dir.path(),
        StoreConfig {
            inline_seal: false,
            ..cfg()
        },
    )
    .expect("open");
    let f = fill(&store, 20, 21);
    let n = f.expected.len() as u64;
    assert_eq!(store.stats().blocks, 0, "nothing sealed inline");
    assert_eq!(store.stats().recent_events, n);
    let sealer = store.clone();
    std::thread::spawn(move || sealer.seal_pending())
        .join()
        .expect("thread")
        .expect("seal");
    let st = store.stats();
    assert!(st.blocks >= 2, "{st:?}");
    assert_eq!(st.events, n);
    let r = search(&store, "", 0, i64::MAX, 5);
    assert_eq!(r.total, Some(n));
    assert_eq!(ids(&r.events), ids(&newest_first(f.expected.clone())[..5]));
}

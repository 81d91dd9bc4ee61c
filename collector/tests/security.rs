//! Security tests of the collector's agent port, against a real collector on
//! loopback (real QUIC, real RocksDB): every hostile request is refused with a
//! clear log line, nothing is stored, and the collector keeps serving honest agents.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ed25519_dalek::SigningKey;
use vigie_collector::{Collector, CollectorConfig};
use vigie_net::{Ca, client_config, client_endpoint, generate_tls_key, request};
use vigie_proto::batch::{MAX_FRAME_LEN, seal};
use vigie_proto::enroll::Bundle;
use vigie_proto::wire::{self, EnrollRequest, Hello, MsgType, RefuseCode, Reply};
use vigie_proto::{AgentId, Epoch, Event, Kind, Seq, Timestamp};
use vigie_store::{Query, SearchRequest};

#[derive(Clone, Default)]
struct LogBuf(Arc<Mutex<Vec<u8>>>);

impl Write for LogBuf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log").extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogBuf {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("log")).into_owned()
    }
}

struct TestAgent {
    id: AgentId,
    key: SigningKey,
    cert: Vec<u8>,
    tls_key: Vec<u8>,
}

fn now() -> Timestamp {
    Timestamp(chrono::Utc::now().timestamp_nanos_opt().expect("now"))
}

fn events(n: usize, tag: &str) -> Vec<Event> {
    (0..n)
        .map(|i| {
            let mut e = Event::new(Kind::Log, now());
            e.set_message(format!("{tag} line {i}"));
            e
        })
        .collect()
}

async fn connect(
    addr: SocketAddr,
    ca: &[u8],
    ident: Option<(Vec<u8>, Vec<u8>)>,
) -> anyhow::Result<quinn::Connection> {
    let ep = client_endpoint(addr)?;
    Ok(ep
        .connect_with(
            client_config(ca, ident)?,
            addr,
            vigie_net::DEFAULT_SERVER_NAME,
        )?
        .await?)
}

async fn call(conn: &quinn::Connection, frame: &[u8]) -> anyhow::Result<Reply> {
    let (ty, body) = request(conn, frame, Duration::from_secs(10)).await?;
    Ok(wire::decode_body::<Reply>(ty, &body)?)
}

async fn enroll(
    c: &Collector,
    addr: SocketAddr,
    ca: &[u8],
    bundle: &Bundle,
) -> anyhow::Result<(Reply, TestAgent)> {
    let _ = c;
    let key = SigningKey::from_bytes(&rand::random::<[u8; 32]>());
    let (tls_key, spki) = generate_tls_key()?;
    let conn = connect(addr, ca, None).await?;
    let req = EnrollRequest {
        token_id: bundle.token_id,
        token_secret: bundle.secret,
        tls_public_key: spki,
        identity_key: key.verifying_key().to_bytes(),
        hostname: "test".into(),
        machine_id: "m".into(),
    };
    let r = call(&conn, &wire::encode_msg(MsgType::Enroll, &req)?).await?;
    let agent = match &r {
        Reply::Enrolled {
            agent_id,
            client_cert_der,
            ..
        } => TestAgent {
            id: *agent_id,
            key,
            cert: client_cert_der.clone(),
            tls_key,
        },
        _ => TestAgent {
            id: AgentId::default(),
            key,
            cert: Vec::new(),
            tls_key,
        },
    };
    Ok((r, agent))
}

fn stored(c: &Collector) -> u64 {
    let req = SearchRequest {
        query: Query::all(),
        from: Timestamp(0),
        to: Timestamp(i64::MAX),
        limit: 0,
        before: None,
        count: true,
    };
    c.store.search(&req).expect("search").total.expect("count")
}

fn batch(
    a: &TestAgent,
    epoch: u64,
    first: u64,
    prev: [u8; 32],
    evs: &[Event],
) -> (Vec<u8>, [u8; 32]) {
    let (frame, hash) =
        seal(&a.key, a.id, Epoch(epoch), Seq(first), now(), prev, evs, 1).expect("seal");
    (wire::frame(MsgType::Batch, &frame), hash)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_are_refused_and_nothing_is_stored() -> anyhow::Result<()> {
    let logs = LogBuf::default();
    let writer = logs.clone();
    let _ = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .try_init();

    let dir = tempfile::tempdir()?;
    let cfg = CollectorConfig {
        data_dir: dir.path().join("collector"),
        ingest_listen: "127.0.0.1:0".parse()?,
        api_listen: "127.0.0.1:0".parse()?,
        min_free_bytes: 0,
        ..Default::default()
    };
    let c = Collector::start(cfg).await?;
    let addr = c.ingest_addr;
    let ca = c.api_state.ca_der.clone();
    let token = |ttl: u64| {
        let st = c.api_state.clone();
        let store = c.store.clone();
        async move {
            vigie_collector::api::create_token(
                &store,
                &st.ingest_addrs,
                &st.server_name,
                &st.ca_der,
                Duration::from_secs(ttl),
                String::new(),
            )
            .await
            .map_err(|_| anyhow::anyhow!("token"))
        }
    };

    // Enrollment: a good token works once; reuse, a wrong secret and a non-enrollment request are refused.
    let b1 = token(60).await?;
    let (r, a) = enroll(&c, addr, &ca, &b1).await?;
    assert!(matches!(r, Reply::Enrolled { .. }), "{r:?}");
    let (r, _) = enroll(&c, addr, &ca, &b1).await?;
    assert!(
        matches!(
            r,
            Reply::Refused {
                code: RefuseCode::EnrollmentDenied,
                ..
            }
        ),
        "reused token: {r:?}"
    );
    let mut wrong = token(60).await?;
    wrong.secret[0] ^= 1;
    let (r, _) = enroll(&c, addr, &ca, &wrong).await?;
    assert!(
        matches!(
            r,
            Reply::Refused {
                code: RefuseCode::EnrollmentDenied,
                ..
            }
        ),
        "wrong secret: {r:?}"
    );
    let b2 = token(60).await?;
    let (r, b) = enroll(&c, addr, &ca, &b2).await?;
    assert!(matches!(r, Reply::Enrolled { .. }), "{r:?}");
    let anon = connect(addr, &ca, None).await?;
    let hello = Hello {
        epoch: Epoch(1),
        next_seq: Seq(0),
        agent_version: "t".into(),
        hostname: "h".into(),
        machine_id: "m".into(),
    };
    let r = call(&anon, &wire::encode_msg(MsgType::Hello, &hello)?).await?;
    assert!(
        matches!(
            r,
            Reply::Refused {
                code: RefuseCode::EnrollmentDenied,
                ..
            }
        ),
        "hello without certificate: {r:?}"
    );

    // The honest path.
    let conn = connect(addr, &ca, Some((a.cert.clone(), a.tls_key.clone()))).await?;
    let r = call(&conn, &wire::encode_msg(MsgType::Hello, &hello)?).await?;
    assert_eq!(
        r,
        Reply::Welcome {
            stored_end: Seq(0),
            last_hash: [0; 32]
        }
    );
    let evs = events(3, "good");
    let (f1, h1) = batch(&a, 1, 0, [0; 32], &evs);
    assert_eq!(
        call(&conn, &f1).await?,
        Reply::Ack {
            epoch: Epoch(1),
            stored_end: Seq(3)
        }
    );
    assert_eq!(stored(&c), 3);

    // Replayed batch: acknowledged again, stored once.
    assert_eq!(
        call(&conn, &f1).await?,
        Reply::Ack {
            epoch: Epoch(1),
            stored_end: Seq(3)
        }
    );
    assert_eq!(stored(&c), 3);

    // Reordered: batch 3 before batch 2 is a gap; the collector asks for a resend from 3.
    let (f2, h2) = batch(&a, 1, 3, h1, &events(2, "second"));
    let (f3, _) = batch(&a, 1, 5, h2, &events(2, "third"));
    assert_eq!(
        call(&conn, &f3).await?,
        Reply::Resend {
            epoch: Epoch(1),
            from: Seq(3)
        }
    );
    assert_eq!(stored(&c), 3);

    // Chain broken: right position, wrong previous hash.
    let (bad_chain, _) = batch(&a, 1, 3, [9; 32], &events(2, "forged"));
    assert!(matches!(
        call(&conn, &bad_chain).await?,
        Reply::Refused {
            code: RefuseCode::ChainBroken,
            ..
        }
    ));
    assert_eq!(
        call(&conn, &f2).await?,
        Reply::Ack {
            epoch: Epoch(1),
            stored_end: Seq(5)
        }
    );
    assert_eq!(
        call(&conn, &f3).await?,
        Reply::Ack {
            epoch: Epoch(1),
            stored_end: Seq(7)
        }
    );
    assert_eq!(stored(&c), 7);

    // Bad signature: one payload bit flipped.
    let (mut tampered, _) = batch(&a, 1, 7, [0; 32], &events(1, "tampered"));
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    assert!(matches!(
        call(&conn, &tampered).await?,
        Reply::Refused {
            code: RefuseCode::BadSignature,
            ..
        }
    ));

    // Another agent's identity: a batch naming agent B on agent A's connection, and a batch
    // naming A but signed with B's key.
    let (as_b, _) = batch(&b, 1, 0, [0; 32], &events(1, "as-b"));
    assert!(matches!(
        call(&conn, &as_b).await?,
        Reply::Refused {
            code: RefuseCode::IdentityMismatch,
            ..
        }
    ));
    let impostor = TestAgent {
        id: a.id,
        key: b.key.clone(),
        cert: Vec::new(),
        tls_key: Vec::new(),
    };
    let (signed_by_b, _) = batch(&impostor, 1, 7, [0; 32], &events(1, "impostor"));
    assert!(matches!(
        call(&conn, &signed_by_b).await?,
        Reply::Refused {
            code: RefuseCode::BadSignature,
            ..
        }
    ));

    // Oversized and truncated frames.
    let mut huge = vec![MsgType::Batch as u8];
    huge.extend_from_slice(&((MAX_FRAME_LEN + 1) as u32).to_le_bytes());
    huge.extend_from_slice(&[0u8; 64]);
    assert!(matches!(
        call(&conn, &huge).await?,
        Reply::Refused {
            code: RefuseCode::BadRequest,
            ..
        }
    ));
    let (good, _) = batch(&a, 1, 7, [0; 32], &events(1, "cut"));
    assert!(matches!(
        call(&conn, &good[..good.len() / 2]).await?,
        Reply::Refused {
            code: RefuseCode::BadRequest,
            ..
        }
    ));
    let mut unknown = vec![0xEEu8];
    unknown.extend_from_slice(&4u32.to_le_bytes());
    unknown.extend_from_slice(b"junk");
    assert!(matches!(
        call(&conn, &unknown).await?,
        Reply::Refused {
            code: RefuseCode::BadRequest,
            ..
        }
    ));
    assert_eq!(stored(&c), 7);

    // A certificate from another CA never gets through the handshake.
    let rogue_ca = Ca::generate()?;
    let (rk, rspki) = generate_tls_key()?;
    let rogue = rogue_ca.issue_agent(a.id, &rspki)?;
    let res = async {
        let conn = connect(addr, &ca, Some((rogue, rk))).await?;
        call(&conn, &wire::encode_msg(MsgType::Hello, &hello)?).await
    }
    .await;
    assert!(
        res.is_err(),
        "certificate from another CA accepted: {res:?}"
    );

    // A certificate from this CA for an agent that is not enrolled (deleted) is refused after the handshake.
    let (dk, dspki) = generate_tls_key()?;
    let (ca_der, ca_key) = (
        std::fs::read(dir.path().join("collector/ca.der"))?,
        std::fs::read(dir.path().join("collector/ca.key"))?,
    );
    let ghost = Ca::from_parts(&ca_der, &ca_key)?.issue_agent(AgentId([0x66; 16]), &dspki)?;
    let res = async {
        let conn = connect(addr, &ca, Some((ghost, dk))).await?;
        call(&conn, &wire::encode_msg(MsgType::Hello, &hello)?).await
    }
    .await;
    assert!(res.is_err(), "unknown agent accepted: {res:?}");

    // Agent B's certificate presented with another key fails the handshake.
    let (other_key, _) = generate_tls_key()?;
    let res = async {
        let conn = connect(addr, &ca, Some((b.cert.clone(), other_key))).await?;
        call(&conn, &wire::encode_msg(MsgType::Hello, &hello)?).await
    }
    .await;
    assert!(
        res.is_err(),
        "stolen certificate without its key accepted: {res:?}"
    );

    // Garbage datagrams on the port.
    let sock = std::net::UdpSocket::bind("127.0.0.1:0")?;
    let mut seed = 0x1234_5678_u64;
    for i in 0..2000 {
        let n = 1 + (i * 37) % 1400;
        let junk: Vec<u8> = (0..n)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect();
        let _ = sock.send_to(&junk, addr);
    }

    // Revocation takes effect at the next connection.
    let mut rec = c.store.get_agent(b.id)?.expect("b");
    rec.revoked = true;
    c.store.put_agent(&rec)?;
    let res = async {
        let conn = connect(addr, &ca, Some((b.cert.clone(), b.tls_key.clone()))).await?;
        call(&conn, &wire::encode_msg(MsgType::Hello, &hello)?).await
    }
    .await;
    assert!(res.is_err(), "revoked agent accepted: {res:?}");

    // The collector is unaffected: the honest agent still ships.
    let conn = connect(addr, &ca, Some((a.cert.clone(), a.tls_key.clone()))).await?;
    let r = call(&conn, &wire::encode_msg(MsgType::Hello, &hello)?).await?;
    let Reply::Welcome {
        stored_end,
        last_hash,
    } = r
    else {
        panic!("{r:?}")
    };
    assert_eq!(stored_end, Seq(7));
    let (f4, _) = batch(&a, 1, 7, last_hash, &events(2, "after"));
    assert_eq!(
        call(&conn, &f4).await?,
        Reply::Ack {
            epoch: Epoch(1),
            stored_end: Seq(9)
        }
    );
    assert_eq!(stored(&c), 9);

    // Every refusal left a clear log line.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let log = logs.text();
    for needle in [
        "refused unauthenticated request",
        "enrollment token refused",
        "refused batch",
        "BadSignature",
        "IdentityMismatch",
        "previous-batch hash does not match",
        "bad frame",
        "refused connection: agent is not enrolled here",
        "refused connection: agent certificate was revoked",
    ] {
        assert!(
            log.contains(needle),
            "no log line with {needle:?} in:\n{log}"
        );
    }
    c.shutdown().await;
    Ok(())
}

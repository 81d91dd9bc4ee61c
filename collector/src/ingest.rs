//! The QUIC listener: enrollment on unauthenticated connections, batches on
//! authenticated ones.
//!
//! Order of checks for a batch, each failure answered with a clear refusal and
//! logged (rate-limited, attacker bytes truncated): frame header and caps →
//! batch header and lengths → the batch names the connection's own agent →
//! signature with that agent's enrolled key → decompress and decode (capped) →
//! the writer's exactly-once and chain checks. Nothing is decoded before the
//! signature verifies.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use ed25519_dalek::VerifyingKey;
use rand::RngCore;
use tokio::sync::oneshot;
use vigie_net::{Ca, read_frame, reply};
use vigie_proto::batch::SignedBatch;
use vigie_proto::enroll::secret_hash;
use vigie_proto::event::truncate_for_log;
use vigie_proto::wire::{self, EnrollRequest, Hello, MsgType, RefuseCode, Reply};
use vigie_proto::{AgentId, Seq, Timestamp, ids};
use vigie_store::{AgentRecord, CommitBatch, CommitOutcome, Store};

use crate::metrics::Metrics;
use crate::writer::{CommitReq, WriteError};

/// Shared state of the listener.
pub struct Ingest {
    pub store: Store,
    pub ca: Arc<Ca>,
    pub command_key: [u8; 32],
    pub writer: std::sync::mpsc::SyncSender<CommitReq>,
    pub metrics: Arc<Metrics>,
    pub log_limit: LogLimiter,
    /// Benchmark mode: verify and decode, then discard (ack without storing).
    pub verify_only: bool,
}

/// At most `per_sec` warnings a second from pre-auth and refusal paths.
#[derive(Debug)]
pub struct LogLimiter {
    per_sec: u64,
    window: AtomicU64,
    count: AtomicU64,
    suppressed: AtomicU64,
}

impl LogLimiter {
    pub fn new(per_sec: u64) -> Self {
        LogLimiter {
            per_sec,
            window: AtomicU64::new(0),
            count: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// True when a line may be logged now.
    pub fn allow(&self) -> bool {
        let now = now().secs() as u64;
        if self.window.swap(now, Relaxed) != now {
            let s = self.suppressed.swap(0, Relaxed);
            if s > 0 {
                tracing::warn!(
                    suppressed = s,
                    "log lines suppressed by the rate limit in the previous second"
                );
            }
            self.count.store(0, Relaxed);
        }
        if self.count.fetch_add(1, Relaxed) < self.per_sec {
            true
        } else {
            self.suppressed.fetch_add(1, Relaxed);
            false
        }
    }
}

pub fn now() -> Timestamp {
    Timestamp(chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0))
}

macro_rules! warn_limited {
    ($ing:expr, $($arg:tt)*) => {
        if $ing.log_limit.allow() {
            tracing::warn!($($arg)*);
        }
    };
}

fn refused(code: RefuseCode, message: impl Into<String>) -> Reply {
    Reply::Refused {
        code,
        message: message.into(),
    }
}

fn encode_reply(r: &Reply) -> Vec<u8> {
    wire::encode_msg(MsgType::Reply, r).unwrap_or_else(|_| wire::frame(MsgType::Reply, &[]))
}

/// Accepts connections until the endpoint closes.
pub async fn serve(endpoint: quinn::Endpoint, ing: Arc<Ingest>) {
    while let Some(incoming) = endpoint.accept().await {
        let ing = ing.clone();
        tokio::spawn(async move {
            let remote = incoming.remote_address();
            match incoming.await {
                Ok(conn) => {
                    ing.metrics.connections_total.fetch_add(1, Relaxed);
                    handle_conn(conn, remote, ing).await;
                }
                Err(e) => {
                    warn_limited!(ing, %remote, error = %e, "quic handshake failed");
                }
            }
        });
    }
}

async fn handle_conn(conn: quinn::Connection, remote: SocketAddr, ing: Arc<Ingest>) {
    let Some((agent, spki)) = vigie_net::peer_agent_id(&conn) else {
        enroll_conn(conn, remote, ing).await;
        return;
    };
    let store = ing.store.clone();
    let rec = match tokio::task::spawn_blocking(move || store.get_agent(agent)).await {
        Ok(Ok(Some(r))) => r,
        Ok(Ok(None)) => {
            ing.metrics.connections_refused.fetch_add(1, Relaxed);
            warn_limited!(ing, %remote, %agent, "refused connection: agent is not enrolled here (deleted, or enrolled with another collector)");
            conn.close(1u32.into(), b"unknown agent");
            return;
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, "cannot read agent registry");
            conn.close(2u32.into(), b"unavailable");
            return;
        }
        Err(_) => return,
    };
    if rec.revoked {
        ing.metrics.connections_refused.fetch_add(1, Relaxed);
        warn_limited!(ing, %remote, %agent, "refused connection: agent certificate was revoked");
        conn.close(1u32.into(), b"revoked");
        return;
    }
    if rec.tls_spki_sha256 != spki {
        ing.metrics.connections_refused.fetch_add(1, Relaxed);
        warn_limited!(ing, %remote, %agent, "refused connection: certificate key differs from the enrolled one");
        conn.close(1u32.into(), b"identity mismatch");
        return;
    }
    let key = match VerifyingKey::from_bytes(&rec.identity_key) {
        Ok(k) => k,
        Err(_) => {
            tracing::error!(%agent, "enrolled identity key is invalid; re-enroll the agent");
            conn.close(1u32.into(), b"bad identity");
            return;
        }
    };
    let (order, _) = tokio::sync::watch::channel((vigie_proto::Epoch(0), 0u64));
    let ctx = Arc::new(AgentConn {
        agent,
        key,
        rec: tokio::sync::Mutex::new(rec),
        remote,
        order,
    });
    loop {
        let (mut send, mut recv) = match conn.accept_bi().await {
            Ok(s) => s,
            Err(_) => break,
        };
        let ing = ing.clone();
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let answer = match read_frame(&mut recv).await {
                Ok((ty, body)) => handle_request(&ing, &ctx, ty, body).await,
                Err(e) => {
                    ing.metrics.batches_refused.fetch_add(1, Relaxed);
                    warn_limited!(ing, remote = %ctx.remote, agent = %ctx.agent, error = %e, "refused request: bad frame");
                    refused(RefuseCode::BadRequest, format!("bad frame: {e}"))
                }
            };
            let _ = reply(&mut send, &encode_reply(&answer)).await;
        });
    }
}

struct AgentConn {
    agent: AgentId,
    key: VerifyingKey,
    rec: tokio::sync::Mutex<AgentRecord>,
    remote: SocketAddr,
    /// `(epoch, stored end)` as last known on this connection. Batches sent with
    /// several in flight are verified in parallel and may finish out of order; each
    /// waits (briefly) for its predecessor's commit so that the writer sees them in
    /// sequence instead of answering "gap".
    order: tokio::sync::watch::Sender<(vigie_proto::Epoch, u64)>,
}

/// How long a batch waits for its predecessor on the same connection.
const REORDER_WAIT: Duration = Duration::from_secs(2);

async fn handle_request(
    ing: &Arc<Ingest>,
    ctx: &Arc<AgentConn>,
    ty: MsgType,
    body: Vec<u8>,
) -> Reply {
    match ty {
        MsgType::Hello => match wire::decode_body::<Hello>(ty, &body) {
            Ok(h) => hello(ing, ctx, h).await,
            Err(e) => refused(RefuseCode::BadRequest, e.to_string()),
        },
        MsgType::Batch => batch(ing, ctx, body).await,
        MsgType::CommandPoll => Reply::Commands { signed: Vec::new() },
        MsgType::Enroll | MsgType::Reply => refused(
            RefuseCode::BadRequest,
            format!("{ty:?} is not a request an enrolled agent may send"),
        ),
    }
}

async fn hello(ing: &Arc<Ingest>, ctx: &Arc<AgentConn>, h: Hello) -> Reply {
    let store = ing.store.clone();
    let agent = ctx.agent;
    let epoch = h.epoch;
    let mut rec = ctx.rec.lock().await.clone();
    rec.last_seen = Some(now());
    rec.current_epoch = Some(epoch);
    rec.version = truncate_for_log(&h.agent_version).to_string();
    if !h.hostname.is_empty() {
        rec.hostname = truncate_for_log(&h.hostname).to_string();
    }
    let rec2 = rec.clone();
    let res = tokio::task::spawn_blocking(move || {
        store.put_agent(&rec2)?;
        store.stream_state(agent, epoch)
    })
    .await;
    *ctx.rec.lock().await = rec;
    match res {
        Ok(Ok(state)) => {
            let (stored_end, last_hash) = state
                .map(|s| (s.stored_end, s.last_hash))
                .unwrap_or((Seq(0), [0; 32]));
            ctx.order.send_replace((epoch, stored_end.0));
            tracing::info!(%agent, remote = %ctx.remote, %epoch, stored_end = stored_end.0, next_seq = h.next_seq.0, "agent connected");
            Reply::Welcome {
                stored_end,
                last_hash,
            }
        }
        Ok(Err(e)) => refused(RefuseCode::Unavailable, format!("store error: {e}")),
        Err(e) => refused(RefuseCode::Unavailable, e.to_string()),
    }
}

async fn batch(ing: &Arc<Ingest>, ctx: &Arc<AgentConn>, frame: Vec<u8>) -> Reply {
    ing.metrics
        .bytes_received
        .fetch_add(frame.len() as u64, Relaxed);
    let agent = ctx.agent;
    let key = ctx.key;
    // Signature check and decoding are CPU work: keep them off the async workers.
    let decoded = tokio::task::spawn_blocking(move || {
        let sb = SignedBatch::parse(&frame).map_err(|e| (RefuseCode::BadRequest, e.to_string()))?;
        if sb.header.agent != agent {
            return Err((
                RefuseCode::IdentityMismatch,
                format!(
                    "batch claims agent {} but the connection is agent {agent}",
                    sb.header.agent
                ),
            ));
        }
        let vb = sb
            .verify(&key)
            .map_err(|e| (RefuseCode::BadSignature, e.to_string()))?;
        let events = vb
            .decode()
            .map_err(|e| (RefuseCode::BadRequest, e.to_string()))?;
        Ok((vb.header, vb.hash(), events))
    })
    .await;
    let (header, hash, mut events) = match decoded {
        Ok(Ok(v)) => v,
        Ok(Err((code, msg))) => {
            ing.metrics.batches_refused.fetch_add(1, Relaxed);
            warn_limited!(ing, remote = %ctx.remote, %agent, ?code, reason = %truncate_for_log(&msg), "refused batch");
            return refused(code, msg);
        }
        Err(e) => return refused(RefuseCode::Unavailable, e.to_string()),
    };
    if ing.verify_only {
        ing.metrics
            .events_verified
            .fetch_add(events.len() as u64, Relaxed);
        return Reply::Ack {
            epoch: header.epoch,
            stored_end: header.end_seq(),
        };
    }
    let ingested = now();
    let agent_hex = agent.to_hex();
    for (i, e) in events.iter_mut().enumerate() {
        e.event.id = ids::event_id(agent, header.epoch, Seq(header.first_seq.0 + i as u64));
        e.event.ingested = Some(ingested);
        e.agent.get_or_insert_with(Default::default).id = agent_hex.clone();
    }
    {
        let mut rx = ctx.order.subscribe();
        let (epoch, first) = (header.epoch, header.first_seq.0);
        let _ = tokio::time::timeout(
            REORDER_WAIT,
            rx.wait_for(|(e, end)| *e != epoch || *end >= first),
        )
        .await;
    }
    let (tx, rx) = oneshot::channel();
    let req = CommitReq {
        batch: CommitBatch {
            agent,
            epoch: header.epoch,
            first_seq: header.first_seq,
            prev_hash: header.prev_hash,
            hash,
            events,
        },
        reply: tx,
    };
    let writer = ing.writer.clone();
    // The channel is bounded: a full writer applies back-pressure here, off the async workers.
    if tokio::task::spawn_blocking(move || writer.send(req).is_err())
        .await
        .unwrap_or(true)
    {
        return refused(RefuseCode::Unavailable, "collector is shutting down");
    }
    let outcome = rx.await;
    if let Ok(Ok(CommitOutcome::Stored { stored_end } | CommitOutcome::Duplicate { stored_end })) =
        &outcome
    {
        let epoch = header.epoch;
        ctx.order.send_if_modified(|(e, end)| {
            if *e == epoch && stored_end.0 > *end {
                *end = stored_end.0;
                true
            } else {
                false
            }
        });
    }
    match outcome {
        Ok(Ok(CommitOutcome::Stored { stored_end }))
        | Ok(Ok(CommitOutcome::Duplicate { stored_end })) => Reply::Ack {
            epoch: header.epoch,
            stored_end,
        },
        Ok(Ok(CommitOutcome::Gap { expected })) => Reply::Resend {
            epoch: header.epoch,
            from: expected,
        },
        Ok(Ok(CommitOutcome::ChainBroken { .. })) => {
            warn_limited!(ing, remote = %ctx.remote, %agent, epoch = %header.epoch, first_seq = header.first_seq.0, "refused batch: previous-batch hash does not match the stored chain");
            refused(
                RefuseCode::ChainBroken,
                "previous-batch hash does not match the stored chain",
            )
        }
        Ok(Err(WriteError::Unavailable(msg))) => refused(RefuseCode::Unavailable, msg),
        Err(_) => refused(RefuseCode::Unavailable, "writer stopped"),
    }
}

async fn enroll_conn(conn: quinn::Connection, remote: SocketAddr, ing: Arc<Ingest>) {
    // One request, then the connection closes: nothing else is served before authentication.
    let res = tokio::time::timeout(Duration::from_secs(10), async {
        let (mut send, mut recv) = conn.accept_bi().await.ok()?;
        let answer = match read_frame(&mut recv).await {
            Ok((MsgType::Enroll, body)) => match wire::decode_body::<EnrollRequest>(MsgType::Enroll, &body) {
                Ok(req) => enroll(&ing, remote, req).await,
                Err(e) => refused(RefuseCode::BadRequest, e.to_string()),
            },
            Ok((ty, _)) => refused(RefuseCode::EnrollmentDenied, format!("{ty:?} needs an agent certificate; enroll first")),
            Err(e) => refused(RefuseCode::BadRequest, format!("bad frame: {e}")),
        };
        if let Reply::Refused { message, .. } = &answer {
            ing.metrics.enrollments_refused.fetch_add(1, Relaxed);
            warn_limited!(ing, %remote, reason = %truncate_for_log(message), "refused unauthenticated request");
        }
        let _ = reply(&mut send, &encode_reply(&answer)).await;
        let _ = tokio::time::timeout(Duration::from_secs(2), conn.closed()).await;
        Some(())
    })
    .await;
    if res.is_err() {
        warn_limited!(ing, %remote, "unauthenticated connection sent nothing in time");
    }
}

async fn enroll(ing: &Arc<Ingest>, remote: SocketAddr, req: EnrollRequest) -> Reply {
    let store = ing.store.clone();
    let ca = ing.ca.clone();
    let command_key = ing.command_key;
    let res = tokio::task::spawn_blocking(move || -> Result<Reply, String> {
        if VerifyingKey::from_bytes(&req.identity_key).is_err() {
            return Ok(refused(
                RefuseCode::BadRequest,
                "identity key is not a valid ed25519 public key",
            ));
        }
        let spki = vigie_net::spki_sha256(&req.tls_public_key);
        let now = now();
        if let Err(e) = store.consume_token(req.token_id, secret_hash(&req.token_secret), now) {
            return Ok(refused(
                RefuseCode::EnrollmentDenied,
                format!(
                    "enrollment token refused: {e}; create a new one with `vigie enroll create`"
                ),
            ));
        }
        let mut id = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut id);
        let agent = AgentId(id);
        let cert = ca
            .issue_agent(agent, &req.tls_public_key)
            .map_err(|e| e.to_string())?;
        let rec = AgentRecord {
            id: agent,
            hostname: truncate_for_log(&req.hostname).to_string(),
            machine_id: truncate_for_log(&req.machine_id).to_string(),
            identity_key: req.identity_key,
            tls_spki_sha256: spki,
            enrolled_at: now,
            last_seen: None,
            revoked: false,
            current_epoch: None,
            version: String::new(),
        };
        store.put_agent(&rec).map_err(|e| e.to_string())?;
        Ok(Reply::Enrolled {
            agent_id: agent,
            client_cert_der: cert,
            command_key,
        })
    })
    .await;
    match res {
        Ok(Ok(r)) => {
            if let Reply::Enrolled { agent_id, .. } = &r {
                ing.metrics.enrollments_total.fetch_add(1, Relaxed);
                tracing::info!(agent = %agent_id, %remote, "agent enrolled");
            }
            r
        }
        Ok(Err(e)) => refused(RefuseCode::Unavailable, e),
        Err(e) => refused(RefuseCode::Unavailable, e.to_string()),
    }
}

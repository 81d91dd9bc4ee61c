//! Syslog listener: UDP and TCP, RFC 3164 and RFC 5424 ([`crate::parse::syslog`]).
//!
//! - **UDP** (one message per datagram) cannot pause: when the pipeline is full the events
//!   are dropped and counted exactly ([`SourceCtx::try_send`]). Datagrams that arrive
//!   together are handed over together (up to 256).
//! - **TCP** pauses: a connection is not read while the pipeline is full, so the sender's
//!   kernel buffers fill and it slows down. Framing is detected per message (RFC 6587):
//!   octet counting (`LEN SP MSG`) when a frame starts with digits and a space, else
//!   newline-terminated (`\r\n` accepted). At most `max_connections` connections; an idle
//!   connection is closed after `idle_timeout`.
//! - Messages longer than `max_message_bytes` are cut (`event.truncated`); the rest of the
//!   frame is skipped without being buffered. Bytes that are not UTF-8 are replaced.
//!
//! Events: `Kind::Log`, module `syslog`, `log.syslog.*`, `log.level` from the severity,
//! `log.logger` from the app name, `source.ip`/`source.port` of the sender, labels
//! `sd.{id}.{param}` for RFC 5424 structured data, and `@timestamp` from the message (RFC
//! 3164 timestamps are in `timezone`) or the receive time. The message is the free-text
//! part. A message with no syslog structure is kept whole as the message, never dropped.
//!
//! Addresses: `udp` and `tcp` are each optional; when neither is set, both listen on
//! `0.0.0.0:5514`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use vigie_proto::event::{Endpoint, Event, Kind, Log};

use super::{SourceCtx, de_duration, de_size};
use crate::parse::auth::enrich_auth;
use crate::parse::syslog::{TimeCtx, parse_network};
use crate::parse::time::SourceTz;

/// Port used when no address is configured.
pub const DEFAULT_ADDR: &str = "0.0.0.0:5514";

/// `[syslog]` input.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyslogConfig {
    /// UDP address to listen on, e.g. `"127.0.0.1:5514"`.
    pub udp: Option<String>,
    /// TCP address to listen on.
    pub tcp: Option<String>,
    /// Longest message kept; longer ones are cut. Default `64KiB`.
    #[serde(deserialize_with = "de_size")]
    pub max_message_bytes: usize,
    /// Most TCP connections at once; more are refused. Default 256.
    pub max_connections: usize,
    /// A TCP connection silent for this long is closed. Default `5m`.
    #[serde(deserialize_with = "de_duration")]
    pub idle_timeout: Duration,
    /// Zone of RFC 3164 timestamps: `local` (default), `UTC`, `+02:00`, `Europe/Paris`.
    pub timezone: SourceTz,
    /// Turn sshd/sudo/su/login/PAM messages into authentication events. Default true.
    pub auth: bool,
}

impl Default for SyslogConfig {
    fn default() -> Self {
        SyslogConfig {
            udp: None,
            tcp: None,
            max_message_bytes: 64 << 10,
            max_connections: 256,
            idle_timeout: Duration::from_secs(300),
            timezone: SourceTz::Local,
            auth: true,
        }
    }
}

impl SyslogConfig {
    /// The UDP and TCP addresses to listen on, after defaults.
    pub fn listeners(&self) -> anyhow::Result<(Option<SocketAddr>, Option<SocketAddr>)> {
        let parse = |what: &str, s: &str| -> anyhow::Result<SocketAddr> {
            s.trim().parse().map_err(|_| anyhow::anyhow!("syslog.{what} = {s:?} is not an address; write IP:PORT, e.g. \"0.0.0.0:5514\" or \"[::]:5514\""))
        };
        match (&self.udp, &self.tcp) {
            (None, None) => {
                let d: SocketAddr = parse("udp", DEFAULT_ADDR)?;
                Ok((Some(d), Some(d)))
            }
            (u, t) => Ok((
                u.as_deref().map(|s| parse("udp", s)).transpose()?,
                t.as_deref().map(|s| parse("tcp", s)).transpose()?,
            )),
        }
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        self.listeners()?;
        if !(480..=(1 << 20)).contains(&self.max_message_bytes) {
            bail!(
                "syslog.max_message_bytes must be between 480 and 1MiB (RFC 5424 receivers accept at least 480)"
            );
        }
        if !(1..=65536).contains(&self.max_connections) {
            bail!("syslog.max_connections must be between 1 and 65536");
        }
        if self.idle_timeout < Duration::from_secs(1) {
            bail!("syslog.idle_timeout must be at least 1s");
        }
        Ok(())
    }
}

/// Binds the listeners, then serves until shutdown.
pub async fn run(cfg: SyslogConfig, ctx: SourceCtx) -> anyhow::Result<()> {
    let (udp, tcp) = bind(&cfg).await?;
    serve(cfg, ctx, udp, tcp).await
}

/// Opens the configured sockets (separate from [`serve`] so tests can use port 0).
async fn bind(cfg: &SyslogConfig) -> anyhow::Result<(Option<UdpSocket>, Option<TcpListener>)> {
    cfg.validate()?;
    let (udp_addr, tcp_addr) = cfg.listeners()?;
    let hint = "another process may be using the port, or a port below 1024 needs privileges";
    let udp = match udp_addr {
        Some(a) => Some(
            UdpSocket::bind(a)
                .await
                .with_context(|| format!("syslog: cannot listen on udp {a} ({hint})"))?,
        ),
        None => None,
    };
    let tcp = match tcp_addr {
        Some(a) => Some(
            TcpListener::bind(a)
                .await
                .with_context(|| format!("syslog: cannot listen on tcp {a} ({hint})"))?,
        ),
        None => None,
    };
    Ok((udp, tcp))
}

async fn serve(
    cfg: SyslogConfig,
    ctx: SourceCtx,
    udp: Option<UdpSocket>,
    tcp: Option<TcpListener>,
) -> anyhow::Result<()> {
    let cfg = Arc::new(cfg);
    let mut tasks = JoinSet::new();
    if let Some(sock) = udp {
        tracing::info!(source = %ctx.name, addr = %sock.local_addr()?, "syslog listening on udp");
        tasks.spawn(serve_udp(sock, cfg.clone(), ctx.clone()));
    }
    if let Some(listener) = tcp {
        tracing::info!(source = %ctx.name, addr = %listener.local_addr()?, "syslog listening on tcp");
        tasks.spawn(serve_tcp(listener, cfg.clone(), ctx.clone()));
    }
    while let Some(res) = tasks.join_next().await {
        res.context("syslog listener task failed")??;
    }
    Ok(())
}

/// Builds the event of one received message.
fn message_event(raw: &[u8], truncated: bool, peer: SocketAddr, tc: &TimeCtx, auth: bool) -> Event {
    let text = String::from_utf8_lossy(raw);
    let text = text.trim_end_matches(['\r', '\n', '\0']);
    let mut ev = Event::new(Kind::Log, super::now());
    ev.event.module = "syslog".into();
    let sender = Endpoint {
        ip: Some(peer.ip()),
        port: Some(peer.port()),
        address: String::new(),
    };
    ev.source = Some(sender.clone());
    match parse_network(text, tc) {
        Some(m) => {
            m.apply_to(&mut ev);
            ev.set_message(m.message);
        }
        None => {
            ev.log = Some(Log::default());
            ev.set_message(text.to_string());
        }
    }
    if truncated {
        ev.event.truncated = true;
    }
    if auth {
        enrich_auth(&mut ev);
        if ev.source.as_ref() != Some(&sender) {
            // An authentication line put its own peer (the SSH client) in `source`; the
            // sender stays visible as ECS `log.source.address`.
            ev.add_label("log.source.address", &peer.to_string());
        }
    }
    ev
}

fn time_ctx(cfg: &SyslogConfig) -> TimeCtx {
    TimeCtx {
        now: chrono::Utc::now(),
        tz: cfg.timezone,
    }
}

/// Datagrams handed over together at most.
const UDP_BATCH: usize = 256;

async fn serve_udp(sock: UdpSocket, cfg: Arc<SyslogConfig>, ctx: SourceCtx) -> anyhow::Result<()> {
    let mut buf = vec![0u8; 65536];
    loop {
        let first = tokio::select! {
            biased;
            _ = ctx.wait_shutdown() => return Ok(()),
            r = sock.recv_from(&mut buf) => r,
        };
        let tc = time_ctx(&cfg);
        let mut events = Vec::new();
        let mut next = Some(first);
        while let Some(r) = next.take() {
            match r {
                Ok((n, peer)) => {
                    let keep = n.min(cfg.max_message_bytes);
                    events.push(message_event(&buf[..keep], n > keep, peer, &tc, cfg.auth));
                }
                // ICMP errors from earlier sends and the like: nothing to do for a receiver.
                Err(e) => tracing::debug!(source = %ctx.name, error = %e, "udp receive error"),
            }
            if events.len() < UDP_BATCH {
                match sock.try_recv_from(&mut buf) {
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    r => next = Some(r),
                }
            }
        }
        if !events.is_empty() && !ctx.try_send(ctx.emit(events, None)) {
            return Ok(());
        }
    }
}

async fn serve_tcp(
    listener: TcpListener,
    cfg: Arc<SyslogConfig>,
    ctx: SourceCtx,
) -> anyhow::Result<()> {
    let limit = Arc::new(Semaphore::new(cfg.max_connections));
    let mut conns = JoinSet::new();
    let mut refused: u64 = 0;
    loop {
        let accepted = tokio::select! {
            biased;
            _ = ctx.wait_shutdown() => return Ok(()),
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            r = listener.accept() => r,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(source = %ctx.name, error = %e, "tcp accept failed");
                if !ctx.sleep(Duration::from_millis(100)).await {
                    return Ok(());
                }
                continue;
            }
        };
        match limit.clone().try_acquire_owned() {
            Ok(permit) => {
                let (cfg, ctx) = (cfg.clone(), ctx.clone());
                conns.spawn(async move {
                    let _permit = permit;
                    if let Err(e) = serve_conn(stream, peer, &cfg, &ctx).await {
                        tracing::debug!(source = %ctx.name, %peer, error = %e, "syslog tcp connection ended");
                    }
                });
            }
            Err(_) => {
                refused += 1;
                if refused.is_power_of_two() {
                    tracing::warn!(source = %ctx.name, %peer, refused, max_connections = cfg.max_connections, "too many syslog tcp connections; refusing");
                }
                drop(stream);
            }
        }
    }
}

async fn serve_conn(
    mut stream: TcpStream,
    peer: SocketAddr,
    cfg: &SyslogConfig,
    ctx: &SourceCtx,
) -> std::io::Result<()> {
    let mut framer = Framer::new(cfg.max_message_bytes);
    let mut buf = vec![0u8; 16 << 10];
    loop {
        let read = tokio::select! {
            biased;
            _ = ctx.wait_shutdown() => return Ok(()),
            r = tokio::time::timeout(cfg.idle_timeout, stream.read(&mut buf)) => r,
        };
        let n = match read {
            Ok(r) => r?,
            Err(_) => {
                tracing::debug!(source = %ctx.name, %peer, "idle syslog tcp connection closed");
                0
            }
        };
        if n > 0 {
            framer.push(&buf[..n]);
        }
        let tc = time_ctx(cfg);
        let mut events = Vec::new();
        while let Some(f) = framer.next_frame() {
            events.push(message_event(&f.bytes, f.truncated, peer, &tc, cfg.auth));
        }
        if n == 0
            && let Some(f) = framer.finish()
        {
            events.push(message_event(&f.bytes, f.truncated, peer, &tc, cfg.auth));
        }
        // Waits while the pipeline is full: the connection is not read meanwhile.
        if !events.is_empty() && !ctx.send(ctx.emit(events, None)).await {
            return Ok(());
        }
        if n == 0 {
            return Ok(());
        }
    }
}

/// One message cut out of a TCP stream.
#[derive(Debug, PartialEq, Eq)]
struct Frame {
    bytes: Vec<u8>,
    truncated: bool,
}

#[derive(Debug, PartialEq, Eq)]
enum Skip {
    None,
    /// Octet-counted frame longer than the maximum: this many bytes still to drop.
    Bytes(usize),
    /// Newline frame longer than the maximum: drop up to the next newline.
    Line,
}

/// RFC 6587 framing, octet counting or newline, detected per frame. Holds at most
/// `max + 16 KiB` bytes: frames are cut as soon as they reach the maximum.
#[derive(Debug)]
struct Framer {
    buf: Vec<u8>,
    start: usize,
    max: usize,
    skip: Skip,
}

/// Most digits in an octet count (a length up to 999 999 999).
const MAX_LEN_DIGITS: usize = 9;

impl Framer {
    fn new(max: usize) -> Framer {
        Framer {
            buf: Vec::new(),
            start: 0,
            max,
            skip: Skip::None,
        }
    }

    fn push(&mut self, data: &[u8]) {
        if self.start > 0 && self.start >= self.buf.len() / 2 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(data);
    }

    fn pending(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    fn next_frame(&mut self) -> Option<Frame> {
        match self.skip {
            Skip::Bytes(n) => {
                let k = n.min(self.pending().len());
                self.start += k;
                if k < n {
                    self.skip = Skip::Bytes(n - k);
                    return None;
                }
                self.skip = Skip::None;
            }
            Skip::Line => match self.pending().iter().position(|&b| b == b'\n') {
                Some(i) => {
                    self.start += i + 1;
                    self.skip = Skip::None;
                }
                None => {
                    self.start = self.buf.len();
                    return None;
                }
            },
            Skip::None => {}
        }
        // Blank lines between frames (trailers some senders add) carry nothing.
        let blanks = self
            .pending()
            .iter()
            .take_while(|&&b| matches!(b, b'\n' | b'\r' | b'\0'))
            .count();
        self.start += blanks;
        let p = self.pending();
        if p.is_empty() {
            return None;
        }
        if p[0].is_ascii_digit() {
            let digits = p
                .iter()
                .take(MAX_LEN_DIGITS + 1)
                .take_while(|b| b.is_ascii_digit())
                .count();
            match p.get(digits) {
                None if digits <= MAX_LEN_DIGITS => return None, // the count is still arriving
                Some(b' ') if digits <= MAX_LEN_DIGITS => {
                    let len: usize = std::str::from_utf8(&p[..digits]).ok()?.parse().ok()?;
                    return self.octet_frame(digits + 1, len);
                }
                _ => {} // not a count: a newline frame that starts with digits
            }
        }
        self.line_frame()
    }

    fn octet_frame(&mut self, header: usize, len: usize) -> Option<Frame> {
        let keep = len.min(self.max);
        let p = self.pending();
        if p.len() < header + keep {
            return None;
        }
        let bytes = p[header..header + keep].to_vec();
        self.start += header + keep;
        if keep < len {
            self.skip = Skip::Bytes(len - keep);
        }
        Some(Frame {
            bytes,
            truncated: keep < len,
        })
    }

    fn line_frame(&mut self) -> Option<Frame> {
        let p = self.pending();
        let window = &p[..p.len().min(self.max + 1)];
        match window.iter().position(|&b| b == b'\n') {
            Some(i) => {
                let line = &p[..i];
                let bytes = line.strip_suffix(b"\r").unwrap_or(line).to_vec();
                self.start += i + 1;
                Some(Frame {
                    bytes,
                    truncated: false,
                })
            }
            None if p.len() > self.max => {
                let bytes = p[..self.max].to_vec();
                self.start += self.max;
                self.skip = Skip::Line;
                Some(Frame {
                    bytes,
                    truncated: true,
                })
            }
            None => None,
        }
    }

    /// At the end of the stream: what is left, as a last frame.
    fn finish(&mut self) -> Option<Frame> {
        if self.skip != Skip::None {
            return None;
        }
        let p = self.pending();
        let p = p.strip_suffix(b"\r").unwrap_or(p);
        if p.is_empty() {
            return None;
        }
        let f = Frame {
            bytes: p.to_vec(),
            truncated: false,
        };
        self.start = self.buf.len();
        Some(f)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{collect_until, ctx};
    use super::*;
    use std::collections::BTreeMap;
    use std::sync::atomic::Ordering;
    use tokio::io::AsyncWriteExt;
    use vigie_proto::{Outcome, Severity, Timestamp};

    const WAIT: Duration = Duration::from_secs(10);

    fn local_cfg() -> SyslogConfig {
        SyslogConfig {
            udp: Some("127.0.0.1:0".into()),
            tcp: Some("127.0.0.1:0".into()),
            timezone: SourceTz::UTC,
            ..Default::default()
        }
    }

    /// Starts the source on ephemeral ports; returns (udp addr, tcp addr).
    async fn start(
        cfg: SyslogConfig,
        cap: usize,
    ) -> (
        SocketAddr,
        SocketAddr,
        tokio::sync::mpsc::Receiver<super::super::Emit>,
        tokio::sync::watch::Sender<bool>,
        Arc<std::sync::atomic::AtomicU64>,
        tokio::task::JoinHandle<anyhow::Result<()>>,
    ) {
        let (udp, tcp) = bind(&cfg).await.expect("bind");
        let (udp, tcp) = (udp.expect("udp"), tcp.expect("tcp"));
        let (ua, ta) = (
            udp.local_addr().expect("addr"),
            tcp.local_addr().expect("addr"),
        );
        let (c, rx, stop, drops) = ctx("syslog", cap, BTreeMap::new());
        let task = tokio::spawn(serve(cfg, c, Some(udp), Some(tcp)));
        (ua, ta, rx, stop, drops, task)
    }

    #[tokio::test]
    async fn udp_messages_of_both_rfcs() {
        let (ua, _, mut rx, stop, _, task) = start(local_cfg(), 64).await;
        let client = UdpSocket::bind("127.0.0.1:0").await.expect("client");
        let me = client.local_addr().expect("addr");
        client.send_to(b"<38>Mar  1 10:00:00 web1 sshd[42]: Accepted publickey for bob from 10.0.0.9 port 50122 ssh2: ED25519 SHA256:x\n", ua).await.expect("send");
        client
            .send_to(
                br#"<165>1 2026-03-01T10:00:00.5+01:00 host2 app 77 ID9 [meta@1 k="v"] hello 5424"#,
                ua,
            )
            .await
            .expect("send");
        client
            .send_to(b"no structure at all \xff", ua)
            .await
            .expect("send");
        let (mut store, mut events) = (BTreeMap::new(), Vec::new());
        collect_until(&mut rx, &mut store, &mut events, WAIT, |e, _| e.len() >= 3).await;

        let e = &events[0];
        assert_eq!(
            (e.kind(), e.event.action.as_str(), e.event.outcome),
            (Kind::Authentication, "ssh_login", Some(Outcome::Success))
        );
        assert_eq!(e.event.module, "syslog");
        assert_eq!(e.timestamp.to_rfc3339().get(4..), Some("-03-01T10:00:00Z"));
        // The SSH client is the event's source; the syslog sender is kept as a label.
        let client = Some(("10.0.0.9".parse().expect("ip"), 50122));
        assert_eq!(
            e.source.as_ref().and_then(|s| Some((s.ip?, s.port?))),
            client
        );
        assert_eq!(e.labels.get("log.source.address"), Some(&me.to_string()));
        assert_eq!(e.user.as_ref().map(|u| u.name.as_str()), Some("bob"));
        let log = e.log.as_ref().expect("log");
        assert_eq!(log.level, Severity::Info);
        let sl = log.syslog.as_ref().expect("syslog");
        assert_eq!(
            (
                sl.facility,
                sl.priority,
                sl.hostname.as_str(),
                sl.appname.as_str(),
                sl.procid.as_str(),
                sl.version.as_str()
            ),
            (Some(4), Some(38), "web1", "sshd", "42", "rfc3164")
        );
        assert_eq!(
            e.message,
            "Accepted publickey for bob from 10.0.0.9 port 50122 ssh2: ED25519 SHA256:x"
        );

        let e = &events[1];
        assert_eq!(
            e.timestamp,
            Timestamp::parse_rfc3339("2026-03-01T09:00:00.5Z").expect("ts")
        );
        let sl = e
            .log
            .as_ref()
            .and_then(|l| l.syslog.as_ref())
            .expect("syslog");
        assert_eq!((sl.msgid.as_str(), sl.version.as_str()), ("ID9", "rfc5424"));
        assert_eq!(e.labels.get("sd.meta@1.k").map(String::as_str), Some("v"));
        assert_eq!(e.severity(), Severity::Notice);
        assert_eq!(e.message, "hello 5424");

        let e = &events[2];
        assert_eq!(e.kind(), Kind::Log);
        let sender = Some((me.ip(), me.port()));
        assert!(e.labels.is_empty());
        assert_eq!(
            e.source.as_ref().and_then(|s| Some((s.ip?, s.port?))),
            sender
        );
        assert_eq!(e.message, "no structure at all \u{fffd}");
        stop.send(true).expect("stop");
        tokio::time::timeout(WAIT, task)
            .await
            .expect("stops")
            .expect("join")
            .expect("ok");
    }

    #[tokio::test]
    async fn udp_drops_are_counted_exactly() {
        // A pipeline that does not read: capacity 1, so the second emit on is dropped.
        let (ua, _, mut rx, stop, drops, task) = start(local_cfg(), 1).await;
        let client = UdpSocket::bind("127.0.0.1:0").await.expect("client");
        let total = 300u64;
        for i in 0..total {
            client
                .send_to(format!("<13>msg {i}").as_bytes(), ua)
                .await
                .expect("send");
            if i % 10 == 0 {
                // Let the source read, so the socket buffer never overflows.
                tokio::task::yield_now().await;
            }
        }
        let deadline = tokio::time::Instant::now() + WAIT;
        while drops.load(Ordering::Relaxed) == 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "nothing was dropped"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Every datagram is either handed over or counted as dropped, exactly.
        let mut received = 0u64;
        while received + drops.load(Ordering::Relaxed) != total {
            assert!(
                tokio::time::Instant::now() < deadline,
                "received {received} + dropped {} != {total}",
                drops.load(Ordering::Relaxed)
            );
            match rx.try_recv() {
                Ok(e) => received += e.events.len() as u64,
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
        stop.send(true).expect("stop");
        tokio::time::timeout(WAIT, task)
            .await
            .expect("stops")
            .expect("join")
            .expect("ok");
    }

    #[tokio::test]
    async fn tcp_framings_and_pausing() {
        let mut cfg = local_cfg();
        cfg.max_message_bytes = 1000;
        let (_, ta, mut rx, stop, drops, task) = start(cfg, 1).await;
        let mut s = TcpStream::connect(ta).await.expect("connect");
        let framed = |m: &str| format!("{} {m}", m.len());
        let long = "x".repeat(5000);
        let mut wire = String::new();
        wire.push_str(&framed("<13>Mar  1 10:00:00 h p: octet one"));
        wire.push_str(&framed("<13>1 - h app - - - octet\nwith newline"));
        wire.push_str("<13>Mar  1 10:00:00 h p: newline framed\r\n");
        wire.push_str("2026-03-01 starts with a date\n");
        wire.push_str(&framed(&format!("<13>{long}")));
        wire.push_str(&format!("<13>{long}\n"));
        wire.push_str("<13>last without newline");
        s.write_all(wire.as_bytes()).await.expect("write");
        s.shutdown().await.expect("shutdown write");
        let (mut store, mut events) = (BTreeMap::new(), Vec::new());
        collect_until(&mut rx, &mut store, &mut events, WAIT, |e, _| e.len() >= 7).await;
        let m: Vec<&str> = events.iter().map(|e| e.message.as_str()).collect();
        assert_eq!(
            &m[..4],
            &[
                "octet one",
                "octet\nwith newline",
                "newline framed",
                "2026-03-01 starts with a date"
            ]
        );
        assert_eq!((m[4].len(), events[4].event.truncated), (996, true));
        assert_eq!((m[5].len(), events[5].event.truncated), (996, true));
        assert_eq!(m[6], "last without newline");
        // TCP waits instead of dropping, even with a channel of one.
        assert_eq!(drops.load(Ordering::Relaxed), 0);
        stop.send(true).expect("stop");
        tokio::time::timeout(WAIT, task)
            .await
            .expect("stops")
            .expect("join")
            .expect("ok");
    }

    #[tokio::test]
    async fn tcp_backpressure_loses_nothing() {
        let (_, ta, mut rx, stop, drops, task) = start(local_cfg(), 1).await;
        let n = 20_000;
        let writer = tokio::spawn(async move {
            let mut s = TcpStream::connect(ta).await.expect("connect");
            let mut data = String::new();
            for i in 0..n {
                data.push_str(&format!("<13>msg {i}\n"));
            }
            s.write_all(data.as_bytes()).await.expect("write");
        });
        // Do not read at first, so the pipeline is full and the connection waits.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (mut store, mut events) = (BTreeMap::new(), Vec::new());
        collect_until(
            &mut rx,
            &mut store,
            &mut events,
            Duration::from_secs(30),
            |e, _| e.len() >= n,
        )
        .await;
        writer.await.expect("writer");
        for (i, e) in events.iter().enumerate() {
            assert_eq!(e.message, format!("msg {i}"));
        }
        assert_eq!(drops.load(Ordering::Relaxed), 0);
        stop.send(true).expect("stop");
        tokio::time::timeout(WAIT, task)
            .await
            .expect("stops")
            .expect("join")
            .expect("ok");
    }

    #[tokio::test]
    async fn tcp_connection_limit_and_idle_timeout() {
        let mut cfg = local_cfg();
        cfg.max_connections = 1;
        cfg.idle_timeout = Duration::from_secs(1);
        let (_, ta, mut rx, stop, _, task) = start(cfg, 16).await;
        let mut a = TcpStream::connect(ta).await.expect("connect a");
        a.write_all(b"<13>from a\n").await.expect("write");
        let (mut store, mut events) = (BTreeMap::new(), Vec::new());
        collect_until(&mut rx, &mut store, &mut events, WAIT, |e, _| !e.is_empty()).await;
        // A second connection is refused (closed at once).
        let mut b = TcpStream::connect(ta).await.expect("connect b");
        let mut one = [0u8; 1];
        let r = tokio::time::timeout(WAIT, b.read(&mut one))
            .await
            .expect("closed in time");
        assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
        // The idle connection is closed after the timeout, which frees the slot.
        let r = tokio::time::timeout(WAIT, a.read(&mut one))
            .await
            .expect("idle close in time");
        assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
        let mut c = TcpStream::connect(ta).await.expect("connect c");
        c.write_all(b"<13>from c\n").await.expect("write");
        collect_until(&mut rx, &mut store, &mut events, WAIT, |e, _| e.len() >= 2).await;
        assert_eq!(events[1].message, "from c");
        stop.send(true).expect("stop");
        tokio::time::timeout(WAIT, task)
            .await
            .expect("stops")
            .expect("join")
            .expect("ok");
    }

    #[test]
    fn framer_cuts_frames_split_anywhere() {
        let wire = b"11 <13>octet 1\n<13>line 2\r\n\n00005 hello2026-03 x\n";
        let want = vec!["<13>octet 1", "<13>line 2", "hello", "2026-03 x"];
        // Every split point, byte by byte.
        for step in 1..=wire.len() {
            let mut f = Framer::new(64);
            let mut got = Vec::new();
            for chunk in wire.chunks(step) {
                f.push(chunk);
                while let Some(fr) = f.next_frame() {
                    got.push(String::from_utf8(fr.bytes).expect("utf8"));
                }
            }
            assert_eq!(got, want, "step {step}");
            assert_eq!(f.finish(), None);
        }
    }

    #[test]
    fn framer_bounds_memory() {
        let mut f = Framer::new(100);
        f.push(b"999999999 ");
        for _ in 0..100 {
            f.push(&[b'a'; 1000]);
            while f.next_frame().is_some() {}
            assert!(
                f.buf.len() <= 2 * 1000 + 110,
                "buffer grew to {}",
                f.buf.len()
            );
        }
        let mut f = Framer::new(100);
        for _ in 0..100 {
            f.push(&[b'b'; 1000]);
            while let Some(fr) = f.next_frame() {
                assert!(fr.truncated);
            }
            assert!(
                f.buf.len() <= 2 * 1000 + 110,
                "buffer grew to {}",
                f.buf.len()
            );
        }
        f.push(b"tail\nnext\n");
        assert_eq!(f.next_frame().map(|fr| fr.bytes), Some(b"next".to_vec()));
        // A count too long to be one is a newline frame.
        let mut f = Framer::new(100);
        f.push(b"12345678901 x\n");
        assert_eq!(
            f.next_frame().map(|fr| fr.bytes),
            Some(b"12345678901 x".to_vec())
        );
    }

    #[test]
    fn config() {
        let c = SyslogConfig::default();
        let (u, t) = c.listeners().expect("defaults");
        assert_eq!(
            (u.map(|a| a.to_string()), t.map(|a| a.to_string())),
            (Some(DEFAULT_ADDR.into()), Some(DEFAULT_ADDR.into()))
        );
        let c: SyslogConfig =
            toml::from_str("udp = \"127.0.0.1:5514\"\ntimezone = \"+02:00\"").expect("toml");
        let (u, t) = c.listeners().expect("udp only");
        assert_eq!((u.map(|a| a.port()), t), (Some(5514), None));
        let c: SyslogConfig = toml::from_str("tcp = \"localhost:514\"").expect("toml");
        assert!(
            c.validate()
                .expect_err("not an address")
                .to_string()
                .contains("IP:PORT")
        );
        assert!(toml::from_str::<SyslogConfig>("port = 514").is_err());
    }
}

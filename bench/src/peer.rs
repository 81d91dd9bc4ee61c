//! The peer: rsyslog (`imfile` → `omfwd` over TCP) as a separate process with its
//! own configuration and work directory (never the system service), and the TCP sink
//! on loopback that counts what it forwards.

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::child::Proc;

/// Counts bytes and newline-terminated records received on 127.0.0.1, any number of connections.
pub struct TcpSink {
    pub addr: SocketAddr,
    bytes: Arc<AtomicU64>,
    lines: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    accept: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for TcpSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TcpSink({})", self.addr)
    }
}

impl TcpSink {
    pub fn start() -> Result<TcpSink> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let bytes = Arc::new(AtomicU64::new(0));
        let lines = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (b, l, s) = (bytes.clone(), lines.clone(), stop.clone());
        let accept = std::thread::Builder::new()
            .name("bench-sink".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if s.load(Relaxed) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let (b, l, s) = (b.clone(), l.clone(), s.clone());
                    let _ = std::thread::Builder::new()
                        .name("bench-sink-conn".into())
                        .spawn(move || read_conn(conn, &b, &l, &s));
                }
            })?;
        Ok(TcpSink {
            addr,
            bytes,
            lines,
            stop,
            accept: Some(accept),
        })
    }

    pub fn bytes(&self) -> u64 {
        self.bytes.load(Relaxed)
    }

    pub fn lines(&self) -> u64 {
        self.lines.load(Relaxed)
    }
}

fn read_conn(mut conn: TcpStream, bytes: &AtomicU64, lines: &AtomicU64, stop: &AtomicBool) {
    let _ = conn.set_read_timeout(Some(Duration::from_millis(200)));
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        match conn.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                bytes.fetch_add(n as u64, Relaxed);
                let nl = buf[..n].iter().filter(|&&c| c == b'\n').count();
                lines.fetch_add(nl as u64, Relaxed);
            }
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                if stop.load(Relaxed) {
                    return;
                }
            }
            Err(_) => return,
        }
    }
}

impl Drop for TcpSink {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        // Wake the accept loop.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

/// `rsyslogd`, from `explicit` or the usual places; installs nothing.
pub fn rsyslogd(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    ["/usr/sbin/rsyslogd", "/sbin/rsyslogd", "/usr/local/sbin/rsyslogd"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .context("rsyslogd not found: install the Debian package `rsyslog` (apt-get install rsyslog), pass --rsyslogd, or --no-peer")
}

/// `rsyslogd -v`'s first line.
pub fn rsyslog_version(rsyslogd: &Path) -> String {
    std::process::Command::new(rsyslogd)
        .arg("-v")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout).lines().next().map(|s| {
                s.split(" compiled")
                    .next()
                    .unwrap_or(s)
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
            })
        })
        .unwrap_or_else(|| "rsyslogd (version unknown)".into())
}

/// Starts rsyslog in the foreground with its own configuration in `workdir`: `imfile`
/// (inotify mode) follows `file` from its beginning and `omfwd` forwards every line over
/// TCP to `sink` in the standard forwarding format (`RSYSLOG_ForwardFormat`, one line
/// per message). Nothing else is loaded: no `/dev/log`, no kernel log, no file outputs.
pub fn spawn_rsyslog(
    rsyslogd: &Path,
    workdir: &Path,
    file: &Path,
    sink: SocketAddr,
) -> Result<Proc> {
    if !sink.ip().is_loopback() {
        bail!("the rsyslog peer only forwards to loopback");
    }
    let state = workdir.join("state");
    std::fs::create_dir_all(&state)?;
    let conf = workdir.join("rsyslog.conf");
    let text = format!(
        r#"# vigie-bench peer: imfile -> omfwd (TCP), nothing else.
global(workDirectory="{state}" maxMessageSize="64k")
module(load="imfile" mode="inotify")
input(type="imfile" file="{file}" tag="bench:" severity="info" facility="local0" ruleset="fwd")
ruleset(name="fwd") {{
  action(type="omfwd" target="127.0.0.1" port="{port}" protocol="tcp" template="RSYSLOG_ForwardFormat")
}}
"#,
        state = state.display(),
        file = file.display(),
        port = sink.port(),
    );
    std::fs::write(&conf, text)?;
    let pid = workdir.join("rsyslogd.pid");
    let args = [
        "-n".to_string(),
        "-f".to_string(),
        conf.display().to_string(),
        "-i".to_string(),
        pid.display().to_string(),
    ];
    Proc::spawn("rsyslogd", rsyslogd, &args, &workdir.join("rsyslogd.log"))
}

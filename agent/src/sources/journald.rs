//! Reads the systemd journal through `journalctl`.
//!
//! The source runs, as a child process (killed when the source stops):
//!
//! ```text
//! journalctl -o json -f -m -a -q --no-pager --no-tail [--directory DIR] [--after-cursor C] [-u UNIT]...
//! ```
//!
//! - `-m` (merge) is needed: without it `-f` only shows the newest boot, which would skip
//!   the end of the previous boot after a restart from a cursor, and shows nothing from a
//!   journal whose entries have no boot id (journals written by `systemd-journal-remote`).
//! - `--no-tail` is needed: with `-f`, journalctl otherwise shows only the last 10 entries
//!   after the cursor.
//! - `-a` keeps fields longer than 4096 bytes (they would be `null`).
//!
//! Position: the checkpoint (key = the source name, plus `:DIR` with `directory`) is the
//! `__CURSOR` of the last entry of each emit. The first start without a checkpoint follows
//! `read_from`: `"tail"` (default) records the journal's current end cursor first (an emit
//! with no events), so entries written between that first start and a restart are not
//! skipped; `"head"` reads the whole journal. A stored cursor journalctl refuses is logged
//! and replaced by `read_from`.
//!
//! Each JSON line becomes a `Kind::Log` event, module `journald`: `MESSAGE` (a string, an
//! array of bytes, decoded lossily, or `null`) as `message`, `__REALTIME_TIMESTAMP` (µs) as
//! `@timestamp`, `PRIORITY` as `log.level`, `SYSLOG_IDENTIFIER` (else `_COMM`) as
//! `log.logger` and `log.syslog.appname`, `SYSLOG_FACILITY`, `SYSLOG_PID`/`_PID` and
//! `_HOSTNAME` into `log.syslog`, `_PID`/`_COMM`/`_EXE`/`_CMDLINE`/`_UID` into `process.*`,
//! and labels `systemd.unit`, `systemd.user_unit`, `journald.transport`. Lines longer than
//! `max_line_bytes` are skipped and counted in a warning. When journalctl exits it is
//! started again after a backoff (1 s doubling up to `restart_backoff_max`); a missing
//! journalctl stops the source with an error that says how to fix it.

use std::borrow::Cow;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;
use serde_json::{Map, Value};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::Command;
use vigie_proto::event::{
    Event, Kind, Log, Process, Severity, Syslog, Timestamp, UserRef, truncate_for_log,
};

use super::{Checkpoint, SourceCtx, de_duration, de_size};
use crate::parse::auth::enrich_auth;

/// Where the first start (without a checkpoint) begins.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JournalStart {
    /// The oldest entry in the journal.
    Head,
    /// Only entries written from now on.
    #[default]
    Tail,
}

/// `[journald]` input.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JournaldConfig {
    /// Read journal files from this directory instead of the system journal.
    pub directory: Option<PathBuf>,
    /// First start: `"tail"` (default) or `"head"`.
    pub read_from: JournalStart,
    /// The journalctl binary. Default `journalctl` (found through `PATH`).
    pub journalctl: PathBuf,
    /// Only these units (`-u`); empty: everything.
    pub units: Vec<String>,
    /// Longest JSON line read from journalctl; longer entries are skipped. Default `1MiB`.
    #[serde(deserialize_with = "de_size")]
    pub max_line_bytes: usize,
    /// Longest wait before journalctl is started again. Default `30s`.
    #[serde(deserialize_with = "de_duration")]
    pub restart_backoff_max: Duration,
    /// Turn sshd/sudo/su/login/PAM lines into authentication events. Default true.
    pub auth: bool,
}

impl Default for JournaldConfig {
    fn default() -> Self {
        JournaldConfig {
            directory: None,
            read_from: JournalStart::Tail,
            journalctl: PathBuf::from("journalctl"),
            units: Vec::new(),
            max_line_bytes: 1 << 20,
            restart_backoff_max: Duration::from_secs(30),
            auth: true,
        }
    }
}

impl JournaldConfig {
    pub fn validate(&self) -> anyhow::Result<()> {
        if !(4096..=(16 << 20)).contains(&self.max_line_bytes) {
            bail!("journald.max_line_bytes must be between 4KiB and 16MiB");
        }
        if self.restart_backoff_max < Duration::from_secs(1) {
            bail!("journald.restart_backoff_max must be at least 1s");
        }
        if let Some(d) = &self.directory
            && !d.is_absolute()
        {
            bail!(
                "journald.directory = {:?} is relative; write an absolute path such as /var/log/journal",
                d
            );
        }
        if self
            .units
            .iter()
            .any(|u| u.is_empty() || u.starts_with('-'))
        {
            bail!("journald.units: unit names must be non-empty and must not start with '-'");
        }
        Ok(())
    }

    fn checkpoint_key(&self, source: &str) -> String {
        match &self.directory {
            Some(d) => format!("{source}:{}", d.display()),
            None => source.to_string(),
        }
    }
}

/// Runs the source until shutdown.
pub async fn run(cfg: JournaldConfig, ctx: SourceCtx) -> anyhow::Result<()> {
    cfg.validate()?;
    let key = cfg.checkpoint_key(&ctx.name);
    let mut cursor = ctx
        .checkpoint(&key)
        .filter(|c| !c.is_empty())
        .map(str::to_string);
    let mut backoff = Duration::from_secs(1);
    loop {
        if ctx.is_shutdown() {
            return Ok(());
        }
        if cursor.is_none() && cfg.read_from == JournalStart::Tail {
            match tail_cursor(&cfg).await {
                Ok(Some(c)) => {
                    if !ctx
                        .send(ctx.emit(
                            Vec::new(),
                            Some(Checkpoint {
                                key: key.clone(),
                                value: c.clone(),
                            }),
                        ))
                        .await
                    {
                        return Ok(());
                    }
                    cursor = Some(c);
                }
                // An empty journal: everything that comes is new.
                Ok(None) => {}
                Err(e) => {
                    missing_journalctl(&cfg, &e)?;
                    tracing::warn!(source = %ctx.name, error = %format!("{e:#}"), "cannot find the end of the journal; retrying");
                    if !ctx.sleep(backoff).await {
                        return Ok(());
                    }
                    backoff = (backoff * 2).min(cfg.restart_backoff_max);
                    continue;
                }
            }
        }
        match follow(&cfg, &ctx, &key, &mut cursor).await {
            Ok(Followed::Stopped) => return Ok(()),
            Ok(Followed::Exited {
                lines,
                status,
                stderr,
            }) => {
                if lines > 0 {
                    backoff = Duration::from_secs(1);
                }
                let refused_cursor = lines == 0 && !status.success() && stderr.contains("cursor");
                tracing::warn!(source = %ctx.name, %status, stderr = %truncate_for_log(stderr.trim()), "journalctl exited; restarting it");
                if refused_cursor {
                    tracing::warn!(source = %ctx.name, cursor = %truncate_for_log(cursor.as_deref().unwrap_or("")), read_from = ?cfg.read_from, "journalctl refused the stored cursor; starting from read_from instead");
                    cursor = None;
                    if cfg.read_from == JournalStart::Head {
                        // Forget the bad cursor now, so a crash does not bring it back.
                        ctx.send(ctx.emit(
                            Vec::new(),
                            Some(Checkpoint {
                                key: key.clone(),
                                value: String::new(),
                            }),
                        ))
                        .await;
                    }
                    continue;
                }
            }
            Err(e) => {
                missing_journalctl(&cfg, &e)?;
                tracing::warn!(source = %ctx.name, error = %format!("{e:#}"), "journalctl failed; restarting it");
            }
        }
        if !ctx.sleep(backoff).await {
            return Ok(());
        }
        backoff = (backoff * 2).min(cfg.restart_backoff_max);
    }
}

/// Turns "no such file" on spawn into the error that stops the source.
fn missing_journalctl(cfg: &JournaldConfig, e: &anyhow::Error) -> anyhow::Result<()> {
    let not_found = e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::NotFound)
    });
    if not_found {
        bail!(
            "journald source: cannot run {:?}: not found; install systemd's journalctl (Debian: apt install systemd) or set journalctl = \"/path/to/journalctl\", or remove the [journald] section",
            cfg.journalctl
        );
    }
    Ok(())
}

fn base_command(cfg: &JournaldConfig) -> Command {
    let mut cmd = Command::new(&cfg.journalctl);
    cmd.args(["-m", "--no-pager"]);
    if let Some(d) = &cfg.directory {
        cmd.arg("--directory").arg(d);
    }
    cmd.stdin(Stdio::null()).kill_on_drop(true);
    cmd
}

/// The cursor of the journal's last entry; `None` for an empty journal.
async fn tail_cursor(cfg: &JournaldConfig) -> anyhow::Result<Option<String>> {
    let mut cmd = base_command(cfg);
    cmd.args(["-n", "0", "--show-cursor"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = tokio::time::timeout(Duration::from_secs(30), cmd.output())
        .await
        .context("journalctl -n 0 --show-cursor did not finish within 30s")?
        .with_context(|| format!("cannot run {}", cfg.journalctl.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if let Some(c) = stdout.lines().find_map(|l| l.strip_prefix("-- cursor: ")) {
        return Ok(Some(c.trim().to_string()));
    }
    // An empty journal (no entries, or no files yet) exits with 1 and says so.
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stdout.contains("-- No entries --") || stderr.contains("No journal files were found") {
        return Ok(None);
    }
    if !out.status.success() {
        bail!(
            "journalctl exited with {}: {}",
            out.status,
            truncate_for_log(String::from_utf8_lossy(&out.stderr).trim())
        );
    }
    Ok(None)
}

enum Followed {
    Stopped,
    Exited {
        lines: u64,
        status: std::process::ExitStatus,
        stderr: String,
    },
}

/// Entries per emit at most.
const EMIT_EVENTS: usize = 500;
/// Bytes of journalctl's stderr kept for the log.
const STDERR_KEEP: usize = 4096;

async fn follow(
    cfg: &JournaldConfig,
    ctx: &SourceCtx,
    key: &str,
    cursor: &mut Option<String>,
) -> anyhow::Result<Followed> {
    let mut cmd = base_command(cfg);
    cmd.args(["-o", "json", "-f", "-a", "-q", "--no-tail"]);
    if let Some(c) = cursor.as_deref() {
        cmd.arg(format!("--after-cursor={c}"));
    }
    for u in &cfg.units {
        cmd.arg(format!("--unit={u}"));
    }
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot run {}", cfg.journalctl.display()))?;
    let stdout = child.stdout.take().context("journalctl has no stdout")?;
    let stderr = child.stderr.take().context("journalctl has no stderr")?;
    let stderr_task = tokio::spawn(async move {
        let mut kept = Vec::new();
        let mut buf = [0u8; 1024];
        let mut r = stderr;
        while let Ok(n) = r.read(&mut buf).await {
            if n == 0 {
                break;
            }
            let room = STDERR_KEEP.saturating_sub(kept.len());
            kept.extend_from_slice(&buf[..n.min(room)]);
        }
        String::from_utf8_lossy(&kept).into_owned()
    });
    tracing::debug!(source = %ctx.name, after_cursor = cursor.is_some(), "journalctl started");

    let mut reader = BufReader::with_capacity(64 << 10, stdout);
    let mut line = Vec::new();
    let mut events = Vec::new();
    let mut last_cursor: Option<String> = None;
    let (mut lines, mut skipped_long, mut bad_json) = (0u64, 0u64, 0u64);
    loop {
        let r = tokio::select! {
            biased;
            _ = ctx.wait_shutdown() => return Ok(Followed::Stopped),
            r = read_line_capped(&mut reader, &mut line, cfg.max_line_bytes) => r,
        };
        match r.context("reading journalctl output")? {
            ReadLine::Eof => break,
            ReadLine::TooLong => {
                skipped_long += 1;
                if skipped_long.is_power_of_two() {
                    tracing::warn!(source = %ctx.name, skipped = skipped_long, max_line_bytes = cfg.max_line_bytes, "journal entry longer than max_line_bytes skipped");
                }
            }
            ReadLine::Line => {
                lines += 1;
                match serde_json::from_slice::<Map<String, Value>>(&line) {
                    Ok(entry) => {
                        let (ev, c) = entry_event(&entry, cfg.auth);
                        events.push(ev);
                        if c.is_some() {
                            last_cursor = c;
                        }
                    }
                    Err(e) => {
                        bad_json += 1;
                        if bad_json.is_power_of_two() {
                            tracing::warn!(source = %ctx.name, error = %e, count = bad_json, "journalctl printed a line that is not JSON; skipped");
                        }
                    }
                }
            }
        }
        if !events.is_empty() && (events.len() >= EMIT_EVENTS || reader.buffer().is_empty()) {
            let checkpoint = last_cursor.take().map(|c| Checkpoint {
                key: key.to_string(),
                value: c,
            });
            let new_cursor = checkpoint.as_ref().map(|c| c.value.clone());
            if !ctx
                .send(ctx.emit(std::mem::take(&mut events), checkpoint))
                .await
            {
                return Ok(Followed::Stopped);
            }
            if new_cursor.is_some() {
                *cursor = new_cursor;
            }
        }
    }
    if !events.is_empty() {
        let checkpoint = last_cursor.take().map(|c| Checkpoint {
            key: key.to_string(),
            value: c,
        });
        let new_cursor = checkpoint.as_ref().map(|c| c.value.clone());
        if !ctx.send(ctx.emit(events, checkpoint)).await {
            return Ok(Followed::Stopped);
        }
        if new_cursor.is_some() {
            *cursor = new_cursor;
        }
    }
    let status = child.wait().await.context("waiting for journalctl")?;
    let stderr = tokio::time::timeout(Duration::from_secs(5), stderr_task)
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    Ok(Followed::Exited {
        lines,
        status,
        stderr,
    })
}

#[derive(Debug, PartialEq, Eq)]
enum ReadLine {
    Line,
    TooLong,
    Eof,
}

/// Reads one `\n`-terminated line into `out` (without the newline), never holding more than
/// `max` bytes: a longer line is consumed and reported as [`ReadLine::TooLong`].
async fn read_line_capped<R: AsyncBufRead + Unpin>(
    r: &mut R,
    out: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<ReadLine> {
    out.clear();
    let mut too_long = false;
    loop {
        let buf = r.fill_buf().await?;
        if buf.is_empty() {
            return Ok(if too_long {
                ReadLine::TooLong
            } else if out.is_empty() {
                ReadLine::Eof
            } else {
                ReadLine::Line
            });
        }
        let (take, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (i, true),
            None => (buf.len(), false),
        };
        if !too_long {
            if out.len() + take > max {
                too_long = true;
                out.clear();
            } else {
                out.extend_from_slice(&buf[..take]);
            }
        }
        r.consume(if done { take + 1 } else { take });
        if done {
            return Ok(if too_long {
                ReadLine::TooLong
            } else {
                ReadLine::Line
            });
        }
    }
}

/// A journal field as text: strings as they are, byte arrays lossily, several values: the first.
fn field<'a>(entry: &'a Map<String, Value>, name: &str) -> Option<Cow<'a, str>> {
    fn text(v: &Value) -> Option<Cow<'_, str>> {
        match v {
            Value::String(s) => Some(Cow::Borrowed(s.as_str())),
            Value::Array(items) if items.iter().all(Value::is_u64) => {
                let bytes: Vec<u8> = items
                    .iter()
                    .filter_map(Value::as_u64)
                    .map(|b| b.min(255) as u8)
                    .collect();
                Some(Cow::Owned(String::from_utf8_lossy(&bytes).into_owned()))
            }
            Value::Array(items) => items.first().and_then(text),
            _ => None,
        }
    }
    entry.get(name).and_then(text)
}

/// Longest process/host field kept from an entry.
const MAX_FIELD: usize = 4096;

fn capped(s: Cow<'_, str>) -> String {
    let mut s = s.into_owned();
    if s.len() > MAX_FIELD {
        let mut cut = MAX_FIELD;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

/// One journal entry as an event, and its cursor.
fn entry_event(entry: &Map<String, Value>, auth: bool) -> (Event, Option<String>) {
    let f = |name: &str| field(entry, name);
    let ts = f("__REALTIME_TIMESTAMP")
        .and_then(|s| s.parse::<i64>().ok())
        .and_then(|us| us.checked_mul(1000))
        .map(Timestamp::from_nanos)
        .unwrap_or_else(super::now);
    let mut ev = Event::new(Kind::Log, ts);
    ev.event.module = "journald".into();
    if let Some(m) = f("MESSAGE") {
        ev.set_message(m.into_owned());
    }
    let level = f("PRIORITY")
        .and_then(|p| p.trim().parse::<u8>().ok())
        .and_then(Severity::from_code)
        .unwrap_or_default();
    let ident = f("SYSLOG_IDENTIFIER")
        .or_else(|| f("_COMM"))
        .map(capped)
        .unwrap_or_default();
    let facility = f("SYSLOG_FACILITY")
        .and_then(|v| v.trim().parse::<u8>().ok())
        .filter(|v| *v < 24);
    let pid_text = f("SYSLOG_PID")
        .or_else(|| f("_PID"))
        .map(capped)
        .unwrap_or_default();
    ev.log = Some(Log {
        level,
        logger: ident.clone(),
        syslog: Some(Syslog {
            facility,
            priority: facility.map(|fa| fa * 8 + level.code()),
            hostname: f("_HOSTNAME").map(capped).unwrap_or_default(),
            appname: ident,
            procid: pid_text,
            msgid: String::new(),
            version: String::new(),
        }),
        ..Default::default()
    });
    let pid = f("_PID").and_then(|p| p.parse::<u32>().ok());
    let comm = f("_COMM").map(capped).unwrap_or_default();
    let exe = f("_EXE").map(capped).unwrap_or_default();
    let cmdline = f("_CMDLINE").map(capped).unwrap_or_default();
    let uid = f("_UID").and_then(|u| u.parse::<u32>().ok());
    if pid.is_some() || !comm.is_empty() || !exe.is_empty() || !cmdline.is_empty() || uid.is_some()
    {
        ev.process = Some(Process {
            pid,
            name: comm,
            executable: exe,
            command_line: cmdline,
            user: uid.map(|id| UserRef {
                name: String::new(),
                id: Some(id),
            }),
            ..Default::default()
        });
    }
    for (field_name, label) in [
        ("_SYSTEMD_UNIT", "systemd.unit"),
        ("_SYSTEMD_USER_UNIT", "systemd.user_unit"),
        ("_TRANSPORT", "journald.transport"),
    ] {
        if let Some(v) = f(field_name) {
            ev.add_label(label, &v);
        }
    }
    if auth {
        enrich_auth(&mut ev);
    }
    let cursor = f("__CURSOR")
        .map(Cow::into_owned)
        .filter(|c| !c.is_empty() && c.len() <= MAX_FIELD);
    (ev, cursor)
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{collect_until, ctx};
    use super::*;
    use std::collections::BTreeMap;
    use std::io::Write;
    use vigie_proto::Outcome;

    const JOURNAL_REMOTE: &str = "/lib/systemd/systemd-journal-remote";
    const WAIT: Duration = Duration::from_secs(20);

    /// Writes entries in journal export format and turns them into DIR/NAME.journal.
    fn write_journal(dir: &std::path::Path, name: &str, entries: &[Vec<(&str, Vec<u8>)>]) {
        let mut export = Vec::new();
        for entry in entries {
            for (k, v) in entry {
                if v.contains(&b'\n')
                    || v.iter().any(|b| *b < 0x20 && *b != b'\t')
                    || std::str::from_utf8(v).is_err()
                {
                    export.extend_from_slice(k.as_bytes());
                    export.push(b'\n');
                    export.extend_from_slice(&(v.len() as u64).to_le_bytes());
                    export.extend_from_slice(v);
                    export.push(b'\n');
                } else {
                    export.extend_from_slice(format!("{k}=").as_bytes());
                    export.extend_from_slice(v);
                    export.push(b'\n');
                }
            }
            export.push(b'\n');
        }
        let out = dir.join(format!("{name}.journal"));
        let mut child = std::process::Command::new(JOURNAL_REMOTE)
            .arg(format!("--output={}", out.display()))
            .arg("-")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("systemd-journal-remote (apt install systemd-journal-remote)");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(&export)
            .expect("write export");
        let res = child.wait_with_output().expect("wait");
        assert!(
            res.status.success(),
            "journal-remote: {}",
            String::from_utf8_lossy(&res.stderr)
        );
    }

    fn entry(us: u64, msg: &str, extra: &[(&'static str, &str)]) -> Vec<(&'static str, Vec<u8>)> {
        let mut e = vec![
            ("__REALTIME_TIMESTAMP", us.to_string().into_bytes()),
            ("MESSAGE", msg.as_bytes().to_vec()),
        ];
        e.extend(extra.iter().map(|(k, v)| (*k, v.as_bytes().to_vec())));
        e
    }

    fn numbered(from_us: u64, prefix: &str, n: usize) -> Vec<Vec<(&'static str, Vec<u8>)>> {
        (0..n)
            .map(|i| {
                entry(
                    from_us + i as u64 * 1000,
                    &format!("{prefix} {i}"),
                    &[("SYSLOG_IDENTIFIER", "test")],
                )
            })
            .collect()
    }

    fn cfg(dir: &std::path::Path, read_from: JournalStart) -> JournaldConfig {
        JournaldConfig {
            directory: Some(dir.to_path_buf()),
            read_from,
            ..Default::default()
        }
    }

    /// Waits until a `journalctl -f` on `dir` runs.
    async fn wait_for_follower(dir: &std::path::Path) {
        let want = dir.display().to_string();
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let found = std::fs::read_dir("/proc")
                .into_iter()
                .flatten()
                .flatten()
                .any(|e| {
                    let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
                    let args: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
                    args.contains(&b"-f".as_slice()) && args.contains(&want.as_bytes())
                });
            if found {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "journalctl did not start"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn msgs(events: &[Event]) -> Vec<String> {
        events.iter().map(|e| e.message.clone()).collect()
    }

    const T0: u64 = 1_772_359_200_000_000; // 2026-03-01T10:00:00Z

    #[tokio::test]
    async fn follows_a_real_journal_and_resumes_after_its_cursor() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut first = vec![entry(
            T0,
            "Failed password for root from 1.2.3.4 port 2222 ssh2",
            &[
                ("PRIORITY", "4"),
                ("SYSLOG_FACILITY", "10"),
                ("SYSLOG_IDENTIFIER", "sshd"),
                ("_PID", "321"),
                ("_COMM", "sshd"),
                ("_EXE", "/usr/sbin/sshd"),
                ("_CMDLINE", "sshd: root [priv]"),
                ("_UID", "0"),
                ("_HOSTNAME", "web1"),
                ("_SYSTEMD_UNIT", "ssh.service"),
                ("_TRANSPORT", "syslog"),
            ],
        )];
        // A binary MESSAGE (journald stores non-UTF-8 and control characters as bytes).
        first.push(vec![
            ("__REALTIME_TIMESTAMP", (T0 + 1000).to_string().into_bytes()),
            ("MESSAGE", b"bin\x01\xffary\nline".to_vec()),
        ]);
        first.extend(numbered(T0 + 10_000, "a", 3));
        write_journal(dir.path(), "a", &first);

        let (c, mut rx, stop, _) = ctx("journald", 16, BTreeMap::new());
        let task = tokio::spawn(run(cfg(dir.path(), JournalStart::Head), c));
        let (mut store, mut events) = (BTreeMap::new(), Vec::new());
        collect_until(&mut rx, &mut store, &mut events, WAIT, |e, _| e.len() >= 5).await;

        let e = &events[0];
        assert_eq!(e.kind(), Kind::Authentication);
        assert_eq!(
            (
                e.event.module.as_str(),
                e.event.action.as_str(),
                e.event.outcome
            ),
            ("journald", "ssh_login", Some(Outcome::Failure))
        );
        assert_eq!(
            e.timestamp,
            Timestamp::parse_rfc3339("2026-03-01T10:00:00Z").expect("ts")
        );
        assert_eq!(
            e.message,
            "Failed password for root from 1.2.3.4 port 2222 ssh2"
        );
        let log = e.log.as_ref().expect("log");
        assert_eq!(
            (log.level, log.logger.as_str()),
            (Severity::Warning, "sshd")
        );
        let sl = log.syslog.as_ref().expect("syslog");
        assert_eq!(
            (
                sl.facility,
                sl.priority,
                sl.hostname.as_str(),
                sl.procid.as_str()
            ),
            (Some(10), Some(84), "web1", "321")
        );
        let p = e.process.as_ref().expect("process");
        assert_eq!(
            (
                p.pid,
                p.name.as_str(),
                p.executable.as_str(),
                p.command_line.as_str()
            ),
            (Some(321), "sshd", "/usr/sbin/sshd", "sshd: root [priv]")
        );
        assert_eq!(p.user.as_ref().and_then(|u| u.id), Some(0));
        assert_eq!(
            e.labels.get("systemd.unit").map(String::as_str),
            Some("ssh.service")
        );
        assert_eq!(
            e.labels.get("journald.transport").map(String::as_str),
            Some("syslog")
        );
        assert_eq!(e.user.as_ref().map(|u| u.name.as_str()), Some("root"));
        assert_eq!(events[1].message, "bin\u{1}\u{fffd}ary\nline");
        assert_eq!(msgs(&events[2..]), vec!["a 0", "a 1", "a 2"]);
        let key = format!("journald:{}", dir.path().display());
        assert!(
            store.get(&key).is_some_and(|c| c.starts_with("s=")),
            "{store:?}"
        );

        // A second journal file appears while following.
        write_journal(dir.path(), "b", &numbered(T0 + 20_000, "b", 3));
        collect_until(&mut rx, &mut store, &mut events, WAIT, |e, _| e.len() >= 8).await;
        assert_eq!(msgs(&events[5..]), vec!["b 0", "b 1", "b 2"]);
        stop.send(true).expect("stop");
        tokio::time::timeout(WAIT, task)
            .await
            .expect("stops")
            .expect("join")
            .expect("ok");

        // Written while stopped; a restart from the stored cursor sees exactly these.
        write_journal(dir.path(), "c", &numbered(T0 + 30_000, "c", 2));
        let (c, mut rx, stop, _) = ctx("journald", 16, store.clone());
        let task = tokio::spawn(run(cfg(dir.path(), JournalStart::Head), c));
        let mut events = Vec::new();
        collect_until(&mut rx, &mut store, &mut events, WAIT, |e, _| e.len() >= 2).await;
        assert_eq!(msgs(&events), vec!["c 0", "c 1"]);
        assert!(
            tokio::time::timeout(Duration::from_millis(500), rx.recv())
                .await
                .is_err(),
            "no duplicates after the cursor"
        );
        stop.send(true).expect("stop");
        tokio::time::timeout(WAIT, task)
            .await
            .expect("stops")
            .expect("join")
            .expect("ok");
    }

    #[tokio::test]
    async fn tail_records_the_end_first_then_reads_new_entries() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_journal(dir.path(), "a", &numbered(T0, "old", 3));
        let (c, mut rx, stop, _) = ctx("journald", 16, BTreeMap::new());
        let task = tokio::spawn(run(cfg(dir.path(), JournalStart::Tail), c));
        let (mut store, mut events) = (BTreeMap::new(), Vec::new());
        // The end cursor is stored before any entry arrives.
        collect_until(&mut rx, &mut store, &mut events, WAIT, |_, s| !s.is_empty()).await;
        assert!(events.is_empty());
        stop.send(true).expect("stop");
        tokio::time::timeout(WAIT, task)
            .await
            .expect("stops")
            .expect("join")
            .expect("ok");
        // Entries written while stopped are not skipped after the restart.
        write_journal(dir.path(), "b", &numbered(T0 + 10_000, "new", 2));
        let (c, mut rx, stop, _) = ctx("journald", 16, store.clone());
        let task = tokio::spawn(run(cfg(dir.path(), JournalStart::Tail), c));
        collect_until(&mut rx, &mut store, &mut events, WAIT, |e, _| e.len() >= 2).await;
        assert_eq!(msgs(&events), vec!["new 0", "new 1"]);
        stop.send(true).expect("stop");
        tokio::time::timeout(WAIT, task)
            .await
            .expect("stops")
            .expect("join")
            .expect("ok");
    }

    #[tokio::test]
    async fn tail_of_an_empty_journal_reads_what_comes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (c, mut rx, stop, _) = ctx("journald", 16, BTreeMap::new());
        let task = tokio::spawn(run(cfg(dir.path(), JournalStart::Tail), c));
        // Entries already there when the source starts would be before the tail: wait until
        // journalctl follows (it watches the directory once it has opened it).
        wait_for_follower(dir.path()).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        write_journal(dir.path(), "a", &numbered(T0, "first", 2));
        let (mut store, mut events) = (BTreeMap::new(), Vec::new());
        collect_until(&mut rx, &mut store, &mut events, WAIT, |e, _| e.len() >= 2).await;
        assert_eq!(msgs(&events), vec!["first 0", "first 1"]);
        stop.send(true).expect("stop");
        tokio::time::timeout(WAIT, task)
            .await
            .expect("stops")
            .expect("join")
            .expect("ok");
    }

    #[tokio::test]
    async fn refused_cursor_falls_back_to_read_from() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_journal(dir.path(), "a", &numbered(T0, "x", 2));
        let mut store = BTreeMap::new();
        store.insert(
            format!("journald:{}", dir.path().display()),
            "not-a-cursor".to_string(),
        );
        let (c, mut rx, stop, _) = ctx("journald", 16, store.clone());
        let task = tokio::spawn(run(cfg(dir.path(), JournalStart::Head), c));
        let mut events = Vec::new();
        collect_until(&mut rx, &mut store, &mut events, WAIT, |e, _| e.len() >= 2).await;
        assert_eq!(msgs(&events), vec!["x 0", "x 1"]);
        stop.send(true).expect("stop");
        tokio::time::timeout(WAIT, task)
            .await
            .expect("stops")
            .expect("join")
            .expect("ok");
    }

    #[tokio::test]
    async fn missing_journalctl_is_a_clear_error() {
        let (c, _rx, _stop, _) = ctx("journald", 16, BTreeMap::new());
        let cfg = JournaldConfig {
            journalctl: "/nonexistent/journalctl".into(),
            ..Default::default()
        };
        let err = tokio::time::timeout(WAIT, run(cfg, c))
            .await
            .expect("returns")
            .expect_err("fails");
        let text = format!("{err:#}");
        assert!(
            text.contains("not found") && text.contains("journalctl ="),
            "{text}"
        );
    }

    #[tokio::test]
    async fn long_lines_are_skipped() {
        let mut input: &[u8] = b"short\nxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\nok\ntail";
        let mut r = BufReader::with_capacity(8, &mut input);
        let mut line = Vec::new();
        assert_eq!(
            read_line_capped(&mut r, &mut line, 10).await.expect("read"),
            ReadLine::Line
        );
        assert_eq!(line, b"short");
        assert_eq!(
            read_line_capped(&mut r, &mut line, 10).await.expect("read"),
            ReadLine::TooLong
        );
        assert_eq!(
            read_line_capped(&mut r, &mut line, 10).await.expect("read"),
            ReadLine::Line
        );
        assert_eq!(line, b"ok");
        assert_eq!(
            read_line_capped(&mut r, &mut line, 10).await.expect("read"),
            ReadLine::Line
        );
        assert_eq!(line, b"tail");
        assert_eq!(
            read_line_capped(&mut r, &mut line, 10).await.expect("read"),
            ReadLine::Eof
        );
    }

    #[test]
    fn entry_fields_of_every_shape() {
        let parse = |s: &str| serde_json::from_str::<Map<String, Value>>(s).expect("json");
        let (e, c) = entry_event(
            &parse(
                r#"{"MESSAGE":null,"PRIORITY":"9","__REALTIME_TIMESTAMP":"x","__CURSOR":"s=1"}"#,
            ),
            true,
        );
        assert_eq!(e.message, "");
        assert_eq!(e.severity(), Severity::Info);
        assert!(e.timestamp.nanos() > 0, "read time used");
        assert_eq!(c.as_deref(), Some("s=1"));
        let (e, c) = entry_event(
            &parse(r#"{"MESSAGE":["first","second"],"_COMM":"cron","_PID":"nope"}"#),
            true,
        );
        assert_eq!(e.message, "first");
        assert_eq!(e.log.as_ref().map(|l| l.logger.as_str()), Some("cron"));
        assert_eq!(e.process.as_ref().and_then(|p| p.pid), None);
        assert_eq!(c, None);
        let (e, _) = entry_event(
            &parse(r#"{"MESSAGE":[104,105,300],"__REALTIME_TIMESTAMP":"99999999999999999999"}"#),
            true,
        );
        assert_eq!(e.message, "hi\u{fffd}");
        let (e, _) = entry_event(&parse(r#"{"MESSAGE":{"nested":1},"PRIORITY":"0"}"#), true);
        assert_eq!(
            (e.message.as_str(), e.severity()),
            ("", Severity::Emergency)
        );
    }

    #[test]
    fn config() {
        let c: JournaldConfig = toml::from_str(
            "directory = \"/var/log/journal\"\nread_from = \"head\"\nunits = [\"ssh.service\"]",
        )
        .expect("toml");
        assert_eq!(c.read_from, JournalStart::Head);
        c.validate().expect("valid");
        assert_eq!(JournaldConfig::default().read_from, JournalStart::Tail);
        assert!(toml::from_str::<JournaldConfig>("cursor = \"x\"").is_err());
        let bad = JournaldConfig {
            units: vec!["-f".into()],
            ..Default::default()
        };
        assert!(bad.validate().is_err());
    }
}

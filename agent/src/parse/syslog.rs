//! Syslog parsing: RFC 5424, RFC 3164 (BSD) and the two text-file layouts rsyslog writes
//! (`Mar  1 10:00:00 host prog[pid]: msg` and `2026-03-01T10:00:00.123+01:00 host prog[pid]: msg`).
//!
//! Pure functions: the current time and the source's zone come in a [`TimeCtx`]. Every
//! input is untrusted; the parsers never panic and never allocate more than the input size.
//! The network parser is lenient the way receivers must be (RFC 5424 §6.3 and RFC 3164 §4.3):
//! a missing timestamp, hostname or tag leaves the field empty rather than rejecting the
//! message, and [`parse_network`] returns `None` only when there is no syslog structure at all,
//! in which case the caller keeps the raw text.

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use vigie_proto::event::{Event, Log, Process, Severity, Syslog, Timestamp};

use super::time::{SourceTz, YearlessTime, infer_year, to_timestamp};

/// What the parsers need to know about time: now (for year inference) and the source's zone.
#[derive(Clone, Copy, Debug)]
pub struct TimeCtx {
    pub now: DateTime<Utc>,
    pub tz: SourceTz,
}

/// Which layout a message was parsed as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Rfc3164,
    Rfc5424,
    /// A line of a text log file (no `<PRI>`), either timestamp style.
    File,
}

impl Format {
    /// Value of `log.syslog.version`; empty for file lines.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Rfc3164 => "rfc3164",
            Format::Rfc5424 => "rfc5424",
            Format::File => "",
        }
    }
}

/// One RFC 5424 structured-data element: `[id param="value" ...]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SdElement {
    pub id: String,
    pub params: Vec<(String, String)>,
}

/// A parsed syslog message.
#[derive(Clone, Debug, PartialEq)]
pub struct SyslogMessage {
    pub format: Format,
    pub facility: Option<u8>,
    pub severity: Option<Severity>,
    /// The `<PRI>` value (facility * 8 + severity).
    pub priority: Option<u8>,
    pub timestamp: Option<Timestamp>,
    pub hostname: String,
    /// RFC 5424 APP-NAME, or the RFC 3164 program (the tag before `[pid]:`).
    pub appname: String,
    pub procid: String,
    pub msgid: String,
    pub structured_data: Vec<SdElement>,
    /// The free-text part.
    pub message: String,
}

impl SyslogMessage {
    fn new(format: Format) -> Self {
        SyslogMessage {
            format,
            facility: None,
            severity: None,
            priority: None,
            timestamp: None,
            hostname: String::new(),
            appname: String::new(),
            procid: String::new(),
            msgid: String::new(),
            structured_data: Vec::new(),
            message: String::new(),
        }
    }

    /// Copies the parsed fields into `ev`: `@timestamp` (when the message had one),
    /// `log.level`, `log.logger`, `log.syslog.*`, `process.pid`/`process.name` and
    /// `labels.sd.{id}.{param}` for structured data (bounded by [`Event::add_label`]).
    /// The event's message is left alone: the caller decides between the line and
    /// [`SyslogMessage::message`].
    pub fn apply_to(&self, ev: &mut Event) {
        if let Some(ts) = self.timestamp {
            ev.timestamp = ts;
        }
        let log = ev.log.get_or_insert_with(Log::default);
        if let Some(sev) = self.severity {
            log.level = sev;
        }
        if !self.appname.is_empty() {
            log.logger = self.appname.clone();
        }
        log.syslog = Some(Syslog {
            facility: self.facility,
            priority: self.priority,
            hostname: self.hostname.clone(),
            appname: self.appname.clone(),
            procid: self.procid.clone(),
            msgid: self.msgid.clone(),
            version: self.format.as_str().to_string(),
        });
        let pid = self.procid.parse::<u32>().ok();
        if pid.is_some() || !self.appname.is_empty() {
            let p = ev.process.get_or_insert_with(Process::default);
            if p.pid.is_none() {
                p.pid = pid;
            }
            if p.name.is_empty() {
                p.name = self.appname.clone();
            }
        }
        for sd in &self.structured_data {
            for (k, v) in &sd.params {
                ev.add_label(&format!("sd.{}.{}", sd.id, k), v);
            }
        }
    }
}

/// Parses a message received over the network: `<PRI>` then RFC 5424 (`<PRI>1 ...`) or
/// RFC 3164. Messages without `<PRI>` are tried as file lines. `None`: no syslog structure.
pub fn parse_network(input: &str, tc: &TimeCtx) -> Option<SyslogMessage> {
    let input = input.trim_end_matches(['\r', '\n', '\0']);
    let Some((pri, rest)) = parse_pri(input) else {
        return parse_file_line(input, tc);
    };
    let mut m = if let Some(after) = rest.strip_prefix("1 ") {
        parse_5424_body(after, tc)
    } else {
        parse_3164_body(rest, tc, Format::Rfc3164)
    };
    m.priority = Some(pri);
    m.facility = Some(pri / 8);
    m.severity = Severity::from_code(pri % 8);
    Some(m)
}

/// Parses a line of a text log file in either rsyslog layout. `None` when the line does not
/// start with a timestamp (it is then not a syslog-format line).
pub fn parse_file_line(line: &str, tc: &TimeCtx) -> Option<SyslogMessage> {
    let line = line.trim_end_matches(['\r', '\n']);
    let (ts, rest) = parse_any_timestamp(line, tc)?;
    let mut m = parse_after_timestamp(rest, Format::File);
    m.timestamp = ts;
    Some(m)
}

/// `<N>` with 1–3 digits and N <= 191.
fn parse_pri(s: &str) -> Option<(u8, &str)> {
    let rest = s.strip_prefix('<')?;
    let end = rest.find('>')?;
    let digits = &rest[..end];
    if digits.is_empty() || digits.len() > 3 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let v: u16 = digits.parse().ok()?;
    if v > 191 {
        return None;
    }
    Some((v as u8, &rest[end + 1..]))
}

fn parse_3164_body(s: &str, tc: &TimeCtx, format: Format) -> SyslogMessage {
    match parse_any_timestamp(s, tc) {
        Some((ts, rest)) => {
            let mut m = parse_after_timestamp(rest, format);
            m.timestamp = ts;
            m
        }
        None => {
            // No timestamp: RFC 3164 §4.3.3 says the rest is the message; many senders
            // still put a tag first (`<13>myprog: text`).
            let mut m = SyslogMessage::new(format);
            match parse_tag(s) {
                Some((app, pid, msg)) => {
                    m.appname = app.to_string();
                    m.procid = pid.to_string();
                    m.message = msg.to_string();
                }
                None => m.message = s.to_string(),
            }
            m
        }
    }
}

/// After the timestamp: `HOSTNAME TAG: MSG`, where the hostname may be missing.
fn parse_after_timestamp(s: &str, format: Format) -> SyslogMessage {
    let mut m = SyslogMessage::new(format);
    let s = s.trim_start_matches(' ');
    let (first, after_first) = split_token(s);
    // A first token that is itself a tag (`prog[1]:` or `prog:`) means the hostname is absent.
    let first_is_tag = first.ends_with(':') || (first.contains('[') && first.contains("]:"));
    let rest = if first.is_empty() || first_is_tag {
        s
    } else {
        m.hostname = first.to_string();
        after_first
    };
    match parse_tag(rest) {
        Some((app, pid, msg)) => {
            m.appname = app.to_string();
            m.procid = pid.to_string();
            m.message = msg.to_string();
        }
        None => m.message = rest.to_string(),
    }
    m
}

/// Longest program name accepted in an RFC 3164 tag.
const MAX_TAG: usize = 128;

/// `prog[pid]: msg` or `prog: msg` → (prog, pid, msg).
fn parse_tag(s: &str) -> Option<(&str, &str, &str)> {
    let end = s.find(['[', ':', ' '])?;
    let prog = &s[..end];
    if prog.is_empty() || prog.len() > MAX_TAG {
        return None;
    }
    let (pid, rest) = if s[end..].starts_with('[') {
        let close = s[end..].find(']')? + end;
        let pid = &s[end + 1..close];
        if pid.len() > MAX_TAG || pid.contains(' ') {
            return None;
        }
        (pid, &s[close + 1..])
    } else {
        ("", &s[end..])
    };
    let msg = rest.strip_prefix(':')?;
    Some((prog, pid, msg.strip_prefix(' ').unwrap_or(msg)))
}

/// Splits at the first space.
fn split_token(s: &str) -> (&str, &str) {
    match s.find(' ') {
        Some(i) => (&s[..i], &s[i + 1..]),
        None => (s, ""),
    }
}

/// A BSD (`Mmm dd hh:mm:ss`) or ISO 8601 timestamp at the start of `s`, followed by a space
/// or the end. Returns `Some((None, rest))` when the text has the shape of a timestamp but
/// names an impossible date (the shape still tells where the header ends).
fn parse_any_timestamp<'a>(s: &'a str, tc: &TimeCtx) -> Option<(Option<Timestamp>, &'a str)> {
    let b = s.as_bytes();
    if b.len() >= 4 && b[..4].iter().all(u8::is_ascii_digit) {
        let (tok, rest) = split_token(s);
        let ts = parse_iso(tok, tc)?;
        return Some((Some(ts), rest));
    }
    parse_bsd(s, tc)
}

/// RFC 3339, or ISO 8601 without an offset (then in the source's zone).
fn parse_iso(tok: &str, tc: &TimeCtx) -> Option<Timestamp> {
    if tok.len() > 64 {
        return None;
    }
    if let Ok(dt) = DateTime::parse_from_rfc3339(tok) {
        return to_timestamp(dt.with_timezone(&Utc));
    }
    // rsyslog never writes these, but some appliances do.
    let naive = NaiveDateTime::parse_from_str(tok, "%Y-%m-%dT%H:%M:%S%.f").ok()?;
    to_timestamp(tc.tz.to_utc(naive)?)
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// `Mmm dd hh:mm:ss[.frac]`, also `Mmm dd yyyy hh:mm:ss` (some network gear).
fn parse_bsd<'a>(s: &'a str, tc: &TimeCtx) -> Option<(Option<Timestamp>, &'a str)> {
    let b = s.as_bytes();
    if b.len() < 15 || b[3] != b' ' {
        return None;
    }
    let month = MONTHS
        .iter()
        .position(|m| m.as_bytes().eq_ignore_ascii_case(&b[..3]))? as u32
        + 1;
    // Day: " 1", "01" or "1" (then one space fewer).
    let mut i = 4;
    if b[i] == b' ' {
        i += 1;
    }
    let day_start = i;
    while i < b.len() && b[i].is_ascii_digit() && i - day_start < 2 {
        i += 1;
    }
    if i == day_start || b.get(i) != Some(&b' ') {
        return None;
    }
    let day: u32 = s[day_start..i].parse().ok()?;
    i += 1;
    // Optional year.
    let mut year = None;
    if b.len() >= i + 5 && b[i..i + 4].iter().all(u8::is_ascii_digit) && b[i + 4] == b' ' {
        year = s[i..i + 4].parse::<i32>().ok();
        i += 5;
    }
    // hh:mm:ss
    let t = b.get(i..i + 8)?;
    if !(t[2] == b':' && t[5] == b':' && [0, 1, 3, 4, 6, 7].iter().all(|&k| t[k].is_ascii_digit()))
    {
        return None;
    }
    let num = |k: usize| u32::from(t[k] - b'0') * 10 + u32::from(t[k + 1] - b'0');
    let (h, mi, se) = (num(0), num(3), num(6));
    i += 8;
    // Optional fraction, up to nanoseconds.
    let mut nanos = 0u32;
    if b.get(i) == Some(&b'.') {
        let start = i + 1;
        let mut j = start;
        while j < b.len() && b[j].is_ascii_digit() {
            j += 1;
        }
        let frac = &s[start..j];
        if frac.is_empty() {
            return None;
        }
        let digits = &frac[..frac.len().min(9)];
        nanos = digits.parse::<u32>().ok()? * 10u32.pow(9 - digits.len() as u32);
        i = j;
    }
    let rest = match b.get(i) {
        None => "",
        Some(b' ') => &s[i + 1..],
        Some(_) => return None,
    };
    let ts = NaiveTime::from_hms_nano_opt(h, mi, se, nanos).and_then(|time| match year {
        Some(y) => NaiveDate::from_ymd_opt(y, month, day)
            .and_then(|d| tc.tz.to_utc(d.and_time(time)))
            .and_then(to_timestamp),
        None => {
            infer_year(YearlessTime { month, day, time }, &tc.tz, tc.now).and_then(to_timestamp)
        }
    });
    Some((ts, rest))
}

/// RFC 5424 after `<PRI>1 `: `TIMESTAMP HOSTNAME APP-NAME PROCID MSGID SD [MSG]`.
fn parse_5424_body(s: &str, tc: &TimeCtx) -> SyslogMessage {
    let mut m = SyslogMessage::new(Format::Rfc5424);
    let nil = |t: &str| {
        if t == "-" {
            String::new()
        } else {
            t.to_string()
        }
    };
    let (ts, s) = split_token(s);
    if ts != "-" {
        m.timestamp = parse_iso(ts, tc);
    }
    let (host, s) = split_token(s);
    m.hostname = nil(host);
    let (app, s) = split_token(s);
    m.appname = nil(app);
    let (procid, s) = split_token(s);
    m.procid = nil(procid);
    let (msgid, s) = split_token(s);
    m.msgid = nil(msgid);
    let rest = if let Some(after) = s.strip_prefix('-') {
        after
    } else if s.starts_with('[') {
        match parse_sd(s) {
            Some((sd, after)) => {
                m.structured_data = sd;
                after
            }
            // Malformed structured data: keep everything as the message.
            None => s,
        }
    } else {
        s
    };
    let msg = rest.strip_prefix(' ').unwrap_or(rest);
    m.message = msg.strip_prefix('\u{feff}').unwrap_or(msg).to_string();
    m
}

/// Most SD elements and params kept per message (the rest of the message is still kept).
const MAX_SD_ELEMENTS: usize = 32;
const MAX_SD_PARAMS: usize = 64;

/// `[id k="v" ...][id2 ...]` → elements and the text after them.
fn parse_sd(s: &str) -> Option<(Vec<SdElement>, &str)> {
    let mut out = Vec::new();
    let mut rest = s;
    let mut params_total = 0;
    while let Some(after_open) = rest.strip_prefix('[') {
        let id_end = after_open.find([' ', ']'])?;
        let id = &after_open[..id_end];
        if id.is_empty() || id.contains(['=', '"']) {
            return None;
        }
        let mut el = SdElement {
            id: id.to_string(),
            params: Vec::new(),
        };
        let mut cur = &after_open[id_end..];
        loop {
            if let Some(after) = cur.strip_prefix(']') {
                cur = after;
                break;
            }
            cur = cur.strip_prefix(' ')?;
            let eq = cur.find('=')?;
            let name = &cur[..eq];
            if name.is_empty() || name.contains([' ', ']', '"']) {
                return None;
            }
            cur = cur[eq + 1..].strip_prefix('"')?;
            let (value, after) = parse_sd_value(cur)?;
            if params_total < MAX_SD_PARAMS {
                el.params.push((name.to_string(), value));
                params_total += 1;
            }
            cur = after;
        }
        if out.len() < MAX_SD_ELEMENTS {
            out.push(el);
        }
        rest = cur;
    }
    Some((out, rest))
}

/// A quoted param value after the opening quote, with `\"`, `\\` and `\]` escapes.
fn parse_sd_value(s: &str) -> Option<(String, &str)> {
    let mut v = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((v, &s[i + 1..])),
            '\\' => match chars.next() {
                Some((_, e @ ('"' | '\\' | ']'))) => v.push(e),
                Some((_, other)) => {
                    v.push('\\');
                    v.push(other);
                }
                None => return None,
            },
            c => v.push(c),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tc() -> TimeCtx {
        TimeCtx {
            now: DateTime::parse_from_rfc3339("2026-03-15T12:00:00Z")
                .expect("now")
                .with_timezone(&Utc),
            tz: SourceTz::UTC,
        }
    }

    fn ts(s: &str) -> Option<Timestamp> {
        Some(Timestamp::parse_rfc3339(s).expect("test timestamp"))
    }

    /// (input, format, pri, timestamp, hostname, appname, procid, msgid, message)
    type Case<'a> = (
        &'a str,
        Format,
        Option<u8>,
        Option<&'a str>,
        &'a str,
        &'a str,
        &'a str,
        &'a str,
        &'a str,
    );

    #[test]
    fn network_table() {
        let cases: &[Case] = &[
            (
                "<34>Oct 11 22:14:15 mymachine su: 'su root' failed for lonvick on /dev/pts/8",
                Format::Rfc3164,
                Some(34),
                Some("2025-10-11T22:14:15Z"),
                "mymachine",
                "su",
                "",
                "",
                "'su root' failed for lonvick on /dev/pts/8",
            ),
            (
                "<13>Mar  1 10:00:00 host sshd[123]: Accepted password for bob",
                Format::Rfc3164,
                Some(13),
                Some("2026-03-01T10:00:00Z"),
                "host",
                "sshd",
                "123",
                "",
                "Accepted password for bob",
            ),
            // No hostname: the first token is the tag.
            (
                "<13>Mar 01 10:00:00 cron[9]: run",
                Format::Rfc3164,
                Some(13),
                Some("2026-03-01T10:00:00Z"),
                "",
                "cron",
                "9",
                "",
                "run",
            ),
            // Fractional seconds and an explicit year.
            (
                "<14>Mar  1 2024 10:00:00 sw1 link: up",
                Format::Rfc3164,
                Some(14),
                Some("2024-03-01T10:00:00Z"),
                "sw1",
                "link",
                "",
                "",
                "up",
            ),
            (
                "<14>Mar  1 10:00:00.250 sw1 link: up",
                Format::Rfc3164,
                Some(14),
                Some("2026-03-01T10:00:00.25Z"),
                "sw1",
                "link",
                "",
                "",
                "up",
            ),
            // rsyslog RFC 3339 template inside 3164 framing.
            (
                "<86>2026-03-01T10:00:00.123+01:00 web1 sudo[77]: pam_unix(sudo:session): session closed for user root",
                Format::Rfc3164,
                Some(86),
                Some("2026-03-01T09:00:00.123Z"),
                "web1",
                "sudo",
                "77",
                "",
                "pam_unix(sudo:session): session closed for user root",
            ),
            // No timestamp at all.
            (
                "<13>myprog: hello",
                Format::Rfc3164,
                Some(13),
                None,
                "",
                "myprog",
                "",
                "",
                "hello",
            ),
            (
                "<13>just text",
                Format::Rfc3164,
                Some(13),
                None,
                "",
                "",
                "",
                "",
                "just text",
            ),
            ("<0>", Format::Rfc3164, Some(0), None, "", "", "", "", ""),
            // RFC 5424 examples (§6.5).
            (
                "<34>1 2003-10-11T22:14:15.003Z mymachine.example.com su - ID47 - \u{feff}'su root' failed for lonvick on /dev/pts/8",
                Format::Rfc5424,
                Some(34),
                Some("2003-10-11T22:14:15.003Z"),
                "mymachine.example.com",
                "su",
                "",
                "ID47",
                "'su root' failed for lonvick on /dev/pts/8",
            ),
            (
                "<165>1 2003-08-24T05:14:15.000003-07:00 192.0.2.1 myproc 8710 - - %% It's time to make the do-nuts.",
                Format::Rfc5424,
                Some(165),
                Some("2003-08-24T12:14:15.000003Z"),
                "192.0.2.1",
                "myproc",
                "8710",
                "",
                "%% It's time to make the do-nuts.",
            ),
            (
                "<165>1 - - - - - -",
                Format::Rfc5424,
                Some(165),
                None,
                "",
                "",
                "",
                "",
                "",
            ),
            // Truncated 5424 header: fields missing, never a panic.
            (
                "<165>1 2003-08-24T05:14:15Z host",
                Format::Rfc5424,
                Some(165),
                Some("2003-08-24T05:14:15Z"),
                "host",
                "",
                "",
                "",
                "",
            ),
            // No PRI: tried as a file line.
            (
                "Mar  1 10:00:00 host prog[1]: x",
                Format::File,
                None,
                Some("2026-03-01T10:00:00Z"),
                "host",
                "prog",
                "1",
                "",
                "x",
            ),
        ];
        for (input, format, pri, t, host, app, pid, msgid, msg) in cases {
            let m = parse_network(input, &tc()).unwrap_or_else(|| panic!("{input}: no parse"));
            assert_eq!(m.format, *format, "{input}");
            assert_eq!(m.priority, *pri, "{input}");
            assert_eq!(m.timestamp, t.and_then(ts), "{input}");
            assert_eq!(
                (
                    m.hostname.as_str(),
                    m.appname.as_str(),
                    m.procid.as_str(),
                    m.msgid.as_str(),
                    m.message.as_str()
                ),
                (*host, *app, *pid, *msgid, *msg),
                "{input}"
            );
        }
    }

    #[test]
    fn pri_gives_facility_and_severity() {
        let m = parse_network("<86>Mar  1 10:00:00 h p: x", &tc()).expect("parse");
        assert_eq!(m.facility, Some(10)); // authpriv
        assert_eq!(m.severity, Some(Severity::Info));
        let m = parse_network("<191>1 - - - - - - x", &tc()).expect("parse");
        assert_eq!((m.facility, m.severity), (Some(23), Some(Severity::Debug)));
    }

    #[test]
    fn not_syslog() {
        for input in [
            "",
            "hello world",
            "<192>Mar  1 10:00:00 h p: x",
            "<1234>x",
            "<>x",
            "<a>x",
            "<13",
            "Mar",
            "2026 was a year",
        ] {
            assert_eq!(parse_network(input, &tc()), None, "{input:?}");
        }
    }

    #[test]
    fn structured_data() {
        let input = r#"<165>1 2003-10-11T22:14:15.003Z host evntslog - ID47 [exampleSDID@32473 iut="3" eventSource="Application" eventID="1011"][examplePriority@32473 class="high"] BOMless msg"#;
        let m = parse_network(input, &tc()).expect("parse");
        assert_eq!(m.structured_data.len(), 2);
        assert_eq!(m.structured_data[0].id, "exampleSDID@32473");
        assert_eq!(
            m.structured_data[0].params[1],
            ("eventSource".to_string(), "Application".to_string())
        );
        assert_eq!(
            m.structured_data[1].params,
            vec![("class".to_string(), "high".to_string())]
        );
        assert_eq!(m.message, "BOMless msg");

        let escaped = r#"<13>1 - h a - - [x@1 k="a\"b\\c\]d" e=""]"#;
        let m = parse_network(escaped, &tc()).expect("parse");
        assert_eq!(
            m.structured_data[0].params,
            vec![
                ("k".into(), r#"a"b\c]d"#.into()),
                ("e".into(), String::new())
            ]
        );
        assert_eq!(m.message, "");

        // Malformed SD: nothing lost, all kept as the message.
        for bad in [
            r#"[x@1 k="unterminated]"#,
            r#"[x@1 k=v] m"#,
            "[ ] m",
            "[x@1",
            r#"[x@1 k="a\"#,
        ] {
            let m = parse_network(&format!("<13>1 - h a - - {bad}"), &tc()).expect("parse");
            assert!(m.structured_data.is_empty(), "{bad}");
            assert_eq!(m.message, bad);
        }

        let mut ev = Event::new(vigie_proto::Kind::Log, Timestamp(0));
        parse_network(input, &tc())
            .expect("parse")
            .apply_to(&mut ev);
        assert_eq!(
            ev.labels
                .get("sd.exampleSDID@32473.eventID")
                .map(String::as_str),
            Some("1011")
        );
        let log = ev.log.as_ref().expect("log");
        assert_eq!(log.level, Severity::Notice);
        assert_eq!(log.logger, "evntslog");
        assert_eq!(log.syslog.as_ref().expect("syslog").version, "rfc5424");
        assert_eq!(ev.timestamp, ts("2003-10-11T22:14:15.003Z").expect("ts"));
    }

    #[test]
    fn file_lines() {
        // (line, timestamp, hostname, appname, procid, message)
        type FileCase<'a> = (&'a str, Option<&'a str>, &'a str, &'a str, &'a str, &'a str);
        let cases: &[FileCase] = &[
            (
                "Mar  1 10:00:00 host sshd[1234]: Failed password for root from 1.2.3.4 port 22 ssh2",
                Some("2026-03-01T10:00:00Z"),
                "host",
                "sshd",
                "1234",
                "Failed password for root from 1.2.3.4 port 22 ssh2",
            ),
            (
                "2026-03-01T10:00:00.123456+01:00 web1 sudo:   bob : TTY=pts/0 ; USER=root ; COMMAND=/bin/ls",
                Some("2026-03-01T09:00:00.123456Z"),
                "web1",
                "sudo",
                "",
                "  bob : TTY=pts/0 ; USER=root ; COMMAND=/bin/ls",
            ),
            // Loghub's Linux_2k layout: program with a PAM suffix, and CRLF endings.
            (
                "Jun 14 15:16:01 combo sshd(pam_unix)[19939]: authentication failure; rhost=218.188.2.4 \r",
                Some("2025-06-14T15:16:01Z"),
                "combo",
                "sshd(pam_unix)",
                "19939",
                "authentication failure; rhost=218.188.2.4 ",
            ),
            (
                "Mar  1 10:00:00 host -- MARK --",
                Some("2026-03-01T10:00:00Z"),
                "host",
                "",
                "",
                "-- MARK --",
            ),
            (
                "Mar  1 10:00:00 host",
                Some("2026-03-01T10:00:00Z"),
                "host",
                "",
                "",
                "",
            ),
            // Impossible date: shape recognised, timestamp left to the caller.
            ("Feb 30 10:00:00 host p: x", None, "host", "p", "", "x"),
            ("Mar  1 25:00:00 host p: x", None, "host", "p", "", "x"),
        ];
        for (line, t, host, app, pid, msg) in cases {
            let m = parse_file_line(line, &tc()).unwrap_or_else(|| panic!("{line}: no parse"));
            assert_eq!(m.format, Format::File);
            assert_eq!(m.timestamp, t.and_then(ts), "{line}");
            assert_eq!(
                (
                    m.hostname.as_str(),
                    m.appname.as_str(),
                    m.procid.as_str(),
                    m.message.as_str()
                ),
                (*host, *app, *pid, *msg),
                "{line}"
            );
        }
        for line in [
            "plain text",
            "2026-03-01 10:00:00 not rfc3339",
            "Mar  1 10:00 host",
            "Mar 100 10:00:00 h",
            "Foo  1 10:00:00 h p: x",
            "Mar  1 10:00:00x",
            "Mar  1 10:00:00.",
            "",
        ] {
            assert_eq!(parse_file_line(line, &tc()), None, "{line:?}");
        }
    }

    #[test]
    fn source_zone_applies_to_bsd_timestamps() {
        let tc = TimeCtx {
            tz: "+02:00".parse().expect("tz"),
            ..tc()
        };
        let m = parse_file_line("Mar  1 10:00:00 h p: x", &tc).expect("parse");
        assert_eq!(m.timestamp, ts("2026-03-01T08:00:00Z"));
        // A zone in the text wins over the source's zone.
        let m = parse_file_line("2026-03-01T10:00:00Z h p: x", &tc).expect("parse");
        assert_eq!(m.timestamp, ts("2026-03-01T10:00:00Z"));
    }

    #[test]
    fn never_panics_on_garbage() {
        // Deterministic pseudo-random inputs built from syslog-ish fragments.
        let frags = [
            "<",
            ">",
            "1",
            "13",
            "<13>",
            "<165>1 ",
            "-",
            " ",
            "[",
            "]",
            "\"",
            "\\",
            "=",
            ":",
            "Mar",
            " 1 ",
            "10:00:00",
            ".",
            "é",
            "\u{feff}",
            "2026-03-01T10:00:00Z",
            "host",
            "prog[",
            "12]",
            "x@1",
            "k=\"v\"",
            "\r",
            "\n",
            "\0",
        ];
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            let mut s = String::new();
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let n = (seed % 12) as usize;
            let mut x = seed;
            for _ in 0..n {
                s.push_str(frags[(x % frags.len() as u64) as usize]);
                x = x
                    .rotate_right(5)
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1);
            }
            let _ = parse_network(&s, &tc());
            let _ = parse_file_line(&s, &tc());
        }
    }
}

//! Authentication lines (sshd, sudo, su, login, PAM) → [`Kind::Authentication`] events.
//!
//! [`enrich_auth`] looks at a log event's program (`log.logger`, else `log.syslog.appname`)
//! and message; when the line is one of the known authentication messages it sets
//! `event.kind = authentication`, `event.action`, `event.outcome`, `user.*`, `source.*`,
//! `process.command_line` (sudo) and `labels.ssh.*` / `labels.sudo.*`, keeping the raw
//! message. Anything it does not recognise stays a plain log event.
//!
//! Actions:
//!
//! | action | program | example message | outcome |
//! | --- | --- | --- | --- |
//! | `ssh_login` | sshd | `Failed password for root from 1.2.3.4 port 22 ssh2`, `Accepted publickey for bob ...` | failure / success |
//! | `ssh_invalid_user` | sshd | `Invalid user admin from 1.2.3.4 port 22` | failure |
//! | `ssh_disconnect_preauth` | sshd | `Connection closed by authenticating user root 1.2.3.4 port 2 [preauth]` | unknown |
//! | `ssh_max_auth_attempts` | sshd | `error: maximum authentication attempts exceeded for root ...`, `Disconnecting: Too many authentication failures` | failure |
//! | `ssh_logout` | sshd | `Disconnected from user bob 1.2.3.4 port 22` | success |
//! | `sudo` | sudo | `bob : TTY=pts/0 ; PWD=/home/bob ; USER=root ; COMMAND=/usr/bin/ls` | success, failure with a reason before `TTY=` |
//! | `su` | su | `(to root) bob on pts/0`, `FAILED SU (to root) bob on pts/0` | success / failure |
//! | `login` | login | `ROOT LOGIN ON tty1`, `FAILED LOGIN 1 FROM tty1 FOR root, Authentication failure` | success / failure |
//! | `pam_auth_failure` | any | `pam_unix(sshd:auth): authentication failure; ... rhost=1.2.3.4  user=root` | failure |
//! | `pam_session_open` / `pam_session_close` | any | `pam_unix(sshd:session): session opened for user bob(uid=1000) by (uid=0)` | success |
//!
//! PAM lines are recognised from any program, both as `pam_unix(svc:type): ...` in the
//! message and in the older `svc(pam_unix)[pid]: ...` tag form. The user-controlled parts
//! (user names) are located from the fixed right-hand side of each message, so a user name
//! containing ` from ` cannot forge the address. Pure code: never panics, never reads IO.

use std::net::IpAddr;

use vigie_proto::event::{Endpoint, Event, Kind, Outcome, Process, User, UserRef};

/// Longest user name or host text kept from a line.
const MAX_FIELD: usize = 256;

/// What an authentication line says, before it is written into an event.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AuthInfo {
    pub action: &'static str,
    pub outcome: Option<Outcome>,
    pub user: Option<String>,
    pub user_id: Option<u32>,
    pub target: Option<String>,
    pub target_id: Option<u32>,
    /// Address as written (IP or host name).
    pub source: Option<String>,
    pub source_port: Option<u16>,
    pub command_line: Option<String>,
    pub working_directory: Option<String>,
    pub tty: Option<String>,
    pub labels: Vec<(&'static str, String)>,
}

/// Turns a recognised authentication log event into [`Kind::Authentication`]. Events of
/// other kinds, and unrecognised lines, are left unchanged. Idempotent.
pub fn enrich_auth(event: &mut Event) {
    if event.event.kind != Kind::Log {
        return;
    }
    let Some(log) = &event.log else { return };
    let program = if !log.logger.is_empty() {
        log.logger.as_str()
    } else {
        match &log.syslog {
            Some(s) => s.appname.as_str(),
            None => "",
        }
    };
    // File sources keep the whole line as the message; the others keep only the text
    // after the tag. Only a whole line is searched for its tag, so that text inside a
    // message (a user name such as "sshd: x") can never move where the body starts.
    let body = if log.file.is_some() {
        message_body(&event.message, program)
    } else {
        event.message.as_str()
    };
    let Some(info) = parse_auth(program, body) else {
        return;
    };
    apply(event, info);
}

/// The text after the first ` program[pid]: ` / ` program: ` of a whole syslog line.
fn message_body<'a>(line: &'a str, program: &str) -> &'a str {
    if program.is_empty() {
        return line;
    }
    // The header of a syslog line is short; never search an attacker's whole message.
    let head = &line[..floor_char_boundary(line, 512)];
    for (at, _) in head.match_indices(program) {
        if at > 0 && !head[..at].ends_with(' ') {
            continue;
        }
        let after = &line[at + program.len()..];
        let after = match after.strip_prefix('[') {
            Some(a) => match a.find(']') {
                Some(close) => &a[close + 1..],
                None => continue,
            },
            None => after,
        };
        if let Some(rest) = after.strip_prefix(':') {
            return rest.strip_prefix(' ').unwrap_or(rest);
        }
    }
    line
}

fn floor_char_boundary(s: &str, max: usize) -> usize {
    if s.len() <= max {
        return s.len();
    }
    let mut i = max;
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Parses one authentication message. `program` is the syslog tag (`sshd`,
/// `/usr/sbin/sshd`, `sshd(pam_unix)`, `sudo`, …), `body` the text after the tag.
pub fn parse_auth(program: &str, body: &str) -> Option<AuthInfo> {
    let body = body.trim_end_matches(['\r', '\n']).trim_end();
    let base = program.rsplit('/').next().unwrap_or(program);
    if let Some(rest) = body.strip_prefix("pam_") {
        // pam_unix(sshd:auth): ..., pam_sss(sudo:auth): ...
        let open = rest.find('(')?;
        let module = &rest[..open];
        let close = rest.find("): ")?;
        let (service, _kind) = rest.get(open + 1..close)?.split_once(':')?;
        let mut info = parse_pam(service, &rest[close + 3..])?;
        info.labels
            .push(("pam.module", format!("pam_{}", cap(module))));
        return Some(info);
    }
    if let Some(service) = base.strip_suffix("(pam_unix)") {
        return parse_pam(service, body);
    }
    match base {
        "sshd" | "sshd-session" | "sshd-auth" => parse_sshd(body),
        "sudo" => parse_sudo(body),
        "su" => parse_su(body),
        "login" => parse_login(body),
        _ => None,
    }
}

fn cap(s: &str) -> String {
    s[..floor_char_boundary(s, MAX_FIELD)].to_string()
}

fn nonempty(s: &str) -> Option<String> {
    let s = s.trim();
    if s.is_empty() { None } else { Some(cap(s)) }
}

/// Splits `ADDR port N` or `ADDR` from the front of `s`; returns the rest.
fn addr_port(s: &str) -> (Option<String>, Option<u16>, &str) {
    let (addr, rest) = s.split_once(' ').unwrap_or((s, ""));
    let addr = addr.trim_end_matches(':');
    if let Some(after) = rest.strip_prefix("port ") {
        let (port, rest) = after.split_once([' ', ':']).unwrap_or((after, ""));
        return (nonempty(addr), port.parse().ok(), rest);
    }
    (nonempty(addr), None, rest)
}

fn strip_preauth(s: &str) -> (&str, bool) {
    match s.strip_suffix("[preauth]") {
        Some(r) => (r.trim_end(), true),
        None => (s, false),
    }
}

fn ssh_method(m: &str) -> String {
    let m = m.split('/').next().unwrap_or(m);
    cap(m)
}

fn parse_sshd(body: &str) -> Option<AuthInfo> {
    let (body, preauth) = strip_preauth(body);
    let body = body.strip_prefix("error: ").unwrap_or(body);

    // Failed/Accepted METHOD for [invalid user ]USER from ADDR port N ssh2[: KEY FP]
    for (word, outcome) in [
        ("Failed ", Outcome::Failure),
        ("Accepted ", Outcome::Success),
    ] {
        if let Some(rest) = body.strip_prefix(word) {
            let (method, rest) = rest.split_once(' ')?;
            let rest = rest.strip_prefix("for ")?;
            let from = rest.rfind(" from ")?;
            let (user, invalid) = match rest[..from].strip_prefix("invalid user ") {
                Some(u) => (u, true),
                None => (&rest[..from], false),
            };
            let (addr, port, tail) = addr_port(&rest[from + 6..]);
            let mut info = AuthInfo {
                action: "ssh_login",
                outcome: Some(outcome),
                user: nonempty(user),
                source: addr,
                source_port: port,
                ..Default::default()
            };
            info.labels.push(("ssh.method", ssh_method(method)));
            if invalid {
                info.labels.push(("ssh.invalid_user", "true".into()));
            }
            // "ssh2: ED25519 SHA256:abc"
            if let Some(key) = tail.split_once(": ").map(|(_, k)| k) {
                let mut parts = key.split(' ');
                if let (Some(kind), Some(fp)) = (parts.next(), parts.next()) {
                    info.labels.push(("ssh.key.type", cap(kind)));
                    info.labels.push(("ssh.key.fingerprint", cap(fp)));
                }
            }
            return Some(info);
        }
    }
    // Invalid user USER from ADDR[ port N]
    if let Some(rest) = body.strip_prefix("Invalid user ") {
        let from = rest.rfind(" from ")?;
        let (addr, port, _) = addr_port(&rest[from + 6..]);
        return Some(AuthInfo {
            action: "ssh_invalid_user",
            outcome: Some(Outcome::Failure),
            user: nonempty(&rest[..from]),
            source: addr,
            source_port: port,
            ..Default::default()
        });
    }
    // maximum authentication attempts exceeded for [invalid user ]USER from ADDR port N ssh2
    if let Some(rest) = body.strip_prefix("maximum authentication attempts exceeded for ") {
        let from = rest.rfind(" from ")?;
        let user = &rest[..from];
        let user = user.strip_prefix("invalid user ").unwrap_or(user);
        let (addr, port, _) = addr_port(&rest[from + 6..]);
        return Some(AuthInfo {
            action: "ssh_max_auth_attempts",
            outcome: Some(Outcome::Failure),
            user: nonempty(user),
            source: addr,
            source_port: port,
            ..Default::default()
        });
    }
    // Disconnecting: Too many authentication failures for USER
    if let Some(user) = body.strip_prefix("Disconnecting: Too many authentication failures for ") {
        return Some(AuthInfo {
            action: "ssh_max_auth_attempts",
            outcome: Some(Outcome::Failure),
            user: nonempty(user),
            ..Default::default()
        });
    }
    // Disconnecting authenticating user USER ADDR port N: Too many authentication failures
    if let Some(rest) = body
        .strip_prefix("Disconnecting authenticating user ")
        .or_else(|| body.strip_prefix("Disconnecting invalid user "))
        && let Some(head) = rest.strip_suffix(": Too many authentication failures")
    {
        let (user, addr, port) = user_addr_port(head)?;
        return Some(AuthInfo {
            action: "ssh_max_auth_attempts",
            outcome: Some(Outcome::Failure),
            user,
            source: addr,
            source_port: port,
            ..Default::default()
        });
    }
    // Disconnected from user USER ADDR port N  (a session ended)
    if !preauth && let Some(rest) = body.strip_prefix("Disconnected from user ") {
        let (user, addr, port) = user_addr_port(rest)?;
        return Some(AuthInfo {
            action: "ssh_logout",
            outcome: Some(Outcome::Success),
            user,
            source: addr,
            source_port: port,
            ..Default::default()
        });
    }
    if preauth {
        return parse_sshd_preauth_disconnect(body);
    }
    None
}

/// `USER ADDR port N` with the user name possibly containing spaces: split from the right.
fn user_addr_port(s: &str) -> Option<(Option<String>, Option<String>, Option<u16>)> {
    let s = s.trim_end();
    let (head, port) = match s.rsplit_once(" port ") {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => (h, p.parse().ok()),
        _ => (s, None),
    };
    let (user, addr) = head.rsplit_once(' ')?;
    Some((nonempty(user), nonempty(addr), port))
}

/// The `[preauth]` connection ends: the client left before authenticating.
fn parse_sshd_preauth_disconnect(body: &str) -> Option<AuthInfo> {
    let disconnect = |user: Option<String>, source: Option<String>, port: Option<u16>| AuthInfo {
        action: "ssh_disconnect_preauth",
        outcome: Some(Outcome::Unknown),
        user,
        source,
        source_port: port,
        ..Default::default()
    };
    for prefix in [
        "Connection closed by authenticating user ",
        "Connection closed by invalid user ",
        "Disconnected from authenticating user ",
        "Disconnected from invalid user ",
        "Connection reset by authenticating user ",
        "Connection reset by invalid user ",
    ] {
        if let Some(rest) = body.strip_prefix(prefix) {
            let (user, addr, port) = user_addr_port(rest)?;
            return Some(disconnect(user, addr, port));
        }
    }
    for prefix in [
        "Connection closed by ",
        "Disconnected from ",
        "Connection reset by ",
        "Received disconnect from ",
    ] {
        if let Some(rest) = body.strip_prefix(prefix) {
            // "ADDR port N" or "ADDR port N:11: Bye" or "ADDR: 11: Bye Bye"
            let (addr, port, _) = addr_port(rest);
            return Some(disconnect(None, addr, port));
        }
    }
    None
}

/// `k=v` pairs of a PAM failure line; values may be empty (`ruser= rhost=`).
fn pam_kv<'a>(s: &'a str, key: &str) -> Option<&'a str> {
    s.split(' ')
        .find_map(|tok| tok.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
        .filter(|v| !v.is_empty())
}

/// Services where a session's "by" user is the one acting (sudo bob → root).
fn acting_service(service: &str) -> bool {
    matches!(
        service,
        "su" | "su-l" | "sudo" | "sudo-i" | "runuser" | "runuser-l"
    )
}

/// `name(uid=N)` or `name` or `(uid=N)`.
fn name_uid(s: &str) -> (Option<String>, Option<u32>) {
    match s.split_once("(uid=") {
        Some((name, rest)) => (
            nonempty(name),
            rest.strip_suffix(')').and_then(|u| u.parse().ok()),
        ),
        None => (nonempty(s), None),
    }
}

fn parse_pam(service: &str, msg: &str) -> Option<AuthInfo> {
    let msg = msg.trim_end();
    let mut info = if let Some(rest) = msg.strip_prefix("authentication failure;") {
        let user = pam_kv(rest, "user");
        let ruser = pam_kv(rest, "ruser");
        let (user, target) = match (ruser, user) {
            (Some(r), Some(u)) if r != u => (Some(cap(r)), Some(cap(u))),
            (r, u) => (u.or(r).map(cap), None),
        };
        AuthInfo {
            action: "pam_auth_failure",
            outcome: Some(Outcome::Failure),
            user,
            target,
            source: pam_kv(rest, "rhost").map(cap),
            tty: pam_kv(rest, "tty").map(cap),
            ..Default::default()
        }
    } else if let Some(rest) = msg.strip_prefix("session opened for user ") {
        let (for_part, by_part) = match rest.rsplit_once(" by ") {
            Some((f, b)) => (f, Some(b)),
            None => (rest, None),
        };
        let (for_name, for_uid) = name_uid(for_part);
        let (by_name, by_uid) = by_part.map(name_uid).unwrap_or((None, None));
        let mut info = AuthInfo {
            action: "pam_session_open",
            outcome: Some(Outcome::Success),
            ..Default::default()
        };
        if acting_service(service) && by_name.is_some() {
            info.user = by_name;
            info.user_id = by_uid;
            info.target = for_name;
            info.target_id = for_uid;
        } else {
            info.user = for_name;
            info.user_id = for_uid;
        }
        info
    } else if let Some(rest) = msg.strip_prefix("session closed for user ") {
        let (name, uid) = name_uid(rest);
        AuthInfo {
            action: "pam_session_close",
            outcome: Some(Outcome::Success),
            user: name,
            user_id: uid,
            ..Default::default()
        }
    } else {
        return None;
    };
    info.labels.push(("pam.service", cap(service)));
    Some(info)
}

fn parse_sudo(body: &str) -> Option<AuthInfo> {
    // "  bob : TTY=pts/0 ; PWD=/home/bob ; USER=root ; COMMAND=/usr/bin/ls -la"
    // "bob : 3 incorrect password attempts ; TTY=pts/0 ; ..."
    let body = body.trim_start();
    let (user, rest) = body.split_once(" : ")?;
    if user.is_empty() || user.contains(' ') {
        return None;
    }
    let mut info = AuthInfo {
        action: "sudo",
        outcome: Some(Outcome::Success),
        user: nonempty(user),
        ..Default::default()
    };
    let mut rest = rest;
    let mut seen_field = false;
    let mut first = true;
    loop {
        if let Some(cmd) = rest.strip_prefix("COMMAND=") {
            // The command is last and may itself contain " ; ".
            info.command_line = Some(cmd[..floor_char_boundary(cmd, 8192)].to_string());
            seen_field = true;
            break;
        }
        let (seg, next) = match rest.split_once(" ; ") {
            Some((s, n)) => (s, Some(n)),
            None => (rest, None),
        };
        match seg.split_once('=') {
            Some(("TTY", v)) => info.tty = nonempty(v).filter(|t| t != "unknown"),
            Some(("PWD", v)) => info.working_directory = nonempty(v),
            Some(("USER", v)) => info.target = nonempty(v),
            Some(("GROUP", v)) => info.labels.push(("sudo.group", cap(v))),
            Some((_, _)) => {}
            None if first => {
                // A reason before the fields means sudo refused or the password was wrong.
                info.outcome = Some(Outcome::Failure);
                info.labels.push(("sudo.reason", cap(seg)));
            }
            None => {}
        }
        seen_field |= seg.contains('=');
        first = false;
        match next {
            Some(n) => rest = n,
            None => break,
        }
    }
    if !seen_field {
        return None;
    }
    if info.target.is_none() {
        info.target = Some("root".into());
    }
    Some(info)
}

fn parse_su(body: &str) -> Option<AuthInfo> {
    let su = |outcome, user: &str, target: &str, tty: Option<&str>| AuthInfo {
        action: "su",
        outcome: Some(outcome),
        user: nonempty(user),
        target: nonempty(target),
        tty: tty.and_then(nonempty),
        ..Default::default()
    };
    // "(to root) bob on pts/0", "FAILED SU (to root) bob on pts/0"
    let (outcome, rest) = match body.strip_prefix("FAILED SU ") {
        Some(r) => (Outcome::Failure, r),
        None => (Outcome::Success, body),
    };
    if let Some(rest) = rest.strip_prefix("(to ") {
        let (target, rest) = rest.split_once(") ")?;
        let (user, tty) = match rest.rsplit_once(" on ") {
            Some((u, t)) => (u, Some(t)),
            None => (rest, None),
        };
        return Some(su(outcome, user, target, tty));
    }
    // "Successful su for root by bob", "FAILED su for root by bob"
    for (prefix, outcome) in [
        ("Successful su for ", Outcome::Success),
        ("FAILED su for ", Outcome::Failure),
    ] {
        if let Some(rest) = body.strip_prefix(prefix) {
            let (target, user) = rest.split_once(" by ")?;
            return Some(su(outcome, user, target, None));
        }
    }
    // "+ pts/0 bob:root" / "- pts/0 bob:root"
    for (prefix, outcome) in [("+ ", Outcome::Success), ("- ", Outcome::Failure)] {
        if let Some(rest) = body.strip_prefix(prefix) {
            let (tty, pair) = rest.split_once(' ')?;
            let (user, target) = pair.split_once(':')?;
            return Some(su(outcome, user, target, Some(tty)));
        }
    }
    None
}

fn parse_login(body: &str) -> Option<AuthInfo> {
    let unquote = |s: &str| s.trim().trim_matches('\'').to_string();
    // "FAILED LOGIN 1 FROM tty1 FOR root, Authentication failure"
    // "FAILED LOGIN (1) on '/dev/tty1' FOR 'root', Authentication failure"
    if let Some(rest) = body.strip_prefix("FAILED LOGIN") {
        let at = rest.rfind(" FOR ")?;
        let user = rest[at + 5..].split(',').next().unwrap_or("");
        let tty = rest[..at].rsplit(' ').next().map(unquote);
        return Some(AuthInfo {
            action: "login",
            outcome: Some(Outcome::Failure),
            user: nonempty(&unquote(user)),
            tty: tty.as_deref().and_then(nonempty),
            ..Default::default()
        });
    }
    // "ROOT LOGIN ON tty1", "ROOT LOGIN  on '/dev/tty1'"
    if let Some(rest) = body.strip_prefix("ROOT LOGIN") {
        let tty = rest
            .trim()
            .strip_prefix("ON ")
            .or_else(|| rest.trim().strip_prefix("on "))
            .map(unquote);
        return Some(AuthInfo {
            action: "login",
            outcome: Some(Outcome::Success),
            user: Some("root".into()),
            tty: tty.as_deref().and_then(nonempty),
            ..Default::default()
        });
    }
    // "LOGIN ON tty1 BY bob"
    if let Some(rest) = body.strip_prefix("LOGIN ON ") {
        let (tty, user) = rest.split_once(" BY ")?;
        return Some(AuthInfo {
            action: "login",
            outcome: Some(Outcome::Success),
            user: nonempty(user),
            tty: nonempty(tty),
            ..Default::default()
        });
    }
    None
}

fn apply(ev: &mut Event, info: AuthInfo) {
    ev.event.kind = Kind::Authentication;
    ev.event.action = info.action.to_string();
    ev.event.outcome = info.outcome;
    if info.user.is_some() || info.target.is_some() {
        let user = ev.user.get_or_insert_with(User::default);
        if let Some(name) = info.user {
            user.name = name;
        }
        if info.user_id.is_some() {
            user.id = info.user_id;
        }
        if let Some(t) = info.target {
            user.target = Some(UserRef {
                name: t,
                id: info.target_id,
            });
        }
    }
    // The line's own peer (the SSH client, PAM's rhost) replaces whatever `source` held
    // (a syslog sender keeps its address in `labels.log.source.address`).
    if let Some(src) = info.source {
        ev.source = Some(match src.parse::<IpAddr>() {
            Ok(ip) => Endpoint {
                ip: Some(ip),
                port: info.source_port,
                address: String::new(),
            },
            Err(_) => Endpoint {
                ip: None,
                port: info.source_port,
                address: src,
            },
        });
    }
    if info.command_line.is_some() || info.working_directory.is_some() || info.tty.is_some() {
        let p = ev.process.get_or_insert_with(Process::default);
        if let Some(c) = info.command_line {
            p.args = c.split_whitespace().take(256).map(str::to_string).collect();
            p.command_line = c;
        }
        if let Some(w) = info.working_directory {
            p.working_directory = w;
        }
        if info.tty.is_some() {
            p.tty = info.tty;
        }
    }
    for (k, v) in info.labels {
        ev.add_label(k, &v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::syslog::{TimeCtx, parse_file_line};
    use crate::parse::time::SourceTz;
    use vigie_proto::event::{Log, LogFile, Syslog, Timestamp};

    fn ev(program: &str, msg: &str) -> Event {
        let mut e = Event::new(Kind::Log, Timestamp(0));
        e.log = Some(Log {
            logger: program.into(),
            ..Default::default()
        });
        e.set_message(msg);
        enrich_auth(&mut e);
        e
    }

    fn user(e: &Event) -> Option<&str> {
        e.user.as_ref().map(|u| u.name.as_str())
    }
    fn target(e: &Event) -> Option<&str> {
        e.user
            .as_ref()
            .and_then(|u| u.target.as_ref())
            .map(|t| t.name.as_str())
    }
    fn src(e: &Event) -> (Option<String>, Option<u16>) {
        (
            e.source.as_ref().and_then(|s| s.ip).map(|i| i.to_string()),
            e.source.as_ref().and_then(|s| s.port),
        )
    }
    fn label<'a>(e: &'a Event, k: &str) -> Option<&'a str> {
        e.labels.get(k).map(String::as_str)
    }

    /// (program, message, action, outcome, user, target, source ip, source port)
    type Case<'a> = (
        &'a str,
        &'a str,
        &'a str,
        Option<Outcome>,
        Option<&'a str>,
        Option<&'a str>,
        Option<&'a str>,
        Option<u16>,
    );

    #[test]
    fn table() {
        use Outcome::*;
        let cases: &[Case] = &[
            (
                "sshd",
                "Failed password for root from 1.2.3.4 port 2222 ssh2",
                "ssh_login",
                Some(Failure),
                Some("root"),
                None,
                Some("1.2.3.4"),
                Some(2222),
            ),
            (
                "sshd",
                "Failed password for invalid user admin from 1.2.3.4 port 2222 ssh2",
                "ssh_login",
                Some(Failure),
                Some("admin"),
                None,
                Some("1.2.3.4"),
                Some(2222),
            ),
            (
                "sshd",
                "Accepted publickey for bob from 10.0.0.9 port 50122 ssh2: ED25519 SHA256:abcdEFGH",
                "ssh_login",
                Some(Success),
                Some("bob"),
                None,
                Some("10.0.0.9"),
                Some(50122),
            ),
            (
                "sshd",
                "Accepted password for fztu from 119.137.62.142 port 49116 ssh2",
                "ssh_login",
                Some(Success),
                Some("fztu"),
                None,
                Some("119.137.62.142"),
                Some(49116),
            ),
            (
                "sshd-session",
                "Accepted keyboard-interactive/pam for eve from 2001:db8::1 port 4 ssh2",
                "ssh_login",
                Some(Success),
                Some("eve"),
                None,
                Some("2001:db8::1"),
                Some(4),
            ),
            (
                "/usr/sbin/sshd",
                "Invalid user x from 1.2.3.4 port 5",
                "ssh_invalid_user",
                Some(Failure),
                Some("x"),
                None,
                Some("1.2.3.4"),
                Some(5),
            ),
            (
                "sshd",
                "Invalid user webmaster from 173.234.31.186",
                "ssh_invalid_user",
                Some(Failure),
                Some("webmaster"),
                None,
                Some("173.234.31.186"),
                None,
            ),
            (
                "sshd",
                "Connection closed by authenticating user root 1.2.3.4 port 2 [preauth]",
                "ssh_disconnect_preauth",
                Some(Unknown),
                Some("root"),
                None,
                Some("1.2.3.4"),
                Some(2),
            ),
            (
                "sshd",
                "Disconnected from invalid user oracle 5.6.7.8 port 40000 [preauth]",
                "ssh_disconnect_preauth",
                Some(Unknown),
                Some("oracle"),
                None,
                Some("5.6.7.8"),
                Some(40000),
            ),
            (
                "sshd",
                "Received disconnect from 5.6.7.8 port 41:11: Bye Bye [preauth]",
                "ssh_disconnect_preauth",
                Some(Unknown),
                None,
                None,
                Some("5.6.7.8"),
                Some(41),
            ),
            (
                "sshd",
                "Received disconnect from 103.99.0.122: 11: Bye Bye [preauth]",
                "ssh_disconnect_preauth",
                Some(Unknown),
                None,
                None,
                Some("103.99.0.122"),
                None,
            ),
            (
                "sshd",
                "Connection closed by 1.2.3.4 [preauth]",
                "ssh_disconnect_preauth",
                Some(Unknown),
                None,
                None,
                Some("1.2.3.4"),
                None,
            ),
            (
                "sshd",
                "error: maximum authentication attempts exceeded for invalid user pi from 9.9.9.9 port 3 ssh2 [preauth]",
                "ssh_max_auth_attempts",
                Some(Failure),
                Some("pi"),
                None,
                Some("9.9.9.9"),
                Some(3),
            ),
            (
                "sshd",
                "Disconnecting: Too many authentication failures for admin [preauth]",
                "ssh_max_auth_attempts",
                Some(Failure),
                Some("admin"),
                None,
                None,
                None,
            ),
            (
                "sshd",
                "Disconnected from user bob 10.0.0.9 port 50122",
                "ssh_logout",
                Some(Success),
                Some("bob"),
                None,
                Some("10.0.0.9"),
                Some(50122),
            ),
            (
                "sshd",
                "pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost=1.2.3.4  user=root",
                "pam_auth_failure",
                Some(Failure),
                Some("root"),
                None,
                Some("1.2.3.4"),
                None,
            ),
            (
                "sshd",
                "pam_unix(sshd:session): session opened for user bob(uid=1000) by (uid=0)",
                "pam_session_open",
                Some(Success),
                Some("bob"),
                None,
                None,
                None,
            ),
            (
                "sshd",
                "pam_unix(sshd:session): session closed for user bob",
                "pam_session_close",
                Some(Success),
                Some("bob"),
                None,
                None,
                None,
            ),
            (
                "sudo",
                "pam_unix(sudo:session): session opened for user root(uid=0) by bob(uid=1000)",
                "pam_session_open",
                Some(Success),
                Some("bob"),
                Some("root"),
                None,
                None,
            ),
            (
                "CRON",
                "pam_unix(cron:session): session opened for user root(uid=0) by (uid=0)",
                "pam_session_open",
                Some(Success),
                Some("root"),
                None,
                None,
                None,
            ),
            (
                "sudo",
                "  bob : TTY=pts/0 ; PWD=/home/bob ; USER=root ; COMMAND=/usr/bin/ls -la",
                "sudo",
                Some(Success),
                Some("bob"),
                Some("root"),
                None,
                None,
            ),
            (
                "sudo",
                "bob : 3 incorrect password attempts ; TTY=pts/0 ; PWD=/home/bob ; USER=root ; COMMAND=/usr/bin/id",
                "sudo",
                Some(Failure),
                Some("bob"),
                Some("root"),
                None,
                None,
            ),
            (
                "sudo",
                "eve : user NOT in sudoers ; TTY=pts/1 ; PWD=/tmp ; USER=root ; COMMAND=/bin/sh",
                "sudo",
                Some(Failure),
                Some("eve"),
                Some("root"),
                None,
                None,
            ),
            (
                "su",
                "(to root) bob on pts/0",
                "su",
                Some(Success),
                Some("bob"),
                Some("root"),
                None,
                None,
            ),
            (
                "su",
                "FAILED SU (to root) bob on pts/0",
                "su",
                Some(Failure),
                Some("bob"),
                Some("root"),
                None,
                None,
            ),
            (
                "su",
                "Successful su for postgres by root",
                "su",
                Some(Success),
                Some("root"),
                Some("postgres"),
                None,
                None,
            ),
            (
                "su",
                "- pts/3 bob:root",
                "su",
                Some(Failure),
                Some("bob"),
                Some("root"),
                None,
                None,
            ),
            (
                "su",
                "pam_unix(su:auth): authentication failure; logname=bob uid=1000 euid=0 tty=pts/0 ruser=bob rhost=  user=root",
                "pam_auth_failure",
                Some(Failure),
                Some("bob"),
                Some("root"),
                None,
                None,
            ),
            (
                "su(pam_unix)",
                "session opened for user cyrus by (uid=0)",
                "pam_session_open",
                Some(Success),
                Some("cyrus"),
                None,
                None,
                None,
            ),
            (
                "login",
                "FAILED LOGIN 1 FROM tty1 FOR root, Authentication failure",
                "login",
                Some(Failure),
                Some("root"),
                None,
                None,
                None,
            ),
            (
                "login",
                "FAILED LOGIN (1) on '/dev/tty1' FOR 'alice', Authentication failure",
                "login",
                Some(Failure),
                Some("alice"),
                None,
                None,
                None,
            ),
            (
                "login",
                "ROOT LOGIN ON tty2",
                "login",
                Some(Success),
                Some("root"),
                None,
                None,
                None,
            ),
            (
                "login",
                "LOGIN ON tty3 BY carol",
                "login",
                Some(Success),
                Some("carol"),
                None,
                None,
                None,
            ),
        ];
        for (program, msg, action, outcome, u, t, ip, port) in cases {
            let e = ev(program, msg);
            assert_eq!(e.kind(), Kind::Authentication, "{program}: {msg}");
            assert_eq!(e.event.action, *action, "{msg}");
            assert_eq!(e.event.outcome, *outcome, "{msg}");
            assert_eq!(user(&e), *u, "{msg}");
            assert_eq!(target(&e), *t, "{msg}");
            assert_eq!(src(&e), (ip.map(str::to_string), *port), "{msg}");
            assert_eq!(e.message, *msg, "the raw message is kept");
        }
    }

    #[test]
    fn details() {
        let e = ev(
            "sshd",
            "Accepted publickey for bob from 10.0.0.9 port 50122 ssh2: ED25519 SHA256:abcdEFGH",
        );
        assert_eq!(label(&e, "ssh.method"), Some("publickey"));
        assert_eq!(label(&e, "ssh.key.type"), Some("ED25519"));
        assert_eq!(label(&e, "ssh.key.fingerprint"), Some("SHA256:abcdEFGH"));
        let e = ev(
            "sshd",
            "Accepted keyboard-interactive/pam for eve from 2001:db8::1 port 4 ssh2",
        );
        assert_eq!(label(&e, "ssh.method"), Some("keyboard-interactive"));
        let e = ev(
            "sshd",
            "Failed password for invalid user admin from 1.2.3.4 port 2222 ssh2",
        );
        assert_eq!(label(&e, "ssh.method"), Some("password"));
        assert_eq!(label(&e, "ssh.invalid_user"), Some("true"));

        let e = ev(
            "sudo",
            "  bob : TTY=pts/0 ; PWD=/home/bob ; USER=root ; COMMAND=/usr/bin/ls -la ; echo x",
        );
        let p = e.process.as_ref().expect("process");
        assert_eq!(p.command_line, "/usr/bin/ls -la ; echo x");
        assert_eq!(p.args, vec!["/usr/bin/ls", "-la", ";", "echo", "x"]);
        assert_eq!(p.working_directory, "/home/bob");
        assert_eq!(p.tty.as_deref(), Some("pts/0"));
        let e = ev(
            "sudo",
            "bob : 3 incorrect password attempts ; TTY=pts/0 ; PWD=/home/bob ; USER=root ; COMMAND=/usr/bin/id",
        );
        assert_eq!(
            label(&e, "sudo.reason"),
            Some("3 incorrect password attempts")
        );

        let e = ev(
            "sshd",
            "pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost=host.example  user=root",
        );
        assert_eq!(
            e.source.as_ref().map(|s| s.address.as_str()),
            Some("host.example")
        );
        assert_eq!(label(&e, "pam.module"), Some("pam_unix"));
        assert_eq!(label(&e, "pam.service"), Some("sshd"));
        let e = ev(
            "sshd",
            "pam_unix(sshd:session): session opened for user bob(uid=1000) by (uid=0)",
        );
        assert_eq!(e.user.as_ref().and_then(|u| u.id), Some(1000));
    }

    #[test]
    fn forged_user_names_do_not_move_the_address() {
        let e = ev(
            "sshd",
            "Failed password for invalid user x from 6.6.6.6 port 1 from 1.2.3.4 port 2222 ssh2",
        );
        assert_eq!(src(&e), (Some("1.2.3.4".into()), Some(2222)));
        assert_eq!(user(&e), Some("x from 6.6.6.6 port 1"));
        let e = ev("sshd", "Invalid user  0101 from 5.188.10.180\r");
        assert_eq!(user(&e), Some("0101"));
    }

    #[test]
    fn not_auth() {
        for (program, msg) in [
            (
                "sshd",
                "reverse mapping checking getaddrinfo for x [1.2.3.4] failed - POSSIBLE BREAK-IN ATTEMPT!",
            ),
            ("sshd", "pam_unix(sshd:auth): check pass; user unknown"),
            ("sshd", "Server listening on 0.0.0.0 port 22."),
            ("sshd", "Connection closed by 1.2.3.4 port 5"),
            ("sshd", "Failed"),
            ("sshd", "Failed password"),
            ("sshd", "Accepted password for bob"),
            ("sudo", "pam_unix(sudo:auth): conversation failed"),
            ("sudo", "bob : no fields here"),
            ("su", "(to root"),
            ("nginx", "Failed password for root from 1.2.3.4 port 1 ssh2"),
            ("sshd", "pam_unix("),
            ("sshd", "pam_unix(sshd): x"),
            ("", ""),
        ] {
            let e = ev(program, msg);
            assert_eq!(e.kind(), Kind::Log, "{program}: {msg}");
            assert!(e.event.action.is_empty(), "{msg}");
        }
        // Other kinds are left alone.
        let mut e = Event::new(Kind::ProcessExec, Timestamp(0));
        e.log = Some(Log {
            logger: "sshd".into(),
            ..Default::default()
        });
        e.set_message("Failed password for root from 1.2.3.4 port 1 ssh2");
        enrich_auth(&mut e);
        assert_eq!(e.kind(), Kind::ProcessExec);
    }

    #[test]
    fn file_lines_and_syslog_appname() {
        // The file source keeps the whole line as the message: the body is found after the tag.
        let mut e = Event::new(Kind::Log, Timestamp(0));
        e.set_message(
            "Mar  1 10:00:00 host sshd[42]: Failed password for root from 1.2.3.4 port 2222 ssh2",
        );
        e.log = Some(Log {
            syslog: Some(Syslog {
                appname: "sshd".into(),
                ..Default::default()
            }),
            file: Some(LogFile {
                path: "/var/log/auth.log".into(),
                offset: Some(0),
            }),
            ..Default::default()
        });
        enrich_auth(&mut e);
        assert_eq!(e.event.action, "ssh_login");
        assert_eq!(src(&e), (Some("1.2.3.4".into()), Some(2222)));

        // A host name containing the program does not confuse the tag search.
        let mut e = Event::new(Kind::Log, Timestamp(0));
        e.set_message(
            "Mar  1 10:00:00 sshd-gw sshd[42]: Accepted password for bob from 1.2.3.4 port 22 ssh2",
        );
        e.log = Some(Log {
            logger: "sshd".into(),
            file: Some(LogFile::default()),
            ..Default::default()
        });
        enrich_auth(&mut e);
        assert_eq!(
            (e.event.action.as_str(), user(&e)),
            ("ssh_login", Some("bob"))
        );

        // A user name that looks like a tag cannot hide a failure (the message is the body here).
        let e = ev(
            "sshd",
            "Failed password for invalid user sshd: x from 1.2.3.4 port 22 ssh2",
        );
        assert_eq!(
            (e.event.action.as_str(), user(&e)),
            ("ssh_login", Some("sshd: x"))
        );
    }

    #[test]
    fn never_panics() {
        let progs = ["sshd", "sudo", "su", "login", "x(pam_unix)", "cron"];
        let frags = [
            "Failed ",
            "Accepted ",
            "password ",
            "for ",
            "invalid user ",
            " from ",
            "1.2.3.4",
            " port ",
            "22",
            " ssh2",
            ": ",
            "[preauth]",
            "pam_unix(",
            "sshd:auth",
            "): ",
            "authentication failure;",
            " user=",
            "ruser=",
            "session opened for user ",
            " by ",
            "(uid=",
            ")",
            " : ",
            " ; ",
            "COMMAND=",
            "USER=",
            "(to ",
            "FAILED SU ",
            " on ",
            "FAILED LOGIN",
            " FOR ",
            "ROOT LOGIN",
            "LOGIN ON ",
            " BY ",
            "é",
            "\r",
            "Invalid user ",
            "Connection closed by ",
            "Disconnected from ",
            "=",
            "'",
        ];
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        for _ in 0..30_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let mut x = seed;
            let mut s = String::new();
            for _ in 0..(seed % 10) {
                s.push_str(frags[(x % frags.len() as u64) as usize]);
                x = x
                    .rotate_right(7)
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
            }
            let _ = ev(progs[(seed >> 40) as usize % progs.len()], &s);
        }
    }

    // --- Real samples (Loghub). Counts are made independently with plain substring tests.

    /// The Loghub samples live next to the repository (`../shared/data/loghub`), not in it:
    /// their licence covers research use, so they are not redistributed with Vigie.
    /// `VIGIE_LOGHUB_DIR` points elsewhere.
    fn loghub(name: &str) -> String {
        let dir = std::env::var("VIGIE_LOGHUB_DIR")
            .unwrap_or_else(|_| format!("{}/../../shared/data/loghub", env!("CARGO_MANIFEST_DIR")));
        let path = format!("{dir}/{name}");
        std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!("read {path}: {e}; set VIGIE_LOGHUB_DIR to the directory of the Loghub samples")
        })
    }

    fn file_events(text: &str) -> Vec<Event> {
        let tc = TimeCtx {
            now: chrono::Utc::now(),
            tz: SourceTz::UTC,
        };
        text.lines()
            .map(|line| {
                let mut e = Event::new(Kind::Log, Timestamp(0));
                e.set_message(line);
                e.log = Some(Log {
                    file: Some(LogFile::default()),
                    ..Default::default()
                });
                if let Some(m) = parse_file_line(line, &tc) {
                    m.apply_to(&mut e);
                }
                enrich_auth(&mut e);
                e
            })
            .collect()
    }

    fn count(events: &[Event], action: &str, outcome: Option<Outcome>) -> usize {
        events
            .iter()
            .filter(|e| {
                e.kind() == Kind::Authentication
                    && e.event.action == action
                    && e.event.outcome == outcome
            })
            .count()
    }

    /// Lines whose text after the `sshd[pid]: ` tag starts with `prefix`.
    fn grep_body(text: &str, tag: &str, prefix: &str) -> usize {
        text.lines()
            .filter(|l| match l.find(tag) {
                Some(i) => l[i..]
                    .split_once("]: ")
                    .is_some_and(|(_, body)| body.starts_with(prefix)),
                None => false,
            })
            .count()
    }

    #[test]
    fn openssh_sample() {
        let text = loghub("OpenSSH_2k.log");
        let events = file_events(&text);
        assert_eq!(events.len(), 2000);

        let failed = grep_body(&text, "sshd[", "Failed ");
        let accepted = grep_body(&text, "sshd[", "Accepted ");
        let invalid = grep_body(&text, "sshd[", "Invalid user ");
        let pam_fail = text
            .lines()
            .filter(|l| l.contains("pam_unix(sshd:auth): authentication failure;"))
            .count();
        let opened = text
            .lines()
            .filter(|l| l.contains("pam_unix(sshd:session): session opened for user "))
            .count();
        let closed = text
            .lines()
            .filter(|l| l.contains("pam_unix(sshd:session): session closed for user "))
            .count();
        let too_many = text
            .lines()
            .filter(|l| l.contains("Disconnecting: Too many authentication failures for "))
            .count();
        let preauth_disc = text
            .lines()
            .filter(|l| {
                l.trim_end().ends_with("[preauth]")
                    && [
                        "]: Received disconnect from ",
                        "]: error: Received disconnect from ",
                        "]: Connection closed by ",
                    ]
                    .iter()
                    .any(|p| l.contains(p))
            })
            .count();
        // The numbers the greps find in this sample, written down so a change in the sample shows.
        assert_eq!(
            (
                failed,
                accepted,
                invalid,
                pam_fail,
                opened,
                closed,
                too_many,
                preauth_disc
            ),
            (522, 1, 113, 494, 1, 1, 3, 501)
        );

        assert_eq!(count(&events, "ssh_login", Some(Outcome::Failure)), failed);
        assert_eq!(
            count(&events, "ssh_login", Some(Outcome::Success)),
            accepted
        );
        assert_eq!(
            count(&events, "ssh_invalid_user", Some(Outcome::Failure)),
            invalid
        );
        assert_eq!(
            count(&events, "pam_auth_failure", Some(Outcome::Failure)),
            pam_fail
        );
        assert_eq!(
            count(&events, "pam_session_open", Some(Outcome::Success)),
            opened
        );
        assert_eq!(
            count(&events, "pam_session_close", Some(Outcome::Success)),
            closed
        );
        assert_eq!(
            count(&events, "ssh_max_auth_attempts", Some(Outcome::Failure)),
            too_many
        );
        assert_eq!(
            count(&events, "ssh_disconnect_preauth", Some(Outcome::Unknown)),
            preauth_disc
        );
        let auth_total = events
            .iter()
            .filter(|e| e.kind() == Kind::Authentication)
            .count();
        assert_eq!(
            auth_total,
            failed + accepted + invalid + pam_fail + opened + closed + too_many + preauth_disc
        );

        // Spot checks on specific lines (line numbers are 1-based, as grep -n prints them).
        let line = |n: usize| &events[n - 1];
        // 956: Accepted password for fztu from 119.137.62.142 port 49116 ssh2
        let e = line(956);
        assert_eq!(
            (e.event.action.as_str(), e.event.outcome),
            ("ssh_login", Some(Outcome::Success))
        );
        assert_eq!(user(e), Some("fztu"));
        assert_eq!(src(e), (Some("119.137.62.142".into()), Some(49116)));
        assert_eq!(label(e, "ssh.method"), Some("password"));
        assert_eq!(e.process.as_ref().and_then(|p| p.pid), Some(24680));
        assert_eq!(
            e.log
                .as_ref()
                .and_then(|l| l.syslog.as_ref())
                .map(|s| s.hostname.as_str()),
            Some("LabSZ")
        );
        assert!(
            e.message
                .starts_with("Dec 10 09:32:20 LabSZ sshd[24680]: Accepted password"),
            "{}",
            e.message
        );
        // 2: Invalid user webmaster from 173.234.31.186
        let e = line(2);
        assert_eq!(
            (e.event.action.as_str(), user(e)),
            ("ssh_invalid_user", Some("webmaster"))
        );
        assert_eq!(src(e), (Some("173.234.31.186".into()), None));
        // 5: pam_unix(sshd:auth): authentication failure; ... rhost=173.234.31.186
        let e = line(5);
        assert_eq!(e.event.action, "pam_auth_failure");
        assert_eq!(src(e).0.as_deref(), Some("173.234.31.186"));
        // 189: Failed password for invalid user  0101 from 5.188.10.180 port 36279 ssh2
        let e = line(189);
        assert_eq!(
            (
                e.event.action.as_str(),
                user(e),
                label(e, "ssh.invalid_user")
            ),
            ("ssh_login", Some("0101"), Some("true"))
        );
        assert_eq!(src(e), (Some("5.188.10.180".into()), Some(36279)));
    }

    #[test]
    fn linux_sample() {
        let text = loghub("Linux_2k.log");
        let events = file_events(&text);
        assert_eq!(events.len(), 2000);

        let pam_fail = text
            .lines()
            .filter(|l| l.contains("(pam_unix)[") && l.contains("]: authentication failure;"))
            .count();
        let opened = text
            .lines()
            .filter(|l| l.contains("(pam_unix)[") && l.contains("]: session opened for user "))
            .count();
        let closed = text
            .lines()
            .filter(|l| l.contains("(pam_unix)[") && l.contains("]: session closed for user "))
            .count();
        let su_opened = text
            .lines()
            .filter(|l| l.contains(" su(pam_unix)[") && l.contains("]: session opened for user "))
            .count();
        assert_eq!((pam_fail, opened, closed, su_opened), (490, 123, 123, 86));

        assert_eq!(
            count(&events, "pam_auth_failure", Some(Outcome::Failure)),
            pam_fail
        );
        assert_eq!(
            count(&events, "pam_session_open", Some(Outcome::Success)),
            opened
        );
        assert_eq!(
            count(&events, "pam_session_close", Some(Outcome::Success)),
            closed
        );
        assert_eq!(
            events
                .iter()
                .filter(|e| e.kind() == Kind::Authentication)
                .count(),
            pam_fail + opened + closed
        );

        // 4: sshd(pam_unix)[20882]: authentication failure; ... rhost=220-135-151-1.hinet-ip.hinet.net  user=root
        let e = &events[3];
        assert_eq!(e.event.action, "pam_auth_failure");
        assert_eq!(user(e), Some("root"));
        assert_eq!(
            e.source.as_ref().map(|s| s.address.as_str()),
            Some("220-135-151-1.hinet-ip.hinet.net")
        );
        assert_eq!(label(e, "pam.service"), Some("sshd"));
        // 898: login(pam_unix)[2421]: session opened for user root by LOGIN(uid=0)
        let e = &events[897];
        assert_eq!(
            (e.event.action.as_str(), user(e), target(e)),
            ("pam_session_open", Some("root"), None)
        );
        // su sessions: "su(pam_unix)[...]: session opened for user cyrus by (uid=0)"
        let su = events
            .iter()
            .find(|e| e.event.action == "pam_session_open" && label(e, "pam.service") == Some("su"))
            .expect("an su session");
        assert!(su.message.contains("su(pam_unix)"), "{}", su.message);
        assert!(user(su).is_some());
    }
}

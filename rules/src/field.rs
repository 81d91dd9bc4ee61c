//! Direct, allocation-free access to an [`Event`]'s fields by dotted ECS path.
//!
//! [`Event::visit_fields`] walks every field of an event; the rule engine only
//! needs the handful of fields its rules name, so it resolves each path once, at
//! compile time, into a [`FieldRef`] and reads that field straight from the
//! struct. A test checks that every path in [`vigie_proto::event::FIELD_PATHS`]
//! reads exactly what `visit_fields` yields, so the two cannot drift apart.

use std::fmt;

use vigie_proto::event::{Endpoint, Event, FieldValue, Kind, Timestamp, UserRef};

macro_rules! known_fields {
    ($($variant:ident => $path:literal,)*) => {
        /// A field of the closed event types.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Known { $($variant,)* }

        impl Known {
            /// Every known field, in `FIELD_PATHS` order.
            pub const ALL: &'static [Known] = &[$(Known::$variant,)*];

            /// The dotted ECS path.
            pub fn path(self) -> &'static str {
                match self { $(Known::$variant => $path,)* }
            }
        }
    };
}

known_fields! {
    Timestamp => "@timestamp",
    EventDataset => "event.dataset",
    EventKind => "event.kind",
    EventCategory => "event.category",
    EventAction => "event.action",
    EventOutcome => "event.outcome",
    EventModule => "event.module",
    EventId => "event.id",
    HostName => "host.name",
    HostId => "host.id",
    HostIp => "host.ip",
    AgentId => "agent.id",
    AgentVersion => "agent.version",
    Message => "message",
    LogLevel => "log.level",
    LogLogger => "log.logger",
    LogFilePath => "log.file.path",
    SyslogFacility => "log.syslog.facility.code",
    SyslogPriority => "log.syslog.priority",
    SyslogHostname => "log.syslog.hostname",
    SyslogAppname => "log.syslog.appname",
    SyslogProcid => "log.syslog.procid",
    SyslogMsgid => "log.syslog.msgid",
    ProcessPid => "process.pid",
    ProcessName => "process.name",
    ProcessExecutable => "process.executable",
    ProcessCommandLine => "process.command_line",
    ProcessArgs => "process.args",
    ProcessWorkingDirectory => "process.working_directory",
    ProcessExitCode => "process.exit_code",
    ProcessTty => "process.tty",
    ProcessUserName => "process.user.name",
    ProcessUserId => "process.user.id",
    ParentPid => "process.parent.pid",
    ParentName => "process.parent.name",
    ParentExecutable => "process.parent.executable",
    ParentCommandLine => "process.parent.command_line",
    UserName => "user.name",
    UserId => "user.id",
    UserTargetName => "user.target.name",
    UserTargetId => "user.target.id",
    UserEffectiveName => "user.effective.name",
    UserEffectiveId => "user.effective.id",
    SourceIp => "source.ip",
    SourcePort => "source.port",
    SourceAddress => "source.address",
    DestinationIp => "destination.ip",
    DestinationPort => "destination.port",
    DestinationAddress => "destination.address",
    NetworkTransport => "network.transport",
    NetworkType => "network.type",
    NetworkDirection => "network.direction",
    NetworkProtocol => "network.protocol",
    FilePath => "file.path",
    FileTargetPath => "file.target_path",
    FileSize => "file.size",
    FileMode => "file.mode",
    FileSha256 => "file.hash.sha256",
    CpuPct => "system.cpu.pct",
    MemoryUsed => "system.memory.used.bytes",
    MemoryTotal => "system.memory.total.bytes",
    Load1 => "system.load.1",
    Load5 => "system.load.5",
    Load15 => "system.load.15",
    DiskUsed => "system.disk.used.bytes",
    DiskTotal => "system.disk.total.bytes",
    NetIn => "system.network.in.bytes",
    NetOut => "system.network.out.bytes",
    Uptime => "system.uptime",
    Processes => "system.processes",
    PackageName => "package.name",
    PackageVersion => "package.version",
    PackageArchitecture => "package.architecture",
    HealthDropped => "vigie.health.dropped_events",
    HealthCorrupt => "vigie.health.corrupt_records",
    HealthSpoolBytes => "vigie.health.spool_bytes",
    HealthSpoolEvents => "vigie.health.spool_events",
    HealthNewEpochReason => "vigie.health.new_epoch_reason",
    CommandId => "vigie.command.id",
    CommandState => "vigie.command.state",
    CommandExitCode => "vigie.command.exit_code",
}

/// A resolved event field: one of the closed fields, or a `labels.<key>` entry.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FieldRef {
    Known(Known),
    /// `labels.<key>`; holds the key.
    Label(String),
}

/// What kind of value a field holds, for generating and checking values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldType {
    Str,
    Int,
    Float,
    Ip,
}

impl FieldRef {
    /// Resolves a dotted ECS path; `None` when Vigie has no such field.
    pub fn parse(path: &str) -> Option<FieldRef> {
        if let Some(key) = path.strip_prefix("labels.") {
            if key.is_empty() {
                return None;
            }
            return Some(FieldRef::Label(key.to_string()));
        }
        Known::ALL
            .iter()
            .find(|k| k.path() == path)
            .map(|k| FieldRef::Known(*k))
    }

    /// The dotted ECS path.
    pub fn path(&self) -> String {
        match self {
            FieldRef::Known(k) => k.path().to_string(),
            FieldRef::Label(key) => format!("labels.{key}"),
        }
    }

    /// The type of the values this field yields.
    pub fn field_type(&self) -> FieldType {
        use Known::*;
        match self {
            FieldRef::Label(_) => FieldType::Str,
            FieldRef::Known(k) => match k {
                Timestamp | SyslogFacility | SyslogPriority | ProcessPid | ProcessExitCode
                | ProcessUserId | ParentPid | UserId | UserTargetId | UserEffectiveId
                | SourcePort | DestinationPort | FileSize | MemoryUsed | MemoryTotal | DiskUsed
                | DiskTotal | NetIn | NetOut | Uptime | Processes | HealthDropped
                | HealthCorrupt | HealthSpoolBytes | HealthSpoolEvents | CommandExitCode => {
                    FieldType::Int
                }
                CpuPct | Load1 | Load5 | Load15 => FieldType::Float,
                HostIp | SourceIp | DestinationIp => FieldType::Ip,
                _ => FieldType::Str,
            },
        }
    }

    /// Calls `f` with every value of this field in `ev`, exactly as
    /// [`Event::visit_fields`] would yield them (empty strings are absent).
    pub fn read<'a>(&self, ev: &'a Event, f: &mut dyn FnMut(FieldValue<'a>)) {
        match self {
            FieldRef::Label(key) => {
                if let Some(v) = ev.labels.get(key.as_str()) {
                    f(FieldValue::Str(v))
                }
            }
            FieldRef::Known(k) => read_known(*k, ev, f),
        }
    }

    /// True when the field has at least one value in `ev`.
    pub fn exists(&self, ev: &Event) -> bool {
        let mut found = false;
        self.read(ev, &mut |_| found = true);
        found
    }

    /// Sets this field in `ev` from its text form (used to build example events).
    pub fn set(&self, ev: &mut Event, text: &str) -> Result<(), String> {
        set_field(self, ev, text)
    }
}

impl fmt::Display for FieldRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FieldRef::Known(k) => f.write_str(k.path()),
            FieldRef::Label(key) => write!(f, "labels.{key}"),
        }
    }
}

fn s<'a>(f: &mut dyn FnMut(FieldValue<'a>), v: &'a str) {
    if !v.is_empty() {
        f(FieldValue::Str(v))
    }
}

fn opt_int<'a, T: Copy + Into<i64>>(f: &mut dyn FnMut(FieldValue<'a>), v: Option<T>) {
    if let Some(v) = v {
        f(FieldValue::Int(v.into()))
    }
}

fn read_known<'a>(k: Known, ev: &'a Event, f: &mut dyn FnMut(FieldValue<'a>)) {
    use FieldValue::*;
    use Known::*;
    let log = ev.log.as_ref();
    let syslog = log.and_then(|l| l.syslog.as_ref());
    let proc_ = ev.process.as_ref();
    let parent = proc_.and_then(|p| p.parent.as_ref());
    let user = ev.user.as_ref();
    let file = ev.file.as_ref();
    let net = ev.network.as_ref();
    let sys = ev.system.as_ref();
    let pkg = ev.package.as_ref();
    let health = ev.vigie.as_ref().and_then(|v| v.health.as_ref());
    let cmd = ev.vigie.as_ref().and_then(|v| v.command.as_ref());
    let endpoint = |e: &'a Option<Endpoint>| e.as_ref();
    let uref = |u: Option<&'a UserRef>, f: &mut dyn FnMut(FieldValue<'a>), name: bool| {
        if let Some(u) = u {
            if name {
                s(f, &u.name)
            } else {
                opt_int(f, u.id)
            }
        }
    };
    match k {
        Timestamp => f(Int(ev.timestamp.millis())),
        EventDataset => f(Str(ev.event.kind.as_str())),
        EventKind => f(Str(ev.event.kind.ecs_kind())),
        EventCategory => {
            for c in ev.event.kind.ecs_category() {
                f(Str(c))
            }
        }
        EventAction => s(f, &ev.event.action),
        EventOutcome => {
            if let Some(o) = ev.event.outcome {
                f(Str(o.as_str()))
            }
        }
        EventModule => s(f, &ev.event.module),
        EventId => s(f, &ev.event.id),
        HostName => s(f, &ev.host.name),
        HostId => s(f, &ev.host.id),
        HostIp => {
            for ip in &ev.host.ip {
                f(Ip(*ip))
            }
        }
        AgentId => {
            if let Some(a) = &ev.agent {
                s(f, &a.id)
            }
        }
        AgentVersion => {
            if let Some(a) = &ev.agent {
                s(f, &a.version)
            }
        }
        Message => s(f, &ev.message),
        LogLevel => {
            if let Some(l) = log {
                f(Str(l.level.as_str()))
            }
        }
        LogLogger => {
            if let Some(l) = log {
                s(f, &l.logger)
            }
        }
        LogFilePath => {
            if let Some(file) = log.and_then(|l| l.file.as_ref()) {
                s(f, &file.path)
            }
        }
        SyslogFacility => opt_int(f, syslog.and_then(|s| s.facility)),
        SyslogPriority => opt_int(f, syslog.and_then(|s| s.priority)),
        SyslogHostname => {
            if let Some(sl) = syslog {
                s(f, &sl.hostname)
            }
        }
        SyslogAppname => {
            if let Some(sl) = syslog {
                s(f, &sl.appname)
            }
        }
        SyslogProcid => {
            if let Some(sl) = syslog {
                s(f, &sl.procid)
            }
        }
        SyslogMsgid => {
            if let Some(sl) = syslog {
                s(f, &sl.msgid)
            }
        }
        ProcessPid => opt_int(f, proc_.and_then(|p| p.pid)),
        ProcessName => {
            if let Some(p) = proc_ {
                s(f, &p.name)
            }
        }
        ProcessExecutable => {
            if let Some(p) = proc_ {
                s(f, &p.executable)
            }
        }
        ProcessCommandLine => {
            if let Some(p) = proc_ {
                s(f, &p.command_line)
            }
        }
        ProcessArgs => {
            if let Some(p) = proc_ {
                for a in &p.args {
                    f(Str(a))
                }
            }
        }
        ProcessWorkingDirectory => {
            if let Some(p) = proc_ {
                s(f, &p.working_directory)
            }
        }
        ProcessExitCode => opt_int(f, proc_.and_then(|p| p.exit_code)),
        ProcessTty => {
            if let Some(t) = proc_.and_then(|p| p.tty.as_ref()) {
                s(f, t)
            }
        }
        ProcessUserName => uref(proc_.and_then(|p| p.user.as_ref()), f, true),
        ProcessUserId => uref(proc_.and_then(|p| p.user.as_ref()), f, false),
        ParentPid => opt_int(f, parent.and_then(|p| p.pid)),
        ParentName => {
            if let Some(p) = parent {
                s(f, &p.name)
            }
        }
        ParentExecutable => {
            if let Some(p) = parent {
                s(f, &p.executable)
            }
        }
        ParentCommandLine => {
            if let Some(p) = parent {
                s(f, &p.command_line)
            }
        }
        UserName => {
            if let Some(u) = user {
                s(f, &u.name)
            }
        }
        UserId => opt_int(f, user.and_then(|u| u.id)),
        UserTargetName => uref(user.and_then(|u| u.target.as_ref()), f, true),
        UserTargetId => uref(user.and_then(|u| u.target.as_ref()), f, false),
        UserEffectiveName => uref(user.and_then(|u| u.effective.as_ref()), f, true),
        UserEffectiveId => uref(user.and_then(|u| u.effective.as_ref()), f, false),
        SourceIp => {
            if let Some(ip) = endpoint(&ev.source).and_then(|e| e.ip) {
                f(Ip(ip))
            }
        }
        SourcePort => opt_int(f, endpoint(&ev.source).and_then(|e| e.port)),
        SourceAddress => {
            if let Some(e) = endpoint(&ev.source) {
                s(f, &e.address)
            }
        }
        DestinationIp => {
            if let Some(ip) = endpoint(&ev.destination).and_then(|e| e.ip) {
                f(Ip(ip))
            }
        }
        DestinationPort => opt_int(f, endpoint(&ev.destination).and_then(|e| e.port)),
        DestinationAddress => {
            if let Some(e) = endpoint(&ev.destination) {
                s(f, &e.address)
            }
        }
        NetworkTransport => {
            if let Some(n) = net {
                s(f, &n.transport)
            }
        }
        NetworkType => {
            if let Some(n) = net {
                s(f, &n.r#type)
            }
        }
        NetworkDirection => {
            if let Some(n) = net {
                s(f, &n.direction)
            }
        }
        NetworkProtocol => {
            if let Some(n) = net {
                s(f, &n.protocol)
            }
        }
        FilePath => {
            if let Some(x) = file {
                s(f, &x.path)
            }
        }
        FileTargetPath => {
            if let Some(x) = file {
                s(f, &x.target_path)
            }
        }
        FileSize => {
            if let Some(v) = file.and_then(|x| x.size) {
                f(Int(v as i64))
            }
        }
        FileMode => {
            if let Some(v) = file.and_then(|x| x.mode.as_ref()) {
                s(f, v)
            }
        }
        FileSha256 => {
            if let Some(v) = file.and_then(|x| x.sha256.as_ref()) {
                s(f, v)
            }
        }
        CpuPct => {
            if let Some(m) = sys {
                f(Float(m.cpu_pct))
            }
        }
        MemoryUsed => {
            if let Some(m) = sys {
                f(Int(m.memory_used_bytes as i64))
            }
        }
        MemoryTotal => {
            if let Some(m) = sys {
                f(Int(m.memory_total_bytes as i64))
            }
        }
        Load1 => {
            if let Some(m) = sys {
                f(Float(m.load_1))
            }
        }
        Load5 => {
            if let Some(m) = sys {
                f(Float(m.load_5))
            }
        }
        Load15 => {
            if let Some(m) = sys {
                f(Float(m.load_15))
            }
        }
        DiskUsed => {
            if let Some(m) = sys {
                f(Int(m.disk_used_bytes as i64))
            }
        }
        DiskTotal => {
            if let Some(m) = sys {
                f(Int(m.disk_total_bytes as i64))
            }
        }
        NetIn => {
            if let Some(m) = sys {
                f(Int(m.network_in_bytes as i64))
            }
        }
        NetOut => {
            if let Some(m) = sys {
                f(Int(m.network_out_bytes as i64))
            }
        }
        Uptime => {
            if let Some(m) = sys {
                f(Int(m.uptime_secs as i64))
            }
        }
        Processes => {
            if let Some(m) = sys {
                f(Int(m.processes.into()))
            }
        }
        PackageName => {
            if let Some(p) = pkg {
                s(f, &p.name)
            }
        }
        PackageVersion => {
            if let Some(p) = pkg {
                s(f, &p.version)
            }
        }
        PackageArchitecture => {
            if let Some(p) = pkg {
                s(f, &p.architecture)
            }
        }
        HealthDropped => {
            if let Some(h) = health {
                f(Int(h.dropped_events as i64))
            }
        }
        HealthCorrupt => {
            if let Some(h) = health {
                f(Int(h.corrupt_records as i64))
            }
        }
        HealthSpoolBytes => {
            if let Some(h) = health {
                f(Int(h.spool_bytes as i64))
            }
        }
        HealthSpoolEvents => {
            if let Some(h) = health {
                f(Int(h.spool_events as i64))
            }
        }
        HealthNewEpochReason => {
            if let Some(h) = health {
                s(f, &h.new_epoch_reason)
            }
        }
        CommandId => {
            if let Some(c) = cmd {
                s(f, &c.command_id)
            }
        }
        CommandState => {
            if let Some(c) = cmd {
                s(f, &c.state)
            }
        }
        CommandExitCode => opt_int(f, cmd.and_then(|c| c.exit_code)),
    }
}

fn parse_int<T: std::str::FromStr>(path: &str, text: &str) -> Result<T, String> {
    text.parse::<T>()
        .map_err(|_| format!("field {path} needs a number, not {text:?}"))
}

fn set_field(field: &FieldRef, ev: &mut Event, text: &str) -> Result<(), String> {
    use Known::*;
    let path = field.path();
    let k = match field {
        FieldRef::Label(key) => {
            ev.labels.insert(key.clone(), text.to_string());
            return Ok(());
        }
        FieldRef::Known(k) => *k,
    };
    let ip = |t: &str| {
        t.parse::<std::net::IpAddr>()
            .map_err(|_| format!("field {path} needs an IP address, not {t:?}"))
    };
    match k {
        Timestamp => {
            ev.timestamp = vigie_proto::event::Timestamp::from_millis(parse_int(&path, text)?)
        }
        EventDataset => {
            ev.event.kind =
                Kind::parse(text).ok_or_else(|| format!("event.dataset {text:?} is not a kind"))?
        }
        EventAction => ev.event.action = text.into(),
        EventModule => ev.event.module = text.into(),
        EventId => ev.event.id = text.into(),
        HostName => ev.host.name = text.into(),
        HostId => ev.host.id = text.into(),
        HostIp => ev.host.ip.push(ip(text)?),
        Message => ev.message = text.into(),
        LogLogger => ev.log.get_or_insert_with(Default::default).logger = text.into(),
        LogFilePath => {
            ev.log
                .get_or_insert_with(Default::default)
                .file
                .get_or_insert_with(Default::default)
                .path = text.into()
        }
        SyslogAppname | SyslogHostname | SyslogProcid | SyslogMsgid => {
            let sl = ev
                .log
                .get_or_insert_with(Default::default)
                .syslog
                .get_or_insert_with(Default::default);
            let slot = match k {
                SyslogAppname => &mut sl.appname,
                SyslogHostname => &mut sl.hostname,
                SyslogProcid => &mut sl.procid,
                _ => &mut sl.msgid,
            };
            *slot = text.into();
        }
        ProcessPid => {
            ev.process.get_or_insert_with(Default::default).pid = Some(parse_int(&path, text)?)
        }
        ProcessName => ev.process.get_or_insert_with(Default::default).name = text.into(),
        ProcessExecutable => {
            ev.process.get_or_insert_with(Default::default).executable = text.into()
        }
        ProcessCommandLine => {
            ev.process.get_or_insert_with(Default::default).command_line = text.into()
        }
        ProcessArgs => ev
            .process
            .get_or_insert_with(Default::default)
            .args
            .push(text.into()),
        ProcessWorkingDirectory => {
            ev.process
                .get_or_insert_with(Default::default)
                .working_directory = text.into()
        }
        ProcessExitCode => {
            ev.process.get_or_insert_with(Default::default).exit_code =
                Some(parse_int(&path, text)?)
        }
        ProcessTty => ev.process.get_or_insert_with(Default::default).tty = Some(text.into()),
        ProcessUserName => {
            ev.process
                .get_or_insert_with(Default::default)
                .user
                .get_or_insert_with(Default::default)
                .name = text.into()
        }
        ProcessUserId => {
            ev.process
                .get_or_insert_with(Default::default)
                .user
                .get_or_insert_with(Default::default)
                .id = Some(parse_int(&path, text)?)
        }
        ParentPid | ParentName | ParentExecutable | ParentCommandLine => {
            let p = ev
                .process
                .get_or_insert_with(Default::default)
                .parent
                .get_or_insert_with(Default::default);
            match k {
                ParentPid => p.pid = Some(parse_int(&path, text)?),
                ParentName => p.name = text.into(),
                ParentExecutable => p.executable = text.into(),
                _ => p.command_line = text.into(),
            }
        }
        UserName => ev.user.get_or_insert_with(Default::default).name = text.into(),
        UserId => ev.user.get_or_insert_with(Default::default).id = Some(parse_int(&path, text)?),
        UserTargetName | UserTargetId | UserEffectiveName | UserEffectiveId => {
            let u = ev.user.get_or_insert_with(Default::default);
            let r = if matches!(k, UserTargetName | UserTargetId) {
                u.target.get_or_insert_with(Default::default)
            } else {
                u.effective.get_or_insert_with(Default::default)
            };
            if matches!(k, UserTargetName | UserEffectiveName) {
                r.name = text.into()
            } else {
                r.id = Some(parse_int(&path, text)?)
            }
        }
        SourceIp | SourcePort | SourceAddress | DestinationIp | DestinationPort
        | DestinationAddress => {
            let e = if matches!(k, SourceIp | SourcePort | SourceAddress) {
                ev.source.get_or_insert_with(Default::default)
            } else {
                ev.destination.get_or_insert_with(Default::default)
            };
            match k {
                SourceIp | DestinationIp => e.ip = Some(ip(text)?),
                SourcePort | DestinationPort => e.port = Some(parse_int(&path, text)?),
                _ => e.address = text.into(),
            }
        }
        NetworkTransport | NetworkType | NetworkDirection | NetworkProtocol => {
            let n = ev.network.get_or_insert_with(Default::default);
            let slot = match k {
                NetworkTransport => &mut n.transport,
                NetworkType => &mut n.r#type,
                NetworkDirection => &mut n.direction,
                _ => &mut n.protocol,
            };
            *slot = text.into();
        }
        FilePath => ev.file.get_or_insert_with(Default::default).path = text.into(),
        FileTargetPath => ev.file.get_or_insert_with(Default::default).target_path = text.into(),
        FileSize => {
            ev.file.get_or_insert_with(Default::default).size = Some(parse_int(&path, text)?)
        }
        FileMode => ev.file.get_or_insert_with(Default::default).mode = Some(text.into()),
        FileSha256 => ev.file.get_or_insert_with(Default::default).sha256 = Some(text.into()),
        PackageName => ev.package.get_or_insert_with(Default::default).name = text.into(),
        PackageVersion => ev.package.get_or_insert_with(Default::default).version = text.into(),
        PackageArchitecture => {
            ev.package.get_or_insert_with(Default::default).architecture = text.into()
        }
        other => return Err(format!("field {} cannot be set from text", other.path())),
    }
    Ok(())
}

/// Milliseconds since the epoch of a timestamp field value, for time modifiers.
pub(crate) fn as_millis(v: &FieldValue<'_>) -> Option<i64> {
    match v {
        FieldValue::Int(ms) => Some(*ms),
        FieldValue::Str(s) => Timestamp::parse_rfc3339(s).ok().map(|t| t.millis()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigie_proto::event::*;

    fn full_event() -> Event {
        let mut e = Event::new(Kind::ProcessExec, Timestamp::from_secs(1_700_000_000));
        e.event.action = "exec".into();
        e.event.outcome = Some(Outcome::Success);
        e.event.module = "ebpf".into();
        e.event.id = "a-1-2".into();
        e.host = Host {
            name: "pve1".into(),
            id: "mid".into(),
            ip: vec!["10.0.0.1".parse().expect("ip"), "::1".parse().expect("ip")],
        };
        e.agent = Some(AgentInfo {
            id: "ag".into(),
            version: "0.1".into(),
        });
        e.message = "hello".into();
        e.log = Some(Log {
            level: Severity::Notice,
            file: Some(LogFile {
                path: "/var/log/x".into(),
                offset: Some(3),
            }),
            syslog: Some(Syslog {
                facility: Some(4),
                priority: Some(38),
                hostname: "h".into(),
                appname: "sshd".into(),
                procid: "12".into(),
                msgid: "m".into(),
                version: "rfc5424".into(),
            }),
            logger: "sshd".into(),
        });
        e.process = Some(Process {
            pid: Some(42),
            name: "bash".into(),
            executable: "/bin/bash".into(),
            command_line: "bash -i".into(),
            args: vec!["bash".into(), "-i".into()],
            working_directory: "/root".into(),
            exit_code: Some(1),
            start: None,
            tty: Some("pts/0".into()),
            user: Some(UserRef {
                name: "root".into(),
                id: Some(0),
            }),
            parent: Some(ParentProcess {
                pid: Some(1),
                name: "sshd".into(),
                executable: "/usr/sbin/sshd".into(),
                command_line: "sshd: root".into(),
            }),
        });
        e.user = Some(User {
            name: "root".into(),
            id: Some(0),
            target: Some(UserRef {
                name: "bob".into(),
                id: Some(1000),
            }),
            effective: Some(UserRef {
                name: "root".into(),
                id: Some(0),
            }),
        });
        e.source = Some(Endpoint {
            ip: Some("10.0.0.5".parse().expect("ip")),
            port: Some(2222),
            address: "a".into(),
        });
        e.destination = Some(Endpoint {
            ip: Some("10.0.0.6".parse().expect("ip")),
            port: Some(22),
            address: "b".into(),
        });
        e.network = Some(Network {
            transport: "tcp".into(),
            r#type: "ipv4".into(),
            direction: "egress".into(),
            protocol: "ssh".into(),
        });
        e.file = Some(File {
            path: "/etc/passwd".into(),
            target_path: "/tmp/x".into(),
            size: Some(10),
            mode: Some("0644".into()),
            uid: None,
            gid: None,
            sha256: Some("ab".into()),
        });
        e.system = Some(SystemMetrics {
            cpu_pct: 0.5,
            memory_used_bytes: 1,
            memory_total_bytes: 2,
            swap_used_bytes: 3,
            load_1: 0.1,
            load_5: 0.2,
            load_15: 0.3,
            disk_used_bytes: 4,
            disk_total_bytes: 5,
            network_in_bytes: 6,
            network_out_bytes: 7,
            uptime_secs: 8,
            processes: 9,
        });
        e.package = Some(Package {
            name: "p".into(),
            version: "1".into(),
            architecture: "amd64".into(),
        });
        e.vigie = Some(VigieExt {
            health: Some(AgentHealth {
                dropped_events: 1,
                corrupt_records: 2,
                spool_bytes: 3,
                spool_events: 4,
                drops_by_source: Default::default(),
                new_epoch_reason: "restore".into(),
            }),
            command: Some(CommandOutcome {
                command_id: "c".into(),
                state: "ok".into(),
                exit_code: Some(0),
                output: String::new(),
            }),
        });
        e.labels.insert("auditd.type".into(), "EXECVE".into());
        e
    }

    #[test]
    fn every_field_path_is_known_and_reads_like_visit_fields() {
        assert_eq!(Known::ALL.len(), FIELD_PATHS.len());
        let e = full_event();
        for path in FIELD_PATHS {
            let f = FieldRef::parse(path).unwrap_or_else(|| panic!("{path} unknown"));
            let mut direct = Vec::new();
            f.read(&e, &mut |v| direct.push(v));
            let mut visited = Vec::new();
            e.visit_fields(&mut |p, v| {
                if p == *path {
                    visited.push(v)
                }
            });
            assert_eq!(direct, visited, "{path}");
            assert!(!direct.is_empty(), "{path} not set in the sample event");
        }
        let l = FieldRef::parse("labels.auditd.type").expect("label");
        assert_eq!(l, FieldRef::Label("auditd.type".into()));
        let mut v = Vec::new();
        l.read(&e, &mut |x| v.push(x));
        assert_eq!(v, vec![FieldValue::Str("EXECVE")]);
        assert_eq!(FieldRef::parse("process.nope"), None);
        assert_eq!(FieldRef::parse("labels."), None);
    }

    #[test]
    fn setters_round_trip_through_readers() {
        for (path, text) in [
            ("process.executable", "/bin/sh"),
            ("process.pid", "7"),
            ("destination.ip", "192.0.2.1"),
            ("destination.port", "4444"),
            ("user.name", "root"),
            ("labels.auditd.a0", "x"),
            ("log.syslog.appname", "sshd"),
            ("process.parent.command_line", "p"),
        ] {
            let f = FieldRef::parse(path).expect("known");
            let mut e = Event::default();
            f.set(&mut e, text).expect("set");
            let mut got = Vec::new();
            f.read(&e, &mut |v| got.push(v.to_text().into_owned()));
            assert_eq!(got, vec![text.to_string()], "{path}");
        }
        let f = FieldRef::parse("destination.port").expect("known");
        assert!(f.set(&mut Event::default(), "http").is_err());
    }
}

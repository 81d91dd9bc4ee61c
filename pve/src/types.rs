//! Typed Proxmox answers. Unknown fields are ignored; numbers PVE sometimes sends as strings
//! are accepted either way; fields PVE may omit are `Option`.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use crate::de;
use crate::ids::Vmid;
use crate::upid::Upid;

/// `GET /version`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct Version {
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub release: String,
    #[serde(default)]
    pub repoid: String,
    #[serde(default)]
    pub console: Option<String>,
}

impl Version {
    /// The major release (8, 9, …), from `release` (`9.0`) or `version` (`9.0.3`).
    pub fn major(&self) -> Option<u32> {
        let src = if self.release.is_empty() {
            &self.version
        } else {
            &self.release
        };
        src.split('.').next()?.trim().parse().ok()
    }
}

/// The `type` filter of `GET /cluster/resources`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResourceType {
    Vm,
    Storage,
    Node,
    Sdn,
}

impl ResourceType {
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceType::Vm => "vm",
            ResourceType::Storage => "storage",
            ResourceType::Node => "node",
            ResourceType::Sdn => "sdn",
        }
    }
}

/// One item of `GET /cluster/resources` (pve-manager `PVE/API2/Cluster.pm`).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct ClusterResource {
    /// `qemu/100`, `node/pve1`, `storage/pve1/local`, …
    pub id: String,
    /// `qemu`, `lxc`, `node`, `storage`, `pool`, `sdn`, …
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, deserialize_with = "de::opt_string")]
    pub status: Option<String>,
    #[serde(default, deserialize_with = "de::opt_string")]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "de::opt_string")]
    pub node: Option<String>,
    #[serde(default, deserialize_with = "de::opt_string")]
    pub storage: Option<String>,
    #[serde(default, deserialize_with = "de::opt_string")]
    pub pool: Option<String>,
    #[serde(default, deserialize_with = "de::opt_u32")]
    pub vmid: Option<u32>,
    /// CPU use as a fraction of `maxcpu`.
    #[serde(default, deserialize_with = "de::opt_f64")]
    pub cpu: Option<f64>,
    #[serde(default, deserialize_with = "de::opt_f64")]
    pub maxcpu: Option<f64>,
    #[serde(default, deserialize_with = "de::opt_u64")]
    pub mem: Option<u64>,
    #[serde(default, deserialize_with = "de::opt_u64")]
    pub maxmem: Option<u64>,
    /// Host view of a VM's memory (PVE 9).
    #[serde(default, deserialize_with = "de::opt_u64")]
    pub memhost: Option<u64>,
    #[serde(default, deserialize_with = "de::opt_u64")]
    pub disk: Option<u64>,
    #[serde(default, deserialize_with = "de::opt_u64")]
    pub maxdisk: Option<u64>,
    #[serde(default, deserialize_with = "de::opt_u64")]
    pub netin: Option<u64>,
    #[serde(default, deserialize_with = "de::opt_u64")]
    pub netout: Option<u64>,
    #[serde(default, deserialize_with = "de::opt_u64")]
    pub diskread: Option<u64>,
    #[serde(default, deserialize_with = "de::opt_u64")]
    pub diskwrite: Option<u64>,
    #[serde(default, deserialize_with = "de::opt_u64")]
    pub uptime: Option<u64>,
    #[serde(default, deserialize_with = "de::opt_bool")]
    pub template: Option<bool>,
    #[serde(default, deserialize_with = "de::opt_string")]
    pub lock: Option<String>,
    #[serde(default, deserialize_with = "de::opt_string")]
    pub tags: Option<String>,
    #[serde(default, deserialize_with = "de::opt_string")]
    pub hastate: Option<String>,
    #[serde(default, deserialize_with = "de::opt_string")]
    pub content: Option<String>,
    #[serde(default, deserialize_with = "de::opt_string")]
    pub plugintype: Option<String>,
    #[serde(default, deserialize_with = "de::opt_bool")]
    pub shared: Option<bool>,
    #[serde(default, deserialize_with = "de::opt_string")]
    pub level: Option<String>,
}

/// One item of `GET /nodes`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct NodeSummary {
    pub node: String,
    /// `online`, `offline` or `unknown`.
    #[serde(default, deserialize_with = "de::opt_string")]
    pub status: Option<String>,
    #[serde(default, deserialize_with = "de::opt_f64")]
    pub cpu: Option<f64>,
    #[serde(default, deserialize_with = "de::opt_f64")]
    pub maxcpu: Option<f64>,
    #[serde(default, deserialize_with = "de::opt_u64")]
    pub mem: Option<u64>,
    #[serde(default, deserialize_with = "de::opt_u64")]
    pub maxmem: Option<u64>,
    #[serde(default, deserialize_with = "de::opt_u64")]
    pub disk: Option<u64>,
    #[serde(default, deserialize_with = "de::opt_u64")]
    pub maxdisk: Option<u64>,
    #[serde(default, deserialize_with = "de::opt_u64")]
    pub uptime: Option<u64>,
    #[serde(default, deserialize_with = "de::opt_string")]
    pub level: Option<String>,
    #[serde(default, deserialize_with = "de::opt_string")]
    pub ssl_fingerprint: Option<String>,
}

/// A VM's run state.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum VmState {
    Running,
    Stopped,
    #[default]
    #[serde(other)]
    Unknown,
}

/// One item of `GET /nodes/{node}/qemu`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct VmSummary {
    pub vmid: Vmid,
    #[serde(default, deserialize_with = "de::opt_string")]
    pub name: Option<String>,
    #[serde(default)]
    pub status: VmState,
    #[serde(default, deserialize_with = "de::opt_string")]
    pub qmpstatus: Option<String>,
    #[serde(default, deserialize_with = "de::opt_f64")]
    pub cpu: Option<f64>,
    #[serde(default, deserialize_with = "de::opt_f64")]
    pub cpus: Option<f64>,
    #[serde(default, deserialize_with = "de::opt_u64")]
    pub mem: Option<u64>,
    #[serde(default, deserialize_with = "de::opt_u64")]
    pub maxmem: Option<u64>,
    #[serde(default, deserialize_with = "de::opt_u64")]
    pub memhost: Option<u64>,
    #[serde(default, deserialize_with = "de::opt_u64")]
    pub disk: Option<u64>,
    #[serde(default, deserialize_with = "de::opt_u64")]
    pub maxdisk: Option<u64>,
    #[serde(default, deserialize_with = "de::opt_u64")]
    pub netin: Option<u64>,
    #[serde(default, deserialize_with = "de::opt_u64")]
    pub netout: Option<u64>,
    #[serde(default, deserialize_with = "de::opt_u64")]
    pub diskread: Option<u64>,
    #[serde(default, deserialize_with = "de::opt_u64")]
    pub diskwrite: Option<u64>,
    #[serde(default, deserialize_with = "de::opt_u64")]
    pub uptime: Option<u64>,
    #[serde(default, deserialize_with = "de::opt_u64")]
    pub pid: Option<u64>,
    #[serde(default, deserialize_with = "de::bool_or_false")]
    pub template: bool,
    #[serde(default, deserialize_with = "de::opt_string")]
    pub lock: Option<String>,
    #[serde(default, deserialize_with = "de::opt_string")]
    pub tags: Option<String>,
}

/// `GET /nodes/{node}/qemu/{vmid}/status/current` (qemu-server `vmstatus`).
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct VmStatus {
    pub vmid: Vmid,
    #[serde(default)]
    pub status: VmState,
    #[serde(default, deserialize_with = "de::opt_string")]
    pub qmpstatus: Option<String>,
    #[serde(default, deserialize_with = "de::opt_string")]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "de::opt_f64")]
    pub cpu: Option<f64>,
    #[serde(default, deserialize_with = "de::opt_f64")]
    pub cpus: Option<f64>,
    #[serde(default, deserialize_with = "de::opt_u64")]
    pub mem: Option<u64>,
    #[serde(default, deserialize_with = "de::opt_u64")]
    pub memhost: Option<u64>,
    #[serde(default, deserialize_with = "de::opt_u64")]
    pub maxmem: Option<u64>,
    #[serde(default, deserialize_with = "de::opt_u64")]
    pub maxdisk: Option<u64>,
    #[serde(default, deserialize_with = "de::opt_u64")]
    pub diskread: Option<u64>,
    #[serde(default, deserialize_with = "de::opt_u64")]
    pub diskwrite: Option<u64>,
    #[serde(default, deserialize_with = "de::opt_u64")]
    pub netin: Option<u64>,
    #[serde(default, deserialize_with = "de::opt_u64")]
    pub netout: Option<u64>,
    #[serde(default, deserialize_with = "de::opt_u64")]
    pub pid: Option<u64>,
    #[serde(default, deserialize_with = "de::opt_u64")]
    pub uptime: Option<u64>,
    #[serde(default, deserialize_with = "de::opt_string")]
    pub lock: Option<String>,
    #[serde(default, deserialize_with = "de::opt_string")]
    pub tags: Option<String>,
    #[serde(default, deserialize_with = "de::bool_or_false")]
    pub template: bool,
    /// The guest agent is enabled in the config.
    #[serde(default, deserialize_with = "de::opt_bool")]
    pub agent: Option<bool>,
    #[serde(
        default,
        rename = "running-machine",
        deserialize_with = "de::opt_string"
    )]
    pub running_machine: Option<String>,
    #[serde(default, rename = "running-qemu", deserialize_with = "de::opt_string")]
    pub running_qemu: Option<String>,
    #[serde(default, deserialize_with = "de::opt_f64")]
    pub pressurecpusome: Option<f64>,
    #[serde(default, deserialize_with = "de::opt_f64")]
    pub pressurecpufull: Option<f64>,
    #[serde(default, deserialize_with = "de::opt_f64")]
    pub pressureiosome: Option<f64>,
    #[serde(default, deserialize_with = "de::opt_f64")]
    pub pressureiofull: Option<f64>,
    #[serde(default, deserialize_with = "de::opt_f64")]
    pub pressurememorysome: Option<f64>,
    #[serde(default, deserialize_with = "de::opt_f64")]
    pub pressurememoryfull: Option<f64>,
    /// HA state object, passed through.
    #[serde(default)]
    pub ha: Option<Value>,
}

/// A VM configuration (`GET /nodes/{node}/qemu/{vmid}/config`): the raw key/value map with
/// typed accessors for the keys Vigie uses.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(transparent)]
pub struct VmConfig(pub BTreeMap<String, Value>);

impl VmConfig {
    /// A key's value as text (numbers converted).
    pub fn get(&self, key: &str) -> Option<String> {
        self.0.get(key).and_then(de::value_string)
    }

    pub fn name(&self) -> Option<String> {
        self.get("name")
    }

    pub fn cores(&self) -> Option<u64> {
        self.0.get("cores").and_then(de::value_u64)
    }

    pub fn sockets(&self) -> Option<u64> {
        self.0.get("sockets").and_then(de::value_u64)
    }

    /// Memory in MiB: `memory` is a property string whose default key is `current`
    /// (`2048` or `current=2048`).
    pub fn memory_mib(&self) -> Option<u64> {
        let raw = self.get("memory")?;
        let items = crate::formats::parse_property_string(&raw).ok()?;
        items
            .iter()
            .find(|i| i.key.is_none() || i.key == Some("current"))
            .and_then(|i| i.value.parse().ok())
    }

    /// True when `agent` enables the QEMU guest agent (`1` or `enabled=1,…`).
    pub fn agent_enabled(&self) -> bool {
        let Some(raw) = self.get("agent") else {
            return false;
        };
        let Ok(items) = crate::formats::parse_property_string(&raw) else {
            return false;
        };
        items
            .iter()
            .find(|i| i.key.is_none() || i.key == Some("enabled"))
            .and_then(|i| de::value_bool(&Value::String(i.value.to_string())))
            .unwrap_or(false)
    }

    pub fn is_template(&self) -> bool {
        self.0
            .get("template")
            .and_then(de::value_bool)
            .unwrap_or(false)
    }

    pub fn lock(&self) -> Option<String> {
        self.get("lock")
    }

    pub fn digest(&self) -> Option<String> {
        self.get("digest")
    }

    pub fn ciuser(&self) -> Option<String> {
        self.get("ciuser")
    }

    /// The SSH keys, decoded (PVE stores them URL-encoded).
    pub fn ssh_keys(&self) -> Vec<String> {
        self.get("sshkeys")
            .map(|raw| {
                percent_encoding::percent_decode_str(&raw)
                    .decode_utf8_lossy()
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn ipconfig(&self, index: u8) -> Option<String> {
        self.get(&format!("ipconfig{index}"))
    }

    pub fn nameservers(&self) -> Vec<String> {
        self.get("nameserver")
            .map(|s| {
                crate::formats::split_list(&s)
                    .into_iter()
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The size of a disk (`scsi0`, …) from its `size=` property, in bytes.
    pub fn disk_size_bytes(&self, disk: &str) -> Option<u64> {
        let raw = self.get(disk)?;
        let items = crate::formats::parse_property_string(&raw).ok()?;
        let size = items.iter().find(|i| i.key == Some("size"))?.value;
        parse_size(size)
    }
}

/// pve-common `parse_size`: `\d+(\.\d+)?[KMGT]?` to bytes.
pub fn parse_size(s: &str) -> Option<u64> {
    let (num, mult) = match s.chars().last()? {
        'K' => (&s[..s.len() - 1], 1u64 << 10),
        'M' => (&s[..s.len() - 1], 1 << 20),
        'G' => (&s[..s.len() - 1], 1 << 30),
        'T' => (&s[..s.len() - 1], 1 << 40),
        _ => (s, 1),
    };
    crate::formats::check("disk-size", num).ok()?;
    let v: f64 = num.parse().ok()?;
    Some((v * mult as f64) as u64)
}

/// Task run state.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TaskState {
    Running,
    Stopped,
    #[default]
    #[serde(other)]
    Unknown,
}

/// `GET /nodes/{node}/tasks/{upid}/status`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct TaskStatus {
    pub upid: Upid,
    #[serde(default)]
    pub node: String,
    #[serde(default)]
    pub status: TaskState,
    /// `OK`, `WARNINGS: N`, an error message, or `unexpected status`; absent while running.
    #[serde(default, deserialize_with = "de::opt_string")]
    pub exitstatus: Option<String>,
    #[serde(default, rename = "type")]
    pub task_type: String,
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub user: String,
    #[serde(default, deserialize_with = "de::opt_u64")]
    pub starttime: Option<u64>,
    #[serde(default, deserialize_with = "de::opt_u64")]
    pub pid: Option<u64>,
    #[serde(default, deserialize_with = "de::opt_u64")]
    pub pstart: Option<u64>,
}

/// One line of `GET /nodes/{node}/tasks/{upid}/log`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct TaskLogLine {
    #[serde(deserialize_with = "de::req_u64")]
    pub n: u64,
    #[serde(default)]
    pub t: String,
}

/// How a finished task ended (pve-common `UPID.pm` `status_is_error`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TaskExit {
    Ok,
    /// `WARNINGS: N` — finished, with N warnings in the log (PVE counts it as success).
    Warnings(u32),
    /// Anything else is an error (including `unexpected status`).
    Failed(String),
}

impl TaskExit {
    pub fn parse(exitstatus: &str) -> Self {
        let s = exitstatus.trim();
        if s == "OK" {
            return TaskExit::Ok;
        }
        if let Some(n) = s.strip_prefix("WARNINGS: ").and_then(|n| n.parse().ok()) {
            return TaskExit::Warnings(n);
        }
        TaskExit::Failed(s.to_string())
    }

    pub fn is_success(&self) -> bool {
        !matches!(self, TaskExit::Failed(_))
    }
}

/// A finished, successful task.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskOutcome {
    pub upid: Upid,
    pub exit: TaskExit,
    /// The whole log (capped), the last line being `TASK OK` or `TASK WARNINGS: N`.
    pub log: Vec<String>,
}

/// RRD time frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Timeframe {
    Hour,
    Day,
    Week,
    Month,
    Year,
}

impl Timeframe {
    pub fn as_str(self) -> &'static str {
        match self {
            Timeframe::Hour => "hour",
            Timeframe::Day => "day",
            Timeframe::Week => "week",
            Timeframe::Month => "month",
            Timeframe::Year => "year",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "hour" => Timeframe::Hour,
            "day" => Timeframe::Day,
            "week" => Timeframe::Week,
            "month" => Timeframe::Month,
            "year" => Timeframe::Year,
            _ => return None,
        })
    }
}

/// RRD consolidation function.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Cf {
    Average,
    Max,
}

impl Cf {
    pub fn as_str(self) -> &'static str {
        match self {
            Cf::Average => "AVERAGE",
            Cf::Max => "MAX",
        }
    }
}

/// Which pvestatd RRD layout the points come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RrdSchema {
    /// `pve2.3-vm` / `pve2-node`: no `memhost`, no pressure.
    Pve8,
    /// `pve-vm-9.0` / `pve-node-9.0`: adds `memhost` and `pressure*`.
    Pve9,
}

/// A sample type of an RRD series.
pub trait RrdSample {
    fn time(&self) -> i64;
    /// True when the sample carries at least one value besides `time`.
    fn has_data(&self) -> bool;
    /// True when the sample has a field only PVE 9 writes.
    fn has_pve9_fields(&self) -> bool;
}

/// One VM RRD sample (rates are bytes per second; all fields optional).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct VmRrdPoint {
    #[serde(deserialize_with = "de::req_i64")]
    pub time: i64,
    #[serde(default, deserialize_with = "de::opt_f64")]
    pub maxcpu: Option<f64>,
    #[serde(default, deserialize_with = "de::opt_f64")]
    pub cpu: Option<f64>,
    #[serde(default, deserialize_with = "de::opt_f64")]
    pub maxmem: Option<f64>,
    #[serde(default, deserialize_with = "de::opt_f64")]
    pub mem: Option<f64>,
    #[serde(default, deserialize_with = "de::opt_f64")]
    pub maxdisk: Option<f64>,
    #[serde(default, deserialize_with = "de::opt_f64")]
    pub disk: Option<f64>,
    #[serde(default, deserialize_with = "de::opt_f64")]
    pub netin: Option<f64>,
    #[serde(default, deserialize_with = "de::opt_f64")]
    pub netout: Option<f64>,
    #[serde(default, deserialize_with = "de::opt_f64")]
    pub diskread: Option<f64>,
    #[serde(default, deserialize_with = "de::opt_f64")]
    pub diskwrite: Option<f64>,
    #[serde(default, deserialize_with = "de::opt_f64")]
    pub memhost: Option<f64>,
    #[serde(default, deserialize_with = "de::opt_f64")]
    pub pressurecpusome: Option<f64>,
    #[serde(default, deserialize_with = "de::opt_f64")]
    pub pressurecpufull: Option<f64>,
    #[serde(default, deserialize_with = "de::opt_f64")]
    pub pressureiosome: Option<f64>,
    #[serde(default, deserialize_with = "de::opt_f64")]
    pub pressureiofull: Option<f64>,
    #[serde(default, deserialize_with = "de::opt_f64")]
    pub pressurememorysome: Option<f64>,
    #[serde(default, deserialize_with = "de::opt_f64")]
    pub pressurememoryfull: Option<f64>,
}

impl RrdSample for VmRrdPoint {
    fn time(&self) -> i64 {
        self.time
    }

    fn has_data(&self) -> bool {
        [
            self.maxcpu,
            self.cpu,
            self.maxmem,
            self.mem,
            self.maxdisk,
            self.disk,
            self.netin,
            self.netout,
            self.diskread,
            self.diskwrite,
        ]
        .iter()
        .any(Option::is_some)
            || self.has_pve9_fields()
    }

    fn has_pve9_fields(&self) -> bool {
        [
            self.memhost,
            self.pressurecpusome,
            self.pressurecpufull,
            self.pressureiosome,
            self.pressureiofull,
            self.pressurememorysome,
            self.pressurememoryfull,
        ]
        .iter()
        .any(Option::is_some)
    }
}

/// One node RRD sample (all fields optional).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct NodeRrdPoint {
    #[serde(deserialize_with = "de::req_i64")]
    pub time: i64,
    #[serde(default, deserialize_with = "de::opt_f64")]
    pub loadavg: Option<f64>,
    #[serde(default, deserialize_with = "de::opt_f64")]
    pub maxcpu: Option<f64>,
    #[serde(default, deserialize_with = "de::opt_f64")]
    pub cpu: Option<f64>,
    #[serde(default, deserialize_with = "de::opt_f64")]
    pub iowait: Option<f64>,
    #[serde(default, deserialize_with = "de::opt_f64")]
    pub memtotal: Option<f64>,
    #[serde(default, deserialize_with = "de::opt_f64")]
    pub memused: Option<f64>,
    #[serde(default, deserialize_with = "de::opt_f64")]
    pub swaptotal: Option<f64>,
    #[serde(default, deserialize_with = "de::opt_f64")]
    pub swapused: Option<f64>,
    #[serde(default, deserialize_with = "de::opt_f64")]
    pub roottotal: Option<f64>,
    #[serde(default, deserialize_with = "de::opt_f64")]
    pub rootused: Option<f64>,
    #[serde(default, deserialize_with = "de::opt_f64")]
    pub netin: Option<f64>,
    #[serde(default, deserialize_with = "de::opt_f64")]
    pub netout: Option<f64>,
    #[serde(default, deserialize_with = "de::opt_f64")]
    pub memavailable: Option<f64>,
    #[serde(default, deserialize_with = "de::opt_f64")]
    pub arcsize: Option<f64>,
    #[serde(default, deserialize_with = "de::opt_f64")]
    pub pressurecpusome: Option<f64>,
    #[serde(default, deserialize_with = "de::opt_f64")]
    pub pressureiosome: Option<f64>,
    #[serde(default, deserialize_with = "de::opt_f64")]
    pub pressureiofull: Option<f64>,
    #[serde(default, deserialize_with = "de::opt_f64")]
    pub pressurememorysome: Option<f64>,
    #[serde(default, deserialize_with = "de::opt_f64")]
    pub pressurememoryfull: Option<f64>,
}

impl RrdSample for NodeRrdPoint {
    fn time(&self) -> i64 {
        self.time
    }

    fn has_data(&self) -> bool {
        [
            self.loadavg,
            self.maxcpu,
            self.cpu,
            self.iowait,
            self.memtotal,
            self.memused,
            self.swaptotal,
            self.swapused,
            self.roottotal,
            self.rootused,
            self.netin,
            self.netout,
        ]
        .iter()
        .any(Option::is_some)
            || self.has_pve9_fields()
    }

    fn has_pve9_fields(&self) -> bool {
        [
            self.memavailable,
            self.arcsize,
            self.pressurecpusome,
            self.pressureiosome,
            self.pressureiofull,
            self.pressurememorysome,
            self.pressurememoryfull,
        ]
        .iter()
        .any(Option::is_some)
    }
}

/// An RRD series, or the fact that there is none yet (a new VM, an empty archive).
#[derive(Clone, Debug, PartialEq)]
pub enum RrdData<P> {
    /// No archive yet, or no sample with any value: show "no data yet", not an error.
    NoDataYet,
    /// Samples in time order. Samples without values (gaps) are kept.
    Series(Vec<P>),
}

impl<P: RrdSample> RrdData<P> {
    /// Classifies raw samples.
    pub fn from_points(mut points: Vec<P>) -> Self {
        if !points.iter().any(RrdSample::has_data) {
            return RrdData::NoDataYet;
        }
        points.sort_by_key(RrdSample::time);
        RrdData::Series(points)
    }

    pub fn points(&self) -> &[P] {
        match self {
            RrdData::NoDataYet => &[],
            RrdData::Series(p) => p,
        }
    }

    pub fn is_no_data_yet(&self) -> bool {
        matches!(self, RrdData::NoDataYet)
    }

    /// The RRD layout the samples come from, if there are any.
    pub fn schema(&self) -> Option<RrdSchema> {
        match self {
            RrdData::NoDataYet => None,
            RrdData::Series(p) if p.iter().any(RrdSample::has_pve9_fields) => Some(RrdSchema::Pve9),
            RrdData::Series(_) => Some(RrdSchema::Pve8),
        }
    }
}

/// Metric kind in `/cluster/metrics/export`.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum MetricKind {
    Gauge,
    Counter,
    Derive,
    #[serde(other)]
    Unknown,
}

/// One item of `GET /cluster/metrics/export` (pve-manager `PVE/PullMetric.pm`).
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct MetricSample {
    #[serde(deserialize_with = "de::req_i64")]
    pub timestamp: i64,
    /// `node/<name>`, `qemu/<vmid>`, `lxc/<vmid>`, `storage/<node>/<id>`.
    pub id: String,
    /// `cpu_current`, `mem_used`, `net_in`, …
    pub metric: String,
    #[serde(deserialize_with = "de::req_f64")]
    pub value: f64,
    #[serde(rename = "type")]
    pub kind: MetricKind,
}

/// Content type filter of the storage content listing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContentType {
    Images,
    Rootdir,
    Vztmpl,
    Iso,
    Backup,
    Snippets,
    Import,
}

impl ContentType {
    pub fn as_str(self) -> &'static str {
        match self {
            ContentType::Images => "images",
            ContentType::Rootdir => "rootdir",
            ContentType::Vztmpl => "vztmpl",
            ContentType::Iso => "iso",
            ContentType::Backup => "backup",
            ContentType::Snippets => "snippets",
            ContentType::Import => "import",
        }
    }
}

/// One item of `GET /nodes/{node}/storage/{storage}/content` (pve-storage `Content.pm`).
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct StorageContent {
    pub volid: String,
    #[serde(default, deserialize_with = "de::opt_string")]
    pub content: Option<String>,
    #[serde(default, deserialize_with = "de::opt_string")]
    pub format: Option<String>,
    #[serde(default, deserialize_with = "de::opt_u64")]
    pub size: Option<u64>,
    #[serde(default, deserialize_with = "de::opt_u64")]
    pub used: Option<u64>,
    #[serde(default, deserialize_with = "de::opt_u32")]
    pub vmid: Option<u32>,
    #[serde(default, deserialize_with = "de::opt_i64")]
    pub ctime: Option<i64>,
    #[serde(default, deserialize_with = "de::opt_string")]
    pub notes: Option<String>,
    #[serde(default, deserialize_with = "de::opt_bool")]
    pub protected: Option<bool>,
    #[serde(default, deserialize_with = "de::opt_string")]
    pub encrypted: Option<String>,
    #[serde(default, deserialize_with = "de::opt_string")]
    pub parent: Option<String>,
    #[serde(default)]
    pub verification: Option<Value>,
}

/// `POST .../agent/exec`.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
pub struct AgentExecPid {
    #[serde(deserialize_with = "de::req_i64")]
    pub pid: i64,
}

/// `GET .../agent/exec-status`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct AgentExecStatus {
    /// PVE passes the agent's JSON `true` through; some versions send `1`.
    #[serde(default, deserialize_with = "de::bool_or_false")]
    pub exited: bool,
    #[serde(default, deserialize_with = "de::opt_i64")]
    pub exitcode: Option<i64>,
    #[serde(default, deserialize_with = "de::opt_i64")]
    pub signal: Option<i64>,
    #[serde(default, rename = "out-data", deserialize_with = "de::opt_string")]
    pub out_data: Option<String>,
    #[serde(default, rename = "err-data", deserialize_with = "de::opt_string")]
    pub err_data: Option<String>,
    #[serde(default, rename = "out-truncated", deserialize_with = "de::opt_bool")]
    pub out_truncated: Option<bool>,
    #[serde(default, rename = "err-truncated", deserialize_with = "de::opt_bool")]
    pub err_truncated: Option<bool>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_as_strings_and_unknown_fields() {
        let v: VmSummary = serde_json::from_str(
            r#"{"vmid":"100","name":"web","status":"running","cpus":"2","maxmem":"2147483648",
                "mem":1073741824.5,"template":"","uptime":"42","future-field":{"x":1}}"#,
        )
        .expect("lenient");
        assert_eq!(v.vmid.get(), 100);
        assert_eq!(v.cpus, Some(2.0));
        assert_eq!(v.maxmem, Some(2_147_483_648));
        assert_eq!(v.mem, Some(1_073_741_824));
        assert!(!v.template);
        assert_eq!(v.uptime, Some(42));
        assert_eq!(v.status, VmState::Running);
    }

    #[test]
    fn unknown_state_does_not_fail() {
        let v: VmSummary =
            serde_json::from_str(r#"{"vmid":101,"status":"migrating"}"#).expect("lenient");
        assert_eq!(v.status, VmState::Unknown);
    }

    #[test]
    fn pve8_sample_from_the_field() {
        // Real PVE 8 sample (go-proxmox#112).
        let p: VmRrdPoint = serde_json::from_str(
            r#"{"cpu":0.124,"disk":0,"diskread":0,"diskwrite":4724.05,"maxcpu":1,"maxdisk":16106127360,
                "maxmem":1073741824,"mem":432397243.7,"netin":9832.0,"netout":14.38,"time":1706344620}"#,
        )
        .expect("sample");
        assert!(p.has_data());
        assert!(!p.has_pve9_fields());
        let data = RrdData::from_points(vec![p]);
        assert_eq!(data.schema(), Some(RrdSchema::Pve8));
    }

    #[test]
    fn time_only_points_are_no_data_yet() {
        let pts: Vec<VmRrdPoint> =
            serde_json::from_str(r#"[{"time":1706344620},{"time":1706344680}]"#).expect("points");
        assert!(RrdData::from_points(pts).is_no_data_yet());
        assert!(RrdData::<VmRrdPoint>::from_points(Vec::new()).is_no_data_yet());
    }

    #[test]
    fn config_accessors() {
        let c: VmConfig = serde_json::from_str(
            r#"{"cores":2,"memory":"4096","agent":"enabled=1,fstrim_cloned_disks=1","template":1,
                "sshkeys":"ssh-ed25519%20AAAAC3Nz%20me%40laptop%0Assh-rsa%20AAAAB3%20ops",
                "nameserver":"1.1.1.1 9.9.9.9","scsi0":"local-lvm:vm-100-disk-0,size=32G"}"#,
        )
        .expect("config");
        assert_eq!(c.cores(), Some(2));
        assert_eq!(c.memory_mib(), Some(4096));
        assert!(c.agent_enabled());
        assert!(c.is_template());
        assert_eq!(
            c.ssh_keys(),
            vec!["ssh-ed25519 AAAAC3Nz me@laptop", "ssh-rsa AAAAB3 ops"]
        );
        assert_eq!(c.nameservers(), vec!["1.1.1.1", "9.9.9.9"]);
        assert_eq!(c.disk_size_bytes("scsi0"), Some(32 << 30));
        let c: VmConfig =
            serde_json::from_str(r#"{"memory":"current=1024","agent":"0"}"#).expect("config");
        assert_eq!(c.memory_mib(), Some(1024));
        assert!(!c.agent_enabled());
    }

    #[test]
    fn task_exit_parsing() {
        assert_eq!(TaskExit::parse("OK"), TaskExit::Ok);
        assert_eq!(TaskExit::parse("WARNINGS: 2"), TaskExit::Warnings(2));
        assert_eq!(
            TaskExit::parse("unexpected status"),
            TaskExit::Failed("unexpected status".into())
        );
        assert!(!TaskExit::parse("clone failed: no space").is_success());
    }

    #[test]
    fn exec_status_bool_forms() {
        let a: AgentExecStatus = serde_json::from_str(r#"{"exited":1,"exitcode":0}"#).expect("int");
        let b: AgentExecStatus =
            serde_json::from_str(r#"{"exited":true,"exitcode":0}"#).expect("bool");
        assert_eq!(a, b);
    }
}

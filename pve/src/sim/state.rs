//! The simulator's state: nodes, VMs, tasks, tickets, backups, faults, recorded requests.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::Rng;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{PveMode, SimConfig};
use crate::tls::Fingerprint;
use crate::upid::Upid;

/// Wall-clock seconds since the Unix epoch.
pub(crate) fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

pub(crate) struct Shared {
    state: Mutex<State>,
    pub(crate) tls_fingerprint: Option<Fingerprint>,
}

impl Shared {
    pub(crate) fn new(state: State, tls_fingerprint: Option<Fingerprint>) -> Arc<Self> {
        Arc::new(Shared {
            state: Mutex::new(state),
            tls_fingerprint,
        })
    }

    /// Locks the state (a panic elsewhere does not make it unusable).
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub(crate) struct SimNode {
    pub name: String,
    pub cpus: u32,
    pub mem_total: u64,
    pub boot_time: f64,
}

/// A VM (or template).
pub(crate) struct SimVm {
    pub vmid: u32,
    pub node: String,
    /// The current configuration (property strings as PVE stores them).
    pub config: BTreeMap<String, String>,
    /// Changes waiting for the next restart (running VM, no CPU/memory hotplug).
    pub pending: BTreeMap<String, String>,
    /// `(start, stop)` in Unix seconds; the last one is open while running.
    pub runs: Vec<(f64, Option<f64>)>,
    pub created: f64,
    /// pvestatd creates the RRD archive ~10 s after a guest appears.
    pub rrd_ready_at: f64,
    pub agent_files: BTreeMap<String, Vec<u8>>,
    pub agent_commands: Vec<AgentCommand>,
}

/// A command run through the simulated guest agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AgentCommand {
    pub pid: i64,
    pub command: Vec<String>,
    pub input_data: Option<String>,
}

impl SimVm {
    pub fn running_since(&self) -> Option<f64> {
        match self.runs.last() {
            Some((start, None)) => Some(*start),
            _ => None,
        }
    }

    pub fn is_running(&self) -> bool {
        self.running_since().is_some()
    }

    pub fn running_at(&self, t: f64) -> Option<f64> {
        self.runs
            .iter()
            .find(|(s, e)| *s <= t && e.is_none_or(|e| t < e))
            .map(|(s, _)| *s)
    }

    pub fn is_template(&self) -> bool {
        self.config.get("template").is_some_and(|v| v == "1")
    }

    pub fn lock(&self) -> Option<&str> {
        self.config.get("lock").map(String::as_str)
    }

    pub fn name(&self) -> String {
        self.config
            .get("name")
            .cloned()
            .unwrap_or_else(|| format!("VM {}", self.vmid))
    }

    fn int_key(&self, key: &str, default: u64) -> u64 {
        self.config
            .get(key)
            .and_then(|v| {
                crate::formats::parse_property_string(v)
                    .ok()?
                    .iter()
                    .find(|i| i.key.is_none() || i.key == Some("current"))
                    .and_then(|i| i.value.parse().ok())
            })
            .unwrap_or(default)
    }

    pub fn cpus(&self) -> u64 {
        self.int_key("cores", 1) * self.int_key("sockets", 1)
    }

    pub fn maxmem(&self) -> u64 {
        self.int_key("memory", 512) << 20
    }

    pub fn agent_enabled(&self) -> bool {
        self.config.get("agent").is_some_and(|v| {
            crate::formats::parse_property_string(v)
                .ok()
                .is_some_and(|items| {
                    items
                        .iter()
                        .any(|i| (i.key.is_none() || i.key == Some("enabled")) && i.value == "1")
                })
        })
    }

    /// `(key, volid, size)` of each disk (not cdroms, not cloud-init drives).
    pub fn disks(&self) -> Vec<(String, String, u64)> {
        self.config
            .iter()
            .filter(|(k, _)| is_disk_key(k) || k.starts_with("unused"))
            .filter_map(|(k, v)| {
                let items = crate::formats::parse_property_string(v).ok()?;
                if items
                    .iter()
                    .any(|i| i.key == Some("media") && i.value == "cdrom")
                {
                    return None;
                }
                let volid = items
                    .iter()
                    .find(|i| i.key.is_none() || i.key == Some("file"))?
                    .value
                    .to_string();
                let size = items
                    .iter()
                    .find(|i| i.key == Some("size"))
                    .and_then(|i| crate::types::parse_size(i.value))
                    .unwrap_or(0);
                Some((k.clone(), volid, size))
            })
            .collect()
    }

    pub fn maxdisk(&self) -> u64 {
        self.disks()
            .iter()
            .filter(|(k, _, _)| !k.starts_with("unused"))
            .map(|(_, _, s)| *s)
            .next()
            .unwrap_or(0)
    }

    /// The config with pending values applied (what `GET config` shows by default).
    pub fn merged_config(&self) -> BTreeMap<String, String> {
        let mut c = self.config.clone();
        for (k, v) in &self.pending {
            if v.is_empty() {
                c.remove(k);
            } else {
                c.insert(k.clone(), v.clone());
            }
        }
        c
    }

    pub fn apply_pending(&mut self) {
        self.config = self.merged_config();
        self.pending.clear();
    }

    /// PVE's config `digest` (SHA-1 of the file there; SHA-256 truncated to 40 hex here).
    pub fn digest(&self) -> String {
        let mut h = Sha256::new();
        for (k, v) in &self.config {
            h.update(k.as_bytes());
            h.update(b": ");
            h.update(v.as_bytes());
            h.update(b"\n");
        }
        for (k, v) in &self.pending {
            h.update(b"[PENDING]");
            h.update(k.as_bytes());
            h.update(v.as_bytes());
        }
        let mut s = hex::encode(h.finalize());
        s.truncate(40);
        s
    }
}

pub(crate) fn is_disk_key(k: &str) -> bool {
    ["scsi", "virtio", "sata", "ide", "efidisk", "tpmstate"]
        .iter()
        .any(|bus| {
            k.strip_prefix(bus)
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        })
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum TaskRun {
    Running,
    Stopped(String),
}

pub(crate) struct SimTask {
    pub upid: Upid,
    pub state: TaskRun,
    pub log: Vec<String>,
}

pub(crate) struct TicketInfo {
    pub user: String,
    pub csrf: String,
    pub issued: f64,
}

/// A backup file on a storage.
pub(crate) struct BackupEntry {
    pub node: String,
    pub storage: String,
    pub volid: String,
    pub vmid: u32,
    pub size: u64,
    pub ctime: i64,
    pub notes: Option<String>,
    pub protected: bool,
}

/// Dropped-connection rule: the next `remaining` matching requests are read, then the TCP
/// connection is closed without an answer (the request is not processed).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DropRule {
    pub method: Option<String>,
    pub path_contains: Option<String>,
    pub remaining: u32,
}

/// Failing-task rule: the next `remaining` tasks of the type fail with `message`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FailRule {
    pub task_type: Option<String>,
    pub message: String,
    pub remaining: u32,
}

/// Slow-task rule: the next `remaining` tasks of the type take `duration`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SlowRule {
    pub task_type: Option<String>,
    pub duration: Duration,
    pub remaining: u32,
}

#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct Faults {
    pub drop: Vec<DropRule>,
    pub fail: Vec<FailRule>,
    pub slow: Vec<SlowRule>,
}

/// One request as the simulator received it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RecordedRequest {
    pub method: String,
    /// The concrete path below `/api2/json`.
    pub path: String,
    /// The matched PVE path template, `None` when no route matched.
    pub template: Option<String>,
    /// Path parameters taken from the template (`node`, `vmid`, `upid`, `storage`).
    pub path_params: Vec<(String, String)>,
    /// Query and body parameters, in order, repeated keys kept (array parameters).
    pub params: Vec<(String, String)>,
    /// Closed without an answer by a drop rule.
    pub dropped: bool,
    /// HTTP status answered (0 when dropped).
    pub status: u16,
}

/// Most recorded requests kept (the oldest are dropped beyond).
pub const MAX_RECORDED_REQUESTS: usize = 20_000;
/// Most tasks kept (the oldest finished ones are forgotten beyond).
pub const MAX_TASKS: usize = 5_000;

pub(crate) struct State {
    pub mode: PveMode,
    pub task_duration: Duration,
    pub ticket_lifetime: Duration,
    pub users: HashMap<String, String>,
    pub tokens: HashMap<String, String>,
    pub nodes: Vec<SimNode>,
    pub vms: BTreeMap<u32, SimVm>,
    pub tasks: HashMap<String, SimTask>,
    task_order: std::collections::VecDeque<String>,
    pub tickets: HashMap<String, TicketInfo>,
    pub backups: Vec<BackupEntry>,
    pub faults: Faults,
    pub requests: Vec<RecordedRequest>,
    next_pid: u32,
    pub next_exec_pid: i64,
}

const GIB: u64 = 1 << 30;

fn mac(vmid: u32, i: u8) -> String {
    let b = vmid.to_be_bytes();
    format!("BC:24:11:{:02X}:{:02X}:{:02X}", b[2], b[3], i)
}

impl State {
    pub(crate) fn new(cfg: &SimConfig) -> Self {
        let t = now();
        let names = ["pve1", "pve2", "pve3"];
        let count = cfg.nodes.clamp(1, 3);
        let nodes: Vec<SimNode> = names[..count]
            .iter()
            .enumerate()
            .map(|(i, n)| SimNode {
                name: (*n).to_string(),
                cpus: if i == 0 { 16 } else { 8 },
                mem_total: if i == 0 { 64 * GIB } else { 32 * GIB },
                boot_time: t - 10.0 * 86400.0 - i as f64 * 3600.0,
            })
            .collect();
        let mut st = State {
            mode: cfg.mode,
            task_duration: cfg.task_duration,
            ticket_lifetime: cfg.ticket_lifetime,
            users: cfg.users.iter().cloned().collect(),
            tokens: cfg.tokens.iter().cloned().collect(),
            nodes,
            vms: BTreeMap::new(),
            tasks: HashMap::new(),
            task_order: std::collections::VecDeque::new(),
            tickets: HashMap::new(),
            backups: Vec::new(),
            faults: Faults::default(),
            requests: Vec::new(),
            next_pid: 0x1000,
            next_exec_pid: 1000,
        };
        st.seed_inventory(t);
        st
    }

    fn add_vm(
        &mut self,
        vmid: u32,
        node: &str,
        created: f64,
        runs: Vec<(f64, Option<f64>)>,
        config: &[(&str, String)],
    ) {
        self.vms.insert(
            vmid,
            SimVm {
                vmid,
                node: node.to_string(),
                config: config
                    .iter()
                    .map(|(k, v)| ((*k).to_string(), v.clone()))
                    .collect(),
                pending: BTreeMap::new(),
                runs,
                created,
                rrd_ready_at: created + 10.0,
                agent_files: BTreeMap::new(),
                agent_commands: Vec::new(),
            },
        );
    }

    fn seed_inventory(&mut self, t: f64) {
        let day = 86400.0;
        let hour = 3600.0;
        let common = |vmid: u32, name: &str, cores: u32, mem: u32, disk_gib: u32, agent: bool| {
            vec![
                ("name", name.to_string()),
                ("cores", cores.to_string()),
                ("sockets", "1".to_string()),
                ("memory", mem.to_string()),
                ("ostype", "l26".to_string()),
                ("scsihw", "virtio-scsi-single".to_string()),
                (
                    "scsi0",
                    format!("local-lvm:vm-{vmid}-disk-0,iothread=1,size={disk_gib}G"),
                ),
                ("net0", format!("virtio={},bridge=vmbr0", mac(vmid, 0))),
                ("boot", "order=scsi0".to_string()),
                ("agent", if agent { "1" } else { "0" }.to_string()),
                (
                    "smbios1",
                    format!("uuid=5f3c{vmid:04x}-0000-4000-8000-00000000{vmid:04x}"),
                ),
                (
                    "vmgenid",
                    format!("0c1f{vmid:04x}-0000-4000-8000-00000000{vmid:04x}"),
                ),
            ]
        };
        let node1 = self.nodes[0].name.clone();
        let mut tpl = common(9000, "debian-12-cloud", 2, 2048, 8, true);
        tpl.retain(|(k, _)| *k != "scsi0");
        tpl.push(("scsi0", "local-lvm:base-9000-disk-0,size=8G".to_string()));
        tpl.push((
            "ide2",
            "local-lvm:vm-9000-cloudinit,media=cdrom".to_string(),
        ));
        tpl.push(("serial0", "socket".to_string()));
        tpl.push(("vga", "serial0".to_string()));
        tpl.push(("ciuser", "debian".to_string()));
        tpl.push(("ipconfig0", "ip=dhcp".to_string()));
        tpl.push(("template", "1".to_string()));
        tpl.push((
            "description",
            "Debian 12 generic cloud image with qemu-guest-agent".to_string(),
        ));
        self.add_vm(9000, &node1, t - 40.0 * day, Vec::new(), &tpl);
        self.add_vm(
            100,
            &node1,
            t - 30.0 * day,
            vec![
                (t - 30.0 * day, Some(t - 4.0 * hour)),
                (t - 3.0 * hour, None),
            ],
            &common(100, "web-1", 2, 4096, 32, true),
        );
        self.add_vm(
            101,
            &node1,
            t - 20.0 * day,
            vec![(t - 20.0 * day, Some(t - 1.0 * day))],
            &common(101, "db-1", 4, 8192, 64, false),
        );
        if let Some(n2) = self.nodes.get(1).map(|n| n.name.clone()) {
            self.add_vm(
                200,
                &n2,
                t - 10.0 * day,
                vec![(t - 2.0 * hour, None)],
                &common(200, "app-1", 2, 2048, 16, true),
            );
        }
        if let Some(n3) = self.nodes.get(2).map(|n| n.name.clone()) {
            self.add_vm(
                300,
                &n3,
                t - 5.0 * day,
                vec![(t - 5.0 * day, None)],
                &common(300, "mon-1", 1, 1024, 16, true),
            );
        }
        self.backups.push(BackupEntry {
            node: node1,
            storage: "local".to_string(),
            volid: "local:backup/vzdump-qemu-100-2026_01_10-02_00_03.vma.zst".to_string(),
            vmid: 100,
            size: 3 * GIB / 2,
            ctime: (t - 2.0 * day) as i64,
            notes: Some("web-1".to_string()),
            protected: false,
        });
    }

    pub(crate) fn node(&self, name: &str) -> Option<&SimNode> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// A fresh UPID.
    pub(crate) fn new_upid(&mut self, node: &str, task_type: &str, id: &str, user: &str) -> Upid {
        self.next_pid += 1 + rand::thread_rng().gen_range(0..7);
        let boot = self.node(node).map(|n| n.boot_time).unwrap_or(0.0);
        Upid {
            node: node.to_string(),
            pid: self.next_pid,
            // pstart is in clock ticks since boot.
            pstart: ((now() - boot).max(0.0) * 100.0) as u64,
            starttime: now() as u32,
            task_type: task_type.to_string(),
            id: id.to_string(),
            user: user.to_string(),
        }
    }

    /// Records a request, forgetting the oldest beyond [`MAX_RECORDED_REQUESTS`].
    pub(crate) fn record(&mut self, req: RecordedRequest) {
        if self.requests.len() >= MAX_RECORDED_REQUESTS {
            self.requests.drain(..MAX_RECORDED_REQUESTS / 10);
        }
        self.requests.push(req);
    }

    /// Adds a task, forgetting the oldest finished ones beyond [`MAX_TASKS`].
    pub(crate) fn insert_task(&mut self, task: SimTask) {
        let key = task.upid.to_string();
        self.task_order.push_back(key.clone());
        self.tasks.insert(key, task);
        let mut scanned = 0;
        while self.tasks.len() > MAX_TASKS && scanned < self.task_order.len() {
            scanned += 1;
            let Some(oldest) = self.task_order.pop_front() else {
                break;
            };
            if self
                .tasks
                .get(&oldest)
                .is_some_and(|t| t.state == TaskRun::Running)
            {
                self.task_order.push_back(oldest);
            } else {
                self.tasks.remove(&oldest);
            }
        }
    }

    /// Issues a ticket, dropping expired ones.
    pub(crate) fn insert_ticket(&mut self, ticket: String, info: TicketInfo) {
        let lifetime = self.ticket_lifetime.as_secs_f64();
        let t = now();
        self.tickets.retain(|_, i| t - i.issued < lifetime);
        self.tickets.insert(ticket, info);
    }

    /// How long the next task of a type takes (consumes a slow rule).
    pub(crate) fn take_task_duration(&mut self, task_type: &str) -> Duration {
        for rule in &mut self.faults.slow {
            if rule.remaining > 0 && rule.task_type.as_deref().is_none_or(|t| t == task_type) {
                rule.remaining -= 1;
                return rule.duration;
            }
        }
        self.task_duration
    }

    /// The injected failure for the next task of a type, if any (consumes a fail rule).
    pub(crate) fn take_task_failure(&mut self, task_type: &str) -> Option<String> {
        for rule in &mut self.faults.fail {
            if rule.remaining > 0 && rule.task_type.as_deref().is_none_or(|t| t == task_type) {
                rule.remaining -= 1;
                return Some(rule.message.clone());
            }
        }
        None
    }

    /// True when the request must be dropped (consumes a drop rule).
    pub(crate) fn take_drop(&mut self, method: &str, path: &str) -> bool {
        for rule in &mut self.faults.drop {
            let m = rule
                .method
                .as_deref()
                .is_none_or(|m| m.eq_ignore_ascii_case(method));
            let p = rule
                .path_contains
                .as_deref()
                .is_none_or(|p| path.contains(p));
            if rule.remaining > 0 && m && p {
                rule.remaining -= 1;
                return true;
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> State {
        State::new(&SimConfig::default())
    }

    #[test]
    fn seeded_inventory() {
        let st = state();
        assert_eq!(st.nodes.len(), 2);
        let tpl = &st.vms[&9000];
        assert!(tpl.is_template() && tpl.agent_enabled() && !tpl.is_running());
        assert_eq!(tpl.maxdisk(), 8 << 30);
        assert!(st.vms[&100].is_running());
        assert_eq!(st.vms[&100].cpus(), 2);
        assert_eq!(st.vms[&100].maxmem(), 4096 << 20);
        assert!(!st.vms[&101].is_running());
        assert!(!st.vms.contains_key(&300), "two nodes by default");
    }

    #[test]
    fn finished_tasks_are_capped_running_ones_kept() {
        let mut st = state();
        let running = st.new_upid("pve1", "qmstart", "100", "root@pam");
        st.insert_task(SimTask {
            upid: running.clone(),
            state: TaskRun::Running,
            log: Vec::new(),
        });
        for i in 0..MAX_TASKS + 10 {
            let upid = st.new_upid("pve1", "qmstop", &format!("{}", 100 + i), "root@pam");
            st.insert_task(SimTask {
                upid,
                state: TaskRun::Stopped("OK".into()),
                log: Vec::new(),
            });
        }
        assert_eq!(st.tasks.len(), MAX_TASKS);
        assert!(st.tasks.contains_key(&running.to_string()));
    }

    #[test]
    fn fault_rules_are_consumed() {
        let mut st = state();
        st.faults.drop.push(DropRule {
            method: Some("GET".into()),
            path_contains: Some("/status".into()),
            remaining: 1,
        });
        assert!(!st.take_drop("POST", "/api2/json/nodes/pve1/qemu/100/status/start"));
        assert!(st.take_drop("get", "/api2/json/nodes/pve1/qemu/100/status/current"));
        assert!(!st.take_drop("GET", "/api2/json/nodes/pve1/qemu/100/status/current"));
        st.faults.fail.push(FailRule {
            task_type: Some("qmclone".into()),
            message: "boom".into(),
            remaining: 1,
        });
        assert_eq!(st.take_task_failure("qmstart"), None);
        assert_eq!(st.take_task_failure("qmclone").as_deref(), Some("boom"));
        assert_eq!(st.take_task_failure("qmclone"), None);
    }

    #[test]
    fn pending_changes_apply_on_start() {
        let mut st = state();
        let vm = st.vms.get_mut(&100).expect("vm 100");
        let digest = vm.digest();
        vm.pending.insert("cores".into(), "8".into());
        vm.pending.insert("cpu".into(), String::new());
        assert_ne!(vm.digest(), digest);
        assert_eq!(
            vm.merged_config().get("cores").map(String::as_str),
            Some("8")
        );
        assert_eq!(vm.cpus(), 2);
        vm.apply_pending();
        assert_eq!(vm.cpus(), 8);
        assert!(vm.pending.is_empty());
    }
}

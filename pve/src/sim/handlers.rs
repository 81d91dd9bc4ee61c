//! Route handlers and the task engine of the simulator. Handlers run with the state locked
//! and never wait: anything that takes time is a task, whose worker locks the state again to
//! log progress and to apply its effect.

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine as _;
use rand::RngCore;
use serde_json::{Map, Value, json};

use super::PveMode;
use super::metrics;
use super::routes::{ApiErr, Ctx, Reply, RouteId};
use super::state::{
    AgentCommand, BackupEntry, SimNode, SimTask, SimVm, State, TaskRun, TicketInfo, now,
};
use crate::formats;
use crate::types::{Cf, Timeframe};
use crate::upid::Upid;

// ---- tasks --------------------------------------------------------------------------------

type Effect = Box<dyn FnOnce(&mut State) -> Result<Vec<String>, String> + Send>;
type Cleanup = Box<dyn FnOnce(&mut State) + Send>;

/// Starts a worker task: it logs `progress` over the task's duration, then applies `effect`
/// (or, if a fail rule matched or the effect fails, runs `on_fail`) and writes the final
/// `TASK OK` / `TASK ERROR: …` line.
/// What a task is: where it runs, its type and object id, and the log lines it writes while
/// running.
struct TaskSpec<'a> {
    node: &'a str,
    task_type: &'a str,
    id: &'a str,
    progress: Vec<String>,
}

fn start_task(
    ctx: &Ctx<'_>,
    st: &mut State,
    spec: TaskSpec<'_>,
    effect: Effect,
    on_fail: Cleanup,
) -> Upid {
    let TaskSpec {
        node,
        task_type,
        id,
        progress,
    } = spec;
    let upid = st.new_upid(node, task_type, id, &ctx.user);
    let duration = st.take_task_duration(task_type);
    let injected = st.take_task_failure(task_type);
    let key = upid.to_string();
    st.insert_task(SimTask {
        upid: upid.clone(),
        state: TaskRun::Running,
        log: Vec::new(),
    });
    let shared = Arc::clone(ctx.shared);
    tokio::spawn(async move {
        let steps = progress.len().max(1) as u32;
        if progress.is_empty() {
            tokio::time::sleep(duration).await;
        }
        for line in progress {
            tokio::time::sleep(duration / steps).await;
            if let Some(t) = shared.lock().tasks.get_mut(&key) {
                t.log.push(line);
            }
        }
        let mut st = shared.lock();
        let outcome = match injected {
            Some(msg) => Err(msg),
            None => effect(&mut st),
        };
        let (extra, status) = match outcome {
            Ok(lines) => (lines, "OK".to_string()),
            Err(msg) => {
                on_fail(&mut st);
                (Vec::new(), msg)
            }
        };
        if let Some(t) = st.tasks.get_mut(&key) {
            t.log.extend(extra);
            t.log.push(if status == "OK" {
                "TASK OK".to_string()
            } else {
                format!("TASK ERROR: {status}")
            });
            t.state = TaskRun::Stopped(status);
        }
    });
    upid
}

fn noop() -> Cleanup {
    Box::new(|_| {})
}

// ---- helpers ------------------------------------------------------------------------------

fn no_such_vm(node: &str, vmid: u32) -> ApiErr {
    ApiErr::new(
        500,
        format!("Configuration file 'nodes/{node}/qemu-server/{vmid}.conf' does not exist"),
    )
}

pub(super) fn vm_ref<'s>(st: &'s State, ctx: &Ctx<'_>) -> Result<&'s SimVm, ApiErr> {
    match st.vms.get(&ctx.vmid()) {
        Some(vm) if vm.node == ctx.node() => Ok(vm),
        _ => Err(no_such_vm(ctx.node(), ctx.vmid())),
    }
}

fn vm_mut<'s>(st: &'s mut State, ctx: &Ctx<'_>) -> Result<&'s mut SimVm, ApiErr> {
    let (node, vmid) = (ctx.node().to_string(), ctx.vmid());
    match st.vms.get_mut(&vmid) {
        Some(vm) if vm.node == node => Ok(vm),
        _ => Err(no_such_vm(&node, vmid)),
    }
}

fn check_lock(vm: &SimVm, ctx: &Ctx<'_>) -> Result<(), ApiErr> {
    match vm.lock() {
        Some(lock) if !ctx.flag("skiplock") => {
            Err(ApiErr::new(500, format!("VM is locked ({lock})")))
        }
        _ => Ok(()),
    }
}

fn random_b64(n: usize) -> String {
    let mut buf = vec![0u8; n];
    rand::thread_rng().fill_bytes(&mut buf);
    base64::engine::general_purpose::STANDARD.encode(buf)
}

/// Keys a running VM only picks up at its next start (no CPU/memory hotplug).
const COLD_KEYS: &[&str] = &["cores", "sockets", "memory", "cpu", "numa"];

/// Expands `storage:SIZE` disk allocations and model-only network devices like PVE does.
fn normalize_value(vmid: u32, key: &str, value: &str, config: &BTreeMap<String, String>) -> String {
    if super::state::is_disk_key(key)
        && let Some((store, rest)) = value.split_once(':')
    {
        let (size, opts) = match rest.split_once(',') {
            Some((s, o)) => (s, Some(o)),
            None => (rest, None),
        };
        if !size.is_empty() && size.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            let used: Vec<&String> = config.values().collect();
            let n = (0..)
                .find(|n| {
                    !used
                        .iter()
                        .any(|v| v.contains(&format!("vm-{vmid}-disk-{n}")))
                })
                .unwrap_or(0);
            let mut out = format!("{store}:vm-{vmid}-disk-{n}");
            if let Some(o) = opts {
                out.push(',');
                out.push_str(o);
            }
            out.push_str(&format!(",size={size}G"));
            return out;
        }
    }
    if let Some(idx) = key.strip_prefix("net") {
        let mut parts: Vec<String> = value.split(',').map(str::to_string).collect();
        if let Some(first) = parts.first_mut()
            && !first.contains('=')
        {
            let i: u8 = idx.parse().unwrap_or(0);
            let b = vmid.to_be_bytes();
            *first = format!("{first}=BC:24:11:{:02X}:{:02X}:{:02X}", b[2], b[3], i);
        }
        return parts.join(",");
    }
    value.to_string()
}

const NOT_CONFIG: &[&str] = &[
    "node",
    "vmid",
    "delete",
    "revert",
    "digest",
    "skiplock",
    "background_delay",
    "start",
    "storage",
    "pool",
];

fn check_ssh_keys(encoded: &str) -> Result<(), ApiErr> {
    let decoded = percent_encoding::percent_decode_str(encoded)
        .decode_utf8_lossy()
        .to_string();
    for line in decoded.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let mut f = line.split_whitespace();
        let kind = f.next().unwrap_or_default();
        if !(kind.starts_with("ssh-") || kind.starts_with("ecdsa-") || kind.starts_with("sk-"))
            || f.next().is_none()
        {
            return Err(ApiErr::param(
                "sshkeys",
                format!("invalid ssh public key: {line}"),
            ));
        }
    }
    Ok(())
}

/// Applies config parameters to a VM: cold keys of a running VM become pending.
fn apply_config(vm: &mut SimVm, ctx: &Ctx<'_>) -> Result<(), ApiErr> {
    if let Some(keys) = ctx.get("sshkeys") {
        check_ssh_keys(keys)?;
    }
    let running = vm.is_running();
    for (k, values) in &ctx.params {
        if NOT_CONFIG.contains(&k.as_str()) {
            continue;
        }
        let Some(v) = values.first() else { continue };
        let v = normalize_value(vm.vmid, k, v, &vm.config);
        if running && COLD_KEYS.contains(&k.as_str()) {
            vm.pending.insert(k.clone(), v);
        } else {
            vm.pending.remove(k);
            vm.config.insert(k.clone(), v);
        }
    }
    if let Some(list) = ctx.get("delete") {
        for k in formats::split_list(list) {
            if running && COLD_KEYS.contains(&k) {
                vm.pending.insert(k.to_string(), String::new());
            } else {
                vm.config.remove(k);
                vm.pending.remove(k);
            }
        }
    }
    if let Some(list) = ctx.get("revert") {
        for k in formats::split_list(list) {
            vm.pending.remove(k);
        }
    }
    Ok(())
}

fn start_run(vm: &mut SimVm, t: f64) {
    vm.apply_pending();
    vm.runs.push((t, None));
}

fn stop_run(vm: &mut SimVm, t: f64) {
    if let Some(last) = vm.runs.last_mut()
        && last.1.is_none()
    {
        last.1 = Some(t);
    }
}

// ---- handlers -----------------------------------------------------------------------------

pub(super) fn version(mode: PveMode) -> Value {
    match mode {
        PveMode::Pve8 => {
            json!({"version": "8.4.1", "release": "8.4", "repoid": "2a5fa54a8503f96d", "console": "xtermjs"})
        }
        PveMode::Pve9 => {
            json!({"version": "9.0.10", "release": "9.0", "repoid": "deb1ca707ec72a89", "console": "xtermjs"})
        }
    }
}

pub(super) fn ticket(ctx: &Ctx<'_>, st: &mut State) -> Result<Reply, ApiErr> {
    let username = ctx.get("username").unwrap_or_default().to_string();
    let password = ctx.get("password").unwrap_or_default();
    let t = now();
    let by_password = st.users.get(&username).is_some_and(|p| p == password);
    // A valid ticket of the same user renews it (PVE's ticket renewal).
    let by_ticket = st
        .tickets
        .get(password)
        .is_some_and(|i| i.user == username && t - i.issued < st.ticket_lifetime.as_secs_f64());
    if !by_password && !by_ticket {
        return Err(ApiErr::new(401, "authentication failure"));
    }
    let stamp = format!("{:08X}", t as u32);
    let ticket = format!("PVE:{username}:{stamp}::{}", random_b64(48));
    let csrf = format!("{stamp}:{}", random_b64(32).trim_end_matches('='));
    st.insert_ticket(
        ticket.clone(),
        TicketInfo {
            user: username.clone(),
            csrf: csrf.clone(),
            issued: t,
        },
    );
    Ok(Reply::data(json!({
        "username": username,
        "ticket": ticket,
        "CSRFPreventionToken": csrf,
        "clustername": "vigie-sim",
        "cap": {"vms": {"VM.Audit": 1, "VM.PowerMgmt": 1, "VM.Config.CPU": 1}},
    })))
}

pub(super) fn cluster_resources(ctx: &Ctx<'_>, st: &State) -> Value {
    let t = now();
    let kind = ctx.get("type");
    let mut out = Vec::new();
    if kind.is_none() || kind == Some("node") {
        for n in &st.nodes {
            let s = metrics::node_sample(st, n, t);
            out.push(json!({
                "id": format!("node/{}", n.name), "type": "node", "node": n.name, "status": "online",
                "cpu": s.cpu, "maxcpu": n.cpus, "mem": s.memused as u64, "maxmem": n.mem_total,
                "disk": 14u64 << 30, "maxdisk": 100u64 << 30, "uptime": (t - n.boot_time) as u64,
                "level": "", "cgroup-mode": 2,
            }));
        }
    }
    if kind.is_none() || kind == Some("vm") {
        for vm in st.vms.values() {
            let status = metrics::vm_status(vm, st.mode, t);
            let mut item = json!({
                "id": format!("qemu/{}", vm.vmid), "type": "qemu", "vmid": vm.vmid, "node": vm.node,
                "name": vm.name(), "template": u8::from(vm.is_template()), "hastate": Value::Null,
            });
            if let (Value::Object(m), Value::Object(s)) = (&mut item, status) {
                m.remove("hastate");
                for k in [
                    "status",
                    "cpu",
                    "mem",
                    "maxmem",
                    "disk",
                    "maxdisk",
                    "netin",
                    "netout",
                    "diskread",
                    "diskwrite",
                    "uptime",
                    "lock",
                    "tags",
                    "memhost",
                ] {
                    if let Some(v) = s.get(k) {
                        m.insert(k.into(), v.clone());
                    }
                }
                m.insert("maxcpu".into(), json!(vm.cpus()));
            }
            out.push(item);
        }
    }
    if kind.is_none() || kind == Some("storage") {
        for n in &st.nodes {
            for (sid, plugin, content, total) in metrics::STORAGES {
                out.push(json!({
                    "id": format!("storage/{}/{sid}", n.name), "type": "storage", "storage": sid,
                    "node": n.name, "status": "available", "plugintype": plugin, "content": content,
                    "shared": 0, "disk": metrics::storage_used(st, &n.name, sid), "maxdisk": total,
                }));
            }
        }
    }
    Value::Array(out)
}

pub(super) fn metrics_export(ctx: &Ctx<'_>, st: &State) -> Value {
    let selected: Vec<&SimNode> = if ctx.flag("local-only") {
        st.nodes.iter().take(1).collect()
    } else if let Some(list) = ctx.get("node-list") {
        let wanted = formats::split_list(list);
        st.nodes
            .iter()
            .filter(|n| wanted.contains(&n.name.as_str()))
            .collect()
    } else {
        st.nodes.iter().collect()
    };
    Value::Array(metrics::export(
        st,
        &selected,
        ctx.flag("history"),
        ctx.int("start-time"),
        now(),
    ))
}

pub(super) fn nodes(st: &State) -> Value {
    let t = now();
    Value::Array(
        st.nodes
            .iter()
            .map(|n| {
                let s = metrics::node_sample(st, n, t);
                json!({
                    "node": n.name, "id": format!("node/{}", n.name), "type": "node", "status": "online",
                    "cpu": s.cpu, "maxcpu": n.cpus, "mem": s.memused as u64, "maxmem": n.mem_total,
                    "disk": 14u64 << 30, "maxdisk": 100u64 << 30, "uptime": (t - n.boot_time) as u64,
                    "level": "", "ssl_fingerprint": "00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF",
                })
            })
            .collect(),
    )
}

fn timeframe_cf(ctx: &Ctx<'_>) -> (Timeframe, Cf) {
    let tf = ctx
        .get("timeframe")
        .and_then(Timeframe::parse)
        .unwrap_or(Timeframe::Year);
    let cf = if ctx.get("cf") == Some("MAX") {
        Cf::Max
    } else {
        Cf::Average
    };
    (tf, cf)
}

pub(super) fn node_rrd(ctx: &Ctx<'_>, st: &State) -> Result<Reply, ApiErr> {
    let (tf, cf) = timeframe_cf(ctx);
    let node = st
        .node(ctx.node())
        .ok_or_else(|| ApiErr::new(500, "no such node"))?;
    Ok(Reply::data(Value::Array(metrics::node_rrd(
        st,
        node,
        tf,
        cf,
        now(),
    ))))
}

pub(super) fn vm_rrd(ctx: &Ctx<'_>, st: &State) -> Result<Reply, ApiErr> {
    let vm = vm_ref(st, ctx)?;
    let t = now();
    if t < vm.rrd_ready_at {
        let dir = match st.mode {
            PveMode::Pve8 => "pve2-vm",
            PveMode::Pve9 => "pve-vm-9.0",
        };
        return Err(ApiErr::new(
            500,
            format!(
                "RRD error: opening '/var/lib/rrdcached/db/{dir}/{}': No such file or directory",
                vm.vmid
            ),
        ));
    }
    let (tf, cf) = timeframe_cf(ctx);
    Ok(Reply::data(Value::Array(metrics::vm_rrd(
        vm, st.mode, tf, cf, t,
    ))))
}

pub(super) fn vm_list(ctx: &Ctx<'_>, st: &State) -> Value {
    let t = now();
    Value::Array(
        st.vms
            .values()
            .filter(|v| v.node == ctx.node())
            .map(|vm| {
                let mut s = metrics::vm_status(vm, st.mode, t);
                if let Value::Object(m) = &mut s {
                    for k in [
                        "ha",
                        "agent",
                        "running-machine",
                        "running-qemu",
                        "pressurecpusome",
                        "pressurecpufull",
                        "pressureiosome",
                        "pressureiofull",
                        "pressurememorysome",
                        "pressurememoryfull",
                    ] {
                        m.remove(k);
                    }
                }
                s
            })
            .collect(),
    )
}

fn config_json(vm: &SimVm, cfg: &BTreeMap<String, String>) -> Value {
    const INT_KEYS: &[&str] = &[
        "cores",
        "sockets",
        "balloon",
        "template",
        "onboot",
        "numa",
        "protection",
    ];
    let mut m = Map::new();
    for (k, v) in cfg {
        let val = if INT_KEYS.contains(&k.as_str()) {
            v.parse::<i64>()
                .map(Value::from)
                .unwrap_or_else(|_| json!(v))
        } else {
            json!(v)
        };
        m.insert(k.clone(), val);
    }
    m.insert("digest".into(), json!(vm.digest()));
    Value::Object(m)
}

pub(super) fn config_get(ctx: &Ctx<'_>, st: &State) -> Result<Reply, ApiErr> {
    let vm = vm_ref(st, ctx)?;
    let cfg = if ctx.flag("current") {
        vm.config.clone()
    } else {
        vm.merged_config()
    };
    Ok(Reply::data(config_json(vm, &cfg)))
}

pub(super) fn config_update(
    ctx: &Ctx<'_>,
    st: &mut State,
    asynchronous: bool,
) -> Result<Reply, ApiErr> {
    let vm = vm_mut(st, ctx)?;
    check_lock(vm, ctx)?;
    if let Some(d) = ctx.get("digest")
        && d != vm.digest()
    {
        return Err(ApiErr::new(
            500,
            "detected modified configuration - file changed by other user? Try again.",
        ));
    }
    if !asynchronous || ctx.get("background_delay").is_some() {
        // PUT, or POST whose task "finished within background_delay": answer null.
        apply_config(vm, ctx)?;
        return Ok(Reply::data(Value::Null));
    }
    // Validate now (like PVE's parameter checks), apply in the worker.
    if let Some(keys) = ctx.get("sshkeys") {
        check_ssh_keys(keys)?;
    }
    let vmid = vm.vmid;
    let node = ctx.node().to_string();
    let params = ctx.params.clone();
    let user = ctx.user.clone();
    let shared = Arc::clone(ctx.shared);
    let effect: Effect = Box::new(move |st: &mut State| {
        let vm = st
            .vms
            .get_mut(&vmid)
            .ok_or_else(|| format!("VM {vmid} does not exist anymore"))?;
        let ctx = Ctx {
            shared: &shared,
            user,
            params,
        };
        apply_config(vm, &ctx).map_err(|e| e.message)?;
        Ok(vec![
            "update VM {vmid}: applied".replace("{vmid}", &vmid.to_string()),
        ])
    });
    let upid = start_task(
        ctx,
        st,
        TaskSpec {
            node: &node,
            task_type: "qmconfig",
            id: &vmid.to_string(),
            progress: Vec::new(),
        },
        effect,
        noop(),
    );
    Ok(Reply::data(json!(upid.to_string())))
}

pub(super) fn vm_create(ctx: &Ctx<'_>, st: &mut State) -> Result<Reply, ApiErr> {
    let vmid = ctx.vmid();
    if let Some(existing) = st.vms.get(&vmid) {
        return Err(ApiErr::new(
            500,
            format!(
                "unable to create VM {vmid} - VM {vmid} already exists on node '{}'",
                existing.node
            ),
        ));
    }
    if let Some(keys) = ctx.get("sshkeys") {
        check_ssh_keys(keys)?;
    }
    let node = ctx.node().to_string();
    let t = now();
    let mut vm = SimVm {
        vmid,
        node: node.clone(),
        config: BTreeMap::new(),
        pending: BTreeMap::new(),
        runs: Vec::new(),
        created: t,
        rrd_ready_at: t + 10.0,
        agent_files: BTreeMap::new(),
        agent_commands: Vec::new(),
    };
    apply_config(&mut vm, ctx)?;
    vm.config
        .entry("smbios1".into())
        .or_insert_with(|| format!("uuid=7d2e{vmid:04x}-0000-4000-8000-00000000{vmid:04x}"));
    vm.config.insert("lock".into(), "create".into());
    st.vms.insert(vmid, vm);
    let start = ctx.flag("start");
    let effect: Effect = Box::new(move |st: &mut State| {
        let vm = st.vms.get_mut(&vmid).ok_or("VM vanished during create")?;
        vm.config.remove("lock");
        let mut log = Vec::new();
        if start {
            start_run(vm, now());
            log.push(format!("start VM {vmid}"));
        }
        Ok(log)
    });
    let cleanup: Cleanup = Box::new(move |st: &mut State| {
        st.vms.remove(&vmid);
    });
    let upid = start_task(
        ctx,
        st,
        TaskSpec {
            node: &node,
            task_type: "qmcreate",
            id: &vmid.to_string(),
            progress: vec![format!("create VM {vmid}")],
        },
        effect,
        cleanup,
    );
    Ok(Reply::data(json!(upid.to_string())))
}

pub(super) fn vm_delete(ctx: &Ctx<'_>, st: &mut State) -> Result<Reply, ApiErr> {
    let vm = vm_ref(st, ctx)?;
    check_lock(vm, ctx)?;
    let vmid = vm.vmid;
    if vm.is_running() {
        return Err(ApiErr::new(
            500,
            format!("VM {vmid} is running - destroy failed"),
        ));
    }
    let disks: Vec<String> = vm.disks().into_iter().map(|(_, volid, _)| volid).collect();
    let mut progress: Vec<String> = disks
        .iter()
        .map(|d| format!("Removing image: 100% complete...done. ({d})"))
        .collect();
    if ctx.flag("purge") {
        progress.push(format!("purging VM {vmid} from related configurations.."));
    }
    let effect: Effect = Box::new(move |st: &mut State| {
        st.vms.remove(&vmid);
        Ok(Vec::new())
    });
    let node = ctx.node().to_string();
    let upid = start_task(
        ctx,
        st,
        TaskSpec {
            node: &node,
            task_type: "qmdestroy",
            id: &vmid.to_string(),
            progress,
        },
        effect,
        noop(),
    );
    Ok(Reply::data(json!(upid.to_string())))
}

pub(super) fn power(ctx: &Ctx<'_>, st: &mut State, id: RouteId) -> Result<Reply, ApiErr> {
    let vm = vm_ref(st, ctx)?;
    let vmid = vm.vmid;
    if id != RouteId::VmReboot {
        check_lock(vm, ctx)?;
    } else if let Some(lock) = vm.lock() {
        return Err(ApiErr::new(500, format!("VM is locked ({lock})")));
    }
    let running = vm.is_running();
    let node = ctx.node().to_string();
    let (task_type, effect): (&str, Effect) = match id {
        RouteId::VmStart => {
            if vm.is_template() {
                return Err(ApiErr::new(500, "you can't start a vm if it's a template"));
            }
            (
                "qmstart",
                Box::new(move |st: &mut State| {
                    let vm = st.vms.get_mut(&vmid).ok_or("VM vanished")?;
                    if vm.is_running() {
                        return Err(format!("VM {vmid} already running"));
                    }
                    start_run(vm, now());
                    Ok(Vec::new())
                }),
            )
        }
        RouteId::VmStop => (
            "qmstop",
            Box::new(move |st: &mut State| {
                let vm = st.vms.get_mut(&vmid).ok_or("VM vanished")?;
                stop_run(vm, now());
                Ok(Vec::new())
            }),
        ),
        RouteId::VmShutdown | RouteId::VmReboot => {
            if !running {
                return Err(ApiErr::new(500, format!("VM {vmid} not running")));
            }
            let reboot = id == RouteId::VmReboot;
            (
                if reboot { "qmreboot" } else { "qmshutdown" },
                Box::new(move |st: &mut State| {
                    let vm = st.vms.get_mut(&vmid).ok_or("VM vanished")?;
                    let t = now();
                    stop_run(vm, t);
                    if reboot {
                        start_run(vm, t + 0.001);
                    }
                    Ok(Vec::new())
                }),
            )
        }
        _ => return Err(ApiErr::new(500, "internal error: not a power action")),
    };
    let progress = if task_type == "qmstart" {
        vec![format!("generating cloud-init ISO for VM {vmid}")]
    } else {
        Vec::new()
    };
    let upid = start_task(
        ctx,
        st,
        TaskSpec {
            node: &node,
            task_type,
            id: &vmid.to_string(),
            progress,
        },
        effect,
        noop(),
    );
    Ok(Reply::data(json!(upid.to_string())))
}

pub(super) fn clone_vm(ctx: &Ctx<'_>, st: &mut State) -> Result<Reply, ApiErr> {
    let src = vm_ref(st, ctx)?;
    let vmid = src.vmid;
    let newid = ctx
        .int("newid")
        .and_then(|v| u32::try_from(v).ok())
        .unwrap_or(0);
    if st.vms.contains_key(&newid) {
        return Err(ApiErr::new(
            500,
            format!("unable to create VM {newid}: config file already exists"),
        ));
    }
    let template = src.is_template();
    if !template {
        check_lock(src, ctx)?;
    }
    let full = match ctx.get("full") {
        Some(f) => f == "1",
        None => !template,
    };
    if !full && !template {
        return Err(ApiErr::new(
            500,
            "Linked clone feature is only possible for templates",
        ));
    }
    if !full && ctx.get("storage").is_some() {
        return Err(ApiErr::param(
            "storage",
            "storage is only allowed for full clones",
        ));
    }
    let target = ctx.get("target").unwrap_or(ctx.node()).to_string();
    if st.node(&target).is_none() {
        return Err(ApiErr::param(
            "target",
            format!("no such cluster node '{target}'"),
        ));
    }
    let storage = ctx.get("storage").map(str::to_string);
    let mut config = src.config.clone();
    let disks = src.disks();
    config.remove("template");
    for (key, volid, size) in &disks {
        let (store, _) = volid.split_once(':').unwrap_or(("local-lvm", ""));
        let n = key.trim_start_matches(|c: char| c.is_ascii_alphabetic());
        let new_store = storage.clone().unwrap_or_else(|| store.to_string());
        let new_vol = if full {
            format!("{new_store}:vm-{newid}-disk-{n}")
        } else {
            format!(
                "{store}:{}/vm-{newid}-disk-{n}",
                volid.split_once(':').map(|(_, v)| v).unwrap_or_default()
            )
        };
        let rest: Vec<&str> = config
            .get(key)
            .map(|v| {
                v.split(',')
                    .skip(1)
                    .filter(|p| !p.starts_with("size="))
                    .collect()
            })
            .unwrap_or_default();
        let mut value = new_vol;
        for r in rest {
            value.push(',');
            value.push_str(r);
        }
        value.push_str(&format!(",size={}", crate::params::format_size(*size)));
        config.insert(key.clone(), value);
    }
    if let Some(ci) = config.get("ide2").cloned()
        && ci.contains("cloudinit")
    {
        config.insert(
            "ide2".into(),
            format!("local-lvm:vm-{newid}-cloudinit,media=cdrom"),
        );
    }
    for (k, v) in config.clone() {
        if k.starts_with("net") {
            let stripped: Vec<&str> = v.split(',').collect();
            if let Some((model, _)) = stripped[0].split_once('=') {
                let idx: u8 = k
                    .strip_prefix("net")
                    .and_then(|i| i.parse().ok())
                    .unwrap_or(0);
                let b = newid.to_be_bytes();
                let mut s = format!("{model}=BC:24:11:{:02X}:{:02X}:{:02X}", b[2], b[3], idx);
                for p in &stripped[1..] {
                    s.push(',');
                    s.push_str(p);
                }
                config.insert(k, s);
            }
        }
    }
    if let Some(n) = ctx.get("name") {
        config.insert("name".into(), n.to_string());
    } else {
        config.insert("name".into(), format!("Copy-of-VM-{}", src.name()));
    }
    if let Some(d) = ctx.get("description") {
        config.insert("description".into(), d.to_string());
    }
    config.insert("lock".into(), "clone".into());
    let t = now();
    st.vms.insert(
        newid,
        SimVm {
            vmid: newid,
            node: target,
            config,
            pending: BTreeMap::new(),
            runs: Vec::new(),
            created: t,
            rrd_ready_at: t + 10.0,
            agent_files: BTreeMap::new(),
            agent_commands: Vec::new(),
        },
    );
    let mut progress = Vec::new();
    for (key, volid, size) in &disks {
        if full {
            progress.push(format!("create full clone of drive {key} ({volid})"));
            let gib = *size as f64 / (1u64 << 30) as f64;
            progress.push(format!(
                "transferred {:.1} GiB of {gib:.1} GiB (50.00%)",
                gib / 2.0
            ));
            progress.push(format!(
                "transferred {gib:.1} GiB of {gib:.1} GiB (100.00%)"
            ));
        } else {
            progress.push(format!("create linked clone of drive {key} ({volid})"));
        }
    }
    let effect: Effect = Box::new(move |st: &mut State| {
        let vm = st.vms.get_mut(&newid).ok_or("clone target vanished")?;
        vm.config.remove("lock");
        Ok(Vec::new())
    });
    let cleanup: Cleanup = Box::new(move |st: &mut State| {
        st.vms.remove(&newid);
    });
    let node = ctx.node().to_string();
    let upid = start_task(
        ctx,
        st,
        TaskSpec {
            node: &node,
            task_type: "qmclone",
            id: &vmid.to_string(),
            progress,
        },
        effect,
        cleanup,
    );
    Ok(Reply::data(json!(upid.to_string())))
}

pub(super) fn resize(ctx: &Ctx<'_>, st: &mut State) -> Result<Reply, ApiErr> {
    let vm = vm_ref(st, ctx)?;
    check_lock(vm, ctx)?;
    let disk = ctx.get("disk").unwrap_or_default().to_string();
    let size = ctx.get("size").unwrap_or_default().to_string();
    let Some((_, volid, current)) = vm.disks().into_iter().find(|(k, _, _)| *k == disk) else {
        return Err(ApiErr::new(500, format!("disk '{disk}' does not exist")));
    };
    let (grow, amount) = match size.strip_prefix('+') {
        Some(rest) => (true, rest),
        None => (false, size.as_str()),
    };
    let bytes = crate::types::parse_size(amount)
        .ok_or_else(|| ApiErr::param("size", "value does not match the regex pattern"))?;
    let new_size = if grow { current + bytes } else { bytes };
    if new_size < current {
        return Err(ApiErr::new(500, "shrinking disks is not supported"));
    }
    let vmid = vm.vmid;
    let effect: Effect = Box::new(move |st: &mut State| {
        let vm = st.vms.get_mut(&vmid).ok_or("VM vanished")?;
        if let Some(v) = vm.config.get(&disk).cloned() {
            let mut parts: Vec<String> = v
                .split(',')
                .filter(|p| !p.starts_with("size="))
                .map(str::to_string)
                .collect();
            parts.push(format!("size={}", crate::params::format_size(new_size)));
            vm.config.insert(disk, parts.join(","));
        }
        Ok(Vec::new())
    });
    let node = ctx.node().to_string();
    let progress = vec![format!(
        "Size of logical volume {volid} changed to {new_size} B."
    )];
    let upid = start_task(
        ctx,
        st,
        TaskSpec {
            node: &node,
            task_type: "resize",
            id: &vmid.to_string(),
            progress,
        },
        effect,
        noop(),
    );
    Ok(Reply::data(json!(upid.to_string())))
}

fn agent_vm<'s>(st: &'s mut State, ctx: &Ctx<'_>) -> Result<&'s mut SimVm, ApiErr> {
    let vm = vm_mut(st, ctx)?;
    if !vm.agent_enabled() {
        return Err(ApiErr::new(500, "No QEMU guest agent configured"));
    }
    if !vm.is_running() {
        return Err(ApiErr::new(500, format!("VM {} is not running", vm.vmid)));
    }
    Ok(vm)
}

pub(super) fn agent_file_write(ctx: &Ctx<'_>, st: &mut State) -> Result<Reply, ApiErr> {
    let vm = agent_vm(st, ctx)?;
    let file = ctx.get("file").unwrap_or_default().to_string();
    let content = ctx.get("content").unwrap_or_default();
    let bytes = if ctx.get("encode") == Some("0") {
        base64::engine::general_purpose::STANDARD
            .decode(content)
            .map_err(|_| ApiErr::new(500, "can't write to file: Agent error: Guest agent command failed, error was 'Invalid parameter 'buf-b64''"))?
    } else {
        content.as_bytes().to_vec()
    };
    vm.agent_files.insert(file, bytes);
    Ok(Reply::data(Value::Null))
}

pub(super) fn agent_exec(ctx: &Ctx<'_>, st: &mut State) -> Result<Reply, ApiErr> {
    let command = ctx.params.get("command").cloned().unwrap_or_default();
    let input = ctx.get("input-data").map(str::to_string);
    let pid = st.next_exec_pid;
    let vm = agent_vm(st, ctx)?;
    vm.agent_commands.push(AgentCommand {
        pid,
        command,
        input_data: input,
    });
    st.next_exec_pid += 1;
    Ok(Reply::data(json!({ "pid": pid })))
}

pub(super) fn agent_exec_status(ctx: &Ctx<'_>, st: &mut State) -> Result<Reply, ApiErr> {
    let pid = ctx.int("pid").unwrap_or(-1);
    let vm = agent_vm(st, ctx)?;
    if !vm.agent_commands.iter().any(|c| c.pid == pid) {
        return Err(ApiErr::new(
            500,
            format!(
                "Agent error: Guest agent command failed, error was 'Invalid parameter 'pid': PID {pid} does not exist'"
            ),
        ));
    }
    // Simulated commands finish at once and succeed.
    Ok(Reply::data(
        json!({"exited": 1, "exitcode": 0, "out-data": ""}),
    ))
}

fn find_task<'s>(ctx: &Ctx<'_>, st: &'s State) -> Result<&'s SimTask, ApiErr> {
    let raw = ctx.get("upid").unwrap_or_default();
    let upid: Upid = raw
        .parse()
        .map_err(|_| ApiErr::new(400, format!("unable to parse worker upid '{raw}'")))?;
    st.tasks
        .get(&upid.to_string())
        .filter(|t| t.upid.node == ctx.node())
        .ok_or_else(|| ApiErr::new(500, "unable to open file - No such file or directory"))
}

pub(super) fn task_status(ctx: &Ctx<'_>, st: &State) -> Result<Reply, ApiErr> {
    let t = find_task(ctx, st)?;
    let u = &t.upid;
    let mut v = json!({
        "upid": u.to_string(), "node": u.node, "pid": u.pid, "pstart": u.pstart,
        "starttime": u.starttime, "type": u.task_type, "id": u.id, "user": u.user,
        "status": if t.state == TaskRun::Running { "running" } else { "stopped" },
    });
    if let (TaskRun::Stopped(exit), Value::Object(m)) = (&t.state, &mut v) {
        m.insert("exitstatus".into(), json!(exit));
    }
    Ok(Reply::data(v))
}

pub(super) fn task_log(ctx: &Ctx<'_>, st: &State) -> Result<Reply, ApiErr> {
    let t = find_task(ctx, st)?;
    let start = ctx.int("start").unwrap_or(0).max(0) as usize;
    let limit = match ctx.int("limit") {
        Some(l) if l > 0 => l as usize,
        _ => 50,
    };
    let lines: Vec<Value> = t
        .log
        .iter()
        .enumerate()
        .skip(start)
        .take(limit)
        .map(|(i, l)| json!({"n": i + 1, "t": l}))
        .collect();
    Ok(Reply {
        data: Value::Array(lines),
        total: Some(t.log.len()),
    })
}

pub(super) fn storage_content(ctx: &Ctx<'_>, st: &State) -> Result<Reply, ApiErr> {
    let storage = ctx.get("storage").unwrap_or_default();
    if !metrics::STORAGES.iter().any(|(s, _, _, _)| *s == storage) {
        return Err(ApiErr::new(
            500,
            format!("storage '{storage}' does not exist"),
        ));
    }
    let content = ctx.get("content");
    let vmid = ctx.int("vmid").and_then(|v| u32::try_from(v).ok());
    let mut out = Vec::new();
    let want = |c: &str| content.is_none_or(|w| w == c);
    if storage == "local-lvm" && want("images") {
        for vm in st
            .vms
            .values()
            .filter(|v| v.node == ctx.node() && vmid.is_none_or(|id| id == v.vmid))
        {
            for (_, volid, size) in vm.disks() {
                if volid.starts_with("local-lvm:") {
                    out.push(json!({
                        "volid": volid, "content": "images", "format": "raw", "size": size,
                        "vmid": vm.vmid, "ctime": vm.created as i64,
                    }));
                }
            }
        }
    }
    if storage == "local" {
        if want("backup") {
            for b in st.backups.iter().filter(|b| {
                b.node == ctx.node() && b.storage == storage && vmid.is_none_or(|id| id == b.vmid)
            }) {
                let mut item = json!({
                    "volid": b.volid, "content": "backup", "format": "vma.zst", "size": b.size,
                    "vmid": b.vmid, "ctime": b.ctime, "subtype": "qemu",
                });
                if let Value::Object(m) = &mut item {
                    if let Some(n) = &b.notes {
                        m.insert("notes".into(), json!(n));
                    }
                    if b.protected {
                        m.insert("protected".into(), json!(1));
                    }
                }
                out.push(item);
            }
        }
        if want("iso") && vmid.is_none() {
            out.push(json!({
                "volid": "local:iso/debian-12.8.0-amd64-netinst.iso", "content": "iso", "format": "iso",
                "size": 663_748_608u64, "ctime": 1_733_000_000,
            }));
        }
    }
    Ok(Reply::data(Value::Array(out)))
}

/// `YYYY_MM_DD-HH_MM_SS` in UTC, as in vzdump file names.
fn vzdump_stamp(t: i64) -> String {
    let days = t.div_euclid(86400);
    let secs = t.rem_euclid(86400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}_{m:02}_{d:02}-{:02}_{:02}_{:02}",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

pub(super) fn vzdump(ctx: &Ctx<'_>, st: &mut State) -> Result<Reply, ApiErr> {
    let node = ctx.node().to_string();
    let ids: Vec<u32> = if ctx.flag("all") {
        st.vms
            .values()
            .filter(|v| v.node == node && !v.is_template())
            .map(|v| v.vmid)
            .collect()
    } else {
        let list = ctx
            .get("vmid")
            .ok_or_else(|| ApiErr::param("vmid", "property is missing and it is not optional"))?;
        formats::split_list(list)
            .iter()
            .filter_map(|v| v.parse().ok())
            .collect()
    };
    for id in &ids {
        match st.vms.get(id) {
            Some(vm) if vm.node == node => {
                if let Some(lock) = vm.lock() {
                    return Err(ApiErr::new(500, format!("VM is locked ({lock})")));
                }
            }
            _ => {
                return Err(ApiErr::new(
                    500,
                    format!("guest {id} is not on this node '{node}'"),
                ));
            }
        }
    }
    let storage = ctx.get("storage").unwrap_or("local").to_string();
    if storage != "local" {
        return Err(ApiErr::new(
            500,
            format!("storage '{storage}' does not support backups"),
        ));
    }
    for id in &ids {
        if let Some(vm) = st.vms.get_mut(id) {
            vm.config.insert("lock".into(), "backup".into());
        }
    }
    let notes_template = ctx.get("notes-template").map(str::to_string);
    let protected = ctx.flag("protected");
    let mode = ctx.get("mode").unwrap_or("snapshot").to_string();
    let mut progress = vec![format!(
        "INFO: starting new backup job: vzdump {} --storage {storage} --mode {mode}",
        ids.iter().map(u32::to_string).collect::<Vec<_>>().join(" ")
    )];
    for id in &ids {
        progress.push(format!("INFO: Starting Backup of VM {id} (qemu)"));
        progress.push(format!("INFO: Finished Backup of VM {id} (00:00:01)"));
    }
    let ids_effect = ids.clone();
    let node_effect = node.clone();
    let effect: Effect = Box::new(move |st: &mut State| {
        let t = now() as i64;
        for id in &ids_effect {
            let Some(vm) = st.vms.get_mut(id) else {
                continue;
            };
            vm.config.remove("lock");
            let notes = notes_template.as_ref().map(|n| {
                n.replace("{{guestname}}", &vm.name())
                    .replace("{{vmid}}", &id.to_string())
            });
            let size = (vm.maxdisk() / 4).max(1 << 20);
            st.backups.push(BackupEntry {
                node: node_effect.clone(),
                storage: "local".into(),
                volid: format!("local:backup/vzdump-qemu-{id}-{}.vma.zst", vzdump_stamp(t)),
                vmid: *id,
                size,
                ctime: t,
                notes,
                protected,
            });
        }
        Ok(vec!["INFO: Backup job finished successfully".to_string()])
    });
    let ids_fail = ids.clone();
    let cleanup: Cleanup = Box::new(move |st: &mut State| {
        for id in &ids_fail {
            if let Some(vm) = st.vms.get_mut(id) {
                vm.config.remove("lock");
            }
        }
    });
    let id = if ids.len() == 1 {
        ids[0].to_string()
    } else {
        String::new()
    };
    let upid = start_task(
        ctx,
        st,
        TaskSpec {
            node: &node,
            task_type: "vzdump",
            id: &id,
            progress,
        },
        effect,
        cleanup,
    );
    Ok(Reply::data(json!(upid.to_string())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vzdump_stamps() {
        assert_eq!(vzdump_stamp(0), "1970_01_01-00_00_00");
        assert_eq!(vzdump_stamp(1_706_344_620), "2024_01_27-08_37_00");
    }

    #[test]
    fn disk_allocation_and_macs() {
        let cfg = BTreeMap::new();
        assert_eq!(
            normalize_value(123, "scsi1", "local-lvm:10", &cfg),
            "local-lvm:vm-123-disk-0,size=10G"
        );
        assert_eq!(
            normalize_value(123, "scsi1", "local-lvm:10,iothread=1", &cfg),
            "local-lvm:vm-123-disk-0,iothread=1,size=10G"
        );
        assert_eq!(
            normalize_value(123, "net0", "virtio,bridge=vmbr0", &cfg),
            "virtio=BC:24:11:00:7B:00,bridge=vmbr0"
        );
        assert_eq!(normalize_value(123, "name", "x", &cfg), "x");
    }
}

//! Simulated metrics: deterministic functions of the VM id, its run history and the time,
//! so that status counters, RRD series and the metrics export agree with each other.
//!
//! - CPU: a per-VM base load with a slow wave and noise, plus a boot spike in the first
//!   minute after each start; 0 while stopped.
//! - Memory: grows from 25 % to ~50 % of `maxmem` over the first ten minutes of a run.
//! - Network and disk: per-VM base rates with a 20-minute wave; the counters in the status
//!   (`netin`, …) are the exact integrals of those rates since the current start, and RRD
//!   points average (or, for `MAX`, take the maximum of) six samples per step.
//! - Stopped VMs have zero rates and usage; before a VM existed RRD points carry only `time`.

use std::f64::consts::TAU;

use serde_json::{Map, Value, json};

use super::PveMode;
use super::state::{SimNode, SimVm, State};
use crate::types::{Cf, Timeframe};

const WAVE: f64 = 1200.0;

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Deterministic noise in [0, 1).
fn unit(a: u64, b: u64) -> f64 {
    (splitmix(a.wrapping_mul(0x1000_0001).wrapping_add(b)) >> 11) as f64 / (1u64 << 53) as f64
}

struct Profile {
    cpu_base: f64,
    phase: f64,
    netin: f64,
    netout: f64,
    diskread: f64,
    diskwrite: f64,
}

fn profile(vmid: u32) -> Profile {
    let id = u64::from(vmid);
    Profile {
        cpu_base: 0.03 + 0.15 * unit(id, 1),
        phase: TAU * unit(id, 2),
        netin: 2_000.0 + 40_000.0 * unit(id, 3),
        netout: 1_000.0 + 20_000.0 * unit(id, 4),
        diskread: 500.0 + 30_000.0 * unit(id, 5),
        diskwrite: 4_000.0 + 60_000.0 * unit(id, 6),
    }
}

fn rate(base: f64, phase: f64, t: f64) -> f64 {
    base * (1.0 + 0.5 * (TAU * t / WAVE + phase).sin())
}

/// Integral of [`rate`] over [s, t].
fn integral(base: f64, phase: f64, s: f64, t: f64) -> f64 {
    let k = base * 0.5 * WAVE / TAU;
    base * (t - s) - k * ((TAU * t / WAVE + phase).cos() - (TAU * s / WAVE + phase).cos())
}

/// Instant values of a VM at time `t`.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct VmSample {
    pub running: bool,
    pub cpu: f64,
    pub mem: f64,
    pub memhost: f64,
    pub netin: f64,
    pub netout: f64,
    pub diskread: f64,
    pub diskwrite: f64,
}

pub(crate) fn vm_sample(vm: &SimVm, t: f64) -> VmSample {
    let Some(start) = vm.running_at(t) else {
        return VmSample::default();
    };
    let p = profile(vm.vmid);
    let up = (t - start).max(0.0);
    let noise = unit(u64::from(vm.vmid), (t / 10.0) as u64) - 0.5;
    let boot = if up < 60.0 {
        0.5 * (1.0 - up / 60.0)
    } else {
        0.0
    };
    let cpu = (p.cpu_base * (1.0 + 0.4 * (TAU * t / 900.0 + p.phase).sin()) + 0.02 * noise + boot)
        .clamp(0.0, 1.0);
    let maxmem = vm.maxmem() as f64;
    let mem =
        maxmem * (0.25 + 0.25 * (up / 600.0).min(1.0) + 0.02 * (TAU * t / 700.0 + p.phase).sin());
    VmSample {
        running: true,
        cpu,
        mem,
        memhost: mem * 1.04 + 48.0 * 1024.0 * 1024.0,
        netin: rate(p.netin, p.phase, t),
        netout: rate(p.netout, p.phase + 1.0, t),
        diskread: rate(p.diskread, p.phase + 2.0, t),
        diskwrite: rate(p.diskwrite, p.phase + 3.0, t),
    }
}

/// Byte counters since the current start (status `netin`, …), 0 when stopped.
pub(crate) fn vm_counters(vm: &SimVm, t: f64) -> [u64; 4] {
    let Some(start) = vm.running_at(t) else {
        return [0; 4];
    };
    let p = profile(vm.vmid);
    [
        integral(p.netin, p.phase, start, t) as u64,
        integral(p.netout, p.phase + 1.0, start, t) as u64,
        integral(p.diskread, p.phase + 2.0, start, t) as u64,
        integral(p.diskwrite, p.phase + 3.0, start, t) as u64,
    ]
}

fn pressure(cpu: f64) -> [f64; 6] {
    // some/full for cpu, io, memory — percentages (avg10), small and related to load.
    [
        cpu * 8.0,
        cpu * 2.0,
        0.3 + cpu * 1.5,
        0.1 + cpu * 0.5,
        0.02,
        0.0,
    ]
}

/// `status/current` for a VM.
pub(crate) fn vm_status(vm: &SimVm, mode: PveMode, t: f64) -> Value {
    let s = vm_sample(vm, t);
    let [netin, netout, diskread, diskwrite] = vm_counters(vm, t);
    let running = s.running;
    let mut m = Map::new();
    m.insert("vmid".into(), json!(vm.vmid));
    m.insert("name".into(), json!(vm.name()));
    m.insert(
        "status".into(),
        json!(if running { "running" } else { "stopped" }),
    );
    m.insert(
        "qmpstatus".into(),
        json!(if running { "running" } else { "stopped" }),
    );
    m.insert("cpus".into(), json!(vm.cpus()));
    m.insert("cpu".into(), json!(s.cpu));
    m.insert("maxmem".into(), json!(vm.maxmem()));
    m.insert("mem".into(), json!(s.mem as u64));
    m.insert("maxdisk".into(), json!(vm.maxdisk()));
    m.insert("disk".into(), json!(0));
    m.insert("netin".into(), json!(netin));
    m.insert("netout".into(), json!(netout));
    m.insert("diskread".into(), json!(diskread));
    m.insert("diskwrite".into(), json!(diskwrite));
    m.insert(
        "uptime".into(),
        json!(vm.running_since().map(|s| (t - s) as u64).unwrap_or(0)),
    );
    m.insert("ha".into(), json!({"managed": 0}));
    if vm.agent_enabled() {
        m.insert("agent".into(), json!(1));
    }
    if vm.is_template() {
        m.insert("template".into(), json!(1));
    }
    if let Some(l) = vm.lock() {
        m.insert("lock".into(), json!(l));
    }
    if let Some(tags) = vm.config.get("tags") {
        m.insert("tags".into(), json!(tags));
    }
    if running {
        m.insert("pid".into(), json!(100_000 + vm.vmid));
        let (machine, qemu) = match mode {
            PveMode::Pve8 => ("pc-i440fx-8.1+pve0", "8.1.5"),
            PveMode::Pve9 => ("pc-i440fx-10.0+pve0", "10.0.2"),
        };
        m.insert("running-machine".into(), json!(machine));
        m.insert("running-qemu".into(), json!(qemu));
    }
    if mode == PveMode::Pve9 {
        m.insert("memhost".into(), json!(s.memhost as u64));
        let pr = pressure(s.cpu);
        for (k, v) in PRESSURE_KEYS.iter().zip(pr) {
            m.insert((*k).into(), json!(if running { v } else { 0.0 }));
        }
    }
    Value::Object(m)
}

const PRESSURE_KEYS: [&str; 6] = [
    "pressurecpusome",
    "pressurecpufull",
    "pressureiosome",
    "pressureiofull",
    "pressurememorysome",
    "pressurememoryfull",
];

/// Step and row count of an RRD archive (pvestatd's RRAs keep 70 rows per frame here).
pub(crate) fn rrd_step(tf: Timeframe) -> f64 {
    match tf {
        Timeframe::Hour => 60.0,
        Timeframe::Day => 1800.0,
        Timeframe::Week => 10800.0,
        Timeframe::Month => 43200.0,
        Timeframe::Year => 604_800.0,
    }
}

pub(crate) const RRD_ROWS: usize = 70;
const SUBSAMPLES: usize = 6;

fn rrd_times(tf: Timeframe, t: f64) -> Vec<f64> {
    let step = rrd_step(tf);
    let last = (t / step).floor() * step;
    (0..RRD_ROWS)
        .rev()
        .map(|i| last - i as f64 * step)
        .collect()
}

fn fold(samples: &[f64], cf: Cf) -> f64 {
    match cf {
        Cf::Average => samples.iter().sum::<f64>() / samples.len().max(1) as f64,
        Cf::Max => samples.iter().copied().fold(0.0, f64::max),
    }
}

fn sub_times(end: f64, step: f64) -> Vec<f64> {
    (0..SUBSAMPLES)
        .map(|i| end - step + step * (i as f64 + 0.5) / SUBSAMPLES as f64)
        .collect()
}

/// `GET /nodes/{node}/qemu/{vmid}/rrddata`.
pub(crate) fn vm_rrd(vm: &SimVm, mode: PveMode, tf: Timeframe, cf: Cf, t: f64) -> Vec<Value> {
    let step = rrd_step(tf);
    rrd_times(tf, t)
        .into_iter()
        .map(|end| {
            let mut m = Map::new();
            m.insert("time".into(), json!(end as i64));
            if end < vm.created {
                return Value::Object(m);
            }
            let samples: Vec<VmSample> = sub_times(end, step)
                .into_iter()
                .map(|s| vm_sample(vm, s))
                .collect();
            let col =
                |f: fn(&VmSample) -> f64| fold(&samples.iter().map(f).collect::<Vec<_>>(), cf);
            m.insert("maxcpu".into(), json!(vm.cpus()));
            m.insert("cpu".into(), json!(col(|s| s.cpu)));
            m.insert("maxmem".into(), json!(vm.maxmem()));
            m.insert("mem".into(), json!(col(|s| s.mem)));
            m.insert("maxdisk".into(), json!(vm.maxdisk()));
            m.insert("disk".into(), json!(0));
            m.insert("netin".into(), json!(col(|s| s.netin)));
            m.insert("netout".into(), json!(col(|s| s.netout)));
            m.insert("diskread".into(), json!(col(|s| s.diskread)));
            m.insert("diskwrite".into(), json!(col(|s| s.diskwrite)));
            if mode == PveMode::Pve9 {
                m.insert("memhost".into(), json!(col(|s| s.memhost)));
                let cpu = col(|s| s.cpu);
                let running = samples.iter().any(|s| s.running);
                for (k, v) in PRESSURE_KEYS.iter().zip(pressure(cpu)) {
                    m.insert((*k).into(), json!(if running { v } else { 0.0 }));
                }
            }
            Value::Object(m)
        })
        .collect()
}

/// Instant values of a node.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct NodeSample {
    pub cpu: f64,
    pub memused: f64,
    pub netin: f64,
    pub netout: f64,
    pub iowait: f64,
}

const NODE_BASE_MEM: f64 = 2.5 * (1u64 << 30) as f64;

pub(crate) fn node_sample(st: &State, node: &SimNode, t: f64) -> NodeSample {
    let mut cpu_cores = 0.0;
    let mut mem = NODE_BASE_MEM;
    let mut netin = 800.0;
    let mut netout = 600.0;
    let mut disk = 0.0;
    for vm in st.vms.values().filter(|v| v.node == node.name) {
        let s = vm_sample(vm, t);
        cpu_cores += s.cpu * vm.cpus() as f64;
        mem += s.memhost;
        netin += s.netin;
        netout += s.netout;
        disk += s.diskread + s.diskwrite;
    }
    let noise = unit(node.cpus.into(), (t / 10.0) as u64) * 0.005;
    NodeSample {
        cpu: (cpu_cores / f64::from(node.cpus) + 0.012 + noise).clamp(0.0, 1.0),
        memused: mem.min(node.mem_total as f64),
        netin,
        netout,
        iowait: (0.001 + disk / 200_000_000.0).min(0.5),
    }
}

const SWAP_TOTAL: u64 = 8 << 30;
const ROOT_TOTAL: u64 = 100 << 30;
const ROOT_USED: u64 = 14 << 30;

/// `GET /nodes/{node}/rrddata`.
pub(crate) fn node_rrd(st: &State, node: &SimNode, tf: Timeframe, cf: Cf, t: f64) -> Vec<Value> {
    let step = rrd_step(tf);
    rrd_times(tf, t)
        .into_iter()
        .map(|end| {
            let mut m = Map::new();
            m.insert("time".into(), json!(end as i64));
            if end < node.boot_time {
                return Value::Object(m);
            }
            let samples: Vec<NodeSample> = sub_times(end, step)
                .into_iter()
                .map(|s| node_sample(st, node, s))
                .collect();
            let col =
                |f: fn(&NodeSample) -> f64| fold(&samples.iter().map(f).collect::<Vec<_>>(), cf);
            let cpu = col(|s| s.cpu);
            let memused = col(|s| s.memused);
            m.insert("maxcpu".into(), json!(node.cpus));
            m.insert("cpu".into(), json!(cpu));
            m.insert("loadavg".into(), json!(cpu * f64::from(node.cpus) * 1.1));
            m.insert("iowait".into(), json!(col(|s| s.iowait)));
            m.insert("memtotal".into(), json!(node.mem_total));
            m.insert("memused".into(), json!(memused));
            m.insert("swaptotal".into(), json!(SWAP_TOTAL));
            m.insert("swapused".into(), json!(64u64 << 20));
            m.insert("roottotal".into(), json!(ROOT_TOTAL));
            m.insert("rootused".into(), json!(ROOT_USED));
            m.insert("netin".into(), json!(col(|s| s.netin)));
            m.insert("netout".into(), json!(col(|s| s.netout)));
            if st.mode == PveMode::Pve9 {
                m.insert(
                    "memavailable".into(),
                    json!(node.mem_total as f64 - memused),
                );
                m.insert("arcsize".into(), json!(0));
                let pr = pressure(cpu);
                m.insert("pressurecpusome".into(), json!(pr[0]));
                m.insert("pressureiosome".into(), json!(pr[2]));
                m.insert("pressureiofull".into(), json!(pr[3]));
                m.insert("pressurememorysome".into(), json!(pr[4]));
                m.insert("pressurememoryfull".into(), json!(pr[5]));
            }
            Value::Object(m)
        })
        .collect()
}

/// Storages every simulated node has: (id, type, content, total bytes).
pub(crate) const STORAGES: &[(&str, &str, &str, u64)] = &[
    ("local", "dir", "backup,iso,snippets,vztmpl", 100 << 30),
    ("local-lvm", "lvmthin", "images,rootdir", 800 << 30),
];

pub(crate) fn storage_used(st: &State, node: &str, storage: &str) -> u64 {
    if storage == "local" {
        let backups: u64 = st
            .backups
            .iter()
            .filter(|b| b.node == node && b.storage == storage)
            .map(|b| b.size)
            .sum();
        return ROOT_USED + backups;
    }
    st.vms
        .values()
        .filter(|v| v.node == node)
        .flat_map(|v| v.disks())
        .filter(|(_, volid, _)| volid.starts_with(&format!("{storage}:")))
        .map(|(_, _, size)| size * 2 / 5)
        .sum()
}

fn gauge(out: &mut Vec<Value>, id: &str, ts: i64, metric: &str, value: f64) {
    out.push(json!({"id": id, "timestamp": ts, "metric": metric, "value": value, "type": "gauge"}));
}

fn derive(out: &mut Vec<Value>, id: &str, ts: i64, metric: &str, value: f64) {
    out.push(
        json!({"id": id, "timestamp": ts, "metric": metric, "value": value, "type": "derive"}),
    );
}

/// `GET /cluster/metrics/export`: generations every 10 s (the newest only, or the last 181
/// with `history`), for the selected nodes.
pub(crate) fn export(
    st: &State,
    nodes: &[&SimNode],
    history: bool,
    start_time: Option<i64>,
    t: f64,
) -> Vec<Value> {
    let newest = (t / 10.0).floor() as i64 * 10;
    let generations = if history { 181 } else { 1 };
    let mut out = Vec::new();
    for g in (0..generations).rev() {
        let ts = newest - g * 10;
        if start_time.is_some_and(|s| ts <= s) {
            continue;
        }
        let tf = ts as f64;
        for node in nodes {
            let id = format!("node/{}", node.name);
            let s = node_sample(st, node, tf);
            let up = tf - node.boot_time;
            gauge(&mut out, &id, ts, "uptime", up.floor());
            derive(&mut out, &id, ts, "net_in", (800.0 * up).floor());
            derive(&mut out, &id, ts, "net_out", (600.0 * up).floor());
            let load = s.cpu * f64::from(node.cpus) * 1.1;
            gauge(&mut out, &id, ts, "cpu_avg1", load);
            gauge(&mut out, &id, ts, "cpu_avg5", load * 0.95);
            gauge(&mut out, &id, ts, "cpu_avg15", load * 0.9);
            gauge(&mut out, &id, ts, "cpu_max", f64::from(node.cpus));
            gauge(&mut out, &id, ts, "cpu_current", s.cpu);
            gauge(&mut out, &id, ts, "cpu_iowait", s.iowait);
            gauge(&mut out, &id, ts, "mem_total", node.mem_total as f64);
            gauge(&mut out, &id, ts, "mem_used", s.memused.floor());
            gauge(&mut out, &id, ts, "swap_total", SWAP_TOTAL as f64);
            gauge(&mut out, &id, ts, "swap_used", (64u64 << 20) as f64);
            gauge(&mut out, &id, ts, "disk_total", ROOT_TOTAL as f64);
            gauge(&mut out, &id, ts, "disk_used", ROOT_USED as f64);
            for vm in st
                .vms
                .values()
                .filter(|v| v.node == node.name && v.created <= tf)
            {
                let id = format!("qemu/{}", vm.vmid);
                let s = vm_sample(vm, tf);
                if s.running {
                    let [ni, no, dr, dw] = vm_counters(vm, tf);
                    gauge(&mut out, &id, ts, "cpu_current", s.cpu);
                    gauge(&mut out, &id, ts, "mem_used", s.mem.floor());
                    derive(&mut out, &id, ts, "disk_read", dr as f64);
                    derive(&mut out, &id, ts, "disk_write", dw as f64);
                    derive(&mut out, &id, ts, "net_in", ni as f64);
                    derive(&mut out, &id, ts, "net_out", no as f64);
                }
                let uptime = vm.running_at(tf).map(|s| (tf - s).floor()).unwrap_or(0.0);
                gauge(&mut out, &id, ts, "uptime", uptime);
                gauge(&mut out, &id, ts, "cpu_max", vm.cpus() as f64);
                gauge(&mut out, &id, ts, "mem_total", vm.maxmem() as f64);
                gauge(&mut out, &id, ts, "disk_total", vm.maxdisk() as f64);
            }
            for (sid, _, _, total) in STORAGES {
                let id = format!("storage/{}/{sid}", node.name);
                gauge(&mut out, &id, ts, "disk_total", *total as f64);
                gauge(
                    &mut out,
                    &id,
                    ts,
                    "disk_used",
                    storage_used(st, &node.name, sid) as f64,
                );
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integral_matches_the_rate() {
        let (base, phase) = (10_000.0, 1.3);
        let (s, t) = (1_000.0, 1_060.0);
        let exact = integral(base, phase, s, t);
        let n = 6000;
        let riemann: f64 = (0..n)
            .map(|i| rate(base, phase, s + (t - s) * (i as f64 + 0.5) / n as f64))
            .sum::<f64>()
            * (t - s)
            / n as f64;
        assert!(
            (exact - riemann).abs() / exact < 1e-6,
            "{exact} vs {riemann}"
        );
        assert!(integral(base, phase, s, s).abs() < 1e-6);
    }

    #[test]
    fn noise_is_deterministic_and_bounded() {
        for i in 0..1000 {
            let u = unit(100, i);
            assert!((0.0..1.0).contains(&u));
            assert_eq!(u, unit(100, i));
        }
    }
}

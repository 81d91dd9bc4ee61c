//! CPU time and memory of processes and threads, from `/proc`.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use anyhow::{Context, Result};

/// Clock ticks per second of `utime`/`stime` in `/proc/*/stat` (`getconf CLK_TCK`, else 100).
pub fn clk_tck() -> f64 {
    static TCK: OnceLock<f64> = OnceLock::new();
    *TCK.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|t| *t > 0.0)
            .unwrap_or(100.0)
    })
}

/// User and system CPU seconds.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Cpu {
    pub user: f64,
    pub system: f64,
}

impl Cpu {
    pub fn total(&self) -> f64 {
        self.user + self.system
    }

    /// The CPU time spent since `earlier`.
    pub fn since(&self, earlier: &Cpu) -> Cpu {
        Cpu {
            user: self.user - earlier.user,
            system: self.system - earlier.system,
        }
    }
}

/// Parses one `/proc/PID/stat` (or `/proc/PID/task/TID/stat`) line: the command name and its CPU time.
pub fn parse_stat(text: &str) -> Option<(String, Cpu)> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_string();
    let rest: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
    // Fields after the command: state is field 3, utime field 14, stime field 15.
    let utime: f64 = rest.get(11)?.parse().ok()?;
    let stime: f64 = rest.get(12)?.parse().ok()?;
    let t = clk_tck();
    Some((
        comm,
        Cpu {
            user: utime / t,
            system: stime / t,
        },
    ))
}

fn proc_dir(pid: Option<u32>) -> String {
    match pid {
        Some(p) => format!("/proc/{p}"),
        None => "/proc/self".to_string(),
    }
}

/// CPU time of a whole process (all its threads, living and exited); `None` is this process.
pub fn cpu(pid: Option<u32>) -> Result<Cpu> {
    let path = format!("{}/stat", proc_dir(pid));
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    parse_stat(&text)
        .map(|(_, c)| c)
        .with_context(|| format!("cannot parse {path}"))
}

/// Resident memory: the high-water mark (`VmHWM`) and the current value (`VmRSS`), in KiB.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Mem {
    pub hwm_kib: u64,
    pub rss_kib: u64,
}

impl Mem {
    pub fn hwm_mib(&self) -> f64 {
        self.hwm_kib as f64 / 1024.0
    }
    pub fn rss_mib(&self) -> f64 {
        self.rss_kib as f64 / 1024.0
    }
}

/// Parses `/proc/PID/status`.
pub fn parse_status(text: &str) -> Mem {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Mem {
        hwm_kib: field("VmHWM:"),
        rss_kib: field("VmRSS:"),
    }
}

/// Memory of a process; `None` is this process.
pub fn mem(pid: Option<u32>) -> Result<Mem> {
    let path = format!("{}/status", proc_dir(pid));
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    Ok(parse_status(&text))
}

/// CPU time of every living thread of this process, summed by group (`group` maps a thread
/// name to its group). Threads that exited are not counted: keep pools alive while measuring.
pub fn thread_cpu_by_group(group: impl Fn(&str) -> &'static str) -> Result<BTreeMap<String, Cpu>> {
    let mut out: BTreeMap<String, Cpu> = BTreeMap::new();
    for entry in std::fs::read_dir("/proc/self/task").context("cannot list /proc/self/task")? {
        let entry = entry?;
        let Ok(text) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue; // the thread exited meanwhile
        };
        if let Some((comm, c)) = parse_stat(&text) {
            let e = out.entry(group(&comm).to_string()).or_default();
            e.user += c.user;
            e.system += c.system;
        }
    }
    Ok(out)
}

/// Per-group difference of two [`thread_cpu_by_group`] samples.
pub fn group_delta(
    after: &BTreeMap<String, Cpu>,
    before: &BTreeMap<String, Cpu>,
) -> BTreeMap<String, Cpu> {
    after
        .iter()
        .map(|(k, a)| {
            (
                k.clone(),
                a.since(&before.get(k).copied().unwrap_or_default()),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_line_with_spaces_in_the_name() {
        let line =
            "1234 (tokio (x) 1) S 1 1234 1234 0 -1 4194304 100 0 0 0 250 50 0 0 20 0 3 0 100 0 0";
        let (comm, c) = parse_stat(line).expect("parses");
        assert_eq!(comm, "tokio (x) 1");
        let t = clk_tck();
        assert!((c.user - 250.0 / t).abs() < 1e-9);
        assert!((c.system - 50.0 / t).abs() < 1e-9);
    }

    #[test]
    fn status_fields() {
        let m = parse_status("Name:\tx\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\n");
        assert_eq!(
            m,
            Mem {
                hwm_kib: 2048,
                rss_kib: 1024
            }
        );
    }
}

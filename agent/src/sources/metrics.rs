//! Host metrics: every `interval`, one `Kind::HostMetrics` event (module `metrics`) whose
//! `system` section holds, from `sysinfo`:
//!
//! - `cpu_pct`: CPU use over the last interval, 0..=1 of all cores;
//! - memory and swap in use, total memory;
//! - load averages (1, 5, 15 min);
//! - used and total bytes of the file system mounted at `disk_mount` (default `/`; the
//!   mount that contains it when it is not a mount point itself);
//! - network bytes received and sent since boot, summed over every interface except
//!   loopback (counters: rates are derived from two samples);
//! - uptime and number of processes.
//!
//! The source cannot pause: a sample the pipeline has no room for is dropped and counted.
//! Sampling reads `/proc` and runs on the blocking pool.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;
use sysinfo::{Disks, Networks, System};
use vigie_proto::event::{Event, Kind, SystemMetrics};

use super::{SourceCtx, de_duration};

/// `[metrics]` input.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Time between samples. Default `10s`.
    #[serde(deserialize_with = "de_duration")]
    pub interval: Duration,
    /// File system reported as `system.disk.*`. Default `/`.
    pub disk_mount: PathBuf,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            interval: Duration::from_secs(10),
            disk_mount: PathBuf::from("/"),
        }
    }
}

impl MetricsConfig {
    pub fn validate(&self) -> anyhow::Result<()> {
        if !(Duration::from_millis(100)..=Duration::from_secs(3600)).contains(&self.interval) {
            bail!("metrics.interval must be between 100ms and 1h (e.g. \"10s\")");
        }
        if !self.disk_mount.is_absolute() {
            bail!(
                "metrics.disk_mount = {:?} must be an absolute path such as /",
                self.disk_mount
            );
        }
        Ok(())
    }
}

/// Runs the source until shutdown.
pub async fn run(cfg: MetricsConfig, ctx: SourceCtx) -> anyhow::Result<()> {
    cfg.validate()?;
    let mount = cfg.disk_mount.clone();
    let mut sampler = tokio::task::spawn_blocking(move || Sampler::new(mount))
        .await
        .context("metrics sampler failed to start")?;
    let mut ticks = tokio::time::interval(cfg.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await; // the first tick is immediate; CPU use needs a full interval
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = ctx.wait_shutdown() => return Ok(()),
        }
        let (s, metrics) = tokio::task::spawn_blocking(move || {
            let m = sampler.sample();
            (sampler, m)
        })
        .await
        .context("metrics sampler failed")?;
        sampler = s;
        let mut ev = Event::new(Kind::HostMetrics, super::now());
        ev.event.module = "metrics".into();
        ev.system = Some(metrics);
        if !ctx.try_send(ctx.emit(vec![ev], None)) {
            return Ok(());
        }
    }
}

struct Sampler {
    sys: System,
    networks: Networks,
    disks: Disks,
    disk_mount: PathBuf,
}

impl Sampler {
    fn new(disk_mount: PathBuf) -> Sampler {
        let mut sys = System::new();
        sys.refresh_cpu_usage();
        Sampler {
            sys,
            networks: Networks::new_with_refreshed_list(),
            disks: Disks::new_with_refreshed_list(),
            disk_mount,
        }
    }

    fn sample(&mut self) -> SystemMetrics {
        self.sys.refresh_cpu_usage();
        self.sys.refresh_memory();
        self.networks.refresh(true);
        self.disks.refresh(true);
        let load = System::load_average();
        let (network_in_bytes, network_out_bytes) = sum_networks(
            self.networks
                .iter()
                .map(|(name, d)| (name.as_str(), d.total_received(), d.total_transmitted())),
        );
        let (disk_total_bytes, disk_used_bytes) = pick_disk(
            self.disks
                .iter()
                .map(|d| (d.mount_point(), d.total_space(), d.available_space())),
            &self.disk_mount,
        );
        SystemMetrics {
            cpu_pct: (f64::from(self.sys.global_cpu_usage()) / 100.0).clamp(0.0, 1.0),
            memory_used_bytes: self.sys.used_memory(),
            memory_total_bytes: self.sys.total_memory(),
            swap_used_bytes: self.sys.used_swap(),
            load_1: load.one,
            load_5: load.five,
            load_15: load.fifteen,
            disk_used_bytes,
            disk_total_bytes,
            network_in_bytes,
            network_out_bytes,
            uptime_secs: System::uptime(),
            processes: count_processes(),
        }
    }
}

/// Received and sent bytes over every interface but loopback.
fn sum_networks<'a>(ifaces: impl Iterator<Item = (&'a str, u64, u64)>) -> (u64, u64) {
    ifaces
        .filter(|(name, _, _)| *name != "lo")
        .fold((0u64, 0u64), |(i, o), (_, rx, tx)| {
            (i.saturating_add(rx), o.saturating_add(tx))
        })
}

/// (total, used) bytes of the mount that holds `path`: the longest mount point it is under.
fn pick_disk<'a>(disks: impl Iterator<Item = (&'a Path, u64, u64)>, path: &Path) -> (u64, u64) {
    disks
        .filter(|(mount, _, _)| path.starts_with(mount))
        .max_by_key(|(mount, _, _)| mount.as_os_str().len())
        .map(|(_, total, avail)| (total, total.saturating_sub(avail)))
        .unwrap_or((0, 0))
}

/// Processes (not threads): the numeric entries of `/proc`.
fn count_processes() -> u32 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let n = dir
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        })
        .count();
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{collect_until, ctx};
    use super::*;
    use std::collections::BTreeMap;

    #[tokio::test]
    async fn samples_this_host() {
        let cfg = MetricsConfig {
            interval: Duration::from_millis(200),
            ..Default::default()
        };
        let (c, mut rx, stop, drops) = ctx("metrics", 16, BTreeMap::new());
        let task = tokio::spawn(run(cfg, c));
        let (mut store, mut events) = (BTreeMap::new(), Vec::new());
        // Burn some CPU so the interval has something to measure.
        let spin = std::thread::spawn(|| {
            let t = std::time::Instant::now();
            let mut x = 0u64;
            while t.elapsed() < Duration::from_millis(300) {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            }
            x
        });
        collect_until(
            &mut rx,
            &mut store,
            &mut events,
            Duration::from_secs(10),
            |e, _| e.len() >= 2,
        )
        .await;
        let _ = spin.join();
        for e in &events {
            assert_eq!(
                (e.kind(), e.event.module.as_str()),
                (Kind::HostMetrics, "metrics")
            );
            let m = e.system.as_ref().expect("system");
            assert!((0.0..=1.0).contains(&m.cpu_pct), "{m:?}");
            assert!(
                m.memory_total_bytes > 0 && m.memory_used_bytes <= m.memory_total_bytes,
                "{m:?}"
            );
            assert!(m.uptime_secs > 0 && m.processes > 0, "{m:?}");
            assert!(
                m.disk_total_bytes > 0 && m.disk_used_bytes <= m.disk_total_bytes,
                "{m:?}"
            );
            assert!(m.load_1 >= 0.0);
        }
        assert!(
            events
                .iter()
                .any(|e| e.system.as_ref().is_some_and(|m| m.cpu_pct > 0.0)),
            "no CPU use measured"
        );
        assert_eq!(drops.load(std::sync::atomic::Ordering::Relaxed), 0);
        stop.send(true).expect("stop");
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("stops")
            .expect("join")
            .expect("ok");
    }

    #[test]
    fn aggregation() {
        let nets = [("lo", 1000, 1000), ("eth0", 10, 20), ("vmbr0", 5, 7)];
        assert_eq!(sum_networks(nets.into_iter()), (15, 27));
        let disks = [
            (Path::new("/"), 100, 40),
            (Path::new("/var"), 50, 10),
            (Path::new("/var/lib/vz"), 1000, 900),
        ];
        assert_eq!(pick_disk(disks.into_iter(), Path::new("/")), (100, 60));
        assert_eq!(
            pick_disk(disks.into_iter(), Path::new("/var/log")),
            (50, 40)
        );
        assert_eq!(
            pick_disk(disks.into_iter(), Path::new("/var/lib/vz/images")),
            (1000, 100)
        );
        assert_eq!(pick_disk(std::iter::empty(), Path::new("/")), (0, 0));
    }

    #[test]
    fn config() {
        let c: MetricsConfig = toml::from_str("interval = \"30s\"").expect("toml");
        assert_eq!(c.interval, Duration::from_secs(30));
        c.validate().expect("valid");
        assert!(
            MetricsConfig {
                interval: Duration::from_millis(1),
                ..Default::default()
            }
            .validate()
            .is_err()
        );
        assert!(toml::from_str::<MetricsConfig>("every = \"1s\"").is_err());
    }
}

//! Agent configuration: TOML, parsed then validated, with errors that name the
//! key and the fix. `vigie-agent validate CONFIG` runs the same checks.
//!
//! Environment overrides (for secrets and deployment tools):
//! `VIGIE_AGENT_DATA_DIR`, `VIGIE_COLLECTORS` (comma-separated `host:port`),
//! `VIGIE_ENROLL_TOKEN_FILE`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Result, bail};
use serde::Deserialize;

use crate::sources;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// Identity, spool and checkpoints live here.
    pub data_dir: PathBuf,
    /// Host name stamped on events (default: the machine's).
    pub hostname: String,
    /// Collector addresses (`host:port`); default: the ones from enrollment.
    pub collectors: Vec<String>,
    /// Enroll at first start with the token in this file (`-` for stdin). The file is
    /// deleted once the enrollment succeeded.
    pub enroll_token_file: Option<PathBuf>,
    /// Labels added to every event (`labels.<key>`), e.g. `env = "prod"`.
    pub labels: std::collections::BTreeMap<String, String>,
    pub spool: SpoolSection,
    pub shipper: ShipperSection,
    pub health: HealthSection,
    pub journald: Option<sources::journald::JournaldConfig>,
    pub file: Vec<sources::file::FileConfig>,
    pub syslog: Option<sources::syslog::SyslogConfig>,
    pub metrics: Option<sources::metrics::MetricsConfig>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpoolSection {
    /// Largest spool on disk; beyond it sources that can pause wait and the others count drops.
    #[serde(deserialize_with = "de_size")]
    pub max_bytes: u64,
    #[serde(deserialize_with = "de_size")]
    pub segment_bytes: u64,
}

impl Default for SpoolSection {
    fn default() -> Self {
        SpoolSection {
            max_bytes: 1 << 30,
            segment_bytes: 16 << 20,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShipperSection {
    pub batch_max_events: usize,
    #[serde(deserialize_with = "de_size")]
    pub batch_max_bytes: u64,
    pub max_in_flight: usize,
    pub zstd_level: i32,
}

impl Default for ShipperSection {
    fn default() -> Self {
        ShipperSection {
            batch_max_events: 5_000,
            batch_max_bytes: 2 << 20,
            max_in_flight: 4,
            zstd_level: 1,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthSection {
    /// How often the agent reports its health (drop counters, spool backlog).
    #[serde(with = "humantime_serde_like")]
    pub interval: Duration,
}

impl Default for HealthSection {
    fn default() -> Self {
        HealthSection {
            interval: Duration::from_secs(60),
        }
    }
}

mod humantime_serde_like {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(|e| {
            serde::de::Error::custom(format!(
                "invalid duration {s:?} ({e}); use for example 30s or 5m"
            ))
        })
    }
}

fn de_size<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum V {
        N(u64),
        S(String),
    }
    match V::deserialize(d)? {
        V::N(n) => Ok(n),
        V::S(s) => parse_size(&s).map_err(serde::de::Error::custom),
    }
}

/// Parses `512MiB`, `1GB`, `4096`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| {
        format!("invalid size {s:?}: expected a whole number with an optional unit, e.g. 512MiB")
    })?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" | "k" => 1_000,
        "kib" => 1 << 10,
        "mb" | "m" => 1_000_000,
        "mib" => 1 << 20,
        "gb" | "g" => 1_000_000_000,
        "gib" => 1 << 30,
        u => {
            return Err(format!(
                "invalid size unit {u:?} in {s:?}: use B, KB, KiB, MB, MiB, GB or GiB"
            ));
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("size {s:?} is too large"))
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            data_dir: PathBuf::from("/var/lib/vigie-agent"),
            hostname: String::new(),
            collectors: Vec::new(),
            enroll_token_file: None,
            labels: Default::default(),
            spool: SpoolSection::default(),
            shipper: ShipperSection::default(),
            health: HealthSection::default(),
            journald: None,
            file: Vec::new(),
            syslog: None,
            metrics: None,
        }
    }
}

impl AgentConfig {
    /// Parses TOML text; `origin` names the file in errors.
    pub fn parse(text: &str, origin: &str) -> Result<AgentConfig> {
        let cfg: AgentConfig =
            toml::from_str(text).map_err(|e| anyhow::anyhow!("{origin}: {e}"))?;
        cfg.validate()
            .map_err(|e| anyhow::anyhow!("{origin}: {e}"))?;
        Ok(cfg)
    }

    pub fn load(path: &Path) -> Result<AgentConfig> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            anyhow::anyhow!("cannot read agent configuration {}: {e}", path.display())
        })?;
        let mut cfg = AgentConfig::parse(&text, &path.display().to_string())?;
        cfg.apply_env();
        Ok(cfg)
    }

    /// Applies the environment overrides.
    pub fn apply_env(&mut self) {
        if let Ok(d) = std::env::var("VIGIE_AGENT_DATA_DIR") {
            self.data_dir = PathBuf::from(d);
        }
        if let Ok(c) = std::env::var("VIGIE_COLLECTORS") {
            self.collectors = c
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect();
        }
        if let Ok(f) = std::env::var("VIGIE_ENROLL_TOKEN_FILE") {
            self.enroll_token_file = Some(PathBuf::from(f));
        }
    }

    /// Checks what types alone cannot.
    pub fn validate(&self) -> Result<()> {
        if self.data_dir.as_os_str().is_empty() {
            bail!(
                "data_dir is empty: set it to a directory the agent owns, e.g. /var/lib/vigie-agent"
            );
        }
        for (i, c) in self.collectors.iter().enumerate() {
            if c.rsplit_once(':')
                .and_then(|(_, p)| p.parse::<u16>().ok())
                .is_none()
            {
                bail!(
                    "collectors[{i}] = {c:?} is not host:port; for example \"collector.example.org:7702\""
                );
            }
        }
        if self.spool.max_bytes < 1 << 20 {
            bail!(
                "spool.max_bytes = {} is below 1 MiB; give the spool room, e.g. \"1GiB\"",
                self.spool.max_bytes
            );
        }
        if self.spool.segment_bytes < 64 << 10 || self.spool.segment_bytes > self.spool.max_bytes {
            bail!(
                "spool.segment_bytes = {} must be between 64 KiB and spool.max_bytes",
                self.spool.segment_bytes
            );
        }
        if self.shipper.batch_max_events == 0
            || self.shipper.batch_max_events > vigie_proto::batch::MAX_EVENTS as usize
        {
            bail!(
                "shipper.batch_max_events must be between 1 and {}",
                vigie_proto::batch::MAX_EVENTS
            );
        }
        if self.shipper.batch_max_bytes == 0
            || self.shipper.batch_max_bytes > (vigie_proto::batch::MAX_FRAME_LEN / 2) as u64
        {
            bail!(
                "shipper.batch_max_bytes must be between 1 and {} bytes",
                vigie_proto::batch::MAX_FRAME_LEN / 2
            );
        }
        if self.shipper.max_in_flight == 0 || self.shipper.max_in_flight > 64 {
            bail!("shipper.max_in_flight must be between 1 and 64");
        }
        if !(1..=19).contains(&self.shipper.zstd_level) {
            bail!("shipper.zstd_level must be between 1 and 19 (1 is fastest)");
        }
        if self.health.interval < Duration::from_secs(1) {
            bail!("health.interval must be at least 1s");
        }
        if let Some(j) = &self.journald {
            j.validate()
                .map_err(|e| anyhow::anyhow!("journald: {e:#}"))?;
        }
        if let Some(s) = &self.syslog {
            s.validate().map_err(|e| anyhow::anyhow!("syslog: {e:#}"))?;
        }
        if let Some(m) = &self.metrics {
            m.validate()
                .map_err(|e| anyhow::anyhow!("metrics: {e:#}"))?;
        }
        for (i, f) in self.file.iter().enumerate() {
            f.validate()
                .map_err(|e| anyhow::anyhow!("file[{i}]: {e:#}"))?;
        }
        if self.labels.len() > 16 {
            bail!(
                "labels has {} entries; at most 16 are allowed (every event carries them)",
                self.labels.len()
            );
        }
        if let Some((k, _)) = self
            .labels
            .iter()
            .find(|(k, v)| k.is_empty() || k.len() > 64 || v.len() > 256)
        {
            bail!("labels.{k:?}: keys must be 1 to 64 bytes and values at most 256 bytes");
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, f) in self.file.iter().enumerate() {
            if !names.insert(f.name.clone()) {
                bail!(
                    "file[{i}].name = {:?} is used twice; every file input needs its own name (checkpoints are kept by name)",
                    f.name
                );
            }
        }
        Ok(())
    }

    /// The configuration `vigie up` gives its local agent: everything this machine logs.
    pub fn local_default(data_dir: &Path, syslog: &str) -> AgentConfig {
        let mut cfg = AgentConfig {
            data_dir: data_dir.to_path_buf(),
            ..Default::default()
        };
        cfg.journald = Some(sources::journald::JournaldConfig {
            read_from: sources::journald::JournalStart::Head,
            ..Default::default()
        });
        cfg.file = vec![sources::file::FileConfig {
            name: "var-log".into(),
            paths: vec![
                "/var/log/*.log".into(),
                "/var/log/syslog".into(),
                "/var/log/messages".into(),
                "/var/log/apt/*.log".into(),
            ],
            read_from: sources::file::ReadFrom::Beginning,
            ..Default::default()
        }];
        cfg.syslog = Some(sources::syslog::SyslogConfig {
            udp: Some(syslog.to_string()),
            tcp: Some(syslog.to_string()),
            ..Default::default()
        });
        cfg.metrics = Some(sources::metrics::MetricsConfig::default());
        cfg
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        format!(
            "{:#}",
            AgentConfig::parse(text, "agent.toml").expect_err("should be refused")
        )
    }

    #[test]
    fn a_full_file_parses() {
        let cfg = AgentConfig::parse(
            r#"
data_dir = "/var/lib/vigie-agent"
collectors = ["collector.example.org:7702"]
[spool]
max_bytes = "512MiB"
[shipper]
max_in_flight = 8
[health]
interval = "30s"
[journald]
read_from = "head"
[[file]]
name = "auth"
paths = ["/var/log/auth.log"]
timezone = "Europe/Paris"
[syslog]
udp = "0.0.0.0:5514"
[metrics]
interval = "10s"
"#,
            "agent.toml",
        )
        .expect("valid");
        assert_eq!(cfg.spool.max_bytes, 512 << 20);
        assert_eq!(cfg.shipper.max_in_flight, 8);
        assert_eq!(cfg.health.interval, Duration::from_secs(30));
        assert_eq!(cfg.file[0].name, "auth");
    }

    #[test]
    fn errors_name_the_key_and_the_fix() {
        let e = err("data_dir = \"/x\"\nspool_size = 5\n");
        assert!(e.contains("agent.toml") && e.contains("spool_size"), "{e}");
        let e = err("[spool]\nmax_bytes = \"12 parsecs\"\n");
        assert!(e.contains("parsecs") && e.contains("MiB"), "{e}");
        let e = err("collectors = [\"collector.example.org\"]\n");
        assert!(
            e.contains("collectors[0]") && e.contains("host:port"),
            "{e}"
        );
        let e = err("[[file]]\nname = \"a\"\npaths = []\n");
        assert!(e.contains("file[0]") && e.contains("paths is empty"), "{e}");
        let e = err(
            "[[file]]\nname = \"a\"\npaths = [\"/x\"]\n[[file]]\nname = \"a\"\npaths = [\"/y\"]\n",
        );
        assert!(e.contains("used twice"), "{e}");
        let e = err("[shipper]\nzstd_level = 40\n");
        assert!(e.contains("shipper.zstd_level"), "{e}");
        let e = err("[health]\ninterval = \"soon\"\n");
        assert!(e.contains("30s"), "{e}");
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096").expect("n"), 4096);
        assert_eq!(parse_size("1GiB").expect("n"), 1 << 30);
        assert_eq!(parse_size("10 MB").expect("n"), 10_000_000);
        assert!(parse_size("-1").is_err());
        assert!(parse_size("99999999999999GiB").is_err());
    }
}

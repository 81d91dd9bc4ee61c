//! The agent's files in its data directory.
//!
//! | file | what |
//! | --- | --- |
//! | `identity.key` | ed25519 seed that signs batches (0600) |
//! | `tls.key`, `tls.der` | the TLS client key (PKCS#8) and the certificate the collector issued |
//! | `ca.der` | the collector CA this agent pins |
//! | `enrollment.json` | agent id, collector addresses, server name, command key |
//! | `checkpoints.json` | source positions, committed together with the spool (see [`crate::durable`]) |
//! | `spool/` | the disk spool |

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use ed25519_dalek::SigningKey;
use serde::{Deserialize, Serialize};
use vigie_proto::AgentId;

/// Writes `bytes` to `path` atomically (temp file, fsync, rename, fsync dir) with `mode`.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.tmp"));
    {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        f.write_all(bytes)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        f.sync_all()
            .with_context(|| format!("cannot sync {}", tmp.display()))?;
    }
    fs::set_permissions(&tmp, fs::Permissions::from_mode(mode))?;
    fs::rename(&tmp, path)
        .with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))?;
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("cannot sync directory {}", dir.display()))?;
    Ok(())
}

/// What enrollment left behind.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Enrollment {
    pub agent_id: String,
    pub collectors: Vec<String>,
    pub server_name: String,
    /// Hex of the collector's command-signing public key.
    pub command_key: String,
}

/// The enrolled identity, loaded from the data directory.
pub struct Identity {
    pub agent: AgentId,
    pub signing: SigningKey,
    pub tls_cert: Vec<u8>,
    pub tls_key: Vec<u8>,
    pub ca_der: Vec<u8>,
    pub enrollment: Enrollment,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Identity({})", self.agent)
    }
}

pub struct Paths {
    pub dir: PathBuf,
}

impl Paths {
    pub fn new(dir: &Path) -> Paths {
        Paths {
            dir: dir.to_path_buf(),
        }
    }
    pub fn identity_key(&self) -> PathBuf {
        self.dir.join("identity.key")
    }
    pub fn tls_key(&self) -> PathBuf {
        self.dir.join("tls.key")
    }
    pub fn tls_cert(&self) -> PathBuf {
        self.dir.join("tls.der")
    }
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.der")
    }
    pub fn enrollment(&self) -> PathBuf {
        self.dir.join("enrollment.json")
    }
    pub fn checkpoints(&self) -> PathBuf {
        self.dir.join("checkpoints.json")
    }
    pub fn spool(&self) -> PathBuf {
        self.dir.join("spool")
    }

    pub fn is_enrolled(&self) -> bool {
        self.enrollment().exists()
    }

    /// Loads the identity written by enrollment.
    pub fn load_identity(&self) -> Result<Identity> {
        let e: Enrollment = serde_json::from_slice(&fs::read(self.enrollment()).with_context(|| {
            format!("this agent is not enrolled ({} is missing): run `vigie-agent enroll --token-file FILE` with a token from `vigie enroll create`", self.enrollment().display())
        })?)
        .with_context(|| format!("{} is not valid JSON; re-enroll the agent", self.enrollment().display()))?;
        let seed: [u8; 32] = fs::read(self.identity_key())
            .with_context(|| format!("cannot read {}", self.identity_key().display()))?
            .try_into()
            .map_err(|_| {
                anyhow::anyhow!(
                    "{} is not a 32-byte key; re-enroll the agent",
                    self.identity_key().display()
                )
            })?;
        Ok(Identity {
            agent: AgentId::parse(&e.agent_id).map_err(anyhow::Error::msg)?,
            signing: SigningKey::from_bytes(&seed),
            tls_cert: fs::read(self.tls_cert())
                .with_context(|| format!("cannot read {}", self.tls_cert().display()))?,
            tls_key: fs::read(self.tls_key())
                .with_context(|| format!("cannot read {}", self.tls_key().display()))?,
            ca_der: fs::read(self.ca())
                .with_context(|| format!("cannot read {}", self.ca().display()))?,
            enrollment: e,
        })
    }
}

/// This machine's host name (or the configured override).
pub fn hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// `/etc/machine-id`, empty when absent.
pub fn machine_id() -> String {
    fs::read_to_string("/etc/machine-id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

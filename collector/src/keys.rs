//! The collector's secrets and certificates, kept as files in its data directory.
//!
//! | file | what |
//! | --- | --- |
//! | `ca.der`, `ca.key` | the CA that issues agent certificates (agents pin `ca.der`) |
//! | `server.der`, `server.key` | the QUIC listener's certificate |
//! | `command.key` | ed25519 seed of the response key that signs commands (not a TLS key) |
//! | `api.token` | the service credential of the management API |
//!
//! Secrets are written with mode 0600, atomically (temp file, fsync, rename, fsync dir).

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use ed25519_dalek::SigningKey;
use rand::RngCore;
use vigie_net::Ca;

pub struct Keys {
    pub ca: Ca,
    pub server_cert: Vec<u8>,
    pub server_key: Vec<u8>,
    pub command_key: SigningKey,
    pub api_token: String,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys(..)")
    }
}

/// Writes `bytes` to `path` atomically with the given mode.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp: PathBuf = dir.join(format!(
        ".{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file")
    ));
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
        f.sync_all()?;
    }
    fs::set_permissions(&tmp, fs::Permissions::from_mode(mode))?;
    fs::rename(&tmp, path)
        .with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))?;
    fs::File::open(dir)?.sync_all()?;
    Ok(())
}

fn read_opt(path: &Path) -> Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

impl Keys {
    /// Loads the keys from `dir`, creating what is missing. The server certificate is
    /// reissued when `names` are not all covered by the stored one's list (kept beside it).
    pub fn load_or_create(dir: &Path, names: &[String]) -> Result<Keys> {
        fs::create_dir_all(dir)
            .with_context(|| format!("cannot create data directory {}", dir.display()))?;
        let ca = match (
            read_opt(&dir.join("ca.der"))?,
            read_opt(&dir.join("ca.key"))?,
        ) {
            (Some(c), Some(k)) => Ca::from_parts(&c, &k).with_context(|| {
                format!(
                    "cannot load the CA from {}; restore ca.der and ca.key from a backup",
                    dir.display()
                )
            })?,
            (None, None) => {
                let ca = Ca::generate()?;
                let (c, k) = ca.to_parts();
                write_atomic(&dir.join("ca.key"), &k, 0o600)?;
                write_atomic(&dir.join("ca.der"), &c, 0o644)?;
                ca
            }
            _ => anyhow::bail!(
                "only one of ca.der and ca.key exists in {}; restore both from a backup (agents pin this CA)",
                dir.display()
            ),
        };
        let names_file = dir.join("server.names");
        let wanted = names.join("\n");
        let (server_cert, server_key) = match (
            read_opt(&dir.join("server.der"))?,
            read_opt(&dir.join("server.key"))?,
            read_opt(&names_file)?,
        ) {
            (Some(c), Some(k), Some(n)) if String::from_utf8_lossy(&n) == wanted => (c, k),
            _ => {
                let (c, k) = ca.issue_server(names)?;
                write_atomic(&dir.join("server.key"), &k, 0o600)?;
                write_atomic(&dir.join("server.der"), &c, 0o644)?;
                write_atomic(&names_file, wanted.as_bytes(), 0o644)?;
                (c, k)
            }
        };
        let command_key = match read_opt(&dir.join("command.key"))? {
            Some(b) => {
                let seed: [u8; 32] = b.as_slice().try_into().map_err(|_| {
                    anyhow::anyhow!("{} is not a 32-byte key", dir.join("command.key").display())
                })?;
                SigningKey::from_bytes(&seed)
            }
            None => {
                let mut seed = [0u8; 32];
                rand::rngs::OsRng.fill_bytes(&mut seed);
                write_atomic(&dir.join("command.key"), &seed, 0o600)?;
                SigningKey::from_bytes(&seed)
            }
        };
        let api_token = match read_opt(&dir.join("api.token"))? {
            Some(b) => String::from_utf8_lossy(&b).trim().to_string(),
            None => {
                let mut t = [0u8; 32];
                rand::rngs::OsRng.fill_bytes(&mut t);
                let tok = hex::encode(t);
                write_atomic(&dir.join("api.token"), tok.as_bytes(), 0o600)?;
                tok
            }
        };
        Ok(Keys {
            ca,
            server_cert,
            server_key,
            command_key,
            api_token,
        })
    }
}

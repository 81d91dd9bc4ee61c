//! The collector's secrets and certificates, kept as files in its data directory.
//!
//! | file | what |
//! | --- | --- |
//! | `ca.der`, `ca.key` | the CA that issues agent certificates (agents pin `ca.der`) |
//! | `server.der`, `server.key` | the QUIC listener's certificate |
//! | `command.key` | ed25519 seed of the response key that signs commands (not a TLS key) |
//! | `api.token` | the service credential of the management API |
//! | `quic.key` | secret behind the QUIC stateless-reset tokens ([`Keys::endpoint_config`]) |
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
    /// Derives QUIC stateless-reset tokens; the same across restarts.
    pub quic_key: [u8; 32],
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
        let quic_key = match read_opt(&dir.join("quic.key"))? {
            Some(b) => b.as_slice().try_into().map_err(|_| {
                anyhow::anyhow!(
                    "{} is not a 32-byte key; delete it and a new one is made",
                    dir.join("quic.key").display()
                )
            })?,
            None => {
                let mut k = [0u8; 32];
                rand::rngs::OsRng.fill_bytes(&mut k);
                write_atomic(&dir.join("quic.key"), &k, 0o600)?;
                k
            }
        };
        Ok(Keys {
            ca,
            server_cert,
            server_key,
            command_key,
            api_token,
            quic_key,
        })
    }

    /// The QUIC endpoint configuration. Stateless-reset tokens are derived from `quic.key`
    /// and connection ids carry no per-process secret, so a collector restarted after a
    /// crash or `kill -9` answers the packets of its predecessor's connections with a valid
    /// stateless reset: agents learn at once that their connection is gone and reconnect,
    /// instead of waiting for the idle timeout (30 s). quinn's default uses a random reset
    /// key and a CID check keyed per process, so the new process stayed silent.
    pub fn endpoint_config(&self) -> Result<quinn::EndpointConfig> {
        let mut cfg =
            quinn::EndpointConfig::new(std::sync::Arc::new(ResetKey::new(&self.quic_key)?));
        cfg.cid_generator(|| Box::new(RandomCids));
        Ok(cfg)
    }
}

/// HKDF-Expand (SHA-256) under `quic.key`: a keyed PRF for stateless-reset tokens.
struct ResetKey(Box<dyn quinn::rustls::crypto::tls13::HkdfExpander>);

impl ResetKey {
    fn new(key: &[u8; 32]) -> Result<ResetKey> {
        let suite = quinn::rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256
            .tls13()
            .context("the TLS 1.3 SHA-256 suite is missing")?;
        Ok(ResetKey(suite.hkdf_provider.extract_from_secret(None, key)))
    }

    fn tag(&self, data: &[u8]) -> quinn::rustls::crypto::tls13::OkmBlock {
        self.0.expand_block(&[b"vigie quic stateless reset", data])
    }
}

impl quinn::crypto::HmacKey for ResetKey {
    fn sign(&self, data: &[u8], out: &mut [u8]) {
        let tag = self.tag(data);
        let t = tag.as_ref();
        let n = out.len().min(t.len());
        out[..n].copy_from_slice(&t[..n]);
    }

    fn signature_len(&self) -> usize {
        32
    }

    fn verify(&self, data: &[u8], signature: &[u8]) -> Result<(), quinn::crypto::CryptoError> {
        let tag = self.tag(data);
        let t = tag.as_ref();
        let mut diff = u8::from(t.len() != signature.len());
        for (a, b) in t.iter().zip(signature) {
            diff |= a ^ b;
        }
        if diff == 0 {
            Ok(())
        } else {
            Err(quinn::crypto::CryptoError)
        }
    }
}

/// Random 8-byte connection ids (quinn's default hashes them under a per-process key and
/// drops packets whose ids fail that check, which a restarted process always does).
struct RandomCids;

impl quinn::ConnectionIdGenerator for RandomCids {
    fn generate_cid(&mut self) -> quinn::ConnectionId {
        let mut b = [0u8; 8];
        rand::rngs::OsRng.fill_bytes(&mut b);
        quinn::ConnectionId::new(&b)
    }

    fn cid_len(&self) -> usize {
        8
    }

    fn cid_lifetime(&self) -> Option<std::time::Duration> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quinn::crypto::HmacKey;

    #[test]
    fn stateless_reset_tokens_survive_a_restart() {
        let dir = tempfile::tempdir().expect("tmp");
        let names = vec!["localhost".to_string()];
        let before = Keys::load_or_create(dir.path(), &names).expect("keys");
        let after = Keys::load_or_create(dir.path(), &names).expect("keys again");
        assert_eq!(before.quic_key, after.quic_key, "quic.key must persist");
        before.endpoint_config().expect("endpoint config");
        let (a, b) = (
            ResetKey::new(&before.quic_key).expect("key"),
            ResetKey::new(&after.quic_key).expect("key"),
        );
        let cid = [7u8; 8];
        let (mut ta, mut tb) = ([0u8; 16], [0u8; 16]);
        a.sign(&cid, &mut ta);
        b.sign(&cid, &mut tb);
        assert_eq!(
            ta, tb,
            "a restarted collector must derive the same reset token"
        );
        let mut full = [0u8; 32];
        a.sign(&cid, &mut full);
        assert!(b.verify(&cid, &full).is_ok());
        full[0] ^= 1;
        assert!(b.verify(&cid, &full).is_err());
        let other = ResetKey::new(&[1u8; 32]).expect("key");
        let mut to = [0u8; 16];
        other.sign(&cid, &mut to);
        assert_ne!(ta, to, "another key, another token");
        let mut t2 = [0u8; 16];
        a.sign(&[8u8; 8], &mut t2);
        assert_ne!(ta, t2, "another connection id, another token");
    }
}

//! Workspaces: one directory per VM or group of VMs, holding the rendered `.tf.json`, its own
//! Terraform state, Vigie's lock file and the state backups.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{IacError, Result};
use crate::job::now_rfc3339;

/// Name of the saved plan inside a workspace.
pub const PLAN_FILE: &str = "plan.bin";
/// Name of the local state file inside a workspace.
pub const STATE_FILE: &str = "terraform.tfstate";
/// Vigie's own directory inside a workspace (lock, CLI config, backups).
pub const VIGIE_DIR: &str = ".vigie";

/// A Terraform working directory with local state.
#[derive(Debug, Clone)]
pub struct Workspace {
    name: String,
    dir: PathBuf,
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && !name.starts_with('-')
}

impl Workspace {
    /// Opens (creating it if needed) the workspace `name` under `root`. Names are
    /// `[a-z0-9_-]{1,64}`, so a name can never escape `root`.
    pub fn open(root: &Path, name: &str) -> Result<Workspace> {
        if !valid_name(name) {
            return Err(IacError::invalid(
                "workspace name",
                format!("{name:?}: use 1-64 characters a-z, 0-9, '-' or '_'"),
            ));
        }
        let dir = root.join(name);
        fs::create_dir_all(dir.join(VIGIE_DIR).join("backups"))
            .map_err(|e| IacError::io(format!("creating workspace {}", dir.display()), e))?;
        Ok(Workspace {
            name: name.to_string(),
            dir,
        })
    }

    pub(crate) fn from_dir(dir: &Path) -> Workspace {
        Workspace {
            name: dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            dir: dir.to_path_buf(),
        }
    }

    /// The workspace name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The workspace directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The local state file.
    pub fn state_path(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }

    /// The saved plan.
    pub fn plan_path(&self) -> PathBuf {
        self.dir.join(PLAN_FILE)
    }

    /// Where state backups go.
    pub fn backups_dir(&self) -> PathBuf {
        self.dir.join(VIGIE_DIR).join("backups")
    }

    /// The lock file.
    pub fn lock_path(&self) -> PathBuf {
        self.dir.join(VIGIE_DIR).join("lock.json")
    }

    /// Writes a configuration file (`*.tf.json`) atomically (temporary file + rename).
    pub fn write_config(&self, file_name: &str, contents: &str) -> Result<PathBuf> {
        if !file_name.ends_with(".tf.json") || file_name.contains('/') || file_name.contains('\\') {
            return Err(IacError::invalid(
                "configuration file name",
                format!("{file_name:?}: expected a plain name ending in .tf.json"),
            ));
        }
        let path = self.dir.join(file_name);
        let tmp = self.dir.join(VIGIE_DIR).join(format!("{file_name}.tmp"));
        fs::write(&tmp, contents)
            .map_err(|e| IacError::io(format!("writing {}", tmp.display()), e))?;
        fs::rename(&tmp, &path)
            .map_err(|e| IacError::io(format!("renaming to {}", path.display()), e))?;
        Ok(path)
    }

    /// Copies the state file, if there is one, to `backups/terraform.tfstate.<UTC time>`.
    /// Returns the backup's path.
    pub fn backup_state(&self) -> Result<Option<PathBuf>> {
        let state = self.state_path();
        if !state.exists() {
            return Ok(None);
        }
        let stamp = chrono::DateTime::<chrono::Utc>::from(std::time::SystemTime::now())
            .format("%Y%m%dT%H%M%S%.6fZ")
            .to_string();
        let dest = self.backups_dir().join(format!("{STATE_FILE}.{stamp}"));
        fs::copy(&state, &dest).map_err(|e| {
            IacError::io(
                format!("backing up {} to {}", state.display(), dest.display()),
                e,
            )
        })?;
        Ok(Some(dest))
    }

    /// Takes the workspace lock for `job_id`, started by `holder`. Fails with
    /// [`IacError::Locked`] naming the current holder when another job holds it. The lock is a
    /// file created exclusively, so it also excludes other processes; it is removed when the
    /// returned guard is dropped. A lock left by a crashed process must be removed by hand
    /// (its content names the holder).
    pub fn lock(&self, holder: &str, job_id: &str) -> Result<WorkspaceLock> {
        let path = self.lock_path();
        let info = LockInfo {
            holder: holder.to_string(),
            job_id: job_id.to_string(),
            since: now_rfc3339(),
            pid: std::process::id(),
        };
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(mut f) => {
                let body = serde_json::to_string(&info).unwrap_or_default();
                f.write_all(body.as_bytes())
                    .map_err(|e| IacError::io(format!("writing {}", path.display()), e))?;
                Ok(WorkspaceLock { path })
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let current: Option<LockInfo> = fs::read_to_string(&path)
                    .ok()
                    .and_then(|s| serde_json::from_str(&s).ok());
                let current = current.unwrap_or(LockInfo {
                    holder: "unknown".into(),
                    job_id: "unknown".into(),
                    since: "unknown".into(),
                    pid: 0,
                });
                Err(IacError::Locked {
                    workspace: self.dir.clone(),
                    holder: current.holder,
                    job_id: current.job_id,
                    since: current.since,
                })
            }
            Err(e) => Err(IacError::io(format!("creating {}", path.display()), e)),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct LockInfo {
    holder: String,
    job_id: String,
    since: String,
    pid: u32,
}

/// Holds a workspace lock; removes the lock file when dropped.
#[derive(Debug)]
pub struct WorkspaceLock {
    path: PathBuf,
}

impl Drop for WorkspaceLock {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_cannot_escape_the_root() {
        let root = tempfile::tempdir().expect("tempdir");
        for bad in ["", "../x", "a/b", "A", "-x", "x y"] {
            assert!(Workspace::open(root.path(), bad).is_err(), "{bad}");
        }
        assert!(Workspace::open(root.path(), "vm-101_web").is_ok());
    }

    #[test]
    fn lock_names_holder_and_is_released_on_drop() {
        let root = tempfile::tempdir().expect("tempdir");
        let ws = Workspace::open(root.path(), "w").expect("open");
        let guard = ws.lock("alice", "job-1").expect("lock");
        let err = ws.lock("bob", "job-2").expect_err("second lock");
        let msg = err.to_string();
        assert!(msg.contains("alice") && msg.contains("job-1"), "{msg}");
        drop(guard);
        assert!(ws.lock("bob", "job-2").is_ok());
    }

    #[test]
    fn backup_copies_state() {
        let root = tempfile::tempdir().expect("tempdir");
        let ws = Workspace::open(root.path(), "w").expect("open");
        assert!(ws.backup_state().expect("no state").is_none());
        fs::write(ws.state_path(), "{\"version\":4}").expect("write");
        let b = ws.backup_state().expect("backup").expect("path");
        assert_eq!(fs::read_to_string(b).expect("read"), "{\"version\":4}");
    }
}

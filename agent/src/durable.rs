//! The spool and the source checkpoints, committed together.
//!
//! A source's position (file offset, journald cursor) may advance only when the
//! events read up to it are durable in the spool, and it must advance with them,
//! or a crash between the two would re-read those events (duplicates) or skip
//! them (loss). Both are avoided with an intent record:
//!
//! 1. under the spool lock, write `checkpoints.json` atomically with the committed
//!    positions plus a *pending* set: the positions after this append, the spool
//!    epoch and the sequence number the spool will reach (`end_seq`);
//! 2. append the records to the spool (all-or-nothing, fsynced).
//!
//! On start, a pending set is applied if the spool is in the same epoch and has
//! reached `end_seq` (the append happened), and dropped otherwise. A new epoch
//! first rewrites the file without a pending set, then renumbers the spool.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use vigie_proto::{Epoch, Seq};
use vigie_spool::{OpenReport, Spool, SpoolConfig, SpoolError};

use crate::state::write_atomic;

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
struct CheckpointFile {
    committed: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pending: Option<Pending>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
struct Pending {
    positions: BTreeMap<String, String>,
    epoch: u64,
    end_seq: u64,
}

/// Applies new positions; an empty value forgets the key (a file that is gone).
fn apply(committed: &mut BTreeMap<String, String>, positions: BTreeMap<String, String>) {
    for (k, v) in positions {
        if v.is_empty() {
            committed.remove(&k);
        } else {
            committed.insert(k, v);
        }
    }
}

/// Outcome of an append.
#[derive(Debug)]
pub enum Appended {
    Ok {
        first: Seq,
        end: Seq,
    },
    /// The spool is at its size limit; nothing was written.
    Full,
}

pub struct Durable {
    pub spool: Spool,
    committed: BTreeMap<String, String>,
    path: PathBuf,
    /// The spool's end when it was opened (or given a new epoch), until a collector's
    /// hello has been checked against it ([`Durable::rollback_limit`]); `None` after.
    unconfirmed_end: Option<Seq>,
}

impl std::fmt::Debug for Durable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Durable({})", self.path.display())
    }
}

impl Durable {
    /// Opens the spool and reconciles the checkpoint file with it.
    pub fn open(spool_cfg: SpoolConfig, checkpoints: PathBuf) -> Result<(Durable, OpenReport)> {
        let dir = spool_cfg.dir.clone();
        let (spool, report) = Spool::open(spool_cfg)
            .with_context(|| format!("cannot open the spool in {}", dir.display()))?;
        let file: CheckpointFile = match std::fs::read(&checkpoints) {
            Ok(b) => serde_json::from_slice(&b).unwrap_or_else(|e| {
                tracing::error!(path = %checkpoints.display(), error = %e, "checkpoint file is corrupt; sources restart from their configured start");
                CheckpointFile::default()
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => CheckpointFile::default(),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", checkpoints.display())),
        };
        let mut committed = file.committed;
        if let Some(p) = file.pending
            && p.epoch == spool.epoch().0
            && spool.next_seq().0 >= p.end_seq
        {
            apply(&mut committed, p.positions);
        }
        let unconfirmed_end = Some(spool.next_seq());
        let mut d = Durable {
            spool,
            committed,
            path: checkpoints,
            unconfirmed_end,
        };
        d.write(None)?;
        Ok((d, report))
    }

    /// Positions as of the last durable append.
    pub fn checkpoints(&self) -> &BTreeMap<String, String> {
        &self.committed
    }

    fn write(&mut self, pending: Option<Pending>) -> Result<()> {
        let f = CheckpointFile {
            committed: self.committed.clone(),
            pending,
        };
        write_atomic(&self.path, &serde_json::to_vec(&f)?, 0o600)
    }

    /// Appends records and advances `positions` with them, atomically as described above.
    pub fn append(
        &mut self,
        records: &[&[u8]],
        positions: BTreeMap<String, String>,
    ) -> Result<Appended> {
        if records.is_empty() {
            return Ok(Appended::Ok {
                first: self.spool.next_seq(),
                end: self.spool.next_seq(),
            });
        }
        let epoch = self.spool.epoch();
        let end_seq = self.spool.next_seq().0 + records.len() as u64;
        let has_positions = !positions.is_empty();
        if has_positions {
            self.write(Some(Pending {
                positions: positions.clone(),
                epoch: epoch.0,
                end_seq,
            }))?;
        }
        match self.spool.append(records) {
            Ok(r) => {
                apply(&mut self.committed, positions);
                Ok(Appended::Ok {
                    first: Seq(r.start),
                    end: Seq(r.end),
                })
            }
            Err(SpoolError::Full { .. }) => {
                if has_positions {
                    // Drop the intent now, so that a later append cannot make it look applied.
                    self.write(None)?;
                }
                Ok(Appended::Full)
            }
            Err(e) => {
                if has_positions {
                    let _ = self.write(None);
                }
                Err(e.into())
            }
        }
    }

    /// The most a collector may hold of this epoch unless the spool was rolled back.
    ///
    /// Until a collector's hello has been checked, that is the spool's end when it was
    /// opened, not its current end: a restored spool comes with restored source positions,
    /// and the lines re-read from them are appended — under the very sequence numbers the
    /// collector already holds — as soon as the agent starts, often before the first hello.
    /// Compared with the current end, a collector lead smaller than that re-read would hide
    /// the rollback, and those sequence numbers would be reused for other events.
    pub fn rollback_limit(&self) -> Seq {
        self.unconfirmed_end
            .unwrap_or_else(|| self.spool.next_seq())
    }

    /// A collector's hello showed no rollback: from now on every sequence this spool
    /// holds was produced by this process or vouched for.
    pub fn confirm_epoch(&mut self) {
        self.unconfirmed_end = None;
    }

    /// Starts a new epoch (rollback or clone detected).
    pub fn new_epoch(&mut self) -> Result<Epoch> {
        self.write(None)?;
        let epoch = self.spool.new_epoch()?;
        self.unconfirmed_end = Some(self.spool.next_seq());
        Ok(epoch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &std::path::Path) -> Durable {
        let cfg = SpoolConfig {
            dir: dir.join("spool"),
            max_bytes: 1 << 20,
            segment_bytes: 64 << 10,
            sync: true,
        };
        Durable::open(cfg, dir.join("checkpoints.json"))
            .expect("open")
            .0
    }

    fn pos(k: &str, v: &str) -> BTreeMap<String, String> {
        BTreeMap::from([(k.to_string(), v.to_string())])
    }

    #[test]
    fn rollback_limit_is_the_end_at_open_until_confirmed() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut d = open(dir.path());
        d.append(&[b"a", b"b"], BTreeMap::new()).expect("append");
        drop(d);
        // A restarted (or restored) spool appends before its first hello: the limit stays
        // where the spool stood when it opened.
        let mut d = open(dir.path());
        d.append(&[b"c", b"d", b"e"], BTreeMap::new())
            .expect("append");
        assert_eq!(d.rollback_limit(), Seq(2));
        d.confirm_epoch();
        assert_eq!(d.rollback_limit(), Seq(5));
        d.new_epoch().expect("new epoch");
        assert_eq!(d.rollback_limit(), d.spool.next_seq());
    }

    #[test]
    fn positions_advance_with_their_events() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut d = open(dir.path());
        assert!(matches!(
            d.append(&[b"a", b"b"], pos("file:x", "10"))
                .expect("append"),
            Appended::Ok { .. }
        ));
        drop(d);
        let d = open(dir.path());
        assert_eq!(
            d.checkpoints().get("file:x").map(String::as_str),
            Some("10")
        );
        assert_eq!(d.spool.next_seq(), Seq(2));
    }

    #[test]
    fn an_intent_without_its_append_is_dropped() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut d = open(dir.path());
        d.append(&[b"a"], pos("file:x", "1")).expect("append");
        // A crash after the intent was written but before the records reached the spool.
        let epoch = d.spool.epoch().0;
        d.write(Some(Pending {
            positions: pos("file:x", "99"),
            epoch,
            end_seq: 5,
        }))
        .expect("intent");
        drop(d);
        let mut d = open(dir.path());
        assert_eq!(
            d.checkpoints().get("file:x").map(String::as_str),
            Some("1"),
            "position ran ahead of the spool"
        );
        // An intent whose append happened is applied.
        let epoch = d.spool.epoch().0;
        d.write(Some(Pending {
            positions: pos("file:x", "2"),
            epoch,
            end_seq: 2,
        }))
        .expect("intent");
        d.spool.append(&[b"b"]).expect("append");
        drop(d);
        let d = open(dir.path());
        assert_eq!(d.checkpoints().get("file:x").map(String::as_str), Some("2"));
    }

    #[test]
    fn empty_values_forget_and_new_epochs_clear_intents() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut d = open(dir.path());
        d.append(&[b"a"], pos("file:x", "1")).expect("append");
        d.append(&[b"b"], pos("file:x", "")).expect("append");
        assert!(d.checkpoints().get("file:x").is_none());
        d.append(&[b"c"], pos("file:y", "7")).expect("append");
        let old = d.spool.epoch();
        let new = d.new_epoch().expect("epoch");
        assert_ne!(old, new);
        drop(d);
        let d = open(dir.path());
        assert_eq!(d.checkpoints().get("file:y").map(String::as_str), Some("7"));
        assert_eq!(d.spool.epoch(), new);
    }
}

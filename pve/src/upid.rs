//! UPIDs, the ids of Proxmox tasks.
//!
//! Format (pve-common `src/PVE/UPID.pm`):
//! `UPID:{node}:{pid:08X}:{pstart:08X}:{starttime:08X}:{type}:{id}:{user}:` — `pstart` may
//! take 9 hex digits after 497 days of uptime; `id` may be empty.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::formats;

/// A parsed task id.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Upid {
    pub node: String,
    pub pid: u32,
    pub pstart: u64,
    /// Start time, seconds since the Unix epoch.
    pub starttime: u32,
    /// Task type, e.g. `qmstart`, `qmclone`, `vzdump`.
    pub task_type: String,
    /// Task object id, usually the VM id; may be empty.
    pub id: String,
    /// The user (or token) that started the task, e.g. `root@pam!vigie`.
    pub user: String,
}

/// Why a string is not a UPID.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid task id '{input}': {reason}; expected UPID:node:pid:pstart:starttime:type:id:user:"
)]
pub struct UpidError {
    pub input: String,
    pub reason: &'static str,
}

fn hex_field(s: &str, min: usize, max: usize) -> Option<u64> {
    if s.len() < min || s.len() > max || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(s, 16).ok()
}

fn name_field_ok(s: &str, may_be_empty: bool) -> bool {
    (may_be_empty || !s.is_empty()) && !s.chars().any(|c| c == ':' || c == '/' || c.is_whitespace())
}

impl FromStr for Upid {
    type Err = UpidError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let err = |reason| UpidError {
            input: input.to_string(),
            reason,
        };
        let rest = input
            .strip_prefix("UPID:")
            .ok_or_else(|| err("missing the UPID: prefix"))?;
        let rest = rest
            .strip_suffix(':')
            .ok_or_else(|| err("missing the trailing ':'"))?;
        let parts: Vec<&str> = rest.split(':').collect();
        let [node, pid, pstart, starttime, task_type, id, user] = parts.as_slice() else {
            return Err(err("wrong number of fields"));
        };
        if formats::check("pve-node", node).is_err() {
            return Err(err("the node name is not valid"));
        }
        let pid = hex_field(pid, 8, 8).ok_or_else(|| err("pid is not 8 hex digits"))?;
        let pstart =
            hex_field(pstart, 8, 9).ok_or_else(|| err("pstart is not 8 or 9 hex digits"))?;
        let starttime =
            hex_field(starttime, 8, 8).ok_or_else(|| err("starttime is not 8 hex digits"))?;
        if !name_field_ok(task_type, false)
            || !name_field_ok(id, true)
            || !name_field_ok(user, false)
        {
            return Err(err("type, id or user contains ':', '/' or whitespace"));
        }
        Ok(Upid {
            node: (*node).to_string(),
            pid: u32::try_from(pid).map_err(|_| err("pid out of range"))?,
            pstart,
            starttime: u32::try_from(starttime).map_err(|_| err("starttime out of range"))?,
            task_type: (*task_type).to_string(),
            id: (*id).to_string(),
            user: (*user).to_string(),
        })
    }
}

impl fmt::Display for Upid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "UPID:{}:{:08X}:{:08X}:{:08X}:{}:{}:{}:",
            self.node, self.pid, self.pstart, self.starttime, self.task_type, self.id, self.user
        )
    }
}

impl Serialize for Upid {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Upid {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_formats_round_trip() {
        let s = "UPID:pve1:000B1C3A:0001E7C8:65B4F2A1:qmstart:100:root@pam:";
        let u: Upid = s.parse().expect("valid upid");
        assert_eq!(u.node, "pve1");
        assert_eq!(u.pid, 0xB1C3A);
        assert_eq!(u.pstart, 0x1E7C8);
        assert_eq!(u.starttime, 0x65B4F2A1);
        assert_eq!(u.task_type, "qmstart");
        assert_eq!(u.id, "100");
        assert_eq!(u.user, "root@pam");
        assert_eq!(u.to_string(), s);
    }

    #[test]
    fn accepts_nine_digit_pstart_empty_id_and_token_user() {
        let s = "UPID:node-2:00001234:1000001C8:65B4F2A1:vzdump::root@pam!vigie:";
        let u: Upid = s.parse().expect("valid upid");
        assert_eq!(u.pstart, 0x1000001C8);
        assert_eq!(u.id, "");
        assert_eq!(u.user, "root@pam!vigie");
        assert_eq!(u.to_string(), s);
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "UPID:pve1:1:2:3:qmstart:100:root@pam:",
            "UPID:pve1:000B1C3A:0001E7C8:65B4F2A1:qmstart:100:root@pam",
            "UPID:-bad:000B1C3A:0001E7C8:65B4F2A1:qmstart:100:root@pam:",
            "UPID:pve1:000B1C3A:0001E7C8:65B4F2A1::100:root@pam:",
            "UPID:pve1:000B1C3A:0001E7C8:65B4F2A1:qm start:100:root@pam:",
            "UPID:pve1:000B1C3A:0001E7C8:65B4F2A1:qmstart:100:root@pam:extra:",
        ] {
            assert!(bad.parse::<Upid>().is_err(), "{bad} should not parse");
        }
    }

    #[test]
    fn serde_is_the_string_form() {
        let s = "UPID:pve1:000B1C3A:0001E7C8:65B4F2A1:qmstart:100:root@pam:";
        let u: Upid = serde_json::from_str(&format!("\"{s}\"")).expect("valid json upid");
        assert_eq!(
            serde_json::to_string(&u).expect("serializes"),
            format!("\"{s}\"")
        );
    }
}

//! Validated identifiers: node names, VM ids, storage ids.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::PveError;
use crate::formats;

/// A cluster node name (`pve-node` format).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeName(String);

impl NodeName {
    pub fn new(name: impl Into<String>) -> Result<Self, PveError> {
        let name = name.into();
        formats::check("pve-node", &name).map_err(|e| PveError::invalid("node name", &name, e))?;
        Ok(NodeName(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A VM id: 100 ..= 999 999 999 (`pve-vmid` format).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Vmid(u32);

impl Vmid {
    pub const MIN: u32 = 100;
    pub const MAX: u32 = 999_999_999;

    pub fn new(id: u32) -> Result<Self, PveError> {
        if (Self::MIN..=Self::MAX).contains(&id) {
            Ok(Vmid(id))
        } else {
            Err(PveError::invalid(
                "vm id",
                id,
                "proxmox vm ids run from 100 to 999999999",
            ))
        }
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

/// A storage id (`pve-storage-id` format), e.g. `local-lvm`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StorageId(String);

impl StorageId {
    pub fn new(id: impl Into<String>) -> Result<Self, PveError> {
        let id = id.into();
        formats::check("pve-storage-id", &id)
            .map_err(|e| PveError::invalid("storage id", &id, e))?;
        Ok(StorageId(id))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

macro_rules! string_id {
    ($t:ty) => {
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl FromStr for $t {
            type Err = PveError;
            fn from_str(s: &str) -> Result<Self, PveError> {
                <$t>::new(s)
            }
        }
        impl AsRef<str> for $t {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                <$t>::new(s).map_err(serde::de::Error::custom)
            }
        }
    };
}

string_id!(NodeName);
string_id!(StorageId);

impl fmt::Display for Vmid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for Vmid {
    type Err = PveError;
    fn from_str(s: &str) -> Result<Self, PveError> {
        let n: u32 = s.trim().parse().map_err(|_| {
            PveError::invalid("vm id", s, "expected a number from 100 to 999999999")
        })?;
        Vmid::new(n)
    }
}

impl Serialize for Vmid {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u32(self.0)
    }
}

impl<'de> Deserialize<'de> for Vmid {
    /// Accepts a number or a numeric string (PVE sends both).
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = serde_json::Value::deserialize(d)?;
        let n = crate::de::value_u64(&v)
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| serde::de::Error::custom(format!("expected a vm id, got {v}")))?;
        Vmid::new(n).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates() {
        assert!(NodeName::new("pve1").is_ok());
        assert!(NodeName::new("pve_1").is_err());
        assert!(Vmid::new(99).is_err());
        assert!(Vmid::new(100).is_ok());
        assert!(StorageId::new("local-lvm").is_ok());
        assert!(StorageId::new("local lvm").is_err());
        let err = NodeName::new("bad name").expect_err("invalid");
        assert!(
            err.to_string().contains("invalid node name 'bad name'"),
            "{err}"
        );
    }

    #[test]
    fn vmid_from_number_or_string() {
        let a: Vmid = serde_json::from_str("123").expect("number");
        let b: Vmid = serde_json::from_str("\"123\"").expect("string");
        assert_eq!(a, b);
        assert!(serde_json::from_str::<Vmid>("\"12\"").is_err());
    }
}

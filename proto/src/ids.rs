//! Identity newtypes: who sent an event and where it sits in that sender's stream.

use std::fmt;

use bincode::{Decode, Encode};

/// An agent's identity, issued by the collector at enrollment. Shown as 32 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Encode, Decode, Default)]
pub struct AgentId(pub [u8; 16]);

impl AgentId {
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
    pub fn parse(s: &str) -> Result<AgentId, String> {
        let bytes = hex::decode(s).map_err(|_| {
            format!(
                "invalid agent id {:?}: expected 32 hex digits",
                crate::event::truncate_for_log(s)
            )
        })?;
        let arr: [u8; 16] = bytes.try_into().map_err(|_| {
            format!(
                "invalid agent id {:?}: expected 32 hex digits",
                crate::event::truncate_for_log(s)
            )
        })?;
        Ok(AgentId(arr))
    }
}

impl fmt::Display for AgentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for AgentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AgentId({})", self.to_hex())
    }
}

/// A random number chosen when an agent's spool is created (or when the agent
/// detects that it was rolled back or cloned). Sequence numbers count within an epoch.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Encode, Decode, Default)]
pub struct Epoch(pub u64);

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Debug for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Epoch({:016x})", self.0)
    }
}

/// Position of an event in its agent's epoch: contiguous from 0.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Encode, Decode, Default, Debug)]
pub struct Seq(pub u64);

impl fmt::Display for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The stable id of one event: `{agent}-{epoch}-{seq}`.
pub fn event_id(agent: AgentId, epoch: Epoch, seq: Seq) -> String {
    format!("{agent}-{epoch}-{seq}")
}

//! The agent ↔ collector contract.
//!
//! Owns: the event model ([`event`]), identities ([`ids`]), the signed and
//! hash-chained batch format ([`batch`]), the framing and messages on QUIC
//! streams ([`wire`]), signed commands ([`command`]), enrollment bundles
//! ([`enroll`]) and the sans-IO shipping logic ([`session`]).
//!
//! Never does: IO, clock reads, task spawning. Time is always an argument.
//! Every decoder here checks lengths before it allocates and decodes into
//! closed types; each has a fuzz target under `fuzz/`.

pub mod batch;
pub mod command;
pub mod enroll;
pub mod event;
pub mod ids;
pub mod session;
pub mod wire;

#[cfg(test)]
mod golden;

pub use event::{Event, FieldValue, Kind, Outcome, Severity, Timestamp};
pub use ids::{AgentId, Epoch, Seq};

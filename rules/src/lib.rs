//! Pure Sigma detection logic: parse → compile → evaluate, correlation state
//! machines, filters and the field mapping from Sigma names to Vigie events.
//!
//! Owns: rule semantics. Never does: IO, clock reads, task spawning; never links
//! tokio, quinn or RocksDB (checked in CI). Time is an argument.
//!
//! The engine arrives with the detection work; the collector already calls no rules.

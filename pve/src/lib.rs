//! Proxmox VE API client and the Proxmox simulator used by tests and `vigie up --lab`.
//!
//! Owns: the Proxmox API contract — which endpoints Vigie calls, with which parameters and
//! formats, and how their answers are read. Never depends on another workspace crate, never
//! opens the event store.
//!
//! - [`client::Client`]: typed calls over HTTPS (API token or ticket + CSRF, pinned
//!   certificate fingerprint or WebPKI roots), UPID task tracking ([`client::Client::wait_task`]),
//!   RRD metrics in the PVE 8 and PVE 9 layouts, retries of idempotent reads only.
//! - [`sim`]: a stateful simulator of the same API subset (axum), with fault injection, used
//!   by the contract test and the `vigie-pve-sim` binary.
//! - [`formats`]: validators for the PVE parameter formats the client sends and the simulator
//!   accepts; an unknown format is an error, so the contract test fails on it.
//!
//! Every endpoint in [`client::ENDPOINTS`] is checked against the PVE API schema
//! (`apidata.json`) by `tests/contract.rs`.

pub mod client;
mod de;
pub mod error;
pub mod formats;
pub mod ids;
pub mod params;
pub mod sim;
pub mod tls;
pub mod types;
pub mod upid;

pub use client::{ApiToken, Auth, Client, ClientBuilder, RetryPolicy};
pub use error::PveError;
pub use ids::{NodeName, StorageId, Vmid};
pub use tls::{Fingerprint, TlsMode};
pub use upid::Upid;

//! Proxmox VE API client and the Proxmox simulator used by tests and `vigie up --lab`.
//!
//! Owns: the Proxmox API contract. Never depends on another workspace crate.

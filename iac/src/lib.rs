//! Renders and runs the Terraform configurations and Ansible roles under `iac/`, streaming
//! their progress as jobs.
//!
//! Owns: rendering `.tf.json` workspaces for the bpg/proxmox provider ([`render`]), running
//! Terraform on them with a plan → confirm → apply flow, live progress, locking, state backups
//! and cancellation ([`Runner`], [`Job`]); the hand-written Terraform module
//! (`iac/terraform/`) and Ansible roles (`iac/ansible/`).
//!
//! Never does: talk to Proxmox directly — that is `vigie-pve`. Depends only on `vigie-pve`
//! (and currently not even on it).
//!
//! Flow: [`Workspace::open`] → [`Workspace::write_config`] (e.g. with
//! [`render::render_workspace`]) → [`Runner::plan`] → show [`Job::plan`] to the user →
//! [`Runner::apply`] with a [`Confirmation`] naming the plan's SHA-256. Destroy is the same
//! with [`JobKind::Destroy`].

pub mod error;
pub mod job;
pub mod render;
pub mod runner;
pub mod ui;
pub mod workspace;

pub use error::{IacError, Result};
pub use job::{Job, JobKind, JobStatus, JobUpdate, LogEntry, Phase, PlanInfo};
pub use runner::{Confirmation, EnvVar, Runner, RunnerConfig, cli_config};
pub use ui::{ChangeSummary, Diagnostic, TfEvent, UiLine};
pub use workspace::{Workspace, WorkspaceLock};

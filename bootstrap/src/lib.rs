//! Proxmox host bootstrap artifacts: the automated installer's `answer.toml`
//! (model, validation with the installer's own rules, generation from a few
//! questions) and the decoder for the installer's post-installation webhook.
//!
//! Owns: host bootstrap artifacts — what an `answer.toml` may contain and what
//! the post-installation webhook sends, decided as pure functions over text
//! and bytes.
//!
//! Never does: network IO, file IO, clock reads or process spawning. The
//! dashboard's HTTP endpoint and the `vigie bootstrap answer` command call in
//! here; they do the IO.
//!
//! Sources of the rules (read, not copied): proxmox-rs
//! `proxmox-installer-types/src/answer.rs` and `post_hook.rs`, pve-installer
//! `proxmox-auto-installer/src/utils.rs` (`verify_*` functions) and its
//! `tests/resources/parse_answer{,_fail}/` fixtures. Each rule in
//! [`answer`] says whether it is the installer's or a stricter Vigie rule.

pub mod answer;
pub mod render;
pub mod webhook;

pub use answer::{Answer, AnswerError, validate_answer};
pub use render::{
    AnswerSpec, DiskSpec, FilesystemSpec, NetworkSpec, PasswordSpec, RenderError, WebhookSpec,
    render_answer,
};
pub use webhook::{
    HostRegistration, PostHookInfo, WebhookError, accept_post_install, parse_post_hook,
};

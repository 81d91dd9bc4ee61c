//! Proxmox host bootstrap: `answer.toml` generation and validation, the
//! post-install playbook, the installer post-installation webhook.
//!
//! Owns: everything about installing a Proxmox host. Depends only on `vigie-pve`.

//! Renders and runs the Terraform configurations and Ansible roles under `iac/`,
//! streaming their progress as jobs.
//!
//! Owns: infrastructure-as-code runs. Depends only on `vigie-pve`.

//! Kernel-side sensors (eBPF programs, loaded by the agent) and the `#[repr(C)]`
//! record layouts shared with user space.
//!
//! Owns: the layouts of records the kernel programs write into ring buffers.
//! Never does: IO, allocation-heavy work, anything async. Depends on nothing in the workspace.
//!
//! The kernel programs themselves arrive with the eBPF sensor work; this crate holds their contract.

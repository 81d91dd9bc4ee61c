//! The Proxmox installer's post-installation webhook body, as the dashboard receives it.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = vigie_bootstrap::parse_post_hook(data);
    let _ = vigie_bootstrap::accept_post_install(Some("secret-token"), data, "secret-token", 64 * 1024);
});

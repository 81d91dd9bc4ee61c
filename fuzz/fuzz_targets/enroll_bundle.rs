//! Enrollment tokens as the agent reads them from a file or stdin.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vigie_proto::enroll::Bundle;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = Bundle::decode(s);
        let _ = Bundle::decode(&format!("vigie-enroll-v1:{s}"));
    }
});

//! Signed commands as the agent receives them.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vigie_proto::command::verify_command;
use vigie_proto::{AgentId, Timestamp};

fuzz_target!(|data: &[u8]| {
    let key = ed25519_dalek::SigningKey::from_bytes(&[9; 32]).verifying_key();
    let _ = verify_command(&key, data, AgentId([2; 16]), Timestamp::from_secs(150), 0);
});

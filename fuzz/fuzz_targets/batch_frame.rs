//! Batch frames as the collector receives them: parse, verify, and (for a
//! fixed test key, so that valid signatures can be reached) decode.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vigie_proto::batch::{SignedBatch, decode_event};

fuzz_target!(|data: &[u8]| {
    let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]).verifying_key();
    if let Ok(sb) = SignedBatch::parse(data) {
        let _ = sb.header.end_seq();
        if let Ok(vb) = sb.verify(&key) {
            let _ = vb.decode();
        }
    }
    let _ = decode_event(data);
});

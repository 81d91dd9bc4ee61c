//! Frames on QUIC streams: header, then each message type's body decoder.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vigie_proto::wire::{CommandPoll, EnrollRequest, Hello, MsgType, Reply, decode_body, split_frame};

fuzz_target!(|data: &[u8]| {
    if let Ok((ty, body)) = split_frame(data) {
        match ty {
            MsgType::Hello => drop(decode_body::<Hello>(ty, body)),
            MsgType::Enroll => drop(decode_body::<EnrollRequest>(ty, body)),
            MsgType::Reply => drop(decode_body::<Reply>(ty, body)),
            MsgType::CommandPoll => drop(decode_body::<CommandPoll>(ty, body)),
            MsgType::Batch => {}
        }
    }
    let _ = decode_body::<Reply>(MsgType::Reply, data);
    let _ = decode_body::<EnrollRequest>(MsgType::Enroll, data);
});

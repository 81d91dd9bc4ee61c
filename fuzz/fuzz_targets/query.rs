//! Queries as the management API receives them.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vigie_store::query::Query;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(q) = Query::parse(s) {
            let e = vigie_proto::Event::new(vigie_proto::Kind::Log, vigie_proto::Timestamp(0));
            let _ = q.matches(&e);
        }
    }
});

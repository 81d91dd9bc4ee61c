//! The canonical event JSON, as `vigie rules test --events` and API bodies read it.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vigie_proto::Event;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(e) = Event::from_json(s) {
            let again = Event::from_json(&e.to_json()).expect("canonical JSON must parse again");
            assert_eq!(again.to_json(), e.to_json());
        }
    }
});

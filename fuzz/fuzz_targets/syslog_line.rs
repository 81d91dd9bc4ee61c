//! Syslog messages as the agent's listener receives them from the network, and
//! the auth parser applied to whatever body they carry.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vigie_agent::parse::auth::parse_auth;
use vigie_agent::parse::syslog::{TimeCtx, parse_file_line, parse_network};
use vigie_agent::parse::time::SourceTz;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let tc = TimeCtx { now: chrono::DateTime::from_timestamp(1_767_225_600, 0).expect("time"), tz: SourceTz::UTC };
    if let Some(m) = parse_network(&text, &tc) {
        let mut e = vigie_proto::Event::new(vigie_proto::Kind::Log, vigie_proto::Timestamp(0));
        m.apply_to(&mut e);
        vigie_agent::parse::auth::enrich_auth(&mut e);
        assert!(e.check_bounds().is_ok());
    }
    let _ = parse_file_line(&text, &tc);
    if let Some((prog, body)) = text.split_once('\n') {
        let _ = parse_auth(prog, body);
    }
});

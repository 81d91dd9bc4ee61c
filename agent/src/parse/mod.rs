//! Pure parsers for log lines: syslog layouts ([`syslog`]), the source time zones and year
//! inference they need ([`time`]) and authentication messages ([`auth`]).
//!
//! Never does: IO or clock reads (the current time is an argument). Every function here
//! takes untrusted text and must not panic on any input.

pub mod auth;
pub mod syslog;
pub mod time;

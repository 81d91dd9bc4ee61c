//! Source time zones and the year inference that RFC 3164 timestamps need.
//!
//! Classic syslog timestamps (`Mar  1 10:00:00`) carry neither a year nor a zone: the zone
//! is a per-input setting ([`SourceTz`]) and the year is inferred from the current time,
//! which every function here takes as an argument (no clock reads).

use std::fmt;
use std::str::FromStr;

use chrono::{
    DateTime, Datelike, FixedOffset, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, TimeZone,
    Utc,
};
use serde::{Deserialize, Deserializer};
use vigie_proto::Timestamp;

/// The zone a source's zone-less timestamps are written in.
///
/// Configuration form: `"local"` (the machine's zone, the default), `"UTC"`, a fixed offset
/// such as `"+02:00"`, `"-0530"` or `"+02"`, or an IANA name such as `"Europe/Paris"`
/// (DST-aware: an ambiguous local time takes the earlier instant, a skipped one is shifted
/// forward by the gap).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum SourceTz {
    #[default]
    Local,
    Fixed(FixedOffset),
    Named(chrono_tz::Tz),
}

impl SourceTz {
    pub const UTC: SourceTz =
        SourceTz::Fixed(FixedOffset::east_opt(0).expect("zero offset is valid"));

    /// Converts a wall-clock time in this zone to UTC.
    pub fn to_utc(&self, naive: NaiveDateTime) -> Option<DateTime<Utc>> {
        match self {
            SourceTz::Local => resolve(&chrono::Local, naive),
            SourceTz::Fixed(off) => resolve(off, naive),
            SourceTz::Named(tz) => resolve(tz, naive),
        }
    }
}

fn resolve<Z: TimeZone>(zone: &Z, naive: NaiveDateTime) -> Option<DateTime<Utc>> {
    match zone.from_local_datetime(&naive) {
        LocalResult::Single(t) => Some(t.with_timezone(&Utc)),
        LocalResult::Ambiguous(early, _) => Some(early.with_timezone(&Utc)),
        // A time inside a DST gap does not exist; the writer's clock had already jumped.
        LocalResult::None => {
            match zone.from_local_datetime(&(naive + chrono::Duration::hours(1))) {
                LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => {
                    Some(t.with_timezone(&Utc))
                }
                LocalResult::None => None,
            }
        }
    }
}

impl fmt::Display for SourceTz {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SourceTz::Local => f.write_str("local"),
            SourceTz::Fixed(o) if o.local_minus_utc() == 0 => f.write_str("UTC"),
            SourceTz::Fixed(o) => write!(f, "{o}"),
            SourceTz::Named(tz) => f.write_str(tz.name()),
        }
    }
}

impl FromStr for SourceTz {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        if t.eq_ignore_ascii_case("local") {
            return Ok(SourceTz::Local);
        }
        if ["utc", "z", "gmt"]
            .iter()
            .any(|u| t.eq_ignore_ascii_case(u))
        {
            return Ok(SourceTz::UTC);
        }
        if let Some(off) = parse_offset(t) {
            return Ok(SourceTz::Fixed(off));
        }
        if let Ok(tz) = t.parse::<chrono_tz::Tz>() {
            return Ok(SourceTz::Named(tz));
        }
        Err(format!(
            "unknown time zone {:?}; expected \"local\", \"UTC\", an offset such as \"+02:00\" or an IANA name such as \"Europe/Paris\"",
            vigie_proto::event::truncate_for_log(s)
        ))
    }
}

impl<'de> Deserialize<'de> for SourceTz {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// `+02:00`, `-0530`, `+02`, `UTC+2` style offsets.
fn parse_offset(s: &str) -> Option<FixedOffset> {
    let s = s
        .strip_prefix("UTC")
        .or_else(|| s.strip_prefix("utc"))
        .unwrap_or(s);
    let (sign, rest) = match s.as_bytes().first()? {
        b'+' => (1, &s[1..]),
        b'-' => (-1, &s[1..]),
        _ => return None,
    };
    let (h, m) = match rest.len() {
        1 | 2 => (rest, "0"),
        4 => (&rest[..2], &rest[2..]),
        5 if rest.as_bytes()[2] == b':' => (&rest[..2], &rest[3..]),
        _ => return None,
    };
    if !h.bytes().all(|b| b.is_ascii_digit()) || !m.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (h, m): (i32, i32) = (h.parse().ok()?, m.parse().ok()?);
    if h > 23 || m > 59 {
        return None;
    }
    FixedOffset::east_opt(sign * (h * 3600 + m * 60))
}

/// A wall-clock time without a year, as RFC 3164 writes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct YearlessTime {
    pub month: u32,
    pub day: u32,
    pub time: NaiveTime,
}

/// Most a year-less timestamp may lie in the future before it is taken for last year's.
const FUTURE_SLACK_SECS: i64 = 86_400;

/// Picks the year for `t`: the candidate (last, this or next year) closest to `now` that is
/// not more than one day in the future. `None` when no year makes the date valid (Feb 30).
pub fn infer_year(t: YearlessTime, tz: &SourceTz, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let year = now.with_timezone(&FixedOffset::east_opt(0)?).year();
    let mut best: Option<DateTime<Utc>> = None;
    for y in [year - 1, year, year + 1] {
        let Some(date) = NaiveDate::from_ymd_opt(y, t.month, t.day) else {
            continue;
        };
        let Some(utc) = tz.to_utc(date.and_time(t.time)) else {
            continue;
        };
        if (utc - now).num_seconds() > FUTURE_SLACK_SECS {
            continue;
        }
        if best.is_none_or(|b| (now - utc).abs() < (now - b).abs()) {
            best = Some(utc);
        }
    }
    best
}

/// UTC time as a [`Timestamp`], `None` outside the representable range (years 1677..2262).
pub fn to_timestamp(t: DateTime<Utc>) -> Option<Timestamp> {
    t.timestamp_nanos_opt().map(Timestamp::from_nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("test time")
            .with_timezone(&Utc)
    }

    fn yl(month: u32, day: u32, hms: (u32, u32, u32)) -> YearlessTime {
        YearlessTime {
            month,
            day,
            time: NaiveTime::from_hms_opt(hms.0, hms.1, hms.2).expect("time"),
        }
    }

    #[test]
    fn zones_parse() {
        let cases: &[(&str, Option<i32>)] = &[
            ("UTC", Some(0)),
            ("utc", Some(0)),
            ("Z", Some(0)),
            ("+02:00", Some(7200)),
            ("-0530", Some(-19800)),
            ("+02", Some(7200)),
            ("UTC+1", Some(3600)),
            ("+24:00", None),
            ("+2:0", None),
        ];
        for (s, want) in cases {
            match (s.parse::<SourceTz>(), want) {
                (Ok(SourceTz::Fixed(o)), Some(w)) => assert_eq!(o.local_minus_utc(), *w, "{s}"),
                (Err(_), None) => {}
                (got, want) => panic!("{s}: got {got:?}, want {want:?}"),
            }
        }
        assert_eq!("local".parse::<SourceTz>(), Ok(SourceTz::Local));
        assert!(matches!(
            "Europe/Paris".parse::<SourceTz>(),
            Ok(SourceTz::Named(_))
        ));
        let err = "Mars/Olympus"
            .parse::<SourceTz>()
            .expect_err("unknown zone");
        assert!(err.contains("Europe/Paris"), "{err}");
        let cfg: SourceTz = serde_json::from_str("\"+01:00\"").expect("serde");
        assert_eq!(cfg.to_string(), "+01:00");
    }

    #[test]
    fn year_is_inferred_around_new_year() {
        let tz = SourceTz::UTC;
        // Normal case: this year.
        let now = utc("2026-03-01T12:00:00Z");
        assert_eq!(
            infer_year(yl(3, 1, (10, 0, 0)), &tz, now),
            Some(utc("2026-03-01T10:00:00Z"))
        );
        // A December line read on the 1st of January belongs to last year.
        let now = utc("2026-01-01T00:05:00Z");
        assert_eq!(
            infer_year(yl(12, 31, (23, 59, 0)), &tz, now),
            Some(utc("2025-12-31T23:59:00Z"))
        );
        // A sender slightly ahead across new year: next year, within one day.
        let now = utc("2025-12-31T23:59:00Z");
        assert_eq!(
            infer_year(yl(1, 1, (0, 1, 0)), &tz, now),
            Some(utc("2026-01-01T00:01:00Z"))
        );
        // Up to one day in the future stays this year; more goes back a year.
        let now = utc("2026-06-10T12:00:00Z");
        assert_eq!(
            infer_year(yl(6, 11, (11, 0, 0)), &tz, now),
            Some(utc("2026-06-11T11:00:00Z"))
        );
        assert_eq!(
            infer_year(yl(6, 12, (13, 0, 0)), &tz, now),
            Some(utc("2025-06-12T13:00:00Z"))
        );
        // Feb 29 only exists in leap years: 2024 is the nearest valid one in the past.
        let now = utc("2025-03-01T00:00:00Z");
        assert_eq!(
            infer_year(yl(2, 29, (1, 0, 0)), &tz, now),
            Some(utc("2024-02-29T01:00:00Z"))
        );
        assert_eq!(infer_year(yl(2, 30, (1, 0, 0)), &tz, now), None);
    }

    #[test]
    fn named_zones_are_dst_aware() {
        let paris: SourceTz = "Europe/Paris".parse().expect("zone");
        let now = utc("2026-08-01T00:00:00Z");
        // Summer: UTC+2.
        assert_eq!(
            infer_year(yl(7, 14, (12, 0, 0)), &paris, now),
            Some(utc("2026-07-14T10:00:00Z"))
        );
        // Winter: UTC+1.
        assert_eq!(
            infer_year(yl(1, 14, (12, 0, 0)), &paris, now),
            Some(utc("2026-01-14T11:00:00Z"))
        );
        // 2026-03-29 02:30 does not exist in Paris (clocks jump 02:00 -> 03:00).
        let gap = NaiveDate::from_ymd_opt(2026, 3, 29)
            .expect("date")
            .and_hms_opt(2, 30, 0)
            .expect("time");
        assert_eq!(paris.to_utc(gap), Some(utc("2026-03-29T01:30:00Z")));
        // 2026-10-25 02:30 happens twice: the earlier instant (still UTC+2) is taken.
        let amb = NaiveDate::from_ymd_opt(2026, 10, 25)
            .expect("date")
            .and_hms_opt(2, 30, 0)
            .expect("time");
        assert_eq!(paris.to_utc(amb), Some(utc("2026-10-25T00:30:00Z")));
    }
}

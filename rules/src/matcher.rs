//! Values and modifiers: Sigma strings (wildcards, escapes), every Sigma 2.1
//! modifier, and the compiled matchers that test one field of one event.
//!
//! Matching is case-insensitive unless `cased` (or `re`) says otherwise: the
//! pattern is lowercased once at compile time and each field value once per
//! event (see [`Scratch`]), with the same char-wise lowering on both sides.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;

use base64::Engine as _;
use chrono::{Datelike, Timelike};
use vigie_proto::event::{Event, FieldValue};
use yaml_rust2::Yaml;

use crate::ast::{scalar_text, type_name};
use crate::error::Reason;
use crate::field::FieldRef;

/// The characters `windash` treats as interchangeable.
pub const WINDASH: [char; 5] = ['-', '/', '\u{2013}', '\u{2014}', '\u{2015}'];

/// One token of a Sigma string.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tok {
    Lit(String),
    /// `*`: any run of characters.
    Star,
    /// `?`: exactly one character.
    One,
    /// A `windash` position: one of [`WINDASH`].
    Dash,
}

/// Parses a Sigma string: `*` and `?` are wildcards; `\*`, `\?` and `\\` are
/// escapes; a backslash before anything else is a plain backslash.
pub fn parse_sigma_string(s: &str) -> Vec<Tok> {
    let mut out = Vec::new();
    let mut lit = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.peek() {
                Some(&n @ ('*' | '?' | '\\')) => {
                    lit.push(n);
                    chars.next();
                }
                _ => lit.push('\\'),
            },
            '*' | '?' => {
                if !lit.is_empty() {
                    out.push(Tok::Lit(std::mem::take(&mut lit)));
                }
                out.push(if c == '*' { Tok::Star } else { Tok::One });
            }
            c => lit.push(c),
        }
    }
    if !lit.is_empty() {
        out.push(Tok::Lit(lit));
    }
    out
}

/// Lowers `s` into `out` char by char (the same function for patterns and values).
pub(crate) fn lower_into(s: &str, out: &mut String) {
    if s.is_ascii() {
        let start = out.len();
        out.push_str(s);
        out[start..].make_ascii_lowercase();
    } else {
        for c in s.chars() {
            out.extend(c.to_lowercase());
        }
    }
}

pub(crate) fn lower(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    lower_into(s, &mut o);
    o
}

/// A compiled string pattern, with fast paths for the common shapes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StrPat {
    Exact(String),
    Prefix(String),
    Suffix(String),
    Contains(String),
    /// `*` alone: any value.
    Any,
    Glob(Vec<Tok>),
}

fn normalize(toks: Vec<Tok>) -> Vec<Tok> {
    let mut out: Vec<Tok> = Vec::with_capacity(toks.len());
    for t in toks {
        match (out.last_mut(), t) {
            (Some(Tok::Lit(a)), Tok::Lit(b)) => a.push_str(&b),
            (Some(Tok::Star), Tok::Star) => {}
            (_, Tok::Lit(b)) if b.is_empty() => {}
            (_, t) => out.push(t),
        }
    }
    out
}

impl StrPat {
    pub fn from_toks(toks: Vec<Tok>) -> StrPat {
        let toks = normalize(toks);
        match toks.as_slice() {
            [] => StrPat::Exact(String::new()),
            [Tok::Lit(a)] => StrPat::Exact(a.clone()),
            [Tok::Star] => StrPat::Any,
            [Tok::Lit(a), Tok::Star] => StrPat::Prefix(a.clone()),
            [Tok::Star, Tok::Lit(a)] => StrPat::Suffix(a.clone()),
            [Tok::Star, Tok::Lit(a), Tok::Star] => StrPat::Contains(a.clone()),
            _ => StrPat::Glob(toks),
        }
    }

    pub fn is_match(&self, s: &str) -> bool {
        match self {
            StrPat::Exact(a) => s == a,
            StrPat::Prefix(a) => s.starts_with(a.as_str()),
            StrPat::Suffix(a) => s.ends_with(a.as_str()),
            StrPat::Contains(a) => s.contains(a.as_str()),
            StrPat::Any => true,
            StrPat::Glob(t) => glob_match(t, s),
        }
    }

    /// The literal pieces every match must contain.
    pub fn literals(&self) -> Vec<&str> {
        match self {
            StrPat::Exact(a) | StrPat::Prefix(a) | StrPat::Suffix(a) | StrPat::Contains(a) => {
                vec![a.as_str()]
            }
            StrPat::Any => vec![],
            StrPat::Glob(t) => t
                .iter()
                .filter_map(|t| match t {
                    Tok::Lit(l) => Some(l.as_str()),
                    _ => None,
                })
                .collect(),
        }
    }
}

/// Glob matching with single-star backtracking (every non-star token has a
/// fixed width, so backtracking to the last star is complete).
fn glob_match(toks: &[Tok], s: &str) -> bool {
    let (mut ti, mut si) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    loop {
        if ti < toks.len() {
            let step = match &toks[ti] {
                Tok::Star => {
                    star = Some((ti + 1, si));
                    ti += 1;
                    continue;
                }
                Tok::Lit(l) => s[si..].starts_with(l.as_str()).then_some(l.len()),
                Tok::One => s[si..].chars().next().map(char::len_utf8),
                Tok::Dash => s[si..]
                    .chars()
                    .next()
                    .filter(|c| WINDASH.contains(c))
                    .map(char::len_utf8),
            };
            if let Some(n) = step {
                si += n;
                ti += 1;
                continue;
            }
        } else if si == s.len() {
            return true;
        }
        match star {
            Some((sti, ssi)) => match s[ssi..].chars().next() {
                Some(c) => {
                    let nsi = ssi + c.len_utf8();
                    star = Some((sti, nsi));
                    ti = sti;
                    si = nsi;
                }
                None => return false,
            },
            None => return false,
        }
    }
}

/// An IPv4 or IPv6 network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    pub net: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Option<Cidr> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p.parse::<u8>().ok()?)),
            None => (s, None),
        };
        let net: IpAddr = addr.trim().parse().ok()?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        (prefix <= max).then_some(Cidr { net, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) if self.net.is_ipv4() => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => return false,
            },
            other => other,
        };
        match (self.net, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NumOp {
    Eq,
    Lt,
    Lte,
    Gt,
    Gte,
}

impl NumOp {
    pub fn holds(self, a: f64, b: f64) -> bool {
        match self {
            NumOp::Eq => a == b,
            NumOp::Lt => a < b,
            NumOp::Lte => a <= b,
            NumOp::Gt => a > b,
            NumOp::Gte => a >= b,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimePart {
    Minute,
    Hour,
    Day,
    Week,
    Month,
    Year,
}

impl TimePart {
    /// The part of a UTC time given in milliseconds since the epoch.
    pub fn of_millis(self, ms: i64) -> Option<i64> {
        let t = chrono::DateTime::from_timestamp_millis(ms)?;
        Some(match self {
            TimePart::Minute => t.minute().into(),
            TimePart::Hour => t.hour().into(),
            TimePart::Day => t.day().into(),
            TimePart::Week => t.iso_week().week().into(),
            TimePart::Month => t.month().into(),
            TimePart::Year => t.year().into(),
        })
    }
}

/// Tests one field value (given as original text and lowered text).
#[derive(Clone, Debug)]
pub enum ValueMatcher {
    Str {
        pat: StrPat,
        cased: bool,
    },
    /// The field is absent or empty (`null`, `''`).
    Empty,
    Regex(regex::Regex),
    Num {
        op: NumOp,
        value: f64,
    },
    Cidr(Cidr),
    Time {
        part: TimePart,
        op: NumOp,
        value: i64,
    },
}

impl ValueMatcher {
    pub fn matches(&self, orig: &str, lowered: &str) -> bool {
        match self {
            ValueMatcher::Str { pat, cased } => pat.is_match(if *cased { orig } else { lowered }),
            ValueMatcher::Empty => orig.is_empty(),
            ValueMatcher::Regex(r) => r.is_match(orig),
            ValueMatcher::Num { op, value } => orig
                .trim()
                .parse::<f64>()
                .is_ok_and(|v| op.holds(v, *value)),
            ValueMatcher::Cidr(c) => orig.parse::<IpAddr>().is_ok_and(|ip| c.contains(ip)),
            ValueMatcher::Time { part, op, value } => {
                let ms = orig
                    .parse::<i64>()
                    .ok()
                    .or_else(|| crate::field::as_millis(&FieldValue::Str(orig)));
                ms.and_then(|ms| part.of_millis(ms))
                    .is_some_and(|p| op.holds(p as f64, *value as f64))
            }
        }
    }
}

/// How a `fieldref` compares the two fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Position {
    Exact,
    Prefix,
    Suffix,
    Contains,
}

/// Tests one field of an event.
#[derive(Clone, Debug)]
pub enum ItemMatcher {
    /// OR (or AND with `all`) of values; `negate` (`neq`) means the field
    /// exists and differs from every listed value.
    Values {
        values: Vec<ValueMatcher>,
        all: bool,
        negate: bool,
    },
    /// `exists: true|false`.
    Exists(bool),
    /// `fieldref`: compare with other fields (slots) of the same event.
    FieldRef {
        others: Vec<usize>,
        pos: Position,
        cased: bool,
        all: bool,
        negate: bool,
    },
}

/// A matcher bound to a field slot of the engine.
#[derive(Clone, Debug)]
pub struct Item {
    pub slot: usize,
    pub matcher: ItemMatcher,
}

/// Per-event cache of field texts (original and lowered), reused across events.
#[derive(Debug, Default)]
pub struct Scratch {
    epoch: u64,
    entries: Vec<Entry>,
    pub(crate) cand: Vec<u64>,
}

#[derive(Debug, Default)]
struct Entry {
    epoch: u64,
    n: usize,
    orig: Vec<String>,
    lower: Vec<String>,
}

fn write_value(v: &FieldValue<'_>, out: &mut String) {
    match v {
        FieldValue::Str(s) => out.push_str(s),
        FieldValue::Int(i) => {
            let _ = write!(out, "{i}");
        }
        FieldValue::Float(f) => {
            let _ = write!(out, "{f}");
        }
        FieldValue::Ip(ip) => {
            let _ = write!(out, "{ip}");
        }
        FieldValue::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
    }
}

impl Scratch {
    pub(crate) fn begin(&mut self, slots: usize) {
        self.epoch += 1;
        if self.entries.len() < slots {
            self.entries.resize_with(slots, Entry::default);
        }
    }

    pub(crate) fn fill(&mut self, slot: usize, field: &FieldRef, ev: &Event) {
        let epoch = self.epoch;
        let e = &mut self.entries[slot];
        if e.epoch == epoch {
            return;
        }
        e.epoch = epoch;
        e.n = 0;
        field.read(ev, &mut |v| {
            let i = e.n;
            if e.orig.len() <= i {
                e.orig.push(String::new());
                e.lower.push(String::new());
            }
            e.orig[i].clear();
            write_value(&v, &mut e.orig[i]);
            e.lower[i].clear();
            lower_into(&e.orig[i], &mut e.lower[i]);
            e.n += 1;
        });
    }

    /// Lowered texts of `slot` together with the candidate bitset.
    pub(crate) fn lowered_and_cand(&mut self, slot: usize) -> (&[String], &mut Vec<u64>) {
        let e = &self.entries[slot];
        (&e.lower[..e.n], &mut self.cand)
    }

    pub(crate) fn texts(&self, slot: usize) -> (&[String], &[String]) {
        let e = &self.entries[slot];
        (&e.orig[..e.n], &e.lower[..e.n])
    }
}

impl Item {
    pub(crate) fn eval(&self, ev: &Event, fields: &[FieldRef], sc: &mut Scratch) -> bool {
        sc.fill(self.slot, &fields[self.slot], ev);
        match &self.matcher {
            ItemMatcher::Exists(want) => sc.texts(self.slot).0.is_empty() != *want,
            ItemMatcher::Values {
                values,
                all,
                negate,
            } => {
                let (orig, lowered) = sc.texts(self.slot);
                if orig.is_empty() {
                    if *negate {
                        return false;
                    }
                    let empty = |m: &ValueMatcher| matches!(m, ValueMatcher::Empty);
                    return if *all {
                        values.iter().all(empty)
                    } else {
                        values.iter().any(empty)
                    };
                }
                let hit = |m: &ValueMatcher| orig.iter().zip(lowered).any(|(o, l)| m.matches(o, l));
                if *negate {
                    !values.iter().any(hit)
                } else if *all {
                    values.iter().all(hit)
                } else {
                    values.iter().any(hit)
                }
            }
            ItemMatcher::FieldRef {
                others,
                pos,
                cased,
                all,
                negate,
            } => {
                for o in others {
                    sc.fill(*o, &fields[*o], ev);
                }
                let (orig, lowered) = sc.texts(self.slot);
                if orig.is_empty() {
                    return false;
                }
                let mine = if *cased { orig } else { lowered };
                let one = |o: &usize| {
                    let (oo, ol) = sc.texts(*o);
                    let theirs = if *cased { oo } else { ol };
                    mine.iter().any(|a| {
                        theirs.iter().any(|b| match pos {
                            Position::Exact => a == b,
                            Position::Prefix => a.starts_with(b.as_str()),
                            Position::Suffix => a.ends_with(b.as_str()),
                            Position::Contains => a.contains(b.as_str()),
                        })
                    })
                };
                let hit = if *all {
                    others.iter().all(one)
                } else {
                    others.iter().any(one)
                };
                hit != *negate
            }
        }
    }
}

/// Sigma 2.1 modifiers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Modifier {
    Contains,
    StartsWith,
    EndsWith,
    All,
    Re,
    ReI,
    ReM,
    ReS,
    Base64,
    Base64Offset,
    Utf16le,
    Utf16be,
    Utf16,
    Windash,
    Cidr,
    Lt,
    Lte,
    Gt,
    Gte,
    Exists,
    Cased,
    Neq,
    FieldRef,
    Expand,
    Time(TimePart),
}

impl Modifier {
    pub fn parse(s: &str) -> Option<Modifier> {
        use Modifier::*;
        Some(match s {
            "contains" => Contains,
            "startswith" => StartsWith,
            "endswith" => EndsWith,
            "all" => All,
            "re" => Re,
            "i" => ReI,
            "m" => ReM,
            "s" => ReS,
            "base64" => Base64,
            "base64offset" => Base64Offset,
            "utf16le" | "wide" => Utf16le,
            "utf16be" => Utf16be,
            "utf16" => Utf16,
            "windash" => Windash,
            "cidr" => Cidr,
            "lt" => Lt,
            "lte" => Lte,
            "gt" => Gt,
            "gte" => Gte,
            "exists" => Exists,
            "cased" => Cased,
            "neq" => Neq,
            "fieldref" => FieldRef,
            "expand" => Expand,
            "minute" => Time(TimePart::Minute),
            "hour" => Time(TimePart::Hour),
            "day" => Time(TimePart::Day),
            "week" => Time(TimePart::Week),
            "month" => Time(TimePart::Month),
            "year" => Time(TimePart::Year),
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        use Modifier::*;
        match self {
            Contains => "contains",
            StartsWith => "startswith",
            EndsWith => "endswith",
            All => "all",
            Re => "re",
            ReI => "i",
            ReM => "m",
            ReS => "s",
            Base64 => "base64",
            Base64Offset => "base64offset",
            Utf16le => "utf16le",
            Utf16be => "utf16be",
            Utf16 => "utf16",
            Windash => "windash",
            Cidr => "cidr",
            Lt => "lt",
            Lte => "lte",
            Gt => "gt",
            Gte => "gte",
            Exists => "exists",
            Cased => "cased",
            Neq => "neq",
            FieldRef => "fieldref",
            Expand => "expand",
            Time(TimePart::Minute) => "minute",
            Time(TimePart::Hour) => "hour",
            Time(TimePart::Day) => "day",
            Time(TimePart::Week) => "week",
            Time(TimePart::Month) => "month",
            Time(TimePart::Year) => "year",
        }
    }
}

/// Values being transformed by string modifiers.
enum Val {
    Toks(Vec<Tok>),
    Bytes(Vec<u8>),
}

fn latin1(b: &[u8]) -> String {
    match std::str::from_utf8(b) {
        Ok(s) => s.to_string(),
        Err(_) => b.iter().map(|&c| char::from(c)).collect(),
    }
}

impl Val {
    fn into_toks(self) -> Vec<Tok> {
        match self {
            Val::Toks(t) => t,
            Val::Bytes(b) => vec![Tok::Lit(latin1(&b))],
        }
    }
    /// The plain bytes of a value without wildcards.
    fn plain_bytes(self, field: &str, m: Modifier) -> Result<Vec<u8>, Reason> {
        match self {
            Val::Bytes(b) => Ok(b),
            Val::Toks(t) => {
                let mut out = String::new();
                for tok in t {
                    match tok {
                        Tok::Lit(l) => out.push_str(&l),
                        _ => {
                            return Err(Reason::invalid(
                                field,
                                format!(
                                    "modifier `{}` cannot encode a value holding wildcards; escape `*` and `?` with `\\`",
                                    m.name()
                                ),
                            ));
                        }
                    }
                }
                Ok(out.into_bytes())
            }
        }
    }
}

fn utf16(s: &[u8], le: bool, bom: bool) -> Vec<u8> {
    let text = latin1(s);
    let mut out = Vec::new();
    if bom {
        out.extend_from_slice(if le { &[0xFF, 0xFE] } else { &[0xFE, 0xFF] });
    }
    for u in text.encode_utf16() {
        let b = if le { u.to_le_bytes() } else { u.to_be_bytes() };
        out.extend_from_slice(&b);
    }
    out
}

fn base64_offsets(b: &[u8]) -> Vec<String> {
    // As pySigma: encode with 0, 1 and 2 leading bytes and cut the characters
    // that depend on the unknown neighbours.
    const START: [usize; 3] = [0, 2, 3];
    const END: [usize; 3] = [0, 3, 2];
    (0..3)
        .map(|i| {
            let mut v = vec![b' '; i];
            v.extend_from_slice(b);
            let enc = base64::engine::general_purpose::STANDARD.encode(&v);
            let end_cut = END[(b.len() + i) % 3];
            let end = enc.len().saturating_sub(end_cut);
            enc.get(START[i]..end).unwrap_or_default().to_string()
        })
        .collect()
}

/// Expands `%name%` placeholders (`\%` is a plain percent sign).
pub fn expand_placeholders(
    field: &str,
    text: &str,
    placeholders: &BTreeMap<String, Vec<String>>,
) -> Result<Vec<String>, Reason> {
    let mut outs = vec![String::new()];
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'%') => {
                chars.next();
                outs.iter_mut().for_each(|o| o.push('%'));
            }
            '%' => {
                let mut name = String::new();
                let mut closed = false;
                for d in chars.by_ref() {
                    if d == '%' {
                        closed = true;
                        break;
                    }
                    name.push(d);
                }
                if !closed {
                    return Err(Reason::invalid(
                        field,
                        format!("placeholder %{name} is not closed by `%`"),
                    ));
                }
                let vals = placeholders
                    .get(&name)
                    .filter(|v| !v.is_empty())
                    .ok_or_else(|| Reason::UnresolvedPlaceholder {
                        field: field.to_string(),
                        placeholder: name.clone(),
                    })?;
                let mut next = Vec::with_capacity(outs.len() * vals.len());
                for o in &outs {
                    for v in vals {
                        next.push(format!("{o}{v}"));
                    }
                }
                if next.len() > 4096 {
                    return Err(Reason::invalid(
                        field,
                        "placeholders expand to more than 4096 values",
                    ));
                }
                outs = next;
            }
            c => outs.iter_mut().for_each(|o| o.push(c)),
        }
    }
    Ok(outs)
}

/// What a field item needs from the caller to compile.
pub struct ItemEnv<'a> {
    pub placeholders: &'a BTreeMap<String, Vec<String>>,
    /// Maps a Sigma field name (for `fieldref`) to an engine slot.
    pub resolve_field: &'a mut dyn FnMut(&str) -> Result<usize, Reason>,
}

/// Compiles `field|modifiers: values` (field already resolved to `slot`).
/// `keyword` items search with implicit `contains`.
pub fn compile_item(
    field: &str,
    slot: usize,
    keyword: bool,
    mod_names: &[String],
    values: &[Yaml],
    env: &mut ItemEnv<'_>,
) -> Result<Item, Reason> {
    let mut mods = Vec::new();
    for m in mod_names {
        let parsed = Modifier::parse(m).ok_or_else(|| Reason::UnknownModifier {
            field: field.to_string(),
            modifier: m.clone(),
        })?;
        if mods.contains(&parsed) {
            return Err(Reason::invalid(
                field,
                format!("modifier `{m}` is given twice"),
            ));
        }
        mods.push(parsed);
    }
    let has = |m: Modifier| mods.contains(&m);
    let conflict = |a: &str, b: Modifier| {
        Reason::invalid(
            field,
            format!("modifier `{a}` cannot be combined with `{}`", b.name()),
        )
    };
    use Modifier as M;
    let all = has(M::All);
    let cased = has(M::Cased);
    let neq = has(M::Neq);
    if values.is_empty() {
        return Err(Reason::invalid(
            field,
            "expected at least one value, found an empty list",
        ));
    }
    let positions: Vec<Modifier> = mods
        .iter()
        .copied()
        .filter(|m| matches!(m, M::Contains | M::StartsWith | M::EndsWith))
        .collect();
    if positions.len() > 1 {
        return Err(conflict(positions[0].name(), positions[1]));
    }
    let numeric: Vec<Modifier> = mods
        .iter()
        .copied()
        .filter(|m| matches!(m, M::Lt | M::Lte | M::Gt | M::Gte))
        .collect();
    if numeric.len() > 1 {
        return Err(conflict(numeric[0].name(), numeric[1]));
    }
    let time: Vec<TimePart> = mods
        .iter()
        .filter_map(|m| match m {
            M::Time(p) => Some(*p),
            _ => None,
        })
        .collect();
    if time.len() > 1 {
        return Err(Reason::invalid(
            field,
            "only one time modifier may be given",
        ));
    }
    let string_mods = |m: &Modifier| {
        matches!(
            m,
            M::Contains
                | M::StartsWith
                | M::EndsWith
                | M::Base64
                | M::Base64Offset
                | M::Utf16le
                | M::Utf16be
                | M::Utf16
                | M::Windash
                | M::Expand
        )
    };
    let numeric_op = |m: Modifier| match m {
        M::Lt => NumOp::Lt,
        M::Lte => NumOp::Lte,
        M::Gt => NumOp::Gt,
        _ => NumOp::Gte,
    };
    let re_flags = [M::ReI, M::ReM, M::ReS];

    // exists: alone, one boolean.
    if has(M::Exists) {
        if let Some(other) = mods.iter().find(|m| **m != M::Exists) {
            return Err(conflict("exists", *other));
        }
        return match values {
            [Yaml::Boolean(b)] => Ok(Item {
                slot,
                matcher: ItemMatcher::Exists(*b),
            }),
            [Yaml::String(s)] if s == "true" || s == "false" => Ok(Item {
                slot,
                matcher: ItemMatcher::Exists(s == "true"),
            }),
            _ => Err(Reason::invalid(
                field,
                "modifier `exists` needs one boolean value (true or false)",
            )),
        };
    }
    if let Some(f) = re_flags.iter().find(|f| has(**f))
        && !has(M::Re)
    {
        return Err(Reason::invalid(
            field,
            format!(
                "modifier `{}` is a sub-modifier of `re` and needs it",
                f.name()
            ),
        ));
    }
    if neq && !numeric.is_empty() {
        return Err(conflict("neq", numeric[0]));
    }

    // fieldref: values name other fields.
    if has(M::FieldRef) {
        if let Some(other) = mods.iter().find(|m| {
            !matches!(
                m,
                M::FieldRef
                    | M::Contains
                    | M::StartsWith
                    | M::EndsWith
                    | M::Cased
                    | M::Neq
                    | M::All
            )
        }) {
            return Err(conflict("fieldref", *other));
        }
        let mut others = Vec::new();
        for v in values {
            let name = scalar_text(v).ok_or_else(|| {
                Reason::invalid(
                    field,
                    format!("`fieldref` needs field names, found {}", type_name(v)),
                )
            })?;
            others.push((env.resolve_field)(&name)?);
        }
        let pos = match positions.first() {
            Some(M::Contains) => Position::Contains,
            Some(M::StartsWith) => Position::Prefix,
            Some(M::EndsWith) => Position::Suffix,
            _ => Position::Exact,
        };
        return Ok(Item {
            slot,
            matcher: ItemMatcher::FieldRef {
                others,
                pos,
                cased,
                all,
                negate: neq,
            },
        });
    }

    let mut out = Vec::new();
    if has(M::Re) {
        if let Some(other) = mods.iter().find(|m| {
            !matches!(
                m,
                M::Re | M::ReI | M::ReM | M::ReS | M::All | M::Neq | M::Cased
            )
        }) {
            return Err(conflict("re", *other));
        }
        for v in values {
            let pat = scalar_text(v).ok_or_else(|| {
                Reason::invalid(
                    field,
                    format!("`re` needs a string, found {}", type_name(v)),
                )
            })?;
            let re = regex::RegexBuilder::new(&pat)
                .case_insensitive(has(M::ReI))
                .multi_line(has(M::ReM))
                .dot_matches_new_line(has(M::ReS))
                .build()
                .map_err(|e| Reason::Regex {
                    field: field.to_string(),
                    detail: e
                        .to_string()
                        .lines()
                        .last()
                        .unwrap_or_default()
                        .trim()
                        .to_string(),
                })?;
            out.push(ValueMatcher::Regex(re));
        }
    } else if has(M::Cidr) {
        if let Some(other) = mods
            .iter()
            .find(|m| !matches!(m, M::Cidr | M::All | M::Neq))
        {
            return Err(conflict("cidr", *other));
        }
        for v in values {
            let text = scalar_text(v).unwrap_or_default();
            let c = Cidr::parse(&text).ok_or_else(|| {
                Reason::invalid(
                    field,
                    format!(
                        "`cidr` needs a network such as 10.0.0.0/8 or fe80::/10, found {text:?}"
                    ),
                )
            })?;
            out.push(ValueMatcher::Cidr(c));
        }
    } else if let Some(part) = time.first() {
        if let Some(other) = mods.iter().find(|m| {
            !matches!(
                m,
                M::Time(_) | M::Lt | M::Lte | M::Gt | M::Gte | M::Neq | M::All
            )
        }) {
            return Err(conflict(M::Time(*part).name(), *other));
        }
        let op = numeric.first().map(|m| numeric_op(*m)).unwrap_or(NumOp::Eq);
        for v in values {
            let Yaml::Integer(n) = v else {
                return Err(Reason::invalid(
                    field,
                    format!(
                        "time modifier `{}` needs an integer, found {}",
                        M::Time(*part).name(),
                        type_name(v)
                    ),
                ));
            };
            out.push(ValueMatcher::Time {
                part: *part,
                op,
                value: *n,
            });
        }
    } else if let Some(m) = numeric.first() {
        if let Some(other) = mods.iter().find(|x| string_mods(x) || **x == M::Cased) {
            return Err(conflict(m.name(), *other));
        }
        for v in values {
            let n = match v {
                Yaml::Integer(i) => *i as f64,
                Yaml::Real(r) => r.parse::<f64>().map_err(|_| {
                    Reason::invalid(field, format!("`{}` needs a number, found {r:?}", m.name()))
                })?,
                other => {
                    return Err(Reason::invalid(
                        field,
                        format!("`{}` needs a number, found {}", m.name(), type_name(other)),
                    ));
                }
            };
            out.push(ValueMatcher::Num {
                op: numeric_op(*m),
                value: n,
            });
        }
    } else {
        for v in values {
            if matches!(v, Yaml::Null) {
                if let Some(other) = mods.iter().find(|m| !matches!(m, M::All | M::Neq)) {
                    return Err(Reason::invalid(
                        field,
                        format!("a null value cannot take modifier `{}`", other.name()),
                    ));
                }
                out.push(ValueMatcher::Empty);
                continue;
            }
            let text = scalar_text(v).ok_or_else(|| {
                Reason::invalid(
                    field,
                    format!("expected a string or number, found {}", type_name(v)),
                )
            })?;
            let raw = if has(M::Expand) {
                expand_placeholders(field, &text, env.placeholders)?
            } else {
                vec![text]
            };
            let mut vals: Vec<Val> = raw
                .iter()
                .map(|r| Val::Toks(parse_sigma_string(r)))
                .collect();
            for m in &mods {
                vals = apply_transform(field, *m, vals)?;
            }
            if keyword && positions.is_empty() {
                vals = apply_transform(field, M::Contains, vals)?;
            }
            for v in vals {
                let mut toks = v.into_toks();
                if !cased {
                    for t in &mut toks {
                        if let Tok::Lit(l) = t {
                            *l = lower(l);
                        }
                    }
                }
                let pat = StrPat::from_toks(toks);
                out.push(if pat == StrPat::Exact(String::new()) {
                    ValueMatcher::Empty
                } else {
                    ValueMatcher::Str { pat, cased }
                });
            }
        }
    }
    Ok(Item {
        slot,
        matcher: ItemMatcher::Values {
            values: out,
            all,
            negate: neq,
        },
    })
}

fn apply_transform(field: &str, m: Modifier, vals: Vec<Val>) -> Result<Vec<Val>, Reason> {
    use Modifier as M;
    let mut out = Vec::with_capacity(vals.len());
    for v in vals {
        match m {
            M::Contains | M::StartsWith | M::EndsWith => {
                let mut t = v.into_toks();
                if m != M::StartsWith && t.first() != Some(&Tok::Star) {
                    t.insert(0, Tok::Star);
                }
                if m != M::EndsWith && t.last() != Some(&Tok::Star) {
                    t.push(Tok::Star);
                }
                out.push(Val::Toks(t));
            }
            M::Windash => {
                let mut t = Vec::new();
                for tok in v.into_toks() {
                    match tok {
                        Tok::Lit(l) => {
                            let mut cur = String::new();
                            for c in l.chars() {
                                if WINDASH.contains(&c) {
                                    if !cur.is_empty() {
                                        t.push(Tok::Lit(std::mem::take(&mut cur)));
                                    }
                                    t.push(Tok::Dash);
                                } else {
                                    cur.push(c);
                                }
                            }
                            if !cur.is_empty() {
                                t.push(Tok::Lit(cur));
                            }
                        }
                        other => t.push(other),
                    }
                }
                out.push(Val::Toks(t));
            }
            M::Base64 => {
                let b = v.plain_bytes(field, m)?;
                let enc = base64::engine::general_purpose::STANDARD.encode(&b);
                out.push(Val::Toks(vec![Tok::Lit(enc)]));
            }
            M::Base64Offset => {
                let b = v.plain_bytes(field, m)?;
                for enc in base64_offsets(&b) {
                    out.push(Val::Toks(vec![Tok::Lit(enc)]));
                }
            }
            M::Utf16le | M::Utf16be | M::Utf16 => {
                let b = v.plain_bytes(field, m)?;
                out.push(Val::Bytes(utf16(&b, m != M::Utf16be, m == M::Utf16)));
            }
            _ => out.push(v),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigie_proto::event::{Kind, Timestamp};

    fn y(s: &str) -> Yaml {
        Yaml::String(s.to_string())
    }

    /// Compiles `mods` + `values` against `process.command_line` and tests `text`.
    fn check(mods: &str, values: &[Yaml], text: &str) -> Result<bool, String> {
        let mods: Vec<String> = if mods.is_empty() {
            vec![]
        } else {
            mods.split('|').map(str::to_string).collect()
        };
        let fields = vec![
            FieldRef::parse("process.command_line").expect("f"),
            FieldRef::parse("process.executable").expect("f"),
        ];
        let ph: BTreeMap<String, Vec<String>> = [
            (
                "admins".to_string(),
                vec!["root".to_string(), "adm*".to_string()],
            ),
            ("empty".to_string(), vec![]),
        ]
        .into_iter()
        .collect();
        let mut resolve = |n: &str| match n {
            "Image" => Ok(1),
            other => Err(Reason::invalid(other, "unknown")),
        };
        let mut env = ItemEnv {
            placeholders: &ph,
            resolve_field: &mut resolve,
        };
        let item = compile_item("CommandLine", 0, false, &mods, values, &mut env)
            .map_err(|e| e.to_string())?;
        let mut ev = Event::new(Kind::ProcessExec, Timestamp::from_secs(1_700_000_000));
        if !text.is_empty() {
            fields[0].set(&mut ev, text).map_err(|e| e.to_string())?;
        }
        fields[1]
            .set(&mut ev, "/usr/bin/Curl")
            .map_err(|e| e.to_string())?;
        let mut sc = Scratch::default();
        sc.begin(fields.len());
        Ok(item.eval(&ev, &fields, &mut sc))
    }

    #[test]
    fn modifier_table() {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        // (modifiers, values, field text, expected)
        let t0: String = b64("hello");
        let t1: String = format!("x {} y", b64("hello"));
        let t2: String = b64("xhttp://evil");
        let t3: String = b64("xyhttp://evil");
        let t4: String = b64("http://evil");
        let t5: String = b64("ftp://evil");
        let t6: String = base64::engine::general_purpose::STANDARD.encode(b"x\0c\0m\0d\0");
        let t7: String = base64::engine::general_purpose::STANDARD.encode(b"c\0m\0d\0");
        let t8: String = base64::engine::general_purpose::STANDARD.encode(b"\0c\0m\0d");
        let t9: String = base64::engine::general_purpose::STANDARD.encode(b"\xff\xfec\0m\0d\0");
        let cases: Vec<(&str, Vec<Yaml>, &str, bool)> = vec![
            ("", vec![y("curl -X")], "CURL -x", true), // case-insensitive by default
            ("", vec![y("curl")], "curl -X", false),   // plain value = whole field
            ("contains", vec![y("-X")], "curl -x post", true),
            ("startswith", vec![y("cur")], "curl", true),
            ("startswith", vec![y("url")], "curl", false),
            ("endswith", vec![y("/bash")], "/usr/bin/BASH", true),
            ("endswith", vec![y("/bash")], "/usr/bin/bash5", false),
            ("contains|all", vec![y("a"), y("b")], "xaxbx", true),
            ("contains|all", vec![y("a"), y("b")], "xaxx", false),
            ("contains", vec![y("a"), y("b")], "xbx", true),
            ("cased", vec![y("Curl")], "curl", false),
            ("cased", vec![y("Curl")], "Curl", true),
            ("contains|cased", vec![y("X")], "curl -X", true),
            ("contains|cased", vec![y("X")], "curl -x", false),
            ("re", vec![y(r"\s-[FTd]\s")], "curl -F x", true),
            ("re", vec![y(r"\s-[FTd]\s")], "curl -f x", false), // re is case-sensitive
            ("re|i", vec![y(r"\s-[FTd]\s")], "curl -f x", true),
            ("re", vec![y("^b$")], "a\nb", false),
            ("re|m", vec![y("^b$")], "a\nb", true),
            ("re", vec![y("a.b")], "a\nb", false),
            ("re|s", vec![y("a.b")], "a\nb", true),
            ("base64", vec![y("hello")], &t0, true),
            ("base64|contains", vec![y("hello")], &t1, true),
            ("base64offset|contains", vec![y("http://")], &t2, true),
            ("base64offset|contains", vec![y("http://")], &t3, true),
            ("base64offset|contains", vec![y("http://")], &t4, true),
            ("base64offset|contains", vec![y("http://")], &t5, false),
            ("utf16le|base64offset|contains", vec![y("cmd")], &t6, true),
            ("wide|base64|contains", vec![y("cmd")], &t7, true),
            ("utf16be|base64", vec![y("cmd")], &t8, true),
            ("utf16|base64", vec![y("cmd")], &t9, true),
            ("utf16le|contains", vec![y("ab")], "xa\0b\0", true),
            ("windash|contains", vec![y(" -f ")], "run /f now", true),
            (
                "windash|contains",
                vec![y(" -f ")],
                "run \u{2013}f now",
                true,
            ),
            ("windash|contains", vec![y(" -f ")], "run +f now", false),
            ("contains|windash", vec![y("-a-b")], "x/a\u{2015}b", true),
            ("cidr", vec![y("10.0.0.0/8")], "10.20.30.40", true),
            ("cidr", vec![y("10.0.0.0/8")], "11.0.0.1", false),
            ("cidr", vec![y("fe80::/10")], "fe80::1", true),
            ("cidr", vec![y("fc00::/7")], "fd12::1", true),
            ("cidr", vec![y("fc00::/7")], "fe80::1", false),
            ("cidr", vec![y("::1/128")], "::1", true),
            ("cidr", vec![y("0.0.0.0/0")], "8.8.8.8", true),
            ("cidr", vec![y("10.0.0.0/8")], "not-an-ip", false),
            ("lt", vec![Yaml::Integer(10)], "9", true),
            ("lt", vec![Yaml::Integer(10)], "10", false),
            ("lte", vec![Yaml::Integer(10)], "10", true),
            ("gt", vec![Yaml::Real("1.5".into())], "2", true),
            ("gte", vec![Yaml::Integer(10)], "9", false),
            ("gte", vec![Yaml::Integer(10)], "abc", false),
            ("neq", vec![y("a"), y("b")], "c", true),
            ("neq", vec![y("a"), y("b")], "A", false),
            ("neq", vec![y("a")], "", false), // a missing field is not "different"
            ("neq", vec![Yaml::Integer(5)], "6", true),
            ("exists", vec![Yaml::Boolean(true)], "x", true),
            ("exists", vec![Yaml::Boolean(true)], "", false),
            ("exists", vec![Yaml::Boolean(false)], "", true),
            ("", vec![Yaml::Null], "", true),
            ("", vec![Yaml::Null], "x", false),
            ("", vec![y("")], "", true),
            ("", vec![Yaml::Integer(4444)], "4444", true),
            ("", vec![Yaml::Boolean(true)], "TRUE", true),
            ("fieldref", vec![y("Image")], "/usr/bin/curl", true),
            ("fieldref|cased", vec![y("Image")], "/usr/bin/curl", false),
            (
                "fieldref|endswith",
                vec![y("Image")],
                "sudo /USR/bin/curl",
                true,
            ),
            ("fieldref|neq", vec![y("Image")], "/usr/bin/curl", false),
            ("fieldref|neq", vec![y("Image")], "/usr/bin/wget", true),
            (
                "fieldref|contains",
                vec![y("Image")],
                "x /usr/bin/curl y",
                true,
            ),
            ("expand", vec![y("%admins%")], "root", true),
            ("expand", vec![y("%admins%")], "admin7", true),
            ("expand", vec![y("%admins%")], "bob", false),
            ("expand", vec![y(r"\%x%admins%")], "%xroot", true),
            ("", vec![y("%admins%")], "%admins%", true), // no expand: literal
            ("all", vec![y("x")], "x", true),
        ];
        for (mods, values, text, want) in &cases {
            assert_eq!(
                check(mods, values, text),
                Ok(*want),
                "{mods} {values:?} on {text:?}"
            );
        }
    }

    #[test]
    fn time_modifiers_use_utc_parts_of_the_timestamp() {
        // 2023-11-14T22:13:20Z, ISO week 46, a Tuesday.
        let ms = 1_700_000_000_000i64;
        for (part, want) in [
            (TimePart::Minute, 13),
            (TimePart::Hour, 22),
            (TimePart::Day, 14),
            (TimePart::Week, 46),
            (TimePart::Month, 11),
            (TimePart::Year, 2023),
        ] {
            assert_eq!(part.of_millis(ms), Some(want), "{part:?}");
        }
        let fields = vec![FieldRef::parse("@timestamp").expect("f")];
        let ph = BTreeMap::new();
        let mut resolve = |_: &str| Ok(0);
        let ev = Event::new(Kind::Log, Timestamp::from_millis(ms));
        for (mods, v, want) in [
            ("hour", 22, true),
            ("hour", 21, false),
            ("hour|gte", 22, true),
            ("hour|lt", 22, false),
            ("week", 46, true),
            ("year|neq", 2023, false),
            ("month|neq", 1, true),
        ] {
            let mods: Vec<String> = mods.split('|').map(str::to_string).collect();
            let mut env = ItemEnv {
                placeholders: &ph,
                resolve_field: &mut resolve,
            };
            let item = compile_item("@timestamp", 0, false, &mods, &[Yaml::Integer(v)], &mut env)
                .expect("compile");
            let mut sc = Scratch::default();
            sc.begin(1);
            assert_eq!(item.eval(&ev, &fields, &mut sc), want, "{mods:?} {v}");
        }
    }

    #[test]
    fn modifier_errors_are_precise() {
        let cases: Vec<(&str, Vec<Yaml>, &str)> = vec![
            (
                "foo",
                vec![y("x")],
                "unknown modifier `foo` on field `CommandLine`; expected one of the sigma 2.1 modifiers",
            ),
            (
                "contains|endswith",
                vec![y("x")],
                "field `CommandLine`: modifier `contains` cannot be combined with `endswith`",
            ),
            (
                "re|contains",
                vec![y("x")],
                "field `CommandLine`: modifier `re` cannot be combined with `contains`",
            ),
            (
                "i",
                vec![y("x")],
                "field `CommandLine`: modifier `i` is a sub-modifier of `re` and needs it",
            ),
            (
                "re",
                vec![y("(x")],
                "field `CommandLine`: invalid regular expression: error: unclosed group",
            ),
            (
                "cidr",
                vec![y("10.0.0.0/33")],
                "field `CommandLine`: `cidr` needs a network such as 10.0.0.0/8 or fe80::/10, found \"10.0.0.0/33\"",
            ),
            (
                "lt",
                vec![y("ten")],
                "field `CommandLine`: `lt` needs a number, found a string",
            ),
            (
                "lt|contains",
                vec![Yaml::Integer(1)],
                "field `CommandLine`: modifier `lt` cannot be combined with `contains`",
            ),
            (
                "exists",
                vec![y("yes")],
                "field `CommandLine`: modifier `exists` needs one boolean value (true or false)",
            ),
            (
                "exists|contains",
                vec![Yaml::Boolean(true)],
                "field `CommandLine`: modifier `exists` cannot be combined with `contains`",
            ),
            (
                "base64",
                vec![y("a*")],
                "field `CommandLine`: modifier `base64` cannot encode a value holding wildcards; escape `*` and `?` with `\\`",
            ),
            (
                "expand",
                vec![y("%nope%")],
                "field `CommandLine`: placeholder %nope% has no value; provide it in the placeholder map",
            ),
            (
                "expand",
                vec![y("%empty%")],
                "field `CommandLine`: placeholder %empty% has no value; provide it in the placeholder map",
            ),
            ("fieldref", vec![y("Nope")], "field `Nope`: unknown"),
            (
                "contains|contains",
                vec![y("x")],
                "field `CommandLine`: modifier `contains` is given twice",
            ),
            (
                "",
                vec![],
                "field `CommandLine`: expected at least one value, found an empty list",
            ),
            (
                "contains",
                vec![Yaml::Null],
                "field `CommandLine`: a null value cannot take modifier `contains`",
            ),
            (
                "neq|gt",
                vec![Yaml::Integer(1)],
                "field `CommandLine`: modifier `neq` cannot be combined with `gt`",
            ),
        ];
        for (mods, values, want) in cases {
            assert_eq!(check(mods, &values, "x"), Err(want.to_string()), "{mods}");
        }
    }

    #[test]
    fn wildcards_and_escapes() {
        // (sigma value, text, expected)
        let cases: &[(&str, &str, bool)] = &[
            ("a*c", "abbbc", true),
            ("a*c", "abbbd", false),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("a?c", "aéc", true),
            (r"a\*c", "a*c", true),
            (r"a\*c", "abc", false),
            (r"a\?c", "a?c", true),
            (r"a\?c", "abc", false),
            (r"a\\*", r"a\xyz", true), // escaped backslash, then a wildcard
            (r"a\\*", "axyz", false),
            (r"a\\\*", r"a\*", true), // backslash and star both plain
            (r"a\\\*", r"a\x", false),
            (r"C:\Windows", r"c:\windows", true), // plain backslash
            (r"a\\\\b", r"a\\b", true),
            ("*", "anything", true),
            ("*.sh", "x.sh", true),
            ("a*b*c", "a_b_b_c", true),
            ("a*b*c", "a_c_b", false),
            ("/home/*/.bashrc", "/home/bob/.bashrc", true),
            ("/home/*/.bashrc", "/root/.bashrc", false),
        ];
        for (pat, text, want) in cases {
            assert_eq!(check("", &[y(pat)], text), Ok(*want), "{pat} on {text}");
        }
        assert_eq!(
            parse_sigma_string(r"a\\*b\?"),
            vec![Tok::Lit(r"a\".into()), Tok::Star, Tok::Lit("b?".into())]
        );
    }

    #[test]
    fn keyword_items_search_substrings() {
        let fields = vec![FieldRef::parse("message").expect("f")];
        let ph = BTreeMap::new();
        let mut resolve = |_: &str| Ok(0);
        let mut env = ItemEnv {
            placeholders: &ph,
            resolve_field: &mut resolve,
        };
        let item = compile_item("keywords", 0, true, &[], &[y("Trojan*FOUND")], &mut env)
            .expect("compile");
        let mut ev = Event::new(Kind::Log, Timestamp(0));
        ev.message = "clamd: /tmp/x: Trojan.Gen FOUND here".into();
        let mut sc = Scratch::default();
        sc.begin(1);
        assert!(item.eval(&ev, &fields, &mut sc));
    }

    #[test]
    fn base64offset_matches_pysigma_vectors() {
        // pySigma's documented example: base64offset of "/bin/bash".
        assert_eq!(
            base64_offsets(b"/bin/bash"),
            vec!["L2Jpbi9iYXNo", "9iaW4vYmFza", "vYmluL2Jhc2"]
        );
    }
}

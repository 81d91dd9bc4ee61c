//! The query language: a Lucene/KQL-like subset, parsed into a closed AST.
//!
//! Pure code: no RocksDB, no IO, no clock. [`Query::matches`] is the single
//! source of truth for what a query means; the store's index only narrows the
//! events it has to check (see `exec`), so a search gives the same answer with
//! or without the index.
//!
//! # Syntax
//!
//! | form | meaning |
//! | --- | --- |
//! | `failed` | a token of `message` (case-insensitive); tokens are runs of letters, digits and `_` |
//! | `10.0.0.5` | several tokens in one bare word are a phrase: consecutive tokens of `message` |
//! | `"failed password"` | a phrase: consecutive tokens of `message` |
//! | `fail*`, `*pass*` | a token of `message` matching the wildcard; with other characters (`10.0.*`) the wildcard pattern is searched anywhere in `message` |
//! | `field:value` | exact, case-insensitive for strings; numbers compare numerically; IP fields take an address or a CIDR (`source.ip:10.0.0.0/8`); `@timestamp` takes RFC 3339 or epoch milliseconds; `log.level` accepts aliases (`warn`, `err`) |
//! | `field:"a phrase"` | exact value with spaces (a phrase of `message` for `message:`) |
//! | `field:val*`, `field:*val*` | wildcard on the value's text, case-insensitive |
//! | `field:[a TO b]`, `{a TO b}` | inclusive / exclusive range; `*` leaves a side open |
//! | `field>N`, `>=`, `<`, `<=` (also `field:>N`) | comparisons |
//! | `_exists_:field`, `field:*` | the field is set |
//! | `a AND b`, `a b` | both (adjacent terms are joined by AND); `&&` also works |
//! | `a OR b` | either; `\|\|` also works |
//! | `NOT a`, `-a` | negation |
//! | `( … )` | grouping |
//!
//! Precedence: `NOT` binds tighter than `AND`, which binds tighter than `OR`.
//! `\` escapes the next character in a word (`\*`, `\:`, `\(`). Field names are
//! the dotted ECS paths of `Event::visit_fields` (`FIELD_PATHS`) plus
//! `labels.<key>`; an unknown name is refused with the closest known one.
//! The empty query and `*` match every event.

use std::cell::OnceCell;
use std::cmp::Ordering;
use std::fmt;
use std::net::IpAddr;

use thiserror::Error;
use vigie_proto::event::{Event, FIELD_PATHS, FieldValue};
use vigie_proto::{Severity, Timestamp};

/// Longest term kept whole in the index, in bytes; longer tokens and values are
/// indexed by their first bytes and confirmed against the event. Do not change:
/// stored postings use it.
pub(crate) const MAX_TERM_BYTES: usize = 64;

/// A query that does not parse: where, and what was expected.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[error("{message} at {offset}{}", hint.as_ref().map(|h| format!(" ({h})")).unwrap_or_default())]
pub struct QueryError {
    /// Byte offset in the query text.
    pub offset: usize,
    pub message: String,
    pub hint: Option<String>,
}

impl QueryError {
    fn new(offset: usize, message: impl Into<String>) -> Self {
        QueryError {
            offset,
            message: message.into(),
            hint: None,
        }
    }
    fn hint(mut self, h: impl Into<String>) -> Self {
        self.hint = Some(h.into());
        self
    }
}

/// How values of a field compare.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldType {
    /// Tokenized text (`message`).
    Text,
    /// Keyword: exact, case-insensitive.
    Str,
    Int,
    Float,
    Ip,
    /// `@timestamp`, visited as epoch milliseconds.
    Timestamp,
}

/// The type of a known field path, `None` for an unknown one.
pub fn field_type(path: &str) -> Option<FieldType> {
    if let Some(key) = path.strip_prefix("labels.") {
        return (!key.is_empty()).then_some(FieldType::Str);
    }
    if !FIELD_PATHS.contains(&path) {
        return None;
    }
    Some(match path {
        "message" => FieldType::Text,
        "@timestamp" => FieldType::Timestamp,
        "host.ip" | "source.ip" | "destination.ip" => FieldType::Ip,
        "system.cpu.pct" | "system.load.1" | "system.load.5" | "system.load.15" => FieldType::Float,
        "log.syslog.facility.code"
        | "log.syslog.priority"
        | "process.pid"
        | "process.exit_code"
        | "process.user.id"
        | "process.parent.pid"
        | "user.id"
        | "user.target.id"
        | "user.effective.id"
        | "source.port"
        | "destination.port"
        | "file.size"
        | "vigie.command.exit_code" => FieldType::Int,
        p if (p.starts_with("system.") || p.starts_with("vigie.health."))
            && p != "vigie.health.new_epoch_reason" =>
        {
            FieldType::Int
        }
        _ => FieldType::Str,
    })
}

// ---------------------------------------------------------------------------
// Tokens

/// Appends each lowercased token of `text` to `buf` after its first `keep`
/// bytes and calls `f` with the whole buffer: tokens are maximal runs of
/// letters, digits and `_`. This is the one tokenizer of the index and the queries.
pub(crate) fn for_each_token_bytes(
    text: &str,
    buf: &mut Vec<u8>,
    keep: usize,
    mut f: impl FnMut(&[u8]),
) {
    buf.truncate(keep);
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b < 0x80 {
            i += 1;
            if b.is_ascii_alphanumeric() || b == b'_' {
                buf.push(b.to_ascii_lowercase());
                continue;
            }
        } else {
            let c = text[i..].chars().next().unwrap_or(' ');
            i += c.len_utf8();
            if c.is_alphanumeric() {
                let mut tmp = [0u8; 4];
                for l in c.to_lowercase() {
                    buf.extend_from_slice(l.encode_utf8(&mut tmp).as_bytes());
                }
                continue;
            }
        }
        if buf.len() > keep {
            f(buf);
            buf.truncate(keep);
        }
    }
    if buf.len() > keep {
        f(buf);
        buf.truncate(keep);
    }
}

/// Calls `f` with each lowercased token of `text` (see [`for_each_token_bytes`]).
pub(crate) fn for_each_token(text: &str, mut f: impl FnMut(&str)) {
    let mut buf = Vec::new();
    for_each_token_bytes(text, &mut buf, 0, |t| {
        if let Ok(s) = std::str::from_utf8(t) {
            f(s)
        }
    });
}

pub(crate) fn tokens(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for_each_token(text, |t| out.push(t.to_string()));
    out
}

/// The message as `" tok1 tok2 … "`: token and phrase matches are substring tests on it.
fn normalize(text: &str) -> String {
    let mut out = Vec::with_capacity(text.len() + 2);
    out.push(b' ');
    let mut buf = Vec::new();
    for_each_token_bytes(text, &mut buf, 0, |t| {
        out.extend_from_slice(t);
        out.push(b' ');
    });
    String::from_utf8(out).unwrap_or_default()
}

fn is_token_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Char-wise lowercase (never the context-dependent final sigma of `str::to_lowercase`),
/// used by both the index and the matcher.
pub(crate) fn lower(s: &str) -> String {
    if s.is_ascii() {
        return s.to_ascii_lowercase();
    }
    s.chars().flat_map(char::to_lowercase).collect()
}

fn eq_lower(value: &str, lowered: &str) -> bool {
    if value.is_ascii() {
        return value.len() == lowered.len()
            && value
                .bytes()
                .zip(lowered.bytes())
                .all(|(a, b)| a.to_ascii_lowercase() == b);
    }
    value
        .chars()
        .flat_map(char::to_lowercase)
        .eq(lowered.chars())
}

/// The form a token or value takes in the index: itself when short, else its
/// first bytes and a marker (`exact` = false: candidates must be confirmed).
pub(crate) fn index_form(s: &str) -> (&str, bool) {
    if s.len() <= MAX_TERM_BYTES {
        return (s, true);
    }
    let mut cut = MAX_TERM_BYTES;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    (&s[..cut], false)
}

/// [`index_form`] on the UTF-8 bytes of a token.
pub(crate) fn index_form_bytes(s: &[u8]) -> (&[u8], bool) {
    if s.len() <= MAX_TERM_BYTES {
        return (s, true);
    }
    let mut cut = MAX_TERM_BYTES;
    while cut > 0 && (s[cut] & 0xC0) == 0x80 {
        cut -= 1;
    }
    (&s[..cut], false)
}

/// Marker appended to a cut term.
pub(crate) const CUT_MARK: u8 = 0x01;

// ---------------------------------------------------------------------------
// Wildcards

/// A `*` wildcard pattern over lowercased text.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Glob {
    /// Literal pieces between the stars, lowercased.
    pub parts: Vec<String>,
    pub anchored_start: bool,
    pub anchored_end: bool,
}

impl Glob {
    fn new(pieces: &[String], stars_before: bool, stars_after: bool) -> Glob {
        Glob {
            parts: pieces
                .iter()
                .filter(|p| !p.is_empty())
                .map(|p| lower(p))
                .collect(),
            anchored_start: !stars_before,
            anchored_end: !stars_after,
        }
    }

    /// `Some(prefix)` when the pattern is `prefix*`.
    pub fn prefix(&self) -> Option<&str> {
        (self.anchored_start && !self.anchored_end && self.parts.len() == 1)
            .then(|| self.parts[0].as_str())
    }

    fn is_match_all(&self) -> bool {
        self.parts.is_empty()
    }

    /// Matches lowercased text.
    pub fn matches(&self, s: &str) -> bool {
        if self.parts.is_empty() {
            return true;
        }
        let mut rest = s;
        let n = self.parts.len();
        for (i, p) in self.parts.iter().enumerate() {
            let first = i == 0;
            let last = i == n - 1;
            if first && self.anchored_start {
                if !rest.starts_with(p.as_str()) {
                    return false;
                }
                rest = &rest[p.len()..];
                if last && self.anchored_end {
                    return rest.is_empty();
                }
                continue;
            }
            if last && self.anchored_end {
                return rest.ends_with(p.as_str());
            }
            match rest.find(p.as_str()) {
                Some(at) => rest = &rest[at + p.len()..],
                None => return false,
            }
        }
        true
    }
}

impl fmt::Display for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.anchored_start {
            f.write_str("*")?;
        }
        f.write_str(&self.parts.join("*"))?;
        if !self.anchored_end && !self.parts.is_empty() {
            f.write_str("*")?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// AST

/// A number from a query: integers stay exact.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Num {
    I(i64),
    F(f64),
}

impl Num {
    fn parse(s: &str) -> Option<Num> {
        if let Ok(i) = s.parse::<i64>() {
            return Some(Num::I(i));
        }
        let f: f64 = s.parse().ok()?;
        if !f.is_finite() {
            return None;
        }
        // Integral floats that an f64 holds exactly compare like integers.
        if f.fract() == 0.0 && f.abs() < 9_007_199_254_740_992.0 {
            return Some(Num::I(f as i64));
        }
        Some(Num::F(f))
    }
    fn as_f64(self) -> f64 {
        match self {
            Num::I(i) => i as f64,
            Num::F(f) => f,
        }
    }
    fn cmp_int(self, v: i64) -> Option<Ordering> {
        match self {
            Num::I(b) => Some(v.cmp(&b)),
            Num::F(b) => (v as f64).partial_cmp(&b),
        }
    }
    fn cmp_float(self, v: f64) -> Option<Ordering> {
        v.partial_cmp(&self.as_f64())
    }
}

/// The right-hand side of `field:value`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum EqValue {
    /// Lowercased keyword.
    Str(String),
    Num(Num),
    Ip(IpAddr),
    Cidr(IpAddr, u8),
}

/// A range bound value.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Val {
    Str(String),
    Num(Num),
    Ip(IpAddr),
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Bound {
    Open,
    Incl(Val),
    Excl(Val),
}

/// One leaf of a query.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Pred {
    /// Consecutive tokens of `message`; `needle` is `" t1 t2 "`.
    Text {
        tokens: Vec<String>,
        needle: String,
    },
    /// A token of `message` matching a wildcard.
    TextGlob {
        glob: Glob,
    },
    /// A wildcard pattern anywhere in the lowercased `message`.
    MessageGlob {
        glob: Glob,
    },
    Eq {
        field: String,
        value: EqValue,
    },
    Glob {
        field: String,
        glob: Glob,
    },
    Range {
        field: String,
        lo: Bound,
        hi: Bound,
    },
    Exists {
        field: String,
    },
}

impl Pred {
    /// The field this leaf reads.
    pub fn field(&self) -> &str {
        match self {
            Pred::Text { .. } | Pred::TextGlob { .. } | Pred::MessageGlob { .. } => "message",
            Pred::Eq { field, .. }
            | Pred::Glob { field, .. }
            | Pred::Range { field, .. }
            | Pred::Exists { field } => field,
        }
    }

    /// Whether one value of the leaf's field satisfies it (for the field-value
    /// leaves; message leaves go through [`Pred::matches`]). The index evaluates
    /// column fields through this function, so it is the same semantics as `matches`.
    pub fn match_value(&self, v: FieldValue<'_>) -> bool {
        match self {
            Pred::Exists { .. } => true,
            Pred::Eq { value, .. } => eq_value(value, v),
            Pred::Glob { glob, .. } => match v {
                FieldValue::Str(s) => {
                    if s.is_ascii() && glob.parts.iter().all(|p| p.is_ascii()) {
                        glob.matches(&s.to_ascii_lowercase())
                    } else {
                        glob.matches(&lower(s))
                    }
                }
                other => glob.matches(&lower(&other.to_text())),
            },
            Pred::Range { lo, hi, .. } => {
                let lo_ok = match lo {
                    Bound::Open => true,
                    Bound::Incl(b) => {
                        matches!(cmp_value(v, b), Some(Ordering::Greater | Ordering::Equal))
                    }
                    Bound::Excl(b) => matches!(cmp_value(v, b), Some(Ordering::Greater)),
                };
                lo_ok
                    && match hi {
                        Bound::Open => true,
                        Bound::Incl(b) => {
                            matches!(cmp_value(v, b), Some(Ordering::Less | Ordering::Equal))
                        }
                        Bound::Excl(b) => matches!(cmp_value(v, b), Some(Ordering::Less)),
                    }
            }
            Pred::Text { needle, .. } => match v {
                FieldValue::Str(s) => normalize(s).contains(needle.as_str()),
                _ => false,
            },
            Pred::TextGlob { glob } => match v {
                FieldValue::Str(s) => token_glob(&normalize(s), glob),
                _ => false,
            },
            Pred::MessageGlob { glob } => match v {
                FieldValue::Str(s) => glob.matches(&lower(s)),
                _ => false,
            },
        }
    }

    fn matches(&self, cx: &MatchCx<'_>) -> bool {
        match self {
            Pred::Text { needle, .. } => {
                !cx.e.message.is_empty() && cx.norm().contains(needle.as_str())
            }
            Pred::TextGlob { glob } => !cx.e.message.is_empty() && token_glob(cx.norm(), glob),
            Pred::MessageGlob { glob } => {
                !cx.e.message.is_empty() && glob.matches(&lower(&cx.e.message))
            }
            _ => {
                let field = self.field();
                if field == "message" {
                    return !cx.e.message.is_empty()
                        && self.match_value(FieldValue::Str(&cx.e.message));
                }
                let mut found = false;
                cx.e.visit_fields(&mut |p, v| {
                    if !found && p == field && self.match_value(v) {
                        found = true;
                    }
                });
                found
            }
        }
    }
}

fn token_glob(norm: &str, glob: &Glob) -> bool {
    if glob.is_match_all() {
        return norm.len() > 1;
    }
    // Fast paths: the pieces hold only token characters, so a substring hit stays inside one token.
    if glob.parts.len() == 1 {
        let p = &glob.parts[0];
        return match (glob.anchored_start, glob.anchored_end) {
            (true, false) => norm.contains(&format!(" {p}")),
            (false, true) => norm.contains(&format!("{p} ")),
            (false, false) => norm.contains(p.as_str()),
            (true, true) => norm.contains(&format!(" {p} ")),
        };
    }
    norm.split(' ')
        .filter(|t| !t.is_empty())
        .any(|t| glob.matches(t))
}

fn eq_value(want: &EqValue, v: FieldValue<'_>) -> bool {
    match (want, v) {
        (EqValue::Str(w), FieldValue::Str(s)) => eq_lower(s, w),
        (EqValue::Str(w), other) => eq_lower(&other.to_text(), w),
        (EqValue::Num(n), FieldValue::Int(i)) => n.cmp_int(i) == Some(Ordering::Equal),
        (EqValue::Num(n), FieldValue::Float(f)) => n.cmp_float(f) == Some(Ordering::Equal),
        (EqValue::Num(n), FieldValue::Str(s)) => {
            Num::parse(s).is_some_and(|m| m.as_f64() == n.as_f64())
        }
        (EqValue::Ip(a), FieldValue::Ip(b)) => *a == b,
        (EqValue::Ip(a), FieldValue::Str(s)) => s.parse::<IpAddr>().is_ok_and(|b| b == *a),
        (EqValue::Cidr(net, len), FieldValue::Ip(b)) => cidr_contains(*net, *len, b),
        (EqValue::Cidr(net, len), FieldValue::Str(s)) => s
            .parse::<IpAddr>()
            .is_ok_and(|b| cidr_contains(*net, *len, b)),
        _ => false,
    }
}

fn cmp_value(v: FieldValue<'_>, b: &Val) -> Option<Ordering> {
    match (v, b) {
        (FieldValue::Int(i), Val::Num(n)) => n.cmp_int(i),
        (FieldValue::Float(f), Val::Num(n)) => n.cmp_float(f),
        (FieldValue::Str(s), Val::Str(w)) => Some(cmp_lower(s, w)),
        (FieldValue::Str(s), Val::Num(n)) => {
            Num::parse(s).and_then(|m| m.as_f64().partial_cmp(&n.as_f64()))
        }
        (FieldValue::Ip(a), Val::Ip(b)) => Some(a.cmp(b)),
        (other, Val::Str(w)) => Some(cmp_lower(&other.to_text(), w)),
        _ => None,
    }
}

fn cmp_lower(value: &str, lowered: &str) -> Ordering {
    value
        .chars()
        .flat_map(char::to_lowercase)
        .cmp(lowered.chars())
}

pub(crate) fn cidr_contains(net: IpAddr, len: u8, ip: IpAddr) -> bool {
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(a)) => {
            let mask = if len == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(len))
            };
            (u32::from(n) & mask) == (u32::from(a) & mask)
        }
        (IpAddr::V6(n), IpAddr::V6(a)) => {
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(len))
            };
            (u128::from(n) & mask) == (u128::from(a) & mask)
        }
        _ => false,
    }
}

/// The boolean structure of a query.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Node {
    All,
    And(Vec<Node>),
    Or(Vec<Node>),
    Not(Box<Node>),
    Pred(Pred),
}

impl Node {
    fn eval(&self, cx: &MatchCx<'_>) -> bool {
        match self {
            Node::All => true,
            Node::And(v) => v.iter().all(|n| n.eval(cx)),
            Node::Or(v) => v.iter().any(|n| n.eval(cx)),
            Node::Not(n) => !n.eval(cx),
            Node::Pred(p) => p.matches(cx),
        }
    }

    pub fn visit_preds<'a>(&'a self, f: &mut dyn FnMut(&'a Pred)) {
        match self {
            Node::All => {}
            Node::And(v) | Node::Or(v) => v.iter().for_each(|n| n.visit_preds(f)),
            Node::Not(n) => n.visit_preds(f),
            Node::Pred(p) => f(p),
        }
    }
}

struct MatchCx<'e> {
    e: &'e Event,
    norm: OnceCell<String>,
}

impl MatchCx<'_> {
    fn norm(&self) -> &str {
        self.norm.get_or_init(|| normalize(&self.e.message))
    }
}

/// A parsed query. See the module documentation for the syntax.
#[derive(Clone, Debug, PartialEq)]
pub struct Query {
    pub(crate) root: Node,
    text: String,
}

impl Query {
    /// The query that matches every event.
    pub fn all() -> Query {
        Query {
            root: Node::All,
            text: String::new(),
        }
    }

    /// Parses a query; errors say where and what was expected.
    pub fn parse(s: &str) -> Result<Query, QueryError> {
        let mut p = Parser { s, pos: 0 };
        p.skip_ws();
        if p.at_end() {
            return Ok(Query::all());
        }
        let root = p.parse_or()?;
        p.skip_ws();
        if !p.at_end() {
            // Only a stray ")" can stop the top level early.
            return Err(QueryError::new(p.pos, "unexpected \")\"")
                .hint("remove it or add the matching \"(\""));
        }
        Ok(Query {
            root,
            text: s.to_string(),
        })
    }

    /// Whether `e` matches. This is the meaning of the query; the index only accelerates it.
    pub fn matches(&self, e: &Event) -> bool {
        let cx = MatchCx {
            e,
            norm: OnceCell::new(),
        };
        self.root.eval(&cx)
    }

    /// Whether this query matches everything.
    pub fn is_all(&self) -> bool {
        self.root == Node::All
    }

    /// The query text it was parsed from.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Every field a leaf reads.
    pub fn fields(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        self.root.visit_preds(&mut |p| {
            if !out.iter().any(|f| f == p.field()) {
                out.push(p.field().to_string());
            }
        });
        out
    }
}

impl fmt::Display for Query {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

// ---------------------------------------------------------------------------
// Parser

struct Parser<'a> {
    s: &'a str,
    pos: usize,
}

/// A word read from the query: its literal pieces between unescaped `*`.
struct Word {
    start: usize,
    raw: String,
    pieces: Vec<String>,
    stars: bool,
}

impl Word {
    fn text(&self) -> String {
        self.pieces.concat()
    }
    fn glob(&self) -> Glob {
        // A star sits between consecutive pieces; the first and last pieces tell about the ends.
        let before = self.pieces.first().is_some_and(|p| p.is_empty());
        let after = self.pieces.last().is_some_and(|p| p.is_empty());
        Glob::new(&self.pieces, before, after)
    }
}

fn is_field_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '@' | '.' | '-')
}

impl<'a> Parser<'a> {
    fn rest(&self) -> &'a str {
        &self.s[self.pos..]
    }
    fn at_end(&self) -> bool {
        self.pos >= self.s.len()
    }
    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }
    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }
    fn skip_ws(&mut self) {
        while let Some(c) = self.peek() {
            if !c.is_whitespace() {
                break;
            }
            self.pos += c.len_utf8();
        }
    }

    /// The operator keyword at the cursor, if any: `AND`, `OR`, `NOT`, `&&`, `||`.
    fn keyword(&self) -> Option<(&'static str, usize)> {
        let r = self.rest();
        for (kw, name) in [
            ("AND", "AND"),
            ("OR", "OR"),
            ("NOT", "NOT"),
            ("&&", "AND"),
            ("||", "OR"),
        ] {
            if let Some(after) = r.strip_prefix(kw) {
                let ok = after.is_empty()
                    || after.starts_with(|c: char| c.is_whitespace() || c == '(' || c == '"');
                if ok {
                    return Some((name, kw.len()));
                }
            }
        }
        None
    }

    fn parse_or(&mut self) -> Result<Node, QueryError> {
        let mut items = vec![self.parse_and()?];
        loop {
            self.skip_ws();
            match self.keyword() {
                Some(("OR", n)) => {
                    let at = self.pos;
                    self.pos += n;
                    self.skip_ws();
                    if self.at_end() || self.peek() == Some(')') {
                        return Err(QueryError::new(
                            self.pos,
                            "expected a search term after \"OR\"",
                        )
                        .hint(format!("\"OR\" is at {at}")));
                    }
                    items.push(self.parse_and()?);
                }
                _ => break,
            }
        }
        Ok(if items.len() == 1 {
            items.pop().unwrap_or(Node::All)
        } else {
            flatten(Node::Or(items))
        })
    }

    fn parse_and(&mut self) -> Result<Node, QueryError> {
        let mut items = vec![self.parse_unary()?];
        loop {
            self.skip_ws();
            if self.at_end() || self.peek() == Some(')') {
                break;
            }
            match self.keyword() {
                Some(("OR", _)) => break,
                Some(("AND", n)) => {
                    let at = self.pos;
                    self.pos += n;
                    self.skip_ws();
                    if self.at_end() || self.peek() == Some(')') {
                        return Err(QueryError::new(
                            self.pos,
                            "expected a search term after \"AND\"",
                        )
                        .hint(format!("\"AND\" is at {at}")));
                    }
                    if let Some((kw @ ("AND" | "OR"), _)) = self.keyword() {
                        return Err(QueryError::new(
                            self.pos,
                            format!("expected a search term after \"AND\", found \"{kw}\""),
                        ));
                    }
                }
                _ => {}
            }
            items.push(self.parse_unary()?);
        }
        Ok(if items.len() == 1 {
            items.pop().unwrap_or(Node::All)
        } else {
            flatten(Node::And(items))
        })
    }

    fn parse_unary(&mut self) -> Result<Node, QueryError> {
        self.skip_ws();
        if let Some(("NOT", n)) = self.keyword() {
            self.pos += n;
            self.skip_ws();
            if self.at_end() || self.peek() == Some(')') {
                return Err(QueryError::new(
                    self.pos,
                    "expected a search term after \"NOT\"",
                ));
            }
            return Ok(negate(self.parse_unary()?));
        }
        let r = self.rest();
        if (r.starts_with('-') || r.starts_with('!'))
            && r[1..].starts_with(|c: char| !c.is_whitespace() && c != ')')
        {
            self.pos += 1;
            return Ok(negate(self.parse_unary()?));
        }
        if r.starts_with('+') && r[1..].starts_with(|c: char| !c.is_whitespace() && c != ')') {
            self.pos += 1;
        }
        self.parse_primary()
    }

    fn parse_primary(&mut self) -> Result<Node, QueryError> {
        self.skip_ws();
        let start = self.pos;
        match self.peek() {
            None => Err(QueryError::new(start, "expected a search term")),
            Some('(') => {
                self.pos += 1;
                self.skip_ws();
                if self.peek() == Some(')') {
                    return Err(QueryError::new(
                        self.pos,
                        "expected a search term inside \"( )\"",
                    ));
                }
                let inner = self.parse_or()?;
                self.skip_ws();
                if self.peek() != Some(')') {
                    return Err(QueryError::new(self.pos, "expected \")\"")
                        .hint(format!("to close the \"(\" at {start}")));
                }
                self.pos += 1;
                Ok(inner)
            }
            Some(')') => Err(QueryError::new(start, "unexpected \")\"")
                .hint("remove it or add the matching \"(\"")),
            Some('"') => {
                let text = self.parse_quoted()?;
                text_pred(&text, start).map(Node::Pred)
            }
            Some(_) => {
                if let Some((kw, _)) = self.keyword() {
                    return Err(QueryError::new(
                        start,
                        format!("expected a search term before \"{kw}\""),
                    ));
                }
                self.parse_term()
            }
        }
    }

    /// Reads `"…"` (the cursor is on the opening quote); `\"` and `\\` escape.
    fn parse_quoted(&mut self) -> Result<String, QueryError> {
        let start = self.pos;
        self.pos += 1;
        let mut out = String::new();
        loop {
            match self.bump() {
                None => {
                    return Err(QueryError::new(
                        start,
                        "expected a closing quote for the phrase starting",
                    ));
                }
                Some('"') => return Ok(out),
                Some('\\') => match self.bump() {
                    Some(c) => out.push(c),
                    None => {
                        return Err(QueryError::new(
                            start,
                            "expected a closing quote for the phrase starting",
                        ));
                    }
                },
                Some(c) => out.push(c),
            }
        }
    }

    /// Reads a word up to whitespace, `(`, `)` or `"`; `stop_colon` also stops before `:`.
    fn read_word(&mut self, extra_stop: &[char]) -> Word {
        let start = self.pos;
        let mut pieces = vec![String::new()];
        let mut stars = false;
        while let Some(c) = self.peek() {
            if c.is_whitespace() || c == '(' || c == ')' || c == '"' || extra_stop.contains(&c) {
                break;
            }
            self.pos += c.len_utf8();
            if c == '\\' {
                if let Some(n) = self.bump()
                    && let Some(p) = pieces.last_mut()
                {
                    p.push(n);
                }
                continue;
            }
            if c == '*' {
                stars = true;
                pieces.push(String::new());
                continue;
            }
            if let Some(p) = pieces.last_mut() {
                p.push(c);
            }
        }
        Word {
            start,
            raw: self.s[start..self.pos].to_string(),
            pieces,
            stars,
        }
    }

    /// A term that is not a parenthesis or a bare phrase: `field:…`, `field>…` or a bare word.
    fn parse_term(&mut self) -> Result<Node, QueryError> {
        let start = self.pos;
        // A field name followed by ':' or a comparison operator.
        let name_len = self
            .rest()
            .find(|c: char| !is_field_char(c))
            .unwrap_or(self.rest().len());
        let name = &self.rest()[..name_len];
        let after = &self.rest()[name_len..];
        let looks_like_field = name_len > 0
            && name.chars().any(|c| c.is_ascii_alphabetic() || c == '@')
            && (after.starts_with(':') || after.starts_with('>') || after.starts_with('<'));
        if !looks_like_field {
            let w = self.read_word(&[]);
            return bare_word(&w).map(Node::Pred);
        }
        let name = name.to_string();
        self.pos += name_len;
        if name == "_exists_" {
            if !self.rest().starts_with(':') {
                return Err(QueryError::new(
                    self.pos,
                    "expected \":\" and a field name after \"_exists_\"",
                ));
            }
            self.pos += 1;
            let fstart = self.pos;
            let w = self.read_word(&[]);
            if w.raw.is_empty() {
                return Err(QueryError::new(
                    fstart,
                    "expected a field name after \"_exists_:\"",
                ));
            }
            let field = w.text();
            check_field(&field, fstart)?;
            return Ok(Node::Pred(Pred::Exists { field }));
        }
        let ty = check_field(&name, start)?;
        // Operator.
        let mut op = "";
        if self.rest().starts_with(':') {
            self.pos += 1;
        }
        for o in [">=", "<=", ">", "<"] {
            if self.rest().starts_with(o) {
                op = o;
                self.pos += o.len();
                break;
            }
        }
        let vstart = self.pos;
        let shown = &self.s[start..vstart];
        match self.peek() {
            None => {
                return Err(QueryError::new(
                    vstart,
                    format!("expected a value after \"{shown}\""),
                ));
            }
            Some(c) if c.is_whitespace() || c == ')' => {
                return Err(QueryError::new(
                    vstart,
                    format!("expected a value after \"{shown}\""),
                ));
            }
            _ => {}
        }
        if !op.is_empty() {
            let v = if self.peek() == Some('"') {
                self.parse_quoted()?
            } else {
                let w = self.read_word(&[]);
                if w.stars {
                    return Err(QueryError::new(
                        vstart,
                        format!("expected a value without \"*\" after \"{shown}\""),
                    ));
                }
                w.text()
            };
            let val = parse_val(&name, ty, &v, vstart)?;
            let (lo, hi) = match op {
                ">" => (Bound::Excl(val), Bound::Open),
                ">=" => (Bound::Incl(val), Bound::Open),
                "<" => (Bound::Open, Bound::Excl(val)),
                _ => (Bound::Open, Bound::Incl(val)),
            };
            return Ok(Node::Pred(Pred::Range {
                field: name,
                lo,
                hi,
            }));
        }
        match self.peek() {
            Some('"') => {
                let v = self.parse_quoted()?;
                if ty == FieldType::Text {
                    return text_pred(&v, vstart).map(Node::Pred);
                }
                eq_pred(&name, ty, &v, vstart).map(Node::Pred)
            }
            Some(open @ ('[' | '{')) => {
                self.pos += 1;
                let lo = self.parse_bound(&name, ty, open == '[', true)?;
                self.skip_ws();
                if !self.rest().starts_with("TO") {
                    return Err(QueryError::new(self.pos, "expected \"TO\" in the range")
                        .hint("write field:[low TO high]"));
                }
                self.pos += 2;
                let hi = self.parse_bound(&name, ty, true, false)?;
                self.skip_ws();
                let inclusive_hi = match self.peek() {
                    Some(']') => true,
                    Some('}') => false,
                    _ => {
                        return Err(QueryError::new(
                            self.pos,
                            "expected \"]\" or \"}\" to close the range",
                        ));
                    }
                };
                self.pos += 1;
                let hi = match (hi, inclusive_hi) {
                    (Bound::Incl(v), false) => Bound::Excl(v),
                    (b, _) => b,
                };
                Ok(Node::Pred(Pred::Range {
                    field: name,
                    lo,
                    hi,
                }))
            }
            _ => {
                let w = self.read_word(&[]);
                if w.raw.is_empty() {
                    return Err(QueryError::new(
                        vstart,
                        format!("expected a value after \"{shown}\""),
                    ));
                }
                if w.stars {
                    let g = w.glob();
                    if g.is_match_all() {
                        return Ok(Node::Pred(Pred::Exists { field: name }));
                    }
                    if ty == FieldType::Text {
                        return Ok(Node::Pred(message_glob(&w)));
                    }
                    return Ok(Node::Pred(Pred::Glob {
                        field: name,
                        glob: g,
                    }));
                }
                let v = w.text();
                if ty == FieldType::Text {
                    return text_pred(&v, vstart).map(Node::Pred);
                }
                eq_pred(&name, ty, &v, vstart).map(Node::Pred)
            }
        }
    }

    /// One side of a range; `*` is open. `lower_side` stops the word at "TO"-separating space.
    fn parse_bound(
        &mut self,
        name: &str,
        ty: FieldType,
        inclusive: bool,
        lower_side: bool,
    ) -> Result<Bound, QueryError> {
        self.skip_ws();
        let at = self.pos;
        let v = if self.peek() == Some('"') {
            self.parse_quoted()?
        } else {
            let w = self.read_word(&[']', '}']);
            if w.raw.is_empty() {
                let side = if lower_side { "lower" } else { "upper" };
                return Err(QueryError::new(
                    at,
                    format!("expected a {side} bound in the range"),
                ));
            }
            if w.raw == "*" {
                return Ok(Bound::Open);
            }
            if w.stars {
                return Err(QueryError::new(at, "expected a range bound without \"*\"")
                    .hint("use * alone for an open side"));
            }
            w.text()
        };
        let val = parse_val(name, ty, &v, at)?;
        Ok(if inclusive {
            Bound::Incl(val)
        } else {
            Bound::Excl(val)
        })
    }
}

fn flatten(n: Node) -> Node {
    match n {
        Node::And(v) => {
            let mut out = Vec::new();
            for c in v {
                match c {
                    Node::And(inner) => out.extend(inner),
                    Node::All => {}
                    other => out.push(other),
                }
            }
            match out.len() {
                0 => Node::All,
                1 => out.pop().unwrap_or(Node::All),
                _ => Node::And(out),
            }
        }
        Node::Or(v) => {
            let mut out = Vec::new();
            for c in v {
                match c {
                    Node::Or(inner) => out.extend(inner),
                    Node::All => return Node::All,
                    other => out.push(other),
                }
            }
            Node::Or(out)
        }
        other => other,
    }
}

fn negate(n: Node) -> Node {
    match n {
        Node::Not(inner) => *inner,
        other => Node::Not(Box::new(other)),
    }
}

/// Checks a field name, with a suggestion for a near miss.
fn check_field(name: &str, at: usize) -> Result<FieldType, QueryError> {
    if let Some(t) = field_type(name) {
        return Ok(t);
    }
    let mut err = QueryError::new(at, format!("unknown field \"{name}\""));
    let best = FIELD_PATHS.iter().map(|p| (levenshtein(name, p), *p)).min();
    match best {
        Some((d, p)) if d <= (name.len() / 3).max(2) => {
            err = err.hint(format!("did you mean \"{p}\"?"))
        }
        _ => {
            err = err.hint("field names are ECS paths such as host.name or user.name; labels.<key> for labels; quote text to search for it");
        }
    }
    Err(err)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

fn text_pred(text: &str, at: usize) -> Result<Pred, QueryError> {
    let toks = tokens(text);
    if toks.is_empty() {
        return Err(QueryError::new(
            at,
            format!(
                "search term \"{}\" has no letters or digits to search for",
                vigie_proto::event::truncate_for_log(text)
            ),
        ));
    }
    let mut needle = String::from(" ");
    for t in &toks {
        needle.push_str(t);
        needle.push(' ');
    }
    Ok(Pred::Text {
        tokens: toks,
        needle,
    })
}

fn message_glob(w: &Word) -> Pred {
    let g = w.glob();
    if g.parts.iter().all(|p| p.chars().all(is_token_char)) {
        Pred::TextGlob { glob: g }
    } else {
        Pred::MessageGlob {
            glob: Glob {
                anchored_start: false,
                anchored_end: false,
                ..g
            },
        }
    }
}

fn bare_word(w: &Word) -> Result<Pred, QueryError> {
    if w.stars {
        let g = w.glob();
        if g.is_match_all() {
            return Ok(Pred::Exists {
                field: "message".into(),
            });
        }
        return Ok(message_glob(w));
    }
    text_pred(&w.text(), w.start)
}

fn eq_pred(field: &str, ty: FieldType, v: &str, at: usize) -> Result<Pred, QueryError> {
    let value = match ty {
        FieldType::Text | FieldType::Str => {
            if field == "log.level"
                && let Some(s) = Severity::parse(v)
            {
                EqValue::Str(s.as_str().to_string())
            } else {
                EqValue::Str(lower(v))
            }
        }
        FieldType::Int | FieldType::Float => {
            EqValue::Num(Num::parse(v.trim()).ok_or_else(|| {
                QueryError::new(
                    at,
                    format!(
                        "expected a number for \"{field}\", found \"{}\"",
                        vigie_proto::event::truncate_for_log(v)
                    ),
                )
            })?)
        }
        FieldType::Timestamp => EqValue::Num(parse_time(field, v, at)?),
        FieldType::Ip => {
            if let Some((addr, len)) = v.split_once('/') {
                let ip: IpAddr = addr.parse().map_err(|_| bad_ip(field, v, at))?;
                let max = if ip.is_ipv4() { 32 } else { 128 };
                let len: u8 = len
                    .parse()
                    .ok()
                    .filter(|l| *l <= max)
                    .ok_or_else(|| bad_ip(field, v, at))?;
                EqValue::Cidr(ip, len)
            } else {
                EqValue::Ip(v.parse().map_err(|_| bad_ip(field, v, at))?)
            }
        }
    };
    Ok(Pred::Eq {
        field: field.to_string(),
        value,
    })
}

fn bad_ip(field: &str, v: &str, at: usize) -> QueryError {
    QueryError::new(
        at,
        format!(
            "expected an IP address or a CIDR such as 10.0.0.0/8 for \"{field}\", found \"{}\"",
            vigie_proto::event::truncate_for_log(v)
        ),
    )
}

fn parse_time(field: &str, v: &str, at: usize) -> Result<Num, QueryError> {
    if let Ok(ms) = v.parse::<i64>() {
        return Ok(Num::I(ms));
    }
    Timestamp::parse_rfc3339(v).map(|t| Num::I(t.millis())).map_err(|_| {
        QueryError::new(at, format!("expected an RFC 3339 time such as 2026-01-31T12:00:00Z or epoch milliseconds for \"{field}\", found \"{}\"", vigie_proto::event::truncate_for_log(v)))
    })
}

fn parse_val(field: &str, ty: FieldType, v: &str, at: usize) -> Result<Val, QueryError> {
    Ok(match ty {
        FieldType::Text | FieldType::Str => Val::Str(lower(v)),
        FieldType::Int | FieldType::Float => Val::Num(Num::parse(v.trim()).ok_or_else(|| {
            QueryError::new(
                at,
                format!(
                    "expected a number for \"{field}\", found \"{}\"",
                    vigie_proto::event::truncate_for_log(v)
                ),
            )
        })?),
        FieldType::Timestamp => Val::Num(parse_time(field, v, at)?),
        FieldType::Ip => Val::Ip(v.parse().map_err(|_| {
            QueryError::new(
                at,
                format!(
                    "expected an IP address for \"{field}\", found \"{}\"",
                    vigie_proto::event::truncate_for_log(v)
                ),
            )
        })?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokenizer_splits_and_lowercases() {
        assert_eq!(
            tokens("Failed password for root from 10.0.0.5 port 22"),
            [
                "failed", "password", "for", "root", "from", "10", "0", "0", "5", "port", "22"
            ]
        );
        assert_eq!(
            tokens("sshd(pam_unix)[19939]: ÉTÉ"),
            ["sshd", "pam_unix", "19939", "été"]
        );
        assert_eq!(normalize("A b"), " a b ");
    }

    #[test]
    fn glob_matching() {
        let g = |p: &[&str], s, e| {
            Glob::new(&p.iter().map(|x| x.to_string()).collect::<Vec<_>>(), s, e)
        };
        assert!(g(&["ab"], false, true).matches("abc"));
        assert!(!g(&["ab"], false, true).matches("cab"));
        assert!(g(&["ab"], true, true).matches("cabd"));
        assert!(g(&["a", "c"], false, false).matches("abc"));
        assert!(!g(&["a", "c"], false, false).matches("abcd"));
        assert!(g(&["a", "c"], false, true).matches("abcd"));
        assert!(!g(&["aa", "aa"], false, false).matches("aaa"));
    }
}

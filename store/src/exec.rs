//! Query execution over the tiers: the in-memory recent events and the sealed blocks.
//!
//! For each source (a block or an in-memory tier) a query is turned into a
//! candidate bitset with an `exact` flag: exact candidates are the matches, the
//! others are a superset that [`Query::matches`] confirms one event at a time.
//! Postings give message tokens and keyword values; columns give time, kind,
//! severity, host and stream; block field lists and numeric min/max rule out
//! whole blocks. Nothing here decides semantics: a leaf the index cannot
//! answer exactly becomes "every event that has the field", confirmed later.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use vigie_proto::event::{Event, FieldValue};
use vigie_proto::ids::event_id;
use vigie_proto::{AgentId, Epoch, Kind, Seq, Severity};

use crate::StoreError;
use crate::codec::{self, Bits, COL_IDS, COL_TS, Columns, Page, SEV_NONE};
use crate::query::{EqValue, FieldType, MAX_TERM_BYTES, Node, Num, Pred, Query, Val, field_type};
use crate::tier::{BlockMeta, Builder, is_column_field, is_indexed, materialize};

/// Most distinct terms a wildcard may expand to in one block before the
/// executor falls back to confirming every event that has the field.
const PREFIX_TERM_CAP: usize = 16_384;
/// Most terms a field scan (ranges, CIDRs, inner wildcards) reads in one block.
const SCAN_TERM_CAP: usize = 1 << 17;

/// A position in the global order of events: newest first means largest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventKey {
    pub ts: i64,
    pub agent: AgentId,
    pub epoch: Epoch,
    pub seq: u64,
}

/// A sealed block known to the directory.
pub struct BlockInfo {
    pub id: u64,
    pub meta: BlockMeta,
}

/// Receives each (term, posting list) of a scan.
pub type TermVisitor<'a> = dyn FnMut(&[u8], &[u8]) -> Result<(), StoreError> + 'a;

/// What the executor needs from the store to read a block.
pub trait BlockReader {
    /// The block's columns with at least the sections in `need` (`codec::COL_*`).
    fn cols(&self, info: &BlockInfo, need: u8) -> Result<Arc<Columns>, StoreError>;
    fn page(&self, info: &BlockInfo, page: usize) -> Result<Page, StoreError>;
    fn term(&self, block: u64, term: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// Calls `f(term, posting list)` for every term starting with `prefix`, in
    /// term order; `false` when it stopped past `cap` terms.
    fn scan(
        &self,
        block: u64,
        prefix: &[u8],
        cap: usize,
        f: &mut TermVisitor<'_>,
    ) -> Result<bool, StoreError>;
}

/// One place events come from.
pub enum Src<'a> {
    Mem(&'a Builder),
    Block {
        reader: &'a dyn BlockReader,
        info: &'a BlockInfo,
        cols: Option<Arc<Columns>>,
        pages: HashMap<usize, Page>,
    },
}

impl<'a> Src<'a> {
    pub fn block(reader: &'a dyn BlockReader, info: &'a BlockInfo) -> Src<'a> {
        Src::Block {
            reader,
            info,
            cols: None,
            pages: HashMap::new(),
        }
    }

    pub fn n(&self) -> usize {
        match self {
            Src::Mem(b) => b.len(),
            Src::Block { info, .. } => info.meta.count as usize,
        }
    }

    pub fn min_ts(&self) -> i64 {
        match self {
            Src::Mem(b) => b.min_ts,
            Src::Block { info, .. } => info.meta.min_ts,
        }
    }

    pub fn max_ts(&self) -> i64 {
        match self {
            Src::Mem(b) => b.max_ts,
            Src::Block { info, .. } => info.meta.max_ts,
        }
    }

    fn sorted(&self) -> bool {
        matches!(self, Src::Block { .. })
    }

    /// The columns, with at least the sections in `need` (`codec::COL_*`).
    pub fn cols(&mut self, need: u8) -> Result<&Columns, StoreError> {
        match self {
            Src::Mem(b) => Ok(&b.cols),
            Src::Block {
                reader, info, cols, ..
            } => {
                let have = cols.as_ref().map(|c| c.loaded).unwrap_or(0);
                if have & need != need {
                    *cols = Some(reader.cols(info, need | have)?);
                }
                match cols {
                    Some(c) => Ok(c),
                    None => Err(StoreError::corrupt("block columns", "not loaded")),
                }
            }
        }
    }

    pub fn stream(&self, i: u32) -> (AgentId, Epoch) {
        match self {
            Src::Mem(b) => b.streams.get(i as usize).copied().unwrap_or_default(),
            Src::Block { info, .. } => info
                .meta
                .streams
                .get(i as usize)
                .map(|r| (r.agent, r.epoch))
                .unwrap_or_default(),
        }
    }

    fn n_streams(&self) -> usize {
        match self {
            Src::Mem(b) => b.streams.len(),
            Src::Block { info, .. } => info.meta.streams.len(),
        }
    }

    fn has_field(&self, f: &str) -> bool {
        match self {
            Src::Mem(b) => b.has_field(f),
            Src::Block { info, .. } => info.meta.has_field(f),
        }
    }

    fn num_range(&self, f: &str) -> Option<(f64, f64)> {
        match self {
            Src::Mem(b) => b.num_range(f),
            Src::Block { info, .. } => info.meta.num_range(f),
        }
    }

    fn term(&self, t: &[u8]) -> Result<Bits, StoreError> {
        let n = self.n();
        match self {
            Src::Mem(b) => Ok(bits_of(b.term(t).unwrap_or(&[]), n)),
            Src::Block { reader, info, .. } => match reader.term(info.id, t)? {
                Some(v) => codec::decode_postings(&v, n)
                    .map_err(|c| StoreError::corrupt("posting list", c.0)),
                None => Ok(Bits::empty(n)),
            },
        }
    }

    /// The union of the postings of the terms starting with `prefix` that `judge`
    /// takes; `None` past `cap` terms.
    fn scan(
        &self,
        prefix: &[u8],
        cap: usize,
        judge: &mut dyn FnMut(&[u8]) -> Take,
    ) -> Result<Option<Cand>, StoreError> {
        let n = self.n();
        let mut bits = Bits::empty(n);
        let mut exact = true;
        let complete = match self {
            Src::Mem(b) => b.scan(prefix, cap, &mut |t, offs| {
                let take = judge(t);
                if take != Take::No {
                    exact &= take == Take::Yes;
                    offs.iter().for_each(|o| bits.set(*o as usize));
                }
            }),
            Src::Block { reader, info, .. } => reader.scan(info.id, prefix, cap, &mut |t, v| {
                let take = judge(t);
                if take != Take::No {
                    exact &= take == Take::Yes;
                    bits.or_with(
                        &codec::decode_postings(v, n)
                            .map_err(|c| StoreError::corrupt("posting list", c.0))?,
                    );
                }
                Ok(())
            })?,
        };
        Ok(complete.then_some(Cand { bits, exact }))
    }

    /// The stored (stripped) event at `off`.
    pub fn event(&mut self, off: usize) -> Result<Cow<'_, Event>, StoreError> {
        match self {
            Src::Mem(b) => b
                .event(off)
                .map(Cow::Owned)
                .map_err(|c| StoreError::corrupt("recent event", c.0)),
            Src::Block {
                reader,
                info,
                pages,
                ..
            } => {
                let pi = info
                    .meta
                    .page_of(off)
                    .ok_or_else(|| StoreError::corrupt("block", "offset out of range"))?;
                if let std::collections::hash_map::Entry::Vacant(slot) = pages.entry(pi) {
                    slot.insert(reader.page(info, pi)?);
                }
                let first = info.meta.pages[pi].first as usize;
                let page = pages
                    .get(&pi)
                    .ok_or_else(|| StoreError::corrupt("page", "not loaded"))?;
                page.event(off - first)
                    .map(Cow::Owned)
                    .map_err(|c| StoreError::corrupt("event", c.0))
            }
        }
    }

    /// The event at `off` with its ids set.
    pub fn full_event(&mut self, off: usize) -> Result<Event, StoreError> {
        let (agent, epoch, seq) = self.ids(off)?;
        let mut e = self.event(off)?.into_owned();
        materialize(&mut e, agent, epoch, seq);
        Ok(e)
    }

    pub fn ids(&mut self, off: usize) -> Result<(AgentId, Epoch, u64), StoreError> {
        let (s, seq) = {
            let c = self.cols(COL_IDS)?;
            (c.stream[off], c.seq[off])
        };
        let (a, e) = self.stream(s);
        Ok((a, e, seq))
    }

    pub fn key(&mut self, off: usize) -> Result<EventKey, StoreError> {
        let (ts, s, seq) = {
            let c = self.cols(COL_TS | COL_IDS)?;
            (c.ts[off], c.stream[off], c.seq[off])
        };
        let (agent, epoch) = self.stream(s);
        Ok(EventKey {
            ts,
            agent,
            epoch,
            seq,
        })
    }
}

fn bits_of(offs: &[u32], n: usize) -> Bits {
    let mut b = Bits::empty(n);
    offs.iter().for_each(|o| b.set(*o as usize));
    b
}

// ---------------------------------------------------------------------------
// Plans

enum Leaf<'q> {
    Empty,
    Agent(&'q Pred),
    EventId(&'q Pred),
    Ts(&'q Pred),
    Terms {
        terms: Vec<Vec<u8>>,
        all: bool,
        exact: bool,
        field: &'q str,
    },
    Prefix {
        prefix: Vec<u8>,
        exact: bool,
        field: &'q str,
    },
    Scan {
        prefix: Vec<u8>,
        pred: &'q Pred,
        kind: TermKind,
        field: &'q str,
    },
    Presence {
        field: &'q str,
        num: Option<(f64, f64)>,
    },
}

enum PNode<'q> {
    All,
    And(Vec<PNode<'q>>),
    Or(Vec<PNode<'q>>),
    Not(Box<PNode<'q>>),
    Leaf(Leaf<'q>),
}

/// Whether a term's postings join a scan's result: surely, not at all, or as
/// candidates to confirm (cut terms).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Take {
    No,
    Yes,
    Maybe,
}

/// What the terms of a scanned field hold.
#[derive(Clone, Copy, PartialEq, Eq)]
enum TermKind {
    Token,
    Str,
    Int,
    Ip,
}

/// Decides a term of a scan by the leaf's own `match_value`.
fn judge_term(p: &Pred, kind: TermKind, value: &[u8]) -> Take {
    if value.last() == Some(&crate::query::CUT_MARK) {
        return Take::Maybe;
    }
    let Ok(s) = std::str::from_utf8(value) else {
        return Take::Maybe;
    };
    let hit = match kind {
        TermKind::Token => match p {
            Pred::TextGlob { glob } => glob.matches(s),
            _ => return Take::Maybe,
        },
        TermKind::Str => {
            // Terms hold lowercased values; the leaves compare case-insensitively, which
            // gives the same answer unless lowercasing is not idempotent on this text.
            if !s.is_ascii() && crate::query::lower(s) != s {
                return Take::Maybe;
            }
            p.match_value(FieldValue::Str(s))
        }
        TermKind::Int => match s.parse::<i64>() {
            Ok(i) => p.match_value(FieldValue::Int(i)),
            Err(_) => return Take::Maybe,
        },
        TermKind::Ip => match s.parse::<std::net::IpAddr>() {
            Ok(ip) => p.match_value(FieldValue::Ip(ip)),
            Err(_) => return Take::Maybe,
        },
    };
    if hit { Take::Yes } else { Take::No }
}

/// A query prepared for the index.
pub struct Plan<'q> {
    root: PNode<'q>,
    pub query: &'q Query,
    needs_ids: bool,
}

pub struct Cand {
    pub bits: Bits,
    pub exact: bool,
}

impl<'q> Plan<'q> {
    pub fn new(query: &'q Query) -> Plan<'q> {
        let mut needs_ids = false;
        query
            .root
            .visit_preds(&mut |p| needs_ids |= matches!(p.field(), "agent.id" | "event.id"));
        Plan {
            root: plan_node(&query.root),
            query,
            needs_ids,
        }
    }

    pub fn eval(&self, src: &mut Src<'_>) -> Result<Cand, StoreError> {
        let mut c = eval(&self.root, src)?;
        if c.bits.is_empty() {
            c.exact = true;
        }
        Ok(c)
    }

    /// Whether the event at `off` matches (decodes it).
    pub fn confirm(
        &self,
        src: &mut Src<'_>,
        off: usize,
        decoded: &mut u64,
    ) -> Result<bool, StoreError> {
        *decoded += 1;
        if self.needs_ids {
            let e = src.full_event(off)?;
            return Ok(self.query.matches(&e));
        }
        let e = src.event(off)?;
        Ok(self.query.matches(&e))
    }

    /// The matching subset of `cand`, confirming when needed.
    pub fn resolve(
        &self,
        src: &mut Src<'_>,
        cand: Cand,
        decoded: &mut u64,
    ) -> Result<Bits, StoreError> {
        if cand.exact {
            return Ok(cand.bits);
        }
        let mut out = Bits::empty(cand.bits.len());
        for off in cand.bits.iter() {
            if self.confirm(src, off, decoded)? {
                out.set(off);
            }
        }
        Ok(out)
    }
}

fn plan_node<'q>(n: &'q Node) -> PNode<'q> {
    match n {
        Node::All => PNode::All,
        Node::And(v) => PNode::And(v.iter().map(|c| plan_node(c)).collect()),
        Node::Or(v) => PNode::Or(v.iter().map(|c| plan_node(c)).collect()),
        Node::Not(c) => PNode::Not(Box::new(plan_node(c))),
        Node::Pred(p) => PNode::Leaf(plan_leaf(p)),
    }
}

/// Which kinds satisfy a leaf on a kind-derived field.
pub fn kind_mask(p: &Pred) -> [bool; 13] {
    let mut m = [false; 13];
    for k in Kind::ALL {
        m[k.code() as usize] = match p.field() {
            "event.dataset" => p.match_value(FieldValue::Str(k.as_str())),
            "event.kind" => p.match_value(FieldValue::Str(k.ecs_kind())),
            _ => k
                .ecs_category()
                .iter()
                .any(|c| p.match_value(FieldValue::Str(c))),
        };
    }
    m
}

fn plan_leaf<'q>(p: &'q Pred) -> Leaf<'q> {
    let field = p.field();
    if is_column_field(field) && !is_indexed(field) {
        return match field {
            // Derived from the kind: the union of the `event.dataset` terms of the kinds it accepts.
            "event.kind" | "event.category" => {
                let mask = kind_mask(p);
                let terms = Kind::ALL
                    .iter()
                    .filter(|k| mask[k.code() as usize])
                    .map(|k| {
                        let mut b = Vec::new();
                        codec::field_term(&mut b, "event.dataset", k.as_str());
                        b
                    })
                    .collect();
                Leaf::Terms {
                    terms,
                    all: false,
                    exact: true,
                    field: "event.dataset",
                }
            }
            "agent.id" => Leaf::Agent(p),
            "event.id" => Leaf::EventId(p),
            _ => Leaf::Ts(p),
        };
    }
    let presence = |num: Option<(f64, f64)>| Leaf::Presence { field, num };
    let field_prefix = || {
        let mut b = Vec::with_capacity(field.len() + 1);
        b.extend_from_slice(field.as_bytes());
        b.push(0);
        b
    };
    let term_kind = match field_type(field) {
        Some(FieldType::Int) => TermKind::Int,
        Some(FieldType::Ip) => TermKind::Ip,
        _ => TermKind::Str,
    };
    // Every term of the field, each judged by the leaf itself.
    let scan = || Leaf::Scan {
        prefix: field_prefix(),
        pred: p,
        kind: term_kind,
        field,
    };
    match p {
        Pred::Text { tokens, .. } => {
            // Pairs of adjacent words have their own terms: a two-word phrase is exact.
            let mut terms = Vec::new();
            let mut covered = vec![false; tokens.len()];
            let mut buf = Vec::new();
            for (i, w) in tokens.windows(2).enumerate() {
                if codec::bigram_term(&mut buf, w[0].as_bytes(), w[1].as_bytes()) {
                    terms.push(buf.clone());
                    covered[i] = true;
                    covered[i + 1] = true;
                }
            }
            for (t, c) in tokens.iter().zip(&covered) {
                if !c {
                    let mut b = Vec::new();
                    codec::message_term(&mut b, t);
                    terms.push(b);
                }
            }
            let exact = match tokens.len() {
                1 => tokens[0].len() <= MAX_TERM_BYTES,
                2 => covered[0],
                _ => false,
            };
            Leaf::Terms {
                terms,
                all: true,
                exact,
                field,
            }
        }
        Pred::TextGlob { glob } => match glob.prefix() {
            Some(pre) => {
                let (form, exact) = prefix_form(pre);
                let mut prefix = vec![codec::TERM_MESSAGE];
                prefix.extend_from_slice(form.as_bytes());
                Leaf::Prefix {
                    prefix,
                    exact,
                    field,
                }
            }
            None => Leaf::Scan {
                prefix: vec![codec::TERM_MESSAGE],
                pred: p,
                kind: TermKind::Token,
                field,
            },
        },
        Pred::MessageGlob { .. } => presence(None),
        Pred::Exists { .. } if field == "message" || !is_indexed(field) => presence(None),
        Pred::Exists { .. } => scan(),
        Pred::Eq { value, .. } => {
            let num = match value {
                EqValue::Num(n) => Some((num_f64(*n), num_f64(*n))),
                _ => None,
            };
            if !is_indexed(field) {
                return presence(num);
            }
            let mut b = Vec::new();
            match value {
                EqValue::Str(s) => {
                    codec::field_term(&mut b, field, s);
                    Leaf::Terms {
                        terms: vec![b],
                        all: false,
                        exact: s.len() <= MAX_TERM_BYTES,
                        field,
                    }
                }
                EqValue::Num(Num::I(i)) => {
                    codec::field_term(&mut b, field, &i.to_string());
                    Leaf::Terms {
                        terms: vec![b],
                        all: false,
                        exact: true,
                        field,
                    }
                }
                EqValue::Num(Num::F(f)) if f.fract() != 0.0 => Leaf::Empty,
                EqValue::Num(Num::F(_)) => presence(num),
                EqValue::Ip(ip) => {
                    codec::field_term(&mut b, field, &ip.to_string());
                    Leaf::Terms {
                        terms: vec![b],
                        all: false,
                        exact: true,
                        field,
                    }
                }
                EqValue::Cidr(..) => scan(),
            }
        }
        Pred::Glob { glob, .. } if is_indexed(field) => match glob.prefix() {
            Some(pre) => {
                let (form, exact) = prefix_form(pre);
                let mut prefix = field_prefix();
                prefix.extend_from_slice(form.as_bytes());
                Leaf::Prefix {
                    prefix,
                    exact,
                    field,
                }
            }
            None => scan(),
        },
        Pred::Glob { .. } => presence(None),
        Pred::Range { .. } if is_indexed(field) && field != "message" => scan(),
        Pred::Range { lo, hi, .. } => {
            let side = |b: &crate::query::Bound, open: f64| match b {
                crate::query::Bound::Open => Some(open),
                crate::query::Bound::Incl(Val::Num(n)) | crate::query::Bound::Excl(Val::Num(n)) => {
                    Some(num_f64(*n))
                }
                _ => None,
            };
            match (side(lo, f64::NEG_INFINITY), side(hi, f64::INFINITY)) {
                (Some(a), Some(b)) if field != "message" => presence(Some((a, b))),
                _ => presence(None),
            }
        }
    }
}

/// A wildcard prefix as it can be looked up in the index: cut terms keep at least
/// `MAX_TERM_BYTES - 3` bytes, so a prefix that short finds every match exactly.
fn prefix_form(s: &str) -> (&str, bool) {
    let max = MAX_TERM_BYTES - 4;
    if s.len() <= max {
        return (s, true);
    }
    let mut cut = max;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    (&s[..cut], false)
}

fn num_f64(n: Num) -> f64 {
    match n {
        Num::I(i) => i as f64,
        Num::F(f) => f,
    }
}

fn eval(n: &PNode<'_>, src: &mut Src<'_>) -> Result<Cand, StoreError> {
    let len = src.n();
    Ok(match n {
        PNode::All => Cand {
            bits: Bits::full(len),
            exact: true,
        },
        PNode::And(v) => {
            let mut acc: Option<Cand> = None;
            for c in v {
                let r = eval(c, src)?;
                acc = Some(match acc {
                    None => r,
                    Some(mut a) => {
                        a.bits.and_with(&r.bits);
                        a.exact &= r.exact;
                        a
                    }
                });
                if acc.as_ref().is_some_and(|a| a.bits.is_empty()) {
                    return Ok(Cand {
                        bits: Bits::empty(len),
                        exact: true,
                    });
                }
            }
            acc.unwrap_or(Cand {
                bits: Bits::full(len),
                exact: true,
            })
        }
        PNode::Or(v) => {
            let mut acc = Cand {
                bits: Bits::empty(len),
                exact: true,
            };
            for c in v {
                let r = eval(c, src)?;
                acc.bits.or_with(&r.bits);
                acc.exact &= r.exact || r.bits.is_empty();
            }
            acc
        }
        PNode::Not(c) => {
            let r = eval(c, src)?;
            if r.exact || r.bits.is_empty() {
                let mut b = r.bits;
                b.negate();
                Cand {
                    bits: b,
                    exact: true,
                }
            } else {
                Cand {
                    bits: Bits::full(len),
                    exact: false,
                }
            }
        }
        PNode::Leaf(l) => eval_leaf(l, src)?,
    })
}

fn by_column<T: Copy>(col: &[T], len: usize, mut f: impl FnMut(T) -> bool) -> Bits {
    let mut b = Bits::empty(len);
    for (i, v) in col.iter().enumerate() {
        if f(*v) {
            b.set(i);
        }
    }
    b
}

fn eval_leaf(l: &Leaf<'_>, src: &mut Src<'_>) -> Result<Cand, StoreError> {
    let len = src.n();
    let exact = |bits| Cand { bits, exact: true };
    Ok(match l {
        Leaf::Empty => exact(Bits::empty(len)),
        Leaf::Agent(p) => {
            let ok: Vec<bool> = (0..src.n_streams())
                .map(|i| p.match_value(FieldValue::Str(&src.stream(i as u32).0.to_hex())))
                .collect();
            exact(by_column(&src.cols(COL_IDS)?.stream, len, |s| {
                ok.get(s as usize).copied().unwrap_or(false)
            }))
        }
        Leaf::EventId(p) => {
            let streams: Vec<(AgentId, Epoch)> =
                (0..src.n_streams()).map(|i| src.stream(i as u32)).collect();
            let c = src.cols(COL_IDS)?;
            let mut b = Bits::empty(len);
            for i in 0..len {
                let (a, e) = streams
                    .get(c.stream[i] as usize)
                    .copied()
                    .unwrap_or_default();
                if p.match_value(FieldValue::Str(&event_id(a, e, Seq(c.seq[i])))) {
                    b.set(i);
                }
            }
            exact(b)
        }
        Leaf::Ts(p) => exact(by_column(&src.cols(COL_TS)?.ts, len, |t| {
            p.match_value(FieldValue::Int(t.div_euclid(1_000_000)))
        })),
        Leaf::Terms {
            terms,
            all,
            exact: ex,
            field,
        } => {
            if !src.has_field(field) {
                return Ok(exact(Bits::empty(len)));
            }
            let mut acc: Option<Bits> = None;
            for t in terms {
                let b = src.term(t)?;
                acc = Some(match acc {
                    None => b,
                    Some(mut a) => {
                        if *all {
                            a.and_with(&b);
                        } else {
                            a.or_with(&b);
                        }
                        a
                    }
                });
                if *all && acc.as_ref().is_some_and(Bits::is_empty) {
                    break;
                }
            }
            Cand {
                bits: acc.unwrap_or_else(|| Bits::empty(len)),
                exact: *ex,
            }
        }
        Leaf::Prefix {
            prefix,
            exact: ex,
            field,
        } => {
            if !src.has_field(field) {
                return Ok(exact(Bits::empty(len)));
            }
            let take = if *ex { Take::Yes } else { Take::Maybe };
            match src.scan(prefix, PREFIX_TERM_CAP, &mut |_| take)? {
                Some(c) => c,
                None => Cand {
                    bits: Bits::full(len),
                    exact: false,
                },
            }
        }
        Leaf::Scan {
            prefix,
            pred,
            kind,
            field,
        } => {
            if !src.has_field(field) {
                return Ok(exact(Bits::empty(len)));
            }
            let skip = prefix.len();
            match src.scan(prefix, SCAN_TERM_CAP, &mut |t| {
                judge_term(pred, *kind, &t[skip..])
            })? {
                Some(c) => c,
                None => Cand {
                    bits: Bits::full(len),
                    exact: false,
                },
            }
        }
        Leaf::Presence { field, num } => {
            if !src.has_field(field) {
                return Ok(exact(Bits::empty(len)));
            }
            if let (Some((lo, hi)), Some((min, max))) = (num, src.num_range(field))
                && (*hi < min || *lo > max)
            {
                return Ok(exact(Bits::empty(len)));
            }
            Cand {
                bits: Bits::full(len),
                exact: false,
            }
        }
    })
}

/// Events of `src` inside `[from, to)`, `None` when all are.
pub fn range_mask(src: &mut Src<'_>, from: i64, to: i64) -> Result<Option<Bits>, StoreError> {
    if src.min_ts() >= from && src.max_ts() < to {
        return Ok(None);
    }
    let len = src.n();
    Ok(Some(by_column(&src.cols(COL_TS)?.ts, len, |t| {
        t >= from && t < to
    })))
}

/// Offsets of `bits` in newest-first order.
pub fn newest_first(src: &mut Src<'_>, bits: &Bits) -> Result<Vec<usize>, StoreError> {
    let mut offs: Vec<usize> = bits.iter().collect();
    if src.sorted() {
        offs.reverse();
        return Ok(offs);
    }
    let mut keyed = Vec::with_capacity(offs.len());
    for o in offs {
        keyed.push((src.key(o)?, o));
    }
    keyed.sort_unstable_by_key(|a| std::cmp::Reverse(a.0));
    Ok(keyed.into_iter().map(|(_, o)| o).collect())
}

/// `severity` code to the `by_severity` slot: events without a `log` section count as info.
pub fn sev_slot(code: u8) -> usize {
    if code == SEV_NONE {
        Severity::Info.code() as usize
    } else {
        (code as usize).min(7)
    }
}

/// The value of a column field for top-values, `None` when absent.
pub fn column_value(
    field: &str,
    src: &Src<'_>,
    cols: &Columns,
    off: usize,
    hosts: &[String],
) -> Vec<String> {
    let kind = cols
        .kind
        .get(off)
        .and_then(|k| Kind::from_code(*k))
        .unwrap_or_default();
    match field {
        "event.dataset" => vec![kind.as_str().to_string()],
        "event.kind" => vec![kind.ecs_kind().to_string()],
        "event.category" => kind.ecs_category().iter().map(|c| c.to_string()).collect(),
        "log.level" => cols
            .sev
            .get(off)
            .and_then(|s| Severity::from_code(*s))
            .map(|s| vec![s.as_str().to_string()])
            .unwrap_or_default(),
        "host.name" => cols
            .host
            .get(off)
            .and_then(|h| hosts.get(*h as usize))
            .filter(|h| !h.is_empty())
            .map(|h| vec![h.clone()])
            .unwrap_or_default(),
        "agent.id" => cols
            .stream
            .get(off)
            .map(|s| vec![src.stream(*s).0.to_hex()])
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// Fields whose top values come from the columns.
pub fn is_column_value_field(f: &str) -> bool {
    matches!(
        f,
        "event.dataset" | "event.kind" | "event.category" | "log.level" | "host.name" | "agent.id"
    )
}

/// Fields answerable by the per-minute counters.
pub fn is_counter_field(f: &str) -> bool {
    matches!(
        f,
        "event.dataset" | "event.kind" | "event.category" | "log.level" | "host.name"
    )
}

/// The lowercased text of a value, as the index stores keyword terms.
pub fn value_text(v: FieldValue<'_>) -> String {
    match v {
        FieldValue::Str(s) => s.to_string(),
        other => other.to_text().into_owned(),
    }
}

//! The recent tier: committed events not yet sealed, kept in memory with their
//! index, and the sealing of such a tier into one block.
//!
//! A [`Builder`] holds the encoded events of the `recent` rows in commit order,
//! their columns and an in-memory inverted index built when they are committed,
//! so queries over the newest events only decode the events they confirm or
//! return. Sealing sorts the events by (time, agent, epoch, seq), remaps the
//! postings and writes pages (reusing the encoded bytes), columns and posting
//! chunks for one block.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

use bincode::{Decode, Encode};
use vigie_proto::event::{AgentInfo, Event, FieldValue};
use vigie_proto::ids::event_id;
use vigie_proto::{AgentId, Epoch};

use crate::codec::{self, Columns, PageBuilder, SEV_NONE};
use crate::query::{FieldType, field_type, lower};

/// Version of the block format written by this build. Do not change without a migration.
pub const BLOCK_VERSION: u32 = 1;

/// Fields answered from the columns (never in the postings).
pub const COLUMN_FIELDS: &[&str] = &[
    "@timestamp",
    "event.dataset",
    "event.kind",
    "event.category",
    "log.level",
    "host.name",
    "agent.id",
    "event.id",
];

pub fn is_column_field(path: &str) -> bool {
    COLUMN_FIELDS.contains(&path)
}

/// Whether values of `path` get postings (besides `message` tokens). Metrics-like
/// numbers (unique per event) and floats are only skipped by block min/max.
pub fn is_indexed(path: &str) -> bool {
    // Host, kind and severity are columns and terms: terms answer filters without
    // decoding columns, columns feed counters, histograms and top values.
    if matches!(path, "host.name" | "event.dataset" | "log.level") {
        return true;
    }
    if is_column_field(path) {
        return false;
    }
    match field_type(path) {
        Some(FieldType::Str | FieldType::Ip | FieldType::Text) => true,
        Some(FieldType::Int) => {
            !(path.starts_with("system.")
                || path.starts_with("vigie.health.")
                || path == "file.size")
        }
        _ => false,
    }
}

/// A fast hasher for short byte keys (FxHash).
#[derive(Default, Clone, Copy)]
pub struct Fx(u64);

impl Hasher for Fx {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x517c_c1b7_2722_0a95;
        let mut h = self.0;
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            h = (h.rotate_left(5) ^ u64::from_le_bytes(w)).wrapping_mul(K);
        }
        for &b in chunks.remainder() {
            h = (h.rotate_left(5) ^ u64::from(b)).wrapping_mul(K);
        }
        self.0 = h;
    }
}

pub type FxBuild = BuildHasherDefault<Fx>;

/// Clears the ids that are rebuilt from the columns on read; makes sure `agent`
/// exists; brings an out-of-bounds event back within the bounds readers check
/// (message cut and marked truncated, excess or oversized labels dropped), so
/// that one bad event can never make a whole block unreadable.
pub fn strip(e: &mut Event) {
    e.event.id.clear();
    match &mut e.agent {
        Some(a) => a.id.clear(),
        None => e.agent = Some(AgentInfo::default()),
    }
    if e.message.len() > vigie_proto::event::MAX_MESSAGE_LEN {
        let m = std::mem::take(&mut e.message);
        e.set_message(m);
    }
    let max = vigie_proto::event::MAX_LABEL_LEN;
    if e.labels.len() > vigie_proto::event::MAX_LABELS
        || e.labels.iter().any(|(k, v)| k.len() > max || v.len() > max)
    {
        let labels = std::mem::take(&mut e.labels);
        for (k, v) in labels {
            e.add_label(&k, &v);
        }
    }
}

/// Sets `event.id` and `agent.id` from the event's place in its stream.
pub fn materialize(e: &mut Event, agent: AgentId, epoch: Epoch, seq: u64) {
    e.event.id = event_id(agent, epoch, vigie_proto::Seq(seq));
    let hex = agent.to_hex();
    match &mut e.agent {
        Some(a) => a.id = hex,
        None => {
            e.agent = Some(AgentInfo {
                id: hex,
                version: String::new(),
            })
        }
    }
}

pub fn sev_code(e: &Event) -> u8 {
    e.log.as_ref().map(|l| l.level.code()).unwrap_or(SEV_NONE)
}

/// The events committed since the last seal, with their index.
#[derive(Default)]
pub struct Builder {
    /// The stripped events, bincode-encoded back to back, in commit order.
    data: Vec<u8>,
    /// Start of each event in `data`.
    starts: Vec<u32>,
    pub cols: Columns,
    pub streams: Vec<(AgentId, Epoch)>,
    stream_idx: HashMap<(AgentId, Epoch), u32, FxBuild>,
    terms: HashMap<Vec<u8>, u32, FxBuild>,
    postings: Vec<Plist>,
    fields: HashSet<String, FxBuild>,
    num_ranges: HashMap<String, (f64, f64), FxBuild>,
    seq_index: HashMap<(u32, u64), u32, FxBuild>,
    pub raw_message_bytes: u64,
    pub raw_bytes: u64,
    pub min_ts: i64,
    pub max_ts: i64,
    /// Keys of the `recent` rows these events came from.
    pub recent_keys: Vec<u64>,
    term_buf: Vec<u8>,
    pair_buf: Vec<u8>,
    prev_tok: Vec<u8>,
}

impl Builder {
    /// An empty tier with room for `n` events, so that growing it does not reallocate.
    pub fn with_capacity(n: usize) -> Builder {
        let n = n.min(codec::MAX_BLOCK_EVENTS);
        let mut b = Builder::default();
        b.starts.reserve(n);
        b.data.reserve(n.saturating_mul(256));
        b.cols.ts.reserve(n);
        b.cols.stream.reserve(n);
        b.cols.seq.reserve(n);
        b.cols.kind.reserve(n);
        b.cols.sev.reserve(n);
        b.cols.host.reserve(n);
        b.seq_index.reserve(n);
        b.terms.reserve(n);
        b.postings.reserve(n);
        b
    }

    pub fn len(&self) -> usize {
        self.starts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }

    pub fn stream_index(&mut self, agent: AgentId, epoch: Epoch) -> u32 {
        if let Some(i) = self.stream_idx.get(&(agent, epoch)) {
            return *i;
        }
        let i = self.streams.len() as u32;
        self.streams.push((agent, epoch));
        self.stream_idx.insert((agent, epoch), i);
        i
    }

    pub fn find_stream(&self, agent: AgentId, epoch: Epoch) -> Option<u32> {
        self.stream_idx.get(&(agent, epoch)).copied()
    }

    /// Offset of the event `seq` of stream `stream`.
    pub fn locate(&self, stream: u32, seq: u64) -> Option<usize> {
        self.seq_index.get(&(stream, seq)).map(|o| *o as usize)
    }

    pub fn has_field(&self, f: &str) -> bool {
        self.fields.contains(f)
    }

    pub fn num_range(&self, f: &str) -> Option<(f64, f64)> {
        self.num_ranges.get(f).copied()
    }

    pub fn term(&self, t: &[u8]) -> Option<&[u32]> {
        self.terms
            .get(t)
            .map(|id| self.postings[*id as usize].as_slice())
    }

    /// Calls `f` with every term starting with `prefix` and its offsets; false past `cap` terms.
    pub fn scan(&self, prefix: &[u8], cap: usize, f: &mut dyn FnMut(&[u8], &[u32])) -> bool {
        let mut n = 0;
        for (t, id) in &self.terms {
            if t.starts_with(prefix) {
                n += 1;
                if n > cap {
                    return false;
                }
                f(t, self.postings[*id as usize].as_slice());
            }
        }
        true
    }

    /// Adds one stripped event and its bincode encoding.
    pub fn push(&mut self, e: &Event, encoded: &[u8], stream: u32, seq: u64, host: u32) {
        let offset = self.starts.len() as u32;
        let ts = e.timestamp.nanos();
        if self.starts.is_empty() {
            self.min_ts = ts;
            self.max_ts = ts;
        } else {
            self.min_ts = self.min_ts.min(ts);
            self.max_ts = self.max_ts.max(ts);
        }
        self.raw_message_bytes += e.message.len() as u64;
        self.raw_bytes += encoded.len() as u64;
        let Builder {
            terms,
            postings,
            fields,
            num_ranges,
            term_buf,
            pair_buf,
            prev_tok,
            ..
        } = self;
        let mut add = |term: &[u8]| {
            let id = match terms.get(term) {
                Some(id) => *id,
                None => {
                    let id = postings.len() as u32;
                    terms.insert(term.to_vec(), id);
                    postings.push(Plist::Empty);
                    id
                }
            };
            postings[id as usize].add(offset);
        };
        e.visit_fields(&mut |path, v| {
            if !fields.contains(path) {
                fields.insert(path.to_string());
            }
            match v {
                FieldValue::Int(i) if path != "@timestamp" => widen(num_ranges, path, i as f64),
                FieldValue::Float(f) if !f.is_nan() => widen(num_ranges, path, f),
                _ => {}
            }
            if path == "message" {
                if let FieldValue::Str(s) = v {
                    term_buf.clear();
                    term_buf.push(codec::TERM_MESSAGE);
                    prev_tok.clear();
                    crate::query::for_each_token_bytes(s, term_buf, 1, |t| {
                        add(&codec::finish_message_term(t));
                        let tok = &t[1..];
                        if codec::bigram_term(pair_buf, prev_tok, tok) {
                            add(pair_buf);
                        }
                        prev_tok.clear();
                        prev_tok.extend_from_slice(tok);
                    });
                }
                return;
            }
            if !is_indexed(path) {
                return;
            }
            match v {
                FieldValue::Str(s) => codec::field_term(term_buf, path, &lower(s)),
                FieldValue::Int(i) => codec::field_term(term_buf, path, &i.to_string()),
                FieldValue::Ip(ip) => codec::field_term(term_buf, path, &ip.to_string()),
                _ => return,
            }
            add(term_buf);
        });
        self.cols.ts.push(ts);
        self.cols.stream.push(stream);
        self.cols.seq.push(seq);
        self.cols.kind.push(e.kind().code());
        self.cols.sev.push(sev_code(e));
        self.cols.host.push(host);
        self.seq_index.insert((stream, seq), offset);
        self.starts.push(self.data.len() as u32);
        self.data.extend_from_slice(encoded);
    }

    fn raw(&self, i: usize) -> &[u8] {
        let a = self.starts[i] as usize;
        let b = self
            .starts
            .get(i + 1)
            .map(|x| *x as usize)
            .unwrap_or(self.data.len());
        &self.data[a..b]
    }

    /// The stripped event at offset `i`.
    pub fn event(&self, i: usize) -> Result<Event, codec::Corrupt> {
        if i >= self.starts.len() {
            return Err(codec::Corrupt("offset past the recent events".into()));
        }
        codec::decode_event(self.raw(i))
    }

    /// Encodes these events as block `id`.
    pub fn seal(&self, page_bytes: usize, level: i32) -> Result<Sealed, String> {
        let n = self.starts.len();
        let key = |i: usize| {
            let (a, ep) = self.streams[self.cols.stream[i] as usize];
            (self.cols.ts[i], a, ep, self.cols.seq[i])
        };
        let mut order: Vec<u32> = (0..n as u32).collect();
        order.sort_unstable_by_key(|&i| key(i as usize));
        let mut newpos = vec![0u32; n];
        for (new, &old) in order.iter().enumerate() {
            newpos[old as usize] = new as u32;
        }
        // Streams and their seq ranges.
        let mut runs: Vec<StreamRun> = self
            .streams
            .iter()
            .map(|(a, e)| StreamRun {
                agent: *a,
                epoch: *e,
                min_seq: u64::MAX,
                max_seq: 0,
            })
            .collect();
        for i in 0..n {
            let r = &mut runs[self.cols.stream[i] as usize];
            r.min_seq = r.min_seq.min(self.cols.seq[i]);
            r.max_seq = r.max_seq.max(self.cols.seq[i]);
        }
        // Columns in block order.
        let mut cols = Columns::default();
        for &o in &order {
            let o = o as usize;
            cols.ts.push(self.cols.ts[o]);
            cols.stream.push(self.cols.stream[o]);
            cols.seq.push(self.cols.seq[o]);
            cols.kind.push(self.cols.kind[o]);
            cols.sev.push(self.cols.sev[o]);
            cols.host.push(self.cols.host[o]);
        }
        let mins: Vec<u64> = runs.iter().map(|r| r.min_seq).collect();
        cols.loaded = codec::COL_ALL;
        let mut comp = zstd::bulk::Compressor::new(level).map_err(|e| format!("zstd: {e}"))?;
        let (cols_z, cols_raw_len) = cols.encode(&mins, &mut comp)?;
        // Pages.
        let mut pages = Vec::new();
        let mut page_refs = Vec::new();
        let mut pb = PageBuilder::new();
        let mut first = 0u32;
        for (i, &o) in order.iter().enumerate() {
            pb.push_raw(self.raw(o as usize));
            if pb.raw_size() >= page_bytes || pb.len() >= 4096 || i + 1 == n {
                let count = pb.len() as u32;
                let raw = pb.take_raw();
                let z = comp.compress(&raw).map_err(|e| format!("zstd: {e}"))?;
                page_refs.push(PageRef {
                    first,
                    count,
                    raw_len: raw.len() as u32,
                    stored_len: z.len() as u32,
                });
                pages.push(z);
                first += count;
            }
        }
        // Postings, in term order, packed into chunks.
        // Sorting by a 16-byte big-endian prefix first keeps most comparisons off memcmp.
        let mut terms: Vec<(u128, &[u8], u32)> = self
            .terms
            .iter()
            .map(|(t, id)| {
                let mut p = [0u8; 16];
                let k = t.len().min(16);
                p[..k].copy_from_slice(&t[..k]);
                (u128::from_be_bytes(p), t.as_slice(), *id)
            })
            .collect();
        terms.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(b.1)));
        let mut chunks = codec::ChunkWriter::new(codec::POSTING_CHUNK_BYTES);
        let mut offs = Vec::new();
        let mut v = Vec::new();
        for (_, term, id) in terms {
            offs.clear();
            offs.extend(
                self.postings[id as usize]
                    .as_slice()
                    .iter()
                    .map(|o| newpos[*o as usize]),
            );
            offs.sort_unstable();
            codec::encode_postings(&offs, n, &mut v);
            chunks.push(term, &v);
        }
        let postings = chunks.finish();
        let mut stored: u64 = postings
            .iter()
            .map(|(k, v)| (k.len() + 8 + v.len()) as u64)
            .sum();
        let mut fields: Vec<String> = self.fields.iter().cloned().collect();
        fields.sort();
        let mut num_ranges: Vec<(String, f64, f64)> = self
            .num_ranges
            .iter()
            .map(|(k, (a, b))| (k.clone(), *a, *b))
            .collect();
        num_ranges.sort_by(|a, b| a.0.cmp(&b.0));
        stored += cols_z.len() as u64 + pages.iter().map(|p| p.len() as u64).sum::<u64>();
        let meta = BlockMeta {
            version: BLOCK_VERSION,
            count: n as u32,
            min_ts: self.min_ts,
            max_ts: self.max_ts,
            streams: runs,
            pages: page_refs,
            cols_raw_len: cols_raw_len as u32,
            cols_stored_len: cols_z.len() as u32,
            fields,
            num_ranges,
            raw_message_bytes: self.raw_message_bytes,
            raw_bytes: self.raw_bytes,
            stored_bytes: stored,
        };
        Ok(Sealed {
            meta,
            cols: cols_z,
            pages,
            postings,
        })
    }
}

fn widen(m: &mut HashMap<String, (f64, f64), FxBuild>, path: &str, v: f64) {
    match m.get_mut(path) {
        Some(r) => {
            r.0 = r.0.min(v);
            r.1 = r.1.max(v);
        }
        None => {
            m.insert(path.to_string(), (v, v));
        }
    }
}

/// The offsets of one term in a builder; most terms (numbers, ids) occur once.
#[derive(Clone, Debug)]
pub enum Plist {
    Empty,
    One(u32),
    Many(Vec<u32>),
}

impl Plist {
    fn add(&mut self, o: u32) {
        match self {
            Plist::Empty => *self = Plist::One(o),
            Plist::One(x) if *x == o => {}
            Plist::One(x) => *self = Plist::Many(vec![*x, o]),
            Plist::Many(v) => {
                if v.last() != Some(&o) {
                    v.push(o);
                }
            }
        }
    }

    pub fn as_slice(&self) -> &[u32] {
        match self {
            Plist::Empty => &[],
            Plist::One(x) => std::slice::from_ref(x),
            Plist::Many(v) => v,
        }
    }
}

/// The seq range of one stream inside a block.
#[derive(Clone, Debug, PartialEq, Encode, Decode)]
pub struct StreamRun {
    pub agent: AgentId,
    pub epoch: Epoch,
    pub min_seq: u64,
    pub max_seq: u64,
}

/// Where a page sits in its block.
#[derive(Clone, Debug, PartialEq, Encode, Decode)]
pub struct PageRef {
    pub first: u32,
    pub count: u32,
    pub raw_len: u32,
    pub stored_len: u32,
}

/// The directory entry of one sealed block (`blocks` column family).
#[derive(Clone, Debug, PartialEq, Encode, Decode)]
pub struct BlockMeta {
    pub version: u32,
    pub count: u32,
    pub min_ts: i64,
    pub max_ts: i64,
    pub streams: Vec<StreamRun>,
    pub pages: Vec<PageRef>,
    pub cols_raw_len: u32,
    pub cols_stored_len: u32,
    /// Every field path set in at least one event, sorted.
    pub fields: Vec<String>,
    /// Min and max of numeric fields, sorted by path.
    pub num_ranges: Vec<(String, f64, f64)>,
    pub raw_message_bytes: u64,
    pub raw_bytes: u64,
    pub stored_bytes: u64,
}

impl BlockMeta {
    /// Checks the invariants the readers rely on.
    pub fn check(&self) -> Result<(), String> {
        if self.version != BLOCK_VERSION {
            return Err(format!(
                "block version {} is not supported; this build reads version {BLOCK_VERSION}",
                self.version
            ));
        }
        let n = self.count as usize;
        if n == 0
            || n > codec::MAX_BLOCK_EVENTS
            || self.streams.is_empty()
            || self.streams.len() > n
        {
            return Err("block event or stream count out of range".into());
        }
        let mut next = 0u32;
        for p in &self.pages {
            if p.first != next || p.count == 0 || p.raw_len as usize > codec::MAX_PAGE_RAW {
                return Err("block pages do not tile the block".into());
            }
            next = p.first.checked_add(p.count).ok_or("page range overflows")?;
        }
        if next as usize != n || self.cols_raw_len as usize > codec::MAX_COLS_RAW {
            return Err("block pages do not cover the block".into());
        }
        if self.min_ts > self.max_ts {
            return Err("block time range is inverted".into());
        }
        Ok(())
    }

    pub fn has_field(&self, f: &str) -> bool {
        self.fields.binary_search_by(|p| p.as_str().cmp(f)).is_ok()
    }

    pub fn num_range(&self, f: &str) -> Option<(f64, f64)> {
        self.num_ranges
            .binary_search_by(|p| p.0.as_str().cmp(f))
            .ok()
            .map(|i| (self.num_ranges[i].1, self.num_ranges[i].2))
    }

    /// Index of the page holding `offset`.
    pub fn page_of(&self, offset: usize) -> Option<usize> {
        let i = self.pages.partition_point(|p| (p.first as usize) <= offset);
        i.checked_sub(1)
    }
}

/// A block ready to be written.
pub struct Sealed {
    pub meta: BlockMeta,
    pub cols: Vec<u8>,
    pub pages: Vec<Vec<u8>>,
    /// Posting chunks: (first term, chunk).
    pub postings: Vec<(Vec<u8>, Vec<u8>)>,
}

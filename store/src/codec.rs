//! Byte formats of the store: keys, varints, bitsets, postings, columns and pages.
//!
//! Everything read back from disk goes through the decoders here, which check
//! every length against a cap before allocating and return `Corrupt` instead of
//! panicking. The formats are described in the crate documentation.

use std::fmt;

use vigie_proto::event::Event;
use vigie_proto::{AgentId, Epoch};

/// Bytes a decoder could not make sense of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Corrupt(pub String);

impl fmt::Display for Corrupt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn corrupt(what: &str) -> Corrupt {
    Corrupt(what.to_string())
}

/// Most events in one sealed block. Do not raise past `u32` offsets.
pub const MAX_BLOCK_EVENTS: usize = 1 << 20;
/// Largest decompressed page.
pub const MAX_PAGE_RAW: usize = 64 * 1024 * 1024;
/// Largest decompressed column set.
pub const MAX_COLS_RAW: usize = 64 * 1024 * 1024;
/// Largest decoded event (bincode limit).
pub const MAX_EVENT_BYTES: usize = 8 * 1024 * 1024;
/// Largest recent row (one committed batch).
pub const MAX_ROW_BYTES: usize = 256 * 1024 * 1024;

pub fn bincode_cfg() -> bincode::config::Configuration {
    bincode::config::standard()
}

pub fn event_cfg() -> bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<MAX_EVENT_BYTES>,
> {
    bincode::config::standard().with_limit::<MAX_EVENT_BYTES>()
}

// ---------------------------------------------------------------------------
// Varints

pub fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

pub fn varint_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

pub fn get_varint(buf: &[u8], pos: &mut usize) -> Result<u64, Corrupt> {
    let mut v: u64 = 0;
    let mut shift = 0;
    loop {
        let b = *buf
            .get(*pos)
            .ok_or_else(|| corrupt("varint runs past the end"))?;
        *pos += 1;
        if shift == 63 && b > 1 {
            return Err(corrupt("varint overflows 64 bits"));
        }
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
        shift += 7;
        if shift > 63 {
            return Err(corrupt("varint is too long"));
        }
    }
}

pub fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

pub fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

// ---------------------------------------------------------------------------
// Keys

/// Big-endian, sign-flipped i64: byte order equals numeric order.
pub fn i64_key(v: i64) -> [u8; 8] {
    ((v as u64) ^ (1 << 63)).to_be_bytes()
}

pub fn i64_from_key(b: [u8; 8]) -> i64 {
    (u64::from_be_bytes(b) ^ (1 << 63)) as i64
}

pub fn stream_key(agent: AgentId, epoch: Epoch) -> [u8; 24] {
    let mut k = [0u8; 24];
    k[..16].copy_from_slice(&agent.0);
    k[16..].copy_from_slice(&epoch.0.to_be_bytes());
    k
}

pub fn page_key(block: u64, page: u32) -> [u8; 12] {
    let mut k = [0u8; 12];
    k[..8].copy_from_slice(&block.to_be_bytes());
    k[8..].copy_from_slice(&page.to_be_bytes());
    k
}

pub fn posting_key(block: u64, term: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + term.len());
    k.extend_from_slice(&block.to_be_bytes());
    k.extend_from_slice(term);
    k
}

/// Index term of a message token: `0x01` + token.
pub const TERM_MESSAGE: u8 = 0x01;

/// Index term of two adjacent message tokens: `0x02` + first + ` ` + second.
pub const TERM_BIGRAM: u8 = 0x02;

/// Whether a token takes part in pair terms: no ASCII digit (numbers make pairs unique).
pub fn is_wordy(tok: &[u8]) -> bool {
    !tok.is_empty() && !tok.iter().any(u8::is_ascii_digit)
}

/// Writes the pair term of two adjacent tokens; false when the pair is not indexed
/// (a token with a digit, or longer than the term limit together). Do not change.
pub fn bigram_term(out: &mut Vec<u8>, a: &[u8], b: &[u8]) -> bool {
    if !is_wordy(a) || !is_wordy(b) || a.len() + 1 + b.len() > crate::query::MAX_TERM_BYTES {
        return false;
    }
    out.clear();
    out.push(TERM_BIGRAM);
    out.extend_from_slice(a);
    out.push(b' ');
    out.extend_from_slice(b);
    true
}

/// Completes a message term whose token follows the `0x01` tag in `buf`: the
/// term itself, or its cut and marked form when the token is long.
pub fn finish_message_term(buf: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    let (form, exact) = crate::query::index_form_bytes(&buf[1..]);
    if exact {
        return std::borrow::Cow::Borrowed(buf);
    }
    let mut t = Vec::with_capacity(form.len() + 2);
    t.push(TERM_MESSAGE);
    t.extend_from_slice(form);
    t.push(crate::query::CUT_MARK);
    std::borrow::Cow::Owned(t)
}

/// Writes the index term for a message token (cut when long).
pub fn message_term(out: &mut Vec<u8>, token: &str) {
    out.clear();
    out.push(TERM_MESSAGE);
    let (form, exact) = crate::query::index_form(token);
    out.extend_from_slice(form.as_bytes());
    if !exact {
        out.push(crate::query::CUT_MARK);
    }
}

/// Writes the index term for a keyword value: `path` + `0x00` + lowercased value (cut when long).
pub fn field_term(out: &mut Vec<u8>, path: &str, lowered: &str) {
    out.clear();
    out.extend_from_slice(path.as_bytes());
    out.push(0);
    let (form, exact) = crate::query::index_form(lowered);
    out.extend_from_slice(form.as_bytes());
    if !exact {
        out.push(crate::query::CUT_MARK);
    }
}

// ---------------------------------------------------------------------------
// Bitsets

/// A fixed-size set of event offsets within one block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bits {
    words: Vec<u64>,
    len: usize,
}

impl Bits {
    pub fn empty(len: usize) -> Bits {
        Bits {
            words: vec![0; len.div_ceil(64)],
            len,
        }
    }
    pub fn full(len: usize) -> Bits {
        let mut b = Bits {
            words: vec![u64::MAX; len.div_ceil(64)],
            len,
        };
        b.trim();
        b
    }
    fn trim(&mut self) {
        let extra = self.words.len() * 64 - self.len;
        if extra > 0
            && let Some(last) = self.words.last_mut()
        {
            *last &= u64::MAX >> extra;
        }
    }
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn set(&mut self, i: usize) {
        if i < self.len {
            self.words[i / 64] |= 1 << (i % 64);
        }
    }
    pub fn and_with(&mut self, o: &Bits) {
        for (a, b) in self.words.iter_mut().zip(&o.words) {
            *a &= *b;
        }
    }
    pub fn or_with(&mut self, o: &Bits) {
        for (a, b) in self.words.iter_mut().zip(&o.words) {
            *a |= *b;
        }
    }
    pub fn negate(&mut self) {
        for w in &mut self.words {
            *w = !*w;
        }
        self.trim();
    }
    pub fn count(&self) -> u64 {
        self.words.iter().map(|w| u64::from(w.count_ones())).sum()
    }
    pub fn is_empty(&self) -> bool {
        self.words.iter().all(|w| *w == 0)
    }
    /// Offsets in increasing order.
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.words.iter().enumerate().flat_map(|(wi, &w)| {
            let mut w = w;
            std::iter::from_fn(move || {
                if w == 0 {
                    return None;
                }
                let t = w.trailing_zeros() as usize;
                w &= w - 1;
                Some(wi * 64 + t)
            })
        })
    }
    /// Offsets in decreasing order.
    pub fn iter_rev(&self) -> impl Iterator<Item = usize> + '_ {
        self.words.iter().enumerate().rev().flat_map(|(wi, &w)| {
            let mut w = w;
            std::iter::from_fn(move || {
                if w == 0 {
                    return None;
                }
                let t = 63 - w.leading_zeros() as usize;
                w &= !(1u64 << t);
                Some(wi * 64 + t)
            })
        })
    }
}

// ---------------------------------------------------------------------------
// Postings: one value per (block, term)
//
//   kind u8: 0 = sorted offsets as varint deltas, 1 = bitmap of ceil(n/8) bytes (LSB first)
//   varint count
//   payload

const POSTING_DELTAS: u8 = 0;
const POSTING_BITMAP: u8 = 1;

/// Encodes sorted, distinct offsets of a block of `n` events.
pub fn encode_postings(offsets: &[u32], n: usize, out: &mut Vec<u8>) {
    out.clear();
    let mut delta_len = 0usize;
    let mut prev = 0u32;
    for (i, &o) in offsets.iter().enumerate() {
        let d = if i == 0 { o } else { o - prev };
        delta_len += varint_len(u64::from(d));
        prev = o;
    }
    let bitmap_len = n.div_ceil(8);
    if bitmap_len < delta_len {
        out.push(POSTING_BITMAP);
        put_varint(out, offsets.len() as u64);
        let start = out.len();
        out.resize(start + bitmap_len, 0);
        for &o in offsets {
            out[start + (o as usize) / 8] |= 1 << (o % 8);
        }
    } else {
        out.push(POSTING_DELTAS);
        put_varint(out, offsets.len() as u64);
        let mut prev = 0u32;
        for (i, &o) in offsets.iter().enumerate() {
            let d = if i == 0 { o } else { o - prev };
            put_varint(out, u64::from(d));
            prev = o;
        }
    }
}

pub fn decode_postings(v: &[u8], n: usize) -> Result<Bits, Corrupt> {
    let kind = *v.first().ok_or_else(|| corrupt("empty posting list"))?;
    let mut pos = 1;
    let count = get_varint(v, &mut pos)? as usize;
    if count > n {
        return Err(corrupt("posting list longer than its block"));
    }
    let mut bits = Bits::empty(n);
    match kind {
        POSTING_BITMAP => {
            let bytes = v
                .get(pos..)
                .ok_or_else(|| corrupt("posting bitmap is cut"))?;
            if bytes.len() != n.div_ceil(8) {
                return Err(corrupt("posting bitmap has the wrong size"));
            }
            for (i, b) in bytes.iter().enumerate() {
                let w = &mut bits.words[i / 8];
                *w |= u64::from(*b) << ((i % 8) * 8);
            }
            bits.trim();
        }
        POSTING_DELTAS => {
            let mut cur: u64 = 0;
            for i in 0..count {
                let d = get_varint(v, &mut pos)?;
                cur = if i == 0 {
                    d
                } else {
                    cur.checked_add(d)
                        .ok_or_else(|| corrupt("posting offset overflows"))?
                };
                if (i > 0 && d == 0) || cur >= n as u64 {
                    return Err(corrupt("posting offsets out of order or out of the block"));
                }
                bits.set(cur as usize);
            }
            if pos != v.len() {
                return Err(corrupt("trailing bytes after a posting list"));
            }
        }
        _ => return Err(corrupt("unknown posting list kind")),
    }
    Ok(bits)
}

// ---------------------------------------------------------------------------
// Posting chunks: a block's posting lists in term order, packed into values of
// about `POSTING_CHUNK_BYTES`, keyed by block id and the chunk's first term.
//
//   varint count, then per term: varint shared prefix length with the previous
//   term, varint suffix length, suffix, varint posting length, posting list.

/// Target size of one posting chunk. Changing it does not change the format.
pub const POSTING_CHUNK_BYTES: usize = 16 * 1024;
/// Largest chunk a reader accepts.
pub const MAX_CHUNK_BYTES: usize = 64 * 1024 * 1024;

pub struct ChunkWriter {
    target: usize,
    out: Vec<(Vec<u8>, Vec<u8>)>,
    first: Vec<u8>,
    prev: Vec<u8>,
    body: Vec<u8>,
    count: u64,
}

impl ChunkWriter {
    pub fn new(target: usize) -> Self {
        ChunkWriter {
            target,
            out: Vec::new(),
            first: Vec::new(),
            prev: Vec::new(),
            body: Vec::new(),
            count: 0,
        }
    }

    /// Adds a term; terms must come in increasing order.
    pub fn push(&mut self, term: &[u8], posting: &[u8]) {
        if self.count == 0 {
            self.first = term.to_vec();
            self.prev.clear();
        }
        let shared = self
            .prev
            .iter()
            .zip(term)
            .take_while(|(a, b)| a == b)
            .count();
        put_varint(&mut self.body, shared as u64);
        put_varint(&mut self.body, (term.len() - shared) as u64);
        self.body.extend_from_slice(&term[shared..]);
        put_varint(&mut self.body, posting.len() as u64);
        self.body.extend_from_slice(posting);
        self.prev.clear();
        self.prev.extend_from_slice(term);
        self.count += 1;
        if self.body.len() >= self.target {
            self.cut();
        }
    }

    fn cut(&mut self) {
        if self.count == 0 {
            return;
        }
        let mut v = Vec::with_capacity(self.body.len() + 4);
        put_varint(&mut v, self.count);
        v.extend_from_slice(&self.body);
        self.out.push((std::mem::take(&mut self.first), v));
        self.body.clear();
        self.count = 0;
    }

    pub fn finish(mut self) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.cut();
        self.out
    }
}

/// One (term, posting list) of a chunk.
pub type ChunkEntry<'t, 'a> = (&'t [u8], &'a [u8]);

/// Walks the terms of a chunk in order.
pub struct ChunkReader<'a> {
    buf: &'a [u8],
    pos: usize,
    left: u64,
    term: Vec<u8>,
}

impl<'a> ChunkReader<'a> {
    pub fn new(buf: &'a [u8]) -> Result<Self, Corrupt> {
        if buf.len() > MAX_CHUNK_BYTES {
            return Err(corrupt("posting chunk is over the cap"));
        }
        let mut pos = 0;
        let left = get_varint(buf, &mut pos)?;
        Ok(ChunkReader {
            buf,
            pos,
            left,
            term: Vec::new(),
        })
    }

    /// The next (term, posting list), `None` at the end.
    pub fn next_entry(&mut self) -> Result<Option<ChunkEntry<'_, 'a>>, Corrupt> {
        if self.left == 0 {
            if self.pos != self.buf.len() {
                return Err(corrupt("trailing bytes after a posting chunk"));
            }
            return Ok(None);
        }
        self.left -= 1;
        let shared = get_varint(self.buf, &mut self.pos)? as usize;
        let suffix = get_varint(self.buf, &mut self.pos)? as usize;
        if shared > self.term.len() {
            return Err(corrupt(
                "posting chunk term shares more than the previous term",
            ));
        }
        let s = self
            .buf
            .get(self.pos..self.pos.saturating_add(suffix))
            .ok_or_else(|| corrupt("posting chunk term is cut"))?;
        self.term.truncate(shared);
        self.term.extend_from_slice(s);
        self.pos += suffix;
        let plen = get_varint(self.buf, &mut self.pos)? as usize;
        let p = self
            .buf
            .get(self.pos..self.pos.saturating_add(plen))
            .ok_or_else(|| corrupt("posting list is cut"))?;
        self.pos += plen;
        Ok(Some((&self.term, p)))
    }
}

// ---------------------------------------------------------------------------
// Columns: per-event fixed facts of a block, in block order, in four sections
// that decode independently (a host filter never decodes times, a histogram
// never decodes hosts).
//
//   u8 section count (4), then per section varint raw length, varint stored length,
//   then the sections, each one zstd frame:
//     TS   n × zigzag(ts - previous ts)
//     IDS  n × varint stream index, n × varint (seq - stream's min seq)
//     KS   n × kind code, n × severity code (8 = no log section)
//     HOST n × varint host id

/// Severity column code for events without a `log` section.
pub const SEV_NONE: u8 = 8;

/// Column sections, as a bit set.
pub const COL_TS: u8 = 1;
pub const COL_IDS: u8 = 2;
pub const COL_KS: u8 = 4;
pub const COL_HOST: u8 = 8;
pub const COL_ALL: u8 = 15;
const SECTIONS: [u8; 4] = [COL_TS, COL_IDS, COL_KS, COL_HOST];

/// Decoded columns; a section not `loaded` has empty vectors.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Columns {
    pub ts: Vec<i64>,
    pub stream: Vec<u32>,
    pub seq: Vec<u64>,
    pub kind: Vec<u8>,
    pub sev: Vec<u8>,
    pub host: Vec<u32>,
    pub loaded: u8,
}

impl Columns {
    pub fn len(&self) -> usize {
        self.ts
            .len()
            .max(self.stream.len())
            .max(self.kind.len())
            .max(self.host.len())
    }

    /// Encodes and compresses all sections.
    pub fn encode(
        &self,
        stream_min: &[u64],
        comp: &mut zstd::bulk::Compressor<'_>,
    ) -> Result<(Vec<u8>, usize), String> {
        let n = self.ts.len();
        let mut raws: Vec<Vec<u8>> = vec![
            Vec::with_capacity(n * 4),
            Vec::with_capacity(n * 3),
            Vec::with_capacity(n * 2),
            Vec::with_capacity(n * 2),
        ];
        let mut prev = 0i64;
        for &t in &self.ts {
            put_varint(&mut raws[0], zigzag(t.wrapping_sub(prev)));
            prev = t;
        }
        for &st in &self.stream {
            put_varint(&mut raws[1], u64::from(st));
        }
        for (i, &q) in self.seq.iter().enumerate() {
            let base = stream_min
                .get(self.stream[i] as usize)
                .copied()
                .unwrap_or(0);
            put_varint(&mut raws[1], q.wrapping_sub(base));
        }
        raws[2].extend_from_slice(&self.kind);
        raws[2].extend_from_slice(&self.sev);
        for &h in &self.host {
            put_varint(&mut raws[3], u64::from(h));
        }
        let mut out = vec![SECTIONS.len() as u8];
        let mut zs = Vec::new();
        let mut raw_total = 0;
        for r in &raws {
            let z = comp.compress(r).map_err(|e| format!("zstd: {e}"))?;
            put_varint(&mut out, r.len() as u64);
            put_varint(&mut out, z.len() as u64);
            raw_total += r.len();
            zs.push(z);
        }
        for z in zs {
            out.extend_from_slice(&z);
        }
        Ok((out, raw_total))
    }

    /// Decodes the sections in `need` that are not loaded yet, from the stored value.
    pub fn load(
        &mut self,
        value: &[u8],
        n: usize,
        stream_min: &[u64],
        need: u8,
    ) -> Result<(), Corrupt> {
        let want = need & !self.loaded;
        if want == 0 {
            return Ok(());
        }
        if n > MAX_BLOCK_EVENTS {
            return Err(corrupt("column count out of range"));
        }
        let count = *value.first().ok_or_else(|| corrupt("empty columns"))? as usize;
        if count != SECTIONS.len() {
            return Err(corrupt("unexpected column section count"));
        }
        let mut pos = 1;
        let mut lens = Vec::with_capacity(count);
        for _ in 0..count {
            let raw = get_varint(value, &mut pos)? as usize;
            let stored = get_varint(value, &mut pos)? as usize;
            lens.push((raw, stored));
        }
        for (sect, (raw_len, stored)) in SECTIONS.iter().zip(lens) {
            let frame = value
                .get(pos..pos.saturating_add(stored))
                .ok_or_else(|| corrupt("column section is cut"))?;
            pos += stored;
            if want & sect == 0 {
                continue;
            }
            let raw = decompress(frame, raw_len, MAX_COLS_RAW)?;
            let mut p = 0;
            match *sect {
                COL_TS => {
                    let mut ts = Vec::with_capacity(n);
                    let mut prev = 0i64;
                    for _ in 0..n {
                        prev = prev.wrapping_add(unzigzag(get_varint(&raw, &mut p)?));
                        ts.push(prev);
                    }
                    self.ts = ts;
                }
                COL_IDS => {
                    let mut stream = Vec::with_capacity(n);
                    for _ in 0..n {
                        let st = get_varint(&raw, &mut p)?;
                        if st as usize >= stream_min.len() {
                            return Err(corrupt("stream index out of range"));
                        }
                        stream.push(st as u32);
                    }
                    let mut seq = Vec::with_capacity(n);
                    for &st in &stream {
                        seq.push(stream_min[st as usize].wrapping_add(get_varint(&raw, &mut p)?));
                    }
                    self.stream = stream;
                    self.seq = seq;
                }
                COL_KS => {
                    if raw.len() != 2 * n {
                        return Err(corrupt("kind and severity columns have the wrong size"));
                    }
                    let (k, sv) = raw.split_at(n);
                    if k.iter().any(|c| vigie_proto::Kind::from_code(*c).is_none())
                        || sv.iter().any(|c| *c > SEV_NONE)
                    {
                        return Err(corrupt("kind or severity code out of range"));
                    }
                    self.kind = k.to_vec();
                    self.sev = sv.to_vec();
                    p = raw.len();
                }
                _ => {
                    let mut host = Vec::with_capacity(n);
                    for _ in 0..n {
                        host.push(
                            u32::try_from(get_varint(&raw, &mut p)?)
                                .map_err(|_| corrupt("host id out of range"))?,
                        );
                    }
                    self.host = host;
                }
            }
            if p != raw.len() {
                return Err(corrupt("trailing bytes after a column section"));
            }
            self.loaded |= sect;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Pages: runs of consecutive events of a block.
//
//   varint n, n × varint event length, then the events (bincode-2 standard, with
//   `event.id` and `agent.id` cleared: they are rebuilt from the columns); zstd-compressed.

pub struct PageBuilder {
    lens: Vec<u32>,
    data: Vec<u8>,
}

impl PageBuilder {
    pub fn new() -> Self {
        PageBuilder {
            lens: Vec::new(),
            data: Vec::new(),
        }
    }
    /// Adds one event already encoded with bincode (standard config).
    pub fn push_raw(&mut self, encoded: &[u8]) {
        self.data.extend_from_slice(encoded);
        self.lens.push(encoded.len() as u32);
    }
    pub fn len(&self) -> usize {
        self.lens.len()
    }
    pub fn raw_size(&self) -> usize {
        self.data.len()
    }
    /// The raw page bytes; resets the builder.
    pub fn take_raw(&mut self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.data.len() + self.lens.len() * 2 + 8);
        put_varint(&mut out, self.lens.len() as u64);
        for &l in &self.lens {
            put_varint(&mut out, u64::from(l));
        }
        out.extend_from_slice(&self.data);
        self.lens.clear();
        self.data.clear();
        out
    }
}

/// A decompressed page: events decoded one at a time.
pub struct Page {
    raw: Vec<u8>,
    /// Start of each event in `raw`, plus the end.
    bounds: Vec<usize>,
}

impl Page {
    pub fn parse(raw: Vec<u8>, expect_n: usize) -> Result<Page, Corrupt> {
        let mut pos = 0;
        let n = get_varint(&raw, &mut pos)? as usize;
        if n != expect_n {
            return Err(corrupt("page event count does not match the block"));
        }
        let mut lens = Vec::with_capacity(n);
        for _ in 0..n {
            lens.push(get_varint(&raw, &mut pos)? as usize);
        }
        let mut bounds = Vec::with_capacity(n + 1);
        let mut at = pos;
        bounds.push(at);
        for l in lens {
            at = at
                .checked_add(l)
                .filter(|a| *a <= raw.len())
                .ok_or_else(|| corrupt("page event length past the end"))?;
            bounds.push(at);
        }
        if at != raw.len() {
            return Err(corrupt("trailing bytes after the page events"));
        }
        Ok(Page { raw, bounds })
    }

    pub fn event(&self, i: usize) -> Result<Event, Corrupt> {
        match (self.bounds.get(i), self.bounds.get(i + 1)) {
            (Some(a), Some(b)) => decode_event(&self.raw[*a..*b]),
            _ => Err(corrupt("event index past the page")),
        }
    }
}

/// Decodes one stored event (bincode, length-capped, bounds-checked).
pub fn decode_event(bytes: &[u8]) -> Result<Event, Corrupt> {
    let (e, used): (Event, usize) = bincode::decode_from_slice(bytes, event_cfg())
        .map_err(|e| Corrupt(format!("event does not decode: {e}")))?;
    if used != bytes.len() {
        return Err(corrupt("event has trailing bytes"));
    }
    e.check_bounds().map_err(Corrupt)?;
    Ok(e)
}

// ---------------------------------------------------------------------------
// Recent rows: one committed batch, events stripped of their ids.
//
//   agent (16) · epoch (u64 LE) · first seq (u64 LE) · varint n · n × (varint length, bincode event)

pub fn encode_row_header(
    out: &mut Vec<u8>,
    agent: AgentId,
    epoch: Epoch,
    first_seq: u64,
    n: usize,
) {
    out.extend_from_slice(&agent.0);
    out.extend_from_slice(&epoch.0.to_le_bytes());
    out.extend_from_slice(&first_seq.to_le_bytes());
    put_varint(out, n as u64);
}

/// A parsed recent row: its stream, first seq, and the bytes of each event.
pub struct Row<'a> {
    pub agent: AgentId,
    pub epoch: Epoch,
    pub first_seq: u64,
    pub events: Vec<&'a [u8]>,
}

pub fn parse_row(v: &[u8]) -> Result<Row<'_>, Corrupt> {
    if v.len() < 32 || v.len() > MAX_ROW_BYTES {
        return Err(corrupt("recent row size out of range"));
    }
    let mut a = [0u8; 16];
    a.copy_from_slice(&v[..16]);
    let mut e = [0u8; 8];
    e.copy_from_slice(&v[16..24]);
    let mut s = [0u8; 8];
    s.copy_from_slice(&v[24..32]);
    let mut pos = 32;
    let n = get_varint(v, &mut pos)? as usize;
    if n > v.len() {
        return Err(corrupt("recent row event count out of range"));
    }
    let mut events = Vec::with_capacity(n);
    for _ in 0..n {
        let l = get_varint(v, &mut pos)? as usize;
        let b = v
            .get(pos..pos.saturating_add(l))
            .ok_or_else(|| corrupt("recent row event is cut"))?;
        events.push(b);
        pos += l;
    }
    if pos != v.len() {
        return Err(corrupt("trailing bytes after a recent row"));
    }
    Ok(Row {
        agent: AgentId(a),
        epoch: Epoch(u64::from_le_bytes(e)),
        first_seq: u64::from_le_bytes(s),
        events,
    })
}

pub fn decompress(data: &[u8], raw_len: usize, cap: usize) -> Result<Vec<u8>, Corrupt> {
    if raw_len > cap {
        return Err(corrupt("declared size is over the cap"));
    }
    let out = zstd::bulk::decompress(data, raw_len).map_err(|e| Corrupt(format!("zstd: {e}")))?;
    if out.len() != raw_len {
        return Err(corrupt("decompressed size differs from the declared size"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip() {
        let mut b = Vec::new();
        for v in [0, 1, 127, 128, 300, u64::MAX] {
            b.clear();
            put_varint(&mut b, v);
            assert_eq!(b.len(), varint_len(v));
            let mut p = 0;
            assert_eq!(get_varint(&b, &mut p), Ok(v));
        }
        for v in [0i64, -1, 1, i64::MIN, i64::MAX] {
            assert_eq!(unzigzag(zigzag(v)), v);
        }
        assert!(get_varint(&[0xff; 11], &mut 0).is_err());
    }

    #[test]
    fn i64_keys_sort_numerically() {
        let vals = [i64::MIN, -5, -1, 0, 1, 7, i64::MAX];
        for w in vals.windows(2) {
            assert!(i64_key(w[0]) < i64_key(w[1]));
            assert_eq!(i64_from_key(i64_key(w[0])), w[0]);
        }
    }

    #[test]
    fn postings_round_trip_both_forms() {
        let mut out = Vec::new();
        for (offs, n) in [
            (vec![0u32, 5, 1000], 2000usize),
            ((0..1500).collect::<Vec<u32>>(), 2000),
            (vec![], 10),
        ] {
            encode_postings(&offs, n, &mut out);
            let bits = decode_postings(&out, n).expect("decode");
            assert_eq!(bits.iter().map(|o| o as u32).collect::<Vec<_>>(), offs);
        }
        assert!(decode_postings(&[0, 3, 1, 0, 0], 10).is_err());
        assert!(decode_postings(&[7], 10).is_err());
    }

    #[test]
    fn posting_chunks_round_trip() {
        let mut w = ChunkWriter::new(40);
        let terms: Vec<Vec<u8>> = (0..50u32)
            .map(|i| format!("term{i:03}").into_bytes())
            .collect();
        for t in &terms {
            w.push(t, &[1, 2, 3]);
        }
        let chunks = w.finish();
        assert!(chunks.len() > 5);
        let mut seen = Vec::new();
        for (first, c) in &chunks {
            let mut r = ChunkReader::new(c).expect("chunk");
            let mut n = 0;
            while let Some((t, p)) = r.next_entry().expect("entry") {
                if n == 0 {
                    assert_eq!(t, first.as_slice());
                }
                assert_eq!(p, &[1, 2, 3]);
                seen.push(t.to_vec());
                n += 1;
            }
        }
        assert_eq!(seen, terms);
        assert!(
            ChunkReader::new(&[2, 9, 1, b'a'])
                .expect("r")
                .next_entry()
                .is_err()
        );
    }

    /// Do not change: these byte forms are on disk (format version 1).
    #[test]
    fn golden_key_and_term_forms() {
        let mut b = Vec::new();
        message_term(&mut b, "failed");
        assert_eq!(b, b"\x01failed");
        assert!(bigram_term(&mut b, b"failed", b"password"));
        assert_eq!(b, b"\x02failed password");
        assert!(!bigram_term(&mut b, b"port", b"22"));
        field_term(&mut b, "user.name", "root");
        assert_eq!(b, b"user.name\x00root");
        message_term(&mut b, &"a".repeat(70));
        assert_eq!(b.len(), 1 + 64 + 1);
        assert_eq!(b.last(), Some(&0x01));
        assert_eq!(i64_key(0), [0x80, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(page_key(1, 2), [0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 2]);
        assert_eq!(posting_key(3, b"t"), [0, 0, 0, 0, 0, 0, 0, 3, b't']);
        let mut p = Vec::new();
        encode_postings(&[1, 3], 1000, &mut p);
        assert_eq!(p, [0, 2, 1, 2]);
        encode_postings(&(0..16).collect::<Vec<u32>>(), 16, &mut p);
        assert_eq!(p, [1, 16, 0xff, 0xff]);
        let mut row = Vec::new();
        encode_row_header(&mut row, AgentId([7; 16]), Epoch(1), 5, 2);
        assert_eq!(row.len(), 33);
        assert_eq!(&row[16..24], &1u64.to_le_bytes());
        assert_eq!(&row[24..32], &5u64.to_le_bytes());
        assert_eq!(row[32], 2);
        assert_eq!(
            (COL_TS, COL_IDS, COL_KS, COL_HOST, SEV_NONE),
            (1, 2, 4, 8, 8)
        );
    }

    #[test]
    fn columns_round_trip_by_section() {
        let c = Columns {
            ts: vec![5, -3, 1 << 40],
            stream: vec![0, 1, 0],
            seq: vec![10, 7, 12],
            kind: vec![0, 6, 1],
            sev: vec![8, 3, 6],
            host: vec![2, 0, 1],
            loaded: COL_ALL,
        };
        let mut comp = zstd::bulk::Compressor::new(1).expect("zstd");
        let (v, _) = c.encode(&[10, 7], &mut comp).expect("encode");
        let mut d = Columns::default();
        d.load(&v, 3, &[10, 7], COL_HOST).expect("host");
        assert_eq!(
            (d.host.clone(), d.ts.len(), d.loaded),
            (vec![2, 0, 1], 0, COL_HOST)
        );
        d.load(&v, 3, &[10, 7], COL_ALL).expect("all");
        assert_eq!(d, c);
        assert!(
            Columns::default()
                .load(&v[..v.len() - 3], 3, &[10, 7], COL_ALL)
                .is_err()
        );
        assert!(Columns::default().load(&v, 3, &[10], COL_IDS).is_err());
    }

    #[test]
    fn bits_ops() {
        let mut a = Bits::empty(130);
        a.set(0);
        a.set(64);
        a.set(129);
        assert_eq!(a.iter().collect::<Vec<_>>(), [0, 64, 129]);
        assert_eq!(a.iter_rev().collect::<Vec<_>>(), [129, 64, 0]);
        let mut n = a.clone();
        n.negate();
        assert_eq!(n.count(), 127);
        assert_eq!(Bits::full(130).count(), 130);
    }
}

//! P8/P9 peer: tantivy on the events and queries of `store/examples/store_bench.rs`.
//!
//! ```text
//! cargo run --release -- --events EVENTS.ndjson --index DIR [--queries ../queries.tsv]
//!     [--runs R] [--docstore lz4|zstd:LEVEL|none] [--blocksize BYTES] [--threads T]
//!     [--budget-mib M] [--reuse] [--per-query] [--split-count]
//! ```
//!
//! Reads the NDJSON that `store_bench --dump FILE` writes (one `Event::to_json()`
//! per line), indexes it into a new index in DIR (DIR must not exist or be empty;
//! `--reuse` queries the index already in DIR instead) with T indexing threads
//! (default 1, which keeps the documents in time order) and M MiB of indexing memory
//! (default 1024), commits, merges what is left to one segment, then runs the queries of `bench/peers/queries.tsv` (written by
//! `store_bench --print-queries`) R times each, round-robin over each group as
//! store_bench does, and prints lines in store_bench's format, including its
//! `per-query` lines with `--per-query`.
//!
//! Schema (a usual one for logs):
//!
//! - `message`: text with positions (phrases), the store's tokenizer (maximal runs
//!   of letters, digits and `_`, lowercased), no field norms (no scoring: results
//!   are ordered by time), not stored on its own;
//! - keywords, lowercased (the store's keyword matches are case-insensitive), one
//!   term per value: `host.name`, `event.dataset`, `log.level` (also fast, for
//!   histogram breakdowns and top values), `user.name`, `source.ip`,
//!   `event.outcome`, `log.logger`, `process.name`;
//! - `source.port`: u64, indexed (without field norms) and fast;
//! - `@timestamp`: date, fast only, nanosecond precision (time ranges, newest-first
//!   order and date histograms read the fast field);
//! - `doc`: the whole event JSON line, stored (so newest 100 returns events).
//!
//! Translation of the store's query language, only for the forms the query list
//! uses (anything else is refused, never silently approximated): a bare word is a
//! term of `message` (several tokens: a phrase); `"…"` a phrase; `word*` a regex
//! `word.*` over `message` terms; `field:value` a term; `field:val*` a regex
//! `val.*` over the field's terms; `field>N` a range; `AND` / `NOT` a boolean
//! query; the empty query all documents. Every query is intersected with the time
//! range of the list (a fast-field range on `@timestamp`).
//!
//! Search = `Count` + `TopDocs` ordered by the `@timestamp` fast field (newest
//! 100) in one search, then the 100 stored documents are fetched; with
//! `--split-count`, `Count` and `TopDocs` run as two searches. Histogram = a
//! `date_histogram` aggregation over the query's matches with hard and extended bounds on the 24 h
//! range; with the `+breakdown` suffix, the same with `terms` sub-aggregations on
//! `log.level` and `event.dataset` per bucket (what the store's buckets also carry).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::time::Instant;

use tantivy::aggregation::AggregationCollector;
use tantivy::aggregation::agg_req::Aggregations;
use tantivy::collector::{Count, TopDocs};
use tantivy::query::{
    AllQuery, BooleanQuery, Occur, PhraseQuery, Query, RangeQuery, RegexQuery, TermQuery,
};
use tantivy::schema::{
    DateOptions, DateTimePrecision, FAST, Field, IndexRecordOption, NumericOptions, STORED, Schema,
    TextFieldIndexing, TextOptions,
};
use tantivy::store::{Compressor, ZstdCompressor};
use tantivy::tokenizer::{Token, TokenStream, Tokenizer};
use tantivy::{
    DateTime, Index, IndexSettings, Order, ReloadPolicy, Searcher, TantivyDocument, Term,
};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// Keyword fields: (event path, tantivy field name, fast).
const KEYWORDS: &[(&str, &str, bool)] = &[
    ("host.name", "host_name", true),
    ("event.dataset", "event_dataset", true),
    ("log.level", "log_level", true),
    ("user.name", "user_name", false),
    ("source.ip", "source_ip", false),
    ("event.outcome", "event_outcome", false),
    ("log.logger", "log_logger", false),
    ("process.name", "process_name", false),
];

// ---------------------------------------------------------------------------
// The store's tokenizer: maximal runs of letters, digits and `_`, lowercased
// char by char (`store/src/query.rs`, `for_each_token_bytes`).

#[derive(Clone, Default)]
struct VigieTokenizer {
    token: Token,
}

struct VigieTokenStream<'a> {
    text: &'a str,
    pos: usize,
    token: &'a mut Token,
}

fn is_token_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

impl Tokenizer for VigieTokenizer {
    type TokenStream<'a> = VigieTokenStream<'a>;
    fn token_stream<'a>(&'a mut self, text: &'a str) -> VigieTokenStream<'a> {
        self.token.reset();
        VigieTokenStream {
            text,
            pos: 0,
            token: &mut self.token,
        }
    }
}

impl TokenStream for VigieTokenStream<'_> {
    fn advance(&mut self) -> bool {
        self.token.text.clear();
        let rest = &self.text[self.pos..];
        let Some(start) = rest.find(is_token_char) else {
            self.pos = self.text.len();
            return false;
        };
        let from = self.pos + start;
        let len = self.text[from..]
            .find(|c: char| !is_token_char(c))
            .unwrap_or(self.text.len() - from);
        let to = from + len;
        for c in self.text[from..to].chars() {
            self.token.text.extend(c.to_lowercase());
        }
        self.token.offset_from = from;
        self.token.offset_to = to;
        self.token.position = self.token.position.wrapping_add(1);
        self.pos = to;
        true
    }
    fn token(&self) -> &Token {
        self.token
    }
    fn token_mut(&mut self) -> &mut Token {
        self.token
    }
}

fn tokens(text: &str) -> Vec<String> {
    let mut t = VigieTokenizer::default();
    let mut s = t.token_stream(text);
    let mut out = Vec::new();
    while s.advance() {
        out.push(s.token().text.clone());
    }
    out
}

fn lower(s: &str) -> String {
    s.chars().flat_map(char::to_lowercase).collect()
}

// ---------------------------------------------------------------------------
// Schema

struct Fields {
    message: Field,
    keywords: Vec<(&'static str, Field)>,
    source_port: Field,
    ts: Field,
    doc: Field,
}

fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let message = b.add_text_field(
        "message",
        TextOptions::default().set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer("vigie")
                .set_index_option(IndexRecordOption::WithFreqsAndPositions)
                .set_fieldnorms(false),
        ),
    );
    let keywords = KEYWORDS
        .iter()
        .map(|&(path, name, fast)| {
            let mut o = TextOptions::default().set_indexing_options(
                TextFieldIndexing::default()
                    .set_tokenizer("raw")
                    .set_index_option(IndexRecordOption::Basic)
                    .set_fieldnorms(false),
            );
            if fast {
                o = o.set_fast("raw");
            }
            (path, b.add_text_field(name, o))
        })
        .collect();
    // `INDEXED` would also add field norms (a byte per document), useless without scoring.
    let source_port = b.add_u64_field(
        "source_port",
        NumericOptions::default().set_indexed().set_fast(),
    );
    let ts = b.add_date_field(
        "ts",
        DateOptions::from(FAST).set_precision(DateTimePrecision::Nanoseconds),
    );
    let doc = b.add_text_field("doc", STORED);
    (
        b.build(),
        Fields {
            message,
            keywords,
            source_port,
            ts,
            doc,
        },
    )
}

fn keyword_field(f: &Fields, path: &str) -> Res<Field> {
    f.keywords
        .iter()
        .find(|(p, _)| *p == path)
        .map(|(_, fl)| *fl)
        .ok_or_else(|| format!("field {path:?} is not in the peer's schema").into())
}

/// The value at a dotted path of the event JSON, as text.
fn json_path<'a>(v: &'a serde_json::Value, path: &str) -> Option<&'a serde_json::Value> {
    let (head, tail) = match path.split_once('.') {
        Some((h, t)) => (h, Some(t)),
        None => (path, None),
    };
    let inner = v.get(head)?;
    match tail {
        Some(t) => json_path(inner, t),
        None => Some(inner),
    }
}

// ---------------------------------------------------------------------------
// Helpers

fn cpu_secs() -> f64 {
    let s = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = s.rsplit_once(')').map(|x| x.1).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let t = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (t(11) + t(12)) / 100.0
}

/// The same percentile as store_bench.
fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return 0.0;
    }
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn dir_bytes(dir: &Path) -> Res<u64> {
    let mut total = 0;
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let m = e.metadata()?;
        total += if m.is_dir() {
            dir_bytes(&e.path())?
        } else {
            m.len()
        };
    }
    Ok(total)
}

fn mib(b: u64) -> f64 {
    b as f64 / 1048576.0
}

// ---------------------------------------------------------------------------
// Queries

struct QueryList {
    search_range: (i64, i64),
    hist_range: (i64, i64),
    /// (group, bucket seconds, query), in file order.
    entries: Vec<(String, u64, String)>,
}

fn read_queries(path: &Path) -> Res<QueryList> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the query list {}: {e}", path.display()))?;
    let mut search_range = None;
    let mut hist_range = None;
    let mut entries = Vec::new();
    for line in text.lines() {
        if let Some(c) = line.strip_prefix("# ") {
            let f: Vec<&str> = c.split('\t').collect();
            let range = || -> Res<(i64, i64)> { Ok((f[1].parse()?, f[2].parse()?)) };
            match f[0] {
                "search_range_ns" if f.len() == 3 => search_range = Some(range()?),
                "histogram_range_ns" if f.len() == 3 => hist_range = Some(range()?),
                _ => {}
            }
            continue;
        }
        if line.trim().is_empty() {
            continue;
        }
        let mut f = line.splitn(3, '\t');
        let (Some(g), Some(s), Some(q)) = (f.next(), f.next(), f.next()) else {
            return Err(
                format!("bad query line {line:?}: expected group, bucket_secs, query").into(),
            );
        };
        entries.push((g.to_string(), s.parse()?, q.to_string()));
    }
    Ok(QueryList {
        search_range: search_range.ok_or("query list has no search_range_ns line")?,
        hist_range: hist_range.ok_or("query list has no histogram_range_ns line")?,
        entries,
    })
}

/// Splits a query into words, keeping `"…"` together.
fn words(q: &str) -> Res<Vec<String>> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in q.chars() {
        match c {
            '"' => {
                cur.push(c);
                quoted = !quoted;
            }
            c if c.is_whitespace() && !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if quoted {
        return Err(format!("unclosed quote in {q:?}").into());
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    Ok(out)
}

fn regex_escape(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if "\\.+*?()|[]{}^$#&-~".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn message_query(f: &Fields, text: &str) -> Res<Box<dyn Query>> {
    let toks = tokens(text);
    Ok(match toks.len() {
        0 => return Err(format!("no token in {text:?}").into()),
        1 => Box::new(TermQuery::new(
            Term::from_field_text(f.message, &toks[0]),
            IndexRecordOption::Basic,
        )),
        _ => Box::new(PhraseQuery::new(
            toks.iter()
                .map(|t| Term::from_field_text(f.message, t))
                .collect(),
        )),
    })
}

fn leaf(f: &Fields, w: &str) -> Res<Box<dyn Query>> {
    if let Some(inner) = w.strip_prefix('"').and_then(|x| x.strip_suffix('"')) {
        return message_query(f, inner);
    }
    if let Some((field, value)) = w.split_once('>') {
        if field == "source.port" && !value.starts_with('=') {
            let n: u64 = value.parse()?;
            return Ok(Box::new(RangeQuery::new(
                Bound::Excluded(Term::from_field_u64(f.source_port, n)),
                Bound::Unbounded,
            )));
        }
        return Err(format!("the peer does not translate {w:?}").into());
    }
    if let Some((field, value)) = w.split_once(':') {
        let fl = keyword_field(f, field)?;
        if let Some(prefix) = value.strip_suffix('*') {
            if prefix.contains('*') || prefix.is_empty() {
                return Err(format!("the peer does not translate {w:?}").into());
            }
            let re = format!("{}.*", regex_escape(&lower(prefix)));
            return Ok(Box::new(RegexQuery::from_pattern(&re, fl)?));
        }
        let value = value.trim_matches('"');
        return Ok(Box::new(TermQuery::new(
            Term::from_field_text(fl, &lower(value)),
            IndexRecordOption::Basic,
        )));
    }
    if let Some(prefix) = w.strip_suffix('*') {
        let toks = tokens(prefix);
        if toks.len() != 1 || toks[0].len() != prefix.len() {
            return Err(format!("the peer does not translate {w:?}").into());
        }
        let re = format!("{}.*", regex_escape(&toks[0]));
        return Ok(Box::new(RegexQuery::from_pattern(&re, f.message)?));
    }
    message_query(f, w)
}

/// The query, intersected with `[from, to)` on `@timestamp`.
fn translate(f: &Fields, q: &str, range: (i64, i64)) -> Res<Box<dyn Query>> {
    let mut clauses: Vec<(Occur, Box<dyn Query>)> = vec![(
        Occur::Must,
        Box::new(RangeQuery::new(
            Bound::Included(Term::from_field_date(
                f.ts,
                DateTime::from_timestamp_nanos(range.0),
            )),
            Bound::Excluded(Term::from_field_date(
                f.ts,
                DateTime::from_timestamp_nanos(range.1),
            )),
        )),
    )];
    let mut negate = false;
    for w in words(q)? {
        match w.as_str() {
            "AND" | "&&" => {}
            "NOT" => negate = true,
            "OR" | "||" => return Err(format!("the peer does not translate OR in {q:?}").into()),
            _ => {
                let occur = if negate { Occur::MustNot } else { Occur::Must };
                clauses.push((occur, leaf(f, &w)?));
                negate = false;
            }
        }
    }
    if clauses.len() == 1 {
        clauses.push((Occur::Must, Box::new(AllQuery)));
    }
    Ok(Box::new(BooleanQuery::new(clauses)))
}

// ---------------------------------------------------------------------------
// Indexing

struct Opts {
    events: Option<PathBuf>,
    index: PathBuf,
    queries: PathBuf,
    runs: usize,
    docstore: Compressor,
    docstore_name: String,
    blocksize: usize,
    threads: usize,
    budget_mib: usize,
    reuse: bool,
    per_query: bool,
    split_count: bool,
}

fn opts() -> Res<Opts> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |flag: &str| -> Option<String> {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let known = [
        "--events",
        "--index",
        "--queries",
        "--runs",
        "--docstore",
        "--blocksize",
        "--threads",
        "--budget-mib",
    ];
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        if known.contains(&a.as_str()) {
            i += 2;
            continue;
        }
        if !["--reuse", "--per-query", "--split-count"].contains(&a.as_str()) {
            return Err(
                format!("unknown argument {a:?} (see the doc at the top of src/main.rs)").into(),
            );
        }
        i += 1;
    }
    let docstore_name = value("--docstore").unwrap_or_else(|| "lz4".into());
    let docstore = match docstore_name.as_str() {
        "lz4" => Compressor::Lz4,
        "none" => Compressor::None,
        z if z.starts_with("zstd") => Compressor::Zstd(ZstdCompressor {
            compression_level: match z.strip_prefix("zstd:") {
                Some(l) => Some(l.parse()?),
                None => None,
            },
        }),
        other => {
            return Err(
                format!("--docstore takes lz4, zstd[:LEVEL] or none, got {other:?}").into(),
            );
        }
    };
    Ok(Opts {
        events: value("--events").map(PathBuf::from),
        index: value("--index")
            .map(PathBuf::from)
            .ok_or("--index DIR is required")?,
        queries: value("--queries")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../queries.tsv")),
        runs: value("--runs").map(|r| r.parse()).transpose()?.unwrap_or(5),
        docstore,
        docstore_name,
        blocksize: value("--blocksize")
            .map(|r| r.parse())
            .transpose()?
            .unwrap_or(IndexSettings::default().docstore_blocksize),
        // One indexing thread keeps the documents in time order, as in the NDJSON (two
        // threads interleave them across segments; the store and fast fields then
        // compress a few per cent worse).
        threads: value("--threads")
            .map(|r| r.parse())
            .transpose()?
            .unwrap_or(1),
        budget_mib: value("--budget-mib")
            .map(|r| r.parse())
            .transpose()?
            .unwrap_or(1024),
        reuse: args.iter().any(|a| a == "--reuse"),
        per_query: args.iter().any(|a| a == "--per-query"),
        split_count: args.iter().any(|a| a == "--split-count"),
    })
}

fn register(index: &Index) {
    index
        .tokenizers()
        .register("vigie", VigieTokenizer::default());
}

/// Builds the index; returns it and the raw message bytes.
fn build(o: &Opts, f: &Fields, schema: Schema) -> Res<(Index, u64)> {
    let events = o
        .events
        .as_ref()
        .ok_or("--events FILE is required to build an index")?;
    if o.index.exists() && std::fs::read_dir(&o.index)?.next().is_some() {
        return Err(format!(
            "{} is not empty: give a new directory, or --reuse to query the index in it",
            o.index.display()
        )
        .into());
    }
    std::fs::create_dir_all(&o.index)?;
    let settings = IndexSettings {
        docstore_compression: o.docstore,
        docstore_blocksize: o.blocksize,
        ..Default::default()
    };
    let index = Index::builder()
        .schema(schema)
        .settings(settings)
        .create_in_dir(&o.index)?;
    register(&index);
    let mut writer =
        index.writer_with_num_threads::<TantivyDocument>(o.threads, o.budget_mib * 1024 * 1024)?;
    let reader = BufReader::with_capacity(1 << 20, std::fs::File::open(events)?);
    let (t0, c0) = (Instant::now(), cpu_secs());
    let mut n = 0u64;
    let mut raw = 0u64;
    let mut json_bytes = 0u64;
    for line in reader.lines() {
        let line = line?;
        if line.is_empty() {
            continue;
        }
        let v: serde_json::Value =
            serde_json::from_str(&line).map_err(|e| format!("event {} is not JSON: {e}", n + 1))?;
        let mut d = TantivyDocument::new();
        let msg = v.get("message").and_then(|m| m.as_str()).unwrap_or("");
        raw += msg.len() as u64;
        json_bytes += line.len() as u64 + 1;
        d.add_text(f.message, msg);
        for (path, fl) in &f.keywords {
            if let Some(s) = json_path(&v, path).and_then(|x| x.as_str())
                && !s.is_empty()
            {
                d.add_text(*fl, lower(s));
            }
        }
        if let Some(p) = json_path(&v, "source.port").and_then(|x| x.as_u64()) {
            d.add_u64(f.source_port, p);
        }
        let ts = v
            .get("@timestamp")
            .and_then(|t| t.as_str())
            .ok_or_else(|| format!("event {} has no @timestamp", n + 1))?;
        let ns = chrono::DateTime::parse_from_rfc3339(ts)?
            .timestamp_nanos_opt()
            .ok_or("timestamp out of range")?;
        d.add_date(f.ts, DateTime::from_timestamp_nanos(ns));
        d.add_text(f.doc, &line);
        writer.add_document(d)?;
        n += 1;
    }
    let t_add = t0.elapsed().as_secs_f64();
    writer.commit()?;
    let t_commit = t0.elapsed().as_secs_f64();
    let c_commit = cpu_secs() - c0;
    println!(
        "index: {n} events from {} ({:.1} MiB of NDJSON), {} threads, {} MiB budget, docstore {} in {} B blocks",
        events.display(),
        mib(json_bytes),
        o.threads,
        o.budget_mib,
        o.docstore_name,
        o.blocksize
    );
    println!(
        "index: add {:.1}s, commit done at {:.1}s ({:.0} events/s wall incl. JSON parsing), process CPU {:.1}s",
        t_add,
        t_commit,
        n as f64 / t_commit,
        c_commit
    );
    // Wait for the background merges of the commit, then merge what is left to one segment.
    let (t1, c1) = (Instant::now(), cpu_secs());
    let ids = index.searchable_segment_ids()?;
    let before = ids.len();
    if ids.len() > 1 {
        writer.merge(&ids).wait()?;
    }
    writer.garbage_collect_files().wait()?;
    writer.wait_merging_threads()?;
    println!(
        "merge: {} segments -> {} in {:.1}s, process CPU {:.1}s",
        before,
        index.searchable_segment_ids()?.len(),
        t1.elapsed().as_secs_f64(),
        cpu_secs() - c1
    );
    Ok((index, raw))
}

// ---------------------------------------------------------------------------
// Running the queries

/// Count + newest 100 in one pass (a tuple collector: every match is visited), or with
/// `split` in two searches, so that `Count` alone can use tantivy's `Weight::count`
/// shortcut where there is one.
fn search_once(
    searcher: &Searcher,
    q: &dyn Query,
    split: bool,
) -> Res<(usize, Vec<TantivyDocument>)> {
    let top = TopDocs::with_limit(100).order_by_fast_field::<DateTime>("ts", Order::Desc);
    let (count, top) = if split {
        (searcher.search(q, &Count)?, searcher.search(q, &top)?)
    } else {
        searcher.search(q, &(Count, top))?
    };
    let mut docs = Vec::with_capacity(top.len());
    for (_, addr) in top {
        let d: TantivyDocument = searcher.doc(addr)?;
        docs.push(d);
    }
    Ok((count, docs))
}

fn hist_aggs(secs: u64, range: (i64, i64), breakdown: bool) -> Res<Aggregations> {
    let (lo, hi) = (range.0 / 1_000_000, range.1 / 1_000_000 - 1);
    let mut h = serde_json::json!({
        "date_histogram": {
            "field": "ts",
            "fixed_interval": format!("{secs}s"),
            "min_doc_count": 0,
            "hard_bounds": {"min": lo, "max": hi},
            "extended_bounds": {"min": lo, "max": hi}
        }
    });
    if breakdown {
        h["aggs"] = serde_json::json!({
            "level": {"terms": {"field": "log_level", "size": 16}},
            "dataset": {"terms": {"field": "event_dataset", "size": 64}}
        });
    }
    Ok(serde_json::from_value(serde_json::json!({ "h": h }))?)
}

/// (bucket count, sum of bucket doc counts) of a histogram result.
fn hist_summary(res: &tantivy::aggregation::agg_result::AggregationResults) -> Res<(usize, u64)> {
    let v = serde_json::to_value(res)?;
    let buckets = v["h"]["buckets"]
        .as_array()
        .ok_or("histogram result has no buckets")?;
    let sum = buckets.iter().filter_map(|b| b["doc_count"].as_u64()).sum();
    Ok((buckets.len(), sum))
}

fn per_query_line(group: &str, secs: u64, q: &str, ms: &mut [f64], count: u64, returned: usize) {
    let runs = ms.len();
    println!(
        "per-query\t{group}\t{secs}\t{:.3}\t{:.3}\t{runs}\t{count}\t{returned}\t{q}",
        pct(&mut ms.to_vec(), 0.5),
        pct(ms, 0.95)
    );
}

fn run_queries(o: &Opts, index: &Index, f: &Fields) -> Res<()> {
    let list = read_queries(&o.queries)?;
    let reader = index
        .reader_builder()
        .reload_policy(ReloadPolicy::Manual)
        .try_into()?;
    let searcher = reader.searcher();
    // Groups in file order.
    let mut groups: Vec<(String, u64, Vec<String>)> = Vec::new();
    for (g, s, q) in &list.entries {
        match groups.iter_mut().find(|(gg, ss, _)| gg == g && ss == s) {
            Some(x) => x.2.push(q.clone()),
            None => groups.push((g.clone(), *s, vec![q.clone()])),
        }
    }
    for (name, secs, queries) in &groups {
        if *secs == 0 {
            let built: Vec<Box<dyn Query>> = queries
                .iter()
                .map(|q| translate(f, q, list.search_range))
                .collect::<Res<_>>()?;
            let mut ms = Vec::new();
            let mut per = vec![(Vec::new(), 0u64, 0usize); queries.len()];
            let mut totals = Vec::new();
            let mut fetched = 0usize;
            for round in 0..o.runs {
                for (qi, q) in built.iter().enumerate() {
                    let t = Instant::now();
                    let (count, docs) = search_once(&searcher, q.as_ref(), o.split_count)?;
                    let elapsed = t.elapsed().as_secs_f64() * 1000.0;
                    ms.push(elapsed);
                    per[qi].0.push(elapsed);
                    fetched += docs.len();
                    if round == 0 {
                        totals.push(format!("{}={count}", queries[qi]));
                        per[qi].1 = count as u64;
                        per[qi].2 = docs.len();
                    }
                    std::hint::black_box(docs);
                }
            }
            println!(
                "{name:<9} count + newest 100: median {:.1} ms, p95 {:.1} ms ({} runs, {:.0} docs fetched/run) [{}]",
                pct(&mut ms.clone(), 0.5),
                pct(&mut ms, 0.95),
                queries.len() * o.runs,
                fetched as f64 / (queries.len() * o.runs) as f64,
                totals.join(", ")
            );
            if o.per_query {
                for (q, (mut ms, total, returned)) in queries.iter().zip(per) {
                    per_query_line(name, 0, q, &mut ms, total, returned);
                }
            }
        } else {
            for breakdown in [false, true] {
                let label = if breakdown {
                    format!("{name}+breakdown")
                } else {
                    name.clone()
                };
                let built: Vec<(Box<dyn Query>, AggregationCollector)> = queries
                    .iter()
                    .map(|q| -> Res<_> {
                        Ok((
                            translate(f, q, list.hist_range)?,
                            AggregationCollector::from_aggs(
                                hist_aggs(*secs, list.hist_range, breakdown)?,
                                Default::default(),
                            ),
                        ))
                    })
                    .collect::<Res<_>>()?;
                let mut ms = Vec::new();
                let mut per = vec![(Vec::new(), 0u64, 0usize); queries.len()];
                for round in 0..o.runs {
                    for (qi, (q, coll)) in built.iter().enumerate() {
                        let t = Instant::now();
                        let res = searcher.search(q.as_ref(), coll)?;
                        let elapsed = t.elapsed().as_secs_f64() * 1000.0;
                        ms.push(elapsed);
                        per[qi].0.push(elapsed);
                        if round == 0 {
                            let (buckets, sum) = hist_summary(&res)?;
                            per[qi].1 = sum;
                            per[qi].2 = buckets;
                        }
                        std::hint::black_box(res);
                    }
                }
                println!(
                    "{label:<9} 24 h histogram: median {:.1} ms, p95 {:.1} ms ({} runs)",
                    pct(&mut ms.clone(), 0.5),
                    pct(&mut ms, 0.95),
                    queries.len() * o.runs
                );
                if o.per_query {
                    for (q, (mut ms, total, buckets)) in queries.iter().zip(per) {
                        per_query_line(&label, *secs, q, &mut ms, total, buckets);
                    }
                }
            }
        }
    }
    Ok(())
}

fn main() -> Res<()> {
    let o = opts()?;
    let (schema, f) = schema();
    let (index, raw) = if o.reuse {
        let index = Index::open_in_dir(&o.index)?;
        register(&index);
        // Raw message bytes, from the stored documents' messages.
        let reader = index.reader()?;
        let searcher = reader.searcher();
        let mut raw = 0u64;
        for seg in searcher.segment_readers() {
            let store = seg.get_store_reader(64)?;
            for d in store.iter::<TantivyDocument>(seg.alive_bitset()) {
                let d = d?;
                if let Some(tantivy::schema::OwnedValue::Str(s)) =
                    d.get_first(f.doc).map(|v| v.into())
                {
                    let v: serde_json::Value = serde_json::from_str(&s)?;
                    raw += v["message"].as_str().map(|m| m.len()).unwrap_or(0) as u64;
                }
            }
        }
        println!("reusing the index in {}", o.index.display());
        (index, raw)
    } else {
        build(&o, &f, schema)?
    };

    // --- storage -----------------------------------------------------------
    let disk = dir_bytes(&o.index)?;
    let reader = index.reader()?;
    let searcher = reader.searcher();
    let docs = searcher.num_docs();
    let usage = searcher.space_usage()?;
    let mut parts: BTreeMap<&str, u64> = BTreeMap::new();
    for seg in usage.segments() {
        parts.insert(
            "termdict",
            parts.get("termdict").unwrap_or(&0) + seg.termdict().total().get_bytes(),
        );
        parts.insert(
            "postings",
            parts.get("postings").unwrap_or(&0) + seg.postings().total().get_bytes(),
        );
        parts.insert(
            "positions",
            parts.get("positions").unwrap_or(&0) + seg.positions().total().get_bytes(),
        );
        parts.insert(
            "fast_fields",
            parts.get("fast_fields").unwrap_or(&0) + seg.fast_fields().total().get_bytes(),
        );
        parts.insert(
            "fieldnorms",
            parts.get("fieldnorms").unwrap_or(&0) + seg.fieldnorms().total().get_bytes(),
        );
        parts.insert(
            "store",
            parts.get("store").unwrap_or(&0) + seg.store().total().get_bytes(),
        );
    }
    let detail: Vec<String> = parts
        .iter()
        .map(|(k, v)| format!("{k} {:.1}", mib(*v)))
        .collect();
    println!("disk by component (MiB): {}", detail.join(", "));
    println!(
        "storage: {docs} events in {} segments; raw messages {:.1} MiB; disk {:.1} MiB = {:.3} bytes per raw byte (store {:.1} MiB = {:.3}, index without store {:.3})",
        searcher.segment_readers().len(),
        mib(raw),
        mib(disk),
        disk as f64 / raw as f64,
        mib(parts["store"]),
        parts["store"] as f64 / raw as f64,
        (disk - parts["store"]) as f64 / raw as f64,
    );
    drop(searcher);
    drop(reader);

    // --- queries -----------------------------------------------------------
    run_queries(&o, &index, &f)?;
    Ok(())
}

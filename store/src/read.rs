//! Reads: search, histogram, top values, context and single events.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use vigie_proto::event::Event;
use vigie_proto::{AgentId, Epoch, Kind, Seq, Timestamp};

use crate::codec::{self, Page};
use crate::exec::{self, BlockInfo, BlockReader, EventKey, Plan, Src};
use crate::query::{Query, field_type};
use crate::store::{COUNTER_GLOBAL, COUNTER_HOST, Inner, MINUTE_NS, Store, read};
use crate::tier::{Builder, materialize};
use crate::types::*;

/// Most buckets one histogram may have.
pub const MAX_BUCKETS: usize = 100_000;
/// Most matching events decoded to compute top values of a field that is not a column.
pub const TOP_VALUES_SCAN_LIMIT: usize = 100_000;
/// Most events examined on each side of an event for its context.
pub const CONTEXT_SCAN_LIMIT: u64 = 10_000;

/// Work done on the active tier while the tier lock is held.
type ActiveFn<'a> = dyn FnMut(&Builder, &[String]) -> Result<(), StoreError> + 'a;

/// The sources of a read: a consistent view taken under the tier lock.
struct View {
    /// Blocks overlapping the range, newest (by max time) first.
    blocks: Vec<Arc<BlockInfo>>,
    frozen: Vec<Arc<Builder>>,
    hosts: Arc<Vec<String>>,
    skipped: u64,
    corrupt: u64,
}

impl Inner {
    /// Runs `on_active` on the active tier under the read lock and returns the rest of the view.
    fn view(&self, from: i64, to: i64, on_active: &mut ActiveFn<'_>) -> Result<View, StoreError> {
        let t = read(&self.tiers)?;
        let hosts = self.host_names()?;
        if !t.active.is_empty() && t.active.max_ts >= from && t.active.min_ts < to {
            on_active(&t.active, &hosts)?;
        }
        let frozen = t
            .frozen
            .iter()
            .filter(|f| !f.is_empty() && f.max_ts >= from && f.min_ts < to)
            .cloned()
            .collect();
        let mut blocks = Vec::new();
        let mut skipped = 0;
        let mut corrupt = 0;
        for b in t.blocks.values() {
            if self.is_corrupt(b.id) {
                corrupt += 1;
                skipped += 1;
            } else if b.meta.max_ts >= from && b.meta.min_ts < to {
                blocks.push(b.clone());
            } else {
                skipped += 1;
            }
        }
        blocks.sort_by(|a, b| b.meta.max_ts.cmp(&a.meta.max_ts).then(b.id.cmp(&a.id)));
        Ok(View {
            blocks,
            frozen,
            hosts,
            skipped,
            corrupt,
        })
    }
}

/// Accumulates the newest `limit` matches and the count.
struct SearchAcc<'r> {
    req: &'r SearchRequest,
    cursor: Option<EventKey>,
    top: Vec<(EventKey, Event)>,
    total: u64,
    stats: QueryStats,
}

impl SearchAcc<'_> {
    fn threshold(&self) -> Option<EventKey> {
        (self.req.limit > 0 && self.top.len() >= self.req.limit)
            .then(|| self.top[self.top.len() - 1].0)
    }

    /// Processes one source; on error the accumulator is left unchanged.
    fn source(&mut self, plan: &Plan<'_>, src: &mut Src<'_>) -> Result<(), StoreError> {
        let (from, to) = (self.req.from.nanos(), self.req.to.nanos());
        let mut decoded = 0u64;
        let mut cand = plan.eval(src)?;
        if let Some(m) = exec::range_mask(src, from, to)? {
            cand.bits.and_with(&m);
        }
        let mut count = 0;
        if self.req.count && !cand.bits.is_empty() {
            if !cand.exact {
                cand = exec::Cand {
                    bits: plan.resolve(src, cand, &mut decoded)?,
                    exact: true,
                };
            }
            count = cand.bits.count();
        }
        let mut found = Vec::new();
        let threshold = self.threshold();
        // Only sources that can hold a result newer than the current last one (and
        // older than the cursor) are read for events; the others only count.
        let may_contribute = threshold.is_none_or(|t| src.max_ts() >= t.ts)
            && self.cursor.is_none_or(|c| src.min_ts() <= c.ts);
        if self.req.limit > 0 && !cand.bits.is_empty() && may_contribute {
            let mut take =
                |off: usize, src: &mut Src<'_>, decoded: &mut u64| -> Result<bool, StoreError> {
                    let k = src.key(off)?;
                    if self.cursor.is_some_and(|c| k >= c) {
                        return Ok(true);
                    }
                    if threshold.is_some_and(|t| k <= t) {
                        return Ok(false);
                    }
                    if !cand.exact && !plan.confirm(src, off, decoded)? {
                        return Ok(true);
                    }
                    *decoded += 1;
                    found.push((k, src.full_event(off)?));
                    Ok(found.len() < self.req.limit)
                };
            if matches!(src, Src::Block { .. }) {
                // Blocks are in key order: walk the candidates from the newest, lazily.
                for off in cand.bits.iter_rev() {
                    if !take(off, src, &mut decoded)? {
                        break;
                    }
                }
            } else {
                for off in exec::newest_first(src, &cand.bits)? {
                    if !take(off, src, &mut decoded)? {
                        break;
                    }
                }
            }
        }
        self.total += count;
        self.stats.events_decoded += decoded;
        self.stats.blocks_scanned += 1;
        if !found.is_empty() {
            self.top.extend(found);
            self.top.sort_by_key(|a| std::cmp::Reverse(a.0));
            self.top.truncate(self.req.limit);
        }
        Ok(())
    }
}

impl Store {
    /// Newest-first search over `[from, to)`, with an exact count when asked.
    pub fn search(&self, req: &SearchRequest) -> Result<SearchResponse, StoreError> {
        let t0 = Instant::now();
        let inner = &*self.inner;
        let cursor = req.before.map(|c| EventKey {
            ts: c.ts.nanos(),
            agent: c.agent,
            epoch: c.epoch,
            seq: c.seq.0,
        });
        let mut acc = SearchAcc {
            req,
            cursor,
            top: Vec::new(),
            total: 0,
            stats: QueryStats::default(),
        };
        let (from, to) = (req.from.nanos(), req.to.nanos());
        if from >= to {
            return Ok(SearchResponse {
                events: Vec::new(),
                total: req.count.then_some(0),
                next: None,
                stats: acc.stats,
            });
        }
        let view = inner.view(from, to, &mut |b, _| {
            let plan = Plan::new(&req.query);
            acc.source(&plan, &mut Src::Mem(b))
        })?;
        let plan = Plan::new(&req.query);
        for f in &view.frozen {
            acc.source(&plan, &mut Src::Mem(f))?;
        }
        acc.stats.blocks_skipped += view.skipped;
        acc.stats.blocks_corrupt += view.corrupt;
        for b in &view.blocks {
            let needed_for_results = acc.threshold().is_none_or(|t| b.meta.max_ts >= t.ts)
                && cursor.is_none_or(|c| b.meta.min_ts <= c.ts);
            if !req.count && !needed_for_results {
                acc.stats.blocks_skipped += 1;
                continue;
            }
            // `source` changes the accumulator only once the whole block was read.
            if let Err(e) = acc.source(&plan, &mut Src::block(inner, b)) {
                inner.block_failed(b.id, e)?;
                acc.stats.blocks_corrupt += 1;
            }
        }
        let next = (req.limit > 0 && acc.top.len() >= req.limit).then(|| {
            let k = acc.top[acc.top.len() - 1].0;
            Cursor {
                ts: Timestamp(k.ts),
                agent: k.agent,
                epoch: k.epoch,
                seq: Seq(k.seq),
            }
        });
        let mut stats = acc.stats;
        stats.elapsed_us = t0.elapsed().as_micros() as u64;
        Ok(SearchResponse {
            events: acc.top.into_iter().map(|(_, e)| e).collect(),
            total: req.count.then_some(acc.total),
            next,
            stats,
        })
    }

    /// Event counts over `[from, to)` in buckets aligned to multiples of `bucket`
    /// since the Unix epoch. Queries on host, kind and severity only (and the empty
    /// query) read the per-minute counters when the buckets are whole minutes; the
    /// partial minutes at the edges and all other queries go through the index.
    pub fn histogram(
        &self,
        q: &Query,
        from: Timestamp,
        to: Timestamp,
        bucket: Duration,
    ) -> Result<Vec<Bucket>, StoreError> {
        let b = i64::try_from(bucket.as_nanos())
            .map_err(|_| StoreError::InvalidRequest("histogram bucket is too large".into()))?;
        if b <= 0 {
            return Err(StoreError::InvalidRequest(
                "histogram bucket must be longer than zero".into(),
            ));
        }
        let (from, to) = (from.nanos(), to.nanos());
        if from >= to {
            return Ok(Vec::new());
        }
        let first = from.div_euclid(b) * b;
        let n = ((to - first) as i128 + b as i128 - 1) / b as i128;
        if n as usize > MAX_BUCKETS || n < 0 {
            return Err(StoreError::InvalidRequest(format!(
                "histogram would have {n} buckets; at most {MAX_BUCKETS} are allowed: use a longer bucket or a shorter range"
            )));
        }
        let mut out: Vec<Bucket> = (0..n as i64)
            .map(|i| Bucket {
                start: Timestamp(first + i * b),
                ..Default::default()
            })
            .collect();
        let add = |out: &mut Vec<Bucket>, ts: i64, kind: u8, sev: u8, c: u64| {
            let i = ((ts - first) / b) as usize;
            if let Some(bk) = out.get_mut(i) {
                bk.count += c;
                bk.by_severity[exec::sev_slot(sev)] += c;
                *bk.by_kind
                    .entry(Kind::from_code(kind).unwrap_or_default())
                    .or_default() += c;
            }
        };
        let counters_ok =
            b % MINUTE_NS == 0 && q.fields().iter().all(|f| exec::is_counter_field(f));
        let m_from = from.div_euclid(MINUTE_NS) + i64::from(from.rem_euclid(MINUTE_NS) != 0);
        let m_to = to.div_euclid(MINUTE_NS);
        if counters_ok && m_from < m_to {
            self.counter_histogram(q, m_from, m_to, &mut |ts, k, s, c| {
                add(&mut out, ts, k, s, c)
            })?;
            if from < m_from * MINUTE_NS {
                self.index_histogram(q, from, m_from * MINUTE_NS, &mut |ts, k, s| {
                    add(&mut out, ts, k, s, 1)
                })?;
            }
            if m_to * MINUTE_NS < to {
                self.index_histogram(q, m_to * MINUTE_NS, to, &mut |ts, k, s| {
                    add(&mut out, ts, k, s, 1)
                })?;
            }
        } else {
            self.index_histogram(q, from, to, &mut |ts, k, s| add(&mut out, ts, k, s, 1))?;
        }
        Ok(out)
    }

    /// Sums the per-minute counters of minutes `[m_from, m_to)` for the cells the query accepts.
    fn counter_histogram(
        &self,
        q: &Query,
        m_from: i64,
        m_to: i64,
        add: &mut dyn FnMut(i64, u8, u8, u64),
    ) -> Result<(), StoreError> {
        let inner = &*self.inner;
        // The query reads only host, kind and severity, so it has one answer per cell.
        let cell = |host: Option<&str>, kind: Kind, sev: u8| {
            let mut e = Event::new(kind, Timestamp(0));
            if let Some(s) = vigie_proto::Severity::from_code(sev) {
                e.log = Some(vigie_proto::event::Log {
                    level: s,
                    ..Default::default()
                });
            }
            if let Some(h) = host {
                e.host.name = h.to_string();
            }
            q.matches(&e)
        };
        let uses_host = q.fields().iter().any(|f| f == "host.name");
        let cf = inner.cf(crate::store::CF_COUNTERS)?;
        let mut scan = |prefix: &[u8], accept: &[[bool; 9]; 13]| -> Result<(), StoreError> {
            let mut start = prefix.to_vec();
            start.extend_from_slice(&codec::i64_key(m_from));
            let mut it = inner.db.raw_iterator_cf(cf);
            it.seek(&start);
            while it.valid() {
                let (Some(k), Some(v)) = (it.key(), it.value()) else {
                    break;
                };
                if !k.starts_with(prefix) || k.len() != prefix.len() + 10 {
                    break;
                }
                let p = prefix.len();
                let mut mk = [0u8; 8];
                mk.copy_from_slice(&k[p..p + 8]);
                let minute = codec::i64_from_key(mk);
                if minute >= m_to {
                    break;
                }
                let (kind, sev) = (k[p + 8], k[p + 9]);
                if accept
                    .get(kind as usize)
                    .and_then(|r| r.get(sev as usize))
                    .copied()
                    .unwrap_or(false)
                {
                    let c = v.try_into().map(u64::from_le_bytes).unwrap_or(0);
                    add(minute * MINUTE_NS, kind, sev, c);
                }
                it.next();
            }
            it.status()?;
            Ok(())
        };
        let table = |host: Option<&str>| {
            let mut t = [[false; 9]; 13];
            for k in Kind::ALL {
                for s in 0..9u8 {
                    t[k.code() as usize][s as usize] = cell(host, k, s);
                }
            }
            t
        };
        if !uses_host {
            scan(&[COUNTER_GLOBAL], &table(None))?;
        } else {
            let hosts = inner.host_names()?;
            for (id, name) in hosts.iter().enumerate() {
                let t = table(Some(name));
                if t.iter().flatten().any(|x| *x) {
                    let mut prefix = vec![COUNTER_HOST];
                    prefix.extend_from_slice(&(id as u32).to_be_bytes());
                    scan(&prefix, &t)?;
                }
            }
        }
        Ok(())
    }

    /// Calls `add(ts, kind, sev)` for every match in `[from, to)`.
    fn index_histogram(
        &self,
        q: &Query,
        from: i64,
        to: i64,
        add: &mut dyn FnMut(i64, u8, u8),
    ) -> Result<(), StoreError> {
        let inner = &*self.inner;
        let per_source = |plan: &Plan<'_>,
                          src: &mut Src<'_>,
                          add: &mut dyn FnMut(i64, u8, u8)|
         -> Result<(), StoreError> {
            let mut cand = plan.eval(src)?;
            if let Some(m) = exec::range_mask(src, from, to)? {
                cand.bits.and_with(&m);
            }
            let mut d = 0;
            let bits = plan.resolve(src, cand, &mut d)?;
            let c = src.cols(codec::COL_TS | codec::COL_KS)?;
            for off in bits.iter() {
                add(c.ts[off], c.kind[off], c.sev[off]);
            }
            Ok(())
        };
        let view = inner.view(from, to, &mut |b, _| {
            per_source(&Plan::new(q), &mut Src::Mem(b), add)
        })?;
        let plan = Plan::new(q);
        for f in &view.frozen {
            per_source(&plan, &mut Src::Mem(f), add)?;
        }
        for b in &view.blocks {
            // Collect first so that a block failing half-way adds nothing.
            let mut got = Vec::new();
            let r = per_source(&plan, &mut Src::block(inner, b), &mut |t, k, s| {
                got.push((t, k, s))
            });
            match r {
                Ok(()) => got.into_iter().for_each(|(t, k, s)| add(t, k, s)),
                Err(e) => inner.block_failed(b.id, e)?,
            }
        }
        Ok(())
    }

    /// The `k` most frequent values of `field` among the matches in `[from, to)`,
    /// most frequent first. Exact for host, kind, severity and agent fields (read
    /// from the columns); for other fields, counted over the newest
    /// [`TOP_VALUES_SCAN_LIMIT`] matches.
    pub fn top_values(
        &self,
        q: &Query,
        from: Timestamp,
        to: Timestamp,
        field: &str,
        k: usize,
    ) -> Result<Vec<(String, u64)>, StoreError> {
        if field_type(field).is_none() {
            let hint = Query::parse(&format!("{field}:x"))
                .err()
                .and_then(|e| e.hint)
                .unwrap_or_default();
            return Err(StoreError::InvalidRequest(
                format!("unknown field {field:?} for top values {hint}")
                    .trim_end()
                    .to_string(),
            ));
        }
        let inner = &*self.inner;
        let (from, to) = (from.nanos(), to.nanos());
        let mut counts: HashMap<String, u64> = HashMap::new();
        let mut budget = TOP_VALUES_SCAN_LIMIT;
        let columns = exec::is_column_value_field(field);
        let mut per_source = |plan: &Plan<'_>,
                              src: &mut Src<'_>,
                              hosts: &[String],
                              counts: &mut HashMap<String, u64>|
         -> Result<(), StoreError> {
            let mut cand = plan.eval(src)?;
            if let Some(m) = exec::range_mask(src, from, to)? {
                cand.bits.and_with(&m);
            }
            let mut d = 0;
            if columns {
                let bits = plan.resolve(src, cand, &mut d)?;
                let need = match field {
                    "host.name" => codec::COL_HOST,
                    "agent.id" => codec::COL_IDS,
                    _ => codec::COL_KS,
                };
                let cols = src.cols(need)?.clone();
                for off in bits.iter() {
                    for v in exec::column_value(field, src, &cols, off, hosts) {
                        *counts.entry(v).or_default() += 1;
                    }
                }
                return Ok(());
            }
            let exact = cand.exact;
            for off in exec::newest_first(src, &cand.bits)? {
                if budget == 0 {
                    break;
                }
                if !exact && !plan.confirm(src, off, &mut d)? {
                    continue;
                }
                budget -= 1;
                let e = src.full_event(off)?;
                e.visit_fields(&mut |p, v| {
                    if p == field {
                        *counts.entry(exec::value_text(v)).or_default() += 1;
                    }
                });
            }
            Ok(())
        };
        let view = inner.view(from, to, &mut |b, hosts| {
            per_source(&Plan::new(q), &mut Src::Mem(b), hosts, &mut counts)
        })?;
        let plan = Plan::new(q);
        for f in &view.frozen {
            per_source(&plan, &mut Src::Mem(f), &view.hosts, &mut counts)?;
        }
        for b in &view.blocks {
            let mut local = HashMap::new();
            match per_source(&plan, &mut Src::block(inner, b), &view.hosts, &mut local) {
                Ok(()) => local
                    .into_iter()
                    .for_each(|(v, c)| *counts.entry(v).or_default() += c),
                Err(e) => inner.block_failed(b.id, e)?,
            }
        }
        let mut v: Vec<(String, u64)> = counts.into_iter().collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        v.truncate(k);
        Ok(v)
    }

    /// One event by its id (`{agent}-{epoch}-{seq}`).
    pub fn get_event(&self, event_id: &str) -> Result<Option<Event>, StoreError> {
        let (agent, epoch, seq) = parse_event_id(event_id)?;
        let mut f = Fetcher::default();
        f.fetch(&self.inner, agent, epoch, seq)
    }

    /// Events around `event_id` from the same source (same agent and epoch, same
    /// `event.module` and `log.file.path`): up to `before` earlier and `after` later
    /// ones, in time order, including the event itself. Empty if the event is unknown.
    pub fn context(
        &self,
        event_id: &str,
        before: usize,
        after: usize,
    ) -> Result<Vec<Event>, StoreError> {
        let (agent, epoch, seq) = parse_event_id(event_id)?;
        let mut f = Fetcher::default();
        let Some(target) = f.fetch(&self.inner, agent, epoch, seq)? else {
            return Ok(Vec::new());
        };
        let path = |e: &Event| {
            e.log
                .as_ref()
                .and_then(|l| l.file.as_ref())
                .map(|f| f.path.clone())
        };
        let same = |e: &Event| e.event.module == target.event.module && path(e) == path(&target);
        let mut out = Vec::new();
        let mut got = 0;
        let mut s = seq;
        while got < before && s > 0 && seq - s < CONTEXT_SCAN_LIMIT {
            s -= 1;
            match f.fetch(&self.inner, agent, epoch, s)? {
                Some(e) => {
                    if same(&e) {
                        out.push((s, e));
                        got += 1;
                    }
                }
                None => break,
            }
        }
        got = 0;
        let mut s = seq;
        while got < after && s < u64::MAX && s - seq < CONTEXT_SCAN_LIMIT {
            s += 1;
            match f.fetch(&self.inner, agent, epoch, s)? {
                Some(e) => {
                    if same(&e) {
                        out.push((s, e));
                        got += 1;
                    }
                }
                None => break,
            }
        }
        out.push((seq, target));
        out.sort_by(|a, b| a.1.timestamp.cmp(&b.1.timestamp).then(a.0.cmp(&b.0)));
        Ok(out.into_iter().map(|(_, e)| e).collect())
    }
}

/// Parses `{agent hex}-{epoch hex}-{seq}`.
pub fn parse_event_id(id: &str) -> Result<(AgentId, Epoch, u64), StoreError> {
    let bad = || StoreError::BadEventId(vigie_proto::event::truncate_for_log(id).to_string());
    let mut parts = id.split('-');
    let (Some(a), Some(e), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    if e.len() != 16 {
        return Err(bad());
    }
    let agent = AgentId::parse(a).map_err(|_| bad())?;
    let epoch = Epoch(u64::from_str_radix(e, 16).map_err(|_| bad())?);
    let seq = s.parse::<u64>().map_err(|_| bad())?;
    Ok((agent, epoch, seq))
}

/// Reads single events by (agent, epoch, seq), keeping decoded blocks between calls.
#[derive(Default)]
struct Fetcher {
    blocks: HashMap<u64, FetchBlock>,
}

struct FetchBlock {
    info: Arc<BlockInfo>,
    /// seq → offset for the stream being read.
    offsets: HashMap<u64, usize>,
    pages: HashMap<usize, Page>,
}

impl Fetcher {
    fn fetch(
        &mut self,
        inner: &Inner,
        agent: AgentId,
        epoch: Epoch,
        seq: u64,
    ) -> Result<Option<Event>, StoreError> {
        let block = {
            let t = read(&inner.tiers)?;
            for b in std::iter::once(&t.active).chain(t.frozen.iter().map(|f| &**f)) {
                if let Some(s) = b.find_stream(agent, epoch)
                    && let Some(off) = b.locate(s, seq)
                {
                    let mut e = b
                        .event(off)
                        .map_err(|c| StoreError::corrupt("recent event", c.0))?;
                    materialize(&mut e, agent, epoch, seq);
                    return Ok(Some(e));
                }
            }
            let Some(runs) = t.by_stream.get(&(agent, epoch)) else {
                return Ok(None);
            };
            let Some((_, (max, id))) = runs.range(..=seq).next_back() else {
                return Ok(None);
            };
            if seq > *max {
                return Ok(None);
            }
            match t.blocks.get(id) {
                Some(info) => info.clone(),
                None => return Ok(None),
            }
        };
        if inner.is_corrupt(block.id) {
            return Ok(None);
        }
        match self.fetch_block(inner, &block, agent, epoch, seq) {
            Ok(e) => Ok(e),
            Err(e) => {
                inner.block_failed(block.id, e)?;
                Ok(None)
            }
        }
    }

    fn fetch_block(
        &mut self,
        inner: &Inner,
        info: &Arc<BlockInfo>,
        agent: AgentId,
        epoch: Epoch,
        seq: u64,
    ) -> Result<Option<Event>, StoreError> {
        if let std::collections::hash_map::Entry::Vacant(slot) = self.blocks.entry(info.id) {
            let cols = inner.cols(info, codec::COL_IDS)?;
            let stream = info
                .meta
                .streams
                .iter()
                .position(|r| r.agent == agent && r.epoch == epoch);
            let mut offsets = HashMap::new();
            if let Some(s) = stream {
                for i in 0..cols.len() {
                    if cols.stream[i] as usize == s {
                        offsets.insert(cols.seq[i], i);
                    }
                }
            }
            slot.insert(FetchBlock {
                info: info.clone(),
                offsets,
                pages: HashMap::new(),
            });
        }
        let Some(fb) = self.blocks.get_mut(&info.id) else {
            return Ok(None);
        };
        let Some(&off) = fb.offsets.get(&seq) else {
            return Ok(None);
        };
        let pi = fb
            .info
            .meta
            .page_of(off)
            .ok_or_else(|| StoreError::corrupt("block", "offset out of range"))?;
        if !fb.pages.contains_key(&pi) {
            let p = BlockReader::page(inner, &fb.info, pi)?;
            fb.pages.insert(pi, p);
        }
        let first = fb.info.meta.pages[pi].first as usize;
        let page = fb
            .pages
            .get(&pi)
            .ok_or_else(|| StoreError::corrupt("page", "not loaded"))?;
        let mut e = page
            .event(off - first)
            .map_err(|c| StoreError::corrupt("event", c.0))?;
        materialize(&mut e, agent, epoch, seq);
        Ok(Some(e))
    }
}

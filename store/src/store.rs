//! The RocksDB side: opening, the exactly-once commit, sealing, registries,
//! retention and housekeeping. Reads live in `read`.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use bincode::{Decode, Encode};
use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamily, ColumnFamilyDescriptor, DB, DBCompressionType, Options,
    WriteBatch, WriteOptions,
};
use vigie_proto::event::Event;
use vigie_proto::{AgentId, Epoch, Seq, Timestamp};

use crate::codec::{self, Columns, Page};
use crate::exec::{BlockInfo, BlockReader};
use crate::tier::{BlockMeta, Builder, FxBuild, sev_code, strip};
use crate::types::*;

/// Version of the whole on-disk layout. Do not change without a migration.
pub const FORMAT_VERSION: u32 = 1;

pub(crate) const CF_STREAMS: &str = "streams";
pub(crate) const CF_RECENT: &str = "recent";
pub(crate) const CF_BLOCKS: &str = "blocks";
pub(crate) const CF_COLS: &str = "cols";
pub(crate) const CF_PAGES: &str = "pages";
pub(crate) const CF_POSTINGS: &str = "postings";
pub(crate) const CF_COUNTERS: &str = "counters";
pub(crate) const CF_HOSTS: &str = "hosts";
pub(crate) const CF_AGENTS: &str = "agents";
pub(crate) const CF_TOKENS: &str = "tokens";
pub(crate) const CF_ALERTS: &str = "alerts";
pub(crate) const CF_SILENCES: &str = "silences";
pub(crate) const CF_DELIVERIES: &str = "deliveries";
const ALL_CFS: [&str; 13] = [
    CF_STREAMS,
    CF_RECENT,
    CF_BLOCKS,
    CF_COLS,
    CF_PAGES,
    CF_POSTINGS,
    CF_COUNTERS,
    CF_HOSTS,
    CF_AGENTS,
    CF_TOKENS,
    CF_ALERTS,
    CF_SILENCES,
    CF_DELIVERIES,
];

const META_FORMAT: &[u8] = b"format";
const META_NEXT_BLOCK: &[u8] = b"next_block";

/// Counter key prefixes (`counters` column family).
pub(crate) const COUNTER_GLOBAL: u8 = b'G';
pub(crate) const COUNTER_HOST: u8 = b'H';
pub(crate) const MINUTE_NS: i64 = 60_000_000_000;
/// Counter values kept in memory between commits before the cache is cleared.
const COUNTER_CACHE_MAX: usize = 200_000;

/// `G` | minute (i64 key) | kind | severity code.
pub(crate) fn global_counter_key(minute: i64, kind: u8, sev: u8) -> Vec<u8> {
    let mut k = Vec::with_capacity(11);
    k.push(COUNTER_GLOBAL);
    k.extend_from_slice(&codec::i64_key(minute));
    k.push(kind);
    k.push(sev);
    k
}

/// `H` | host id (u32 BE) | minute (i64 key) | kind | severity code.
pub(crate) fn host_counter_key(host: u32, minute: i64, kind: u8, sev: u8) -> Vec<u8> {
    let mut k = Vec::with_capacity(15);
    k.push(COUNTER_HOST);
    k.extend_from_slice(&host.to_be_bytes());
    k.extend_from_slice(&codec::i64_key(minute));
    k.push(kind);
    k.push(sev);
    k
}

struct Writer {
    streams: HashMap<(AgentId, Epoch), StreamState>,
    counters: HashMap<Vec<u8>, u64>,
    host_ids: HashMap<String, u32, FxBuild>,
    next_recent: u64,
}

pub(crate) struct Tiers {
    pub blocks: BTreeMap<u64, Arc<BlockInfo>>,
    pub frozen: Vec<Arc<Builder>>,
    pub active: Builder,
    /// (agent, epoch) → min seq → (max seq, block id).
    pub by_stream: HashMap<(AgentId, Epoch), BTreeMap<u64, (u64, u64)>>,
}

impl Tiers {
    fn add_block(&mut self, info: Arc<BlockInfo>) {
        for r in &info.meta.streams {
            self.by_stream
                .entry((r.agent, r.epoch))
                .or_default()
                .insert(r.min_seq, (r.max_seq, info.id));
        }
        self.blocks.insert(info.id, info);
    }

    fn remove_block(&mut self, id: u64) -> Option<Arc<BlockInfo>> {
        let info = self.blocks.remove(&id)?;
        for r in &info.meta.streams {
            if let Some(m) = self.by_stream.get_mut(&(r.agent, r.epoch)) {
                if m.get(&r.min_seq).is_some_and(|(_, b)| *b == id) {
                    m.remove(&r.min_seq);
                }
                if m.is_empty() {
                    self.by_stream.remove(&(r.agent, r.epoch));
                }
            }
        }
        Some(info)
    }
}

#[derive(Default)]
struct ColsCache {
    map: HashMap<u64, Arc<Columns>>,
    order: VecDeque<u64>,
}

pub(crate) struct Inner {
    pub db: DB,
    dir: PathBuf,
    pub cfg: StoreConfig,
    writer: Mutex<Writer>,
    seal: Mutex<u64>,
    pub tiers: RwLock<Tiers>,
    /// Host names by id (append-only).
    pub hosts: RwLock<Arc<Vec<String>>>,
    tokens: Mutex<()>,
    cols_cache: Mutex<ColsCache>,
    corrupt: Mutex<HashSet<u64>>,
    corrupt_count: AtomicU64,
    corrupt_rows: AtomicU64,
}

/// The collector's event store. Cheap to clone; `Send + Sync`.
#[derive(Clone)]
pub struct Store {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> Result<MutexGuard<'_, T>, StoreError> {
    m.lock().map_err(|_| StoreError::Poisoned)
}

pub(crate) fn read<T>(m: &RwLock<T>) -> Result<RwLockReadGuard<'_, T>, StoreError> {
    m.read().map_err(|_| StoreError::Poisoned)
}

pub(crate) fn write<T>(m: &RwLock<T>) -> Result<RwLockWriteGuard<'_, T>, StoreError> {
    m.write().map_err(|_| StoreError::Poisoned)
}

pub(crate) fn decode_record<T: Decode<()>>(what: &str, v: &[u8]) -> Result<T, StoreError> {
    let (r, used): (T, usize) =
        bincode::decode_from_slice(v, codec::bincode_cfg().with_limit::<{ 1 << 20 }>())
            .map_err(|e| StoreError::corrupt(what.to_string(), e.to_string()))?;
    if used != v.len() {
        return Err(StoreError::corrupt(what.to_string(), "trailing bytes"));
    }
    Ok(r)
}

pub(crate) fn encode_record<T: Encode>(what: &'static str, r: &T) -> Result<Vec<u8>, StoreError> {
    bincode::encode_to_vec(r, codec::bincode_cfg()).map_err(|e| StoreError::Encode {
        what,
        detail: e.to_string(),
    })
}

fn ct_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let mut d = 0u8;
    for i in 0..32 {
        d |= a[i] ^ b[i];
    }
    std::hint::black_box(d) == 0
}

impl Inner {
    pub(crate) fn cf(&self, name: &'static str) -> Result<&ColumnFamily, StoreError> {
        self.db.cf_handle(name).ok_or(StoreError::MissingCf(name))
    }

    fn write_opts(&self, sync: bool) -> WriteOptions {
        let mut wo = WriteOptions::default();
        wo.set_sync(sync);
        wo
    }

    /// Records a failed block read. Corruption of a live block is counted and
    /// logged once, and the block is skipped from then on; other errors propagate.
    pub(crate) fn block_failed(&self, id: u64, err: StoreError) -> Result<(), StoreError> {
        match err {
            StoreError::Corrupt { what, detail } => {
                let live = read(&self.tiers)?.blocks.contains_key(&id);
                if live && lock(&self.corrupt)?.insert(id) {
                    self.corrupt_count.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(block = id, what = %what, detail = %detail, "corrupt block skipped");
                }
                Ok(())
            }
            other => Err(other),
        }
    }

    pub(crate) fn is_corrupt(&self, id: u64) -> bool {
        self.corrupt
            .lock()
            .map(|s| s.contains(&id))
            .unwrap_or(false)
    }

    pub(crate) fn host_names(&self) -> Result<Arc<Vec<String>>, StoreError> {
        Ok(read(&self.hosts)?.clone())
    }
}

impl BlockReader for Inner {
    fn cols(&self, info: &BlockInfo, need: u8) -> Result<Arc<Columns>, StoreError> {
        let cached = lock(&self.cols_cache)?.map.get(&info.id).cloned();
        if let Some(c) = &cached
            && c.loaded & need == need
        {
            return Ok(c.clone());
        }
        let v = self
            .db
            .get_pinned_cf(self.cf(CF_COLS)?, info.id.to_be_bytes())?
            .ok_or_else(|| StoreError::corrupt("block columns", "missing"))?;
        let mins: Vec<u64> = info.meta.streams.iter().map(|r| r.min_seq).collect();
        let mut cols = cached.map(|c| (*c).clone()).unwrap_or_default();
        cols.load(&v, info.meta.count as usize, &mins, need)
            .map_err(|c| StoreError::corrupt("block columns", c.0))?;
        let cols = Arc::new(cols);
        let mut cache = lock(&self.cols_cache)?;
        if self.cfg.cols_cache_blocks > 0 {
            if !cache.map.contains_key(&info.id) {
                while cache.map.len() >= self.cfg.cols_cache_blocks {
                    match cache.order.pop_front() {
                        Some(old) => {
                            cache.map.remove(&old);
                        }
                        None => break,
                    }
                }
                cache.order.push_back(info.id);
            }
            cache.map.insert(info.id, cols.clone());
        }
        Ok(cols)
    }

    fn page(&self, info: &BlockInfo, page: usize) -> Result<Page, StoreError> {
        let pr = info
            .meta
            .pages
            .get(page)
            .ok_or_else(|| StoreError::corrupt("page", "index out of range"))?;
        let v = self
            .db
            .get_pinned_cf(self.cf(CF_PAGES)?, codec::page_key(info.id, page as u32))?
            .ok_or_else(|| StoreError::corrupt("page", "missing"))?;
        if v.len() != pr.stored_len as usize {
            return Err(StoreError::corrupt(
                "page",
                "stored size differs from the block directory",
            ));
        }
        let raw = codec::decompress(&v, pr.raw_len as usize, codec::MAX_PAGE_RAW)
            .map_err(|c| StoreError::corrupt("page", c.0))?;
        Page::parse(raw, pr.count as usize).map_err(|c| StoreError::corrupt("page", c.0))
    }

    fn term(&self, block: u64, term: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let key = codec::posting_key(block, term);
        let mut it = self.db.raw_iterator_cf(self.cf(CF_POSTINGS)?);
        it.seek_for_prev(&key);
        if !it.valid() {
            it.status()?;
            return Ok(None);
        }
        let (Some(k), Some(v)) = (it.key(), it.value()) else {
            return Ok(None);
        };
        if !k.starts_with(&block.to_be_bytes()) {
            return Ok(None);
        }
        let mut r =
            codec::ChunkReader::new(v).map_err(|c| StoreError::corrupt("posting chunk", c.0))?;
        while let Some((t, p)) = r
            .next_entry()
            .map_err(|c| StoreError::corrupt("posting chunk", c.0))?
        {
            match t.cmp(term) {
                std::cmp::Ordering::Less => {}
                std::cmp::Ordering::Equal => return Ok(Some(p.to_vec())),
                std::cmp::Ordering::Greater => break,
            }
        }
        Ok(None)
    }

    fn scan(
        &self,
        block: u64,
        prefix: &[u8],
        cap: usize,
        f: &mut crate::exec::TermVisitor<'_>,
    ) -> Result<bool, StoreError> {
        let bid = block.to_be_bytes();
        let start = codec::posting_key(block, prefix);
        let mut it = self.db.raw_iterator_cf(self.cf(CF_POSTINGS)?);
        // The chunk holding the first term >= prefix starts at or before it.
        it.seek_for_prev(&start);
        if !it.valid() || !it.key().is_some_and(|k| k.starts_with(&bid)) {
            it.status()?;
            it.seek(&start);
        }
        let mut n = 0;
        while it.valid() {
            let (Some(k), Some(v)) = (it.key(), it.value()) else {
                break;
            };
            if !k.starts_with(&bid) {
                break;
            }
            let mut r = codec::ChunkReader::new(v)
                .map_err(|c| StoreError::corrupt("posting chunk", c.0))?;
            while let Some((t, p)) = r
                .next_entry()
                .map_err(|c| StoreError::corrupt("posting chunk", c.0))?
            {
                if t.starts_with(prefix) {
                    n += 1;
                    if n > cap {
                        return Ok(false);
                    }
                    f(t, p)?;
                } else if t > prefix {
                    return Ok(true);
                }
            }
            it.next();
        }
        it.status()?;
        Ok(true)
    }
}

fn cf_options(cache: &Cache, compression: DBCompressionType, bloom: bool) -> Options {
    let mut o = Options::default();
    o.set_compression_type(compression);
    let mut b = BlockBasedOptions::default();
    b.set_block_cache(cache);
    if bloom {
        b.set_bloom_filter(10.0, false);
    }
    b.set_block_size(16 * 1024);
    o.set_block_based_table_factory(&b);
    o
}

impl Store {
    /// Opens (or creates) the store in `dir`. Only the collector opens it.
    pub fn open(dir: &Path, cfg: StoreConfig) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let cache = Cache::new_lru_cache(cfg.block_cache_bytes)?;
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_max_background_jobs(2);
        opts.set_bytes_per_sync(1 << 20);
        opts.set_keep_log_file_num(4);
        // Pages and columns are zstd-compressed already; postings, counters and
        // registries get RocksDB's own compression; recent rows are short-lived.
        let cfs = vec![
            ColumnFamilyDescriptor::new(
                CF_STREAMS,
                cf_options(&cache, DBCompressionType::Lz4, true),
            ),
            ColumnFamilyDescriptor::new(
                CF_RECENT,
                cf_options(&cache, DBCompressionType::Lz4, false),
            ),
            ColumnFamilyDescriptor::new(
                CF_BLOCKS,
                cf_options(&cache, DBCompressionType::Lz4, false),
            ),
            ColumnFamilyDescriptor::new(CF_COLS, cf_options(&cache, DBCompressionType::None, true)),
            ColumnFamilyDescriptor::new(
                CF_PAGES,
                cf_options(&cache, DBCompressionType::None, true),
            ),
            ColumnFamilyDescriptor::new(
                CF_POSTINGS,
                cf_options(&cache, DBCompressionType::Zstd, false),
            ),
            ColumnFamilyDescriptor::new(
                CF_COUNTERS,
                cf_options(&cache, DBCompressionType::Lz4, true),
            ),
            ColumnFamilyDescriptor::new(
                CF_HOSTS,
                cf_options(&cache, DBCompressionType::Lz4, false),
            ),
            ColumnFamilyDescriptor::new(
                CF_AGENTS,
                cf_options(&cache, DBCompressionType::Lz4, false),
            ),
            ColumnFamilyDescriptor::new(
                CF_TOKENS,
                cf_options(&cache, DBCompressionType::Lz4, false),
            ),
            ColumnFamilyDescriptor::new(
                CF_ALERTS,
                cf_options(&cache, DBCompressionType::Lz4, false),
            ),
            ColumnFamilyDescriptor::new(
                CF_SILENCES,
                cf_options(&cache, DBCompressionType::Lz4, false),
            ),
            ColumnFamilyDescriptor::new(
                CF_DELIVERIES,
                cf_options(&cache, DBCompressionType::Lz4, false),
            ),
        ];
        let db = DB::open_cf_descriptors(&opts, dir, cfs)?;
        match db.get(META_FORMAT)? {
            Some(v) => {
                let found = v
                    .as_slice()
                    .try_into()
                    .map(u32::from_le_bytes)
                    .unwrap_or(u32::MAX);
                if found != FORMAT_VERSION {
                    return Err(StoreError::Version {
                        dir: dir.to_path_buf(),
                        found,
                        expected: FORMAT_VERSION,
                    });
                }
            }
            None => {
                let mut wo = WriteOptions::default();
                wo.set_sync(true);
                db.put_opt(META_FORMAT, FORMAT_VERSION.to_le_bytes(), &wo)?;
            }
        }
        let next_block = db
            .get(META_NEXT_BLOCK)?
            .and_then(|v| v.as_slice().try_into().ok().map(u64::from_le_bytes))
            .unwrap_or(0);
        let inner = Inner {
            db,
            dir: dir.to_path_buf(),
            cfg,
            writer: Mutex::new(Writer {
                streams: HashMap::new(),
                counters: HashMap::new(),
                host_ids: HashMap::default(),
                next_recent: 0,
            }),
            seal: Mutex::new(next_block),
            tiers: RwLock::new(Tiers {
                blocks: BTreeMap::new(),
                frozen: Vec::new(),
                active: Builder::default(),
                by_stream: HashMap::new(),
            }),
            hosts: RwLock::new(Arc::new(Vec::new())),
            tokens: Mutex::new(()),
            cols_cache: Mutex::new(ColsCache::default()),
            corrupt: Mutex::new(HashSet::new()),
            corrupt_count: AtomicU64::new(0),
            corrupt_rows: AtomicU64::new(0),
        };
        let store = Store {
            inner: Arc::new(inner),
        };
        store.load()?;
        Ok(store)
    }

    /// Loads the in-memory state: hosts, stream states, block directory, recent rows.
    fn load(&self) -> Result<(), StoreError> {
        let inner = &*self.inner;
        let mut w = lock(&inner.writer)?;
        // Hosts.
        let mut names: Vec<String> = Vec::new();
        let mut it = inner.db.raw_iterator_cf(inner.cf(CF_HOSTS)?);
        it.seek_to_first();
        while it.valid() {
            if let (Some(k), Some(v)) = (it.key(), it.value()) {
                let id = k
                    .try_into()
                    .map(u32::from_be_bytes)
                    .map_err(|_| StoreError::corrupt("host key", "not 4 bytes"))?
                    as usize;
                let name = String::from_utf8(v.to_vec())
                    .map_err(|_| StoreError::corrupt("host name", "not UTF-8"))?;
                if id != names.len() {
                    return Err(StoreError::corrupt(
                        "host dictionary",
                        format!("expected id {} but found {id}", names.len()),
                    ));
                }
                w.host_ids.insert(name.clone(), id as u32);
                names.push(name);
            }
            it.next();
        }
        it.status()?;
        drop(it);
        *write(&inner.hosts)? = Arc::new(names);
        // Streams.
        let mut it = inner.db.raw_iterator_cf(inner.cf(CF_STREAMS)?);
        it.seek_to_first();
        while it.valid() {
            if let (Some(k), Some(v)) = (it.key(), it.value()) {
                let k: [u8; 24] = k
                    .try_into()
                    .map_err(|_| StoreError::corrupt("stream key", "not 24 bytes"))?;
                let mut a = [0u8; 16];
                a.copy_from_slice(&k[..16]);
                let mut e = [0u8; 8];
                e.copy_from_slice(&k[16..]);
                let st: StreamState = decode_record("stream state", v)?;
                w.streams
                    .insert((AgentId(a), Epoch(u64::from_be_bytes(e))), st);
            }
            it.next();
        }
        it.status()?;
        drop(it);
        // Blocks.
        let mut tiers = write(&inner.tiers)?;
        let mut it = inner.db.raw_iterator_cf(inner.cf(CF_BLOCKS)?);
        it.seek_to_first();
        while it.valid() {
            if let (Some(k), Some(v)) = (it.key(), it.value()) {
                let id = k.try_into().map(u64::from_be_bytes).unwrap_or(u64::MAX);
                let meta = bincode::decode_from_slice::<BlockMeta, _>(
                    v,
                    codec::bincode_cfg().with_limit::<{ 64 << 20 }>(),
                )
                .map_err(|e| e.to_string())
                .and_then(|(m, _)| m.check().map(|()| m));
                match meta {
                    Ok(meta) => tiers.add_block(Arc::new(BlockInfo { id, meta })),
                    Err(e) => {
                        self.inner.corrupt_count.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(block = id, error = %e, "corrupt block directory entry skipped");
                    }
                }
            }
            it.next();
        }
        it.status()?;
        drop(it);
        // Recent rows, replayed into the active tier.
        let hosts = inner.host_names()?;
        let mut it = inner.db.raw_iterator_cf(inner.cf(CF_RECENT)?);
        it.seek_to_first();
        let mut next_recent = 0;
        let mut new_hosts = Vec::new();
        while it.valid() {
            if let (Some(k), Some(v)) = (it.key(), it.value()) {
                let key = k.try_into().map(u64::from_be_bytes).unwrap_or(0);
                next_recent = key + 1;
                let parsed = codec::parse_row(v).and_then(|row| {
                    let events = row
                        .events
                        .iter()
                        .map(|b| codec::decode_event(b))
                        .collect::<Result<Vec<Event>, _>>()?;
                    Ok((row, events))
                });
                match parsed {
                    Ok((row, events)) => {
                        let stream = tiers.active.stream_index(row.agent, row.epoch);
                        for (i, (e, bytes)) in events.iter().zip(&row.events).enumerate() {
                            let host = match w.host_ids.get(&e.host.name) {
                                Some(h) => *h,
                                None => {
                                    // Hosts are written with the rows; recover anyway.
                                    let id = (hosts.len() + new_hosts.len()) as u32;
                                    w.host_ids.insert(e.host.name.clone(), id);
                                    new_hosts.push(e.host.name.clone());
                                    id
                                }
                            };
                            tiers
                                .active
                                .push(e, bytes, stream, row.first_seq + i as u64, host);
                        }
                        tiers.active.recent_keys.push(key);
                    }
                    Err(e) => {
                        inner.corrupt_rows.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(row = key, error = %e, "corrupt recent row skipped");
                    }
                }
            }
            it.next();
        }
        it.status()?;
        drop(it);
        if !new_hosts.is_empty() {
            let mut wb = WriteBatch::default();
            let mut all = (*hosts).clone();
            for n in new_hosts {
                wb.put_cf(
                    inner.cf(CF_HOSTS)?,
                    (all.len() as u32).to_be_bytes(),
                    n.as_bytes(),
                );
                all.push(n);
            }
            inner.db.write_opt(wb, &inner.write_opts(true))?;
            *write(&inner.hosts)? = Arc::new(all);
        }
        w.next_recent = next_recent;
        let over = self.over_threshold(&tiers.active);
        if over {
            let b = std::mem::replace(
                &mut tiers.active,
                Builder::with_capacity(self.inner.cfg.seal_events),
            );
            tiers.frozen.push(Arc::new(b));
        }
        drop(tiers);
        drop(w);
        if over {
            self.seal_pending()?;
        }
        Ok(())
    }

    fn over_threshold(&self, b: &Builder) -> bool {
        !b.is_empty()
            && (b.len() >= self.inner.cfg.seal_events.min(codec::MAX_BLOCK_EVENTS)
                || b.raw_bytes as usize >= self.inner.cfg.seal_bytes)
    }

    /// The high-water mark and last hash of a stream, `None` if nothing was stored.
    pub fn stream_state(
        &self,
        agent: AgentId,
        epoch: Epoch,
    ) -> Result<Option<StreamState>, StoreError> {
        match self
            .inner
            .db
            .get_pinned_cf(self.inner.cf(CF_STREAMS)?, codec::stream_key(agent, epoch))?
        {
            Some(v) => Ok(Some(decode_record("stream state", &v)?)),
            None => Ok(None),
        }
    }

    /// Group commit: one RocksDB write batch, written with `sync = cfg.sync`,
    /// holds the events of every accepted batch, the new high-water marks and
    /// last hashes, and the per-minute counters, so "acknowledged" means durable.
    ///
    /// Call it from one writer thread at a time (it is serialized by a mutex
    /// anyway). Batches of one stream in a single call chain in order. Each
    /// stored event gets `event.id` = `{agent}-{epoch}-{seq}` and `agent.id` = the
    /// agent's hex id (an `agent` section is created when missing); callers set
    /// `event.ingested`.
    pub fn commit(&self, batches: Vec<CommitBatch>) -> Result<Vec<CommitOutcome>, StoreError> {
        let inner = &*self.inner;
        let mut w = lock(&inner.writer)?;
        let mut wb = WriteBatch::default();
        let mut outcomes = Vec::with_capacity(batches.len());
        let mut staged_streams: HashMap<(AgentId, Epoch), StreamState> = HashMap::new();
        type Accepted = (u64, CommitBatch, Vec<u32>, Vec<u8>, Vec<(usize, usize)>);
        let mut accepted: Vec<Accepted> = Vec::new();
        let mut deltas: HashMap<Vec<u8>, u64, FxBuild> = HashMap::default();
        let mut new_hosts: Vec<String> = Vec::new();
        let mut staged_host_ids: HashMap<String, u32, FxBuild> = HashMap::default();
        let host_count = read(&inner.hosts)?.len();
        let mut next_recent = w.next_recent;
        let mut scratch = Vec::new();
        for mut b in batches {
            let key = (b.agent, b.epoch);
            let state = staged_streams
                .get(&key)
                .or_else(|| w.streams.get(&key))
                .copied()
                .unwrap_or(StreamState {
                    stored_end: Seq(0),
                    last_hash: [0; 32],
                });
            let end = b.first_seq.0.saturating_add(b.events.len() as u64);
            let stored_end = state.stored_end.0;
            let outcome = if end <= stored_end {
                CommitOutcome::Duplicate {
                    stored_end: state.stored_end,
                }
            } else if b.first_seq.0 != stored_end {
                CommitOutcome::Gap {
                    expected: state.stored_end,
                }
            } else if stored_end > 0 && b.prev_hash != state.last_hash {
                CommitOutcome::ChainBroken {
                    expected_prev: state.last_hash,
                }
            } else {
                CommitOutcome::Stored {
                    stored_end: Seq(end),
                }
            };
            outcomes.push(outcome);
            if !matches!(outcome, CommitOutcome::Stored { .. }) {
                continue;
            }
            let mut hosts = Vec::with_capacity(b.events.len());
            for e in &mut b.events {
                strip(e);
                let h = match w
                    .host_ids
                    .get(&e.host.name)
                    .or_else(|| staged_host_ids.get(&e.host.name))
                {
                    Some(h) => *h,
                    None => {
                        let id = (host_count + new_hosts.len()) as u32;
                        staged_host_ids.insert(e.host.name.clone(), id);
                        wb.put_cf(
                            inner.cf(CF_HOSTS)?,
                            id.to_be_bytes(),
                            e.host.name.as_bytes(),
                        );
                        new_hosts.push(e.host.name.clone());
                        id
                    }
                };
                hosts.push(h);
                let minute = e.timestamp.nanos().div_euclid(MINUTE_NS);
                let (kind, sev) = (e.kind().code(), sev_code(e));
                *deltas
                    .entry(global_counter_key(minute, kind, sev))
                    .or_default() += 1;
                *deltas
                    .entry(host_counter_key(h, minute, kind, sev))
                    .or_default() += 1;
            }
            let mut row = Vec::with_capacity(64 + b.events.len() * 256);
            codec::encode_row_header(&mut row, b.agent, b.epoch, b.first_seq.0, b.events.len());
            let mut ranges = Vec::with_capacity(b.events.len());
            for e in &b.events {
                scratch.clear();
                bincode::encode_into_std_write(e, &mut scratch, codec::bincode_cfg()).map_err(
                    |e| StoreError::Encode {
                        what: "event",
                        detail: e.to_string(),
                    },
                )?;
                codec::put_varint(&mut row, scratch.len() as u64);
                ranges.push((row.len(), row.len() + scratch.len()));
                row.extend_from_slice(&scratch);
            }
            wb.put_cf(inner.cf(CF_RECENT)?, next_recent.to_be_bytes(), &row);
            let st = StreamState {
                stored_end: Seq(end),
                last_hash: b.hash,
            };
            wb.put_cf(
                inner.cf(CF_STREAMS)?,
                codec::stream_key(b.agent, b.epoch),
                encode_record("stream state", &st)?,
            );
            staged_streams.insert(key, st);
            accepted.push((next_recent, b, hosts, row, ranges));
            next_recent += 1;
        }
        if accepted.is_empty() {
            return Ok(outcomes);
        }
        // Counters: read-modify-write is safe under the writer lock.
        let mut staged_counters = Vec::with_capacity(deltas.len());
        for (k, d) in deltas {
            let cur = match w.counters.get(&k) {
                Some(v) => *v,
                None => read_counter(inner, &k)?,
            };
            let v = cur + d;
            wb.put_cf(inner.cf(CF_COUNTERS)?, &k, v.to_le_bytes());
            staged_counters.push((k, v));
        }
        inner.db.write_opt(wb, &inner.write_opts(inner.cfg.sync))?;
        // Durable: now update the memory state.
        w.streams.extend(staged_streams);
        if w.counters.len() + staged_counters.len() > COUNTER_CACHE_MAX {
            w.counters.clear();
        }
        w.counters.extend(staged_counters);
        w.next_recent = next_recent;
        if !new_hosts.is_empty() {
            w.host_ids.extend(staged_host_ids);
            let mut hosts = write(&inner.hosts)?;
            let mut all = (**hosts).clone();
            all.extend(new_hosts);
            *hosts = Arc::new(all);
        }
        let froze = {
            let mut t = write(&inner.tiers)?;
            for (key, b, hosts, row, ranges) in &accepted {
                let stream = t.active.stream_index(b.agent, b.epoch);
                for (i, ((e, h), r)) in b.events.iter().zip(hosts).zip(ranges).enumerate() {
                    t.active
                        .push(e, &row[r.0..r.1], stream, b.first_seq.0 + i as u64, *h);
                }
                t.active.recent_keys.push(*key);
            }
            if self.over_threshold(&t.active) {
                let b = std::mem::replace(
                    &mut t.active,
                    Builder::with_capacity(self.inner.cfg.seal_events),
                );
                t.frozen.push(Arc::new(b));
                true
            } else {
                false
            }
        };
        drop(w);
        drop(accepted);
        if froze && inner.cfg.inline_seal {
            self.seal_pending()?;
        }
        Ok(outcomes)
    }

    /// Seals every frozen tier into a block. Called by `commit` (inline sealing),
    /// `flush`, or the owner's sealer thread when `inline_seal` is off.
    pub fn seal_pending(&self) -> Result<(), StoreError> {
        let inner = &*self.inner;
        let mut next_block = lock(&inner.seal)?;
        loop {
            let Some(b) = read(&inner.tiers)?.frozen.first().cloned() else {
                break;
            };
            let id = *next_block;
            let sealed = b
                .seal(inner.cfg.page_bytes, inner.cfg.zstd_level)
                .map_err(|detail| StoreError::Encode {
                    what: "block",
                    detail,
                })?;
            let mut wb = WriteBatch::default();
            wb.put_cf(
                inner.cf(CF_BLOCKS)?,
                id.to_be_bytes(),
                encode_record("block directory entry", &sealed.meta)?,
            );
            wb.put_cf(inner.cf(CF_COLS)?, id.to_be_bytes(), &sealed.cols);
            for (i, p) in sealed.pages.iter().enumerate() {
                wb.put_cf(inner.cf(CF_PAGES)?, codec::page_key(id, i as u32), p);
            }
            for (t, v) in &sealed.postings {
                wb.put_cf(inner.cf(CF_POSTINGS)?, codec::posting_key(id, t), v);
            }
            for k in &b.recent_keys {
                wb.delete_cf(inner.cf(CF_RECENT)?, k.to_be_bytes());
            }
            wb.put(META_NEXT_BLOCK, (id + 1).to_le_bytes());
            // Not synced: the events are durable in `recent` until this batch is;
            // the WAL keeps it ordered before any later synced commit.
            inner.db.write_opt(wb, &inner.write_opts(false))?;
            *next_block = id + 1;
            let mut t = write(&inner.tiers)?;
            if t.frozen.first().is_some_and(|f| Arc::ptr_eq(f, &b)) {
                t.frozen.remove(0);
            }
            t.add_block(Arc::new(BlockInfo {
                id,
                meta: sealed.meta,
            }));
        }
        Ok(())
    }

    /// Seals all recent events into blocks and flushes memtables (tests, benchmarks, shutdown).
    pub fn flush(&self) -> Result<(), StoreError> {
        {
            let _w = lock(&self.inner.writer)?;
            let mut t = write(&self.inner.tiers)?;
            if !t.active.is_empty() {
                let b = std::mem::replace(
                    &mut t.active,
                    Builder::with_capacity(self.inner.cfg.seal_events),
                );
                t.frozen.push(Arc::new(b));
            }
        }
        self.seal_pending()?;
        for name in ALL_CFS {
            self.inner.db.flush_cf(self.inner.cf(name)?)?;
        }
        self.inner.db.flush()?;
        Ok(())
    }

    // --- registries ---------------------------------------------------------

    pub fn put_agent(&self, rec: &AgentRecord) -> Result<(), StoreError> {
        let v = encode_record("agent record", rec)?;
        self.inner.db.put_cf_opt(
            self.inner.cf(CF_AGENTS)?,
            rec.id.0,
            v,
            &self.inner.write_opts(true),
        )?;
        Ok(())
    }

    pub fn get_agent(&self, id: AgentId) -> Result<Option<AgentRecord>, StoreError> {
        match self
            .inner
            .db
            .get_pinned_cf(self.inner.cf(CF_AGENTS)?, id.0)?
        {
            Some(v) => Ok(Some(decode_record("agent record", &v)?)),
            None => Ok(None),
        }
    }

    pub fn list_agents(&self) -> Result<Vec<AgentRecord>, StoreError> {
        self.list(CF_AGENTS, "agent record")
    }

    pub fn put_token(&self, t: &TokenRecord) -> Result<(), StoreError> {
        let _g = lock(&self.inner.tokens)?;
        let v = encode_record("token record", t)?;
        self.inner.db.put_cf_opt(
            self.inner.cf(CF_TOKENS)?,
            t.id,
            v,
            &self.inner.write_opts(true),
        )?;
        Ok(())
    }

    /// Uses a token once: checks the secret (constant time), then single use, then expiry;
    /// marks it used with a synced write before returning it.
    pub fn consume_token(
        &self,
        id: [u8; 16],
        secret_hash: [u8; 32],
        now: Timestamp,
    ) -> Result<TokenRecord, TokenError> {
        let _g = lock(&self.inner.tokens)?;
        let cf = self.inner.cf(CF_TOKENS)?;
        let Some(v) = self
            .inner
            .db
            .get_pinned_cf(cf, id)
            .map_err(StoreError::from)?
        else {
            return Err(TokenError::Unknown);
        };
        let mut t: TokenRecord = decode_record("token record", &v)?;
        if !ct_eq(&t.secret_hash, &secret_hash) {
            return Err(TokenError::WrongSecret);
        }
        if t.used {
            return Err(TokenError::AlreadyUsed);
        }
        if now >= t.expires_at {
            return Err(TokenError::Expired);
        }
        t.used = true;
        let v = encode_record("token record", &t)?;
        self.inner
            .db
            .put_cf_opt(cf, id, v, &self.inner.write_opts(true))
            .map_err(StoreError::from)?;
        Ok(t)
    }

    pub fn list_tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        self.list(CF_TOKENS, "token record")
    }

    fn list<T: Decode<()>>(&self, cf: &'static str, what: &str) -> Result<Vec<T>, StoreError> {
        let mut out = Vec::new();
        let mut it = self.inner.db.raw_iterator_cf(self.inner.cf(cf)?);
        it.seek_to_first();
        while it.valid() {
            if let Some(v) = it.value() {
                out.push(decode_record(what, v)?);
            }
            it.next();
        }
        it.status()?;
        Ok(out)
    }

    // --- housekeeping -------------------------------------------------------

    /// Drops the oldest sealed blocks (whole blocks, with their counters) older than
    /// `now - max_age`, then more until the disk usage fits `max_bytes`. Stream
    /// states (high-water marks) are never touched. Recent, unsealed events are kept.
    pub fn retention(
        &self,
        now: Timestamp,
        max_age: Option<Duration>,
        max_bytes: Option<u64>,
    ) -> Result<RetentionReport, StoreError> {
        let inner = &*self.inner;
        let mut w = lock(&inner.writer)?;
        let _s = lock(&inner.seal)?;
        let mut blocks: Vec<Arc<BlockInfo>> =
            read(&inner.tiers)?.blocks.values().cloned().collect();
        blocks.sort_by_key(|b| (b.meta.max_ts, b.id));
        let mut doomed: Vec<Arc<BlockInfo>> = Vec::new();
        let mut rest = blocks.into_iter().peekable();
        if let Some(age) = max_age {
            let cutoff = now
                .nanos()
                .saturating_sub(i64::try_from(age.as_nanos()).unwrap_or(i64::MAX));
            while let Some(b) = rest.next_if(|b| b.meta.max_ts < cutoff) {
                doomed.push(b);
            }
        }
        if let Some(max) = max_bytes {
            let usage = self.disk_usage()?;
            let freed: u64 = doomed.iter().map(|b| b.meta.stored_bytes).sum();
            let mut excess = usage.saturating_sub(max).saturating_sub(freed);
            while excess > 0 {
                let Some(b) = rest.next() else { break };
                excess = excess.saturating_sub(b.meta.stored_bytes);
                doomed.push(b);
            }
        }
        let oldest_kept = rest.map(|b| b.meta.min_ts).min().map(Timestamp);
        let mut report = RetentionReport {
            oldest_kept,
            ..Default::default()
        };
        if doomed.is_empty() {
            return Ok(report);
        }
        // Counter decrements from the doomed blocks' columns.
        let mut deltas: HashMap<Vec<u8>, u64> = HashMap::new();
        for b in &doomed {
            match inner.cols(b, codec::COL_TS | codec::COL_KS | codec::COL_HOST) {
                Ok(c) => {
                    for i in 0..c.len() {
                        let minute = c.ts[i].div_euclid(MINUTE_NS);
                        *deltas
                            .entry(global_counter_key(minute, c.kind[i], c.sev[i]))
                            .or_default() += 1;
                        *deltas
                            .entry(host_counter_key(c.host[i], minute, c.kind[i], c.sev[i]))
                            .or_default() += 1;
                    }
                }
                Err(e) => {
                    tracing::warn!(block = b.id, error = %e, "counters of a corrupt block cannot be decremented")
                }
            }
        }
        let mut wb = WriteBatch::default();
        for b in &doomed {
            let id = b.id;
            wb.delete_cf(inner.cf(CF_BLOCKS)?, id.to_be_bytes());
            wb.delete_cf(inner.cf(CF_COLS)?, id.to_be_bytes());
            wb.delete_range_cf(
                inner.cf(CF_PAGES)?,
                id.to_be_bytes(),
                (id + 1).to_be_bytes(),
            );
            wb.delete_range_cf(
                inner.cf(CF_POSTINGS)?,
                id.to_be_bytes(),
                (id + 1).to_be_bytes(),
            );
            report.blocks_removed += 1;
            report.events_removed += u64::from(b.meta.count);
            report.bytes_removed += b.meta.stored_bytes;
        }
        let mut staged = Vec::new();
        for (k, d) in deltas {
            let cur = match w.counters.get(&k) {
                Some(v) => *v,
                None => read_counter(inner, &k)?,
            };
            let v = cur.saturating_sub(d);
            if v == 0 {
                wb.delete_cf(inner.cf(CF_COUNTERS)?, &k);
            } else {
                wb.put_cf(inner.cf(CF_COUNTERS)?, &k, v.to_le_bytes());
            }
            staged.push((k, v));
        }
        inner.db.write_opt(wb, &inner.write_opts(inner.cfg.sync))?;
        w.counters.extend(staged);
        {
            let mut t = write(&inner.tiers)?;
            for b in &doomed {
                t.remove_block(b.id);
            }
        }
        {
            let mut c = lock(&inner.cols_cache)?;
            for b in &doomed {
                c.map.remove(&b.id);
            }
            let ColsCache { map, order } = &mut *c;
            order.retain(|id| map.contains_key(id));
        }
        drop(w);
        // Give the space back now rather than at the next natural compaction.
        let lo = doomed.iter().map(|b| b.id).min().unwrap_or(0);
        let hi = doomed.iter().map(|b| b.id).max().unwrap_or(0) + 1;
        for cf in [CF_PAGES, CF_POSTINGS, CF_COLS, CF_BLOCKS] {
            inner.db.compact_range_cf(
                inner.cf(cf)?,
                Some(lo.to_be_bytes()),
                Some(hi.to_be_bytes()),
            );
        }
        Ok(report)
    }

    /// Live SST bytes per column family, then `wal` for the write-ahead log.
    pub fn disk_usage_detail(&self) -> Result<Vec<(&'static str, u64)>, StoreError> {
        let inner = &*self.inner;
        let mut out = Vec::new();
        for name in ["default"].into_iter().chain(ALL_CFS) {
            let v = match inner.db.cf_handle(name) {
                Some(cf) => inner
                    .db
                    .property_int_value_cf(cf, "rocksdb.live-sst-files-size")?,
                None => inner.db.property_int_value("rocksdb.live-sst-files-size")?,
            };
            out.push((name, v.unwrap_or(0)));
        }
        let mut wal = 0;
        let rd = std::fs::read_dir(&inner.dir).map_err(|source| StoreError::Io {
            path: inner.dir.clone(),
            source,
        })?;
        for entry in rd.flatten() {
            if entry.path().extension().is_some_and(|e| e == "log")
                && let Ok(m) = entry.metadata()
            {
                wal += m.len();
            }
        }
        out.push(("wal", wal));
        Ok(out)
    }

    /// Live SST files plus WAL, in bytes.
    pub fn disk_usage(&self) -> Result<u64, StoreError> {
        Ok(self.disk_usage_detail()?.iter().map(|(_, v)| v).sum())
    }

    pub fn stats(&self) -> StoreStats {
        let inner = &*self.inner;
        let t = inner.tiers.read().unwrap_or_else(|e| e.into_inner());
        let sealed: u64 = t.blocks.values().map(|b| u64::from(b.meta.count)).sum();
        let recent = (t.active.len() + t.frozen.iter().map(|f| f.len()).sum::<usize>()) as u64;
        let raw = t
            .blocks
            .values()
            .map(|b| b.meta.raw_message_bytes)
            .sum::<u64>()
            + t.active.raw_message_bytes
            + t.frozen.iter().map(|f| f.raw_message_bytes).sum::<u64>();
        StoreStats {
            events: sealed + recent,
            sealed_events: sealed,
            recent_events: recent,
            blocks: t.blocks.len() as u64,
            block_bytes: t.blocks.values().map(|b| b.meta.stored_bytes).sum(),
            raw_message_bytes: raw,
            corrupt_blocks: inner.corrupt_count.load(Ordering::Relaxed),
            corrupt_rows: inner.corrupt_rows.load(Ordering::Relaxed),
        }
    }

    /// A consistent RocksDB checkpoint in `dest` (which must not exist), for backups.
    pub fn checkpoint(&self, dest: &Path) -> Result<(), StoreError> {
        let cp = rocksdb::checkpoint::Checkpoint::new(&self.inner.db)?;
        cp.create_checkpoint(dest)?;
        Ok(())
    }
}

pub(crate) fn read_counter(inner: &Inner, k: &[u8]) -> Result<u64, StoreError> {
    Ok(match inner.db.get_pinned_cf(inner.cf(CF_COUNTERS)?, k)? {
        Some(v) => v
            .as_ref()
            .try_into()
            .map(u64::from_le_bytes)
            .map_err(|_| StoreError::corrupt("counter", "not 8 bytes"))?,
        None => 0,
    })
}

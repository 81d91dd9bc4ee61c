//! The agent's crash-safe disk spool.
//!
//! Owns: the spool directory, and the identity of every event the agent produces.
//! Records (opaque bytes: the agent encodes events) enter with [`Spool::append`] and
//! get a sequence number [`Seq`], contiguous within a random [`Epoch`]. The shipper
//! reads them with [`Spool::read`] and calls [`Spool::release`] once the collector
//! acknowledged them as durable. [`Spool::new_epoch`] renumbers what is pending
//! when the agent finds that its machine was rolled back or cloned.
//!
//! Never does:
//! - network IO, or anything but file IO inside its own directory;
//! - decode record contents: records are opaque bytes, checked by length and crc32c;
//! - delete data before the metadata that stops referencing it is durable: `release`
//!   makes the new acknowledged end durable (temporary file, fsync, rename, fsync of
//!   the directory) before it unlinks a segment, and the directory is fsynced after
//!   every create, rename and unlink;
//! - panic, or refuse to open, because of damaged data: a torn tail is truncated, a
//!   damaged record is skipped and reported as a gap (a range of lost sequence
//!   numbers), a damaged metadata file is rebuilt from the segments, files it does
//!   not know are ignored and reported;
//! - reuse a sequence number that `append` returned, within an epoch (the one
//!   exception, media damage to the length or seq of the very last frame, is below);
//! - read the clock: nothing here depends on time.
//!
//! # On-disk format, version 1
//!
//! All integers are little-endian; crc32c is CRC-32C (Castagnoli). The constants in
//! [`format`](mod@format) are marked "do not change" and pinned by golden files under
//! `spool/tests/golden/v1/` that every build must still read.
//!
//! The directory holds:
//!
//! - `spool.meta` (36 bytes), replaced atomically (`spool.meta.tmp`, fsync, rename,
//!   fsync of the directory):
//!
//!   | offset | size | field |
//!   | --- | --- | --- |
//!   | 0 | 8 | magic `VIGIEMTA` |
//!   | 8 | 4 | version, 1 |
//!   | 12 | 4 | flags, 0 |
//!   | 16 | 8 | epoch |
//!   | 24 | 8 | acked end: every seq below it was released |
//!   | 32 | 4 | crc32c of bytes 0..32 |
//!
//! - segment files `seg-{epoch:016x}-{first_seq:020}.log` (lowercase hex, zero-padded
//!   decimal), created as `….log.tmp` holding only the header, fsynced, renamed and the
//!   directory fsynced. Only the last segment of the current epoch is appended to.
//!   A segment starts with a 36-byte header:
//!
//!   | offset | size | field |
//!   | --- | --- | --- |
//!   | 0 | 8 | magic `VIGIESEG` |
//!   | 8 | 4 | version, 1 |
//!   | 12 | 4 | flags, 0 |
//!   | 16 | 8 | epoch (same as the file name) |
//!   | 24 | 8 | first seq (same as the file name) |
//!   | 32 | 4 | crc32c of bytes 0..32 |
//!
//!   then record frames, back to back, with contiguous increasing seqs:
//!
//!   | offset | size | field |
//!   | --- | --- | --- |
//!   | 0 | 4 | `len`: length of the record data, at most [`MAX_RECORD_LEN`] |
//!   | 4 | 4 | crc32c of bytes 0..4, then 8..16+len (length, seq and data) |
//!   | 8 | 8 | seq |
//!   | 16 | len | record data |
//!
//!   The frame carries its own seq so that after a damaged region the reader knows
//!   exactly which sequence numbers were lost, and a frame found by scanning forward
//!   must both pass its crc and carry a plausible seq before it is trusted.
//!
//! - `spool.lock`, held with an exclusive `flock` while a [`Spool`] is open.
//!
//! A later version keeps bytes 0..12 of both headers (magic, version) and a crc32c of
//! bytes 0..32 at offset 32, so that this build recognises a newer file and leaves it
//! alone (ignored and reported) instead of mistaking it for damage.
//!
//! # Recovery on open
//!
//! - The metadata names the epoch; segments of other epochs are leftovers of an
//!   interrupted or completed [`Spool::new_epoch`] and are deleted. If the metadata is
//!   missing or damaged while segments exist, the epoch with the most segment bytes
//!   wins, everything still on disk is treated as pending (the collector drops
//!   duplicates), and a fresh metadata file is written; the report says so.
//! - In every segment, frames are checked one by one. After a damaged frame the scan
//!   resynchronises on the next frame that passes its crc and carries a seq in the
//!   range that could fit in between; the skipped seqs are a gap.
//! - At the end of the last segment, bytes that are not a whole frame are a torn
//!   write (a crash during `append`, which had not returned): they are truncated and
//!   counted in [`OpenReport::truncated_tail_bytes`], and their seqs are reused. Whole
//!   frames with bad checksums there are damaged records: their seqs are a gap. A
//!   damaged length or seq field in the very last frame cannot be told from a torn
//!   write; with `sync` on, only media corruption produces it.
//!
//! # In memory
//!
//! Open scans every segment once (sequential reads, crc checks) and keeps, per
//! segment, its seq range, a sparse `(seq, offset)` index (an entry at least every
//! 64 KiB) and the byte ranges known damaged. A read seeks to the nearest index entry
//! (or continues where the previous read stopped) and reads through a 256 KiB buffer.

#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod format;
mod segment;

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

pub use format::MAX_RECORD_LEN;
pub use vigie_proto::{Epoch, Seq};

use format::{
    FRAME_HEADER_LEN, LOCK_FILE, META_FILE, META_LEN, META_TMP_FILE, Meta, SEGMENT_HEADER_LEN,
    SegmentHeader, TMP_SUFFIX,
};
use segment::{Probe, Segment, Window};

/// Smallest accepted `segment_bytes`: one header and one small frame.
pub const MIN_SEGMENT_BYTES: u64 = 64;

/// Where the spool lives and how big it may grow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpoolConfig {
    /// The spool's own directory; created on first open.
    pub dir: PathBuf,
    /// Upper bound on the total size of the segment files.
    pub max_bytes: u64,
    /// A segment is closed and a new one started when an append would make it bigger
    /// than this (a batch larger than this gets a segment of its own).
    pub segment_bytes: u64,
    /// fsync every append before it returns. On by default; off only for tests and
    /// benchmarks that do not need durability.
    pub sync: bool,
}

impl SpoolConfig {
    /// Defaults: 1 GiB in 8 MiB segments, fsync on append.
    pub fn new(dir: impl Into<PathBuf>) -> SpoolConfig {
        SpoolConfig {
            dir: dir.into(),
            max_bytes: 1 << 30,
            segment_bytes: 8 << 20,
            sync: true,
        }
    }

    fn validate(&self) -> Result<(), SpoolError> {
        if self.segment_bytes < MIN_SEGMENT_BYTES {
            return Err(SpoolError::InvalidConfig {
                reason: format!(
                    "segment_bytes must be at least {MIN_SEGMENT_BYTES}, found {}",
                    self.segment_bytes
                ),
            });
        }
        if self.max_bytes < self.segment_bytes {
            return Err(SpoolError::InvalidConfig {
                reason: format!(
                    "max_bytes ({}) must be at least segment_bytes ({})",
                    self.max_bytes, self.segment_bytes
                ),
            });
        }
        Ok(())
    }
}

/// What the metadata file looked like on open.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum MetaStatus {
    /// Present and intact.
    #[default]
    Intact,
    /// Absent: a new spool (or a directory whose metadata was removed).
    Missing,
    /// Present but unusable; the reason says what was expected.
    Damaged { reason: String },
}

/// What `open` found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OpenReport {
    /// The spool was new: no metadata and no segments.
    pub created: bool,
    /// Records lost to damage (the total length of `gaps`), plus damaged regions that
    /// lost none (junk between frames, duplicate frames).
    pub corrupt_records: u64,
    /// Bytes of torn writes cut from the end of the last segment.
    pub truncated_tail_bytes: u64,
    /// Sequence ranges `[start, end)` lost to damage, sorted, at or above `acked_end`
    /// (released seqs cannot be lost).
    pub gaps: Vec<(Seq, Seq)>,
    /// The metadata file's state before open rewrote it (if it had to).
    pub meta: MetaStatus,
    /// Files in the directory that are not part of the spool, or that this build
    /// cannot use (unreadable, newer format, header contradicting the name): left alone.
    pub ignored_files: Vec<PathBuf>,
    /// Segments whose header was damaged: read using the file name instead.
    pub damaged_headers: Vec<PathBuf>,
    /// Segments that could not be read to the end (the rest is treated as lost), with the error.
    pub read_errors: Vec<(PathBuf, String)>,
    /// Segments of another epoch, deleted (leftovers of `new_epoch`).
    pub removed_stale: Vec<PathBuf>,
}

/// Counters for the agent's health events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpoolStats {
    pub epoch: Epoch,
    pub next_seq: Seq,
    pub acked_end: Seq,
    /// Total size of the segment files.
    pub bytes: u64,
    /// Records appended and not released, not counting known gaps.
    pub pending: u64,
    /// Records found damaged since open (including those reported by `open`).
    pub corrupt_records: u64,
    /// Segment files.
    pub segments: usize,
}

/// Records read from the spool.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadResult {
    /// Records in seq order.
    pub records: Vec<(Seq, Vec<u8>)>,
    /// Ranges `[start, end)` lost to damage, in order, inside `[from, next)` and at or
    /// above `acked_end`.
    pub skipped: Vec<(Seq, Seq)>,
    /// Where the next read should start: every seq in `[from, next)` is in `records`,
    /// in `skipped`, or was released and deleted.
    pub next: Seq,
}

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool full: {needed} bytes needed, {free} bytes free under max_bytes")]
    Full { needed: u64, free: u64 },
    #[error("i/o error on spool file {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("record of {len} bytes is larger than the spool's limit of {max} bytes")]
    RecordTooLarge { len: usize, max: usize },
    #[error("cannot release up to seq {end}: the spool's next seq is {next_seq}")]
    ReleaseBeyondEnd { end: Seq, next_seq: Seq },
    #[error(
        "spool directory {dir} is in use by another process: expected to lock {dir}/spool.lock"
    )]
    Locked { dir: PathBuf },
    #[error("invalid spool config: {reason}")]
    InvalidConfig { reason: String },
    #[error(
        "spool in {dir} stopped after an i/o error left its files in an unknown state: reopen it"
    )]
    Poisoned { dir: PathBuf },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The spool directory and an open handle on it, for fsync.
#[derive(Debug)]
struct Dir {
    path: PathBuf,
    handle: File,
}

impl Dir {
    fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    fn sync(&self) -> Result<(), SpoolError> {
        self.handle.sync_all().map_err(io_err(&self.path))
    }
}

/// Why writing the metadata failed, and whether the new file may be in place.
struct MetaWriteError {
    error: SpoolError,
    renamed: bool,
}

fn write_meta(dir: &Dir, meta: Meta) -> Result<(), MetaWriteError> {
    let not_renamed = |error| MetaWriteError {
        error,
        renamed: false,
    };
    let tmp = dir.join(META_TMP_FILE);
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(io_err(&tmp))
        .map_err(not_renamed)?;
    f.write_all(&format::encode_meta(meta))
        .map_err(io_err(&tmp))
        .map_err(not_renamed)?;
    f.sync_all().map_err(io_err(&tmp)).map_err(not_renamed)?;
    drop(f);
    let path = dir.join(META_FILE);
    fs::rename(&tmp, &path)
        .map_err(io_err(&path))
        .map_err(not_renamed)?;
    dir.sync().map_err(|error| MetaWriteError {
        error,
        renamed: true,
    })
}

/// Creates an empty segment: header in a temporary file, fsync, rename, fsync dir.
fn create_segment(dir: &Dir, epoch: u64, first_seq: u64) -> Result<(Segment, File), SpoolError> {
    let name = format::segment_file_name(epoch, first_seq);
    let path = dir.join(&name);
    let tmp = dir.join(&format!("{name}{TMP_SUFFIX}"));
    let result = (|| {
        let mut f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(io_err(&tmp))?;
        f.write_all(&format::encode_segment_header(SegmentHeader {
            epoch,
            first_seq,
        }))
        .map_err(io_err(&tmp))?;
        f.sync_all().map_err(io_err(&tmp))?;
        fs::rename(&tmp, &path).map_err(io_err(&path))?;
        Ok(f)
    })();
    match result {
        Ok(f) => {
            dir.sync()?;
            Ok((Segment::new(path, first_seq, true), f))
        }
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// A failed append, and whether it left the files in an unknown state.
struct Failure {
    error: SpoolError,
    poisoned: bool,
}

/// The segments of one epoch, oldest first.
#[derive(Debug)]
struct Chain {
    epoch: u64,
    segments: Vec<Segment>,
    /// Write handle on the last segment, when appends may go there.
    active: Option<File>,
    next_seq: u64,
}

impl Chain {
    fn bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.len).sum()
    }

    /// Whether a batch of `batch_bytes` needs a new segment.
    fn needs_rotation(&self, batch_bytes: u64, segment_bytes: u64) -> bool {
        match (self.segments.last(), &self.active) {
            (Some(seg), Some(_)) if seg.appendable && seg.end_seq == self.next_seq => {
                let empty = seg.len == SEGMENT_HEADER_LEN;
                !empty && seg.len + batch_bytes > segment_bytes
            }
            _ => true,
        }
    }

    /// Bytes a rotation frees by deleting the last segment (when it is entirely released).
    fn reclaimable_on_rotation(&self, acked_end: u64) -> u64 {
        match self.segments.last() {
            Some(seg) if seg.end_seq <= acked_end => seg.len,
            _ => 0,
        }
    }

    /// Starts a new segment at `next_seq`; deletes the previous last segment when it is
    /// entirely below `acked_end` (whose metadata is durable).
    fn rotate(&mut self, dir: &Dir, acked_end: u64) -> Result<(), SpoolError> {
        let (seg, file) = create_segment(dir, self.epoch, self.next_seq)?;
        // An empty segment with a damaged header may have had this very name: replaced.
        self.segments.retain(|s| s.path != seg.path);
        if let Some(last) = self.segments.last()
            && last.end_seq <= acked_end
            && fs::remove_file(&last.path).is_ok()
        {
            self.segments.pop();
            // Best effort: if this fsync fails the file may come back after a crash,
            // and the next open deletes it again.
            let _ = dir.sync();
        }
        self.segments.push(seg);
        self.active = Some(file);
        Ok(())
    }

    /// Writes already-encoded frames (`lens`: the data length of each) at the end of
    /// the active segment, fsyncs if `sync`, and indexes them.
    fn write_frames(
        &mut self,
        frames: &[u8],
        lens: &[usize],
        sync: bool,
    ) -> Result<Range<u64>, Failure> {
        let (Some(file), Some(seg)) = (&self.active, self.segments.last_mut()) else {
            return Err(Failure {
                error: SpoolError::Io {
                    path: PathBuf::new(),
                    source: io::Error::other("no active segment after rotation"),
                },
                poisoned: true,
            });
        };
        let off = seg.len;
        if let Err(e) = file.write_all_at(frames, off) {
            // Undo a partial write so the file holds exactly what the index says.
            let undone = file.set_len(off).and_then(|()| file.sync_all()).is_ok();
            return Err(Failure {
                error: io_err(&seg.path)(e),
                poisoned: !undone,
            });
        }
        if sync && let Err(e) = file.sync_data() {
            // After a failed fsync the page cache cannot be trusted: stop here.
            return Err(Failure {
                error: io_err(&seg.path)(e),
                poisoned: true,
            });
        }
        let first = self.next_seq;
        let mut at = off;
        for (i, len) in lens.iter().enumerate() {
            seg.note_frame(first + i as u64, at, false);
            at += FRAME_HEADER_LEN + *len as u64;
        }
        let end = first + lens.len() as u64;
        seg.len = at;
        seg.end_seq = end;
        self.next_seq = end;
        Ok(first..end)
    }
}

/// The segment a read last used, with its buffer and where it stopped.
#[derive(Debug)]
struct Reader {
    path: PathBuf,
    first_seq: u64,
    window: Window,
    /// `(seq, offset)`: every frame before `offset` has a seq below `seq`.
    cursor: Option<(u64, u64)>,
}

enum SegmentRead {
    /// A limit was reached.
    Full,
    /// The segment has nothing more.
    End,
}

/// The disk spool. Single owner, used from one thread.
#[derive(Debug)]
pub struct Spool {
    cfg: SpoolConfig,
    dir: Dir,
    _lock: File,
    chain: Chain,
    acked_end: u64,
    /// Known lost ranges, sorted and disjoint.
    gaps: Vec<(u64, u64)>,
    corrupt_records: u64,
    poisoned: bool,
    reader: Option<Reader>,
    /// Files that should be gone (old-epoch segments whose unlink failed).
    stale: Vec<PathBuf>,
}

/// A segment file of the chosen epoch, opened.
struct Candidate {
    path: PathBuf,
    first_seq: u64,
    file: File,
    len: u64,
    header_ok: bool,
}

/// What the directory listing found.
#[derive(Default)]
struct Listing {
    /// `(epoch, first_seq, path)` of files named like segments.
    segments: Vec<(u64, u64, PathBuf)>,
}

fn random_epoch(avoid: Option<u64>) -> u64 {
    loop {
        let e: u64 = rand::random();
        if e != 0 && Some(e) != avoid {
            return e;
        }
    }
}

/// Removes everything below `floor` from a sorted list of disjoint ranges.
fn clip_below(list: &mut Vec<(u64, u64)>, floor: u64) {
    list.retain_mut(|(s, e)| {
        *s = (*s).max(floor);
        s < e
    });
}

/// Adds `[start, end)` to a sorted list of disjoint ranges, merging; returns how many
/// of its seqs were not already in the list.
fn add_range(list: &mut Vec<(u64, u64)>, start: u64, end: u64) -> u64 {
    if start >= end {
        return 0;
    }
    let covered: u64 = list
        .iter()
        .map(|&(s, e)| e.min(end).saturating_sub(s.max(start)))
        .sum();
    let i = list.partition_point(|&(_, e)| e < start);
    let mut s = start;
    let mut e = end;
    let mut j = i;
    while j < list.len() && list[j].0 <= e {
        s = s.min(list[j].0);
        e = e.max(list[j].1);
        j += 1;
    }
    list.splice(i..j, [(s, e)]);
    (end - start) - covered
}

impl Spool {
    /// Opens (or creates) the spool in `cfg.dir`, repairing what a crash left behind.
    pub fn open(cfg: SpoolConfig) -> Result<(Spool, OpenReport), SpoolError> {
        cfg.validate()?;
        let existed = cfg.dir.exists();
        fs::create_dir_all(&cfg.dir).map_err(io_err(&cfg.dir))?;
        if !existed
            && let Some(parent) = cfg.dir.parent()
            && !parent.as_os_str().is_empty()
        {
            File::open(parent)
                .and_then(|p| p.sync_all())
                .map_err(io_err(parent))?;
        }
        let handle = File::open(&cfg.dir).map_err(io_err(&cfg.dir))?;
        let dir = Dir {
            path: cfg.dir.clone(),
            handle,
        };
        let lock = lock_dir(&dir)?;
        let mut report = OpenReport::default();

        let listing = list_dir(&dir, &mut report)?;
        let meta = read_meta(&dir);
        let (epoch, acked_end) = match meta {
            Ok(m) => (m.epoch, m.acked_end),
            Err(status) => {
                let chosen = choose_epoch(&listing);
                report.created = status == MetaStatus::Missing && chosen.is_none();
                report.meta = status;
                let (epoch, acked_end) = chosen.unwrap_or((random_epoch(None), 0));
                write_meta(&dir, Meta { epoch, acked_end }).map_err(|e| e.error)?;
                (epoch, acked_end)
            }
        };

        // Segments of other epochs: the metadata no longer references them.
        let mut stale = Vec::new();
        let mut removed_any = false;
        let mut ours = Vec::new();
        for (e, first, path) in listing.segments {
            if e == epoch {
                ours.push((first, path));
            } else if fs::remove_file(&path).is_ok() {
                removed_any = true;
                report.removed_stale.push(path);
            } else {
                stale.push(path);
            }
        }
        if removed_any {
            dir.sync()?;
        }
        ours.sort();

        // Phase 1: open the files and check their headers.
        let mut candidates = Vec::new();
        let mut floor = 0u64; // next_seq must not fall below this
        for (first_seq, path) in ours {
            match open_candidate(&path, epoch, first_seq) {
                Ok(c) => {
                    if !c.header_ok {
                        report.damaged_headers.push(path);
                    }
                    candidates.push(c);
                }
                Err(len) => {
                    // Never create a segment with this name, nor reuse seqs it may hold.
                    let possible = len
                        .unwrap_or(0)
                        .saturating_sub(SEGMENT_HEADER_LEN)
                        .div_ceil(FRAME_HEADER_LEN);
                    floor = floor.max(first_seq.saturating_add(possible.max(1)));
                    report.ignored_files.push(path);
                }
            }
        }

        // Phase 2: scan them in order.
        let mut gaps = Vec::new();
        let mut junk = 0u64;
        let mut expected = match candidates.first() {
            Some(c) => acked_end.min(c.first_seq),
            None => acked_end,
        };
        let mut segments = Vec::with_capacity(candidates.len());
        let mut active = None;
        let n = candidates.len();
        for (k, c) in candidates.into_iter().enumerate() {
            let is_last = k + 1 == n;
            if c.first_seq > expected {
                add_range(&mut gaps, expected, c.first_seq);
            }
            let start = expected.max(c.first_seq);
            let mut seg = Segment::new(c.path, c.first_seq, c.header_ok);
            let mut window = Window::new(c.file, c.len);
            let scan = segment::scan(&mut window, &mut seg, start, is_last);
            if let Some(e) = &scan.read_error {
                report.read_errors.push((seg.path.clone(), e.to_string()));
            }
            for (s, e) in scan.gaps {
                add_range(&mut gaps, s, e);
            }
            junk += scan.junk_regions;
            let file = window.file;
            if let Some(at) = scan.truncate_at {
                file.set_len(at)
                    .and_then(|()| file.sync_all())
                    .map_err(io_err(&seg.path))?;
                report.truncated_tail_bytes += c.len - at;
            }
            expected = expected.max(seg.end_seq);
            if is_last && seg.appendable {
                active = Some(file);
            }
            segments.push(seg);
        }
        if floor > expected {
            add_range(&mut gaps, expected.max(acked_end), floor);
        }
        let next_seq = expected.max(acked_end).max(floor);

        // Released seqs cannot be lost: gaps start at the acknowledged end.
        clip_below(&mut gaps, acked_end);
        let lost: u64 = gaps.iter().map(|&(s, e)| e - s).sum();
        report.corrupt_records = lost + junk;
        report.gaps = gaps.iter().map(|&(s, e)| (Seq(s), Seq(e))).collect();
        let mut spool = Spool {
            cfg,
            dir,
            _lock: lock,
            chain: Chain {
                epoch,
                segments,
                active,
                next_seq,
            },
            acked_end,
            gaps,
            corrupt_records: report.corrupt_records,
            poisoned: false,
            reader: None,
            stale,
        };
        // The metadata is durable: segments entirely below it can go now. A failure
        // here is retried by the next release.
        let _ = spool.sweep();
        Ok((spool, report))
    }

    pub fn epoch(&self) -> Epoch {
        Epoch(self.chain.epoch)
    }

    /// The seq the next appended record gets.
    pub fn next_seq(&self) -> Seq {
        Seq(self.chain.next_seq)
    }

    /// Every seq below this was released.
    pub fn acked_end(&self) -> Seq {
        Seq(self.acked_end)
    }

    pub fn config(&self) -> &SpoolConfig {
        &self.cfg
    }

    /// Appends records as one batch: all get consecutive seqs, in one write and (with
    /// `sync`) one fsync before this returns. All or nothing: on error nothing was
    /// appended. `Full` when the segment files would exceed `max_bytes`.
    pub fn append(&mut self, records: &[&[u8]]) -> Result<Range<u64>, SpoolError> {
        self.check_poisoned()?;
        let mut batch_bytes = 0u64;
        let mut lens = Vec::with_capacity(records.len());
        for r in records {
            if r.len() > MAX_RECORD_LEN {
                return Err(SpoolError::RecordTooLarge {
                    len: r.len(),
                    max: MAX_RECORD_LEN,
                });
            }
            batch_bytes += FRAME_HEADER_LEN + r.len() as u64;
            lens.push(r.len());
        }
        let first = self.chain.next_seq;
        if records.is_empty() {
            return Ok(first..first);
        }
        let rotate = self
            .chain
            .needs_rotation(batch_bytes, self.cfg.segment_bytes);
        let (needed, reclaim) = if rotate {
            (
                batch_bytes + SEGMENT_HEADER_LEN,
                self.chain.reclaimable_on_rotation(self.acked_end),
            )
        } else {
            (batch_bytes, 0)
        };
        let used = self.chain.bytes() - reclaim;
        let free = self.cfg.max_bytes.saturating_sub(used);
        if needed > free {
            return Err(SpoolError::Full { needed, free });
        }
        let mut frames = Vec::with_capacity(batch_bytes as usize);
        for (i, r) in records.iter().enumerate() {
            format::encode_frame(&mut frames, first + i as u64, r);
        }
        if rotate {
            self.reader = None;
            self.chain.rotate(&self.dir, self.acked_end)?;
        }
        match self.chain.write_frames(&frames, &lens, self.cfg.sync) {
            Ok(range) => Ok(range),
            Err(f) => {
                self.poisoned |= f.poisoned;
                Err(f.error)
            }
        }
    }

    /// Reads records from `from` on, in seq order: at most `max_records`, and at most
    /// `max_bytes` of record data unless the first record alone is larger (it is then
    /// returned alone). Damaged records are skipped and reported in `skipped`. Records
    /// below `acked_end` still on disk are returned; released ones already deleted are
    /// not.
    pub fn read(
        &mut self,
        from: Seq,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<ReadResult, SpoolError> {
        let mut expected = from.0.max(self.log_start());
        let mut out = ReadResult {
            records: Vec::new(),
            skipped: Vec::new(),
            next: Seq(expected),
        };
        if max_records == 0 || expected >= self.chain.next_seq {
            return Ok(out);
        }
        let mut bytes = 0usize;
        let segs = &mut self.chain.segments;
        let mut i = segs
            .partition_point(|s| s.first_seq <= expected)
            .saturating_sub(1);
        let mut full = false;
        while i < segs.len() {
            if segs[i].end_seq > expected {
                let reader = ensure_reader(&mut self.reader, &segs[i])?;
                let limits = (max_records, max_bytes);
                match read_segment(
                    &mut segs[i],
                    reader,
                    &mut expected,
                    &mut out,
                    &mut bytes,
                    limits,
                ) {
                    SegmentRead::Full => {
                        full = true;
                        break;
                    }
                    SegmentRead::End => {}
                }
            }
            i += 1;
        }
        if !full && expected < self.chain.next_seq {
            // Past the last segment: released seqs, or seqs a damaged file may hold.
            let s = expected.max(self.acked_end);
            if s < self.chain.next_seq {
                push_skip(&mut out.skipped, s, self.chain.next_seq);
            }
            expected = self.chain.next_seq;
        }
        out.next = Seq(expected);
        // Released seqs cannot be lost: report only what lies at or above acked_end.
        let acked = self.acked_end;
        out.skipped.retain_mut(|(s, e)| {
            s.0 = s.0.max(acked);
            s < e
        });
        for &(s, e) in &out.skipped {
            self.corrupt_records += add_range(&mut self.gaps, s.0, e.0);
        }
        Ok(out)
    }

    /// Everything below `end` is acknowledged: makes that durable, then deletes the
    /// segments entirely below it (never the one appends go to).
    pub fn release(&mut self, end: Seq) -> Result<(), SpoolError> {
        self.check_poisoned()?;
        if end.0 > self.chain.next_seq {
            return Err(SpoolError::ReleaseBeyondEnd {
                end,
                next_seq: Seq(self.chain.next_seq),
            });
        }
        if end.0 > self.acked_end {
            // On failure nothing was unlinked; whether the new metadata is in place or
            // not, both are true statements about what the collector holds.
            write_meta(
                &self.dir,
                Meta {
                    epoch: self.chain.epoch,
                    acked_end: end.0,
                },
            )
            .map_err(|e| e.error)?;
            self.acked_end = end.0;
            clip_below(&mut self.gaps, end.0);
        }
        self.sweep()
    }

    /// Starts a new random epoch: the records not yet released are copied, in order,
    /// into new segments numbered from 0, made durable, then the metadata switches to
    /// the new epoch, then the old segments are deleted. A crash at any point leaves
    /// either the old epoch or the new one complete. Known gaps are not carried over.
    /// Needs room for a second copy of the pending records for a moment (it does not
    /// apply `max_bytes`: refusing would leave the agent on an epoch it must leave).
    pub fn new_epoch(&mut self) -> Result<Epoch, SpoolError> {
        self.check_poisoned()?;
        let epoch = random_epoch(Some(self.chain.epoch));
        let mut chain = Chain {
            epoch,
            segments: Vec::new(),
            active: None,
            next_seq: 0,
        };
        let copied = self.copy_pending(&mut chain);
        if let Err(e) = copied {
            for seg in &chain.segments {
                let _ = fs::remove_file(&seg.path);
            }
            let _ = self.dir.sync();
            return Err(e);
        }
        if let Err(e) = write_meta(
            &self.dir,
            Meta {
                epoch,
                acked_end: 0,
            },
        ) {
            if e.renamed {
                // Either epoch may be the durable one now: keep both sets of files.
                self.poisoned = true;
            } else {
                for seg in &chain.segments {
                    let _ = fs::remove_file(&seg.path);
                }
                let _ = self.dir.sync();
            }
            return Err(e.error);
        }
        let old = std::mem::replace(&mut self.chain, chain);
        self.acked_end = 0;
        self.gaps.clear();
        self.reader = None;
        drop(old.active);
        self.stale.extend(old.segments.into_iter().map(|s| s.path));
        // The epoch did change; old files that resist deletion are retried later and
        // deleted by the next open in any case.
        let _ = self.sweep();
        Ok(Epoch(epoch))
    }

    pub fn stats(&self) -> SpoolStats {
        let (lo, hi) = (self.acked_end, self.chain.next_seq);
        let in_gaps: u64 = self
            .gaps
            .iter()
            .map(|&(s, e)| e.min(hi).saturating_sub(s.max(lo)))
            .sum();
        SpoolStats {
            epoch: self.epoch(),
            next_seq: self.next_seq(),
            acked_end: self.acked_end(),
            bytes: self.chain.bytes(),
            pending: hi.saturating_sub(lo) - in_gaps,
            corrupt_records: self.corrupt_records,
            segments: self.chain.segments.len(),
        }
    }

    fn check_poisoned(&self) -> Result<(), SpoolError> {
        if self.poisoned {
            Err(SpoolError::Poisoned {
                dir: self.dir.path.clone(),
            })
        } else {
            Ok(())
        }
    }

    /// The lowest seq a read can start at.
    fn log_start(&self) -> u64 {
        match self.chain.segments.first() {
            Some(s) => s.first_seq.min(self.acked_end),
            None => self.acked_end,
        }
    }

    /// Copies the pending records into `chain`, fsyncing each batch.
    fn copy_pending(&mut self, chain: &mut Chain) -> Result<(), SpoolError> {
        const BATCH_BYTES: usize = 4 << 20;
        let mut from = Seq(self.acked_end);
        while from.0 < self.chain.next_seq {
            let r = self.read(from, 4096, BATCH_BYTES)?;
            if r.next <= from {
                break;
            }
            from = r.next;
            if r.records.is_empty() {
                continue;
            }
            let mut frames = Vec::new();
            let mut lens = Vec::with_capacity(r.records.len());
            for (i, (_, data)) in r.records.iter().enumerate() {
                format::encode_frame(&mut frames, chain.next_seq + i as u64, data);
                lens.push(data.len());
            }
            if chain.needs_rotation(frames.len() as u64, self.cfg.segment_bytes) {
                chain.rotate(&self.dir, 0)?;
            }
            chain
                .write_frames(&frames, &lens, true)
                .map_err(|f| f.error)?;
        }
        Ok(())
    }

    /// Deletes segments entirely below `acked_end` (except the last one) and stale
    /// files, then fsyncs the directory. Returns the first unlink error.
    fn sweep(&mut self) -> Result<(), SpoolError> {
        let mut first_err = None;
        let mut removed = false;
        let n = self.chain.segments.len();
        let mut kept = Vec::with_capacity(n);
        for (i, seg) in std::mem::take(&mut self.chain.segments)
            .into_iter()
            .enumerate()
        {
            if i + 1 < n && seg.end_seq <= self.acked_end {
                match fs::remove_file(&seg.path) {
                    Ok(()) => removed = true,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => removed = true,
                    Err(e) => {
                        first_err.get_or_insert(SpoolError::Io {
                            path: seg.path.clone(),
                            source: e,
                        });
                        kept.push(seg);
                    }
                }
            } else {
                kept.push(seg);
            }
        }
        self.chain.segments = kept;
        let mut stale = Vec::new();
        for path in std::mem::take(&mut self.stale) {
            match fs::remove_file(&path) {
                Ok(()) => removed = true,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    first_err.get_or_insert(SpoolError::Io {
                        path: path.clone(),
                        source: e,
                    });
                    stale.push(path);
                }
            }
        }
        self.stale = stale;
        if removed {
            if let Some(r) = &self.reader
                && !self.chain.segments.iter().any(|s| s.path == r.path)
            {
                self.reader = None;
            }
            self.dir.sync()?;
        }
        first_err.map_or(Ok(()), Err)
    }
}

/// Appends `[s, e)` to a list of skipped ranges, merging with the last one.
fn push_skip(list: &mut Vec<(Seq, Seq)>, s: u64, e: u64) {
    if let Some(last) = list.last_mut()
        && last.1.0 == s
    {
        last.1 = Seq(e);
        return;
    }
    list.push((Seq(s), Seq(e)));
}

fn ensure_reader<'a>(
    cache: &'a mut Option<Reader>,
    seg: &Segment,
) -> Result<&'a mut Reader, SpoolError> {
    let reuse = cache
        .as_ref()
        .is_some_and(|r| r.path == seg.path && r.first_seq == seg.first_seq);
    if !reuse {
        let file = File::open(&seg.path).map_err(io_err(&seg.path))?;
        *cache = Some(Reader {
            path: seg.path.clone(),
            first_seq: seg.first_seq,
            window: Window::new(file, seg.len),
            cursor: None,
        });
    }
    let reader = cache.as_mut().ok_or_else(|| SpoolError::Io {
        path: seg.path.clone(),
        source: io::Error::other("reader cache empty after fill"),
    })?;
    reader.window.end = seg.len;
    Ok(reader)
}

/// Reads from one segment into `out`, advancing `expected`.
fn read_segment(
    seg: &mut Segment,
    reader: &mut Reader,
    expected: &mut u64,
    out: &mut ReadResult,
    bytes: &mut usize,
    (max_records, max_bytes): (usize, usize),
) -> SegmentRead {
    // `walk`: the seq the frame at `off` should carry (a lower bound), used to
    // resynchronise after damage found now, whether or not it is below `expected`.
    let (mut walk, mut off) = seg.seek_hint(*expected);
    if let Some((s, o)) = reader.cursor
        && s <= *expected
        && o > off
    {
        (walk, off) = (s, o);
    }
    let w = &mut reader.window;
    while off < seg.len {
        if let Some(e) = seg.hole_at(off) {
            off = e;
            continue;
        }
        let p = match segment::probe(w, off) {
            Ok(p) => p,
            Err(_) => {
                // Unreadable from here on: the rest of the segment is lost.
                seg.add_hole(off, seg.len);
                break;
            }
        };
        if let Probe::Valid(h) = p {
            if h.seq < *expected {
                walk = walk.max(h.seq + 1);
                off += h.total();
                continue;
            }
            let len = h.len as usize;
            if out.records.len() >= max_records
                || (!out.records.is_empty() && *bytes + len > max_bytes)
            {
                reader.cursor = Some((*expected, off));
                return SegmentRead::Full;
            }
            let data = match w.get(off + FRAME_HEADER_LEN, u64::from(h.len)) {
                Ok(Some(d)) => d.to_vec(),
                _ => {
                    seg.add_hole(off, seg.len);
                    break;
                }
            };
            if h.seq > *expected {
                push_skip(&mut out.skipped, *expected, h.seq);
            }
            out.records.push((Seq(h.seq), data));
            *bytes += len;
            *expected = h.seq + 1;
            walk = *expected;
            off += h.total();
            continue;
        }
        // Damaged since it was scanned: find the next good frame, as open does.
        match segment::resync(w, off, walk) {
            Ok(Some((next, _))) => {
                seg.add_hole(off, next);
                off = next;
            }
            _ => {
                seg.add_hole(off, seg.len);
                break;
            }
        }
    }
    reader.cursor = None;
    if seg.end_seq > *expected {
        push_skip(&mut out.skipped, *expected, seg.end_seq);
        *expected = seg.end_seq;
    }
    SegmentRead::End
}

/// Takes the spool's exclusive lock. A child process being spawned anywhere in this
/// program holds a copy of every descriptor until it calls exec, which can keep a lock
/// that was just released alive for a moment: a held lock is retried for up to 100 ms
/// before the spool is declared in use.
fn lock_dir(dir: &Dir) -> Result<File, SpoolError> {
    const ATTEMPTS: u32 = 50;
    let path = dir.join(LOCK_FILE);
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io_err(&path))?;
    for attempt in 1..=ATTEMPTS {
        match f.try_lock() {
            Ok(()) => return Ok(f),
            Err(fs::TryLockError::WouldBlock) if attempt < ATTEMPTS => {
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            Err(fs::TryLockError::WouldBlock) => break,
            Err(fs::TryLockError::Error(e)) => return Err(io_err(&path)(e)),
        }
    }
    Err(SpoolError::Locked {
        dir: dir.path.clone(),
    })
}

/// Lists the directory: removes leftover temporary files, reports unknown ones.
fn list_dir(dir: &Dir, report: &mut OpenReport) -> Result<Listing, SpoolError> {
    let mut listing = Listing::default();
    let mut removed = false;
    let entries = fs::read_dir(&dir.path).map_err(io_err(&dir.path))?;
    for entry in entries {
        let entry = entry.map_err(io_err(&dir.path))?;
        let path = entry.path();
        let is_file = entry.file_type().map(|t| t.is_file()).unwrap_or(false);
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            report.ignored_files.push(path);
            continue;
        };
        if !is_file {
            report.ignored_files.push(path);
            continue;
        }
        if name == META_FILE || name == LOCK_FILE {
            continue;
        }
        let leftover_tmp = name == META_TMP_FILE
            || name
                .strip_suffix(TMP_SUFFIX)
                .is_some_and(|n| format::parse_segment_name(n).is_some());
        if leftover_tmp {
            // Never renamed into place: a crash interrupted its writing. Nothing refers to it.
            match fs::remove_file(&path) {
                Ok(()) => removed = true,
                Err(_) => report.ignored_files.push(path),
            }
            continue;
        }
        match format::parse_segment_name(&name) {
            Some((epoch, first)) => listing.segments.push((epoch, first, path)),
            None => report.ignored_files.push(path),
        }
    }
    if removed {
        dir.sync()?;
    }
    report.ignored_files.sort();
    Ok(listing)
}

/// Reads the metadata file; the error is its status when it cannot be used.
fn read_meta(dir: &Dir) -> Result<Meta, MetaStatus> {
    let path = dir.join(META_FILE);
    let mut f = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(MetaStatus::Missing),
        Err(e) => {
            return Err(MetaStatus::Damaged {
                reason: format!("cannot open {}: {e}", path.display()),
            });
        }
    };
    let mut buf = Vec::with_capacity(META_LEN + 1);
    // One byte more than expected tells a long file from a correct one.
    if let Err(e) = Read::by_ref(&mut f)
        .take(META_LEN as u64 + 1)
        .read_to_end(&mut buf)
    {
        return Err(MetaStatus::Damaged {
            reason: format!("cannot read {}: {e}", path.display()),
        });
    }
    format::decode_meta(&buf).map_err(|r| MetaStatus::Damaged {
        reason: format!("{}: {r}", path.display()),
    })
}

/// Without usable metadata: the epoch with the most segment bytes, and the first seq
/// still on disk as the acknowledged end.
fn choose_epoch(listing: &Listing) -> Option<(u64, u64)> {
    let mut per_epoch: Vec<(u64, u64, u64)> = Vec::new(); // (epoch, bytes, min first)
    for (epoch, first, path) in &listing.segments {
        let len = fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        match per_epoch.iter_mut().find(|(e, _, _)| e == epoch) {
            Some(entry) => {
                entry.1 += len;
                entry.2 = entry.2.min(*first);
            }
            None => per_epoch.push((*epoch, len, *first)),
        }
    }
    per_epoch.sort_by_key(|&(e, bytes, _)| (std::cmp::Reverse(bytes), e));
    per_epoch.first().map(|&(e, _, first)| (e, first))
}

/// Opens a segment file and checks its header. `Err(len)` when it cannot be used
/// (unreadable, newer format, header contradicting the name), with its length if known.
fn open_candidate(path: &Path, epoch: u64, first_seq: u64) -> Result<Candidate, Option<u64>> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|_| fs::metadata(path).map(|m| m.len()).ok())?;
    let len = file.metadata().map_err(|_| None)?.len();
    let mut header = vec![0u8; SEGMENT_HEADER_LEN.min(len) as usize];
    let header_ok = match file.read_exact_at(&mut header, 0) {
        Err(_) => false,
        Ok(()) => match format::decode_segment_header(&header) {
            Ok(h) if h == (SegmentHeader { epoch, first_seq }) => true,
            Ok(_) | Err(format::HeaderProblem::UnknownVersion(_)) => return Err(Some(len)),
            Err(format::HeaderProblem::Damaged(_)) => false,
        },
    };
    Ok(Candidate {
        path: path.to_path_buf(),
        first_seq,
        file,
        len,
        header_ok,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_range_merges_and_counts_new() {
        let mut l = Vec::new();
        assert_eq!(add_range(&mut l, 5, 10), 5);
        assert_eq!(add_range(&mut l, 20, 30), 10);
        assert_eq!(add_range(&mut l, 8, 22), 10);
        assert_eq!(l, vec![(5, 30)]);
        assert_eq!(add_range(&mut l, 30, 31), 1);
        assert_eq!(add_range(&mut l, 0, 2), 2);
        assert_eq!(l, vec![(0, 2), (5, 31)]);
        assert_eq!(add_range(&mut l, 6, 7), 0);
        assert_eq!(add_range(&mut l, 3, 3), 0);
    }
}

//! One segment file: its in-memory index, and the scanning that finds valid frames,
//! corrupt regions and torn tails in it.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use crate::format::{FRAME_HEADER_LEN, FrameHeader, SEGMENT_HEADER_LEN};

/// A sparse index entry is added at least every this many bytes of frames.
pub const INDEX_STRIDE: u64 = 64 * 1024;
/// Bytes read from a segment at a time.
const CHUNK: usize = 256 * 1024;

/// What the spool knows about one segment file.
#[derive(Debug)]
pub struct Segment {
    pub path: PathBuf,
    /// From the header (or the file name when the header is damaged).
    pub first_seq: u64,
    /// One past the last sequence number this segment accounts for (valid records and
    /// records known lost in it); `first_seq` when it has none.
    pub end_seq: u64,
    /// Bytes of the file that belong to the spool: the file's length.
    pub len: u64,
    /// Valid records.
    pub records: u64,
    /// `(seq, offset)` of some valid frames, increasing: where reads start.
    pub index: Vec<(u64, u64)>,
    /// Byte ranges `[start, end)` known not to hold valid frames; reads jump over them.
    pub holes: Vec<(u64, u64)>,
    /// False when the header is damaged: appends go to a new segment.
    pub appendable: bool,
}

impl Segment {
    pub fn new(path: PathBuf, first_seq: u64, appendable: bool) -> Segment {
        Segment {
            path,
            first_seq,
            end_seq: first_seq,
            len: SEGMENT_HEADER_LEN,
            records: 0,
            index: Vec::new(),
            holes: Vec::new(),
            appendable,
        }
    }

    /// Records a valid frame at `off`, adding an index entry when the last one is far
    /// behind (or `force`).
    pub fn note_frame(&mut self, seq: u64, off: u64, force: bool) {
        let far = match self.index.last() {
            Some(&(_, last)) => off >= last + INDEX_STRIDE,
            None => true,
        };
        if far || force {
            self.index.push((seq, off));
        }
        self.records += 1;
    }

    /// Where to start reading for `seq`: `(floor, offset)` where every frame before
    /// `offset` has a smaller seq, and the frame at `offset` has at least `floor`.
    pub fn seek_hint(&self, seq: u64) -> (u64, u64) {
        let i = self.index.partition_point(|&(s, _)| s <= seq);
        if i == 0 {
            (self.first_seq, SEGMENT_HEADER_LEN)
        } else {
            self.index[i - 1]
        }
    }

    /// End of the hole starting exactly at `off`, if any.
    pub fn hole_at(&self, off: u64) -> Option<u64> {
        let i = self.holes.partition_point(|&(s, _)| s < off);
        match self.holes.get(i) {
            Some(&(s, e)) if s == off => Some(e),
            _ => None,
        }
    }

    pub fn add_hole(&mut self, start: u64, end: u64) {
        let i = self.holes.partition_point(|&(s, _)| s < start);
        self.holes.insert(i, (start, end));
    }
}

/// A buffered, bounded view of a file: reads never go past `end`.
#[derive(Debug)]
pub struct Window {
    pub file: File,
    pub end: u64,
    start: u64,
    buf: Vec<u8>,
}

impl Window {
    pub fn new(file: File, end: u64) -> Window {
        Window {
            file,
            end,
            start: 0,
            buf: Vec::new(),
        }
    }

    /// `len` bytes at `off`, or `None` when they would reach past `end`.
    pub fn get(&mut self, off: u64, len: u64) -> io::Result<Option<&[u8]>> {
        let Some(stop) = off.checked_add(len) else {
            return Ok(None);
        };
        if stop > self.end {
            return Ok(None);
        }
        let buffered_end = self.start + self.buf.len() as u64;
        if off < self.start || stop > buffered_end {
            // len <= end - off here, and callers bound len by MAX_RECORD_LEN + header.
            let want = (len.max(CHUNK as u64)).min(self.end - off);
            self.buf.resize(want as usize, 0);
            self.start = off;
            if let Err(e) = self.file.read_exact_at(&mut self.buf, off) {
                self.buf.clear();
                return Err(e);
            }
        }
        let at = (off - self.start) as usize;
        Ok(Some(&self.buf[at..at + len as usize]))
    }
}

/// What lies at an offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probe {
    /// A frame whose checksum holds.
    Valid(FrameHeader),
    /// A complete frame by its length field, but its checksum fails.
    BadCrc(FrameHeader),
    /// A length field above the record cap.
    TooLong(FrameHeader),
    /// The header or the data reach past the end of the file.
    Incomplete,
}

pub fn probe(w: &mut Window, off: u64) -> io::Result<Probe> {
    let Some(h) = w.get(off, FRAME_HEADER_LEN)? else {
        return Ok(Probe::Incomplete);
    };
    let h = FrameHeader::parse(h);
    if !h.len_ok() {
        return Ok(Probe::TooLong(h));
    }
    let Some(frame) = w.get(off, h.total())? else {
        return Ok(Probe::Incomplete);
    };
    if h.crc_ok(&frame[FRAME_HEADER_LEN as usize..]) {
        Ok(Probe::Valid(h))
    } else {
        Ok(Probe::BadCrc(h))
    }
}

/// After a bad frame at `bad`, finds the next valid frame whose seq is at least
/// `expected` and no more than the number of frames that could fit in between.
/// Returns its offset and header.
pub fn resync(w: &mut Window, bad: u64, expected: u64) -> io::Result<Option<(u64, FrameHeader)>> {
    // Fast path: only the data of one frame is damaged, its successor is intact.
    if let Some(h) = w.get(bad, FRAME_HEADER_LEN)? {
        let h = FrameHeader::parse(h);
        if h.len_ok() && h.seq == expected {
            let next = bad + h.total();
            if let Probe::Valid(n) = probe(w, next)?
                && n.seq == expected + 1
            {
                return Ok(Some((next, n)));
            }
        }
    }
    let mut p = bad + 1;
    while p + FRAME_HEADER_LEN <= w.end {
        let Some(h) = w.get(p, FRAME_HEADER_LEN)? else {
            break;
        };
        let h = FrameHeader::parse(h);
        let max_lost = (p - bad).div_ceil(FRAME_HEADER_LEN);
        if h.len_ok()
            && h.seq >= expected
            && h.seq - expected <= max_lost
            && p + h.total() <= w.end
            && let Probe::Valid(h) = probe(w, p)?
        {
            return Ok(Some((p, h)));
        }
        p += 1;
    }
    Ok(None)
}

/// What scanning one segment found.
#[derive(Debug, Default)]
pub struct Scan {
    /// Sequence ranges lost inside the segment.
    pub gaps: Vec<(u64, u64)>,
    /// Damaged regions that could not be tied to a lost sequence number (junk between
    /// frames, duplicates, the damaged end of a segment that is not the last).
    pub junk_regions: u64,
    /// Where the file should be cut (last segment, torn tail), if anywhere.
    pub truncate_at: Option<u64>,
    /// A read error that made the rest of the segment unreadable.
    pub read_error: Option<io::Error>,
}

/// Scans a segment from its first frame. `expected` is the first sequence number it
/// should hold. For the last segment (`is_last`), bytes after the last valid frame
/// are a torn write unless they are whole frames carrying the next sequence numbers
/// (damaged records, kept as a gap). Fills `seg` (index, holes, `end_seq`, `len`).
/// Never fails: a read error makes the rest of the file a hole.
pub fn scan(w: &mut Window, seg: &mut Segment, mut expected: u64, is_last: bool) -> Scan {
    let mut out = Scan::default();
    let end = w.end;
    let mut off = SEGMENT_HEADER_LEN.min(end);
    let mut force_index = true;
    seg.len = end;
    while off < end {
        let p = match probe(w, off) {
            Ok(p) => p,
            Err(e) => return unreadable(seg, out, off, expected, is_last, e),
        };
        if let Probe::Valid(h) = p {
            if h.seq < expected {
                // A duplicate or out-of-order frame: not ours to return.
                out.junk_regions += 1;
                seg.add_hole(off, off + h.total());
            } else {
                if h.seq > expected {
                    out.gaps.push((expected, h.seq));
                }
                seg.note_frame(h.seq, off, force_index);
                force_index = false;
                expected = h.seq + 1;
            }
            off += h.total();
            continue;
        }
        let found = match resync(w, off, expected) {
            Ok(f) => f,
            Err(e) => return unreadable(seg, out, off, expected, is_last, e),
        };
        if let Some((next, h)) = found {
            seg.add_hole(off, next);
            if h.seq == expected {
                out.junk_regions += 1;
            }
            // The lost range, if any, is pushed when the frame at `next` is read.
            force_index = true;
            off = next;
            continue;
        }
        if is_last {
            let (k, stop) = match walk_damaged_tail(w, off, expected) {
                Ok(r) => r,
                Err(e) => return unreadable(seg, out, off, expected, is_last, e),
            };
            if k > 0 {
                out.gaps.push((expected, expected + k));
                seg.add_hole(off, stop);
                expected += k;
            }
            if stop < end {
                out.truncate_at = Some(stop);
            }
            seg.len = stop;
        } else {
            // How many records were lost here, the next segment says.
            seg.add_hole(off, end);
            out.junk_regions += 1;
        }
        break;
    }
    seg.end_seq = expected;
    out
}

/// The rest of the segment from `off` cannot be read. In the last segment it may
/// have held up to one record per frame header's worth of bytes: those sequence
/// numbers are counted lost so that they are never reused.
fn unreadable(
    seg: &mut Segment,
    mut out: Scan,
    off: u64,
    expected: u64,
    is_last: bool,
    e: io::Error,
) -> Scan {
    let end = seg.len;
    seg.add_hole(off, end);
    seg.appendable = false;
    seg.end_seq = expected;
    if is_last {
        let lost = (end - off).div_ceil(FRAME_HEADER_LEN).max(1);
        out.gaps.push((expected, expected + lost));
        seg.end_seq = expected + lost;
    } else {
        out.junk_regions += 1;
    }
    out.read_error = Some(e);
    out
}

/// From `off`, counts whole frames carrying `expected`, `expected + 1`, … (whatever
/// their checksums say). Returns the count and where the walk stopped.
fn walk_damaged_tail(w: &mut Window, mut off: u64, expected: u64) -> io::Result<(u64, u64)> {
    let mut k = 0;
    while let Some(h) = w.get(off, FRAME_HEADER_LEN)? {
        let h = FrameHeader::parse(h);
        if !h.len_ok() || h.seq != expected + k || off + h.total() > w.end {
            break;
        }
        off += h.total();
        k += 1;
    }
    Ok((k, off))
}

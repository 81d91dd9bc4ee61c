//! On-disk format, version 1: byte layouts, file names, encoders and decoders.
//!
//! The layouts are described in the crate documentation. Every constant marked
//! "do not change" is pinned by the golden files under `spool/tests/golden/`:
//! changing one breaks the reading of spools already on disk. A new layout gets a
//! new version number, and this module keeps reading version 1.

/// Magic bytes opening every segment file. Do not change.
pub const SEGMENT_MAGIC: [u8; 8] = *b"VIGIESEG";
/// Magic bytes opening the metadata file. Do not change.
pub const META_MAGIC: [u8; 8] = *b"VIGIEMTA";
/// Version of the segment and metadata layouts written by this build. Do not change
/// the meaning of version 1; a new layout gets a new number.
pub const FORMAT_VERSION: u32 = 1;
/// Length of a segment header: magic, version, flags, epoch, first seq, crc32c. Do not change.
pub const SEGMENT_HEADER_LEN: u64 = 36;
/// Length of a record frame header: length, crc32c, seq. Do not change.
pub const FRAME_HEADER_LEN: u64 = 16;
/// Length of the metadata file: magic, version, flags, epoch, acked end, crc32c. Do not change.
pub const META_LEN: usize = 36;
/// Largest record accepted by `append`; a length field above it on disk is corruption.
pub const MAX_RECORD_LEN: usize = 16 * 1024 * 1024;

/// Name of the metadata file inside the spool directory. Do not change.
pub const META_FILE: &str = "spool.meta";
/// Name of the metadata file while it is being written. Do not change.
pub const META_TMP_FILE: &str = "spool.meta.tmp";
/// Name of the lock file that keeps a second process out. Do not change.
pub const LOCK_FILE: &str = "spool.lock";
/// Suffix of a segment file while its header is being written. Do not change.
pub const TMP_SUFFIX: &str = ".tmp";

/// `seg-{epoch:016x}-{first_seq:020}.log`. Do not change.
pub fn segment_file_name(epoch: u64, first_seq: u64) -> String {
    format!("seg-{epoch:016x}-{first_seq:020}.log")
}

/// The `(epoch, first_seq)` of a segment file name, if it is exactly one this
/// module would have written.
pub fn parse_segment_name(name: &str) -> Option<(u64, u64)> {
    let rest = name.strip_prefix("seg-")?.strip_suffix(".log")?;
    let (epoch, seq) = rest.split_once('-')?;
    if epoch.len() != 16 || seq.len() != 20 {
        return None;
    }
    if !epoch
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    if !seq.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let epoch = u64::from_str_radix(epoch, 16).ok()?;
    let seq: u64 = seq.parse().ok()?;
    Some((epoch, seq))
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// What a segment header says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    pub epoch: u64,
    pub first_seq: u64,
}

/// Why a segment header could not be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeaderProblem {
    /// Damaged: too short, wrong magic or checksum. The file name still says what the segment is.
    Damaged(String),
    /// Intact but written by a newer build: this build must not touch the file.
    UnknownVersion(u32),
}

pub fn encode_segment_header(h: SegmentHeader) -> [u8; SEGMENT_HEADER_LEN as usize] {
    let mut b = [0u8; SEGMENT_HEADER_LEN as usize];
    b[0..8].copy_from_slice(&SEGMENT_MAGIC);
    b[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    // b[12..16]: flags, zero in version 1.
    b[16..24].copy_from_slice(&h.epoch.to_le_bytes());
    b[24..32].copy_from_slice(&h.first_seq.to_le_bytes());
    let crc = crc32c::crc32c(&b[0..32]);
    b[32..36].copy_from_slice(&crc.to_le_bytes());
    b
}

pub fn decode_segment_header(b: &[u8]) -> Result<SegmentHeader, HeaderProblem> {
    if b.len() < SEGMENT_HEADER_LEN as usize {
        return Err(HeaderProblem::Damaged(format!(
            "expected a {SEGMENT_HEADER_LEN}-byte header, found {} bytes",
            b.len()
        )));
    }
    if b[0..8] != SEGMENT_MAGIC {
        return Err(HeaderProblem::Damaged(
            "expected segment magic \"VIGIESEG\"".into(),
        ));
    }
    let crc = le_u32(b, 32);
    if crc32c::crc32c(&b[0..32]) != crc {
        return Err(HeaderProblem::Damaged(
            "segment header checksum mismatch".into(),
        ));
    }
    let version = le_u32(b, 8);
    if version != FORMAT_VERSION {
        return Err(HeaderProblem::UnknownVersion(version));
    }
    Ok(SegmentHeader {
        epoch: le_u64(b, 16),
        first_seq: le_u64(b, 24),
    })
}

/// Appends one record frame to `buf`.
pub fn encode_frame(buf: &mut Vec<u8>, seq: u64, data: &[u8]) {
    // Callers check MAX_RECORD_LEN first; it fits in a u32.
    let len = u32::try_from(data.len()).unwrap_or(u32::MAX).to_le_bytes();
    let seq = seq.to_le_bytes();
    let crc = frame_crc(len, seq, data);
    buf.extend_from_slice(&len);
    buf.extend_from_slice(&crc.to_le_bytes());
    buf.extend_from_slice(&seq);
    buf.extend_from_slice(data);
}

/// crc32c over the length field, the seq field and the data, in that order.
pub fn frame_crc(len: [u8; 4], seq: [u8; 8], data: &[u8]) -> u32 {
    let crc = crc32c::crc32c(&len);
    let crc = crc32c::crc32c_append(crc, &seq);
    crc32c::crc32c_append(crc, data)
}

/// The fields of a frame header, not yet checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    pub len: u32,
    pub crc: u32,
    pub seq: u64,
}

impl FrameHeader {
    pub fn parse(b: &[u8]) -> FrameHeader {
        FrameHeader {
            len: le_u32(b, 0),
            crc: le_u32(b, 4),
            seq: le_u64(b, 8),
        }
    }

    /// Frame length on disk (header + data).
    pub fn total(&self) -> u64 {
        FRAME_HEADER_LEN + u64::from(self.len)
    }

    pub fn len_ok(&self) -> bool {
        self.len as usize <= MAX_RECORD_LEN
    }

    /// Checks the crc against the data that follows the header.
    pub fn crc_ok(&self, data: &[u8]) -> bool {
        frame_crc(self.len.to_le_bytes(), self.seq.to_le_bytes(), data) == self.crc
    }
}

/// What the metadata file says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meta {
    pub epoch: u64,
    pub acked_end: u64,
}

pub fn encode_meta(m: Meta) -> [u8; META_LEN] {
    let mut b = [0u8; META_LEN];
    b[0..8].copy_from_slice(&META_MAGIC);
    b[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    // b[12..16]: flags, zero in version 1.
    b[16..24].copy_from_slice(&m.epoch.to_le_bytes());
    b[24..32].copy_from_slice(&m.acked_end.to_le_bytes());
    let crc = crc32c::crc32c(&b[0..32]);
    b[32..36].copy_from_slice(&crc.to_le_bytes());
    b
}

/// Decodes the metadata file; the error says what was expected.
pub fn decode_meta(b: &[u8]) -> Result<Meta, String> {
    if b.len() != META_LEN {
        return Err(format!("expected {META_LEN} bytes, found {}", b.len()));
    }
    if b[0..8] != META_MAGIC {
        return Err("expected metadata magic \"VIGIEMTA\"".into());
    }
    if crc32c::crc32c(&b[0..32]) != le_u32(b, 32) {
        return Err("metadata checksum mismatch".into());
    }
    let version = le_u32(b, 8);
    if version != FORMAT_VERSION {
        return Err(format!(
            "expected metadata version {FORMAT_VERSION}, found {version}"
        ));
    }
    Ok(Meta {
        epoch: le_u64(b, 16),
        acked_end: le_u64(b, 24),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The records of the golden segment; `tests/spool.rs` checks the same list.
    pub(crate) fn golden_records() -> Vec<Vec<u8>> {
        vec![
            b"".to_vec(),
            b"hello".to_vec(),
            b"vigie spool format 1".to_vec(),
            (0..=255u8).collect(),
            vec![0xff; 3],
        ]
    }

    const GOLDEN_EPOCH: u64 = 0x0123_4567_89ab_cdef;
    const GOLDEN_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/v1");

    fn golden_segment() -> Vec<u8> {
        let mut b = encode_segment_header(SegmentHeader {
            epoch: GOLDEN_EPOCH,
            first_seq: 0,
        })
        .to_vec();
        for (i, r) in golden_records().iter().enumerate() {
            encode_frame(&mut b, i as u64, r);
        }
        b
    }

    fn golden_meta() -> Vec<u8> {
        encode_meta(Meta {
            epoch: GOLDEN_EPOCH,
            acked_end: 2,
        })
        .to_vec()
    }

    /// The encoders still produce the committed bytes. `VIGIE_BLESS=1` rewrites them:
    /// only ever for a new format version in a new directory.
    #[test]
    fn golden_files_match_encoders() {
        let seg_path = format!("{GOLDEN_DIR}/{}", segment_file_name(GOLDEN_EPOCH, 0));
        let meta_path = format!("{GOLDEN_DIR}/{META_FILE}");
        if std::env::var_os("VIGIE_BLESS").is_some() {
            std::fs::create_dir_all(GOLDEN_DIR).unwrap();
            std::fs::write(&seg_path, golden_segment()).unwrap();
            std::fs::write(&meta_path, golden_meta()).unwrap();
        }
        assert_eq!(
            std::fs::read(&seg_path).unwrap(),
            golden_segment(),
            "{seg_path}"
        );
        assert_eq!(
            std::fs::read(&meta_path).unwrap(),
            golden_meta(),
            "{meta_path}"
        );
        // Decoders read them back.
        let seg = std::fs::read(&seg_path).unwrap();
        assert_eq!(
            decode_segment_header(&seg).unwrap(),
            SegmentHeader {
                epoch: GOLDEN_EPOCH,
                first_seq: 0
            }
        );
        let meta = std::fs::read(&meta_path).unwrap();
        assert_eq!(
            decode_meta(&meta).unwrap(),
            Meta {
                epoch: GOLDEN_EPOCH,
                acked_end: 2
            }
        );
    }

    #[test]
    fn pinned_constants() {
        // Do not change: these are the version 1 layout.
        assert_eq!(&SEGMENT_MAGIC, b"VIGIESEG");
        assert_eq!(&META_MAGIC, b"VIGIEMTA");
        assert_eq!(FORMAT_VERSION, 1);
        assert_eq!(SEGMENT_HEADER_LEN, 36);
        assert_eq!(FRAME_HEADER_LEN, 16);
        assert_eq!(META_LEN, 36);
        assert_eq!(
            segment_file_name(0xab, 7),
            "seg-00000000000000ab-00000000000000000007.log"
        );
        // A known frame: seq 1, data "hello".
        let mut f = Vec::new();
        encode_frame(&mut f, 1, b"hello");
        assert_eq!(f.len(), 21);
        assert_eq!(&f[0..4], &5u32.to_le_bytes());
        assert_eq!(&f[8..16], &1u64.to_le_bytes());
        assert_eq!(&f[16..], b"hello");
        let mut crc_input = 5u32.to_le_bytes().to_vec();
        crc_input.extend_from_slice(&1u64.to_le_bytes());
        crc_input.extend_from_slice(b"hello");
        assert_eq!(&f[4..8], &crc32c::crc32c(&crc_input).to_le_bytes());
    }

    #[test]
    fn names_round_trip_and_reject_lookalikes() {
        let n = segment_file_name(u64::MAX, u64::MAX);
        assert_eq!(parse_segment_name(&n), Some((u64::MAX, u64::MAX)));
        assert_eq!(
            parse_segment_name("seg-00000000000000ab-00000000000000000007.log"),
            Some((0xab, 7))
        );
        for bad in [
            "seg-00000000000000AB-00000000000000000007.log",
            "seg-00000000000000ab-0000000000000000007.log",
            "seg-00000000000000ab-+0000000000000000007.log",
            "seg-00000000000000ab-00000000000000000007.log.tmp",
            "seg-0000000000000ab-000000000000000000007.log",
            "seg-00000000000000ab_00000000000000000007.log",
            "seg-00000000000000ab-99999999999999999999.log",
            "x",
        ] {
            assert_eq!(parse_segment_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn headers_and_meta_reject_damage() {
        let h = encode_segment_header(SegmentHeader {
            epoch: 5,
            first_seq: 9,
        });
        assert!(decode_segment_header(&h[..35]).is_err());
        for i in 0..h.len() {
            let mut d = h;
            d[i] ^= 0x10;
            assert!(decode_segment_header(&d).is_err(), "byte {i}");
        }
        let m = encode_meta(Meta {
            epoch: 5,
            acked_end: 9,
        });
        assert!(decode_meta(&m[..35]).is_err());
        for i in 0..m.len() {
            let mut d = m;
            d[i] ^= 0x01;
            assert!(decode_meta(&d).is_err(), "byte {i}");
        }
    }
}

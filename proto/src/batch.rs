//! Signed, hash-chained event batches.
//!
//! # Wire format, version 1 (do not change; golden frames in `proto/golden/`)
//!
//! ```text
//! offset size field
//!      0    4 magic "VGB1"
//!      4    1 version = 1
//!      5    1 codec   = 1 (zstd-compressed bincode-2 Vec<Event>)
//!      6    2 flags   = 0 (little endian)
//!      8   16 agent id
//!     24    8 epoch          (u64 LE)
//!     32    8 first seq      (u64 LE)
//!     40    4 event count    (u32 LE)
//!     44    8 agent clock    (i64 LE, ns since the Unix epoch, when the batch was sealed)
//!     52   32 previous batch hash (SHA-256 of the previous frame of this epoch; zeros for the first)
//!     84    4 payload length (u32 LE)
//!     88   64 ed25519 signature over DOMAIN || bytes 0..88 || payload
//!    152    n payload
//! ```
//!
//! The collector checks the fixed header and the lengths, then the signature
//! ([`SignedBatch::verify`]), and only a [`VerifiedBatch`] can be decompressed and
//! decoded, with caps on the decompressed size and the event count. A batch's hash
//! (SHA-256 of the whole frame) is the next batch's `prev_hash`. Retries resend the
//! identical frame.

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::event::{Event, Timestamp};
use crate::ids::{AgentId, Epoch, Seq};

pub const MAGIC: &[u8; 4] = b"VGB1";
pub const VERSION: u8 = 1;
pub const CODEC_ZSTD_BINCODE: u8 = 1;
/// Domain separation for batch signatures. Do not change.
pub const DOMAIN: &[u8] = b"vigie/batch/v1\0";
pub const HEADER_LEN: usize = 88;
pub const SIG_LEN: usize = 64;
/// Largest frame accepted on the wire (compressed payload plus header).
pub const MAX_FRAME_LEN: usize = 8 * 1024 * 1024;
/// Largest decompressed payload.
pub const MAX_DECOMPRESSED_LEN: usize = 64 * 1024 * 1024;
/// Most events in one batch.
pub const MAX_EVENTS: u32 = 100_000;

pub type Hash = [u8; 32];

#[derive(Debug, Error, PartialEq, Eq)]
pub enum BatchError {
    #[error("batch frame is {0} bytes; at least {min} are needed", min = HEADER_LEN + SIG_LEN)]
    TooShort(usize),
    #[error("batch frame is {0} bytes; at most {MAX_FRAME_LEN} are allowed")]
    TooLong(usize),
    #[error("batch frame does not start with the magic bytes VGB1")]
    BadMagic,
    #[error("batch version {0} is not supported; this build reads version {VERSION}")]
    BadVersion(u8),
    #[error("batch codec {0} is not supported")]
    BadCodec(u8),
    #[error("batch flags {0:#x} are not supported")]
    BadFlags(u16),
    #[error("batch says its payload is {declared} bytes but {actual} follow the header")]
    LengthMismatch { declared: usize, actual: usize },
    #[error("batch declares {0} events; at most {MAX_EVENTS} are allowed")]
    TooManyEvents(u32),
    #[error("batch declares no events")]
    Empty,
    #[error("batch sequence range starting at {0} overflows")]
    SeqOverflow(u64),
    #[error("batch signature does not verify with the agent's key")]
    BadSignature,
    #[error("batch payload does not decompress within {MAX_DECOMPRESSED_LEN} bytes: {0}")]
    Decompress(String),
    #[error("batch payload does not decode: {0}")]
    Decode(String),
    #[error("batch header counts {declared} events but the payload holds {actual}")]
    CountMismatch { declared: u32, actual: usize },
    #[error("event {index} of the batch is out of bounds: {reason}")]
    EventBounds { index: usize, reason: String },
    #[error("batch could not be encoded: {0}")]
    Encode(String),
}

/// The fixed header of a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchHeader {
    pub agent: AgentId,
    pub epoch: Epoch,
    pub first_seq: Seq,
    pub count: u32,
    pub agent_clock: Timestamp,
    pub prev_hash: Hash,
    pub payload_len: u32,
}

impl BatchHeader {
    /// Sequence number one past the last event of the batch.
    pub fn end_seq(&self) -> Seq {
        Seq(self.first_seq.0 + u64::from(self.count))
    }

    fn encode(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[0..4].copy_from_slice(MAGIC);
        h[4] = VERSION;
        h[5] = CODEC_ZSTD_BINCODE;
        h[6..8].copy_from_slice(&0u16.to_le_bytes());
        h[8..24].copy_from_slice(&self.agent.0);
        h[24..32].copy_from_slice(&self.epoch.0.to_le_bytes());
        h[32..40].copy_from_slice(&self.first_seq.0.to_le_bytes());
        h[40..44].copy_from_slice(&self.count.to_le_bytes());
        h[44..52].copy_from_slice(&self.agent_clock.0.to_le_bytes());
        h[52..84].copy_from_slice(&self.prev_hash);
        h[84..88].copy_from_slice(&self.payload_len.to_le_bytes());
        h
    }

    fn decode(h: &[u8]) -> Result<BatchHeader, BatchError> {
        let u64_at = |o: usize| u64::from_le_bytes(h[o..o + 8].try_into().unwrap_or([0; 8]));
        if &h[0..4] != MAGIC {
            return Err(BatchError::BadMagic);
        }
        if h[4] != VERSION {
            return Err(BatchError::BadVersion(h[4]));
        }
        if h[5] != CODEC_ZSTD_BINCODE {
            return Err(BatchError::BadCodec(h[5]));
        }
        let flags = u16::from_le_bytes([h[6], h[7]]);
        if flags != 0 {
            return Err(BatchError::BadFlags(flags));
        }
        let mut agent = [0u8; 16];
        agent.copy_from_slice(&h[8..24]);
        let mut prev_hash = [0u8; 32];
        prev_hash.copy_from_slice(&h[52..84]);
        let count = u32::from_le_bytes([h[40], h[41], h[42], h[43]]);
        if count == 0 {
            return Err(BatchError::Empty);
        }
        if count > MAX_EVENTS {
            return Err(BatchError::TooManyEvents(count));
        }
        let first_seq = u64_at(32);
        // Sequence numbers stay far below 2^63; a range that would wrap is refused here so
        // that `end_seq` and every consumer can add without overflow.
        if first_seq
            .checked_add(u64::from(count))
            .is_none_or(|end| end > i64::MAX as u64)
        {
            return Err(BatchError::SeqOverflow(first_seq));
        }
        Ok(BatchHeader {
            agent: AgentId(agent),
            epoch: Epoch(u64_at(24)),
            first_seq: Seq(first_seq),
            count,
            agent_clock: Timestamp(u64_at(44) as i64),
            prev_hash,
            payload_len: u32::from_le_bytes([h[84], h[85], h[86], h[87]]),
        })
    }
}

fn bincode_config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_DECOMPRESSED_LEN>()
}

/// Builds and signs a batch. Returns the frame bytes and its hash (the next batch's `prev_hash`).
#[allow(clippy::too_many_arguments)]
pub fn seal(
    key: &SigningKey,
    agent: AgentId,
    epoch: Epoch,
    first_seq: Seq,
    agent_clock: Timestamp,
    prev_hash: Hash,
    events: &[Event],
    zstd_level: i32,
) -> Result<(Vec<u8>, Hash), BatchError> {
    let raw = bincode::encode_to_vec(events, bincode::config::standard())
        .map_err(|e| BatchError::Encode(e.to_string()))?;
    let count = u32::try_from(events.len()).map_err(|_| BatchError::TooManyEvents(u32::MAX))?;
    seal_raw(
        key,
        agent,
        epoch,
        first_seq,
        count,
        agent_clock,
        prev_hash,
        &raw,
        zstd_level,
    )
}

/// The bincode encoding of one event, as the agent stores it in its spool.
pub fn encode_event(event: &Event) -> Result<Vec<u8>, BatchError> {
    bincode::encode_to_vec(event, bincode::config::standard())
        .map_err(|e| BatchError::Encode(e.to_string()))
}

/// Decodes one event encoded by [`encode_event`], with a size cap.
pub fn decode_event(bytes: &[u8]) -> Result<Event, BatchError> {
    let (e, used): (Event, usize) = bincode::decode_from_slice(bytes, bincode_config())
        .map_err(|e| BatchError::Decode(e.to_string()))?;
    if used != bytes.len() {
        return Err(BatchError::Decode(format!(
            "{} trailing bytes after the event",
            bytes.len() - used
        )));
    }
    e.check_bounds()
        .map_err(|reason| BatchError::EventBounds { index: 0, reason })?;
    Ok(e)
}

/// Builds the uncompressed payload of a batch from events already encoded with
/// [`encode_event`]: byte-for-byte what encoding the `Vec<Event>` would give, without
/// decoding and re-encoding them.
pub fn raw_payload(records: &[&[u8]]) -> Result<Vec<u8>, BatchError> {
    let total: usize = records.iter().map(|r| r.len()).sum();
    let mut out = bincode::encode_to_vec(records.len() as u64, bincode::config::standard())
        .map_err(|e| BatchError::Encode(e.to_string()))?;
    out.reserve(total);
    for r in records {
        out.extend_from_slice(r);
    }
    Ok(out)
}

/// Signs a batch whose uncompressed payload (`count` encoded events, see [`raw_payload`]) is given.
#[allow(clippy::too_many_arguments)]
pub fn seal_raw(
    key: &SigningKey,
    agent: AgentId,
    epoch: Epoch,
    first_seq: Seq,
    count: u32,
    agent_clock: Timestamp,
    prev_hash: Hash,
    raw: &[u8],
    zstd_level: i32,
) -> Result<(Vec<u8>, Hash), BatchError> {
    if count == 0 {
        return Err(BatchError::Empty);
    }
    if count > MAX_EVENTS {
        return Err(BatchError::TooManyEvents(count));
    }
    if raw.len() > MAX_DECOMPRESSED_LEN {
        return Err(BatchError::Encode(format!(
            "payload is {} bytes decompressed; at most {MAX_DECOMPRESSED_LEN}",
            raw.len()
        )));
    }
    let payload =
        zstd::bulk::compress(raw, zstd_level).map_err(|e| BatchError::Encode(e.to_string()))?;
    let frame_len = HEADER_LEN + SIG_LEN + payload.len();
    if frame_len > MAX_FRAME_LEN {
        return Err(BatchError::TooLong(frame_len));
    }
    let header = BatchHeader {
        agent,
        epoch,
        first_seq,
        count,
        agent_clock,
        prev_hash,
        payload_len: payload.len() as u32,
    };
    let hb = header.encode();
    let sig = key.sign(&signed_message(&hb, &payload));
    let mut frame = Vec::with_capacity(frame_len);
    frame.extend_from_slice(&hb);
    frame.extend_from_slice(&sig.to_bytes());
    frame.extend_from_slice(&payload);
    let hash = frame_hash(&frame);
    Ok((frame, hash))
}

fn signed_message(header: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(DOMAIN.len() + header.len() + payload.len());
    m.extend_from_slice(DOMAIN);
    m.extend_from_slice(header);
    m.extend_from_slice(payload);
    m
}

/// SHA-256 of a whole frame.
pub fn frame_hash(frame: &[u8]) -> Hash {
    Sha256::digest(frame).into()
}

/// A frame whose header parsed and whose lengths add up; not yet verified.
#[derive(Debug, Clone)]
pub struct SignedBatch<'a> {
    pub header: BatchHeader,
    frame: &'a [u8],
}

impl<'a> SignedBatch<'a> {
    /// Checks the fixed header and lengths. Allocates nothing.
    pub fn parse(frame: &'a [u8]) -> Result<SignedBatch<'a>, BatchError> {
        if frame.len() > MAX_FRAME_LEN {
            return Err(BatchError::TooLong(frame.len()));
        }
        if frame.len() < HEADER_LEN + SIG_LEN {
            return Err(BatchError::TooShort(frame.len()));
        }
        let header = BatchHeader::decode(&frame[..HEADER_LEN])?;
        let actual = frame.len() - HEADER_LEN - SIG_LEN;
        if header.payload_len as usize != actual {
            return Err(BatchError::LengthMismatch {
                declared: header.payload_len as usize,
                actual,
            });
        }
        Ok(SignedBatch { header, frame })
    }

    /// Verifies the signature with the sender's key (strict: no malleable signatures).
    pub fn verify(self, key: &VerifyingKey) -> Result<VerifiedBatch<'a>, BatchError> {
        let sig_bytes: [u8; SIG_LEN] = self.frame[HEADER_LEN..HEADER_LEN + SIG_LEN]
            .try_into()
            .map_err(|_| BatchError::BadSignature)?;
        let sig = Signature::from_bytes(&sig_bytes);
        let msg = signed_message(
            &self.frame[..HEADER_LEN],
            &self.frame[HEADER_LEN + SIG_LEN..],
        );
        key.verify_strict(&msg, &sig)
            .map_err(|_| BatchError::BadSignature)?;
        // verify_strict implies verify; keep the trait import honest for readers.
        debug_assert!(key.verify(&msg, &sig).is_ok());
        Ok(VerifiedBatch {
            header: self.header,
            frame: self.frame,
        })
    }
}

/// A batch whose signature verified. Only this type can be decoded.
#[derive(Debug, Clone)]
pub struct VerifiedBatch<'a> {
    pub header: BatchHeader,
    frame: &'a [u8],
}

impl VerifiedBatch<'_> {
    pub fn hash(&self) -> Hash {
        frame_hash(self.frame)
    }

    pub fn frame(&self) -> &[u8] {
        self.frame
    }

    /// Decompresses (capped) and decodes the events (capped), checking the count and each event's bounds.
    pub fn decode(&self) -> Result<Vec<Event>, BatchError> {
        let payload = &self.frame[HEADER_LEN + SIG_LEN..];
        let raw = zstd::bulk::decompress(payload, MAX_DECOMPRESSED_LEN)
            .map_err(|e| BatchError::Decompress(e.to_string()))?;
        let (events, used): (Vec<Event>, usize) =
            bincode::decode_from_slice(&raw, bincode_config())
                .map_err(|e| BatchError::Decode(e.to_string()))?;
        if used != raw.len() {
            return Err(BatchError::Decode(format!(
                "{} trailing bytes after the events",
                raw.len() - used
            )));
        }
        if events.len() != self.header.count as usize {
            return Err(BatchError::CountMismatch {
                declared: self.header.count,
                actual: events.len(),
            });
        }
        for (index, e) in events.iter().enumerate() {
            e.check_bounds()
                .map_err(|reason| BatchError::EventBounds { index, reason })?;
        }
        Ok(events)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Kind;

    fn key(n: u8) -> SigningKey {
        SigningKey::from_bytes(&[n; 32])
    }

    fn events(n: usize) -> Vec<Event> {
        (0..n)
            .map(|i| {
                let mut e = Event::new(Kind::Log, Timestamp::from_secs(1_700_000_000 + i as i64));
                e.set_message(format!("line {i}"));
                e
            })
            .collect()
    }

    #[test]
    fn seal_verify_decode() {
        let k = key(1);
        let (frame, hash) = seal(
            &k,
            AgentId([7; 16]),
            Epoch(9),
            Seq(100),
            Timestamp(5),
            [0; 32],
            &events(3),
            1,
        )
        .expect("seal");
        let sb = SignedBatch::parse(&frame).expect("parse");
        assert_eq!(sb.header.first_seq, Seq(100));
        assert_eq!(sb.header.end_seq(), Seq(103));
        let vb = sb.verify(&k.verifying_key()).expect("verify");
        assert_eq!(vb.hash(), hash);
        assert_eq!(vb.decode().expect("decode"), events(3));
    }

    #[test]
    fn wrong_key_and_tampering_are_refused() {
        let k = key(1);
        let (frame, _) = seal(
            &k,
            AgentId([7; 16]),
            Epoch(9),
            Seq(0),
            Timestamp(5),
            [0; 32],
            &events(2),
            1,
        )
        .expect("seal");
        let err = SignedBatch::parse(&frame)
            .expect("parse")
            .verify(&key(2).verifying_key())
            .unwrap_err();
        assert_eq!(err, BatchError::BadSignature);
        for i in [0usize, 10, 30, 60, 100, frame.len() - 1] {
            let mut f = frame.clone();
            f[i] ^= 0x40;
            let r = SignedBatch::parse(&f).and_then(|s| s.verify(&k.verifying_key()));
            assert!(r.is_err(), "flip at {i} accepted");
        }
    }

    #[test]
    fn raw_payload_equals_encoding_the_vector() {
        for n in [1usize, 3, 250, 251, 300, 70_000] {
            let evs = events(n);
            let recs: Vec<Vec<u8>> = evs.iter().map(|e| encode_event(e).expect("enc")).collect();
            let refs: Vec<&[u8]> = recs.iter().map(|r| r.as_slice()).collect();
            let direct = bincode::encode_to_vec(&evs, bincode::config::standard()).expect("enc");
            assert_eq!(raw_payload(&refs).expect("raw"), direct, "n={n}");
            assert_eq!(decode_event(&recs[0]).expect("dec"), evs[0]);
        }
    }

    #[test]
    fn sequence_ranges_that_would_wrap_are_refused() {
        let k = key(1);
        let (mut frame, _) = seal(
            &k,
            AgentId([7; 16]),
            Epoch(9),
            Seq(0),
            Timestamp(5),
            [0; 32],
            &events(2),
            1,
        )
        .expect("seal");
        frame[32..40].copy_from_slice(&(u64::MAX - 1).to_le_bytes());
        assert!(matches!(
            SignedBatch::parse(&frame),
            Err(BatchError::SeqOverflow(_))
        ));
        // Found by the batch_frame fuzz target.
        let crash = include_bytes!("../../fuzz/seeds/batch_frame/crash-end-seq-overflow");
        if let Ok(sb) = SignedBatch::parse(crash) {
            let _ = sb.header.end_seq();
        }
    }

    #[test]
    fn truncated_frames_are_refused() {
        let k = key(1);
        let (frame, _) = seal(
            &k,
            AgentId([7; 16]),
            Epoch(9),
            Seq(0),
            Timestamp(5),
            [0; 32],
            &events(2),
            1,
        )
        .expect("seal");
        for n in 0..frame.len() {
            assert!(SignedBatch::parse(&frame[..n]).is_err());
        }
    }
}

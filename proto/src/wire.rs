//! Messages exchanged on QUIC streams between agent and collector.
//!
//! # Framing, version 1 (do not change; golden frames in `proto/golden/`)
//!
//! Every request opens a bidirectional stream, writes one frame and finishes
//! the stream; the peer answers with one frame. A frame is
//!
//! ```text
//! 1 byte  message type
//! 4 bytes body length (u32 LE), checked against the type's cap before any allocation
//! n bytes body
//! ```
//!
//! Bodies are bincode-2 encodings of the closed types below, except for
//! [`MsgType::Batch`], whose body is a raw [`crate::batch`] frame so that the
//! collector verifies its signature before decoding anything inside it.

use bincode::{Decode, Encode};
use thiserror::Error;

use crate::ids::{AgentId, Epoch, Seq};

/// ALPN protocol id for QUIC.
pub const ALPN: &[u8] = b"vigie/1";
pub const FRAME_HEADER_LEN: usize = 5;
/// Cap for every body but batches.
pub const MAX_CONTROL_BODY: usize = 64 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum MsgType {
    /// Agent → collector: [`Hello`].
    Hello = 1,
    /// Agent → collector: a signed batch frame.
    Batch = 2,
    /// Agent → collector, unauthenticated connection only: [`EnrollRequest`].
    Enroll = 3,
    /// Collector → agent: [`Reply`].
    Reply = 4,
    /// Agent → collector: [`CommandPoll`].
    CommandPoll = 5,
}

impl MsgType {
    pub fn from_u8(b: u8) -> Option<MsgType> {
        Some(match b {
            1 => MsgType::Hello,
            2 => MsgType::Batch,
            3 => MsgType::Enroll,
            4 => MsgType::Reply,
            5 => MsgType::CommandPoll,
            _ => return None,
        })
    }

    /// Largest body this type may carry.
    pub fn max_body(self) -> usize {
        match self {
            MsgType::Batch => crate::batch::MAX_FRAME_LEN,
            MsgType::Reply => crate::command::MAX_COMMAND_LEN * 16 + MAX_CONTROL_BODY,
            _ => MAX_CONTROL_BODY,
        }
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum WireError {
    #[error("unknown message type {0}")]
    UnknownType(u8),
    #[error("{ty:?} body of {len} bytes exceeds the cap of {max}")]
    TooLong { ty: MsgType, len: usize, max: usize },
    #[error("frame is truncated: {0}")]
    Truncated(&'static str),
    #[error("{ty:?} body does not decode: {reason}")]
    Decode { ty: MsgType, reason: String },
    #[error("expected a {expected:?} message, got {got:?}")]
    Unexpected { expected: MsgType, got: MsgType },
    #[error("message could not be encoded: {0}")]
    Encode(String),
}

/// Parses a frame header: the type and the body length, checked against the type's cap.
pub fn parse_frame_header(h: [u8; FRAME_HEADER_LEN]) -> Result<(MsgType, usize), WireError> {
    let ty = MsgType::from_u8(h[0]).ok_or(WireError::UnknownType(h[0]))?;
    let len = u32::from_le_bytes([h[1], h[2], h[3], h[4]]) as usize;
    let max = ty.max_body();
    if len > max {
        return Err(WireError::TooLong { ty, len, max });
    }
    Ok((ty, len))
}

/// Builds a frame from a type and a raw body.
pub fn frame(ty: MsgType, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(FRAME_HEADER_LEN + body.len());
    out.push(ty as u8);
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(body);
    out
}

/// Builds a frame carrying a bincode-encoded message.
pub fn encode_msg<T: Encode>(ty: MsgType, msg: &T) -> Result<Vec<u8>, WireError> {
    let body = bincode::encode_to_vec(msg, bincode::config::standard())
        .map_err(|e| WireError::Encode(e.to_string()))?;
    if body.len() > ty.max_body() {
        return Err(WireError::TooLong {
            ty,
            len: body.len(),
            max: ty.max_body(),
        });
    }
    Ok(frame(ty, &body))
}

/// Decodes a bincode body of a given type, with the type's cap as the decoder's limit.
pub fn decode_body<T: Decode<()>>(ty: MsgType, body: &[u8]) -> Result<T, WireError> {
    if body.len() > ty.max_body() {
        return Err(WireError::TooLong {
            ty,
            len: body.len(),
            max: ty.max_body(),
        });
    }
    let cfg = bincode::config::standard().with_limit::<{ 16 * 1024 * 1024 }>();
    let (v, used) = bincode::decode_from_slice(body, cfg).map_err(|e| WireError::Decode {
        ty,
        reason: e.to_string(),
    })?;
    if used != body.len() {
        return Err(WireError::Decode {
            ty,
            reason: format!("{} trailing bytes", body.len() - used),
        });
    }
    Ok(v)
}

/// Splits a complete frame held in memory into type and body.
pub fn split_frame(buf: &[u8]) -> Result<(MsgType, &[u8]), WireError> {
    if buf.len() < FRAME_HEADER_LEN {
        return Err(WireError::Truncated("header"));
    }
    let (ty, len) = parse_frame_header([buf[0], buf[1], buf[2], buf[3], buf[4]])?;
    let body = &buf[FRAME_HEADER_LEN..];
    if body.len() != len {
        return Err(WireError::Truncated("body length differs from the header"));
    }
    Ok((ty, body))
}

/// First message on every authenticated connection.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct Hello {
    pub epoch: Epoch,
    /// The sequence number the agent will give its next event.
    pub next_seq: Seq,
    pub agent_version: String,
    pub hostname: String,
    pub machine_id: String,
}

/// Enrollment: the only request allowed on a connection without a client certificate.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct EnrollRequest {
    pub token_id: [u8; 16],
    pub token_secret: [u8; 32],
    /// DER SubjectPublicKeyInfo of the key the agent will use for TLS.
    pub tls_public_key: Vec<u8>,
    /// The ed25519 key that signs the agent's batches.
    pub identity_key: [u8; 32],
    pub hostname: String,
    pub machine_id: String,
}

/// The agent asks for commands addressed to it with a sequence above `after_seq`.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct CommandPoll {
    pub after_seq: u64,
}

/// Why the collector refused a request. Codes are stable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Encode, Decode)]
pub enum RefuseCode {
    BadRequest,
    BadSignature,
    UnknownAgent,
    IdentityMismatch,
    ChainBroken,
    EnrollmentDenied,
    /// The collector cannot store right now (disk full, shutting down): retry later.
    Unavailable,
}

/// Every answer from the collector.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub enum Reply {
    /// Answer to [`Hello`]: the highest contiguous sequence stored for this epoch
    /// (exclusive end: events below it are stored), and its batch hash.
    Welcome {
        stored_end: Seq,
        last_hash: [u8; 32],
    },
    /// Everything below `stored_end` of `epoch` is durable.
    Ack {
        epoch: Epoch,
        stored_end: Seq,
    },
    /// A gap: resend from `from`.
    Resend {
        epoch: Epoch,
        from: Seq,
    },
    Enrolled {
        agent_id: AgentId,
        client_cert_der: Vec<u8>,
        command_key: [u8; 32],
    },
    Commands {
        signed: Vec<Vec<u8>>,
    },
    Refused {
        code: RefuseCode,
        message: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_round_trip() {
        let h = Hello {
            epoch: Epoch(1),
            next_seq: Seq(2),
            agent_version: "0.1".into(),
            hostname: "h".into(),
            machine_id: "m".into(),
        };
        let f = encode_msg(MsgType::Hello, &h).expect("encode");
        let (ty, body) = split_frame(&f).expect("split");
        assert_eq!(ty, MsgType::Hello);
        assert_eq!(decode_body::<Hello>(ty, body).expect("decode"), h);
    }

    #[test]
    fn oversized_and_unknown_are_refused_before_reading() {
        let mut h = [2u8, 0, 0, 0, 0];
        h[1..5].copy_from_slice(&((crate::batch::MAX_FRAME_LEN + 1) as u32).to_le_bytes());
        assert!(matches!(
            parse_frame_header(h),
            Err(WireError::TooLong { .. })
        ));
        assert_eq!(
            parse_frame_header([99, 0, 0, 0, 0]),
            Err(WireError::UnknownType(99))
        );
        let h = [1u8, 0xff, 0xff, 0xff, 0x7f];
        assert!(matches!(
            parse_frame_header(h),
            Err(WireError::TooLong { .. })
        ));
    }

    #[test]
    fn garbage_bodies_do_not_panic() {
        for n in 0..200u32 {
            let body: Vec<u8> = (0..n)
                .map(|i| (i.wrapping_mul(2654435761) >> 7) as u8)
                .collect();
            let _ = decode_body::<Reply>(MsgType::Reply, &body);
            let _ = decode_body::<EnrollRequest>(MsgType::Enroll, &body);
        }
    }
}

//! Signed commands from the collector to one agent.
//!
//! A command is data first: a closed [`Action`] addressed to one agent, with a
//! random id, a per-agent sequence, an issue and expiry time, signed with the
//! collector's response key (not its TLS key) under a domain-separation prefix.
//! The agent decides whether to run it: [`verify_command`] checks the signature
//! (`verify_strict`), the target, the expiry and the sequence; the agent persists
//! the sequence before running anything.
//!
//! Frame (version 1, do not change): `64-byte signature || body`, where body is the
//! bincode-2 encoding of [`Command`] and the signature covers `DOMAIN || body`.

use bincode::{Decode, Encode};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use thiserror::Error;

use crate::event::Timestamp;
use crate::ids::AgentId;

/// Domain separation for command signatures. Do not change.
pub const DOMAIN: &[u8] = b"vigie/command/v1\0";
pub const MAX_COMMAND_LEN: usize = 16 * 1024;
pub const MAX_ARGS: usize = 32;
pub const MAX_ARG_LEN: usize = 1024;

#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub enum Action {
    /// Run an allowlisted script with validated arguments.
    RunScript {
        script_id: String,
        sha256: [u8; 32],
        args: Vec<String>,
    },
    /// Ask the agent to report its health now.
    ReportHealth,
}

#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct Command {
    pub id: [u8; 16],
    pub target: AgentId,
    pub seq: u64,
    pub issued_at: Timestamp,
    pub expires_at: Timestamp,
    pub action: Action,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum CommandError {
    #[error("command frame is {0} bytes; expected 65 to {MAX_COMMAND_LEN}")]
    BadLength(usize),
    #[error("command signature does not verify with the collector's response key")]
    BadSignature,
    #[error("command does not decode: {0}")]
    Decode(String),
    #[error("command is addressed to agent {0}, not this agent")]
    WrongTarget(AgentId),
    #[error("command expired at {0}")]
    Expired(Timestamp),
    #[error("command sequence {got} is not above the last one run ({last}): replay or reorder")]
    Replayed { got: u64, last: u64 },
    #[error("command has {0} arguments or an argument longer than {MAX_ARG_LEN} bytes")]
    BadArgs(usize),
    #[error("command could not be encoded: {0}")]
    Encode(String),
}

/// Signs a command into its frame.
pub fn sign_command(key: &SigningKey, cmd: &Command) -> Result<Vec<u8>, CommandError> {
    let body = bincode::encode_to_vec(cmd, bincode::config::standard())
        .map_err(|e| CommandError::Encode(e.to_string()))?;
    if body.len() + 64 > MAX_COMMAND_LEN {
        return Err(CommandError::BadLength(body.len() + 64));
    }
    let mut msg = DOMAIN.to_vec();
    msg.extend_from_slice(&body);
    let sig = key.sign(&msg);
    let mut out = sig.to_bytes().to_vec();
    out.extend_from_slice(&body);
    Ok(out)
}

/// Verifies a command frame for agent `me` at time `now`, given the last sequence it ran.
pub fn verify_command(
    key: &VerifyingKey,
    frame: &[u8],
    me: AgentId,
    now: Timestamp,
    last_seq: u64,
) -> Result<Command, CommandError> {
    if frame.len() <= 64 || frame.len() > MAX_COMMAND_LEN {
        return Err(CommandError::BadLength(frame.len()));
    }
    let sig = Signature::from_bytes(
        frame[..64]
            .try_into()
            .map_err(|_| CommandError::BadSignature)?,
    );
    let body = &frame[64..];
    let mut msg = DOMAIN.to_vec();
    msg.extend_from_slice(body);
    key.verify_strict(&msg, &sig)
        .map_err(|_| CommandError::BadSignature)?;
    let cfg = bincode::config::standard().with_limit::<MAX_COMMAND_LEN>();
    let (cmd, used): (Command, usize) =
        bincode::decode_from_slice(body, cfg).map_err(|e| CommandError::Decode(e.to_string()))?;
    if used != body.len() {
        return Err(CommandError::Decode("trailing bytes".into()));
    }
    if cmd.target != me {
        return Err(CommandError::WrongTarget(cmd.target));
    }
    if now >= cmd.expires_at {
        return Err(CommandError::Expired(cmd.expires_at));
    }
    if cmd.seq <= last_seq {
        return Err(CommandError::Replayed {
            got: cmd.seq,
            last: last_seq,
        });
    }
    if let Action::RunScript { args, .. } = &cmd.action
        && (args.len() > MAX_ARGS || args.iter().any(|a| a.len() > MAX_ARG_LEN))
    {
        return Err(CommandError::BadArgs(args.len()));
    }
    Ok(cmd)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(seq: u64) -> Command {
        Command {
            id: [1; 16],
            target: AgentId([2; 16]),
            seq,
            issued_at: Timestamp::from_secs(100),
            expires_at: Timestamp::from_secs(200),
            action: Action::RunScript {
                script_id: "block_ip".into(),
                sha256: [3; 32],
                args: vec!["10.0.0.1".into()],
            },
        }
    }

    #[test]
    fn checks_signature_target_expiry_and_sequence() {
        let k = SigningKey::from_bytes(&[9; 32]);
        let vk = k.verifying_key();
        let f = sign_command(&k, &cmd(5)).expect("sign");
        let now = Timestamp::from_secs(150);
        assert_eq!(
            verify_command(&vk, &f, AgentId([2; 16]), now, 4).expect("ok"),
            cmd(5)
        );
        assert_eq!(
            verify_command(&vk, &f, AgentId([2; 16]), now, 5),
            Err(CommandError::Replayed { got: 5, last: 5 })
        );
        assert_eq!(
            verify_command(&vk, &f, AgentId([3; 16]), now, 0),
            Err(CommandError::WrongTarget(AgentId([2; 16])))
        );
        assert!(matches!(
            verify_command(&vk, &f, AgentId([2; 16]), Timestamp::from_secs(200), 0),
            Err(CommandError::Expired(_))
        ));
        let other = SigningKey::from_bytes(&[8; 32]).verifying_key();
        assert_eq!(
            verify_command(&other, &f, AgentId([2; 16]), now, 0),
            Err(CommandError::BadSignature)
        );
        let mut t = f.clone();
        let last = t.len() - 1;
        t[last] ^= 1;
        assert_eq!(
            verify_command(&vk, &t, AgentId([2; 16]), now, 0),
            Err(CommandError::BadSignature)
        );
    }
}

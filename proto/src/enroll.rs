//! Enrollment bundles: what an administrator hands to a new agent.
//!
//! `vigie enroll create` prints one line, `vigie-enroll-v1:<base64url>`, holding
//! the collector's addresses, its CA certificate (which the agent pins), the
//! single-use token id and secret, and the expiry. The agent reads it from a file
//! or stdin, never from its command line. The collector stores only a SHA-256 of
//! the secret.

use base64::Engine;
use bincode::{Decode, Encode};
use sha2::{Digest, Sha256};

use crate::event::Timestamp;

pub const PREFIX: &str = "vigie-enroll-v1:";
pub const MAX_BUNDLE_LEN: usize = 16 * 1024;

#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct Bundle {
    /// `host:port` of the collector's QUIC listener, tried in order.
    pub collectors: Vec<String>,
    /// Name in the collector's certificate.
    pub server_name: String,
    /// DER of the collector's CA certificate.
    pub ca_cert_der: Vec<u8>,
    pub token_id: [u8; 16],
    pub secret: [u8; 32],
    pub expires_at: Timestamp,
}

impl Bundle {
    pub fn encode(&self) -> String {
        let bytes = bincode::encode_to_vec(self, bincode::config::standard()).unwrap_or_default();
        format!(
            "{PREFIX}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
        )
    }

    pub fn decode(text: &str) -> Result<Bundle, String> {
        let text = text.trim();
        if text.len() > MAX_BUNDLE_LEN {
            return Err(format!(
                "enrollment token is {} bytes; at most {MAX_BUNDLE_LEN}: is this the right file?",
                text.len()
            ));
        }
        let body = text.strip_prefix(PREFIX).ok_or_else(|| {
            format!(
                "enrollment token must start with {PREFIX:?}; create one with `vigie enroll create`"
            )
        })?;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|e| format!("enrollment token is not valid base64url ({e}); copy the whole line printed by `vigie enroll create`"))?;
        let cfg = bincode::config::standard().with_limit::<MAX_BUNDLE_LEN>();
        let (b, used): (Bundle, usize) =
            bincode::decode_from_slice(&bytes, cfg).map_err(|e| format!("enrollment token does not decode ({e}); create a new one with `vigie enroll create`"))?;
        if used != bytes.len() {
            return Err(
                "enrollment token has trailing bytes; copy exactly the printed line".into(),
            );
        }
        if b.collectors.is_empty() {
            return Err("enrollment token names no collector address".into());
        }
        Ok(b)
    }
}

/// What the collector stores for a token: a hash of the secret.
pub fn secret_hash(secret: &[u8; 32]) -> [u8; 32] {
    Sha256::digest(secret).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_errors() {
        let b = Bundle {
            collectors: vec!["127.0.0.1:7702".into()],
            server_name: "vigie-collector".into(),
            ca_cert_der: vec![1, 2, 3],
            token_id: [4; 16],
            secret: [5; 32],
            expires_at: Timestamp::from_secs(10),
        };
        let s = b.encode();
        assert_eq!(Bundle::decode(&format!("  {s}\n")).expect("decode"), b);
        assert!(
            Bundle::decode("hello")
                .unwrap_err()
                .contains("must start with")
        );
        assert!(
            Bundle::decode("vigie-enroll-v1:!!!")
                .unwrap_err()
                .contains("base64url")
        );
        assert!(Bundle::decode("vigie-enroll-v1:AAAA").is_err());
    }
}

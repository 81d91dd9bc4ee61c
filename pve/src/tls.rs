//! TLS for the client: the public WebPKI roots, or a pinned SHA-256 certificate fingerprint
//! for Proxmox hosts with their default self-signed certificate.
//!
//! Pinning is the one legitimate special case of certificate checking in Vigie: the
//! verifier accepts exactly the end-entity certificate whose SHA-256 digest was pinned (the
//! value `pvenode cert info` prints, the one the Proxmox web UI shows), and still verifies
//! the handshake signatures with the crypto provider's algorithms, so a peer must hold the
//! certificate's private key. Host names and validity dates are not checked in pinned mode:
//! the pin already names one certificate.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, OtherError, SignatureScheme};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

use crate::error::PveError;

/// A SHA-256 certificate fingerprint, shown as `AA:BB:…` (32 colon-separated hex pairs).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    /// The fingerprint of a DER certificate.
    pub fn of_der(der: &[u8]) -> Self {
        Fingerprint(Sha256::digest(der).into())
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{b:02X}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

impl FromStr for Fingerprint {
    type Err = PveError;

    /// Accepts `AA:BB:…` (any case) or 64 hex digits.
    fn from_str(s: &str) -> Result<Self, PveError> {
        let hexits: String = s.trim().chars().filter(|c| *c != ':').collect();
        let bytes = hex::decode(&hexits).map_err(|_| {
            PveError::invalid(
                "certificate fingerprint",
                s,
                "expected 32 hex pairs like AA:BB:… (sha-256)",
            )
        })?;
        let arr: [u8; 32] = bytes.try_into().map_err(|_| {
            PveError::invalid(
                "certificate fingerprint",
                s,
                "a sha-256 fingerprint has 32 bytes (64 hex digits); sha-1 fingerprints are not accepted",
            )
        })?;
        Ok(Fingerprint(arr))
    }
}

impl Serialize for Fingerprint {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Fingerprint {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// How the client checks the server's certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TlsMode {
    /// Normal verification against the compiled-in Mozilla roots (webpki-roots).
    WebPki,
    /// Accept exactly the certificate with this SHA-256 fingerprint.
    Pinned(Fingerprint),
}

/// The verifier's refusal, carried inside the rustls error so the client can report both
/// fingerprints.
#[derive(Debug, thiserror::Error)]
#[error("certificate fingerprint {seen} does not match the pinned {expected}")]
pub(crate) struct MismatchError {
    pub expected: Fingerprint,
    pub seen: Fingerprint,
}

#[derive(Debug)]
struct PinnedVerifier {
    expected: Fingerprint,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let seen = Fingerprint::of_der(end_entity.as_ref());
        if seen == self.expected {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                OtherError(Arc::new(MismatchError {
                    expected: self.expected,
                    seen,
                })),
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The ring crypto provider (never aws-lc).
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The rustls client configuration for a mode.
pub(crate) fn client_config(mode: &TlsMode) -> Result<rustls::ClientConfig, PveError> {
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| PveError::Config(format!("tls setup failed: {e}")))?;
    let mut config = match mode {
        TlsMode::WebPki => {
            let mut roots = rustls::RootCertStore::empty();
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        TlsMode::Pinned(expected) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedVerifier {
                expected: *expected,
                provider,
            }))
            .with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Visits an error and everything below it, looking inside `io::Error`s too (their
/// `source()` skips the wrapped error). Stops at the first `Some`.
fn search<T>(
    err: &(dyn std::error::Error + 'static),
    depth: usize,
    f: &mut dyn FnMut(&(dyn std::error::Error + 'static)) -> Option<T>,
) -> Option<T> {
    if depth > 16 {
        return None;
    }
    if let Some(found) = f(err) {
        return Some(found);
    }
    if let Some(io) = err.downcast_ref::<std::io::Error>()
        && let Some(inner) = io.get_ref()
        && let Some(found) = search(inner, depth + 1, f)
    {
        return Some(found);
    }
    err.source().and_then(|s| search(s, depth + 1, f))
}

/// Finds a pinned-fingerprint refusal anywhere in an error's source chain.
pub(crate) fn find_mismatch(
    err: &(dyn std::error::Error + 'static),
) -> Option<(Fingerprint, Fingerprint)> {
    search(err, 0, &mut |e| {
        if let Some(m) = e.downcast_ref::<MismatchError>() {
            return Some((m.expected, m.seen));
        }
        if let Some(rustls::Error::InvalidCertificate(CertificateError::Other(other))) =
            e.downcast_ref::<rustls::Error>()
            && let Some(m) = other.0.downcast_ref::<MismatchError>()
        {
            return Some((m.expected, m.seen));
        }
        None
    })
}

/// The first rustls error in the chain, as text.
pub(crate) fn find_tls_error(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    search(err, 0, &mut |e| {
        e.downcast_ref::<rustls::Error>().map(ToString::to_string)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_parse_and_display() {
        let colon = "AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89";
        let fp: Fingerprint = colon.parse().expect("colon form");
        assert_eq!(fp.to_string(), colon);
        let plain: Fingerprint = colon
            .replace(':', "")
            .to_lowercase()
            .parse()
            .expect("hex form");
        assert_eq!(fp, plain);
        let err = "AB:CD".parse::<Fingerprint>().expect_err("too short");
        assert!(err.to_string().contains("32 bytes"), "{err}");
    }

    #[test]
    fn configs_build_with_ring() {
        assert!(client_config(&TlsMode::WebPki).is_ok());
        assert!(client_config(&TlsMode::Pinned(Fingerprint([7; 32]))).is_ok());
    }
}

//! QUIC transport shared by the agent and the collector.
//!
//! Owns: the certificate authority that issues agent client certificates
//! ([`Ca`]), the QUIC + TLS 1.3 configurations on both sides (ALPN `vigie/1`,
//! mutual authentication with rustls' standard WebPKI verifiers, no 0-RTT), and
//! the request/response framing on QUIC streams with size caps checked before
//! any allocation ([`read_frame`], [`request`]).
//!
//! Never does: decide what a message means, store anything, or special-case
//! certificate verification. The only unauthenticated request the server lets
//! through is enrollment; that decision belongs to the collector, which asks
//! [`peer_agent_id`] who is on the other end.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest, Sha256};
use thiserror::Error;
use vigie_proto::AgentId;
use vigie_proto::wire::{self, FRAME_HEADER_LEN, MsgType};

#[derive(Debug, Error)]
pub enum NetError {
    #[error("certificate error: {0}")]
    Cert(String),
    #[error("tls configuration error: {0}")]
    Tls(#[from] rustls::Error),
    #[error("quic connect error: {0}")]
    Connect(#[from] quinn::ConnectError),
    #[error("quic connection error: {0}")]
    Connection(#[from] quinn::ConnectionError),
    #[error("stream write error: {0}")]
    Write(#[from] quinn::WriteError),
    #[error("stream closed: {0}")]
    Closed(#[from] quinn::ClosedStream),
    #[error("stream read error: {0}")]
    Read(#[from] quinn::ReadExactError),
    #[error("bad frame: {0}")]
    Frame(#[from] wire::WireError),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("io error: {0}")]
    Io(#[from] std::io::Error),
}

/// Name every collector certificate carries, and agents expect.
pub const DEFAULT_SERVER_NAME: &str = "vigie-collector";
/// Prefix of the common name of agent certificates.
pub const AGENT_CN_PREFIX: &str = "vigie-agent-";

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The collector's certificate authority.
pub struct Ca {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
    /// The DER that agents pin (as first written).
    der: Vec<u8>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Ca({})", hex_prefix(&self.der))
    }
}

fn hex_prefix(b: &[u8]) -> String {
    Sha256::digest(b)
        .iter()
        .take(8)
        .map(|x| format!("{x:02x}"))
        .collect()
}

impl Ca {
    /// A new CA with an ECDSA P-256 key.
    pub fn generate() -> Result<Ca, NetError> {
        let key = rcgen::KeyPair::generate().map_err(cert_err)?;
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(cert_err)?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Vigie collector CA");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = rcgen::date_time_ymd(2024, 1, 1);
        params.not_after = rcgen::date_time_ymd(2124, 1, 1);
        let cert = params.self_signed(&key).map_err(cert_err)?;
        let der = cert.der().to_vec();
        Ok(Ca { cert, key, der })
    }

    /// Rebuilds a CA from its DER certificate and PKCS#8 key (as written by [`Ca::to_parts`]).
    pub fn from_parts(cert_der: &[u8], key_pkcs8_der: &[u8]) -> Result<Ca, NetError> {
        let key = rcgen::KeyPair::try_from(key_pkcs8_der).map_err(cert_err)?;
        let params =
            rcgen::CertificateParams::from_ca_cert_der(&CertificateDer::from(cert_der.to_vec()))
                .map_err(cert_err)?;
        let cert = params.self_signed(&key).map_err(cert_err)?;
        Ok(Ca {
            cert,
            key,
            der: cert_der.to_vec(),
        })
    }

    /// `(certificate DER, PKCS#8 key DER)`.
    pub fn to_parts(&self) -> (Vec<u8>, Vec<u8>) {
        (self.der.clone(), self.key.serialize_der())
    }

    pub fn cert_der(&self) -> &[u8] {
        &self.der
    }

    /// A server certificate for the collector, valid for `names` (DNS names or IP addresses).
    pub fn issue_server(&self, names: &[String]) -> Result<(Vec<u8>, Vec<u8>), NetError> {
        let key = rcgen::KeyPair::generate().map_err(cert_err)?;
        let mut params = rcgen::CertificateParams::new(names.to_vec()).map_err(cert_err)?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, DEFAULT_SERVER_NAME);
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        params.not_before = rcgen::date_time_ymd(2024, 1, 1);
        params.not_after = rcgen::date_time_ymd(2124, 1, 1);
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .map_err(cert_err)?;
        Ok((cert.der().to_vec(), key.serialize_der()))
    }

    /// A client certificate for an enrolled agent, for the public key it sent (DER SubjectPublicKeyInfo).
    pub fn issue_agent(&self, agent: AgentId, spki_der: &[u8]) -> Result<Vec<u8>, NetError> {
        let public = rcgen::SubjectPublicKeyInfo::from_der(spki_der).map_err(cert_err)?;
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(cert_err)?;
        params.distinguished_name.push(
            rcgen::DnType::CommonName,
            format!("{AGENT_CN_PREFIX}{agent}"),
        );
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        params.not_before = rcgen::date_time_ymd(2024, 1, 1);
        params.not_after = rcgen::date_time_ymd(2124, 1, 1);
        let cert = params
            .signed_by(&public, &self.cert, &self.key)
            .map_err(cert_err)?;
        Ok(cert.der().to_vec())
    }
}

fn cert_err(e: impl std::fmt::Display) -> NetError {
    NetError::Cert(e.to_string())
}

/// A fresh key pair for an agent's TLS identity: `(PKCS#8 DER, SubjectPublicKeyInfo DER)`.
pub fn generate_tls_key() -> Result<(Vec<u8>, Vec<u8>), NetError> {
    let key = rcgen::KeyPair::generate().map_err(cert_err)?;
    Ok((key.serialize_der(), key.public_key_der()))
}

/// SHA-256 of a certificate's SubjectPublicKeyInfo.
pub fn spki_sha256(spki_der: &[u8]) -> [u8; 32] {
    Sha256::digest(spki_der).into()
}

/// Reads the agent id and SPKI hash from a (chain-verified) agent certificate.
pub fn agent_identity_from_cert(cert_der: &[u8]) -> Option<(AgentId, [u8; 32])> {
    use x509_parser::prelude::FromDer;
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(cert_der).ok()?;
    let cn = cert.subject().iter_common_name().next()?.as_str().ok()?;
    let id = AgentId::parse(cn.strip_prefix(AGENT_CN_PREFIX)?).ok()?;
    Some((id, spki_sha256(cert.public_key().raw)))
}

/// Who is on the other end of an accepted connection: `None` when no client
/// certificate was presented (only enrollment is allowed then).
pub fn peer_agent_id(conn: &quinn::Connection) -> Option<(AgentId, [u8; 32])> {
    let any = conn.peer_identity()?;
    let chain = any.downcast_ref::<Vec<CertificateDer<'static>>>()?;
    agent_identity_from_cert(chain.first()?.as_ref())
}

fn transport() -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.max_idle_timeout(Some(
        Duration::from_secs(30)
            .try_into()
            .unwrap_or(quinn::IdleTimeout::from(quinn::VarInt::from_u32(30_000))),
    ));
    t.keep_alive_interval(Some(Duration::from_secs(5)));
    t.max_concurrent_bidi_streams(64u32.into());
    t.max_concurrent_uni_streams(0u32.into());
    t.stream_receive_window((16u32 * 1024 * 1024).into());
    t.receive_window((64u32 * 1024 * 1024).into());
    t.send_window(64 * 1024 * 1024);
    t
}

/// Server configuration: our certificate, client certificates optional but
/// verified against `ca_der` when presented.
pub fn server_config(
    ca_der: &[u8],
    cert_der: Vec<u8>,
    key_der: Vec<u8>,
) -> Result<quinn::ServerConfig, NetError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(ca_der.to_vec()))?;
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .allow_unauthenticated()
            .build()
            .map_err(|e| NetError::Cert(e.to_string()))?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![CertificateDer::from(cert_der)],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_der)),
        )?;
    tls.alpn_protocols = vec![wire::ALPN.to_vec()];
    tls.max_early_data_size = 0;
    let quic = QuicServerConfig::try_from(tls).map_err(|e| NetError::Cert(e.to_string()))?;
    let mut cfg = quinn::ServerConfig::with_crypto(Arc::new(quic));
    cfg.transport_config(Arc::new(transport()));
    Ok(cfg)
}

/// Client configuration: trust only `ca_der`; present `identity` (certificate DER, PKCS#8 key DER) if given.
pub fn client_config(
    ca_der: &[u8],
    identity: Option<(Vec<u8>, Vec<u8>)>,
) -> Result<quinn::ClientConfig, NetError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(ca_der.to_vec()))?;
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots);
    let mut tls = match identity {
        Some((cert, key)) => builder.with_client_auth_cert(
            vec![CertificateDer::from(cert)],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key)),
        )?,
        None => builder.with_no_client_auth(),
    };
    tls.alpn_protocols = vec![wire::ALPN.to_vec()];
    tls.enable_early_data = false;
    let quic = QuicClientConfig::try_from(tls).map_err(|e| NetError::Cert(e.to_string()))?;
    let mut cfg = quinn::ClientConfig::new(Arc::new(quic));
    cfg.transport_config(Arc::new(transport()));
    Ok(cfg)
}

/// A client endpoint bound to an ephemeral port of the right address family.
pub fn client_endpoint(remote: SocketAddr) -> Result<quinn::Endpoint, NetError> {
    let bind: SocketAddr = if remote.is_ipv6() {
        "[::]:0".parse()
    } else {
        "0.0.0.0:0".parse()
    }
    .map_err(|_| NetError::Cert("bad bind address".into()))?;
    Ok(quinn::Endpoint::client(bind)?)
}

/// Reads one frame: header first, then a body no larger than the type's cap.
pub async fn read_frame(recv: &mut quinn::RecvStream) -> Result<(MsgType, Vec<u8>), NetError> {
    let mut h = [0u8; FRAME_HEADER_LEN];
    recv.read_exact(&mut h).await?;
    let (ty, len) = wire::parse_frame_header(h)?;
    let mut body = vec![0u8; len];
    recv.read_exact(&mut body).await?;
    Ok((ty, body))
}

/// Sends one frame on a new bidirectional stream and reads the one-frame reply.
pub async fn request(
    conn: &quinn::Connection,
    frame: &[u8],
    timeout: Duration,
) -> Result<(MsgType, Vec<u8>), NetError> {
    let fut = async {
        let (mut send, mut recv) = conn.open_bi().await?;
        send.write_all(frame).await?;
        send.finish()?;
        read_frame(&mut recv).await
    };
    tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| NetError::Timeout(timeout))?
}

/// Writes a reply frame and finishes the stream.
pub async fn reply(send: &mut quinn::SendStream, frame: &[u8]) -> Result<(), NetError> {
    send.write_all(frame).await?;
    send.finish()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigie_proto::wire::{Hello, Reply, decode_body, encode_msg};
    use vigie_proto::{Epoch, Seq};

    fn server(ca: &Ca) -> quinn::Endpoint {
        let (cert, key) = ca
            .issue_server(&[
                "localhost".into(),
                DEFAULT_SERVER_NAME.into(),
                "127.0.0.1".into(),
            ])
            .expect("server cert");
        let cfg = server_config(ca.cert_der(), cert, key).expect("server cfg");
        quinn::Endpoint::server(cfg, "127.0.0.1:0".parse().expect("addr")).expect("endpoint")
    }

    #[tokio::test]
    async fn mutual_tls_identifies_the_agent_and_refuses_strangers() {
        let ca = Ca::generate().expect("ca");
        let ep = server(&ca);
        let addr = ep.local_addr().expect("addr");
        let agent = AgentId([0xab; 16]);
        let (key, spki) = generate_tls_key().expect("key");
        let cert = ca.issue_agent(agent, &spki).expect("issue");
        let srv = tokio::spawn(async move {
            let mut seen = Vec::new();
            for _ in 0..2 {
                let conn = ep
                    .accept()
                    .await
                    .expect("incoming")
                    .await
                    .expect("handshake");
                seen.push(peer_agent_id(&conn).map(|(id, _)| id));
                let (mut send, mut recv) = conn.accept_bi().await.expect("bi");
                let (ty, body) = read_frame(&mut recv).await.expect("frame");
                let hello: Hello = decode_body(ty, &body).expect("hello");
                let r = encode_msg(
                    MsgType::Reply,
                    &Reply::Welcome {
                        stored_end: hello.next_seq,
                        last_hash: [0; 32],
                    },
                )
                .expect("enc");
                reply(&mut send, &r).await.expect("reply");
                let _ = conn.closed().await;
            }
            seen
        });
        for ident in [Some((cert, key)), None] {
            let cep = client_endpoint(addr).expect("client");
            let conn = cep
                .connect_with(
                    client_config(ca.cert_der(), ident).expect("cfg"),
                    addr,
                    DEFAULT_SERVER_NAME,
                )
                .expect("connect")
                .await
                .expect("handshake");
            let hello = Hello {
                epoch: Epoch(1),
                next_seq: Seq(42),
                agent_version: "t".into(),
                hostname: "h".into(),
                machine_id: "m".into(),
            };
            let (ty, body) = request(
                &conn,
                &encode_msg(MsgType::Hello, &hello).expect("enc"),
                Duration::from_secs(5),
            )
            .await
            .expect("req");
            assert_eq!(
                decode_body::<Reply>(ty, &body).expect("reply"),
                Reply::Welcome {
                    stored_end: Seq(42),
                    last_hash: [0; 32]
                }
            );
            conn.close(0u32.into(), b"done");
        }
        assert_eq!(srv.await.expect("join"), vec![Some(agent), None]);

        // A certificate from another CA is refused during the handshake.
        let ca2 = Ca::generate().expect("ca2");
        let ep = server(&ca);
        let addr = ep.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Some(inc) = ep.accept().await {
                let _ = inc.await;
            }
        });
        let (key, spki) = generate_tls_key().expect("key");
        let rogue = ca2.issue_agent(agent, &spki).expect("issue");
        let cep = client_endpoint(addr).expect("client");
        let res = async {
            let conn = cep
                .connect_with(
                    client_config(ca.cert_der(), Some((rogue, key))).expect("cfg"),
                    addr,
                    DEFAULT_SERVER_NAME,
                )?
                .await?;
            request(
                &conn,
                &encode_msg(
                    MsgType::Hello,
                    &Hello {
                        epoch: Epoch(1),
                        next_seq: Seq(0),
                        agent_version: String::new(),
                        hostname: String::new(),
                        machine_id: String::new(),
                    },
                )?,
                Duration::from_secs(5),
            )
            .await
        }
        .await;
        assert!(res.is_err(), "rogue certificate accepted");
    }

    #[test]
    fn ca_survives_a_round_trip_through_its_parts() {
        let ca = Ca::generate().expect("ca");
        let (der, key) = ca.to_parts();
        let again = Ca::from_parts(&der, &key).expect("reload");
        let (_, spki) = generate_tls_key().expect("key");
        let cert = again.issue_agent(AgentId([1; 16]), &spki).expect("issue");
        let (id, h) = agent_identity_from_cert(&cert).expect("identity");
        assert_eq!(id, AgentId([1; 16]));
        assert_eq!(h, spki_sha256(&spki));
        // Issued by the reloaded CA, verifiable against the original DER.
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from(der)).expect("root");
        let v = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider(),
        )
        .build()
        .expect("verifier");
        let now = rustls::pki_types::UnixTime::now();
        v.verify_client_cert(&CertificateDer::from(cert), &[], now)
            .expect("chain verifies");
    }
}

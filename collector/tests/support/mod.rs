//! Shared by the collector's integration tests: enroll a test agent through the
//! real QUIC path and get an authenticated connection.

use std::net::SocketAddr;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use vigie_net::{client_config, client_endpoint, generate_tls_key, request};
use vigie_proto::AgentId;
use vigie_proto::enroll::Bundle;
use vigie_proto::wire::{self, EnrollRequest, MsgType, Reply};

/// An enrolled agent: its id and a connection made with its new certificate.
pub struct Enrolled {
    pub id: AgentId,
    pub conn: quinn::Connection,
    pub endpoint: quinn::Endpoint,
}

/// Enrolls `key` as agent `hostname` with `bundle`, then connects with the issued certificate.
pub async fn enroll(
    addr: SocketAddr,
    bundle: &Bundle,
    key: &SigningKey,
    hostname: &str,
) -> Enrolled {
    let (tls_key, spki) = generate_tls_key().expect("key");
    let endpoint = client_endpoint(addr).expect("endpoint");
    let connect = |ident| {
        let cfg = client_config(&bundle.ca_cert_der, ident).expect("client config");
        endpoint
            .connect_with(cfg, addr, vigie_net::DEFAULT_SERVER_NAME)
            .expect("connect")
    };
    let anon = connect(None).await.expect("handshake");
    let req = EnrollRequest {
        token_id: bundle.token_id,
        token_secret: bundle.secret,
        tls_public_key: spki,
        identity_key: key.verifying_key().to_bytes(),
        hostname: hostname.into(),
        machine_id: "m1".into(),
    };
    let frame = wire::encode_msg(MsgType::Enroll, &req).expect("encode");
    let (ty, body) = request(&anon, &frame, Duration::from_secs(10))
        .await
        .expect("enroll");
    let Reply::Enrolled {
        agent_id,
        client_cert_der,
        ..
    } = wire::decode_body::<Reply>(ty, &body).expect("reply")
    else {
        panic!("not enrolled")
    };
    let conn = connect(Some((client_cert_der, tls_key)))
        .await
        .expect("handshake");
    Enrolled {
        id: agent_id,
        conn,
        endpoint,
    }
}

//! Enrollment: turn a single-use token into an identity.
//!
//! The token bundle (read from a file or stdin, never from the command line)
//! names the collector and carries its CA. The agent generates its ed25519
//! identity key and a TLS key here, sends only the public halves, and receives
//! its agent id and client certificate.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use ed25519_dalek::SigningKey;
use rand::RngCore;
use vigie_proto::enroll::Bundle;
use vigie_proto::wire::{self, EnrollRequest, MsgType, Reply};

use crate::state::{Enrollment, Paths, hostname, machine_id, write_atomic};

/// Resolves `host:port` to socket addresses.
pub async fn resolve(addr: &str) -> Result<Vec<std::net::SocketAddr>> {
    let addrs: Vec<_> = tokio::net::lookup_host(addr)
        .await
        .with_context(|| format!("cannot resolve collector address {addr:?}: expected host:port"))?
        .collect();
    if addrs.is_empty() {
        bail!("collector address {addr:?} resolves to nothing");
    }
    Ok(addrs)
}

/// Enrolls with the collector named in `bundle_text`, writing the identity into `paths`.
pub async fn enroll(paths: &Paths, bundle_text: &str, now_ns: i64) -> Result<Enrollment> {
    let bundle = Bundle::decode(bundle_text).map_err(anyhow::Error::msg)?;
    if bundle.expires_at.0 <= now_ns {
        bail!(
            "this enrollment token expired at {}; create a new one with `vigie enroll create`",
            bundle.expires_at
        );
    }
    if paths.is_enrolled() {
        bail!(
            "{} already holds an enrolled agent; remove the directory to enroll again (the new agent gets a new id)",
            paths.dir.display()
        );
    }
    std::fs::create_dir_all(&paths.dir)
        .with_context(|| format!("cannot create {}", paths.dir.display()))?;
    let mut seed = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut seed);
    let signing = SigningKey::from_bytes(&seed);
    let (tls_key, spki) = vigie_net::generate_tls_key()?;
    let req = EnrollRequest {
        token_id: bundle.token_id,
        token_secret: bundle.secret,
        tls_public_key: spki,
        identity_key: signing.verifying_key().to_bytes(),
        hostname: hostname(),
        machine_id: machine_id(),
    };
    let frame = wire::encode_msg(MsgType::Enroll, &req)?;
    let mut last_err = None;
    for addr in &bundle.collectors {
        match enroll_at(addr, &bundle, &frame).await {
            Ok(Reply::Enrolled {
                agent_id,
                client_cert_der,
                command_key,
            }) => {
                write_atomic(&paths.identity_key(), &seed, 0o600)?;
                write_atomic(&paths.tls_key(), &tls_key, 0o600)?;
                write_atomic(&paths.tls_cert(), &client_cert_der, 0o644)?;
                write_atomic(&paths.ca(), &bundle.ca_cert_der, 0o644)?;
                let e = Enrollment {
                    agent_id: agent_id.to_hex(),
                    collectors: bundle.collectors.clone(),
                    server_name: bundle.server_name.clone(),
                    command_key: hex::encode(command_key),
                };
                // Written last: its presence means the enrollment is complete.
                write_atomic(&paths.enrollment(), &serde_json::to_vec_pretty(&e)?, 0o644)?;
                return Ok(e);
            }
            Ok(Reply::Refused { message, .. }) => {
                bail!("the collector at {addr} refused enrollment: {message}")
            }
            Ok(other) => {
                last_err = Some(anyhow::anyhow!("unexpected reply from {addr}: {other:?}"))
            }
            Err(e) => last_err = Some(e.context(format!("cannot reach the collector at {addr}"))),
        }
    }
    Err(last_err.unwrap_or_else(|| anyhow::anyhow!("the token names no collector")))
}

async fn enroll_at(addr: &str, bundle: &Bundle, frame: &[u8]) -> Result<Reply> {
    let remote = *resolve(addr).await?.first().context("no address")?;
    let ep = vigie_net::client_endpoint(remote)?;
    let cfg = vigie_net::client_config(&bundle.ca_cert_der, None)?;
    let conn = tokio::time::timeout(
        Duration::from_secs(10),
        ep.connect_with(cfg, remote, &bundle.server_name)?,
    )
    .await
    .map_err(|_| anyhow::anyhow!("timed out connecting to {addr}"))??;
    let (ty, body) = vigie_net::request(&conn, frame, Duration::from_secs(15)).await?;
    if ty != MsgType::Reply {
        bail!("collector answered with {ty:?}");
    }
    let reply = wire::decode_body::<Reply>(ty, &body)?;
    conn.close(0u32.into(), b"enrolled");
    ep.wait_idle().await;
    Ok(reply)
}

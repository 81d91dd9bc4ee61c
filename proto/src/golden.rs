//! Golden frames: every build must read the frames written by version 1 of the
//! formats, byte for byte. `VIGIE_BLESS=1 cargo test -p vigie-proto golden`
//! writes them when they are missing; changing a committed one is a format change.

use std::path::PathBuf;

use ed25519_dalek::SigningKey;

use crate::batch::{SignedBatch, seal};
use crate::command::{Action, Command, sign_command, verify_command};
use crate::enroll::Bundle;
use crate::event::{Endpoint, Event, Kind, Log, Outcome, Severity, Timestamp, User};
use crate::ids::{AgentId, Epoch, Seq};
use crate::wire::{self, Hello, MsgType, Reply};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("golden")
}

fn check(name: &str, bytes: &[u8]) -> Vec<u8> {
    let path = dir().join(name);
    match std::fs::read(&path) {
        Ok(old) => {
            assert_eq!(
                old, bytes,
                "{name} differs from the committed golden frame: the wire format changed"
            );
            old
        }
        Err(_) if std::env::var_os("VIGIE_BLESS").is_some() => {
            std::fs::write(&path, bytes).expect("write golden");
            bytes.to_vec()
        }
        Err(e) => panic!(
            "golden frame {} is missing ({e}); run with VIGIE_BLESS=1 once",
            path.display()
        ),
    }
}

fn events() -> Vec<Event> {
    let mut a = Event::new(Kind::Authentication, Timestamp::from_secs(1_767_225_600));
    a.event.action = "ssh_login".into();
    a.event.outcome = Some(Outcome::Failure);
    a.event.module = "journald".into();
    a.host.name = "pve-vm-101".into();
    a.set_message("Failed password for root from 203.0.113.7 port 50122 ssh2");
    a.user = Some(User {
        name: "root".into(),
        ..Default::default()
    });
    a.source = Some(Endpoint {
        ip: Some("203.0.113.7".parse().expect("ip")),
        port: Some(50122),
        address: String::new(),
    });
    a.log = Some(Log {
        level: Severity::Warning,
        logger: "sshd".into(),
        ..Default::default()
    });
    let mut b = Event::new(Kind::Log, Timestamp::from_secs(1_767_225_601));
    b.set_message("systemd[1]: Started Daily apt download activities.");
    vec![a, b]
}

#[test]
fn batch_v1() {
    let key = SigningKey::from_bytes(&[7; 32]);
    let (frame, _) = seal(
        &key,
        AgentId([1; 16]),
        Epoch(0x0123_4567_89ab_cdef),
        Seq(41),
        Timestamp::from_secs(1_767_225_602),
        [0; 32],
        &events(),
        1,
    )
    .expect("seal");
    let golden = check("batch-v1.bin", &frame);
    let vb = SignedBatch::parse(&golden)
        .expect("parse")
        .verify(&key.verifying_key())
        .expect("verify");
    assert_eq!(vb.decode().expect("decode"), events());
}

#[test]
fn wire_v1() {
    let hello = Hello {
        epoch: Epoch(5),
        next_seq: Seq(1000),
        agent_version: "0.1.0".into(),
        hostname: "pve-vm-101".into(),
        machine_id: "0123456789abcdef0123456789abcdef".into(),
    };
    let f = check(
        "hello-v1.bin",
        &wire::encode_msg(MsgType::Hello, &hello).expect("enc"),
    );
    let (ty, body) = wire::split_frame(&f).expect("split");
    assert_eq!(wire::decode_body::<Hello>(ty, body).expect("dec"), hello);
    let reply = Reply::Ack {
        epoch: Epoch(5),
        stored_end: Seq(1000),
    };
    let f = check(
        "reply-ack-v1.bin",
        &wire::encode_msg(MsgType::Reply, &reply).expect("enc"),
    );
    let (ty, body) = wire::split_frame(&f).expect("split");
    assert_eq!(wire::decode_body::<Reply>(ty, body).expect("dec"), reply);
}

#[test]
fn command_v1() {
    let key = SigningKey::from_bytes(&[9; 32]);
    let cmd = Command {
        id: [3; 16],
        target: AgentId([2; 16]),
        seq: 7,
        issued_at: Timestamp::from_secs(100),
        expires_at: Timestamp::from_secs(400),
        action: Action::RunScript {
            script_id: "block_ip".into(),
            sha256: [4; 32],
            args: vec!["203.0.113.7".into(), "3600".into()],
        },
    };
    let f = check("command-v1.bin", &sign_command(&key, &cmd).expect("sign"));
    assert_eq!(
        verify_command(
            &key.verifying_key(),
            &f,
            AgentId([2; 16]),
            Timestamp::from_secs(200),
            6
        )
        .expect("verify"),
        cmd
    );
}

#[test]
fn enroll_v1() {
    let b = Bundle {
        collectors: vec!["collector.example.org:7702".into()],
        server_name: "vigie-collector".into(),
        ca_cert_der: vec![0x30, 0x82, 0x01, 0x00],
        token_id: [5; 16],
        secret: [6; 32],
        expires_at: Timestamp::from_secs(1_767_229_200),
    };
    let f = check("enroll-v1.txt", b.encode().as_bytes());
    assert_eq!(
        Bundle::decode(std::str::from_utf8(&f).expect("utf8")).expect("decode"),
        b
    );
}

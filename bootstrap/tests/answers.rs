//! Data-driven answer.toml tests: adding a case is adding a file.
//!
//! - `tests/answers/good/NAME.toml` must validate;
//! - `tests/answers/bad/NAME.toml` must be refused with exactly the errors in
//!   `tests/answers/bad/NAME.expected` (one per line). Run with
//!   `VIGIE_BLESS=1` to write missing/changed `.expected` files, then review
//!   them.
//!
//! Also: `render_answer` round trips.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use vigie_bootstrap::answer::{
    BtrfsRaid, DiskSelection, FilesystemOptions, FqdnConfig, KeyboardLayout, Network, RebootMode,
    RootPassword, ZfsRaid,
};
use vigie_bootstrap::{
    AnswerSpec, DiskSpec, FilesystemSpec, NetworkSpec, PasswordSpec, RenderError, WebhookSpec,
    render_answer, validate_answer,
};

fn cases(kind: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/answers")
        .join(kind);
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files
}

#[test]
fn good_answers_validate() {
    let files = cases("good");
    assert!(files.len() >= 12, "only {} good cases", files.len());
    let mut failures = Vec::new();
    for path in files {
        let text = fs::read_to_string(&path).unwrap();
        if let Err(errors) = validate_answer(&text) {
            let list: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
            failures.push(format!("{}:\n  {}", path.display(), list.join("\n  ")));
        }
    }
    assert!(
        failures.is_empty(),
        "good answers refused:\n{}",
        failures.join("\n")
    );
}

#[test]
fn bad_answers_are_refused_with_expected_errors() {
    let bless = std::env::var_os("VIGIE_BLESS").is_some();
    let files = cases("bad");
    assert!(files.len() >= 20, "only {} bad cases", files.len());
    let mut failures = Vec::new();
    for path in files {
        let text = fs::read_to_string(&path).unwrap();
        let got = match validate_answer(&text) {
            Ok(_) => {
                failures.push(format!("{}: accepted", path.display()));
                continue;
            }
            Err(errors) => errors
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("\n"),
        };
        let expected_path = path.with_extension("expected");
        let expected = fs::read_to_string(&expected_path).unwrap_or_default();
        if expected.trim_end() != got {
            if bless {
                fs::write(&expected_path, format!("{got}\n")).unwrap();
            } else {
                failures.push(format!(
                    "{}:\n  expected: {}\n  got:      {}",
                    path.display(),
                    expected.trim_end().replace('\n', "\n            "),
                    got.replace('\n', "\n            ")
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_expected_file_has_its_case() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/answers/bad");
    for entry in fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "expected") {
            assert!(p.with_extension("toml").exists(), "orphan {}", p.display());
        }
    }
}

fn base_spec() -> AnswerSpec {
    AnswerSpec {
        fqdn: Some("pve1.lab.example.org".into()),
        dhcp_domain: None,
        root_password: PasswordSpec::Plain("correct horse battery".into()),
        root_ssh_keys: vec![
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeKeyForTestsOnly0123456789abcdefABCDEF admin@ops"
                .into(),
        ],
        disks: DiskSpec::List(vec!["sda".into(), "sdb".into()]),
        filesystem: FilesystemSpec::Zfs(ZfsRaid::Raid1),
        network: NetworkSpec::Static {
            cidr: "192.0.2.10/24".into(),
            gateway: "192.0.2.1".into(),
            dns: "192.0.2.53".into(),
            nic_filter: BTreeMap::from([("ID_NET_NAME_MAC".into(), "*bc24119a3e01".into())]),
        },
        timezone: "Europe/Paris".into(),
        keyboard: KeyboardLayout::Fr,
        country: "fr".into(),
        mailto: "ops@example.org".into(),
        reboot_mode: RebootMode::Reboot,
        webhook: Some(WebhookSpec {
            url: "https://vigie.example.org:7700/api/v1/pve/post-install".into(),
            cert_fingerprint: Some(
                "AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89"
                    .into(),
            ),
            auth_token: Some("vig-0a1b2c3d4e5f60718293a4b5c6d7e8f9".into()),
        }),
    }
}

#[test]
fn rendered_static_zfs_answer_round_trips() {
    let spec = base_spec();
    let text = render_answer(&spec).unwrap();
    let a = validate_answer(&text).unwrap();
    assert_eq!(
        a.global.fqdn,
        FqdnConfig::Fixed("pve1.lab.example.org".into())
    );
    assert_eq!(a.global.keyboard, KeyboardLayout::Fr);
    assert_eq!(a.global.country, "fr");
    assert_eq!(a.global.timezone, "Europe/Paris");
    assert_eq!(a.global.mailto, "ops@example.org");
    assert_eq!(
        a.global.root_password,
        RootPassword::Plain("correct horse battery".into())
    );
    assert_eq!(a.global.root_ssh_keys, spec.root_ssh_keys);
    assert_eq!(a.global.reboot_mode, RebootMode::Reboot);
    assert_eq!(
        a.disk_setup.selection,
        DiskSelection::List(vec!["sda".into(), "sdb".into()])
    );
    assert!(
        matches!(a.disk_setup.filesystem, FilesystemOptions::Zfs(z) if z.raid == ZfsRaid::Raid1)
    );
    match a.network {
        Network::FromAnswer {
            cidr,
            dns,
            gateway,
            filter,
            ..
        } => {
            assert_eq!(cidr.to_string(), "192.0.2.10/24");
            assert_eq!(dns.to_string(), "192.0.2.53");
            assert_eq!(gateway.to_string(), "192.0.2.1");
            assert_eq!(filter.get("ID_NET_NAME_MAC").unwrap(), "*bc24119a3e01");
        }
        other => panic!("{other:?}"),
    }
    let hook = a.post_installation_webhook.unwrap();
    assert_eq!(
        hook.url,
        "https://vigie.example.org:7700/api/v1/pve/post-install"
    );
    assert_eq!(
        hook.auth_token.as_deref(),
        Some("vig-0a1b2c3d4e5f60718293a4b5c6d7e8f9")
    );
    // kebab-case keys only, sections the installer knows
    assert!(text.contains("[post-installation-webhook]"));
    assert!(text.contains("[disk-setup]"));
    assert!(!text.contains("disk_list") && !text.contains("root_password"));
}

#[test]
fn rendered_dhcp_btrfs_filter_answer_round_trips() {
    let mut spec = base_spec();
    spec.fqdn = None;
    spec.dhcp_domain = Some("lab.example.org".into());
    spec.root_password = PasswordSpec::Hashed(
        "$y$j9T$Xb5c1H0bQ0n0wq1d2e3f4.$Yc9b0h0WmH6b8B6Ky4Tg3qF0r1o2e3V4x5Z6a7B8c9D".into(),
    );
    spec.root_ssh_keys.clear();
    spec.network = NetworkSpec::Dhcp;
    spec.disks = DiskSpec::Filter {
        filter: BTreeMap::from([("ID_SERIAL".into(), "*MZ7KM*".into())]),
        match_all: true,
    };
    spec.filesystem = FilesystemSpec::Btrfs(BtrfsRaid::Raid10);
    spec.reboot_mode = RebootMode::PowerOff;
    spec.webhook = None;
    let text = render_answer(&spec).unwrap();
    let a = validate_answer(&text).unwrap();
    assert_eq!(
        a.global.fqdn,
        FqdnConfig::FromDhcp {
            domain: Some("lab.example.org".into())
        }
    );
    assert!(matches!(a.global.root_password, RootPassword::Hashed(_)));
    assert_eq!(a.network, Network::FromDhcp { pinning: None });
    assert!(matches!(
        &a.disk_setup.selection,
        DiskSelection::Filter { filter_match, .. } if filter_match.as_str() == "all"
    ));
    assert!(
        matches!(a.disk_setup.filesystem, FilesystemOptions::Btrfs(b) if b.raid == BtrfsRaid::Raid10)
    );
    assert_eq!(a.global.reboot_mode, RebootMode::PowerOff);
    assert!(a.post_installation_webhook.is_none());
}

#[test]
fn rendering_refuses_what_the_installer_would_refuse() {
    let mut spec = base_spec();
    spec.filesystem = FilesystemSpec::Ext4; // two disks listed
    spec.root_password = PasswordSpec::Plain("short".into());
    spec.webhook = Some(WebhookSpec {
        url: "http://vigie.example.org/api/v1/pve/post-install".into(),
        cert_fingerprint: Some("00".repeat(32)),
        auth_token: None,
    });
    let Err(RenderError::Invalid(errors)) = render_answer(&spec) else {
        panic!("rendered an invalid answer");
    };
    let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "global.root-password",
            "disk-setup.disk-list",
            "post-installation-webhook.url"
        ]
    );
}

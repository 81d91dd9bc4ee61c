//! `.tf.json` rendering: golden files (byte for byte; `VIGIE_BLESS=1` rewrites them) and a
//! check of every emitted attribute against the bpg provider's attribute table.

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde_json::Value;
use vigie_iac::render::{
    CloudInit, Ipv4Config, ProviderSpec, VmSpec, canonical_json, render_workspace,
};

fn provider() -> ProviderSpec {
    ProviderSpec {
        endpoint: "https://pve1.example.net:8006/".into(),
        insecure: false,
        min_tls: Some("1.3".into()),
    }
}

fn web() -> VmSpec {
    VmSpec {
        node: "pve1".into(),
        vmid: 201,
        name: "web-1".into(),
        template_vmid: 9000,
        full_clone: true,
        cores: 2,
        sockets: 1,
        memory_mib: 2048,
        disk_gib: 20,
        disk_datastore: "local-lvm".into(),
        bridge: "vmbr0".into(),
        vlan: Some(20),
        cloud_init: Some(CloudInit {
            username: "ops".into(),
            ssh_keys: vec![
                "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExampleKeyOnly ops@example".into(),
            ],
            ipv4: Ipv4Config::Static {
                address: "192.0.2.21/24".into(),
                gateway: Some("192.0.2.1".into()),
            },
            dns_servers: vec!["192.0.2.53".into()],
            datastore_id: Some("local-lvm".into()),
        }),
        tags: vec!["vigie".into(), "web".into()],
        agent: true,
        started: true,
    }
}

fn db() -> VmSpec {
    VmSpec {
        node: "pve2".into(),
        vmid: 202,
        name: "db-1".into(),
        template_vmid: 9001,
        full_clone: false,
        cores: 4,
        sockets: 2,
        memory_mib: 8192,
        disk_gib: 100,
        disk_datastore: "ceph-vm".into(),
        bridge: "vmbr1".into(),
        vlan: None,
        cloud_init: Some(CloudInit {
            username: "debian".into(),
            ssh_keys: vec![],
            ipv4: Ipv4Config::Dhcp,
            dns_servers: vec![],
            datastore_id: None,
        }),
        tags: vec![],
        agent: false,
        started: false,
    }
}

fn cases() -> Vec<(&'static str, ProviderSpec, Vec<VmSpec>)> {
    let mut insecure = provider();
    insecure.insecure = true;
    insecure.min_tls = None;
    let mut bare = web();
    bare.cloud_init = None;
    bare.vlan = None;
    vec![
        ("single-vm", provider(), vec![web()]),
        ("group", provider(), vec![web(), db()]),
        ("insecure-no-cloud-init", insecure, vec![bare]),
    ]
}

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

#[test]
fn rendered_workspaces_match_golden_files() {
    let bless = std::env::var_os("VIGIE_BLESS").is_some_and(|v| v == "1");
    let mut failures = Vec::new();
    for (name, p, vms) in cases() {
        let text = canonical_json(&render_workspace(&p, &vms).expect("render"));
        // Rendering is deterministic.
        assert_eq!(
            text,
            canonical_json(&render_workspace(&p, &vms).expect("render"))
        );
        let path = golden_dir().join(format!("{name}.tf.json"));
        if bless {
            std::fs::write(&path, &text).expect("bless");
            continue;
        }
        match std::fs::read_to_string(&path) {
            Ok(expected) if expected == text => {}
            Ok(_) => failures.push(format!(
                "{} differs (VIGIE_BLESS=1 to accept)",
                path.display()
            )),
            Err(e) => failures.push(format!("{}: {e} (VIGIE_BLESS=1 to create)", path.display())),
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

fn table() -> (BTreeSet<String>, BTreeSet<String>) {
    let text = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/bpg-proxmox-attributes.txt"),
    )
    .expect("attribute table");
    let mut args = BTreeSet::new();
    let mut computed = BTreeSet::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match line.strip_prefix("computed ") {
            Some(c) => computed.insert(c.to_string()),
            None => args.insert(line.to_string()),
        };
    }
    (args, computed)
}

/// Every argument path in a block body: objects are nested blocks, arrays of objects are
/// repeated blocks, anything else is an argument.
fn collect(prefix: &str, body: &Value, out: &mut BTreeSet<String>) {
    let Some(obj) = body.as_object() else { return };
    for (k, v) in obj {
        let path = format!("{prefix}.{k}");
        out.insert(path.clone());
        match v {
            Value::Object(_) => collect(&path, v, out),
            Value::Array(a) if a.iter().all(Value::is_object) && !a.is_empty() => {
                for x in a {
                    collect(&path, x, out);
                }
            }
            _ => {}
        }
    }
}

#[test]
fn every_emitted_attribute_is_in_the_bpg_table() {
    let (args, computed) = table();
    for (name, p, vms) in cases() {
        let v = render_workspace(&p, &vms).expect("render");
        let mut emitted = BTreeSet::new();
        collect("provider.proxmox", &v["provider"]["proxmox"], &mut emitted);
        let resources = v["resource"].as_object().expect("resources");
        assert_eq!(
            resources.keys().collect::<Vec<_>>(),
            vec!["proxmox_virtual_environment_vm"],
            "{name}: unexpected resource types"
        );
        for body in resources["proxmox_virtual_environment_vm"]
            .as_object()
            .expect("vms")
            .values()
        {
            collect("proxmox_virtual_environment_vm", body, &mut emitted);
        }
        let unknown: Vec<_> = emitted.difference(&args).collect();
        assert!(
            unknown.is_empty(),
            "{name}: not in the bpg table: {unknown:?}"
        );
        // Outputs only reference attributes of the resource.
        for out in v["output"].as_object().expect("outputs").values() {
            let expr = out["value"].as_str().expect("expr");
            let inner = expr
                .strip_prefix("${")
                .and_then(|e| e.strip_suffix('}'))
                .expect("interpolation");
            let mut parts = inner.splitn(3, '.');
            let (ty, _, attr) = (
                parts.next().expect("type"),
                parts.next().expect("name"),
                parts.next().expect("attr"),
            );
            let path = format!("{ty}.{attr}");
            assert!(computed.contains(&path) || args.contains(&path), "{path}");
        }
    }
}

#[test]
fn provider_token_is_a_sensitive_variable_and_never_inlined() {
    let v = render_workspace(&provider(), &[web()]).expect("render");
    assert_eq!(
        v["provider"]["proxmox"]["api_token"],
        "${var.proxmox_api_token}"
    );
    assert_eq!(v["variable"]["proxmox_api_token"]["sensitive"], true);
    let vm = &v["resource"]["proxmox_virtual_environment_vm"]["vm_201"];
    assert_eq!(vm["clone"]["vm_id"], 9000);
    assert_eq!(vm["network_device"][0]["vlan_id"], 20);
}

#[test]
fn invalid_specs_are_refused() {
    let mut bad = web();
    bad.vmid = 99;
    assert!(render_workspace(&provider(), &[bad]).is_err());
    let mut bad = web();
    bad.name = "Web_1".into();
    assert!(render_workspace(&provider(), &[bad]).is_err());
    let mut bad = web();
    bad.tags = vec!["${file(\"/etc/shadow\")}".into()];
    assert!(render_workspace(&provider(), &[bad]).is_err());
    let mut bad = web();
    if let Some(ci) = bad.cloud_init.as_mut() {
        ci.username = "${var.x}".into();
    }
    assert!(render_workspace(&provider(), &[bad]).is_err());
    assert!(
        render_workspace(&provider(), &[web(), web()]).is_err(),
        "duplicate vmid"
    );
    let mut p = provider();
    p.endpoint = "https://pve:8006/api2/json".into();
    assert!(render_workspace(&p, &[web()]).is_err());
}

/// The rendered JSON is valid Terraform syntax: `terraform init -backend=false` parses the
/// whole configuration (the provider itself cannot be downloaded here, so we only check the
/// parse, which fails before any download on a syntax error with a `line N` source excerpt).
#[test]
fn rendered_json_parses_as_terraform_configuration() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = canonical_json(&render_workspace(&provider(), &[web(), db()]).expect("render"));
    std::fs::write(dir.path().join("main.tf.json"), text).expect("write");
    let out = std::process::Command::new("terraform")
        .args(["fmt", "-check", "-list=false"])
        .current_dir(dir.path())
        .env("TF_CLI_CONFIG_FILE", "/dev/null")
        .output()
        .expect("terraform");
    assert!(out.status.success());
    // `init` parses the whole configuration before it looks for providers; here the
    // registry is unreachable, so success means "parsed, then failed only on bpg/proxmox".
    let out = std::process::Command::new("terraform")
        .args(["init", "-backend=false", "-input=false", "-no-color"])
        .current_dir(dir.path())
        .env("TF_CLI_CONFIG_FILE", "/dev/null")
        .output()
        .expect("terraform");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() || (stderr.contains("bpg/proxmox") && !stderr.contains("line ")),
        "configuration did not parse: {stderr}"
    );
}

//! Ansible roles: `ansible-lint` (offline) and a real `ansible-playbook -c local` run of the
//! `vigie_agent` role into a temporary prefix.
//!
//! ansible-core and ansible-lint are installed with pip into a venv under the cargo target
//! directory (reused between runs, never committed). If PyPI is unreachable the test FAILS
//! with a clear message: it never passes without having run Ansible.

use std::path::{Path, PathBuf};
use std::process::Command;

fn ansible_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("ansible")
}

fn venv() -> PathBuf {
    let venv = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("vigie-iac-ansible-venv");
    let bin = venv.join("bin");
    if bin.join("ansible-playbook").exists() && bin.join("ansible-lint").exists() {
        return venv;
    }
    let st = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .expect("python3 is needed for the Ansible tests");
    assert!(st.success(), "python3 -m venv {} failed", venv.display());
    let out = Command::new(bin.join("pip"))
        .args(["install", "-q", "ansible-core", "ansible-lint"])
        .output()
        .expect("pip");
    assert!(
        out.status.success(),
        "ANSIBLE TESTS NOT RUN: `pip install ansible-core ansible-lint` failed (is PyPI \
         reachable?):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    venv
}

fn ansible_cmd(venv: &Path, tool: &str, home: &Path) -> Command {
    let mut c = Command::new(venv.join("bin").join(tool));
    let path = format!(
        "{}:{}",
        venv.join("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    c.env("PATH", path)
        .env("ANSIBLE_HOME", home.join("ansible-home"))
        .env("XDG_CACHE_HOME", home.join("cache"))
        .env("ANSIBLE_ROLES_PATH", ansible_dir().join("roles"))
        .env("ANSIBLE_NOCOLOR", "1")
        .env("ANSIBLE_LOCAL_TEMP", home.join("tmp"));
    c
}

#[test]
fn ansible_roles_lint_and_vigie_agent_installs_into_a_prefix() {
    let venv = venv();
    let tmp = tempfile::tempdir().expect("tempdir");

    // ansible-lint, offline (see .ansible-lint).
    let out = ansible_cmd(&venv, "ansible-lint", tmp.path())
        .args(["--offline", "roles/vigie_agent", "roles/vigie_baseline"])
        .current_dir(ansible_dir())
        .output()
        .expect("ansible-lint");
    assert!(
        out.status.success(),
        "ansible-lint failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // Run vigie_agent into a prefix, without systemd.
    let prefix = tmp.path().join("root");
    let binary = tmp.path().join("vigie-agent-v1");
    std::fs::write(&binary, "#!/bin/sh\necho vigie-agent v1\n").expect("binary");
    let token = tmp.path().join("token");
    std::fs::write(&token, "enroll-token-abc123\n").expect("token");
    let user = String::from_utf8(Command::new("id").arg("-un").output().expect("id").stdout)
        .expect("utf8")
        .trim()
        .to_string();
    let group = String::from_utf8(Command::new("id").arg("-gn").output().expect("id").stdout)
        .expect("utf8")
        .trim()
        .to_string();
    let playbook = tmp.path().join("site.yml");
    std::fs::write(
        &playbook,
        "---\n- name: Vigie agent\n  hosts: all\n  gather_facts: false\n  roles:\n    - vigie_agent\n",
    )
    .expect("playbook");
    let python = venv.join("bin/python");
    let run = |state: &str, bin: &Path| {
        let vars = serde_json::json!({
            "ansible_python_interpreter": python,
            "vigie_agent_state": state,
            "vigie_agent_prefix": prefix,
            "vigie_agent_binary_src": bin,
            "vigie_agent_token_file": token,
            "vigie_agent_collector": "collector.test:7702",
            "vigie_agent_hostname": "vm-201",
            "vigie_agent_labels": {"env": "test", "role": "web"},
            "vigie_agent_manage_service": false,
            "vigie_agent_owner": user,
            "vigie_agent_group": group,
        });
        let vars_file = tmp.path().join("vars.json");
        std::fs::write(&vars_file, vars.to_string()).expect("vars");
        let out = ansible_cmd(&venv, "ansible-playbook", tmp.path())
            .args(["-c", "local", "-i", "localhost,"])
            .arg("-e")
            .arg(format!("@{}", vars_file.display()))
            .arg(&playbook)
            .output()
            .expect("ansible-playbook");
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "ansible-playbook ({state}) failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            !stdout.contains("enroll-token-abc123"),
            "token leaked into the output"
        );
        stdout
    };

    run("present", &binary);
    let cfg = std::fs::read_to_string(prefix.join("etc/vigie/agent.toml")).expect("agent.toml");
    // The file is a configuration the real agent accepts.
    let parsed = vigie_agent::config::AgentConfig::parse(&cfg, "agent.toml")
        .unwrap_or_else(|e| panic!("the role wrote an agent.toml the agent refuses: {e:#}\n{cfg}"));
    assert_eq!(parsed.collectors, ["collector.test:7702"]);
    assert_eq!(parsed.labels.get("env").map(String::as_str), Some("test"));
    assert!(parsed.journald.is_some() && parsed.metrics.is_some());
    assert!(cfg.contains("hostname = \"vm-201\""), "{cfg}");
    assert!(
        cfg.contains("env = \"test\"") && cfg.contains("role = \"web\""),
        "{cfg}"
    );
    assert_eq!(
        std::fs::read_to_string(prefix.join("etc/vigie/enroll.token")).expect("token"),
        "enroll-token-abc123\n"
    );
    let unit = std::fs::read_to_string(prefix.join("etc/systemd/system/vigie-agent.service"))
        .expect("unit");
    assert!(unit.contains(&format!(
        "ExecStart={}/usr/local/bin/vigie-agent run --config {}/etc/vigie/agent.toml",
        prefix.display(),
        prefix.display()
    )));
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &str| {
        std::fs::metadata(prefix.join(p))
            .expect("metadata")
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("usr/local/bin/vigie-agent"), 0o755);
    assert_eq!(mode("etc/vigie/enroll.token"), 0o600);

    // Idempotent: a second run changes nothing.
    let again = run("present", &binary);
    assert!(
        again.contains("changed=0"),
        "second run changed something:\n{again}"
    );

    // Upgrade: a new binary replaces the old one.
    let v2 = tmp.path().join("vigie-agent-v2");
    std::fs::write(&v2, "#!/bin/sh\necho vigie-agent v2\n").expect("binary");
    let up = run("present", &v2);
    assert!(!up.contains("changed=0"), "upgrade changed nothing:\n{up}");
    assert!(
        std::fs::read_to_string(prefix.join("usr/local/bin/vigie-agent"))
            .expect("bin")
            .contains("v2")
    );

    // Remove.
    run("absent", &v2);
    for p in [
        "usr/local/bin/vigie-agent",
        "etc/vigie",
        "var/lib/vigie",
        "etc/systemd/system/vigie-agent.service",
    ] {
        assert!(!prefix.join(p).exists(), "{p} still there");
    }
}

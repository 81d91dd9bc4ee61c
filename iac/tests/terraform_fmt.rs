//! The hand-written HCL under `iac/terraform/` is `terraform fmt` clean (real binary).

use std::path::PathBuf;

#[test]
fn hcl_modules_pass_terraform_fmt_check() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("terraform");
    assert!(dir.join("modules/vm-from-template/versions.tf").exists());
    let out = std::process::Command::new("terraform")
        .args(["fmt", "-check", "-recursive", "-diff", "-no-color"])
        .arg(&dir)
        .env("TF_CLI_CONFIG_FILE", "/dev/null")
        .output()
        .expect("terraform must be installed to run this test");
    assert!(
        out.status.success(),
        "terraform fmt -check failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn module_requires_the_bpg_provider_and_uses_the_clone_form() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("terraform/modules/vm-from-template");
    let versions = std::fs::read_to_string(dir.join("versions.tf")).expect("versions.tf");
    assert!(versions.contains("source  = \"bpg/proxmox\""));
    let main = std::fs::read_to_string(dir.join("main.tf")).expect("main.tf");
    assert!(main.contains("resource \"proxmox_virtual_environment_vm\""));
    assert!(main.contains("clone {"));
    for f in ["variables.tf", "outputs.tf"] {
        assert!(dir.join(f).exists(), "{f}");
    }
}

//! The installer's post-installation webhook: untrusted bytes → what to register.
//!
//! # What the installer sends
//!
//! `proxmox-post-hook` POSTs `serde_json::to_string(&PostHookInfo)` (proxmox-rs
//! `proxmox-installer-types/src/post_hook.rs`; schema `$schema.version` "1.2"
//! at the time of writing) to `[post-installation-webhook].url`, pinning the
//! TLS certificate to `cert-fingerprint` when one is set.
//!
//! Authentication: proxmox-rs `answer.rs` documents `auth-token` as "sent back
//! to the configured URL as a top-level `token` field". The pve-installer
//! `proxmox-post-hook/src/main.rs` revision we could read (commit 02f9ef5)
//! predates that field: it sends no token at all and no extra headers, and its
//! answer types reject an `auth-token` key as unknown. So:
//! - the token is taken from the body's top-level `"token"` string, or from a
//!   header the caller extracted (`Authorization: Bearer …` from a proxy or a
//!   future installer) — when both are present, both must match;
//! - a host installed from an ISO without `auth-token` support cannot
//!   authenticate and is refused; use a newer ISO.
//!
//! # Order of checks (do not change)
//! 1. body length ≤ `max_len` — before any parsing;
//! 2. token: decoded from a minimal envelope, compared in constant time;
//! 3. full decode into closed types (unknown fields ignored, required fields
//!    enforced, schema major version 1).

use std::collections::BTreeMap;

use serde::Deserialize;

/// Why a webhook call is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    #[error("request body is {len} bytes, more than the {max} allowed")]
    TooLarge { len: usize, max: usize },
    #[error("no webhook token is configured on this side; refusing every call")]
    NotConfigured,
    #[error(
        "no token in the request (expected a top-level \"token\" field or an Authorization header)"
    )]
    MissingToken,
    #[error("wrong token")]
    WrongToken,
    #[error("body is not a post-installation payload: {0}")]
    Malformed(String),
    #[error("unsupported payload schema version \"{0}\" (expected 1.x)")]
    UnsupportedSchema(String),
    #[error("invalid {field}: {problem}")]
    Invalid {
        field: &'static str,
        problem: String,
    },
}

/// `$schema`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PostHookSchema {
    pub version: String,
}

/// `product`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ProductInfo {
    pub fullname: String,
    pub short: Product,
    pub version: String,
}

/// `product.short`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Product {
    Pve,
    Pbs,
    Pmg,
    Pdm,
}

/// `iso`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct IsoInfo {
    pub release: String,
    pub isorelease: String,
}

/// `kernel-version` (proxmox-node-status `KernelVersionInformation`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct KernelVersion {
    pub sysname: String,
    pub release: String,
    pub version: String,
    pub machine: String,
}

/// `boot-info`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct BootInfo {
    pub mode: BootMode,
    #[serde(default)]
    pub secureboot: bool,
}

/// `boot-info.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BootMode {
    Bios,
    Efi,
}

/// `cpu-info`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CpuInfo {
    pub cores: u32,
    pub cpus: u32,
    pub flags: String,
    pub hvm: bool,
    pub model: String,
    pub sockets: u32,
}

/// `dmi`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SystemDmi {
    pub baseboard: BTreeMap<String, String>,
    pub chassis: BTreeMap<String, String>,
    pub system: BTreeMap<String, String>,
}

/// `disks[]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct DiskInfo {
    /// Bytes.
    pub size: u64,
    #[serde(default)]
    pub is_bootdisk: bool,
    pub udev_properties: BTreeMap<String, String>,
}

/// `network-interfaces[]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct NetworkInterfaceInfo {
    pub name: String,
    pub mac: String,
    /// CIDR, only on the management interface.
    #[serde(default)]
    pub address: Option<String>,
    #[serde(default)]
    pub is_management: bool,
    #[serde(default)]
    pub is_pinned: bool,
    pub udev_properties: BTreeMap<String, String>,
}

/// `ssh-public-host-keys`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SshHostKeys {
    pub ecdsa: String,
    pub ed25519: String,
    pub rsa: String,
}

/// `reboot-mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RebootMode {
    Reboot,
    PowerOff,
}

/// The installer's payload (`PostHookInfo`). Unknown fields are ignored so
/// that minor schema versions (new fields) keep working.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct PostHookInfo {
    #[serde(rename = "$schema")]
    pub schema: PostHookSchema,
    pub debian_version: String,
    pub product: ProductInfo,
    pub iso: IsoInfo,
    pub kernel_version: KernelVersion,
    pub boot_info: BootInfo,
    pub cpu_info: CpuInfo,
    pub dmi: SystemDmi,
    /// As the installer prints it: `ext4`, `xfs`, `zfs (RAID1)`, `btrfs (RAID10)`.
    pub filesystem: String,
    pub fqdn: String,
    pub machine_id: String,
    pub disks: Vec<DiskInfo>,
    pub network_interfaces: Vec<NetworkInterfaceInfo>,
    pub ssh_public_host_keys: SshHostKeys,
    pub reboot_mode: RebootMode,
}

/// What the dashboard records for a freshly installed host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRegistration {
    pub fqdn: String,
    /// 32 lower-case hex digits (`/etc/machine-id`).
    pub machine_id: String,
    pub product: Product,
    /// `pve-manager` package version.
    pub product_version: String,
    pub schema_version: String,
    pub filesystem: String,
    pub management_nic: Option<ManagementNic>,
    pub ssh_host_keys: SshHostKeys,
    pub disks: Vec<RegisteredDisk>,
}

/// The interface the installer configured for management.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagementNic {
    pub name: String,
    /// Lower-case `aa:bb:cc:dd:ee:ff`.
    pub mac: String,
    /// CIDR, e.g. `192.0.2.10/24`.
    pub address: Option<String>,
}

/// One disk, summarised from its udev properties.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredDisk {
    pub size_bytes: u64,
    pub is_bootdisk: bool,
    pub devname: Option<String>,
    pub model: Option<String>,
    pub serial: Option<String>,
}

#[derive(Deserialize)]
struct TokenEnvelope {
    #[serde(default)]
    token: Option<serde_json::Value>,
}

/// Decodes the payload. Fuzz entry point: never panics, whatever the bytes.
pub fn parse_post_hook(bytes: &[u8]) -> Result<PostHookInfo, WebhookError> {
    let info: PostHookInfo =
        serde_json::from_slice(bytes).map_err(|e| WebhookError::Malformed(e.to_string()))?;
    let major = info.schema.version.split('.').next().unwrap_or("");
    if major != "1" {
        return Err(WebhookError::UnsupportedSchema(info.schema.version));
    }
    Ok(info)
}

/// Handles one webhook call: size cap, token, decode, registration.
///
/// `header_token` is a token the HTTP layer found in a header (e.g. the value
/// of `Authorization: Bearer …`), if any.
pub fn accept_post_install(
    header_token: Option<&str>,
    body: &[u8],
    expected_token: &str,
    max_len: usize,
) -> Result<HostRegistration, WebhookError> {
    if body.len() > max_len {
        return Err(WebhookError::TooLarge {
            len: body.len(),
            max: max_len,
        });
    }
    if expected_token.is_empty() {
        return Err(WebhookError::NotConfigured);
    }
    let envelope: TokenEnvelope =
        serde_json::from_slice(body).map_err(|e| WebhookError::Malformed(e.to_string()))?;
    let body_token = match envelope.token {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) => Some(s),
        Some(_) => return Err(WebhookError::WrongToken),
    };
    if header_token.is_none() && body_token.is_none() {
        return Err(WebhookError::MissingToken);
    }
    // Evaluate both comparisons before deciding, so timing does not reveal which failed.
    let header_ok = header_token.is_none_or(|t| ct_eq(t.as_bytes(), expected_token.as_bytes()));
    let body_ok = body_token
        .as_deref()
        .is_none_or(|t| ct_eq(t.as_bytes(), expected_token.as_bytes()));
    if !(header_ok & body_ok) {
        return Err(WebhookError::WrongToken);
    }
    let info = parse_post_hook(body)?;
    registration(info)
}

/// Constant-time equality: time depends on the lengths only, never on
/// where the first difference is.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u8::from(a.len() != b.len());
    let n = a.len().max(b.len());
    for i in 0..n {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= x ^ y;
    }
    std::hint::black_box(diff) == 0
}

fn invalid(field: &'static str, problem: impl Into<String>) -> WebhookError {
    WebhookError::Invalid {
        field,
        problem: problem.into(),
    }
}

fn registration(info: PostHookInfo) -> Result<HostRegistration, WebhookError> {
    let machine_id = info.machine_id.trim().to_ascii_lowercase();
    if machine_id.len() != 32 || !machine_id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(invalid("machine-id", "expected 32 hex digits"));
    }
    let fqdn = info.fqdn.trim().to_string();
    if fqdn.is_empty()
        || fqdn.len() > 253
        || !fqdn
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    {
        return Err(invalid("fqdn", format!("not a host name: {fqdn:?}")));
    }
    let mut management = info.network_interfaces.iter().filter(|n| n.is_management);
    let management_nic = match (management.next(), management.next()) {
        (None, _) => None,
        (Some(_), Some(_)) => {
            return Err(invalid(
                "network-interfaces",
                "more than one interface has is-management",
            ));
        }
        (Some(nic), None) => {
            let mac = nic.mac.to_ascii_lowercase();
            let parts: Vec<&str> = mac.split(':').collect();
            if parts.len() != 6
                || !parts
                    .iter()
                    .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()))
            {
                return Err(invalid(
                    "network-interfaces.mac",
                    format!("not a MAC: {mac:?}"),
                ));
            }
            let cidr_ok = |a: &str| {
                a.split_once('/').is_some_and(|(ip, len)| {
                    ip.parse::<std::net::IpAddr>().is_ok()
                        && len.parse::<u8>().is_ok_and(|l| l <= 128)
                })
            };
            if let Some(addr) = &nic.address
                && !cidr_ok(addr)
            {
                return Err(invalid(
                    "network-interfaces.address",
                    format!("not a CIDR: {addr:?}"),
                ));
            }
            Some(ManagementNic {
                name: nic.name.clone(),
                mac,
                address: nic.address.clone(),
            })
        }
    };
    let disks = info
        .disks
        .iter()
        .map(|d| RegisteredDisk {
            size_bytes: d.size,
            is_bootdisk: d.is_bootdisk,
            devname: d.udev_properties.get("DEVNAME").cloned(),
            model: d.udev_properties.get("ID_MODEL").cloned(),
            serial: d
                .udev_properties
                .get("ID_SERIAL_SHORT")
                .or_else(|| d.udev_properties.get("ID_SERIAL"))
                .cloned(),
        })
        .collect();
    Ok(HostRegistration {
        fqdn,
        machine_id,
        product: info.product.short,
        product_version: info.product.version,
        schema_version: info.schema.version,
        filesystem: info.filesystem,
        management_nic,
        ssh_host_keys: info.ssh_public_host_keys,
        disks,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const PAYLOAD: &str = include_str!("../tests/webhook/post-hook.json");
    const TOKEN: &str = "vig-0a1b2c3d4e5f60718293a4b5c6d7e8f9";
    const MAX: usize = 256 * 1024;

    fn with_token(token: Option<&str>) -> Vec<u8> {
        let mut v: serde_json::Value = serde_json::from_str(PAYLOAD).unwrap();
        if let Some(t) = token {
            v["token"] = serde_json::Value::String(t.to_string());
        }
        serde_json::to_vec(&v).unwrap()
    }

    #[test]
    fn realistic_payload_is_registered() {
        let reg = accept_post_install(None, &with_token(Some(TOKEN)), TOKEN, MAX).unwrap();
        assert_eq!(reg.fqdn, "pve1.lab.example.org");
        assert_eq!(reg.machine_id, "3f1c2b9e0d4a4e6f8a7b6c5d4e3f2a1b");
        assert_eq!(reg.product, Product::Pve);
        assert_eq!(reg.product_version, "9.0.3");
        assert_eq!(reg.filesystem, "zfs (RAID1)");
        let nic = reg.management_nic.unwrap();
        assert_eq!(nic.name, "nic0");
        assert_eq!(nic.mac, "bc:24:11:9a:3e:01");
        assert_eq!(nic.address.as_deref(), Some("192.0.2.10/24"));
        assert!(reg.ssh_host_keys.ed25519.starts_with("ssh-ed25519 "));
        assert_eq!(reg.disks.len(), 2);
        assert!(reg.disks.iter().all(|d| d.is_bootdisk));
        assert_eq!(reg.disks[0].serial.as_deref(), Some("S3Z1NB0K123456"));
    }

    #[test]
    fn header_token_is_accepted_alone() {
        let reg = accept_post_install(Some(TOKEN), &with_token(None), TOKEN, MAX).unwrap();
        assert_eq!(reg.fqdn, "pve1.lab.example.org");
    }

    #[test]
    fn wrong_or_missing_token_is_refused() {
        let cases: [(Option<&str>, Option<&str>, WebhookError); 6] = [
            (None, None, WebhookError::MissingToken),
            (None, Some("vig-wrong"), WebhookError::WrongToken),
            (None, Some(""), WebhookError::WrongToken),
            (Some("vig-wrong"), None, WebhookError::WrongToken),
            (Some(TOKEN), Some("vig-wrong"), WebhookError::WrongToken),
            (Some("vig-wrong"), Some(TOKEN), WebhookError::WrongToken),
        ];
        for (header, body, want) in cases {
            let got = accept_post_install(header, &with_token(body), TOKEN, MAX).unwrap_err();
            assert_eq!(got, want, "header {header:?} body {body:?}");
        }
        // a prefix of the right token is still wrong
        let got = accept_post_install(None, &with_token(Some(&TOKEN[..10])), TOKEN, MAX);
        assert_eq!(got.unwrap_err(), WebhookError::WrongToken);
        // a non-string token is wrong, not a crash
        let mut v: serde_json::Value = serde_json::from_str(PAYLOAD).unwrap();
        v["token"] = serde_json::json!(12345);
        let got = accept_post_install(None, &serde_json::to_vec(&v).unwrap(), TOKEN, MAX);
        assert_eq!(got.unwrap_err(), WebhookError::WrongToken);
    }

    #[test]
    fn empty_expected_token_refuses_everything() {
        let got = accept_post_install(Some(""), &with_token(Some("")), "", MAX).unwrap_err();
        assert_eq!(got, WebhookError::NotConfigured);
    }

    #[test]
    fn oversized_body_is_refused_before_parsing() {
        let body = with_token(Some(TOKEN));
        let got = accept_post_install(None, &body, TOKEN, body.len() - 1).unwrap_err();
        assert!(matches!(got, WebhookError::TooLarge { .. }));
        // even garbage of that size is refused for its size, not its content
        let got = accept_post_install(None, &[0xff; 100], TOKEN, 99).unwrap_err();
        assert_eq!(got, WebhookError::TooLarge { len: 100, max: 99 });
    }

    #[test]
    fn truncated_and_garbage_bodies_are_refused_without_panic() {
        let body = with_token(Some(TOKEN));
        for cut in (0..body.len()).step_by(7) {
            let got = accept_post_install(None, &body[..cut], TOKEN, MAX);
            assert!(got.is_err(), "truncated at {cut} accepted");
        }
        let garbage: [&[u8]; 7] = [
            b"",
            b"null",
            b"[]",
            b"\xff\xfe\x00{",
            b"{\"token\":",
            &[b'['; 10_000],
            b"{\"token\":\"vig-0a1b2c3d4e5f60718293a4b5c6d7e8f9\"}",
        ];
        for g in garbage {
            assert!(accept_post_install(None, g, TOKEN, MAX).is_err());
            assert!(parse_post_hook(g).is_err());
        }
    }

    #[test]
    fn required_fields_enforced_and_unknown_ignored() {
        let mut v: serde_json::Value = serde_json::from_str(PAYLOAD).unwrap();
        v["some-future-field"] = serde_json::json!({"x": 1});
        assert!(parse_post_hook(&serde_json::to_vec(&v).unwrap()).is_ok());
        for field in [
            "machine-id",
            "fqdn",
            "product",
            "ssh-public-host-keys",
            "disks",
        ] {
            let mut v: serde_json::Value = serde_json::from_str(PAYLOAD).unwrap();
            v.as_object_mut().unwrap().remove(field);
            let got = parse_post_hook(&serde_json::to_vec(&v).unwrap()).unwrap_err();
            assert!(
                matches!(&got, WebhookError::Malformed(m) if m.contains(field)),
                "{field}: {got}"
            );
        }
    }

    #[test]
    fn schema_major_version_is_checked() {
        let mut v: serde_json::Value = serde_json::from_str(PAYLOAD).unwrap();
        v["$schema"]["version"] = serde_json::json!("2.0");
        let got = parse_post_hook(&serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert_eq!(got, WebhookError::UnsupportedSchema("2.0".into()));
    }

    #[test]
    fn bad_machine_id_is_refused() {
        let mut v: serde_json::Value = serde_json::from_str(PAYLOAD).unwrap();
        v["machine-id"] = serde_json::json!("../../etc/passwd");
        v["token"] = serde_json::json!(TOKEN);
        let got = accept_post_install(None, &serde_json::to_vec(&v).unwrap(), TOKEN, MAX);
        assert!(matches!(
            got,
            Err(WebhookError::Invalid {
                field: "machine-id",
                ..
            })
        ));
    }

    #[test]
    fn ct_eq_basics() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"abcd"));
        assert!(!ct_eq(b"", b"a"));
        assert!(ct_eq(b"", b""));
    }
}

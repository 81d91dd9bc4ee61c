//! Validators for the Proxmox VE parameter formats this crate sends or accepts.
//!
//! The API schema (`apidata.json`) names formats (`pve-node`, `pve-configid`, …) without
//! describing them; these validators follow their definitions in pve-common
//! (`src/PVE/JSONSchema.pm`), pve-storage and qemu-server. A format listed nowhere here is an
//! error ([`FormatError::Unknown`]): the contract test uses this to fail on any format the
//! client starts sending before a validator exists for it.
//!
//! Formats ending in `-list` are a list of the base format, split like PVE's `split_list`
//! (on `,`, `;` and whitespace, or on NUL bytes); `-opt` allows the empty string.

use std::net::{Ipv4Addr, Ipv6Addr};

/// Why a value does not match a format.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// No validator exists for this format.
    #[error(
        "unknown parameter format '{0}': add a validator to vigie_pve::formats before sending or accepting it"
    )]
    Unknown(String),
    /// The value does not match (the message is PVE's wording where it has one).
    #[error("{0}")]
    Invalid(String),
}

type Validator = fn(&str) -> Result<(), String>;

/// Names of the formats with a validator (list and opt variants come for free).
pub const KNOWN: &[&str] = &[
    "string",
    "pve-node",
    "pve-vmid",
    "pve-configid",
    "pve-storage-id",
    "pve-bridge-id",
    "pve-poolid",
    "pve-tag",
    "pve-volume-id",
    "pve-volume-id-or-qm-path",
    "pve-volume-id-or-absolute-path",
    "pve-storage-content",
    "disk-size",
    "urlencoded",
    "dns-name",
    "address",
    "ip",
    "ipv4",
    "ipv6",
    "CIDR",
    "CIDRv4",
    "CIDRv6",
    "pve-ipv4-config",
    "pve-ipv6-config",
    "mac-addr",
    "email",
    "email-or-username",
    "pve-qm-ipconfig",
    "pve-qm-cicustom",
];

fn validator(name: &str) -> Option<Validator> {
    Some(match name {
        "string" => |_| Ok(()),
        "pve-node" => node,
        "pve-vmid" => vmid,
        "pve-configid" => configid,
        "pve-storage-id" => |v| id_like(v, "storage"),
        "pve-bridge-id" => bridge_id,
        "pve-poolid" => poolid,
        "pve-tag" => tag,
        "pve-volume-id" => volume_id,
        "pve-volume-id-or-qm-path" => volume_id_or_qm_path,
        "pve-volume-id-or-absolute-path" => volume_id_or_absolute_path,
        "pve-storage-content" => storage_content,
        "disk-size" => disk_size,
        "urlencoded" => urlencoded,
        "dns-name" => dns_name,
        "address" => address,
        "ip" => ip,
        "ipv4" => ipv4,
        "ipv6" => ipv6,
        "CIDR" => cidr,
        "CIDRv4" => cidr_v4,
        "CIDRv6" => cidr_v6,
        "pve-ipv4-config" => ipv4_config,
        "pve-ipv6-config" => ipv6_config,
        "mac-addr" => mac_addr,
        "email" => email,
        "email-or-username" => email_or_username,
        "pve-qm-ipconfig" => qm_ipconfig,
        "pve-qm-cicustom" => qm_cicustom,
        _ => return None,
    })
}

/// True when [`check`] knows `format` (including its `-list` and `-opt` variants).
pub fn is_known(format: &str) -> bool {
    validator(format).is_some()
        || format.strip_suffix("-list").and_then(validator).is_some()
        || format.strip_suffix("-opt").and_then(validator).is_some()
}

/// Checks `value` against the named PVE format.
pub fn check(format: &str, value: &str) -> Result<(), FormatError> {
    if let Some(f) = validator(format) {
        return f(value).map_err(FormatError::Invalid);
    }
    if let Some(f) = format.strip_suffix("-list").and_then(validator) {
        for item in split_list(value) {
            f(item).map_err(FormatError::Invalid)?;
        }
        return Ok(());
    }
    if let Some(f) = format.strip_suffix("-opt").and_then(validator) {
        if value.is_empty() {
            return Ok(());
        }
        return f(value).map_err(FormatError::Invalid);
    }
    Err(FormatError::Unknown(format.to_string()))
}

/// PVE's `split_list`: NUL-separated if the text has a NUL, otherwise split on `,`, `;` and
/// whitespace, dropping empty items.
pub fn split_list(value: &str) -> Vec<&str> {
    if value.contains('\0') {
        return value.split('\0').filter(|s| !s.is_empty()).collect();
    }
    value
        .split(|c: char| c == ',' || c == ';' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .collect()
}

/// One `key=value` (or bare default-key `value`) item of a property string.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PropertyItem<'a> {
    pub key: Option<&'a str>,
    pub value: &'a str,
}

/// Splits a PVE property string (`key=value,key=value` with an optional key-less default
/// value) like pve-common's `parse_property_string`, without a schema.
pub fn parse_property_string(data: &str) -> Result<Vec<PropertyItem<'_>>, String> {
    let mut out = Vec::new();
    for part in data.split(',') {
        if part.trim().is_empty() {
            continue;
        }
        match part.split_once('=') {
            Some((k, v)) if !k.is_empty() && !v.is_empty() => {
                if out.iter().any(|i: &PropertyItem<'_>| i.key == Some(k)) {
                    return Err(format!(
                        "duplicate key in comma-separated list property: {k}"
                    ));
                }
                out.push(PropertyItem {
                    key: Some(k),
                    value: v,
                });
            }
            Some(_) => return Err("missing key in comma-separated list property".to_string()),
            None => {
                if out.iter().any(|i| i.key.is_none()) {
                    return Err(
                        "duplicate default value in comma-separated list property".to_string()
                    );
                }
                out.push(PropertyItem {
                    key: None,
                    value: part,
                });
            }
        }
    }
    Ok(out)
}

fn is_alnum(c: char) -> bool {
    c.is_ascii_alphanumeric()
}

/// `[a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?`
fn is_hostname_label(s: &str) -> bool {
    let (Some(first), Some(last)) = (s.chars().next(), s.chars().last()) else {
        return false;
    };
    is_alnum(first) && is_alnum(last) && s.chars().all(|c| is_alnum(c) || c == '-')
}

fn node(v: &str) -> Result<(), String> {
    if is_hostname_label(v) {
        Ok(())
    } else {
        Err("value does not look like a valid node name".to_string())
    }
}

fn vmid(v: &str) -> Result<(), String> {
    let ok =
        (3..=9).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_digit()) && !v.starts_with('0');
    if ok {
        Ok(())
    } else {
        Err("value does not look like a valid VM ID".to_string())
    }
}

/// `[a-z][a-z0-9_-]+` (case-insensitive)
fn configid(v: &str) -> Result<(), String> {
    let mut chars = v.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && v.len() >= 2
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(format!("invalid configuration ID '{v}'"))
    }
}

/// `[a-z][a-z0-9\-\_\.]*[a-z0-9]` (case-insensitive) — storage ids and the like.
fn is_pve_id(v: &str) -> bool {
    let (Some(first), Some(last)) = (v.chars().next(), v.chars().last()) else {
        return false;
    };
    v.len() >= 2
        && first.is_ascii_alphabetic()
        && is_alnum(last)
        && v.chars()
            .all(|c| is_alnum(c) || c == '-' || c == '_' || c == '.')
}

fn id_like(v: &str, what: &str) -> Result<(), String> {
    if is_pve_id(v) {
        Ok(())
    } else {
        Err(format!("{what} ID '{v}' contains illegal characters"))
    }
}

fn bridge_id(v: &str) -> Result<(), String> {
    if !v.is_empty()
        && v.chars()
            .all(|c| is_alnum(c) || c == '-' || c == '_' || c == '.')
    {
        Ok(())
    } else {
        Err(format!("invalid bridge ID '{v}'"))
    }
}

fn poolid(v: &str) -> Result<(), String> {
    if !v.is_empty()
        && v.chars()
            .all(|c| is_alnum(c) || c == '-' || c == '_' || c == '.')
    {
        Ok(())
    } else {
        Err(format!("pool name '{v}' contains illegal characters"))
    }
}

/// `[a-z0-9_][a-z0-9_\-\+\.]*` (case-insensitive)
fn tag(v: &str) -> Result<(), String> {
    let mut chars = v.chars();
    let ok = chars.next().is_some_and(|c| is_alnum(c) || c == '_')
        && chars.all(|c| is_alnum(c) || matches!(c, '_' | '-' | '+' | '.'));
    if ok {
        Ok(())
    } else {
        Err("invalid characters in tag".to_string())
    }
}

/// `storage:volume` (pve-storage `parse_volume_id`).
fn volume_id(v: &str) -> Result<(), String> {
    match v.split_once(':') {
        Some((store, vol)) if is_pve_id(store) && !vol.is_empty() => Ok(()),
        _ => Err(format!("unable to parse volume ID '{v}'")),
    }
}

/// qemu-server: `none`, `cdrom`, an absolute path, or a volume id (`local-lvm:32` allocates).
fn volume_id_or_qm_path(v: &str) -> Result<(), String> {
    if v == "none" || v == "cdrom" || v.starts_with('/') {
        return Ok(());
    }
    volume_id(v)
}

/// qemu-server: an absolute path or a volume id.
fn volume_id_or_absolute_path(v: &str) -> Result<(), String> {
    if v.starts_with('/') {
        return Ok(());
    }
    volume_id(v)
}

fn storage_content(v: &str) -> Result<(), String> {
    const CONTENT: &[&str] = &[
        "images", "rootdir", "vztmpl", "iso", "backup", "snippets", "import", "none",
    ];
    if CONTENT.contains(&v) {
        Ok(())
    } else {
        Err(format!("invalid content type '{v}'"))
    }
}

/// `\d+(\.\d+)?[KMGT]?` (pve-common `parse_size`).
fn disk_size(v: &str) -> Result<(), String> {
    let body = v.strip_suffix(['K', 'M', 'G', 'T']).unwrap_or(v);
    let (int, frac) = match body.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (body, None),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if digits(int) && frac.is_none_or(digits) {
        Ok(())
    } else {
        Err(format!("value does not look like a valid disk size: {v}"))
    }
}

/// `[-%a-zA-Z0-9_.!~*'()]*`
fn urlencoded(v: &str) -> Result<(), String> {
    if v.chars().all(|c| {
        is_alnum(c)
            || matches!(
                c,
                '-' | '%' | '_' | '.' | '!' | '~' | '*' | '\'' | '(' | ')'
            )
    }) {
        Ok(())
    } else {
        Err(format!("invalid urlencoded string: {v}"))
    }
}

fn is_dns_name(v: &str) -> bool {
    !v.is_empty() && v.split('.').all(is_hostname_label)
}

fn dns_name(v: &str) -> Result<(), String> {
    if is_dns_name(v) {
        Ok(())
    } else {
        Err("value does not look like a valid DNS name".to_string())
    }
}

fn is_ipv4(v: &str) -> bool {
    v.parse::<Ipv4Addr>().is_ok()
}

fn is_ipv6(v: &str) -> bool {
    v.parse::<Ipv6Addr>().is_ok()
}

fn address(v: &str) -> Result<(), String> {
    if is_ipv4(v) || is_ipv6(v) || is_dns_name(v) {
        Ok(())
    } else {
        Err(format!("value does not look like a valid address: {v}"))
    }
}

fn ip(v: &str) -> Result<(), String> {
    if is_ipv4(v) || is_ipv6(v) {
        Ok(())
    } else {
        Err("value does not look like a valid IP address".to_string())
    }
}

fn ipv4(v: &str) -> Result<(), String> {
    if is_ipv4(v) {
        Ok(())
    } else {
        Err("value does not look like a valid IPv4 address".to_string())
    }
}

fn ipv6(v: &str) -> Result<(), String> {
    if is_ipv6(v) {
        Ok(())
    } else {
        Err("value does not look like a valid IPv6 address".to_string())
    }
}

fn prefix_in(v: &str, addr_ok: fn(&str) -> bool, max: u8) -> bool {
    let Some((addr, bits)) = v.split_once('/') else {
        return false;
    };
    let bits_ok = !bits.is_empty()
        && bits.bytes().all(|b| b.is_ascii_digit())
        && bits
            .parse::<u16>()
            .is_ok_and(|b| b > 7 && b <= u16::from(max));
    bits_ok && addr_ok(addr)
}

fn is_cidr_v4(v: &str) -> bool {
    prefix_in(v, is_ipv4, 32)
}

fn is_cidr_v6(v: &str) -> bool {
    prefix_in(v, is_ipv6, 128)
}

fn cidr(v: &str) -> Result<(), String> {
    if is_cidr_v4(v) || is_cidr_v6(v) {
        Ok(())
    } else {
        Err("value does not look like a valid CIDR network".to_string())
    }
}

fn cidr_v4(v: &str) -> Result<(), String> {
    if is_cidr_v4(v) {
        Ok(())
    } else {
        Err("value does not look like a valid IPv4 CIDR network".to_string())
    }
}

fn cidr_v6(v: &str) -> Result<(), String> {
    if is_cidr_v6(v) {
        Ok(())
    } else {
        Err("value does not look like a valid IPv6 CIDR network".to_string())
    }
}

fn ipv4_config(v: &str) -> Result<(), String> {
    if matches!(v, "dhcp" | "manual") || is_cidr_v4(v) {
        Ok(())
    } else {
        Err("value does not look like a valid ipv4 network configuration".to_string())
    }
}

fn ipv6_config(v: &str) -> Result<(), String> {
    if matches!(v, "auto" | "dhcp" | "manual") || is_cidr_v6(v) {
        Ok(())
    } else {
        Err("value does not look like a valid ipv6 network configuration".to_string())
    }
}

/// Unicast MAC: `[a-f0-9][02468ace](?::[a-f0-9]{2}){5}` (case-insensitive).
fn mac_addr(v: &str) -> Result<(), String> {
    let parts: Vec<&str> = v.split(':').collect();
    let hex2 = |p: &&str| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit());
    let unicast = parts
        .first()
        .and_then(|p| p.chars().nth(1))
        .is_some_and(|c| {
            matches!(
                c.to_ascii_lowercase(),
                '0' | '2' | '4' | '6' | '8' | 'a' | 'c' | 'e'
            )
        });
    if parts.len() == 6 && parts.iter().all(hex2) && unicast {
        Ok(())
    } else {
        Err("value does not look like a valid unicast MAC address".to_string())
    }
}

/// `[\w\+\-\~]+(\.[\w\+\-\~]+)*`
fn is_email_user(v: &str) -> bool {
    !v.is_empty()
        && v.split('.').all(|p| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_alphanumeric() || matches!(c, '_' | '+' | '-' | '~'))
        })
}

/// PVE's `EMAIL_RE`: `user@host` where host is `[a-zA-Z0-9\-]+(\.[a-zA-Z0-9\-]+)*`.
fn is_email(v: &str) -> bool {
    let Some((user, host)) = v.split_once('@') else {
        return false;
    };
    is_email_user(user)
        && host
            .split('.')
            .all(|l| !l.is_empty() && l.chars().all(|c| is_alnum(c) || c == '-'))
}

fn email(v: &str) -> Result<(), String> {
    if is_email(v) {
        Ok(())
    } else {
        Err("value does not look like a valid email address".to_string())
    }
}

fn email_or_username(v: &str) -> Result<(), String> {
    let username = !v.is_empty()
        && v.chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '+' | '-' | '~'));
    if is_email(v) || username {
        Ok(())
    } else {
        Err("value does not look like a valid email address or user name".to_string())
    }
}

/// A property-string field: its validator and the key it requires.
struct Field {
    key: &'static str,
    check: Validator,
    requires: Option<&'static str>,
}

fn property_string(v: &str, fields: &[Field]) -> Result<(), String> {
    let items = parse_property_string(v)?;
    for item in &items {
        let Some(key) = item.key else {
            return Err("value without key, but schema does not define a default key".to_string());
        };
        let Some(field) = fields.iter().find(|f| f.key == key) else {
            return Err(format!(
                "invalid key in comma-separated list property: {key}"
            ));
        };
        (field.check)(item.value).map_err(|e| format!("{key}: {e}"))?;
        if let Some(req) = field.requires
            && !items.iter().any(|i| i.key == Some(req))
        {
            return Err(format!(
                "{req}: missing property - '{key}' requires this property"
            ));
        }
    }
    Ok(())
}

/// `ip=<cidr|dhcp|manual>,gw=<ipv4>,ip6=<cidr|auto|dhcp|manual>,gw6=<ipv6>` (qemu-server).
fn qm_ipconfig(v: &str) -> Result<(), String> {
    property_string(
        v,
        &[
            Field {
                key: "ip",
                check: ipv4_config,
                requires: None,
            },
            Field {
                key: "gw",
                check: ipv4,
                requires: Some("ip"),
            },
            Field {
                key: "ip6",
                check: ipv6_config,
                requires: None,
            },
            Field {
                key: "gw6",
                check: ipv6,
                requires: Some("ip6"),
            },
        ],
    )
}

/// `meta=<volume>,network=<volume>,user=<volume>,vendor=<volume>` (qemu-server).
fn qm_cicustom(v: &str) -> Result<(), String> {
    property_string(
        v,
        &[
            Field {
                key: "meta",
                check: volume_id,
                requires: None,
            },
            Field {
                key: "network",
                check: volume_id,
                requires: None,
            },
            Field {
                key: "user",
                check: volume_id,
                requires: None,
            },
            Field {
                key: "vendor",
                check: volume_id,
                requires: None,
            },
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(format: &str, v: &str) {
        assert_eq!(check(format, v), Ok(()), "{format} should accept {v:?}");
    }

    fn bad(format: &str, v: &str) {
        assert!(
            matches!(check(format, v), Err(FormatError::Invalid(_))),
            "{format} should refuse {v:?}"
        );
    }

    #[test]
    fn node_names() {
        ok("pve-node", "pve1");
        ok("pve-node", "a");
        ok("pve-node", "node-2");
        bad("pve-node", "-pve");
        bad("pve-node", "pve-");
        bad("pve-node", "pve.example");
        bad("pve-node", "");
    }

    #[test]
    fn vmids() {
        ok("pve-vmid", "100");
        ok("pve-vmid", "999999999");
        bad("pve-vmid", "99");
        bad("pve-vmid", "0100");
        bad("pve-vmid", "1000000000");
        ok("pve-vmid-list", "100,101 102;103");
        bad("pve-vmid-list", "100,abc");
    }

    #[test]
    fn config_and_storage_ids() {
        ok("pve-configid", "scsi0");
        ok("pve-configid", "before-upgrade_1");
        bad("pve-configid", "0abc");
        bad("pve-configid", "a");
        ok("pve-configid-list", "ciuser,sshkeys");
        ok("pve-storage-id", "local-lvm");
        ok("pve-storage-id", "nfs.backup");
        bad("pve-storage-id", "local-");
        bad("pve-storage-id", "1local");
        ok("pve-volume-id", "local:snippets/user.yaml");
        ok("pve-volume-id-or-qm-path", "local-lvm:32");
        ok("pve-volume-id-or-qm-path", "none");
        bad("pve-volume-id-or-qm-path", "32");
        ok(
            "pve-volume-id-or-absolute-path",
            "/var/lib/vz/images/disk.qcow2",
        );
        bad("pve-volume-id", "local");
    }

    #[test]
    fn sizes() {
        ok("disk-size", "32G");
        ok("disk-size", "1.5T");
        ok("disk-size", "1024");
        bad("disk-size", "+10G");
        bad("disk-size", "10GB");
        bad("disk-size", "G");
    }

    #[test]
    fn urlencoded_values() {
        ok("urlencoded", "ssh-ed25519%20AAAA%2B%2F%3D%20me%40host%0A");
        bad("urlencoded", "ssh-ed25519 AAAA");
        bad("urlencoded", "a+b");
    }

    #[test]
    fn network_formats() {
        ok("pve-qm-ipconfig", "ip=10.0.0.5/24,gw=10.0.0.1");
        ok("pve-qm-ipconfig", "ip=dhcp");
        ok("pve-qm-ipconfig", "ip=dhcp,ip6=auto");
        ok("pve-qm-ipconfig", "ip6=2001:db8::5/64,gw6=2001:db8::1");
        bad("pve-qm-ipconfig", "gw=10.0.0.1");
        bad("pve-qm-ipconfig", "ip=10.0.0.5");
        bad("pve-qm-ipconfig", "ip=10.0.0.5/24,mask=1");
        bad("pve-qm-ipconfig", "10.0.0.5/24");
        bad("pve-qm-ipconfig", "ip=10.0.0.5/4");
        ok("address-list", "1.1.1.1 9.9.9.9");
        ok("address-list", "dns.example,2001:db8::53");
        bad("address-list", "1.1.1.1 not_valid!");
        ok("mac-addr", "BC:24:11:00:00:01");
        bad("mac-addr", "BD:24:11:00:00:01");
        ok("CIDR", "10.0.0.0/8");
        bad("CIDR", "10.0.0.0/7");
    }

    #[test]
    fn cicustom_and_mail() {
        ok(
            "pve-qm-cicustom",
            "user=local:snippets/user.yaml,network=local:snippets/net.yaml",
        );
        bad("pve-qm-cicustom", "user=snippets/user.yaml");
        bad("pve-qm-cicustom", "users=local:snippets/user.yaml");
        ok("email", "ops@example.org");
        bad("email", "ops@");
        ok("email-or-username-list", "root,ops@example.org");
    }

    #[test]
    fn unknown_formats_are_errors() {
        assert_eq!(
            check("pve-fw-addr-spec", "x"),
            Err(FormatError::Unknown("pve-fw-addr-spec".into()))
        );
        assert!(!is_known("pve-fw-addr-spec"));
        assert!(is_known("pve-configid-list"));
        assert!(is_known("pve-tag-list"));
    }

    #[test]
    fn property_strings_split_like_pve() {
        let items = parse_property_string("virtio=BC:24:11:00:00:01,bridge=vmbr0").expect("parses");
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].key, Some("virtio"));
        let items = parse_property_string("2048").expect("parses");
        assert_eq!(
            items,
            vec![PropertyItem {
                key: None,
                value: "2048"
            }]
        );
        assert!(parse_property_string("a=1,a=2").is_err());
        assert!(parse_property_string("=1").is_err());
    }
}

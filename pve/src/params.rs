//! Typed request parameters, checked before anything is sent, and their encoding into
//! PVE's form parameters (booleans as `0`/`1`, property strings, URL-encoded SSH keys).

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use crate::error::PveError;
use crate::formats;
use crate::ids::{NodeName, StorageId, Vmid};

/// Form/query parameters in the order they are sent. Array parameters repeat their key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Params(pub(crate) Vec<(String, String)>);

impl Params {
    pub(crate) fn new() -> Self {
        Params(Vec::new())
    }

    pub(crate) fn str(&mut self, k: &str, v: impl fmt::Display) -> &mut Self {
        self.0.push((k.to_string(), v.to_string()));
        self
    }

    pub(crate) fn opt<T: fmt::Display>(&mut self, k: &str, v: Option<T>) -> &mut Self {
        if let Some(v) = v {
            self.str(k, v);
        }
        self
    }

    pub(crate) fn bool(&mut self, k: &str, v: bool) -> &mut Self {
        self.str(k, if v { "1" } else { "0" })
    }

    pub(crate) fn opt_bool(&mut self, k: &str, v: Option<bool>) -> &mut Self {
        if let Some(v) = v {
            self.bool(k, v);
        }
        self
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The characters PVE's `urlencoded` format allows unescaped: `[-a-zA-Z0-9_.!~*'()]`.
const URLENCODED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'!')
    .remove(b'~')
    .remove(b'*')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')');

/// Encodes SSH public keys for the `sshkeys` option: one key per line, then percent-encoded
/// with `%20` for spaces (PVE decodes with `uri_unescape`, which leaves `+` alone).
pub fn encode_ssh_keys(keys: &[String]) -> Result<String, PveError> {
    for key in keys {
        check_ssh_key(key)?;
    }
    let joined = keys.iter().map(|k| k.trim()).collect::<Vec<_>>().join("\n");
    Ok(utf8_percent_encode(&joined, URLENCODED).to_string())
}

fn check_ssh_key(key: &str) -> Result<(), PveError> {
    let key = key.trim();
    let mut fields = key.split_whitespace();
    let kind = fields.next().unwrap_or_default();
    let blob = fields.next();
    let kind_ok = kind.starts_with("ssh-") || kind.starts_with("ecdsa-") || kind.starts_with("sk-");
    if key.contains('\n') || key.contains('\r') || !kind_ok || blob.is_none() {
        return Err(PveError::invalid(
            "ssh public key",
            key,
            "expected one OpenSSH public key per entry, like 'ssh-ed25519 AAAA… comment'",
        ));
    }
    Ok(())
}

/// IPv4 part of a cloud-init `ipconfigN`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ipv4Setting {
    Dhcp,
    Static {
        address: Ipv4Addr,
        prefix: u8,
        gateway: Option<Ipv4Addr>,
    },
}

/// IPv6 part of a cloud-init `ipconfigN`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ipv6Setting {
    Dhcp,
    /// Stateless autoconfiguration (SLAAC).
    Auto,
    Static {
        address: Ipv6Addr,
        prefix: u8,
        gateway: Option<Ipv6Addr>,
    },
}

/// A cloud-init interface configuration (`pve-qm-ipconfig`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IpConfig {
    pub v4: Option<Ipv4Setting>,
    pub v6: Option<Ipv6Setting>,
}

impl IpConfig {
    pub fn dhcp() -> Self {
        IpConfig {
            v4: Some(Ipv4Setting::Dhcp),
            v6: None,
        }
    }

    pub fn static_v4(address: Ipv4Addr, prefix: u8, gateway: Option<Ipv4Addr>) -> Self {
        IpConfig {
            v4: Some(Ipv4Setting::Static {
                address,
                prefix,
                gateway,
            }),
            v6: None,
        }
    }

    pub fn with_v6(mut self, v6: Ipv6Setting) -> Self {
        self.v6 = Some(v6);
        self
    }

    /// The property string, validated.
    pub fn to_property_string(&self) -> Result<String, PveError> {
        let mut parts = Vec::new();
        match &self.v4 {
            None => {}
            Some(Ipv4Setting::Dhcp) => parts.push("ip=dhcp".to_string()),
            Some(Ipv4Setting::Static {
                address,
                prefix,
                gateway,
            }) => {
                parts.push(format!("ip={address}/{prefix}"));
                if let Some(gw) = gateway {
                    parts.push(format!("gw={gw}"));
                }
            }
        }
        match &self.v6 {
            None => {}
            Some(Ipv6Setting::Dhcp) => parts.push("ip6=dhcp".to_string()),
            Some(Ipv6Setting::Auto) => parts.push("ip6=auto".to_string()),
            Some(Ipv6Setting::Static {
                address,
                prefix,
                gateway,
            }) => {
                parts.push(format!("ip6={address}/{prefix}"));
                if let Some(gw) = gateway {
                    parts.push(format!("gw6={gw}"));
                }
            }
        }
        let s = parts.join(",");
        if s.is_empty() {
            return Err(PveError::invalid(
                "cloud-init ip config",
                "",
                "set an ipv4 or ipv6 setting (dhcp, auto or a static address)",
            ));
        }
        formats::check("pve-qm-ipconfig", &s).map_err(|e| {
            PveError::invalid(
                "cloud-init ip config",
                &s,
                format!("{e}; prefixes run from 8 to 32 (ipv4) or 128 (ipv6)"),
            )
        })?;
        Ok(s)
    }
}

/// Cloud-init settings; `None` leaves a setting as it is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CloudInit {
    /// `ciuser`
    pub user: Option<String>,
    /// `cipassword` (prefer SSH keys)
    pub password: Option<String>,
    /// `sshkeys`, one OpenSSH public key per entry
    pub ssh_keys: Option<Vec<String>>,
    /// `ipconfigN` by interface index
    pub ipconfig: Vec<(u8, IpConfig)>,
    /// `nameserver`
    pub nameservers: Option<Vec<String>>,
    /// `searchdomain`
    pub searchdomain: Option<String>,
    /// `cicustom`, e.g. `user=local:snippets/vigie-user.yaml`
    pub custom: Option<String>,
}

/// PVE allows up to 32 network interfaces (net0..net31, ipconfig0..ipconfig31).
const MAX_NETS: u8 = 32;

impl CloudInit {
    pub(crate) fn push(&self, p: &mut Params) -> Result<(), PveError> {
        if let Some(u) = &self.user {
            if u.is_empty() || u.chars().any(|c| c.is_whitespace() || c == ',') {
                return Err(PveError::invalid(
                    "cloud-init user",
                    u,
                    "use a plain user name without spaces",
                ));
            }
            p.str("ciuser", u);
        }
        p.opt("cipassword", self.password.as_ref());
        if let Some(keys) = &self.ssh_keys {
            p.str("sshkeys", encode_ssh_keys(keys)?);
        }
        let mut seen = Vec::new();
        for (i, cfg) in &self.ipconfig {
            if *i >= MAX_NETS || seen.contains(i) {
                return Err(PveError::invalid(
                    "cloud-init interface index",
                    i,
                    "use each index 0..31 at most once",
                ));
            }
            seen.push(*i);
            p.str(&format!("ipconfig{i}"), cfg.to_property_string()?);
        }
        if let Some(ns) = &self.nameservers {
            let joined = ns.join(" ");
            formats::check("address-list", &joined)
                .map_err(|e| PveError::invalid("cloud-init name servers", &joined, e))?;
            p.str("nameserver", joined);
        }
        p.opt("searchdomain", self.searchdomain.as_ref());
        if let Some(c) = &self.custom {
            formats::check("pve-qm-cicustom", c).map_err(|e| {
                PveError::invalid(
                    "cloud-init custom files",
                    c,
                    format!("{e}; expected e.g. user=local:snippets/user.yaml"),
                )
            })?;
            p.str("cicustom", c);
        }
        Ok(())
    }
}

fn check_name(name: &str) -> Result<(), PveError> {
    formats::check("dns-name", name).map_err(|e| {
        PveError::invalid(
            "vm name",
            name,
            format!("{e}; use letters, digits, '-' and '.'"),
        )
    })
}

fn check_tags(tags: &[String]) -> Result<String, PveError> {
    for t in tags {
        formats::check("pve-tag", t).map_err(|e| PveError::invalid("tag", t, e))?;
    }
    Ok(tags.join(";"))
}

fn check_disk_key(key: &str) -> Result<(), PveError> {
    let ok = ["scsi", "virtio", "sata", "ide"].iter().any(|bus| {
        key.strip_prefix(bus)
            .is_some_and(|n| !n.is_empty() && n.len() <= 2 && n.bytes().all(|b| b.is_ascii_digit()))
    });
    if ok {
        Ok(())
    } else {
        Err(PveError::invalid(
            "disk name",
            key,
            "expected scsiN, virtioN, sataN or ideN",
        ))
    }
}

/// Changes to a VM's configuration (`POST`/`PUT .../config`). `None` leaves a key alone.
///
/// On a running VM, CPU and memory changes become *pending* until the next restart, as in
/// PVE without CPU/memory hotplug.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfigUpdate {
    pub name: Option<String>,
    pub cores: Option<u32>,
    pub sockets: Option<u32>,
    pub memory_mib: Option<u64>,
    pub balloon_mib: Option<u64>,
    pub agent: Option<bool>,
    pub description: Option<String>,
    pub tags: Option<Vec<String>>,
    pub onboot: Option<bool>,
    pub cloud_init: CloudInit,
    /// Keys to remove.
    pub delete: Vec<String>,
    /// Refuse the change if the config digest differs (concurrent edit guard).
    pub digest: Option<String>,
}

impl ConfigUpdate {
    pub(crate) fn params(&self) -> Result<Params, PveError> {
        let mut p = Params::new();
        if let Some(n) = &self.name {
            check_name(n)?;
            p.str("name", n);
        }
        if let Some(c) = self.cores {
            if c == 0 {
                return Err(PveError::invalid("cores", c, "a vm needs at least 1 core"));
            }
            p.str("cores", c);
        }
        if let Some(s) = self.sockets {
            if s == 0 {
                return Err(PveError::invalid(
                    "sockets",
                    s,
                    "a vm needs at least 1 socket",
                ));
            }
            p.str("sockets", s);
        }
        if let Some(m) = self.memory_mib {
            if m < 16 {
                return Err(PveError::invalid(
                    "memory (mib)",
                    m,
                    "proxmox needs at least 16 mib",
                ));
            }
            p.str("memory", m);
        }
        p.opt("balloon", self.balloon_mib);
        p.opt_bool("agent", self.agent);
        p.opt("description", self.description.as_ref());
        if let Some(t) = &self.tags {
            p.str("tags", check_tags(t)?);
        }
        p.opt_bool("onboot", self.onboot);
        self.cloud_init.push(&mut p)?;
        if !self.delete.is_empty() {
            let list = self.delete.join(",");
            formats::check("pve-configid-list", &list)
                .map_err(|e| PveError::invalid("keys to delete", &list, e))?;
            p.str("delete", list);
        }
        p.opt("digest", self.digest.as_ref());
        if p.is_empty() {
            return Err(PveError::invalid(
                "config update",
                "{}",
                "nothing to change",
            ));
        }
        Ok(p)
    }
}

/// A new VM (`POST /nodes/{node}/qemu`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreateVm {
    pub vmid: Vmid,
    pub name: Option<String>,
    pub cores: Option<u32>,
    pub sockets: Option<u32>,
    pub memory_mib: Option<u64>,
    /// `l26` for Linux, `win11`, …
    pub ostype: Option<String>,
    /// `virtio-scsi-single`, …
    pub scsihw: Option<String>,
    /// Disks: (`scsi0`, `local-lvm:32`) allocates 32 GiB on local-lvm.
    pub disks: Vec<(String, String)>,
    /// Network devices: (0, `virtio,bridge=vmbr0`).
    pub nets: Vec<(u8, String)>,
    pub agent: Option<bool>,
    pub cloud_init: CloudInit,
    pub description: Option<String>,
    pub tags: Vec<String>,
    /// Start the VM once created.
    pub start: bool,
}

impl CreateVm {
    pub fn new(vmid: Vmid) -> Self {
        CreateVm {
            vmid,
            name: None,
            cores: None,
            sockets: None,
            memory_mib: None,
            ostype: None,
            scsihw: None,
            disks: Vec::new(),
            nets: Vec::new(),
            agent: None,
            cloud_init: CloudInit::default(),
            description: None,
            tags: Vec::new(),
            start: false,
        }
    }

    pub(crate) fn params(&self) -> Result<Params, PveError> {
        let mut p = Params::new();
        p.str("vmid", self.vmid);
        if let Some(n) = &self.name {
            check_name(n)?;
            p.str("name", n);
        }
        p.opt("cores", self.cores);
        p.opt("sockets", self.sockets);
        p.opt("memory", self.memory_mib);
        p.opt("ostype", self.ostype.as_ref());
        p.opt("scsihw", self.scsihw.as_ref());
        for (key, value) in &self.disks {
            check_disk_key(key)?;
            p.str(key, value);
        }
        for (i, value) in &self.nets {
            if *i >= MAX_NETS {
                return Err(PveError::invalid("network device index", i, "use 0..31"));
            }
            p.str(&format!("net{i}"), value);
        }
        p.opt_bool("agent", self.agent);
        self.cloud_init.push(&mut p)?;
        p.opt("description", self.description.as_ref());
        if !self.tags.is_empty() {
            p.str("tags", check_tags(&self.tags)?);
        }
        if self.start {
            p.bool("start", true);
        }
        Ok(p)
    }
}

/// Options of a clone (`POST .../clone`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CloneOptions {
    pub name: Option<String>,
    /// Full copy (`true`) or linked clone of a template (`false`). PVE's default: linked for
    /// templates, full otherwise.
    pub full: Option<bool>,
    /// Node to create the clone on.
    pub target: Option<NodeName>,
    /// Target storage for a full clone.
    pub storage: Option<StorageId>,
    pub description: Option<String>,
    pub pool: Option<String>,
}

impl CloneOptions {
    pub(crate) fn params(&self, newid: Vmid) -> Result<Params, PveError> {
        let mut p = Params::new();
        p.str("newid", newid);
        if let Some(n) = &self.name {
            check_name(n)?;
            p.str("name", n);
        }
        p.opt_bool("full", self.full);
        p.opt("target", self.target.as_ref());
        if self.storage.is_some() && self.full == Some(false) {
            return Err(PveError::invalid(
                "clone storage",
                self.storage
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default(),
                "a target storage needs a full clone (set full to true)",
            ));
        }
        p.opt("storage", self.storage.as_ref());
        p.opt("description", self.description.as_ref());
        if let Some(pool) = &self.pool {
            formats::check("pve-poolid", pool).map_err(|e| PveError::invalid("pool", pool, e))?;
            p.str("pool", pool);
        }
        Ok(p)
    }
}

/// A disk size change for `PUT .../resize`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DiskResize {
    /// Grow by this many bytes (`+N`).
    GrowBy(u64),
    /// Set the absolute size in bytes (must not shrink).
    SetTo(u64),
}

impl DiskResize {
    pub fn grow_gib(gib: u64) -> Self {
        DiskResize::GrowBy(gib << 30)
    }

    pub(crate) fn param(&self) -> Result<String, PveError> {
        let (prefix, bytes) = match self {
            DiskResize::GrowBy(b) => ("+", *b),
            DiskResize::SetTo(b) => ("", *b),
        };
        if bytes == 0 {
            return Err(PveError::invalid(
                "disk size",
                bytes,
                "give a size above zero",
            ));
        }
        Ok(format!("{prefix}{}", format_size(bytes)))
    }
}

/// pve-common `format_size`: the largest exact unit.
pub fn format_size(bytes: u64) -> String {
    const UNITS: [(u64, &str); 4] = [
        (1 << 40, "T"),
        (1 << 30, "G"),
        (1 << 20, "M"),
        (1 << 10, "K"),
    ];
    for (mult, unit) in UNITS {
        if bytes.is_multiple_of(mult) {
            return format!("{}{unit}", bytes / mult);
        }
    }
    bytes.to_string()
}

pub(crate) fn check_resize_disk(disk: &str) -> Result<(), PveError> {
    check_disk_key(disk)?;
    // PVE's enum: ide0-3, sata0-5, scsi0-30, virtio0-15, efidisk0, tpmstate0.
    let max = [("ide", 3u32), ("sata", 5), ("scsi", 30), ("virtio", 15)]
        .into_iter()
        .find_map(|(bus, max)| {
            disk.strip_prefix(bus)
                .and_then(|n| n.parse::<u32>().ok())
                .map(|n| n <= max)
        });
    if max == Some(true) {
        Ok(())
    } else {
        Err(PveError::invalid(
            "disk name",
            disk,
            "proxmox has ide0-3, sata0-5, scsi0-30 and virtio0-15",
        ))
    }
}

/// Options of a VM deletion.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeleteOptions {
    /// Also remove the VM from backup jobs, replication and HA.
    pub purge: bool,
    /// Also destroy disks not referenced by the config (`unusedN`, orphans).
    pub destroy_unreferenced_disks: bool,
}

/// Backup mode of `vzdump`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackupMode {
    Snapshot,
    Suspend,
    Stop,
}

/// Compression of `vzdump`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Lzo,
    Zstd,
}

/// Options of an ad-hoc backup (`POST /nodes/{node}/vzdump`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VzdumpOptions {
    pub vmids: Vec<Vmid>,
    pub storage: Option<StorageId>,
    pub mode: Option<BackupMode>,
    pub compress: Option<Compression>,
    /// Prune older backups per the storage's retention (`remove`).
    pub remove: Option<bool>,
    /// Template for the backup notes, e.g. `{{guestname}}` (needs `storage`).
    pub notes_template: Option<String>,
    /// Protect the backup from pruning (needs `storage`).
    pub protected: Option<bool>,
}

impl VzdumpOptions {
    pub fn new(vmids: Vec<Vmid>) -> Self {
        VzdumpOptions {
            vmids,
            storage: None,
            mode: None,
            compress: None,
            remove: None,
            notes_template: None,
            protected: None,
        }
    }

    pub(crate) fn params(&self) -> Result<Params, PveError> {
        if self.vmids.is_empty() {
            return Err(PveError::invalid(
                "backup vm list",
                "",
                "name at least one vm id",
            ));
        }
        if self.storage.is_none() && (self.notes_template.is_some() || self.protected.is_some()) {
            return Err(PveError::invalid(
                "backup options",
                "notes-template/protected",
                "these need a target storage",
            ));
        }
        let mut p = Params::new();
        let ids: Vec<String> = self.vmids.iter().map(ToString::to_string).collect();
        p.str("vmid", ids.join(","));
        p.opt("storage", self.storage.as_ref());
        p.opt(
            "mode",
            self.mode.map(|m| match m {
                BackupMode::Snapshot => "snapshot",
                BackupMode::Suspend => "suspend",
                BackupMode::Stop => "stop",
            }),
        );
        p.opt(
            "compress",
            self.compress.map(|c| match c {
                Compression::None => "0",
                Compression::Gzip => "gzip",
                Compression::Lzo => "lzo",
                Compression::Zstd => "zstd",
            }),
        );
        p.opt_bool("remove", self.remove);
        p.opt("notes-template", self.notes_template.as_ref());
        p.opt_bool("protected", self.protected);
        Ok(p)
    }
}

/// Options of `GET /cluster/metrics/export`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MetricsExportOptions {
    /// Include the cached history (~30 minutes at 10 s), not only the latest values.
    pub history: bool,
    /// Only the node answering the request.
    pub local_only: bool,
    /// Only samples newer than this Unix time.
    pub start_time: Option<i64>,
    /// Only these nodes.
    pub node_list: Vec<NodeName>,
}

impl MetricsExportOptions {
    pub(crate) fn params(&self) -> Params {
        let mut p = Params::new();
        if self.history {
            p.bool("history", true);
        }
        if self.local_only {
            p.bool("local-only", true);
        }
        p.opt("start-time", self.start_time);
        if !self.node_list.is_empty() {
            let nodes: Vec<&str> = self.node_list.iter().map(NodeName::as_str).collect();
            p.str("node-list", nodes.join(","));
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssh_keys_are_urlencoded_with_percent_20() {
        let enc = encode_ssh_keys(&[
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI+x/y= me@laptop".to_string(),
            "ssh-rsa AAAAB3 ops".to_string(),
        ])
        .expect("valid keys");
        assert_eq!(
            enc,
            "ssh-ed25519%20AAAAC3NzaC1lZDI1NTE5AAAAI%2Bx%2Fy%3D%20me%40laptop%0Assh-rsa%20AAAAB3%20ops"
        );
        assert_eq!(formats::check("urlencoded", &enc), Ok(()));
        assert!(encode_ssh_keys(&["not a key".to_string()]).is_err());
        assert!(encode_ssh_keys(&["ssh-ed25519".to_string()]).is_err());
    }

    #[test]
    fn ipconfig_strings() {
        let c = IpConfig::static_v4(
            Ipv4Addr::new(10, 0, 0, 5),
            24,
            Some(Ipv4Addr::new(10, 0, 0, 1)),
        );
        assert_eq!(
            c.to_property_string().expect("valid"),
            "ip=10.0.0.5/24,gw=10.0.0.1"
        );
        let c = IpConfig::dhcp().with_v6(Ipv6Setting::Auto);
        assert_eq!(c.to_property_string().expect("valid"), "ip=dhcp,ip6=auto");
        let bad = IpConfig::static_v4(Ipv4Addr::new(10, 0, 0, 5), 40, None);
        let err = bad.to_property_string().expect_err("prefix too long");
        assert!(err.to_string().contains("ip=10.0.0.5/40"), "{err}");
        assert!(IpConfig::default().to_property_string().is_err());
    }

    #[test]
    fn config_update_encoding() {
        let u = ConfigUpdate {
            cores: Some(4),
            memory_mib: Some(4096),
            agent: Some(true),
            cloud_init: CloudInit {
                user: Some("vigie".into()),
                nameservers: Some(vec!["1.1.1.1".into(), "9.9.9.9".into()]),
                ipconfig: vec![(0, IpConfig::dhcp())],
                ..CloudInit::default()
            },
            delete: vec!["cipassword".into()],
            ..ConfigUpdate::default()
        };
        let p = u.params().expect("valid");
        let pairs: Vec<(&str, &str)> = p.0.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(
            pairs,
            vec![
                ("cores", "4"),
                ("memory", "4096"),
                ("agent", "1"),
                ("ciuser", "vigie"),
                ("ipconfig0", "ip=dhcp"),
                ("nameserver", "1.1.1.1 9.9.9.9"),
                ("delete", "cipassword"),
            ]
        );
        assert!(ConfigUpdate::default().params().is_err());
        let bad = ConfigUpdate {
            name: Some("web_1".into()),
            ..ConfigUpdate::default()
        };
        assert!(bad.params().is_err());
    }

    #[test]
    fn resize_sizes() {
        assert_eq!(DiskResize::grow_gib(10).param().expect("valid"), "+10G");
        assert_eq!(
            DiskResize::SetTo(1536 << 20).param().expect("valid"),
            "1536M"
        );
        assert_eq!(DiskResize::SetTo(1 << 40).param().expect("valid"), "1T");
        assert!(DiskResize::GrowBy(0).param().is_err());
        assert!(check_resize_disk("scsi30").is_ok());
        assert!(check_resize_disk("scsi31").is_err());
        assert!(check_resize_disk("net0").is_err());
    }

    #[test]
    fn vzdump_requires_storage_for_notes() {
        let vm = Vmid::new(100).expect("vmid");
        let mut o = VzdumpOptions::new(vec![vm]);
        o.notes_template = Some("{{guestname}}".into());
        assert!(o.params().is_err());
        o.storage = Some(StorageId::new("local").expect("id"));
        assert!(o.params().is_ok());
    }
}

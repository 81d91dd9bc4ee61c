//! `answer.toml` from a few answers: [`AnswerSpec`] → [`render_answer`].
//!
//! The output is always run back through [`validate_answer`], so a rendered
//! file is one the validator accepts (or rendering fails with its errors).

use std::collections::BTreeMap;

use crate::answer::{
    AnswerError, BtrfsRaid, KeyboardLayout, RawAnswer, RawBtrfs, RawDiskSetup, RawFqdn,
    RawFqdnExtended, RawGlobal, RawNetwork, RawWebhook, RawZfs, RebootMode, ZfsRaid,
    validate_answer,
};

/// What `vigie bootstrap answer` asks.
#[derive(Debug, Clone, PartialEq)]
pub struct AnswerSpec {
    /// `None`: take the host name from DHCP.
    pub fqdn: Option<String>,
    /// Domain to use with a DHCP host name when the lease carries none.
    pub dhcp_domain: Option<String>,
    pub root_password: PasswordSpec,
    pub root_ssh_keys: Vec<String>,
    pub disks: DiskSpec,
    pub filesystem: FilesystemSpec,
    pub network: NetworkSpec,
    pub timezone: String,
    pub keyboard: KeyboardLayout,
    pub country: String,
    pub mailto: String,
    pub reboot_mode: RebootMode,
    pub webhook: Option<WebhookSpec>,
}

/// Plain password (8..64 characters) or a `mkpasswd` hash.
#[derive(Clone, PartialEq, Eq)]
pub enum PasswordSpec {
    Plain(String),
    Hashed(String),
}

impl std::fmt::Debug for PasswordSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Plain(_) => "Plain(<redacted>)",
            Self::Hashed(_) => "Hashed(<redacted>)",
        })
    }
}

/// Which disks to install on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiskSpec {
    /// Device names, e.g. `["sda", "sdb"]`.
    List(Vec<String>),
    /// udev property → glob, e.g. `ID_SERIAL = "*MZ7KM*"`.
    Filter {
        filter: BTreeMap<String, String>,
        match_all: bool,
    },
}

/// Filesystem; the raid level is part of the choice for zfs and btrfs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilesystemSpec {
    Ext4,
    Xfs,
    Zfs(ZfsRaid),
    Btrfs(BtrfsRaid),
}

/// Management network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetworkSpec {
    Dhcp,
    Static {
        /// `192.0.2.10/24`
        cidr: String,
        gateway: String,
        dns: String,
        /// udev property → glob selecting the management NIC; may be empty.
        nic_filter: BTreeMap<String, String>,
    },
}

/// Where the installer reports the new host (the Vigie dashboard).
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSpec {
    pub url: String,
    pub cert_fingerprint: Option<String>,
    pub auth_token: Option<String>,
}

impl std::fmt::Debug for WebhookSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSpec")
            .field("url", &self.url)
            .field("cert_fingerprint", &self.cert_fingerprint)
            .field(
                "auth_token",
                &self.auth_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// Why an [`AnswerSpec`] could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("the answers do not make a valid answer.toml:\n{}", list(.0))]
    Invalid(Vec<AnswerError>),
    #[error("could not write TOML: {0}")]
    Toml(#[from] toml::ser::Error),
}

fn list(errors: &[AnswerError]) -> String {
    errors
        .iter()
        .map(|e| format!("  {e}"))
        .collect::<Vec<_>>()
        .join("\n")
}

const HEADER: &str = "# answer.toml for the Proxmox VE automated installer, written by `vigie bootstrap answer`.\n\
# Check it on a Proxmox host with `proxmox-auto-install-assistant validate-answer answer.toml`.\n\n";

/// Renders the answer file; the text is validated before it is returned.
pub fn render_answer(spec: &AnswerSpec) -> Result<String, RenderError> {
    let raw = to_raw(spec);
    let body = toml::to_string(&raw)?;
    let text = format!("{HEADER}{body}");
    validate_answer(&text).map_err(RenderError::Invalid)?;
    Ok(text)
}

fn to_raw(spec: &AnswerSpec) -> RawAnswer {
    let (root_password, root_password_hashed) = match &spec.root_password {
        PasswordSpec::Plain(p) => (Some(p.clone()), None),
        PasswordSpec::Hashed(h) => (None, Some(h.clone())),
    };
    let fqdn = match &spec.fqdn {
        Some(name) => RawFqdn::Simple(name.clone()),
        None => RawFqdn::Extended(RawFqdnExtended {
            source: Some("from-dhcp".to_string()),
            domain: spec.dhcp_domain.clone(),
        }),
    };
    let global = RawGlobal {
        keyboard: Some(spec.keyboard.as_str().to_string()),
        country: Some(spec.country.clone()),
        fqdn: Some(fqdn),
        mailto: Some(spec.mailto.clone()),
        timezone: Some(spec.timezone.clone()),
        root_password,
        root_password_hashed,
        reboot_on_error: Some(false),
        reboot_mode: Some(spec.reboot_mode.as_str().to_string()),
        root_ssh_keys: (!spec.root_ssh_keys.is_empty()).then(|| spec.root_ssh_keys.clone()),
    };
    let network = match &spec.network {
        NetworkSpec::Dhcp => RawNetwork {
            source: Some("from-dhcp".to_string()),
            ..RawNetwork::default()
        },
        NetworkSpec::Static {
            cidr,
            gateway,
            dns,
            nic_filter,
        } => RawNetwork {
            source: Some("from-answer".to_string()),
            cidr: Some(cidr.clone()),
            dns: Some(dns.clone()),
            gateway: Some(gateway.clone()),
            filter: (!nic_filter.is_empty()).then(|| nic_filter.clone()),
            interface_name_pinning: None,
        },
    };
    let mut disks = RawDiskSetup::default();
    match &spec.disks {
        DiskSpec::List(list) => disks.disk_list = Some(list.clone()),
        DiskSpec::Filter { filter, match_all } => {
            disks.filter = Some(filter.clone());
            disks.filter_match = Some(if *match_all { "all" } else { "any" }.to_string());
        }
    }
    match spec.filesystem {
        FilesystemSpec::Ext4 => disks.filesystem = Some("ext4".to_string()),
        FilesystemSpec::Xfs => disks.filesystem = Some("xfs".to_string()),
        FilesystemSpec::Zfs(raid) => {
            disks.filesystem = Some("zfs".to_string());
            disks.zfs = Some(RawZfs {
                raid: Some(raid.as_str().to_string()),
                ..RawZfs::default()
            });
        }
        FilesystemSpec::Btrfs(raid) => {
            disks.filesystem = Some("btrfs".to_string());
            disks.btrfs = Some(RawBtrfs {
                raid: Some(raid.as_str().to_string()),
                ..RawBtrfs::default()
            });
        }
    }
    RawAnswer {
        global: Some(global),
        network: Some(network),
        disk_setup: Some(disks),
        first_boot: None,
        post_installation_webhook: spec.webhook.as_ref().map(|w| RawWebhook {
            url: Some(w.url.clone()),
            cert_fingerprint: w.cert_fingerprint.clone(),
            auth_token: w.auth_token.clone(),
        }),
    }
}

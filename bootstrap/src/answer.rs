//! The automated installer's `answer.toml`: parse → validate → resolve.
//!
//! [`validate_answer`] parses the text into `Raw*` types (serde, kebab-case
//! keys, the installer's snake_case legacy aliases, unknown keys rejected),
//! then checks every rule and collects *all* failures, each naming the key by
//! its dotted path and saying how to fix it. Only when there are none does it
//! resolve into the closed [`Answer`].
//!
//! Rule sources, marked on each check:
//! - `[types]`: proxmox-rs `proxmox-installer-types/src/answer.rs` (serde
//!   shape, enums, `disk_selection`, `filesystem_details`, api schema ranges);
//! - `[verify]`: pve-installer `proxmox-auto-installer/src/utils.rs`
//!   (`verify_email_and_root_password_settings`, `verify_disks_settings`,
//!   `check_swapsize`, `verify_first_boot_settings`, interface pinning);
//! - `[vigie]`: stricter than the installer, because the installer would only
//!   fail later on the machine (or silently ignore the value).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// One reason an answer file is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {problem}; fix: {fix}")]
pub struct AnswerError {
    /// Dotted path of the key (`disk-setup.zfs.ashift`), or `line N` when
    /// the text could not be parsed far enough to know the key.
    pub key: String,
    /// What was expected and what was found.
    pub problem: String,
    /// What to change.
    pub fix: String,
}

impl AnswerError {
    fn new(key: impl Into<String>, problem: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            problem: problem.into(),
            fix: fix.into(),
        }
    }
}

// ---------------------------------------------------------------------------
// Raw layer: what serde reads. Every value the rules check is optional or a
// string here so that a bad value becomes an AnswerError with a key path.
// ---------------------------------------------------------------------------

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub(crate) struct RawAnswer {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub global: Option<RawGlobal>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<RawNetwork>,
    #[serde(rename = "disk-setup", skip_serializing_if = "Option::is_none")]
    pub disk_setup: Option<RawDiskSetup>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_boot: Option<RawFirstBoot>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub post_installation_webhook: Option<RawWebhook>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub(crate) struct RawGlobal {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keyboard: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fqdn: Option<RawFqdn>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mailto: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    #[serde(alias = "root_password", skip_serializing_if = "Option::is_none")]
    pub root_password: Option<String>,
    #[serde(
        alias = "root_password_hashed",
        skip_serializing_if = "Option::is_none"
    )]
    pub root_password_hashed: Option<String>,
    #[serde(alias = "reboot_on_error", skip_serializing_if = "Option::is_none")]
    pub reboot_on_error: Option<bool>,
    #[serde(alias = "reboot_mode", skip_serializing_if = "Option::is_none")]
    pub reboot_mode: Option<String>,
    #[serde(alias = "root_ssh_keys", skip_serializing_if = "Option::is_none")]
    pub root_ssh_keys: Option<Vec<String>>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(
    untagged,
    expecting = "either a fully-qualified domain name or a table `{ source = \"from-dhcp\", domain = \"...\" }`"
)]
pub(crate) enum RawFqdn {
    Simple(String),
    Extended(RawFqdnExtended),
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub(crate) struct RawFqdnExtended {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub(crate) struct RawNetwork {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cidr: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filter: Option<BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interface_name_pinning: Option<RawPinning>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub(crate) struct RawPinning {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub mapping: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub(crate) struct RawDiskSetup {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filesystem: Option<String>,
    #[serde(alias = "disk_list", skip_serializing_if = "Option::is_none")]
    pub disk_list: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filter: Option<BTreeMap<String, String>>,
    #[serde(alias = "filter_match", skip_serializing_if = "Option::is_none")]
    pub filter_match: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zfs: Option<RawZfs>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lvm: Option<RawLvm>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub btrfs: Option<RawBtrfs>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub(crate) struct RawZfs {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ashift: Option<i64>,
    #[serde(alias = "arc_max", skip_serializing_if = "Option::is_none")]
    pub arc_max: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checksum: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compress: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub copies: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hdsize: Option<f64>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub(crate) struct RawLvm {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hdsize: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub swapsize: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub maxroot: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub maxvz: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub minfree: Option<f64>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub(crate) struct RawBtrfs {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compress: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hdsize: Option<f64>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub(crate) struct RawFirstBoot {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ordering: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(alias = "cert_fingerprint", skip_serializing_if = "Option::is_none")]
    pub cert_fingerprint: Option<String>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub(crate) struct RawWebhook {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(alias = "cert_fingerprint", skip_serializing_if = "Option::is_none")]
    pub cert_fingerprint: Option<String>,
    #[serde(alias = "auth_token", skip_serializing_if = "Option::is_none")]
    pub auth_token: Option<String>,
}

// ---------------------------------------------------------------------------
// Closed layer: what a valid answer is.
// ---------------------------------------------------------------------------

/// A validated answer file.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub global: Global,
    pub network: Network,
    pub disk_setup: DiskSetup,
    pub first_boot: Option<FirstBoot>,
    pub post_installation_webhook: Option<PostInstallWebhook>,
}

/// `[global]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Global {
    pub keyboard: KeyboardLayout,
    /// ISO 3166-1 alpha-2, lower case.
    pub country: String,
    pub fqdn: FqdnConfig,
    pub mailto: String,
    pub timezone: String,
    pub root_password: RootPassword,
    pub reboot_on_error: bool,
    pub reboot_mode: RebootMode,
    pub root_ssh_keys: Vec<String>,
}

/// `root-password` XOR `root-password-hashed`.
#[derive(Clone, PartialEq, Eq)]
pub enum RootPassword {
    Plain(String),
    /// A crypt(3) hash as made by `mkpasswd`.
    Hashed(String),
}

impl fmt::Debug for RootPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Plain(_) => f.write_str("Plain(<redacted>)"),
            Self::Hashed(_) => f.write_str("Hashed(<redacted>)"),
        }
    }
}

/// `global.fqdn`: a fixed name, or taken from the DHCP lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FqdnConfig {
    Fixed(String),
    FromDhcp { domain: Option<String> },
}

/// `global.reboot-mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RebootMode {
    #[default]
    Reboot,
    PowerOff,
}

impl RebootMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reboot => "reboot",
            Self::PowerOff => "power-off",
        }
    }
}

macro_rules! string_enum {
    ($(#[$m:meta])* $name:ident { $($variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name { $($variant),+ }
        impl $name {
            /// Every value, in the installer's order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            /// The spelling in `answer.toml`.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
            fn parse(text: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|v| v.as_str() == text)
            }
            fn choices() -> String {
                Self::ALL.iter().map(|v| format!("\"{}\"", v.as_str())).collect::<Vec<_>>().join(", ")
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { f.write_str(self.as_str()) }
        }
    };
}

string_enum!(
    /// `global.keyboard` [types `KeyboardLayout`].
    KeyboardLayout {
        De = "de", DeCh = "de-ch", Dk = "dk", EnGb = "en-gb", EnUs = "en-us", Es = "es",
        Fi = "fi", Fr = "fr", FrBe = "fr-be", FrCa = "fr-ca", FrCh = "fr-ch", Hu = "hu",
        Is = "is", It = "it", Jp = "jp", Lt = "lt", Mk = "mk", Nl = "nl", No = "no",
        Pl = "pl", Pt = "pt", PtBr = "pt-br", Se = "se", Si = "si", Tr = "tr",
    }
);

string_enum!(
    /// `disk-setup.filesystem` [types `Filesystem`].
    Filesystem { Ext4 = "ext4", Xfs = "xfs", Zfs = "zfs", Btrfs = "btrfs" }
);

string_enum!(
    /// `disk-setup.zfs.raid`; lower-case aliases accepted on input [types `ZfsRaidLevel`].
    ZfsRaid {
        Raid0 = "RAID0", Raid1 = "RAID1", Raid10 = "RAID10",
        RaidZ1 = "RAIDZ-1", RaidZ2 = "RAIDZ-2", RaidZ3 = "RAIDZ-3",
    }
);

string_enum!(
    /// `disk-setup.btrfs.raid`; lower-case aliases accepted on input [types `BtrfsRaidLevel`].
    BtrfsRaid { Raid0 = "RAID0", Raid1 = "RAID1", Raid10 = "RAID10" }
);

string_enum!(
    /// `disk-setup.zfs.checksum` [types `ZfsChecksumOption`].
    ZfsChecksum { On = "on", Fletcher4 = "fletcher4", Sha256 = "sha256" }
);

string_enum!(
    /// `disk-setup.zfs.compress` [types `ZfsCompressOption`].
    ZfsCompress {
        On = "on", Off = "off", Lzjb = "lzjb", Lz4 = "lz4", Zle = "zle", Gzip = "gzip", Zstd = "zstd",
    }
);

string_enum!(
    /// `disk-setup.btrfs.compress` [types `BtrfsCompressOption`].
    BtrfsCompress { On = "on", Off = "off", Zlib = "zlib", Lzo = "lzo", Zstd = "zstd" }
);

string_enum!(
    /// `disk-setup.filter-match` [types `FilterMatch`].
    FilterMatch { Any = "any", All = "all" }
);

string_enum!(
    /// `first-boot.source` [types `FirstBootHookSourceMode`].
    FirstBootSource { FromUrl = "from-url", FromIso = "from-iso" }
);

string_enum!(
    /// `first-boot.ordering` [types `FirstBootHookServiceOrdering`].
    FirstBootOrdering {
        BeforeNetwork = "before-network", NetworkOnline = "network-online", FullyUp = "fully-up",
    }
);

impl ZfsRaid {
    /// Least number of disks in `disk-list` [verify `get_min_disks`].
    pub fn min_disks(self) -> usize {
        match self {
            Self::Raid0 => 1,
            Self::Raid1 => 2,
            Self::Raid10 => 4,
            Self::RaidZ1 => 3,
            Self::RaidZ2 => 4,
            Self::RaidZ3 => 5,
        }
    }
}

impl BtrfsRaid {
    /// Least number of disks in `disk-list` [verify `get_min_disks`].
    pub fn min_disks(self) -> usize {
        match self {
            Self::Raid0 => 1,
            Self::Raid1 => 2,
            Self::Raid10 => 4,
        }
    }
}

/// An address with its prefix length, `10.0.0.2/24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// `[network]`.
#[derive(Debug, Clone, PartialEq)]
pub enum Network {
    FromDhcp {
        pinning: Option<InterfacePinning>,
    },
    FromAnswer {
        cidr: Cidr,
        dns: IpAddr,
        gateway: IpAddr,
        /// udev property → glob; selects the management NIC. May be empty.
        filter: BTreeMap<String, String>,
        pinning: Option<InterfacePinning>,
    },
}

/// `[network.interface-name-pinning]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfacePinning {
    pub enabled: bool,
    /// Lower-case MAC → interface name.
    pub mapping: BTreeMap<String, String>,
}

/// `[disk-setup]`.
#[derive(Debug, Clone, PartialEq)]
pub struct DiskSetup {
    pub selection: DiskSelection,
    pub filesystem: FilesystemOptions,
}

/// `disk-list` XOR `filter`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiskSelection {
    List(Vec<String>),
    Filter {
        filter: BTreeMap<String, String>,
        filter_match: FilterMatch,
    },
}

/// Filesystem with the options that belong to it.
#[derive(Debug, Clone, PartialEq)]
pub enum FilesystemOptions {
    Ext4(LvmOptions),
    Xfs(LvmOptions),
    Zfs(ZfsOptions),
    Btrfs(BtrfsOptions),
}

/// `disk-setup.lvm.*` (sizes in GiB).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LvmOptions {
    pub hdsize: Option<f64>,
    pub swapsize: Option<f64>,
    pub maxroot: Option<f64>,
    pub maxvz: Option<f64>,
    pub minfree: Option<f64>,
}

/// `disk-setup.zfs.*`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ZfsOptions {
    pub raid: ZfsRaid,
    pub ashift: Option<u8>,
    /// MiB.
    pub arc_max: Option<u32>,
    pub checksum: Option<ZfsChecksum>,
    pub compress: Option<ZfsCompress>,
    pub copies: Option<u8>,
    /// GiB.
    pub hdsize: Option<f64>,
}

/// `disk-setup.btrfs.*`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BtrfsOptions {
    pub raid: BtrfsRaid,
    pub compress: Option<BtrfsCompress>,
    pub hdsize: Option<f64>,
}

/// `[first-boot]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FirstBoot {
    FromIso {
        ordering: FirstBootOrdering,
    },
    FromUrl {
        ordering: FirstBootOrdering,
        url: String,
        cert_fingerprint: Option<String>,
    },
}

/// `[post-installation-webhook]`.
#[derive(Clone, PartialEq, Eq)]
pub struct PostInstallWebhook {
    pub url: String,
    pub cert_fingerprint: Option<String>,
    pub auth_token: Option<String>,
}

impl fmt::Debug for PostInstallWebhook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostInstallWebhook")
            .field("url", &self.url)
            .field("cert_fingerprint", &self.cert_fingerprint)
            .field(
                "auth_token",
                &self.auth_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

// ---------------------------------------------------------------------------
// Validation.
// ---------------------------------------------------------------------------

/// Root password length bounds [types `ROOT_PASSWORD_SCHEMA`: 8..=64].
pub const ROOT_PASSWORD_MIN: usize = 8;
pub const ROOT_PASSWORD_MAX: usize = 64;
/// Linux `IFNAMSIZ - 1` [verify interface pinning].
pub const MAX_IFNAME_LEN: usize = 15;

/// Parses and validates an `answer.toml`; returns every problem found.
pub fn validate_answer(text: &str) -> Result<Answer, Vec<AnswerError>> {
    let raw: RawAnswer = toml::from_str(text).map_err(|e| vec![parse_error(text, &e)])?;
    let mut v = Validator::default();
    let answer = v.answer(raw);
    match answer {
        Some(a) if v.errors.is_empty() => Ok(a),
        _ => Err(v.errors),
    }
}

/// Turns a TOML/serde error into an [`AnswerError`] naming the key.
fn parse_error(text: &str, err: &toml::de::Error) -> AnswerError {
    let message = err
        .message()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    let line_no = err
        .span()
        .map(|s| text[..s.start.min(text.len())].matches('\n').count());
    let key = line_no
        .and_then(|n| key_at_line(text, n))
        .or_else(|| line_no.map(|n| format!("line {}", n + 1)))
        .unwrap_or_else(|| "answer.toml".to_string());
    let fix = if message.starts_with("unknown field") {
        "remove the key or correct its spelling (keys are kebab-case)"
    } else if message.starts_with("invalid type") || message.starts_with("invalid value") {
        "give the key a value of the expected type"
    } else if message.starts_with("duplicate") {
        "set the key only once (a kebab-case key and its snake_case alias count as the same key)"
    } else if message.starts_with("either a fully-qualified") {
        "write `fqdn = \"host.example.com\"` or `fqdn = { source = \"from-dhcp\", domain = \"example.com\" }`"
    } else {
        "correct the TOML syntax"
    };
    AnswerError::new(key, message, fix)
}

/// `section.key` for the key defined on `line` (0-based), if recognisable.
fn key_at_line(text: &str, line: usize) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let this = lines.get(line)?.trim();
    let header = |l: &str| -> Option<String> {
        let l = l.trim();
        if l.starts_with('[') && !l.starts_with("[[") {
            let end = l.find(']')?;
            Some(l[1..end].trim().to_string())
        } else {
            None
        }
    };
    if let Some(h) = header(this) {
        return Some(h);
    }
    let (k, _) = this.split_once('=')?;
    let k = k.trim().trim_matches('"');
    if k.is_empty() || k.contains(char::is_whitespace) {
        return None;
    }
    let section = lines[..line].iter().rev().find_map(|l| header(l));
    Some(match section {
        Some(s) => format!("{s}.{k}"),
        None => k.to_string(),
    })
}

#[derive(Default)]
struct Validator {
    errors: Vec<AnswerError>,
}

impl Validator {
    fn err(&mut self, key: impl Into<String>, problem: impl Into<String>, fix: impl Into<String>) {
        self.errors.push(AnswerError::new(key, problem, fix));
    }

    fn required<T>(&mut self, value: Option<T>, key: &str, fix: &str) -> Option<T> {
        if value.is_none() {
            self.err(key, "missing", fix);
        }
        value
    }

    fn answer(&mut self, raw: RawAnswer) -> Option<Answer> {
        let global = self.required(raw.global, "global", "add a `[global]` section");
        let network = self.required(
            raw.network,
            "network",
            "add a `[network]` section with `source = \"from-dhcp\"` or `\"from-answer\"`",
        );
        let disks = self.required(
            raw.disk_setup,
            "disk-setup",
            "add a `[disk-setup]` section with `filesystem` and `disk-list` or `filter`",
        );
        let global = global.and_then(|g| self.global(g));
        let network = network.and_then(|n| self.network(n));
        let disk_setup = disks.and_then(|d| self.disk_setup(d));
        let first_boot = match raw.first_boot {
            Some(fb) => Some(self.first_boot(fb)?),
            None => None,
        };
        let webhook = match raw.post_installation_webhook {
            Some(w) => Some(self.webhook(w)?),
            None => None,
        };
        Some(Answer {
            global: global?,
            network: network?,
            disk_setup: disk_setup?,
            first_boot,
            post_installation_webhook: webhook,
        })
    }

    fn enum_value<T>(
        &mut self,
        key: &str,
        value: &str,
        parse: impl Fn(&str) -> Option<T>,
        choices: String,
    ) -> Option<T> {
        let parsed = parse(value);
        if parsed.is_none() {
            self.err(
                key,
                format!("unknown value \"{value}\""),
                format!("use one of {choices}"),
            );
        }
        parsed
    }

    fn global(&mut self, g: RawGlobal) -> Option<Global> {
        let keyboard = self
            .required(
                g.keyboard,
                "global.keyboard",
                "set e.g. `keyboard = \"en-us\"`",
            )
            .and_then(|k| {
                self.enum_value(
                    "global.keyboard",
                    &k,
                    KeyboardLayout::parse,
                    KeyboardLayout::choices(),
                )
            });
        // [types COUNTRY_CODE_REGEX ^[a-z]{2}$]; the installer also checks
        // its ISO's locale list, which only exists on the ISO.
        let country = self
            .required(g.country, "global.country", "set e.g. `country = \"at\"`")
            .and_then(|c| {
                if c.len() == 2 && c.bytes().all(|b| b.is_ascii_lowercase()) {
                    Some(c)
                } else {
                    self.err(
                        "global.country",
                        format!("expected an ISO 3166-1 alpha-2 code in lower case, found \"{c}\""),
                        format!(
                            "use two lower-case letters, e.g. \"{}\"",
                            suggest_country(&c)
                        ),
                    );
                    None
                }
            });
        let fqdn = self
            .required(
                g.fqdn,
                "global.fqdn",
                "set `fqdn = \"host.example.com\"` or `fqdn.source = \"from-dhcp\"`",
            )
            .and_then(|f| self.fqdn(f));
        let mailto = self
            .required(
                g.mailto,
                "global.mailto",
                "set e.g. `mailto = \"root@example.com\"`",
            )
            .and_then(|m| {
                // [verify email_validate]
                if is_email(&m) {
                    Some(m)
                } else {
                    self.err(
                        "global.mailto",
                        format!("expected an e-mail address, found \"{m}\""),
                        "use an address of the form `user@example.com`",
                    );
                    None
                }
            });
        let timezone = self
            .required(
                g.timezone,
                "global.timezone",
                "set e.g. `timezone = \"Europe/Vienna\"`",
            )
            .and_then(|t| {
                // [vigie] shape only; the installer checks its ISO's zone list.
                if is_timezone(&t) {
                    Some(t)
                } else {
                    self.err(
                        "global.timezone",
                        format!("expected a tz database name or \"UTC\", found \"{t}\""),
                        "use an Area/Location name such as \"Europe/Vienna\", or \"UTC\"",
                    );
                    None
                }
            });
        // [verify verify_email_and_root_password_settings] + [types 8..=64]
        let root_password = match (g.root_password, g.root_password_hashed) {
            (Some(_), Some(_)) => {
                self.err(
                    "global.root-password",
                    "`global.root-password` and `global.root-password-hashed` cannot be set at the same time",
                    "keep only one of them",
                );
                None
            }
            (None, None) => {
                self.err(
                    "global.root-password",
                    "one of `global.root-password` or `global.root-password-hashed` must be set",
                    "set `root-password` (8 to 64 characters) or `root-password-hashed` (output of `mkpasswd`)",
                );
                None
            }
            (Some(p), None) => {
                let n = p.chars().count();
                if !(ROOT_PASSWORD_MIN..=ROOT_PASSWORD_MAX).contains(&n) {
                    self.err(
                        "global.root-password",
                        format!("expected {ROOT_PASSWORD_MIN} to {ROOT_PASSWORD_MAX} characters, found {n}"),
                        "choose a password of 8 to 64 characters",
                    );
                    None
                } else {
                    Some(RootPassword::Plain(p))
                }
            }
            (None, Some(h)) => {
                // [vigie] crypt(3) shape: `$id$...`.
                if h.starts_with('$') && h.len() > 3 && !h.contains(char::is_whitespace) {
                    Some(RootPassword::Hashed(h))
                } else {
                    self.err(
                        "global.root-password-hashed",
                        "expected a crypt(3) hash starting with `$` (e.g. `$y$...`)",
                        "generate it with `mkpasswd` (yescrypt or sha-512)",
                    );
                    None
                }
            }
        };
        let reboot_mode = match g.reboot_mode {
            None => Some(RebootMode::Reboot),
            Some(m) => match m.as_str() {
                "reboot" => Some(RebootMode::Reboot),
                "power-off" => Some(RebootMode::PowerOff),
                _ => {
                    self.err(
                        "global.reboot-mode",
                        format!("unknown value \"{m}\""),
                        "use one of \"reboot\", \"power-off\"",
                    );
                    None
                }
            },
        };
        let keys = g.root_ssh_keys.unwrap_or_default();
        let mut keys_ok = true;
        for (i, k) in keys.iter().enumerate() {
            // [vigie] the installer copies keys verbatim; a bad one locks root out.
            if !is_ssh_public_key(k) {
                keys_ok = false;
                self.err(
                    format!("global.root-ssh-keys[{i}]"),
                    "expected an OpenSSH public key (`ssh-ed25519 AAAA... comment`)",
                    "paste one line of a `.pub` file",
                );
            }
        }
        Some(Global {
            keyboard: keyboard?,
            country: country?,
            fqdn: fqdn?,
            mailto: mailto?,
            timezone: timezone?,
            root_password: root_password?,
            reboot_on_error: g.reboot_on_error.unwrap_or(false),
            reboot_mode: reboot_mode?,
            root_ssh_keys: if keys_ok { keys } else { return None },
        })
    }

    fn fqdn(&mut self, f: RawFqdn) -> Option<FqdnConfig> {
        match f {
            RawFqdn::Simple(name) => match check_fqdn(&name) {
                Ok(()) => Some(FqdnConfig::Fixed(name)),
                Err(problem) => {
                    self.err(
                        "global.fqdn",
                        problem,
                        "use a host name with its domain, e.g. \"pve1.example.com\", or `fqdn.source = \"from-dhcp\"`",
                    );
                    None
                }
            },
            RawFqdn::Extended(ext) => {
                let source_ok = match ext.source.as_deref() {
                    // [types] `source` defaults to from-dhcp
                    None | Some("from-dhcp") => true,
                    Some(other) => {
                        self.err(
                            "global.fqdn.source",
                            format!("unknown value \"{other}\""),
                            "use \"from-dhcp\" (or give `fqdn` as a plain string)",
                        );
                        false
                    }
                };
                // [types deserialize_non_empty_string_maybe]: "" means unset.
                let domain = ext.domain.filter(|d| !d.is_empty());
                if let Some(d) = &domain
                    && let Err(problem) = check_domain(d)
                {
                    self.err(
                        "global.fqdn.domain",
                        problem,
                        "use a domain name such as \"example.com\"",
                    );
                    return None;
                }
                source_ok.then_some(FqdnConfig::FromDhcp { domain })
            }
        }
    }

    fn network(&mut self, n: RawNetwork) -> Option<Network> {
        let pinning = match n.interface_name_pinning {
            Some(p) => Some(self.pinning(p)?),
            None => None,
        };
        let source = self.required(
            n.source,
            "network.source",
            "set `source = \"from-dhcp\"` or `source = \"from-answer\"`",
        )?;
        match source.as_str() {
            "from-dhcp" => {
                // [types NetworkConfigFromDhcp has no such fields]
                let mut ok = true;
                for (key, present) in [
                    ("cidr", n.cidr.is_some()),
                    ("dns", n.dns.is_some()),
                    ("gateway", n.gateway.is_some()),
                    ("filter", n.filter.is_some()),
                ] {
                    if present {
                        ok = false;
                        self.err(
                            format!("network.{key}"),
                            "not allowed with `source = \"from-dhcp\"`",
                            format!("remove `{key}`, or use `source = \"from-answer\"` for a static configuration"),
                        );
                    }
                }
                ok.then_some(Network::FromDhcp { pinning })
            }
            "from-answer" => {
                let fix_cidr = "set `cidr = \"192.0.2.10/24\"` (address and prefix length)";
                let cidr = self
                    .required(n.cidr, "network.cidr", fix_cidr)
                    .and_then(|c| match parse_cidr(&c) {
                        Ok(c) => Some(c),
                        Err(problem) => {
                            self.err("network.cidr", problem, fix_cidr);
                            None
                        }
                    });
                let dns = self
                    .required(n.dns, "network.dns", "set `dns = \"192.0.2.1\"`")
                    .and_then(|d| self.ip("network.dns", &d));
                let gateway = self
                    .required(
                        n.gateway,
                        "network.gateway",
                        "set `gateway = \"192.0.2.1\"`",
                    )
                    .and_then(|d| self.ip("network.gateway", &d));
                if let (Some(c), Some(g)) = (cidr, gateway)
                    && c.addr.is_ipv4() != g.is_ipv4()
                {
                    // [vigie] the installer would write an unusable route.
                    self.err(
                        "network.gateway",
                        format!("address family differs from `network.cidr` ({c})"),
                        "use a gateway of the same IP version as the address",
                    );
                    return None;
                }
                Some(Network::FromAnswer {
                    cidr: cidr?,
                    dns: dns?,
                    gateway: gateway?,
                    filter: n.filter.unwrap_or_default(),
                    pinning,
                })
            }
            other => {
                self.err(
                    "network.source",
                    format!("unknown value \"{other}\""),
                    "use one of \"from-dhcp\", \"from-answer\"",
                );
                None
            }
        }
    }

    fn ip(&mut self, key: &str, text: &str) -> Option<IpAddr> {
        match text.parse::<IpAddr>() {
            Ok(ip) => Some(ip),
            Err(_) => {
                self.err(
                    key,
                    format!("expected an IP address, found \"{text}\""),
                    "write a bare address such as \"192.0.2.1\" (no prefix length)",
                );
                None
            }
        }
    }

    fn pinning(&mut self, p: RawPinning) -> Option<InterfacePinning> {
        let enabled = self.required(
            p.enabled,
            "network.interface-name-pinning.enabled",
            "set `enabled = true` or `false`",
        );
        let mut mapping = BTreeMap::new();
        let mut names = BTreeSet::new();
        let mut ok = true;
        for (mac, name) in p.mapping {
            let key = format!("network.interface-name-pinning.mapping.\"{mac}\"");
            if !is_mac(&mac) {
                ok = false;
                self.err(
                    &key,
                    format!("expected a MAC address, found \"{mac}\""),
                    "use the form \"aa:bb:cc:dd:ee:ff\"",
                );
                continue;
            }
            // [verify pinning verify()]: the installer's message, verbatim.
            if name.chars().count() > MAX_IFNAME_LEN {
                ok = false;
                self.err(
                    &key,
                    format!("interface name '{name}' for '{mac}' cannot be longer than {MAX_IFNAME_LEN} characters"),
                    "choose a name of at most 15 characters",
                );
                continue;
            }
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                ok = false;
                self.err(
                    &key,
                    format!("invalid interface name \"{name}\""),
                    "use letters, digits, `-` and `_` only",
                );
                continue;
            }
            if !names.insert(name.clone()) {
                ok = false;
                self.err(
                    &key,
                    format!("interface name \"{name}\" is used for two MAC addresses"),
                    "give each interface its own name",
                );
                continue;
            }
            mapping.insert(mac.to_ascii_lowercase(), name);
        }
        if !ok {
            return None;
        }
        Some(InterfacePinning {
            enabled: enabled?,
            mapping,
        })
    }

    fn disk_setup(&mut self, d: RawDiskSetup) -> Option<DiskSetup> {
        let fs = self
            .required(
                d.filesystem.clone(),
                "disk-setup.filesystem",
                "set `filesystem` to one of \"ext4\", \"xfs\", \"zfs\", \"btrfs\"",
            )
            .and_then(|f| {
                self.enum_value(
                    "disk-setup.filesystem",
                    &f,
                    Filesystem::parse,
                    Filesystem::choices(),
                )
            });
        // [types disk_selection]
        let list = d.disk_list.clone().unwrap_or_default();
        let filter = d.filter.clone().unwrap_or_default();
        let filter_match = match &d.filter_match {
            None => Some(FilterMatch::Any),
            Some(m) => self.enum_value(
                "disk-setup.filter-match",
                m,
                FilterMatch::parse,
                FilterMatch::choices(),
            ),
        };
        let selection = match (list.is_empty(), filter.is_empty()) {
            (true, true) => {
                self.err(
                    "disk-setup.disk-list",
                    "need either 'disk-list' or 'filter' set",
                    "list the disks (`disk-list = [\"sda\"]`) or select them by udev property (`filter.ID_SERIAL = \"*MZ7KM*\"`)",
                );
                None
            }
            (false, false) => {
                self.err(
                    "disk-setup.disk-list",
                    "cannot use both, 'disk-list' and 'filter'",
                    "keep either `disk-list` or `filter`",
                );
                None
            }
            (false, true) => {
                // [verify verify_disks_settings] duplicates
                let mut seen = BTreeSet::new();
                let mut ok = true;
                for disk in &list {
                    if !seen.insert(disk) {
                        ok = false;
                        self.err(
                            "disk-setup.disk-list",
                            format!("list of disks contains duplicate device {disk}"),
                            "list each disk once",
                        );
                    }
                }
                ok.then(|| DiskSelection::List(list.clone()))
            }
            (true, false) => filter_match.map(|m| DiskSelection::Filter {
                filter: filter.clone(),
                filter_match: m,
            }),
        };
        let fs_options = fs.and_then(|fs| self.filesystem_details(fs, &d, &list));
        Some(DiskSetup {
            selection: selection?,
            filesystem: fs_options?,
        })
    }

    /// [types filesystem_details] + [verify verify_disks_settings].
    fn filesystem_details(
        &mut self,
        fs: Filesystem,
        d: &RawDiskSetup,
        list: &[String],
    ) -> Option<FilesystemOptions> {
        let foreign = |name: &str, present: bool| present.then(|| name.to_string());
        match fs {
            Filesystem::Ext4 | Filesystem::Xfs => {
                let mut ok = true;
                for key in [
                    foreign("zfs", d.zfs.is_some()),
                    foreign("btrfs", d.btrfs.is_some()),
                ]
                .into_iter()
                .flatten()
                {
                    ok = false;
                    self.err(
                        format!("disk-setup.{key}"),
                        format!("make sure only 'lvm' options are set (filesystem is {fs})"),
                        format!("remove the `{key}.*` options or change `filesystem`"),
                    );
                }
                if list.len() > 1 {
                    ok = false;
                    self.err(
                        "disk-setup.disk-list",
                        format!("{fs} allows only one disk, found {}", list.len()),
                        "list a single disk, or use zfs or btrfs with a raid level for several disks",
                    );
                }
                let lvm = self.lvm(d.lvm.as_ref());
                let lvm = if ok { lvm? } else { return None };
                Some(match fs {
                    Filesystem::Ext4 => FilesystemOptions::Ext4(lvm),
                    _ => FilesystemOptions::Xfs(lvm),
                })
            }
            Filesystem::Zfs => {
                let mut ok = true;
                for key in [
                    foreign("lvm", d.lvm.is_some()),
                    foreign("btrfs", d.btrfs.is_some()),
                ]
                .into_iter()
                .flatten()
                {
                    ok = false;
                    self.err(
                        format!("disk-setup.{key}"),
                        "make sure only 'zfs' options are set",
                        format!("remove the `{key}.*` options or change `filesystem`"),
                    );
                }
                let Some(z) = d.zfs.as_ref().filter(|z| z.raid.is_some()) else {
                    self.err(
                        "disk-setup.zfs.raid",
                        "ZFS raid level 'zfs.raid' must be set",
                        format!("add `zfs.raid = ...` with one of {}", ZfsRaid::choices()),
                    );
                    return None;
                };
                let zfs = self.zfs(z, list.len());
                if ok {
                    zfs.map(FilesystemOptions::Zfs)
                } else {
                    None
                }
            }
            Filesystem::Btrfs => {
                let mut ok = true;
                for key in [
                    foreign("zfs", d.zfs.is_some()),
                    foreign("lvm", d.lvm.is_some()),
                ]
                .into_iter()
                .flatten()
                {
                    ok = false;
                    self.err(
                        format!("disk-setup.{key}"),
                        "make sure only 'btrfs' options are set",
                        format!("remove the `{key}.*` options or change `filesystem`"),
                    );
                }
                let Some(b) = d.btrfs.as_ref().filter(|b| b.raid.is_some()) else {
                    self.err(
                        "disk-setup.btrfs.raid",
                        "Btrfs raid level 'btrfs.raid' must be set",
                        format!(
                            "add `btrfs.raid = ...` with one of {}",
                            BtrfsRaid::choices()
                        ),
                    );
                    return None;
                };
                let btrfs = self.btrfs(b, list.len());
                if ok {
                    btrfs.map(FilesystemOptions::Btrfs)
                } else {
                    None
                }
            }
        }
    }

    fn number_at_least(&mut self, key: &str, value: Option<f64>, min: f64) -> Option<Option<f64>> {
        match value {
            Some(v) if !v.is_finite() || v < min => {
                self.err(
                    key,
                    format!("expected a number of at least {min}, found {v}"),
                    format!("use a size in GiB of at least {min}, or remove the key"),
                );
                None
            }
            other => Some(other),
        }
    }

    fn int_in(
        &mut self,
        key: &str,
        value: Option<i64>,
        min: i64,
        max: i64,
        unit: &str,
    ) -> Option<Option<i64>> {
        match value {
            Some(v) if v < min || v > max => {
                let range = if max == i64::from(u32::MAX) {
                    format!("at least {min}")
                } else {
                    format!("{min} to {max}")
                };
                self.err(
                    key,
                    format!("expected {range}{unit}, found {v}"),
                    format!("use a value of {range}{unit}, or remove the key"),
                );
                None
            }
            other => Some(other),
        }
    }

    fn lvm(&mut self, l: Option<&RawLvm>) -> Option<LvmOptions> {
        let Some(l) = l else {
            return Some(LvmOptions::default());
        };
        // [types LvmOptions api schema minimums]
        let hdsize = self.number_at_least("disk-setup.lvm.hdsize", l.hdsize, 2.0);
        let swapsize = self.number_at_least("disk-setup.lvm.swapsize", l.swapsize, 0.0);
        let maxroot = self.number_at_least("disk-setup.lvm.maxroot", l.maxroot, 2.0);
        let maxvz = self.number_at_least("disk-setup.lvm.maxvz", l.maxvz, 0.0);
        let minfree = self.number_at_least("disk-setup.lvm.minfree", l.minfree, 0.0);
        let opts = LvmOptions {
            hdsize: hdsize?,
            swapsize: swapsize?,
            maxroot: maxroot?,
            maxvz: maxvz?,
            minfree: minfree?,
        };
        // [verify check_swapsize]: the installer's message, verbatim.
        if let (Some(swap), Some(hd)) = (opts.swapsize, opts.hdsize)
            && swap > hd / 8.0
        {
            self.err(
                "disk-setup.lvm.swapsize",
                format!(
                    "Swap size {swap} GiB cannot be greater than {} GiB (hard disk size / 8)",
                    hd / 8.0
                ),
                "lower `lvm.swapsize` or raise `lvm.hdsize`",
            );
            return None;
        }
        Some(opts)
    }

    fn zfs(&mut self, z: &RawZfs, disks: usize) -> Option<ZfsOptions> {
        let raid = z.raid.as_deref().and_then(|r| {
            self.enum_value(
                "disk-setup.zfs.raid",
                r,
                |t| {
                    ZfsRaid::parse(&t.to_ascii_uppercase())
                        .filter(|_| t == t.to_ascii_uppercase() || t == t.to_ascii_lowercase())
                },
                ZfsRaid::choices(),
            )
        });
        // [types ZfsOptions api schema]: ashift 9..=16, arc-max >= 64 MiB, copies 1..=3, hdsize >= 2
        let ashift = self.int_in("disk-setup.zfs.ashift", z.ashift, 9, 16, "");
        let arc_max = self.int_in(
            "disk-setup.zfs.arc-max",
            z.arc_max,
            64,
            i64::from(u32::MAX),
            " MiB",
        );
        let copies = self.int_in("disk-setup.zfs.copies", z.copies, 1, 3, "");
        let hdsize = self.number_at_least("disk-setup.zfs.hdsize", z.hdsize, 2.0);
        let checksum = match &z.checksum {
            Some(c) => Some(Some(self.enum_value(
                "disk-setup.zfs.checksum",
                c,
                ZfsChecksum::parse,
                ZfsChecksum::choices(),
            )?)),
            None => Some(None),
        };
        let compress = match &z.compress {
            Some(c) => Some(Some(self.enum_value(
                "disk-setup.zfs.compress",
                c,
                ZfsCompress::parse,
                ZfsCompress::choices(),
            )?)),
            None => Some(None),
        };
        let raid = raid?;
        if disks > 0 && disks < raid.min_disks() {
            // [verify verify_disks_settings]: installer's wording.
            self.err(
                "disk-setup.disk-list",
                format!(
                    "ZFS {raid} needs at least {} disks, got {disks}",
                    raid.min_disks()
                ),
                "add disks to `disk-list` or choose a raid level needing fewer",
            );
            return None;
        }
        Some(ZfsOptions {
            raid,
            ashift: ashift?.and_then(|v| u8::try_from(v).ok()),
            arc_max: arc_max?.and_then(|v| u32::try_from(v).ok()),
            checksum: checksum?,
            compress: compress?,
            copies: copies?.and_then(|v| u8::try_from(v).ok()),
            hdsize: hdsize?,
        })
    }

    fn btrfs(&mut self, b: &RawBtrfs, disks: usize) -> Option<BtrfsOptions> {
        let raid = b.raid.as_deref().and_then(|r| {
            self.enum_value(
                "disk-setup.btrfs.raid",
                r,
                |t| {
                    BtrfsRaid::parse(&t.to_ascii_uppercase())
                        .filter(|_| t == t.to_ascii_uppercase() || t == t.to_ascii_lowercase())
                },
                BtrfsRaid::choices(),
            )
        });
        let hdsize = self.number_at_least("disk-setup.btrfs.hdsize", b.hdsize, 2.0);
        let compress = match &b.compress {
            Some(c) => Some(Some(self.enum_value(
                "disk-setup.btrfs.compress",
                c,
                BtrfsCompress::parse,
                BtrfsCompress::choices(),
            )?)),
            None => Some(None),
        };
        let raid = raid?;
        if disks > 0 && disks < raid.min_disks() {
            self.err(
                "disk-setup.disk-list",
                format!(
                    "Btrfs {raid} needs at least {} disks, got {disks}",
                    raid.min_disks()
                ),
                "add disks to `disk-list` or choose a raid level needing fewer",
            );
            return None;
        }
        Some(BtrfsOptions {
            raid,
            compress: compress?,
            hdsize: hdsize?,
        })
    }

    fn first_boot(&mut self, f: RawFirstBoot) -> Option<FirstBoot> {
        let source = self
            .required(
                f.source,
                "first-boot.source",
                "set `source = \"from-iso\"` or `source = \"from-url\"`",
            )
            .and_then(|s| {
                self.enum_value(
                    "first-boot.source",
                    &s,
                    FirstBootSource::parse,
                    FirstBootSource::choices(),
                )
            });
        let ordering = match &f.ordering {
            // [types] default fully-up
            None => Some(FirstBootOrdering::FullyUp),
            Some(o) => self.enum_value(
                "first-boot.ordering",
                o,
                FirstBootOrdering::parse,
                FirstBootOrdering::choices(),
            ),
        };
        let fp = match &f.cert_fingerprint {
            Some(fp) => Some(Some(self.fingerprint("first-boot.cert-fingerprint", fp)?)),
            None => Some(None),
        };
        match source? {
            FirstBootSource::FromIso => {
                // [vigie] the installer ignores these for from-iso; say so.
                let mut ok = true;
                for (key, present) in [
                    ("url", f.url.is_some()),
                    ("cert-fingerprint", f.cert_fingerprint.is_some()),
                ] {
                    if present {
                        ok = false;
                        self.err(
                            format!("first-boot.{key}"),
                            "only used with `source = \"from-url\"`",
                            format!("remove `{key}`, or use `source = \"from-url\"`"),
                        );
                    }
                }
                let ordering = ordering?;
                ok.then_some(FirstBoot::FromIso { ordering })
            }
            FirstBootSource::FromUrl => {
                // [verify verify_first_boot_settings]
                let Some(url) = f.url else {
                    self.err(
                        "first-boot.url",
                        "first-boot executable source set to URL, but none specified",
                        "set `url = \"https://...\"`, or use `source = \"from-iso\"`",
                    );
                    return None;
                };
                let fp = fp?;
                let url = self.url("first-boot.url", &url, fp.is_some())?;
                Some(FirstBoot::FromUrl {
                    ordering: ordering?,
                    url,
                    cert_fingerprint: fp,
                })
            }
        }
    }

    fn webhook(&mut self, w: RawWebhook) -> Option<PostInstallWebhook> {
        let fp = match &w.cert_fingerprint {
            Some(fp) => self
                .fingerprint("post-installation-webhook.cert-fingerprint", fp)
                .map(Some),
            None => Some(None),
        };
        let url = self
            .required(
                w.url,
                "post-installation-webhook.url",
                "set `url = \"https://vigie.example.org:7700/api/v1/pve/post-install\"`",
            )
            .and_then(|u| {
                self.url(
                    "post-installation-webhook.url",
                    &u,
                    matches!(fp, Some(Some(_))),
                )
            });
        let token = match w.auth_token {
            Some(t) if t.is_empty() || t.chars().any(char::is_control) => {
                self.err(
                    "post-installation-webhook.auth-token",
                    "expected a non-empty token without control characters",
                    "paste the token Vigie generated for this host, or remove the key",
                );
                None
            }
            other => Some(other),
        };
        Some(PostInstallWebhook {
            url: url?,
            cert_fingerprint: fp?,
            auth_token: token?,
        })
    }

    /// [vigie] http(s) URL with a host; https when a fingerprint pins it.
    fn url(&mut self, key: &str, url: &str, pinned: bool) -> Option<String> {
        let rest = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"));
        let host_ok = rest.is_some_and(|r| {
            let host = r.split(['/', '?', '#']).next().unwrap_or("");
            !host.is_empty() && !host.contains(char::is_whitespace)
        });
        if !host_ok || url.contains(char::is_whitespace) {
            self.err(
                key,
                format!("expected an http(s) URL, found \"{url}\""),
                "use a URL of the form \"https://host[:port]/path\"",
            );
            return None;
        }
        if pinned && !url.starts_with("https://") {
            self.err(
                key,
                "a certificate fingerprint is set but the URL is not https",
                "use an https:// URL, or remove the fingerprint",
            );
            return None;
        }
        Some(url.to_string())
    }

    /// [vigie] SHA-256 fingerprint: 32 bytes in hex, colons optional.
    fn fingerprint(&mut self, key: &str, fp: &str) -> Option<String> {
        let hex: String = fp.chars().filter(|c| *c != ':').collect();
        let colons_ok = !fp.contains(':') || fp.split(':').all(|p| p.len() == 2);
        if hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit()) && colons_ok {
            Some(fp.to_string())
        } else {
            self.err(
                key,
                "expected a SHA-256 fingerprint (32 bytes in hex, e.g. \"AB:CD:...\")",
                "print it with `openssl x509 -in cert.pem -noout -fingerprint -sha256`",
            );
            None
        }
    }
}

// ---------------------------------------------------------------------------
// Small syntax checks.
// ---------------------------------------------------------------------------

fn is_label(l: &str) -> bool {
    !l.is_empty()
        && l.len() <= 63
        && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !l.starts_with('-')
        && !l.ends_with('-')
}

/// [types Fqdn]: host name plus at least one domain label.
fn check_fqdn(name: &str) -> Result<(), String> {
    if name.len() > 253 {
        return Err(format!(
            "expected at most 253 characters, found {}",
            name.len()
        ));
    }
    let labels: Vec<&str> = name.split('.').collect();
    if labels.len() < 2 {
        return Err(format!(
            "expected a fully qualified domain name, found host name only \"{name}\""
        ));
    }
    if let Some(bad) = labels.iter().find(|l| !is_label(l)) {
        return Err(format!("invalid label \"{bad}\" in \"{name}\""));
    }
    if labels[0].bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "the host name \"{}\" must not be purely numeric",
            labels[0]
        ));
    }
    Ok(())
}

fn check_domain(d: &str) -> Result<(), String> {
    if d.len() > 253 || !d.split('.').all(is_label) {
        return Err(format!("invalid domain name \"{d}\""));
    }
    Ok(())
}

fn is_email(m: &str) -> bool {
    let Some((local, domain)) = m.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.is_empty()
        && !domain.contains('@')
        && !m.contains(char::is_whitespace)
        && domain.split('.').all(is_label)
}

fn is_timezone(t: &str) -> bool {
    if t == "UTC" {
        return true;
    }
    t.contains('/')
        && t.split('/').all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'+'))
        })
}

fn suggest_country(c: &str) -> String {
    let lower = c.to_ascii_lowercase();
    if lower.len() == 2 && lower.bytes().all(|b| b.is_ascii_lowercase()) {
        lower
    } else {
        "at".to_string()
    }
}

fn is_mac(mac: &str) -> bool {
    let parts: Vec<&str> = mac.split(':').collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn is_ssh_public_key(k: &str) -> bool {
    let mut parts = k.split_whitespace();
    let (Some(kind), Some(blob)) = (parts.next(), parts.next()) else {
        return false;
    };
    let kind_ok = matches!(kind, "ssh-ed25519" | "ssh-rsa" | "ssh-dss")
        || kind.starts_with("ecdsa-sha2-")
        || kind.starts_with("sk-");
    kind_ok
        && blob.starts_with("AAAA")
        && blob
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
}

/// `a.b.c.d/n` or `v6/n`. The address must not be the network address
/// (except /31 and /32) [installer fixtures `ipv4_and_subnet_*`].
pub(crate) fn parse_cidr(text: &str) -> Result<Cidr, String> {
    let Some((addr, prefix)) = text.split_once('/') else {
        return Err(format!("expected address/prefix, found \"{text}\""));
    };
    let addr: IpAddr = addr
        .parse()
        .map_err(|_| format!("invalid IP address \"{addr}\""))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix: u8 = prefix
        .parse()
        .ok()
        .filter(|p| *p <= max)
        .ok_or_else(|| format!("invalid prefix length \"{prefix}\" (expected 0 to {max})"))?;
    if let IpAddr::V4(v4) = addr
        && prefix < 31
    {
        let host_mask = u32::MAX >> prefix;
        if u32::from(v4) & host_mask == 0 {
            return Err(format!("{v4} is the network address of {text}"));
        }
    }
    Ok(Cidr { addr, prefix })
}

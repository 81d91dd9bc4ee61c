//! Renders `.tf.json` workspaces for the bpg/proxmox provider.
//!
//! Resource choice: VMs are `proxmox_virtual_environment_vm` with a `clone {}` block. It is
//! the provider's stable, production VM resource (SDK-based) and the form most users and
//! examples use; `proxmox_cloned_vm` is newer (framework-based) and still settling
//! (`shared/design/facts.md`, "Terraform bpg/proxmox", provider v0.111.1). The hand-written
//! module in `iac/terraform/modules/vm-from-template/` uses the same resource, so a workspace
//! rendered here and one written by hand look alike.
//!
//! The output is canonical JSON (keys sorted, two-space indentation, trailing newline), so
//! it can be compared byte for byte with golden files and re-rendering an unchanged spec
//! never makes Terraform see a change of file.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::error::{IacError, Result};

/// The bpg/proxmox provider version the renderer targets.
pub const BPG_PROVIDER_VERSION: &str = "~> 0.111";

/// Name of the Terraform variable holding the API token (marked sensitive). Pass its value
/// as `TF_VAR_proxmox_api_token` with [`EnvVar::secret`](crate::EnvVar) set.
pub const API_TOKEN_VARIABLE: &str = "proxmox_api_token";

/// The provider block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderSpec {
    /// `https://pve.example.net:8006/` (without `/api2/json`).
    pub endpoint: String,
    /// Skip TLS verification (self-signed hosts without a trusted CA).
    pub insecure: bool,
    /// Minimum TLS version (`1.2` or `1.3`; the provider's default is `1.3`).
    pub min_tls: Option<String>,
}

/// IPv4 configuration of the first interface, through cloud-init.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "mode")]
pub enum Ipv4Config {
    /// DHCP.
    Dhcp,
    /// Static address in CIDR form, and an optional gateway.
    Static {
        /// `192.0.2.10/24`.
        address: String,
        /// `192.0.2.1`.
        gateway: Option<String>,
    },
}

/// Cloud-init settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloudInit {
    /// User created by cloud-init.
    pub username: String,
    /// SSH public keys of that user.
    pub ssh_keys: Vec<String>,
    /// IPv4 of the first interface.
    pub ipv4: Ipv4Config,
    /// DNS servers (empty: inherit the host's).
    pub dns_servers: Vec<String>,
    /// Datastore of the cloud-init drive (None: the provider's default).
    pub datastore_id: Option<String>,
}

/// One VM cloned from a template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmSpec {
    /// Proxmox node.
    pub node: String,
    /// VM id.
    pub vmid: u32,
    /// VM name (a DNS label).
    pub name: String,
    /// VM id of the template to clone.
    pub template_vmid: u32,
    /// Full clone (true) or linked clone.
    pub full_clone: bool,
    /// vCPU cores per socket.
    pub cores: u32,
    /// Sockets.
    pub sockets: u32,
    /// Memory in MiB.
    pub memory_mib: u32,
    /// Size of the boot disk (`scsi0`) in GiB; the clone's disk is grown to it.
    pub disk_gib: u32,
    /// Datastore of the boot disk.
    pub disk_datastore: String,
    /// Bridge of the first network device.
    pub bridge: String,
    /// VLAN tag of the first network device.
    pub vlan: Option<u16>,
    /// Cloud-init settings (None: leave the template's).
    pub cloud_init: Option<CloudInit>,
    /// Proxmox tags.
    pub tags: Vec<String>,
    /// Enable the QEMU guest agent option.
    pub agent: bool,
    /// Start the VM after creation.
    pub started: bool,
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn no_template(what: &'static str, s: &str) -> Result<()> {
    // Values are literals: a `${` or `%{` would be evaluated by Terraform.
    if s.contains("${") || s.contains("%{") {
        return Err(IacError::invalid(
            what,
            format!("{s:?} contains a template sequence"),
        ));
    }
    if s.chars().any(char::is_control) {
        return Err(IacError::invalid(
            what,
            format!("{s:?} contains control characters"),
        ));
    }
    Ok(())
}

impl VmSpec {
    /// Checks the values Proxmox and the provider would refuse later, with clearer errors.
    pub fn validate(&self) -> Result<()> {
        if !(100..=999_999_999).contains(&self.vmid) {
            return Err(IacError::invalid(
                "vmid",
                format!("{} is outside 100..=999999999", self.vmid),
            ));
        }
        if !(100..=999_999_999).contains(&self.template_vmid) || self.template_vmid == self.vmid {
            return Err(IacError::invalid(
                "template vmid",
                format!(
                    "{} (must be a valid vmid other than the VM's)",
                    self.template_vmid
                ),
            ));
        }
        if !is_dns_label(&self.name) {
            return Err(IacError::invalid(
                "VM name",
                format!("{:?} is not a DNS label", self.name),
            ));
        }
        if !is_dns_label(&self.node) {
            return Err(IacError::invalid(
                "node",
                format!("{:?} is not a node name", self.node),
            ));
        }
        if self.cores == 0 || self.sockets == 0 {
            return Err(IacError::invalid(
                "cpu",
                "cores and sockets must be at least 1",
            ));
        }
        if self.memory_mib < 16 {
            return Err(IacError::invalid("memory", "at least 16 MiB"));
        }
        if self.disk_gib == 0 {
            return Err(IacError::invalid("disk", "size must be at least 1 GiB"));
        }
        if let Some(v) = self.vlan
            && !(1..=4094).contains(&v)
        {
            return Err(IacError::invalid(
                "vlan",
                format!("{v} is outside 1..=4094"),
            ));
        }
        for (what, s) in [
            ("disk datastore", &self.disk_datastore),
            ("bridge", &self.bridge),
        ] {
            if s.is_empty() {
                return Err(IacError::invalid(what, "empty"));
            }
            no_template(what, s)?;
        }
        for t in &self.tags {
            if t.is_empty()
                || !t
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'+'))
            {
                return Err(IacError::invalid("tag", format!("{t:?}")));
            }
        }
        if let Some(ci) = &self.cloud_init {
            no_template("cloud-init user", &ci.username)?;
            for k in &ci.ssh_keys {
                no_template("ssh key", k)?;
            }
            for d in &ci.dns_servers {
                no_template("dns server", d)?;
            }
            if let Ipv4Config::Static { address, gateway } = &ci.ipv4 {
                if !address.contains('/') {
                    return Err(IacError::invalid(
                        "ipv4 address",
                        format!("{address:?} needs a prefix length (CIDR)"),
                    ));
                }
                no_template("ipv4 address", address)?;
                if let Some(g) = gateway {
                    no_template("ipv4 gateway", g)?;
                }
            }
        }
        Ok(())
    }

    /// The Terraform resource name: `vm_<vmid>` (stable even if the VM is renamed).
    pub fn resource_name(&self) -> String {
        format!("vm_{}", self.vmid)
    }

    fn to_resource(&self) -> Value {
        let mut r = Map::new();
        r.insert("node_name".into(), json!(self.node));
        r.insert("vm_id".into(), json!(self.vmid));
        r.insert("name".into(), json!(self.name));
        r.insert("tags".into(), json!(self.tags));
        r.insert("started".into(), json!(self.started));
        r.insert(
            "clone".into(),
            json!({"vm_id": self.template_vmid, "full": self.full_clone}),
        );
        r.insert(
            "cpu".into(),
            json!({"cores": self.cores, "sockets": self.sockets}),
        );
        r.insert("memory".into(), json!({"dedicated": self.memory_mib}));
        r.insert(
            "disk".into(),
            json!([{
                "datastore_id": self.disk_datastore,
                "interface": "scsi0",
                "size": self.disk_gib,
            }]),
        );
        let mut nic = Map::new();
        nic.insert("bridge".into(), json!(self.bridge));
        nic.insert("model".into(), json!("virtio"));
        if let Some(v) = self.vlan {
            nic.insert("vlan_id".into(), json!(v));
        }
        r.insert("network_device".into(), json!([nic]));
        r.insert("agent".into(), json!({"enabled": self.agent}));
        r.insert("operating_system".into(), json!({"type": "l26"}));
        if let Some(ci) = &self.cloud_init {
            let mut init = Map::new();
            if let Some(ds) = &ci.datastore_id {
                init.insert("datastore_id".into(), json!(ds));
            }
            let ipv4 = match &ci.ipv4 {
                Ipv4Config::Dhcp => json!({"address": "dhcp"}),
                Ipv4Config::Static { address, gateway } => {
                    let mut m = Map::new();
                    m.insert("address".into(), json!(address));
                    if let Some(g) = gateway {
                        m.insert("gateway".into(), json!(g));
                    }
                    Value::Object(m)
                }
            };
            init.insert("ip_config".into(), json!([{"ipv4": ipv4}]));
            if !ci.dns_servers.is_empty() {
                init.insert("dns".into(), json!({"servers": ci.dns_servers}));
            }
            init.insert(
                "user_account".into(),
                json!({"username": ci.username, "keys": ci.ssh_keys}),
            );
            r.insert("initialization".into(), Value::Object(init));
        }
        Value::Object(r)
    }
}

/// Renders a workspace configuration (`main.tf.json`) for `vms` on the cluster of
/// `provider`: provider requirement, sensitive token variable, provider block, one
/// `proxmox_virtual_environment_vm` per VM and outputs (vm ids and IPv4 addresses).
pub fn render_workspace(provider: &ProviderSpec, vms: &[VmSpec]) -> Result<Value> {
    if !(provider.endpoint.starts_with("https://") || provider.endpoint.starts_with("http://"))
        || provider.endpoint.contains("/api2/")
    {
        return Err(IacError::invalid(
            "endpoint",
            format!(
                "{:?}: expected https://host:8006/ without /api2/json",
                provider.endpoint
            ),
        ));
    }
    no_template("endpoint", &provider.endpoint)?;
    if let Some(t) = &provider.min_tls
        && !matches!(t.as_str(), "1.0" | "1.1" | "1.2" | "1.3")
    {
        return Err(IacError::invalid("min_tls", format!("{t:?}")));
    }
    let mut seen = std::collections::BTreeSet::new();
    let mut resources = Map::new();
    let mut outputs = Map::new();
    for vm in vms {
        vm.validate()?;
        if !seen.insert(vm.vmid) {
            return Err(IacError::invalid(
                "vmid",
                format!("{} appears twice", vm.vmid),
            ));
        }
        let name = vm.resource_name();
        outputs.insert(
            format!("{name}_id"),
            json!({"value": format!("${{proxmox_virtual_environment_vm.{name}.vm_id}}")}),
        );
        outputs.insert(
            format!("{name}_ipv4_addresses"),
            json!({"value": format!("${{proxmox_virtual_environment_vm.{name}.ipv4_addresses}}")}),
        );
        resources.insert(name, vm.to_resource());
    }
    let mut prov = Map::new();
    prov.insert("endpoint".into(), json!(provider.endpoint));
    prov.insert(
        "api_token".into(),
        json!(format!("${{var.{API_TOKEN_VARIABLE}}}")),
    );
    prov.insert("insecure".into(), json!(provider.insecure));
    if let Some(t) = &provider.min_tls {
        prov.insert("min_tls".into(), json!(t));
    }
    let mut root = Map::new();
    root.insert(
        "//".into(),
        json!("Generated by Vigie (vigie-iac). Edits are overwritten on the next render."),
    );
    root.insert(
        "terraform".into(),
        json!({"required_providers": {"proxmox": {
            "source": "bpg/proxmox",
            "version": BPG_PROVIDER_VERSION,
        }}}),
    );
    root.insert(
        "variable".into(),
        json!({API_TOKEN_VARIABLE: {
            "type": "string",
            "sensitive": true,
            "description": "Proxmox API token, user@realm!tokenid=uuid",
        }}),
    );
    root.insert("provider".into(), json!({"proxmox": prov}));
    if !resources.is_empty() {
        root.insert(
            "resource".into(),
            json!({"proxmox_virtual_environment_vm": resources}),
        );
        root.insert("output".into(), Value::Object(outputs));
    }
    Ok(Value::Object(root))
}

/// Canonical JSON text: keys sorted at every level, two-space indentation, trailing newline.
/// Independent of serde_json's `preserve_order` feature.
pub fn canonical_json(v: &Value) -> String {
    let mut out = String::new();
    write_value(v, 0, &mut out);
    out.push('\n');
    out
}

fn write_value(v: &Value, indent: usize, out: &mut String) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push_str("{\n");
            for (i, k) in keys.iter().enumerate() {
                out.push_str(&"  ".repeat(indent + 1));
                out.push_str(&Value::String((*k).clone()).to_string());
                out.push_str(": ");
                if let Some(x) = m.get(*k) {
                    write_value(x, indent + 1, out);
                }
                if i + 1 < keys.len() {
                    out.push(',');
                }
                out.push('\n');
            }
            out.push_str(&"  ".repeat(indent));
            out.push('}');
        }
        Value::Array(a) if !a.is_empty() => {
            out.push_str("[\n");
            for (i, x) in a.iter().enumerate() {
                out.push_str(&"  ".repeat(indent + 1));
                write_value(x, indent + 1, out);
                if i + 1 < a.len() {
                    out.push(',');
                }
                out.push('\n');
            }
            out.push_str(&"  ".repeat(indent));
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

//! Contract and scenario tests of vigie-pve against the Proxmox VE API schema.
//!
//! The schema is `apidata.json` (pve-docs' api-viewer tree), read at test time from
//! `../../shared/data/pve-api/apidata.json` relative to this crate. Checked:
//! - every route the simulator serves exists in the schema with that method, and each
//!   parameter it accepts is declared there with a compatible type, format and enum;
//! - every endpoint in `client::ENDPOINTS` exists in the schema and in the simulator;
//! - every request the client sent during the scenario (recorded by the simulator) names a
//!   schema route, sends only declared parameters with valid types, enums, patterns and
//!   formats (named formats through `vigie_pve::formats`, which fails on formats it does not
//!   know; property strings against their inline schema), and sends all required ones;
//! - the scenario exercises every endpoint of `client::ENDPOINTS`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use regex::Regex;
use serde_json::{Map, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vigie_pve::client::ENDPOINTS;
use vigie_pve::formats::{self, FormatError};
use vigie_pve::params::{
    CloneOptions, CloudInit, ConfigUpdate, CreateVm, DeleteOptions, DiskResize, IpConfig,
    MetricsExportOptions, VzdumpOptions,
};
use vigie_pve::sim::{
    DEFAULT_PASSWORD, DEFAULT_TOKEN_ID, DEFAULT_TOKEN_SECRET, ParamKind, PveMode, RecordedRequest,
    Sim, SimConfig, routes,
};
use vigie_pve::types::{
    Cf, ContentType, MetricKind, ResourceType, RrdData, RrdSample, RrdSchema, TaskExit, Timeframe,
    VmState,
};
use vigie_pve::{
    ApiToken, Client, Fingerprint, NodeName, PveError, RetryPolicy, StorageId, TlsMode, Vmid,
};

// ---- the schema ------------------------------------------------------------------------------

struct Schema {
    /// path template → node (with `info`)
    by_path: HashMap<String, Value>,
}

fn schema() -> &'static Schema {
    static SCHEMA: OnceLock<Schema> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/data/pve-api/apidata.json");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!("cannot read the PVE API schema at {}: {e}", path.display())
        });
        let tree: Value = serde_json::from_str(&text).expect("apidata.json is json");
        let mut by_path = HashMap::new();
        fn walk(n: &Value, out: &mut HashMap<String, Value>) {
            if let Some(p) = n.get("path").and_then(Value::as_str) {
                out.insert(p.to_string(), n.clone());
            }
            for c in n
                .get("children")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                walk(c, out);
            }
        }
        for n in tree.as_array().expect("apidata.json is an array") {
            walk(n, &mut by_path);
        }
        assert!(
            by_path.len() > 300,
            "apidata.json looks truncated ({} paths)",
            by_path.len()
        );
        Schema { by_path }
    })
}

impl Schema {
    fn method(&self, method: &str, path: &str) -> Option<&Value> {
        self.by_path.get(path)?.get("info")?.get(method)
    }
}

fn props(info: &Value) -> Map<String, Value> {
    info.get("parameters")
        .and_then(|p| p.get("properties"))
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default()
}

fn truthy(v: Option<&Value>) -> bool {
    match v {
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_f64().is_some_and(|f| f != 0.0),
        Some(Value::String(s)) => s == "1",
        _ => false,
    }
}

fn optional(prop: &Value) -> bool {
    truthy(prop.get("optional"))
}

fn num(v: Option<&Value>) -> Option<f64> {
    match v? {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// The schema property for a concrete name (`ipconfig0` → `ipconfig[n]`).
fn schema_prop<'a>(props: &'a Map<String, Value>, name: &str) -> Option<(String, &'a Value)> {
    if let Some(p) = props.get(name) {
        return Some((name.to_string(), p));
    }
    let base = name.trim_end_matches(|c: char| c.is_ascii_digit());
    if base.len() < name.len() {
        let key = format!("{base}[n]");
        return props.get(&key).map(|p| (key, p));
    }
    None
}

fn perl_regex(p: &str) -> Regex {
    let rust = p.replace("(?^:", "(?:").replace("{,", "{0,");
    Regex::new(&format!("^(?:{rust})$"))
        .unwrap_or_else(|e| panic!("schema pattern {p:?} does not translate: {e}"))
}

fn parse_boolean(v: &str) -> bool {
    matches!(
        v.to_ascii_lowercase().as_str(),
        "1" | "on" | "yes" | "true" | "0" | "off" | "no" | "false"
    )
}

/// Checks one value against a schema property (like pve-common's `check_prop`).
fn check_scalar(prop: &Value, v: &str, in_property_string: bool) -> Result<(), String> {
    let ty = prop.get("type").and_then(Value::as_str).unwrap_or("string");
    match ty {
        "integer" => {
            let ok = Regex::new(r"^[+-]?\d+$").expect("regex").is_match(v);
            if !ok {
                return Err(format!("type check ('integer') failed - got '{v}'"));
            }
        }
        "number" => {
            if v.parse::<f64>().is_err() {
                return Err(format!("type check ('number') failed - got '{v}'"));
            }
        }
        "boolean" => {
            let ok = if in_property_string {
                parse_boolean(v)
            } else {
                v == "0" || v == "1"
            };
            if !ok {
                return Err(format!("type check ('boolean') failed - got '{v}'"));
            }
        }
        "string" => {}
        other => return Err(format!("the test does not know the schema type '{other}'")),
    }
    if matches!(ty, "integer" | "number") {
        let n: f64 = v.parse().map_err(|_| format!("not a number: {v}"))?;
        if let Some(min) = num(prop.get("minimum"))
            && n < min
        {
            return Err(format!("value must have a minimum value of {min}"));
        }
        if let Some(max) = num(prop.get("maximum"))
            && n > max
        {
            return Err(format!("value must have a maximum value of {max}"));
        }
    }
    match prop.get("format") {
        None => {}
        Some(Value::String(name)) => formats::check(name, v).map_err(|e| match e {
            FormatError::Unknown(f) => {
                format!("unknown format '{f}': the contract test has no validator for it")
            }
            FormatError::Invalid(msg) => format!("invalid format '{name}' - {msg}"),
        })?,
        Some(Value::Object(dict)) => check_property_string(dict, v)?,
        Some(other) => return Err(format!("unexpected format description {other}")),
    }
    if let Some(p) = prop.get("pattern").and_then(Value::as_str)
        && !perl_regex(p).is_match(v)
    {
        return Err(format!("value does not match the regex pattern {p}"));
    }
    if let Some(max) = num(prop.get("maxLength"))
        && v.chars().count() as f64 > max
    {
        return Err(format!("value may only be {max} characters long"));
    }
    if let Some(min) = num(prop.get("minLength"))
        && (v.chars().count() as f64) < min
    {
        return Err(format!("value must be at least {min} characters long"));
    }
    if let Some(e) = prop.get("enum").and_then(Value::as_array)
        && !e.iter().any(|x| x.as_str() == Some(v))
    {
        return Err(format!(
            "value '{v}' does not have a value in the enumeration {e:?}"
        ));
    }
    Ok(())
}

/// A property string against its inline schema (default key, aliases, keyAlias, requires,
/// non-optional keys).
fn check_property_string(dict: &Map<String, Value>, v: &str) -> Result<(), String> {
    let items = formats::parse_property_string(v)?;
    let default_key = dict
        .iter()
        .find(|(_, s)| truthy(s.get("default_key")))
        .map(|(k, _)| k.as_str());
    let mut present = BTreeSet::new();
    for item in items {
        let key = match item.key {
            Some(k) => k,
            None => {
                default_key.ok_or("value without key, but schema does not define a default key")?
            }
        };
        let mut schema = dict
            .get(key)
            .ok_or_else(|| format!("invalid key in comma-separated list property: {key}"))?;
        let mut k = key;
        if let Some(alias) = schema.get("alias").and_then(Value::as_str) {
            if let Some(ka) = schema.get("keyAlias").and_then(Value::as_str) {
                if !present.insert(ka.to_string()) {
                    return Err(format!("key alias '{ka}' is already defined"));
                }
                let kprop = dict
                    .get(ka)
                    .ok_or_else(|| format!("keyAlias {ka} not in schema"))?;
                check_scalar(kprop, key, true).map_err(|e| format!("{ka}: {e}"))?;
            }
            k = alias;
            schema = dict
                .get(alias)
                .ok_or_else(|| format!("alias {alias} not in schema"))?;
        }
        if !present.insert(k.to_string()) {
            return Err(format!(
                "duplicate key in comma-separated list property: {k}"
            ));
        }
        check_scalar(schema, item.value, true).map_err(|e| format!("{k}: {e}"))?;
    }
    for (k, s) in dict {
        if !optional(s) && s.get("alias").is_none() && !present.contains(k) {
            return Err(format!("{k}: property is missing and it is not optional"));
        }
        if present.contains(k)
            && let Some(req) = s.get("requires").and_then(Value::as_str)
            && !present.contains(req)
        {
            return Err(format!(
                "{req}: missing property - '{k}' requires this property"
            ));
        }
    }
    Ok(())
}

/// All schema violations of one request.
fn check_request(
    method: &str,
    template: &str,
    path_params: &[(String, String)],
    params: &[(String, String)],
) -> Vec<String> {
    let Some(info) = schema().method(method, template) else {
        return vec![format!("{method} {template} is not in the PVE API schema")];
    };
    let props = props(info);
    let mut grouped: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in params {
        grouped.entry(k.clone()).or_default().push(v.clone());
    }
    let mut out = Vec::new();
    for (k, v) in path_params {
        if grouped.contains_key(k) {
            out.push(format!(
                "{method} {template}: '{k}' sent in the path and as a parameter"
            ));
        }
        grouped.insert(k.clone(), vec![v.clone()]);
    }
    for (name, values) in &grouped {
        let Some((_, prop)) = schema_prop(&props, name) else {
            out.push(format!(
                "{method} {template}: parameter '{name}' is not declared in the schema"
            ));
            continue;
        };
        let result = if prop.get("type").and_then(Value::as_str) == Some("array") {
            let items = prop.get("items").cloned().unwrap_or(Value::Null);
            values
                .iter()
                .try_for_each(|v| check_scalar(&items, v, false))
        } else if values.len() != 1 {
            Err(format!(
                "sent {} times but the schema type is not an array",
                values.len()
            ))
        } else {
            check_scalar(prop, &values[0], false)
        };
        if let Err(e) = result {
            out.push(format!(
                "{method} {template}: parameter {name}={values:?}: {e}"
            ));
        }
        if let Some(req) = prop.get("requires").and_then(Value::as_str)
            && !grouped.contains_key(req)
        {
            out.push(format!(
                "{method} {template}: parameter '{name}' requires '{req}', which was not sent"
            ));
        }
    }
    for (pname, prop) in &props {
        if !optional(prop) && !pname.ends_with("[n]") && !grouped.contains_key(pname) {
            out.push(format!(
                "{method} {template}: required parameter '{pname}' was not sent"
            ));
        }
    }
    out
}

fn check_recorded(reqs: &[RecordedRequest]) -> Vec<String> {
    let mut out = Vec::new();
    for r in reqs {
        match &r.template {
            None => out.push(format!(
                "{} {}: the client called a path the simulator does not serve",
                r.method, r.path
            )),
            Some(t) => out.extend(check_request(&r.method, t, &r.path_params, &r.params)),
        }
    }
    out
}

// ---- static checks ---------------------------------------------------------------------------

fn kind_matches(kind: ParamKind, ty: &str) -> bool {
    matches!(
        (kind, ty),
        (ParamKind::String, "string")
            | (ParamKind::Integer, "integer")
            | (ParamKind::Boolean, "boolean")
            | (ParamKind::Number, "number")
            | (ParamKind::Array, "array")
    )
}

#[test]
fn simulator_routes_exist_in_the_schema_with_their_parameters() {
    let mut problems = Vec::new();
    for r in routes() {
        let Some(info) = schema().method(r.method, r.path) else {
            problems.push(format!("{} {}: not in the schema", r.method, r.path));
            continue;
        };
        let props = props(info);
        let path_params: Vec<&str> = r
            .path
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .collect();
        for p in &r.params {
            let Some(prop) = props.get(p.name) else {
                problems.push(format!(
                    "{} {}: accepts '{}', which the schema does not declare",
                    r.method, r.path, p.name
                ));
                continue;
            };
            let ty = prop.get("type").and_then(Value::as_str).unwrap_or("string");
            if !kind_matches(p.kind, ty) {
                problems.push(format!(
                    "{} {} {}: type {:?} vs schema {ty}",
                    r.method, r.path, p.name, p.kind
                ));
            }
            if !path_params.contains(&p.name) && p.optional != optional(prop) {
                problems.push(format!(
                    "{} {} {}: optional={} but the schema says optional={}",
                    r.method,
                    r.path,
                    p.name,
                    p.optional,
                    optional(prop)
                ));
            }
            if let Some(f) = p.format
                && prop.get("format").and_then(Value::as_str) != Some(f)
            {
                problems.push(format!(
                    "{} {} {}: format {f} vs schema {:?}",
                    r.method,
                    r.path,
                    p.name,
                    prop.get("format")
                ));
            }
            if let Some(schema_enum) = prop.get("enum").and_then(Value::as_array) {
                for e in p.enumeration {
                    if !schema_enum.iter().any(|x| x.as_str() == Some(e)) {
                        problems.push(format!(
                            "{} {} {}: enum value {e} not in the schema",
                            r.method, r.path, p.name
                        ));
                    }
                }
            }
            if let (Some(req), Some(sreq)) =
                (p.requires, prop.get("requires").and_then(Value::as_str))
                && req != sreq
            {
                problems.push(format!(
                    "{} {} {}: requires {req} vs schema {sreq}",
                    r.method, r.path, p.name
                ));
            }
        }
        for (name, prop) in &props {
            if !optional(prop) && !r.params.iter().any(|p| p.name == name) {
                problems.push(format!(
                    "{} {}: required schema parameter '{name}' unknown to the simulator",
                    r.method, r.path
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "simulator routes disagree with the schema:\n{}",
        problems.join("\n")
    );
}

#[test]
fn client_endpoints_exist_in_the_schema_and_the_simulator() {
    for e in ENDPOINTS {
        assert!(
            schema().method(e.method, e.path).is_some(),
            "{} {} is not in the PVE API schema",
            e.method,
            e.path
        );
        assert!(
            routes()
                .iter()
                .any(|r| r.method == e.method && r.path == e.path),
            "{} {} is not served by the simulator",
            e.method,
            e.path
        );
    }
}

fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
    p.iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect()
}

#[test]
fn the_checker_catches_violations() {
    let vm = pairs(&[("node", "pve1"), ("vmid", "100")]);
    let cfg = "/nodes/{node}/qemu/{vmid}/config";
    let v = check_request(
        "PUT",
        cfg,
        &vm,
        &pairs(&[
            ("cores", "x"),
            ("bogus", "1"),
            ("ipconfig0", "ip=10.0.0.1"),
            ("sshkeys", "ssh-rsa AAA"),
            ("onboot", "true"),
        ]),
    );
    for name in ["cores", "bogus", "ipconfig0", "sshkeys", "onboot"] {
        assert!(
            v.iter().any(|e| e.contains(name)),
            "{name} not flagged: {v:#?}"
        );
    }
    let v = check_request("PUT", cfg, &vm, &pairs(&[("affinity", "0-3")]));
    assert!(
        v.iter().any(|e| e.contains("unknown format 'pve-cpuset'")),
        "{v:#?}"
    );
    let v = check_request("POST", "/nodes/{node}/qemu/{vmid}/clone", &vm, &[]);
    assert!(
        v.iter().any(|e| e.contains("required parameter 'newid'")),
        "{v:#?}"
    );
    let v = check_request("GET", "/nodes/{node}/qemu/{vmid}/nope", &vm, &[]);
    assert!(v[0].contains("not in the PVE API schema"), "{v:#?}");
    let create = "/nodes/{node}/qemu";
    let node = pairs(&[("node", "pve1")]);
    let ok = check_request(
        "POST",
        create,
        &node,
        &pairs(&[
            ("vmid", "130"),
            ("net0", "virtio=BC:24:11:00:00:01,bridge=vmbr0,firewall=1"),
            ("scsi0", "local-lvm:8,iothread=on"),
            ("memory", "1024"),
            ("agent", "enabled=1,fstrim_cloned_disks=1"),
        ]),
    );
    assert!(ok.is_empty(), "{ok:#?}");
    let v = check_request(
        "POST",
        create,
        &node,
        &pairs(&[
            ("vmid", "130"),
            ("net0", "virtio,bridge=vmbr0,bogus=1"),
            ("memory", "8"),
            ("scsi0", "32"),
        ]),
    );
    for name in ["net0", "memory", "scsi0"] {
        assert!(
            v.iter().any(|e| e.contains(&format!("parameter {name}="))),
            "{name} not flagged: {v:#?}"
        );
    }
    let v = check_request(
        "POST",
        "/nodes/{node}/vzdump",
        &node,
        &pairs(&[("vmid", "100"), ("notes-template", "x")]),
    );
    assert!(v.iter().any(|e| e.contains("requires 'storage'")), "{v:#?}");
}

// ---- the scenario ----------------------------------------------------------------------------

fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        attempts: 4,
        base_delay: Duration::from_millis(20),
        max_delay: Duration::from_millis(100),
    }
}

fn token() -> ApiToken {
    format!("{DEFAULT_TOKEN_ID}={DEFAULT_TOKEN_SECRET}")
        .parse()
        .expect("default token")
}

fn node(n: &str) -> NodeName {
    NodeName::new(n).expect("node name")
}

fn vmid(n: u32) -> Vmid {
    Vmid::new(n).expect("vmid")
}

const POLL: Duration = Duration::from_millis(25);
const WAIT: Duration = Duration::from_secs(10);

async fn sim(cfg: SimConfig) -> Sim {
    Sim::start(cfg).await.expect("simulator starts")
}

#[tokio::test]
async fn scenario_through_the_client_matches_the_schema() {
    let sim = sim(SimConfig {
        nodes: 2,
        task_duration: Duration::from_millis(120),
        ..SimConfig::default()
    })
    .await;
    let pve1 = node("pve1");
    let base = sim.base_url();

    // Log in with a ticket (mutations then carry the CSRF token) and with a token.
    let tc = Client::builder(&base)
        .password("root@pam", DEFAULT_PASSWORD)
        .retry(fast_retry())
        .build()
        .expect("ticket client");
    tc.login().await.expect("ticket login");
    let c = Client::builder(&base)
        .token(token())
        .retry(fast_retry())
        .build()
        .expect("token client");
    c.login().await.expect("token check");
    let v = c.version().await.expect("version");
    assert_eq!(v.major(), Some(9));
    let bad = Client::builder(&base)
        .password("root@pam", "wrong")
        .build()
        .expect("client");
    let err = bad.login().await.expect_err("wrong password");
    assert_eq!(err.status(), Some(401));
    assert!(err.to_string().contains("authentication failure"), "{err}");

    // Inventory.
    let nodes = c.nodes().await.expect("nodes");
    assert_eq!(
        nodes.iter().map(|n| n.node.as_str()).collect::<Vec<_>>(),
        ["pve1", "pve2"]
    );
    let res = c
        .cluster_resources(Some(ResourceType::Vm))
        .await
        .expect("resources");
    assert!(
        res.iter()
            .any(|r| r.id == "qemu/9000" && r.template == Some(true))
    );
    assert!(res.iter().all(|r| r.kind == "qemu"));
    let vms = tc.vms(&pve1).await.expect("vm list");
    let web = vms.iter().find(|v| v.vmid == vmid(100)).expect("vm 100");
    assert_eq!(web.status, VmState::Running);
    assert!(vms.iter().any(|v| v.vmid == vmid(9000) && v.template));

    // Clone the template; the new VM is locked until the task ends.
    let opts = CloneOptions {
        name: Some("vigie-test-1".into()),
        full: Some(true),
        storage: Some(StorageId::new("local-lvm").expect("storage")),
        description: Some("created by the contract test".into()),
        ..CloneOptions::default()
    };
    let upid = tc
        .clone_vm(&pve1, vmid(9000), vmid(123), &opts)
        .await
        .expect("clone");
    assert_eq!(upid.task_type, "qmclone");
    assert_eq!(upid.id, "9000");
    assert_eq!(upid.user, "root@pam");
    let locked = c.start_vm(&pve1, vmid(123)).await.expect_err("locked");
    assert!(locked.is_locked(), "{locked}");
    assert_eq!(locked.status(), Some(500));
    assert!(
        locked.to_string().contains("VM is locked (clone)"),
        "{locked}"
    );
    let out = tc
        .wait_task(&upid, POLL, WAIT)
        .await
        .expect("clone finishes");
    assert_eq!(out.exit, TaskExit::Ok);
    assert_eq!(out.log.last().map(String::as_str), Some("TASK OK"));
    assert!(
        out.log
            .iter()
            .any(|l| l.contains("create full clone of drive scsi0")),
        "{:?}",
        out.log
    );

    // Cloud-init.
    let keys = vec![
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB+x/y= ops@vigie".to_string(),
        "ssh-rsa AAAAB3NzaC1yc2E= backup@vigie".to_string(),
    ];
    let ci = CloudInit {
        user: Some("vigie".into()),
        ssh_keys: Some(keys.clone()),
        ipconfig: vec![(
            0,
            IpConfig::static_v4(
                Ipv4Addr::new(10, 20, 0, 23),
                24,
                Some(Ipv4Addr::new(10, 20, 0, 1)),
            ),
        )],
        nameservers: Some(vec!["10.20.0.53".into(), "9.9.9.9".into()]),
        searchdomain: Some("lab.example".into()),
        ..CloudInit::default()
    };
    tc.set_cloud_init(&pve1, vmid(123), &ci)
        .await
        .expect("cloud-init");
    let cfg = c.vm_config(&pve1, vmid(123), false).await.expect("config");
    assert_eq!(cfg.ciuser().as_deref(), Some("vigie"));
    assert_eq!(cfg.ssh_keys(), keys);
    assert_eq!(
        cfg.ipconfig(0).as_deref(),
        Some("ip=10.20.0.23/24,gw=10.20.0.1")
    );
    assert_eq!(cfg.nameservers(), ["10.20.0.53", "9.9.9.9"]);
    assert_eq!(cfg.name().as_deref(), Some("vigie-test-1"));
    assert!(cfg.agent_enabled());
    assert!(!cfg.is_template());
    assert_eq!(cfg.lock(), None);

    // A new VM has no RRD archive yet: "no data yet", not an error.
    let rrd = c
        .vm_rrddata(&pve1, vmid(123), Timeframe::Hour, Cf::Average)
        .await
        .expect("rrd of a new vm");
    assert!(rrd.is_no_data_yet());

    // Start it.
    let up = tc.start_vm(&pve1, vmid(123)).await.expect("start");
    tc.wait_task(&up, POLL, WAIT).await.expect("started");
    let st = c.vm_status(&pve1, vmid(123)).await.expect("status");
    assert_eq!(st.status, VmState::Running);
    assert_eq!(st.cpus, Some(2.0));
    assert_eq!(st.maxmem, Some(2048 << 20));
    assert!(
        st.memhost.is_some() && st.pressurecpusome.is_some(),
        "pve 9 status fields"
    );

    // Change CPU and memory (async POST): pending until the restart.
    let change = ConfigUpdate {
        cores: Some(4),
        memory_mib: Some(4096),
        ..ConfigUpdate::default()
    };
    let task = c
        .update_vm_config(&pve1, vmid(123), &change)
        .await
        .expect("config post")
        .expect("a task");
    c.wait_task(&task, POLL, WAIT).await.expect("config task");
    let pending = c
        .vm_config(&pve1, vmid(123), false)
        .await
        .expect("pending config");
    let current = c
        .vm_config(&pve1, vmid(123), true)
        .await
        .expect("current config");
    assert_eq!(
        (pending.cores(), pending.memory_mib()),
        (Some(4), Some(4096))
    );
    assert_eq!(
        (current.cores(), current.memory_mib()),
        (Some(2), Some(2048))
    );
    let reboot = tc.reboot_vm(&pve1, vmid(123)).await.expect("reboot");
    tc.wait_task(&reboot, POLL, WAIT).await.expect("rebooted");
    let st = c.vm_status(&pve1, vmid(123)).await.expect("status");
    assert_eq!((st.cpus, st.maxmem), (Some(4.0), Some(4096 << 20)));

    // Stale digest is refused.
    let stale = ConfigUpdate {
        description: Some("x".into()),
        digest: Some("0000000000000000000000000000000000000000".into()),
        ..ConfigUpdate::default()
    };
    let err = c
        .update_vm_config_sync(&pve1, vmid(123), &stale)
        .await
        .expect_err("stale digest");
    assert!(
        err.to_string().contains("detected modified configuration"),
        "{err}"
    );

    // Grow the disk.
    let resize = tc
        .resize_disk(&pve1, vmid(123), "scsi0", &DiskResize::grow_gib(10))
        .await
        .expect("resize")
        .expect("a task");
    tc.wait_task(&resize, POLL, WAIT).await.expect("resized");
    let cfg = c.vm_config(&pve1, vmid(123), false).await.expect("config");
    assert_eq!(cfg.disk_size_bytes("scsi0"), Some(18 << 30));

    // Guest agent: write the enrollment file, run the installer.
    let script = b"#!/bin/sh\necho vigie\n";
    c.agent_file_write(&pve1, vmid(123), "/etc/vigie/enroll.token", b"tok-123\n")
        .await
        .expect("file-write");
    c.agent_file_write(&pve1, vmid(123), "/tmp/install.sh", script)
        .await
        .expect("file-write");
    c.agent_file_write(&pve1, vmid(123), "/tmp/blob", &[0xff, 0x00, 0x80])
        .await
        .expect("binary file-write");
    let pid = c
        .agent_exec(
            &pve1,
            vmid(123),
            &["/bin/sh", "/tmp/install.sh", "--enroll"],
            Some("yes\n"),
        )
        .await
        .expect("exec");
    let es = c
        .agent_exec_status(&pve1, vmid(123), pid)
        .await
        .expect("exec-status");
    assert!(es.exited);
    assert_eq!(es.exitcode, Some(0));
    let files = sim.agent_files(123);
    assert_eq!(files["/etc/vigie/enroll.token"], b"tok-123\n");
    assert_eq!(files["/tmp/install.sh"], script);
    assert_eq!(files["/tmp/blob"], [0xff, 0x00, 0x80]);
    let cmds = sim.agent_commands(123);
    assert_eq!(cmds[0].command, ["/bin/sh", "/tmp/install.sh", "--enroll"]);
    assert_eq!(cmds[0].input_data.as_deref(), Some("yes\n"));
    let err = c
        .agent_exec(&pve1, vmid(101), &["true"], None)
        .await
        .expect_err("no agent on 101");
    assert!(
        err.to_string().contains("No QEMU guest agent configured"),
        "{err}"
    );

    // RRD (hour) of a VM running for 3 hours: 70 points, one a minute, all with values.
    let avg = c
        .vm_rrddata(&pve1, vmid(100), Timeframe::Hour, Cf::Average)
        .await
        .expect("rrd avg");
    let max = c
        .vm_rrddata(&pve1, vmid(100), Timeframe::Hour, Cf::Max)
        .await
        .expect("rrd max");
    assert_eq!(avg.schema(), Some(RrdSchema::Pve9));
    let pts = avg.points();
    assert_eq!(pts.len(), 70);
    for w in pts.windows(2) {
        assert_eq!(w[1].time - w[0].time, 60);
    }
    for p in pts {
        assert!(p.has_data());
        let cpu = p.cpu.expect("cpu");
        assert!((0.0..=1.0).contains(&cpu), "cpu {cpu}");
        assert_eq!(p.maxmem, Some(4096.0 * 1024.0 * 1024.0));
        assert!(p.mem.expect("mem") <= p.maxmem.expect("maxmem"));
        assert!(p.netin.expect("netin") > 0.0 && p.diskwrite.expect("diskwrite") > 0.0);
        assert!(p.memhost.is_some() && p.pressurecpusome.is_some());
    }
    let max_by_time: HashMap<i64, f64> = max
        .points()
        .iter()
        .map(|p| (p.time, p.cpu.unwrap_or(0.0)))
        .collect();
    for p in pts {
        if let Some(m) = max_by_time.get(&p.time) {
            assert!(
                *m + 1e-9 >= p.cpu.unwrap_or(0.0),
                "MAX below AVERAGE at {}",
                p.time
            );
        }
    }
    // A stopped VM has data points with zero usage.
    let stopped = c
        .vm_rrddata(&pve1, vmid(101), Timeframe::Hour, Cf::Average)
        .await
        .expect("rrd 101");
    assert!(
        stopped
            .points()
            .iter()
            .all(|p| p.cpu == Some(0.0) && p.netin == Some(0.0))
    );
    let day = c
        .vm_rrddata(&pve1, vmid(100), Timeframe::Day, Cf::Average)
        .await
        .expect("rrd day");
    assert_eq!(day.points()[1].time - day.points()[0].time, 1800);
    let node_rrd = c
        .node_rrddata(&pve1, Timeframe::Hour, Cf::Average)
        .await
        .expect("node rrd");
    for p in node_rrd.points() {
        assert!(p.memused.expect("memused") <= p.memtotal.expect("memtotal"));
        assert!(p.cpu.expect("cpu") > 0.0);
    }

    // Metrics export.
    let m = c
        .metrics_export(&MetricsExportOptions::default())
        .await
        .expect("export");
    let find = |id: &str, metric: &str| m.iter().find(|s| s.id == id && s.metric == metric);
    assert_eq!(
        find("qemu/100", "cpu_current").expect("vm cpu").kind,
        MetricKind::Gauge
    );
    assert_eq!(
        find("qemu/100", "net_in").expect("vm net").kind,
        MetricKind::Derive
    );
    assert!(find("node/pve2", "mem_total").is_some());
    assert!(
        find("qemu/101", "cpu_current").is_none(),
        "stopped vms have no cpu_current"
    );
    let hist = c
        .metrics_export(&MetricsExportOptions {
            history: true,
            node_list: vec![pve1.clone()],
            ..MetricsExportOptions::default()
        })
        .await
        .expect("export history");
    let stamps: BTreeSet<i64> = hist.iter().map(|s| s.timestamp).collect();
    assert!(stamps.len() > 100, "{} generations", stamps.len());
    assert!(hist.iter().all(|s| !s.id.contains("pve2")));
    let newest = *stamps.iter().next_back().expect("stamps");
    let since = c
        .metrics_export(&MetricsExportOptions {
            local_only: true,
            history: true,
            start_time: Some(newest - 30),
            ..MetricsExportOptions::default()
        })
        .await
        .expect("export since");
    assert!(since.iter().all(|s| s.timestamp > newest - 30));

    // Storage content and a backup.
    let lvm = StorageId::new("local-lvm").expect("id");
    let local = StorageId::new("local").expect("id");
    let images = c
        .storage_content(&pve1, &lvm, Some(ContentType::Images), Some(vmid(123)))
        .await
        .expect("images");
    assert_eq!(images.len(), 1);
    assert_eq!(images[0].volid, "local-lvm:vm-123-disk-0");
    assert_eq!(images[0].size, Some(18 << 30));
    let mut backup = VzdumpOptions::new(vec![vmid(123)]);
    backup.storage = Some(local.clone());
    backup.notes_template = Some("{{guestname}}".into());
    let b = c.vzdump(&pve1, &backup).await.expect("vzdump");
    assert_eq!((b.task_type.as_str(), b.id.as_str()), ("vzdump", "123"));
    c.wait_task(&b, POLL, WAIT).await.expect("backup done");
    let backups = c
        .storage_content(&pve1, &local, Some(ContentType::Backup), Some(vmid(123)))
        .await
        .expect("backups");
    assert_eq!(backups.len(), 1);
    assert_eq!(backups[0].notes.as_deref(), Some("vigie-test-1"));

    // A failed task surfaces its log.
    sim.fail_tasks(
        1,
        Some("qmshutdown"),
        "VM quit/powerdown failed - got timeout",
    );
    let sd = tc
        .shutdown_vm(&pve1, vmid(123), Some(Duration::from_secs(30)), false)
        .await
        .expect("shutdown");
    let err = tc
        .wait_task(&sd, POLL, WAIT)
        .await
        .expect_err("shutdown fails");
    match &err {
        PveError::TaskFailed {
            upid,
            exit_status,
            log_tail,
        } => {
            assert_eq!(upid.task_type, "qmshutdown");
            assert_eq!(exit_status, "VM quit/powerdown failed - got timeout");
            assert_eq!(
                log_tail.last().map(String::as_str),
                Some("TASK ERROR: VM quit/powerdown failed - got timeout")
            );
        }
        other => panic!("expected TaskFailed, got {other}"),
    }
    assert!(err.to_string().contains("last log lines"), "{err}");

    // A dropped connection on a GET is retried; on a POST it is reported, not retried.
    sim.drop_connections(2, Some("GET"), Some("/status/current"));
    let st = c
        .vm_status(&pve1, vmid(123))
        .await
        .expect("status after two drops");
    assert_eq!(st.status, VmState::Running);
    sim.drop_connections(1, Some("POST"), Some("/status/stop"));
    let err = tc
        .stop_vm(&pve1, vmid(123))
        .await
        .expect_err("dropped post");
    assert!(matches!(err, PveError::ResponseLost { .. }), "{err}");
    assert!(err.to_string().contains("not retried"), "{err}");
    let dropped: Vec<RecordedRequest> = sim.requests().into_iter().filter(|r| r.dropped).collect();
    assert_eq!(dropped.len(), 3);
    assert_eq!(
        sim.requests()
            .iter()
            .filter(|r| r.path.ends_with("/status/stop"))
            .count(),
        1,
        "no blind retry"
    );

    // Ticket handling: server-side expiry → transparent re-login; refresh before expiry.
    let logins = |s: &Sim| {
        s.requests()
            .iter()
            .filter(|r| r.path == "/access/ticket")
            .count()
    };
    let before = logins(&sim);
    sim.expire_tickets();
    tc.vm_status(&pve1, vmid(123))
        .await
        .expect("re-login after expiry");
    assert_eq!(logins(&sim), before + 1);
    let eager = Client::builder(&base)
        .password("root@pam", DEFAULT_PASSWORD)
        .ticket_refresh_after(Duration::ZERO)
        .build()
        .expect("client");
    eager.version().await.expect("v1");
    eager.version().await.expect("v2");
    assert_eq!(logins(&sim), before + 3);

    // Stop and delete.
    let stop = tc.stop_vm(&pve1, vmid(123)).await.expect("stop");
    tc.wait_task(&stop, POLL, WAIT).await.expect("stopped");
    let del = tc
        .delete_vm(
            &pve1,
            vmid(123),
            DeleteOptions {
                purge: true,
                destroy_unreferenced_disks: true,
            },
        )
        .await
        .expect("delete");
    tc.wait_task(&del, POLL, WAIT).await.expect("deleted");
    assert!(!sim.vm_exists(123));
    let err = c.vm_status(&pve1, vmid(123)).await.expect_err("gone");
    assert!(err.to_string().contains("does not exist"), "{err}");

    // Create a VM from scratch, then delete it (stopped, so no stop needed).
    let mut create = CreateVm::new(vmid(130));
    create.name = Some("scratch".into());
    create.cores = Some(1);
    create.memory_mib = Some(1024);
    create.ostype = Some("l26".into());
    create.scsihw = Some("virtio-scsi-single".into());
    create.disks = vec![("scsi0".into(), "local-lvm:8,iothread=1".into())];
    create.nets = vec![(0, "virtio,bridge=vmbr0,firewall=1".into())];
    create.agent = Some(true);
    create.tags = vec!["vigie".into(), "lab".into()];
    let t = c.create_vm(&pve1, &create).await.expect("create");
    c.wait_task(&t, POLL, WAIT).await.expect("created");
    let cfg = c.vm_config(&pve1, vmid(130), false).await.expect("config");
    assert_eq!(
        cfg.get("scsi0").as_deref(),
        Some("local-lvm:vm-130-disk-0,iothread=1,size=8G")
    );
    assert!(
        cfg.get("net0")
            .is_some_and(|n| n.starts_with("virtio=BC:24:11:"))
    );
    let t = c
        .delete_vm(&pve1, vmid(130), DeleteOptions::default())
        .await
        .expect("delete 130");
    c.wait_task(&t, POLL, WAIT).await.expect("deleted 130");

    // Every request was valid for the schema, and every client endpoint was exercised.
    let reqs = sim.requests();
    let problems = check_recorded(&reqs);
    assert!(
        problems.is_empty(),
        "requests that break the PVE API contract:\n{}",
        problems.join("\n")
    );
    let used: BTreeSet<(String, String)> = reqs
        .iter()
        .filter_map(|r| r.template.clone().map(|t| (r.method.clone(), t)))
        .collect();
    let missing: Vec<String> = ENDPOINTS
        .iter()
        .filter(|e| !used.contains(&(e.method.to_string(), e.path.to_string())))
        .map(|e| format!("{} {}", e.method, e.path))
        .collect();
    assert!(
        missing.is_empty(),
        "client endpoints the scenario does not exercise: {missing:?}"
    );
}

// ---- the simulator on its own ----------------------------------------------------------------

/// A raw HTTP/1.1 exchange (to send what the client never would).
async fn raw(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, Value) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut req = format!(
        "{method} /api2/json{path} HTTP/1.1\r\nHost: sim\r\nConnection: close\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.expect("read");
    let text = String::from_utf8_lossy(&buf);
    let status: u16 = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

#[tokio::test]
async fn simulator_enforces_auth_csrf_and_parameters_like_pve() {
    let sim = sim(SimConfig::default()).await;
    let addr = sim.addr();
    let (status, body) = raw(addr, "GET", "/version", &[], "").await;
    assert_eq!(status, 401);
    assert_eq!(body["data"], Value::Null);

    let (status, body) = raw(
        addr,
        "POST",
        "/access/ticket",
        &[],
        &format!("username=root%40pam&password={DEFAULT_PASSWORD}"),
    )
    .await;
    assert_eq!(status, 200);
    let ticket = body["data"]["ticket"].as_str().expect("ticket").to_string();
    let csrf = body["data"]["CSRFPreventionToken"]
        .as_str()
        .expect("csrf")
        .to_string();
    let cookie = format!("PVEAuthCookie={ticket}");
    let (status, _) = raw(addr, "GET", "/nodes", &[("Cookie", &cookie)], "").await;
    assert_eq!(status, 200);
    let (status, body) = raw(
        addr,
        "POST",
        "/nodes/pve1/qemu/101/status/start",
        &[("Cookie", &cookie)],
        "",
    )
    .await;
    assert_eq!(status, 401, "a mutation with a ticket but no csrf token");
    assert!(body["message"].as_str().expect("message").contains("csrf"));
    let (status, _) = raw(
        addr,
        "POST",
        "/nodes/pve1/qemu/101/status/start",
        &[("Cookie", &cookie), ("CSRFPreventionToken", &csrf)],
        "",
    )
    .await;
    assert_eq!(status, 200);

    let auth = format!("PVEAPIToken={DEFAULT_TOKEN_ID}={DEFAULT_TOKEN_SECRET}");
    let (status, body) = raw(
        addr,
        "PUT",
        "/nodes/pve1/qemu/100/config",
        &[("Authorization", &auth)],
        "cores=2&bogus=1&onboot=true",
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["message"], "Parameter verification failed.\n");
    assert!(
        body["errors"]["bogus"]
            .as_str()
            .expect("bogus")
            .contains("not defined in schema")
    );
    assert!(
        body["errors"]["onboot"]
            .as_str()
            .expect("onboot")
            .contains("boolean")
    );
    assert!(body["errors"].get("cores").is_none());
    let (status, body) = raw(
        addr,
        "POST",
        "/nodes/pve1/qemu/9000/clone",
        &[("Authorization", &auth)],
        "name=x",
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        body["errors"]["newid"]
            .as_str()
            .expect("newid")
            .contains("not optional")
    );
    let (status, body) = raw(
        addr,
        "GET",
        "/nodes/pve1/qemu/100/rrddata?timeframe=hour&extra=1",
        &[("Authorization", &auth)],
        "",
    )
    .await;
    assert_eq!(status, 400);
    assert!(body["errors"]["extra"].is_string());
    let (status, _) = raw(
        addr,
        "GET",
        "/nodes/pve9/qemu",
        &[("Authorization", &auth)],
        "",
    )
    .await;
    assert_eq!(status, 500);
    let (status, _) = raw(
        addr,
        "GET",
        "/nodes/pve1/nothing",
        &[("Authorization", &auth)],
        "",
    )
    .await;
    assert_eq!(status, 501);
    let (status, _) = raw(
        addr,
        "GET",
        "/version",
        &[("Authorization", "PVEAPIToken=root@pam!vigie=wrong")],
        "",
    )
    .await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn simulator_faults_over_http_and_pve8_mode() {
    let sim = sim(SimConfig {
        nodes: 1,
        mode: PveMode::Pve8,
        task_duration: Duration::from_millis(50),
        ..SimConfig::default()
    })
    .await;
    let c = Client::builder(sim.base_url())
        .token(token())
        .retry(fast_retry())
        .build()
        .expect("client");
    let pve1 = node("pve1");
    assert_eq!(c.version().await.expect("version").major(), Some(8));
    let rrd = c
        .vm_rrddata(&pve1, vmid(100), Timeframe::Hour, Cf::Average)
        .await
        .expect("rrd");
    assert_eq!(rrd.schema(), Some(RrdSchema::Pve8));
    assert!(
        rrd.points()
            .iter()
            .all(|p| p.memhost.is_none() && p.pressurecpusome.is_none())
    );
    let st = c.vm_status(&pve1, vmid(100)).await.expect("status");
    assert!(st.memhost.is_none());
    assert!(matches!(
        c.node_rrddata(&pve1, Timeframe::Hour, Cf::Max)
            .await
            .expect("node rrd"),
        RrdData::Series(_)
    ));

    // Faults through the admin endpoint: a slow task then times out in wait_task.
    let mut s = tokio::net::TcpStream::connect(sim.addr())
        .await
        .expect("connect");
    let body = r#"{"slow_tasks":{"count":1,"task_type":"qmstart","duration_ms":1500}}"#;
    let req = format!(
        "POST /_sim/faults HTTP/1.1\r\nHost: sim\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.expect("write");
    let mut buf = String::new();
    s.read_to_string(&mut buf).await.expect("read");
    assert!(buf.starts_with("HTTP/1.1 200"), "{buf}");
    let up = c.start_vm(&pve1, vmid(101)).await.expect("start");
    let err = c
        .wait_task(&up, POLL, Duration::from_millis(300))
        .await
        .expect_err("slow");
    assert!(matches!(err, PveError::Timeout { .. }), "{err}");
    assert!(err.to_string().contains("keeps running"), "{err}");
    let done = c.wait_task(&up, POLL, WAIT).await.expect("eventually done");
    assert_eq!(done.exit, TaskExit::Ok);
    // Starting a running VM: the task fails like on PVE.
    let again = c.start_vm(&pve1, vmid(101)).await.expect("start again");
    let err = c
        .wait_task(&again, POLL, WAIT)
        .await
        .expect_err("already running");
    assert!(err.to_string().contains("VM 101 already running"), "{err}");
    let problems = check_recorded(&sim.requests());
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[tokio::test]
async fn tls_with_a_pinned_fingerprint() {
    let sim = sim(SimConfig {
        tls: true,
        nodes: 1,
        ..SimConfig::default()
    })
    .await;
    let fp = sim.fingerprint().expect("https sim has a fingerprint");
    assert!(sim.base_url().starts_with("https://"));
    let good = Client::builder(sim.base_url())
        .token(token())
        .tls(TlsMode::Pinned(fp))
        .build()
        .expect("client");
    assert_eq!(good.version().await.expect("pinned").major(), Some(9));

    let wrong_fp = Fingerprint([0xAB; 32]);
    let wrong = Client::builder(sim.base_url())
        .token(token())
        .tls(TlsMode::Pinned(wrong_fp))
        .retry(fast_retry())
        .build()
        .expect("client");
    let err = wrong.version().await.expect_err("mismatch");
    match &err {
        PveError::FingerprintMismatch { expected, seen, .. } => {
            assert_eq!(*expected, wrong_fp);
            assert_eq!(*seen, fp);
        }
        other => panic!("expected a fingerprint mismatch, got {other}"),
    }
    let text = err.to_string();
    assert!(
        text.contains(&fp.to_string()) && text.contains(&wrong_fp.to_string()),
        "{text}"
    );

    let webpki = Client::builder(sim.base_url())
        .token(token())
        .tls(TlsMode::WebPki)
        .build()
        .expect("client");
    let err = webpki
        .version()
        .await
        .expect_err("self-signed is not trusted");
    assert!(matches!(err, PveError::Tls { .. }), "{err}");
    assert!(
        err.to_string().contains("pin its sha-256 fingerprint"),
        "{err}"
    );
}

#[tokio::test]
async fn unreachable_host_is_a_connection_error_after_retries() {
    // Bind then drop a listener to get a port that refuses connections.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let c = Client::builder(format!("http://127.0.0.1:{port}"))
        .token(token())
        .retry(fast_retry())
        .build()
        .expect("client");
    let err = c.version().await.expect_err("refused");
    assert!(matches!(err, PveError::Connection { .. }), "{err}");
    assert!(err.to_string().contains("port 8006"), "{err}");
}

//! The simulated API: one table of routes with their parameters (checked like PVE checks
//! them: unknown parameters, missing required ones, types, enums, formats → 400), then
//! authentication, then one handler per route.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::handlers;
use super::state::{RecordedRequest, Shared, State, now};
use crate::formats;

/// A parameter type, as in the PVE schema.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamKind {
    String,
    Integer,
    Boolean,
    Number,
    Array,
}

/// An extra value check.
type ValueCheck = fn(&str) -> Result<(), String>;

/// A parameter the simulator accepts on a route.
#[derive(Clone, Debug)]
pub struct ParamSpec {
    /// Name; `scsi[n]` stands for `scsi0`, `scsi1`, …
    pub name: &'static str,
    pub kind: ParamKind,
    pub optional: bool,
    /// Named PVE format checked with [`crate::formats::check`].
    pub format: Option<&'static str>,
    pub enumeration: &'static [&'static str],
    pub minimum: Option<i64>,
    pub maximum: Option<i64>,
    pub max_length: Option<usize>,
    /// Another parameter this one needs.
    pub requires: Option<&'static str>,
    /// Extra check for property strings the simulator interprets.
    check: Option<ValueCheck>,
}

impl ParamSpec {
    fn new(name: &'static str, kind: ParamKind) -> Self {
        ParamSpec {
            name,
            kind,
            optional: true,
            format: None,
            enumeration: &[],
            minimum: None,
            maximum: None,
            max_length: None,
            requires: None,
            check: None,
        }
    }

    fn req(mut self) -> Self {
        self.optional = false;
        self
    }

    fn fmt(mut self, f: &'static str) -> Self {
        self.format = Some(f);
        self
    }

    fn en(mut self, e: &'static [&'static str]) -> Self {
        self.enumeration = e;
        self
    }

    fn range(mut self, min: i64, max: Option<i64>) -> Self {
        self.minimum = Some(min);
        self.maximum = max;
        self
    }

    fn maxlen(mut self, n: usize) -> Self {
        self.max_length = Some(n);
        self
    }

    fn requires(mut self, other: &'static str) -> Self {
        self.requires = Some(other);
        self
    }

    fn check(mut self, f: ValueCheck) -> Self {
        self.check = Some(f);
        self
    }

    /// Whether a concrete parameter name is this spec (`scsi3` for `scsi[n]`).
    pub fn matches(&self, name: &str) -> bool {
        match self.name.strip_suffix("[n]") {
            None => self.name == name,
            Some(prefix) => name.strip_prefix(prefix).is_some_and(|n| {
                !n.is_empty()
                    && n.len() <= 2
                    && n.bytes().all(|b| b.is_ascii_digit())
                    && n.parse::<u32>().is_ok_and(|i| i <= max_index(prefix))
            }),
        }
    }
}

fn max_index(prefix: &str) -> u32 {
    match prefix {
        "ide" => 3,
        "sata" => 5,
        "scsi" => 30,
        "virtio" => 15,
        "serial" => 3,
        _ => 31,
    }
}

fn s(name: &'static str) -> ParamSpec {
    ParamSpec::new(name, ParamKind::String)
}

fn i(name: &'static str) -> ParamSpec {
    ParamSpec::new(name, ParamKind::Integer)
}

fn b(name: &'static str) -> ParamSpec {
    ParamSpec::new(name, ParamKind::Boolean)
}

fn node() -> ParamSpec {
    s("node").req().fmt("pve-node")
}

fn vmid() -> ParamSpec {
    i("vmid")
        .req()
        .fmt("pve-vmid")
        .range(100, Some(999_999_999))
}

/// Handlers, one per route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RouteId {
    Version,
    Ticket,
    ClusterResources,
    MetricsExport,
    Nodes,
    NodeRrd,
    VmList,
    VmCreate,
    VmDelete,
    VmStatus,
    VmStart,
    VmStop,
    VmShutdown,
    VmReboot,
    ConfigGet,
    ConfigPost,
    ConfigPut,
    Clone,
    Resize,
    VmRrd,
    AgentFileWrite,
    AgentExec,
    AgentExecStatus,
    TaskStatus,
    TaskLog,
    StorageContent,
    Vzdump,
}

/// One served (method, path template) with its parameters.
#[derive(Clone, Debug)]
pub struct RouteSpec {
    pub method: &'static str,
    pub path: &'static str,
    pub params: Vec<ParamSpec>,
    pub(crate) id: RouteId,
    auth: bool,
}

const OSTYPES: &[&str] = &[
    "other", "wxp", "w2k", "w2k3", "w2k8", "wvista", "win7", "win8", "win10", "win11", "l24",
    "l26", "solaris",
];
const SCSIHW: &[&str] = &[
    "lsi",
    "lsi53c810",
    "virtio-scsi-pci",
    "virtio-scsi-single",
    "megasas",
    "pvscsi",
];
const TIMEFRAMES: &[&str] = &["hour", "day", "week", "month", "year"];
const CFS: &[&str] = &["AVERAGE", "MAX"];

fn check_memory(v: &str) -> Result<(), String> {
    let items = formats::parse_property_string(v)?;
    for item in items {
        match item.key {
            None | Some("current") => {
                let n: u64 = item.value.parse().map_err(|_| {
                    format!(
                        "current: type check ('integer') failed - got '{}'",
                        item.value
                    )
                })?;
                if n < 16 {
                    return Err("current: value must have a minimum value of 16".into());
                }
            }
            Some(k) => return Err(format!("invalid key in comma-separated list property: {k}")),
        }
    }
    Ok(())
}

fn check_agent(v: &str) -> Result<(), String> {
    let items = formats::parse_property_string(v)?;
    for item in items {
        match item.key {
            None | Some("enabled") | Some("fstrim_cloned_disks") | Some("freeze-fs-on-backup") => {
                if !matches!(item.value, "0" | "1") {
                    return Err(format!(
                        "type check ('boolean') failed - got '{}'",
                        item.value
                    ));
                }
            }
            Some("type") => {
                if !matches!(item.value, "virtio" | "isa") {
                    return Err(format!(
                        "type: value '{}' does not have a value in the enumeration 'virtio, isa'",
                        item.value
                    ));
                }
            }
            Some(k) => return Err(format!("invalid key in comma-separated list property: {k}")),
        }
    }
    Ok(())
}

/// VM configuration keys the simulator accepts on create and config updates.
fn config_keys() -> Vec<ParamSpec> {
    vec![
        s("name").fmt("dns-name"),
        i("cores").range(1, None),
        i("sockets").range(1, None),
        s("memory").check(check_memory),
        i("balloon").range(0, None),
        s("agent").check(check_agent),
        s("ostype").en(OSTYPES),
        s("scsihw").en(SCSIHW),
        s("description").maxlen(8192),
        s("tags").fmt("pve-tag-list"),
        b("onboot"),
        b("numa"),
        b("protection"),
        s("boot"),
        s("vga"),
        s("cpu"),
        s("serial[n]"),
        s("net[n]"),
        s("scsi[n]"),
        s("virtio[n]"),
        s("sata[n]"),
        s("ide[n]"),
        s("ciuser"),
        s("cipassword"),
        s("citype").en(&["configdrive2", "nocloud", "opennebula"]),
        s("sshkeys").fmt("urlencoded"),
        s("ipconfig[n]").fmt("pve-qm-ipconfig"),
        s("nameserver").fmt("address-list"),
        s("searchdomain"),
        s("cicustom").fmt("pve-qm-cicustom"),
    ]
}

fn route(
    method: &'static str,
    path: &'static str,
    id: RouteId,
    params: Vec<ParamSpec>,
) -> RouteSpec {
    RouteSpec {
        method,
        path,
        params,
        id,
        auth: true,
    }
}

/// Every route the simulator serves.
pub fn routes() -> &'static [RouteSpec] {
    static ROUTES: OnceLock<Vec<RouteSpec>> = OnceLock::new();
    ROUTES.get_or_init(|| {
        let vm = |rest: Vec<ParamSpec>| {
            let mut p = vec![node(), vmid()];
            p.extend(rest);
            p
        };
        let mut create = vm(config_keys());
        create.extend([
            b("start"),
            s("storage").fmt("pve-storage-id"),
            s("pool").fmt("pve-poolid"),
        ]);
        let mut config_put = vm(config_keys());
        config_put.extend([
            s("delete").fmt("pve-configid-list"),
            s("revert").fmt("pve-configid-list"),
            s("digest").maxlen(40),
            b("skiplock"),
        ]);
        let mut config_post = config_put.clone();
        config_post.push(i("background_delay").range(1, Some(30)));
        let mut ticket = route(
            "POST",
            "/access/ticket",
            RouteId::Ticket,
            vec![
                s("username").req().maxlen(64),
                s("password").req(),
                s("otp"),
                b("new-format"),
            ],
        );
        ticket.auth = false;
        vec![
            route("GET", "/version", RouteId::Version, vec![]),
            ticket,
            route(
                "GET",
                "/cluster/resources",
                RouteId::ClusterResources,
                vec![s("type").en(&["vm", "storage", "node", "sdn"])],
            ),
            route(
                "GET",
                "/cluster/metrics/export",
                RouteId::MetricsExport,
                vec![
                    b("history"),
                    b("local-only"),
                    s("node-list"),
                    i("start-time"),
                ],
            ),
            route("GET", "/nodes", RouteId::Nodes, vec![]),
            route(
                "GET",
                "/nodes/{node}/rrddata",
                RouteId::NodeRrd,
                vec![
                    node(),
                    s("timeframe")
                        .req()
                        .en(&["hour", "day", "week", "month", "year", "decade"]),
                    s("cf").en(CFS),
                ],
            ),
            route(
                "GET",
                "/nodes/{node}/qemu",
                RouteId::VmList,
                vec![node(), b("full")],
            ),
            route("POST", "/nodes/{node}/qemu", RouteId::VmCreate, create),
            route(
                "DELETE",
                "/nodes/{node}/qemu/{vmid}",
                RouteId::VmDelete,
                vm(vec![
                    b("purge"),
                    b("destroy-unreferenced-disks"),
                    b("skiplock"),
                ]),
            ),
            route(
                "GET",
                "/nodes/{node}/qemu/{vmid}/status/current",
                RouteId::VmStatus,
                vm(vec![]),
            ),
            route(
                "POST",
                "/nodes/{node}/qemu/{vmid}/status/start",
                RouteId::VmStart,
                vm(vec![b("skiplock"), i("timeout").range(0, None)]),
            ),
            route(
                "POST",
                "/nodes/{node}/qemu/{vmid}/status/stop",
                RouteId::VmStop,
                vm(vec![
                    b("skiplock"),
                    i("timeout").range(0, None),
                    b("keepActive"),
                    b("overrule-shutdown"),
                ]),
            ),
            route(
                "POST",
                "/nodes/{node}/qemu/{vmid}/status/shutdown",
                RouteId::VmShutdown,
                vm(vec![
                    b("skiplock"),
                    i("timeout").range(0, None),
                    b("forceStop"),
                    b("keepActive"),
                ]),
            ),
            route(
                "POST",
                "/nodes/{node}/qemu/{vmid}/status/reboot",
                RouteId::VmReboot,
                vm(vec![i("timeout").range(0, None)]),
            ),
            route(
                "GET",
                "/nodes/{node}/qemu/{vmid}/config",
                RouteId::ConfigGet,
                vm(vec![b("current")]),
            ),
            route(
                "POST",
                "/nodes/{node}/qemu/{vmid}/config",
                RouteId::ConfigPost,
                config_post,
            ),
            route(
                "PUT",
                "/nodes/{node}/qemu/{vmid}/config",
                RouteId::ConfigPut,
                config_put,
            ),
            route(
                "POST",
                "/nodes/{node}/qemu/{vmid}/clone",
                RouteId::Clone,
                vm(vec![
                    i("newid")
                        .req()
                        .fmt("pve-vmid")
                        .range(100, Some(999_999_999)),
                    s("name").fmt("dns-name"),
                    b("full"),
                    s("target").fmt("pve-node"),
                    s("storage").fmt("pve-storage-id"),
                    s("description"),
                    s("pool").fmt("pve-poolid"),
                    s("format").en(&["raw", "qcow2", "vmdk"]),
                    s("snapname").fmt("pve-configid").maxlen(40),
                ]),
            ),
            route(
                "PUT",
                "/nodes/{node}/qemu/{vmid}/resize",
                RouteId::Resize,
                vm(vec![
                    s("disk").req(),
                    s("size").req(),
                    s("digest").maxlen(40),
                    b("skiplock"),
                ]),
            ),
            route(
                "GET",
                "/nodes/{node}/qemu/{vmid}/rrddata",
                RouteId::VmRrd,
                vm(vec![s("timeframe").req().en(TIMEFRAMES), s("cf").en(CFS)]),
            ),
            route(
                "POST",
                "/nodes/{node}/qemu/{vmid}/agent/file-write",
                RouteId::AgentFileWrite,
                vm(vec![
                    s("file").req(),
                    s("content").req().maxlen(61440),
                    b("encode"),
                ]),
            ),
            route(
                "POST",
                "/nodes/{node}/qemu/{vmid}/agent/exec",
                RouteId::AgentExec,
                vm(vec![
                    ParamSpec::new("command", ParamKind::Array).req(),
                    s("input-data").maxlen(65536),
                ]),
            ),
            route(
                "GET",
                "/nodes/{node}/qemu/{vmid}/agent/exec-status",
                RouteId::AgentExecStatus,
                vm(vec![i("pid").req()]),
            ),
            route(
                "GET",
                "/nodes/{node}/tasks/{upid}/status",
                RouteId::TaskStatus,
                vec![node(), s("upid").req()],
            ),
            route(
                "GET",
                "/nodes/{node}/tasks/{upid}/log",
                RouteId::TaskLog,
                vec![
                    node(),
                    s("upid").req(),
                    i("start").range(0, None),
                    i("limit").range(0, None),
                    b("download"),
                ],
            ),
            route(
                "GET",
                "/nodes/{node}/storage/{storage}/content",
                RouteId::StorageContent,
                vec![
                    node(),
                    s("storage").req().fmt("pve-storage-id"),
                    s("content").fmt("pve-storage-content"),
                    i("vmid").fmt("pve-vmid").range(100, Some(999_999_999)),
                ],
            ),
            route(
                "POST",
                "/nodes/{node}/vzdump",
                RouteId::Vzdump,
                vec![
                    node(),
                    s("vmid").fmt("pve-vmid-list"),
                    b("all"),
                    s("storage").fmt("pve-storage-id"),
                    s("mode").en(&["snapshot", "suspend", "stop"]),
                    s("compress").en(&["0", "1", "gzip", "lzo", "zstd"]),
                    b("remove"),
                    s("notes-template").maxlen(1024).requires("storage"),
                    b("protected").requires("storage"),
                    s("mailto").fmt("email-or-username-list"),
                ],
            ),
        ]
    })
}

/// Matches a concrete path against the templates; returns the route and path parameters.
pub(crate) fn match_route(
    method: &str,
    path: &str,
) -> Option<(&'static RouteSpec, Vec<(String, String)>)> {
    let segs: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    'routes: for r in routes().iter().filter(|r| r.method == method) {
        let tsegs: Vec<&str> = r.path.split('/').collect();
        if tsegs.len() != segs.len() {
            continue;
        }
        let mut params = Vec::new();
        for (t, s) in tsegs.iter().zip(&segs) {
            if let Some(name) = t.strip_prefix('{').and_then(|t| t.strip_suffix('}')) {
                if s.is_empty() {
                    continue 'routes;
                }
                let decoded = percent_encoding::percent_decode_str(s)
                    .decode_utf8_lossy()
                    .to_string();
                params.push((name.to_string(), decoded));
            } else if t != s {
                continue 'routes;
            }
        }
        return Some((r, params));
    }
    None
}

/// An error answer, PVE-style.
#[derive(Debug)]
pub(crate) struct ApiErr {
    pub(super) status: u16,
    pub(super) message: String,
    pub(super) errors: BTreeMap<String, String>,
}

impl ApiErr {
    pub(super) fn new(status: u16, message: impl Into<String>) -> Self {
        ApiErr {
            status,
            message: message.into(),
            errors: BTreeMap::new(),
        }
    }

    pub(super) fn params(errors: BTreeMap<String, String>) -> Self {
        ApiErr {
            status: 400,
            message: "Parameter verification failed.".into(),
            errors,
        }
    }

    pub(super) fn param(name: &str, msg: impl Into<String>) -> Self {
        let mut e = BTreeMap::new();
        e.insert(name.to_string(), msg.into());
        Self::params(e)
    }

    fn into_response(self) -> Response {
        let mut body = Map::new();
        body.insert("data".into(), Value::Null);
        body.insert("message".into(), json!(format!("{}\n", self.message)));
        if !self.errors.is_empty() {
            let errs: Map<String, Value> = self
                .errors
                .into_iter()
                .map(|(k, v)| (k, json!(format!("{v}\n"))))
                .collect();
            body.insert("errors".into(), Value::Object(errs));
        }
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = (status, axum::Json(Value::Object(body))).into_response();
        // pveproxy puts the message in the status line too.
        let phrase: String = self
            .message
            .chars()
            .filter(|c| !c.is_control())
            .take(200)
            .collect();
        if let Ok(r) = hyper::ext::ReasonPhrase::try_from(phrase.into_bytes()) {
            resp.extensions_mut().insert(r);
        }
        resp
    }
}

/// A successful answer: `{"data": …}` (plus `total` for logs).
pub(crate) struct Reply {
    pub(super) data: Value,
    pub(super) total: Option<usize>,
}

impl Reply {
    pub(super) fn data(data: Value) -> Self {
        Reply { data, total: None }
    }
}

/// Request parameters: query and body pairs, repeated keys kept.
pub(crate) fn parse_params(
    query: Option<&str>,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Vec<(String, String)>, ApiErr> {
    let mut out: Vec<(String, String)> = Vec::new();
    if let Some(q) = query {
        out.extend(
            form_urlencoded::parse(q.as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned())),
        );
    }
    if body.is_empty() {
        return Ok(out);
    }
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    if ct.starts_with("application/json") {
        let v: Value = serde_json::from_slice(body)
            .map_err(|e| ApiErr::new(400, format!("unable to parse json body - {e}")))?;
        let Value::Object(map) = v else {
            return Err(ApiErr::new(400, "json body must be an object"));
        };
        for (k, v) in map {
            let mut push = |v: &Value| match v {
                Value::Null => {}
                Value::Bool(b) => out.push((k.clone(), if *b { "1" } else { "0" }.into())),
                Value::String(s) => out.push((k.clone(), s.clone())),
                other => out.push((k.clone(), other.to_string())),
            };
            match &v {
                Value::Array(items) => items.iter().for_each(&mut push),
                _ => push(&v),
            }
        }
    } else {
        out.extend(form_urlencoded::parse(body).map(|(k, v)| (k.into_owned(), v.into_owned())));
    }
    Ok(out)
}

fn is_integer(v: &str) -> bool {
    let d = v.strip_prefix(['+', '-']).unwrap_or(v);
    !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit())
}

/// Validates parameters like pve-common's `JSONSchema::validate`.
fn validate(route: &RouteSpec, params: &BTreeMap<String, Vec<String>>) -> Result<(), ApiErr> {
    let mut errors = BTreeMap::new();
    for (name, values) in params {
        let Some(spec) = route.params.iter().find(|p| p.matches(name)) else {
            errors.insert(
                name.clone(),
                "property is not defined in schema and the schema does not allow additional properties".to_string(),
            );
            continue;
        };
        if values.len() > 1 && spec.kind != ParamKind::Array {
            errors.insert(
                name.clone(),
                format!("type check ('{}') failed - got ARRAY", kind_name(spec.kind)),
            );
            continue;
        }
        if let Some(req) = spec.requires
            && !params.contains_key(req)
        {
            errors.insert(
                req.to_string(),
                format!("missing property - '{name}' requires this property"),
            );
        }
        for v in values {
            if let Err(e) = check_value(spec, v) {
                errors.insert(name.clone(), e);
                break;
            }
        }
    }
    for spec in route.params.iter().filter(|p| !p.optional) {
        if !params.contains_key(spec.name) {
            errors.insert(
                spec.name.to_string(),
                "property is missing and it is not optional".to_string(),
            );
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiErr::params(errors))
    }
}

fn kind_name(k: ParamKind) -> &'static str {
    match k {
        ParamKind::String => "string",
        ParamKind::Integer => "integer",
        ParamKind::Boolean => "boolean",
        ParamKind::Number => "number",
        ParamKind::Array => "array",
    }
}

fn check_value(spec: &ParamSpec, v: &str) -> Result<(), String> {
    match spec.kind {
        ParamKind::Boolean if v != "0" && v != "1" => {
            return Err(format!("type check ('boolean') failed - got '{v}'"));
        }
        ParamKind::Integer if !is_integer(v) => {
            return Err(format!("type check ('integer') failed - got '{v}'"));
        }
        ParamKind::Number if v.parse::<f64>().is_err() => {
            return Err(format!("type check ('number') failed - got '{v}'"));
        }
        _ => {}
    }
    if let Some(f) = spec.format {
        formats::check(f, v).map_err(|e| format!("invalid format - {e}"))?;
    }
    if let Some(check) = spec.check {
        check(v).map_err(|e| format!("invalid format - {e}"))?;
    }
    if let Some(max) = spec.max_length
        && v.chars().count() > max
    {
        return Err(format!("value may only be {max} characters long"));
    }
    if let Ok(n) = v.parse::<i64>() {
        if let Some(max) = spec.maximum
            && n > max
        {
            return Err(format!("value must have a maximum value of {max}"));
        }
        if let Some(min) = spec.minimum
            && n < min
        {
            return Err(format!("value must have a minimum value of {min}"));
        }
    }
    if !spec.enumeration.is_empty() && !spec.enumeration.contains(&v) {
        return Err(format!(
            "value '{v}' does not have a value in the enumeration '{}'",
            spec.enumeration.join(", ")
        ));
    }
    Ok(())
}

/// The authenticated caller: the user shown in UPIDs.
fn authenticate(st: &State, headers: &HeaderMap, method: &str) -> Result<String, ApiErr> {
    if let Some(auth) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let Some(token) = auth.strip_prefix("PVEAPIToken=") else {
            return Err(ApiErr::new(401, "authentication failure"));
        };
        let (id, secret) = token
            .split_once('=')
            .ok_or_else(|| ApiErr::new(401, "invalid token value!"))?;
        return match st.tokens.get(id) {
            Some(s) if s == secret => Ok(id.to_string()),
            _ => Err(ApiErr::new(401, "invalid token value!")),
        };
    }
    let ticket = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().strip_prefix("PVEAuthCookie="))
        .map(|t| {
            percent_encoding::percent_decode_str(t)
                .decode_utf8_lossy()
                .to_string()
        })
        .next()
        .ok_or_else(|| ApiErr::new(401, "No ticket"))?;
    let info = st
        .tickets
        .get(&ticket)
        .filter(|i| now() - i.issued < st.ticket_lifetime.as_secs_f64())
        .ok_or_else(|| ApiErr::new(401, "permission denied - invalid PVE ticket"))?;
    if method != "GET" {
        let csrf = headers
            .get("CSRFPreventionToken")
            .and_then(|v| v.to_str().ok());
        if csrf != Some(info.csrf.as_str()) {
            return Err(ApiErr::new(401, "Permission denied - invalid csrf token"));
        }
    }
    Ok(info.user.clone())
}

/// A validated request.
pub(crate) struct Ctx<'a> {
    pub(super) shared: &'a Arc<Shared>,
    pub(super) user: String,
    pub(super) params: BTreeMap<String, Vec<String>>,
}

impl Ctx<'_> {
    pub(super) fn get(&self, k: &str) -> Option<&str> {
        self.params
            .get(k)
            .and_then(|v| v.first())
            .map(String::as_str)
    }

    pub(super) fn flag(&self, k: &str) -> bool {
        self.get(k) == Some("1")
    }

    pub(super) fn int(&self, k: &str) -> Option<i64> {
        self.get(k).and_then(|v| v.parse().ok())
    }

    pub(super) fn node(&self) -> &str {
        self.get("node").unwrap_or_default()
    }

    pub(super) fn vmid(&self) -> u32 {
        self.int("vmid")
            .and_then(|v| u32::try_from(v).ok())
            .unwrap_or(0)
    }
}

/// Handles one `/api2/json` request and records it.
pub(crate) fn handle(
    shared: &Arc<Shared>,
    method: &str,
    path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    let matched = match_route(method, path);
    let raw_params = parse_params(query, headers, body);
    let mut st = shared.lock();
    let result = match (&matched, &raw_params) {
        (None, _) => Err(ApiErr::new(
            501,
            format!("Method '{method} {path}' not implemented"),
        )),
        (_, Err(_)) => Err(ApiErr::new(400, "unable to parse request parameters")),
        (Some((route, path_params)), Ok(pairs)) => {
            dispatch(shared, &mut st, route, path_params, pairs, headers, method)
        }
    };
    let response = match result {
        Ok(reply) => {
            let mut body = Map::new();
            body.insert("data".into(), reply.data);
            if let Some(t) = reply.total {
                body.insert("total".into(), json!(t));
            }
            (StatusCode::OK, axum::Json(Value::Object(body))).into_response()
        }
        Err(e) => e.into_response(),
    };
    st.record(RecordedRequest {
        method: method.to_string(),
        path: path.to_string(),
        template: matched.as_ref().map(|(r, _)| r.path.to_string()),
        path_params: matched.map(|(_, p)| p).unwrap_or_default(),
        params: raw_params.unwrap_or_default(),
        dropped: false,
        status: response.status().as_u16(),
    });
    response
}

/// Records a request that a drop rule closed without an answer.
pub(crate) fn record_dropped(
    shared: &Arc<Shared>,
    method: &str,
    full_path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
    body: &[u8],
) {
    let path = full_path.strip_prefix("/api2/json").unwrap_or(full_path);
    let matched = match_route(method, path);
    let params = parse_params(query, headers, body).unwrap_or_default();
    shared.lock().record(RecordedRequest {
        method: method.to_string(),
        path: path.to_string(),
        template: matched.as_ref().map(|(r, _)| r.path.to_string()),
        path_params: matched.map(|(_, p)| p).unwrap_or_default(),
        params,
        dropped: true,
        status: 0,
    });
}

fn dispatch(
    shared: &Arc<Shared>,
    st: &mut State,
    route: &RouteSpec,
    path_params: &[(String, String)],
    pairs: &[(String, String)],
    headers: &HeaderMap,
    method: &str,
) -> Result<Reply, ApiErr> {
    let user = if route.auth {
        authenticate(st, headers, method)?
    } else {
        String::new()
    };
    let mut params: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in pairs {
        params.entry(k.clone()).or_default().push(v.clone());
    }
    for (k, v) in path_params {
        params.insert(k.clone(), vec![v.clone()]);
    }
    validate(route, &params)?;
    let ctx = Ctx {
        shared,
        user,
        params,
    };
    if ctx.params.contains_key("node")
        && route.id != RouteId::Ticket
        && st.node(ctx.node()).is_none()
    {
        let n = ctx.node();
        return Err(ApiErr::new(
            500,
            format!(
                "hostname lookup '{n}' failed - failed to get address info for: {n}: Name or service not known"
            ),
        ));
    }
    match route.id {
        RouteId::Version => Ok(Reply::data(handlers::version(st.mode))),
        RouteId::Ticket => handlers::ticket(&ctx, st),
        RouteId::ClusterResources => Ok(Reply::data(handlers::cluster_resources(&ctx, st))),
        RouteId::MetricsExport => Ok(Reply::data(handlers::metrics_export(&ctx, st))),
        RouteId::Nodes => Ok(Reply::data(handlers::nodes(st))),
        RouteId::NodeRrd => handlers::node_rrd(&ctx, st),
        RouteId::VmList => Ok(Reply::data(handlers::vm_list(&ctx, st))),
        RouteId::VmCreate => handlers::vm_create(&ctx, st),
        RouteId::VmDelete => handlers::vm_delete(&ctx, st),
        RouteId::VmStatus => Ok(Reply::data(super::metrics::vm_status(
            handlers::vm_ref(st, &ctx)?,
            st.mode,
            now(),
        ))),
        RouteId::VmStart | RouteId::VmStop | RouteId::VmShutdown | RouteId::VmReboot => {
            handlers::power(&ctx, st, route.id)
        }
        RouteId::ConfigGet => handlers::config_get(&ctx, st),
        RouteId::ConfigPost => handlers::config_update(&ctx, st, true),
        RouteId::ConfigPut => handlers::config_update(&ctx, st, false),
        RouteId::Clone => handlers::clone_vm(&ctx, st),
        RouteId::Resize => handlers::resize(&ctx, st),
        RouteId::VmRrd => handlers::vm_rrd(&ctx, st),
        RouteId::AgentFileWrite => handlers::agent_file_write(&ctx, st),
        RouteId::AgentExec => handlers::agent_exec(&ctx, st),
        RouteId::AgentExecStatus => handlers::agent_exec_status(&ctx, st),
        RouteId::TaskStatus => handlers::task_status(&ctx, st),
        RouteId::TaskLog => handlers::task_log(&ctx, st),
        RouteId::StorageContent => handlers::storage_content(&ctx, st),
        RouteId::Vzdump => handlers::vzdump(&ctx, st),
    }
}

/// An answer for paths outside `/api2/json`.
pub(crate) fn not_found(path: &str) -> Response {
    ApiErr::new(
        404,
        format!("no such path '{path}' (the api lives under /api2/json)"),
    )
    .into_response()
}

/// Wraps a body for the admin endpoints.
pub(crate) fn json_response(v: Value) -> Response {
    (StatusCode::OK, axum::Json(v)).into_response()
}

/// An empty 200 answer body.
pub(crate) fn empty() -> Response {
    Response::new(Body::empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_simulator_format_is_known() {
        for r in routes() {
            for p in &r.params {
                if let Some(f) = p.format {
                    assert!(
                        formats::is_known(f),
                        "{} {} {}: unknown format {f}",
                        r.method,
                        r.path,
                        p.name
                    );
                }
            }
        }
    }

    #[test]
    fn templates_match_concrete_paths() {
        let (r, p) = match_route("GET", "/nodes/pve1/qemu/100/status/current").expect("matches");
        assert_eq!(r.path, "/nodes/{node}/qemu/{vmid}/status/current");
        assert_eq!(
            p,
            vec![
                ("node".into(), "pve1".into()),
                ("vmid".into(), "100".into())
            ]
        );
        let upid = "UPID:pve1:00001001:00000001:65B4F2A1:qmstart:100:root@pam!vigie:";
        let (r, p) = match_route("GET", &format!("/nodes/pve1/tasks/{upid}/log")).expect("matches");
        assert_eq!(r.id, RouteId::TaskLog);
        assert_eq!(p[1].1, upid);
        assert!(match_route("GET", "/nodes/pve1/qemu/100/nope").is_none());
        assert!(match_route("PATCH", "/version").is_none());
    }

    #[test]
    fn indexed_parameters() {
        let spec = s("scsi[n]");
        assert!(spec.matches("scsi0"));
        assert!(spec.matches("scsi30"));
        assert!(!spec.matches("scsi31"));
        assert!(!spec.matches("scsi"));
        assert!(!spec.matches("scsihw"));
    }

    #[test]
    fn validation_like_pve() {
        let route = match_route("PUT", "/nodes/pve1/qemu/100/config")
            .expect("route")
            .0;
        let mut params = BTreeMap::new();
        params.insert("node".to_string(), vec!["pve1".to_string()]);
        params.insert("vmid".to_string(), vec!["100".to_string()]);
        params.insert("cores".to_string(), vec!["two".to_string()]);
        params.insert("bogus".to_string(), vec!["1".to_string()]);
        params.insert("onboot".to_string(), vec!["true".to_string()]);
        params.insert("ipconfig0".to_string(), vec!["ip=10.0.0.1".to_string()]);
        let err = validate(route, &params).expect_err("invalid");
        assert_eq!(err.status, 400);
        assert!(err.errors["bogus"].contains("not defined in schema"));
        assert!(err.errors["cores"].contains("type check ('integer')"));
        assert!(err.errors["onboot"].contains("type check ('boolean')"));
        assert!(err.errors["ipconfig0"].starts_with("invalid format"));
    }
}

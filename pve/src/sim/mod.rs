//! The Proxmox VE simulator: a stateful HTTP server speaking the subset of the PVE API that
//! [`crate::client::Client`] uses, with the same JSON shapes and error conventions.
//!
//! What it simulates:
//! - a cluster of 1–3 nodes (`pve1`…`pve3`), each with storages `local` (backups, ISOs) and
//!   `local-lvm` (disks); a template 9000 (`debian-12-cloud`, guest agent enabled), VMs 100
//!   (running), 101 (stopped), 200 on `pve2`, 300 on `pve3`;
//! - authentication: API tokens (`Authorization: PVEAPIToken=…`, no CSRF) and tickets
//!   (`POST /access/ticket` → `PVEAuthCookie` + `CSRFPreventionToken`; a mutation with a ticket
//!   but without the CSRF header is refused with 401; tickets expire after the configured
//!   lifetime and can be renewed by posting the ticket as the password); 401 without
//!   credentials. Privileges are not modelled (no 403).
//! - parameters checked like PVE: unknown parameters, missing required ones, wrong types
//!   (booleans must be `0`/`1`), enums, lengths and formats answer 400
//!   `{"data":null,"errors":{…},"message":"Parameter verification failed.\n"}`;
//! - UPID tasks that take time (configurable), write log lines and end with `TASK OK` or
//!   `TASK ERROR: …`; VM locks during create/clone/backup (`VM is locked (clone)`, 500);
//!   the power state machine (start/stop/shutdown/reboot), clone (full/linked), resize,
//!   delete, cloud-init keys, pending changes (CPU/memory of a running VM apply at the next
//!   start);
//! - metrics consistent with the VM states (see `sim/metrics.rs`), RRD data in the PVE 8 or PVE 9
//!   layout, `/cluster/metrics/export`; `RRD error: … No such file or directory` during the
//!   first 10 s of a new VM, like a real node before pvestatd creates the archive;
//! - the guest agent on running VMs whose config has `agent: 1`: `file-write` stores the
//!   content ([`Sim::agent_files`]), `exec` records the command ([`Sim::agent_commands`]) and
//!   returns a pid, and `exec-status` always answers `exited: 1, exitcode: 0` with empty
//!   output — commands do not run;
//! - faults, from Rust ([`Sim::drop_connections`], [`Sim::fail_tasks`], [`Sim::slow_tasks`])
//!   or over HTTP (`POST /_sim/faults`): connections closed without an answer (after the
//!   request was read, before it is processed), tasks failing with a given message, tasks
//!   taking longer.
//!
//! Every request is recorded ([`Sim::requests`], `GET /_sim/requests`) for contract checks.
//! The admin endpoints under `/_sim/` need no authentication: bind the simulator to
//! loopback.

mod handlers;
pub(crate) mod metrics;
mod routes;
mod state;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request, State as AxState};
use axum::http::Method;
use axum::response::Response;
use axum::routing::get;
use hyper::service::Service as _;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use serde::Deserialize;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

pub use routes::{ParamKind, ParamSpec, RouteSpec, routes};
pub use state::{AgentCommand, DropRule, FailRule, RecordedRequest, SlowRule};

use crate::tls::Fingerprint;
use state::Shared;

/// The password of `root@pam` in the default configuration.
pub const DEFAULT_PASSWORD: &str = "vigie-sim";
/// The default API token id (`user@realm!tokenid`).
pub const DEFAULT_TOKEN_ID: &str = "root@pam!vigie";
/// The default API token secret.
pub const DEFAULT_TOKEN_SECRET: &str = "5ec7e7a1-0d1c-4e2b-9b5a-7f0e3c2d1a00";

/// Which Proxmox release to imitate (version string, RRD layout, status fields).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
pub enum PveMode {
    /// PVE 8: RRD without `memhost` and pressure fields.
    Pve8,
    /// PVE 9: RRD and status with `memhost` and `pressure*`.
    Pve9,
}

/// Simulator settings.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Where to listen; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Cluster size, 1 to 3.
    pub nodes: usize,
    pub mode: PveMode,
    /// How long a task runs.
    pub task_duration: Duration,
    pub ticket_lifetime: Duration,
    /// `(user@realm, password)`
    pub users: Vec<(String, String)>,
    /// `(user@realm!tokenid, secret)`
    pub tokens: Vec<(String, String)>,
    /// Serve HTTPS with a freshly generated self-signed certificate.
    pub tls: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            nodes: 2,
            mode: PveMode::Pve9,
            task_duration: Duration::from_millis(300),
            ticket_lifetime: Duration::from_secs(2 * 3600),
            users: vec![("root@pam".into(), DEFAULT_PASSWORD.into())],
            tokens: vec![(DEFAULT_TOKEN_ID.into(), DEFAULT_TOKEN_SECRET.into())],
            tls: false,
        }
    }
}

/// Why the simulator could not start.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("cannot listen on {addr}: {source}; pick another address or port")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot set up the simulator's tls certificate: {0}")]
    Tls(String),
}

/// Faults to inject, as accepted by `POST /_sim/faults`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultRequest {
    /// New default task duration.
    pub task_duration_ms: Option<u64>,
    pub drop_connections: Option<DropSpec>,
    pub fail_tasks: Option<FailSpec>,
    pub slow_tasks: Option<SlowSpec>,
    /// Remove all pending fault rules first.
    #[serde(default)]
    pub clear: bool,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DropSpec {
    pub count: u32,
    pub method: Option<String>,
    pub path_contains: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailSpec {
    pub count: u32,
    pub task_type: Option<String>,
    pub message: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlowSpec {
    pub count: u32,
    pub task_type: Option<String>,
    pub duration_ms: u64,
}

/// A running simulator. Stops when dropped.
pub struct Sim {
    addr: SocketAddr,
    tls: bool,
    shared: Arc<Shared>,
    shutdown: Option<oneshot::Sender<()>>,
}

impl std::fmt::Debug for Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sim")
            .field("addr", &self.addr)
            .field("tls", &self.tls)
            .finish()
    }
}

/// The connection is closed without an answer (a drop rule matched).
#[derive(Debug, thiserror::Error)]
#[error("connection dropped by fault injection")]
struct Dropped;

impl Sim {
    /// Binds and starts serving in the background (on the current tokio runtime).
    pub async fn start(cfg: SimConfig) -> Result<Sim, SimError> {
        let listener = TcpListener::bind(cfg.listen)
            .await
            .map_err(|source| SimError::Bind {
                addr: cfg.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| SimError::Bind {
            addr: cfg.listen,
            source,
        })?;
        let (acceptor, fingerprint) = if cfg.tls {
            let (a, f) = tls_acceptor()?;
            (Some(a), Some(f))
        } else {
            (None, None)
        };
        let shared = Shared::new(state::State::new(&cfg), fingerprint);
        let router = router(Arc::clone(&shared));
        let (tx, rx) = oneshot::channel();
        tokio::spawn(serve(listener, Arc::clone(&shared), router, acceptor, rx));
        tracing::info!(%addr, tls = cfg.tls, nodes = cfg.nodes, mode = ?cfg.mode, "proxmox simulator listening");
        Ok(Sim {
            addr,
            tls: cfg.tls,
            shared,
            shutdown: Some(tx),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http(s)://ADDR/api2/json`
    pub fn base_url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}/api2/json", self.addr)
    }

    /// The SHA-256 fingerprint of the HTTPS certificate (to pin in the client).
    pub fn fingerprint(&self) -> Option<Fingerprint> {
        self.shared.tls_fingerprint
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().requests.clone()
    }

    pub fn clear_requests(&self) {
        self.shared.lock().requests.clear();
    }

    /// Closes the connection of the next `count` matching requests without answering.
    pub fn drop_connections(&self, count: u32, method: Option<&str>, path_contains: Option<&str>) {
        self.shared.lock().faults.drop.push(DropRule {
            method: method.map(str::to_string),
            path_contains: path_contains.map(str::to_string),
            remaining: count,
        });
    }

    /// Makes the next `count` tasks (of a type, or any) fail with `message`.
    pub fn fail_tasks(&self, count: u32, task_type: Option<&str>, message: &str) {
        self.shared.lock().faults.fail.push(FailRule {
            task_type: task_type.map(str::to_string),
            message: message.to_string(),
            remaining: count,
        });
    }

    /// Makes the next `count` tasks (of a type, or any) take `duration`.
    pub fn slow_tasks(&self, count: u32, task_type: Option<&str>, duration: Duration) {
        self.shared.lock().faults.slow.push(SlowRule {
            task_type: task_type.map(str::to_string),
            duration,
            remaining: count,
        });
    }

    pub fn set_task_duration(&self, d: Duration) {
        self.shared.lock().task_duration = d;
    }

    /// Files written through the guest agent of a VM.
    pub fn agent_files(&self, vmid: u32) -> BTreeMap<String, Vec<u8>> {
        self.shared
            .lock()
            .vms
            .get(&vmid)
            .map(|v| v.agent_files.clone())
            .unwrap_or_default()
    }

    /// Commands run through the guest agent of a VM.
    pub fn agent_commands(&self, vmid: u32) -> Vec<AgentCommand> {
        self.shared
            .lock()
            .vms
            .get(&vmid)
            .map(|v| v.agent_commands.clone())
            .unwrap_or_default()
    }

    pub fn vm_exists(&self, vmid: u32) -> bool {
        self.shared.lock().vms.contains_key(&vmid)
    }

    /// Invalidates every ticket (as if they had expired).
    pub fn expire_tickets(&self) {
        self.shared.lock().tickets.clear();
    }

    /// Makes a VM's RRD archive available now (skips the 10 s "no archive yet" period).
    pub fn make_rrd_ready(&self, vmid: u32) {
        if let Some(vm) = self.shared.lock().vms.get_mut(&vmid) {
            vm.rrd_ready_at = state::now();
        }
    }

    /// Stops accepting connections.
    pub fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

fn tls_acceptor() -> Result<(tokio_rustls::TlsAcceptor, Fingerprint), SimError> {
    let ck =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .map_err(|e| SimError::Tls(e.to_string()))?;
    let cert = ck.cert.der().clone();
    let fp = Fingerprint::of_der(cert.as_ref());
    let key = rustls_pki_types::PrivateKeyDer::Pkcs8(rustls_pki_types::PrivatePkcs8KeyDer::from(
        ck.key_pair.serialize_der(),
    ));
    let config = rustls::ServerConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| SimError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .map_err(|e| SimError::Tls(e.to_string()))?;
    Ok((tokio_rustls::TlsAcceptor::from(Arc::new(config)), fp))
}

async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    router: Router,
    tls: Option<tokio_rustls::TlsAcceptor>,
    mut shutdown: oneshot::Receiver<()>,
) {
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            a = listener.accept() => a,
        };
        let (stream, _peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                tracing::debug!(error = %e, "simulator accept failed");
                continue;
            }
        };
        let shared = Arc::clone(&shared);
        let router = router.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                on_request(Arc::clone(&shared), router.clone(), req)
            });
            let http = hyper::server::conn::http1::Builder::new();
            let result = match tls {
                Some(acceptor) => match acceptor.accept(stream).await {
                    Ok(s) => http.serve_connection(TokioIo::new(s), svc).await,
                    Err(e) => {
                        tracing::debug!(error = %e, "simulator tls handshake failed");
                        return;
                    }
                },
                None => http.serve_connection(TokioIo::new(stream), svc).await,
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, "simulator connection ended");
            }
        });
    }
}

async fn on_request(
    shared: Arc<Shared>,
    router: Router,
    req: hyper::Request<hyper::body::Incoming>,
) -> Result<Response, Dropped> {
    let method = req.method().as_str().to_string();
    let path = req.uri().path().to_string();
    let drop = shared.lock().take_drop(&method, &path);
    if drop {
        let (parts, body) = req.into_parts();
        let bytes = axum::body::to_bytes(Body::new(body), 1 << 20)
            .await
            .unwrap_or_default();
        routes::record_dropped(
            &shared,
            &method,
            &path,
            parts.uri.query(),
            &parts.headers,
            &bytes,
        );
        tracing::debug!(%method, %path, "simulator drops the connection");
        return Err(Dropped);
    }
    let svc = TowerToHyperService::new(router);
    match svc.call(req).await {
        Ok(resp) => Ok(resp),
        Err(never) => match never {},
    }
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route(
            "/_sim/requests",
            get(admin_requests).delete(admin_clear_requests),
        )
        .route("/_sim/faults", get(admin_faults).post(admin_set_faults))
        .route("/_sim/vms/{vmid}/agent", get(admin_agent))
        .fallback(api)
        .with_state(shared)
}

/// 60 KiB of content plus encoding overhead; PVE limits POST bodies to 64 KiB.
const BODY_LIMIT: usize = 256 * 1024;

async fn api(AxState(shared): AxState<Arc<Shared>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let Some(path) = parts.uri.path().strip_prefix("/api2/json") else {
        return routes::not_found(parts.uri.path());
    };
    let path = if path.is_empty() { "/" } else { path };
    let bytes = match axum::body::to_bytes(body, BODY_LIMIT).await {
        Ok(b) => b,
        Err(_) => {
            return routes::json_response(
                json!({"data": null, "message": "request body too large\n"}),
            );
        }
    };
    let method = if parts.method == Method::HEAD {
        "GET"
    } else {
        parts.method.as_str()
    };
    routes::handle(
        &shared,
        method,
        path,
        parts.uri.query(),
        &parts.headers,
        &bytes,
    )
}

async fn admin_requests(AxState(shared): AxState<Arc<Shared>>) -> Response {
    let reqs = shared.lock().requests.clone();
    routes::json_response(serde_json::to_value(reqs).unwrap_or_default())
}

async fn admin_clear_requests(AxState(shared): AxState<Arc<Shared>>) -> Response {
    shared.lock().requests.clear();
    routes::empty()
}

async fn admin_faults(AxState(shared): AxState<Arc<Shared>>) -> Response {
    let st = shared.lock();
    routes::json_response(json!({
        "task_duration_ms": st.task_duration.as_millis() as u64,
        "faults": serde_json::to_value(&st.faults).unwrap_or_default(),
    }))
}

async fn admin_set_faults(
    AxState(shared): AxState<Arc<Shared>>,
    axum::Json(f): axum::Json<FaultRequest>,
) -> Response {
    let mut st = shared.lock();
    if f.clear {
        st.faults = state::Faults::default();
    }
    if let Some(ms) = f.task_duration_ms {
        st.task_duration = Duration::from_millis(ms);
    }
    if let Some(d) = f.drop_connections {
        st.faults.drop.push(DropRule {
            method: d.method,
            path_contains: d.path_contains,
            remaining: d.count,
        });
    }
    if let Some(t) = f.fail_tasks {
        st.faults.fail.push(FailRule {
            task_type: t.task_type,
            message: t.message,
            remaining: t.count,
        });
    }
    if let Some(s) = f.slow_tasks {
        st.faults.slow.push(SlowRule {
            task_type: s.task_type,
            duration: Duration::from_millis(s.duration_ms),
            remaining: s.count,
        });
    }
    routes::json_response(serde_json::to_value(&st.faults).unwrap_or_default())
}

async fn admin_agent(AxState(shared): AxState<Arc<Shared>>, Path(vmid): Path<u32>) -> Response {
    let st = shared.lock();
    let Some(vm) = st.vms.get(&vmid) else {
        return routes::json_response(json!({"error": format!("no vm {vmid}")}));
    };
    let files: BTreeMap<&String, String> = vm
        .agent_files
        .iter()
        .map(|(k, v)| (k, String::from_utf8_lossy(v).into_owned()))
        .collect();
    routes::json_response(json!({"files": files, "commands": vm.agent_commands}))
}

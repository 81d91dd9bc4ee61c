//! The Proxmox VE API client.
//!
//! One [`Client`] talks to one Proxmox endpoint (`https://host:8006/api2/json`). It
//! authenticates with an API token (`Authorization: PVEAPIToken=USER@REALM!TOKENID=SECRET`)
//! or with a ticket (`POST /access/ticket`, then the `PVEAuthCookie` cookie, plus the
//! `CSRFPreventionToken` header on POST/PUT/DELETE; the ticket is renewed before its two-hour
//! lifetime ends, and once more if PVE answers 401).
//!
//! Retries: GET requests are retried with exponential backoff and jitter when the connection
//! cannot be opened or drops before the answer, and on 502/503/504/595/596. A mutation is
//! retried only when the connection could not be opened (nothing was sent); if it drops
//! after sending, [`PveError::ResponseLost`] says so and nothing is retried.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::PveError;
use crate::ids::{NodeName, StorageId, Vmid};
use crate::params::{
    CloneOptions, ConfigUpdate, CreateVm, DeleteOptions, DiskResize, MetricsExportOptions, Params,
    VzdumpOptions, check_resize_disk,
};
use crate::tls::{self, TlsMode};
use crate::types::{
    AgentExecPid, AgentExecStatus, Cf, ClusterResource, ContentType, MetricSample, NodeRrdPoint,
    NodeSummary, ResourceType, RrdData, RrdSample, StorageContent, TaskExit, TaskLogLine,
    TaskOutcome, TaskState, TaskStatus, Timeframe, Version, VmConfig, VmRrdPoint, VmStatus,
    VmSummary,
};
use crate::upid::Upid;

/// One API call the client makes: method and PVE path template.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Endpoint {
    pub method: &'static str,
    pub path: &'static str,
}

const fn ep(method: &'static str, path: &'static str) -> Endpoint {
    Endpoint { method, path }
}

/// Every (method, path template) this client calls. The contract test checks each against
/// the PVE API schema and the simulator, and that the scenario exercises all of them.
pub const ENDPOINTS: &[Endpoint] = &[
    ep("GET", "/version"),
    ep("POST", "/access/ticket"),
    ep("GET", "/cluster/resources"),
    ep("GET", "/cluster/metrics/export"),
    ep("GET", "/nodes"),
    ep("GET", "/nodes/{node}/rrddata"),
    ep("GET", "/nodes/{node}/qemu"),
    ep("POST", "/nodes/{node}/qemu"),
    ep("DELETE", "/nodes/{node}/qemu/{vmid}"),
    ep("GET", "/nodes/{node}/qemu/{vmid}/status/current"),
    ep("POST", "/nodes/{node}/qemu/{vmid}/status/start"),
    ep("POST", "/nodes/{node}/qemu/{vmid}/status/stop"),
    ep("POST", "/nodes/{node}/qemu/{vmid}/status/shutdown"),
    ep("POST", "/nodes/{node}/qemu/{vmid}/status/reboot"),
    ep("GET", "/nodes/{node}/qemu/{vmid}/config"),
    ep("POST", "/nodes/{node}/qemu/{vmid}/config"),
    ep("PUT", "/nodes/{node}/qemu/{vmid}/config"),
    ep("POST", "/nodes/{node}/qemu/{vmid}/clone"),
    ep("PUT", "/nodes/{node}/qemu/{vmid}/resize"),
    ep("GET", "/nodes/{node}/qemu/{vmid}/rrddata"),
    ep("POST", "/nodes/{node}/qemu/{vmid}/agent/file-write"),
    ep("POST", "/nodes/{node}/qemu/{vmid}/agent/exec"),
    ep("GET", "/nodes/{node}/qemu/{vmid}/agent/exec-status"),
    ep("GET", "/nodes/{node}/tasks/{upid}/status"),
    ep("GET", "/nodes/{node}/tasks/{upid}/log"),
    ep("GET", "/nodes/{node}/storage/{storage}/content"),
    ep("POST", "/nodes/{node}/vzdump"),
];

/// How many trailing log lines a [`PveError::TaskFailed`] carries.
pub const TASK_ERROR_TAIL: usize = 10;

/// Most log lines [`Client::wait_task`] collects.
const TASK_LOG_CAP: u64 = 10_000;
const TASK_LOG_PAGE: u64 = 1_000;

/// PVE's ticket lifetime.
pub const TICKET_LIFETIME: Duration = Duration::from_secs(2 * 3600);

/// `guest-file-write` limit of PVE's `file-write` (`content` maxLength 60 KiB).
pub const AGENT_FILE_MAX: usize = 60 * 1024;

/// An API token: `USER@REALM!TOKENID=SECRET`.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiToken {
    /// `user@realm`
    pub user: String,
    pub token_id: String,
    pub secret: String,
}

impl ApiToken {
    /// `user@realm!tokenid`
    pub fn full_id(&self) -> String {
        format!("{}!{}", self.user, self.token_id)
    }

    fn header(&self) -> String {
        format!(
            "PVEAPIToken={}!{}={}",
            self.user, self.token_id, self.secret
        )
    }
}

impl fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ApiToken({}!{}, secret hidden)",
            self.user, self.token_id
        )
    }
}

impl FromStr for ApiToken {
    type Err = PveError;

    /// Parses `USER@REALM!TOKENID=SECRET` (an optional `PVEAPIToken=` prefix is allowed).
    fn from_str(s: &str) -> Result<Self, PveError> {
        let shown = s.split('=').next().unwrap_or_default().to_string();
        let bad = |reason: &str| PveError::invalid("api token", format!("{shown}=…"), reason);
        let s = s.trim();
        let s = s.strip_prefix("PVEAPIToken=").unwrap_or(s);
        let (id, secret) = s.split_once('=').ok_or_else(|| {
            bad("expected USER@REALM!TOKENID=SECRET (the '=SECRET' part is missing)")
        })?;
        let (user, token_id) = id.split_once('!').ok_or_else(|| {
            bad("expected USER@REALM!TOKENID=SECRET (the '!TOKENID' part is missing)")
        })?;
        let (name, realm) = user
            .split_once('@')
            .ok_or_else(|| bad("the user needs a realm, e.g. root@pam"))?;
        if name.is_empty() || realm.is_empty() || token_id.is_empty() || secret.is_empty() {
            return Err(bad(
                "user, realm, token id and secret must all be non-empty",
            ));
        }
        Ok(ApiToken {
            user: user.to_string(),
            token_id: token_id.to_string(),
            secret: secret.to_string(),
        })
    }
}

/// How the client authenticates.
#[derive(Clone)]
pub enum Auth {
    Token(ApiToken),
    /// Ticket login with `user@realm` and password.
    Password {
        username: String,
        password: String,
    },
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::Token(t) => write!(f, "Auth::Token({t:?})"),
            Auth::Password { username, .. } => {
                write!(f, "Auth::Password({username}, password hidden)")
            }
        }
    }
}

/// Retries of idempotent requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total attempts, including the first (1 disables retries).
    pub attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 4,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(3),
        }
    }
}

impl RetryPolicy {
    fn delay(&self, attempt: u32) -> Duration {
        let exp = self.base_delay.saturating_mul(
            1u32.checked_shl(attempt.saturating_sub(1))
                .unwrap_or(u32::MAX),
        );
        let capped = exp.min(self.max_delay);
        // Full jitter between half and all of the delay.
        let half = capped / 2;
        half + rand::thread_rng().gen_range(Duration::ZERO..=half)
    }
}

/// Builds a [`Client`].
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    base_url: String,
    auth: Option<Auth>,
    tls: TlsMode,
    request_timeout: Duration,
    connect_timeout: Duration,
    retry: RetryPolicy,
    ticket_refresh_after: Duration,
}

impl ClientBuilder {
    /// `https://host:8006` or `https://host:8006/api2/json` (`http://` only for the simulator).
    pub fn new(base_url: impl Into<String>) -> Self {
        ClientBuilder {
            base_url: base_url.into(),
            auth: None,
            tls: TlsMode::WebPki,
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            retry: RetryPolicy::default(),
            ticket_refresh_after: TICKET_LIFETIME - Duration::from_secs(15 * 60),
        }
    }

    pub fn auth(mut self, auth: Auth) -> Self {
        self.auth = Some(auth);
        self
    }

    pub fn token(self, token: ApiToken) -> Self {
        self.auth(Auth::Token(token))
    }

    pub fn password(self, username: impl Into<String>, password: impl Into<String>) -> Self {
        self.auth(Auth::Password {
            username: username.into(),
            password: password.into(),
        })
    }

    pub fn tls(mut self, tls: TlsMode) -> Self {
        self.tls = tls;
        self
    }

    pub fn request_timeout(mut self, d: Duration) -> Self {
        self.request_timeout = d;
        self
    }

    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = d;
        self
    }

    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Renew the ticket once it is this old (default 1 h 45 min; PVE tickets last 2 h).
    pub fn ticket_refresh_after(mut self, d: Duration) -> Self {
        self.ticket_refresh_after = d;
        self
    }

    pub fn build(self) -> Result<Client, PveError> {
        let mut base = self.base_url.trim().trim_end_matches('/').to_string();
        if !base.ends_with("/api2/json") {
            base.push_str("/api2/json");
        }
        let url = reqwest::Url::parse(&base).map_err(|e| {
            PveError::Config(format!(
                "base url '{}' is not a url ({e}); use https://HOST:8006",
                self.base_url
            ))
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(PveError::Config(format!(
                "base url '{}' must start with https:// (http:// only for the simulator)",
                self.base_url
            )));
        }
        let host = url.host_str().unwrap_or_default().to_string();
        let auth = match self.auth {
            None => {
                return Err(PveError::Config(
                    "no credentials: give an api token (USER@REALM!TOKENID=SECRET) or a user and password".into(),
                ));
            }
            Some(Auth::Token(t)) => AuthState::Token(t.header()),
            Some(Auth::Password { username, password }) => {
                if !username.contains('@') {
                    return Err(PveError::Config(format!(
                        "user '{username}' has no realm; write it as user@pam or user@pve"
                    )));
                }
                AuthState::Ticket(TicketAuth {
                    username,
                    password,
                    refresh_after: self.ticket_refresh_after,
                    current: tokio::sync::Mutex::new(None),
                })
            }
        };
        let tls_config = tls::client_config(&self.tls)?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls_config)
            .timeout(self.request_timeout)
            .connect_timeout(self.connect_timeout)
            .pool_idle_timeout(Duration::from_secs(30))
            .user_agent(concat!("vigie-pve/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| PveError::Config(format!("http client setup failed: {e}")))?;
        Ok(Client {
            inner: Arc::new(Inner {
                http,
                base,
                host,
                auth,
                retry: self.retry,
                request_timeout: self.request_timeout,
            }),
        })
    }
}

struct TicketAuth {
    username: String,
    password: String,
    refresh_after: Duration,
    current: tokio::sync::Mutex<Option<Ticket>>,
}

#[derive(Clone)]
struct Ticket {
    ticket: String,
    csrf: String,
    obtained: Instant,
}

enum AuthState {
    Token(String),
    Ticket(TicketAuth),
}

struct Inner {
    http: reqwest::Client,
    base: String,
    host: String,
    auth: AuthState,
    retry: RetryPolicy,
    request_timeout: Duration,
}

/// A Proxmox VE API client. Cheap to clone; clones share connections and the ticket.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let auth = match &self.inner.auth {
            AuthState::Token(_) => "token".to_string(),
            AuthState::Ticket(t) => format!("ticket for {}", t.username),
        };
        f.debug_struct("Client")
            .field("base", &self.inner.base)
            .field("auth", &auth)
            .finish()
    }
}

/// A complete HTTP answer.
struct Raw {
    status: StatusCode,
    reason: Option<String>,
    body: Vec<u8>,
}

enum Failure {
    /// Nothing was sent (connection refused, TLS refused): safe to retry anything.
    NotSent(String),
    /// The request may have been processed.
    MaybeSent(String),
    Timeout,
    Fatal(PveError),
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    errors: Option<serde_json::Map<String, Value>>,
}

#[derive(Deserialize)]
struct TicketData {
    #[serde(default)]
    ticket: Option<String>,
    #[serde(default, rename = "CSRFPreventionToken")]
    csrf: Option<String>,
    #[serde(default, rename = "NeedTFA")]
    need_tfa: Option<Value>,
}

const RETRY_STATUSES: &[u16] = &[502, 503, 504, 595, 596];

/// Characters escaped in a path segment (UPIDs keep their `:`, `@` and `!`).
const PATH_SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'/')
    .add(b'%');

const COOKIE_VALUE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b':')
    .remove(b'@')
    .remove(b'!')
    .remove(b'-')
    .remove(b'_')
    .remove(b'.');

fn seg(s: &str) -> percent_encoding::PercentEncode<'_> {
    percent_encoding::utf8_percent_encode(s, PATH_SEGMENT)
}

fn vm_path(node: &NodeName, vmid: Vmid, rest: &str) -> String {
    format!("/nodes/{node}/qemu/{vmid}{rest}")
}

impl Client {
    pub fn builder(base_url: impl Into<String>) -> ClientBuilder {
        ClientBuilder::new(base_url)
    }

    /// The API base, e.g. `https://pve1:8006/api2/json`.
    pub fn base_url(&self) -> &str {
        &self.inner.base
    }

    // ---- transport ------------------------------------------------------------------------

    async fn send_once(
        &self,
        method: &Method,
        path: &str,
        params: &Params,
        headers: &[(String, String)],
    ) -> Result<Raw, reqwest::Error> {
        let url = format!("{}{}", self.inner.base, path);
        let mut req = self.inner.http.request(method.clone(), url);
        if *method == Method::GET || *method == Method::DELETE {
            if !params.is_empty() {
                req = req.query(&params.0);
            }
        } else {
            req = req.form(&params.0);
        }
        for (k, v) in headers {
            req = req.header(k, v);
        }
        let resp = req.send().await?;
        let status = resp.status();
        let reason = resp
            .extensions()
            .get::<hyper::ext::ReasonPhrase>()
            .and_then(|r| std::str::from_utf8(r.as_bytes()).ok())
            .map(str::to_string);
        let body = resp.bytes().await?.to_vec();
        Ok(Raw {
            status,
            reason,
            body,
        })
    }

    fn classify(&self, e: &reqwest::Error) -> Failure {
        if let Some((expected, seen)) = tls::find_mismatch(e) {
            return Failure::Fatal(PveError::FingerprintMismatch {
                host: self.inner.host.clone(),
                expected,
                seen,
            });
        }
        if let Some(detail) = tls::find_tls_error(e) {
            return Failure::Fatal(PveError::Tls {
                host: self.inner.host.clone(),
                detail,
            });
        }
        let detail = error_chain(e);
        if e.is_timeout() {
            Failure::Timeout
        } else if e.is_connect() {
            Failure::NotSent(detail)
        } else {
            Failure::MaybeSent(detail)
        }
    }

    async fn auth_headers(&self, method: &Method) -> Result<Vec<(String, String)>, PveError> {
        match &self.inner.auth {
            AuthState::Token(h) => Ok(vec![("Authorization".into(), h.clone())]),
            AuthState::Ticket(t) => {
                let ticket = self.ensure_ticket(t, false).await?;
                let mut h = vec![(
                    "Cookie".to_string(),
                    format!(
                        "PVEAuthCookie={}",
                        percent_encoding::utf8_percent_encode(&ticket.ticket, COOKIE_VALUE)
                    ),
                )];
                if *method != Method::GET {
                    h.push(("CSRFPreventionToken".into(), ticket.csrf));
                }
                Ok(h)
            }
        }
    }

    async fn ensure_ticket(&self, t: &TicketAuth, force: bool) -> Result<Ticket, PveError> {
        let mut cur = t.current.lock().await;
        if let Some(tk) = cur.as_ref()
            && !force
            && tk.obtained.elapsed() < t.refresh_after
        {
            return Ok(tk.clone());
        }
        let fresh = self.login_raw(&t.username, &t.password).await?;
        *cur = Some(fresh.clone());
        Ok(fresh)
    }

    async fn login_raw(&self, username: &str, password: &str) -> Result<Ticket, PveError> {
        let mut p = Params::new();
        p.str("username", username).str("password", password);
        // Sent directly (not through `execute_full`, which authenticates with this ticket).
        // A login changes nothing, so it is retried on any connection failure.
        let policy = self.inner.retry;
        let mut attempt = 0;
        let data = loop {
            attempt += 1;
            match self
                .send_once(&Method::POST, "/access/ticket", &p, &[])
                .await
            {
                Ok(raw) => break decode_raw("POST", "/access/ticket", raw)?.0,
                Err(e) => match self.classify(&e) {
                    Failure::Fatal(err) => return Err(err),
                    _ if attempt < policy.attempts.max(1) => {
                        tokio::time::sleep(policy.delay(attempt)).await
                    }
                    Failure::Timeout => {
                        return Err(PveError::Timeout {
                            what: "POST /access/ticket to answer".into(),
                            after: self.inner.request_timeout,
                        });
                    }
                    Failure::NotSent(detail) | Failure::MaybeSent(detail) => {
                        return Err(PveError::Connection {
                            url: format!("{}/access/ticket", self.inner.base),
                            detail,
                        });
                    }
                },
            }
        };
        let t: TicketData =
            serde_json::from_value(data).map_err(|e| decode_err("POST", "/access/ticket", e))?;
        if t.need_tfa.as_ref().and_then(crate::de::value_bool) == Some(true)
            || t.ticket.as_deref().is_some_and(|tk| tk.contains("!tfa!"))
        {
            return Err(PveError::Api {
                method: "POST".into(),
                path: "/access/ticket".into(),
                status: 401,
                message: format!(
                    "user {username} has two-factor authentication enabled; use an api token for vigie"
                ),
                errors: Default::default(),
            });
        }
        match (t.ticket, t.csrf) {
            (Some(ticket), Some(csrf)) => Ok(Ticket {
                ticket,
                csrf,
                obtained: Instant::now(),
            }),
            _ => Err(decode_err(
                "POST",
                "/access/ticket",
                "the answer has no ticket or CSRFPreventionToken",
            )),
        }
    }

    /// Sends with authentication and retries; returns `(data, total)` of a 2xx answer.
    async fn execute_full(
        &self,
        method: Method,
        path: &str,
        params: &Params,
    ) -> Result<(Value, Option<u64>), PveError> {
        let idempotent = method == Method::GET;
        let policy = self.inner.retry;
        let mut attempt = 0u32;
        let mut reauthed = false;
        loop {
            attempt += 1;
            let hdrs = self.auth_headers(&method).await?;
            let can_retry = attempt < policy.attempts.max(1);
            match self.send_once(&method, path, params, &hdrs).await {
                Ok(raw) => {
                    if raw.status == StatusCode::UNAUTHORIZED
                        && !reauthed
                        && let AuthState::Ticket(t) = &self.inner.auth
                    {
                        // The ticket may have expired server-side: log in again once.
                        // A 401 means nothing was executed, so resending is safe.
                        reauthed = true;
                        attempt -= 1;
                        self.ensure_ticket(t, true).await?;
                        continue;
                    }
                    if idempotent && can_retry && RETRY_STATUSES.contains(&raw.status.as_u16()) {
                        tracing::debug!(
                            path,
                            status = raw.status.as_u16(),
                            attempt,
                            "retrying proxmox GET"
                        );
                        tokio::time::sleep(policy.delay(attempt)).await;
                        continue;
                    }
                    return decode_raw(method.as_str(), path, raw);
                }
                Err(e) => match self.classify(&e) {
                    Failure::Fatal(err) => return Err(err),
                    Failure::NotSent(detail) => {
                        if can_retry {
                            tracing::debug!(path, attempt, %detail, "proxmox connection failed, retrying");
                            tokio::time::sleep(policy.delay(attempt)).await;
                            continue;
                        }
                        return Err(PveError::Connection {
                            url: format!("{}{}", self.inner.base, path),
                            detail,
                        });
                    }
                    Failure::MaybeSent(detail) => {
                        if !idempotent {
                            return Err(PveError::ResponseLost {
                                method: method.to_string(),
                                path: path.to_string(),
                                detail,
                            });
                        }
                        if can_retry {
                            tracing::debug!(path, attempt, %detail, "proxmox connection dropped, retrying GET");
                            tokio::time::sleep(policy.delay(attempt)).await;
                            continue;
                        }
                        return Err(PveError::Connection {
                            url: format!("{}{}", self.inner.base, path),
                            detail: format!("{detail} (after {attempt} attempts)"),
                        });
                    }
                    Failure::Timeout => {
                        if !idempotent {
                            return Err(PveError::ResponseLost {
                                method: method.to_string(),
                                path: path.to_string(),
                                detail: format!(
                                    "no answer within {:?}",
                                    self.inner.request_timeout
                                ),
                            });
                        }
                        if can_retry {
                            tokio::time::sleep(policy.delay(attempt)).await;
                            continue;
                        }
                        return Err(PveError::Timeout {
                            what: format!("GET {path} to answer ({attempt} attempts)"),
                            after: self.inner.request_timeout,
                        });
                    }
                },
            }
        }
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        params: Params,
    ) -> Result<T, PveError> {
        let m = method.to_string();
        let (data, _) = self.execute_full(method, path, &params).await?;
        serde_json::from_value(data).map_err(|e| decode_err(&m, path, e))
    }

    async fn get<T: DeserializeOwned>(&self, path: &str, params: Params) -> Result<T, PveError> {
        self.call(Method::GET, path, params).await
    }

    async fn upid_call(
        &self,
        method: Method,
        path: &str,
        params: Params,
    ) -> Result<Upid, PveError> {
        self.call(method, path, params).await
    }

    // ---- authentication -------------------------------------------------------------------

    /// Logs in now (ticket auth) or checks the token by reading `/version`.
    pub async fn login(&self) -> Result<(), PveError> {
        match &self.inner.auth {
            AuthState::Ticket(t) => self.ensure_ticket(t, true).await.map(|_| ()),
            AuthState::Token(_) => self.version().await.map(|_| ()),
        }
    }

    // ---- cluster and nodes ----------------------------------------------------------------

    /// `GET /version`
    pub async fn version(&self) -> Result<Version, PveError> {
        self.get("/version", Params::new()).await
    }

    /// `GET /cluster/resources[?type=…]`
    pub async fn cluster_resources(
        &self,
        kind: Option<ResourceType>,
    ) -> Result<Vec<ClusterResource>, PveError> {
        let mut p = Params::new();
        p.opt("type", kind.map(ResourceType::as_str));
        self.get("/cluster/resources", p).await
    }

    /// `GET /nodes`
    pub async fn nodes(&self) -> Result<Vec<NodeSummary>, PveError> {
        self.get("/nodes", Params::new()).await
    }

    /// `GET /nodes/{node}/rrddata`
    pub async fn node_rrddata(
        &self,
        node: &NodeName,
        timeframe: Timeframe,
        cf: Cf,
    ) -> Result<RrdData<NodeRrdPoint>, PveError> {
        self.rrd(format!("/nodes/{node}/rrddata"), timeframe, cf)
            .await
    }

    /// `GET /cluster/metrics/export`
    pub async fn metrics_export(
        &self,
        opts: &MetricsExportOptions,
    ) -> Result<Vec<MetricSample>, PveError> {
        let data: Option<Vec<MetricSample>> =
            self.get("/cluster/metrics/export", opts.params()).await?;
        Ok(data.unwrap_or_default())
    }

    // ---- VMs ------------------------------------------------------------------------------

    /// `GET /nodes/{node}/qemu`
    pub async fn vms(&self, node: &NodeName) -> Result<Vec<VmSummary>, PveError> {
        self.get(&format!("/nodes/{node}/qemu"), Params::new())
            .await
    }

    /// `GET /nodes/{node}/qemu/{vmid}/status/current`
    pub async fn vm_status(&self, node: &NodeName, vmid: Vmid) -> Result<VmStatus, PveError> {
        self.get(&vm_path(node, vmid, "/status/current"), Params::new())
            .await
    }

    /// `GET .../config` — with pending changes applied (`current = false`, PVE's default) or
    /// the running values (`current = true`).
    pub async fn vm_config(
        &self,
        node: &NodeName,
        vmid: Vmid,
        current: bool,
    ) -> Result<VmConfig, PveError> {
        let mut p = Params::new();
        if current {
            p.bool("current", true);
        }
        self.get(&vm_path(node, vmid, "/config"), p).await
    }

    /// `POST .../config`: asynchronous; returns the task (PVE may answer `null` when the
    /// change finished at once).
    pub async fn update_vm_config(
        &self,
        node: &NodeName,
        vmid: Vmid,
        update: &ConfigUpdate,
    ) -> Result<Option<Upid>, PveError> {
        self.call(
            Method::POST,
            &vm_path(node, vmid, "/config"),
            update.params()?,
        )
        .await
    }

    /// `PUT .../config`: synchronous.
    pub async fn update_vm_config_sync(
        &self,
        node: &NodeName,
        vmid: Vmid,
        update: &ConfigUpdate,
    ) -> Result<(), PveError> {
        let _: Value = self
            .call(
                Method::PUT,
                &vm_path(node, vmid, "/config"),
                update.params()?,
            )
            .await?;
        Ok(())
    }

    /// Sets cloud-init settings (`PUT .../config` with `ciuser`, `sshkeys`, `ipconfigN`,
    /// `nameserver`, …).
    pub async fn set_cloud_init(
        &self,
        node: &NodeName,
        vmid: Vmid,
        ci: &crate::params::CloudInit,
    ) -> Result<(), PveError> {
        let update = ConfigUpdate {
            cloud_init: ci.clone(),
            ..ConfigUpdate::default()
        };
        self.update_vm_config_sync(node, vmid, &update).await
    }

    /// `POST /nodes/{node}/qemu`
    pub async fn create_vm(&self, node: &NodeName, vm: &CreateVm) -> Result<Upid, PveError> {
        self.upid_call(Method::POST, &format!("/nodes/{node}/qemu"), vm.params()?)
            .await
    }

    /// `POST .../clone`
    pub async fn clone_vm(
        &self,
        node: &NodeName,
        vmid: Vmid,
        newid: Vmid,
        opts: &CloneOptions,
    ) -> Result<Upid, PveError> {
        self.upid_call(
            Method::POST,
            &vm_path(node, vmid, "/clone"),
            opts.params(newid)?,
        )
        .await
    }

    /// `PUT .../resize` — returns the task on PVE 8+, `None` on older releases.
    pub async fn resize_disk(
        &self,
        node: &NodeName,
        vmid: Vmid,
        disk: &str,
        size: &DiskResize,
    ) -> Result<Option<Upid>, PveError> {
        check_resize_disk(disk)?;
        let mut p = Params::new();
        p.str("disk", disk).str("size", size.param()?);
        self.call(Method::PUT, &vm_path(node, vmid, "/resize"), p)
            .await
    }

    /// `POST .../status/start`
    pub async fn start_vm(&self, node: &NodeName, vmid: Vmid) -> Result<Upid, PveError> {
        self.upid_call(
            Method::POST,
            &vm_path(node, vmid, "/status/start"),
            Params::new(),
        )
        .await
    }

    /// `POST .../status/stop` (hard stop)
    pub async fn stop_vm(&self, node: &NodeName, vmid: Vmid) -> Result<Upid, PveError> {
        self.upid_call(
            Method::POST,
            &vm_path(node, vmid, "/status/stop"),
            Params::new(),
        )
        .await
    }

    /// `POST .../status/shutdown` (ACPI or agent); `force_stop` stops the VM after `timeout`.
    pub async fn shutdown_vm(
        &self,
        node: &NodeName,
        vmid: Vmid,
        timeout: Option<Duration>,
        force_stop: bool,
    ) -> Result<Upid, PveError> {
        let mut p = Params::new();
        p.opt("timeout", timeout.map(|d| d.as_secs()));
        if force_stop {
            p.bool("forceStop", true);
        }
        self.upid_call(Method::POST, &vm_path(node, vmid, "/status/shutdown"), p)
            .await
    }

    /// `POST .../status/reboot`
    pub async fn reboot_vm(&self, node: &NodeName, vmid: Vmid) -> Result<Upid, PveError> {
        self.upid_call(
            Method::POST,
            &vm_path(node, vmid, "/status/reboot"),
            Params::new(),
        )
        .await
    }

    /// `DELETE /nodes/{node}/qemu/{vmid}` (the VM must be stopped).
    pub async fn delete_vm(
        &self,
        node: &NodeName,
        vmid: Vmid,
        opts: DeleteOptions,
    ) -> Result<Upid, PveError> {
        let mut p = Params::new();
        if opts.purge {
            p.bool("purge", true);
        }
        if opts.destroy_unreferenced_disks {
            p.bool("destroy-unreferenced-disks", true);
        }
        self.upid_call(Method::DELETE, &vm_path(node, vmid, ""), p)
            .await
    }

    /// `GET .../rrddata`
    pub async fn vm_rrddata(
        &self,
        node: &NodeName,
        vmid: Vmid,
        timeframe: Timeframe,
        cf: Cf,
    ) -> Result<RrdData<VmRrdPoint>, PveError> {
        self.rrd(vm_path(node, vmid, "/rrddata"), timeframe, cf)
            .await
    }

    async fn rrd<P: RrdSample + DeserializeOwned>(
        &self,
        path: String,
        timeframe: Timeframe,
        cf: Cf,
    ) -> Result<RrdData<P>, PveError> {
        let mut p = Params::new();
        p.str("timeframe", timeframe.as_str())
            .str("cf", cf.as_str());
        match self.get::<Option<Vec<P>>>(&path, p).await {
            Ok(points) => Ok(RrdData::from_points(points.unwrap_or_default())),
            // pvestatd creates the archive within ~10 s of a guest appearing; until then PVE
            // answers 500 "RRD error: opening '…': No such file or directory".
            Err(PveError::Api { message, .. })
                if message.contains("RRD error")
                    && (message.contains("No such file") || message.contains("does not exist")) =>
            {
                Ok(RrdData::NoDataYet)
            }
            Err(e) => Err(e),
        }
    }

    // ---- guest agent ----------------------------------------------------------------------

    /// `POST .../agent/file-write`. UTF-8 content is sent as text (PVE base64-encodes it);
    /// other bytes are sent base64-encoded with `encode=0`. At most 60 KiB after encoding.
    pub async fn agent_file_write(
        &self,
        node: &NodeName,
        vmid: Vmid,
        file: &str,
        content: &[u8],
    ) -> Result<(), PveError> {
        if file.is_empty() || !file.starts_with('/') {
            return Err(PveError::invalid(
                "guest file path",
                file,
                "use an absolute path in the guest",
            ));
        }
        let mut p = Params::new();
        p.str("file", file);
        match std::str::from_utf8(content) {
            Ok(text) => {
                if text.chars().count() > AGENT_FILE_MAX {
                    return Err(PveError::invalid(
                        "guest file content",
                        format!("{} bytes", content.len()),
                        "proxmox accepts at most 60 KiB per file-write; split the file or fetch it from the guest",
                    ));
                }
                p.str("content", text);
            }
            Err(_) => {
                use base64::Engine as _;
                let b64 = base64::engine::general_purpose::STANDARD.encode(content);
                if b64.len() > AGENT_FILE_MAX {
                    return Err(PveError::invalid(
                        "guest file content",
                        format!("{} bytes", content.len()),
                        "binary content is limited to 45 KiB per file-write (60 KiB base64)",
                    ));
                }
                p.str("content", b64).bool("encode", false);
            }
        }
        let _: Value = self
            .call(Method::POST, &vm_path(node, vmid, "/agent/file-write"), p)
            .await?;
        Ok(())
    }

    /// `POST .../agent/exec` — returns the guest pid.
    pub async fn agent_exec(
        &self,
        node: &NodeName,
        vmid: Vmid,
        command: &[&str],
        input: Option<&str>,
    ) -> Result<i64, PveError> {
        if command.is_empty() || command[0].is_empty() {
            return Err(PveError::invalid(
                "guest command",
                "",
                "give the program and its arguments",
            ));
        }
        let mut p = Params::new();
        for part in command {
            p.str("command", part);
        }
        p.opt("input-data", input);
        let r: AgentExecPid = self
            .call(Method::POST, &vm_path(node, vmid, "/agent/exec"), p)
            .await?;
        Ok(r.pid)
    }

    /// `GET .../agent/exec-status`
    pub async fn agent_exec_status(
        &self,
        node: &NodeName,
        vmid: Vmid,
        pid: i64,
    ) -> Result<AgentExecStatus, PveError> {
        let mut p = Params::new();
        p.str("pid", pid);
        self.get(&vm_path(node, vmid, "/agent/exec-status"), p)
            .await
    }

    // ---- tasks ----------------------------------------------------------------------------

    fn task_path(upid: &Upid, rest: &str) -> String {
        format!(
            "/nodes/{}/tasks/{}{rest}",
            seg(&upid.node),
            seg(&upid.to_string())
        )
    }

    /// `GET /nodes/{node}/tasks/{upid}/status`
    pub async fn task_status(&self, upid: &Upid) -> Result<TaskStatus, PveError> {
        self.get(&Self::task_path(upid, "/status"), Params::new())
            .await
    }

    /// `GET /nodes/{node}/tasks/{upid}/log?start&limit`
    pub async fn task_log(
        &self,
        upid: &Upid,
        start: u64,
        limit: u64,
    ) -> Result<Vec<TaskLogLine>, PveError> {
        let mut p = Params::new();
        p.str("start", start).str("limit", limit);
        let lines: Option<Vec<TaskLogLine>> = self.get(&Self::task_path(upid, "/log"), p).await?;
        Ok(lines.unwrap_or_default())
    }

    async fn task_log_all(&self, upid: &Upid) -> Result<Vec<String>, PveError> {
        let mut out = Vec::new();
        let mut start = 0;
        while start < TASK_LOG_CAP {
            let page = self.task_log(upid, start, TASK_LOG_PAGE).await?;
            let n = page.len() as u64;
            out.extend(page.into_iter().map(|l| l.t));
            if n < TASK_LOG_PAGE {
                break;
            }
            start += n;
        }
        Ok(out)
    }

    /// Polls a task until it stops, then reads its log. Errors with
    /// [`PveError::TaskFailed`] (carrying the last log lines) unless the exit status is `OK`
    /// or `WARNINGS: N`, and with [`PveError::Timeout`] if it runs longer than `timeout`
    /// (the task keeps running on the node).
    pub async fn wait_task(
        &self,
        upid: &Upid,
        poll: Duration,
        timeout: Duration,
    ) -> Result<TaskOutcome, PveError> {
        let started = Instant::now();
        let poll = poll.max(Duration::from_millis(10));
        let exitstatus = loop {
            let st = self.task_status(upid).await?;
            if st.status == TaskState::Stopped {
                break st
                    .exitstatus
                    .unwrap_or_else(|| "unexpected status".to_string());
            }
            let elapsed = started.elapsed();
            if elapsed >= timeout {
                return Err(PveError::Timeout {
                    what: format!(
                        "task {} ({} {}) on {}; it keeps running there — follow it in the node's task list",
                        upid, upid.task_type, upid.id, upid.node
                    ),
                    after: timeout,
                });
            }
            tokio::time::sleep(poll.min(timeout - elapsed)).await;
        };
        let log = self.task_log_all(upid).await?;
        match TaskExit::parse(&exitstatus) {
            TaskExit::Failed(msg) => {
                let tail_start = log.len().saturating_sub(TASK_ERROR_TAIL);
                Err(PveError::TaskFailed {
                    upid: Box::new(upid.clone()),
                    exit_status: msg,
                    log_tail: log[tail_start..].to_vec(),
                })
            }
            exit => Ok(TaskOutcome {
                upid: upid.clone(),
                exit,
                log,
            }),
        }
    }

    // ---- storage and backups --------------------------------------------------------------

    /// `GET /nodes/{node}/storage/{storage}/content[?content&vmid]`
    pub async fn storage_content(
        &self,
        node: &NodeName,
        storage: &StorageId,
        content: Option<ContentType>,
        vmid: Option<Vmid>,
    ) -> Result<Vec<StorageContent>, PveError> {
        let mut p = Params::new();
        p.opt("content", content.map(ContentType::as_str));
        p.opt("vmid", vmid);
        self.get(&format!("/nodes/{node}/storage/{storage}/content"), p)
            .await
    }

    /// `POST /nodes/{node}/vzdump`
    pub async fn vzdump(&self, node: &NodeName, opts: &VzdumpOptions) -> Result<Upid, PveError> {
        self.upid_call(
            Method::POST,
            &format!("/nodes/{node}/vzdump"),
            opts.params()?,
        )
        .await
    }
}

fn decode_err(method: &str, path: &str, e: impl fmt::Display) -> PveError {
    PveError::Decode {
        method: method.to_string(),
        path: path.to_string(),
        detail: e.to_string(),
    }
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cur = s.source();
    }
    parts.join(": ")
}

fn decode_raw(method: &str, path: &str, raw: Raw) -> Result<(Value, Option<u64>), PveError> {
    if raw.status.is_success() {
        let v: Value = if raw.body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&raw.body)
                .map_err(|e| decode_err(method, path, format!("body is not json: {e}")))?
        };
        let total = v.get("total").and_then(crate::de::value_u64);
        let data = match v {
            Value::Object(mut m) => m.remove("data").unwrap_or(Value::Null),
            _ => {
                return Err(decode_err(
                    method,
                    path,
                    "expected a json object with a data member",
                ));
            }
        };
        return Ok((data, total));
    }
    let parsed: Option<ErrorBody> = serde_json::from_slice(&raw.body).ok();
    let body_message = parsed
        .as_ref()
        .and_then(|b| b.message.clone())
        .map(|m| m.trim().to_string())
        .filter(|m| !m.is_empty());
    let message = body_message
        .or_else(|| {
            raw.reason
                .clone()
                .map(|r| r.trim().to_string())
                .filter(|r| !r.is_empty())
        })
        .or_else(|| raw.status.canonical_reason().map(str::to_string))
        .unwrap_or_else(|| "no message".to_string());
    let errors = parsed
        .and_then(|b| b.errors)
        .map(|m| {
            m.into_iter()
                .map(|(k, v)| {
                    let text = crate::de::value_string(&v).unwrap_or_else(|| v.to_string());
                    (k, text.trim().to_string())
                })
                .collect()
        })
        .unwrap_or_default();
    Err(PveError::Api {
        method: method.to_string(),
        path: path.to_string(),
        status: raw.status.as_u16(),
        message,
        errors,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_parsing() {
        let t: ApiToken = "root@pam!vigie=0d1c-42".parse().expect("valid");
        assert_eq!(t.user, "root@pam");
        assert_eq!(t.token_id, "vigie");
        assert_eq!(t.secret, "0d1c-42");
        assert_eq!(t.header(), "PVEAPIToken=root@pam!vigie=0d1c-42");
        let t2: ApiToken = "PVEAPIToken=root@pam!vigie=0d1c-42"
            .parse()
            .expect("prefixed");
        assert_eq!(t, t2);
        let err = "root@pam=secret"
            .parse::<ApiToken>()
            .expect_err("no token id");
        assert!(err.to_string().contains("TOKENID"), "{err}");
        assert!(
            !err.to_string().contains("secret"),
            "the secret must not be echoed: {err}"
        );
        assert!("root!vigie=x".parse::<ApiToken>().is_err());
        assert!(!format!("{t:?}").contains("0d1c"));
    }

    #[test]
    fn builder_checks_url_and_credentials() {
        assert!(Client::builder("https://pve1:8006").build().is_err());
        let c = Client::builder("https://pve1:8006/")
            .password("root@pam", "x")
            .build()
            .expect("valid");
        assert_eq!(c.base_url(), "https://pve1:8006/api2/json");
        assert!(
            Client::builder("ftp://pve1")
                .password("root@pam", "x")
                .build()
                .is_err()
        );
        assert!(
            Client::builder("https://pve1:8006")
                .password("root", "x")
                .build()
                .is_err()
        );
    }

    #[test]
    fn error_bodies() {
        let raw = Raw {
            status: StatusCode::BAD_REQUEST,
            reason: Some("Parameter verification failed.".into()),
            body:
                br#"{"data":null,"errors":{"cores":"type check ('integer') failed - got 'x'\n"}}"#
                    .to_vec(),
        };
        let e = decode_raw("PUT", "/nodes/pve1/qemu/100/config", raw).expect_err("error");
        let text = e.to_string();
        assert!(text.contains("http 400"), "{text}");
        assert!(text.contains("Parameter verification failed."), "{text}");
        assert!(text.contains("parameter 'cores': type check"), "{text}");
        let raw = Raw {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            reason: None,
            body: br#"{"data":null,"message":"VM is locked (clone)\n"}"#.to_vec(),
        };
        let e = decode_raw("POST", "/x", raw).expect_err("error");
        assert!(e.is_locked());
        assert_eq!(e.api_message(), Some("VM is locked (clone)"));
    }

    #[test]
    fn retry_delays_grow_and_cap() {
        let p = RetryPolicy {
            attempts: 5,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(300),
        };
        for attempt in 1..8 {
            let d = p.delay(attempt);
            assert!(d <= Duration::from_millis(300), "{d:?}");
            assert!(d >= Duration::from_millis(50), "{d:?}");
        }
    }

    #[test]
    fn task_paths_keep_upid_readable() {
        let u: Upid = "UPID:pve1:000B1C3A:0001E7C8:65B4F2A1:qmstart:100:root@pam!vigie:"
            .parse()
            .expect("upid");
        assert_eq!(
            Client::task_path(&u, "/status"),
            "/nodes/pve1/tasks/UPID:pve1:000B1C3A:0001E7C8:65B4F2A1:qmstart:100:root@pam!vigie:/status"
        );
    }
}

//! The management HTTP API, for the dashboard and the `vigie` command line.
//!
//! Bound to loopback by default. Every route but `/healthz` and `/metrics`
//! needs `Authorization: Bearer <service token>` (the token is in the data
//! directory's `collector/api.token`). Store work runs on blocking threads.
//!
//! | route | what |
//! | --- | --- |
//! | `GET /api/v1/search?q=&since=\|from=&to=&limit=&before=&count=` | matching events, newest first, with an exact count |
//! | `GET /api/v1/histogram?q=&since=\|from=&to=&buckets=` | counts by time bucket, by severity and kind |
//! | `GET /api/v1/top?q=&field=&k=&since=\|from=&to=` | top values of a field |
//! | `GET /api/v1/events/{id}` and `/api/v1/events/{id}/context?before=&after=` | one event; the events around it from the same source |
//! | `GET /api/v1/tail?q=` | live stream of new matching events (NDJSON) |
//! | `GET /api/v1/agents`, `POST /api/v1/agents/{id}/revoke` | the fleet |
//! | `POST /api/v1/enroll` `{"expires_secs":3600,"comment":""}` | a single-use enrollment token |
//! | `GET /api/v1/health` | disk, store and ingest state |
//! | `GET /api/v1/alerts?state=&since=&limit=&before=` | alerts, newest first (`state`: new, acknowledged, resolved; `since`: updated within, e.g. 24h) |
//! | `GET /api/v1/alerts/{id}` | one alert, with its event ids and history |
//! | `POST /api/v1/alerts/{id}/ack`, `/resolve` `{"by":"alice","comment":""}` | change its state |
//! | `GET /api/v1/silences`, `POST /api/v1/silences` `{"rule_id":"…","host":"…","duration":"2h","by":"alice","comment":""}`, `DELETE /api/v1/silences/{id}` | silences |
//! | `GET /api/v1/rules` | loaded and rejected rules (id, title, level, tags, status, lifecycle, errors) and exceptions |
//! | `GET /api/v1/notifications/log?limit=&before=` | notification delivery log, newest first |
//! | `POST /api/v1/notify/{channel}/test` | send a test notification to one channel now |
//! | `GET /metrics` | Prometheus metrics (open on loopback; with the token when the API listens elsewhere) |

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query as Q, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use rand::RngCore;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::broadcast;
use vigie_proto::enroll::{Bundle, secret_hash};
use vigie_proto::{AgentId, Event, Timestamp};
use vigie_store::{AlertState, Query, SearchRequest, Store, TokenRecord};

use crate::alerts::{Alerts, TransitionError};
use crate::detect::DetectShared;
use crate::ingest::now;
use crate::metrics::Metrics;
use crate::notify::Notifier;

pub struct ApiState {
    pub store: Store,
    pub token: String,
    pub metrics: Arc<Metrics>,
    pub live: broadcast::Sender<Arc<Event>>,
    /// What agents are told to connect to.
    pub ingest_addrs: Vec<String>,
    pub server_name: String,
    pub ca_der: Vec<u8>,
    pub detect: Arc<DetectShared>,
    pub alerts: Arc<Alerts>,
    pub notifier: Arc<Notifier>,
    /// `/metrics` is open only when the API listens on loopback; elsewhere it needs the token.
    pub metrics_open: bool,
}

pub fn router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .route("/api/v1/search", get(search))
        .route("/api/v1/histogram", get(histogram))
        .route("/api/v1/top", get(top))
        .route("/api/v1/events/{id}", get(event))
        .route("/api/v1/events/{id}/context", get(context))
        .route("/api/v1/tail", get(tail))
        .route("/api/v1/agents", get(agents))
        .route("/api/v1/agents/{id}/revoke", post(revoke))
        .route("/api/v1/enroll", post(enroll))
        .route("/api/v1/health", get(health))
        .route("/api/v1/alerts", get(list_alerts))
        .route("/api/v1/alerts/{id}", get(get_alert))
        .route("/api/v1/alerts/{id}/ack", post(ack_alert))
        .route("/api/v1/alerts/{id}/resolve", post(resolve_alert))
        .route("/api/v1/silences", get(list_silences).post(add_silence))
        .route("/api/v1/silences/{id}", delete(delete_silence))
        .route("/api/v1/rules", get(rules))
        .route("/api/v1/notifications/log", get(notification_log))
        .route("/api/v1/notify/{channel}/test", post(test_notification))
        .with_state(state)
}

/// An error as JSON: `{"error": "..."}` with a status.
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.into())
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

fn check_auth(st: &ApiState, headers: &HeaderMap) -> Result<(), ApiError> {
    let got = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    // Constant-time comparison.
    let a = got.as_bytes();
    let b = st.token.as_bytes();
    let mut diff = (a.len() ^ b.len()) as u8;
    for (i, x) in b.iter().enumerate() {
        diff |= x ^ a.get(i).copied().unwrap_or(0);
    }
    if diff == 0 && !b.is_empty() {
        Ok(())
    } else {
        Err(ApiError(StatusCode::UNAUTHORIZED, "missing or wrong service token: send `Authorization: Bearer <token>` with the token from the collector's api.token file".into()))
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.map_err(internal)?
}

#[derive(Deserialize, Default)]
pub struct Range {
    q: Option<String>,
    since: Option<String>,
    from: Option<String>,
    to: Option<String>,
}

impl Range {
    /// The parsed query and the `[from, to)` range of a request.
    fn resolve(&self) -> Result<(Query, Timestamp, Timestamp), ApiError> {
        let query = parse_query(self.q.as_deref())?;
        let (from, to) = resolve_range(
            self.since.as_deref(),
            self.from.as_deref(),
            self.to.as_deref(),
            now(),
        )
        .map_err(bad)?;
        Ok((query, from, to))
    }
}

/// Resolves `since` (a duration such as `15m`, `24h`) or `from`/`to` (RFC 3339) into `[from, to)`.
pub fn resolve_range(
    since: Option<&str>,
    from: Option<&str>,
    to: Option<&str>,
    now: Timestamp,
) -> Result<(Timestamp, Timestamp), String> {
    let to_ts = match to {
        Some(t) => Timestamp::parse_rfc3339(t)?,
        None => Timestamp(now.0.saturating_add(1)),
    };
    let from_ts = match (since, from) {
        (Some(_), Some(_)) => return Err("give either since or from, not both".into()),
        (Some(s), None) => {
            let d = humantime::parse_duration(s).map_err(|e| {
                format!("invalid duration {s:?} ({e}); use for example 15m, 24h or 7d")
            })?;
            Timestamp(
                to_ts
                    .0
                    .saturating_sub(d.as_nanos().min(i64::MAX as u128) as i64),
            )
        }
        (None, Some(f)) => Timestamp::parse_rfc3339(f)?,
        (None, None) => Timestamp(
            to_ts
                .0
                .saturating_sub(Duration::from_secs(24 * 3600).as_nanos() as i64),
        ),
    };
    if from_ts >= to_ts {
        return Err(format!(
            "the time range is empty: from {from_ts} is not before to {to_ts}"
        ));
    }
    Ok((from_ts, to_ts))
}

fn parse_query(q: Option<&str>) -> Result<Query, ApiError> {
    match q.map(str::trim) {
        None | Some("") | Some("*") => Ok(Query::all()),
        Some(s) => Query::parse(s).map_err(|e| bad(format!("query {s:?}: {e}"))),
    }
}

#[derive(Deserialize)]
struct SearchParams {
    #[serde(flatten)]
    range: Range,
    limit: Option<usize>,
    before: Option<String>,
    count: Option<bool>,
}

async fn search(
    State(st): State<Arc<ApiState>>,
    headers: HeaderMap,
    Q(p): Q<SearchParams>,
) -> Result<Json<Value>, ApiError> {
    check_auth(&st, &headers)?;
    let (query, from, to) = p.range.resolve()?;
    let limit = p.limit.unwrap_or(100).min(10_000);
    let before = match p.before.as_deref() {
        Some(c) => Some(vigie_store::Cursor::parse_token(c).map_err(|e| {
            bad(format!(
                "invalid cursor {c:?}: {e}; pass the `next` value of a previous response"
            ))
        })?),
        None => None,
    };
    let store = st.store.clone();
    let req = SearchRequest {
        query,
        from,
        to,
        limit,
        before,
        count: p.count.unwrap_or(true),
    };
    let resp = blocking(move || store.search(&req).map_err(internal)).await?;
    Ok(Json(json!({
        "events": resp.events,
        "total": resp.total,
        "next": resp.next.map(|c| c.to_token()),
        "stats": {
            "blocks_scanned": resp.stats.blocks_scanned,
            "blocks_skipped": resp.stats.blocks_skipped,
            "events_decoded": resp.stats.events_decoded,
            "elapsed_us": resp.stats.elapsed_us,
        },
    })))
}

#[derive(Deserialize)]
struct HistParams {
    #[serde(flatten)]
    range: Range,
    buckets: Option<u32>,
}

async fn histogram(
    State(st): State<Arc<ApiState>>,
    headers: HeaderMap,
    Q(p): Q<HistParams>,
) -> Result<Json<Value>, ApiError> {
    check_auth(&st, &headers)?;
    let (query, from, to) = p.range.resolve()?;
    let n = p.buckets.unwrap_or(60).clamp(1, 2000) as i64;
    // Buckets are whole minutes or more, matching the pre-aggregated counters.
    let span = (to.0 - from.0).max(1);
    let minute = 60_000_000_000i64;
    let bucket_ns = ((span / n + minute - 1) / minute).max(1) * minute;
    let store = st.store.clone();
    let buckets = blocking(move || {
        store
            .histogram(&query, from, to, Duration::from_nanos(bucket_ns as u64))
            .map_err(internal)
    })
    .await?;
    let out: Vec<Value> = buckets
        .into_iter()
        .map(|b| {
            json!({
                "start": b.start,
                "count": b.count,
                "by_severity": vigie_proto::Severity::ALL.iter().map(|s| (s.as_str().to_string(), json!(b.by_severity[s.code() as usize]))).collect::<serde_json::Map<_, _>>(),
                "by_kind": b.by_kind.iter().map(|(k, v)| (k.as_str().to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
            })
        })
        .collect();
    Ok(Json(
        json!({ "bucket_seconds": bucket_ns / 1_000_000_000, "buckets": out }),
    ))
}

#[derive(Deserialize)]
struct TopParams {
    #[serde(flatten)]
    range: Range,
    field: String,
    k: Option<usize>,
}

async fn top(
    State(st): State<Arc<ApiState>>,
    headers: HeaderMap,
    Q(p): Q<TopParams>,
) -> Result<Json<Value>, ApiError> {
    check_auth(&st, &headers)?;
    let (query, from, to) = p.range.resolve()?;
    let store = st.store.clone();
    let k = p.k.unwrap_or(10).min(1000);
    let field = p.field.clone();
    let vals = blocking(move || {
        store
            .top_values(&query, from, to, &field, k)
            .map_err(internal)
    })
    .await?;
    Ok(Json(
        json!({ "field": p.field, "values": vals.into_iter().map(|(v, c)| json!({"value": v, "count": c})).collect::<Vec<_>>() }),
    ))
}

async fn event(
    State(st): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    check_auth(&st, &headers)?;
    let store = st.store.clone();
    match blocking(move || store.get_event(&id).map_err(internal)).await? {
        Some(e) => Ok(Json(json!(e))),
        None => Err(ApiError(
            StatusCode::NOT_FOUND,
            "no event with that id".into(),
        )),
    }
}

#[derive(Deserialize)]
struct CtxParams {
    before: Option<usize>,
    after: Option<usize>,
}

async fn context(
    State(st): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Q(p): Q<CtxParams>,
) -> Result<Json<Value>, ApiError> {
    check_auth(&st, &headers)?;
    let store = st.store.clone();
    let (b, a) = (
        p.before.unwrap_or(10).min(1000),
        p.after.unwrap_or(10).min(1000),
    );
    let evs = blocking(move || store.context(&id, b, a).map_err(internal)).await?;
    Ok(Json(json!({ "events": evs })))
}

#[derive(Deserialize)]
struct TailParams {
    q: Option<String>,
}

async fn tail(
    State(st): State<Arc<ApiState>>,
    headers: HeaderMap,
    Q(p): Q<TailParams>,
) -> Result<Response, ApiError> {
    check_auth(&st, &headers)?;
    let query = parse_query(p.q.as_deref())?;
    let rx = st.live.subscribe();
    let stream = futures_util::stream::unfold((rx, query), |(mut rx, query)| async move {
        loop {
            match rx.recv().await {
                Ok(e) if query.matches(&e) => {
                    let mut line = e.to_json();
                    line.push('\n');
                    return Some((Ok::<_, std::convert::Infallible>(line), (rx, query)));
                }
                Ok(_) => continue,
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    let line = format!("{{\"lagged\":{n}}}\n");
                    return Some((Ok(line), (rx, query)));
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .body(Body::from_stream(stream))
        .map_err(internal)
}

async fn agents(
    State(st): State<Arc<ApiState>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    check_auth(&st, &headers)?;
    let store = st.store.clone();
    let list = blocking(move || store.list_agents().map_err(internal)).await?;
    let out: Vec<Value> = list
        .into_iter()
        .map(|a| {
            json!({
                "id": a.id.to_hex(),
                "hostname": a.hostname,
                "machine_id": a.machine_id,
                "version": a.version,
                "enrolled_at": a.enrolled_at,
                "last_seen": a.last_seen,
                "revoked": a.revoked,
                "epoch": a.current_epoch.map(|e| e.to_string()),
            })
        })
        .collect();
    Ok(Json(json!({ "agents": out })))
}

async fn revoke(
    State(st): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    check_auth(&st, &headers)?;
    let agent = AgentId::parse(&id).map_err(bad)?;
    let store = st.store.clone();
    blocking(move || {
        let mut rec = store
            .get_agent(agent)
            .map_err(internal)?
            .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no agent {agent}")))?;
        rec.revoked = true;
        store.put_agent(&rec).map_err(internal)
    })
    .await?;
    tracing::info!(%agent, "agent revoked");
    Ok(Json(json!({ "revoked": id })))
}

#[derive(Deserialize, Default)]
struct EnrollParams {
    expires_secs: Option<u64>,
    comment: Option<String>,
}

async fn enroll(
    State(st): State<Arc<ApiState>>,
    headers: HeaderMap,
    body: Option<Json<EnrollParams>>,
) -> Result<Json<Value>, ApiError> {
    check_auth(&st, &headers)?;
    let p = body.map(|b| b.0).unwrap_or_default();
    let secs = p.expires_secs.unwrap_or(3600);
    if secs == 0 || secs > 30 * 24 * 3600 {
        return Err(bad("expires_secs must be between 1 second and 30 days"));
    }
    let bundle = create_token(
        &st.store,
        &st.ingest_addrs,
        &st.server_name,
        &st.ca_der,
        Duration::from_secs(secs),
        p.comment.unwrap_or_default(),
    )
    .await?;
    Ok(Json(
        json!({ "token": bundle.encode(), "expires_at": bundle.expires_at }),
    ))
}

/// Creates and stores a single-use token; returns the bundle to hand to the agent.
pub async fn create_token(
    store: &Store,
    addrs: &[String],
    server_name: &str,
    ca_der: &[u8],
    ttl: Duration,
    comment: String,
) -> Result<Bundle, ApiError> {
    let mut id = [0u8; 16];
    let mut secret = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut id);
    rand::rngs::OsRng.fill_bytes(&mut secret);
    let created = now();
    let expires_at = Timestamp(
        created
            .0
            .saturating_add(ttl.as_nanos().min(i64::MAX as u128) as i64),
    );
    let rec = TokenRecord {
        id,
        secret_hash: secret_hash(&secret),
        created_at: created,
        expires_at,
        used: false,
        comment,
    };
    let store = store.clone();
    blocking(move || store.put_token(&rec).map_err(internal)).await?;
    Ok(Bundle {
        collectors: addrs.to_vec(),
        server_name: server_name.to_string(),
        ca_cert_der: ca_der.to_vec(),
        token_id: id,
        secret,
        expires_at,
    })
}

async fn health(
    State(st): State<Arc<ApiState>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    check_auth(&st, &headers)?;
    let m = &st.metrics;
    let stats = st.store.stats();
    Ok(Json(json!({
        "disk_free_bytes": m.disk_free_bytes.load(Relaxed),
        "disk_full": m.disk_full.load(Relaxed) == 1,
        "store_bytes": m.store_bytes.load(Relaxed),
        "events_stored_total": m.events_stored.load(Relaxed),
        "store": { "events": stats.events, "blocks": stats.blocks, "block_bytes": stats.block_bytes, "raw_message_bytes": stats.raw_message_bytes, "corrupt_blocks": stats.corrupt_blocks },
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AlertParams {
    state: Option<String>,
    since: Option<String>,
    limit: Option<usize>,
    before: Option<u64>,
}

/// Alerts scanned at most by one listing.
const ALERT_SCAN: usize = 100_000;

async fn list_alerts(
    State(st): State<Arc<ApiState>>,
    headers: HeaderMap,
    Q(p): Q<AlertParams>,
) -> Result<Json<Value>, ApiError> {
    check_auth(&st, &headers)?;
    let state = match p.state.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(AlertState::parse(s).ok_or_else(|| {
            bad(format!(
                "invalid state {s:?}: use new, acknowledged or resolved"
            ))
        })?),
    };
    let since = match p.since.as_deref() {
        None => None,
        Some(s) => {
            let d = humantime::parse_duration(s).map_err(|e| {
                bad(format!(
                    "invalid since {s:?} ({e}); use for example 15m, 24h or 7d"
                ))
            })?;
            Some(Timestamp(
                now()
                    .0
                    .saturating_sub(d.as_nanos().min(i64::MAX as u128) as i64),
            ))
        }
    };
    let limit = p.limit.unwrap_or(100).clamp(1, 1000);
    let alerts = st.alerts.clone();
    let list = blocking(move || {
        alerts
            .list(state, since, p.before, limit, ALERT_SCAN)
            .map_err(internal)
    })
    .await?;
    let next = (list.len() == limit)
        .then(|| list.last().map(|a| a.id))
        .flatten();
    Ok(Json(json!({ "alerts": list, "next": next })))
}

fn alert_id(id: &str) -> Result<u64, ApiError> {
    id.parse()
        .map_err(|_| bad(format!("invalid alert id {id:?}: expected a number")))
}

async fn get_alert(
    State(st): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    check_auth(&st, &headers)?;
    let id = alert_id(&id)?;
    let alerts = st.alerts.clone();
    match blocking(move || alerts.get(id).map_err(internal)).await? {
        Some(a) => Ok(Json(json!(a))),
        None => Err(ApiError(StatusCode::NOT_FOUND, format!("no alert {id}"))),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TransitionBody {
    by: String,
    #[serde(default)]
    comment: String,
}

/// Parses a JSON request body, with an error that names the problem and shows what to send.
fn json_body<T: serde::de::DeserializeOwned>(body: &[u8], example: &str) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        bad(format!(
            "invalid JSON body ({e}); send for example {example}"
        ))
    })
}

const TRANSITION_EXAMPLE: &str = r#"{"by": "alice", "comment": "why"}"#;

async fn transition(
    st: Arc<ApiState>,
    id: String,
    body: axum::body::Bytes,
    to: AlertState,
) -> Result<Json<Value>, ApiError> {
    let id = alert_id(&id)?;
    let b: TransitionBody = json_body(&body, TRANSITION_EXAMPLE)?;
    let alerts = st.alerts.clone();
    let a = blocking(move || {
        alerts
            .transition(id, to, &b.by, &b.comment, now())
            .map_err(|e| match e {
                TransitionError::NotFound(_) => ApiError(StatusCode::NOT_FOUND, e.to_string()),
                TransitionError::Conflict { .. } => ApiError(StatusCode::CONFLICT, e.to_string()),
                TransitionError::NoActor => bad(e.to_string()),
                TransitionError::Store(e) => internal(e),
            })
    })
    .await?;
    Ok(Json(json!(a)))
}

async fn ack_alert(
    State(st): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    check_auth(&st, &headers)?;
    transition(st, id, body, AlertState::Acknowledged).await
}

async fn resolve_alert(
    State(st): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    check_auth(&st, &headers)?;
    transition(st, id, body, AlertState::Resolved).await
}

async fn list_silences(
    State(st): State<Arc<ApiState>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    check_auth(&st, &headers)?;
    let alerts = st.alerts.clone();
    let list = blocking(move || alerts.silences().map_err(internal)).await?;
    let t = now();
    let out: Vec<Value> = list
        .into_iter()
        .map(|s| {
            let active = t < s.expires_at;
            let mut v = json!(s);
            v["active"] = json!(active);
            v
        })
        .collect();
    Ok(Json(json!({ "silences": out })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SilenceBody {
    rule_id: Option<String>,
    host: Option<String>,
    /// How long, e.g. `2h` (or give `expires_at`).
    duration: Option<String>,
    expires_at: Option<String>,
    by: String,
    #[serde(default)]
    comment: String,
}

async fn add_silence(
    State(st): State<Arc<ApiState>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    check_auth(&st, &headers)?;
    let b: SilenceBody = json_body(
        &body,
        r#"{"rule_id": "<rule id>", "host": "web1", "duration": "2h", "by": "alice", "comment": "maintenance"}"#,
    )?;
    let rule_id = b.rule_id.filter(|s| !s.trim().is_empty());
    let host = b.host.filter(|s| !s.trim().is_empty());
    if rule_id.is_none() && host.is_none() {
        return Err(bad(
            "a silence needs `rule_id`, `host` or both; silencing everything is not allowed",
        ));
    }
    if b.by.trim().is_empty() {
        return Err(bad("`by` is required: say who adds the silence"));
    }
    let t = now();
    let expires_at = match (b.duration.as_deref(), b.expires_at.as_deref()) {
        (Some(d), None) => {
            let d = humantime::parse_duration(d).map_err(|e| {
                bad(format!(
                    "invalid duration {d:?} ({e}); use for example 30m, 2h or 1d"
                ))
            })?;
            Timestamp(t.0.saturating_add(d.as_nanos().min(i64::MAX as u128) as i64))
        }
        (None, Some(e)) => Timestamp::parse_rfc3339(e).map_err(bad)?,
        _ => {
            return Err(bad(
                "give either `duration` (e.g. 2h) or `expires_at` (RFC 3339)",
            ));
        }
    };
    if expires_at <= t {
        return Err(bad(format!(
            "the silence would expire at {expires_at}, which is already past"
        )));
    }
    let alerts = st.alerts.clone();
    let s = blocking(move || {
        alerts
            .add_silence(rule_id, host, &b.by, &b.comment, t, expires_at)
            .map_err(|e| match e {
                vigie_store::StoreError::InvalidRequest(m) => bad(m),
                e => internal(e),
            })
    })
    .await?;
    Ok(Json(json!(s)))
}

async fn delete_silence(
    State(st): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    check_auth(&st, &headers)?;
    let id: u64 = id
        .parse()
        .map_err(|_| bad(format!("invalid silence id {id:?}: expected a number")))?;
    let alerts = st.alerts.clone();
    if blocking(move || alerts.delete_silence(id).map_err(internal)).await? {
        Ok(Json(json!({ "deleted": id })))
    } else {
        Err(ApiError(StatusCode::NOT_FOUND, format!("no silence {id}")))
    }
}

async fn rules(
    State(st): State<Arc<ApiState>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    check_auth(&st, &headers)?;
    Ok(Json(json!(*st.detect.snapshot())))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LogParams {
    limit: Option<usize>,
    before: Option<u64>,
}

async fn notification_log(
    State(st): State<Arc<ApiState>>,
    headers: HeaderMap,
    Q(p): Q<LogParams>,
) -> Result<Json<Value>, ApiError> {
    check_auth(&st, &headers)?;
    let store = st.store.clone();
    let limit = p.limit.unwrap_or(100).clamp(1, 1000);
    let list = blocking(move || store.list_deliveries(p.before, limit).map_err(internal)).await?;
    Ok(Json(json!({ "deliveries": list })))
}

async fn test_notification(
    State(st): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(channel): Path<String>,
) -> Result<Response, ApiError> {
    check_auth(&st, &headers)?;
    let rec = st
        .notifier
        .test(&channel)
        .await
        .map_err(|e| ApiError(StatusCode::NOT_FOUND, e.to_string()))?;
    let code = if rec.outcome == vigie_store::DeliveryOutcome::Delivered {
        StatusCode::OK
    } else {
        StatusCode::BAD_GATEWAY
    };
    Ok((code, Json(json!(rec))).into_response())
}

async fn metrics(State(st): State<Arc<ApiState>>, headers: HeaderMap) -> Response {
    if !st.metrics_open
        && let Err(e) = check_auth(&st, &headers)
    {
        return e.into_response();
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        st.metrics.render(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        let now = Timestamp::from_secs(10_000);
        let (f, t) = resolve_range(Some("1h"), None, None, now).expect("since");
        assert_eq!(t.0 - f.0, 3600 * 1_000_000_000);
        assert!(
            resolve_range(Some("1 parsec"), None, None, now)
                .expect_err("bad duration")
                .contains("invalid duration")
        );
        assert!(
            resolve_range(
                None,
                Some("2026-01-02T00:00:00Z"),
                Some("2026-01-01T00:00:00Z"),
                now
            )
            .expect_err("empty range")
            .contains("empty")
        );
        assert!(resolve_range(Some("1h"), Some("2026-01-01T00:00:00Z"), None, now).is_err());
    }
}

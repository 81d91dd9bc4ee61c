//! Notifications: new alerts to email (SMTP), webhooks and SMS gateways.
//!
//! Channels are `[[notify]]` tables of the collector configuration, checked
//! at start (parse → validate → resolve: a wrong key stops the start with a
//! message that names the channel, the key and the fix). Each channel has a
//! route (minimum severity, rule ids, tags, hosts, test alerts or not), a rate
//! limit (token bucket, `rate_per_minute`), bounded retries with exponential
//! backoff, and a bounded number of deliveries in flight. Every outcome —
//! delivered, failed, rate limited, dropped — lands in the delivery log
//! (store, `GET /api/v1/notifications/log`) and in `vigie_notifications_total`.
//!
//! Everything here runs on tokio tasks: SMTP is async (lettre over rustls with
//! ring), HTTP requests (ureq, blocking) run under `spawn_blocking`. The
//! detection thread only hands alerts over through a bounded channel.
//!
//! Webhook signature: the body is the alert as JSON; the request carries
//! `X-Vigie-Timestamp: <unix seconds>` and
//! `X-Vigie-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`,
//! plus `X-Vigie-Delivery: <id>`. Receivers recompute the MAC, compare in
//! constant time and refuse timestamps older than a few minutes (replays);
//! see `docs/notifications.md`.

use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde::Deserialize;
use vigie_proto::Timestamp;
use vigie_proto::event::truncate_for_log;
use vigie_store::{AlertRecord, AlertSeverity, AlertState, DeliveryOutcome, DeliveryRecord, Store};

use crate::ingest::now;
use crate::metrics::Metrics;

/// Delivery log entries kept.
pub const LOG_KEEP: u64 = 10_000;
/// Deliveries in flight (or waiting to retry) per channel; past this, new ones are dropped (logged).
pub const MAX_PENDING: usize = 64;
/// Longest backoff between two attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(600);
/// Longest SMS text.
pub const MAX_SMS_CHARS: usize = 300;

/// One `[[notify]]` table, as written. See `docs/notifications.md`.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotifyConfig {
    /// Channel name (used by the test endpoint and the delivery log).
    pub name: String,
    /// `email`, `webhook` or `sms`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Least severity notified (informational, low, medium, high, critical); default: all.
    pub min_severity: Option<String>,
    /// Only these rule ids (any when empty).
    pub rules: Vec<String>,
    /// Only alerts with one of these tags (any when empty).
    pub tags: Vec<String>,
    /// Only these hosts (any when empty).
    pub hosts: Vec<String>,
    /// Also notify alerts of rules in test (Sigma status test/experimental).
    pub include_test: bool,
    /// Notifications per minute at most (token bucket, burst of the same size). Default 10.
    pub rate_per_minute: Option<u32>,
    /// Attempts per notification, first one included. Default 5.
    pub max_attempts: Option<u32>,
    /// Wait before the second attempt, doubled for each further one (at most 10 min). Default 2s.
    pub retry_backoff: Option<String>,
    /// Time limit of one attempt. Default 20s.
    pub timeout: Option<String>,
    // email
    pub smtp_host: Option<String>,
    pub smtp_port: Option<u16>,
    /// `starttls` (default), `tls` (implicit TLS, port 465) or `none` (plain, local relays only).
    pub tls: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub password_file: Option<PathBuf>,
    /// PEM file of the CA that signed the SMTP server's certificate (default: public roots).
    pub ca_file: Option<PathBuf>,
    pub from: Option<String>,
    pub to: Vec<String>,
    // webhook and sms
    pub url: Option<String>,
    pub secret: Option<String>,
    pub secret_file: Option<PathBuf>,
    /// SMS body format: `twilio` (form POST, Twilio's API), `form` or `json` (generic gateway).
    pub format: Option<String>,
    pub account_sid: Option<String>,
    pub auth_token: Option<String>,
    pub auth_token_file: Option<PathBuf>,
    pub bearer_token: Option<String>,
}

impl std::fmt::Debug for NotifyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print secrets.
        f.debug_struct("NotifyConfig")
            .field("name", &self.name)
            .field("type", &self.kind)
            .finish_non_exhaustive()
    }
}

/// Which alerts a channel takes.
#[derive(Clone, Debug, PartialEq)]
pub struct Route {
    pub min_severity: AlertSeverity,
    pub rules: Vec<String>,
    pub tags: Vec<String>,
    pub hosts: Vec<String>,
    pub include_test: bool,
}

impl Route {
    pub fn accepts(&self, a: &AlertRecord) -> bool {
        a.severity >= self.min_severity
            && (self.include_test || !a.test)
            && (self.rules.is_empty() || self.rules.contains(&a.rule_id))
            && (self.tags.is_empty() || a.tags.iter().any(|t| self.tags.contains(t)))
            && (self.hosts.is_empty() || self.hosts.contains(&a.host))
    }
}

/// A token bucket: `per_minute` tokens a minute, at most `per_minute` saved.
#[derive(Debug)]
pub struct RateLimit {
    tokens: f64,
    cap: f64,
    per_sec: f64,
    last: Instant,
}

impl RateLimit {
    pub fn new(per_minute: u32, now: Instant) -> RateLimit {
        let cap = f64::from(per_minute.max(1));
        RateLimit {
            tokens: cap,
            cap,
            per_sec: cap / 60.0,
            last: now,
        }
    }

    /// Takes a token if one is there.
    pub fn take(&mut self, now: Instant) -> bool {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt * self.per_sec).min(self.cap);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Wait before attempt `attempt` (2 = the first retry): `base · 2^(attempt-2)`, at most [`MAX_BACKOFF`].
pub fn backoff(base: Duration, attempt: u32) -> Duration {
    let exp = attempt.saturating_sub(2).min(20);
    base.saturating_mul(1 << exp).min(MAX_BACKOFF)
}

/// `sha256=<hex>` of HMAC-SHA256 over `"<timestamp>.<body>"`.
pub fn webhook_signature(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let mut ctx = ring::hmac::Context::with_key(&key);
    ctx.update(timestamp.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    format!("sha256={}", hex::encode(ctx.sign().as_ref()))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SmsFormat {
    Twilio,
    Form,
    Json,
}

enum Transport {
    Email {
        mailer: AsyncSmtpTransport<Tokio1Executor>,
        from: Mailbox,
        to: Vec<Mailbox>,
    },
    Webhook {
        url: String,
        secret: Vec<u8>,
        agent: ureq::Agent,
    },
    Sms {
        url: String,
        format: SmsFormat,
        from: String,
        to: Vec<String>,
        basic: Option<(String, String)>,
        bearer: Option<String>,
        agent: ureq::Agent,
    },
}

/// A configured channel.
pub struct Channel {
    pub name: String,
    pub kind: &'static str,
    pub route: Route,
    limit: Mutex<RateLimit>,
    max_attempts: u32,
    backoff: Duration,
    transport: Transport,
    pending: AtomicUsize,
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("route", &self.route)
            .finish_non_exhaustive()
    }
}

/// An attempt's failure: worth retrying or not.
#[derive(Debug)]
enum SendError {
    Transient(String),
    Permanent(String),
}

impl SendError {
    fn text(&self) -> &str {
        match self {
            SendError::Transient(s) | SendError::Permanent(s) => s,
        }
    }
}

fn secret_of(
    ch: &str,
    inline: &Option<String>,
    file: &Option<PathBuf>,
    key: &str,
) -> Result<Option<String>> {
    match (inline, file) {
        (Some(_), Some(_)) => {
            bail!("notify channel {ch:?}: give either `{key}` or `{key}_file`, not both")
        }
        (Some(s), None) => Ok(Some(s.clone())),
        (None, Some(p)) => {
            let s = std::fs::read_to_string(p).with_context(|| {
                format!(
                    "notify channel {ch:?}: cannot read `{key}_file` {}",
                    p.display()
                )
            })?;
            Ok(Some(s.trim().to_string()))
        }
        (None, None) => Ok(None),
    }
}

fn duration_of(ch: &str, key: &str, v: &Option<String>, default: Duration) -> Result<Duration> {
    match v {
        None => Ok(default),
        Some(s) => humantime::parse_duration(s).map_err(|e| {
            anyhow::anyhow!(
                "notify channel {ch:?}: invalid `{key}` {s:?} ({e}); use for example 2s or 1m"
            )
        }),
    }
}

fn http_agent(timeout: Duration) -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(timeout)
        .redirects(0)
        .user_agent(concat!("vigie-collector/", env!("CARGO_PKG_VERSION")))
        .build()
}

fn check_url(ch: &str, url: &Option<String>, why: &str) -> Result<String> {
    let Some(u) = url.clone() else {
        bail!("notify channel {ch:?}: `url` is required {why}");
    };
    if !(u.starts_with("https://") || u.starts_with("http://")) {
        bail!(
            "notify channel {ch:?}: `url` {u:?} must start with https:// (or http:// for a local endpoint)"
        );
    }
    Ok(u)
}

impl Channel {
    /// Validates and resolves one `[[notify]]` table (reads secret files: call from a blocking thread).
    pub fn from_config(c: &NotifyConfig) -> Result<Channel> {
        let ch = c.name.trim();
        if ch.is_empty() {
            bail!("a [[notify]] table has no `name`: give each channel a unique name");
        }
        if !ch
            .chars()
            .all(|x| x.is_ascii_alphanumeric() || x == '-' || x == '_' || x == '.')
        {
            bail!(
                "notify channel {ch:?}: `name` may only hold letters, digits, '-', '_' and '.' (it appears in URLs)"
            );
        }
        let min_severity = match &c.min_severity {
            None => AlertSeverity::Informational,
            Some(s) => AlertSeverity::parse(s).ok_or_else(|| {
                anyhow::anyhow!("notify channel {ch:?}: invalid `min_severity` {s:?}; use informational, low, medium, high or critical")
            })?,
        };
        let timeout = duration_of(ch, "timeout", &c.timeout, Duration::from_secs(20))?;
        let backoff = duration_of(
            ch,
            "retry_backoff",
            &c.retry_backoff,
            Duration::from_secs(2),
        )?;
        let max_attempts = c.max_attempts.unwrap_or(5);
        if max_attempts == 0 || max_attempts > 20 {
            bail!("notify channel {ch:?}: `max_attempts` must be between 1 and 20");
        }
        let per_minute = c.rate_per_minute.unwrap_or(10);
        if per_minute == 0 {
            bail!(
                "notify channel {ch:?}: `rate_per_minute` must be at least 1 (remove the channel to turn it off)"
            );
        }
        let (kind, transport) = match c.kind.as_str() {
            "email" => ("email", email(ch, c, timeout)?),
            "webhook" => {
                let url = check_url(ch, &c.url, "for a webhook")?;
                let secret = secret_of(ch, &c.secret, &c.secret_file, "secret")?
                    .filter(|s| !s.is_empty())
                    .ok_or_else(|| anyhow::anyhow!("notify channel {ch:?}: a webhook needs `secret` (or `secret_file`) to sign its requests; generate one with `openssl rand -hex 32`"))?;
                if secret.len() < 16 {
                    bail!(
                        "notify channel {ch:?}: the webhook secret is shorter than 16 characters; use a long random one (`openssl rand -hex 32`)"
                    );
                }
                (
                    "webhook",
                    Transport::Webhook {
                        url,
                        secret: secret.into_bytes(),
                        agent: http_agent(timeout),
                    },
                )
            }
            "sms" => ("sms", sms(ch, c, timeout)?),
            "" => bail!("notify channel {ch:?}: `type` is required: email, webhook or sms"),
            other => bail!(
                "notify channel {ch:?}: unknown `type` {other:?}; expected email, webhook or sms"
            ),
        };
        Ok(Channel {
            name: ch.to_string(),
            kind,
            route: Route {
                min_severity,
                rules: c.rules.clone(),
                tags: c.tags.clone(),
                hosts: c.hosts.clone(),
                include_test: c.include_test,
            },
            limit: Mutex::new(RateLimit::new(per_minute, Instant::now())),
            max_attempts,
            backoff,
            transport,
            pending: AtomicUsize::new(0),
        })
    }

    async fn send(&self, a: &AlertRecord, delivery: u64) -> Result<String, SendError> {
        match &self.transport {
            Transport::Email { mailer, from, to } => {
                let mut b = Message::builder()
                    .from(from.clone())
                    .subject(subject(a))
                    .header(ContentType::TEXT_PLAIN);
                for t in to {
                    b = b.to(t.clone());
                }
                let msg = b
                    .body(email_body(a))
                    .map_err(|e| SendError::Permanent(format!("cannot build the message: {e}")))?;
                match mailer.send(msg).await {
                    Ok(r) => Ok(format!("smtp {}", r.code())),
                    Err(e) if e.is_permanent() => Err(SendError::Permanent(format!("smtp: {e}"))),
                    Err(e) => Err(SendError::Transient(format!("smtp: {e}"))),
                }
            }
            Transport::Webhook { url, secret, agent } => {
                let body = serde_json::to_vec(a)
                    .map_err(|e| SendError::Permanent(format!("cannot encode the alert: {e}")))?;
                let ts = now().secs();
                let sig = webhook_signature(secret, ts, &body);
                let req = agent
                    .post(url)
                    .set("Content-Type", "application/json")
                    .set("X-Vigie-Timestamp", &ts.to_string())
                    .set("X-Vigie-Signature", &sig)
                    .set("X-Vigie-Delivery", &delivery.to_string());
                blocking_http(move || req.send_bytes(&body).map_err(Box::new)).await
            }
            Transport::Sms {
                url,
                format,
                from,
                to,
                basic,
                bearer,
                agent,
            } => {
                let text = sms_text(a);
                let mut last = String::new();
                for number in to {
                    let mut req = agent.post(url);
                    if let Some((u, p)) = basic {
                        req = req.set("Authorization", &basic_auth(u, p));
                    }
                    if let Some(t) = bearer {
                        req = req.set("Authorization", &format!("Bearer {t}"));
                    }
                    let (number, from, text, format) =
                        (number.clone(), from.clone(), text.clone(), *format);
                    last = blocking_http(move || {
                        match format {
                            SmsFormat::Twilio => {
                                req.send_form(&[("To", &number), ("From", &from), ("Body", &text)])
                            }
                            SmsFormat::Form => req.send_form(&[
                                ("to", &number),
                                ("from", &from),
                                ("message", &text),
                            ]),
                            SmsFormat::Json => req.send_json(
                                serde_json::json!({"to": number, "from": from, "message": text}),
                            ),
                        }
                        .map_err(Box::new)
                    })
                    .await?;
                }
                Ok(last)
            }
        }
    }
}

fn basic_auth(user: &str, pass: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
    )
}

/// Runs a blocking request off the async workers; the error is boxed (ureq's is large).
async fn blocking_http(
    f: impl FnOnce() -> Result<ureq::Response, Box<ureq::Error>> + Send + 'static,
) -> Result<String, SendError> {
    let r = tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| SendError::Transient(e.to_string()))?;
    match r.map_err(|e| *e) {
        Ok(resp) => Ok(format!("http {}", resp.status())),
        Err(ureq::Error::Status(code, resp)) => {
            let body: String = resp
                .into_string()
                .unwrap_or_default()
                .chars()
                .take(200)
                .collect();
            let msg = format!("http {code}: {body}");
            if code == 408 || code == 429 || code >= 500 {
                Err(SendError::Transient(msg))
            } else {
                Err(SendError::Permanent(msg))
            }
        }
        Err(e) => Err(SendError::Transient(e.to_string())),
    }
}

fn email(ch: &str, c: &NotifyConfig, timeout: Duration) -> Result<Transport> {
    let host = c.smtp_host.clone().ok_or_else(|| {
        anyhow::anyhow!("notify channel {ch:?}: `smtp_host` is required for email")
    })?;
    let mode = c.tls.as_deref().unwrap_or("starttls");
    let mut b = match mode {
        "starttls" => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&host)
            .with_context(|| format!("notify channel {ch:?}: smtp_host {host:?}"))?,
        "tls" => AsyncSmtpTransport::<Tokio1Executor>::relay(&host)
            .with_context(|| format!("notify channel {ch:?}: smtp_host {host:?}"))?,
        "none" => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host.clone()),
        other => bail!(
            "notify channel {ch:?}: invalid `tls` {other:?}; use starttls, tls, or none (plain text, local relays only)"
        ),
    };
    if let Some(ca) = &c.ca_file {
        if mode == "none" {
            bail!("notify channel {ch:?}: `ca_file` needs tls = \"starttls\" or \"tls\"");
        }
        let pem = std::fs::read(ca).with_context(|| {
            format!(
                "notify channel {ch:?}: cannot read `ca_file` {}",
                ca.display()
            )
        })?;
        let cert = Certificate::from_pem(&pem).map_err(|e| {
            anyhow::anyhow!(
                "notify channel {ch:?}: `ca_file` {} is not a PEM certificate: {e}",
                ca.display()
            )
        })?;
        let params = TlsParameters::builder(host.clone())
            .add_root_certificate(cert)
            .build_rustls()
            .map_err(|e| anyhow::anyhow!("notify channel {ch:?}: TLS settings: {e}"))?;
        b = b.tls(if mode == "tls" {
            Tls::Wrapper(params)
        } else {
            Tls::Required(params)
        });
    }
    if let Some(p) = c.smtp_port {
        b = b.port(p);
    }
    let password = secret_of(ch, &c.password, &c.password_file, "password")?;
    match (&c.username, password) {
        (Some(u), Some(p)) => {
            if mode == "none" {
                bail!(
                    "notify channel {ch:?}: refusing to send an SMTP password in plain text: set tls = \"starttls\" or \"tls\""
                );
            }
            b = b.credentials(Credentials::new(u.clone(), p));
        }
        (None, None) => {}
        _ => bail!(
            "notify channel {ch:?}: give both `username` and `password` (or `password_file`), or neither"
        ),
    }
    let from: Mailbox = c
        .from
        .as_deref()
        .ok_or_else(|| anyhow::anyhow!("notify channel {ch:?}: `from` is required for email, e.g. \"Vigie <vigie@example.org>\""))?
        .parse()
        .map_err(|e| anyhow::anyhow!("notify channel {ch:?}: invalid `from` address: {e}"))?;
    if c.to.is_empty() {
        bail!("notify channel {ch:?}: `to` must list at least one address");
    }
    let to =
        c.to.iter()
            .map(|t| {
                t.parse::<Mailbox>().map_err(|e| {
                    anyhow::anyhow!("notify channel {ch:?}: invalid `to` address {t:?}: {e}")
                })
            })
            .collect::<Result<Vec<_>>>()?;
    Ok(Transport::Email {
        mailer: b.timeout(Some(timeout)).build(),
        from,
        to,
    })
}

fn sms(ch: &str, c: &NotifyConfig, timeout: Duration) -> Result<Transport> {
    let format = match c.format.as_deref().unwrap_or("twilio") {
        "twilio" => SmsFormat::Twilio,
        "form" => SmsFormat::Form,
        "json" => SmsFormat::Json,
        other => {
            bail!("notify channel {ch:?}: invalid `format` {other:?}; use twilio, form or json")
        }
    };
    if c.to.is_empty() {
        bail!("notify channel {ch:?}: `to` must list at least one phone number");
    }
    let from = c.from.clone().unwrap_or_default();
    let token = secret_of(ch, &c.auth_token, &c.auth_token_file, "auth_token")?;
    let (url, basic) = match format {
        SmsFormat::Twilio => {
            let sid = c.account_sid.clone().ok_or_else(|| {
                anyhow::anyhow!(
                    "notify channel {ch:?}: `account_sid` is required for format twilio"
                )
            })?;
            let token = token.ok_or_else(|| {
                anyhow::anyhow!("notify channel {ch:?}: `auth_token` (or `auth_token_file`) is required for format twilio")
            })?;
            if from.is_empty() {
                bail!(
                    "notify channel {ch:?}: `from` (the sending number) is required for format twilio"
                );
            }
            let url = match &c.url {
                Some(_) => check_url(ch, &c.url, "")?,
                None => format!("https://api.twilio.com/2010-04-01/Accounts/{sid}/Messages.json"),
            };
            (url, Some((sid, token)))
        }
        SmsFormat::Form | SmsFormat::Json => {
            let url = check_url(ch, &c.url, "for an SMS gateway")?;
            let basic = match (&c.username, token) {
                (Some(u), Some(t)) => Some((u.clone(), t)),
                (None, None) => None,
                _ => bail!(
                    "notify channel {ch:?}: give both `username` and `auth_token` for basic authentication, or neither"
                ),
            };
            (url, basic)
        }
    };
    Ok(Transport::Sms {
        url,
        format,
        from,
        to: c.to.clone(),
        basic,
        bearer: c.bearer_token.clone(),
        agent: http_agent(timeout),
    })
}

fn where_of(a: &AlertRecord) -> String {
    let mut parts = Vec::new();
    if !a.host.is_empty() {
        parts.push(format!("on {}", a.host));
    }
    if !a.group.is_empty() {
        let g: Vec<String> = a.group.iter().map(|(k, v)| format!("{k}={v}")).collect();
        parts.push(format!("({})", g.join(", ")));
    }
    parts.join(" ")
}

fn subject(a: &AlertRecord) -> String {
    let s = format!(
        "[Vigie]{} {}: {} {}",
        if a.test { " [TEST]" } else { "" },
        a.severity.as_str().to_uppercase(),
        a.rule_title,
        where_of(a)
    );
    s.trim_end().chars().take(200).collect()
}

/// The plain-text email body.
pub fn email_body(a: &AlertRecord) -> String {
    let mut s = String::new();
    let mut line = |k: &str, v: String| {
        if !v.is_empty() {
            s.push_str(&format!("{k:<14}{v}\n"));
        }
    };
    line("Alert", format!("{} ({})", a.id, a.state.as_str()));
    line("Rule", a.rule_title.clone());
    line("Rule id", a.rule_id.clone());
    line("Severity", a.severity.as_str().to_string());
    line("Host", a.host.clone());
    line(
        "Group",
        a.group
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", "),
    );
    line(
        "Detections",
        format!("{} ({} events)", a.count, a.event_count),
    );
    line("First event", a.first_seen.to_string());
    line("Last event", a.last_seen.to_string());
    line("Tags", a.tags.join(", "));
    if a.test {
        line(
            "Note",
            "raised by a rule in test (status test or experimental)".into(),
        );
    }
    // One id per line keeps lines short (7-bit, no quoted-printable).
    for (i, id) in a.event_ids.iter().enumerate() {
        line(if i == 0 { "Events" } else { "" }, id.clone());
    }
    if a.event_count > a.event_ids.len() as u64 {
        line(
            "",
            format!("... and {} more", a.event_count - a.event_ids.len() as u64),
        );
    }
    s.push_str(&format!(
        "\nDetails: GET /api/v1/alerts/{} on the collector's management API.\n",
        a.id
    ));
    s
}

fn sms_text(a: &AlertRecord) -> String {
    let s = format!(
        "[Vigie]{} {} {} {} (alert {}, {} events)",
        if a.test { " TEST" } else { "" },
        a.severity.as_str().to_uppercase(),
        a.rule_title,
        where_of(a),
        a.id,
        a.event_count
    );
    s.chars().take(MAX_SMS_CHARS).collect()
}

/// The alert a "send test notification" sends.
pub fn test_alert(host: &str, now: Timestamp) -> AlertRecord {
    AlertRecord {
        id: 0,
        rule_id: "vigie-test-notification".into(),
        rule_title: "Vigie test notification".into(),
        severity: AlertSeverity::Informational,
        tags: vec!["vigie.test".into()],
        test: true,
        correlation: false,
        host: host.to_string(),
        group: Vec::new(),
        first_seen: now,
        last_seen: now,
        created_at: now,
        updated_at: now,
        count: 1,
        event_count: 0,
        event_ids: Vec::new(),
        state: AlertState::New,
        history: Vec::new(),
    }
}

/// Sends alerts to the configured channels.
pub struct Notifier {
    channels: Vec<Arc<Channel>>,
    store: Store,
    metrics: Arc<Metrics>,
    next_log: AtomicU64,
    hostname: String,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field("channels", &self.channels)
            .finish_non_exhaustive()
    }
}

/// Why a test notification was not sent.
#[derive(Debug, thiserror::Error)]
pub enum TestError {
    #[error(
        "no notification channel named {0:?}; the configured ones are listed in the collector's [[notify]] tables"
    )]
    Unknown(String),
}

impl Notifier {
    /// Validates every channel (blocking: reads secret files and the log position).
    pub fn new(
        cfgs: &[NotifyConfig],
        store: Store,
        metrics: Arc<Metrics>,
        hostname: String,
    ) -> Result<Notifier> {
        let mut channels: Vec<Arc<Channel>> = Vec::new();
        for c in cfgs {
            let ch = Channel::from_config(c)?;
            if channels.iter().any(|x| x.name == ch.name) {
                bail!(
                    "two [[notify]] channels are named {:?}; names must be unique",
                    ch.name
                );
            }
            channels.push(Arc::new(ch));
        }
        let next = store
            .last_delivery_id()
            .context("cannot read the notification delivery log")?
            .map_or(0, |i| i + 1);
        Ok(Notifier {
            channels,
            store,
            metrics,
            next_log: AtomicU64::new(next),
            hostname,
        })
    }

    pub fn channels(&self) -> &[Arc<Channel>] {
        &self.channels
    }

    /// Takes alerts from the detection thread until the channel closes.
    pub async fn run(self: Arc<Self>, mut rx: tokio::sync::mpsc::Receiver<AlertRecord>) {
        while let Some(a) = rx.recv().await {
            self.dispatch(a).await;
        }
    }

    async fn dispatch(self: &Arc<Self>, a: AlertRecord) {
        for ch in &self.channels {
            if !ch.route.accepts(&a) {
                continue;
            }
            let allowed = ch
                .limit
                .lock()
                .map(|mut l| l.take(Instant::now()))
                .unwrap_or(false);
            if !allowed {
                self.metrics
                    .notifications_rate_limited
                    .fetch_add(1, Relaxed);
                self.log(
                    ch,
                    Some(a.id),
                    false,
                    DeliveryOutcome::RateLimited,
                    0,
                    "rate limit reached (rate_per_minute)".into(),
                )
                .await;
                continue;
            }
            if ch.pending.fetch_add(1, Relaxed) >= MAX_PENDING {
                ch.pending.fetch_sub(1, Relaxed);
                self.metrics.notifications_dropped.fetch_add(1, Relaxed);
                self.log(
                    ch,
                    Some(a.id),
                    false,
                    DeliveryOutcome::Dropped,
                    0,
                    format!("{MAX_PENDING} deliveries already pending on this channel"),
                )
                .await;
                continue;
            }
            let me = self.clone();
            let ch = ch.clone();
            let a = a.clone();
            // The outcome is logged by `deliver`, never lost.
            tokio::spawn(async move {
                me.deliver(&ch, &a).await;
                ch.pending.fetch_sub(1, Relaxed);
            });
        }
    }

    /// Attempts with backoff until delivered, refused for good, or out of attempts.
    async fn deliver(&self, ch: &Channel, a: &AlertRecord) -> DeliveryRecord {
        let id = self.next_log.fetch_add(1, Relaxed);
        let mut attempt = 1;
        loop {
            let r = ch.send(a, id).await;
            match r {
                Ok(detail) => {
                    self.metrics.notifications_delivered.fetch_add(1, Relaxed);
                    tracing::info!(channel = %ch.name, alert = a.id, attempt, "notification delivered");
                    return self
                        .log_id(
                            id,
                            ch,
                            Some(a.id).filter(|_| a.id != 0),
                            a.test,
                            DeliveryOutcome::Delivered,
                            attempt,
                            detail,
                        )
                        .await;
                }
                Err(e) => {
                    let last = attempt >= ch.max_attempts || matches!(e, SendError::Permanent(_));
                    tracing::warn!(channel = %ch.name, alert = a.id, attempt, error = %truncate_for_log(e.text()), final = last, "notification attempt failed");
                    if last {
                        self.metrics.notifications_failed.fetch_add(1, Relaxed);
                        return self
                            .log_id(
                                id,
                                ch,
                                Some(a.id).filter(|_| a.id != 0),
                                a.test,
                                DeliveryOutcome::Failed,
                                attempt,
                                e.text().to_string(),
                            )
                            .await;
                    }
                    attempt += 1;
                    tokio::time::sleep(backoff(ch.backoff, attempt)).await;
                }
            }
        }
    }

    /// Sends a test notification to one channel now, once (no routing, no rate limit).
    pub async fn test(&self, name: &str) -> Result<DeliveryRecord, TestError> {
        let ch = self
            .channels
            .iter()
            .find(|c| c.name == name)
            .ok_or_else(|| TestError::Unknown(name.to_string()))?;
        let a = test_alert(&self.hostname, now());
        let id = self.next_log.fetch_add(1, Relaxed);
        let (outcome, detail) = match ch.send(&a, id).await {
            Ok(d) => {
                self.metrics.notifications_delivered.fetch_add(1, Relaxed);
                (DeliveryOutcome::Delivered, d)
            }
            Err(e) => {
                self.metrics.notifications_failed.fetch_add(1, Relaxed);
                (DeliveryOutcome::Failed, e.text().to_string())
            }
        };
        Ok(self.log_id(id, ch, None, true, outcome, 1, detail).await)
    }

    async fn log(
        &self,
        ch: &Channel,
        alert: Option<u64>,
        test: bool,
        outcome: DeliveryOutcome,
        attempts: u32,
        detail: String,
    ) -> DeliveryRecord {
        let id = self.next_log.fetch_add(1, Relaxed);
        self.log_id(id, ch, alert, test, outcome, attempts, detail)
            .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn log_id(
        &self,
        id: u64,
        ch: &Channel,
        alert_id: Option<u64>,
        test: bool,
        outcome: DeliveryOutcome,
        attempts: u32,
        detail: String,
    ) -> DeliveryRecord {
        let rec = DeliveryRecord {
            id,
            at: now(),
            channel: ch.name.clone(),
            alert_id,
            test,
            outcome,
            attempts,
            detail: truncate_for_log(&detail).to_string(),
        };
        let store = self.store.clone();
        let r = rec.clone();
        match tokio::task::spawn_blocking(move || store.append_delivery(&r, LOG_KEEP)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!(error = %e, channel = %ch.name, "cannot write the delivery log")
            }
            Err(e) => tracing::error!(error = %e, "delivery log task failed"),
        }
        rec
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(sev: AlertSeverity, rule: &str, host: &str, test: bool) -> AlertRecord {
        AlertRecord {
            severity: sev,
            rule_id: rule.into(),
            host: host.into(),
            test,
            tags: vec!["attack.t1110".into()],
            ..test_alert("h", Timestamp(0))
        }
    }

    #[test]
    fn routes_filter_by_severity_rule_tag_host_and_test() {
        let r = Route {
            min_severity: AlertSeverity::High,
            rules: vec!["r1".into()],
            tags: vec![],
            hosts: vec!["web1".into()],
            include_test: false,
        };
        assert!(r.accepts(&alert(AlertSeverity::High, "r1", "web1", false)));
        assert!(r.accepts(&alert(AlertSeverity::Critical, "r1", "web1", false)));
        assert!(!r.accepts(&alert(AlertSeverity::Medium, "r1", "web1", false)));
        assert!(!r.accepts(&alert(AlertSeverity::High, "r2", "web1", false)));
        assert!(!r.accepts(&alert(AlertSeverity::High, "r1", "web2", false)));
        assert!(!r.accepts(&alert(AlertSeverity::High, "r1", "web1", true)));
        let r = Route {
            min_severity: AlertSeverity::Informational,
            rules: vec![],
            tags: vec!["attack.t1110".into()],
            hosts: vec![],
            include_test: true,
        };
        assert!(r.accepts(&alert(AlertSeverity::Low, "x", "y", true)));
        let mut a = alert(AlertSeverity::Low, "x", "y", true);
        a.tags = vec!["other".into()];
        assert!(!r.accepts(&a));
    }

    #[test]
    fn rate_limit_is_a_token_bucket() {
        let t0 = Instant::now();
        let mut l = RateLimit::new(3, t0);
        assert!(l.take(t0) && l.take(t0) && l.take(t0));
        assert!(!l.take(t0), "burst spent");
        assert!(!l.take(t0 + Duration::from_secs(10)), "one token per 20 s");
        assert!(l.take(t0 + Duration::from_secs(21)));
        assert!(!l.take(t0 + Duration::from_secs(22)));
        // Idle for long: the bucket holds at most its size.
        let later = t0 + Duration::from_secs(3600);
        assert!(l.take(later) && l.take(later) && l.take(later));
        assert!(!l.take(later));
    }

    #[test]
    fn backoff_doubles_and_is_bounded() {
        let b = Duration::from_secs(2);
        assert_eq!(backoff(b, 2), Duration::from_secs(2));
        assert_eq!(backoff(b, 3), Duration::from_secs(4));
        assert_eq!(backoff(b, 5), Duration::from_secs(16));
        assert_eq!(backoff(b, 40), MAX_BACKOFF);
    }

    #[test]
    fn webhook_signature_is_hmac_sha256_of_timestamp_dot_body() {
        // RFC 4231 test case 2 checks the primitive: key "Jefe", data "what do ya want for nothing?".
        let sig = webhook_signature(b"Jefe", 0, b"");
        assert!(sig.starts_with("sha256="));
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"Jefe");
        let tag = ring::hmac::sign(&key, b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(tag.as_ref()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // The MAC covers "<timestamp>.<body>": changing either changes it.
        let a = webhook_signature(b"secret-0123456789", 1700000000, b"{\"id\":1}");
        assert_eq!(
            a,
            format!(
                "sha256={}",
                hex::encode(
                    ring::hmac::sign(
                        &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"secret-0123456789"),
                        b"1700000000.{\"id\":1}"
                    )
                    .as_ref()
                )
            )
        );
        assert_ne!(
            a,
            webhook_signature(b"secret-0123456789", 1700000001, b"{\"id\":1}")
        );
        assert_ne!(
            a,
            webhook_signature(b"secret-0123456789", 1700000000, b"{\"id\":2}")
        );
    }

    #[test]
    fn basic_auth_is_base64() {
        assert_eq!(
            basic_auth("Aladdin", "open sesame"),
            "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
    }

    fn cfg(kind: &str) -> NotifyConfig {
        NotifyConfig {
            name: "c1".into(),
            kind: kind.into(),
            ..Default::default()
        }
    }

    #[test]
    fn config_errors_name_the_channel_the_key_and_the_fix() {
        let err = |c: NotifyConfig| Channel::from_config(&c).expect_err("invalid").to_string();
        assert!(err(cfg("pager")).contains("unknown `type` \"pager\""));
        assert!(err(cfg("email")).contains("`smtp_host` is required"));
        let mut c = cfg("email");
        c.smtp_host = Some("127.0.0.1".into());
        c.tls = Some("none".into());
        c.from = Some("vigie@example.org".into());
        assert!(err(c.clone()).contains("`to` must list"));
        c.to = vec!["ops@example.org".into()];
        c.username = Some("u".into());
        c.password = Some("p".into());
        assert!(err(c.clone()).contains("refusing to send an SMTP password in plain text"));
        c.username = None;
        c.password = None;
        c.min_severity = Some("urgent".into());
        assert!(err(c.clone()).contains("invalid `min_severity` \"urgent\""));
        c.min_severity = Some("high".into());
        let ch = Channel::from_config(&c).expect("valid email channel");
        assert_eq!(ch.route.min_severity, AlertSeverity::High);

        let mut w = cfg("webhook");
        w.url = Some("ftp://x".into());
        assert!(err(w.clone()).contains("must start with https://"));
        w.url = Some("http://127.0.0.1:9/hook".into());
        assert!(err(w.clone()).contains("needs `secret`"));
        w.secret = Some("short".into());
        assert!(err(w.clone()).contains("shorter than 16"));
        w.secret = Some("0123456789abcdef0123".into());
        assert!(Channel::from_config(&w).is_ok());

        let mut s = cfg("sms");
        s.to = vec!["+15550100".into()];
        assert!(err(s.clone()).contains("`account_sid` is required"));
        s.format = Some("json".into());
        assert!(err(s.clone()).contains("`url` is required"));
    }

    #[test]
    fn messages_say_what_where_and_how_many() {
        let mut a = alert(AlertSeverity::High, "r1", "web1", false);
        a.rule_title = "SSH brute force".into();
        a.group = vec![("source.ip".into(), "203.0.113.9".into())];
        a.event_count = 5;
        a.id = 7;
        assert_eq!(
            subject(&a),
            "[Vigie] HIGH: SSH brute force on web1 (source.ip=203.0.113.9)"
        );
        assert!(email_body(&a).contains("Detections    1 (5 events)"));
        assert_eq!(
            sms_text(&a),
            "[Vigie] HIGH SSH brute force on web1 (source.ip=203.0.113.9) (alert 7, 5 events)"
        );
    }
}

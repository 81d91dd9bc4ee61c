//! The closed error type of the Proxmox client.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use crate::tls::Fingerprint;
use crate::upid::Upid;

/// Everything that can go wrong talking to Proxmox VE.
///
/// Messages are lowercase, name the input and, where there is one, the fix.
#[derive(Debug, thiserror::Error)]
pub enum PveError {
    /// Proxmox answered with an HTTP error. `message` is PVE's own message (body `message`
    /// or the status line), `errors` its per-parameter errors (400 "Parameter verification
    /// failed.").
    #[error("{}", ApiDisplay { method, path, status: *status, message, errors })]
    Api {
        method: String,
        path: String,
        status: u16,
        message: String,
        errors: BTreeMap<String, String>,
    },
    /// The connection could not be opened, or broke while an idempotent request was in
    /// flight and retries ran out.
    #[error(
        "cannot reach proxmox at {url}: {detail}; check the address, that port 8006 is reachable and that pveproxy runs"
    )]
    Connection { url: String, detail: String },
    /// A mutation (POST/PUT/DELETE) was sent but the connection dropped before the answer.
    /// It may or may not have been applied, so it is not retried.
    #[error(
        "{method} {path} was sent but the connection dropped before proxmox answered ({detail}); it was not retried because it changes state — check the VM and the node's task list before trying again"
    )]
    ResponseLost {
        method: String,
        path: String,
        detail: String,
    },
    /// The server's certificate does not have the pinned SHA-256 fingerprint.
    #[error(
        "tls certificate fingerprint mismatch for {host}: expected {expected}, the server presented {seen}; if the certificate was renewed on purpose, pin the new fingerprint (shown by `pvenode cert info` on the node)"
    )]
    FingerprintMismatch {
        host: String,
        expected: Fingerprint,
        seen: Fingerprint,
    },
    /// Another TLS failure (unknown CA, expired certificate, protocol error).
    #[error(
        "tls handshake with {host} failed: {detail}; for a self-signed proxmox certificate, pin its sha-256 fingerprint instead of using the public roots"
    )]
    Tls { host: String, detail: String },
    /// Something did not finish in time.
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout { what: String, after: Duration },
    /// A task ended with an error exit status.
    #[error("{}", TaskDisplay { upid, exit_status, log_tail })]
    TaskFailed {
        upid: Box<Upid>,
        exit_status: String,
        /// The task's last log lines (at most [`crate::client::TASK_ERROR_TAIL`]).
        log_tail: Vec<String>,
    },
    /// Proxmox answered 2xx with a body this client cannot read.
    #[error("unexpected answer to {method} {path}: {detail}")]
    Decode {
        method: String,
        path: String,
        detail: String,
    },
    /// An argument was refused before anything was sent.
    #[error("invalid {what} '{value}': {reason}")]
    InvalidInput {
        what: &'static str,
        value: String,
        reason: String,
    },
    /// The client could not be built (bad base URL, TLS setup).
    #[error("invalid proxmox client configuration: {0}")]
    Config(String),
}

impl PveError {
    /// The HTTP status of an [`PveError::Api`] error.
    pub fn status(&self) -> Option<u16> {
        match self {
            PveError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// PVE's message for an [`PveError::Api`] error.
    pub fn api_message(&self) -> Option<&str> {
        match self {
            PveError::Api { message, .. } => Some(message),
            _ => None,
        }
    }

    /// True when the VM is locked by a running operation (`VM is locked (clone)`).
    pub fn is_locked(&self) -> bool {
        matches!(self, PveError::Api { message, .. } if message.contains("is locked ("))
    }

    pub(crate) fn invalid(
        what: &'static str,
        value: impl fmt::Display,
        reason: impl fmt::Display,
    ) -> Self {
        PveError::InvalidInput {
            what,
            value: value.to_string(),
            reason: reason.to_string(),
        }
    }
}

struct ApiDisplay<'a> {
    method: &'a str,
    path: &'a str,
    status: u16,
    message: &'a str,
    errors: &'a BTreeMap<String, String>,
}

impl fmt::Display for ApiDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "proxmox refused {} {} (http {}): {}",
            self.method, self.path, self.status, self.message
        )?;
        for (param, err) in self.errors {
            write!(f, "; parameter '{param}': {err}")?;
        }
        match self.status {
            401 => write!(
                f,
                "; check the user, realm and password, or the api token (USER@REALM!TOKENID=SECRET)"
            ),
            403 => write!(
                f,
                "; the user or token lacks the privilege named above — grant it on the path, or use a token without privilege separation"
            ),
            _ => Ok(()),
        }
    }
}

struct TaskDisplay<'a> {
    upid: &'a Upid,
    exit_status: &'a str,
    log_tail: &'a [String],
}

impl fmt::Display for TaskDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "proxmox task {} ({} {}) on {} failed: {}",
            self.upid, self.upid.task_type, self.upid.id, self.upid.node, self.exit_status
        )?;
        if !self.log_tail.is_empty() {
            write!(f, "; last log lines: {}", self.log_tail.join(" | "))?;
        }
        Ok(())
    }
}

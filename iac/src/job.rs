//! Jobs: one Terraform run (plan, then apply after confirmation) with an id, a status, a
//! timestamped log and live progress.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use tokio::sync::{broadcast, watch};

use crate::ui::{ChangeSummary, TfEvent, UiLine};
use crate::workspace::WorkspaceLock;

/// Status of a job. Transitions: `Queued → Running → AwaitingConfirmation → Applying →
/// Succeeded | Failed | Cancelled`; `Running` may also end `Succeeded` (nothing to change),
/// `Failed` or `Cancelled`, and `AwaitingConfirmation` may end `Cancelled`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// Created, not started.
    Queued,
    /// `init`, `plan` and `show` running.
    Running,
    /// Plan ready; waiting for a [`Confirmation`](crate::Confirmation).
    AwaitingConfirmation,
    /// `apply` of the confirmed plan running.
    Applying,
    /// Done; the plan was applied (or there was nothing to change).
    Succeeded,
    /// Terraform failed; see the log and [`Job::error`].
    Failed,
    /// Cancelled by a user.
    Cancelled,
}

impl JobStatus {
    /// True for `Succeeded`, `Failed` and `Cancelled`.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobStatus::Succeeded | JobStatus::Failed | JobStatus::Cancelled
        )
    }

    /// Whether the state machine allows `self → next`.
    pub fn can_become(self, next: JobStatus) -> bool {
        use JobStatus::*;
        matches!(
            (self, next),
            (Queued, Running)
                | (Queued, Cancelled)
                | (Running, AwaitingConfirmation)
                | (Running, Succeeded)
                | (Running, Failed)
                | (Running, Cancelled)
                | (AwaitingConfirmation, Applying)
                | (AwaitingConfirmation, Cancelled)
                | (Applying, Succeeded)
                | (Applying, Failed)
                | (Applying, Cancelled)
        )
    }

    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::AwaitingConfirmation => "awaiting_confirmation",
            JobStatus::Applying => "applying",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        }
    }
}

impl std::fmt::Display for JobStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the job's plan does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    /// `terraform plan`, then apply.
    Apply,
    /// `terraform plan -destroy`, then apply of the destroy plan.
    Destroy,
}

/// Which Terraform command produced a log entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// `terraform init`.
    Init,
    /// `terraform plan`.
    Plan,
    /// `terraform show -json`.
    Show,
    /// `terraform apply`.
    Apply,
    /// Vigie's own messages (status changes, backups, cancellation).
    Vigie,
}

/// One log entry.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LogEntry {
    /// Position in the job's log, from 0.
    pub seq: u64,
    /// When Vigie received the line (RFC 3339, UTC, milliseconds).
    pub at: String,
    /// The Terraform command.
    pub phase: Phase,
    /// The parsed line.
    #[serde(flatten)]
    pub line: UiLine,
}

/// A live update of a job, as sent to subscribers.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "update", rename_all = "snake_case")]
pub enum JobUpdate {
    /// A new log entry.
    Log(Box<LogEntry>),
    /// The status changed.
    Status {
        /// New status.
        status: JobStatus,
    },
}

/// What the plan will do, presented to the user before confirmation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlanInfo {
    /// SHA-256 (hex) of the saved plan file; a [`Confirmation`](crate::Confirmation) names it.
    pub sha256: String,
    /// Whether the plan changes anything (`plan -detailed-exitcode` returned 2).
    pub has_changes: bool,
    /// The plan's `change_summary`.
    pub summary: Option<ChangeSummary>,
    /// `(address, action)` of every planned change.
    pub changes: Vec<(String, String)>,
    /// `terraform show -json plan.bin`, with the `variables` section removed and secrets
    /// redacted.
    pub show: serde_json::Value,
}

pub(crate) struct JobInner {
    pub(crate) log: Vec<LogEntry>,
    pub(crate) plan: Option<PlanInfo>,
    pub(crate) error: Option<String>,
    pub(crate) finished: Option<Instant>,
    pub(crate) lock: Option<WorkspaceLock>,
    pub(crate) confirmed_by: Option<String>,
}

/// One Terraform job. Shared as `Arc<Job>`.
pub struct Job {
    id: String,
    kind: JobKind,
    workspace: PathBuf,
    started_by: String,
    created_at: String,
    started: Instant,
    pub(crate) inner: Mutex<JobInner>,
    status_tx: watch::Sender<JobStatus>,
    updates: broadcast::Sender<JobUpdate>,
    pub(crate) cancel_tx: watch::Sender<bool>,
    secrets: Vec<String>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("workspace", &self.workspace)
            .field("started_by", &self.started_by)
            .field("status", &self.status())
            .finish_non_exhaustive()
    }
}

pub(crate) fn now_rfc3339() -> String {
    DateTime::<Utc>::from(SystemTime::now()).to_rfc3339_opts(SecondsFormat::Millis, true)
}

static NEXT_JOB: AtomicU64 = AtomicU64::new(1);

impl Job {
    pub(crate) fn new(
        kind: JobKind,
        workspace: PathBuf,
        started_by: &str,
        secrets: Vec<String>,
    ) -> Job {
        let millis = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or_default();
        let id = format!("tf-{millis:x}-{}", NEXT_JOB.fetch_add(1, Ordering::Relaxed));
        let (status_tx, _) = watch::channel(JobStatus::Queued);
        let (updates, _) = broadcast::channel(4096);
        let (cancel_tx, _) = watch::channel(false);
        Job {
            id,
            kind,
            workspace,
            started_by: started_by.to_string(),
            created_at: now_rfc3339(),
            started: Instant::now(),
            inner: Mutex::new(JobInner {
                log: Vec::new(),
                plan: None,
                error: None,
                finished: None,
                lock: None,
                confirmed_by: None,
            }),
            status_tx,
            updates,
            cancel_tx,
            secrets,
        }
    }

    pub(crate) fn lock_inner(&self) -> MutexGuard<'_, JobInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The job id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Apply or destroy.
    pub fn kind(&self) -> JobKind {
        self.kind
    }

    /// The workspace directory.
    pub fn workspace(&self) -> &std::path::Path {
        &self.workspace
    }

    /// Who started the job.
    pub fn started_by(&self) -> &str {
        &self.started_by
    }

    /// Who confirmed the plan, once confirmed.
    pub fn confirmed_by(&self) -> Option<String> {
        self.lock_inner().confirmed_by.clone()
    }

    /// When the job was created (RFC 3339).
    pub fn created_at(&self) -> &str {
        &self.created_at
    }

    /// Current status.
    pub fn status(&self) -> JobStatus {
        *self.status_tx.borrow()
    }

    /// Time from creation to the end, or until now while it runs.
    pub fn duration(&self) -> Duration {
        match self.lock_inner().finished {
            Some(end) => end.duration_since(self.started),
            None => self.started.elapsed(),
        }
    }

    /// The plan, once planned.
    pub fn plan(&self) -> Option<PlanInfo> {
        self.lock_inner().plan.clone()
    }

    /// Why the job failed: the error diagnostics' summaries and details, or the process error.
    pub fn error(&self) -> Option<String> {
        self.lock_inner().error.clone()
    }

    /// A copy of the log so far.
    pub fn log(&self) -> Vec<LogEntry> {
        self.lock_inner().log.clone()
    }

    /// The log so far plus a receiver of every later update, with no gap and no duplicate in
    /// between: what a live view (SSE) needs.
    pub fn subscribe(&self) -> (Vec<LogEntry>, broadcast::Receiver<JobUpdate>) {
        let inner = self.lock_inner();
        let rx = self.updates.subscribe();
        (inner.log.clone(), rx)
    }

    /// A receiver of status changes.
    pub fn watch_status(&self) -> watch::Receiver<JobStatus> {
        self.status_tx.subscribe()
    }

    /// Waits until the job awaits confirmation or has ended, and returns that status.
    pub async fn settled(&self) -> JobStatus {
        let mut rx = self.status_tx.subscribe();
        match rx
            .wait_for(|s| *s == JobStatus::AwaitingConfirmation || s.is_terminal())
            .await
        {
            Ok(s) => *s,
            Err(_) => self.status(),
        }
    }

    /// Waits until the job has ended.
    pub async fn finished(&self) -> JobStatus {
        let mut rx = self.status_tx.subscribe();
        match rx.wait_for(|s| s.is_terminal()).await {
            Ok(s) => *s,
            Err(_) => self.status(),
        }
    }

    /// Asks the job to stop: a running Terraform gets SIGINT (then SIGKILL after a grace
    /// period); a job awaiting confirmation ends `Cancelled` at once. No effect on an ended job.
    pub fn cancel(&self) {
        if self.status() == JobStatus::AwaitingConfirmation || self.status() == JobStatus::Queued {
            self.push_vigie("cancelled before apply");
            self.set_status(JobStatus::Cancelled);
        }
        self.cancel_tx.send_replace(true);
    }

    /// Whether cancellation was requested.
    pub fn cancel_requested(&self) -> bool {
        *self.cancel_tx.borrow()
    }

    pub(crate) fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for secret in &self.secrets {
            out = out.replace(secret.as_str(), "***");
            let escaped = serde_json::to_string(secret).unwrap_or_default();
            let escaped = escaped.trim_matches('"');
            if !escaped.is_empty() && escaped != secret {
                out = out.replace(escaped, "***");
            }
        }
        out
    }

    pub(crate) fn push(&self, phase: Phase, line: UiLine) {
        let mut inner = self.lock_inner();
        let entry = LogEntry {
            seq: inner.log.len() as u64,
            at: now_rfc3339(),
            phase,
            line,
        };
        if let TfEvent::Diagnostic(d) = &entry.line.event
            && d.severity == "error"
        {
            let text = if d.detail.is_empty() {
                d.summary.clone()
            } else {
                format!("{}: {}", d.summary, d.detail)
            };
            inner.error = Some(match inner.error.take() {
                Some(prev) => format!("{prev}\n{text}"),
                None => text,
            });
        }
        inner.log.push(entry.clone());
        // No receiver is fine: the log keeps everything.
        let _ = self.updates.send(JobUpdate::Log(Box::new(entry)));
    }

    pub(crate) fn push_raw(&self, phase: Phase, kind: &str, text: &str) {
        let text = self.redact(text);
        self.push(
            phase,
            UiLine {
                level: if kind == "stderr" { "error" } else { "info" }.into(),
                message: text.clone(),
                terraform_timestamp: None,
                event: TfEvent::Raw {
                    kind: kind.into(),
                    line: text,
                },
            },
        );
    }

    pub(crate) fn push_vigie(&self, text: &str) {
        self.push_raw(Phase::Vigie, "vigie", text);
    }

    pub(crate) fn set_error_if_none(&self, text: &str) {
        let mut inner = self.lock_inner();
        if inner.error.is_none() {
            inner.error = Some(self.redact(text));
        }
    }

    /// Moves to `next` if the state machine allows it; returns whether it did. Releases the
    /// workspace lock on a terminal status.
    pub(crate) fn set_status(&self, next: JobStatus) -> bool {
        // Hold the inner lock across the transition so that, when a waiter sees a terminal
        // status, the workspace lock is already released.
        let mut inner = self.lock_inner();
        let current = *self.status_tx.borrow();
        if !current.can_become(next) {
            return false;
        }
        if next.is_terminal() {
            inner.finished = Some(Instant::now());
            // Dropping the guard removes the lock file.
            inner.lock = None;
        }
        self.status_tx.send_replace(next);
        let _ = self.updates.send(JobUpdate::Status { status: next });
        drop(inner);
        true
    }
}

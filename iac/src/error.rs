//! Errors of the crate.

use std::path::PathBuf;

/// Everything that can go wrong while rendering or running infrastructure code.
#[derive(Debug, thiserror::Error)]
pub enum IacError {
    /// A file-system or process error, with what was being done.
    #[error("{context}: {source}")]
    Io {
        /// What the crate was doing.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Another job holds the workspace lock.
    #[error(
        "workspace {workspace} is locked by {holder} (job {job_id}, since {since}); \
         wait for that job to finish or cancel it"
    )]
    Locked {
        /// Workspace directory.
        workspace: PathBuf,
        /// Who started the job holding the lock.
        holder: String,
        /// The job holding the lock.
        job_id: String,
        /// When the lock was taken (RFC 3339).
        since: String,
    },
    /// The job is not in a state that allows the operation.
    #[error("job {job_id} is {status}, cannot {operation}")]
    InvalidState {
        /// The job.
        job_id: String,
        /// Its current status.
        status: String,
        /// What was attempted.
        operation: &'static str,
    },
    /// The confirmation does not match the job or its plan.
    #[error("confirmation refused: {0}")]
    ConfirmationRefused(String),
    /// The plan file on disk changed since it was planned and confirmed.
    #[error(
        "plan changed since it was confirmed: confirmed {confirmed}, plan file now {actual}; \
         plan again and confirm the new plan"
    )]
    PlanChanged {
        /// Hash the user confirmed.
        confirmed: String,
        /// Hash of the plan file now.
        actual: String,
    },
    /// A name or value that cannot be used.
    #[error("invalid {what}: {reason}")]
    Invalid {
        /// What was invalid.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// The operation needs a tokio runtime.
    #[error("no tokio runtime: the runner must be called from within a tokio runtime")]
    NoRuntime,
}

impl IacError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        IacError::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn invalid(what: &'static str, reason: impl Into<String>) -> Self {
        IacError::Invalid {
            what,
            reason: reason.into(),
        }
    }
}

/// Result alias of the crate.
pub type Result<T, E = IacError> = std::result::Result<T, E>;

//! Runs Terraform for a [`Workspace`]: `init` → `plan` → `show` → (confirmation) → `apply`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::Command;

use crate::error::{IacError, Result};
use crate::job::{Job, JobKind, JobStatus, Phase, PlanInfo};
use crate::ui::{TfEvent, parse_line};
use crate::workspace::{PLAN_FILE, VIGIE_DIR, Workspace};

/// An environment variable passed to Terraform.
#[derive(Clone)]
pub struct EnvVar {
    /// Name, e.g. `TF_VAR_proxmox_api_token`.
    pub name: String,
    /// Value.
    pub value: String,
    /// Secret values are redacted (`***`) from every log line and from the plan shown.
    pub secret: bool,
}

impl std::fmt::Debug for EnvVar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let value = if self.secret { "***" } else { &self.value };
        write!(f, "{}={value}", self.name)
    }
}

/// Runner settings.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// The `terraform` binary (default: `terraform` from `PATH`).
    pub terraform: PathBuf,
    /// A provider mirror directory (`terraform providers mirror` layout). When set, the CLI
    /// configuration given to Terraform installs providers only from it (air-gapped sites).
    pub provider_mirror: Option<PathBuf>,
    /// Variables passed to Terraform in addition to the minimal environment.
    pub env: Vec<EnvVar>,
    /// How long Terraform may take to stop after SIGINT before it is killed.
    pub cancel_grace: Duration,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        RunnerConfig {
            terraform: PathBuf::from("terraform"),
            provider_mirror: None,
            env: Vec::new(),
            cancel_grace: Duration::from_secs(30),
        }
    }
}

/// The only variables of Vigie's own environment that Terraform inherits. Everything else
/// (tokens, passwords, cloud credentials) stays out of the child and therefore out of logs.
const INHERITED_ENV: &[&str] = &["PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "TZ"];

/// A user's explicit approval of one plan. `plan_sha256` must be the
/// [`PlanInfo::sha256`] the user was shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confirmation {
    /// The job whose plan is confirmed.
    pub job_id: String,
    /// SHA-256 (hex) of the plan the user saw.
    pub plan_sha256: String,
    /// Who confirmed it.
    pub confirmed_by: String,
}

/// Renders the Terraform CLI configuration file given to the child through
/// `TF_CLI_CONFIG_FILE`.
pub fn cli_config(provider_mirror: Option<&Path>) -> String {
    let mut out = String::from("# Written by Vigie for this run; do not edit.\n");
    if let Some(mirror) = provider_mirror {
        out.push_str("provider_installation {\n  filesystem_mirror {\n    path = ");
        out.push_str(&hcl_string(&mirror.to_string_lossy()));
        out.push_str("\n  }\n}\n");
    }
    out
}

/// Quotes a string for HCL (escapes `\`, `"`, control characters and template sequences).
pub fn hcl_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '$' | '%' if chars.peek() == Some(&'{') => {
                out.push(c);
                out.push(c);
            }
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Runs Terraform jobs and keeps them by id.
#[derive(Debug, Clone)]
pub struct Runner {
    config: Arc<RunnerConfig>,
    jobs: Arc<Mutex<HashMap<String, Arc<Job>>>>,
}

fn sha256_file(path: &Path) -> Result<String> {
    let bytes =
        std::fs::read(path).map_err(|e| IacError::io(format!("reading {}", path.display()), e))?;
    Ok(hex::encode(Sha256::digest(&bytes)))
}

fn redact_json(v: &mut serde_json::Value, job: &Job) {
    match v {
        serde_json::Value::String(s) => {
            let r = job.redact(s);
            if r != *s {
                *s = r;
            }
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(|x| redact_json(x, job)),
        serde_json::Value::Object(o) => o.values_mut().for_each(|x| redact_json(x, job)),
        _ => {}
    }
}

enum Outcome {
    Exited(ExitStatus, Vec<u8>),
    Cancelled,
}

impl Runner {
    /// A runner with `config`.
    pub fn new(config: RunnerConfig) -> Runner {
        Runner {
            config: Arc::new(config),
            jobs: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// The job with `id`, if this runner started it.
    pub fn job(&self, id: &str) -> Option<Arc<Job>> {
        self.jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }

    /// All jobs of this runner.
    pub fn jobs(&self) -> Vec<Arc<Job>> {
        self.jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Starts a job on `ws`: takes the workspace lock (refused with [`IacError::Locked`] if
    /// another job holds it), then in the background runs `init`, `plan` (`-destroy` for
    /// [`JobKind::Destroy`]) and `show`. The job ends `AwaitingConfirmation` with its
    /// [`PlanInfo`], or `Succeeded` if there is nothing to change. Must be called within a
    /// tokio runtime.
    pub fn plan(&self, ws: &Workspace, kind: JobKind, started_by: &str) -> Result<Arc<Job>> {
        let handle = tokio::runtime::Handle::try_current().map_err(|_| IacError::NoRuntime)?;
        let secrets = self
            .config
            .env
            .iter()
            .filter(|v| v.secret && !v.value.is_empty())
            .map(|v| v.value.clone())
            .collect();
        let job = Arc::new(Job::new(kind, ws.dir().to_path_buf(), started_by, secrets));
        let lock = ws.lock(started_by, job.id())?;
        job.lock_inner().lock = Some(lock);
        self.jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(job.id().to_string(), job.clone());
        let runner = self.clone();
        let ws = ws.clone();
        let j = job.clone();
        handle.spawn(async move { runner.run_plan(&ws, &j).await });
        Ok(job)
    }

    /// Applies the job's plan once confirmed. Refused unless the job awaits confirmation,
    /// `confirmation` names this job and the plan's hash, and the plan file on disk still
    /// has that hash. Backs up the state file first; then runs `apply -json plan.bin` in the
    /// background (the job goes `Applying`, then `Succeeded` or `Failed`).
    pub fn apply(&self, job: &Arc<Job>, confirmation: &Confirmation) -> Result<()> {
        let handle = tokio::runtime::Handle::try_current().map_err(|_| IacError::NoRuntime)?;
        let status = job.status();
        if status != JobStatus::AwaitingConfirmation {
            return Err(IacError::InvalidState {
                job_id: job.id().to_string(),
                status: status.to_string(),
                operation: "apply",
            });
        }
        if confirmation.job_id != job.id() {
            return Err(IacError::ConfirmationRefused(format!(
                "it names job {}, not {}",
                confirmation.job_id,
                job.id()
            )));
        }
        let plan = job.plan().ok_or_else(|| {
            IacError::ConfirmationRefused(format!("job {} has no plan", job.id()))
        })?;
        if confirmation.plan_sha256 != plan.sha256 {
            return Err(IacError::ConfirmationRefused(format!(
                "it names plan {}, the job's plan is {}",
                confirmation.plan_sha256, plan.sha256
            )));
        }
        let actual = sha256_file(&job.workspace().join(PLAN_FILE))?;
        if actual != confirmation.plan_sha256 {
            job.push_vigie(&format!(
                "apply refused: plan file changed since confirmation ({actual})"
            ));
            return Err(IacError::PlanChanged {
                confirmed: confirmation.plan_sha256.clone(),
                actual,
            });
        }
        job.lock_inner().confirmed_by = Some(confirmation.confirmed_by.clone());
        if !job.set_status(JobStatus::Applying) {
            return Err(IacError::InvalidState {
                job_id: job.id().to_string(),
                status: job.status().to_string(),
                operation: "apply",
            });
        }
        job.push_vigie(&format!(
            "plan {} confirmed by {}",
            plan.sha256, confirmation.confirmed_by
        ));
        let runner = self.clone();
        let j = job.clone();
        handle.spawn(async move { runner.run_apply(&j).await });
        Ok(())
    }

    fn fail(job: &Job, why: &str) {
        job.set_error_if_none(why);
        job.push_vigie(why);
        job.set_status(JobStatus::Failed);
    }

    fn cancelled(job: &Job) {
        job.push_vigie("cancelled");
        job.set_status(JobStatus::Cancelled);
    }

    async fn run_plan(&self, ws: &Workspace, job: &Arc<Job>) {
        if !job.set_status(JobStatus::Running) {
            return;
        }
        let rc_path = ws.dir().join(VIGIE_DIR).join("terraform.rc");
        if let Err(e) = std::fs::write(&rc_path, cli_config(self.config.provider_mirror.as_deref()))
        {
            Self::fail(job, &format!("writing {}: {e}", rc_path.display()));
            return;
        }
        let _ = std::fs::remove_file(ws.plan_path());
        // init
        match self
            .run_tf(job, Phase::Init, &["init", "-json", "-input=false"], false)
            .await
        {
            Ok(Outcome::Exited(st, _)) if st.success() => {}
            Ok(Outcome::Exited(st, _)) => {
                return Self::fail(job, &format!("terraform init failed ({st})"));
            }
            Ok(Outcome::Cancelled) => return Self::cancelled(job),
            Err(e) => return Self::fail(job, &e.to_string()),
        }
        // plan
        let mut args = vec![
            "plan",
            "-json",
            "-input=false",
            "-detailed-exitcode",
            "-out=plan.bin",
        ];
        if job.kind() == JobKind::Destroy {
            args.push("-destroy");
        }
        let has_changes = match self.run_tf(job, Phase::Plan, &args, false).await {
            Ok(Outcome::Exited(st, _)) => match st.code() {
                Some(0) => false,
                Some(2) => true,
                _ => return Self::fail(job, &format!("terraform plan failed ({st})")),
            },
            Ok(Outcome::Cancelled) => return Self::cancelled(job),
            Err(e) => return Self::fail(job, &e.to_string()),
        };
        let sha256 = match sha256_file(&ws.plan_path()) {
            Ok(h) => h,
            Err(e) => return Self::fail(job, &e.to_string()),
        };
        // show
        let show = match self
            .run_tf(job, Phase::Show, &["show", "-json", PLAN_FILE], true)
            .await
        {
            Ok(Outcome::Exited(st, out)) if st.success() => {
                match serde_json::from_slice::<serde_json::Value>(&out) {
                    Ok(mut v) => {
                        if let Some(o) = v.as_object_mut() {
                            o.remove("variables");
                        }
                        redact_json(&mut v, job);
                        v
                    }
                    Err(e) => {
                        return Self::fail(job, &format!("terraform show -json: bad JSON: {e}"));
                    }
                }
            }
            Ok(Outcome::Exited(st, _)) => {
                return Self::fail(job, &format!("terraform show failed ({st})"));
            }
            Ok(Outcome::Cancelled) => return Self::cancelled(job),
            Err(e) => return Self::fail(job, &e.to_string()),
        };
        let (summary, changes) = {
            let inner = job.lock_inner();
            let mut summary = None;
            let mut changes = Vec::new();
            for e in inner.log.iter().filter(|e| e.phase == Phase::Plan) {
                match &e.line.event {
                    TfEvent::ChangeSummary(s) => summary = Some(s.clone()),
                    TfEvent::PlannedChange { addr, action } => {
                        changes.push((addr.clone(), action.clone()))
                    }
                    _ => {}
                }
            }
            (summary, changes)
        };
        job.lock_inner().plan = Some(PlanInfo {
            sha256: sha256.clone(),
            has_changes,
            summary,
            changes,
            show,
        });
        if job.cancel_requested() {
            return Self::cancelled(job);
        }
        if has_changes {
            job.push_vigie(&format!("plan {sha256} ready; awaiting confirmation"));
            job.set_status(JobStatus::AwaitingConfirmation);
        } else {
            job.push_vigie("no changes; nothing to apply");
            job.set_status(JobStatus::Succeeded);
        }
    }

    async fn run_apply(&self, job: &Arc<Job>) {
        let ws = Workspace::from_dir(job.workspace());
        match ws.backup_state() {
            Ok(Some(dest)) => job.push_vigie(&format!("state backed up to {}", dest.display())),
            Ok(None) => job.push_vigie("no state yet: nothing to back up"),
            Err(e) => return Self::fail(job, &format!("state backup failed: {e}")),
        }
        match self
            .run_tf(
                job,
                Phase::Apply,
                &["apply", "-json", "-input=false", PLAN_FILE],
                false,
            )
            .await
        {
            Ok(Outcome::Exited(st, _)) if st.success() => {
                job.set_status(JobStatus::Succeeded);
            }
            Ok(Outcome::Exited(st, _)) => {
                Self::fail(job, &format!("terraform apply failed ({st})"))
            }
            Ok(Outcome::Cancelled) => Self::cancelled(job),
            Err(e) => Self::fail(job, &e.to_string()),
        }
    }

    /// Runs one Terraform command in the job's workspace. Each stdout line is parsed and
    /// logged (unless `capture`, where stdout is returned instead); stderr lines are logged
    /// raw. On cancellation Terraform gets SIGINT, then SIGKILL (whole process group) after
    /// the grace period.
    async fn run_tf(
        &self,
        job: &Arc<Job>,
        phase: Phase,
        args: &[&str],
        capture: bool,
    ) -> Result<Outcome> {
        let mut cancel_rx = job.cancel_tx.subscribe();
        if *cancel_rx.borrow_and_update() {
            return Ok(Outcome::Cancelled);
        }
        let dir = job.workspace();
        let mut cmd = Command::new(&self.config.terraform);
        cmd.args(args)
            .current_dir(dir)
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        for name in INHERITED_ENV {
            if let Some(v) = std::env::var_os(name) {
                cmd.env(name, v);
            }
        }
        for v in &self.config.env {
            cmd.env(&v.name, &v.value);
        }
        cmd.env("TF_IN_AUTOMATION", "1").env("TF_INPUT", "0").env(
            "TF_CLI_CONFIG_FILE",
            dir.join(VIGIE_DIR).join("terraform.rc"),
        );
        job.push_vigie(&format!("$ terraform {}", args.join(" ")));
        let mut child = cmd.spawn().map_err(|e| {
            IacError::io(format!("starting {}", self.config.terraform.display()), e)
        })?;
        let pid = child.id();
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let err_job = job.clone();
        let stderr_task = tokio::spawn(async move {
            if let Some(stderr) = stderr {
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if !line.trim().is_empty() {
                        err_job.push_raw(phase, "stderr", &line);
                    }
                }
            }
        });
        let mut captured = Vec::new();
        let mut interrupted = false;
        let grace = tokio::time::sleep(Duration::from_secs(u64::MAX / 4));
        tokio::pin!(grace);
        if let Some(stdout) = stdout {
            let mut reader = BufReader::new(stdout);
            let mut buf = String::new();
            loop {
                tokio::select! {
                    n = async {
                        if capture {
                            let mut chunk = vec![0u8; 64 * 1024];
                            let n = reader.read(&mut chunk).await;
                            if let Ok(n) = n { captured.extend_from_slice(&chunk[..n]); }
                            n
                        } else {
                            buf.clear();
                            reader.read_line(&mut buf).await
                        }
                    } => {
                        match n {
                            Ok(0) => break,
                            Ok(_) if !capture => {
                                let line = buf.trim_end_matches(['\r', '\n']);
                                if !line.is_empty() {
                                    let mut parsed = parse_line(&job.redact(line), "stdout");
                                    if let TfEvent::Outputs { outputs } = &mut parsed.event {
                                        redact_json(outputs, job);
                                    }
                                    job.push(phase, parsed);
                                }
                            }
                            Ok(_) => {}
                            Err(e) => {
                                job.push_raw(phase, "vigie", &format!("reading terraform output: {e}"));
                                break;
                            }
                        }
                    }
                    changed = cancel_rx.changed(), if !interrupted => {
                        if changed.is_ok() && *cancel_rx.borrow_and_update() {
                            interrupted = true;
                            job.push_vigie("cancellation requested: sending SIGINT to terraform");
                            if let Some(pid) = pid {
                                signal(&format!("{pid}"), "INT").await;
                            }
                            grace.as_mut().reset(tokio::time::Instant::now() + self.config.cancel_grace);
                        }
                    }
                    () = &mut grace, if interrupted => {
                        job.push_vigie("terraform did not stop in time: killing it");
                        if let Some(pid) = pid {
                            signal(&format!("-{pid}"), "KILL").await;
                        }
                        let _ = child.start_kill();
                        break;
                    }
                }
            }
        }
        let status = if interrupted {
            match tokio::time::timeout(self.config.cancel_grace, child.wait()).await {
                Ok(s) => s,
                Err(_) => {
                    let _ = child.start_kill();
                    child.wait().await
                }
            }
        } else {
            child.wait().await
        }
        .map_err(|e| IacError::io("waiting for terraform", e))?;
        let _ = stderr_task.await;
        if interrupted {
            return Ok(Outcome::Cancelled);
        }
        Ok(Outcome::Exited(status, captured))
    }
}

/// Sends a signal with `kill(1)` (the crate forbids `unsafe`, so no `libc::kill`).
/// `target` is a pid, or `-pgid` for a process group.
async fn signal(target: &str, sig: &str) {
    let _ = Command::new("kill")
        .args(["-s", sig, "--", target])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_config_with_mirror() {
        let c = cli_config(Some(Path::new("/srv/mirror \"x\"")));
        assert!(c.contains("provider_installation {"));
        assert!(c.contains("filesystem_mirror {"));
        assert!(c.contains(r#"path = "/srv/mirror \"x\"""#), "{c}");
        assert!(!cli_config(None).contains("provider_installation"));
    }

    #[test]
    fn hcl_strings_escape_templates() {
        assert_eq!(hcl_string("a${b}%{c}\\"), r#""a$${b}%%{c}\\""#);
    }

    #[test]
    fn secret_env_is_not_debug_printed() {
        let v = EnvVar {
            name: "TF_VAR_t".into(),
            value: "s3cret".into(),
            secret: true,
        };
        assert_eq!(format!("{v:?}"), "TF_VAR_t=***");
    }
}

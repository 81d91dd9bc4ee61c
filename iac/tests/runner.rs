//! End-to-end tests of the Terraform runner with the real `terraform` binary, on
//! configurations that need no provider (`terraform_data`, outputs, `local-exec`).

use std::path::Path;
use std::time::Duration;

use serde_json::json;
use tokio::sync::broadcast;
use vigie_iac::{
    Confirmation, EnvVar, IacError, Job, JobKind, JobStatus, JobUpdate, Runner, RunnerConfig,
    TfEvent, Workspace,
};

const SECRET: &str = "pve-token-s3cr3t-value";

fn runner(mirror: Option<&Path>) -> Runner {
    Runner::new(RunnerConfig {
        provider_mirror: mirror.map(Path::to_path_buf),
        env: vec![EnvVar {
            name: "TF_VAR_token".into(),
            value: SECRET.into(),
            secret: true,
        }],
        cancel_grace: Duration::from_secs(15),
        ..RunnerConfig::default()
    })
}

fn write(ws: &Workspace, v: serde_json::Value) {
    ws.write_config(
        "main.tf.json",
        &serde_json::to_string_pretty(&v).expect("json"),
    )
    .expect("write config");
}

fn confirm(job: &Job, who: &str) -> Confirmation {
    Confirmation {
        job_id: job.id().to_string(),
        plan_sha256: job.plan().expect("plan").sha256,
        confirmed_by: who.into(),
    }
}

async fn drain(rx: &mut broadcast::Receiver<JobUpdate>) -> Vec<JobUpdate> {
    let mut out = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(60), rx.recv()).await {
            Ok(Ok(u)) => {
                let end = matches!(&u, JobUpdate::Status { status } if status.is_terminal());
                out.push(u);
                if end {
                    return out;
                }
            }
            other => panic!("update stream ended early: {other:?}"),
        }
    }
}

fn event_types(updates: &[JobUpdate]) -> Vec<String> {
    updates
        .iter()
        .filter_map(|u| match u {
            JobUpdate::Log(e) => match &e.line.event {
                TfEvent::Raw { .. } | TfEvent::Log | TfEvent::Version { .. } => None,
                ev => Some(
                    serde_json::to_value(ev).expect("ser")["type"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                ),
            },
            JobUpdate::Status { status } => Some(format!("status:{status}")),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_confirm_apply_destroy_end_to_end() {
    let root = tempfile::tempdir().expect("tempdir");
    let mirror = root.path().join("mirror");
    std::fs::create_dir_all(&mirror).expect("mirror");
    let r = runner(Some(&mirror));
    let ws = Workspace::open(root.path(), "vm-101").expect("ws");
    write(
        &ws,
        json!({
            "variable": {"token": {"type": "string"}},
            "resource": {"terraform_data": {
                "a": {"input": "hello"},
                "envdump": {"provisioner": [{"local-exec": {"command": "env > env.txt"}}]}
            }},
            "output": {
                "x": {"value": "${terraform_data.a.output}"},
                "tok": {"value": "${var.token}"}
            }
        }),
    );

    let job = r.plan(&ws, JobKind::Apply, "alice").expect("plan");
    assert_eq!(job.started_by(), "alice");
    assert_eq!(
        job.settled().await,
        JobStatus::AwaitingConfirmation,
        "{:?}",
        job.error()
    );
    assert!(r.job(job.id()).is_some());
    let plan = job.plan().expect("plan info");
    assert!(plan.has_changes);
    let summary = plan.summary.clone().expect("summary");
    assert_eq!((summary.add, summary.change, summary.remove), (2, 0, 0));
    assert!(
        plan.changes
            .contains(&("terraform_data.a".into(), "create".into()))
    );
    assert!(plan.show["resource_changes"].is_array());
    assert!(
        !plan.show.to_string().contains(SECRET),
        "secret leaked into the plan shown"
    );
    // The CLI config names the mirror, and is what the child got.
    let rc = std::fs::read_to_string(ws.dir().join(".vigie/terraform.rc")).expect("rc");
    assert!(rc.contains("filesystem_mirror") && rc.contains(mirror.to_str().expect("utf8")));

    let (before, mut rx) = job.subscribe();
    assert!(!before.is_empty());
    r.apply(&job, &confirm(&job, "bob")).expect("apply");
    let updates = drain(&mut rx).await;
    assert_eq!(job.status(), JobStatus::Succeeded, "{:?}", job.error());
    assert_eq!(job.confirmed_by().as_deref(), Some("bob"));
    let types = event_types(&updates);
    let pos = |t: &str| types.iter().position(|x| x == t).unwrap_or(usize::MAX);
    assert!(pos("apply_start") < pos("apply_complete"), "{types:?}");
    assert!(pos("apply_complete") < pos("change_summary"), "{types:?}");
    assert!(pos("change_summary") < pos("outputs"), "{types:?}");
    assert_eq!(types.last().map(String::as_str), Some("status:succeeded"));
    // Sequence numbers are contiguous and continue the snapshot.
    let seqs: Vec<u64> = updates
        .iter()
        .filter_map(|u| match u {
            JobUpdate::Log(e) => Some(e.seq),
            _ => None,
        })
        .collect();
    let first = before.len() as u64;
    assert_eq!(seqs, (first..first + seqs.len() as u64).collect::<Vec<_>>());
    // Outputs arrive, with the secret redacted.
    let outputs = job
        .log()
        .into_iter()
        .filter_map(|e| match e.line.event {
            TfEvent::Outputs { outputs } => Some(outputs),
            _ => None,
        })
        .next_back()
        .expect("outputs");
    assert_eq!(outputs["x"]["value"], "hello");
    assert_eq!(outputs["tok"]["value"], "***");
    let log_text = serde_json::to_string(&job.log()).expect("ser");
    assert!(!log_text.contains(SECRET), "secret leaked into the log");
    assert!(job.duration() > Duration::ZERO);
    assert!(ws.state_path().exists());
    // The child's environment: automation mode, our CLI config, nothing of ours.
    let env = std::fs::read_to_string(ws.dir().join("env.txt")).expect("env.txt");
    assert!(env.contains("TF_IN_AUTOMATION=1"), "{env}");
    assert!(env.contains("TF_CLI_CONFIG_FILE=") && env.contains(".vigie/terraform.rc"));
    assert!(
        !env.contains("CARGO_"),
        "the test's environment leaked into terraform: {env}"
    );

    // Lock released: a second plan finds nothing to change and succeeds at once.
    let again = r.plan(&ws, JobKind::Apply, "alice").expect("replan");
    assert_eq!(
        again.finished().await,
        JobStatus::Succeeded,
        "{:?}",
        again.error()
    );
    assert!(!again.plan().expect("plan").has_changes);

    // Destroy: plan -destroy → confirm → apply; state backed up first.
    let d = r
        .plan(&ws, JobKind::Destroy, "carol")
        .expect("destroy plan");
    assert_eq!(
        d.settled().await,
        JobStatus::AwaitingConfirmation,
        "{:?}",
        d.error()
    );
    assert_eq!(d.plan().expect("plan").summary.expect("summary").remove, 2);
    r.apply(&d, &confirm(&d, "carol")).expect("destroy");
    assert_eq!(d.finished().await, JobStatus::Succeeded, "{:?}", d.error());
    let backups: Vec<_> = std::fs::read_dir(ws.backups_dir())
        .expect("backups")
        .collect();
    // The first apply had no state to back up; the destroy's apply had one.
    assert_eq!(backups.len(), 1, "expected a backup before the destroy");
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ws.state_path()).expect("state"))
            .expect("state json");
    assert_eq!(state["resources"].as_array().map(Vec::len), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_plan_and_lock_conflicts_are_refused() {
    let root = tempfile::tempdir().expect("tempdir");
    let r = runner(None);
    let ws = Workspace::open(root.path(), "grp").expect("ws");
    write(
        &ws,
        json!({"resource": {"terraform_data": {"a": {"input": "one"}}}}),
    );
    let job = r.plan(&ws, JobKind::Apply, "alice").expect("plan");
    assert_eq!(
        job.settled().await,
        JobStatus::AwaitingConfirmation,
        "{:?}",
        job.error()
    );

    // A second job on the same workspace is refused, naming the holder.
    match r.plan(&ws, JobKind::Apply, "mallory") {
        Err(e @ IacError::Locked { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("alice") && msg.contains(job.id()), "{msg}");
        }
        other => panic!("expected a lock conflict, got {other:?}"),
    }

    // A confirmation naming another plan is refused.
    let mut wrong = confirm(&job, "bob");
    wrong.plan_sha256 = "0".repeat(64);
    assert!(matches!(
        r.apply(&job, &wrong),
        Err(IacError::ConfirmationRefused(_))
    ));

    // The plan file changes after confirmation (someone re-planned another config).
    let ok = confirm(&job, "bob");
    write(
        &ws,
        json!({"resource": {"terraform_data": {"a": {"input": "two"}}}}),
    );
    let st = std::process::Command::new("terraform")
        .args(["plan", "-input=false", "-out=plan.bin", "-no-color"])
        .current_dir(ws.dir())
        .env("TF_CLI_CONFIG_FILE", ws.dir().join(".vigie/terraform.rc"))
        .output()
        .expect("terraform plan");
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    match r.apply(&job, &ok) {
        Err(e @ IacError::PlanChanged { .. }) => {
            assert!(
                e.to_string()
                    .contains("plan changed since it was confirmed")
            )
        }
        other => panic!("expected PlanChanged, got {other:?}"),
    }
    assert_eq!(job.status(), JobStatus::AwaitingConfirmation);
    assert!(!ws.state_path().exists(), "nothing may be applied");

    // Cancelling releases the lock.
    job.cancel();
    assert_eq!(job.status(), JobStatus::Cancelled);
    assert!(matches!(
        r.apply(&job, &ok),
        Err(IacError::InvalidState { .. })
    ));
    let next = r
        .plan(&ws, JobKind::Apply, "mallory")
        .expect("lock released");
    assert_eq!(next.settled().await, JobStatus::AwaitingConfirmation);
    next.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_configurations_end_failed_with_the_diagnostic() {
    let root = tempfile::tempdir().expect("tempdir");
    let r = runner(None);

    let ws = Workspace::open(root.path(), "pre").expect("ws");
    write(
        &ws,
        json!({
            "variable": {"wanted": {"type": "string", "default": "x"}},
            "resource": {"terraform_data": {"p": {
            "input": "x",
            "lifecycle": {"precondition": [{
                "condition": "${var.wanted == \"y\"}",
                "error_message": "Vigie precondition failed on purpose."
            }]}
        }}}}),
    );
    let job = r.plan(&ws, JobKind::Apply, "alice").expect("plan");
    assert_eq!(job.finished().await, JobStatus::Failed);
    let err = job.error().expect("error");
    assert!(
        err.contains("Vigie precondition failed on purpose."),
        "{err}"
    );
    assert!(job.log().iter().any(|e| matches!(&e.line.event,
        TfEvent::Diagnostic(d) if d.severity == "error")));

    let ws = Workspace::open(root.path(), "badjson").expect("ws");
    ws.write_config("main.tf.json", "{\"resource\": {")
        .expect("write");
    let job = r.plan(&ws, JobKind::Apply, "alice").expect("plan");
    assert_eq!(job.finished().await, JobStatus::Failed);
    let err = job.error().expect("error");
    assert!(!err.is_empty(), "no diagnostic text");

    // Apply-time failure: apply_errored and Failed.
    let ws = Workspace::open(root.path(), "applyfail").expect("ws");
    write(
        &ws,
        json!({"resource": {"terraform_data": {"f": {
            "provisioner": [{"local-exec": {"command": "echo boom >&2; exit 3"}}]
        }}}}),
    );
    let job = r.plan(&ws, JobKind::Apply, "alice").expect("plan");
    assert_eq!(
        job.settled().await,
        JobStatus::AwaitingConfirmation,
        "{:?}",
        job.error()
    );
    r.apply(&job, &confirm(&job, "alice")).expect("apply");
    assert_eq!(job.finished().await, JobStatus::Failed);
    assert!(
        job.log()
            .iter()
            .any(|e| matches!(&e.line.event, TfEvent::ApplyErrored { .. }))
    );
    assert!(
        job.error().expect("error").contains("local-exec"),
        "{:?}",
        job.error()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancellation_interrupts_a_running_apply() {
    let root = tempfile::tempdir().expect("tempdir");
    let r = runner(None);
    let ws = Workspace::open(root.path(), "slow").expect("ws");
    write(
        &ws,
        json!({"resource": {"terraform_data": {"s": {
            "provisioner": [{"local-exec": {"command": "sleep 60"}}]
        }}}}),
    );
    let job = r.plan(&ws, JobKind::Apply, "alice").expect("plan");
    assert_eq!(
        job.settled().await,
        JobStatus::AwaitingConfirmation,
        "{:?}",
        job.error()
    );
    let (_, mut rx) = job.subscribe();
    r.apply(&job, &confirm(&job, "alice")).expect("apply");
    // Wait until terraform is really working on the resource.
    loop {
        match tokio::time::timeout(Duration::from_secs(30), rx.recv()).await {
            Ok(Ok(JobUpdate::Log(e))) if matches!(e.line.event, TfEvent::ApplyStart { .. }) => {
                break;
            }
            Ok(Ok(_)) => {}
            other => panic!("no apply_start: {other:?}"),
        }
    }
    let t = std::time::Instant::now();
    job.cancel();
    let end = tokio::time::timeout(Duration::from_secs(40), job.finished())
        .await
        .expect("job did not stop");
    assert_eq!(end, JobStatus::Cancelled);
    assert!(
        t.elapsed() < Duration::from_secs(30),
        "took {:?}",
        t.elapsed()
    );
    assert!(job.log().iter().any(|e| e.line.message.contains("SIGINT")));
    // The lock is released.
    assert!(!ws.lock_path().exists());
}
